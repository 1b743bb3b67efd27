//! An embedder's metrics: a compiled `GreeterRouter` reporting into the
//! embedder's own `prometheus_client` registry.

use test_kit as common;

use common::{TestRouter, start_instance, within};
use myservice::greeter::GreeterImpl;
use myservice::pb::{HelloRequest, Number};
use router_runtime::metrics::{self, Format, MetricsOptions, RouterMetrics};
use router_runtime::prometheus_client::registry::Registry;
use router_runtime::router::RouterConfig;

/// The value of the sample line `name{labels}` in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_compiled_router_reports_into_the_embedders_registry() {
    let mut registry = Registry::with_prefix("myapp");
    let metrics =
        RouterMetrics::register_with(&mut registry, MetricsOptions { per_instance: true });
    let router = TestRouter::start(RouterConfig {
        metrics: Some(metrics),
        ..RouterConfig::default()
    })
    .await;
    let _instance = start_instance(&router, "greeter-1", GreeterImpl::new("greeter-1")).await;
    router.wait_for_instances(1).await;
    let mut client = router.client().await;
    for _ in 0..2 {
        within(
            5,
            "SayHello",
            client.say_hello(HelloRequest {
                name: "x".into(),
                payload: vec![],
            }),
        )
        .await
        .expect("routed");
    }
    let numbers = (1..=5).map(|value| Number { value });
    let sum = within(5, "Sum", client.sum(tokio_stream::iter(numbers)))
        .await
        .expect("routed")
        .into_inner();
    assert_eq!(sum.count, 5);

    let text = metrics::encode(&registry, Format::Prometheus).expect("encodes");
    let say = r#"grpc_service="myservice.v1.Greeter",grpc_method="SayHello",grpc_type="unary""#;
    let summed =
        r#"grpc_service="myservice.v1.Greeter",grpc_method="Sum",grpc_type="client_stream""#;
    let value = |series: String| {
        sample(&text, &series).unwrap_or_else(|| panic!("no `{series}` in\n{text}"))
    };
    // The registry's prefix applies to every family.
    assert_eq!(
        value(format!(
            "myapp_grpc_server_handled_total{{{say},grpc_code=\"OK\"}}"
        )),
        2.0
    );
    assert_eq!(
        value(format!("myapp_grpc_server_msg_received_total{{{summed}}}")),
        5.0
    );
    assert_eq!(
        value(format!("myapp_grpc_server_msg_sent_total{{{summed}}}")),
        1.0
    );
    assert_eq!(
        value(format!(
            "myapp_grpc_server_handled_total{{{summed},grpc_code=\"OK\"}}"
        )),
        1.0
    );
    // The client stream went through the request pump: one credit-wait
    // observation for the call.
    assert_eq!(
        value(
            r#"myapp_grpc_router_credit_wait_seconds_count{grpc_service="myservice.v1.Greeter"}"#
                .to_owned()
        ),
        1.0
    );
    assert_eq!(
        value(r#"myapp_grpc_router_registrations{grpc_service="myservice.v1.Greeter"}"#.to_owned()),
        1.0
    );
    assert_eq!(
        value(
            r#"myapp_grpc_router_instance_calls_total{grpc_service="myservice.v1.Greeter",instance_id="greeter-1"}"#
                .to_owned()
        ),
        3.0
    );
    router.stop().await;
}
