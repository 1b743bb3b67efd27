//! The Connect protocol by hand, for the tests of Connect clients' calls:
//! envelopes (streaming bodies) built and split, and a request sent over
//! HTTP/2 with prior knowledge (HTTP/1.1 is `grpc_web::send`).

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::within;

/// `data` as one Connect envelope with `flags` (0x01 compressed, 0x02 end
/// of stream).
pub fn envelope(flags: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + data.len());
    out.push(flags);
    out.extend_from_slice(
        &u32::try_from(data.len())
            .expect("a test message")
            .to_be_bytes(),
    );
    out.extend_from_slice(data);
    out
}

/// The envelopes of a streaming body, as (flags, data). Fails the test on
/// an envelope cut short.
pub fn envelopes(mut body: Bytes) -> Vec<(u8, Bytes)> {
    let mut out = Vec::new();
    while body.remaining() >= 5 {
        let flags = body.get_u8();
        let len = body.get_u32() as usize;
        assert!(body.remaining() >= len, "an envelope cut short");
        out.push((flags, body.split_to(len)));
    }
    assert!(body.is_empty(), "bytes after the last envelope");
    out
}

/// Sends `request` over HTTP/2 with prior knowledge (no upgrade) and reads
/// the whole response, each within 10 s.
pub async fn send_h2(request: http::Request<Full<Bytes>>) -> http::Response<Bytes> {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let response = within(10, "the HTTP/2 request", client.request(request))
        .await
        .expect("a response");
    assert_eq!(response.version(), http::Version::HTTP_2);
    let (parts, body) = response.into_parts();
    let body = within(10, "the response body", body.collect())
        .await
        .expect("a body")
        .to_bytes();
    http::Response::from_parts(parts, body)
}
