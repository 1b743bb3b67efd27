//! The HTTP bodies between the bridge and the user's tonic server: request
//! messages in as gRPC frames, response frames out as messages.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Frame;
use tonic::Status;

use crate::flow::{Intake, Oversize};
use crate::pb;
use crate::queue::{QueueReceiver, QueueSender};
use crate::wire::BridgeFrame;

/// What the session reader hands to one call's request body.
#[derive(Debug)]
pub(crate) enum RequestEvent {
    /// One whole request message.
    Message(Bytes),
    /// A piece of a large request message.
    Chunk(pb::MessageChunk),
    /// The client sent its last message.
    End,
}

impl RequestEvent {
    /// The event with its payload in an allocation of its own (no longer a
    /// slice of the register stream's read buffer).
    pub(crate) fn detached(self) -> Self {
        match self {
            RequestEvent::Message(message) => {
                RequestEvent::Message(Bytes::copy_from_slice(&message))
            }
            RequestEvent::Chunk(mut chunk) => {
                chunk.data = Bytes::copy_from_slice(&chunk.data);
                RequestEvent::Chunk(chunk)
            }
            RequestEvent::End => RequestEvent::End,
        }
    }

    /// The bytes this event holds while it waits for the user's server.
    pub(crate) fn size(&self) -> usize {
        match self {
            RequestEvent::Message(message) => message.len(),
            RequestEvent::Chunk(chunk) => chunk.data.len(),
            RequestEvent::End => 0,
        }
    }
}

/// A call's request stream as a gRPC-framed HTTP body, returning credit to the
/// router as the user's server consumes messages.
pub(crate) struct RequestBody {
    pub(crate) call_id: u64,
    pub(crate) rx: QueueReceiver<RequestEvent>,
    pub(crate) out: QueueSender<BridgeFrame>,
    /// Takes request frames: releases their bytes from the call's window,
    /// returns credit, reassembles chunks.
    pub(crate) intake: Intake,
    /// The message whose 5-byte prefix was just yielded.
    pub(crate) pending: Option<Bytes>,
    pub(crate) ended: bool,
}

impl RequestBody {
    fn return_credit(&self, increment: Option<u32>) {
        if let Some(increment) = increment {
            let _ = self.out.send(BridgeFrame::WindowUpdate(pb::WindowUpdate {
                call_id: self.call_id,
                increment,
            }));
        }
    }

    /// Yields the gRPC prefix now and the message on the next poll: the
    /// message bytes are never copied here.
    fn frame_message(&mut self, message: Bytes) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let mut prefix = BytesMut::with_capacity(5);
        prefix.put_u8(0);
        prefix.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
        if !message.is_empty() {
            self.pending = Some(message);
        }
        Poll::Ready(Some(Ok(Frame::data(prefix.freeze()))))
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(message) = this.pending.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match this.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(RequestEvent::Message(message))) => {
                    let credit = this.intake.message(message.len());
                    this.return_credit(credit);
                    return this.frame_message(message);
                }
                Poll::Ready(Some(RequestEvent::Chunk(chunk))) => {
                    match this.intake.chunk(&chunk.data, chunk.last) {
                        Ok((whole, credit)) => {
                            this.return_credit(credit);
                            if let Some(message) = whole {
                                return this.frame_message(message);
                            }
                        }
                        Err(over) => {
                            // The session reader refuses such a message
                            // before it gets here (`session::to_call`).
                            this.ended = true;
                            let limit = match over {
                                Oversize::Message { limit } | Oversize::Pool { limit } => limit,
                            };
                            return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                                "request message of more than {limit} bytes exceeds the instance's limit of {limit} bytes (raise it with BridgeConfig::max_message_size)"
                            )))));
                        }
                    }
                }
                Poll::Ready(Some(RequestEvent::End)) => {
                    this.ended = true;
                }
                Poll::Ready(None) => {
                    // The call ended before the client's last message: it was
                    // cancelled, or its registration was lost. Not the end of
                    // the input: a handler must not finish as if it had all
                    // of it. (Not CANCELLED: tonic's decoder reads a
                    // CANCELLED body as the end of the stream.)
                    this.ended = true;
                    return Poll::Ready(Some(Err(cancelled_input())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.pending.is_none()
    }
}

/// What a handler still reading its requests gets once its call ended
/// without the client's last message (cancelled, deadline, registration
/// lost).
pub(crate) fn cancelled_input() -> Status {
    Status::aborted(
        "the call was cancelled before its request stream ended (client cancel, deadline or lost registration)",
    )
}

/// Splits a gRPC-framed byte stream (the user's server's response body) into
/// messages. Messages that arrive whole in one data chunk (the usual case) are
/// sliced out of it without copying; only messages split across chunks are
/// gathered into a buffer.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    /// The latest chunk, while nothing is buffered.
    whole: Bytes,
    /// Bytes of a message that spans chunks.
    buf: BytesMut,
}

/// A response frame the bridge cannot forward.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The server compressed a message although the bridge never offered an
    /// encoding.
    Compressed,
}

/// The compressed flag and length of the gRPC message prefix at the start of
/// `bytes`, if all five bytes are there.
fn prefix(bytes: &[u8]) -> Option<(u8, usize)> {
    let head: &[u8; 5] = bytes.get(..5)?.try_into().ok()?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    Some((head[0], usize::try_from(len).unwrap_or(usize::MAX)))
}

impl FrameReader {
    /// Adds bytes read from the body.
    pub(crate) fn push(&mut self, data: Bytes) {
        if self.buf.is_empty() && self.whole.is_empty() {
            self.whole = data;
        } else {
            self.spill();
            self.buf.extend_from_slice(&data);
        }
    }

    fn spill(&mut self) {
        if !self.whole.is_empty() {
            self.buf.extend_from_slice(&self.whole);
            self.whole = Bytes::new();
        }
    }

    /// The next whole message, if buffered.
    pub(crate) fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        if !self.whole.is_empty() {
            if let Some((compressed, len)) = prefix(&self.whole)
                && self.whole.len() - 5 >= len
            {
                if compressed != 0 {
                    return Err(FrameError::Compressed);
                }
                let message = self.whole.slice(5..5 + len);
                self.whole.advance(5 + len);
                return Ok(Some(message));
            }
            self.spill();
        }
        let Some((compressed, len)) = prefix(&self.buf) else {
            return Ok(None);
        };
        if self.buf.len() - 5 < len {
            self.buf.reserve(len + 5 - self.buf.len());
            return Ok(None);
        }
        if compressed != 0 {
            return Err(FrameError::Compressed);
        }
        self.buf.advance(5);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use http_body::Body as _;

    /// A request body over a queue, and the queue's sender.
    fn request_body() -> (RequestBody, QueueSender<RequestEvent>) {
        let (inbound, rx) = crate::queue::queue();
        let (out, _frames) = crate::queue::queue();
        let window = std::sync::Arc::new(crate::flow::RecvWindow::new(1 << 20));
        let body = RequestBody {
            call_id: 1,
            rx,
            out,
            intake: Intake::new(window, 1 << 16, 1 << 20),
            pending: None,
            ended: false,
        };
        (body, inbound)
    }

    /// The frames `body` yields until it ends or fails.
    async fn frames_of(mut body: RequestBody) -> Vec<Result<Bytes, Status>> {
        let mut seen = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let failed = frame.is_err();
            seen.push(frame.map(|f| f.into_data().unwrap_or_default()));
            if failed {
                break;
            }
        }
        seen
    }

    #[tokio::test]
    async fn a_request_stream_closed_without_its_end_fails_instead_of_ending() {
        let (body, inbound) = request_body();
        let _ = inbound.send(RequestEvent::Message(Bytes::from_static(b"a")));
        drop(inbound);
        let seen = frames_of(body).await;
        assert_eq!(seen.len(), 3, "{seen:?}");
        let error = seen[2].as_ref().expect_err("not the end of the input");
        assert_ne!(
            error.code(),
            tonic::Code::Cancelled,
            "tonic's decoder would read CANCELLED as the end of the stream"
        );
        // A half-close is the end.
        let (body, inbound) = request_body();
        let _ = inbound.send(RequestEvent::Message(Bytes::from_static(b"a")));
        let _ = inbound.send(RequestEvent::End);
        drop(inbound);
        let seen = frames_of(body).await;
        assert!(seen.iter().all(Result::is_ok), "{seen:?}");
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn frame_reader_splits_and_joins_messages() {
        let mut reader = FrameReader::default();
        reader.push(Bytes::from_static(&[0, 0, 0, 0, 3, b'a', b'b']));
        assert_eq!(reader.next_message(), Ok(None));
        reader.push(Bytes::from_static(&[b'c', 0, 0, 0, 0, 0]));
        assert_eq!(reader.next_message(), Ok(Some(Bytes::from_static(b"abc"))));
        assert_eq!(reader.next_message(), Ok(Some(Bytes::new())));
        assert_eq!(reader.next_message(), Ok(None));
        reader.push(Bytes::from_static(&[1, 0, 0, 0, 1, 9]));
        assert_eq!(reader.next_message(), Err(FrameError::Compressed));
    }

    #[test]
    fn whole_messages_in_one_chunk_are_sliced_and_split_ones_gathered() {
        let mut reader = FrameReader::default();
        reader.push(Bytes::from_static(&[
            0, 0, 0, 0, 2, b'h', b'i', 0, 0, 0, 0, 3, b'a',
        ]));
        assert_eq!(reader.next_message(), Ok(Some(Bytes::from_static(b"hi"))));
        assert_eq!(reader.next_message(), Ok(None));
        reader.push(Bytes::from_static(b"bc"));
        assert_eq!(reader.next_message(), Ok(Some(Bytes::from_static(b"abc"))));
        assert_eq!(reader.next_message(), Ok(None));
    }
}
