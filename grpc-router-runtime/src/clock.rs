//! A cheap, shareable record of when something last happened, in
//! milliseconds since a process-wide epoch: one atomic word, so the hot paths
//! (every frame written, every pong) only store to it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the process-wide epoch.
pub(crate) fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Nanoseconds since the process-wide epoch.
pub(crate) fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// When something last happened.
#[derive(Debug)]
pub(crate) struct Millis(AtomicU64);

impl Millis {
    /// Happened now.
    pub(crate) fn now() -> Self {
        Millis(AtomicU64::new(now_ms()))
    }

    /// Records that it happened again, now.
    pub(crate) fn touch(&self) {
        self.touch_at(now_ms());
    }

    /// Records that it happened at `at` (milliseconds since the epoch).
    fn touch_at(&self, at: u64) {
        self.0.store(at, Ordering::Relaxed);
    }

    /// Milliseconds since it last happened.
    pub(crate) fn elapsed_ms(&self) -> u64 {
        self.elapsed_ms_at(now_ms())
    }

    /// Milliseconds from when it last happened to `now` (0 if `now` is
    /// earlier).
    fn elapsed_ms_at(&self, now: u64) -> u64 {
        now.saturating_sub(self.0.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_grows_and_touch_resets_it() {
        let at = Millis(AtomicU64::new(1_000));
        assert_eq!(at.elapsed_ms_at(1_020), 20);
        at.touch_at(1_020);
        assert_eq!(at.elapsed_ms_at(1_020), 0);
        assert_eq!(at.elapsed_ms_at(1_025), 5);
        assert_eq!(at.elapsed_ms_at(900), 0, "a time before the record");
    }

    #[test]
    fn now_never_goes_back() {
        let (first, second) = (now_ms(), now_ms());
        assert!(second >= first);
        let at = Millis::now();
        at.touch();
        assert!(at.elapsed_ms() <= now_ms());
    }
}
