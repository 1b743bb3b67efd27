//! End to end through the daemon: `max_concurrent_calls` from the config
//! file refuses calls over it, is shown by the admin service, `/status.json`
//! and the metrics, and a reload (SIGHUP) changes it without dropping the
//! calls in flight.

mod common;

use common::{Daemon, config_with, poll, within};
use myservice::pb::greeter_client::GreeterClient;
use myservice::pb::{HelloRequest, StreamRequest};
use router_runtime::bridge::BridgeConfig;
use tonic::Code;

const SERVICE: &str = "myservice.v1.Greeter";

fn config(limit: u32) -> String {
    config_with(&format!(
        "[services.\"{SERVICE}\"]\nmax_concurrent_calls = {limit}\n\
         [services.\"{SERVICE}\".methods.Sum]\nmax_concurrent_calls = 1\n"
    ))
}

fn hello() -> HelloRequest {
    HelloRequest {
        name: "x".into(),
        payload: vec![],
    }
}

/// A server stream of a million messages the client reads one of and then
/// holds: a call in flight until it is dropped.
async fn held_stream(
    client: &mut GreeterClient<tonic::transport::Channel>,
) -> tonic::Streaming<myservice::pb::HelloReply> {
    let mut stream = within(
        5,
        "stream",
        client.stream_greetings(StreamRequest {
            name: "held".into(),
            count: 1_000_000,
            payload_size: 16,
        }),
    )
    .await
    .expect("stream starts")
    .into_inner();
    within(5, "first message", stream.message())
        .await
        .expect("message")
        .expect("one");
    stream
}

#[tokio::test]
async fn the_config_limit_refuses_calls_over_it_and_a_reload_raises_it_without_dropping_calls() {
    let daemon = Daemon::start(&config(1));
    let instance = myservice::demo::start_instance(
        BridgeConfig::new(daemon.registrations_url()).instance_id("a"),
    );
    within(10, "registration", instance.registered()).await;
    let mut client = GreeterClient::new(daemon.channel().await);
    let mut held = held_stream(&mut client).await;

    let refused = within(5, "SayHello", client.say_hello(hello()))
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("max_concurrent_calls"),
        "{refused:?}"
    );

    let status = daemon.service_status(SERVICE).await.expect("known");
    let limits: Vec<_> = status
        .concurrency_limits
        .iter()
        .map(|l| (l.method.as_str(), l.max_calls, l.in_flight, l.refused))
        .collect();
    assert_eq!(limits, [("", 1, 1, 1), ("Sum", 1, 0, 0)]);
    let (_, json) = daemon.http_get("/status.json").await;
    assert!(json.contains("\"concurrency_limits\""), "{json}");
    let (_, metrics) = daemon.http_get("/metrics").await;
    let line =
        format!("grpc_router_concurrency_refused_calls_total{{grpc_service=\"{SERVICE}\"}} 1");
    assert!(metrics.contains(&line), "{line} in\n{metrics}");

    // A reload raises the limit: the held stream goes on, and a new call
    // fits beside it.
    let mark = daemon.log.mark();
    daemon.reload(&config(2));
    daemon
        .log
        .wait_for_after(mark, &["configuration reloaded"], 10)
        .await;
    within(5, "the held stream's next message", held.message())
        .await
        .expect("the reload dropped no call")
        .expect("a message");
    within(5, "SayHello", client.say_hello(hello()))
        .await
        .expect("under the raised limit");
    let status = daemon.service_status(SERVICE).await.expect("known");
    assert_eq!(status.concurrency_limits[0].max_calls, 2);
    assert_eq!(status.concurrency_limits[0].in_flight, 1, "the held stream");

    // A reload that removes the limits: no limit reported, calls pass.
    let mark = daemon.log.mark();
    daemon.reload(&config_with(""));
    daemon
        .log
        .wait_for_after(mark, &["configuration reloaded"], 10)
        .await;
    poll(5, "the limits to go", || async {
        let status = daemon.service_status(SERVICE).await?;
        status.concurrency_limits.is_empty().then_some(())
    })
    .await;
    drop(held);
    within(5, "SayHello", client.say_hello(hello()))
        .await
        .expect("no limit");
}
