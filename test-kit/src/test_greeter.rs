//! A Greeter whose behaviour each test steers through the request, and which
//! reports what its handlers saw and when they were dropped.

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use myservice::pb::greeter_server::Greeter;
use myservice::pb::{
    ChatMessage, HelloReply, HelloRequest, InstanceInfo, Number, StreamRequest, SumReply,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status, Streaming};

/// What a handler reports.
#[derive(Debug)]
pub enum Event {
    /// A SayHello handler saw this request metadata.
    Metadata(MetadataMap),
    /// A slow handler started waiting.
    SlowStarted,
    /// A handler's future was dropped before it finished.
    HandlerDropped(String),
    /// A server-stream producer found its stream closed by the client side.
    StreamClosed(String),
    /// A server-stream producer is blocked: the stream's buffers are full.
    ProducerBlocked(String),
}

/// Reports [`Event`]s when dropped unfinished.
struct DropGuard {
    name: String,
    events: mpsc::UnboundedSender<Event>,
    finished: bool,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.events.send(Event::HandlerDropped(self.name.clone()));
        }
    }
}

/// The steerable Greeter.
#[derive(Debug, Clone)]
pub struct TestGreeter {
    /// Which instance it is, in its replies.
    pub id: String,
    /// What its handlers saw, for the test to read.
    pub events: mpsc::UnboundedSender<Event>,
    /// Extra time every SayHello takes.
    pub delay: Duration,
    /// SayHello("flaky") fails UNAVAILABLE while this is above 0, counting
    /// it down (shared by the clones of one greeter).
    pub flaky: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl TestGreeter {
    /// A greeter named `id`, and the receiver of its events.
    pub fn new(id: &str) -> (TestGreeter, mpsc::UnboundedReceiver<Event>) {
        let (events, rx) = mpsc::unbounded_channel();
        (
            TestGreeter {
                id: id.to_owned(),
                events,
                delay: Duration::ZERO,
                flaky: Default::default(),
            },
            rx,
        )
    }
}

/// The status `status:<code>` asks for: the code, a message, details bytes and
/// trailing metadata (text and binary).
pub fn requested_status(code: i32) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert("x-trailer", MetadataValue::from_static("trailing value"));
    metadata.insert_bin(
        "x-trailer-bin",
        MetadataValue::from_bytes(&[0, 1, 2, 254, 255]),
    );
    Status::with_details_and_metadata(
        Code::from_i32(code),
        format!("failure {code}: ünïcode, 100% \"quoted\"\nnewline"),
        vec![0x0a, 0x03, b'a', b'b', b'c', code as u8].into(),
        metadata,
    )
}

/// `google.rpc.Status`, as `grpc-status-details-bin` carries it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<RpcAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.ErrorInfo` (reason and domain only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorInfo {
    /// Why.
    #[prost(string, tag = "1")]
    pub reason: String,
    /// Whose.
    #[prost(string, tag = "2")]
    pub domain: String,
}

/// The status `details:<reason>` asks for: FAILED_PRECONDITION with a
/// `google.rpc.Status` in its details holding one `google.rpc.ErrorInfo`
/// (`reason`, domain `test.example`), as rich-error servers send.
pub fn status_with_error_info(reason: &str) -> Status {
    use prost::Message as _;
    let info = ErrorInfo {
        reason: reason.to_owned(),
        domain: "test.example".into(),
    };
    let details = RpcStatus {
        code: Code::FailedPrecondition as i32,
        message: "with details".into(),
        details: vec![RpcAny {
            type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
            value: info.encode_to_vec(),
        }],
    };
    Status::with_details(
        Code::FailedPrecondition,
        "with details",
        details.encode_to_vec().into(),
    )
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Greeter for TestGreeter {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let mut guard = DropGuard {
            name: "say_hello".into(),
            events: self.events.clone(),
            finished: false,
        };
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let addresses = format!("{:?}|{:?}", request.remote_addr(), request.local_addr());
        let certificates = router_runtime::bridge::peer_certificates(&request);
        let (metadata, _, message) = request.into_parts();
        let name = message.name.clone();
        let result = if name == "certs" {
            // The client's TLS certificates: how many, and the first as payload.
            let certificates = certificates.unwrap_or_default();
            Ok(Response::new(HelloReply {
                message: certificates.len().to_string(),
                instance_id: self.id.clone(),
                payload: certificates.first().cloned().unwrap_or_default(),
            }))
        } else if name == "peer" {
            Ok(Response::new(HelloReply {
                message: addresses,
                instance_id: self.id.clone(),
                payload: Default::default(),
            }))
        } else if name == "echo" {
            let _ = self.events.send(Event::Metadata(metadata.clone()));
            let mut response = Response::new(HelloReply {
                message: "echo".into(),
                instance_id: self.id.clone(),
                payload: message.payload.into(),
            });
            response.metadata_mut().insert(
                "x-response-header",
                MetadataValue::from_static("from handler"),
            );
            response
                .metadata_mut()
                .insert_bin("x-response-bin", MetadataValue::from_bytes(&[9, 8, 7, 0]));
            Ok(response)
        } else if name == "flaky" {
            let _ = self.events.send(Event::Metadata(metadata.clone()));
            let failing = self
                .flaky
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok();
            if failing {
                Err(Status::unavailable("flaky: failing this attempt"))
            } else {
                Ok(Response::new(HelloReply {
                    message: "recovered".into(),
                    instance_id: self.id.clone(),
                    payload: Default::default(),
                }))
            }
        } else if let Some(code) = name.strip_prefix("status:") {
            Err(requested_status(code.parse().unwrap_or(2)))
        } else if let Some(reason) = name.strip_prefix("details:") {
            Err(status_with_error_info(reason))
        } else if let Some(ms) = name.strip_prefix("slow:") {
            let _ = self.events.send(Event::SlowStarted);
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(10_000))).await;
            Ok(Response::new(HelloReply {
                message: "slow".into(),
                instance_id: self.id.clone(),
                payload: Default::default(),
            }))
        } else {
            Ok(Response::new(HelloReply {
                message: format!("Hello, {name}!"),
                instance_id: self.id.clone(),
                payload: message.payload.into(),
            }))
        };
        guard.finished = true;
        result
    }

    type StreamGreetingsStream = BoxStream<HelloReply>;

    async fn stream_greetings(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<Self::StreamGreetingsStream>, Status> {
        let request = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let events = self.events.clone();
        let id = self.id.clone();
        tokio::spawn(async move {
            let endless = request.name == "endless";
            let mut i = 0u32;
            while endless || i < request.count {
                let reply = HelloReply {
                    message: format!("{i}"),
                    instance_id: id.clone(),
                    payload: vec![7; request.payload_size as usize].into(),
                };
                let reply = match tx.try_send(Ok(reply)) {
                    Ok(()) => {
                        i += 1;
                        continue;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                    Err(mpsc::error::TrySendError::Full(reply)) => reply,
                };
                let _ = events.send(Event::ProducerBlocked(request.name.clone()));
                if tx.send(reply).await.is_err() {
                    break;
                }
                i += 1;
            }
            if endless || i < request.count {
                let _ = events.send(Event::StreamClosed(request.name.clone()));
                return;
            }
            if request.name == "trailers" {
                let mut metadata = MetadataMap::new();
                metadata.insert("x-trailer", MetadataValue::from_static("done"));
                let _ = tx
                    .send(Err(Status::with_metadata(Code::Ok, "", metadata)))
                    .await;
            }
        });
        let mut response =
            Response::new(Box::pin(ReceiverStream::new(rx)) as BoxStream<HelloReply>);
        response
            .metadata_mut()
            .insert("x-stream-header", MetadataValue::from_static("streaming"));
        Ok(response)
    }

    async fn sum(&self, request: Request<Streaming<Number>>) -> Result<Response<SumReply>, Status> {
        let mut numbers = request.into_inner();
        let (mut total, mut count) = (0i64, 0u64);
        while let Some(number) = numbers.next().await {
            total += number?.value;
            count += 1;
        }
        Ok(Response::new(SumReply {
            total,
            count,
            instance_id: self.id.clone(),
        }))
    }

    type ChatStream = BoxStream<ChatMessage>;

    async fn chat(
        &self,
        request: Request<Streaming<ChatMessage>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let replies = request.into_inner().map(|message| {
            message.map(|m| ChatMessage {
                text: format!("re: {}", m.text),
                seq: m.seq,
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn who_am_i(&self, _request: Request<()>) -> Result<Response<InstanceInfo>, Status> {
        Ok(Response::new(InstanceInfo {
            instance_id: self.id.clone(),
        }))
    }
}
