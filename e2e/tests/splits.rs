//! Traffic splits: a canary takes its share of the calls, a user stays on
//! one version, an explicit selector wins, and a canary with no instance
//! left fails no call.

use test_kit as common;

use std::collections::HashMap;

use common::test_greeter::TestGreeter;
use common::{TestRouter, hello, served_by, start_instance_with};
use myservice::pb::greeter_server::GreeterServer;
use router_runtime::bridge::{BridgeConfig, BridgeHandle};
use router_runtime::router::{RouterConfig, SELECT_HEADER, TrafficSplit, TrafficSplits};
use tonic::Request;

fn canary_config() -> RouterConfig {
    let share = |version: &str, weight| TrafficSplit {
        labels: vec![("version".to_owned(), version.to_owned())],
        weight,
    };
    RouterConfig {
        splits: TrafficSplits::new(vec![share("v1", 95), share("v2", 5)]),
        ..RouterConfig::default()
    }
}

async fn fleet(router: &TestRouter) -> Vec<BridgeHandle> {
    let mut handles = Vec::new();
    for (id, version) in [("v1-a", "v1"), ("v1-b", "v1"), ("v2-a", "v2")] {
        let options = BridgeConfig::new(router.endpoint())
            .instance_id(id)
            .label("version", version);
        handles.push(
            start_instance_with(router, options, GreeterServer::new(TestGreeter::new(id).0)).await,
        );
    }
    handles
}

/// The version (the instance id's prefix) that served each of `calls` calls
/// made 16 at a time, counted; all with `user` as their routing key, or each
/// with its own.
async fn versions(router: &TestRouter, calls: usize, user: Option<&str>) -> HashMap<String, usize> {
    let client = router.client().await;
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let mut client = client.clone();
            let user = user.map(str::to_owned);
            tokio::spawn(async move {
                let mut seen = HashMap::<String, usize>::new();
                for i in (t..calls).step_by(16) {
                    // SayHello's routing key is its `name`.
                    let name = user.clone().unwrap_or_else(|| format!("call-{i}"));
                    let request = Request::new(hello(&name));
                    let id = served_by(&mut client, request).await;
                    *seen.entry(id[..2].to_owned()).or_default() += 1;
                }
                seen
            })
        })
        .collect();
    let mut total = HashMap::new();
    for task in tasks {
        for (version, n) in task.await.expect("task") {
            *total.entry(version).or_default() += n;
        }
    }
    total
}

#[tokio::test]
async fn a_five_percent_canary_takes_five_percent_of_ten_thousand_calls() {
    let router = TestRouter::start(canary_config()).await;
    let _fleet = fleet(&router).await;
    let seen = versions(&router, 10_000, None).await;
    let v2 = seen.get("v2").copied().unwrap_or(0);
    let v1 = seen.get("v1").copied().unwrap_or(0);
    eprintln!("v1 {v1}, v2 {v2}");
    assert_eq!(v1 + v2, 10_000);
    // 5 % ± 2 % (the binomial's standard deviation here is 0.2 %).
    assert!((300..=700).contains(&v2), "v2 took {v2} of 10000");
}

#[tokio::test]
async fn a_user_with_a_routing_key_stays_on_one_version() {
    let router = TestRouter::start(canary_config()).await;
    let _fleet = fleet(&router).await;
    let mut on_v2 = 0;
    for user in 0..60 {
        let seen = versions(&router, 32, Some(&format!("user-{user}"))).await;
        assert_eq!(seen.len(), 1, "user-{user} saw {seen:?}");
        on_v2 += usize::from(seen.contains_key("v2"));
    }
    assert!(on_v2 < 15, "{on_v2} of 60 users on the 5 % canary");
}

#[tokio::test]
async fn an_explicit_selector_bypasses_the_split() {
    let router = TestRouter::start(canary_config()).await;
    let _fleet = fleet(&router).await;
    let mut client = router.client().await;
    for _ in 0..50 {
        let mut request = Request::new(hello("x"));
        request
            .metadata_mut()
            .insert(SELECT_HEADER, "version=v2".parse().expect("ascii"));
        assert_eq!(served_by(&mut client, request).await, "v2-a");
    }
}

#[tokio::test]
async fn a_canary_with_no_instance_left_fails_no_call() {
    let router = TestRouter::start(canary_config()).await;
    let mut fleet = fleet(&router).await;
    let canary = fleet.pop().expect("v2-a");
    canary.shutdown().await;
    router.wait_for_instances(2).await;
    let seen = versions(&router, 1_000, None).await;
    assert_eq!(seen.get("v1").copied(), Some(1_000), "{seen:?}");
}
