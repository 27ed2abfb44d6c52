//! Waiting between attempts: `/queue` polling and retries of 429, 503 and failed GETs.
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
}
