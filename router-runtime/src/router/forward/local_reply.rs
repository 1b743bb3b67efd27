//! Statuses the router answers a registration stream itself, before any
//! registration exists: a bridge pointed at the clients' address, a
//! registration for a service this router does not route, a path that is no
//! `Register`.
//!
//! The router reads the stream's first message before it answers. A bridge
//! writes its `Hello` as soon as the stream opens, and grpcio's asyncio
//! client fails a write that races with the end of its call and then reports
//! `INTERNAL: Internal error from Core` in place of the status the server
//! sent (grpcio 1.85: one such registration in fifteen). Once the `Hello`
//! has arrived its write has completed, and the bridge sees the router's
//! status and message. A peer that sends nothing gets the answer after
//! [`FIRST_MESSAGE_WAIT`].

use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use tonic::Status;
use tonic::body::Body;

/// The longest the router waits for a refused stream's first message.
pub(crate) const FIRST_MESSAGE_WAIT: Duration = Duration::from_secs(1);

/// `status` as the answer to `req`, once `req`'s first message (or its end,
/// or [`FIRST_MESSAGE_WAIT`]) has arrived. What arrived is dropped.
pub(crate) async fn after_first_message(req: Request<Body>, status: Status) -> Response<Body> {
    let mut body = req.into_body();
    let first_data = async {
        while let Some(Ok(frame)) = body.frame().await {
            if frame.data_ref().is_some_and(|data| !data.is_empty()) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(FIRST_MESSAGE_WAIT, first_data).await;
    status.into_http()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::StreamExt;
    use http_body::Frame;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::Code;

    fn streamed_request() -> (mpsc::Sender<Result<Frame<Bytes>, Status>>, Request<Body>) {
        let (tx, rx) = mpsc::channel(4);
        let body = http_body_util::StreamBody::new(ReceiverStream::new(rx).boxed());
        (tx, Request::new(Body::new(body)))
    }

    #[tokio::test(start_paused = true)]
    async fn the_answer_waits_for_the_first_message() {
        let (tx, req) = streamed_request();
        let answer = tokio::spawn(after_first_message(req, Status::unimplemented("not here")));
        tokio::time::sleep(FIRST_MESSAGE_WAIT / 2).await;
        assert!(!answer.is_finished(), "answered before the first message");
        tx.send(Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x01x"))))
            .await
            .expect("the router reads");
        let response = answer.await.expect("answer");
        let status = Status::from_header_map(response.headers()).expect("a status");
        assert_eq!(status.code(), Code::Unimplemented);
        assert_eq!(status.message(), "not here");
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_gets_the_answer_after_the_wait() {
        let (tx, req) = streamed_request();
        let started = tokio::time::Instant::now();
        let response = after_first_message(req, Status::unavailable("no")).await;
        assert_eq!(started.elapsed(), FIRST_MESSAGE_WAIT);
        let status = Status::from_header_map(response.headers()).expect("a status");
        assert_eq!(status.code(), Code::Unavailable);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_ends_gets_the_answer_at_once() {
        let (tx, req) = streamed_request();
        drop(tx);
        let started = tokio::time::Instant::now();
        let response = after_first_message(req, Status::unimplemented("")).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert!(response.headers().contains_key("grpc-status"));
    }
}
