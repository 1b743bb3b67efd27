//! End to end: the admin listener's status page (`/`, `/status`) and its data
//! (`/status.json`), against the real daemon with bridges and tonic clients.

mod common;

use common::{Daemon, config_with, poll, within};
use myservice::pb::HelloRequest;
use myservice::pb::greeter_client::GreeterClient;
use router_runtime::bridge::{BridgeConfig, BridgeHandle};
use router_runtime::router::{MAX_ERROR_MESSAGE, PIN_HEADER, RECENT_ERRORS};
use serde_json::Value;
use tonic::transport::Channel;

const GREETER: &str = "myservice.v1.Greeter";

/// A Greeter instance registered with `daemon`, configured by `edit`.
fn greeter(daemon: &Daemon, edit: impl FnOnce(BridgeConfig) -> BridgeConfig) -> BridgeHandle {
    myservice::demo::start_instance(edit(BridgeConfig::new(daemon.registrations_url())))
}

/// Calls SayHello with `name` on instance `pin`.
async fn say_hello(channel: &Channel, pin: &str, name: &str) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(HelloRequest {
        name: name.to_owned(),
        payload: vec![],
    });
    request
        .metadata_mut()
        .insert(PIN_HEADER, pin.parse().expect("an ASCII instance id"));
    within(
        10,
        "a SayHello call",
        GreeterClient::new(channel.clone()).say_hello(request),
    )
    .await
    .map(drop)
}

async fn status_json(daemon: &Daemon) -> Value {
    let (code, body) = daemon.http_get("/status.json").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status.json is JSON")
}

/// Polls `/status.json` until `done` holds (calls are counted when the
/// router drops their state, just after the client has its answer).
async fn wait_status(daemon: &Daemon, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    poll(10, what, || async {
        let status = status_json(daemon).await;
        done(&status).then_some(status)
    })
    .await
}

fn greeter_service(status: &Value) -> &Value {
    status["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == GREETER))
        .expect("the Greeter in status.json")
}

fn instance<'a>(status: &'a Value, id: &str) -> &'a Value {
    greeter_service(status)["instances"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["id"] == id))
        .unwrap_or_else(|| panic!("instance {id} in {status}"))
}

fn total_calls(status: &Value) -> u64 {
    status["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["instances"].as_array().into_iter().flatten())
        .filter_map(|i| i["calls"].as_u64())
        .sum()
}

#[tokio::test]
async fn status_json_counts_each_instances_calls_and_errors_exactly() {
    let daemon = Daemon::start(&config_with(""));
    let _a = greeter(&daemon, |c| c.instance_id("a"));
    let _b = greeter(&daemon, |c| c.instance_id("b"));
    daemon.wait_for_instances(GREETER, 2).await;
    let channel = daemon.channel().await;
    for _ in 0..3 {
        say_hello(&channel, "a", "Ada").await.expect("a answers");
    }
    for _ in 0..5 {
        say_hello(&channel, "b", "Bob").await.expect("b answers");
    }
    for _ in 0..2 {
        let status = say_hello(&channel, "b", "fail:13")
            .await
            .expect_err("fail:13 fails");
        assert_eq!(status.code(), tonic::Code::Internal);
    }

    let status = wait_status(&daemon, "10 calls counted", |s| total_calls(s) == 10).await;
    let (a, b) = (instance(&status, "a"), instance(&status, "b"));
    assert_eq!(
        (a["calls"].as_u64(), a["errors"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(
        (b["calls"].as_u64(), b["errors"].as_u64()),
        (Some(7), Some(2))
    );
    for i in [a, b] {
        assert_eq!(i["in_flight"], 0, "{i}");
        assert_eq!(i["state"], "serving");
        assert!(
            i["calls_per_second"].as_f64().is_some_and(|r| r > 0.0),
            "{i}"
        );
        let p50 = i["latency_p50_micros"].as_u64().expect("a p50");
        let p99 = i["latency_p99_micros"].as_u64().expect("a p99");
        assert!(p50 <= p99 && p99 < 10_000_000, "{i}");
        assert!(
            i["connected_since"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
    }
    assert_eq!(b["latency_samples"], 7);
    assert_eq!(status["router_id"], "test-router");

    let service = greeter_service(&status);
    assert_eq!(service["errors_recorded"], 2);
    let errors = service["recent_errors"].as_array().expect("recent errors");
    assert_eq!(errors.len(), 2);
    for error in errors {
        assert_eq!(error["instance"], "b");
        assert_eq!(error["method"], "/myservice.v1.Greeter/SayHello");
        assert_eq!(error["code"], "INTERNAL");
        assert_eq!(error["message"], "requested failure");
    }
}

#[tokio::test]
async fn the_server_rendered_page_and_the_cli_show_the_same_numbers() {
    let daemon = Daemon::start(&config_with(""));
    let _a = greeter(&daemon, |c| c.instance_id("page-a"));
    daemon.wait_for_instances(GREETER, 1).await;
    let channel = daemon.channel().await;
    for _ in 0..4 {
        say_hello(&channel, "page-a", "Ada").await.expect("answers");
    }
    wait_status(&daemon, "4 calls counted", |s| total_calls(s) == 4).await;

    // The server's render already holds the numbers (no JavaScript needed).
    for path in ["/", "/status"] {
        let (code, page) = daemon.http_get(path).await;
        assert_eq!(code, 200);
        assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
        assert!(page.contains(r#"<tr data-instance="page-a">"#), "{page}");
        assert!(page.contains(r#"<td class="num calls">4</td>"#), "{page}");
        assert!(page.contains("test-router"));
        assert!(
            page.contains("fetch(\"status.json\""),
            "the refresh script is inline"
        );
    }

    let cli = std::process::Command::new(common::binary())
        .args(["status", "--json", "--router", &daemon.admin_url()])
        .output()
        .expect("grpc-router status runs");
    assert!(cli.status.success(), "{cli:?}");
    let cli: Value = serde_json::from_slice(&cli.stdout).expect("JSON");
    let page = status_json(&daemon).await;
    for key in [
        "id",
        "calls",
        "errors",
        "in_flight",
        "latency_samples",
        "connected_since",
    ] {
        assert_eq!(
            instance(&cli, "page-a")[key],
            instance(&page, "page-a")[key],
            "{key}"
        );
    }

    let table = std::process::Command::new(common::binary())
        .args(["status", "--router", &daemon.admin_url()])
        .output()
        .expect("grpc-router status runs");
    let table = String::from_utf8_lossy(&table.stdout);
    for column in ["CALLS", "ERRORS", "CALLS/S", "P50", "P99", "CONNECTED"] {
        assert!(table.contains(column), "{column} in\n{table}");
    }
    let row = table
        .lines()
        .find(|l| l.trim_start().starts_with("page-a"))
        .expect("a row for page-a");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1..4], ["serving", "0", "1"], "{row}");
    // The routers it holds: `-` until its bridge's first heartbeat says.
    assert!(["-", "1"].contains(&cells[4]), "{row}");
    assert_eq!(cells[5..7], ["4", "0"], "{row}");
}

#[tokio::test]
async fn registrant_strings_are_escaped_on_the_page() {
    let daemon = Daemon::start(&config_with(""));
    let id = r#"<script>alert("id")</script>"#;
    let _evil = greeter(&daemon, |c| {
        c.instance_id(id)
            .label("zone", "<img src=x onerror=alert(1)>")
            .label("a\"b", "'quoted'")
    });
    daemon.wait_for_instances(GREETER, 1).await;
    let channel = daemon.channel().await;
    let failed = say_hello(&channel, id, "fail:<script>alert(2)</script>")
        .await
        .expect_err("an invalid fail: code fails");
    assert!(failed.message().contains("<script>alert(2)"), "{failed:?}");
    let status = wait_status(&daemon, "the failure recorded", |s| total_calls(s) == 1).await;
    // JSON carries the strings as they are; escaping is the page's job.
    assert_eq!(
        instance(&status, id)["labels"]["zone"],
        "<img src=x onerror=alert(1)>"
    );

    let (code, page) = daemon.http_get("/").await;
    assert_eq!(code, 200);
    assert_eq!(
        page.matches("<script").count(),
        1,
        "only the page's own script:\n{page}"
    );
    assert!(!page.contains("<img"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(&quot;id&quot;)&lt;/script&gt;"),
        "{page}"
    );
    assert!(page.contains(r#"data-instance="&lt;script&gt;alert(&quot;id&quot;)&lt;/script&gt;""#));
    assert!(
        page.contains("zone=&lt;img src=x onerror=alert(1)&gt;"),
        "{page}"
    );
    assert!(page.contains("a&quot;b=&#39;quoted&#39;"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(2)&lt;/script&gt;"),
        "the error message: {page}"
    );
}

#[tokio::test]
async fn the_page_is_served_with_a_policy_that_runs_only_its_own_script() {
    let daemon = Daemon::start(&config_with(""));
    let response = daemon.http_request("/", &[]).await;
    let (head, body) = (
        response.head.to_ascii_lowercase(),
        response.body.to_ascii_lowercase(),
    );
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'sha256-"),
        "{head}"
    );
    assert!(head.contains("cache-control: no-store"), "{head}");
    assert!(body.contains("no service is known yet"), "{body}");
}

#[tokio::test]
async fn a_flood_of_failing_calls_keeps_the_recent_errors_bounded() {
    let daemon = Daemon::start(&config_with(""));
    let _f = greeter(&daemon, |c| c.instance_id("flood"));
    daemon.wait_for_instances(GREETER, 1).await;
    let channel = daemon.channel().await;
    const CALLS: u64 = 400;
    // Each message names its (long) request, far past the kept length.
    let name = format!("fail:{}", "x".repeat(4096));
    let calls = (0..CALLS).map(|_| say_hello(&channel, "flood", &name));
    for result in futures_util::future::join_all(calls).await {
        assert_eq!(
            result.expect_err("fails").code(),
            tonic::Code::InvalidArgument
        );
    }
    let status = wait_status(&daemon, "every failure counted", |s| {
        greeter_service(s)["errors_recorded"] == CALLS
    })
    .await;
    let flood = instance(&status, "flood");
    assert_eq!(
        (flood["calls"].as_u64(), flood["errors"].as_u64()),
        (Some(CALLS), Some(CALLS))
    );
    let errors = greeter_service(&status)["recent_errors"]
        .as_array()
        .expect("recent errors");
    assert_eq!(errors.len(), RECENT_ERRORS);
    for error in errors {
        let message = error["message"].as_str().expect("a message");
        assert!(
            message.len() <= MAX_ERROR_MESSAGE,
            "{} bytes",
            message.len()
        );
        assert!(
            message.ends_with('…') && message.contains("xxxx"),
            "{message}"
        );
    }
    let (_, page) = daemon.http_get("/").await;
    assert!(
        page.len() < 64 * 1024,
        "the page stays small: {} bytes",
        page.len()
    );
    assert!(page.contains(&format!("({RECENT_ERRORS} of {CALLS}, newest first)")));
}

#[tokio::test]
async fn calls_no_instance_could_take_are_recent_errors_without_an_instance() {
    let daemon = Daemon::start(&config_with(""));
    let _a = greeter(&daemon, |c| c.instance_id("only"));
    daemon.wait_for_instances(GREETER, 1).await;
    let channel = daemon.channel().await;
    let status = say_hello(&channel, "missing", "Ada")
        .await
        .expect_err("no such instance");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let status = wait_status(&daemon, "the failure recorded", |s| {
        greeter_service(s)["errors_recorded"] == 1
    })
    .await;
    let error = &greeter_service(&status)["recent_errors"][0];
    assert_eq!(error["instance"], "");
    assert_eq!(error["code"], "UNAVAILABLE");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("`missing`")),
        "{error}"
    );
    assert_eq!(instance(&status, "only")["calls"], 0, "no instance ran it");
}

/// The value of `metric{grpc_service="<GREETER>"}` in one `/metrics` scrape
/// (0 when absent, as Prometheus reads it).
async fn greeter_metric(daemon: &Daemon, metric: &str) -> f64 {
    let (code, body) = daemon.http_get("/metrics").await;
    assert_eq!(code, 200, "{body}");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text");
    let values: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && s.labels.get("grpc_service") == Some(GREETER))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{metric} is not a number"),
        })
        .collect();
    assert!(values.len() <= 1, "{metric}: {values:?}");
    values.first().copied().unwrap_or(0.0)
}

#[tokio::test]
async fn an_ejected_instance_shows_in_status_json_the_page_the_cli_and_the_metrics() {
    let daemon = Daemon::start(&config_with(&format!(
        "[services.\"{GREETER}\"]\n\
         outlier_detection = {{ consecutive_failures = 3, base_ejection = \"60s\", max_ejected_percent = 50 }}\n"
    )));
    let _bad = greeter(&daemon, |c| c.instance_id("bad"));
    let _good = greeter(&daemon, |c| c.instance_id("good"));
    daemon.wait_for_instances(GREETER, 2).await;
    assert_eq!(
        greeter_metric(&daemon, "grpc_router_ejections_total").await,
        0.0
    );
    assert_eq!(
        greeter_metric(&daemon, "grpc_router_instances_ejected").await,
        0.0
    );
    let channel = daemon.channel().await;
    for _ in 0..3 {
        let status = say_hello(&channel, "bad", "fail:14")
            .await
            .expect_err("fail:14 fails");
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
    // The third failure in a row ejects it (recorded as the call's state
    // is dropped, just after the client has its answer).
    let status = wait_status(&daemon, "bad ejected", |s| {
        instance(s, "bad")["ejected"] == true
    })
    .await;
    let bad = instance(&status, "bad");
    assert_eq!(bad["state"], "ejected");
    assert_eq!(bad["times_ejected"], 1);
    let left = bad["ejection_remaining_ms"].as_u64().expect("time left");
    assert!(left > 50_000 && left <= 60_000, "{bad}");
    assert!(
        bad["ejected_until"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{bad}"
    );
    let good = instance(&status, "good");
    assert_eq!(
        (good["state"].as_str(), good["ejected"].as_bool()),
        (Some("serving"), Some(false))
    );
    assert!(good["ejection_remaining_ms"].is_null());
    let service = greeter_service(&status);
    assert_eq!(
        (
            service["ejections"].as_u64(),
            service["instances_ejected"].as_u64()
        ),
        (Some(1), Some(1))
    );

    assert_eq!(
        greeter_metric(&daemon, "grpc_router_ejections_total").await,
        1.0
    );
    assert_eq!(
        greeter_metric(&daemon, "grpc_router_instances_ejected").await,
        1.0
    );

    let (code, page) = daemon.http_get("/").await;
    assert_eq!(code, 200);
    assert!(
        page.contains(r#"<tr data-instance="bad" class="ejected"><td class="id">bad</td><td class="state ejected">ejected</td>"#),
        "{page}"
    );
    assert!(
        page.contains(r#"<td class="num ejections ejected">1 ("#),
        "{page}"
    );
    assert!(page.contains("1 ejected · 1 ejections"), "{page}");

    let table = std::process::Command::new(common::binary())
        .args(["status", "--router", &daemon.admin_url()])
        .output()
        .expect("grpc-router status runs");
    assert!(table.status.success(), "{table:?}");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("ejected=1  ejections=1"), "{table}");
    let row = table
        .lines()
        .find(|l| l.trim_start().starts_with("bad "))
        .expect("bad's row");
    assert!(
        row.contains(" ejected ") && row.contains("1 (") && row.contains("s left)"),
        "{row}"
    );

    // Its calls go to the healthy instance meanwhile.
    let mut client = GreeterClient::new(channel.clone());
    let reply = within(
        10,
        "a SayHello",
        client.say_hello(HelloRequest {
            name: "Ada".into(),
            payload: vec![],
        }),
    )
    .await
    .expect("the healthy instance answers");
    assert_eq!(reply.into_inner().instance_id, "good");
}
