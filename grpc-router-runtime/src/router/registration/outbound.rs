//! The router's writes to one bridge: the register stream's outbound queue.
//!
//! Every frame for a bridge goes through one [`Outbox`], which the register
//! stream's writer (tonic's response encoder, through [`OutboundStream`])
//! drains as fast as the bridge's HTTP/2 window lets it. The outbox keeps that
//! queue bounded against a bridge that stops reading:
//!
//! - it counts the bytes queued and not yet taken by the writer. Past
//!   [`Outbox::limit`] the instance is *congested*: the balancer does not pick
//!   it and request pumps wait ([`Outbox::space`]) until the writer catches up;
//! - it records when the writer last took a frame, so the heartbeat sweeper
//!   can tell a stalled stream from a quiet one;
//! - a call that ends early drops its frames still queued
//!   ([`Outbox::purge_call`]), so the bytes of dead calls neither hold memory
//!   nor count against the live ones;
//! - liveness pings jump the queue ([`Outbox::send_urgent`]): a bridge that
//!   reads answers them promptly even behind a backlog of data;
//! - closing the registration frees whatever is still queued, even when the
//!   writer is never polled again.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::Stream;
use prost::Message;
use tokio::sync::Notify;
use tonic::Status;

use crate::clock::Millis;
use crate::queue::{QueueReceiver, QueueSender, queue_compact_with};
use crate::wire::RouterFrame;

/// What the register stream's writer sends: a frame, or the end of the stream.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A frame for the bridge, with the bytes it was counted as (computed once,
    /// when it was queued).
    Frame(RouterFrame, usize),
    /// End the register stream, with an error status or cleanly.
    Close(Option<Status>),
}

/// The bytes a queued frame holds, as the outbox counts them: the payload of
/// data frames, the encoded size of a call's start (its metadata), and a small
/// constant for control frames.
pub(crate) fn queued_size(frame: &RouterFrame) -> usize {
    const CONTROL: usize = 16;
    match frame {
        RouterFrame::Call(payload) => payload.message.len() + CONTROL,
        RouterFrame::Chunk(chunk) => chunk.data.len() + CONTROL,
        RouterFrame::Start(start) => start.encoded_len() + CONTROL,
        RouterFrame::Welcome(_)
        | RouterFrame::HalfClose(_)
        | RouterFrame::Cancel(_)
        | RouterFrame::WindowUpdate(_)
        | RouterFrame::Ping(_)
        | RouterFrame::GoAway(_) => CONTROL,
        RouterFrame::Peers(peers) => peers.encoded_len() + CONTROL,
    }
}

/// The call a frame belongs to, for frames that may be dropped once their
/// call has ended (everything but `Cancel`, which tells the bridge of the end).
fn droppable_call(frame: &RouterFrame) -> Option<u64> {
    match frame {
        RouterFrame::Start(start) => Some(start.call_id),
        RouterFrame::Call(payload) => Some(payload.call_id),
        RouterFrame::Chunk(chunk) => Some(chunk.call_id),
        RouterFrame::HalfClose(half) => Some(half.call_id),
        RouterFrame::WindowUpdate(update) => Some(update.call_id),
        RouterFrame::Welcome(_)
        | RouterFrame::Cancel(_)
        | RouterFrame::Ping(_)
        | RouterFrame::GoAway(_)
        | RouterFrame::Peers(_) => None,
    }
}

/// Accounting shared by the outbox and its writer.
#[derive(Debug)]
struct Level {
    queued: AtomicUsize,
    limit: usize,
    /// Woken when the queue falls back under the limit, or closes.
    space: Notify,
    /// When the writer last took a frame.
    last_write: Millis,
}

impl Level {
    fn taken(&self, size: usize) {
        let before = self.queued.fetch_sub(size, Ordering::AcqRel);
        if before > self.limit && before - size <= self.limit {
            self.space.notify_waiters();
        }
    }
}

/// The sending side of one register stream's outbound queue.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// The queue, with the accounting in the same allocation.
    tx: QueueSender<Outbound, Level>,
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

impl Outbox {
    /// An outbox that counts an instance congested past `limit` queued bytes,
    /// and the stream its writer drains.
    pub(crate) fn new(limit: usize) -> (Outbox, OutboundStream) {
        // Register streams sit idle most of the time: their queue frees its
        // memory whenever it drains.
        let (tx, rx) = queue_compact_with(Level {
            queued: AtomicUsize::new(0),
            limit,
            space: Notify::new(),
            last_write: Millis::now(),
        });
        let stream = OutboundStream { rx, done: false };
        (Outbox { tx }, stream)
    }

    fn level(&self) -> &Level {
        self.tx.extra()
    }

    /// Queues a frame.
    pub(crate) fn send(&self, frame: RouterFrame) -> Result<(), Closed> {
        self.push(frame, QueueSender::send)
    }

    /// Queues several frames in one batch (one wake of the writer, one write).
    pub(crate) fn send_all<const N: usize>(&self, frames: [Option<RouterFrame>; N]) -> bool {
        let sized = frames.map(|frame| frame.map(|f| (queued_size(&f), f)));
        let size: usize = sized.iter().flatten().map(|(size, _)| size).sum();
        self.level().queued.fetch_add(size, Ordering::AcqRel);
        let sent = self.tx.send_all(
            sized
                .into_iter()
                .flatten()
                .map(|(size, frame)| Outbound::Frame(frame, size)),
        );
        if !sent {
            self.level().taken(size);
        }
        sent
    }

    /// Queues a frame ahead of everything queued.
    pub(crate) fn send_urgent(&self, frame: RouterFrame) -> Result<(), Closed> {
        self.push(frame, QueueSender::send_front)
    }

    /// Counts `frame` in and queues it with `push`, uncounting it when the
    /// writer is gone.
    fn push(
        &self,
        frame: RouterFrame,
        push: impl FnOnce(&QueueSender<Outbound, Level>, Outbound) -> Result<(), Outbound>,
    ) -> Result<(), Closed> {
        let size = queued_size(&frame);
        self.level().queued.fetch_add(size, Ordering::AcqRel);
        push(&self.tx, Outbound::Frame(frame, size)).map_err(|_| {
            self.level().taken(size);
            Closed
        })
    }

    /// Drops the frames of `call_id` still queued; true when its `Start` was
    /// among them (the bridge never heard of the call).
    pub(crate) fn purge_call(&self, call_id: u64) -> bool {
        let mut start_dropped = false;
        let mut freed = 0;
        self.tx.retain(|item| match item {
            Outbound::Frame(frame, size) if droppable_call(frame) == Some(call_id) => {
                start_dropped |= matches!(frame, RouterFrame::Start(_));
                freed += size;
                false
            }
            _ => true,
        });
        if freed > 0 {
            self.level().taken(freed);
        }
        start_dropped
    }

    /// Ends the stream: frees everything queued and queues the end, with
    /// `status` as the register call's status (`None` ends it cleanly).
    /// `last`, when given, is written before the end (a `GoAway` the bridge
    /// must read).
    pub(crate) fn close_after(&self, last: Option<RouterFrame>, status: Option<Status>) {
        let mut freed = 0;
        self.tx.retain(|item| {
            if let Outbound::Frame(_, size) = item {
                freed += size;
            }
            false
        });
        if freed > 0 {
            self.level().taken(freed);
        }
        if let Some(frame) = last {
            let _ = self.tx.send(Outbound::Frame(frame, 0));
        }
        let _ = self.tx.send(Outbound::Close(status));
        self.level().space.notify_waiters();
    }

    /// Bytes queued and not yet taken by the writer.
    pub(crate) fn queued(&self) -> usize {
        self.level().queued.load(Ordering::Acquire)
    }

    /// The queued bytes past which the instance is congested.
    pub(crate) fn limit(&self) -> usize {
        self.level().limit
    }

    /// Whether more than the limit is queued.
    pub(crate) fn is_congested(&self) -> bool {
        self.queued() > self.level().limit
    }

    /// Milliseconds since the writer last took a frame (or since the outbox
    /// was made).
    pub(crate) fn write_idle_ms(&self) -> u64 {
        self.level().last_write.elapsed_ms()
    }

    /// Waits until the queue is under its limit, or `closed` resolves.
    pub(crate) async fn space(&self, closed: impl std::future::Future<Output = ()>) {
        tokio::pin!(closed);
        loop {
            let notified = self.level().space.notified();
            if !self.is_congested() {
                return;
            }
            tokio::select! {
                _ = notified => {}
                _ = &mut closed => return,
            }
        }
    }
}

/// The router's frames to one bridge, as tonic's response stream; ends when
/// the registration closes.
#[derive(Debug)]
pub(crate) struct OutboundStream {
    rx: QueueReceiver<Outbound, Level>,
    done: bool,
}

impl Stream for OutboundStream {
    type Item = Result<RouterFrame, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Outbound::Frame(frame, size))) => {
                let level = self.rx.extra();
                level.taken(size);
                level.last_write.touch();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Outbound::Close(status))) => {
                self.done = true;
                Poll::Ready(status.map(Err))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use crate::wire::Payload;
    use bytes::Bytes;
    use futures_util::StreamExt;

    fn call(call_id: u64, len: usize) -> RouterFrame {
        RouterFrame::Call(Payload {
            call_id,
            tag: 10,
            message: Bytes::from(vec![0; len]),
        })
    }

    #[tokio::test]
    async fn queued_bytes_follow_the_writer_and_congestion_clears() {
        let (outbox, mut stream) = Outbox::new(1000);
        outbox.send(call(1, 600)).expect("open");
        assert!(!outbox.is_congested());
        outbox.send(call(1, 600)).expect("open");
        assert!(outbox.is_congested(), "{} queued", outbox.queued());
        let first = stream.next().await.expect("frame").expect("ok");
        assert_eq!(first, call(1, 600));
        assert!(!outbox.is_congested());
        let _ = stream.next().await;
        assert_eq!(outbox.queued(), 0);
    }

    #[tokio::test]
    async fn an_ended_calls_frames_are_dropped_but_others_and_cancels_stay() {
        let (outbox, mut stream) = Outbox::new(1 << 20);
        outbox
            .send(RouterFrame::Start(pb::CallStart {
                call_id: 1,
                ..Default::default()
            }))
            .expect("open");
        outbox.send(call(1, 500)).expect("open");
        outbox.send(call(2, 100)).expect("open");
        outbox
            .send(RouterFrame::Cancel(pb::Cancel {
                call_id: 1,
                ..Default::default()
            }))
            .expect("open");
        assert!(outbox.purge_call(1), "the Start was still queued");
        assert_eq!(outbox.queued(), queued_size(&call(2, 100)) + 16);
        assert_eq!(
            stream.next().await.expect("frame").expect("ok"),
            call(2, 100)
        );
        assert!(matches!(
            stream.next().await,
            Some(Ok(RouterFrame::Cancel(_)))
        ));
    }

    #[tokio::test]
    async fn pings_jump_the_queue() {
        let (outbox, mut stream) = Outbox::new(1 << 20);
        outbox.send(call(1, 500)).expect("open");
        outbox
            .send_urgent(RouterFrame::Ping(pb::Ping { nonce: 7 }))
            .expect("open");
        assert!(matches!(
            stream.next().await,
            Some(Ok(RouterFrame::Ping(pb::Ping { nonce: 7 })))
        ));
    }

    #[tokio::test]
    async fn closing_frees_the_backlog_even_if_the_writer_never_reads_again() {
        let (outbox, stream) = Outbox::new(1000);
        for _ in 0..10 {
            outbox.send(call(1, 10_000)).expect("open");
        }
        assert!(outbox.is_congested());
        outbox.close_after(None, Some(Status::unavailable("gone")));
        assert_eq!(outbox.queued(), 0);
        assert!(!outbox.is_congested());
        // The waiting pumps are released.
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            outbox.space(std::future::pending()),
        )
        .await
        .expect("space after close");
        drop(stream);
    }
}
