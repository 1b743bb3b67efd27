//! Starting a call on a chosen instance: its `Start` frame, built from the
//! call's [`CallTemplate`], and for the common case of one small request
//! message, the message and the half-close in the same batch.

use std::sync::Arc;

use tokio::time::Instant;

use crate::pb;
use crate::router::pump::Requests;
use crate::router::registry::{Instance, OpenedCall};
use crate::router::service::Method;
use crate::wire::{Payload, RouterFrame};

/// What every attempt of one call sends in its `Start`.
#[derive(Debug)]
pub(crate) struct CallTemplate {
    pub(crate) method: Arc<Method>,
    /// The client's metadata, without the transport's own headers.
    pub(crate) metadata: pb::Metadata,
    /// The client's address, as the handler will see it.
    pub(crate) peer: String,
    /// The router's address the client connected to.
    pub(crate) local: String,
    /// The client's TLS certificates (DER), when it presented any.
    pub(crate) peer_certificates: Vec<bytes::Bytes>,
    /// When the call's deadline passes, if it has one.
    pub(crate) deadline: Option<Instant>,
}

impl CallTemplate {
    /// The `Start` frame of call `call_id`, with the time left now.
    fn start(&self, call_id: u64) -> pb::CallStart {
        pb::CallStart {
            call_id,
            method_tag: self.method.tag,
            path: self.method.path.to_string(),
            metadata: Some(self.metadata.clone()),
            timeout_micros: self
                .deadline
                .map(|d| {
                    u64::try_from(d.saturating_duration_since(Instant::now()).as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1)
                })
                .unwrap_or(0),
            kind: self.method.kind.wire() as i32,
            peer: self.peer.clone(),
            local: self.local.clone(),
            peer_certificates: self.peer_certificates.clone(),
        }
    }
}

/// A call whose `Start` is queued on its instance.
pub(crate) struct Started {
    pub(crate) opened: OpenedCall,
    /// Whether the request and half-close went with the `Start` (no request
    /// pump needed).
    pub(crate) inline: bool,
}

/// Opens the call on `instance` and queues its `Start`; `None` when the
/// instance began draining or closed since it was picked (the call never
/// reached it, so it may go to another).
pub(crate) fn try_start(
    instance: &Arc<Instance>,
    template: &CallTemplate,
    requests: &Requests,
) -> Option<Started> {
    if !instance.begin_start() {
        return None;
    }
    let method = &template.method;
    let opened = instance.open_call(method.kind.single_response());
    let call_id = opened.call_id;
    // The common case, one small request message, goes out with its Start
    // and HalfClose in one batch: one write, no extra task.
    let (call, half_close) = match requests {
        Requests::Single(message)
            if message.as_ref().is_none_or(|m| {
                m.len() <= instance.max_frame && opened.request_credit.try_consume(m.len())
            }) =>
        {
            let call = message.clone().map(|message| {
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
    let sent = instance.send_all([
        Some(RouterFrame::Start(template.start(call_id))),
        call,
        half_close,
    ]);
    instance.end_start();
    if sent {
        Some(Started { opened, inline })
    } else {
        instance.close_call(call_id);
        None
    }
}
