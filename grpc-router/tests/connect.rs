//! End to end: the daemon with `[clients] connect` serves Connect clients
//! (HTTP/1.1, JSON) for a learnt service, whose descriptors came with its
//! registration, and client JWTs apply to Connect calls as to gRPC calls.

mod common;

use bytes::Bytes;
use common::{Daemon, config_with, within};
use http_body_util::Full;
use jsonwebtoken::{EncodingKey, Header, encode};
use router_runtime::bridge::BridgeConfig;
use serde_json::{Value, json};
use test_kit::connect::{envelope, envelopes};
use test_kit::grpc_web::send;

const GREETER: &str = "myservice.v1.Greeter";
const SECRET: &str = "connect-signing-secret";

/// `config_with(extra)` with `connect = true` in `[clients]`.
fn connect_config(extra: &str) -> String {
    let config = config_with(extra).replace(
        "[clients]\naddress = \"127.0.0.1:0\"\n",
        "[clients]\naddress = \"127.0.0.1:0\"\nconnect = true\n",
    );
    assert!(config.contains("connect = true"), "{config}");
    config
}

async fn with_instance(daemon: &Daemon) -> router_runtime::bridge::BridgeHandle {
    let instance = myservice::demo::start_instance(
        BridgeConfig::new(daemon.registrations_url()).instance_id("learnt-a"),
    );
    daemon.wait_for_instances(GREETER, 1).await;
    instance
}

fn post(
    daemon: &Daemon,
    method: &str,
    content_type: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, String)],
) -> http::Request<Full<Bytes>> {
    let mut request = http::Request::post(format!("{}/{GREETER}/{method}", daemon.clients_url()))
        .header("content-type", content_type);
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    request.body(Full::new(body.into())).expect("request")
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn a_learnt_service_is_called_with_json_through_the_daemon() {
    let daemon = Daemon::start(&connect_config(""));
    let _instance = with_instance(&daemon).await;

    let answer = send(post(
        &daemon,
        "SayHello",
        "application/json",
        r#"{"name":"Ada"}"#,
        &[],
    ))
    .await;
    assert_eq!(answer.status(), http::StatusCode::OK, "{answer:?}");
    assert_eq!(
        json_of(answer.body()),
        json!({"message": "Hello, Ada!", "instanceId": "learnt-a"})
    );

    let answer = send(post(
        &daemon,
        "StreamGreetings",
        "application/connect+json",
        envelope(0, br#"{"name":"Grace","count":2}"#),
        &[],
    ))
    .await;
    let frames = envelopes(answer.into_body());
    assert_eq!(frames.len(), 3, "{frames:?}");
    assert_eq!(json_of(&frames[1].1)["message"], "Hello #1, Grace!");
    assert_eq!(frames[2].0, 2);

    // The calls are counted as any call is (the stream too).
    let metrics = daemon.http_request("/metrics", &[]).await.body;
    for (method, kind) in [("SayHello", "unary"), ("StreamGreetings", "server_stream")] {
        let counted = metrics.lines().any(|line| {
            line.starts_with("grpc_server_handled_total{")
                && line.contains(&format!("grpc_method=\"{method}\""))
                && line.contains(&format!("grpc_type=\"{kind}\""))
                && line.contains("grpc_code=\"OK\"")
                && line.ends_with(" 1")
        });
        assert!(counted, "{method} is not counted once:\n{metrics}");
    }

    // An unknown field is refused by the router, naming it.
    let answer = send(post(
        &daemon,
        "SayHello",
        "application/json",
        r#"{"nom":"x"}"#,
        &[],
    ))
    .await;
    assert_eq!(answer.status().as_u16(), 400);
    assert!(
        json_of(answer.body())["message"]
            .to_string()
            .contains("nom")
    );
}

#[tokio::test]
async fn without_the_setting_the_daemon_does_not_speak_connect() {
    let daemon = Daemon::start(&config_with(""));
    let _instance = with_instance(&daemon).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let answer = within(
        10,
        "an HTTP/1.1 request",
        client.request(post(&daemon, "SayHello", "application/json", "{}", &[])),
    )
    .await;
    assert!(
        answer.is_err(),
        "an HTTP/2-only listener has no HTTP/1.1 answer: {answer:?}"
    );
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn token(role: &str) -> String {
    let claims = json!({
        "sub": "alice",
        "iss": "https://auth.test",
        "aud": "grpc-router",
        "exp": now() + 300,
        "role": role,
    });
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encodes")
}

#[tokio::test]
async fn client_jwts_apply_to_connect_calls_as_to_grpc_calls() {
    let daemon = Daemon::start_with_env(
        &connect_config(
            "[auth.jwt]\n\
             issuer = \"https://auth.test\"\n\
             audience = \"grpc-router\"\n\
             hmac_secret_env = \"TEST_JWT_SECRET\"\n\
             [[services.\"myservice.v1.Greeter\".allow]]\n\
             methods = [\"SayHello\"]\n\
             claims = { role = \"greeter\" }\n",
        ),
        &[("TEST_JWT_SECRET", SECRET)],
    );
    let _instance = with_instance(&daemon).await;
    let call = |headers: Vec<(&'static str, String)>| {
        send(post(
            &daemon,
            "SayHello",
            "application/json",
            r#"{"name":"x"}"#,
            &headers,
        ))
    };

    let missing = call(vec![]).await;
    assert_eq!(missing.status().as_u16(), 401);
    assert_eq!(json_of(missing.body())["code"], "unauthenticated");

    let wrong_role = call(vec![(
        "authorization",
        format!("Bearer {}", token("visitor")),
    )])
    .await;
    assert_eq!(wrong_role.status().as_u16(), 403);
    assert_eq!(json_of(wrong_role.body())["code"], "permission_denied");

    let allowed = call(vec![
        ("authorization", format!("Bearer {}", token("greeter"))),
        ("x-echo", "1".into()),
        ("x-router-identity", "root".into()),
    ])
    .await;
    assert_eq!(allowed.status(), http::StatusCode::OK, "{allowed:?}");
    let identities: Vec<_> = allowed
        .headers()
        .get_all("x-router-identity")
        .iter()
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(identities, ["alice"], "the handler saw {identities:?}");
}

#[tokio::test]
async fn calls_are_counted_by_the_protocol_the_client_used() {
    let config =
        connect_config("").replace("connect = true\n", "connect = true\ngrpc_web = true\n");
    let daemon = Daemon::start(&config);
    let _instance = with_instance(&daemon).await;
    let hello = myservice::pb::HelloRequest {
        name: "Ada".into(),
        payload: vec![],
    };

    let mut grpc = myservice::pb::greeter_client::GreeterClient::new(daemon.channel().await);
    within(5, "gRPC call", grpc.say_hello(hello.clone()))
        .await
        .expect("gRPC");
    let web = send(post(
        &daemon,
        "SayHello",
        "application/grpc-web+proto",
        test_kit::grpc_web::frame(&hello),
        &[],
    ))
    .await;
    assert_eq!(web.status(), http::StatusCode::OK, "{web:?}");
    for _ in 0..2 {
        let connect = send(post(
            &daemon,
            "SayHello",
            "application/json",
            r#"{"name":"Ada"}"#,
            &[],
        ))
        .await;
        assert_eq!(connect.status(), http::StatusCode::OK, "{connect:?}");
    }

    let (_, metrics) = daemon.http_get("/metrics").await;
    for (protocol, calls) in [("grpc", 1), ("grpc-web", 1), ("connect", 2)] {
        let line = format!(
            "grpc_router_calls_by_protocol_total{{grpc_service=\"{GREETER}\",protocol=\"{protocol}\"}} {calls}"
        );
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}
