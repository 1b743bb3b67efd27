//! A call's request side: the client's messages sent to the bridge as the
//! call's credit and the registration's queue allow, then the half-close.
//!
//! Only a clean end of the client's stream becomes a `HalfClose`. A client
//! that resets its stream (which tonic's decoder reports as a clean end too,
//! see [`crate::router::client_body`]) gets no half-close: the response side's guard
//! sends the bridge `Cancel`, so the handler sees a cancellation, never the
//! end of its input. A request the router refuses (over its size limit)
//! fails the call at once, for the client and the bridge.

use std::sync::Arc;

use bytes::Bytes;
use tonic::Streaming;

use crate::flow::{SendCredit, SendError, send_with_credit};
use crate::metrics::RequestMeter;
use crate::pb;
use crate::router::client_body::BodyWatch;
use crate::router::registry::Instance;
use crate::trace::CreditWait;
use crate::wire::RouterFrame;
use tokio::time::Instant;

/// Where a call's request messages come from.
pub(crate) enum Requests {
    /// Unary and server-streaming: the one message, already read.
    Single(Option<Bytes>),
    /// Client-streaming and bidi: the client's stream.
    Stream(Box<ClientStream>),
}

/// A client's request stream (client-streaming and bidi calls).
pub(crate) struct ClientStream {
    pub(crate) messages: Streaming<Bytes>,
    /// Tells a client's reset from the end of its requests.
    pub(crate) body: BodyWatch,
    /// The routed service, named in the status of a refused request.
    pub(crate) service: Arc<str>,
}

/// Sends a call's request messages as credit allows, then half-closes;
/// `waits` adds up the time spent waiting for credit or queue room (for the
/// trace), `meter` counts the streamed messages and that time (for the
/// metrics).
pub(crate) async fn send_requests(
    instance: Arc<Instance>,
    call_id: u64,
    tag: u32,
    credit: Arc<SendCredit>,
    requests: Requests,
    mut waits: CreditWait,
    mut meter: Option<RequestMeter>,
) {
    match requests {
        Requests::Single(message) => {
            if let Some(message) = message
                && waits
                    .time(send_message(
                        &instance, call_id, tag, &credit, message, &mut meter,
                    ))
                    .await
                    .is_err()
            {
                return;
            }
        }
        Requests::Stream(mut stream) => loop {
            let waiting = waiting_since(&meter, &credit, 1);
            if waits.time(credit.ready()).await.is_err() {
                return;
            }
            if let (Some(meter), Some(since)) = (&mut meter, waiting) {
                meter.waited(since);
            }
            match stream.messages.message().await {
                Ok(Some(message)) => {
                    if let Some(meter) = &meter {
                        meter.received(message.len());
                    }
                    if waits
                        .time(send_message(
                            &instance, call_id, tag, &credit, message, &mut meter,
                        ))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                // The client reset the stream or its connection failed: the
                // response side goes away too, and its guard cancels the call.
                // No half-close: the handler must not see the end of its input.
                Ok(None) | Err(_) if stream.body.broke() => return,
                Ok(None) => break,
                // The router refused the request (over its size limit, badly
                // framed): the client's side does not know, so fail the call
                // for both.
                Err(status) => {
                    let status = crate::oversize::router_request(status, &stream.service);
                    instance.end_call(call_id, status);
                    return;
                }
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
    meter: &mut Option<RequestMeter>,
) -> Result<(), SendError> {
    let waiting = waiting_since(meter, credit, message.len());
    let gate = || instance.writable();
    let sent = send_with_credit(credit, instance.max_frame, message, gate, |piece| {
        instance.send(piece.frame(call_id, tag, RouterFrame::Call, RouterFrame::Chunk))
    })
    .await;
    if let (Some(meter), Some(since)) = (meter, waiting) {
        meter.waited(since);
    }
    sent
}

/// When metered, and `len` bytes are more than the credit left (so sending
/// them waits for the bridge), the time the wait starts.
fn waiting_since(meter: &Option<RequestMeter>, credit: &SendCredit, len: usize) -> Option<Instant> {
    let short = credit.available() < i64::try_from(len).unwrap_or(i64::MAX);
    (meter.is_some() && short).then(Instant::now)
}
