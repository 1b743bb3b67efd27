//! What clients see when instances are missing, die, or stall.

use test_kit as common;

use std::time::{Duration, Instant};

use common::test_greeter::{Event, TestGreeter};
use common::{TestRouter, start_instance, within};
use myservice::pb::HelloRequest;
use router_runtime::router::RouterConfig;
use tonic::Code;

fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.into(),
        payload: vec![],
    }
}

#[tokio::test]
async fn no_registered_instance_fails_at_once_with_unavailable_naming_the_service() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let mut client = router.client().await;
    let started = Instant::now();
    let status = within(5, "call", client.say_hello(hello("x")))
        .await
        .expect_err("no instance");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("myservice.v1.Greeter"),
        "{}",
        status.message()
    );
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn instance_dying_mid_call_fails_the_call_with_unavailable_promptly() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let (greeter, mut events) = TestGreeter::new("a");
    let instance = start_instance(&router, "a", greeter).await;
    let mut client = router.client().await;
    let mut stream = common::open_endless_stream(&mut client, 10).await;
    within(5, "first message", stream.message())
        .await
        .expect("ok")
        .expect("message");
    let pending_unary = {
        let mut client = client.clone();
        tokio::spawn(async move { client.say_hello(hello("slow:60000")).await })
    };
    loop {
        match within(5, "slow handler to start", events.recv()).await {
            Some(Event::SlowStarted) => break,
            Some(_) => continue,
            None => panic!("events closed"),
        }
    }
    assert_eq!(router.router.stats().calls_active(), 2);

    let died = Instant::now();
    instance.abort().await;

    let status = loop {
        match within(5, "stream failure", stream.message()).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended cleanly after its instance died"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let unary = within(5, "unary failure", pending_unary)
        .await
        .expect("task")
        .expect_err("unary fails");
    assert_eq!(unary.code(), Code::Unavailable, "{unary:?}");
    assert!(
        died.elapsed() < Duration::from_secs(2),
        "{:?}",
        died.elapsed()
    );
    router.wait_for_instances(0).await;
    within(
        5,
        "router state to clear",
        router.router.stats().wait_idle(),
    )
    .await;
}

#[tokio::test]
async fn a_stalled_stream_does_not_delay_other_calls_and_stays_within_its_window() {
    let config = RouterConfig::default();
    let window = config.initial_window as usize;
    let frame = config.max_frame_size as usize;
    let router = TestRouter::start(config).await;
    let (greeter, mut events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter).await;
    let mut client = router.client().await;

    // A stream of 32 KiB messages whose client reads one message, then stops.
    let mut stalled = common::open_endless_stream(&mut client, 32 * 1024).await;
    within(5, "first message", stalled.message())
        .await
        .expect("ok")
        .expect("message");
    // Every buffer between the handler and the client is full once the
    // handler's producer blocks.
    common::producer_blocked(&mut events, 10).await;

    let instances = router.router.registry().snapshot();
    let buffered = instances[0].buffered_response_bytes();
    assert_eq!(buffered.len(), 1);
    assert!(
        buffered[0] <= window + frame,
        "router buffers {} bytes for the stalled call; window {window} + frame {frame}",
        buffered[0]
    );

    // Unary calls on the same instance and the same register stream are not
    // delayed by it.
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        let reply = within(
            5,
            "unary beside a stalled stream",
            client.say_hello(hello(&format!("u{i}"))),
        )
        .await
        .expect("unary succeeds");
        worst = worst.max(started.elapsed());
        assert_eq!(reply.into_inner().message, format!("Hello, u{i}!"));
    }
    eprintln!(
        "stalled call: router buffers {buffered:?} bytes (limit {}); slowest unary {worst:?}",
        window + frame
    );
    assert!(
        worst < Duration::from_millis(100),
        "slowest unary took {worst:?}"
    );
    let buffered = router.router.registry().snapshot()[0].buffered_response_bytes();
    assert!(
        buffered.iter().all(|b| *b <= window + frame),
        "{buffered:?}"
    );
    drop(stalled);
}

/// Waits until the bridge reports an error and returns it.
async fn first_error(handle: &router_runtime::bridge::BridgeHandle) -> String {
    let mut state = handle.registrations();
    within(10, "the bridge to report an error", async {
        loop {
            if let Some(error) = state
                .borrow_and_update()
                .last_error
                .as_ref()
                .map(ToString::to_string)
            {
                return error;
            }
            if state.changed().await.is_err() {
                return "the bridge's state closed without an error".to_owned();
            }
        }
    })
    .await
}

#[tokio::test]
async fn an_endpoint_without_a_scheme_is_refused_at_once_with_the_fix() {
    use router_runtime::bridge::{BridgeConfig, EndpointError};
    let options = BridgeConfig::new("127.0.0.1:50051").instance_id("a");
    assert!(matches!(
        options.validate(),
        Err(EndpointError::MissingScheme { .. })
    ));
    let (greeter, _events) = TestGreeter::new("a");
    let handle = myservice::pb::GreeterBridge::new(greeter).connect(options);
    let error = first_error(&handle).await;
    assert!(
        error.contains("has no scheme") && error.contains("http://127.0.0.1:50051"),
        "{error}"
    );
    handle.abort().await;
}

#[tokio::test]
async fn a_connection_failure_reports_its_underlying_cause() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let options = router_runtime::bridge::BridgeConfig::new(format!("http://127.0.0.1:{port}"))
        .instance_id("a");
    let (greeter, _events) = TestGreeter::new("a");
    let handle = myservice::pb::GreeterBridge::new(greeter).connect(options);
    let error = first_error(&handle).await;
    assert!(
        error.contains("refused"),
        "the cause, not only `transport error`: {error}"
    );
    handle.abort().await;
}
