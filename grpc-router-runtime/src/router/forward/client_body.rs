//! A client's request body, watched for how it ends.
//!
//! tonic's request decoder reports a body that fails with CANCELLED (what
//! hyper makes of a client's RST_STREAM with CANCEL) as the clean end of the
//! request stream, `Ok(None)`, exactly like an END_STREAM. Forwarded as a
//! half-close, such a reset would reach the handler as the end of its input:
//! it could finish and answer OK before the `Cancel` that follows. The router
//! wraps the body of every call whose requests stream, and its request pump
//! asks the [`BodyWatch`] which of the two it was.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tonic::Status;

/// Whether a watched body broke (its transport failed: the client reset the
/// stream or the connection dropped) instead of ending.
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyWatch(Arc<AtomicBool>);

impl BodyWatch {
    /// Whether the body broke. Once the decoder has reported the stream's
    /// end or an error, this is final: the body is read on the same task.
    pub(crate) fn broke(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A request body that tells its [`BodyWatch`] when it breaks.
struct Watched {
    inner: tonic::body::Body,
    watch: BodyWatch,
}

impl Body for Watched {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Err(_)) = &frame {
            self.watch.0.store(true, Ordering::Release);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `request` with its body watched.
pub(crate) fn watch(
    request: http::Request<tonic::body::Body>,
) -> (http::Request<tonic::body::Body>, BodyWatch) {
    let watch = BodyWatch::default();
    let request = request.map(|inner| {
        tonic::body::Body::new(Watched {
            inner,
            watch: watch.clone(),
        })
    });
    (request, watch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use tonic::codec::Codec;

    /// One gRPC-framed message, then `end`: the body's end, or an error.
    fn body(end: Option<Status>) -> tonic::body::Body {
        let mut framed = bytes::BytesMut::new();
        framed.put_u8(0);
        framed.put_u32(3);
        framed.put_slice(b"abc");
        let frames = futures_util::stream::iter(
            std::iter::once(Ok(Frame::data(framed.freeze()))).chain(end.map(Err)),
        );
        tonic::body::Body::new(http_body_util::StreamBody::new(frames))
    }

    async fn read(end: Option<Status>) -> (Vec<Result<Option<Bytes>, Status>>, bool) {
        let request = http::Request::new(body(end));
        let (request, watch) = watch(request);
        let mut stream = tonic::Streaming::new_request(
            crate::codec::RawCodec.decoder(),
            request.into_body(),
            None,
            None,
        );
        let mut seen = Vec::new();
        loop {
            let next = stream.message().await;
            let last = !matches!(next, Ok(Some(_)));
            seen.push(next);
            if last {
                return (seen, watch.broke());
            }
        }
    }

    #[tokio::test]
    async fn a_reset_reads_as_the_end_of_the_stream_but_the_watch_tells_it_apart() {
        // What hyper makes of RST_STREAM(CANCEL): tonic's decoder says
        // "end of stream", the watch says it broke.
        let (seen, broke) = read(Some(Status::cancelled("stream reset"))).await;
        assert!(
            matches!(seen.as_slice(), [Ok(Some(_)), Ok(None)]),
            "{seen:?}"
        );
        assert!(broke);
        // A clean END_STREAM.
        let (seen, broke) = read(None).await;
        assert!(
            matches!(seen.as_slice(), [Ok(Some(_)), Ok(None)]),
            "{seen:?}"
        );
        assert!(!broke);
        // Another transport error reaches the reader, and the watch too.
        let (seen, broke) = read(Some(Status::unknown("connection lost"))).await;
        assert!(matches!(seen.as_slice(), [Ok(Some(_)), Err(_)]), "{seen:?}");
        assert!(broke);
    }
}
