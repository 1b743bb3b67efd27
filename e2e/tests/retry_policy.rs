//! The retry policy: attempts that fail with a retryable status before any
//! response are retried with backoff, each retry says how many came before,
//! and the retry budget stops retries in an outage.

use test_kit as common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::test_greeter::{Event, TestGreeter};
use common::{TestRouter, hello, start_instance, within};
use router_runtime::router::{RetryPolicies, RetryPolicy, RetryThrottling, RouterConfig};
use tonic::{Code, Request};

fn config(max_attempts: u32, throttling: RetryThrottling) -> RouterConfig {
    RouterConfig {
        retries: RetryPolicies {
            methods: HashMap::from([(
                "SayHello".to_owned(),
                RetryPolicy {
                    max_attempts,
                    initial_backoff: Duration::from_millis(5),
                    max_backoff: Duration::from_millis(20),
                    backoff_multiplier: 2.0,
                    retryable_status_codes: vec![Code::Unavailable],
                },
            )]),
            throttling,
            ..RetryPolicies::default()
        },
        ..RouterConfig::default()
    }
}

const ROOMY: RetryThrottling = RetryThrottling {
    max_tokens: 100,
    token_ratio: 1.0,
};

#[tokio::test]
async fn a_retryable_failure_is_retried_and_each_retry_counts_the_attempts_before_it() {
    let router = TestRouter::start(config(4, ROOMY)).await;
    let (greeter, mut events) = TestGreeter::new("a");
    greeter.flaky.store(2, Ordering::SeqCst);
    let _instance = start_instance(&router, "a", greeter).await;
    let mut client = router.client().await;
    let reply = within(5, "call", client.say_hello(Request::new(hello("flaky"))))
        .await
        .expect("the third attempt answers");
    assert_eq!(reply.into_inner().message, "recovered");
    let mut previous = Vec::new();
    for _ in 0..3 {
        match within(5, "attempt", events.recv()).await {
            Some(Event::Metadata(md)) => previous.push(
                md.get("grpc-previous-rpc-attempts")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            ),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(previous, [None, Some("1".to_owned()), Some("2".to_owned())]);
    assert_eq!(router.router.stats().calls_retried(), 2);
}

#[tokio::test]
async fn attempts_stop_at_max_attempts_and_other_codes_are_not_retried() {
    let router = TestRouter::start(config(3, ROOMY)).await;
    let (greeter, _events) = TestGreeter::new("a");
    greeter.flaky.store(10, Ordering::SeqCst);
    let flaky = greeter.flaky.clone();
    let _instance = start_instance(&router, "a", greeter).await;
    let mut client = router.client().await;
    let status = within(5, "call", client.say_hello(Request::new(hello("flaky"))))
        .await
        .expect_err("every attempt fails");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(flaky.load(Ordering::SeqCst), 7, "three attempts");
    let status = within(
        5,
        "call",
        client.say_hello(Request::new(hello("status:13"))),
    )
    .await
    .expect_err("INTERNAL");
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(
        router.router.stats().calls_retried(),
        2,
        "INTERNAL is not retryable"
    );
}

#[tokio::test]
async fn in_an_outage_the_budget_stops_retries_from_multiplying_the_load() {
    let throttling = RetryThrottling {
        max_tokens: 10,
        token_ratio: 0.1,
    };
    let router = TestRouter::start(config(5, throttling)).await;
    let (greeter, _events) = TestGreeter::new("a");
    greeter.flaky.store(u32::MAX, Ordering::SeqCst);
    let flaky = greeter.flaky.clone();
    let _instance = start_instance(&router, "a", greeter).await;
    let mut client = router.client().await;
    for _ in 0..50 {
        let status = within(5, "call", client.say_hello(Request::new(hello("flaky"))))
            .await
            .expect_err("outage");
        assert_eq!(status.code(), Code::Unavailable);
    }
    let attempts = u32::MAX - flaky.load(Ordering::SeqCst);
    // Without a budget: 50 calls x 5 attempts = 250. The budget allows a few
    // retries until half the tokens are gone, then none.
    assert!(attempts <= 60, "{attempts} attempts for 50 calls");
    assert!(router.router.stats().retries_throttled() >= 40);
}
