//! An ordinary tonic implementation of `myservice.v1.Greeter`. Nothing here
//! knows about routers: the generated `GreeterBridge` runs it as is.
//!
//! Two behaviours exist only so tests (and the Python interop test) can check
//! that metadata and statuses survive the trip through a router:
//!
//! - **Metadata echo**: when the request metadata contains `x-echo: 1`, every
//!   method copies all request metadata whose key starts with `x-` (ASCII and
//!   `-bin` binary values alike) into its response headers (initial
//!   metadata).
//! - **Requested failure**: when the `name` of a `SayHello` or
//!   `StreamGreetings` request is `fail:<code>` with a gRPC status code from 1
//!   to 16 (for example `fail:5`), the call fails with that code and the
//!   message [`REQUESTED_FAILURE`]. Any other `fail:` suffix fails with
//!   `INVALID_ARGUMENT`.

use std::pin::Pin;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{KeyAndValueRef, MetadataMap};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::pb::greeter_server::Greeter;
use crate::pb::{
    ChatMessage, HelloReply, HelloRequest, InstanceInfo, Number, StreamRequest, SumReply,
};

/// Answers every method and says which instance it is.
#[derive(Debug, Clone)]
pub struct GreeterImpl {
    instance_id: String,
}

impl GreeterImpl {
    /// A greeter that reports itself as `instance_id`.
    pub fn new(instance_id: impl Into<String>) -> Self {
        GreeterImpl {
            instance_id: instance_id.into(),
        }
    }
}

/// The status message of a failure requested with `name: "fail:<code>"`.
pub const REQUESTED_FAILURE: &str = "requested failure";

/// The request header that turns on the metadata echo.
pub const ECHO_HEADER: &str = "x-echo";

/// The status a `fail:<code>` name asks for, if `name` asks for one.
fn requested_failure(name: &str) -> Option<Status> {
    let code = name.strip_prefix("fail:")?;
    Some(match code.trim().parse::<i32>() {
        Ok(code @ 1..=16) => Status::new(Code::from_i32(code), REQUESTED_FAILURE),
        _ => Status::invalid_argument(format!(
            "`fail:` needs a status code from 1 to 16, got {code:?}"
        )),
    })
}

/// The response headers for a request with metadata `request`: its `x-`
/// entries when it asks for the echo, nothing otherwise.
fn echoed(request: &MetadataMap) -> MetadataMap {
    let mut headers = MetadataMap::new();
    let wants_echo = request
        .get_all(ECHO_HEADER)
        .iter()
        .any(|value| value.as_bytes() == b"1");
    if !wants_echo {
        return headers;
    }
    for entry in request.iter() {
        match entry {
            KeyAndValueRef::Ascii(key, value) if key.as_str().starts_with("x-") => {
                headers.append(key.clone(), value.clone());
            }
            KeyAndValueRef::Binary(key, value) if key.as_str().starts_with("x-") => {
                headers.append_bin(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    headers
}

/// `message` as a response carrying `headers`.
fn respond<T>(headers: MetadataMap, message: T) -> Response<T> {
    let mut response = Response::new(message);
    *response.metadata_mut() = headers;
    response
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Greeter for GreeterImpl {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let headers = echoed(request.metadata());
        let request = request.into_inner();
        if let Some(status) = requested_failure(&request.name) {
            return Err(status);
        }
        Ok(respond(
            headers,
            HelloReply {
                message: format!("Hello, {}!", request.name),
                instance_id: self.instance_id.clone(),
                payload: request.payload.into(),
            },
        ))
    }

    type StreamGreetingsStream = BoxStream<HelloReply>;

    async fn stream_greetings(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<Self::StreamGreetingsStream>, Status> {
        let headers = echoed(request.metadata());
        let request = request.into_inner();
        if let Some(status) = requested_failure(&request.name) {
            return Err(status);
        }
        let (tx, rx) = mpsc::channel(16);
        let instance_id = self.instance_id.clone();
        tokio::spawn(async move {
            for i in 0..request.count {
                let reply = HelloReply {
                    message: format!("Hello #{i}, {}!", request.name),
                    instance_id: instance_id.clone(),
                    payload: vec![0; request.payload_size as usize].into(),
                };
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
        });
        Ok(respond(headers, Box::pin(ReceiverStream::new(rx))))
    }

    async fn sum(&self, request: Request<Streaming<Number>>) -> Result<Response<SumReply>, Status> {
        let headers = echoed(request.metadata());
        let mut numbers = request.into_inner();
        let (mut total, mut count) = (0i64, 0u64);
        while let Some(number) = numbers.next().await {
            total = total.saturating_add(number?.value);
            count += 1;
        }
        Ok(respond(
            headers,
            SumReply {
                total,
                count,
                instance_id: self.instance_id.clone(),
            },
        ))
    }

    type ChatStream = BoxStream<ChatMessage>;

    async fn chat(
        &self,
        request: Request<Streaming<ChatMessage>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let headers = echoed(request.metadata());
        let instance_id = self.instance_id.clone();
        let replies = request.into_inner().map(move |message| {
            message.map(|m| ChatMessage {
                text: format!("{} (from {instance_id})", m.text),
                seq: m.seq,
            })
        });
        Ok(respond(headers, Box::pin(replies)))
    }

    async fn who_am_i(&self, request: Request<()>) -> Result<Response<InstanceInfo>, Status> {
        Ok(respond(
            echoed(request.metadata()),
            InstanceInfo {
                instance_id: self.instance_id.clone(),
            },
        ))
    }
}
