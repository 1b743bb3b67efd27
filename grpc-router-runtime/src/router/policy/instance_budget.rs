//! The per-instance rate limit as a filter the balancer applies: each
//! instance carries its own GCRA state (one atomic word, the theoretical
//! arrival time), the balancer passes over an instance with no room left
//! ([`InstanceLimit::has_room`]), and the call charges the instance it was
//! given ([`InstanceLimit::charge`]).
//!
//! Looking and charging are two steps so that power of two choices can look
//! at two instances and charge only the one it picks. Two calls that look at
//! once may both take an instance's last token: the charge always lands, so
//! the overdraft is paid back before the instance has room again, and the
//! rate holds over any interval longer than the burst.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::router::limit::RateLimit;

/// An instance's record against the per-instance limit.
#[derive(Debug, Default)]
pub(crate) struct InstanceBudget {
    /// When the instance's bucket is full again (the GCRA's theoretical
    /// arrival time), in nanoseconds since the process epoch
    /// ([`crate::clock::now_ns`]); 0 for an instance never charged.
    full_at: AtomicU64,
}

/// The per-instance limit, as the balancer applies it at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InstanceLimit {
    /// The time one call costs: a second divided by the rate.
    interval_ns: u64,
    /// How far ahead of now the full-again time may be for a call to pass:
    /// the burst less one call.
    tolerance_ns: u64,
    /// Now, in nanoseconds since the process epoch.
    now_ns: u64,
    /// The limit's rate, for the refusal's message.
    pub(crate) per_second: u32,
}

impl InstanceLimit {
    /// `limit` at `now_ns`.
    pub(crate) fn new(limit: RateLimit, now_ns: u64) -> Self {
        let interval_ns = 1_000_000_000 / u64::from(limit.per_second.get());
        InstanceLimit {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(limit.burst.get()) - 1),
            now_ns,
            per_second: limit.per_second.get(),
        }
    }

    /// The same limit at `now_ns` (for a pick made later, after a wait).
    pub(crate) fn at(self, now_ns: u64) -> Self {
        InstanceLimit { now_ns, ..self }
    }

    /// Whether `budget`'s instance may take one more call now.
    pub(crate) fn has_room(&self, budget: &InstanceBudget) -> bool {
        budget
            .full_at
            .load(Ordering::Relaxed)
            .saturating_sub(self.now_ns)
            <= self.tolerance_ns
    }

    /// Charges one call to `budget`'s instance.
    pub(crate) fn charge(&self, budget: &InstanceBudget) {
        let _ = budget
            .full_at
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |full_at| {
                Some(full_at.max(self.now_ns).saturating_add(self.interval_ns))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn limit(per_second: u32, burst: u32, now_ns: u64) -> InstanceLimit {
        let n = |v| NonZeroU32::new(v).expect("non-zero");
        InstanceLimit::new(
            RateLimit {
                per_second: n(per_second),
                burst: n(burst),
            },
            now_ns,
        )
    }

    /// Takes calls at `now_ns` while there is room; how many it took.
    fn take_all(budget: &InstanceBudget, per_second: u32, burst: u32, now_ns: u64) -> usize {
        let l = limit(per_second, burst, now_ns);
        let mut taken = 0;
        while l.has_room(budget) && taken < 1_000 {
            l.charge(budget);
            taken += 1;
        }
        taken
    }

    #[test]
    fn a_fresh_instance_takes_its_burst_then_has_no_room() {
        let budget = InstanceBudget::default();
        assert_eq!(take_all(&budget, 10, 3, 5_000_000_000), 3);
    }

    #[test]
    fn room_comes_back_at_the_rate() {
        let budget = InstanceBudget::default();
        let start = 5_000_000_000;
        assert_eq!(take_all(&budget, 10, 2, start), 2);
        assert_eq!(
            take_all(&budget, 10, 2, start + 50_000_000),
            0,
            "half an interval"
        );
        assert_eq!(
            take_all(&budget, 10, 2, start + 100_000_000),
            1,
            "one interval"
        );
        assert_eq!(
            take_all(&budget, 10, 2, start + 10_000_000_000),
            2,
            "a full bucket, no more"
        );
    }

    #[test]
    fn looking_does_not_charge() {
        let budget = InstanceBudget::default();
        let l = limit(1, 1, 1_000);
        for _ in 0..10 {
            assert!(l.has_room(&budget));
        }
        l.charge(&budget);
        assert!(!l.has_room(&budget));
    }

    #[test]
    fn an_overdraft_from_racing_calls_is_paid_back_before_room_returns() {
        let budget = InstanceBudget::default();
        let start = 5_000_000_000;
        let l = limit(10, 1, start);
        // Two calls saw room at once and both charge.
        assert!(l.has_room(&budget));
        l.charge(&budget);
        l.charge(&budget);
        assert_eq!(
            take_all(&budget, 10, 1, start + 100_000_000),
            0,
            "still paying back"
        );
        assert_eq!(take_all(&budget, 10, 1, start + 200_000_000), 1);
    }
}
