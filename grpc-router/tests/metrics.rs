//! End to end: the daemon's `/metrics`, scraped from the admin listener
//! after real calls through real bridges, parsed as Prometheus text.

mod common;

use common::{Daemon, config_with, within};
use myservice::inventory::start_inventory_instance;
use myservice::inventory_pb::inventory_client::InventoryClient;
use myservice::inventory_pb::{GetItemRequest, ListItemsRequest};
use myservice::pb::HelloRequest;
use myservice::pb::greeter_client::GreeterClient;
use prometheus_parse::{Sample, Scrape, Value};
use router_runtime::bridge::BridgeConfig;
use router_runtime::codec::FrameCodec;
use router_runtime::pb;
use router_runtime::wire::{BridgeFrame, RouterFrame};

const GREETER: &str = "myservice.v1.Greeter";
const INVENTORY: &str = "inventory.v1.Inventory";

/// `GET /metrics` with `accept`: the status, the content type and the body.
async fn scrape_raw(daemon: &Daemon, accept: Option<&str>) -> (u16, String, String) {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
    let response = daemon.http_request("/metrics", &headers).await;
    let content_type = response.header("content-type");
    (response.code, content_type, response.body)
}

/// The parsed samples of one scrape.
struct Metrics(Scrape);

impl Metrics {
    async fn scrape(daemon: &Daemon) -> Metrics {
        let (code, _, body) = scrape_raw(daemon, None).await;
        assert_eq!(code, 200, "{body}");
        let lines = body.lines().map(|l| Ok(l.to_owned()));
        Metrics(Scrape::parse(lines).expect("Prometheus text"))
    }

    /// The samples of `metric` whose labels include every pair of `labels`.
    fn matching(&self, metric: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == metric)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .collect()
    }

    /// The value of the one sample of `metric` with `labels` (0 when there
    /// is none, as Prometheus reads an absent counter).
    fn value(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        let found = self.matching(metric, labels);
        assert!(found.len() <= 1, "{metric} {labels:?}: {found:?}");
        match found.first().map(|s| &s.value) {
            None => 0.0,
            Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
            Some(other) => panic!("{metric} is not a number: {other:?}"),
        }
    }
}

fn get_item(sku: &str) -> GetItemRequest {
    GetItemRequest { sku: sku.into() }
}

#[tokio::test]
async fn a_scrape_counts_exactly_the_calls_made_through_the_router() {
    let daemon = Daemon::start(&config_with(""));
    let _i = start_inventory_instance(vec![daemon.registrations_url()], "inventory-1");
    let _g1 = myservice::demo::start_instance(
        BridgeConfig::new(daemon.registrations_url()).instance_id("greeter-1"),
    );
    let _g2 = myservice::demo::start_instance(
        BridgeConfig::new(daemon.registrations_url()).instance_id("greeter-2"),
    );
    daemon.wait_for_instances(INVENTORY, 1).await;
    daemon.wait_for_instances(GREETER, 2).await;

    let mut inventory = InventoryClient::new(daemon.channel().await);
    for _ in 0..3 {
        within(5, "GetItem", inventory.get_item(get_item("sku-002")))
            .await
            .expect("found");
    }
    let missing = within(5, "GetItem", inventory.get_item(get_item("sku-404")))
        .await
        .expect_err("not found");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let mut items = within(
        5,
        "ListItems",
        inventory.list_items(ListItemsRequest { limit: 0 }),
    )
    .await
    .expect("listed")
    .into_inner();
    let mut listed = 0.0;
    while within(5, "an item", items.message())
        .await
        .expect("streamed")
        .is_some()
    {
        listed += 1.0;
    }
    assert!(listed > 1.0, "the inventory lists several items");

    let metrics = Metrics::scrape(&daemon).await;
    let get = [
        ("grpc_service", INVENTORY),
        ("grpc_method", "GetItem"),
        ("grpc_type", "unary"),
    ];
    let handled = |code| {
        let mut labels = get.to_vec();
        labels.push(("grpc_code", code));
        metrics.value("grpc_server_handled_total", &labels)
    };
    assert_eq!(handled("OK"), 3.0);
    assert_eq!(handled("NotFound"), 1.0);
    assert_eq!(
        metrics.matching("grpc_server_handled_total", &get).len(),
        2,
        "no other code"
    );
    assert_eq!(metrics.value("grpc_server_started_total", &get), 4.0);
    assert_eq!(metrics.value("grpc_server_msg_received_total", &get), 4.0);
    // NOT_FOUND ends without a response message.
    assert_eq!(metrics.value("grpc_server_msg_sent_total", &get), 3.0);
    assert!(metrics.value("grpc_server_msg_sent_bytes_total", &get) > 0.0);
    assert_eq!(
        metrics.value("grpc_server_handling_seconds_count", &get),
        4.0
    );
    let list = [
        ("grpc_service", INVENTORY),
        ("grpc_method", "ListItems"),
        ("grpc_type", "server_stream"),
    ];
    assert_eq!(metrics.value("grpc_server_msg_sent_total", &list), listed);
    assert_eq!(metrics.value("grpc_server_msg_received_total", &list), 1.0);

    let service = |name| [("grpc_service", name)];
    assert_eq!(
        metrics.value("grpc_router_registrations", &service(INVENTORY)),
        1.0
    );
    assert_eq!(
        metrics.value("grpc_router_registrations", &service(GREETER)),
        2.0
    );
    assert_eq!(
        metrics.value(
            "grpc_router_registration_events_total",
            &[
                ("grpc_service", INVENTORY),
                ("event", "accepted"),
                ("reason", "")
            ]
        ),
        1.0
    );
    assert_eq!(
        metrics.value(
            "grpc_router_registration_events_total",
            &[("grpc_service", GREETER), ("event", "accepted")]
        ),
        2.0
    );
    assert_eq!(
        metrics.value("grpc_router_calls_in_flight", &service(INVENTORY)),
        0.0
    );
    // Per-instance metrics are off by default.
    assert!(
        metrics
            .0
            .samples
            .iter()
            .all(|s| !s.metric.starts_with("grpc_router_instance_"))
    );
}

#[tokio::test]
async fn metrics_are_served_as_openmetrics_to_a_scraper_that_asks_for_it() {
    let daemon = Daemon::start(&config_with(""));
    let (code, content_type, body) = scrape_raw(
        &daemon,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    let (code, content_type, body) = scrape_raw(&daemon, None).await;
    assert_eq!(code, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        body.contains("# TYPE grpc_router_registrations gauge"),
        "{body}"
    );
}

#[tokio::test]
async fn a_call_with_no_instance_is_counted_under_its_method() {
    let daemon = Daemon::start(&config_with(""));
    let greeter = myservice::demo::start_instance(
        BridgeConfig::new(daemon.registrations_url()).instance_id("greeter-1"),
    );
    daemon.wait_for_instances(GREETER, 1).await;
    let mut client = GreeterClient::new(daemon.channel().await);
    let hello = || HelloRequest {
        name: "x".into(),
        payload: vec![],
    };
    within(5, "SayHello", client.say_hello(hello()))
        .await
        .expect("routed");
    // The only instance leaves; the service stays known (it was defined).
    greeter.shutdown().await;
    daemon.wait_for_instances(GREETER, 0).await;
    let status = within(5, "SayHello", client.say_hello(hello()))
        .await
        .expect_err("no instance");
    assert_eq!(status.code(), tonic::Code::Unavailable);

    let metrics = Metrics::scrape(&daemon).await;
    let say = [("grpc_service", GREETER), ("grpc_method", "SayHello")];
    assert_eq!(
        metrics.value("grpc_router_calls_no_instance_total", &say),
        1.0
    );
    let mut unavailable = say.to_vec();
    unavailable.push(("grpc_code", "Unavailable"));
    assert_eq!(
        metrics.value("grpc_server_handled_total", &unavailable),
        1.0
    );
    assert_eq!(
        metrics.value("grpc_router_registrations", &[("grpc_service", GREETER)]),
        0.0
    );
    let drained = metrics.value(
        "grpc_router_registration_events_total",
        &[("grpc_service", GREETER), ("event", "drained")],
    );
    assert_eq!(drained, 1.0, "a bridge that shuts down drains first");
}

/// Opens a register stream for `service` with `hello` and returns its
/// refusal (or `OK` if it was accepted).
async fn register_as(daemon: &Daemon, service: &str, hello: pb::Hello) -> tonic::Code {
    let (out, rx) = tokio::sync::mpsc::unbounded_channel();
    let _ = out.send(BridgeFrame::Hello(hello));
    let mut grpc = tonic::client::Grpc::new(daemon.registration_channel().await);
    if grpc.ready().await.is_err() {
        return tonic::Code::Unavailable;
    }
    let path = format!("/{service}Router/Register");
    let path = http::uri::PathAndQuery::try_from(path).expect("a path");
    let answer = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
            path,
            FrameCodec::<BridgeFrame, RouterFrame>::default(),
        )
        .await;
    let result = match answer {
        Ok(response) => response.into_inner().message().await.map(|_| ()),
        Err(status) => Err(status),
    };
    drop(out);
    result.err().map_or(tonic::Code::Ok, |s| s.code())
}

#[tokio::test]
async fn registrations_under_made_up_service_names_do_not_grow_the_metrics() {
    let daemon = Daemon::start(&config_with("[limits]\nmax_services = 4\n"));
    let mut codes = std::collections::HashSet::new();
    for i in 0..60u32 {
        let service = format!("hostile{i}.Svc{}", i.wrapping_mul(2_654_435_761));
        let mut hello = pb::Hello {
            protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
            instance_id: format!("intruder-{i}"),
            service: service.clone(),
            weight: 1,
            ..Default::default()
        };
        // Every third describes another service (a lie), the others
        // describe nothing: a learning router refuses both.
        if i % 3 == 0 {
            hello.description = Some(pb::ServiceDescription {
                name: "other.Svc".into(),
                ..Default::default()
            });
        }
        codes.insert(register_as(&daemon, &service, hello).await);
    }
    assert!(!codes.contains(&tonic::Code::Ok), "{codes:?}");

    let (code, _, body) = scrape_raw(&daemon, None).await;
    assert_eq!(code, 200);
    assert!(
        !body.contains("hostile"),
        "a registrant's name leaked:\n{body}"
    );
    let metrics = Metrics::scrape(&daemon).await;
    let events = metrics.matching("grpc_router_registration_events_total", &[]);
    let refused: f64 = events
        .iter()
        .map(|s| match s.value {
            Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(refused, 60.0, "every refusal is counted: {events:?}");
    assert!(
        events
            .iter()
            .all(|s| s.labels.get("grpc_service") == Some("<unknown>")
                && s.labels.get("event") == Some("refused")),
        "{events:?}"
    );
    // One series per refusal class, a handful at most, however many names.
    assert!(events.len() <= 3, "{events:?}");
    assert!(
        metrics.0.samples.len() < 20,
        "the whole scrape stays small: {} samples",
        metrics.0.samples.len()
    );
}

#[tokio::test]
async fn per_instance_metrics_follow_the_live_instances_when_enabled() {
    let config = config_with("").replace("[admin]\n", "[admin]\nper_instance_metrics = true\n");
    let daemon = Daemon::start(&config);
    let greeter = myservice::demo::start_instance(
        BridgeConfig::new(daemon.registrations_url()).instance_id("greeter-1"),
    );
    daemon.wait_for_instances(GREETER, 1).await;
    let mut client = GreeterClient::new(daemon.channel().await);
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
    let one = [("grpc_service", GREETER), ("instance_id", "greeter-1")];
    let metrics = Metrics::scrape(&daemon).await;
    assert_eq!(metrics.value("grpc_router_instance_calls_total", &one), 2.0);
    assert_eq!(
        metrics.value("grpc_router_instance_handling_seconds_count", &one),
        2.0
    );

    greeter.shutdown().await;
    daemon.wait_for_instances(GREETER, 0).await;
    let metrics = Metrics::scrape(&daemon).await;
    assert!(
        metrics
            .matching("grpc_router_instance_calls_total", &one)
            .is_empty(),
        "a gone instance's series are dropped"
    );
}

/// Scrapes until `done` holds for the parsed samples (the daemon's sweeper
/// acts on its own clock), failing after `secs` seconds.
async fn scrape_until(
    daemon: &Daemon,
    secs: u64,
    what: &str,
    done: impl Fn(&Metrics) -> bool,
) -> Metrics {
    within(secs, what, async {
        loop {
            let metrics = Metrics::scrape(daemon).await;
            if done(&metrics) {
                return metrics;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_bridge_that_stops_answering_pings_misses_heartbeats_and_is_evicted() {
    let daemon = Daemon::start(&config_with(
        "[defaults]\nheartbeat_interval = \"100ms\"\nheartbeat_timeout = \"600ms\"\n",
    ));
    // A real bridge defines the service, so the silent one is admitted.
    let _live = myservice::demo::start_instance(
        BridgeConfig::new(daemon.registrations_url()).instance_id("greeter-1"),
    );
    daemon.wait_for_instances(GREETER, 1).await;
    // A registration by hand that reads nothing and answers no ping.
    let description = <myservice::pb::GreeterSpec as router_runtime::codegen::ServiceSpec>::DESCRIPTOR
        .describe(<myservice::pb::GreeterSpec as router_runtime::codegen::ServiceSpec>::FILE_DESCRIPTOR_SET);
    let hello = pb::Hello {
        protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
        instance_id: "silent".into(),
        service: GREETER.into(),
        weight: 1,
        description: Some(description),
        ..Default::default()
    };
    let (out, rx) = tokio::sync::mpsc::unbounded_channel();
    let _ = out.send(BridgeFrame::Hello(hello));
    let mut grpc = tonic::client::Grpc::new(daemon.registration_channel().await);
    grpc.ready().await.expect("ready");
    let _silent = within(
        5,
        "the silent registration",
        grpc.streaming(
            tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
            http::uri::PathAndQuery::from_static("/myservice.v1.GreeterRouter/Register"),
            FrameCodec::<BridgeFrame, RouterFrame>::default(),
        ),
    )
    .await
    .expect("accepted");

    let evicted = [("grpc_service", GREETER), ("event", "evicted")];
    let metrics = scrape_until(&daemon, 10, "the eviction", |m| {
        m.value("grpc_router_registration_events_total", &evicted) >= 1.0
    })
    .await;
    assert_eq!(
        metrics.value("grpc_router_registration_events_total", &evicted),
        1.0,
        "only the silent registration is evicted"
    );
    assert!(
        metrics.value(
            "grpc_router_heartbeats_missed_total",
            &[("grpc_service", GREETER)]
        ) >= 1.0,
        "it missed pings before its eviction"
    );
    assert_eq!(
        metrics.value(
            "grpc_router_registration_events_total",
            &[("grpc_service", GREETER), ("event", "accepted")]
        ),
        2.0
    );
    assert_eq!(
        metrics.value("grpc_router_registrations", &[("grpc_service", GREETER)]),
        1.0
    );
    drop(out);
}
