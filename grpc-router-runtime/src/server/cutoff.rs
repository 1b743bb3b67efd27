//! Ends the calls of a server's own services (health, reflection, admin, an
//! embedder's) that are still open when a shutdown's grace period is over,
//! with UNAVAILABLE, as the routed calls end.
//!
//! A `grpc.health.v1.Health/Watch` never ends on its own; without this it
//! would hold its connection until the connection is closed under it. A
//! [`Cutoff`] service answers UNAVAILABLE when the cutoff comes before its
//! response, and a response body still streaming then ends with UNAVAILABLE
//! trailers. Routed calls do not go through it: closing the registrations
//! ends them (`RouterCore::close_registrations`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body::Frame;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::body::Body;
use tonic::server::NamedService;

/// The status of a call cut off at the end of the grace period.
pub(crate) fn cut_off_status() -> tonic::Status {
    tonic::Status::unavailable(
        "the router is shutting down and its grace period is over; call again (another replica)",
    )
}

/// `S`, whose calls end with UNAVAILABLE once `cut` is cancelled.
#[derive(Debug, Clone)]
pub(crate) struct Cutoff<S> {
    inner: S,
    cut: CancellationToken,
}

impl<S> Cutoff<S> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: S, cut: CancellationToken) -> Self {
        Cutoff { inner, cut }
    }
}

impl<S: NamedService> NamedService for Cutoff<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<Request<Body>> for Cutoff<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let response = self.inner.call(request);
        let cut = self.cut.clone();
        Box::pin(async move {
            tokio::select! {
                response = response => {
                    let response = response?;
                    Ok(response.map(|body| Body::new(CutoffBody::new(body, cut))))
                }
                () = cut.cancelled() => Ok(cut_off_status().into_http()),
            }
        })
    }
}

/// A response body that ends with UNAVAILABLE trailers when its token is
/// cancelled before it ends.
struct CutoffBody {
    inner: Body,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
}

impl CutoffBody {
    fn new(inner: Body, cut: CancellationToken) -> Self {
        CutoffBody {
            inner,
            cut: Box::pin(cut.cancelled_owned()),
            done: false,
        }
    }
}

impl http_body::Body for CutoffBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.cut.as_mut().poll(cx).is_ready() {
            self.done = true;
            let mut trailers = http::HeaderMap::new();
            return Poll::Ready(Some(
                cut_off_status()
                    .add_header(&mut trailers)
                    .map(|()| Frame::trailers(trailers)),
            ));
        }
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => self.done = true,
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => self.done = true,
            Poll::Ready(Some(Err(_))) => self.done = true,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.done {
            http_body::SizeHint::with_exact(0)
        } else {
            // Trailers may come in place of the rest: no exact size.
            let mut hint = http_body::SizeHint::new();
            hint.set_lower(0);
            if let Some(upper) = self.inner.size_hint().upper() {
                hint.set_upper(upper);
            }
            hint
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn an_endless_body_ends_with_unavailable_trailers_when_cut() {
        let cut = CancellationToken::new();
        let endless = Body::new(http_body_util::StreamBody::new(
            futures_util::stream::pending::<Result<Frame<Bytes>, tonic::Status>>(),
        ));
        let mut body = CutoffBody::new(endless, cut.clone());
        cut.cancel();
        let frame = body
            .frame()
            .await
            .expect("a frame")
            .expect("trailers, not an error");
        let trailers = frame.into_trailers().expect("trailers");
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"14"[..])
        );
        assert!(body.frame().await.is_none(), "nothing after the trailers");
    }

    #[tokio::test]
    async fn a_finished_body_is_not_cut() {
        let cut = CancellationToken::new();
        let mut body = CutoffBody::new(Body::empty(), cut.clone());
        assert!(body.frame().await.is_none());
        cut.cancel();
        assert!(body.frame().await.is_none());
    }
}
