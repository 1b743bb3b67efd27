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
        self.0.store(now_ms(), Ordering::Relaxed);
    }

    /// Milliseconds since it last happened.
    pub(crate) fn elapsed_ms(&self) -> u64 {
        now_ms().saturating_sub(self.0.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_grows_and_touch_resets_it() {
        let at = Millis::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(at.elapsed_ms() >= 20);
        at.touch();
        assert!(at.elapsed_ms() < 20);
    }
}
