//! The router's deadline policy: a default deadline for calls that carry
//! none, a maximum that caps longer ones; the handler sees the result.

use test_kit as common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::test_greeter::{Event, TestGreeter};
use common::{TestRouter, bare_client, hello, start_instance, within};
use router_runtime::router::{DeadlinePolicy, Deadlines, RouterConfig};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};

fn router_config(service: DeadlinePolicy, say_hello: Option<DeadlinePolicy>) -> RouterConfig {
    RouterConfig {
        deadlines: Deadlines {
            service,
            methods: say_hello
                .map(|p| HashMap::from([("SayHello".to_owned(), p)]))
                .unwrap_or_default(),
        },
        ..RouterConfig::default()
    }
}

/// The `grpc-timeout` the handler saw, in milliseconds.
async fn handler_timeout_ms(events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> u64 {
    loop {
        match within(5, "the handler's metadata", events.recv()).await {
            Some(Event::Metadata(metadata)) => {
                let value = metadata
                    .get("grpc-timeout")
                    .and_then(|v| v.to_str().ok())
                    .expect("the handler sees a grpc-timeout")
                    .to_owned();
                let (digits, unit) = value.split_at(value.len() - 1);
                let n: u64 = digits.parse().expect("digits");
                return match unit {
                    "H" => n * 3_600_000,
                    "M" => n * 60_000,
                    "S" => n * 1_000,
                    "m" => n,
                    "u" => n / 1_000,
                    "n" => n / 1_000_000,
                    other => panic!("unit {other}"),
                };
            }
            Some(_) => continue,
            None => panic!("the handler's events ended"),
        }
    }
}

#[tokio::test]
async fn a_call_without_a_deadline_gets_the_default_and_the_handler_sees_it() {
    let policy = DeadlinePolicy {
        default: Some(Duration::from_millis(300)),
        max: None,
    };
    let router = TestRouter::start(router_config(policy, None)).await;
    let (greeter, mut events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter).await;
    let mut client = bare_client(router.addr);
    within(5, "echo", client.say_hello(Request::new(hello("echo"))))
        .await
        .expect("answered");
    let seen = handler_timeout_ms(&mut events).await;
    assert!((200..=300).contains(&seen), "{seen} ms");

    let started = Instant::now();
    let status = within(
        5,
        "slow call",
        client.say_hello(Request::new(hello("slow:10000"))),
    )
    .await
    .expect_err("the default deadline expires");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(290) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_longer_deadline_is_capped_at_the_methods_maximum() {
    let service = DeadlinePolicy {
        default: None,
        max: Some(Duration::from_secs(60)),
    };
    let say_hello = DeadlinePolicy {
        default: None,
        max: Some(Duration::from_millis(300)),
    };
    let router = TestRouter::start(router_config(service, Some(say_hello))).await;
    let (greeter, mut events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter).await;
    let mut client = bare_client(router.addr);
    let with_timeout = |name: &str| {
        let mut request = Request::new(hello(name));
        request
            .metadata_mut()
            .insert("grpc-timeout", MetadataValue::from_static("10S"));
        request
    };
    within(5, "echo", client.say_hello(with_timeout("echo")))
        .await
        .expect("answered");
    let seen = handler_timeout_ms(&mut events).await;
    assert!(
        (200..=300).contains(&seen),
        "{seen} ms, not the client's 10 s"
    );

    let started = Instant::now();
    let status = within(5, "slow call", client.say_hello(with_timeout("slow:10000")))
        .await
        .expect_err("the capped deadline expires");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}
