//! What operators see: the router's health and admin services.

use test_kit as common;

use std::time::Duration;

use common::within;
use myservice::demo::{RunningRouter, connect_channel, start_instance};
use router_runtime::bridge::BridgeConfig;
use router_runtime::pb::router_admin_client::RouterAdminClient;
use router_runtime::pb::{ListServicesRequest, Strategy};
use router_runtime::router::RouterConfig;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn health_follows_registrations_and_admin_lists_instances() {
    let router = RunningRouter::start(
        "127.0.0.1:0".parse().expect("addr"),
        RouterConfig::default(),
    )
    .await
    .expect("router starts");
    let channel = connect_channel(&router.endpoint()).await.expect("connects");
    let mut health = HealthClient::new(channel.clone());
    let check = |health: &mut HealthClient<_>| {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest {
                    service: "myservice.v1.Greeter".into(),
                })
                .await
                .expect("health answers")
                .into_inner()
                .status
        }
    };
    assert_eq!(check(&mut health).await, ServingStatus::NotServing as i32);

    let instance = start_instance(
        BridgeConfig::new(router.endpoint())
            .instance_id("a")
            .label("zone", "z1")
            .weight(3),
    );
    within(10, "registration", instance.registered()).await;
    within(
        10,
        "serving",
        myservice::demo::wait_until_serving(channel.clone(), Duration::from_secs(10)),
    )
    .await
    .expect("serving");
    assert_eq!(check(&mut health).await, ServingStatus::Serving as i32);

    let mut admin = RouterAdminClient::new(channel);
    let listing = within(
        5,
        "admin",
        admin.list_services(ListServicesRequest::default()),
    )
    .await
    .expect("admin answers")
    .into_inner();
    assert_eq!(listing.services.len(), 1);
    let service = &listing.services[0];
    assert_eq!(service.name, "myservice.v1.Greeter");
    assert_eq!(service.strategy, Strategy::PowerOfTwoChoices.as_str_name());
    assert_eq!(service.instances.len(), 1);
    assert_eq!((service.calls_started, service.calls_retried), (0, 0));
    let a = &service.instances[0];
    assert_eq!(a.id, "a");
    assert_eq!(a.labels.get("zone").map(String::as_str), Some("z1"));
    assert_eq!(a.weight, 3);
    assert!(a.serving && !a.draining);
    assert!(a.connected_since.is_some());

    let missing = within(
        5,
        "admin",
        admin.list_services(ListServicesRequest {
            service: "no.Such".into(),
        }),
    )
    .await
    .expect_err("unknown service");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    within(10, "drain", instance.shutdown()).await;
    router
        .stop(Duration::from_secs(10))
        .await
        .expect("router stops");
}
