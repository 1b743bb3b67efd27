//! Concurrency limits (`max_concurrent_calls`) on the compiled router: past
//! a limit a call fails RESOURCE_EXHAUSTED at once, or waits in a bounded
//! queue for a slot; a method's limit leaves the other methods alone; a
//! reload that lowers a limit drops no call in flight. Each held call is an
//! endless server stream, which keeps its slot until the client drops it.

use test_kit as common;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use common::test_greeter::TestGreeter;
use common::{
    TestRouter, bare_client, eventually, hello, open_endless_stream, start_instance, within,
};
use router_runtime::pb::ConcurrencyLimitStatus;
use router_runtime::router::{ConcurrencyLimits, ConcurrencyQueue, RouterConfig};
use tonic::{Code, Request};

fn n(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).expect("non-zero")
}

fn limited(limits: ConcurrencyLimits) -> RouterConfig {
    RouterConfig {
        concurrency: limits,
        ..RouterConfig::default()
    }
}

/// The limit of `method` ("" for the service's) as the router reports it.
fn limit(router: &TestRouter, method: &str) -> ConcurrencyLimitStatus {
    router
        .router
        .status()
        .concurrency_limits
        .into_iter()
        .find(|l| l.method == method)
        .expect("the limit is reported")
}

#[tokio::test]
async fn calls_past_the_service_limit_fail_at_once_and_a_freed_slot_admits_the_next() {
    let router = TestRouter::start(limited(ConcurrencyLimits {
        service: Some(n(2)),
        ..ConcurrencyLimits::default()
    }))
    .await;
    let _instance = start_instance(&router, "a", TestGreeter::new("a").0).await;
    let mut client = router.client().await;
    let first = open_endless_stream(&mut client, 8).await;
    let _second = open_endless_stream(&mut client, 8).await;
    assert_eq!(limit(&router, "").in_flight, 2);

    let started = Instant::now();
    let refused = within(
        5,
        "refused call",
        client.say_hello(Request::new(hello("x"))),
    )
    .await
    .expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("has its 2 calls in flight (max_concurrent_calls)"),
        "{refused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once"
    );
    assert_eq!(limit(&router, "").refused, 1);

    drop(first);
    eventually(5, "the dropped stream's slot to free", || {
        limit(&router, "").in_flight == 1
    })
    .await;
    within(5, "call", client.say_hello(Request::new(hello("x"))))
        .await
        .expect("a freed slot admits the call");
    let errors = router.router.status().recent_errors;
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("max_concurrent_calls")),
        "the refusal is in the recent errors: {errors:?}"
    );
}

#[tokio::test]
async fn a_method_limit_holds_that_method_and_leaves_the_others_free() {
    let router = TestRouter::start(limited(ConcurrencyLimits {
        methods: HashMap::from([("StreamGreetings".to_owned(), n(1))]),
        ..ConcurrencyLimits::default()
    }))
    .await;
    let _instance = start_instance(&router, "a", TestGreeter::new("a").0).await;
    let mut client = router.client().await;
    let _held = open_endless_stream(&mut client, 8).await;
    let refused = within(
        5,
        "second stream",
        client.stream_greetings(myservice::pb::StreamRequest {
            name: "endless".into(),
            count: 0,
            payload_size: 8,
        }),
    )
    .await
    .expect_err("over the method's limit");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused
            .message()
            .contains("`myservice.v1.Greeter/StreamGreetings` has its 1 calls"),
        "{refused:?}"
    );
    for _ in 0..5 {
        within(5, "unary call", client.say_hello(Request::new(hello("x"))))
            .await
            .expect("another method is not limited");
    }
}

#[tokio::test]
async fn a_queued_call_waits_for_a_slot_and_proceeds_when_one_frees() {
    let router = TestRouter::start(limited(ConcurrencyLimits {
        service: Some(n(1)),
        queue: Some(ConcurrencyQueue {
            timeout: Duration::from_secs(20),
            max_waiting: 1,
        }),
        ..ConcurrencyLimits::default()
    }))
    .await;
    let _instance = start_instance(&router, "a", TestGreeter::new("a").0).await;
    let mut client = router.client().await;
    let held = open_endless_stream(&mut client, 8).await;
    let waiting = tokio::spawn({
        let mut client = client.clone();
        async move { client.say_hello(Request::new(hello("queued"))).await }
    });
    eventually(5, "the call to wait", || limit(&router, "").waiting == 1).await;

    // The queue holds one call: the next fails at once, saying so.
    let full = within(5, "call", client.say_hello(Request::new(hello("x"))))
        .await
        .expect_err("queue full");
    assert_eq!(full.code(), Code::ResourceExhausted);
    assert!(full.message().contains("1 waiting"), "{full:?}");

    drop(held);
    let reply = within(5, "the queued call", waiting)
        .await
        .expect("task")
        .expect("the queued call gets the freed slot");
    assert_eq!(reply.get_ref().instance_id, "a");
    let after = limit(&router, "");
    assert_eq!((after.waiting, after.refused), (0, 1));
}

#[tokio::test]
async fn a_waiting_call_ends_at_its_deadline_and_a_cancelled_one_leaves_the_queue() {
    let router = TestRouter::start(limited(ConcurrencyLimits {
        service: Some(n(1)),
        queue: Some(ConcurrencyQueue {
            timeout: Duration::from_secs(20),
            max_waiting: 10,
        }),
        ..ConcurrencyLimits::default()
    }))
    .await;
    let _instance = start_instance(&router, "a", TestGreeter::new("a").0).await;
    let mut client = router.client().await;
    let _held = open_endless_stream(&mut client, 8).await;

    // A client that sets no timer of its own: the router's deadline shows.
    let mut request = Request::new(hello("x"));
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let late = within(5, "call", bare_client(router.addr).say_hello(request))
        .await
        .expect_err("no slot before the deadline");
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let cancelled = tokio::spawn({
        let mut client = client.clone();
        async move { client.say_hello(Request::new(hello("x"))).await }
    });
    eventually(5, "the call to wait", || limit(&router, "").waiting == 1).await;
    cancelled.abort();
    eventually(5, "the cancelled call to leave the queue", || {
        limit(&router, "").waiting == 0
    })
    .await;
}

#[tokio::test]
async fn a_reload_that_lowers_the_limit_drops_no_call_in_flight() {
    let router = TestRouter::start(limited(ConcurrencyLimits {
        service: Some(n(3)),
        ..ConcurrencyLimits::default()
    }))
    .await;
    let _instance = start_instance(&router, "a", TestGreeter::new("a").0).await;
    let mut client = router.client().await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(open_endless_stream(&mut client, 8).await);
    }
    router.router.reconfigure(limited(ConcurrencyLimits {
        service: Some(n(1)),
        ..ConcurrencyLimits::default()
    }));
    // Every call in flight goes on.
    for stream in &mut streams {
        within(5, "a message", stream.message())
            .await
            .expect("the stream goes on")
            .expect("a message");
    }
    assert_eq!(limit(&router, "").in_flight, 3, "still counted");
    let refused = within(5, "call", client.say_hello(Request::new(hello("x"))))
        .await
        .expect_err("over the new limit");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    // Two of three ended: one in flight, at the new limit of one.
    streams.truncate(1);
    eventually(5, "two slots to free", || limit(&router, "").in_flight == 1).await;
    assert!(
        within(5, "call", client.say_hello(Request::new(hello("x"))))
            .await
            .is_err()
    );
    streams.clear();
    eventually(5, "the last slot to free", || {
        limit(&router, "").in_flight == 0
    })
    .await;
    within(5, "call", client.say_hello(Request::new(hello("x"))))
        .await
        .expect("under the new limit");
}

#[tokio::test]
async fn a_flood_of_calls_over_a_full_queue_is_refused_at_once_and_holds_no_state() {
    let router = TestRouter::start(limited(ConcurrencyLimits {
        service: Some(n(1)),
        queue: Some(ConcurrencyQueue {
            timeout: Duration::from_secs(20),
            max_waiting: 4,
        }),
        ..ConcurrencyLimits::default()
    }))
    .await;
    let _instance = start_instance(&router, "a", TestGreeter::new("a").0).await;
    let mut client = router.client().await;
    let held = open_endless_stream(&mut client, 8).await;
    let flood: Vec<_> = (0..200)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { client.say_hello(Request::new(hello("x"))).await })
        })
        .collect();
    eventually(10, "the queue to fill and the rest to be refused", || {
        let l = limit(&router, "");
        l.waiting == 4 && l.refused == 196
    })
    .await;
    drop(held);
    let mut ok = 0;
    for call in flood {
        match within(10, "flooding call", call).await.expect("task") {
            Ok(_) => ok += 1,
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
    }
    assert_eq!(ok, 4, "the four queued calls ran, one at a time");
    let after = limit(&router, "");
    assert_eq!((after.in_flight, after.waiting), (0, 0));
}
