//! Samples and their summaries: median, 99th percentile, extremes, and ratios between a
//! measured subject and its baseline.

use std::fmt;
use std::time::Duration;

/// What a sample measures; decides formatting and which direction is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// A duration, stored in seconds.
    Seconds,
    /// A rate in MiB/s.
    MibPerSec,
    /// A rate in operations per second (files/s, calls/s).
    PerSec,
    /// A rate in operations per minute (PVCs/min).
    PerMin,
    /// A plain count (requests, processes).
    Count,
    /// A size in MiB.
    Mib,
}

impl Unit {
    /// Whether a larger value is better (rates).
    pub fn higher_is_better(self) -> bool {
        matches!(self, Unit::MibPerSec | Unit::PerSec | Unit::PerMin)
    }

    /// Formats `v` (in this unit's base: seconds, MiB/s, …) for a table cell.
    pub fn format(self, v: f64) -> String {
        match self {
            Unit::Seconds => format_seconds(v),
            Unit::MibPerSec => format!("{} MiB/s", sig3(v)),
            Unit::PerSec => format!("{}/s", sig3(v)),
            Unit::PerMin => format!("{}/min", sig3(v)),
            Unit::Count => {
                if (v - v.round()).abs() < 1e-9 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            }
            Unit::Mib => format!("{} MiB", sig3(v)),
        }
    }
}

fn format_seconds(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{} ms", sig3(s * 1e3))
    } else {
        format!("{} µs", sig3(s * 1e6))
    }
}

/// Three significant digits, without a useless exponent.
pub fn sig3(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A set of observations of one quantity.
#[derive(Clone, Debug, PartialEq)]
pub struct Samples {
    /// Unit of every value.
    pub unit: Unit,
    values: Vec<f64>,
}

impl Samples {
    /// No observations yet.
    pub fn new(unit: Unit) -> Self {
        Self {
            unit,
            values: Vec::new(),
        }
    }

    /// Observations given as values in `unit`'s base.
    pub fn from_values(unit: Unit, values: impl IntoIterator<Item = f64>) -> Self {
        Self {
            unit,
            values: values.into_iter().collect(),
        }
    }

    /// Durations (unit [`Unit::Seconds`]).
    pub fn from_durations(values: impl IntoIterator<Item = Duration>) -> Self {
        Self::from_values(Unit::Seconds, values.into_iter().map(|d| d.as_secs_f64()))
    }

    /// Adds one observation.
    pub fn push(&mut self, v: f64) {
        self.values.push(v);
    }

    /// Adds one duration.
    pub fn push_duration(&mut self, d: Duration) {
        self.values.push(d.as_secs_f64());
    }

    /// Adds every observation of `other` (same unit).
    pub fn extend(&mut self, other: &Samples) {
        self.values.extend_from_slice(&other.values);
    }

    /// The observations, in the order they were made.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// Number of observations.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The summary, or `None` without observations.
    pub fn summary(&self) -> Option<Summary> {
        let mut v: Vec<f64> = self
            .values
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Summary {
            unit: self.unit,
            n: v.len(),
            p50: percentile(&v, 50.0),
            p99: percentile(&v, 99.0),
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

/// The `p`th percentile of sorted values, nearest-rank (p99 of fewer than 100 values is the
/// maximum); the median of an even count is the mean of the middle two.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if (p - 50.0).abs() < f64::EPSILON {
        return if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
    }
    let rank = (p / 100.0 * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Median, 99th percentile and extremes of a sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Unit of the values.
    pub unit: Unit,
    /// Number of observations.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Smallest observation.
    pub min: f64,
    /// Largest observation.
    pub max: f64,
}

impl Summary {
    /// A summary of one value (n = 1).
    pub fn single(unit: Unit, v: f64) -> Self {
        Self {
            unit,
            n: 1,
            p50: v,
            p99: v,
            min: v,
            max: v,
        }
    }

    /// `p50 · p99 (min–max, n)` in one table cell; a single value shows alone.
    pub fn cell(&self) -> String {
        let u = self.unit;
        if self.n == 1 {
            return u.format(self.p50);
        }
        format!(
            "{} · p99 {} ({}–{}, n={})",
            u.format(self.p50),
            u.format(self.p99),
            u.format(self.min),
            u.format(self.max),
            self.n
        )
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cell())
    }
}

/// `subject / baseline`, `None` when the baseline is zero or not finite.
pub fn ratio(subject: f64, baseline: f64) -> Option<f64> {
    let r = subject / baseline;
    (baseline != 0.0 && r.is_finite()).then_some(r)
}

/// A ratio for a table cell (`1.03×`).
pub fn format_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) => format!("{r:.2}×"),
        None => "–".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 50.0), 50.5);
        let small = [1.0, 2.0, 3.0];
        assert_eq!(percentile(&small, 99.0), 3.0);
        assert_eq!(percentile(&small, 50.0), 2.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn summary_of_unsorted_samples() {
        let s = Samples::from_values(Unit::Count, [5.0, 1.0, 3.0, f64::NAN]);
        let sum = s.summary();
        assert_eq!(
            sum,
            Some(Summary {
                unit: Unit::Count,
                n: 3,
                p50: 3.0,
                p99: 5.0,
                min: 1.0,
                max: 5.0
            })
        );
        assert_eq!(Samples::new(Unit::Seconds).summary(), None);
    }

    #[test]
    fn cells_are_readable() {
        assert_eq!(Unit::Seconds.format(2.5), "2.50 s");
        assert_eq!(Unit::Seconds.format(0.0123), "12.3 ms");
        assert_eq!(Unit::Seconds.format(0.000_045), "45.0 µs");
        assert_eq!(Unit::MibPerSec.format(123.4), "123 MiB/s");
        assert_eq!(Unit::Count.format(2.0), "2");
        let s = Samples::from_durations([Duration::from_millis(10), Duration::from_millis(30)]);
        let cell = s.summary().map(|s| s.cell()).unwrap_or_default();
        assert_eq!(cell, "20.0 ms · p99 30.0 ms (10.0 ms–30.0 ms, n=2)");
    }

    #[test]
    fn ratios_refuse_a_zero_baseline() {
        assert_eq!(ratio(2.0, 1.0), Some(2.0));
        assert_eq!(ratio(2.0, 0.0), None);
        assert_eq!(format_ratio(Some(1.034)), "1.03×");
        assert_eq!(format_ratio(None), "–");
    }
}
