//! Large messages as pieces: sending a message within credit, in chunks when
//! it exceeds the peer's frame limit or the credit left, and reassembling
//! chunks under a size limit.

use super::credit::SendCredit;

/// One piece of an outgoing message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// The whole message, in one frame.
    Whole(bytes::Bytes),
    /// A chunk of a message larger than the peer's frame limit.
    Chunk {
        /// The chunk's bytes.
        data: bytes::Bytes,
        /// Whether it is the message's last chunk.
        last: bool,
    },
}

impl Piece {
    /// The frame carrying this piece of call `call_id`'s message of method
    /// `tag`: `whole` wraps a whole message, `chunk` a chunk (the router's
    /// `Call`/`Chunk`, or the bridge's `Reply`/`Chunk`).
    pub(crate) fn frame<F>(
        self,
        call_id: u64,
        tag: u32,
        whole: impl FnOnce(crate::wire::Payload) -> F,
        chunk: impl FnOnce(crate::pb::MessageChunk) -> F,
    ) -> F {
        match self {
            Piece::Whole(message) => whole(crate::wire::Payload {
                call_id,
                tag,
                message,
            }),
            Piece::Chunk { data, last } => chunk(crate::pb::MessageChunk {
                call_id,
                data,
                last,
            }),
        }
    }
}

/// Why a message could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The call ended while waiting for credit.
    Closed,
    /// The register stream is gone.
    Gone,
}

/// Sends `message` as credit allows, never past it: in one frame when it fits
/// in both `max_frame` and the credit left, otherwise in chunks of at most
/// that much, each sent once the credit is positive and `gate` has resolved
/// (the router waits there for room in the registration's outbound queue; the
/// bridge passes a gate that is always open). `emit` writes one piece and
/// returns false when the stream is gone.
///
/// The protocol lets a sender overshoot its credit by one frame; this sender
/// does not, so a receiver that stops reading holds at most its window.
pub(crate) async fn send_with_credit<G: std::future::Future<Output = ()>>(
    credit: &SendCredit,
    max_frame: usize,
    message: bytes::Bytes,
    gate: impl Fn() -> G,
    mut emit: impl FnMut(Piece) -> bool,
) -> Result<(), SendError> {
    let max_frame = max_frame.max(1);
    let room = |credit: &SendCredit| {
        usize::try_from(credit.available())
            .unwrap_or(0)
            .clamp(1, max_frame)
    };
    credit.ready().await.map_err(|_| SendError::Closed)?;
    gate().await;
    if message.len() <= max_frame && credit.try_consume(message.len()) {
        return if emit(Piece::Whole(message)) {
            Ok(())
        } else {
            Err(SendError::Gone)
        };
    }
    let mut rest = message;
    let mut first = true;
    while !rest.is_empty() {
        if !first {
            credit.ready().await.map_err(|_| SendError::Closed)?;
            gate().await;
        }
        first = false;
        let data = rest.split_to(rest.len().min(room(credit)));
        credit.consume(data.len());
        if !emit(Piece::Chunk {
            data,
            last: rest.is_empty(),
        }) {
            return Err(SendError::Gone);
        }
    }
    Ok(())
}

/// Why a chunk was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Oversize {
    /// The message would grow past the limit on one message.
    Message {
        /// The most one message may hold.
        limit: usize,
    },
    /// The partial messages of every call sharing the [`PartialPool`] would
    /// grow past its limit.
    Pool {
        /// The most they may hold together.
        limit: usize,
    },
}

/// The bytes the reassembly buffers of several calls (one registration's,
/// on the router) hold together, against one limit: however many calls a
/// peer sends never-ending messages on, they hold at most the limit.
#[derive(Debug)]
pub(crate) struct PartialPool {
    held: std::sync::atomic::AtomicUsize,
    limit: usize,
}

impl PartialPool {
    /// A pool holding at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        PartialPool {
            held: std::sync::atomic::AtomicUsize::new(0),
            limit,
        }
    }

    /// The bytes held now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The most the pool holds.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Takes `n` more bytes; false (and nothing taken) past the limit.
    fn take(&self, n: usize) -> bool {
        use std::sync::atomic::Ordering;
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|&after| after <= self.limit)
            })
            .is_ok()
    }

    /// Takes `n` more bytes whatever the limit (an allocation already made).
    fn force(&self, n: usize) {
        self.held.fetch_add(n, std::sync::atomic::Ordering::AcqRel);
    }

    /// Gives back `n` bytes.
    fn give(&self, n: usize) {
        self.held.fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Reassembles a chunked message, refusing to hold more than a limit per
/// message and, with a [`PartialPool`], more than the pool's limit together
/// with the other calls sharing it. The pool counts the buffer's allocated
/// capacity, not only the bytes in it, so what it reports is what is held.
#[derive(Debug)]
pub(crate) struct Assembler {
    buf: Vec<u8>,
    limit: usize,
    pool: Option<std::sync::Arc<PartialPool>>,
    /// The capacity of `buf` counted in the pool.
    counted: usize,
}

impl Assembler {
    /// An assembler for messages of at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Assembler {
            buf: Vec::new(),
            limit,
            pool: None,
            counted: 0,
        }
    }

    /// An assembler for messages of at most `limit` bytes whose buffer
    /// counts in `pool`.
    pub(crate) fn pooled(limit: usize, pool: std::sync::Arc<PartialPool>) -> Self {
        Assembler {
            buf: Vec::new(),
            limit,
            pool: Some(pool),
            counted: 0,
        }
    }

    /// The most one message may hold.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Adds a chunk; returns the whole message after its last chunk. A chunk
    /// that would take the message past its limit, or the pool past its
    /// own, is refused, and the message so far dropped.
    pub(crate) fn push(
        &mut self,
        data: &[u8],
        last: bool,
    ) -> Result<Option<bytes::Bytes>, Oversize> {
        let need = self.buf.len().saturating_add(data.len());
        if need > self.limit {
            self.reset();
            return Err(Oversize::Message { limit: self.limit });
        }
        if need > self.buf.capacity() {
            self.grow(need)?;
        }
        self.buf.extend_from_slice(data);
        if !last {
            return Ok(None);
        }
        let whole = std::mem::take(&mut self.buf);
        self.release();
        Ok(Some(bytes::Bytes::from(whole)))
    }

    /// Makes room for `need` bytes: doubling (within the message limit) so
    /// a message costs few copies, or exactly `need` when the pool has no
    /// room for the doubled buffer.
    fn grow(&mut self, need: usize) -> Result<(), Oversize> {
        let doubled = self
            .buf
            .capacity()
            .saturating_mul(2)
            .min(self.limit)
            .max(need);
        let Some(pool) = &self.pool else {
            self.buf.reserve_exact(doubled - self.buf.len());
            return Ok(());
        };
        let capacity = if pool.take(doubled - self.counted) {
            doubled
        } else if pool.take(need - self.counted) {
            need
        } else {
            let limit = pool.limit();
            self.reset();
            return Err(Oversize::Pool { limit });
        };
        self.buf.reserve_exact(capacity - self.buf.len());
        // The allocator may have given more than asked: count what is held.
        let actual = self.buf.capacity();
        if actual > capacity {
            pool.force(actual - capacity);
        }
        self.counted = actual;
        Ok(())
    }

    /// Drops the message so far.
    fn reset(&mut self) {
        self.buf = Vec::new();
        self.release();
    }

    /// Gives the buffer's bytes back to the pool.
    fn release(&mut self) {
        if let Some(pool) = &self.pool {
            pool.give(std::mem::take(&mut self.counted));
        }
    }
}

impl Drop for Assembler {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod piece_tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn a_sender_never_goes_past_its_credit() {
        let credit = std::sync::Arc::new(SendCredit::new(100));
        let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = {
            let (credit, sent) = (credit.clone(), sent.clone());
            tokio::spawn(async move {
                send_with_credit(
                    &credit,
                    64,
                    Bytes::from(vec![9; 250]),
                    || std::future::ready(()),
                    |piece| {
                        sent.lock().expect("lock").push(piece);
                        true
                    },
                )
                .await
            })
        };
        // 100 bytes of credit: 64 + 36, then it waits.
        while credit.available() > 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(credit.available(), 0);
        credit.grant(150);
        let result = tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("finished")
            .expect("joined");
        assert_eq!(result, Ok(()));
        let sizes: Vec<usize> = sent
            .lock()
            .expect("lock")
            .iter()
            .map(|p| match p {
                Piece::Whole(m) => m.len(),
                Piece::Chunk { data, .. } => data.len(),
            })
            .collect();
        assert_eq!(sizes, vec![64, 36, 64, 64, 22]);
        assert_eq!(credit.available(), 0);
    }

    #[tokio::test]
    async fn large_messages_go_in_chunks_and_come_back_whole() {
        let credit = SendCredit::new(1 << 20);
        let message = Bytes::from((0..250u8).collect::<Vec<_>>());
        let mut pieces = Vec::new();
        send_with_credit(
            &credit,
            100,
            message.clone(),
            || std::future::ready(()),
            |p| {
                pieces.push(p);
                true
            },
        )
        .await
        .expect("sent");
        assert_eq!(pieces.len(), 3);
        let mut assembler = Assembler::new(1000);
        let mut whole = None;
        for piece in pieces {
            let Piece::Chunk { data, last } = piece else {
                panic!("expected chunks");
            };
            whole = assembler.push(&data, last).expect("within limit");
        }
        assert_eq!(whole, Some(message));
        assert_eq!(
            Assembler::new(10).push(&[0; 11], false),
            Err(Oversize::Message { limit: 10 })
        );
    }

    #[test]
    fn calls_sharing_a_pool_hold_at_most_its_limit_together() {
        let pool = std::sync::Arc::new(PartialPool::new(1000));
        let mut calls: Vec<Assembler> = (0..4)
            .map(|_| Assembler::pooled(10_000, pool.clone()))
            .collect();
        let mut refused = 0;
        for _ in 0..20 {
            for call in &mut calls {
                match call.push(&[1; 50], false) {
                    Ok(None) => {}
                    Ok(Some(_)) => panic!("never last"),
                    Err(Oversize::Pool { limit }) => {
                        assert_eq!(limit, 1000);
                        refused += 1;
                    }
                    Err(other) => panic!("{other:?}"),
                }
                assert!(pool.held() <= 1000, "{} held", pool.held());
            }
        }
        assert!(refused > 0, "the pool refused some chunks");
        // A finished message leaves the pool; so does a dropped call.
        let whole = calls[0].push(&[2; 10], true).expect("room").expect("whole");
        assert!(!whole.is_empty());
        calls.truncate(0);
        assert_eq!(pool.held(), 0);
        // One message may still use the whole pool.
        let mut alone = Assembler::pooled(10_000, pool.clone());
        for _ in 0..19 {
            assert_eq!(alone.push(&[3; 50], false), Ok(None));
        }
        let whole = alone.push(&[3; 50], true).expect("fits exactly");
        assert_eq!(whole.map(|m| m.len()), Some(1000));
        assert_eq!(pool.held(), 0);
    }
}
