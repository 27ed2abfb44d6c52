//! Waiting between attempts: `/queue` polling and retries of 429, 503 and failed GETs, and the
//! budget that bounds how long one request may wait for its retries.
//!
//! Pure functions of their inputs (the random part is passed in) so the bounds can be tested.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// First wait between two `/queue` polls.
pub(crate) const POLL_FIRST: Duration = Duration::from_millis(200);
/// Longest wait between two `/queue` polls.
pub(crate) const POLL_MAX: Duration = Duration::from_secs(3);

/// Wait before retrying when the server gave no `Retry-After`: doubles from this…
const RETRY_FIRST: Duration = Duration::from_millis(500);
/// …up to this.
const RETRY_MAX: Duration = Duration::from_secs(8);
/// A `Retry-After` longer than this is treated as this.
pub(crate) const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);
/// Fixed part of the jitter added to every retry wait.
const JITTER_FLOOR: Duration = Duration::from_millis(250);

/// Wait before poll number `n` (0-based): 200 ms, growing by half each time, capped at 3 s.
pub(crate) fn poll_delay(n: u32) -> Duration {
    let mut d = POLL_FIRST;
    for _ in 0..n {
        d = d.saturating_add(d / 2);
        if d >= POLL_MAX {
            return POLL_MAX;
        }
    }
    d
}

/// `Retry-After` as delta-seconds (what Heketi sends). HTTP dates and junk give `None`.
pub(crate) fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let secs: u64 = v.parse().ok()?;
    Some(Duration::from_secs(secs).min(RETRY_AFTER_CAP))
}

/// Wait before retry number `attempt` (1 for the first retry).
///
/// The base is `Retry-After` when the server sent one, otherwise 500 ms doubling up to 8 s.
/// `unit` in `[0, 1)` scales the jitter, which is at most a quarter of the base plus 250 ms,
/// so clients that were turned away together do not come back together.
pub(crate) fn retry_delay(attempt: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
    let base = match retry_after {
        Some(d) => d.min(RETRY_AFTER_CAP),
        None => {
            let shift = attempt.saturating_sub(1).min(16);
            RETRY_FIRST.saturating_mul(1 << shift).min(RETRY_MAX)
        }
    };
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let jitter_max = base / 4 + JITTER_FLOOR;
    base + jitter_max.mul_f64(unit)
}

/// How long one request may still wait between its retries.
///
/// Only the waits count, not the exchanges themselves: a request whose budget is 2 s may retry
/// after 0.5 s and after 1 s, but not again after 2 s more. A retry whose wait does not fit in
/// what is left is not made at all (the caller returns the last error at once) rather than
/// shortened: the wait was chosen to give the server time, and a shorter one would not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryBudget {
    /// `None`: no limit besides the attempt count and the operation deadline.
    limit: Option<Duration>,
    spent: Duration,
}

impl RetryBudget {
    /// A fresh budget of `limit` (`None` for no limit).
    pub(crate) fn new(limit: Option<Duration>) -> Self {
        Self {
            limit,
            spent: Duration::ZERO,
        }
    }

    /// What is left to wait; `None` when there is no limit.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.limit.map(|l| l.saturating_sub(self.spent))
    }

    /// Takes `wait` out of the budget when it fits, and says whether it did.
    pub(crate) fn try_spend(&mut self, wait: Duration) -> bool {
        match self.remaining() {
            Some(left) if wait > left => false,
            _ => {
                self.spent = self.spent.saturating_add(wait);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(RETRY_AFTER, v);
        }
        h
    }

    #[test]
    fn retry_after_parsing() {
        let cases: [(&str, Option<u64>); 7] = [
            ("5", Some(5)),
            (" 7 ", Some(7)),
            ("0", Some(0)),
            ("3600", Some(60)), // capped
            ("-1", None),
            ("Wed, 21 Oct 2015 07:28:00 GMT", None),
            ("soon", None),
        ];
        for (raw, want) in cases {
            assert_eq!(
                parse_retry_after(&headers(raw)),
                want.map(Duration::from_secs),
                "{raw:?}"
            );
        }
        assert_eq!(parse_retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn retry_delay_honours_retry_after_within_jitter_bounds() {
        for secs in [0u64, 1, 5, 30, 60, 500] {
            let base = Duration::from_secs(secs.min(60));
            for unit in [0.0, 0.3, 0.999, 1.0, f64::NAN, -3.0, 7.0] {
                let d = retry_delay(1, Some(Duration::from_secs(secs)), unit);
                assert!(d >= base, "{secs}s/{unit}: {d:?}");
                assert!(
                    d <= base + base / 4 + Duration::from_millis(250),
                    "{secs}s/{unit}: {d:?}"
                );
            }
        }
    }

    #[test]
    fn retry_delay_without_header_doubles_and_is_capped() {
        let lows: Vec<Duration> = (1..=8).map(|a| retry_delay(a, None, 0.0)).collect();
        assert_eq!(lows[0], Duration::from_millis(500));
        assert_eq!(lows[1], Duration::from_secs(1));
        assert_eq!(lows[2], Duration::from_secs(2));
        assert!(lows.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(lows[7], Duration::from_secs(8));
        assert!(retry_delay(u32::MAX, None, 0.999) <= Duration::from_millis(10_250));
    }

    #[test]
    fn poll_delay_grows_from_200ms_to_3s() {
        assert_eq!(poll_delay(0), Duration::from_millis(200));
        assert_eq!(poll_delay(1), Duration::from_millis(300));
        let all: Vec<Duration> = (0..40).map(poll_delay).collect();
        assert!(all.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(all[39], POLL_MAX);
        assert!(all.iter().all(|d| *d <= POLL_MAX));
    }

    #[test]
    fn an_unlimited_budget_allows_every_wait() {
        let mut b = RetryBudget::new(None);
        for _ in 0..100 {
            assert!(b.try_spend(RETRY_AFTER_CAP));
        }
        assert!(b.try_spend(Duration::MAX));
        assert_eq!(b.remaining(), None);
    }

    #[test]
    fn a_budget_takes_waits_while_they_fit() {
        let ms = Duration::from_millis;
        // (limit, waits offered in order, which ones are taken, what is left at the end)
        let cases: [(u64, &[u64], &[bool], u64); 6] = [
            (0, &[0, 1], &[true, false], 0),
            (2000, &[500, 1000, 2000], &[true, true, false], 500),
            (2000, &[500, 1500, 1], &[true, true, false], 0),
            // A wait that does not fit is refused whole, and a smaller one may still fit.
            (3000, &[5000, 1000], &[false, true], 2000),
            (3000, &[3001], &[false], 3000),
            (10, &[u64::MAX], &[false], 10),
        ];
        for (limit, waits, taken, left) in cases {
            let mut b = RetryBudget::new(Some(ms(limit)));
            let got: Vec<bool> = waits.iter().map(|w| b.try_spend(ms(*w))).collect();
            assert_eq!(got, taken, "limit {limit} ms, waits {waits:?}");
            assert_eq!(
                b.remaining(),
                Some(ms(left)),
                "limit {limit} ms, waits {waits:?}"
            );
        }
    }

    #[test]
    fn a_short_budget_ends_transport_retries_within_it() {
        // The controller's case: Heketi refuses connections and retries wait 500 ms doubling.
        // Whatever the jitter, a 3 s budget allows one or two retries and no third.
        for unit in [0.0, 0.5, 0.999] {
            let mut b = RetryBudget::new(Some(Duration::from_secs(3)));
            let mut retries = 0u32;
            let mut waited = Duration::ZERO;
            for attempt in 1..crate::DEFAULT_MAX_ATTEMPTS {
                let wait = retry_delay(attempt, None, unit);
                if !b.try_spend(wait) {
                    break;
                }
                retries += 1;
                waited += wait;
            }
            assert!((1..=2).contains(&retries), "{unit}: {retries} retries");
            assert!(
                waited <= Duration::from_secs(3),
                "{unit}: waited {waited:?}"
            );
        }
        // A Retry-After longer than the budget ends retrying at once.
        let mut b = RetryBudget::new(Some(Duration::from_secs(3)));
        assert!(!b.try_spend(retry_delay(1, Some(Duration::from_secs(5)), 0.0)));
    }
}
