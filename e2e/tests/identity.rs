//! Who owns an instance id: two live bridge processes started with the same
//! id do not replace each other.

use test_kit as common;

use std::time::Duration;

use common::test_greeter::TestGreeter;
use common::{RawRegistration, TestRouter, eventually, hello, served_by, start_instance, within};
use myservice::pb::GreeterBridge;
use router_runtime::bridge::BridgeConfig;
use router_runtime::router::RouterConfig;
use tonic::{Code, Request};

#[tokio::test]
async fn a_second_live_bridge_with_the_same_id_is_refused_already_exists_and_the_owner_keeps_serving()
 {
    let router = TestRouter::start(RouterConfig::default()).await;
    let _owner = start_instance(&router, "dup", TestGreeter::new("owner").0).await;
    let owner = router
        .router
        .registry()
        .snapshot()
        .by_id("dup")
        .cloned()
        .expect("registered");

    let mut options = BridgeConfig::new(router.endpoint()).instance_id("dup");
    options.reconnect_initial = Duration::from_millis(20);
    options.reconnect_max = Duration::from_millis(50);
    let second = GreeterBridge::new(TestGreeter::new("second").0).connect(options);
    let mut state = second.registrations();
    let error = within(
        5,
        "the second bridge to report its refusal",
        state.wait_for(|s| s.last_error.is_some()),
    )
    .await
    .expect("bridge alive")
    .last_error
    .as_ref()
    .map(ToString::to_string)
    .unwrap_or_default();
    assert!(
        error.contains("AlreadyExists") && error.contains("`dup` is already registered"),
        "{error}"
    );
    // It keeps trying at its refusal backoff and keeps being refused; the
    // owner's registration is never replaced.
    eventually(10, "three refusals", || {
        router.router.stats().registrations_refused() >= 3
    })
    .await;
    assert!(!owner.is_closed(), "the owner's registration stays");
    assert_eq!(router.router.registry().len(), 1);
    let mut client = router.client().await;
    for _ in 0..5 {
        assert_eq!(
            served_by(&mut client, Request::new(hello("x"))).await,
            "owner"
        );
    }
}

/// A router whose registration check accepts every bridge and binds every
/// id to the same credential, as the daemon does for bridges that share one
/// registration token.
fn with_one_credential(heartbeat_interval: Duration) -> RouterConfig {
    let authorize: router_runtime::router::Authorize =
        std::sync::Arc::new(|_| Ok(Some("token sha256:shared".to_owned())));
    RouterConfig {
        authorize: Some(authorize),
        heartbeat_interval,
        // Long: a takeover, not an eviction, frees an id in these tests.
        heartbeat_timeout: Duration::from_secs(120),
        ..RouterConfig::default()
    }
}

/// Opens a raw registration of `id` as bridge process `incarnation`.
async fn raw(
    router: &TestRouter,
    id: &str,
    incarnation: &str,
) -> Result<RawRegistration, tonic::Status> {
    let mut hello = RawRegistration::hello(id, &[]);
    hello.incarnation = incarnation.into();
    RawRegistration::open_with(router.channel().await, hello).await
}

/// A raw registration that answers every ping, as a live bridge does.
fn answer_pings(
    mut registration: RawRegistration,
) -> tokio::task::JoinHandle<Option<tonic::Status>> {
    use router_runtime::wire::{BridgeFrame, RouterFrame};
    tokio::spawn(async move {
        loop {
            match registration.frames.message().await {
                Ok(Some(RouterFrame::Ping(ping))) => {
                    let _ = registration
                        .out
                        .send(BridgeFrame::Pong(router_runtime::pb::Pong {
                            nonce: ping.nonce,
                        }));
                }
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
}

#[tokio::test]
async fn with_one_credential_a_second_live_bridge_with_the_same_id_is_refused_and_the_owner_keeps_serving()
 {
    let router = TestRouter::start(with_one_credential(Duration::from_secs(10))).await;
    let _owner = start_instance(&router, "dup", TestGreeter::new("owner").0).await;
    let owner = router
        .router
        .registry()
        .snapshot()
        .by_id("dup")
        .cloned()
        .expect("registered");

    let mut options = BridgeConfig::new(router.endpoint()).instance_id("dup");
    options.reconnect_initial = Duration::from_millis(20);
    options.reconnect_max = Duration::from_millis(50);
    let second = GreeterBridge::new(TestGreeter::new("second").0).connect(options);
    let mut state = second.registrations();
    let error = within(
        5,
        "the second bridge to report its refusal",
        state.wait_for(|s| s.last_error.is_some()),
    )
    .await
    .expect("bridge alive")
    .last_error
    .as_ref()
    .map(ToString::to_string)
    .unwrap_or_default();
    assert!(
        error.contains("AlreadyExists") && error.contains("held by a live registration"),
        "{error}"
    );
    eventually(10, "three refusals", || {
        router.router.stats().registrations_refused() >= 3
    })
    .await;
    assert!(!owner.is_closed(), "the owner's registration stays");
    let mut client = router.client().await;
    for _ in 0..5 {
        assert_eq!(
            served_by(&mut client, Request::new(hello("x"))).await,
            "owner"
        );
    }
}

#[tokio::test]
async fn an_owner_that_stops_answering_pings_is_taken_over_once_and_refused_while_the_new_owner_lives()
 {
    let router = TestRouter::start(with_one_credential(Duration::from_secs(1))).await;
    // A registration that never reads its stream: a frozen process.
    let mut frozen = raw(&router, "dup", "frozen-process")
        .await
        .expect("registered");

    let mut options = BridgeConfig::new(router.endpoint()).instance_id("dup");
    options.reconnect_initial = Duration::from_millis(20);
    options.reconnect_max = Duration::from_millis(50);
    let _second = GreeterBridge::new(TestGreeter::new("second").0).connect(options);
    let ended = frozen.end_status(10).await.expect("a status");
    assert_eq!(ended.code(), Code::Aborted, "{ended:?}");
    assert!(ended.message().contains("re-registered"), "{ended:?}");
    router.wait_for_instances(1).await;
    let new_owner = router
        .router
        .registry()
        .snapshot()
        .by_id("dup")
        .cloned()
        .expect("taken over");

    // The frozen process wakes and comes back: refused, saying why, while
    // the new owner answers pings.
    for _ in 0..3 {
        let refused = raw(&router, "dup", "frozen-process")
            .await
            .err()
            .expect("refused");
        assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
        assert!(
            refused.message().contains("taken over")
                && refused.message().contains("while the new owner lives"),
            "{refused:?}"
        );
    }
    // Any other process is refused as a duplicate.
    let other = raw(&router, "dup", "another-process")
        .await
        .err()
        .expect("refused");
    assert_eq!(other.code(), Code::AlreadyExists, "{other:?}");
    assert!(!new_owner.is_closed(), "the new owner stays");
    let current = router.router.registry().snapshot().by_id("dup").cloned();
    assert!(
        current.is_some_and(|c| std::sync::Arc::ptr_eq(&c, &new_owner)),
        "one takeover only"
    );
    let mut client = router.client().await;
    assert_eq!(
        served_by(&mut client, Request::new(hello("x"))).await,
        "second"
    );
}

#[tokio::test]
async fn two_newcomers_racing_for_a_silent_owners_id_take_it_over_once() {
    let router = TestRouter::start(RouterConfig {
        heartbeat_interval: Duration::from_secs(1),
        heartbeat_timeout: Duration::from_secs(120),
        ..RouterConfig::default()
    })
    .await;
    let mut silent = raw(&router, "dup", "silent").await.expect("registered");
    // Each newcomer answers pings from its Welcome on, as a live bridge.
    let live = |incarnation: &'static str| {
        let router = &router;
        async move { raw(router, "dup", incarnation).await.map(answer_pings) }
    };
    let (first, second) = tokio::join!(live("newcomer-1"), live("newcomer-2"));
    let ended = silent.end_status(10).await.expect("a status");
    assert_eq!(ended.code(), Code::Aborted, "{ended:?}");
    let (winner, loser) = match (first, second) {
        (Ok(winner), Err(loser)) | (Err(loser), Ok(winner)) => (winner, loser),
        (Ok(_), Ok(_)) => panic!("both newcomers took the id over"),
        (Err(a), Err(b)) => panic!("both newcomers were refused: {a:?}, {b:?}"),
    };
    assert_eq!(loser.code(), Code::AlreadyExists, "{loser:?}");
    assert_eq!(router.router.registry().len(), 1);
    assert!(!winner.is_finished(), "the winner keeps its registration");
}

#[tokio::test]
async fn a_replaced_bridge_reports_it_and_waits_its_longest_backoff_before_trying_again() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let mut options = BridgeConfig::new(router.endpoint()).instance_id("dup");
    options.reconnect_initial = Duration::from_millis(1);
    options.reconnect_max = Duration::from_millis(400);
    let bridge = GreeterBridge::new(TestGreeter::new("bridge").0).connect(options);
    within(10, "registration", bridge.registered()).await;
    let incarnation = router
        .router
        .registry()
        .snapshot()
        .by_id("dup")
        .map(|i| i.info().incarnation.clone())
        .expect("registered");

    // A registration claiming the bridge's own process replaces it at once.
    let _replacement = answer_pings(raw(&router, "dup", &incarnation).await.expect("replaces"));
    let mut state = bridge.registrations();
    let replaced = within(
        5,
        "the bridge to report it was replaced",
        state.wait_for(|s| s.replaced == 1),
    )
    .await
    .expect("bridge alive")
    .clone();
    let since = tokio::time::Instant::now();
    assert_eq!(replaced.registered, 0);
    let error = replaced.last_error.expect("an error");
    assert!(
        matches!(
            error,
            router_runtime::bridge::RegistrationError::Replaced { .. }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("re-registered"), "{error}");

    // It tries again only after its longest backoff (at least half of it,
    // with jitter), not at once.
    within(
        10,
        "the bridge to register again",
        state.wait_for(|s| s.registered == 1),
    )
    .await
    .expect("bridge alive");
    assert!(
        since.elapsed() >= Duration::from_millis(200),
        "tried again after {:?}",
        since.elapsed()
    );
    assert_eq!(
        state.borrow().replaced,
        0,
        "registered again: no longer replaced"
    );
}
