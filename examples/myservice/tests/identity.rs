//! Who owns an instance id: two live bridge processes started with the same
//! id do not replace each other.

mod common;

use std::time::Duration;

use common::test_greeter::TestGreeter;
use common::{TestRouter, eventually, hello, served_by, start_instance, within};
use myservice_example::pb::GreeterBridge;
use router_runtime::bridge::BridgeConfig;
use router_runtime::router::RouterConfig;
use tonic::Request;

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
