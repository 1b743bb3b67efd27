//! Outlier detection, with Envoy's semantics: an instance whose calls fail
//! (by status: UNAVAILABLE, INTERNAL, UNKNOWN ... as configured) N times in
//! a row, or at more than a failure rate over a window, is ejected: it
//! takes no calls for `base_ejection` × the times it has been ejected (at
//! most `max_ejection`), and never more than `max_ejected_percent` of a
//! service's instances are out at once (one may always be).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tonic::Code;

/// When instances are ejected and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierDetection {
    /// Failures in a row that eject an instance (0: never by this rule).
    pub consecutive_failures: u32,
    /// The statuses that count as the instance's failure.
    pub failure_codes: Vec<Code>,
    /// The failure rate (0 to 1) over `window` that ejects an instance with
    /// at least `min_calls` calls in it; `None`: never by this rule.
    pub failure_rate: Option<f64>,
    /// The calls a window needs before its rate counts.
    pub min_calls: u32,
    /// The failure rate's window.
    pub window: Duration,
    /// The first ejection's length; the n-th lasts n times as long.
    pub base_ejection: Duration,
    /// No ejection lasts longer.
    pub max_ejection: Duration,
    /// The most instances out at once, in percent of the service's (one
    /// may always be).
    pub max_ejected_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: 5,
            failure_codes: vec![
                Code::Unavailable,
                Code::Internal,
                Code::Unknown,
                Code::DataLoss,
            ],
            failure_rate: None,
            min_calls: 20,
            window: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 10,
        }
    }
}

/// One instance's outlier state.
#[derive(Debug, Default)]
pub(crate) struct OutlierState {
    consecutive: AtomicU32,
    /// When the current ejection ends, in the clock's milliseconds; 0 when
    /// not ejected.
    ejected_until: AtomicU64,
    times_ejected: AtomicU32,
    /// The failure-rate window: its start, calls and failures.
    window_start: AtomicU64,
    window_calls: AtomicU32,
    window_failures: AtomicU32,
}

/// What a finished call did to its instance's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing changed.
    Kept,
    /// It should be ejected now (if the service's share allows).
    Eject,
}

impl OutlierState {
    /// Whether the instance is ejected now (one atomic load when it is not).
    pub(crate) fn is_ejected_now(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) != 0 && self.is_ejected(crate::clock::now_ms())
    }

    /// Whether the instance is ejected at `now_ms`.
    pub(crate) fn is_ejected(&self, now_ms: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now_ms < until
    }

    /// How long the current ejection still lasts at `now_ms`; `None` when
    /// the instance is not ejected.
    pub(crate) fn remaining(&self, now_ms: u64) -> Option<Duration> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        (until != 0 && now_ms < until).then(|| Duration::from_millis(until - now_ms))
    }

    /// How many times the instance has been ejected.
    pub(crate) fn times_ejected(&self) -> u32 {
        self.times_ejected.load(Ordering::Relaxed)
    }

    /// Records a finished call's status.
    pub(crate) fn record(&self, detection: &OutlierDetection, code: Code, now_ms: u64) -> Verdict {
        let failed = detection.failure_codes.contains(&code);
        let in_a_row = if failed {
            self.consecutive.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.consecutive.store(0, Ordering::Relaxed);
            0
        };
        let mut eject =
            detection.consecutive_failures > 0 && in_a_row >= detection.consecutive_failures;
        if let Some(rate) = detection.failure_rate {
            let window_ms = u64::try_from(detection.window.as_millis()).unwrap_or(u64::MAX);
            let start = self.window_start.load(Ordering::Relaxed);
            if now_ms.saturating_sub(start) >= window_ms
                && self
                    .window_start
                    .compare_exchange(start, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.window_calls.store(0, Ordering::Relaxed);
                self.window_failures.store(0, Ordering::Relaxed);
            }
            let calls = self.window_calls.fetch_add(1, Ordering::Relaxed) + 1;
            let failures = if failed {
                self.window_failures.fetch_add(1, Ordering::Relaxed) + 1
            } else {
                self.window_failures.load(Ordering::Relaxed)
            };
            eject |= calls >= detection.min_calls.max(1)
                && f64::from(failures) / f64::from(calls) > rate;
        }
        if eject && !self.is_ejected(now_ms) {
            Verdict::Eject
        } else {
            Verdict::Kept
        }
    }

    /// Ejects the instance from `now_ms`; returns how long for.
    pub(crate) fn eject(&self, detection: &OutlierDetection, now_ms: u64) -> Duration {
        let times = self.times_ejected.fetch_add(1, Ordering::Relaxed) + 1;
        let length = detection
            .base_ejection
            .saturating_mul(times)
            .min(detection.max_ejection);
        let until = now_ms.saturating_add(u64::try_from(length.as_millis()).unwrap_or(u64::MAX));
        self.ejected_until.store(until.max(1), Ordering::Relaxed);
        // It comes back with a clean record.
        self.consecutive.store(0, Ordering::Relaxed);
        self.window_calls.store(0, Ordering::Relaxed);
        self.window_failures.store(0, Ordering::Relaxed);
        length
    }
}

/// Whether one more of `total` instances may be ejected while `ejected`
/// are out.
pub(crate) fn may_eject(detection: &OutlierDetection, ejected: usize, total: usize) -> bool {
    let allowed = (total * detection.max_ejected_percent.min(100) as usize / 100).max(1);
    ejected < allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detection() -> OutlierDetection {
        OutlierDetection {
            consecutive_failures: 3,
            base_ejection: Duration::from_millis(100),
            max_ejection: Duration::from_millis(250),
            ..OutlierDetection::default()
        }
    }

    #[test]
    fn n_failures_in_a_row_eject_and_a_success_resets_the_count() {
        let d = detection();
        let state = OutlierState::default();
        assert_eq!(state.record(&d, Code::Unavailable, 0), Verdict::Kept);
        assert_eq!(state.record(&d, Code::Unavailable, 0), Verdict::Kept);
        assert_eq!(state.record(&d, Code::Ok, 0), Verdict::Kept);
        assert_eq!(
            state.record(&d, Code::NotFound, 0),
            Verdict::Kept,
            "not a failure code"
        );
        assert_eq!(state.record(&d, Code::Internal, 0), Verdict::Kept);
        assert_eq!(state.record(&d, Code::Internal, 0), Verdict::Kept);
        assert_eq!(state.record(&d, Code::Unknown, 0), Verdict::Eject);
    }

    #[test]
    fn each_ejection_lasts_longer_up_to_the_maximum_and_then_ends() {
        let d = detection();
        let state = OutlierState::default();
        assert_eq!(state.eject(&d, 1_000), Duration::from_millis(100));
        assert!(state.is_ejected(1_050));
        assert_eq!(state.remaining(1_050), Some(Duration::from_millis(50)));
        assert!(!state.is_ejected(1_100), "back after the base time");
        assert_eq!(state.remaining(1_100), None);
        assert_eq!(state.eject(&d, 2_000), Duration::from_millis(200));
        assert_eq!(state.eject(&d, 3_000), Duration::from_millis(250));
        assert_eq!(state.times_ejected(), 3);
    }

    #[test]
    fn a_failure_rate_over_the_window_ejects_once_enough_calls_count() {
        let d = OutlierDetection {
            consecutive_failures: 0,
            failure_rate: Some(0.5),
            min_calls: 10,
            ..detection()
        };
        let state = OutlierState::default();
        let mut verdicts = Vec::new();
        for i in 0..10 {
            let code = if i % 3 == 0 {
                Code::Ok
            } else {
                Code::Unavailable
            };
            verdicts.push(state.record(&d, code, 5));
        }
        assert_eq!(verdicts[..9], [Verdict::Kept; 9], "fewer than min_calls");
        assert_eq!(verdicts[9], Verdict::Eject, "6 of 10 failed");
        // A new window starts clean.
        let fresh = OutlierState::default();
        for _ in 0..9 {
            fresh.record(&d, Code::Unavailable, 0);
        }
        assert_eq!(fresh.record(&d, Code::Ok, 20_000), Verdict::Kept);
    }

    #[test]
    fn at_most_the_share_is_ejected_but_one_always_may_be() {
        let d = detection();
        assert!(may_eject(&d, 0, 3), "one of three though 10 % is 0.3");
        assert!(!may_eject(&d, 1, 3));
        assert!(may_eject(&d, 1, 20));
        assert!(!may_eject(&d, 2, 20));
    }
}
