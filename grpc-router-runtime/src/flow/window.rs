//! The receiving side of one direction of one call: enforcing the window the
//! receiver granted, and the consumer's bookkeeping as it takes messages.
//!
//! The reader of the register stream calls [`RecvWindow::receive`] for every
//! frame it hands to a call, before queueing it: a peer that sends past the
//! window it was granted (plus the one frame of overshoot the protocol allows,
//! plus room for the call's metadata) fails the call instead of growing the
//! receiver's memory. The consumer (the client's response stream on the
//! router, the request body on the bridge) takes frames through an
//! [`Intake`], which releases their bytes, returns credit to the peer and
//! reassembles chunked messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use super::chunk::{Assembler, Oversize, PartialPool};
use super::credit::CreditReturn;

use crate::defaults::METADATA_ALLOWANCE;

/// Bytes a peer delivered for one call and direction that the consumer has
/// not taken yet, against a limit.
#[derive(Debug)]
pub(crate) struct RecvWindow {
    buffered: AtomicUsize,
    limit: usize,
}

/// A peer sent past the window it was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{buffered} bytes buffered, beyond its flow-control window (at most {limit})")]
pub(crate) struct Overrun {
    /// What would be buffered with the frame.
    pub(crate) buffered: usize,
    /// The most the receiver holds.
    pub(crate) limit: usize,
}

impl RecvWindow {
    /// The most a receiver holds for a window of `window` bytes with frames
    /// of at most `max_frame`: the window, one frame of overshoot and the
    /// metadata allowance.
    pub(crate) fn limit_for(window: u32, max_frame: usize) -> usize {
        usize::try_from(window)
            .unwrap_or(usize::MAX)
            .saturating_add(max_frame)
            .saturating_add(METADATA_ALLOWANCE)
    }

    /// A window holding at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        RecvWindow {
            buffered: AtomicUsize::new(0),
            limit,
        }
    }

    /// Accounts for a frame of `size` bytes arriving; an error when it takes
    /// the call past its limit (the frame must then be dropped).
    pub(crate) fn receive(&self, size: usize) -> Result<(), Overrun> {
        let buffered = self.buffered.fetch_add(size, Ordering::AcqRel) + size;
        if buffered > self.limit {
            self.buffered.fetch_sub(size, Ordering::AcqRel);
            return Err(Overrun {
                buffered,
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// Accounts for `size` bytes the consumer has taken.
    pub(crate) fn release(&self, size: usize) {
        self.buffered.fetch_sub(size, Ordering::AcqRel);
    }

    /// The bytes delivered and not yet taken.
    pub(crate) fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Acquire)
    }
}

/// The consumer's side of one direction of one call.
#[derive(Debug)]
pub(crate) struct Intake {
    window: Arc<RecvWindow>,
    credit: CreditReturn,
    assembler: Assembler,
}

impl Intake {
    /// Consumes from `window`, returning credit for a window of `granted`
    /// bytes, reassembling messages of at most `max_message` bytes.
    pub(crate) fn new(window: Arc<RecvWindow>, granted: u32, max_message: usize) -> Self {
        Intake {
            window,
            credit: CreditReturn::new(granted),
            assembler: Assembler::new(max_message),
        }
    }

    /// Like [`Intake::new`], with partial messages counted in `pool`.
    pub(crate) fn pooled(
        window: Arc<RecvWindow>,
        granted: u32,
        max_message: usize,
        pool: Arc<PartialPool>,
    ) -> Self {
        Intake {
            window,
            credit: CreditReturn::new(granted),
            assembler: Assembler::pooled(max_message, pool),
        }
    }

    /// The most one message may hold.
    pub(crate) fn max_message(&self) -> usize {
        self.assembler.limit()
    }

    /// Takes a whole message of `len` bytes; the credit to send back now, if
    /// any.
    pub(crate) fn message(&mut self, len: usize) -> Option<u32> {
        self.window.release(len);
        self.credit.consumed(len)
    }

    /// Takes a chunk: the whole message once its last chunk is in, and the
    /// credit to send back now; refused once the message outgrows its size
    /// limit or the pool its own.
    pub(crate) fn chunk(
        &mut self,
        data: &[u8],
        last: bool,
    ) -> Result<(Option<Bytes>, Option<u32>), Oversize> {
        let whole = self.assembler.push(data, last)?;
        Ok((whole, self.message(data.len())))
    }

    /// Takes headers or trailers of `size` bytes (they use no credit).
    pub(crate) fn metadata(&self, size: usize) {
        self.window.release(size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_past_the_limit_is_refused_and_not_counted() {
        let window = RecvWindow::new(100);
        assert_eq!(window.receive(60), Ok(()));
        assert_eq!(
            window.receive(50),
            Err(Overrun {
                buffered: 110,
                limit: 100
            })
        );
        assert_eq!(window.buffered(), 60);
        window.release(60);
        assert_eq!(window.receive(100), Ok(()));
    }

    #[test]
    fn the_consumer_releases_bytes_and_returns_credit_in_quarters() {
        let window = Arc::new(RecvWindow::new(RecvWindow::limit_for(400, 100)));
        let mut intake = Intake::new(window.clone(), 400, 1000);
        window.receive(60).expect("within");
        window.receive(60).expect("within");
        assert_eq!(intake.message(60), None);
        assert_eq!(intake.message(60), Some(120));
        assert_eq!(window.buffered(), 0);
        window.receive(150).expect("within");
        let (whole, credit) = intake.chunk(&[0; 100], false).expect("fits");
        assert_eq!((whole, credit), (None, Some(100)));
        let (whole, _) = intake.chunk(&[0; 50], true).expect("fits");
        assert_eq!(whole.map(|m| m.len()), Some(150));
        assert_eq!(window.buffered(), 0);
    }
}
