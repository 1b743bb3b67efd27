//! One bridge registration: connect, `Hello`, serve calls, reconnect.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use futures_util::FutureExt;
use http::uri::PathAndQuery;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, error, info, warn};

use super::body::RequestEvent;
use super::call::{self, CallContext, Calls};
use super::error::RegistrationError;
use super::fleet::{Discovery, Role};
use super::{BridgeConfig, BridgeState, BridgedService};
use crate::codec::FrameCodec;
use crate::codec::frame_limit;
use crate::pb;
use crate::queue::{QueueSender, queue};
use crate::wire::{BridgeFrame, RouterFrame};

/// What every registration of one bridge shares.
pub(crate) struct Shared {
    pub(crate) service_name: &'static str,
    /// The service's methods, to resolve each call's path.
    pub(crate) descriptor: &'static crate::descriptor::ServiceDescriptor,
    pub(crate) register_path: String,
    /// What every `Hello` says the instance serves.
    pub(crate) description: pb::ServiceDescription,
    pub(crate) options: BridgeConfig,
    pub(crate) shutdown: CancellationToken,
    pub(crate) abort: CancellationToken,
    pub(crate) state: watch::Sender<BridgeState>,
    /// Calls the instance runs now, through every router.
    pub(crate) active: Arc<AtomicUsize>,
    /// Whether the instance takes new calls (`grpc.health.v1` semantics).
    pub(crate) serving: watch::Sender<bool>,
    /// This bridge's random id, the same in all its `Hello`s: its reconnect
    /// replaces its own stale registration, another bridge with the same
    /// instance id does not.
    pub(crate) incarnation: String,
    /// The router fleet as the routers' `Welcome` and `Peers` list it.
    pub(crate) discovery: Arc<Discovery>,
}

/// How a session ended.
enum SessionEnd {
    /// Shutdown or abort requested: stop for good.
    Stopped,
    /// The registration failed or ended: reconnect, after the longest
    /// backoff when the router refused it.
    Lost(RegistrationError),
}

/// Keeps one endpoint's registration alive until shutdown (while it is
/// wanted: see [`Discovery::wait_until_wanted`]).
pub(crate) async fn run_endpoint<T: BridgedService>(
    shared: Arc<Shared>,
    service: T,
    endpoint: String,
    stop: CancellationToken,
    role: Role,
) {
    if let Err(error) = super::endpoint::check(&endpoint, shared.options.tls.is_some()) {
        refuse_endpoint(&shared, &error);
        return;
    }
    // Whether this endpoint counts in `BridgeState::replaced`.
    let mut replaced = false;
    reconnect(&shared, &service, &endpoint, &stop, &mut replaced, &role).await;
    if replaced {
        shared
            .state
            .send_modify(|s| s.replaced = s.replaced.saturating_sub(1));
    }
}

/// The reconnect loop of [`run_endpoint`]; `replaced` says whether the
/// endpoint counts in [`BridgeState::replaced`] now.
async fn reconnect<T: BridgedService>(
    shared: &Arc<Shared>,
    service: &T,
    endpoint: &str,
    stop: &CancellationToken,
    replaced: &mut bool,
    role: &Role,
) {
    let mut delay = shared.options.reconnect_initial;
    loop {
        if stop.is_cancelled() || !shared.discovery.wait_until_wanted(role, stop).await {
            return;
        }
        let mut registered = false;
        let end = run_session(
            shared,
            service,
            endpoint,
            stop,
            &mut registered,
            replaced,
            role,
        )
        .await;
        let reason = match end {
            SessionEnd::Stopped => return,
            SessionEnd::Lost(reason) => reason,
        };
        if registered {
            // A registration that worked resets the backoff.
            delay = shared.options.reconnect_initial;
        }
        if reason.is_refusal() {
            // Refused, or replaced by another process with this id (even
            // after a registration that worked): trying again at once would
            // only be refused again, or start a takeover loop.
            delay = shared.options.reconnect_max;
        }
        let duplicate = matches!(reason, RegistrationError::Duplicate { .. });
        if duplicate {
            // Not a failure: the fleet is covered there already. Tried again
            // once some replica is missing, with the backoff growing so a
            // balancer that keeps answering with held replicas is not
            // hammered.
            debug!(%endpoint, %reason, "second registration with a replica refused");
        } else {
            let counted = reason.is_replaced() && !*replaced;
            *replaced |= counted;
            shared.state.send_modify(|s| {
                s.last_error = Some(reason.clone());
                s.replaced += usize::from(counted);
            });
        }
        let jittered = jitter(delay);
        if reason.is_replaced() {
            error!(%endpoint, %reason, retry_in = ?jittered, "another process holds this instance id");
        } else if !duplicate {
            warn!(%endpoint, %reason, retry_in = ?jittered, "registration lost");
        }
        tokio::select! {
            _ = tokio::time::sleep(jittered) => {}
            _ = stop.cancelled() => return,
        }
        delay = (delay * 2).min(shared.options.reconnect_max);
    }
}

/// Reports an endpoint that can never work: logged as an error and kept in
/// the state's `last_error`; the endpoint is not dialled.
fn refuse_endpoint(shared: &Shared, error: &super::EndpointError) {
    error!(%error, "not registering: invalid router endpoint");
    let reason = RegistrationError::Endpoint(error.clone());
    shared.state.send_modify(|s| s.last_error = Some(reason));
}

/// The error and its chain of sources, `outer: inner: ...`, so a
/// connection failure names its cause rather than only `transport error`.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A delay between 50% and 100% of `delay` ("equal jitter"), so bridges that
/// lost the same router do not reconnect in lockstep.
fn jitter(delay: Duration) -> Duration {
    let half = delay / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// The HTTP/2 windows of a bridge's connection to a router: the register
/// stream carries every call of the instance, so it gets far more than
/// HTTP/2's 64 KiB default (the per-call windows inside bound each call).
const REGISTER_STREAM_WINDOW: u32 = 16 * 1024 * 1024;
const REGISTER_CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;

async fn connect(options: &BridgeConfig, endpoint: &str) -> Result<Channel, RegistrationError> {
    let endpoint_text = endpoint;
    let endpoint = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| RegistrationError::Connect {
            endpoint: endpoint.to_owned(),
            cause: error_chain(&e),
        })?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(REGISTER_STREAM_WINDOW))
        .initial_connection_window_size(Some(REGISTER_CONNECTION_WINDOW))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    let endpoint = match &options.tls {
        Some(tls) => endpoint
            .tls_config(tls.clone())
            .map_err(|e| RegistrationError::Tls {
                endpoint: endpoint_text.to_owned(),
                reason: error_chain(&e),
            })?,
        None => endpoint,
    };
    endpoint
        .connect()
        .await
        .map_err(|e| RegistrationError::Connect {
            endpoint: endpoint_text.to_owned(),
            cause: error_chain(&e),
        })
}

/// One registration's life: register (connect, `Hello`, `Welcome`), then
/// serve until it ends; `registered` tells the caller whether it got as far
/// as a `Welcome` (which resets the reconnect backoff). A `Welcome` clears
/// `replaced` (the endpoint no longer counts as replaced).
async fn run_session<T: BridgedService>(
    shared: &Arc<Shared>,
    service: &T,
    endpoint: &str,
    stop: &CancellationToken,
    registered: &mut bool,
    replaced: &mut bool,
    role: &Role,
) -> SessionEnd {
    let Registration {
        out,
        mut frames,
        welcome,
    } = match register(shared, endpoint, stop).await {
        Ok(registration) => registration,
        Err(end) => return end,
    };
    // The replica this registration holds. One that reached a replica held
    // already (two dials in flight at once) replaced the other there (the
    // same bridge process): it takes the claim over. Without discovery the
    // fleet is not followed at all.
    let claim = if shared.options.discovery {
        shared.discovery.claim(&welcome, role)
    } else {
        None
    };
    *registered = true;
    let was_replaced = std::mem::take(replaced);
    info!(%endpoint, router = %welcome.router_id, replicas = welcome.peers.len(), "registered");
    shared.state.send_modify(|s| {
        s.registered += 1;
        s.last_error = None;
        s.replaced = s.replaced.saturating_sub(usize::from(was_replaced));
    });

    let options = &shared.options;
    let calls = Arc::new(Calls::default());
    let context = Arc::new(CallContext {
        out,
        calls: calls.clone(),
        descriptor: shared.descriptor,
        active: shared.active.clone(),
        limit: options.max_concurrent_calls,
        instance_id: options.instance_id.clone(),
        reply_window: welcome.initial_window.max(1),
        request_window: options.initial_window,
        request_frame: usize::try_from(options.max_frame_size).unwrap_or(usize::MAX),
        max_frame: usize::try_from(welcome.max_frame_size.max(crate::defaults::MIN_FRAME))
            .unwrap_or(usize::MAX),
        max_message: options.max_message_size,
        inline_first_poll: options.inline_first_poll,
    });
    let end = serve(shared, service, &context, &mut frames, &welcome, stop).await;
    calls.cancel_all();
    // The context holds this registration's queue to the router: once it and
    // the calls' clones are gone, the register stream ends after what is
    // queued.
    drop(context);
    if matches!(end, SessionEnd::Stopped) && !shared.abort.is_cancelled() {
        flush(&mut frames).await;
    }
    shared
        .state
        .send_modify(|s| s.registered = s.registered.saturating_sub(1));
    drop(claim);
    end
}

/// How long a drained registration waits for the router to take its last
/// frames.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// After a drain, waits (up to [`FLUSH_TIMEOUT`]) until the router ends its
/// side of the register stream, which it does once it has read the end of
/// ours: so the last calls' trailers, still queued when the drain completed,
/// have reached it before the bridge returns (and its process may exit).
async fn flush(frames: &mut tonic::Streaming<RouterFrame>) {
    let drained = tokio::time::timeout(FLUSH_TIMEOUT, async {
        while let Ok(Some(_)) = frames.message().await {}
    })
    .await;
    if drained.is_err() {
        warn!("router did not close the drained register stream in time");
    }
}

/// An accepted registration: the queue of frames to the router, the router's
/// frames, and its `Welcome`.
struct Registration {
    out: QueueSender<BridgeFrame>,
    frames: tonic::Streaming<RouterFrame>,
    welcome: pb::Welcome,
}

/// Connects to `endpoint`, opens the register stream with this bridge's
/// `Hello` and waits for the router's `Welcome`.
async fn register(
    shared: &Shared,
    endpoint: &str,
    stop: &CancellationToken,
) -> Result<Registration, SessionEnd> {
    let options = &shared.options;
    let channel = tokio::select! {
        channel = connect(options, endpoint) => channel.map_err(SessionEnd::Lost)?,
        _ = stop.cancelled() => return Err(SessionEnd::Stopped),
    };
    let (out, out_rx) = queue::<BridgeFrame>();
    let hello = pb::Hello {
        protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
        instance_id: options.instance_id.clone(),
        service: shared.service_name.to_owned(),
        labels: options.labels.clone(),
        weight: options.weight,
        max_concurrent_calls: options.max_concurrent_calls,
        routing_keys: options.routing_keys.clone(),
        initial_window: options.initial_window,
        max_frame_size: options.max_frame_size,
        max_message_size: u32::try_from(options.max_message_size).unwrap_or(u32::MAX),
        description: Some(shared.description.clone()),
        incarnation: shared.incarnation.clone(),
        discovery: options.discovery,
        registered_with: if options.discovery {
            shared.discovery.held()
        } else {
            Vec::new()
        },
    };
    let _ = out.send(BridgeFrame::Hello(hello));
    let path = PathAndQuery::try_from(shared.register_path.as_str()).map_err(|_| {
        SessionEnd::Lost(RegistrationError::Protocol(
            "the generated register path is not a valid HTTP path",
        ))
    })?;
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(frame_limit(options.max_frame_size));
    grpc.ready().await.map_err(|e| {
        SessionEnd::Lost(RegistrationError::Connect {
            endpoint: endpoint.to_owned(),
            cause: error_chain(&e),
        })
    })?;
    let mut request = tonic::Request::new(out_rx);
    *request.metadata_mut() = options.register_metadata.clone();
    let codec = FrameCodec::<BridgeFrame, RouterFrame>::default();
    let response = tokio::select! {
        response = grpc.streaming(request, path, codec) => response,
        _ = stop.cancelled() => return Err(SessionEnd::Stopped),
    };
    let lost = |status: tonic::Status| {
        if let Some(router_id) = status.metadata().get(crate::wire::DUPLICATE_TRAILER) {
            return SessionEnd::Lost(RegistrationError::Duplicate {
                router_id: router_id.to_str().unwrap_or_default().to_owned(),
            });
        }
        SessionEnd::Lost(RegistrationError::from_register_status(
            &status,
            endpoint,
            &shared.register_path,
        ))
    };
    let mut frames = response.map_err(lost)?.into_inner();
    let welcome = match frames.message().await.map_err(lost)? {
        Some(RouterFrame::Welcome(welcome)) => welcome,
        Some(_) => {
            return Err(SessionEnd::Lost(RegistrationError::Protocol(
                "its first frame was not Welcome",
            )));
        }
        None => return Err(SessionEnd::Lost(RegistrationError::Closed)),
    };
    Ok(Registration {
        out,
        frames,
        welcome,
    })
}

/// Where a registration stands in its drain. A bridge asked to stop sends
/// `Drain` and keeps serving until the router acknowledges with `GoAway`
/// (after it, no new call can arrive: see the start gate in the router's
/// registry), then until its calls in flight finish, or the drain timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DrainPhase {
    /// No drain asked.
    Serving,
    /// `Drain` sent; new calls may still arrive until the acknowledgement.
    Requested { deadline: tokio::time::Instant },
    /// The router acknowledged: finish the calls in flight.
    Acknowledged { deadline: tokio::time::Instant },
}

impl DrainPhase {
    fn deadline(self) -> Option<tokio::time::Instant> {
        match self {
            DrainPhase::Serving => None,
            DrainPhase::Requested { deadline } | DrainPhase::Acknowledged { deadline } => {
                Some(deadline)
            }
        }
    }
}

/// Resolves at `deadline`, or never without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Serves a registration: dispatches the router's frames to calls, sends
/// heartbeats and serving changes, watches the router's liveness, and drains
/// when asked to stop.
async fn serve<T: BridgedService>(
    shared: &Arc<Shared>,
    service: &T,
    context: &Arc<CallContext>,
    frames: &mut tonic::Streaming<RouterFrame>,
    welcome: &pb::Welcome,
    stop: &CancellationToken,
) -> SessionEnd {
    let (out, calls) = (&context.out, &context.calls);
    let heartbeat_ms = u64::from(welcome.heartbeat_interval_ms.max(100));
    let timeout = Duration::from_millis(u64::from(welcome.heartbeat_timeout_ms.max(300)));
    let mut heartbeat = tokio::time::interval(Duration::from_millis(heartbeat_ms));
    heartbeat.reset();
    let mut last_seen = tokio::time::Instant::now();
    let mut drain = DrainPhase::Serving;
    let mut serving = shared.serving.subscribe();
    let mut first_polls = Vec::new();
    loop {
        tokio::select! {
            frame = frames.message() => match frame {
                Ok(Some(frame)) => {
                    last_seen = tokio::time::Instant::now();
                    let end = on_frames(frame, frames, &mut drain, service, context, &mut first_polls, &shared.discovery);
                    call::run_first_polls(&mut first_polls);
                    if let Some(end) = end {
                        return end;
                    }
                }
                Ok(None) => return SessionEnd::Lost(RegistrationError::Closed),
                Err(status) => return SessionEnd::Lost(RegistrationError::from_status(&status)),
            },
            // Keep serving the calls in flight (their frames, credit and
            // half-closes still arrive above) until none is left.
            _ = calls.wait_idle(), if matches!(drain, DrainPhase::Acknowledged { .. }) => {
                return SessionEnd::Stopped;
            }
            _ = until(drain.deadline()) => {
                warn!(active = calls.active(), "drain timed out; dropping the calls in flight");
                return SessionEnd::Stopped;
            }
            _ = stop.cancelled(), if drain == DrainPhase::Serving => {
                if shared.abort.is_cancelled() {
                    return SessionEnd::Stopped;
                }
                drain = DrainPhase::Requested {
                    deadline: tokio::time::Instant::now() + shared.options.drain_timeout,
                };
                let _ = out.send(BridgeFrame::Drain(pb::Drain { reason: "bridge shutting down".into() }));
            }
            _ = shared.abort.cancelled() => return SessionEnd::Stopped,
            changed = serving.changed() => {
                if changed.is_ok() {
                    send_heartbeat(shared, out, calls, *serving.borrow_and_update());
                }
            }
            _ = heartbeat.tick() => {
                if last_seen.elapsed() > timeout {
                    return SessionEnd::Lost(RegistrationError::Silent(timeout));
                }
                send_heartbeat(shared, out, calls, *serving.borrow());
            }
        }
    }
}

/// Reports the instance's load, serving state and how many routers it is
/// registered with.
fn send_heartbeat(shared: &Shared, out: &QueueSender<BridgeFrame>, calls: &Calls, serving: bool) {
    let status = if serving {
        pb::ServingStatus::Serving
    } else {
        pb::ServingStatus::NotServing
    };
    let _ = out.send(BridgeFrame::Heartbeat(pb::Heartbeat {
        active_calls: u32::try_from(calls.active()).unwrap_or(u32::MAX),
        status: status as i32,
        routers: u32::try_from(shared.state.borrow().registered).unwrap_or(u32::MAX),
    }));
}

/// The most frames the reader hands out before it runs the calls they
/// started, so a burst cannot hold calls back for long.
const FRAMES_BEFORE_FIRST_POLLS: usize = 64;

/// Handles `frame` and every frame already received after it (up to
/// [`FRAMES_BEFORE_FIRST_POLLS`]), gathering started calls in `first_polls`.
/// `Some` when the session ends.
fn on_frames<T: BridgedService>(
    frame: RouterFrame,
    frames: &mut tonic::Streaming<RouterFrame>,
    drain: &mut DrainPhase,
    service: &T,
    context: &Arc<CallContext>,
    first_polls: &mut Vec<call::CallTask>,
    discovery: &Discovery,
) -> Option<SessionEnd> {
    let mut frame = frame;
    let mut handled = 0;
    loop {
        handled += 1;
        match (frame, *drain) {
            (RouterFrame::GoAway(go_away), DrainPhase::Requested { deadline }) => {
                debug!(reason = %go_away.reason, "router acknowledged drain");
                *drain = DrainPhase::Acknowledged { deadline };
            }
            (RouterFrame::Peers(peers), _) => discovery.offer(&peers.peers),
            (RouterFrame::GoAway(go_away), _) => {
                return Some(SessionEnd::Lost(if go_away.refused {
                    RegistrationError::Refused {
                        code: tonic::Code::PermissionDenied,
                        message: go_away.reason,
                    }
                } else {
                    RegistrationError::GoingAway(go_away.reason)
                }));
            }
            (frame, _) => dispatch(frame, service, context, first_polls),
        }
        // Only a started call waits for the frames behind it, and not for
        // long.
        if first_polls.is_empty() || handled == FRAMES_BEFORE_FIRST_POLLS {
            return None;
        }
        frame = match frames.message().now_or_never()? {
            Ok(Some(frame)) => frame,
            Ok(None) => return Some(SessionEnd::Lost(RegistrationError::Closed)),
            Err(status) => return Some(SessionEnd::Lost(RegistrationError::from_status(&status))),
        };
    }
}

fn dispatch<T: BridgedService>(
    frame: RouterFrame,
    service: &T,
    context: &Arc<CallContext>,
    first_polls: &mut Vec<call::CallTask>,
) {
    match frame {
        RouterFrame::Start(start) => {
            if let Some(task) = call::start(service.clone(), context.clone(), start) {
                first_polls.push(task);
            }
        }
        RouterFrame::Call(payload) => to_call(
            context,
            payload.call_id,
            RequestEvent::Message(payload.message),
        ),
        RouterFrame::Chunk(chunk) => to_call(context, chunk.call_id, RequestEvent::Chunk(chunk)),
        RouterFrame::HalfClose(half) => to_call(context, half.call_id, RequestEvent::End),
        RouterFrame::Cancel(cancel) => {
            if let Some(entry) = context.calls.lock().get(&cancel.call_id) {
                entry.cancel.cancel();
            }
        }
        RouterFrame::WindowUpdate(update) => {
            if let Some(entry) = context.calls.lock().get(&update.call_id) {
                entry.reply_credit.grant(update.increment);
            }
        }
        RouterFrame::Ping(ping) => {
            // Ahead of queued replies: the router times liveness by pongs.
            let _ = context
                .out
                .send_front(BridgeFrame::Pong(pb::Pong { nonce: ping.nonce }));
        }
        RouterFrame::Welcome(_) | RouterFrame::GoAway(_) | RouterFrame::Peers(_) => {}
    }
}

/// Hands a request frame to its call, enforcing the call's window: a router
/// that sends past the credit this bridge granted fails the call (INTERNAL,
/// to the router and the handler) instead of growing the bridge's memory.
fn to_call(context: &CallContext, call_id: u64, event: RequestEvent) {
    let size = event.size();
    let mut calls = context.calls.lock();
    let Some(entry) = calls.get_mut(&call_id) else {
        return;
    };
    if entry.cancel.is_cancelled() {
        // Cancelled or already failed: its handler reads nothing more.
        return;
    }
    if let Some(size) = oversized(entry, &event, context.max_message) {
        // The client's request is over this instance's limit: the call fails
        // now, whether or not the handler reads, as a gRPC server fails it.
        let status =
            crate::oversize::bridge_request(size, context.max_message, &context.instance_id);
        debug!(
            call_id,
            reason = status.message(),
            "request message over the limit; failing the call"
        );
        entry.cancel.cancel();
        let _ = context.out.send(BridgeFrame::Trailers(
            crate::metadata::trailers_from_status(call_id, &status),
        ));
        return;
    }
    match entry.window.receive(size) {
        Ok(()) => {
            let _ = entry
                .inbound
                .send_detached_if_behind(event, RequestEvent::detached);
        }
        Err(overrun) => {
            warn!(call_id, %overrun, "router broke the request flow control; failing the call");
            entry.cancel.cancel();
            let _ = context.out.send(BridgeFrame::Trailers(pb::Trailers {
                call_id,
                code: tonic::Code::Internal as i32,
                message: format!(
                    "instance `{}` refused the call: the router sent request {overrun}",
                    context.instance_id
                ),
                ..Default::default()
            }));
        }
    }
}

/// The size of the request message `event` adds to, when it takes it past
/// `max_message` (a whole message longer than that, or chunks adding up to
/// more); counts the chunks of the message arriving now in `entry`.
fn oversized(
    entry: &mut call::CallEntry,
    event: &RequestEvent,
    max_message: usize,
) -> Option<crate::oversize::Size> {
    use crate::oversize::Size;
    match event {
        RequestEvent::Message(message) if message.len() > max_message => {
            Some(Size::Exactly(message.len()))
        }
        RequestEvent::Chunk(chunk) => {
            entry.partial = entry.partial.saturating_add(chunk.data.len());
            if entry.partial > max_message {
                return Some(Size::MoreThan(max_message));
            }
            if chunk.last {
                entry.partial = 0;
            }
            None
        }
        _ => None,
    }
}

/// Registers with every address `endpoint`'s host resolves to, re-resolving
/// every `interval`: a new address gets a registration, a vanished one is
/// drained and closed. For a router fleet behind one DNS name (for example a
/// Kubernetes headless service).
pub(crate) async fn run_resolved<T: BridgedService>(
    shared: Arc<Shared>,
    service: T,
    endpoint: String,
    interval: Duration,
) {
    if let Err(error) = super::endpoint::check(&endpoint, shared.options.tls.is_some()) {
        refuse_endpoint(&shared, &error);
        return;
    }
    let Some((scheme, host, port)) = split_endpoint(&endpoint) else {
        warn!(%endpoint, "cannot resolve endpoint: expected scheme://host:port");
        shared.state.send_modify(|s| {
            s.last_error = Some(RegistrationError::Unresolvable(endpoint.clone()));
        });
        return;
    };
    let mut sessions: HashMap<SocketAddr, (CancellationToken, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.shutdown.cancelled() => break,
        }
        let addrs = match shared.options.resolver.0.resolve(&host, port).await {
            Ok(addrs) => addrs,
            Err(e) => {
                // Keep the registrations we have: a DNS hiccup is no reason to
                // leave routers that still work.
                warn!(%host, error = %e, "router name did not resolve; keeping current routers");
                continue;
            }
        };
        let wanted: std::collections::HashSet<SocketAddr> = addrs.into_iter().collect();
        sessions.retain(|addr, (stop, _)| {
            let keep = wanted.contains(addr);
            if !keep {
                info!(%addr, "router address gone from DNS; draining its registration");
                stop.cancel();
            }
            keep
        });
        for addr in wanted {
            sessions.entry(addr).or_insert_with(|| {
                let stop = shared.shutdown.child_token();
                let task = tokio::spawn(run_endpoint(
                    shared.clone(),
                    service.clone(),
                    format!("{scheme}://{addr}"),
                    stop.clone(),
                    Role::Seed,
                ));
                (stop, task)
            });
        }
    }
    for (_, (_, task)) in sessions {
        let _ = task.await;
    }
}

/// Splits `http://host:port` into its scheme, host and port.
fn split_endpoint(endpoint: &str) -> Option<(String, String, u16)> {
    let uri: http::Uri = endpoint.parse().ok()?;
    let scheme = uri.scheme_str().unwrap_or("http").to_owned();
    let host = uri
        .host()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    Some((scheme, host, port))
}
