//! One registration on the router: the `Register` stream of one bridge.
//!
//! The reader never waits on a call: every frame is handed to its call's
//! queue (bounded by the call's credit window, which the reader enforces), so
//! one slow client never stalls the other calls on the same instance. Every
//! frame a bridge sends for a call counts against that call's buffer limit,
//! and frames out of order (a second `Headers`, a message before `Headers`,
//! anything after `Trailers`) fail the call as a protocol violation.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::flow::RecvWindow;
use crate::metrics::Event;
use crate::pb;
use crate::router::outbound::{OutboundStream, Outbox};
use crate::router::recheck::Credentials;
use crate::router::registry::{CallEvent, Holder, Instance, InstanceInfo, ResponsePhase, Takeover};
use crate::router::service::Learnt;
use crate::router::{RouterConfig, RouterCore};
use crate::wire::{BridgeFrame, RouterFrame};

/// The protocol versions this router speaks.
pub(crate) const PROTOCOL_VERSION: i32 = pb::ProtocolVersion::ProtocolVersion1 as i32;

/// The largest per-call request window the router honours, whatever a bridge
/// declares in its `Hello`: a bridge cannot make the router queue more than
/// this for one call.
const MAX_REQUEST_WINDOW: u32 = 16 * 1024 * 1024;

/// How long a registration that looks alive has to answer a ping when a
/// newcomer asks for its instance id (at most; half the heartbeat interval
/// when that is shorter).
const TAKEOVER_PROBE: Duration = Duration::from_secs(2);

/// Handles `Register` calls.
pub(crate) struct Register {
    pub(crate) core: Arc<RouterCore>,
}

impl tonic::server::StreamingService<BridgeFrame> for Register {
    type Response = RouterFrame;
    type ResponseStream = OutboundStream;
    type Future = BoxFuture<'static, Result<Response<OutboundStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<BridgeFrame>>) -> Self::Future {
        let core = self.core.clone();
        Box::pin(async move {
            let (metadata, extensions, frames) = request.into_parts();
            let peer = peer_of(&extensions);
            let certificates = crate::router::authz::peer_certificates(&extensions);
            let service = core.service.name().to_owned();
            let stats_of = core.clone();
            let accepted = accept(core, metadata, frames, &peer, &certificates).await;
            if let Err(status) = &accepted
                && crate::router::fleet::is_duplicate(status)
            {
                debug!(service = %service, peer = %peer, "second registration of a bridge refused");
            } else if let Err(status) = &accepted {
                stats_of.stats.registration_refused();
                record(&stats_of, Event::Refused(status.code()));
                warn!(
                    event = "refused",
                    service = %service,
                    peer = %peer,
                    code = ?status.code(),
                    reason = status.message(),
                    "registration refused"
                );
            }
            accepted
        })
    }
}

/// The address a register stream came from, as text (empty when unknown).
fn peer_of(extensions: &tonic::Extensions) -> String {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    extensions
        .get::<TcpConnectInfo>()
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .map(TlsConnectInfo::get_ref)
        })
        .and_then(TcpConnectInfo::remote_addr)
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// Validates the bridge's `Hello`, registers the instance and starts its
/// reader, in steps: the `Hello` read and checked, the registration check
/// (`authorize`), the takeover of a live instance id, the windows, the
/// admission into the service and registry, and the log.
async fn accept(
    core: Arc<RouterCore>,
    metadata: tonic::metadata::MetadataMap,
    mut frames: Streaming<BridgeFrame>,
    peer: &str,
    peer_certificates: &[bytes::Bytes],
) -> Result<Response<OutboundStream>, Status> {
    let config = core.config();
    let mut hello = read_hello(&core, &config, &mut frames).await?;
    crate::router::fleet::refuse_duplicate(&hello, &config.router_id)?;
    let identity = match &config.authorize {
        Some(authorize) => authorize(&crate::router::RegisterRequest {
            metadata: &metadata,
            hello: &hello,
            peer,
            peer_certificates,
        })?,
        None => None,
    };
    if core.closing.load(Ordering::Acquire) {
        return Err(Status::unavailable(format!(
            "router `{}` is shutting down; register with another router",
            config.router_id
        )));
    }
    let description = hello.description.take();
    let discovery = hello.discovery;
    let (request_window, max_frame) = negotiate_windows(&hello);
    let (out, stream) = Outbox::new(config.max_queued_bytes);
    let info = InstanceInfo {
        id: hello.instance_id.clone(),
        labels: hello.labels.into_iter().collect(),
        weight: hello.weight.max(1),
        max_concurrent_calls: hello.max_concurrent_calls,
        routing_keys: hello.routing_keys,
        identity,
        incarnation: hello.incarnation,
    };
    let existing = take_over(&core, &config, &info).await?;
    let mut instance = Instance::new(
        core.registry.next_registration(),
        info,
        out,
        request_window,
        max_frame,
        RecvWindow::limit_for(
            config.initial_window,
            usize::try_from(config.max_frame_size).unwrap_or(usize::MAX),
        ),
    )
    .with_credentials(Credentials::new(&metadata, peer, peer_certificates))
    .with_partial_limit(config.max_partial_response_bytes)
    .with_discovery(discovery);
    if let Some(existing) = &existing {
        instance = instance.displacing(&existing.info().incarnation);
    }
    let holder = Holder::Registration(existing.as_ref().map(|e| e.registration));
    let kind = crate::router::bridge_kind::BridgeKind::of(&metadata);
    let welcome_peers = config
        .fleet
        .as_ref()
        .map(|fleet| fleet.peers())
        .unwrap_or_default();
    let (instance, stale) = admit(
        &core,
        &config,
        instance,
        holder,
        description,
        kind,
        &welcome_peers,
    )?;
    log_accepted(&core, &instance, stale, peer);
    if !core.sweeper_started.swap(true, Ordering::AcqRel) {
        start_sweeper(&core);
        if let Some(fleet) = &config.fleet {
            crate::router::fleet::announce(&core, fleet);
        }
    }
    catch_up_fleet(&config, &instance, &welcome_peers);
    tokio::spawn(read_frames(core, instance, frames));
    Ok(Response::new(stream))
}

/// The bridge's `Hello`, read within the hello timeout and checked: the
/// first frame, of a protocol version this router speaks, for this service,
/// with an instance id.
async fn read_hello(
    core: &RouterCore,
    config: &RouterConfig,
    frames: &mut Streaming<BridgeFrame>,
) -> Result<pb::Hello, Status> {
    let first = tokio::time::timeout(config.hello_timeout, frames.message())
        .await
        .map_err(|_| Status::deadline_exceeded("no Hello frame within the hello timeout"))??;
    let hello = match first {
        Some(BridgeFrame::Hello(hello)) => hello,
        Some(_) => {
            return Err(Status::invalid_argument(
                "the first frame of a register stream must be Hello",
            ));
        }
        None => return Err(Status::cancelled("register stream closed before Hello")),
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(Status::failed_precondition(format!(
            "register protocol version {} is not supported; this router speaks version {}",
            hello.protocol_version, PROTOCOL_VERSION
        )));
    }
    if hello.service != core.service.name() {
        return Err(Status::failed_precondition(format!(
            "this register endpoint serves `{}`, not `{}`",
            core.service.name(),
            hello.service
        )));
    }
    if hello.instance_id.is_empty() {
        return Err(Status::invalid_argument(
            "Hello.instance_id must not be empty",
        ));
    }
    Ok(hello)
}

/// The registration that holds `info`'s instance id now, if any, once it
/// may be replaced: a live registration of the same id is replaced only by
/// its own process, or once it misses a ping; a credential alone never
/// replaces it.
async fn take_over(
    core: &RouterCore,
    config: &RouterConfig,
    info: &InstanceInfo,
) -> Result<Option<Arc<Instance>>, Status> {
    // A scan, not `Snapshot::by_id`: that builds the snapshot's index, and
    // every registration publishes a new snapshot, so ten thousand
    // registrations would build ten thousand indexes.
    let existing = core
        .registry
        .snapshot()
        .iter()
        .find(|i| i.id() == info.id)
        .cloned();
    if let Some(existing) = &existing {
        let interval = config.heartbeat_interval;
        let stale_after = u64::from(millis(interval + interval / 2));
        match existing.takeover_by(info, stale_after) {
            Takeover::Allowed => {}
            Takeover::Refused(status) => return Err(status),
            Takeover::IfSilent => {
                let probe = (interval / 2).min(TAKEOVER_PROBE);
                if existing.answers_ping(probe).await {
                    return Err(existing.refusal_for(info));
                }
            }
        }
    }
    Ok(existing)
}

/// The windows a `Hello` declares, within the router's bounds: the
/// per-call request window (at most [`MAX_REQUEST_WINDOW`]) and the largest
/// frame the bridge takes.
fn negotiate_windows(hello: &pb::Hello) -> (u32, usize) {
    let request_window = if hello.initial_window == 0 {
        crate::defaults::UNDECLARED_WINDOW
    } else {
        hello.initial_window.min(MAX_REQUEST_WINDOW)
    };
    let max_frame =
        usize::try_from(hello.max_frame_size.max(crate::defaults::MIN_FRAME)).unwrap_or(usize::MAX);
    (request_window, max_frame)
}

/// Admits `instance` into the service (the compatibility rule) and the
/// registry under one lock, its `Welcome` queued first; checks it again if a
/// reload changed the registration check meanwhile, and tells of the
/// methods it defined or added. Returns it and the registration it
/// replaced.
fn admit(
    core: &RouterCore,
    config: &RouterConfig,
    instance: Instance,
    holder: Holder,
    description: Option<pb::ServiceDescription>,
    kind: crate::router::bridge_kind::BridgeKind,
    peers: &[pb::RouterPeer],
) -> Result<(Arc<Instance>, Option<Arc<Instance>>), Status> {
    let welcome = pb::Welcome {
        peers: peers.to_vec(),
        protocol_version: PROTOCOL_VERSION,
        router_id: config.router_id.clone(),
        initial_window: config.initial_window,
        max_frame_size: config.max_frame_size,
        heartbeat_interval_ms: millis(config.heartbeat_interval),
        heartbeat_timeout_ms: millis(config.heartbeat_timeout),
    };
    let (inserted, learnt) = core.service.admit(
        description.as_ref(),
        kind,
        || !core.registry.is_empty(),
        |served| {
            let instance = Arc::new(instance.with_served(served));
            // Queued before the insert, so it precedes any call's `Start`.
            instance.send(RouterFrame::Welcome(welcome));
            // Refused when another newcomer took the id over between the
            // check and now: one takeover per lost owner.
            match core.registry.insert_replacing(instance.clone(), holder) {
                Ok(stale) => Ok((instance, stale)),
                Err(holder) => Err(holder.refusal_for(instance.info())),
            }
        },
    )?;
    let (instance, stale) = inserted?;
    // A reload that changed the registration check while this one was
    // checked with the old one: check it again.
    let current = core.config();
    if crate::router::recheck::check_changed(config, &current) {
        crate::router::recheck::recheck(core, &current, &instance);
    }
    log_learnt(core, &instance, &learnt);
    Ok((instance, stale))
}

/// Sends the fleet to a registration that takes `Peers` when it changed
/// between its `Welcome` and its insert into the registry (the fleet's
/// announcer, which told the registrations in the registry then, missed it).
fn catch_up_fleet(config: &RouterConfig, instance: &Instance, welcomed: &[pb::RouterPeer]) {
    let Some(fleet) = &config.fleet else { return };
    let peers = fleet.peers();
    if instance.discovery && *peers != welcomed {
        instance.send(RouterFrame::Peers(pb::Peers {
            peers: peers.to_vec(),
        }));
    }
}

/// Logs the methods a registration defined or added, and tells the
/// service's listener.
fn log_learnt(core: &RouterCore, instance: &Instance, learnt: &Learnt) {
    if learnt.defined {
        core.refresh_strategy();
        info!(
            service = core.service.name(),
            instance = instance.id(),
            methods = core.service.methods().iter().count(),
            "service defined by its registration"
        );
    } else if !learnt.added.is_empty() {
        info!(
            service = core.service.name(),
            instance = instance.id(),
            added = ?learnt.added,
            "registration added methods"
        );
    }
    if learnt.defined || !learnt.added.is_empty() {
        core.service_changed(learnt.defined);
    }
}

/// Counts and logs an accepted registration, closing the stale one it
/// replaced.
fn log_accepted(core: &RouterCore, instance: &Instance, stale: Option<Arc<Instance>>, peer: &str) {
    record(core, Event::Accepted);
    if let Some(stale) = stale {
        record(core, Event::Replaced);
        info!(
            event = "replaced",
            service = core.service.name(),
            instance = stale.id(),
            registration = stale.registration,
            by = instance.registration,
            "instance re-registered; closing its stale registration"
        );
        let replaced = if stale.info().incarnation == instance.info().incarnation
            && !stale.info().incarnation.is_empty()
        {
            format!(
                "instance `{}` re-registered from the same bridge process; its previous registration is closed",
                stale.id()
            )
        } else {
            format!(
                "instance `{}` re-registered from another bridge process after this registration \
                 missed a ping; it is closed, and this process is refused while the new owner lives",
                stale.id()
            )
        };
        stale.shut(
            &Status::unavailable(replaced.clone()),
            Some(Status::aborted(replaced)),
        );
    }
    info!(
        event = "registered",
        service = core.service.name(),
        instance = instance.id(),
        registration = instance.registration,
        peer,
        labels = ?instance.info().labels,
        weight = instance.info().weight,
        "instance registered"
    );
}

/// Counts a registration event, when the router has metrics.
pub(crate) fn record(core: &RouterCore, event: Event) {
    if let Some(metrics) = &core.metrics {
        metrics.event(core, event);
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Reads the bridge's frames until the stream ends, the bridge breaks the
/// protocol, or the registration is closed elsewhere (replaced, evicted).
///
/// A function returning an `async move` block rather than an `async fn`: an
/// `async fn` moves its arguments into locals of its state machine, so the
/// task of every idle registration would hold the register stream's decoder
/// twice (rust-lang/rust#62958). The block uses what it captured in place.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn read_frames(
    core: Arc<RouterCore>,
    instance: Arc<Instance>,
    mut frames: Streaming<BridgeFrame>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    async move {
        // Why it ended, and the status the bridge gets for its register call.
        let (reason, stream_status) = loop {
            tokio::select! {
                frame = frames.message() => match frame {
                    Ok(Some(frame)) => {
                        if let Err(status) = handle(&core, &instance, frame) {
                            break (status.message().to_owned(), Some(status));
                        }
                    }
                    Ok(None) => break ("register stream closed by the bridge".to_owned(), None),
                    Err(status) => {
                        let reason = format!("register stream failed: {}", status.message());
                        break (reason.clone(), Some(Status::new(status.code(), reason)));
                    }
                },
                _ = instance.wait_closed() => return,
            }
        };
        if stream_status.is_some() || !instance.is_draining() {
            // Broken protocol, a failed stream, or a stream that ended without a
            // drain: the instance's calls fail.
            warn!(
                event = "lost",
                service = core.service.name(),
                instance = instance.id(),
                registration = instance.registration,
                calls_in_flight = instance.calls_in_flight(),
                %reason,
                "instance lost without draining"
            );
            record(&core, Event::Lost);
        } else {
            info!(
                event = "ended",
                service = core.service.name(),
                instance = instance.id(),
                registration = instance.registration,
                %reason,
                "registration ended"
            );
            record(&core, Event::Drained);
        }
        end_registration(core.as_ref(), &instance, &reason, stream_status);
    }
}

/// Removes a registration and ends it: its calls fail UNAVAILABLE with
/// `reason`, its register stream ends with `stream_status`.
pub(crate) fn end_registration(
    core: &RouterCore,
    instance: &Instance,
    reason: &str,
    stream_status: Option<Status>,
) {
    core.registry.remove(instance.registration);
    if let Some(metrics) = &core.metrics {
        metrics.instance_gone(core.service.name(), instance.id());
    }
    instance.shut(
        &Status::unavailable(format!(
            "instance `{}` of `{}` went away: {reason}",
            instance.id(),
            core.service.name()
        )),
        stream_status,
    );
}

/// One task per router pings every instance each heartbeat interval and
/// closes registrations whose bridge answered no ping for longer than the
/// heartbeat timeout. Liveness is a pong echoing the latest ping, not any
/// frame: a bridge that heartbeats but stops reading its stream is evicted
/// too. (One sweeper instead of a timer per registration keeps idle
/// registrations small.) The pings are spread over the interval in slices, so
/// ten thousand instances do not all wake at once. It ends when the router is
/// dropped.
pub(crate) fn start_sweeper(core: &Arc<RouterCore>) {
    const SLICES: u64 = 10;
    let weak = Arc::downgrade(core);
    let period_of = |interval: Duration| (interval / SLICES as u32).max(Duration::from_millis(1));
    let mut period = period_of(core.config().heartbeat_interval);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.reset();
        let mut round = 0u64;
        loop {
            tick.tick().await;
            let Some(core) = weak.upgrade() else { return };
            // Heartbeat timing may be reconfigured at any time.
            let config = core.config();
            let timeout_ms = u64::from(millis(config.heartbeat_timeout));
            // A pong answers within the interval; half an interval more
            // allows for a late tick.
            let missed_ms = u64::from(millis(config.heartbeat_interval)).saturating_mul(3) / 2;
            let current = period_of(config.heartbeat_interval);
            if current != period {
                period = current;
                tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.reset();
            }
            round += 1;
            let slice = round % SLICES;
            for instance in core.registry.snapshot().iter() {
                if instance.unanswered_for_ms() > timeout_ms {
                    evict(&core, instance, timeout_ms);
                } else if instance.registration % SLICES == slice {
                    // The previous ping went out one interval ago: no pong
                    // since means the bridge missed it.
                    if instance.unanswered_for_ms() > missed_ms
                        && let Some(metrics) = &core.metrics
                    {
                        metrics.heartbeat_missed();
                    }
                    instance.ping();
                }
            }
        }
    });
}

/// Closes a registration whose bridge stopped answering pings.
fn evict(core: &RouterCore, instance: &Instance, timeout_ms: u64) {
    let queued = instance.queued_bytes();
    let stalled_ms = instance.out.write_idle_ms();
    let reason = if queued > 0 && stalled_ms > timeout_ms {
        format!(
            "its register stream is stalled: nothing written for {stalled_ms} ms with {queued} bytes queued (limit {})",
            instance.out.limit()
        )
    } else {
        format!("no answer to a ping for {timeout_ms} ms")
    };
    warn!(
        event = "evicted",
        service = core.service.name(),
        instance = instance.id(),
        registration = instance.registration,
        %reason,
        "evicting instance"
    );
    record(core, Event::Evicted);
    let status = Status::unavailable(format!(
        "registration of `{}` evicted: {reason}",
        instance.id()
    ));
    end_registration(core, instance, &reason, Some(status));
}

/// Dispatches one frame; an error ends the registration with that status.
fn handle(core: &RouterCore, instance: &Instance, frame: BridgeFrame) -> Result<(), Status> {
    match frame {
        BridgeFrame::Headers(h) => {
            respond(
                instance,
                h.call_id,
                CallEvent::Headers(h.metadata.unwrap_or_default()),
            );
        }
        BridgeFrame::Reply(p) => respond(instance, p.call_id, CallEvent::Message(p.message)),
        BridgeFrame::Chunk(c) => respond(instance, c.call_id, CallEvent::Chunk(c)),
        BridgeFrame::Trailers(t) => respond(instance, t.call_id, CallEvent::Trailers(t)),
        BridgeFrame::WindowUpdate(update) => {
            if let Some(slot) = instance.calls().get(&update.call_id) {
                slot.request_credit.grant(update.increment);
            }
        }
        BridgeFrame::Heartbeat(beat) => {
            instance.set_routers(beat.routers);
            let serving = beat.status != pb::ServingStatus::NotServing as i32;
            if serving != instance.is_serving() {
                instance.set_serving(serving);
                core.registry.touch();
            }
        }
        BridgeFrame::Drain(drain) => {
            info!(
                event = "draining",
                service = core.service.name(),
                instance = instance.id(),
                registration = instance.registration,
                calls_in_flight = instance.calls_in_flight(),
                reason = %drain.reason,
                "instance draining"
            );
            // The GoAway acknowledgement follows every Start already under
            // way, so the bridge knows no new call will come after it.
            instance.begin_drain();
            core.registry.touch();
        }
        BridgeFrame::Pong(pong) => instance.pong(pong.nonce),
        BridgeFrame::Hello(_) => {
            return Err(Status::invalid_argument(
                "protocol violation: a second Hello on one register stream",
            ));
        }
    }
    Ok(())
}

/// The kinds of response frame, for the order check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseFrame {
    Headers,
    Message,
    Trailers,
}

/// The phase a response frame of `kind` moves a call to, or what is wrong
/// with it arriving now.
fn next_phase(phase: ResponsePhase, kind: ResponseFrame) -> Result<ResponsePhase, &'static str> {
    use ResponsePhase::{AwaitingHeaders, Ended, Streaming};
    match (phase, kind) {
        (AwaitingHeaders, ResponseFrame::Headers) => Ok(Streaming),
        (AwaitingHeaders, ResponseFrame::Message) => Err("a response message before its headers"),
        (AwaitingHeaders | Streaming, ResponseFrame::Trailers) => Ok(Ended),
        (Streaming, ResponseFrame::Headers) => Err("a second Headers frame"),
        (Streaming, ResponseFrame::Message) => Ok(Streaming),
        (Ended, _) => Err("a frame after the call's trailers"),
    }
}

/// Hands a response frame to its call, enforcing the frame order and the
/// call's buffer limit (its window plus one frame and room for metadata): a
/// bridge that breaks either fails the call instead of growing the router's
/// memory.
fn respond(instance: &Instance, call_id: u64, event: CallEvent) {
    let size = event.size();
    let kind = match &event {
        CallEvent::Headers(_) => ResponseFrame::Headers,
        CallEvent::Trailers(_) => ResponseFrame::Trailers,
        _ => ResponseFrame::Message,
    };
    let violation = {
        let mut calls = instance.calls();
        let Some(slot) = calls.get_mut(&call_id) else {
            // The call already ended on the router's side (cancelled,
            // deadline): late frames are dropped.
            debug!(
                call_id,
                "frame for a call that is no longer active; dropped"
            );
            return;
        };
        match next_phase(slot.phase, kind) {
            Err(what) => Some(what.to_owned()),
            Ok(phase) => {
                if let Err(overrun) = slot.window.receive(size) {
                    Some(format!("response {overrun}"))
                } else {
                    slot.phase = phase;
                    if kind == ResponseFrame::Trailers {
                        // The response side forgets the call once it has
                        // passed the trailers on; a request sender waiting
                        // for credit must stop now.
                        slot.request_credit.close();
                    }
                    let _ = slot
                        .events
                        .send_detached_if_behind(event, CallEvent::detached);
                    None
                }
            }
        }
    };
    if let Some(what) = violation {
        fail_call(instance, call_id, &what);
    }
}

/// Fails a call whose bridge broke the protocol: the client gets INTERNAL
/// naming the instance, the bridge a `Cancel`.
fn fail_call(instance: &Instance, call_id: u64, what: &str) {
    warn!(
        instance = instance.id(),
        call_id,
        violation = what,
        "instance broke the call protocol"
    );
    if let Some(slot) = instance.calls().get(&call_id) {
        let _ = slot
            .events
            .send(CallEvent::Violation(Status::internal(format!(
                "instance `{}` broke the protocol: {what}",
                instance.id()
            ))));
    }
    instance.cancel_call(
        call_id,
        Code::Internal,
        &format!("protocol violation: {what}"),
    );
    instance.close_call(call_id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::FrameCodec;
    use tonic::codec::Codec;

    /// Thousands of registrations sit idle: what each keeps while idle is
    /// its `Instance` and its reader task, so neither may grow unnoticed
    /// (an `async fn` reader held the decoder twice; the call statistics'
    /// windows were inline). 576: 512 grew by the credentials a reload
    /// re-checks and the per-registration partial-response pool.
    #[tokio::test]
    async fn an_idle_registration_keeps_its_records_small() {
        assert!(
            std::mem::size_of::<Instance>() <= 576,
            "Instance is {} bytes",
            std::mem::size_of::<Instance>()
        );
        let core = Arc::new(RouterCore::new(
            crate::router::RouterConfig::default(),
            crate::router::service::ServiceTable::learning("pkg.Svc"),
        ));
        let (out, _stream) = Outbox::new(1 << 20);
        let instance = Arc::new(Instance::new(
            1,
            InstanceInfo::default(),
            out,
            1024,
            1024,
            2048,
        ));
        let frames = Streaming::new_request(
            FrameCodec::<RouterFrame, BridgeFrame>::default().decoder(),
            tonic::body::Body::empty(),
            None,
            None,
        );
        let decoder = std::mem::size_of_val(&frames);
        let reader = read_frames(core, instance, frames);
        assert!(
            std::mem::size_of_val(&reader) < 2 * decoder,
            "the reader ({} bytes) holds its decoder ({decoder} bytes) once",
            std::mem::size_of_val(&reader)
        );
        assert!(
            std::mem::size_of_val(&reader) <= 448,
            "the reader future is {} bytes",
            std::mem::size_of_val(&reader)
        );
    }
}
