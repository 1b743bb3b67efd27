//! End to end: the daemon with `[clients] grpc_web` and `[clients.cors]`
//! serves a browser's gRPC-Web call (HTTP/1.1) to a learnt service, and
//! answers the browser's preflight for an allowed origin only.

mod common;

use bytes::Bytes;
use common::{Daemon, config_with};
use http_body_util::Full;
use myservice::pb::{HelloReply, HelloRequest};
use prost::Message;
use router_runtime::bridge::BridgeConfig;
use test_kit::grpc_web::{self, send};

const GREETER: &str = "myservice.v1.Greeter";
const ORIGIN: &str = "http://app.example:8080";

/// A daemon serving gRPC-Web with CORS for [`ORIGIN`].
fn web_daemon() -> Daemon {
    let config = config_with(&format!(
        "[clients.cors]\nallowed_origins = [\"{ORIGIN}\"]\n"
    ))
    .replace(
        "[clients]\naddress = \"127.0.0.1:0\"\n",
        "[clients]\naddress = \"127.0.0.1:0\"\ngrpc_web = true\n",
    );
    assert!(config.contains("grpc_web = true"), "{config}");
    Daemon::start(&config)
}

#[tokio::test]
async fn a_browser_calls_a_learnt_service_with_grpc_web_through_the_daemon() {
    let daemon = web_daemon();
    let _instance = myservice::demo::start_instance(
        BridgeConfig::new(daemon.registrations_url()).instance_id("web-a"),
    );
    daemon.wait_for_instances(GREETER, 1).await;

    let framed = grpc_web::frame(&HelloRequest {
        name: "Ada".into(),
        payload: vec![],
    });
    let call = http::Request::post(format!("{}/{GREETER}/SayHello", daemon.clients_url()))
        .header("origin", ORIGIN)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(Full::new(Bytes::from(framed)))
        .expect("request");
    let answer = send(call).await;
    assert_eq!(answer.status(), http::StatusCode::OK);
    assert_eq!(answer.headers()["access-control-allow-origin"], ORIGIN);
    let (messages, trailers) = grpc_web::frames(answer.into_body());
    let replies: Vec<HelloReply> = messages
        .into_iter()
        .map(|m| HelloReply::decode(m).expect("a HelloReply"))
        .collect();
    assert_eq!(replies.len(), 1, "{trailers}");
    assert_eq!(replies[0].instance_id, "web-a");
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
}

#[tokio::test]
async fn the_daemon_answers_preflights_of_the_allowed_origin_only() {
    let daemon = web_daemon();
    let preflight = |origin: &str| {
        http::Request::builder()
            .method(http::Method::OPTIONS)
            .uri(format!("{}/{GREETER}/SayHello", daemon.clients_url()))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-grpc-web")
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let allowed = send(preflight(ORIGIN)).await;
    assert!(allowed.status().is_success(), "{allowed:?}");
    assert_eq!(allowed.headers()["access-control-allow-origin"], ORIGIN);
    let other = send(preflight("https://evil.example")).await;
    assert!(
        !other.headers().contains_key("access-control-allow-origin"),
        "{:?}",
        other.headers()
    );
}
