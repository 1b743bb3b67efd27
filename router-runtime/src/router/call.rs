//! Forwarding one client call to an instance and streaming the answer back.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use futures_util::future::BoxFuture;
use http::HeaderMap;
use tokio::task::AbortHandle;
use tokio::time::{Instant, Sleep};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status, Streaming};

use super::balance::{PickError, Selection};
use super::registry::{CallEvent, Instance};
use super::{PIN_HEADER, RouterCore, SELECT_HEADER, route_key};
use crate::descriptor::MethodDescriptor;
use crate::flow::{Assembler, CreditReturn, Piece, SendCredit, SendError, send_with_credit};
use crate::metadata;
use crate::pb;
use crate::queue::QueueReceiver;
use crate::wire::{Payload, RouterFrame};

/// The handler of one routed method.
pub(crate) struct Forward {
    pub(crate) core: Arc<RouterCore>,
    pub(crate) method: &'static MethodDescriptor,
    /// When the request reached the router's service.
    pub(crate) received: Instant,
}

impl tonic::server::StreamingService<Bytes> for Forward {
    type Response = Bytes;
    type ResponseStream = ReplyStream;
    type Future = BoxFuture<'static, Result<Response<ReplyStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        Box::pin(forward(
            self.core.clone(),
            self.method,
            self.received,
            request,
        ))
    }
}

/// The client connection's addresses, passed on so the handler sees them.
struct Addresses {
    peer: String,
    local: String,
    /// The client's TLS certificates (DER), when it presented any.
    peer_certificates: Vec<Bytes>,
}

impl Addresses {
    /// The addresses tonic recorded for the connection, plain or TLS.
    fn of(extensions: &tonic::Extensions) -> Self {
        use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
        let connection = extensions.get::<TcpConnectInfo>().or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .map(TlsConnectInfo::get_ref)
        });
        let text =
            |addr: Option<std::net::SocketAddr>| addr.map(|a| a.to_string()).unwrap_or_default();
        let peer_certificates = extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs)
            .map(|certs| {
                certs
                    .iter()
                    .map(|c| Bytes::copy_from_slice(c.as_ref()))
                    .collect()
            })
            .unwrap_or_default();
        Addresses {
            peer: text(connection.and_then(TcpConnectInfo::remote_addr)),
            local: text(connection.and_then(TcpConnectInfo::local_addr)),
            peer_certificates,
        }
    }
}

/// Where a call's request messages come from.
enum Requests {
    /// Unary and server-streaming: the one message, already read.
    Single(Option<Bytes>),
    /// Client-streaming and bidi: the client's stream.
    Stream(Streaming<Bytes>),
}

fn deadline_exceeded() -> Status {
    Status::deadline_exceeded("deadline exceeded while the router forwarded the call")
}

async fn forward(
    core: Arc<RouterCore>,
    method: &'static MethodDescriptor,
    received: Instant,
    request: Request<Streaming<Bytes>>,
) -> Result<Response<ReplyStream>, Status> {
    let (metadata_map, extensions, mut stream) = request.into_parts();
    let addresses = Addresses::of(&extensions);
    let headers = metadata_map.into_headers();
    let timeout = metadata::timeout_from_headers(&headers);
    // tonic's transport server also times the call from `grpc-timeout`, until
    // the response headers, and then fails it as CANCELLED ("Timeout
    // expired"). The router's deadline counts from the request's arrival and
    // fires one timer tick (1 ms) earlier, so the client reliably gets
    // DEADLINE_EXCEEDED as gRPC specifies.
    let deadline = timeout.map(|t| received + t.saturating_sub(Duration::from_millis(1)));
    let request_metadata = metadata::from_headers(&headers);

    let requests = if method.kind.single_request() {
        let message = match deadline {
            Some(d) => tokio::time::timeout_at(d, stream.message())
                .await
                .map_err(|_| deadline_exceeded())??,
            None => stream.message().await?,
        };
        Requests::Single(message)
    } else {
        Requests::Stream(stream)
    };

    let key = routing_key(&core, method, &requests, &headers);
    let selector = headers
        .get(SELECT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(parse_selector)
        .unwrap_or_default();
    let mut selection = Selection {
        pinned: headers.get(PIN_HEADER).and_then(|v| v.to_str().ok()),
        labels: selector,
        key: key.as_deref(),
        exclude: None,
    };

    // An idempotent single-request call that lost its instance before any
    // answer is replayed once on another instance; others never are. A
    // single-request call an instance refused without running it (at its
    // concurrency limit) is resent elsewhere, up to twice.
    let mut replay = match (&requests, method.idempotent) {
        (Requests::Single(message), true) => Some(message.clone()),
        _ => None,
    };
    let resend = match &requests {
        Requests::Single(message) => Some(message.clone()),
        Requests::Stream(_) => None,
    };
    let mut resends_left = 2;
    let mut next = Some(requests);
    loop {
        let Some(requests) = next.take() else {
            return Err(Status::internal("router lost the call's requests"));
        };
        let (instance, mut reply) = start_call(
            &core,
            method,
            &mut selection,
            &request_metadata,
            &addresses,
            deadline,
            requests,
        )?;
        match reply.first_event().await {
            First::Headers(md) => {
                return Ok(Response::from_parts(
                    MetadataMap::from_headers(metadata::to_headers(Some(&md))),
                    reply,
                    Default::default(),
                ));
            }
            First::Lost(status) => match replay.take() {
                Some(message) => {
                    core.stats.calls_retried.fetch_add(1, Ordering::Relaxed);
                    selection.exclude = Some(instance.registration);
                    next = Some(Requests::Single(message));
                }
                None => return Err(status),
            },
            First::Refused(status) => match &resend {
                Some(message) if resends_left > 0 => {
                    resends_left -= 1;
                    core.stats.calls_retried.fetch_add(1, Ordering::Relaxed);
                    selection.exclude = Some(instance.registration);
                    next = Some(Requests::Single(message.clone()));
                }
                _ => return Err(status),
            },
            First::Failed(status) => return Err(status),
        }
    }
}

/// Picks an instance, writes the call's `Start` and starts sending its
/// requests. A call whose `Start` could not be written (the registration
/// closed, or began draining, between the pick and the write) never reached
/// the instance: it is safe to try again on another.
fn start_call(
    core: &Arc<RouterCore>,
    method: &'static MethodDescriptor,
    selection: &mut Selection<'_>,
    request_metadata: &pb::Metadata,
    addresses: &Addresses,
    deadline: Option<Instant>,
    requests: Requests,
) -> Result<(Arc<Instance>, ReplyStream), Status> {
    let mut attempt = 0;
    let (instance, opened, inline) = loop {
        let instance = pick(core, selection).map_err(|e| pick_status(core, e))?;
        if instance.begin_start() {
            let opened = instance.open_call();
            let call_id = opened.call_id;
            let start = pb::CallStart {
                call_id,
                method_tag: method.tag,
                path: method.path.to_owned(),
                metadata: Some(request_metadata.clone()),
                timeout_micros: deadline
                    .map(|d| {
                        u64::try_from(d.saturating_duration_since(Instant::now()).as_micros())
                            .unwrap_or(u64::MAX)
                            .max(1)
                    })
                    .unwrap_or(0),
                kind: method.kind.wire() as i32,
                peer: addresses.peer.clone(),
                local: addresses.local.clone(),
                peer_certificates: addresses.peer_certificates.clone(),
            };
            // The common case, one small request message, goes out with its
            // Start and HalfClose in one batch: one write, no extra task.
            let (call, half_close) = match &requests {
                Requests::Single(message)
                    if message
                        .as_ref()
                        .is_none_or(|m| m.len() <= instance.max_frame) =>
                {
                    let call = message.clone().map(|message| {
                        opened.request_credit.consume(message.len());
                        RouterFrame::Call(Payload {
                            call_id,
                            tag: method.tag,
                            message,
                        })
                    });
                    (
                        call,
                        Some(RouterFrame::HalfClose(pb::HalfClose { call_id })),
                    )
                }
                _ => (None, None),
            };
            let inline = half_close.is_some();
            let sent = instance.send_all(
                [Some(RouterFrame::Start(start)), call, half_close]
                    .into_iter()
                    .flatten(),
            );
            instance.end_start();
            if sent {
                break (instance, opened, inline);
            }
            instance.close_call(call_id);
        }
        attempt += 1;
        if attempt > 2 {
            return Err(Status::unavailable(format!(
                "no instance of `{}` could take the call",
                core.descriptor.name
            )));
        }
        core.stats.calls_retried.fetch_add(1, Ordering::Relaxed);
        selection.exclude = Some(instance.registration);
    };

    let call_id = opened.call_id;
    let credit = opened.request_credit;
    core.stats.call_started();
    let mut guard = CallGuard {
        core: core.clone(),
        instance: instance.clone(),
        call_id,
        finished: false,
        pump: None,
    };
    if !inline {
        let pump = tokio::spawn(send_requests(
            instance.clone(),
            call_id,
            method.tag,
            credit,
            requests,
        ));
        guard.pump = Some(pump.abort_handle());
    }

    let reply = ReplyStream {
        events: opened.events,
        buffered: opened.buffered,
        guard,
        deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        credit: CreditReturn::new(core.config.initial_window),
        assembling: Assembler::new(core.config.max_response_message_size.unwrap_or(usize::MAX)),
        done: false,
    };
    Ok((instance, reply))
}

/// Picks an instance for `selection`, narrowing by pin or labels through the
/// snapshot's indexes first.
fn pick(core: &RouterCore, selection: &Selection<'_>) -> Result<Arc<Instance>, PickError> {
    let snapshot = core.registry.snapshot();
    if snapshot.is_empty() {
        return Err(PickError::NoInstances);
    }
    if let Some(id) = selection.pinned {
        let instance = snapshot
            .by_id(id)
            .filter(|i| Some(i.registration) != selection.exclude)
            .ok_or_else(|| PickError::PinnedNotFound(id.to_owned()))?;
        return if instance.is_available() {
            Ok(instance.clone())
        } else {
            Err(PickError::NoneAvailable)
        };
    }
    // An instance that claimed the call's routing key takes it, whatever the
    // strategy, while it can.
    if let Some(owner) = selection
        .key
        .and_then(|key| std::str::from_utf8(key).ok())
        .and_then(|key| snapshot.by_routing_key(key))
        .filter(|owner| {
            Some(owner.registration) != selection.exclude
                && owner.is_available()
                && selection
                    .labels
                    .iter()
                    .all(|(k, v)| owner.info().labels.get(*k).map(String::as_str) == Some(*v))
        })
    {
        return Ok(owner.clone());
    }
    if selection.labels.is_empty() {
        return core.balancer.pick(&snapshot, selection);
    }
    let candidates = snapshot.with_labels(&selection.labels);
    if candidates.is_empty() {
        return Err(PickError::NoLabelMatch);
    }
    let narrowed = Selection {
        labels: Vec::new(),
        ..selection.clone()
    };
    core.balancer.pick(&candidates, &narrowed)
}

fn parse_selector(text: &str) -> Vec<(&str, &str)> {
    text.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

/// The call's routing key: the method's `route_key` field, else the
/// configured header.
fn routing_key(
    core: &RouterCore,
    method: &MethodDescriptor,
    requests: &Requests,
    headers: &HeaderMap,
) -> Option<Bytes> {
    if let (false, Requests::Single(Some(message))) = (method.route_key.is_empty(), requests)
        && let Some(key) = route_key::extract(message, method.route_key)
    {
        return Some(key);
    }
    let header = core.config.route_key_header.as_deref()?;
    headers
        .get(header)
        .map(|v| Bytes::copy_from_slice(v.as_bytes()))
}

fn pick_status(core: &RouterCore, error: PickError) -> Status {
    let service = core.descriptor.name;
    match error {
        PickError::NoInstances => {
            Status::unavailable(format!("no instance of `{service}` is registered"))
        }
        PickError::NoneAvailable => Status::unavailable(format!(
            "no instance of `{service}` can take a call now (all draining, not serving or at their limit)"
        )),
        PickError::PinnedNotFound(id) => Status::unavailable(format!(
            "instance `{id}` (from `{PIN_HEADER}`) of `{service}` is not registered"
        )),
        PickError::NoLabelMatch => Status::unavailable(format!(
            "no instance of `{service}` matches the `{SELECT_HEADER}` selector"
        )),
    }
}

/// Sends a call's request messages as credit allows, then half-closes.
async fn send_requests(
    instance: Arc<Instance>,
    call_id: u64,
    tag: u32,
    credit: Arc<SendCredit>,
    requests: Requests,
) {
    match requests {
        Requests::Single(message) => {
            if let Some(message) = message
                && send_message(&instance, call_id, tag, &credit, message)
                    .await
                    .is_err()
            {
                return;
            }
        }
        Requests::Stream(mut stream) => loop {
            if credit.ready().await.is_err() {
                return;
            }
            match stream.message().await {
                Ok(Some(message)) => {
                    if send_message(&instance, call_id, tag, &credit, message)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) => break,
                // The client's stream broke (reset, bad frame): the response side
                // sees the same and cancels the call.
                Err(_) => return,
            }
        },
    }
    instance.send(RouterFrame::HalfClose(pb::HalfClose { call_id }));
}

/// Sends one message, in chunks when it is larger than the bridge's frame
/// limit, each once credit allows.
async fn send_message(
    instance: &Instance,
    call_id: u64,
    tag: u32,
    credit: &SendCredit,
    message: Bytes,
) -> Result<(), SendError> {
    send_with_credit(credit, instance.max_frame, message, |piece| {
        instance.send(match piece {
            Piece::Whole(message) => RouterFrame::Call(Payload {
                call_id,
                tag,
                message,
            }),
            Piece::Chunk { data, last } => RouterFrame::Chunk(pb::MessageChunk {
                call_id,
                data,
                last,
            }),
        })
    })
    .await
}

/// Cleans up a call whatever way it ends: forgets it on the registration and,
/// when the client went away first, tells the bridge to cancel it.
struct CallGuard {
    core: Arc<RouterCore>,
    instance: Arc<Instance>,
    call_id: u64,
    finished: bool,
    pump: Option<AbortHandle>,
}

impl CallGuard {
    fn cancel(&mut self, code: Code, reason: &str) {
        if !self.finished {
            self.finished = true;
            self.instance.send(RouterFrame::Cancel(pb::Cancel {
                call_id: self.call_id,
                code: code as i32,
                reason: reason.to_owned(),
            }));
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.cancel(Code::Cancelled, "client cancelled");
        if let Some(pump) = &self.pump {
            pump.abort();
        }
        self.instance.close_call(self.call_id);
        self.core.stats.call_ended();
    }
}

enum First {
    /// The response headers: the call is answered.
    Headers(pb::Metadata),
    /// The instance went away before answering.
    Lost(Status),
    /// The instance refused the call without running it (at capacity).
    Refused(Status),
    /// The call ended before any response (trailers-only, deadline, ...).
    Failed(Status),
}

/// The response messages of one call, handed to tonic for the client.
pub(crate) struct ReplyStream {
    events: QueueReceiver<CallEvent>,
    buffered: Arc<AtomicUsize>,
    guard: CallGuard,
    deadline: Option<Pin<Box<Sleep>>>,
    credit: CreditReturn,
    assembling: Assembler,
    done: bool,
}

impl ReplyStream {
    /// Waits for the response headers, or the call's early end.
    async fn first_event(&mut self) -> First {
        let event = {
            let deadline = self.deadline.as_mut();
            match deadline {
                Some(sleep) => tokio::select! {
                    event = self.events.recv() => event,
                    _ = sleep => {
                        self.guard.cancel(Code::DeadlineExceeded, "deadline exceeded");
                        return First::Failed(deadline_exceeded());
                    }
                },
                None => self.events.recv().await,
            }
        };
        match event {
            Some(CallEvent::Headers(md)) => First::Headers(md),
            Some(CallEvent::Trailers(trailers)) => {
                self.guard.finished = true;
                if trailers.not_started {
                    First::Refused(metadata::status_from_trailers(trailers))
                } else {
                    First::Failed(metadata::status_from_trailers(trailers))
                }
            }
            Some(CallEvent::Lost(status)) => {
                self.guard.finished = true;
                First::Lost(status)
            }
            Some(CallEvent::Message(_) | CallEvent::Chunk(_)) => {
                self.guard.cancel(Code::Internal, "message before headers");
                First::Failed(Status::internal(
                    "instance sent a message before response headers",
                ))
            }
            None => {
                self.guard.finished = true;
                First::Lost(Status::unavailable("instance went away"))
            }
        }
    }

    fn return_credit(&mut self, len: usize) {
        self.buffered.fetch_sub(len, Ordering::AcqRel);
        if let Some(increment) = self.credit.consumed(len) {
            self.guard
                .instance
                .send(RouterFrame::WindowUpdate(pb::WindowUpdate {
                    call_id: self.guard.call_id,
                    increment,
                }));
        }
    }

    fn fail(&mut self, status: Status) -> Poll<Option<Result<Bytes, Status>>> {
        self.done = true;
        Poll::Ready(Some(Err(status)))
    }
}

impl Stream for ReplyStream {
    type Item = Result<Bytes, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            if let Some(sleep) = this.deadline.as_mut()
                && sleep.as_mut().poll(cx).is_ready()
            {
                this.guard
                    .cancel(Code::DeadlineExceeded, "deadline exceeded");
                return this.fail(deadline_exceeded());
            }
            let event = ready!(this.events.poll_recv(cx));
            match event {
                Some(CallEvent::Message(message)) => {
                    this.return_credit(message.len());
                    return Poll::Ready(Some(Ok(message)));
                }
                Some(CallEvent::Chunk(chunk)) => {
                    match this.assembling.push(&chunk.data, chunk.last) {
                        Ok(whole) => {
                            this.return_credit(chunk.data.len());
                            if let Some(message) = whole {
                                return Poll::Ready(Some(Ok(message)));
                            }
                        }
                        Err(status) => {
                            this.guard
                                .cancel(Code::OutOfRange, "response message too large");
                            return this.fail(status);
                        }
                    }
                }
                Some(CallEvent::Headers(_)) => {}
                Some(CallEvent::Trailers(trailers)) => {
                    this.guard.finished = true;
                    // tonic writes an `Err` as the trailers; an OK status with
                    // metadata becomes `grpc-status: 0` plus that metadata.
                    return this.fail(metadata::status_from_trailers(trailers));
                }
                Some(CallEvent::Lost(status)) => {
                    this.guard.finished = true;
                    return this.fail(status);
                }
                None => {
                    this.guard.finished = true;
                    return this.fail(Status::unavailable("instance went away"));
                }
            }
        }
    }
}
