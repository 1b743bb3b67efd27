//! Rate limits: a service's calls held to the configured rate, and each
//! client to its own.

use test_kit as common;

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use common::test_greeter::TestGreeter;
use common::{TestRouter, hello, start_instance, within};
use router_runtime::router::{ClientKey, RateLimit, RateLimits, RouterConfig};
use tonic::{Code, Request};

fn n(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).expect("non-zero")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturating_calls_through_the_router_never_exceed_a_service_limit() {
    // The rate's accuracy is the limiter's, tested on a simulated clock
    // (`router::policy::limit`); through the router the bound is what holds
    // on any machine however loaded: never more than the burst plus the rate
    // for the time elapsed, and refusals say which limit.
    let limit = RateLimit {
        per_second: n(100),
        burst: n(10),
    };
    let router = TestRouter::start(RouterConfig {
        rate_limits: RateLimits {
            service: Some(limit),
            ..RateLimits::default()
        },
        ..RouterConfig::default()
    })
    .await;
    let _instance = start_instance(&router, "a", TestGreeter::new("a").0).await;
    let client = router.client().await;
    let window = Duration::from_secs(2);
    let started = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let (mut ok, mut limited) = (0u32, 0u32);
                while started.elapsed() < window {
                    match within(5, "call", client.say_hello(Request::new(hello("x")))).await {
                        Ok(_) => ok += 1,
                        Err(status) => {
                            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                            assert!(status.message().contains("100 calls/s"), "{status:?}");
                            limited += 1;
                        }
                    }
                }
                (ok, limited)
            })
        })
        .collect();
    let (mut ok, mut limited) = (0, 0);
    for task in tasks {
        let (o, l) = task.await.expect("task");
        ok += o;
        limited += l;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let most = 10.0 + 100.0 * elapsed;
    eprintln!("{ok} admitted, {limited} limited in {elapsed:.2} s (at most {most:.0})");
    assert!(limited > 0, "the calls did not saturate the limit");
    assert!(
        f64::from(ok) <= most + 1.0,
        "{ok} admitted, over the limit's {most:.0}"
    );
}

#[tokio::test]
async fn a_client_over_its_own_limit_leaves_other_clients_unaffected() {
    let router = TestRouter::start(RouterConfig {
        rate_limits: RateLimits {
            per_client: Some((
                ClientKey::Header("x-api-key".to_owned()),
                RateLimit {
                    per_second: n(1),
                    burst: n(2),
                },
            )),
            ..RateLimits::default()
        },
        ..RouterConfig::default()
    })
    .await;
    let _instance = start_instance(&router, "a", TestGreeter::new("a").0).await;
    let mut client = router.client().await;
    let keyed = |key: &str| {
        let mut request = Request::new(hello("x"));
        request
            .metadata_mut()
            .insert("x-api-key", key.parse().expect("ascii"));
        request
    };
    for _ in 0..2 {
        within(5, "call", client.say_hello(keyed("noisy")))
            .await
            .expect("within the burst");
    }
    let status = within(5, "call", client.say_hello(keyed("noisy")))
        .await
        .expect_err("over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("client `noisy`"), "{status:?}");
    for _ in 0..2 {
        within(5, "call", client.say_hello(keyed("quiet")))
            .await
            .expect("another client has its own bucket");
    }
    assert_eq!(
        router.router.stats().calls_started(),
        4,
        "refused calls are not forwarded"
    );
}

#[tokio::test]
async fn an_instance_over_its_limit_is_passed_over_until_every_instance_is() {
    let router = TestRouter::start(RouterConfig {
        rate_limits: RateLimits {
            per_instance: Some(RateLimit {
                per_second: n(1),
                burst: n(3),
            }),
            ..RateLimits::default()
        },
        ..RouterConfig::default()
    })
    .await;
    let _a = start_instance(&router, "a", TestGreeter::new("a").0).await;
    let _b = start_instance(&router, "b", TestGreeter::new("b").0).await;
    let mut client = router.client().await;
    let mut served = std::collections::HashMap::<String, u32>::new();
    for i in 0..6 {
        let reply = within(
            5,
            "call",
            client.say_hello(Request::new(hello(&format!("{i}")))),
        )
        .await
        .expect("an instance within its budget answers");
        *served.entry(reply.into_inner().instance_id).or_default() += 1;
    }
    assert_eq!(served.get("a"), Some(&3), "{served:?}");
    assert_eq!(served.get("b"), Some(&3), "{served:?}");
    let status = within(5, "call", client.say_hello(Request::new(hello("x"))))
        .await
        .expect_err("both over");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("every instance"), "{status:?}");
}
