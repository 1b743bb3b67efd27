//! Metadata, statuses, deadlines and cancellation pass through the router
//! exactly as if the client had called the instance directly.

use test_kit as common;

use std::time::{Duration, Instant};

use common::test_greeter::{Event, TestGreeter, requested_status};
use common::{TestRouter, start_instance, within};
use myservice::pb::{HelloRequest, StreamRequest};
use router_runtime::router::RouterConfig;
use tokio::sync::mpsc;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::{Code, Request};

fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.into(),
        payload: vec![],
    }
}

/// The next event other than a slow handler's start.
async fn next_event(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    loop {
        match within(5, "handler event", events.recv()).await {
            Some(Event::SlowStarted) => continue,
            Some(event) => return event,
            None => panic!("the handler's events ended"),
        }
    }
}

#[tokio::test]
async fn request_metadata_reaches_the_handler_unchanged() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let (greeter, mut events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter).await;
    let mut client = router.client().await;

    let mut request = Request::new(hello("echo"));
    let md = request.metadata_mut();
    md.append("x-repeated", MetadataValue::from_static("first"));
    md.append("x-repeated", MetadataValue::from_static("second"));
    md.insert("x-plain", MetadataValue::from_static("plain value"));
    md.insert_bin(
        "x-blob-bin",
        MetadataValue::from_bytes(&[0, 1, 2, 3, 255, 128]),
    );
    within(5, "echo call", client.say_hello(request))
        .await
        .expect("call succeeds");

    let Event::Metadata(seen) = next_event(&mut events).await else {
        panic!("expected the handler's metadata");
    };
    let repeated: Vec<_> = seen
        .get_all("x-repeated")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect();
    assert_eq!(repeated, ["first", "second"]);
    assert_eq!(
        seen.get("x-plain").and_then(|v| v.to_str().ok()),
        Some("plain value")
    );
    let blob = seen
        .get_bin("x-blob-bin")
        .expect("binary metadata arrives")
        .to_bytes()
        .expect("valid base64");
    assert_eq!(&blob[..], &[0, 1, 2, 3, 255, 128]);
    // The client's own user agent reaches the handler, as it would directly.
    assert!(seen.get("user-agent").is_some());
}

#[tokio::test]
async fn response_headers_set_by_the_handler_reach_the_client() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let (greeter, _events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter).await;
    let mut client = router.client().await;
    let response = within(5, "echo call", client.say_hello(hello("echo")))
        .await
        .expect("call succeeds");
    let md = response.metadata();
    assert_eq!(
        md.get("x-response-header").and_then(|v| v.to_str().ok()),
        Some("from handler")
    );
    let raw = md
        .get_bin("x-response-bin")
        .expect("binary header")
        .to_bytes()
        .expect("base64");
    assert_eq!(&raw[..], &[9, 8, 7, 0]);
}

#[tokio::test]
async fn trailing_metadata_of_a_successful_stream_reaches_the_client() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let (greeter, _events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter).await;
    let mut client = router.client().await;
    let response = within(
        5,
        "stream",
        client.stream_greetings(StreamRequest {
            name: "trailers".into(),
            count: 3,
            payload_size: 0,
        }),
    )
    .await
    .expect("stream starts");
    assert_eq!(
        response
            .metadata()
            .get("x-stream-header")
            .and_then(|v| v.to_str().ok()),
        Some("streaming")
    );
    let mut stream = response.into_inner();
    let mut n = 0;
    while within(5, "message", stream.message())
        .await
        .expect("ok")
        .is_some()
    {
        n += 1;
    }
    assert_eq!(n, 3);
    let trailers = within(5, "trailers", stream.trailers())
        .await
        .expect("ok")
        .expect("trailers present");
    assert_eq!(
        trailers.get("x-trailer").and_then(|v| v.to_str().ok()),
        Some("done")
    );
}

#[tokio::test]
async fn every_status_code_arrives_with_message_details_and_trailers_identical() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let (greeter, _events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter.clone()).await;
    let direct = common::start_direct(greeter).await;
    let mut routed_client = router.client().await;
    let mut direct_client = common::connect(direct).await;

    for code in 1..=16 {
        let routed = within(
            5,
            "routed status",
            routed_client.say_hello(hello(&format!("status:{code}"))),
        )
        .await
        .expect_err("the handler fails");
        let direct = within(
            5,
            "direct status",
            direct_client.say_hello(hello(&format!("status:{code}"))),
        )
        .await
        .expect_err("the handler fails");
        let expected = requested_status(code);
        assert_eq!(routed.code(), expected.code(), "code {code}");
        assert_eq!(
            routed.message(),
            expected.message(),
            "message of code {code}"
        );
        assert_eq!(
            routed.details(),
            expected.details(),
            "details of code {code}"
        );
        assert_eq!(routed.code(), direct.code());
        assert_eq!(routed.message(), direct.message());
        assert_eq!(routed.details(), direct.details());
        assert_eq!(
            routed
                .metadata()
                .get("x-trailer")
                .map(|v| v.as_bytes().to_vec()),
            direct
                .metadata()
                .get("x-trailer")
                .map(|v| v.as_bytes().to_vec()),
            "trailer x-trailer of code {code}"
        );
        let bin = MetadataKey::from_static("x-trailer-bin");
        assert_eq!(
            routed
                .metadata()
                .get_bin(bin.clone())
                .and_then(|v| v.to_bytes().ok()),
            direct
                .metadata()
                .get_bin(bin)
                .and_then(|v| v.to_bytes().ok()),
            "binary trailer of code {code}"
        );
    }
}

#[tokio::test]
async fn deadline_expiry_fails_the_client_with_deadline_exceeded_and_cancels_the_handler() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let (greeter, mut events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter).await;
    // A client that only sends `grpc-timeout` and keeps no timer: what it
    // sees is the router's own enforcement.
    let mut client = common::bare_client(router.addr);
    let mut request = Request::new(hello("slow:10000"));
    request
        .metadata_mut()
        .insert("grpc-timeout", MetadataValue::from_static("200m"));
    let started = Instant::now();
    let status = within(5, "deadline", client.say_hello(request))
        .await
        .expect_err("the deadline expires");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(190) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    match next_event(&mut events).await {
        Event::HandlerDropped(name) => assert_eq!(name, "say_hello"),
        other => panic!("expected the handler to be dropped, got {other:?}"),
    }
    within(
        5,
        "router state to clear",
        router.router.stats().wait_idle(),
    )
    .await;
}

#[tokio::test]
async fn tonic_client_timeout_fails_at_its_deadline_and_cancels_the_handler() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let (greeter, mut events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter.clone()).await;
    let direct = common::start_direct(greeter).await;
    let mut routed_client = router.client().await;
    let mut direct_client = common::connect(direct).await;
    let mut outcomes = Vec::new();
    for client in [&mut routed_client, &mut direct_client] {
        let mut request = Request::new(hello("slow:10000"));
        request.set_timeout(Duration::from_millis(200));
        let started = Instant::now();
        let status = within(5, "deadline", client.say_hello(request))
            .await
            .expect_err("the deadline expires");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(190) && elapsed < Duration::from_secs(2),
            "{elapsed:?}"
        );
        outcomes.push((status.code(), status.message().to_owned()));
        match next_event(&mut events).await {
            Event::HandlerDropped(name) => assert_eq!(name, "say_hello"),
            other => panic!("expected the handler to be dropped, got {other:?}"),
        }
    }
    // Directly, tonic's own client timer reports CANCELLED "Timeout expired".
    // Routed, that timer and the router's deadline (DEADLINE_EXCEEDED, which
    // fires a tick before tonic's server-side timer) expire within a
    // millisecond of each other: the client sees one of the two.
    let timer = (Code::Cancelled, "Timeout expired".to_owned());
    assert_eq!(outcomes[1], timer, "direct");
    assert!(
        outcomes[0] == timer || outcomes[0].0 == Code::DeadlineExceeded,
        "routed: {:?}",
        outcomes[0]
    );
    within(
        5,
        "router state to clear",
        router.router.stats().wait_idle(),
    )
    .await;
}

#[tokio::test]
async fn client_dropping_a_server_stream_closes_the_handler_stream_and_router_state() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let (greeter, mut events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter).await;
    let mut client = router.client().await;
    let mut stream = common::open_endless_stream(&mut client, 10).await;
    for _ in 0..10 {
        within(5, "message", stream.message())
            .await
            .expect("ok")
            .expect("more");
    }
    assert_eq!(router.router.stats().calls_active(), 1);
    drop(stream);
    loop {
        match next_event(&mut events).await {
            Event::StreamClosed(name) => {
                assert_eq!(name, "endless");
                break;
            }
            Event::ProducerBlocked(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    within(
        5,
        "router state to clear",
        router.router.stats().wait_idle(),
    )
    .await;
    let instances = router.router.registry().snapshot();
    assert_eq!(instances[0].calls_in_flight(), 0);
    assert_eq!(instances[0].outstanding(), 0);
}

#[tokio::test]
async fn the_handler_sees_the_client_address_as_in_a_direct_call() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let (greeter, _events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter).await;
    let mut client = router.client().await;
    let reply = within(5, "peer call", client.say_hello(hello("peer")))
        .await
        .expect("call succeeds")
        .into_inner()
        .message;
    let (remote, local) = reply.split_once('|').expect("two addresses");
    // The router's address the client dialled, and the client's own address:
    // not the bridge's in-memory request, not the bridge's connection.
    assert_eq!(local, format!("{:?}", Some(router.addr)));
    assert!(remote.starts_with("Some(127.0.0.1:"), "{remote}");
    assert_ne!(remote, format!("{:?}", Some(router.addr)));
}
