//! The live registrations of one routed service.
//!
//! Readers (every call) load an immutable snapshot of the instance list
//! through an [`ArcSwap`]: no lock on the call path. Writers (register,
//! deregister) serialise on a mutex and publish a new snapshot.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::watch;
use tonic::Status;

use crate::clock::Millis;
use crate::flow::{PartialPool, RecvWindow, SendCredit};
use crate::pb;
use crate::queue::{QueueReceiver, queue};
use crate::router::outbound::Outbox;
use crate::wire::RouterFrame;

/// What a call's response side receives from the reader.
#[derive(Debug)]
pub(crate) enum CallEvent {
    /// The handler's response headers.
    Headers(pb::Metadata),
    /// One whole response message.
    Message(Bytes),
    /// A piece of a large response message.
    Chunk(pb::MessageChunk),
    /// The call's end.
    Trailers(pb::Trailers),
    /// The instance went away: the call failed with this status.
    Lost(Status),
    /// The instance broke the call's protocol: the call failed with this
    /// status (never retried elsewhere, unlike a loss).
    Violation(Status),
    /// The router ended the call itself (the client's request broke a
    /// limit) with this status; the bridge got `Cancel`.
    Failed(Status),
}

impl CallEvent {
    /// The event with its payload in an allocation of its own (no longer a
    /// slice of the register stream's read buffer).
    pub(crate) fn detached(self) -> Self {
        match self {
            CallEvent::Message(message) => CallEvent::Message(Bytes::copy_from_slice(&message)),
            CallEvent::Chunk(mut chunk) => {
                chunk.data = Bytes::copy_from_slice(&chunk.data);
                CallEvent::Chunk(chunk)
            }
            other => other,
        }
    }

    /// The bytes this event holds while it waits for the client's side, as
    /// counted against the call's buffer limit.
    pub(crate) fn size(&self) -> usize {
        use prost::Message as _;
        match self {
            CallEvent::Headers(metadata) => metadata.encoded_len(),
            CallEvent::Message(message) => message.len(),
            CallEvent::Chunk(chunk) => chunk.data.len(),
            CallEvent::Trailers(trailers) => trailers.encoded_len(),
            CallEvent::Lost(_) | CallEvent::Violation(_) | CallEvent::Failed(_) => 0,
        }
    }
}

/// Where a call's response stands, as the bridge's frames move it: headers
/// once, then messages, then trailers once. A frame out of this order is a
/// protocol violation that fails the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResponsePhase {
    /// Nothing received yet: headers or trailers (trailers-only) may come.
    AwaitingHeaders,
    /// Headers received: messages and then trailers may come.
    Streaming,
    /// Trailers received: nothing more may come.
    Ended,
}

/// The router's side of one call in flight on a registration.
#[derive(Debug)]
pub(crate) struct CallSlot {
    pub(crate) events: crate::queue::QueueSender<CallEvent>,
    pub(crate) request_credit: Arc<SendCredit>,
    /// Response bytes (messages, headers and trailers) received from the
    /// bridge and not yet taken by the client's side, against the window.
    pub(crate) window: Arc<RecvWindow>,
    /// Which frames the bridge may send next for this call.
    pub(crate) phase: ResponsePhase,
    /// Whether the call counts in `unary_outstanding`.
    pub(crate) unary: bool,
}

/// A call just registered on an instance.
pub(crate) struct OpenedCall {
    pub(crate) call_id: u64,
    pub(crate) events: QueueReceiver<CallEvent>,
    pub(crate) request_credit: Arc<SendCredit>,
    pub(crate) window: Arc<RecvWindow>,
}

/// Whether a registration's instance id may pass to a newcomer.
#[derive(Debug)]
pub(crate) enum Takeover {
    /// The newcomer replaces the registration.
    Allowed,
    /// Only if the registration does not answer a ping at once.
    IfSilent,
    /// Never: the id is bound to another credential.
    Refused(Status),
}

/// Which registration a newcomer found holding its id, so the registry
/// inserts it only if that one still holds it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Holder {
    /// Replace whichever registration holds the id.
    #[cfg(test)]
    Any,
    /// Only if the id is held by this registration (`None`: by none).
    Registration(Option<u64>),
}

/// What a bridge declared about itself in its `Hello`.
#[derive(Debug, Clone, Default)]
pub struct InstanceInfo {
    /// The instance's stable id.
    pub id: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Its weight for the weighted strategy (at least 1).
    pub weight: u32,
    /// The most calls it takes at once; 0 for no limit.
    pub max_concurrent_calls: u32,
    /// Routing keys it claims for pinned routing.
    pub routing_keys: Vec<String>,
    /// The credential it registered with (see
    /// [`Authorize`](crate::router::Authorize)); `None` without credentials. A
    /// reload may bind the id to another ([`Instance::identity`]).
    pub identity: Option<String>,
    /// The bridge process's random id from its `Hello` (empty from bridges
    /// that send none).
    pub incarnation: String,
}

/// One live registration: an instance and its register stream.
#[derive(Debug)]
pub struct Instance {
    pub(crate) registration: u64,
    info: InstanceInfo,
    connected_at: SystemTime,
    pub(crate) outstanding: AtomicU32,
    /// The calls of `outstanding` answered with one message.
    pub(crate) unary_outstanding: AtomicU32,
    serving: AtomicBool,
    draining: AtomicBool,
    /// Calls between their availability check and their `Start` frame.
    starting: AtomicUsize,
    /// Whether the drain acknowledgement went out.
    drain_acked: AtomicBool,
    closed: AtomicBool,
    closed_notify: tokio::sync::Notify,
    /// When the bridge last answered a ping (or registered).
    last_pong: Millis,
    /// The nonce of the latest ping; only its pong counts.
    ping_nonce: AtomicU64,
    /// Woken by every pong that counts.
    ponged: tokio::sync::Notify,
    /// Its record for outlier detection.
    pub(crate) outlier: crate::router::outlier::OutlierState,
    /// Its record against the per-instance rate limit.
    pub(crate) budget: crate::router::instance_budget::InstanceBudget,
    /// The register stream's outbound queue.
    pub(crate) out: Outbox,
    calls: Mutex<HashMap<u64, CallSlot>>,
    next_call_id: AtomicU64,
    /// Credit the bridge grants for each call's requests.
    pub(crate) request_window: u32,
    /// The largest frame payload the bridge accepts.
    pub(crate) max_frame: usize,
    /// The most response bytes one call may have buffered here: the router's
    /// window plus one frame plus room for metadata. A bridge exceeding it
    /// breaks flow control.
    pub(crate) response_limit: usize,
    /// The bytes of partly received response messages its calls hold
    /// together, against `RouterConfig::max_partial_response_bytes`.
    pub(crate) partial: Arc<PartialPool>,
    /// The methods the instance serves (from its `Hello.description`).
    served: crate::router::service::Served,
    /// Its finished calls: counts, rate, latency.
    pub(crate) stats: crate::router::call_stats::InstanceStats,
    /// What it proved when it registered, to check it again when the
    /// registration check changes.
    pub(crate) credentials: crate::router::recheck::Credentials,
    /// The credential the instance id is bound to now: the identity the
    /// registration check returned, at registration or at its latest
    /// re-check.
    identity: Mutex<Option<Arc<str>>>,
    /// The incarnation (bridge process) of the registration this one took
    /// the id over from, when that was another process: that process is
    /// refused, saying so, while this one lives.
    displaced: Option<Box<str>>,
    /// Whether its bridge takes `Peers` frames (`Hello.discovery`).
    pub(crate) discovery: bool,
    /// How many routers its bridge last reported holding a registration
    /// with (`Heartbeat.routers`); 0 when not reported.
    routers: AtomicU32,
}

impl Instance {
    pub(crate) fn new(
        registration: u64,
        info: InstanceInfo,
        out: Outbox,
        request_window: u32,
        max_frame: usize,
        response_limit: usize,
    ) -> Self {
        let identity = Mutex::new(info.identity.as_deref().map(Arc::from));
        Instance {
            registration,
            info,
            connected_at: SystemTime::now(),
            outstanding: AtomicU32::new(0),
            unary_outstanding: AtomicU32::new(0),
            serving: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            starting: AtomicUsize::new(0),
            drain_acked: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            closed_notify: tokio::sync::Notify::new(),
            last_pong: Millis::now(),
            ping_nonce: AtomicU64::new(0),
            ponged: tokio::sync::Notify::new(),
            outlier: Default::default(),
            budget: Default::default(),
            out,
            calls: Mutex::new(HashMap::new()),
            next_call_id: AtomicU64::new(1),
            request_window,
            max_frame,
            response_limit,
            partial: Arc::new(PartialPool::new(crate::defaults::MAX_PARTIAL_RESPONSE)),
            served: None,
            stats: Default::default(),
            identity,
            credentials: Default::default(),
            displaced: None,
            discovery: false,
            routers: AtomicU32::new(0),
        }
    }

    /// How many routers its bridge last reported holding a registration
    /// with, this one included (`Heartbeat.routers`); 0 when not reported.
    pub fn routers(&self) -> u32 {
        self.routers.load(Ordering::Relaxed)
    }

    /// Records the count of a heartbeat.
    pub(crate) fn set_routers(&self, routers: u32) {
        self.routers.store(routers, Ordering::Relaxed);
    }

    /// The same instance, its bridge taking `Peers` frames or not.
    pub(crate) fn with_discovery(mut self, discovery: bool) -> Self {
        self.discovery = discovery;
        self
    }

    /// The same instance, with the credentials its registration presented.
    pub(crate) fn with_credentials(
        mut self,
        credentials: crate::router::recheck::Credentials,
    ) -> Self {
        self.credentials = credentials;
        self
    }

    /// The same instance, taking the id over from the bridge process
    /// `incarnation` (another process than its own).
    pub(crate) fn displacing(mut self, incarnation: &str) -> Self {
        if !incarnation.is_empty() && incarnation != self.info.incarnation {
            self.displaced = Some(incarnation.into());
        }
        self
    }

    /// The credential the instance id is bound to now (see
    /// [`Authorize`](crate::router::Authorize)); `None` without one.
    pub fn identity(&self) -> Option<Arc<str>> {
        self.identity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Binds the id to `identity`, the result of a re-check.
    pub(crate) fn set_identity(&self, identity: Option<String>) {
        *self.identity.lock().unwrap_or_else(|e| e.into_inner()) = identity.map(Arc::from);
    }

    /// The same instance, holding at most `limit` bytes of partly received
    /// response messages across its calls.
    pub(crate) fn with_partial_limit(mut self, limit: usize) -> Self {
        self.partial = Arc::new(PartialPool::new(limit));
        self
    }

    /// The same instance, serving only the methods in `served`.
    pub(crate) fn with_served(mut self, served: crate::router::service::Served) -> Self {
        self.served = served;
        self
    }

    /// Whether the instance takes calls of the method with oneof tag `tag`.
    pub fn serves(&self, tag: u32) -> bool {
        crate::router::service::serves(&self.served, tag)
    }

    /// What the instance declared about itself.
    pub fn info(&self) -> &InstanceInfo {
        &self.info
    }

    /// The instance's id.
    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// When it registered.
    pub fn connected_at(&self) -> SystemTime {
        self.connected_at
    }

    /// Its finished calls: counts, calls per second, latency percentiles.
    pub fn call_stats(&self) -> crate::router::CallStats {
        self.stats.snapshot()
    }

    /// Calls routed to it and not finished.
    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Calls answered with one message (unary, client-streaming) routed to it
    /// and not finished: the load power of two choices compares by default.
    pub fn unary_outstanding(&self) -> u32 {
        self.unary_outstanding.load(Ordering::Relaxed)
    }

    /// Whether it reports itself serving.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    /// Whether it announced a drain.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether the registration is over.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Waits until the registration is over.
    pub(crate) async fn wait_closed(&self) {
        loop {
            let closed = self.closed_notify.notified();
            if self.is_closed() {
                return;
            }
            closed.await;
        }
    }

    /// Whether it can take a new call now: open, serving, not draining, under
    /// its concurrency limit and not congested (its register stream's
    /// outbound queue under its byte limit).
    pub fn is_available(&self) -> bool {
        !self.is_closed()
            && self.is_serving()
            && !self.is_draining()
            && (self.info.max_concurrent_calls == 0
                || self.outstanding() < self.info.max_concurrent_calls)
            && !self.out.is_congested()
            && !self.outlier.is_ejected_now()
    }

    /// Whether outlier detection has ejected the instance for now.
    pub fn is_ejected(&self) -> bool {
        self.outlier.is_ejected_now()
    }

    /// How long its current ejection still lasts; `None` when it is not
    /// ejected.
    pub fn ejection_remaining(&self) -> Option<std::time::Duration> {
        self.outlier.remaining(crate::clock::now_ms())
    }

    /// How many times outlier detection has ejected it.
    pub fn times_ejected(&self) -> u32 {
        self.outlier.times_ejected()
    }

    /// Bytes queued for this instance's register stream and not yet written:
    /// at most about the router's `max_queued_bytes` while the bridge reads.
    pub fn queued_bytes(&self) -> usize {
        self.out.queued()
    }

    /// Whether the register stream's outbound queue is over its byte limit
    /// (the bridge is not reading fast enough); a congested instance is not
    /// picked for new calls.
    pub fn is_congested(&self) -> bool {
        self.out.is_congested()
    }

    pub(crate) fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Relaxed);
    }

    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Enters the start gate before sending a call's `Start`; false when the
    /// instance is draining (the call must go elsewhere).
    ///
    /// With [`Instance::begin_drain`] this guarantees the drain
    /// acknowledgement (`GoAway`) is written after every `Start` that passed
    /// the gate, so a draining bridge that received `GoAway` knows no call can
    /// follow it (a Dekker-style handshake over sequentially consistent
    /// atomics).
    pub(crate) fn begin_start(&self) -> bool {
        self.starting.fetch_add(1, Ordering::SeqCst);
        if self.draining.load(Ordering::SeqCst) {
            self.end_start();
            return false;
        }
        true
    }

    /// Leaves the start gate, after the `Start` frame was queued.
    pub(crate) fn end_start(&self) {
        if self.starting.fetch_sub(1, Ordering::SeqCst) == 1 && self.draining.load(Ordering::SeqCst)
        {
            self.ack_drain();
        }
    }

    /// Marks the instance draining; acknowledges once no call is between its
    /// pick and its `Start`.
    pub(crate) fn begin_drain(&self) {
        self.set_draining();
        if self.starting.load(Ordering::SeqCst) == 0 {
            self.ack_drain();
        }
    }

    fn ack_drain(&self) {
        if !self.drain_acked.swap(true, Ordering::SeqCst) {
            self.send(RouterFrame::GoAway(pb::GoAway {
                reason: "drain acknowledged".into(),
                refused: false,
            }));
        }
    }

    /// Sends a liveness ping ahead of any queued data, with a fresh nonce:
    /// only the pong that echoes it proves the bridge reads its stream.
    pub(crate) fn ping(&self) {
        let nonce = rand::random::<u64>();
        self.ping_nonce.store(nonce, Ordering::Relaxed);
        if !self.is_closed() {
            let _ = self.out.send_urgent(RouterFrame::Ping(pb::Ping { nonce }));
        }
    }

    /// Records a pong; it proves liveness only when it echoes the latest ping.
    pub(crate) fn pong(&self, nonce: u64) {
        if nonce == self.ping_nonce.load(Ordering::Relaxed) {
            self.last_pong.touch();
            self.ponged.notify_waiters();
        }
    }

    /// Whether a new registration of the same instance id may replace this
    /// one. When this one is bound to a credential, only the same
    /// credential may take the id over, even once this one goes silent
    /// (until it is evicted). Then, whatever the credential, the newcomer
    /// replaces it only when it comes from the same bridge process (its
    /// incarnation: a reconnect) or when this registration is stale
    /// (closed, or its last ping unanswered for longer than
    /// `stale_after_ms`); a registration that looks alive must answer a ping
    /// to keep its id. A credential proves who may hold the id, not which
    /// of two processes holding it is alive: two live processes with one
    /// token and id would otherwise replace each other forever.
    pub(crate) fn takeover_by(&self, newcomer: &InstanceInfo, stale_after_ms: u64) -> Takeover {
        if let Some(owner) = self.identity()
            && newcomer.identity.as_deref() != Some(&*owner)
        {
            return Takeover::Refused(Status::permission_denied(format!(
                "instance id `{}` is registered with another credential; only that credential may take it over",
                self.info.id
            )));
        }
        let same_process =
            !newcomer.incarnation.is_empty() && newcomer.incarnation == self.info.incarnation;
        let stale = self.is_closed() || self.unanswered_for_ms() > stale_after_ms;
        if same_process || stale {
            Takeover::Allowed
        } else {
            Takeover::IfSilent
        }
    }

    /// The refusal of `newcomer`, whose id this live registration holds:
    /// ABORTED when the newcomer is the process this registration took the
    /// id over from, ALREADY_EXISTS otherwise.
    pub(crate) fn refusal_for(&self, newcomer: &InstanceInfo) -> Status {
        let connected = self
            .connected_at
            .elapsed()
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if !newcomer.incarnation.is_empty()
            && self.displaced.as_deref() == Some(newcomer.incarnation.as_str())
        {
            return Status::aborted(format!(
                "instance id `{}` was taken over {connected} s ago by another bridge process, \
                 when this process's registration stopped answering pings; this process is \
                 refused while the new owner lives (it answers pings): stop it, or give it its \
                 own instance id",
                self.info.id
            ));
        }
        self.already_exists()
    }

    /// The refusal of a newcomer whose id this live registration holds.
    pub(crate) fn already_exists(&self) -> Status {
        Status::already_exists(format!(
            "instance id `{}` is already registered: it is held by a live registration \
             (another bridge process, connected {} s ago, answering pings); give every \
             process its own instance id",
            self.info.id,
            self.connected_at
                .elapsed()
                .map(|d| d.as_secs())
                .unwrap_or(0)
        ))
    }

    /// Whether the bridge answers a ping sent now within `within`.
    pub(crate) async fn answers_ping(&self, within: Duration) -> bool {
        let ponged = self.ponged.notified();
        tokio::pin!(ponged);
        ponged.as_mut().enable();
        self.ping();
        tokio::select! {
            answered = tokio::time::timeout(within, ponged) => answered.is_ok(),
            () = self.wait_closed() => false,
        }
    }

    /// Milliseconds since the bridge last proved it reads its stream (a pong
    /// to the latest ping, or its registration).
    pub(crate) fn unanswered_for_ms(&self) -> u64 {
        self.last_pong.elapsed_ms()
    }

    pub(crate) fn calls(&self) -> MutexGuard<'_, HashMap<u64, CallSlot>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every critical section is a single insert/remove/get).
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls in flight on this registration (router-side state).
    pub fn calls_in_flight(&self) -> usize {
        self.calls().len()
    }

    /// Sends a frame to the bridge; false when the register stream is gone.
    pub(crate) fn send(&self, frame: RouterFrame) -> bool {
        !self.is_closed() && self.out.send(frame).is_ok()
    }

    /// Sends several frames in one batch (one wake of the writer, one write);
    /// false when the register stream is gone.
    pub(crate) fn send_all<const N: usize>(&self, frames: [Option<RouterFrame>; N]) -> bool {
        !self.is_closed() && self.out.send_all(frames)
    }

    /// Waits until the register stream's queue is under its limit (or the
    /// registration closes): request pumps call it before each message, so
    /// one registration's queue stays bounded whatever windows the bridge
    /// declared.
    pub(crate) async fn writable(&self) {
        self.out.space(self.wait_closed()).await;
    }

    /// Tells the bridge a call is over: drops the call's frames still queued
    /// and sends `Cancel`, unless the call's `Start` had not left yet (then
    /// the bridge never hears of it).
    pub(crate) fn cancel_call(&self, call_id: u64, code: tonic::Code, reason: &str) {
        if !self.out.purge_call(call_id) {
            self.send(RouterFrame::Cancel(pb::Cancel {
                call_id,
                code: code as i32,
                reason: reason.to_owned(),
            }));
        }
    }

    /// Ends a call the router stops itself (the client's request broke a
    /// limit): the client's side gets `status`, the bridge `Cancel` (or
    /// nothing, if the call's `Start` had not left yet).
    pub(crate) fn end_call(&self, call_id: u64, status: Status) {
        if let Some(slot) = self.calls().get(&call_id) {
            let _ = slot.events.send(CallEvent::Failed(status.clone()));
        }
        self.cancel_call(call_id, status.code(), status.message());
    }

    /// Registers a new call and returns its id, its events and its request
    /// credit.
    pub(crate) fn open_call(&self, unary: bool) -> OpenedCall {
        let call_id = self.next_call_id.fetch_add(1, Ordering::Relaxed);
        let (events, rx) = queue();
        let request_credit = Arc::new(SendCredit::new(self.request_window));
        let window = Arc::new(RecvWindow::new(self.response_limit));
        self.calls().insert(
            call_id,
            CallSlot {
                events,
                request_credit: request_credit.clone(),
                window: window.clone(),
                phase: ResponsePhase::AwaitingHeaders,
                unary,
            },
        );
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        if unary {
            self.unary_outstanding.fetch_add(1, Ordering::Relaxed);
        }
        OpenedCall {
            call_id,
            events: rx,
            request_credit,
            window,
        }
    }

    /// The bytes of partly received (chunked) response messages the router
    /// holds for this registration's calls, together: at most
    /// `RouterConfig::max_partial_response_bytes` (the metric
    /// `grpc_router_partial_response_bytes` adds them up per service).
    pub fn partial_response_bytes(&self) -> usize {
        self.partial.held()
    }

    /// Response bytes the router holds for each call in flight, received from
    /// the bridge and not yet taken by the client's connection: what a slow
    /// reader costs (the metric `grpc_router_response_buffer_bytes` adds them
    /// up per service).
    pub fn buffered_response_bytes(&self) -> Vec<usize> {
        self.calls()
            .values()
            .map(|slot| slot.window.buffered())
            .collect()
    }

    /// [`Instance::buffered_response_bytes`] added up, without a list: what
    /// a metrics scrape reads for each instance.
    pub(crate) fn buffered_response_total(&self) -> usize {
        self.calls()
            .values()
            .map(|slot| slot.window.buffered())
            .sum()
    }

    /// Forgets a call; true when it was still registered.
    pub(crate) fn close_call(&self, call_id: u64) -> bool {
        let slot = self.calls().remove(&call_id);
        match slot {
            Some(slot) => {
                self.forget(&slot);
                true
            }
            None => false,
        }
    }

    /// Undoes a call's accounting once its slot is removed.
    fn forget(&self, slot: &CallSlot) {
        slot.request_credit.close();
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
        if slot.unary {
            self.unary_outstanding.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Ends the registration: every call in flight fails with `status`, the
    /// frames still queued are freed and the register stream ends with
    /// `stream_status` (`None`: cleanly), which tells the bridge why.
    pub(crate) fn shut(&self, status: &Status, stream_status: Option<Status>) {
        self.shut_after(status, None, stream_status);
    }

    /// [`Instance::shut`], writing `last` (a `GoAway`) to the bridge before
    /// its register stream ends.
    pub(crate) fn shut_after(
        &self,
        status: &Status,
        last: Option<RouterFrame>,
        stream_status: Option<Status>,
    ) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.closed_notify.notify_waiters();
        let calls: Vec<(u64, CallSlot)> = self.calls().drain().collect();
        for (_, slot) in calls {
            self.forget(&slot);
            let _ = slot.events.send(CallEvent::Lost(status.clone()));
        }
        self.out.close_after(last, stream_status);
    }
}

/// An immutable view of the live instances, with indexes by id, by routing
/// key and by label, each built on its first use (once per change of the
/// registry, and only the ones picks ask for), so pinned and label-selected
/// picks stay cheap with thousands of instances.
#[derive(Debug, Default)]
pub struct Snapshot {
    instances: Vec<Arc<Instance>>,
    by_id: OnceLock<HashMap<String, usize>>,
    by_routing_key: OnceLock<HashMap<String, usize>>,
    by_label: OnceLock<HashMap<String, HashMap<String, Vec<usize>>>>,
}

impl std::ops::Deref for Snapshot {
    type Target = [Arc<Instance>];

    fn deref(&self) -> &[Arc<Instance>] {
        &self.instances
    }
}

impl Snapshot {
    /// A snapshot of `instances`, indexed on first use.
    pub(crate) fn new(instances: Vec<Arc<Instance>>) -> Self {
        Snapshot {
            instances,
            ..Snapshot::default()
        }
    }

    /// The instance registered as `id`.
    pub fn by_id(&self, id: &str) -> Option<&Arc<Instance>> {
        self.by_id
            .get_or_init(|| {
                self.instances
                    .iter()
                    .enumerate()
                    .map(|(i, instance)| (instance.id().to_owned(), i))
                    .collect()
            })
            .get(id)
            .map(|&i| &self.instances[i])
    }

    /// The instance that claimed the routing key `key` in its `Hello` (the
    /// latest registration wins when several claim it).
    pub fn by_routing_key(&self, key: &str) -> Option<&Arc<Instance>> {
        self.by_routing_key
            .get_or_init(|| {
                let mut index = HashMap::new();
                for (i, instance) in self.instances.iter().enumerate() {
                    for key in &instance.info().routing_keys {
                        index.insert(key.clone(), i);
                    }
                }
                index
            })
            .get(key)
            .map(|&i| &self.instances[i])
    }

    fn by_label(&self) -> &HashMap<String, HashMap<String, Vec<usize>>> {
        self.by_label.get_or_init(|| {
            let mut index: HashMap<String, HashMap<String, Vec<usize>>> = HashMap::new();
            for (i, instance) in self.instances.iter().enumerate() {
                for (k, v) in &instance.info().labels {
                    index
                        .entry(k.clone())
                        .or_default()
                        .entry(v.clone())
                        .or_default()
                        .push(i);
                }
            }
            index
        })
    }

    /// The instances carrying every label pair of `labels`.
    pub fn with_labels(&self, labels: &[(&str, &str)]) -> Vec<Arc<Instance>> {
        let index = self.by_label();
        let mut lists = Vec::with_capacity(labels.len());
        for (k, v) in labels {
            match index.get(*k).and_then(|values| values.get(*v)) {
                Some(list) => lists.push(list),
                None => return Vec::new(),
            }
        }
        lists.sort_by_key(|l| l.len());
        let Some((smallest, rest)) = lists.split_first() else {
            return self.instances.clone();
        };
        smallest
            .iter()
            .filter(|i| rest.iter().all(|l| l.binary_search(i).is_ok()))
            .map(|&i| self.instances[i].clone())
            .collect()
    }
}

/// The live instances of one service.
#[derive(Debug)]
pub struct Registry {
    service: Arc<str>,
    instances: ArcSwap<Snapshot>,
    write: Mutex<()>,
    pending_removals: Mutex<HashSet<u64>>,
    changed: watch::Sender<usize>,
    next_registration: AtomicU64,
}

impl Registry {
    /// An empty registry for `service`.
    pub(crate) fn new(service: impl Into<Arc<str>>) -> Self {
        Registry {
            service: service.into(),
            instances: ArcSwap::from_pointee(Snapshot::default()),
            write: Mutex::new(()),
            pending_removals: Mutex::new(HashSet::new()),
            changed: watch::Sender::new(0),
            next_registration: AtomicU64::new(1),
        }
    }

    /// The service's full name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// A snapshot of the live instances.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.instances.load_full()
    }

    /// How many instances are registered.
    pub fn len(&self) -> usize {
        self.instances.load().len()
    }

    /// Whether any instance can take calls of the service (open, serving,
    /// not draining): what its `grpc.health.v1` status reports.
    pub fn is_serving(&self) -> bool {
        self.snapshot()
            .iter()
            .any(|i| i.is_serving() && !i.is_draining() && !i.is_closed())
    }

    /// Whether no instance is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until `pred(number of instances)` holds.
    pub async fn wait_until(&self, mut pred: impl FnMut(usize) -> bool) {
        let mut rx = self.changed.subscribe();
        let _ = rx.wait_for(|n| pred(*n)).await;
    }

    /// Wakes the watchers of [`Registry::changed`] without a change in the
    /// set of instances (an instance's serving or draining state changed).
    pub(crate) fn touch(&self) {
        self.changed.send_modify(|_| {});
    }

    /// A receiver that sees every change of the instances or their serving
    /// and draining states (the value is the number of instances).
    pub fn changed(&self) -> watch::Receiver<usize> {
        self.changed.subscribe()
    }

    pub(crate) fn next_registration(&self) -> u64 {
        self.next_registration.fetch_add(1, Ordering::Relaxed)
    }

    fn write(&self) -> MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `instance`; a live registration with the same id is replaced and
    /// returned, so the caller can close it.
    #[cfg(test)]
    pub(crate) fn insert(&self, instance: Arc<Instance>) -> Option<Arc<Instance>> {
        self.insert_replacing(instance, Holder::Any)
            .unwrap_or_default()
    }

    /// Adds `instance` if its id is held by `holder` now (as the takeover
    /// check found it): the registration replaced, if any, is returned so
    /// the caller can close it. When another registration took the id
    /// meanwhile, nothing changes and that registration is the error: so
    /// newcomers racing for a lost owner's id take it over once.
    pub(crate) fn insert_replacing(
        &self,
        instance: Arc<Instance>,
        holder: Holder,
    ) -> Result<Option<Arc<Instance>>, Arc<Instance>> {
        let guard = self.write();
        let current = self.instances.load_full();
        let found = current
            .iter()
            .find(|existing| existing.id() == instance.id() && !existing.is_closed());
        if let (Holder::Registration(expected), Some(found)) = (holder, found)
            && expected != Some(found.registration)
        {
            return Err(found.clone());
        }
        let removed = std::mem::take(&mut *self.pending());
        let mut next: Vec<Arc<Instance>> = Vec::with_capacity(current.len() + 1);
        let mut replaced = None;
        for existing in current.iter() {
            if existing.id() == instance.id() {
                replaced = Some(existing.clone());
            } else if !removed.contains(&existing.registration) {
                next.push(existing.clone());
            }
        }
        next.push(instance);
        self.publish(next);
        drop(guard);
        self.apply_pending();
        Ok(replaced)
    }

    /// Removes the registration `registration`, if still present.
    ///
    /// Removals are combined: a removal that finds another change in progress
    /// leaves its registration to that change, which applies every removal
    /// queued while it rebuilt the snapshot. Ten thousand bridges leaving at
    /// once then cost a few rebuilds, not ten thousand (each is O(instances)),
    /// and no worker thread blocks on the lock. Either way the removal is
    /// published before the change in progress releases the lock; until then
    /// the instance is already closed, so no call starts on it.
    pub(crate) fn remove(&self, registration: u64) {
        self.remove_all([registration]);
    }

    /// Removes every registration of `registrations` still present, in one
    /// change.
    pub(crate) fn remove_all(&self, registrations: impl IntoIterator<Item = u64>) {
        self.pending().extend(registrations);
        self.apply_pending();
    }

    fn pending(&self) -> MutexGuard<'_, HashSet<u64>> {
        self.pending_removals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Applies the queued removals unless another change holds the lock (it
    /// applies them before it releases the lock, see [`Registry::remove`]).
    fn apply_pending(&self) {
        loop {
            let guard = match self.write.try_lock() {
                Ok(guard) => guard,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return,
            };
            let removed = std::mem::take(&mut *self.pending());
            if !removed.is_empty() {
                let current = self.instances.load_full();
                if current.iter().any(|i| removed.contains(&i.registration)) {
                    let next: Vec<Arc<Instance>> = current
                        .iter()
                        .filter(|i| !removed.contains(&i.registration))
                        .cloned()
                        .collect();
                    self.publish(next);
                }
            }
            drop(guard);
            // A removal queued after the take found the lock held and left
            // its registration to us: look again now that the lock is free.
            if self.pending().is_empty() {
                return;
            }
        }
    }

    /// Publishes `next` as the live instances and wakes the watchers.
    fn publish(&self, next: Vec<Arc<Instance>>) {
        let len = next.len();
        self.instances.store(Arc::new(Snapshot::new(next)));
        self.changed.send_replace(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn instance() -> (Instance, crate::router::outbound::OutboundStream) {
        let (out, stream) = Outbox::new(1 << 20);
        let info = InstanceInfo {
            id: "i".into(),
            labels: HashMap::new(),
            weight: 1,
            max_concurrent_calls: 0,
            routing_keys: vec![],
            ..InstanceInfo::default()
        };
        (Instance::new(1, info, out, 1024, 1024, 2048), stream)
    }

    fn numbered(registration: u64) -> Arc<Instance> {
        let (out, stream) = Outbox::new(1 << 20);
        std::mem::forget(stream);
        let info = InstanceInfo {
            id: format!("i-{registration}"),
            labels: HashMap::new(),
            weight: 1,
            max_concurrent_calls: 0,
            routing_keys: vec![],
            ..InstanceInfo::default()
        };
        Arc::new(Instance::new(registration, info, out, 1024, 1024, 2048))
    }

    fn registered(identity: Option<&str>, incarnation: &str) -> Instance {
        let (out, stream) = Outbox::new(1 << 20);
        std::mem::forget(stream);
        let info = InstanceInfo {
            id: "dup".into(),
            identity: identity.map(str::to_owned),
            incarnation: incarnation.into(),
            ..InstanceInfo::default()
        };
        Instance::new(1, info, out, 1024, 1024, 2048)
    }

    fn newcomer(identity: Option<&str>, incarnation: &str) -> InstanceInfo {
        InstanceInfo {
            id: "dup".into(),
            identity: identity.map(str::to_owned),
            incarnation: incarnation.into(),
            ..InstanceInfo::default()
        }
    }

    #[tokio::test]
    async fn an_id_bound_to_a_credential_passes_only_to_that_credential_even_when_silent() {
        let owner = registered(Some("token a"), "p1");
        // The same credential from another process: only if the owner is
        // silent (a credential does not say which process is alive).
        assert!(matches!(
            owner.takeover_by(&newcomer(Some("token a"), "p2"), 10_000),
            Takeover::IfSilent
        ));
        assert!(matches!(
            owner.takeover_by(&newcomer(Some("token a"), "p1"), 10_000),
            Takeover::Allowed
        ));
        owner.shut(&Status::unavailable("gone quiet"), None);
        assert!(matches!(
            owner.takeover_by(&newcomer(Some("token a"), "p2"), 10_000),
            Takeover::Allowed
        ));
        for intruder in [newcomer(Some("token b"), "p1"), newcomer(None, "p1")] {
            match owner.takeover_by(&intruder, 0) {
                Takeover::Refused(status) => {
                    assert_eq!(status.code(), tonic::Code::PermissionDenied);
                    assert!(status.message().contains("`dup`"), "{status:?}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn without_credentials_a_live_id_passes_only_to_its_own_process_or_when_stale() {
        let owner = registered(None, "p1");
        assert!(matches!(
            owner.takeover_by(&newcomer(None, "p1"), 10_000),
            Takeover::Allowed
        ));
        assert!(matches!(
            owner.takeover_by(&newcomer(None, "p2"), 10_000),
            Takeover::IfSilent
        ));
        // Bridges that send no incarnation are never taken for one process.
        assert!(matches!(
            registered(None, "").takeover_by(&newcomer(None, ""), 10_000),
            Takeover::IfSilent
        ));
        owner.shut(&Status::unavailable("closed"), None);
        assert!(matches!(
            owner.takeover_by(&newcomer(None, "p2"), 10_000),
            Takeover::Allowed
        ));
        assert_eq!(owner.already_exists().code(), tonic::Code::AlreadyExists);
    }

    #[tokio::test]
    async fn the_process_an_id_was_taken_from_is_refused_as_replaced_and_others_as_duplicates() {
        let (out, stream) = Outbox::new(1 << 20);
        std::mem::forget(stream);
        let info = InstanceInfo {
            id: "dup".into(),
            incarnation: "p2".into(),
            ..InstanceInfo::default()
        };
        let new_owner = Instance::new(2, info, out, 1024, 1024, 2048).displacing("p1");
        let comeback = new_owner.refusal_for(&newcomer(None, "p1"));
        assert_eq!(comeback.code(), tonic::Code::Aborted);
        assert!(
            comeback.message().contains("taken over")
                && comeback.message().contains("while the new owner lives"),
            "{comeback:?}"
        );
        let other = new_owner.refusal_for(&newcomer(None, "p3"));
        assert_eq!(other.code(), tonic::Code::AlreadyExists);
        assert!(
            other.message().contains("held by a live registration"),
            "{other:?}"
        );
        // Its own process's reconnect displaces nobody.
        assert!(registered(None, "p1").displacing("p1").displaced.is_none());
    }

    #[test]
    fn an_insert_for_a_holder_that_changed_meanwhile_is_refused() {
        let registry = Registry::new("svc");
        let first = numbered(1);
        registry.insert(first);
        let same_id = |registration| {
            let (out, stream) = Outbox::new(1 << 20);
            std::mem::forget(stream);
            let info = InstanceInfo {
                id: "i-1".into(),
                ..InstanceInfo::default()
            };
            Arc::new(Instance::new(registration, info, out, 1024, 1024, 2048))
        };
        // Two newcomers both found registration 1 holding the id.
        let replaced = registry
            .insert_replacing(same_id(2), Holder::Registration(Some(1)))
            .expect("the first takes it over");
        assert_eq!(replaced.map(|r| r.registration), Some(1));
        let refused = registry
            .insert_replacing(same_id(3), Holder::Registration(Some(1)))
            .expect_err("the second finds another holder");
        assert_eq!(refused.registration, 2);
        // One that found no holder is refused once someone registered.
        assert!(
            registry
                .insert_replacing(same_id(4), Holder::Registration(None))
                .is_err()
        );
        let ids: Vec<u64> = registry.snapshot().iter().map(|i| i.registration).collect();
        assert_eq!(ids, vec![2]);
    }

    #[tokio::test]
    async fn a_bridge_that_does_not_read_its_stream_does_not_answer_the_takeover_ping() {
        let owner = registered(None, "p1");
        assert!(!owner.answers_ping(Duration::from_millis(20)).await);
    }

    #[test]
    fn removals_from_many_threads_at_once_are_all_published() {
        let registry = Arc::new(Registry::new("svc"));
        for n in 0..2_000 {
            registry.insert(numbered(n));
        }
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let registry = registry.clone();
                std::thread::spawn(move || {
                    for n in (t..1_600).step_by(8) {
                        registry.remove(n);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        // Every removal returned only once it was published or left to a
        // change that published it before releasing the lock: once all the
        // threads are done, nothing is pending.
        assert_eq!(registry.len(), 400);
        assert!(registry.snapshot().iter().all(|i| i.registration >= 1_600));
        assert!(registry.pending().is_empty());
    }

    #[test]
    fn an_insert_applies_the_removals_queued_while_it_held_the_lock() {
        let registry = Registry::new("svc");
        registry.insert(numbered(1));
        registry.insert(numbered(2));
        {
            let _held = registry.write();
            registry.remove(1);
            assert_eq!(registry.len(), 2, "left to the change in progress");
        }
        registry.insert(numbered(3));
        let ids: Vec<u64> = registry.snapshot().iter().map(|i| i.registration).collect();
        assert_eq!(ids, vec![2, 3]);
        registry.remove_all([2, 3, 99]);
        assert!(registry.is_empty());
    }

    fn start(call_id: u64) -> RouterFrame {
        RouterFrame::Start(pb::CallStart {
            call_id,
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn the_drain_acknowledgement_follows_every_start_that_passed_the_gate() {
        let (instance, mut stream) = instance();
        // A call between its pick and its Start when the drain arrives.
        assert!(instance.begin_start());
        instance.begin_drain();
        assert!(
            !instance.begin_start(),
            "no call passes the gate once draining"
        );
        assert!(instance.send(start(1)));
        instance.end_start();
        assert_eq!(stream.next().await.and_then(Result::ok), Some(start(1)));
        assert!(matches!(
            stream.next().await,
            Some(Ok(RouterFrame::GoAway(_)))
        ));
    }

    #[tokio::test]
    async fn a_drain_with_no_call_starting_is_acknowledged_at_once_and_only_once() {
        let (instance, mut stream) = instance();
        instance.begin_drain();
        instance.begin_drain();
        assert!(!instance.begin_start());
        assert!(matches!(
            stream.next().await,
            Some(Ok(RouterFrame::GoAway(_)))
        ));
        instance.shut(&Status::unavailable("test over"), None);
        assert!(stream.next().await.is_none(), "one acknowledgement only");
    }
}
