//! A count of things in progress that can be awaited at zero: the calls a
//! router holds, the calls of one bridge registration. One atomic word, a
//! `Notify` woken when the count reaches zero and one woken when it leaves
//! zero.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// A count that wakes its waiters when it reaches zero.
#[derive(Debug, Default)]
pub(crate) struct Gauge {
    value: AtomicUsize,
    zero: Notify,
    busy: Notify,
}

impl Gauge {
    /// One more in progress; wakes the waiters of [`Gauge::busy`] when it
    /// is the first.
    pub(crate) fn inc(&self) {
        if self.value.fetch_add(1, Ordering::AcqRel) == 0 {
            self.busy.notify_waiters();
        }
    }

    /// A future that completes the next time the count leaves zero: made
    /// before reading the count, it misses no such moment after the read.
    pub(crate) fn busy(&self) -> tokio::sync::futures::Notified<'_> {
        self.busy.notified()
    }

    /// One fewer; wakes the waiters when none is left.
    pub(crate) fn dec(&self) {
        if self.value.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.zero.notify_waiters();
        }
    }

    /// None in progress any more, at once.
    pub(crate) fn clear(&self) {
        self.value.store(0, Ordering::Release);
        self.zero.notify_waiters();
    }

    /// How many are in progress.
    pub(crate) fn get(&self) -> usize {
        self.value.load(Ordering::Acquire)
    }

    /// Waits until none is in progress.
    pub(crate) async fn zero(&self) {
        loop {
            let zero = self.zero.notified();
            if self.get() == 0 {
                return;
            }
            zero.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_wake_when_the_count_reaches_zero() {
        let gauge = Arc::new(Gauge::default());
        gauge.inc();
        gauge.inc();
        let waiter = {
            let gauge = gauge.clone();
            tokio::spawn(async move { gauge.zero().await })
        };
        gauge.dec();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        gauge.dec();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(gauge.get(), 0);
    }
}
