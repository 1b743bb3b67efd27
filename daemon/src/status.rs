//! `grpc-router status`: what a running router routes, through its admin
//! service (`router.v1.RouterAdmin`).

use std::fmt::Write as _;

use router_runtime::pb;
use router_runtime::pb::router_admin_client::RouterAdminClient;
use serde::Serialize;

/// Asks the router at `url` (`http://host:port`) for its services.
pub async fn fetch(url: &str) -> Result<pb::ListServicesResponse, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("`{url}` is not a router URL: {e}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {url}: {}", chain(&e)))?;
    RouterAdminClient::new(channel)
        .list_services(pb::ListServicesRequest::default())
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| format!("{url} answered {:?}: {}", s.code(), s.message()))
}

fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let _ = write!(text, ": {e}");
        source = e.source();
    }
    text
}

/// The status as a table: one line per instance, under its service.
pub fn table(status: &pb::ListServicesResponse) -> String {
    let mut out = format!("router {}\n", status.router_id);
    if status.services.is_empty() {
        out.push_str("no service known\n");
    }
    for service in &status.services {
        let _ = writeln!(
            out,
            "\n{}  strategy={}  instances={}  in_flight={}  calls={}  retried={}",
            service.name,
            service.strategy,
            service.instances.len(),
            service.active_calls,
            service.calls_started,
            service.calls_retried
        );
        let _ = writeln!(
            out,
            "  {:<24} {:<10} {:>9} {:>6}  LABELS",
            "INSTANCE", "STATE", "IN_FLIGHT", "WEIGHT"
        );
        for instance in &service.instances {
            let _ = writeln!(
                out,
                "  {:<24} {:<10} {:>9} {:>6}  {}",
                instance.id,
                state(instance),
                instance.outstanding_calls,
                instance.weight,
                labels(instance)
            );
        }
    }
    out
}

fn state(instance: &pb::InstanceStatus) -> &'static str {
    match (instance.serving, instance.draining) {
        (_, true) => "draining",
        (true, false) => "serving",
        (false, false) => "not-serving",
    }
}

fn labels(instance: &pb::InstanceStatus) -> String {
    let mut labels: Vec<String> = instance
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    labels.sort();
    labels.join(",")
}

#[derive(Serialize)]
struct JsonStatus<'a> {
    router_id: &'a str,
    services: Vec<JsonService<'a>>,
}

#[derive(Serialize)]
struct JsonService<'a> {
    name: &'a str,
    strategy: &'a str,
    in_flight: u64,
    calls_started: u64,
    calls_retried: u64,
    instances: Vec<JsonInstance<'a>>,
}

#[derive(Serialize)]
struct JsonInstance<'a> {
    id: &'a str,
    state: &'static str,
    in_flight: u32,
    weight: u32,
    max_concurrent_calls: u32,
    labels: std::collections::BTreeMap<&'a str, &'a str>,
    connected_since_unix: Option<i64>,
}

/// The status as JSON.
pub fn json(status: &pb::ListServicesResponse) -> String {
    let value = JsonStatus {
        router_id: &status.router_id,
        services: status
            .services
            .iter()
            .map(|s| JsonService {
                name: &s.name,
                strategy: &s.strategy,
                in_flight: s.active_calls,
                calls_started: s.calls_started,
                calls_retried: s.calls_retried,
                instances: s
                    .instances
                    .iter()
                    .map(|i| JsonInstance {
                        id: &i.id,
                        state: state(i),
                        in_flight: i.outstanding_calls,
                        weight: i.weight,
                        max_concurrent_calls: i.max_concurrent_calls,
                        labels: i
                            .labels
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_str()))
                            .collect(),
                        connected_since_unix: i.connected_since.as_ref().map(|t| t.seconds),
                    })
                    .collect(),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
