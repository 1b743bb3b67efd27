//! End to end: clients authenticate with JWTs and per-method rules decide
//! who may call what; the instance receives the verified identity.

mod common;

use common::{Daemon, config_with, within};
use jsonwebtoken::{EncodingKey, Header, encode};
use myservice::pb::HelloRequest;
use myservice::pb::greeter_client::GreeterClient;
use router_runtime::bridge::BridgeConfig;
use serde_json::{Value, json};
use tonic::{Code, Request};

const SECRET: &str = "test-signing-secret";

fn daemon() -> Daemon {
    Daemon::start_with_env(
        &config_with(
            "[auth.jwt]\n\
             issuer = \"https://auth.test\"\n\
             audience = \"grpc-router\"\n\
             hmac_secret_env = \"TEST_JWT_SECRET\"\n\
             [[services.\"myservice.v1.Greeter\".allow]]\n\
             methods = [\"SayHello\"]\n\
             claims = { role = \"greeter\" }\n",
        ),
        &[("TEST_JWT_SECRET", SECRET)],
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn claims() -> Value {
    json!({
        "sub": "alice",
        "iss": "https://auth.test",
        "aud": "grpc-router",
        "exp": now() + 300,
        "role": "greeter",
    })
}

fn token(claims: &Value) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encodes")
}

fn hello(token: Option<&str>) -> Request<HelloRequest> {
    let mut request = Request::new(HelloRequest {
        name: "x".into(),
        payload: vec![],
    });
    let metadata = request.metadata_mut();
    metadata.insert("x-echo", "1".parse().expect("ascii"));
    // A forged identity, which the router must drop.
    metadata.insert("x-router-identity", "root".parse().expect("ascii"));
    if let Some(token) = token {
        metadata.insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    request
}

async fn serving_daemon() -> (Daemon, router_runtime::bridge::BridgeHandle) {
    let daemon = daemon();
    let instance = myservice::demo::start_instance(
        BridgeConfig::new(daemon.registrations_url()).instance_id("a"),
    );
    within(10, "registration", instance.registered()).await;
    (daemon, instance)
}

#[tokio::test]
async fn a_valid_token_with_the_role_calls_and_the_handler_sees_only_the_verified_identity() {
    let (daemon, _instance) = serving_daemon().await;
    let mut client = GreeterClient::new(daemon.channel().await);
    let response = within(5, "call", client.say_hello(hello(Some(&token(&claims())))))
        .await
        .expect("allowed");
    let identities: Vec<_> = response
        .metadata()
        .get_all("x-router-identity")
        .iter()
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(identities, ["alice"], "the handler saw {identities:?}");
}

#[tokio::test]
async fn missing_expired_and_wrong_audience_tokens_are_unauthenticated() {
    let (daemon, _instance) = serving_daemon().await;
    let mut client = GreeterClient::new(daemon.channel().await);
    let mut expired = claims();
    expired["exp"] = json!(now() - 600);
    let mut elsewhere = claims();
    elsewhere["aud"] = json!("billing");
    for (token, why) in [
        (None, "needs `authorization: Bearer"),
        (Some(token(&expired)), "expired"),
        (Some(token(&elsewhere)), "audience `grpc-router`"),
        (Some("garbage".to_owned()), "malformed"),
    ] {
        let status = within(5, "call", client.say_hello(hello(token.as_deref())))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains(why), "{why}: {status:?}");
    }
}

#[tokio::test]
async fn a_caller_without_the_role_or_for_another_method_is_permission_denied() {
    let (daemon, _instance) = serving_daemon().await;
    let mut client = GreeterClient::new(daemon.channel().await);
    let mut viewer = claims();
    viewer["role"] = json!("viewer");
    let status = within(5, "call", client.say_hello(hello(Some(&token(&viewer)))))
        .await
        .expect_err("denied");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("`alice` may not call"),
        "{status:?}"
    );

    let mut request = Request::new(());
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token(&claims()))
            .parse()
            .expect("ascii"),
    );
    let status = within(5, "call", client.who_am_i(request))
        .await
        .expect_err("no rule for WhoAmI");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}

#[tokio::test]
async fn tokens_not_valid_yet_are_unauthenticated_saying_when_they_become_valid() {
    let (daemon, _instance) = serving_daemon().await;
    let mut client = GreeterClient::new(daemon.channel().await);
    let mut in_an_hour = claims();
    in_an_hour["nbf"] = json!(now() + 3600);
    let mut in_a_day = claims();
    in_a_day["exp"] = json!(now() + 2 * 86_400);
    in_a_day["nbf"] = json!(now() + 86_400);
    let mut issued_in_an_hour = claims();
    issued_in_an_hour["iat"] = json!(now() + 3600);
    for (claims, why) in [
        (&in_an_hour, "not valid before"),
        (&in_a_day, "not valid before"),
        (&issued_in_an_hour, "issued in the future"),
    ] {
        // Twice: a refused token is not kept, so the second call is refused
        // as the first (not served from the verified-token cache).
        for _ in 0..2 {
            let status = within(5, "call", client.say_hello(hello(Some(&token(claims)))))
                .await
                .expect_err("not valid yet");
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
            assert!(status.message().contains(why), "{why}: {status:?}");
            assert!(status.message().contains("leeway 30s"), "{status:?}");
        }
    }
}

#[tokio::test]
async fn tokens_valid_within_the_leeway_are_accepted() {
    let (daemon, _instance) = serving_daemon().await;
    let mut client = GreeterClient::new(daemon.channel().await);
    let mut almost = claims();
    almost["nbf"] = json!(now() + 10);
    almost["iat"] = json!(now() + 10);
    within(5, "call", client.say_hello(hello(Some(&token(&almost)))))
        .await
        .expect("within the 30 s leeway");
}
