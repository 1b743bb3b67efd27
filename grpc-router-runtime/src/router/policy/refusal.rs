//! Calls the router refuses before forwarding them: a client without valid
//! credentials (UNAUTHENTICATED), one no allow rule admits
//! (PERMISSION_DENIED), one over a rate limit (RESOURCE_EXHAUSTED). Each
//! refusal goes to the service's recent errors (the status page, `grpc-router
//! status`) with its message, which says why, and to the log, at most one
//! line per second per service and reason, that line counting the refusals
//! the limit kept out of the log since the previous one.
//!
//! Authentication and authorization refusals log at WARN (a client with a
//! wrong key or token, or a rule that is too strict, is something to fix);
//! rate-limit refusals at INFO (the limit doing its job). A flood of refused
//! calls costs the log one line per second and reason, and the recent
//! errors their fixed ring.

use std::sync::atomic::{AtomicU64, Ordering};

use tonic::{Code, Status};

/// The shortest time between two log lines of one service and reason.
pub(crate) const LOG_INTERVAL_MS: u64 = 1000;

/// Why the router refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// No valid credentials (UNAUTHENTICATED).
    Unauthenticated,
    /// No allow rule admits the call (PERMISSION_DENIED).
    PermissionDenied,
    /// Over a rate limit (RESOURCE_EXHAUSTED).
    RateLimit,
    /// Over a concurrency limit (RESOURCE_EXHAUSTED).
    ConcurrencyLimit,
    /// Any other refusal (a verifier that cannot run: UNAVAILABLE).
    Other,
}

impl Reason {
    const ALL: usize = 5;

    /// The reason of a refusal with `code`.
    pub(crate) fn of(code: Code) -> Self {
        match code {
            Code::Unauthenticated => Reason::Unauthenticated,
            Code::PermissionDenied => Reason::PermissionDenied,
            Code::ResourceExhausted => Reason::RateLimit,
            _ => Reason::Other,
        }
    }

    /// Its name in the log (`reason` field).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Reason::Unauthenticated => "unauthenticated",
            Reason::PermissionDenied => "permission-denied",
            Reason::RateLimit => "rate-limit",
            Reason::ConcurrencyLimit => "concurrency-limit",
            Reason::Other => "other",
        }
    }

    fn index(self) -> usize {
        match self {
            Reason::Unauthenticated => 0,
            Reason::PermissionDenied => 1,
            Reason::RateLimit => 2,
            Reason::Other => 3,
            Reason::ConcurrencyLimit => 4,
        }
    }
}

/// One reason's log budget: when the next line may be written, and the
/// refusals not logged since the last line.
#[derive(Debug, Default)]
struct Slot {
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

/// At most one log line per [`LOG_INTERVAL_MS`] and reason (one per
/// service: each service's core has its own). Lock-free; the time is
/// passed in, so tests decide it.
#[derive(Debug, Default)]
pub(crate) struct LogLimiter {
    slots: [Slot; Reason::ALL],
}

impl LogLimiter {
    /// Whether a refusal for `reason` at `now_ms` may be logged: `Some(n)`
    /// with the `n` refusals kept out of the log since the last line, or
    /// `None` (it is counted for the next line).
    pub(crate) fn admit(&self, reason: Reason, now_ms: u64) -> Option<u64> {
        let slot = &self.slots[reason.index()];
        let next = slot.next_ms.load(Ordering::Acquire);
        if now_ms >= next
            && slot
                .next_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(LOG_INTERVAL_MS),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            return Some(slot.suppressed.swap(0, Ordering::AcqRel));
        }
        slot.suppressed.fetch_add(1, Ordering::AcqRel);
        None
    }
}

/// Records the refusal of a call of `path` (from `peer`) in its service's
/// recent errors and, within the log budget, in the log; returns `status`.
pub(crate) fn record(
    core: &crate::router::RouterCore,
    path: &str,
    peer: &str,
    status: Status,
    now_ms: u64,
) -> Status {
    let reason = Reason::of(status.code());
    record_as(core, path, peer, status, reason, now_ms)
}

/// [`record`] for a refusal whose reason is not its code's.
pub(crate) fn record_as(
    core: &crate::router::RouterCore,
    path: &str,
    peer: &str,
    status: Status,
    reason: Reason,
    now_ms: u64,
) -> Status {
    core.recent_errors
        .push(path, "", status.code(), status.message());
    let Some(suppressed) = core.refusals.admit(reason, now_ms) else {
        return status;
    };
    let service = core.service.name();
    let code = status.code();
    let message = status.message();
    match reason {
        Reason::RateLimit | Reason::ConcurrencyLimit => tracing::info!(
            event = "refused",
            service,
            method = path,
            reason = reason.name(),
            code = ?code,
            peer,
            suppressed,
            "call refused: {message}"
        ),
        _ => tracing::warn!(
            event = "refused",
            service,
            method = path,
            reason = reason.name(),
            code = ?code,
            peer,
            suppressed,
            "call refused: {message}"
        ),
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_refusal_is_logged_and_the_rest_of_its_second_only_counted() {
        let limiter = LogLimiter::default();
        assert_eq!(limiter.admit(Reason::RateLimit, 5_000), Some(0));
        for ms in [5_000, 5_001, 5_500, 5_999] {
            assert_eq!(limiter.admit(Reason::RateLimit, ms), None, "at {ms}");
        }
        assert_eq!(
            limiter.admit(Reason::RateLimit, 6_000),
            Some(4),
            "a second later: logged with the four kept out"
        );
        assert_eq!(limiter.admit(Reason::RateLimit, 6_999), None);
        assert_eq!(limiter.admit(Reason::RateLimit, 60_000), Some(1));
    }

    #[test]
    fn each_reason_has_its_own_budget() {
        let limiter = LogLimiter::default();
        assert_eq!(limiter.admit(Reason::RateLimit, 100), Some(0));
        assert_eq!(limiter.admit(Reason::Unauthenticated, 100), Some(0));
        assert_eq!(limiter.admit(Reason::PermissionDenied, 100), Some(0));
        assert_eq!(limiter.admit(Reason::RateLimit, 200), None);
        assert_eq!(limiter.admit(Reason::Unauthenticated, 1_100), Some(0));
        assert_eq!(limiter.admit(Reason::RateLimit, 1_100), Some(1));
    }

    #[test]
    fn a_clock_that_goes_back_logs_nothing_until_the_interval_is_over() {
        let limiter = LogLimiter::default();
        assert_eq!(limiter.admit(Reason::Other, 10_000), Some(0));
        assert_eq!(limiter.admit(Reason::Other, 9_000), None);
        assert_eq!(limiter.admit(Reason::Other, 11_000), Some(1));
    }

    #[test]
    fn threads_refusing_at_once_log_one_line_and_count_every_other_refusal() {
        let limiter = std::sync::Arc::new(LogLimiter::default());
        let logged: u64 = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let limiter = limiter.clone();
                    scope.spawn(move || {
                        (0..1_000)
                            .filter(|_| limiter.admit(Reason::RateLimit, 42).is_some())
                            .count() as u64
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).sum()
        });
        assert_eq!(logged, 1, "one line in the interval");
        assert_eq!(
            limiter.admit(Reason::RateLimit, 42 + LOG_INTERVAL_MS),
            Some(3_999),
            "every other refusal is counted on the next line"
        );
    }

    #[test]
    fn reasons_follow_the_status_code() {
        assert_eq!(Reason::of(Code::Unauthenticated), Reason::Unauthenticated);
        assert_eq!(Reason::of(Code::PermissionDenied), Reason::PermissionDenied);
        assert_eq!(Reason::of(Code::ResourceExhausted), Reason::RateLimit);
        assert_eq!(Reason::of(Code::Unavailable), Reason::Other);
        assert_eq!(Reason::RateLimit.name(), "rate-limit");
    }
}
