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
    after_first_message_or(req, status, FIRST_MESSAGE_WAIT).await
}

/// [`after_first_message`] with the longest wait given.
async fn after_first_message_or(
    req: Request<Body>,
    status: Status,
    wait: Duration,
) -> Response<Body> {
    let mut body = req.into_body();
    let first_data = async {
        while let Some(Ok(frame)) = body.frame().await {
            if frame.data_ref().is_some_and(|data| !data.is_empty()) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(wait, first_data).await;
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

    /// Longer than any test runs: reaching it fails the test.
    const NEVER: Duration = Duration::from_secs(60);
    /// How long a test waits for an answer it expects.
    const SOON: Duration = Duration::from_secs(10);

    fn streamed_request() -> (mpsc::Sender<Result<Frame<Bytes>, Status>>, Request<Body>) {
        let (tx, rx) = mpsc::channel(4);
        let body = http_body_util::StreamBody::new(ReceiverStream::new(rx).boxed());
        (tx, Request::new(Body::new(body)))
    }

    fn status_of(response: &Response<Body>) -> Status {
        Status::from_header_map(response.headers()).expect("a status in the headers")
    }

    #[tokio::test]
    async fn the_answer_comes_once_the_first_message_arrived() {
        let (tx, req) = streamed_request();
        let mut answer = tokio::spawn(after_first_message_or(
            req,
            Status::unimplemented("not here"),
            NEVER,
        ));
        let early = tokio::time::timeout(Duration::from_millis(100), &mut answer).await;
        assert!(early.is_err(), "answered before the first message");
        tx.send(Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x01x"))))
            .await
            .expect("the router reads");
        let response = tokio::time::timeout(SOON, answer)
            .await
            .expect("an answer once the message arrived")
            .expect("the task");
        let status = status_of(&response);
        assert_eq!(status.code(), Code::Unimplemented);
        assert_eq!(status.message(), "not here");
        drop(tx);
    }

    #[tokio::test]
    async fn a_silent_peer_gets_the_answer_after_the_wait() {
        let (tx, req) = streamed_request();
        let wait = Duration::from_millis(50);
        let started = tokio::time::Instant::now();
        let response = tokio::time::timeout(
            SOON,
            after_first_message_or(req, Status::unavailable("no"), wait),
        )
        .await
        .expect("an answer after the wait");
        assert!(started.elapsed() >= wait);
        assert_eq!(status_of(&response).code(), Code::Unavailable);
        drop(tx);
    }

    #[tokio::test]
    async fn a_stream_that_ends_gets_the_answer_at_once() {
        let (tx, req) = streamed_request();
        drop(tx);
        let response = tokio::time::timeout(
            SOON,
            after_first_message_or(req, Status::unimplemented(""), NEVER),
        )
        .await
        .expect("an answer without waiting");
        assert_eq!(status_of(&response).code(), Code::Unimplemented);
    }
}
