//! Connect streaming calls (`application/connect+proto` or `+json`): the
//! request's envelopes become gRPC messages one at a time, and the
//! response's messages Connect envelopes, ending with the end-of-stream
//! message (the error and the trailers' metadata as JSON). Both ways are
//! pulled by the reader, so a client that stops reading holds the call's
//! flow-control window and no more, and one that leaves drops the call.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use prost_reflect::MessageDescriptor;
use serde_json::{Map, Value};
use tonic::Code;

use super::compress::{self, Encoding};
use super::error::ConnectError;
use super::grpc::{self, Event, Reply};
use super::request::{self, Codec};
use super::{BoxError, Shared, json};

/// Envelope flag: the data is compressed.
const COMPRESSED: u8 = 0x01;
/// Envelope flag: the end-of-stream message.
const END_STREAM: u8 = 0x02;

/// The first error the request side met, which the end-of-stream message
/// reports instead of the status the aborted call ended with.
type Failure = Arc<Mutex<Option<ConnectError>>>;

/// Serves one Connect streaming call with `codec` through `call`.
pub(crate) async fn serve<B, F, Fut, E>(
    shared: Arc<Shared>,
    req: Request<B>,
    codec: Codec,
    call: F,
) -> Result<Response<tonic::body::Body>, E>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    F: FnOnce(Request<tonic::body::Body>) -> Fut,
    Fut: Future<Output = Result<Response<tonic::body::Body>, E>>,
{
    let (parts, body) = req.into_parts();
    let header_text = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let accept = Encoding::negotiate(header_text("connect-accept-encoding"));
    let path = parts.uri.path().to_owned();
    let service = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let prepared = (|| {
        let encoding = Encoding::parse(header_text("connect-content-encoding"))?;
        let timeout = request::timeout(&parts.headers)?;
        let method = shared.descriptors.method(&path)?;
        if codec == Codec::Json && method.is_none() {
            return Err(super::unary::no_descriptor(&service));
        }
        Ok((encoding, timeout, method))
    })();
    let (encoding, timeout, method) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => return Ok(ended(codec, &error)),
    };
    let failure: Failure = Arc::default();
    let requests = Requests {
        body: Box::pin(body),
        buffer: BytesMut::new(),
        codec,
        encoding,
        limit: shared.limits.request(&service),
        input: method.as_ref().map(|m| m.input()),
        failure: failure.clone(),
    };
    let body = tonic::body::Body::new(StreamBody::new(requests.stream()));
    let grpc_request = request::grpc_request(parts, body, timeout);

    let response = call(grpc_request).await?;
    let (metadata, reply) = Reply::new(response, shared.limits.response(&service));
    let responses = Responses {
        reply,
        codec,
        encoding: accept,
        output: method.as_ref().map(|m| m.output()),
        failure,
        ended: false,
    };
    let mut response = Response::new(tonic::body::Body::new(StreamBody::new(responses.stream())));
    let headers = response.headers_mut();
    *headers = metadata;
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(codec.stream_content_type()),
    );
    if accept == Encoding::Gzip {
        headers.insert("connect-content-encoding", HeaderValue::from_static("gzip"));
    }
    headers.insert(
        "connect-accept-encoding",
        HeaderValue::from_static(compress::ACCEPTED),
    );
    Ok(response)
}

/// A stream answer that is only the end-of-stream message with `error`.
fn ended(codec: Codec, error: &ConnectError) -> Response<tonic::body::Body> {
    let body = end_of_stream(Some(error), &HeaderMap::new());
    let mut response = Response::new(tonic::body::Body::new(http_body_util::Full::new(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(codec.stream_content_type()),
    );
    response
}

/// `data` in an envelope with `flags`.
fn envelope(flags: u8, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + data.len());
    out.put_u8(flags);
    out.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
    out.put_slice(data);
    out.freeze()
}

/// The end-of-stream envelope: `{"error": ..., "metadata": {...}}`.
pub(crate) fn end_of_stream(error: Option<&ConnectError>, trailers: &HeaderMap) -> Bytes {
    let mut end = Map::new();
    if let Some(error) = error {
        end.insert("error".into(), error.to_json());
    }
    let mut metadata = Map::new();
    for name in trailers.keys() {
        let values = trailers
            .get_all(name)
            .iter()
            .map(|v| Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        metadata.insert(name.as_str().to_owned(), Value::Array(values));
    }
    if !metadata.is_empty() {
        end.insert("metadata".into(), Value::Object(metadata));
    }
    envelope(END_STREAM, Value::Object(end).to_string().as_bytes())
}

/// The request side: Connect envelopes in, gRPC messages out.
struct Requests<B> {
    body: std::pin::Pin<Box<B>>,
    buffer: BytesMut,
    codec: Codec,
    encoding: Encoding,
    limit: usize,
    input: Option<MessageDescriptor>,
    failure: Failure,
}

impl<B> Requests<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn stream(
        self,
    ) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, tonic::Status>> + Send {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut state = state?;
            match state.next().await {
                Ok(Some(message)) => Some((Ok(Frame::data(grpc::frame(&message))), Some(state))),
                Ok(None) => None,
                Err(error) => {
                    let status = tonic::Status::new(error.code, error.message.clone());
                    *state.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
                    Some((Err(status), None))
                }
            }
        })
    }

    /// The next request message as protobuf, `None` at the body's end.
    async fn next(&mut self) -> Result<Option<Bytes>, ConnectError> {
        loop {
            if let Some((flags, data)) = self.envelope()? {
                return self.message(flags, data).map(Some);
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    let e: BoxError = e.into();
                    return Err(ConnectError::new(
                        Code::Cancelled,
                        format!("reading the request stream failed: {e}"),
                    ));
                }
                None if self.buffer.is_empty() => return Ok(None),
                None => {
                    return Err(ConnectError::invalid(format!(
                        "the request stream ended inside an envelope ({} bytes of it)",
                        self.buffer.len()
                    )));
                }
            }
        }
    }

    /// A whole envelope from the buffer, if there is one.
    fn envelope(&mut self) -> Result<Option<(u8, Bytes)>, ConnectError> {
        if self.buffer.len() < 5 {
            return Ok(None);
        }
        let flags = self.buffer[0];
        let len = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if flags & !COMPRESSED != 0 {
            return Err(ConnectError::invalid(format!(
                "request envelope with flags {flags:#04x}: a client sends only messages (0x00, or 0x01 compressed)"
            )));
        }
        if len > self.limit {
            return Err(ConnectError::new(
                Code::ResourceExhausted,
                format!(
                    "request message of {len} bytes exceeds the router's limit of {} bytes",
                    self.limit
                ),
            ));
        }
        // Not reserved ahead: the buffer grows with the bytes that arrive,
        // so a length the client claims and never sends costs nothing.
        if self.buffer.len() < 5 + len {
            return Ok(None);
        }
        self.buffer.advance(5);
        Ok(Some((flags, self.buffer.split_to(len).freeze())))
    }

    /// An envelope's data as a protobuf message.
    fn message(&self, flags: u8, data: Bytes) -> Result<Bytes, ConnectError> {
        let data = if flags & COMPRESSED != 0 {
            if self.encoding == Encoding::Identity {
                return Err(ConnectError::invalid(
                    "a compressed request envelope, but the request has no connect-content-encoding",
                ));
            }
            compress::decompress(self.encoding, data, self.limit)?
        } else {
            data
        };
        match (self.codec, &self.input) {
            (Codec::Json, Some(input)) => json::to_proto(input, &data),
            _ => Ok(data),
        }
    }
}

/// The response side: gRPC messages in, Connect envelopes out.
struct Responses {
    reply: Reply,
    codec: Codec,
    encoding: Encoding,
    output: Option<MessageDescriptor>,
    failure: Failure,
    ended: bool,
}

impl Responses {
    fn stream(
        self,
    ) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, std::convert::Infallible>> + Send
    {
        futures_util::stream::unfold(self, |mut state| async move {
            if state.ended {
                return None;
            }
            let envelope = state.next().await;
            Some((Ok(Frame::data(envelope)), state))
        })
    }

    async fn next(&mut self) -> Bytes {
        let (error, trailers) = match self.reply.next().await {
            Event::Message(message) => match self.envelope(message) {
                Ok(envelope) => return envelope,
                Err(error) => (Some(error), HeaderMap::new()),
            },
            Event::End(error, trailers) => (error, trailers),
        };
        self.ended = true;
        let failed = self
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // The request side's own error explains the aborted call better.
        let error = match (failed, error) {
            (Some(failed), Some(_)) => Some(failed),
            (_, error) => error,
        };
        end_of_stream(error.as_ref(), &trailers)
    }

    fn envelope(&self, message: Bytes) -> Result<Bytes, ConnectError> {
        let data = match (self.codec, &self.output) {
            (Codec::Json, Some(output)) => json::to_json(output, message)?,
            _ => message,
        };
        if self.encoding == Encoding::Gzip && data.len() >= compress::COMPRESS_FROM {
            Ok(envelope(
                COMPRESSED,
                &compress::compress(Encoding::Gzip, data),
            ))
        } else {
            Ok(envelope(0, &data))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_stream_message_holds_the_error_and_the_metadata() {
        let mut trailers = HeaderMap::new();
        trailers.append("x-a", HeaderValue::from_static("1"));
        trailers.append("x-a", HeaderValue::from_static("2"));
        let error = ConnectError::new(Code::NotFound, "gone");
        let end = end_of_stream(Some(&error), &trailers);
        assert_eq!(end[0], END_STREAM);
        let json: Value = serde_json::from_slice(&end[5..]).expect("JSON");
        assert_eq!(
            json,
            serde_json::json!({
                "error": {"code": "not_found", "message": "gone"},
                "metadata": {"x-a": ["1", "2"]},
            })
        );
        let ok = end_of_stream(None, &HeaderMap::new());
        assert_eq!(&ok[5..], b"{}");
    }
}
