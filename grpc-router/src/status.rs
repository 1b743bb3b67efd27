//! `grpc-router status`: what a running router routes, through its admin
//! service (`router.v1.RouterAdmin`), which the admin listener serves
//! (`[admin] address`; the clients' listener only with
//! `[clients] serve_admin = true`).

use std::fmt::Write as _;

use router_runtime::pb;
use router_runtime::pb::router_admin_client::RouterAdminClient;
use serde::Serialize;

/// Where `grpc-router status` looks by default: the admin listener of a
/// router on this host with the shipped config's `[admin] address`.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9090";

/// Asks the router's admin listener at `url` (`http://host:port`,
/// `https://host:port`, or `host:port` for plain HTTP/2) for its services,
/// with the admin `token` when given.
pub async fn fetch(url: &str, token: Option<&str>) -> Result<pb::ListServicesResponse, String> {
    let url = router_url(url);
    let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|e| format!("`{url}` is not a router URL: {}", chain(&e)))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {url}: {}", chain(&e)))?;
    let mut request = tonic::Request::new(pb::ListServicesRequest::default());
    if let Some(token) = token {
        let value = format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| "the admin token is not printable ASCII".to_owned())?;
        request.metadata_mut().insert("authorization", value);
    }
    RouterAdminClient::new(channel)
        .list_services(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| answer_error(&url, &s))
}

/// `text` as a URL: `host:port` gets `http://`.
pub fn router_url(text: &str) -> String {
    if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    }
}

/// What to say when the router at `url` answered `status`.
fn answer_error(url: &str, status: &tonic::Status) -> String {
    let said = if status.message().is_empty() {
        String::new()
    } else {
        format!(": {}", status.message())
    };
    match status.code() {
        tonic::Code::Unimplemented => {
            return format!(
                "{url} does not serve the admin service `router.v1.RouterAdmin` \
                 (UNIMPLEMENTED{said}): point --router at the router's admin listener \
                 (`[admin] address` in its config, e.g. {DEFAULT_ADMIN_URL}); a clients' \
                 listener serves it only with `[clients] serve_admin = true`, and the \
                 registrations' listener never"
            );
        }
        tonic::Code::Unauthenticated => {
            return format!(
                "{url} answered UNAUTHENTICATED{said}; pass an admin token with --token-file \
                 FILE (the router's `[admin] tokens_sha256` lists the SHA-256 of each)"
            );
        }
        _ => {}
    }
    format!("{url} answered {}{said}", code_name(status.code() as i32))
}

/// `error` and its sources, each said once (an error whose message already
/// includes its source's is not followed by it again).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let said = e.to_string();
        if !text.contains(&said) {
            let _ = write!(text, ": {said}");
        }
        source = e.source();
    }
    text
}

/// The configuration's name of a strategy the admin service reports by its
/// `router.v1.Strategy` name (`STRATEGY_ROUND_ROBIN` is `round-robin`); an
/// unknown one as reported.
pub fn strategy_name(reported: &str) -> &str {
    use router_runtime::router::Strategy;
    let strategy = match pb::Strategy::from_str_name(reported) {
        Some(pb::Strategy::RoundRobin) => Strategy::RoundRobin,
        Some(pb::Strategy::PowerOfTwoChoices) => Strategy::PowerOfTwoChoices,
        Some(pb::Strategy::Weighted) => Strategy::Weighted,
        Some(pb::Strategy::ConsistentHash) => Strategy::ConsistentHash,
        _ => return reported,
    };
    strategy.name()
}

/// The status as a table: one line per instance, under its service, then the
/// service's recent errors.
pub fn table(status: &pb::ListServicesResponse) -> String {
    let mut out = format!("router {}\n", status.router_id);
    if status.services.is_empty() {
        out.push_str("no service known\n");
    }
    for service in &status.services {
        let _ = writeln!(
            out,
            "\n{}  strategy={}  instances={}  in_flight={}  waiting={}  calls={}  retried={}  errors={}  ejected={}  ejections={}",
            service.name,
            strategy_name(&service.strategy),
            service.instances.len(),
            service.active_calls,
            service.waiting_calls,
            service.calls_started,
            service.calls_retried,
            service.errors_recorded,
            service.instances_ejected,
            service.ejections
        );
        let _ = writeln!(
            out,
            "  {:<24} {:<11} {:>9} {:>6} {:>7} {:>8} {:>7} {:>14} {:>8} {:>8} {:>8}  {:<20}  LABELS",
            "INSTANCE",
            "STATE",
            "IN_FLIGHT",
            "WEIGHT",
            "ROUTERS",
            "CALLS",
            "ERRORS",
            "EJECTIONS",
            "CALLS/S",
            "P50",
            "P99",
            "CONNECTED"
        );
        for instance in &service.instances {
            let _ = writeln!(
                out,
                "  {:<24} {:<11} {:>9} {:>6} {:>7} {:>8} {:>7} {:>14} {:>8.1} {:>8} {:>8}  {:<20}  {}",
                instance.id,
                state(instance),
                instance.outstanding_calls,
                instance.weight,
                routers_text(instance),
                instance.calls_finished,
                instance.calls_failed,
                ejections_text(instance),
                instance.calls_per_second,
                latency_text(instance.latency_p50_micros, instance.latency_samples),
                latency_text(instance.latency_p99_micros, instance.latency_samples),
                instance
                    .connected_since
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), timestamp_text),
                labels(instance)
            );
        }
        for limit in &service.concurrency_limits {
            let _ = writeln!(out, "  {}", concurrency_text(limit));
        }
        for warning in &service.warnings {
            let _ = writeln!(out, "  warning: {warning}");
        }
        if !service.recent_errors.is_empty() {
            let _ = writeln!(
                out,
                "  recent errors ({} of {}, newest first):",
                service.recent_errors.len(),
                service.errors_recorded
            );
            for error in &service.recent_errors {
                let _ = writeln!(
                    out,
                    "    {}  {}  {}  {}  {}",
                    error
                        .time
                        .as_ref()
                        .map_or_else(|| "-".to_owned(), timestamp_text),
                    error.method,
                    if error.instance.is_empty() {
                        "(no instance)"
                    } else {
                        &error.instance
                    },
                    code_name(error.code),
                    error.message.replace(['\n', '\r'], " ")
                );
            }
        }
    }
    out
}

/// The instance's state: `serving`, `not-serving`, `draining` or `ejected`
/// (outlier detection took it out for now; a drain says more).
pub fn state(instance: &pb::InstanceStatus) -> &'static str {
    match (instance.serving, instance.draining, instance.ejected) {
        (_, true, _) => "draining",
        (_, false, true) => "ejected",
        (true, false, false) => "serving",
        (false, false, false) => "not-serving",
    }
}

/// How many routers the instance holds a registration with, as its bridge
/// reported (`-` when it did not: an older bridge, or no heartbeat yet).
pub fn routers_text(instance: &pb::InstanceStatus) -> String {
    match instance.routers {
        0 => "-".to_owned(),
        n => n.to_string(),
    }
}

/// One concurrency limit and the calls under it, as the table and the
/// status page show it: `limit SayHello: 3/4 in flight, 1 waiting, 7
/// refused` (`limit (service)` for the whole service's).
pub fn concurrency_text(limit: &pb::ConcurrencyLimitStatus) -> String {
    let what = if limit.method.is_empty() {
        "(service)"
    } else {
        &limit.method
    };
    format!(
        "limit {what}: {}/{} in flight, {} waiting, {} refused",
        limit.in_flight, limit.max_calls, limit.waiting, limit.refused
    )
}

/// The times outlier detection ejected the instance, and while it is
/// ejected how long that still lasts: `0`, `2`, `3 (29s left)`.
pub fn ejections_text(instance: &pb::InstanceStatus) -> String {
    if instance.ejected {
        format!(
            "{} ({} left)",
            instance.times_ejected,
            duration_text(instance.ejection_remaining_millis)
        )
    } else {
        instance.times_ejected.to_string()
    }
}

/// Milliseconds as a short duration, rounded up: `0.4s`, `29s`, `4m30s`.
pub fn duration_text(millis: u64) -> String {
    if millis < 10_000 {
        format!("{:.1}s", (millis.div_ceil(100)) as f64 / 10.0)
    } else {
        let secs = millis.div_ceil(1000);
        if secs < 120 {
            format!("{secs}s")
        } else {
            format!("{}m{:02}s", secs / 60, secs % 60)
        }
    }
}

/// The instance's labels as `k=v,k=v`, sorted.
pub fn labels(instance: &pb::InstanceStatus) -> String {
    let mut labels: Vec<String> = instance
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    labels.sort();
    labels.join(",")
}

/// A latency in microseconds as text (`0.42ms`, `12.5ms`, `1.20s`), or `-`
/// when it comes from no sample.
pub fn latency_text(micros: u64, samples: u64) -> String {
    if samples == 0 {
        return "-".to_owned();
    }
    let ms = micros as f64 / 1000.0;
    if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 1000.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

/// A timestamp as RFC 3339 (UTC, whole seconds).
pub fn timestamp_text(time: &prost_types::Timestamp) -> String {
    system_time(time).map_or_else(
        || "-".to_owned(),
        |t| humantime::format_rfc3339_seconds(t).to_string(),
    )
}

fn system_time(time: &prost_types::Timestamp) -> Option<std::time::SystemTime> {
    std::time::SystemTime::try_from(*time).ok()
}

/// Milliseconds since the Unix epoch.
fn unix_millis(time: &prost_types::Timestamp) -> Option<i64> {
    time.seconds
        .checked_mul(1000)?
        .checked_add(i64::from(time.nanos / 1_000_000))
}

/// The canonical name of gRPC status code `code` (`UNAVAILABLE`).
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN_CODE",
    }
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
    /// Calls waiting for an instance.
    waiting: u64,
    calls_started: u64,
    calls_retried: u64,
    errors_recorded: u64,
    ejections: u64,
    instances_ejected: u32,
    instances: Vec<JsonInstance<'a>>,
    recent_errors: Vec<JsonError<'a>>,
    warnings: &'a [String],
    concurrency_limits: Vec<JsonLimit<'a>>,
}

#[derive(Serialize)]
struct JsonLimit<'a> {
    /// Empty for the service's own limit.
    method: &'a str,
    max_calls: u32,
    in_flight: u32,
    waiting: u32,
    refused: u64,
}

#[derive(Serialize)]
struct JsonInstance<'a> {
    id: &'a str,
    state: &'static str,
    in_flight: u32,
    weight: u32,
    /// Routers the instance holds a registration with (0: not reported).
    routers: u32,
    max_concurrent_calls: u32,
    labels: std::collections::BTreeMap<&'a str, &'a str>,
    connected_since_unix: Option<i64>,
    connected_since: Option<String>,
    calls: u64,
    errors: u64,
    calls_per_second: f64,
    latency_samples: u64,
    latency_p50_micros: Option<u64>,
    latency_p99_micros: Option<u64>,
    ejected: bool,
    times_ejected: u32,
    ejected_until: Option<String>,
    ejected_until_unix_ms: Option<i64>,
    ejection_remaining_ms: Option<u64>,
}

#[derive(Serialize)]
struct JsonError<'a> {
    time: Option<String>,
    time_unix_ms: Option<i64>,
    method: &'a str,
    instance: &'a str,
    code: &'static str,
    message: &'a str,
}

fn json_instance(i: &pb::InstanceStatus) -> JsonInstance<'_> {
    let sampled = |micros: u64| (i.latency_samples > 0).then_some(micros);
    JsonInstance {
        id: &i.id,
        state: state(i),
        in_flight: i.outstanding_calls,
        weight: i.weight,
        routers: i.routers,
        max_concurrent_calls: i.max_concurrent_calls,
        labels: i
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        connected_since_unix: i.connected_since.as_ref().map(|t| t.seconds),
        connected_since: i.connected_since.as_ref().map(timestamp_text),
        calls: i.calls_finished,
        errors: i.calls_failed,
        // JSON has no NaN or infinity; the rate is finite by construction.
        calls_per_second: if i.calls_per_second.is_finite() {
            i.calls_per_second
        } else {
            0.0
        },
        latency_samples: i.latency_samples,
        latency_p50_micros: sampled(i.latency_p50_micros),
        latency_p99_micros: sampled(i.latency_p99_micros),
        ejected: i.ejected,
        times_ejected: i.times_ejected,
        ejected_until: i.ejected_until.as_ref().map(timestamp_text),
        ejected_until_unix_ms: i.ejected_until.as_ref().and_then(unix_millis),
        ejection_remaining_ms: i.ejected.then_some(i.ejection_remaining_millis),
    }
}

fn json_error(e: &pb::RecentError) -> JsonError<'_> {
    JsonError {
        time: e.time.as_ref().map(timestamp_text),
        time_unix_ms: e.time.as_ref().and_then(unix_millis),
        method: &e.method,
        instance: &e.instance,
        code: code_name(e.code),
        message: &e.message,
    }
}

/// The status as JSON (`grpc-router status --json` and the admin listener's
/// `/status.json`).
pub fn json(status: &pb::ListServicesResponse) -> String {
    let value = JsonStatus {
        router_id: &status.router_id,
        services: status
            .services
            .iter()
            .map(|s| JsonService {
                name: &s.name,
                strategy: strategy_name(&s.strategy),
                in_flight: s.active_calls,
                waiting: s.waiting_calls,
                calls_started: s.calls_started,
                calls_retried: s.calls_retried,
                errors_recorded: s.errors_recorded,
                ejections: s.ejections,
                instances_ejected: s.instances_ejected,
                instances: s.instances.iter().map(json_instance).collect(),
                recent_errors: s.recent_errors.iter().map(json_error).collect(),
                warnings: &s.warnings,
                concurrency_limits: s
                    .concurrency_limits
                    .iter()
                    .map(|l| JsonLimit {
                        method: &l.method,
                        max_calls: l.max_calls,
                        in_flight: l.in_flight,
                        waiting: l.waiting,
                        refused: l.refused,
                    })
                    .collect(),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ejected_status() -> pb::ListServicesResponse {
        pb::ListServicesResponse {
            router_id: "r".to_owned(),
            services: vec![pb::ServiceStatus {
                name: "pkg.S".to_owned(),
                ejections: 4,
                instances_ejected: 1,
                instances: vec![
                    pb::InstanceStatus {
                        id: "bad".to_owned(),
                        serving: true,
                        ejected: true,
                        times_ejected: 3,
                        ejected_until: Some(prost_types::Timestamp {
                            seconds: 1_700_000_000,
                            nanos: 0,
                        }),
                        ejection_remaining_millis: 150_000,
                        ..Default::default()
                    },
                    pb::InstanceStatus {
                        id: "good".to_owned(),
                        serving: true,
                        times_ejected: 1,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn the_routers_an_instance_holds_are_shown_when_its_bridge_reports_them() {
        let instance = |id: &str, routers: u32| pb::InstanceStatus {
            id: id.to_owned(),
            serving: true,
            routers,
            ..Default::default()
        };
        let status = pb::ListServicesResponse {
            router_id: "r".to_owned(),
            services: vec![pb::ServiceStatus {
                name: "pkg.S".to_owned(),
                instances: vec![instance("fleet", 3), instance("old", 0)],
                ..Default::default()
            }],
        };
        let text = table(&status);
        assert!(text.contains("ROUTERS"), "{text}");
        let row = |id: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(id))
                .map(|l| l.split_whitespace().nth(4).unwrap_or_default().to_owned())
                .expect("a row")
        };
        assert_eq!(
            (row("fleet"), row("old")),
            ("3".to_owned(), "-".to_owned()),
            "{text}"
        );
        let value: serde_json::Value = serde_json::from_str(&json(&status)).expect("json");
        assert_eq!(value["services"][0]["instances"][0]["routers"], 3);
        assert_eq!(value["services"][0]["instances"][1]["routers"], 0);
    }

    #[test]
    fn concurrency_limits_are_listed_in_the_table_and_the_json() {
        let status = pb::ListServicesResponse {
            router_id: "r".to_owned(),
            services: vec![pb::ServiceStatus {
                name: "pkg.S".to_owned(),
                concurrency_limits: vec![
                    pb::ConcurrencyLimitStatus {
                        method: String::new(),
                        max_calls: 10,
                        in_flight: 4,
                        waiting: 0,
                        refused: 2,
                    },
                    pb::ConcurrencyLimitStatus {
                        method: "Export".to_owned(),
                        max_calls: 2,
                        in_flight: 2,
                        waiting: 1,
                        refused: 0,
                    },
                ],
                ..Default::default()
            }],
        };
        let text = table(&status);
        assert!(
            text.contains("limit (service): 4/10 in flight, 0 waiting, 2 refused"),
            "{text}"
        );
        assert!(
            text.contains("limit Export: 2/2 in flight, 1 waiting, 0 refused"),
            "{text}"
        );
        let value: serde_json::Value = serde_json::from_str(&json(&status)).expect("json");
        let limits = &value["services"][0]["concurrency_limits"];
        assert_eq!(limits[1]["method"], "Export");
        assert_eq!(limits[1]["waiting"], 1);
        assert_eq!(limits[0]["max_calls"], 10);
    }

    #[test]
    fn the_table_marks_an_ejected_instance_and_counts_ejections() {
        let text = table(&ejected_status());
        assert!(text.contains("ejected=1  ejections=4"), "{text}");
        let bad = text.lines().find(|l| l.contains("bad")).expect("bad's row");
        assert!(bad.contains(" ejected "), "{bad}");
        assert!(bad.contains("3 (2m30s left)"), "{bad}");
        let good = text
            .lines()
            .find(|l| l.contains("good"))
            .expect("good's row");
        assert!(good.contains(" serving "), "{good}");
        assert!(!good.contains("left"), "{good}");
    }

    #[test]
    fn the_json_says_whether_and_until_when_an_instance_is_ejected() {
        let value: serde_json::Value =
            serde_json::from_str(&json(&ejected_status())).expect("JSON");
        let service = &value["services"][0];
        assert_eq!(service["ejections"], 4);
        assert_eq!(service["instances_ejected"], 1);
        let bad = &service["instances"][0];
        assert_eq!(bad["state"], "ejected");
        assert_eq!(bad["ejected"], true);
        assert_eq!(bad["times_ejected"], 3);
        assert_eq!(bad["ejection_remaining_ms"], 150_000);
        assert_eq!(bad["ejected_until_unix_ms"], 1_700_000_000_000_i64);
        assert_eq!(bad["ejected_until"], "2023-11-14T22:13:20Z");
        let good = &service["instances"][1];
        assert_eq!(good["state"], "serving");
        assert_eq!(good["ejected"], false);
        assert!(good["ejection_remaining_ms"].is_null());
    }

    #[test]
    fn strategies_are_named_as_the_configuration_names_them() {
        assert_eq!(strategy_name("STRATEGY_ROUND_ROBIN"), "round-robin");
        assert_eq!(strategy_name("STRATEGY_POWER_OF_TWO_CHOICES"), "p2c");
        assert_eq!(strategy_name("STRATEGY_CONSISTENT_HASH"), "consistent-hash");
        assert_eq!(strategy_name("something-new"), "something-new");
        let text = table(&pb::ListServicesResponse {
            services: vec![pb::ServiceStatus {
                name: "pkg.S".to_owned(),
                strategy: "STRATEGY_WEIGHTED".to_owned(),
                warnings: vec!["`x`: a warning".to_owned()],
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(text.contains("strategy=weighted "), "{text}");
        assert!(text.contains("  warning: `x`: a warning\n"), "{text}");
    }

    #[test]
    fn an_error_chain_says_each_cause_once() {
        #[derive(Debug)]
        struct Outer(Inner);
        #[derive(Debug)]
        struct Inner;
        impl std::fmt::Display for Inner {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("scheme is missing")
            }
        }
        impl std::error::Error for Inner {}
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "invalid URL, {}", self.0)
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert_eq!(chain(&Outer(Inner)), "invalid URL, scheme is missing");
        assert_eq!(router_url("127.0.0.1:9"), "http://127.0.0.1:9");
        assert_eq!(router_url("https://r:443"), "https://r:443");
    }

    #[test]
    fn durations_are_short_and_rounded_up() {
        assert_eq!(duration_text(1), "0.1s");
        assert_eq!(duration_text(9_950), "10.0s");
        assert_eq!(duration_text(10_001), "11s");
        assert_eq!(duration_text(119_000), "119s");
        assert_eq!(duration_text(300_000), "5m00s");
    }
}
