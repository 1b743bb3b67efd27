//! Credit arithmetic of one direction of one call.
//!
//! The sender holds a [`SendCredit`]: it sends while its credit is positive
//! and subtracts each frame's payload size. The receiver holds a
//! [`CreditReturn`]: it counts bytes the application consumed and says when
//! enough have piled up to be worth a `WindowUpdate`. A call that runs out of
//! credit waits alone; the register stream keeps flowing for every other call.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use tokio::sync::Notify;

/// The sending side's credit for one call and direction.
#[derive(Debug)]
pub(crate) struct SendCredit {
    available: AtomicI64,
    closed: AtomicBool,
    notify: Notify,
}

/// The call ended while a sender waited for credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CreditClosed;

impl SendCredit {
    /// Credit of `initial` bytes.
    pub(crate) fn new(initial: u32) -> Self {
        SendCredit {
            available: AtomicI64::new(i64::from(initial)),
            closed: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }

    /// Adds credit returned by the receiver and wakes a waiting sender.
    pub(crate) fn grant(&self, increment: u32) {
        self.available
            .fetch_add(i64::from(increment), Ordering::AcqRel);
        self.notify.notify_one();
    }

    /// Takes `len` bytes of credit when that much is left (a whole frame that
    /// fits in the credit); false, taking nothing, otherwise.
    pub(crate) fn try_consume(&self, len: usize) -> bool {
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        self.available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |available| {
                (available >= len).then(|| available - len)
            })
            .is_ok()
    }

    /// Takes `len` bytes of credit; the caller has checked it is positive.
    pub(crate) fn consume(&self, len: usize) {
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        self.available.fetch_sub(len, Ordering::AcqRel);
    }

    /// The credit left now (negative after a `consume` past it, which the
    /// runtime's own senders never do).
    pub(crate) fn available(&self) -> i64 {
        self.available.load(Ordering::Acquire)
    }

    /// Wakes any waiter for good: the call is over.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Waits until there is credit to send one frame.
    pub(crate) async fn ready(&self) -> Result<(), CreditClosed> {
        loop {
            let notified = self.notify.notified();
            if self.closed.load(Ordering::Acquire) {
                return Err(CreditClosed);
            }
            if self.available() > 0 {
                return Ok(());
            }
            notified.await;
        }
    }
}

/// The receiving side's bookkeeping of consumed bytes for one call and
/// direction.
#[derive(Debug)]
pub(crate) struct CreditReturn {
    pending: u32,
    threshold: u32,
}

impl CreditReturn {
    /// For a window of `window` bytes: credit goes back once a quarter of the
    /// window has been consumed, so a sender never waits on a round trip while
    /// the receiver keeps up.
    pub(crate) fn new(window: u32) -> Self {
        CreditReturn {
            pending: 0,
            threshold: (window / 4).max(1),
        }
    }

    /// Records `len` consumed bytes; returns the increment to send back now, if
    /// any.
    pub(crate) fn consumed(&mut self, len: usize) -> Option<u32> {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        self.pending = self.pending.saturating_add(len);
        if self.pending >= self.threshold {
            Some(std::mem::take(&mut self.pending))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn sender_waits_for_credit_and_wakes_on_grant() {
        let credit = Arc::new(SendCredit::new(10));
        credit.ready().await.expect("initial credit");
        credit.consume(25);
        assert_eq!(credit.available(), -15);
        let waiter = {
            let credit = credit.clone();
            tokio::spawn(async move { credit.ready().await })
        };
        credit.grant(10);
        assert!(!waiter.is_finished() || credit.available() > 0);
        credit.grant(10);
        let result = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(result, Ok(()));
    }

    #[tokio::test]
    async fn closing_releases_a_waiting_sender() {
        let credit = Arc::new(SendCredit::new(0));
        let waiter = {
            let credit = credit.clone();
            tokio::spawn(async move { credit.ready().await })
        };
        credit.close();
        let result = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(result, Err(CreditClosed));
    }

    #[test]
    fn try_consume_takes_only_credit_that_is_there() {
        let credit = SendCredit::new(10);
        assert!(credit.try_consume(10));
        assert!(!credit.try_consume(1));
        assert!(credit.try_consume(0));
        assert_eq!(credit.available(), 0);
    }

    #[test]
    fn credit_returns_in_quarter_windows() {
        let mut ret = CreditReturn::new(400);
        assert_eq!(ret.consumed(60), None);
        assert_eq!(ret.consumed(60), Some(120));
        assert_eq!(ret.consumed(100), Some(100));
    }
}
