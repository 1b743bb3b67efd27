//! Scale to zero on a compiled router: with `wait_for_instance`, a call that
//! finds no instance waits for one (within its deadline and the bound) and
//! proceeds once one registers; the waiting calls are bounded, and a client
//! that gives up frees its slot at once.

use test_kit as common;

use std::time::Duration;

use common::{TestRouter, hello, start_instance, within};
use myservice::greeter::GreeterImpl;
use myservice::pb::HelloRequest;
use router_runtime::router::{RouterConfig, WaitForInstance, WaitingNow};
use tokio::time::Instant;
use tonic::Code;

fn waiting_router(waiting: WaitForInstance) -> RouterConfig {
    RouterConfig::default().with_wait_for_instance(waiting)
}

/// Waits until the router's waiting calls satisfy `pred`.
async fn until_waiting(router: &TestRouter, what: &str, pred: impl FnMut(&WaitingNow) -> bool) {
    let mut rx = router.router.waiting().subscribe();
    within(10, what, rx.wait_for(pred))
        .await
        .expect("router alive");
}

#[tokio::test]
async fn a_call_with_no_instance_succeeds_once_an_instance_registers_2s_later() {
    let router = TestRouter::start(waiting_router(WaitForInstance::new(Duration::from_secs(
        30,
    ))))
    .await;
    let mut client = router.client().await;
    let started = Instant::now();
    let call = tokio::spawn(async move { client.say_hello(hello("cold")).await });
    until_waiting(&router, "the call to wait", |w| w.calls == 1).await;
    // The instance's cold start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _instance = start_instance(&router, "late", GreeterImpl::new("late")).await;
    let reply = within(10, "the waiting call", call)
        .await
        .expect("task")
        .expect("the waiting call succeeds once an instance registers");
    assert_eq!(reply.into_inner().instance_id, "late");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(router.router.waiting().now().calls, 0);
}

#[tokio::test]
async fn a_deadline_shorter_than_the_wait_fails_deadline_exceeded_at_its_deadline() {
    let router = TestRouter::start(waiting_router(WaitForInstance::new(Duration::from_secs(
        30,
    ))))
    .await;
    // A client that only sends `grpc-timeout` and keeps no timer of its
    // own: what it sees is the router's.
    let mut client = common::bare_client(router.addr);
    let mut request = tonic::Request::new(hello("hurried"));
    request.metadata_mut().insert(
        "grpc-timeout",
        tonic::metadata::MetadataValue::from_static("400m"),
    );
    let started = Instant::now();
    let status = within(10, "the call", client.say_hello(request))
        .await
        .expect_err("no instance came");
    let took = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("waited"),
        "the router's own status: {status:?}"
    );
    assert!(
        took >= Duration::from_millis(390) && took < Duration::from_millis(900),
        "ended at its deadline, not before or long after: {took:?}"
    );
    assert_eq!(router.router.waiting().now().calls, 0);
}

#[tokio::test]
async fn a_call_waits_the_bound_then_fails_unavailable_saying_how_long() {
    let router = TestRouter::start(waiting_router(WaitForInstance::new(Duration::from_millis(
        300,
    ))))
    .await;
    let mut client = router.client().await;
    let started = Instant::now();
    let status = within(10, "the call", client.say_hello(hello("x")))
        .await
        .expect_err("no instance came");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("waited 300 ms"),
        "says it waited and how long: {status:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn without_wait_for_instance_a_call_with_no_instance_fails_at_once() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let mut client = router.client().await;
    let started = Instant::now();
    let status = within(10, "the call", client.say_hello(hello("x")))
        .await
        .expect_err("no instance");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(!status.message().contains("waited"), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_flood_of_waiting_calls_beyond_the_bound_fails_resource_exhausted_at_once() {
    const MAX_CALLS: usize = 20;
    const MAX_BYTES: usize = 1024 * 1024;
    let router = TestRouter::start(waiting_router(WaitForInstance {
        max_calls: MAX_CALLS,
        max_bytes: MAX_BYTES,
        ..WaitForInstance::new(Duration::from_secs(30))
    }))
    .await;
    let channel = router.channel().await;
    // 100 KiB each: the bytes bound holds 10 of them.
    let big = HelloRequest {
        name: "big".into(),
        payload: vec![7; 100 * 1024],
    };
    let mut waiting = Vec::new();
    for _ in 0..10 {
        let mut client = myservice::pb::greeter_client::GreeterClient::new(channel.clone());
        let request = big.clone();
        waiting.push(tokio::spawn(async move { client.say_hello(request).await }));
    }
    until_waiting(&router, "ten large calls to wait", |w| w.calls == 10).await;
    let mut client = router.client().await;
    let started = Instant::now();
    let status = within(
        5,
        "a call over the bytes bound",
        client.say_hello(big.clone()),
    )
    .await
    .expect_err("over the bound");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_waiting_bytes"), "{status:?}");
    // Small calls fill the count bound; a flood beyond it is refused at once.
    for _ in 10..MAX_CALLS {
        let mut client = myservice::pb::greeter_client::GreeterClient::new(channel.clone());
        waiting.push(tokio::spawn(async move {
            client.say_hello(hello("small")).await
        }));
    }
    until_waiting(&router, "the bound to fill", |w| w.calls == MAX_CALLS).await;
    let mut refused = Vec::new();
    for _ in 0..200 {
        let mut client = myservice::pb::greeter_client::GreeterClient::new(channel.clone());
        refused.push(tokio::spawn(async move {
            client.say_hello(hello("flood")).await
        }));
    }
    for call in refused {
        let status = within(5, "a refused call", call)
            .await
            .expect("task")
            .expect_err("over the bound");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not after waiting"
    );
    let now = router.router.waiting().now();
    assert_eq!(now.calls, MAX_CALLS);
    assert!(now.bytes <= MAX_BYTES, "held bytes stay bounded: {now:?}");
    // The waiting calls all proceed once an instance comes.
    let _instance = start_instance(&router, "i", GreeterImpl::new("i")).await;
    for call in waiting {
        within(10, "a waiting call", call)
            .await
            .expect("task")
            .expect("served once the instance came");
    }
}

#[tokio::test]
async fn a_cancelled_waiting_call_releases_its_slot_at_once() {
    let router = TestRouter::start(waiting_router(WaitForInstance {
        max_calls: 1,
        ..WaitForInstance::new(Duration::from_secs(30))
    }))
    .await;
    let mut client = router.client().await;
    let call = tokio::spawn(async move { client.say_hello(hello("leaving")).await });
    until_waiting(&router, "the call to wait", |w| w.calls == 1).await;
    // The client gives up: its stream is reset.
    call.abort();
    until_waiting(&router, "the slot to be released", |w| w.calls == 0).await;
    // The one slot is free for the next call.
    let mut client = router.client().await;
    let next = tokio::spawn(async move { client.say_hello(hello("next")).await });
    until_waiting(&router, "the next call to wait", |w| w.calls == 1).await;
    let _instance = start_instance(&router, "i", GreeterImpl::new("i")).await;
    within(10, "the next call", next)
        .await
        .expect("task")
        .expect("served");
}

#[tokio::test]
async fn a_call_waits_for_a_draining_instance_to_be_replaced() {
    let router = TestRouter::start(waiting_router(WaitForInstance::new(Duration::from_secs(
        30,
    ))))
    .await;
    let first = start_instance(&router, "old", GreeterImpl::new("old")).await;
    within(10, "the drain", first.shutdown()).await;
    router.wait_for_instances(0).await;
    let mut client = router.client().await;
    let call = tokio::spawn(async move { client.say_hello(hello("x")).await });
    until_waiting(&router, "the call to wait", |w| w.calls == 1).await;
    let _new = start_instance(&router, "new", GreeterImpl::new("new")).await;
    let reply = within(10, "the waiting call", call)
        .await
        .expect("task")
        .expect("served by the new instance");
    assert_eq!(reply.into_inner().instance_id, "new");
}

#[tokio::test]
async fn a_call_waits_for_an_ejected_instance_to_come_back() {
    let base = std::time::Duration::from_millis(600);
    let router = TestRouter::start(RouterConfig {
        outlier_detection: Some(router_runtime::router::OutlierDetection {
            consecutive_failures: 3,
            base_ejection: base,
            max_ejected_percent: 100,
            ..Default::default()
        }),
        ..waiting_router(WaitForInstance::new(Duration::from_secs(30)))
    })
    .await;
    let (greeter, _events) = common::test_greeter::TestGreeter::new("only");
    // Its next three calls fail UNAVAILABLE: the third ejects it.
    greeter.flaky.store(3, std::sync::atomic::Ordering::SeqCst);
    let _instance = common::start_instance(&router, "only", greeter).await;
    let mut client = router.client().await;
    for _ in 0..3 {
        let status = within(5, "a failing call", client.say_hello(hello("flaky")))
            .await
            .expect_err("fails");
        assert_eq!(status.code(), Code::Unavailable);
    }
    assert_eq!(router.router.stats().ejections(), 1);
    let ejected_at = Instant::now();
    // No instance can take the next call until the ejection ends: it waits,
    // woken at the ejection's end (no registry change announces it).
    let reply = within(
        10,
        "the call after the ejection",
        client.say_hello(hello("flaky")),
    )
    .await
    .expect("served once the ejection ended");
    assert_eq!(reply.into_inner().instance_id, "only");
    let waited = ejected_at.elapsed();
    assert!(
        waited >= base - Duration::from_millis(100) && waited < base + Duration::from_secs(2),
        "waited for the ejection's end: {waited:?}"
    );
}

#[tokio::test]
async fn a_client_streaming_call_waits_and_its_stream_is_forwarded_once_an_instance_registers() {
    let router = TestRouter::start(waiting_router(WaitForInstance::new(Duration::from_secs(
        30,
    ))))
    .await;
    let mut client = router.client().await;
    // The stream is read only once the call has an instance: what the client
    // sends meanwhile waits in HTTP/2 flow control, not in the router.
    let numbers = tokio_stream::iter((1..=100).map(|value| myservice::pb::Number { value }));
    let call = tokio::spawn(async move { client.sum(numbers).await });
    until_waiting(&router, "the stream to wait", |w| {
        w.calls == 1 && w.bytes == 0
    })
    .await;
    let _instance = start_instance(&router, "i", GreeterImpl::new("i")).await;
    let reply = within(10, "the streaming call", call)
        .await
        .expect("task")
        .expect("served once the instance came")
        .into_inner();
    assert_eq!((reply.total, reply.count), (5050, 100));
}
