//! An unbounded multi-producer, single-consumer queue whose memory follows its
//! use.
//!
//! The runtime keeps one queue per register stream and one per call. tokio's
//! unbounded channel allocates a block of 32 slots up front, which costs a few
//! KiB for every idle registration and every short call. This queue starts
//! empty, grows with the items in flight (which flow control bounds) and
//! shrinks back when it drains.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

struct State<T> {
    items: VecDeque<T>,
    waker: Option<Waker>,
    receiver_alive: bool,
}

struct Shared<T, E> {
    state: Mutex<State<T>>,
    senders: AtomicUsize,
    /// Free the item buffer whenever the queue drains.
    compact: bool,
    /// What both ends share besides the items (the outbox's accounting), in
    /// the same allocation.
    extra: E,
}

impl<T, E> Shared<T, E> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every critical section is a push, a pop or a flag: a panic cannot
        // leave the state half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Creates a queue.
pub(crate) fn queue<T>() -> (QueueSender<T>, QueueReceiver<T>) {
    new_queue(false, ())
}

/// Creates a queue that frees its buffer whenever it drains (for long-lived,
/// mostly idle queues, at the price of an allocation when a burst starts),
/// whose two ends also share `extra` (read with [`QueueSender::extra`] and
/// [`QueueReceiver::extra`]) in the queue's own allocation.
pub(crate) fn queue_compact_with<T, E>(extra: E) -> (QueueSender<T, E>, QueueReceiver<T, E>) {
    new_queue(true, extra)
}

fn new_queue<T, E>(compact: bool, extra: E) -> (QueueSender<T, E>, QueueReceiver<T, E>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            waker: None,
            receiver_alive: true,
        }),
        senders: AtomicUsize::new(1),
        compact,
        extra,
    });
    (
        QueueSender {
            shared: shared.clone(),
        },
        QueueReceiver { shared },
    )
}

/// The sending side; cheap to clone.
pub(crate) struct QueueSender<T, E = ()> {
    shared: Arc<Shared<T, E>>,
}

impl<T, E> std::fmt::Debug for QueueSender<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueSender")
    }
}

impl<T, E> QueueSender<T, E> {
    /// What the two ends share besides the items.
    pub(crate) fn extra(&self) -> &E {
        &self.shared.extra
    }

    /// Runs `push` on the queued items and wakes the receiver; false, without
    /// running it, when the receiver is gone.
    fn enqueue(&self, push: impl FnOnce(&mut VecDeque<T>)) -> bool {
        let waker = {
            let mut state = self.shared.lock();
            if !state.receiver_alive {
                return false;
            }
            push(&mut state.items);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Queues `item`; gives it back when the receiver is gone.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        let mut slot = Some(item);
        self.enqueue(|items| items.extend(slot.take()));
        slot.map_or(Ok(()), Err)
    }

    /// Queues every item of `items` at once, waking the receiver once: frames
    /// that belong together reach the transport in one write. Returns false
    /// (dropping the items) when the receiver is gone.
    pub(crate) fn send_all(&self, items: impl IntoIterator<Item = T>) -> bool {
        self.enqueue(|queued| queued.extend(items))
    }

    /// Queues `item` ahead of everything already queued (for liveness probes
    /// that must not wait behind a backlog of data); gives it back when the
    /// receiver is gone.
    pub(crate) fn send_front(&self, item: T) -> Result<(), T> {
        let mut slot = Some(item);
        self.enqueue(|items| {
            if let Some(item) = slot.take() {
                items.push_front(item);
            }
        });
        slot.map_or(Ok(()), Err)
    }

    /// Queues `item`, first passing it through `detach` when items are
    /// already waiting. Messages decoded from the register stream are slices
    /// of a shared read buffer: a consumer that keeps up takes them at once,
    /// but one that is behind would keep every such buffer alive, so what
    /// waits behind another item is given a copy of its own.
    pub(crate) fn send_detached_if_behind(
        &self,
        item: T,
        detach: impl FnOnce(T) -> T,
    ) -> Result<(), T> {
        let mut slot = Some(item);
        self.enqueue(|items| {
            if let Some(item) = slot.take() {
                items.push_back(if items.is_empty() { item } else { detach(item) });
            }
        });
        slot.map_or(Ok(()), Err)
    }

    /// Keeps only the queued items for which `keep` returns true, in order.
    /// The dropped items are freed at once, whether or not the receiver ever
    /// reads again.
    pub(crate) fn retain(&self, keep: impl FnMut(&T) -> bool) {
        let dropped: VecDeque<T> = {
            let mut state = self.shared.lock();
            if state.items.is_empty() {
                return;
            }
            let (kept, dropped): (VecDeque<T>, VecDeque<T>) =
                std::mem::take(&mut state.items).into_iter().partition(keep);
            state.items = kept;
            dropped
        };
        drop(dropped);
    }
}

impl<T, E> Clone for QueueSender<T, E> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        QueueSender {
            shared: self.shared.clone(),
        }
    }
}

impl<T, E> Drop for QueueSender<T, E> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            let waker = self.shared.lock().waker.take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// The receiving side.
pub(crate) struct QueueReceiver<T, E = ()> {
    shared: Arc<Shared<T, E>>,
}

impl<T, E> std::fmt::Debug for QueueReceiver<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueReceiver")
    }
}

impl<T, E> QueueReceiver<T, E> {
    /// What the two ends share besides the items.
    pub(crate) fn extra(&self) -> &E {
        &self.shared.extra
    }

    /// The next item; `None` once every sender is gone and the queue is empty.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.shared.lock();
        if let Some(item) = state.items.pop_front() {
            if state.items.is_empty() {
                if self.shared.compact {
                    state.items = VecDeque::new();
                } else if state.items.capacity() > 32 {
                    state.items.shrink_to(8);
                }
            }
            return Poll::Ready(Some(item));
        }
        if self.shared.senders.load(Ordering::Acquire) == 0 {
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Waits for the next item.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl<T, E> futures_util::Stream for QueueReceiver<T, E> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.get_mut().poll_recv(cx)
    }
}

impl<T, E> Drop for QueueReceiver<T, E> {
    fn drop(&mut self) {
        let items = {
            let mut state = self.shared.lock();
            state.receiver_alive = false;
            state.waker = None;
            std::mem::take(&mut state.items)
        };
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn items_arrive_in_order_and_the_end_is_seen() {
        let (tx, mut rx) = queue();
        let tx2 = tx.clone();
        tx.send(1).expect("open");
        tx2.send(2).expect("open");
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        drop(tx);
        let waiter = tokio::spawn(async move { rx.recv().await });
        drop(tx2);
        let end = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(end, None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_send() {
        let (tx, mut rx) = queue();
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.send("x").expect("open");
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(got, Some("x"));
    }

    #[test]
    fn sending_to_a_dropped_receiver_gives_the_item_back() {
        let (tx, rx) = queue();
        drop(rx);
        assert_eq!(tx.send(5), Err(5));
    }

    #[test]
    fn send_front_jumps_the_queue_and_retain_drops_in_place() {
        let (tx, mut rx) = queue();
        for i in 0..5 {
            tx.send(i).expect("open");
        }
        tx.send_front(99).expect("open");
        tx.retain(|i| i % 2 == 1 || *i == 99);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut got = Vec::new();
        while let Poll::Ready(Some(i)) = rx.poll_recv(&mut cx) {
            got.push(i);
        }
        assert_eq!(got, vec![99, 1, 3]);
    }

    #[test]
    fn only_items_waiting_behind_another_are_detached() {
        let (tx, mut rx) = queue();
        tx.send_detached_if_behind(1, |i| i + 100).expect("open");
        tx.send_detached_if_behind(2, |i| i + 100).expect("open");
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(1)));
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(102)));
        tx.send_detached_if_behind(3, |i| i + 100).expect("open");
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(3)));
    }

    #[test]
    fn capacity_shrinks_after_a_burst() {
        let (tx, mut rx) = queue();
        for i in 0..1000 {
            tx.send(i).expect("open");
        }
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        while let Poll::Ready(Some(_)) = rx.poll_recv(&mut cx) {}
        assert!(rx.shared.lock().items.capacity() <= 32);
    }
}
