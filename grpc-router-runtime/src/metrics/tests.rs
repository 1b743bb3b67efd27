//! Unit tests of the metric families: their names, the cardinality rule for
//! registrants' names, and the per-method cache.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use tonic::Code;

use super::*;
use crate::descriptor::MethodKind;
use crate::router::{Method, RouterConfig};

fn registered(options: MetricsOptions) -> (Registry, RouterMetrics) {
    let mut registry = Registry::default();
    let metrics = RouterMetrics::register_with(&mut registry, options);
    (registry, metrics)
}

fn core(metrics: &RouterMetrics, service: &str) -> Arc<RouterCore> {
    let config = RouterConfig {
        metrics: Some(metrics.clone()),
        ..RouterConfig::default()
    };
    RouterCore::new(config, crate::router::ServiceTable::learning(service)).shared()
}

fn method(name: &str, kind: MethodKind) -> Method {
    Method {
        name: name.into(),
        path: format!("/pkg.Svc/{name}").into(),
        tag: 1,
        kind,
        route_key: Box::new([]),
        idempotent: false,
        metrics: MethodCell::default(),
        gate: Default::default(),
    }
}

/// The sample lines (not comments) of `text` whose name is `name` or starts
/// with `name{`.
fn samples<'t>(text: &'t str, name: &str) -> Vec<&'t str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

/// The names of the `# TYPE` lines of `text`.
fn families(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_exported_family_is_encoded_and_nothing_else() {
    let (registry, metrics) = registered(MetricsOptions { per_instance: true });
    let core = core(&metrics, "pkg.Svc");
    let m = method("Get", MethodKind::BidiStreaming);
    let mut record = CallRecord::start(&core, &m, tokio::time::Instant::now());
    record.received(1);
    record.sent(1);
    record.no_instance();
    record.on_instance("i-1");
    record.finish(Code::Ok);
    let metered = RequestMeter::new(&core, &m).expect("metrics on");
    metered.received(1);
    drop(metered);
    core.metrics
        .as_ref()
        .expect("metrics on")
        .heartbeat_missed();
    core.metrics.as_ref().expect("metrics on").waited(
        crate::router::WaitOutcome::Served,
        Some(std::time::Duration::from_millis(5)),
    );
    metrics.refused_unknown(Code::Unauthenticated);
    let text = encode(&registry, Format::Prometheus).expect("encodes");
    let mut encoded = families(&text);
    encoded.sort();
    let mut exported: Vec<String> = EXPORTED.iter().map(|(n, _)| (*n).to_owned()).collect();
    exported.sort();
    assert_eq!(encoded, exported, "{text}");
    for (name, kind) in EXPORTED {
        let line = match kind {
            Kind::Counter => format!("# TYPE {name} counter"),
            Kind::Gauge => format!("# TYPE {name} gauge"),
            Kind::Histogram => format!("# TYPE {name} histogram"),
        };
        assert!(text.lines().any(|l| l == line), "{line}");
    }
    assert!(is_exported("grpc_server_handling_seconds_bucket"));
    assert!(is_exported("grpc_server_handled_total"));
    assert!(!is_exported("grpc_server_handled"));
    assert!(!is_exported("grpc_server_handling_seconds"));
    let open = encode(&registry, Format::OpenMetrics).expect("encodes");
    assert!(open.ends_with("# EOF\n"));
    assert!(
        open.contains("# TYPE grpc_server_handled counter"),
        "{open}"
    );
}

#[test]
fn per_instance_families_are_registered_only_when_asked_for() {
    let (registry, metrics) = registered(MetricsOptions::default());
    let core = core(&metrics, "pkg.Svc");
    let mut record = CallRecord::start(
        &core,
        &method("Get", MethodKind::Unary),
        tokio::time::Instant::now(),
    );
    record.on_instance("i-1");
    record.finish(Code::Ok);
    let text = encode(&registry, Format::Prometheus).expect("encodes");
    assert!(text.contains("grpc_server_handled_total{"), "{text}");
    assert!(!text.contains("grpc_router_instance_"), "{text}");
    assert!(!text.contains("i-1"), "{text}");
}

#[tokio::test]
async fn a_call_counts_once_with_the_go_code_name_and_its_messages() {
    let (registry, metrics) = registered(MetricsOptions::default());
    let core = core(&metrics, "pkg.Svc");
    let m = method("Get", MethodKind::ServerStreaming);
    for code in [Code::Ok, Code::Ok, Code::NotFound] {
        let mut record = CallRecord::start(&core, &m, tokio::time::Instant::now());
        record.received(10);
        record.sent(3);
        record.sent(4);
        record.finish(code);
        // A second status is ignored, and so is the drop.
        record.finish(Code::Internal);
    }
    // A record dropped without a status: the client went away.
    drop(CallRecord::start(&core, &m, tokio::time::Instant::now()));
    let text = encode(&registry, Format::Prometheus).expect("encodes");
    let labels = r#"grpc_service="pkg.Svc",grpc_method="Get",grpc_type="server_stream""#;
    for (line, why) in [
        (
            format!("grpc_server_started_total{{{labels}}} 4"),
            "started",
        ),
        (
            format!("grpc_server_handled_total{{{labels},grpc_code=\"OK\"}} 2"),
            "OK",
        ),
        (
            format!("grpc_server_handled_total{{{labels},grpc_code=\"NotFound\"}} 1"),
            "NotFound",
        ),
        (
            format!("grpc_server_handled_total{{{labels},grpc_code=\"Canceled\"}} 1"),
            "dropped",
        ),
        (
            format!("grpc_server_msg_received_total{{{labels}}} 3"),
            "received",
        ),
        (format!("grpc_server_msg_sent_total{{{labels}}} 6"), "sent"),
        (
            format!("grpc_server_msg_sent_bytes_total{{{labels}}} 21"),
            "sent bytes",
        ),
        (
            format!("grpc_server_handling_seconds_count{{{labels}}} 4"),
            "latency",
        ),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{why}: `{line}` in\n{text}"
        );
    }
    assert!(
        samples(&text, "grpc_server_handled_total").len() == 3,
        "{text}"
    );
}

#[test]
fn a_method_resolves_its_children_once() {
    let (_registry, metrics) = registered(MetricsOptions::default());
    let core = core(&metrics, "pkg.Svc");
    let m = method("Get", MethodKind::Unary);
    let first = call::MethodMetrics::of(&core, &m).expect("metrics on");
    let second = call::MethodMetrics::of(&core, &m).expect("metrics on");
    assert!(Arc::ptr_eq(&first, &second));
    // A router without metrics records nothing.
    let plain = RouterCore::new(
        RouterConfig::default(),
        crate::router::ServiceTable::learning("pkg.Svc"),
    )
    .shared();
    assert!(call::MethodMetrics::of(&plain, &m).is_none());
}

#[test]
fn refusals_of_services_never_admitted_share_one_label_value() {
    let (registry, metrics) = registered(MetricsOptions::default());
    // A flood of registrations, each naming a new service, all refused
    // before their service is defined; the cores stay alive meanwhile.
    let mut cores = Vec::new();
    for i in 0..500 {
        let core = core(
            &metrics,
            &format!("hostile{i}.Svc{}", rand::random::<u32>()),
        );
        crate::router::session_record(&core, Event::Refused(Code::InvalidArgument));
        crate::router::session_record(&core, Event::Refused(Code::FailedPrecondition));
        cores.push(core);
    }
    metrics.refused_unknown(Code::ResourceExhausted);
    let text = encode(&registry, Format::Prometheus).expect("encodes");
    assert!(
        !text.contains("hostile"),
        "a registrant's name leaked:\n{text}"
    );
    let events = samples(&text, "grpc_router_registration_events_total");
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(
        events.iter().any(|l| l
            == &r#"grpc_router_registration_events_total{grpc_service="<unknown>",event="refused",reason="InvalidArgument"} 500"#),
        "{events:?}"
    );
    // The whole scrape stays small: every family has at most a handful of
    // series, however many names were tried.
    let series = text.lines().filter(|l| !l.starts_with('#')).count();
    assert!(series < 10, "{series} series:\n{text}");
}

#[test]
fn an_admitted_service_is_reported_by_name() {
    let (registry, metrics) = registered(MetricsOptions::default());
    let core = core(&metrics, "pkg.Svc");
    let description = crate::pb::ServiceDescription {
        name: "pkg.Svc".to_owned(),
        methods: vec![crate::pb::MethodDescription {
            name: "Get".to_owned(),
            path: "/pkg.Svc/Get".to_owned(),
            tag: 1,
            kind: MethodKind::Unary.wire() as i32,
            route_key: Vec::new(),
            idempotent: false,
        }],
        default_strategy: String::new(),
        file_descriptor_set: bytes::Bytes::new(),
    };
    core.service
        .admit(
            Some(&description),
            crate::router::bridge_kind::BridgeKind::Rust,
            || false,
            |_| (),
        )
        .expect("admitted");
    crate::router::session_record(&core, Event::Accepted);
    let text = encode(&registry, Format::Prometheus).expect("encodes");
    assert!(
        text.lines().any(|l| l
            == r#"grpc_router_registration_events_total{grpc_service="pkg.Svc",event="accepted",reason=""} 1"#),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == r#"grpc_router_registrations{grpc_service="pkg.Svc"} 0"#),
        "{text}"
    );
}

#[test]
fn the_format_follows_the_scrapers_accept_header() {
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
    assert_eq!(Format::from_accept(Some("text/plain")), Format::Prometheus);
    assert_eq!(Format::from_accept(None), Format::Prometheus);
    assert!(
        Format::OpenMetrics
            .content_type()
            .starts_with("application/openmetrics-text; version=1.0.0")
    );
    assert!(Format::Prometheus.content_type().contains("version=0.0.4"));
}
