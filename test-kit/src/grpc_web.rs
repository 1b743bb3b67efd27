//! gRPC-Web by hand, for the tests of browsers' calls: a message framed as
//! a request body, a response body split into its messages and trailer
//! frame, and an HTTP/1.1 request sent as a browser sends it.

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::within;

/// `message` as one gRPC-Web (and gRPC) message frame: flag 0, length, bytes.
pub fn frame(message: &impl prost::Message) -> Vec<u8> {
    let encoded = message.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + encoded.len());
    framed.push(0);
    framed.extend_from_slice(
        &u32::try_from(encoded.len())
            .expect("a test message")
            .to_be_bytes(),
    );
    framed.extend_from_slice(&encoded);
    framed
}

/// The frames of a gRPC-Web response body: its messages, then its trailer
/// frames as lower-case text (`grpc-status:0\r\n...`). Fails the test on a
/// frame cut short or bytes after the last frame.
pub fn frames(mut body: Bytes) -> (Vec<Bytes>, String) {
    let (mut messages, mut trailers) = (Vec::new(), String::new());
    while body.remaining() >= 5 {
        let flag = body.get_u8();
        let len = body.get_u32() as usize;
        assert!(body.remaining() >= len, "a frame cut short");
        let frame = body.split_to(len);
        if flag & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(&frame));
        } else {
            messages.push(frame);
        }
    }
    assert!(body.is_empty(), "bytes after the last frame");
    (messages, trailers.to_ascii_lowercase())
}

/// Sends `request` over HTTP/1.1, as a browser's gRPC-Web call goes, and
/// reads the whole response, each within 10 s.
pub async fn send(request: http::Request<Full<Bytes>>) -> http::Response<Bytes> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = within(10, "the HTTP/1.1 request", client.request(request))
        .await
        .expect("a response");
    assert_eq!(response.version(), http::Version::HTTP_11);
    let (parts, body) = response.into_parts();
    let body = within(10, "the response body", body.collect())
        .await
        .expect("a body")
        .to_bytes();
    http::Response::from_parts(parts, body)
}
