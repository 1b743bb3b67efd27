//! The gRPC side of the translation: a message framed for a gRPC request
//! body, and the routed call's gRPC response read back as events (each
//! message, then the status with its trailers), holding at most one
//! message of the response limit at a time.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use tonic::Code;

use super::compress::{self, Encoding};
use super::error::ConnectError;

/// `message` as one gRPC message frame (not compressed).
pub(crate) fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(message);
    framed.freeze()
}

/// One step of a gRPC response.
#[derive(Debug)]
pub(crate) enum Event {
    /// A message (decompressed).
    Message(Bytes),
    /// The end: the status (an error naming what went wrong, or none for
    /// OK) and the trailers' metadata.
    End(Option<ConnectError>, HeaderMap),
}

/// A routed call's gRPC response, read message by message.
pub(crate) struct Reply {
    body: tonic::body::Body,
    buffer: BytesMut,
    encoding: Encoding,
    limit: usize,
    /// The end, known from the headers (trailers-only, or not gRPC).
    ended: Option<(Option<ConnectError>, HeaderMap)>,
    done: bool,
}

impl Reply {
    /// Reads `response`'s body; messages larger than `limit` end it with
    /// RESOURCE_EXHAUSTED. Returns the response headers' metadata too.
    pub(crate) fn new(
        response: http::Response<tonic::body::Body>,
        limit: usize,
    ) -> (HeaderMap, Reply) {
        let (parts, body) = response.into_parts();
        let ended = if parts.status != StatusCode::OK {
            Some((
                Some(ConnectError::new(
                    http_code(parts.status),
                    format!("the router answered HTTP {} instead of gRPC", parts.status),
                )),
                HeaderMap::new(),
            ))
        } else if parts.headers.contains_key("grpc-status") {
            Some((
                status_of(&parts.headers),
                super::request::metadata(&parts.headers),
            ))
        } else {
            None
        };
        let encoding = match parts
            .headers
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok())
        {
            Some("gzip") => Encoding::Gzip,
            _ => Encoding::Identity,
        };
        let reply = Reply {
            body,
            buffer: BytesMut::new(),
            encoding,
            limit,
            ended,
            done: false,
        };
        (super::request::metadata(&parts.headers), reply)
    }

    /// The next message, or the end (once; after it, ends again with no
    /// status).
    pub(crate) async fn next(&mut self) -> Event {
        if let Some((error, trailers)) = self.ended.take() {
            self.done = true;
            return Event::End(error, trailers);
        }
        if self.done {
            return Event::End(None, HeaderMap::new());
        }
        loop {
            match self.message() {
                Ok(Some(message)) => return Event::Message(message),
                Ok(None) => {}
                Err(error) => return self.end(Some(error), HeaderMap::new()),
            }
            match self.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buffer.extend_from_slice(&data),
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        let error = if self.buffer.is_empty() {
                            status_of(&trailers)
                        } else {
                            Some(internal("the gRPC response ended inside a message"))
                        };
                        return self.end(error, super::request::metadata(&trailers));
                    }
                },
                Some(Err(status)) => {
                    return self.end(Some(ConnectError::from_status(&status)), HeaderMap::new());
                }
                None => {
                    return self.end(
                        Some(internal("the gRPC response ended without a status")),
                        HeaderMap::new(),
                    );
                }
            }
        }
    }

    fn end(&mut self, error: Option<ConnectError>, trailers: HeaderMap) -> Event {
        self.done = true;
        self.buffer = BytesMut::new();
        Event::End(error, trailers)
    }

    /// A whole message from the buffer, if there is one.
    fn message(&mut self) -> Result<Option<Bytes>, ConnectError> {
        if self.buffer.len() < 5 {
            return Ok(None);
        }
        let compressed = self.buffer[0] & 1 == 1;
        let len = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if len > self.limit {
            return Err(ConnectError::new(
                Code::ResourceExhausted,
                format!(
                    "response message of {len} bytes exceeds the router's limit of {} bytes",
                    self.limit
                ),
            ));
        }
        // Not reserved ahead: the buffer grows with the bytes that arrive,
        // so a length the instance claims and never sends costs nothing.
        if self.buffer.len() < 5 + len {
            return Ok(None);
        }
        self.buffer.advance(5);
        let message = self.buffer.split_to(len).freeze();
        if compressed {
            if self.encoding == Encoding::Identity {
                return Err(internal("a compressed gRPC message without grpc-encoding"));
            }
            return compress::decompress(self.encoding, message, self.limit).map(Some);
        }
        Ok(Some(message))
    }
}

fn internal(message: &str) -> ConnectError {
    ConnectError::new(Code::Internal, message)
}

/// The error in a gRPC status header set, `None` for OK.
fn status_of(headers: &HeaderMap) -> Option<ConnectError> {
    match tonic::Status::from_header_map(headers) {
        Some(status) if status.code() == Code::Ok => None,
        Some(status) => Some(ConnectError::from_status(&status)),
        None => Some(internal("the gRPC response has no grpc-status")),
    }
}

/// gRPC's code for an HTTP status that is not 200 (its HTTP-to-gRPC
/// table).
fn http_code(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(
        chunks: Vec<&'static [u8]>,
        trailers: HeaderMap,
    ) -> http::Response<tonic::body::Body> {
        let mut frames: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = chunks
            .into_iter()
            .map(|c| Ok(http_body::Frame::data(Bytes::from_static(c))))
            .collect();
        frames.push(Ok(http_body::Frame::trailers(trailers)));
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        http::Response::new(tonic::body::Body::new(body))
    }

    #[tokio::test]
    async fn messages_split_across_chunks_are_reassembled_then_the_status_read() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().expect("value"));
        trailers.insert("x-t", "1".parse().expect("value"));
        let (_, mut reply) = Reply::new(response(vec![b"\0\0\0", b"\0\x02h", b"i"], trailers), 10);
        assert!(matches!(reply.next().await, Event::Message(m) if &m[..] == b"hi"));
        match reply.next().await {
            Event::End(None, trailers) => assert_eq!(trailers["x-t"], "1"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_message_over_the_limit_ends_the_reply_without_buffering_it() {
        let (_, mut reply) = Reply::new(response(vec![b"\0\0\0\x01\0"], HeaderMap::new()), 10);
        match reply.next().await {
            Event::End(Some(error), _) => {
                assert_eq!(error.code, Code::ResourceExhausted);
                assert!(error.message.contains("256 bytes"), "{}", error.message);
            }
            other => panic!("{other:?}"),
        }
    }
}
