//! The end of a shutdown's grace period: connections still open are closed,
//! whatever their peers do.
//!
//! tonic's graceful shutdown sends every connection GOAWAY and then waits
//! for each to close on its own. A client that holds a stream and stops
//! reading never lets its connection close: hyper does not poll a response
//! body the peer has no flow-control window for, so not even the
//! UNAVAILABLE that ends the call at the deadline reaches it. Every accepted
//! connection is therefore a [`Killable`]: once [`KillSwitch::kill`] runs,
//! its reads and writes fail, hyper ends the connection, the socket closes
//! and the server's shutdown completes.
//!
//! The cost on the hot path is one atomic load per read or write, and a
//! waker registration when one would block (that is how a connection whose
//! task waits for a read that never comes hears the kill).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Closes every [`Killable`] connection made from it, at once.
#[derive(Debug, Default)]
pub(crate) struct KillSwitch {
    killed: AtomicBool,
    next: AtomicU64,
    /// The wakers of the open connections' tasks, by connection.
    open: Mutex<HashMap<u64, Arc<AtomicWaker>>>,
}

impl KillSwitch {
    /// A switch not yet thrown.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(KillSwitch::default())
    }

    /// `io`, closed when this switch is thrown.
    pub(crate) fn wrap<IO>(self: &Arc<Self>, io: IO) -> Killable<IO> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let waker = Arc::new(AtomicWaker::new());
        self.lock().insert(id, waker.clone());
        Killable {
            io,
            switch: self.clone(),
            waker,
            id,
        }
    }

    /// Fails every read and write of the connections made from this switch,
    /// waking their tasks so they see it; returns how many were open.
    pub(crate) fn kill(&self) -> usize {
        self.killed.store(true, Ordering::Release);
        let open: Vec<Arc<AtomicWaker>> = self.lock().values().cloned().collect();
        for waker in &open {
            waker.wake();
        }
        open.len()
    }

    /// The connections open now.
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.lock().len()
    }

    fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<AtomicWaker>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection that fails its reads and writes once its [`KillSwitch`] is
/// thrown (see the module docs).
#[derive(Debug)]
pub(crate) struct Killable<IO> {
    io: IO,
    switch: Arc<KillSwitch>,
    waker: Arc<AtomicWaker>,
    id: u64,
}

impl<IO> Drop for Killable<IO> {
    fn drop(&mut self) {
        self.switch.lock().remove(&self.id);
    }
}

fn killed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the router's shutdown grace period is over: connection closed",
    )
}

impl<IO: AsyncRead + Unpin> AsyncRead for Killable<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let io = &mut this.io;
        guarded(&this.switch, &this.waker, cx, |cx| {
            Pin::new(&mut *io).poll_read(cx, buf)
        })
    }
}

/// `poll`'s result, unless `switch` is thrown; registers the task in `waker`
/// when `poll` would block, so that it hears the switch.
fn guarded<T>(
    switch: &KillSwitch,
    waker: &AtomicWaker,
    cx: &mut Context<'_>,
    poll: impl FnOnce(&mut Context<'_>) -> Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    if switch.is_killed() {
        return Poll::Ready(Err(killed()));
    }
    let result = poll(cx);
    if result.is_pending() {
        waker.register(cx.waker());
        // Thrown between the first check and the registration: its wake may
        // have missed this task.
        if switch.is_killed() {
            return Poll::Ready(Err(killed()));
        }
    }
    result
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Killable<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let io = &mut this.io;
        guarded(&this.switch, &this.waker, cx, |cx| {
            Pin::new(&mut *io).poll_write(cx, buf)
        })
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let io = &mut this.io;
        guarded(&this.switch, &this.waker, cx, |cx| {
            Pin::new(&mut *io).poll_write_vectored(cx, bufs)
        })
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let io = &mut this.io;
        guarded(&this.switch, &this.waker, cx, |cx| {
            Pin::new(&mut *io).poll_flush(cx)
        })
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.switch.is_killed() {
            // Nothing more is written: the socket closes when dropped.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Killable<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_read_waiting_for_a_silent_peer_fails_when_the_switch_is_thrown() {
        let switch = KillSwitch::new();
        let (near, _far) = tokio::io::duplex(64);
        let mut near = switch.wrap(near);
        assert_eq!(switch.open(), 1);
        let read = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            near.read(&mut buf).await
        });
        // The read is parked on the silent peer; the kill must wake it.
        tokio::task::yield_now().await;
        assert_eq!(switch.kill(), 1);
        let result = tokio::time::timeout(std::time::Duration::from_secs(5), read)
            .await
            .expect("the read wakes")
            .expect("task");
        let error = result.expect_err("a killed read fails");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(switch.open(), 0, "the dropped connection is forgotten");
    }

    #[tokio::test]
    async fn a_write_blocked_by_a_peer_that_does_not_read_fails_when_the_switch_is_thrown() {
        let switch = KillSwitch::new();
        let (near, _far) = tokio::io::duplex(16);
        let mut near = switch.wrap(near);
        let write = tokio::spawn(async move { near.write_all(&[0u8; 1024]).await });
        tokio::task::yield_now().await;
        switch.kill();
        let result = tokio::time::timeout(std::time::Duration::from_secs(5), write)
            .await
            .expect("the write wakes")
            .expect("task");
        assert_eq!(
            result.expect_err("fails").kind(),
            io::ErrorKind::ConnectionAborted
        );
    }
}
