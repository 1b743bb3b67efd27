//! End to end: calls the router refuses (a bad token, a rate limit) are
//! shown in the service's recent errors with the reason and logged at the
//! default level, at most one line per second per service and reason; and
//! a per-client limit keyed by a header limits callers without it by their
//! address.

mod common;

use std::time::Instant;

use common::{Daemon, config_with, within};
use myservice::pb::HelloRequest;
use myservice::pb::greeter_client::GreeterClient;
use router_runtime::bridge::BridgeConfig;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

const GREETER: &str = "myservice.v1.Greeter";

fn hello() -> HelloRequest {
    HelloRequest {
        name: "x".into(),
        payload: vec![],
    }
}

async fn with_instance(daemon: &Daemon) -> router_runtime::bridge::BridgeHandle {
    let instance = myservice::demo::start_instance(
        BridgeConfig::new(daemon.registrations_url()).instance_id("a"),
    );
    within(10, "registration", instance.registered()).await;
    instance
}

#[tokio::test]
async fn a_call_refused_for_a_bad_token_is_logged_and_in_the_recent_errors() {
    let daemon = Daemon::start_with_env(
        &config_with(
            "[auth.jwt]\nissuer = \"https://auth.test\"\naudience = \"grpc-router\"\n\
             hmac_secret_env = \"TEST_JWT_SECRET\"\n",
        ),
        &[("TEST_JWT_SECRET", "test-signing-secret")],
    );
    let _instance = with_instance(&daemon).await;
    let mut client = GreeterClient::new(daemon.channel().await);
    let mut request = Request::new(hello());
    request
        .metadata_mut()
        .insert("authorization", "Bearer not-a-jwt".parse().expect("ascii"));
    let refused = within(5, "SayHello", client.say_hello(request))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    let line = daemon
        .log
        .wait_for(&["WARN", "call refused", "unauthenticated"], 10)
        .await;
    assert!(line.contains("/myservice.v1.Greeter/SayHello"), "{line}");
    assert!(line.contains("127.0.0.1"), "the caller's address: {line}");

    let status = daemon.service_status(GREETER).await.expect("known");
    let error = status
        .recent_errors
        .iter()
        .find(|e| e.code == Code::Unauthenticated as i32)
        .unwrap_or_else(|| panic!("no refusal in {:?}", status.recent_errors));
    assert_eq!(error.method, "/myservice.v1.Greeter/SayHello");
    assert_eq!(error.instance, "", "no instance took it");
    assert_eq!(
        error.message,
        refused.message(),
        "the reason as the client got it"
    );
}

#[tokio::test]
async fn rate_limit_refusals_are_logged_at_most_once_a_second() {
    let daemon = Daemon::start(&config_with(
        "[services.\"myservice.v1.Greeter\"]\nrate_limit = { per_second = 1, burst = 1 }\n",
    ));
    let _instance = with_instance(&daemon).await;
    daemon.wait_for_instances(GREETER, 1).await;
    let mut client = GreeterClient::new(daemon.channel().await);
    let began = Instant::now();
    let mut refused = 0u64;
    for _ in 0..50 {
        match within(5, "SayHello", client.say_hello(hello())).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::ResourceExhausted => refused += 1,
            Err(status) => panic!("{status:?}"),
        }
    }
    let seconds = began.elapsed().as_secs();
    assert!(refused > 0, "the limit refused some of 50 calls in a row");

    let line = daemon
        .log
        .wait_for(
            &[
                "INFO",
                "call refused",
                "rate-limit",
                "rate limit: `myservice.v1.Greeter`",
            ],
            10,
        )
        .await;
    assert!(line.contains("suppressed=0"), "the first line: {line}");
    let lines = daemon.log.matching(&["call refused"]).len() as u64;
    assert!(
        lines <= seconds + 2,
        "{lines} lines for {refused} refusals in {seconds}s: at most one a second"
    );

    let status = daemon.service_status(GREETER).await.expect("known");
    let in_ring = status
        .recent_errors
        .iter()
        .filter(|e| e.code == Code::ResourceExhausted as i32)
        .count() as u64;
    assert_eq!(
        in_ring,
        refused.min(20),
        "every refusal is in the recent errors (which keep 20)"
    );
}

async fn channel_from(daemon: &Daemon, local: [u8; 4]) -> Channel {
    within(
        5,
        "connect",
        Endpoint::from_shared(daemon.clients_url())
            .expect("url")
            .local_address(Some(std::net::IpAddr::from(local)))
            .connect(),
    )
    .await
    .expect("connects")
}

#[tokio::test]
async fn callers_without_the_limit_header_are_limited_each_by_its_address() {
    let daemon = Daemon::start(&config_with(
        "[services.\"myservice.v1.Greeter\"]\n\
         client_rate_limit = { key = \"header:x-api-key\", per_second = 1, burst = 1 }\n",
    ));
    let _instance = with_instance(&daemon).await;
    daemon.wait_for_instances(GREETER, 1).await;

    let mut first = GreeterClient::new(channel_from(&daemon, [127, 0, 0, 1]).await);
    let mut second = GreeterClient::new(channel_from(&daemon, [127, 0, 0, 2]).await);
    within(5, "first caller", first.say_hello(hello()))
        .await
        .expect("the first call of 127.0.0.1");
    within(5, "second caller", second.say_hello(hello()))
        .await
        .expect("127.0.0.2 has its own bucket, not one shared by every caller without the header");

    // However slow the machine, ten calls in a row are not ten seconds apart.
    let mut refusal = None;
    for _ in 0..10 {
        if let Err(status) = within(5, "first caller", first.say_hello(hello())).await {
            refusal = Some(status);
            break;
        }
    }
    let refusal = refusal.expect("127.0.0.1 is over its 1 call/s");
    assert_eq!(refusal.code(), Code::ResourceExhausted);
    assert!(
        refusal
            .message()
            .contains("client at `127.0.0.1` (no `x-api-key` header)"),
        "{refusal:?}"
    );
}
