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

/// Reassembles a chunked message, refusing to hold more than a limit.
#[derive(Debug)]
pub(crate) struct Assembler {
    buf: bytes::BytesMut,
    limit: usize,
}

impl Assembler {
    /// An assembler for messages of at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Assembler {
            buf: bytes::BytesMut::new(),
            limit,
        }
    }

    /// Adds a chunk; returns the whole message after its last chunk, and
    /// OUT_OF_RANGE (tonic's code and wording for its own limit) once the
    /// message outgrows the limit.
    pub(crate) fn push(
        &mut self,
        data: &[u8],
        last: bool,
    ) -> Result<Option<bytes::Bytes>, tonic::Status> {
        if self.buf.len() + data.len() > self.limit {
            return Err(tonic::Status::out_of_range(format!(
                "Error, decoded message length too large: found more than {} bytes, the limit is: {} bytes",
                self.limit, self.limit
            )));
        }
        self.buf.extend_from_slice(data);
        Ok(last.then(|| std::mem::take(&mut self.buf).freeze()))
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
        assert!(Assembler::new(10).push(&[0; 11], false).is_err());
    }
}
