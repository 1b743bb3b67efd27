//! End to end: the daemon's KEDA external scaler (`[keda] listen`), asked
//! by a client of the vendored `externalscaler.proto` as KEDA asks it: a
//! service with no call is inactive; a call that waits for an instance makes
//! it active, pushed on `StreamIsActive` at once; `GetMetrics` counts the
//! calls waiting and those in flight.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Daemon, config_with, poll, within};
use grpc_router::keda::pb;
use grpc_router::keda::pb::external_scaler_client::ExternalScalerClient;
use myservice::pb::HelloRequest;
use myservice::pb::greeter_client::GreeterClient;
use router_runtime::bridge::BridgeConfig;
use tokio::time::Instant;
use tonic::transport::Channel;

const GREETER: &str = "myservice.v1.Greeter";

fn scaled_object() -> pb::ScaledObjectRef {
    pb::ScaledObjectRef {
        name: "greeter".into(),
        namespace: "default".into(),
        scaler_metadata: HashMap::from([
            ("service".to_owned(), GREETER.to_owned()),
            ("target".to_owned(), "5".to_owned()),
        ]),
    }
}

async fn scaler(daemon: &Daemon) -> ExternalScalerClient<Channel> {
    let addr = daemon.keda.expect("the daemon prints keda=ADDR");
    let channel = within(
        10,
        "scaler connection",
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect(),
    )
    .await
    .expect("connects");
    ExternalScalerClient::new(channel)
}

async fn is_active(scaler: &mut ExternalScalerClient<Channel>) -> bool {
    within(5, "IsActive", scaler.is_active(scaled_object()))
        .await
        .expect("IsActive answers")
        .into_inner()
        .result
}

async fn metric(scaler: &mut ExternalScalerClient<Channel>) -> i64 {
    let response = within(
        5,
        "GetMetrics",
        scaler.get_metrics(pb::GetMetricsRequest {
            scaled_object_ref: Some(scaled_object()),
            metric_name: "grpc-router-myservice-v1-greeter".into(),
        }),
    )
    .await
    .expect("GetMetrics answers")
    .into_inner();
    let value = response.metric_values.first().expect("one metric value");
    assert_eq!(value.metric_name, "grpc-router-myservice-v1-greeter");
    value.metric_value
}

fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.into(),
        payload: vec![],
    }
}

#[tokio::test]
async fn the_scaler_reports_waiting_and_in_flight_calls_and_pushes_activity_at_once() {
    let daemon = Daemon::start(&config_with(&format!(
        "[keda]\nlisten = \"127.0.0.1:0\"\n\
         [services.\"{GREETER}\"]\nwait_for_instance = \"30s\"\n"
    )));
    let mut scaler = scaler(&daemon).await;
    assert!(!is_active(&mut scaler).await, "no call yet");
    assert_eq!(metric(&mut scaler).await, 0);
    let spec = scaler
        .get_metric_spec(scaled_object())
        .await
        .expect("GetMetricSpec answers")
        .into_inner();
    assert_eq!(spec.metric_specs[0].target_size, 5);

    let mut pushes = scaler
        .stream_is_active(scaled_object())
        .await
        .expect("StreamIsActive answers")
        .into_inner();
    let first = within(5, "the first push", pushes.message())
        .await
        .expect("stream")
        .expect("a message");
    assert!(!first.result, "the state now comes first");

    // A call with no instance waits; the push comes at once.
    let mut client = GreeterClient::new(daemon.channel().await);
    let sent = Instant::now();
    let waiting = tokio::spawn(async move { client.say_hello(hello("slow:2000")).await });
    let pushed = within(5, "the push of a waiting call", pushes.message())
        .await
        .expect("stream")
        .expect("a message");
    let push_after = sent.elapsed();
    assert!(pushed.result, "active while a call waits");
    eprintln!("StreamIsActive pushed {push_after:?} after the call was sent");
    assert!(
        push_after < Duration::from_millis(100),
        "pushed within 100 ms of the call: {push_after:?}"
    );
    assert!(is_active(&mut scaler).await);
    assert_eq!(metric(&mut scaler).await, 1, "one call waiting");

    // An instance comes: the first call is in flight (2 s handler); a call
    // for instances labelled zone=b waits meanwhile.
    let (greeter, _events) = test_kit::test_greeter::TestGreeter::new("a");
    let _instance = myservice::pb::GreeterBridge::new(greeter)
        .connect(BridgeConfig::new(daemon.registrations_url()).instance_id("a"));
    let mut labelled = GreeterClient::new(daemon.channel().await);
    let second = tokio::spawn(async move {
        let mut request = tonic::Request::new(hello("b"));
        request
            .metadata_mut()
            .insert("x-router-select", "zone=b".parse().expect("ascii"));
        labelled.say_hello(request).await
    });
    poll(10, "one call in flight and one waiting", || async {
        let status = daemon.service_status(GREETER).await?;
        (status.active_calls == 1 && status.waiting_calls == 1).then_some(())
    })
    .await;
    assert_eq!(metric(&mut scaler).await, 2, "waiting + in flight");
    assert!(is_active(&mut scaler).await);
    // The pushes meanwhile (the waiting call going in flight, the second
    // call waiting) end active: a call in flight counts.
    let mut last = pushed.result;
    while let Ok(Ok(Some(next))) =
        tokio::time::timeout(Duration::from_millis(200), pushes.message()).await
    {
        last = next.result;
    }
    assert!(last, "active while a call is in flight");

    within(10, "the first call", waiting)
        .await
        .expect("task")
        .expect("served once the instance came");
    second.abort();
    poll(10, "the scaler to see no call", || async {
        (metric(&mut scaler.clone()).await == 0).then_some(())
    })
    .await;
    let idle = within(5, "the push of idleness", pushes.message())
        .await
        .expect("stream")
        .expect("a message");
    // Pushes only report changes; the last is inactive.
    last = idle.result;
    while let Ok(Ok(Some(next))) =
        tokio::time::timeout(Duration::from_millis(200), pushes.message()).await
    {
        last = next.result;
    }
    assert!(!last, "inactive once no call waits or runs");
}

#[tokio::test]
async fn a_trigger_that_names_no_service_is_refused_saying_what_to_write() {
    let daemon = Daemon::start(&config_with("[keda]\nlisten = \"127.0.0.1:0\"\n"));
    let mut scaler = scaler(&daemon).await;
    let status = scaler
        .is_active(pb::ScaledObjectRef::default())
        .await
        .expect_err("no service named");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("service:"), "{status:?}");
}
