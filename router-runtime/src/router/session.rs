//! One registration on the router: the `Register` stream of one bridge.
//!
//! The reader never waits on a call: every frame is handed to its call's
//! unbounded queue (bounded in practice by the call's credit window), so one
//! slow client never stalls the other calls on the same instance.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use futures_util::future::BoxFuture;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::RouterCore;
use super::registry::{CallEvent, Instance, InstanceInfo, Outbound};
use crate::pb;
use crate::queue::{QueueReceiver, queue_compact};
use crate::wire::{BridgeFrame, RouterFrame};

/// The protocol versions this router speaks.
pub(crate) const PROTOCOL_VERSION: i32 = pb::ProtocolVersion::ProtocolVersion1 as i32;

/// Handles `Register` calls.
pub(crate) struct Register {
    pub(crate) core: Arc<RouterCore>,
}

/// The router's frames to one bridge, ending when the registration closes.
pub(crate) struct OutboundStream {
    rx: QueueReceiver<Outbound>,
    done: bool,
}

impl Stream for OutboundStream {
    type Item = Result<RouterFrame, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Outbound::Frame(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Outbound::Close(status))) => {
                self.done = true;
                Poll::Ready(status.map(Err))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl tonic::server::StreamingService<BridgeFrame> for Register {
    type Response = RouterFrame;
    type ResponseStream = OutboundStream;
    type Future = BoxFuture<'static, Result<Response<OutboundStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<BridgeFrame>>) -> Self::Future {
        let core = self.core.clone();
        Box::pin(async move {
            let (metadata, _, frames) = request.into_parts();
            accept(core, metadata, frames).await
        })
    }
}

/// Validates the bridge's `Hello`, registers the instance and starts its
/// reader.
async fn accept(
    core: Arc<RouterCore>,
    metadata: tonic::metadata::MetadataMap,
    mut frames: Streaming<BridgeFrame>,
) -> Result<Response<OutboundStream>, Status> {
    let first = tokio::time::timeout(core.config.hello_timeout, frames.message())
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
    if hello.service != core.descriptor.name {
        return Err(Status::failed_precondition(format!(
            "this register endpoint serves `{}`, not `{}`",
            core.descriptor.name, hello.service
        )));
    }
    if hello.instance_id.is_empty() {
        return Err(Status::invalid_argument(
            "Hello.instance_id must not be empty",
        ));
    }
    if let Some(authorize) = &core.config.authorize {
        authorize(&metadata, &hello)?;
    }

    // Register streams sit idle most of the time: their queue frees its
    // memory whenever it drains.
    let (out, rx) = queue_compact();
    let info = InstanceInfo {
        id: hello.instance_id.clone(),
        labels: hello.labels.into_iter().collect(),
        weight: hello.weight.max(1),
        max_concurrent_calls: hello.max_concurrent_calls,
        routing_keys: hello.routing_keys,
    };
    let request_window = if hello.initial_window == 0 {
        64 * 1024
    } else {
        hello.initial_window
    };
    let max_frame = usize::try_from(hello.max_frame_size.max(1024)).unwrap_or(usize::MAX);
    let instance = Arc::new(Instance::new(
        core.registry.next_registration(),
        info,
        out,
        request_window,
        max_frame,
        usize::try_from(core.config.initial_window)
            .unwrap_or(usize::MAX)
            .saturating_add(usize::try_from(core.config.max_frame_size).unwrap_or(usize::MAX)),
    ));
    instance.touch();
    let welcome = pb::Welcome {
        protocol_version: PROTOCOL_VERSION,
        router_id: core.config.router_id.clone(),
        initial_window: core.config.initial_window,
        max_frame_size: core.config.max_frame_size,
        heartbeat_interval_ms: millis(core.config.heartbeat_interval),
        heartbeat_timeout_ms: millis(core.config.heartbeat_timeout),
    };
    instance.send(RouterFrame::Welcome(welcome));
    if let Some(stale) = core.registry.insert(instance.clone()) {
        info!(
            instance = stale.id(),
            "instance re-registered; closing its stale registration"
        );
        stale.shut(&Status::unavailable(format!(
            "instance `{}` re-registered; its previous registration is closed",
            stale.id()
        )));
    }
    info!(
        service = core.descriptor.name,
        instance = instance.id(),
        "instance registered"
    );
    if !core.sweeper_started.swap(true, Ordering::AcqRel) {
        start_sweeper(&core);
    }
    tokio::spawn(read_frames(core, instance, frames));
    Ok(Response::new(OutboundStream { rx, done: false }))
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Reads the bridge's frames until the stream ends, the bridge goes silent, or
/// the registration is replaced.
async fn read_frames(
    core: Arc<RouterCore>,
    instance: Arc<Instance>,
    mut frames: Streaming<BridgeFrame>,
) {
    let reason = loop {
        tokio::select! {
            frame = frames.message() => match frame {
                Ok(Some(frame)) => {
                    instance.touch();
                    if let Err(reason) = handle(&instance, frame) {
                        break reason;
                    }
                }
                Ok(None) => break "register stream closed".to_owned(),
                Err(status) => break format!("register stream failed: {}", status.message()),
            },
            _ = instance.wait_closed() => break "registration closed".to_owned(),
        }
    };
    if instance.is_draining() || instance.is_closed() {
        // Drained, or closed by the router (replaced, timed out, shut down).
        debug!(instance = instance.id(), %reason, "registration ending");
    } else {
        // The stream broke without a drain: the instance's calls fail.
        warn!(instance = instance.id(), %reason, "instance lost without draining");
    }
    core.registry.remove(instance.registration);
    instance.shut(&Status::unavailable(format!(
        "instance `{}` of `{}` went away: {reason}",
        instance.id(),
        core.descriptor.name
    )));
}

/// One task per router pings every instance each heartbeat interval and
/// closes registrations silent for longer than the heartbeat timeout. (One
/// sweeper instead of a timer per registration keeps idle registrations
/// small.) The pings are spread over the interval in slices, so ten thousand
/// instances do not all wake at once. It ends when the router is dropped.
pub(crate) fn start_sweeper(core: &Arc<RouterCore>) {
    const SLICES: u64 = 10;
    let weak = Arc::downgrade(core);
    let interval = core.config.heartbeat_interval;
    let timeout_ms = u64::from(millis(core.config.heartbeat_timeout));
    tokio::spawn(async move {
        let period = (interval / SLICES as u32).max(std::time::Duration::from_millis(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.reset();
        let mut round = 0u64;
        loop {
            tick.tick().await;
            let Some(core) = weak.upgrade() else { return };
            round += 1;
            let slice = round % SLICES;
            for instance in core.registry.snapshot().iter() {
                if instance.silent_for_ms() > timeout_ms {
                    warn!(
                        instance = instance.id(),
                        timeout_ms, "instance lost: silent too long"
                    );
                    core.registry.remove(instance.registration);
                    instance.shut(&Status::unavailable(format!(
                        "instance `{}` of `{}` went away: no frame for {timeout_ms} ms",
                        instance.id(),
                        core.descriptor.name
                    )));
                } else if instance.registration % SLICES == slice {
                    instance.send(RouterFrame::Ping(pb::Ping { nonce: round }));
                }
            }
        }
    });
}

/// Dispatches one frame; an error ends the registration.
fn handle(instance: &Instance, frame: BridgeFrame) -> Result<(), String> {
    match frame {
        BridgeFrame::Headers(headers) => {
            deliver(
                instance,
                headers.call_id,
                CallEvent::Headers(headers.metadata.unwrap_or_default()),
            );
        }
        BridgeFrame::Reply(payload) => {
            let len = payload.message.len();
            deliver_data(
                instance,
                payload.call_id,
                len,
                CallEvent::Message(payload.message),
            );
        }
        BridgeFrame::Chunk(chunk) => {
            deliver_data(
                instance,
                chunk.call_id,
                chunk.data.len(),
                CallEvent::Chunk(chunk),
            );
        }
        BridgeFrame::Trailers(trailers) => {
            // The response side forgets the call once it has passed the
            // trailers on; a request sender waiting for credit must stop now.
            if let Some(slot) = instance.calls().get(&trailers.call_id) {
                slot.request_credit.close();
                let _ = slot.events.send(CallEvent::Trailers(trailers));
            }
        }
        BridgeFrame::WindowUpdate(update) => {
            if let Some(slot) = instance.calls().get(&update.call_id) {
                slot.request_credit.grant(update.increment);
            }
        }
        BridgeFrame::Heartbeat(beat) => {
            instance.set_serving(beat.status != pb::ServingStatus::NotServing as i32);
        }
        BridgeFrame::Drain(drain) => {
            info!(instance = instance.id(), reason = %drain.reason, "instance draining");
            // The GoAway acknowledgement follows every Start already under
            // way, so the bridge knows no new call will come after it.
            instance.begin_drain();
        }
        BridgeFrame::Pong(_) => {}
        BridgeFrame::Hello(_) => return Err("second Hello on one register stream".into()),
    }
    Ok(())
}

/// Hands response data to its call, enforcing the call's window: a bridge that
/// sends beyond the credit it was given fails the call instead of growing the
/// router's memory.
fn deliver_data(instance: &Instance, call_id: u64, len: usize, event: CallEvent) {
    let violated = match instance.calls().get(&call_id) {
        Some(slot) => {
            let buffered = slot.buffered.fetch_add(len, Ordering::AcqRel) + len;
            if buffered > instance.response_limit {
                let _ = slot.events.send(CallEvent::Lost(Status::internal(format!(
                    "instance `{}` sent {buffered} response bytes beyond its flow-control window",
                    instance.id()
                ))));
                true
            } else {
                let _ = slot.events.send(event);
                false
            }
        }
        None => {
            debug!(call_id, "data for a call that is no longer active; dropped");
            false
        }
    };
    if violated {
        instance.send(RouterFrame::Cancel(pb::Cancel {
            call_id,
            code: tonic::Code::Internal as i32,
            reason: "flow-control window exceeded".into(),
        }));
        instance.close_call(call_id);
    }
}

fn deliver(instance: &Instance, call_id: u64, event: CallEvent) {
    match instance.calls().get(&call_id) {
        Some(slot) => {
            let _ = slot.events.send(event);
        }
        // The call already ended on the router's side (cancelled, deadline):
        // late frames are dropped.
        None => debug!(
            call_id,
            "frame for a call that is no longer active; dropped"
        ),
    }
}
