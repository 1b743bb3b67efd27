//! Running one forwarded call through the user's tonic server.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderValue, Method, Request, Version};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use tower::ServiceExt;

use super::BridgedService;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::gauge::Gauge;

use super::body::{FrameError, FrameReader, RequestBody, RequestEvent};
use crate::flow::{Intake, RecvWindow, SendCredit, send_with_credit};
use crate::pb;
use crate::queue::{QueueSender, queue};
use crate::wire::{BridgeFrame, Payload};
use crate::{metadata, trace};

/// What every call of one registration shares.
pub(crate) struct CallContext {
    pub(crate) out: QueueSender<BridgeFrame>,
    pub(crate) calls: Arc<Calls>,
    /// The service's methods.
    pub(crate) descriptor: &'static crate::descriptor::ServiceDescriptor,
    /// Credit the router grants per call for responses.
    pub(crate) reply_window: u32,
    /// Credit this bridge grants per call for requests.
    pub(crate) request_window: u32,
    /// The largest request frame this bridge accepts (its `Hello`).
    pub(crate) request_frame: usize,
    /// The largest frame payload the router accepts.
    pub(crate) max_frame: usize,
    /// The largest request message this bridge reassembles.
    pub(crate) max_message: usize,
    /// Calls this instance runs now, through every router.
    pub(crate) active: Arc<std::sync::atomic::AtomicUsize>,
    /// The most calls it runs at once; 0 for no limit.
    pub(crate) limit: u32,
    /// The instance id, for messages.
    pub(crate) instance_id: String,
    /// Whether a call's first poll runs on the session reader
    /// ([`BridgeConfig::inline_first_poll`](super::BridgeConfig)).
    pub(crate) inline_first_poll: bool,
}

/// One call in flight, as the session reader sees it.
pub(crate) struct CallEntry {
    pub(crate) inbound: QueueSender<RequestEvent>,
    /// Request bytes delivered and not yet taken by the user's server.
    pub(crate) window: Arc<RecvWindow>,
    pub(crate) reply_credit: Arc<SendCredit>,
    pub(crate) cancel: CancellationToken,
    /// Bytes of the chunked request message arriving now, counted by the
    /// session reader against the bridge's `max_message_size`.
    pub(crate) partial: usize,
}

/// The calls of one registration.
#[derive(Default)]
pub(crate) struct Calls {
    map: Mutex<HashMap<u64, CallEntry>>,
    active: Gauge,
}

impl Calls {
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<u64, CallEntry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(&self, call_id: u64, entry: CallEntry) {
        self.active.inc();
        if let Some(old) = self.lock().insert(call_id, entry) {
            old.cancel.cancel();
            self.finish_one();
        }
    }

    /// Forgets a finished call.
    pub(crate) fn remove(&self, call_id: u64) {
        if let Some(entry) = self.lock().remove(&call_id) {
            entry.reply_credit.close();
            self.finish_one();
        }
    }

    fn finish_one(&self) {
        self.active.dec();
    }

    pub(crate) fn active(&self) -> usize {
        self.active.get()
    }

    pub(crate) async fn wait_idle(&self) {
        self.active.zero().await;
    }

    pub(crate) fn cancel_all(&self) {
        for (_, entry) in self.lock().drain() {
            entry.cancel.cancel();
            entry.reply_credit.close();
        }
        self.active.clear();
    }
}

/// Registers the call. With [`CallContext::inline_first_poll`] it returns
/// the call's future, for [`run_first_polls`]; otherwise it spawns it.
pub(crate) fn start<T: BridgedService>(
    service: T,
    context: Arc<CallContext>,
    start: pb::CallStart,
) -> Option<CallTask> {
    let call_id = start.call_id;
    if !take_slot(&context, call_id) {
        return None;
    }
    let (body, reply_credit, cancel) = open_call(&context, call_id);
    // The handler's span, the child of the router's `traceparent`: current
    // while the handler runs, so its own spans and logs join the trace.
    let span = trace::bridge_span(&start.path);
    trace::continue_trace(&span, &start.metadata.as_ref());
    let task_span = span.clone();
    let inline = context.inline_first_poll;
    let task = async move {
        let timeout =
            (start.timeout_micros > 0).then(|| Duration::from_micros(start.timeout_micros));
        let out = context.out.clone();
        let work = run(service, &context, start, body, &reply_credit, timeout);
        // The cancel is checked first: once the router cancelled the call,
        // the handler is never polled again (it could otherwise finish, and
        // answer, on the same wake-up).
        let outcome = match timeout {
            Some(timeout) => tokio::select! {
                biased;
                _ = cancel.cancelled() => None,
                outcome = work => Some(outcome),
                _ = tokio::time::sleep(timeout) => Some(Err(Status::deadline_exceeded("deadline exceeded"))),
            },
            None => tokio::select! {
                biased;
                _ = cancel.cancelled() => None,
                outcome = work => Some(outcome),
            },
        };
        // The handler's future and response stream are dropped by now: a
        // cancelled call's handler sees its future dropped or its stream closed.
        match &outcome {
            Some(Err(status)) => {
                let _ = out.send(BridgeFrame::Trailers(metadata::trailers_from_status(
                    call_id, status,
                )));
                trace::record_end(&task_span, status.code(), status.message());
            }
            Some(Ok((code, message))) => {
                trace::record_end(&task_span, *code, message);
            }
            None => trace::record_end(&task_span, Code::Cancelled, "cancelled"),
        }
        context.calls.remove(call_id);
        context.active.fetch_sub(1, Ordering::AcqRel);
    };
    let task: CallTask = Box::pin(tracing::Instrument::instrument(task, span));
    if inline {
        Some(task)
    } else {
        tokio::spawn(task);
        None
    }
}

/// Takes a slot under the instance's concurrency limit for call `call_id`,
/// or refuses the call as not started (RESOURCE_EXHAUSTED) so the router
/// may try another instance. Each router counts only its own calls: with
/// several routers the limit is enforced here.
fn take_slot(context: &CallContext, call_id: u64) -> bool {
    let running = context.active.fetch_add(1, Ordering::AcqRel);
    if context.limit == 0 || running < context.limit as usize {
        return true;
    }
    context.active.fetch_sub(1, Ordering::AcqRel);
    let _ = context.out.send(BridgeFrame::Trailers(pb::Trailers {
        call_id,
        code: Code::ResourceExhausted as i32,
        message: format!(
            "instance `{}` is at its limit of {} concurrent calls",
            context.instance_id, context.limit
        ),
        details: Bytes::new(),
        metadata: None,
        not_started: true,
    }));
    false
}

/// Enters call `call_id` in the session's table: its request body, its
/// response credit and its cancellation.
fn open_call(
    context: &CallContext,
    call_id: u64,
) -> (RequestBody, Arc<SendCredit>, CancellationToken) {
    let (inbound, rx) = queue();
    let reply_credit = Arc::new(SendCredit::new(context.reply_window));
    let window = Arc::new(RecvWindow::new(RecvWindow::limit_for(
        context.request_window,
        context.request_frame,
    )));
    let cancel = CancellationToken::new();
    context.calls.insert(
        call_id,
        CallEntry {
            inbound,
            window: window.clone(),
            reply_credit: reply_credit.clone(),
            cancel: cancel.clone(),
            partial: 0,
        },
    );
    let body = RequestBody {
        call_id,
        rx,
        out: context.out.clone(),
        intake: Intake::new(window, context.request_window, context.max_message),
        pending: None,
        ended: false,
    };
    (body, reply_credit, cancel)
}

/// A call not yet polled: [`start`] hands it back for the session reader to
/// poll first ([`run_first_polls`]).
pub(crate) type CallTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Polls each call once here, on the session reader, and spawns only those
/// that have to wait. Most unary calls finish in that poll (the request came
/// with the `Start`, the handler answers at once): that saves a task, a
/// schedule and a wake-up per call. The reader runs this once it has handed
/// out every frame already received, so a call's first poll sees the
/// request and half-close that followed its `Start`. Every future a call
/// holds registers its waker again when its task polls it.
pub(crate) fn run_first_polls(tasks: &mut Vec<CallTask>) {
    for mut task in tasks.drain(..) {
        if (&mut task).now_or_never().is_none() {
            tokio::spawn(task);
        }
    }
}

/// Calls the service and forwards its response. `Ok` holds the code and
/// message the service ended with; `Err` is a status the bridge produced
/// itself (the service's own statuses are forwarded inside).
async fn run<T: BridgedService>(
    service: T,
    context: &CallContext,
    start: pb::CallStart,
    body: RequestBody,
    reply_credit: &SendCredit,
    timeout: Option<Duration>,
) -> Result<(Code, String), Status> {
    let call_id = start.call_id;
    let request = build_request(context.descriptor, &start, body, timeout)?;
    let Ok(response) = service.oneshot(request).await;
    let (parts, mut body) = response.into_parts();

    // A trailers-only response: the status is in the headers.
    if let Some(mut trailers) = metadata::trailers_from_headers(call_id, &parts.headers) {
        name_server_limit(&mut trailers, &context.instance_id);
        let end = ended(&trailers);
        let _ = context.out.send(BridgeFrame::Trailers(trailers));
        return Ok(end);
    }
    // Frames that are ready together (for a unary call: headers, the reply and
    // the trailers) go to the router in one batch: one write, one wake-up.
    let mut batch = vec![BridgeFrame::Headers(pb::Headers {
        call_id,
        metadata: Some(metadata::from_headers(&parts.headers)),
    })];
    let tag = start.method_tag;
    let mut reader = FrameReader::default();
    loop {
        let next = match body.frame().now_or_never() {
            Some(next) => next,
            None => {
                flush(context, &mut batch);
                body.frame().await
            }
        };
        let Some(frame) = next else {
            flush(context, &mut batch);
            return Err(Status::internal(
                "the service's response ended without a gRPC status",
            ));
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(status) => {
                flush(context, &mut batch);
                return Err(status);
            }
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                reader.push(data);
                while let Some(message) = reader.next_message().map_err(|e| match e {
                    FrameError::Compressed => Status::internal(
                        "the service compressed a response the bridge did not ask to be compressed",
                    ),
                })? {
                    if message.len() <= context.max_frame && reply_credit.try_consume(message.len())
                    {
                        batch.push(BridgeFrame::Reply(Payload {
                            call_id,
                            tag,
                            message,
                        }));
                    } else {
                        flush(context, &mut batch);
                        send_reply(context, call_id, tag, reply_credit, message).await?;
                    }
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            let mut trailers =
                metadata::trailers_from_headers(call_id, &trailers).unwrap_or(pb::Trailers {
                    call_id,
                    code: Code::Unknown as i32,
                    message: "the service's trailers carry no grpc-status".into(),
                    details: Bytes::new(),
                    metadata: Some(metadata::from_headers(&trailers)),
                    not_started: false,
                });
            name_server_limit(&mut trailers, &context.instance_id);
            let end = ended(&trailers);
            batch.push(BridgeFrame::Trailers(trailers));
            flush(context, &mut batch);
            return Ok(end);
        }
    }
}

/// Turns tonic's own status for a message over one of the server's size
/// limits (OUT_OF_RANGE) into RESOURCE_EXHAUSTED, gRPC's code for it, naming
/// the instance and the server setting that raises the limit. Any other
/// status is the handler's and stays as it is.
fn name_server_limit(trailers: &mut pb::Trailers, instance_id: &str) {
    if let Some(status) = crate::oversize::bridge_server(
        Code::from_i32(trailers.code),
        &trailers.message,
        instance_id,
    ) {
        trailers.code = status.code() as i32;
        trailers.message = status.message().to_owned();
    }
}

/// The code and message of a call's trailers, for its span.
fn ended(trailers: &pb::Trailers) -> (Code, String) {
    let code = Code::from_i32(trailers.code);
    let message = match code {
        Code::Ok => String::new(),
        _ => trailers.message.clone(),
    };
    (code, message)
}

/// Sends the frames gathered so far in one batch.
fn flush(context: &CallContext, batch: &mut Vec<BridgeFrame>) {
    if !batch.is_empty() {
        context.out.send_all(batch.drain(..));
    }
}

/// Builds the HTTP/2 request tonic's generated server expects.
fn build_request(
    descriptor: &'static crate::descriptor::ServiceDescriptor,
    start: &pb::CallStart,
    body: RequestBody,
    timeout: Option<Duration>,
) -> Result<Request<tonic::body::Body>, Status> {
    // A method this build knows: its static path, without copying. Otherwise
    // the router's path as sent (a newer router), which the service answers
    // with UNIMPLEMENTED if it does not know it either.
    let uri = match descriptor.method_by_tag(start.method_tag) {
        Some(method) if start.path.is_empty() || start.path == method.path => {
            http::Uri::from_maybe_shared(Bytes::from_static(method.path.as_bytes()))
        }
        _ => http::Uri::try_from(start.path.as_str()),
    }
    .map_err(|e| Status::internal(format!("invalid call path `{}`: {e}", start.path)))?;
    let mut request = Request::builder()
        .method(Method::POST)
        .version(Version::HTTP_2)
        .uri(uri)
        .body(tonic::body::Body::new(body))
        .map_err(|e| Status::internal(format!("invalid call path `{}`: {e}", start.path)))?;
    // The client's connection as the router saw it: the handler's
    // `remote_addr()` and `local_addr()` are what a direct call would give.
    if !start.peer.is_empty() || !start.local.is_empty() {
        request
            .extensions_mut()
            .insert(tonic::transport::server::TcpConnectInfo {
                local_addr: start.local.parse().ok(),
                remote_addr: start.peer.parse().ok(),
            });
    }
    // tonic's `peer_certs()` reads a `TlsConnectInfo` nobody outside tonic
    // can build, so the client's certificates travel as `PeerCertificates`.
    if !start.peer_certificates.is_empty() {
        request
            .extensions_mut()
            .insert(super::PeerCertificates(std::sync::Arc::new(
                start.peer_certificates.clone(),
            )));
    }
    let headers = request.headers_mut();
    if let Some(metadata) = &start.metadata {
        metadata::append_to_headers(metadata, headers);
    }
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    if let Some(timeout) = timeout {
        headers.insert("grpc-timeout", metadata::format_timeout(timeout));
    }
    Ok(request)
}

/// Sends one response message once credit allows, in chunks when it is
/// larger than the router's frame limit.
async fn send_reply(
    context: &CallContext,
    call_id: u64,
    tag: u32,
    credit: &SendCredit,
    message: Bytes,
) -> Result<(), Status> {
    send_with_credit(
        credit,
        context.max_frame,
        message,
        || std::future::ready(()),
        |piece| {
            context
                .out
                .send(piece.frame(call_id, tag, BridgeFrame::Reply, BridgeFrame::Chunk))
                .is_ok()
        },
    )
    .await
    .map_err(|_| Status::cancelled("call ended"))
}
