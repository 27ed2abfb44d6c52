//! The benchmark's report: rows comparing gluster-csi with a baseline measured in the same run,
//! grouped in sections, rendered as markdown with the machine it ran on.

use std::fmt::Write as _;

use super::stats::{Summary, format_ratio, ratio};

/// What a row should show to count as good.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Goal {
    /// No goal: the row is context.
    None,
    /// `subject / baseline` at most this (on p50, and on p99 for durations and counts).
    RatioAtMost(f64),
    /// `subject / baseline` at least this (on p50).
    RatioAtLeast(f64),
    /// The subject's p99 at most this many seconds.
    P99AtMostSecs(f64),
    /// The same value in every row of the group (checked by the section, given as `met`).
    Constant,
}

impl Goal {
    fn cell(self) -> String {
        match self {
            Goal::None => "–".into(),
            Goal::RatioAtMost(x) => format!("≤ {x:.2}×"),
            Goal::RatioAtLeast(x) => format!("≥ {x:.2}×"),
            Goal::P99AtMostSecs(s) => format!("p99 ≤ {} ms", s * 1e3),
            Goal::Constant => "constant".into(),
        }
    }
}

/// One compared quantity.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// What is measured.
    pub measure: String,
    /// The baseline's summary, when there is a baseline.
    pub baseline: Option<Summary>,
    /// gluster-csi's summary.
    pub subject: Option<Summary>,
    /// `subject.p50 / baseline.p50`.
    pub ratio_p50: Option<f64>,
    /// `subject.p99 / baseline.p99` (durations and counts with more than one observation).
    pub ratio_p99: Option<f64>,
    /// The goal.
    pub goal: Goal,
    /// Whether the goal is met (`None`: no goal, or nothing to judge).
    pub met: Option<bool>,
    /// Shown in the headline table.
    pub headline: bool,
}

impl Row {
    /// A row comparing `subject` with `baseline` under `goal`.
    pub fn compare(
        measure: impl Into<String>,
        baseline: Option<Summary>,
        subject: Option<Summary>,
        goal: Goal,
    ) -> Self {
        let (ratio_p50, ratio_p99) = match (&baseline, &subject) {
            (Some(b), Some(s)) => {
                let r50 = ratio(s.p50, b.p50);
                let tail = !s.unit.higher_is_better() && (s.n > 1 || b.n > 1);
                (r50, if tail { ratio(s.p99, b.p99) } else { None })
            }
            _ => (None, None),
        };
        let met = match goal {
            Goal::None | Goal::Constant => None,
            Goal::RatioAtMost(x) => ratio_p50.map(|r| r <= x && ratio_p99.is_none_or(|t| t <= x)),
            Goal::RatioAtLeast(x) => ratio_p50.map(|r| r >= x),
            Goal::P99AtMostSecs(x) => subject.map(|s| s.p99 <= x),
        };
        Self {
            measure: measure.into(),
            baseline,
            subject,
            ratio_p50,
            ratio_p99,
            goal,
            met,
            headline: false,
        }
    }

    /// Marks the row for the headline table.
    pub fn headline(mut self) -> Self {
        self.headline = true;
        self
    }

    /// Sets the outcome of a goal judged by the section ([`Goal::Constant`]).
    pub fn judged(mut self, met: bool) -> Self {
        self.met = Some(met);
        self
    }

    fn met_cell(&self) -> &'static str {
        match self.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        }
    }
}

/// A group of rows with the text that explains them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Section {
    /// Heading.
    pub title: String,
    /// What was measured, against which baseline, with which counts (markdown).
    pub text: String,
    /// Column header of the baseline.
    pub baseline_label: String,
    /// The rows.
    pub rows: Vec<Row>,
    /// Remarks after the table (markdown), e.g. why a goal is missed.
    pub notes: Vec<String>,
}

impl Section {
    /// An empty section.
    pub fn new(title: &str, baseline_label: &str, text: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            text: text.into(),
            baseline_label: baseline_label.into(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A section whose measurement failed: the error instead of a table.
    pub fn failed(title: &str, error: &anyhow::Error) -> Self {
        Self {
            title: title.into(),
            text: format!("Not measured: {error:#}"),
            ..Self::default()
        }
    }

    /// Renders the section.
    pub fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n{}\n\n", self.title, self.text.trim_end());
        if !self.rows.is_empty() {
            let _ = writeln!(
                out,
                "| Measure | {} | gluster-csi | Ratio p50 | Ratio p99 | Goal | Met |",
                if self.baseline_label.is_empty() {
                    "Baseline"
                } else {
                    &self.baseline_label
                }
            );
            out.push_str("|---|---|---|---|---|---|---|\n");
            for r in &self.rows {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    r.measure,
                    r.baseline.map(|s| s.cell()).unwrap_or_else(|| "–".into()),
                    r.subject.map(|s| s.cell()).unwrap_or_else(|| "–".into()),
                    format_ratio(r.ratio_p50),
                    format_ratio(r.ratio_p99),
                    r.goal.cell(),
                    r.met_cell()
                );
            }
            out.push('\n');
        }
        for n in &self.notes {
            let _ = writeln!(out, "{}\n", n.trim_end());
        }
        out
    }
}

/// The whole report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// The machine, as markdown lines.
    pub machine: Vec<(String, String)>,
    /// The command that reproduces the run.
    pub command: String,
    /// Measured sections, in order.
    pub sections: Vec<Section>,
}

impl Report {
    /// The headline table: every headline row of every section.
    pub fn headline(&self) -> String {
        let mut out = String::from(
            "| Measure | Baseline (same run) | gluster-csi | Ratio p50 | Ratio p99 | Goal | Met |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for s in &self.sections {
            for r in s.rows.iter().filter(|r| r.headline) {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    r.measure,
                    r.baseline.map(|x| short(&x)).unwrap_or_else(|| "–".into()),
                    r.subject.map(|x| short(&x)).unwrap_or_else(|| "–".into()),
                    format_ratio(r.ratio_p50),
                    format_ratio(r.ratio_p99),
                    r.goal.cell(),
                    r.met_cell()
                );
            }
        }
        out
    }

    /// The full report in markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::from("## Machine\n\n| | |\n|---|---|\n");
        for (k, v) in &self.machine {
            let _ = writeln!(out, "| {k} | {v} |");
        }
        let _ = write!(
            out,
            "\nReproduce with:\n\n```sh\n{}\n```\n\n## Headline\n\n{}\n## Details\n\n",
            self.command,
            self.headline()
        );
        for s in &self.sections {
            out.push_str(&s.markdown());
        }
        out
    }
}

/// `p50 / p99` for the headline table.
fn short(s: &Summary) -> String {
    if s.n == 1 || s.unit.higher_is_better() {
        s.unit.format(s.p50)
    } else {
        format!("{} / {}", s.unit.format(s.p50), s.unit.format(s.p99))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Samples, Unit};

    fn secs(v: &[f64]) -> Option<Summary> {
        Samples::from_values(Unit::Seconds, v.iter().copied()).summary()
    }

    #[test]
    fn latency_goals_judge_median_and_tail() {
        let base = secs(&[1.0, 1.0, 2.0]);
        let ok = Row::compare("x", base, secs(&[1.0, 1.02, 2.0]), Goal::RatioAtMost(1.05));
        assert_eq!(ok.met, Some(true));
        let slow_tail = Row::compare("x", base, secs(&[1.0, 1.0, 3.0]), Goal::RatioAtMost(1.05));
        assert_eq!(slow_tail.ratio_p99, Some(1.5));
        assert_eq!(slow_tail.met, Some(false));
    }

    #[test]
    fn rate_goals_judge_the_median() {
        let b = Samples::from_values(Unit::MibPerSec, [100.0, 110.0, 90.0]).summary();
        let s = Samples::from_values(Unit::MibPerSec, [96.0, 50.0, 99.0]).summary();
        let r = Row::compare("w", b, s, Goal::RatioAtLeast(0.95));
        assert_eq!(r.ratio_p99, None);
        assert_eq!(r.met, Some(true));
    }

    #[test]
    fn absolute_goal_and_missing_baseline() {
        let r = Row::compare("p", None, secs(&[0.005, 0.030]), Goal::P99AtMostSecs(0.020));
        assert_eq!(r.met, Some(false));
        assert_eq!(r.ratio_p50, None);
        let md = Section {
            title: "T".into(),
            rows: vec![r],
            ..Section::default()
        }
        .markdown();
        assert!(md.contains("| p | – | 17.5 ms"), "{md}");
        assert!(md.contains("p99 ≤ 20 ms | **no** |"), "{md}");
    }
}
