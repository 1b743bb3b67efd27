//! Choosing instances: strategies, routing keys, pins, labels and health.

use test_kit as common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::test_greeter::TestGreeter;
use common::{RawRegistration, TestRouter, start_instance, start_instance_with, within};
use myservice::pb::HelloRequest;
use myservice::pb::greeter_client::GreeterClient;
use myservice::pb::greeter_server::GreeterServer;
use router_runtime::bridge::BridgeConfig;
use router_runtime::codegen::Strategy;
use router_runtime::router::{PIN_HEADER, RouterConfig, SELECT_HEADER};
use tonic::transport::Channel;
use tonic::{Code, Request};

fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.into(),
        payload: vec![],
    }
}

fn config(strategy: Strategy) -> RouterConfig {
    RouterConfig {
        strategy: Some(strategy),
        rng_seed: Some(42),
        ..RouterConfig::default()
    }
}

async fn served_by(client: &mut GreeterClient<Channel>, request: Request<HelloRequest>) -> String {
    within(5, "call", client.say_hello(request))
        .await
        .expect("call succeeds")
        .into_inner()
        .instance_id
}

#[tokio::test]
async fn round_robin_spreads_calls_evenly_over_instances() {
    let router = TestRouter::start(config(Strategy::RoundRobin)).await;
    let mut handles = Vec::new();
    for id in ["a", "b", "c"] {
        handles.push(start_instance(&router, id, TestGreeter::new(id).0).await);
    }
    let mut client = router.client().await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for i in 0..300 {
        *counts
            .entry(served_by(&mut client, Request::new(hello(&i.to_string()))).await)
            .or_default() += 1;
    }
    let max = counts.values().max().copied().unwrap_or(0);
    let min = counts.values().min().copied().unwrap_or(0);
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(max - min <= 1, "{counts:?}");
}

#[tokio::test]
async fn power_of_two_choices_sends_few_calls_to_a_slow_instance() {
    let router = TestRouter::start(RouterConfig::default()).await;
    assert_eq!(router.router.strategy(), Strategy::PowerOfTwoChoices);
    let mut handles = Vec::new();
    for id in ["fast-1", "fast-2"] {
        handles.push(start_instance(&router, id, TestGreeter::new(id).0).await);
    }
    let (mut slow, _events) = TestGreeter::new("slow");
    slow.delay = Duration::from_millis(50);
    handles.push(start_instance(&router, "slow", slow).await);

    let client = router.client().await;
    let workers = (0..16).map(|w| {
        let mut client = client.clone();
        tokio::spawn(async move {
            let mut served = Vec::new();
            for i in 0..40 {
                let reply = client.say_hello(hello(&format!("{w}-{i}"))).await?;
                served.push(reply.into_inner().instance_id);
            }
            Ok::<_, tonic::Status>(served)
        })
    });
    let mut counts: HashMap<String, usize> = HashMap::new();
    for result in within(60, "load", futures_util::future::join_all(workers)).await {
        for id in result.expect("task").expect("calls succeed") {
            *counts.entry(id).or_default() += 1;
        }
    }
    let total: usize = counts.values().sum();
    let slow_share = counts.get("slow").copied().unwrap_or(0) as f64 / total as f64;
    eprintln!("p2c distribution: {counts:?} (slow share {slow_share:.3})");
    assert!(
        slow_share < 0.2,
        "slow instance got {slow_share:.3} of calls: {counts:?}"
    );
}

#[tokio::test]
async fn consistent_hashing_on_the_route_key_field_keeps_each_key_on_one_instance() {
    let router = TestRouter::start(config(Strategy::ConsistentHash)).await;
    let mut handles = Vec::new();
    for id in ["a", "b", "c", "d"] {
        handles.push(start_instance(&router, id, TestGreeter::new(id).0).await);
    }
    let mut client = router.client().await;
    let mut owners: HashMap<String, String> = HashMap::new();
    for round in 0..3 {
        for key in 0..40 {
            let name = format!("user-{key}");
            let id = served_by(&mut client, Request::new(hello(&name))).await;
            match owners.get(&name) {
                Some(owner) => assert_eq!(owner, &id, "key {name} moved in round {round}"),
                None => {
                    owners.insert(name, id);
                }
            }
        }
    }
    let distinct: std::collections::HashSet<_> = owners.values().collect();
    assert!(distinct.len() >= 3, "keys spread over {distinct:?}");
}

#[tokio::test]
async fn consistent_hashing_on_a_metadata_header_when_configured() {
    let config = RouterConfig {
        route_key_header: Some("x-tenant".into()),
        ..config(Strategy::ConsistentHash)
    };
    let router = TestRouter::start(config).await;
    let mut handles = Vec::new();
    for id in ["a", "b", "c"] {
        handles.push(start_instance(&router, id, TestGreeter::new(id).0).await);
    }
    let mut client = router.client().await;
    for tenant in ["t1", "t2", "t3", "t4"] {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10 {
            // WhoAmI has no route_key field: the header is the key.
            let mut request = Request::new(());
            request
                .metadata_mut()
                .insert("x-tenant", tenant.parse().expect("ascii"));
            let info = within(5, "who", client.who_am_i(request))
                .await
                .expect("ok")
                .into_inner();
            seen.insert(info.instance_id);
        }
        assert_eq!(seen.len(), 1, "tenant {tenant} reached {seen:?}");
    }
}

#[tokio::test]
async fn pinned_and_label_selected_calls_reach_exactly_the_requested_instances() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let mut handles = Vec::new();
    for (id, tenant, canary) in [("a", "x", "false"), ("b", "y", "true"), ("c", "y", "false")] {
        let options = BridgeConfig::new(router.endpoint())
            .instance_id(id)
            .label("tenant", tenant)
            .label("canary", canary);
        handles.push(
            start_instance_with(&router, options, GreeterServer::new(TestGreeter::new(id).0)).await,
        );
    }
    let mut client = router.client().await;
    for _ in 0..20 {
        let mut pinned = Request::new(hello("p"));
        pinned
            .metadata_mut()
            .insert(PIN_HEADER, "c".parse().expect("ascii"));
        assert_eq!(served_by(&mut client, pinned).await, "c");

        let mut canary = Request::new(hello("l"));
        canary.metadata_mut().insert(
            SELECT_HEADER,
            "tenant=y, canary=true".parse().expect("ascii"),
        );
        assert_eq!(served_by(&mut client, canary).await, "b");

        let mut tenant = Request::new(hello("t"));
        tenant
            .metadata_mut()
            .insert(SELECT_HEADER, "tenant=y".parse().expect("ascii"));
        let id = served_by(&mut client, tenant).await;
        assert!(id == "b" || id == "c", "{id}");
    }
    let mut unknown = Request::new(hello("p"));
    unknown
        .metadata_mut()
        .insert(PIN_HEADER, "nobody".parse().expect("ascii"));
    let status = within(5, "unknown pin", client.say_hello(unknown))
        .await
        .expect_err("no such instance");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("nobody"), "{}", status.message());
}

#[tokio::test]
async fn a_not_serving_instance_gets_no_new_calls_until_it_serves_again() {
    let router = TestRouter::start(config(Strategy::RoundRobin)).await;
    let a = start_instance(&router, "a", TestGreeter::new("a").0).await;
    let _b = start_instance(&router, "b", TestGreeter::new("b").0).await;
    let mut client = router.client().await;

    a.set_serving(false);
    let instances = router.router.registry().snapshot();
    let a_instance = instances.iter().find(|i| i.id() == "a").expect("a").clone();
    within(5, "not serving to be reported", async {
        // The heartbeat goes out at once; wait for the router to apply it.
        let mut changes = a.registrations();
        while a_instance.is_serving() {
            let _ = tokio::time::timeout(Duration::from_millis(20), changes.changed()).await;
        }
    })
    .await;
    for i in 0..20 {
        assert_eq!(
            served_by(&mut client, Request::new(hello(&i.to_string()))).await,
            "b"
        );
    }
    a.set_serving(true);
    within(5, "serving again", async {
        let mut changes = a.registrations();
        while !a_instance.is_serving() {
            let _ = tokio::time::timeout(Duration::from_millis(20), changes.changed()).await;
        }
    })
    .await;
    let mut seen = std::collections::HashSet::new();
    for i in 0..10 {
        seen.insert(served_by(&mut client, Request::new(hello(&i.to_string()))).await);
    }
    assert!(seen.contains("a"), "{seen:?}");
}

#[tokio::test]
async fn a_bridge_that_stops_reading_is_removed_within_twice_the_heartbeat_timeout() {
    let timeout = Duration::from_millis(300);
    let config = RouterConfig {
        heartbeat_interval: Duration::from_millis(100),
        heartbeat_timeout: timeout,
        ..RouterConfig::default()
    };
    let router = TestRouter::start(config).await;
    let channel = router.channel().await;
    // Registers, then never reads, never answers a ping, never sends again.
    let silent = within(
        5,
        "raw registration",
        RawRegistration::open(channel, "silent", &[]),
    )
    .await
    .expect("registered");
    router.wait_for_instances(1).await;
    let registered = Instant::now();
    router.wait_for_instances(0).await;
    let gone_after = registered.elapsed();
    eprintln!("silent bridge removed after {gone_after:?} (timeout {timeout:?})");
    assert!(gone_after <= timeout * 2, "removed after {gone_after:?}");
    drop(silent);
}

#[tokio::test]
async fn a_reregistering_instance_replaces_a_registration_that_does_not_answer_a_ping() {
    // The takeover probe waits half a heartbeat interval for the pong.
    let router = TestRouter::start(RouterConfig {
        heartbeat_interval: Duration::from_millis(400),
        heartbeat_timeout: Duration::from_secs(60),
        ..RouterConfig::default()
    })
    .await;
    let channel = router.channel().await;
    let _stale = RawRegistration::open(channel, "same-id", &[])
        .await
        .expect("registered");
    router.wait_for_instances(1).await;
    let first = router.router.registry().snapshot()[0].clone();
    // The real instance comes back with the same id: the stale registration
    // (which never answers) is replaced once it misses the takeover ping, not
    // kept beside it.
    let _fresh = start_instance(&router, "same-id", TestGreeter::new("same-id").0).await;
    assert!(first.is_closed(), "the stale registration is closed");
    assert_eq!(router.router.registry().len(), 1);
    let mut client = router.client().await;
    assert_eq!(
        served_by(&mut client, Request::new(hello("x"))).await,
        "same-id"
    );
}

/// Registers a raw instance "a" that swallows calls, then a real "b", and
/// calls through round robin (which starts at "a"); drops "a" once its call
/// started. Returns what the client saw.
async fn call_lost_on_first_instance(idempotent: bool) -> Result<String, tonic::Status> {
    use router_runtime::wire::RouterFrame;
    let router = TestRouter::start(config(Strategy::RoundRobin)).await;
    let channel = router.channel().await;
    let mut swallower = RawRegistration::open(channel, "a", &[])
        .await
        .expect("registered");
    router.wait_for_instances(1).await;
    let _b = start_instance(&router, "b", TestGreeter::new("b").0).await;
    let mut client = router.client().await;
    let call = tokio::spawn(async move {
        if idempotent {
            client
                .who_am_i(())
                .await
                .map(|r| r.into_inner().instance_id)
        } else {
            client
                .say_hello(hello("x"))
                .await
                .map(|r| r.into_inner().instance_id)
        }
    });
    loop {
        match within(5, "the call to reach a", swallower.frames.message()).await {
            Ok(Some(RouterFrame::Start(_))) => break,
            Ok(Some(_)) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(swallower);
    within(5, "the call's outcome", call).await.expect("task")
}

#[tokio::test]
async fn an_idempotent_call_whose_instance_dies_is_replayed_on_another() {
    let served = call_lost_on_first_instance(true)
        .await
        .expect("replayed on b");
    assert_eq!(served, "b");
}

#[tokio::test]
async fn a_non_idempotent_call_that_reached_a_dying_instance_is_not_replayed() {
    let status = call_lost_on_first_instance(false)
        .await
        .expect_err("not replayed");
    assert_eq!(status.code(), Code::Unavailable);
}

#[tokio::test]
async fn registrations_with_another_protocol_version_or_service_are_refused_clearly() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let channel = router.channel().await;

    let mut future_version = RawRegistration::hello("v99", &[]);
    future_version.protocol_version = 99;
    let status = RawRegistration::open_with(channel.clone(), future_version)
        .await
        .err()
        .expect("refused");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("version 99") && status.message().contains("version 1"),
        "{}",
        status.message()
    );

    let mut other_service = RawRegistration::hello("other", &[]);
    other_service.service = "other.v1.Thing".into();
    let status = RawRegistration::open_with(channel, other_service)
        .await
        .err()
        .expect("refused");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("myservice.v1.Greeter")
            && status.message().contains("other.v1.Thing"),
        "{}",
        status.message()
    );
    assert!(router.router.registry().is_empty());
}

#[tokio::test]
async fn an_instance_that_claims_a_routing_key_receives_its_calls() {
    let router = TestRouter::start(config(Strategy::RoundRobin)).await;
    let mut handles = Vec::new();
    for (id, claims) in [
        ("a", vec![]),
        ("b", vec!["user-7", "user-9"]),
        ("c", vec![]),
    ] {
        let options = claims.into_iter().fold(
            BridgeConfig::new(router.endpoint()).instance_id(id),
            |o, k| o.routing_key(k),
        );
        handles.push(
            start_instance_with(&router, options, GreeterServer::new(TestGreeter::new(id).0)).await,
        );
    }
    let mut client = router.client().await;
    // SayHello's route_key is `name`: the claimed keys go to b every time, the
    // others follow round robin.
    let mut others = std::collections::HashSet::new();
    for i in 0..12 {
        assert_eq!(
            served_by(&mut client, Request::new(hello("user-7"))).await,
            "b"
        );
        assert_eq!(
            served_by(&mut client, Request::new(hello("user-9"))).await,
            "b"
        );
        others.insert(
            served_by(
                &mut client,
                Request::new(hello(&format!("user-{}", 100 + i))),
            )
            .await,
        );
    }
    assert_eq!(others.len(), 3, "{others:?}");
}

#[tokio::test]
async fn a_router_with_an_authorize_hook_accepts_only_bridges_that_pass_it() {
    let config = RouterConfig {
        authorize: Some(std::sync::Arc::new(|register| {
            let hello = register.hello;
            match register
                .metadata
                .get("authorization")
                .and_then(|v| v.to_str().ok())
            {
                Some("Bearer good") => Ok(Some("good token".to_owned())),
                _ => Err(tonic::Status::unauthenticated(format!(
                    "instance `{}` gave no valid token",
                    hello.instance_id
                ))),
            }
        })),
        ..RouterConfig::default()
    };
    let router = TestRouter::start(config).await;

    let intruder = myservice::pb::GreeterBridge::new(TestGreeter::new("intruder").0).connect(
        BridgeConfig::new(router.endpoint())
            .instance_id("intruder")
            .register_header("authorization", "Bearer bad")
            .expect("ascii"),
    );
    let mut state = intruder.registrations();
    let refusal = within(10, "the refusal", async {
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
                return String::new();
            }
        }
    })
    .await;
    assert!(
        refusal.contains("no valid token") && refusal.contains("refused"),
        "{refusal}"
    );
    assert!(router.router.registry().is_empty());

    let options = BridgeConfig::new(router.endpoint())
        .instance_id("trusted")
        .register_header("authorization", "Bearer good")
        .expect("ascii");
    let _trusted = start_instance_with(
        &router,
        options,
        GreeterServer::new(TestGreeter::new("trusted").0),
    )
    .await;
    assert_eq!(router.router.registry().len(), 1);
    let mut client = router.client().await;
    assert_eq!(
        served_by(&mut client, Request::new(hello("x"))).await,
        "trusted"
    );
    intruder.abort().await;
}
