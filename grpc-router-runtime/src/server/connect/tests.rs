//! The Connect layer against a fake gRPC service: what the routes receive
//! for a Connect request, and what the client gets back from a gRPC
//! answer, without a network.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use tower::{Layer, ServiceExt};

use super::{ConnectLayer, Limits, Protocol};
use crate::reflection::DescriptorCatalog;

fn layer() -> ConnectLayer {
    let catalog = DescriptorCatalog::new();
    catalog
        .add_encoded_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .expect("health's set");
    ConnectLayer::new(catalog, Limits::default())
}

/// A gRPC answer: these messages, then trailers with `status` and
/// `x-t: 1`.
fn answer(messages: &[&'static [u8]], status: &'static str) -> Response<tonic::body::Body> {
    let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = messages
        .iter()
        .map(|m| Ok(Frame::data(super::grpc::frame(m))))
        .collect();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static(status));
    trailers.insert("grpc-message", HeaderValue::from_static("gone%20away"));
    trailers.insert("x-t", HeaderValue::from_static("1"));
    frames.push(Ok(Frame::trailers(trailers)));
    let mut response = Response::new(tonic::body::Body::new(StreamBody::new(
        futures_util::stream::iter(frames),
    )));
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    response
}

async fn body(response: Response<tonic::body::Body>) -> (http::response::Parts, Bytes) {
    let (parts, body) = response.into_parts();
    (parts, body.collect().await.expect("a body").to_bytes())
}

#[tokio::test]
async fn a_json_unary_call_reaches_the_routes_as_grpc_and_comes_back_as_json() {
    let inner = tower::service_fn(|req: Request<tonic::body::Body>| async move {
        assert_eq!(req.headers()["content-type"], "application/grpc");
        assert_eq!(req.headers()["grpc-timeout"], "250m");
        assert_eq!(req.headers()["authorization"], "Bearer t");
        assert_eq!(req.extensions().get::<Protocol>(), Some(&Protocol::Connect));
        let body = req.into_body().collect().await.expect("a body").to_bytes();
        assert_eq!(&body[..], b"\0\0\0\0\x05\x0a\x03a.B");
        Ok::<_, Infallible>(answer(&[b"\x08\x01"], "0"))
    });
    let request = Request::post("/grpc.health.v1.Health/Check")
        .header("content-type", "application/json")
        .header("connect-timeout-ms", "250")
        .header("authorization", "Bearer t")
        .body(Full::new(Bytes::from_static(br#"{"service":"a.B"}"#)))
        .expect("request");
    let response = layer().layer(inner).oneshot(request).await.expect("served");
    let (parts, body) = body(response).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["content-type"], "application/json");
    assert_eq!(parts.headers["trailer-x-t"], "1");
    assert_eq!(&body[..], br#"{"status":"SERVING"}"#);
}

#[tokio::test]
async fn a_streams_messages_become_envelopes_and_its_status_the_end_of_stream() {
    let inner = tower::service_fn(|_req: Request<tonic::body::Body>| async move {
        Ok::<_, Infallible>(answer(&[b"\x08\x01", b"\x08\x02"], "5"))
    });
    let mut request_body = vec![0, 0, 0, 0, 2];
    request_body.extend_from_slice(b"{}");
    let request = Request::post("/grpc.health.v1.Health/Watch")
        .header("content-type", "application/connect+json")
        .body(Full::new(Bytes::from(request_body)))
        .expect("request");
    let response = layer().layer(inner).oneshot(request).await.expect("served");
    let (parts, body) = body(response).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["content-type"], "application/connect+json");
    let expected = [
        (0u8, r#"{"status":"SERVING"}"#),
        (0, r#"{"status":"NOT_SERVING"}"#),
        (
            2,
            r#"{"error":{"code":"not_found","message":"gone away"},"metadata":{"x-t":["1"]}}"#,
        ),
    ];
    let mut rest = &body[..];
    for (flags, data) in expected {
        assert_eq!(rest[0], flags);
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        assert_eq!(std::str::from_utf8(&rest[5..5 + len]).expect("text"), data);
        rest = &rest[5 + len..];
    }
    assert!(rest.is_empty());
}

#[tokio::test]
async fn grpc_requests_pass_through_unchanged() {
    let inner = tower::service_fn(|req: Request<tonic::body::Body>| async move {
        assert!(req.extensions().get::<Protocol>().is_none());
        assert_eq!(req.headers()["content-type"], "application/grpc");
        Ok::<_, Infallible>(answer(&[], "0"))
    });
    let request = Request::post("/grpc.health.v1.Health/Check")
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = layer().layer(inner).oneshot(request).await.expect("served");
    assert_eq!(response.headers()["content-type"], "application/grpc");
}
