//! A call's request side: the client's messages sent to the bridge as the
//! call's credit and the registration's queue allow, then the half-close.

use std::sync::Arc;

use bytes::Bytes;
use tonic::Streaming;

use super::registry::Instance;
use crate::flow::{SendCredit, SendError, send_with_credit};
use crate::metrics::RequestMeter;
use crate::pb;
use crate::trace::CreditWait;
use crate::wire::RouterFrame;
use tokio::time::Instant;

/// Where a call's request messages come from.
pub(crate) enum Requests {
    /// Unary and server-streaming: the one message, already read.
    Single(Option<Bytes>),
    /// Client-streaming and bidi: the client's stream.
    Stream(Streaming<Bytes>),
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
            match stream.message().await {
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
