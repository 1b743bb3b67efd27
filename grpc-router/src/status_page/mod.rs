//! The live status page of the admin listener: `GET /` (and `/status`) is
//! one self-contained HTML page, rendered on the server so it shows the
//! numbers without JavaScript; its inline script refreshes it from
//! `GET /status.json` every 2 s. Both come from the admin service's
//! `ListServices` answer, the one `grpc-router status` prints.
//!
//! Everything a registrant chose (instance ids, labels, error messages) is
//! HTML-escaped here and set as text by the script. The page also carries a
//! Content-Security-Policy that allows only its own inline script and style
//! (by hash), so markup that slipped through could still not run.

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use router_runtime::admin::AdminService;
use router_runtime::pb;
use sha2::{Digest, Sha256};

use crate::admin_http::AdminState;
use crate::status::{
    code_name, concurrency_text, ejections_text, latency_text, routers_text, state, strategy_name,
    timestamp_text,
};

const TEMPLATE: &str = include_str!("page.html");
const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// The page's Content-Security-Policy: nothing but its own inline script and
/// style, and requests to its own origin.
static POLICY: LazyLock<String> = LazyLock::new(|| {
    let hash = |text: &str| {
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
    };
    format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash(SCRIPT),
        hash(STYLE)
    )
});

/// The admin service's view of every service the daemon routes.
fn current(state: &AdminState) -> pb::ListServicesResponse {
    AdminService::new(state.router_id.clone())
        .with_dynamic(&state.router)
        .list("")
}

/// `GET /` and `GET /status`: the page, rendered now.
pub async fn page(State(state): State<AdminState>) -> Response {
    let html = render(&current(&state), SystemTime::now());
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, POLICY.as_str()),
        ],
        html,
    )
        .into_response()
}

/// `GET /status.json`: what `grpc-router status --json` prints.
pub async fn json(State(state): State<AdminState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        crate::status::json(&current(&state)),
    )
        .into_response()
}

/// The whole page for `status`, as rendered at `now`.
pub fn render(status: &pb::ListServicesResponse, now: SystemTime) -> String {
    let mut services = String::new();
    write_services(&mut services, status);
    // One pass over the template, so text put in cannot be taken for a
    // marker.
    let mut out =
        String::with_capacity(TEMPLATE.len() + STYLE.len() + SCRIPT.len() + services.len());
    let mut rest = TEMPLATE;
    while let Some(start) = rest.find("<!--") {
        out.push_str(&rest[..start]);
        let marker = &rest[start..];
        let Some(end) = marker.find("-->") else {
            break;
        };
        match &marker[..end + 3] {
            "<!--ROUTER_ID-->" => out.push_str(&escape(&status.router_id)),
            "<!--RENDERED_AT-->" => {
                out.push_str(&humantime::format_rfc3339_seconds(now).to_string())
            }
            "<!--SERVICES-->" => out.push_str(&services),
            "<!--STYLE-->" => out.push_str(STYLE),
            "<!--SCRIPT-->" => out.push_str(SCRIPT),
            other => out.push_str(other),
        }
        rest = &marker[end + 3..];
    }
    out.push_str(rest);
    out
}

fn write_services(out: &mut String, status: &pb::ListServicesResponse) {
    if status.services.is_empty() {
        out.push_str(r#"<p class="none">No service is known yet: none has registered.</p>"#);
    }
    for service in &status.services {
        write_service(out, service);
    }
}

fn write_service(out: &mut String, service: &pb::ServiceStatus) {
    let name = escape(&service.name);
    let _ = write!(
        out,
        r#"<section class="service" data-service="{name}"><h2>{name} <span class="meta">{} · {} instances · {} in flight · {} waiting · {} calls · {} retried · {} errors · {} ejected · {} ejections</span></h2>"#,
        escape(strategy_name(&service.strategy)),
        service.instances.len(),
        service.active_calls,
        service.waiting_calls,
        service.calls_started,
        service.calls_retried,
        service.errors_recorded,
        service.instances_ejected,
        service.ejections,
    );
    if !service.concurrency_limits.is_empty() {
        out.push_str(r#"<ul class="limits">"#);
        for limit in &service.concurrency_limits {
            let _ = write!(out, "<li>{}</li>", escape(&concurrency_text(limit)));
        }
        out.push_str("</ul>");
    }
    if !service.warnings.is_empty() {
        out.push_str(r#"<ul class="warnings">"#);
        for warning in &service.warnings {
            let _ = write!(out, "<li>{}</li>", escape(warning));
        }
        out.push_str("</ul>");
    }
    out.push_str(r#"<table class="instances"><thead><tr><th>Instance</th><th>State</th><th class="num">In flight</th><th class="num">Calls/s</th><th class="num">p50</th><th class="num">p99</th><th class="num">Calls</th><th class="num">Errors</th><th class="num">Ejections</th><th class="num">Weight</th><th class="num">Routers</th><th>Labels</th><th>Connected since</th></tr></thead><tbody>"#);
    let mut instances: Vec<&pb::InstanceStatus> = service.instances.iter().collect();
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    for instance in &instances {
        write_instance(out, instance);
    }
    if instances.is_empty() {
        out.push_str(r#"<tr><td class="none" colspan="12">No instance registered.</td></tr>"#);
    }
    out.push_str("</tbody></table>");
    let _ = write!(
        out,
        r#"<h3>Recent errors <span class="meta">({} of {}, newest first)</span></h3>"#,
        service.recent_errors.len(),
        service.errors_recorded
    );
    if service.recent_errors.is_empty() {
        out.push_str(r#"<p class="none">None.</p>"#);
    } else {
        out.push_str(r#"<table class="errors"><thead><tr><th>Time</th><th>Method</th><th>Instance</th><th>Code</th><th>Message</th></tr></thead><tbody>"#);
        for error in &service.recent_errors {
            let instance = if error.instance.is_empty() {
                "(none)".to_owned()
            } else {
                escape(&error.instance)
            };
            let _ = write!(
                out,
                r#"<tr><td class="time">{}</td><td class="method">{}</td><td class="id">{instance}</td><td class="code">{}</td><td class="message">{}</td></tr>"#,
                error
                    .time
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), timestamp_text),
                escape(&error.method),
                code_name(error.code),
                escape(&error.message),
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
}

fn write_instance(out: &mut String, instance: &pb::InstanceStatus) {
    let id = escape(&instance.id);
    let state = state(instance);
    let limit = if instance.max_concurrent_calls > 0 {
        format!("/{}", instance.max_concurrent_calls)
    } else {
        String::new()
    };
    let rate = if instance.calls_per_second.is_finite() {
        instance.calls_per_second
    } else {
        0.0
    };
    let errors_class = if instance.calls_failed > 0 {
        " some"
    } else {
        ""
    };
    let mut labels: Vec<(&String, &String)> = instance.labels.iter().collect();
    labels.sort();
    let labels: String = labels
        .into_iter()
        .map(|(k, v)| format!(r#"<span class="label">{}={}</span>"#, escape(k), escape(v)))
        .collect();
    let (row_class, ejections_class) = if instance.ejected {
        (r#" class="ejected""#, " ejected")
    } else {
        ("", "")
    };
    let _ = write!(
        out,
        r#"<tr data-instance="{id}"{row_class}><td class="id">{id}</td><td class="state {state}">{state}</td><td class="num in-flight">{}{limit}</td><td class="num rate">{rate:.1}</td><td class="num p50">{}</td><td class="num p99">{}</td><td class="num calls">{}</td><td class="num errors{errors_class}">{}</td><td class="num ejections{ejections_class}">{}</td><td class="num weight">{}</td><td class="num routers">{}</td><td class="labels">{labels}</td><td class="since">{}</td></tr>"#,
        instance.outstanding_calls,
        latency_text(instance.latency_p50_micros, instance.latency_samples),
        latency_text(instance.latency_p99_micros, instance.latency_samples),
        instance.calls_finished,
        instance.calls_failed,
        ejections_text(instance),
        instance.weight,
        routers_text(instance),
        instance
            .connected_since
            .as_ref()
            .map_or_else(|| "-".to_owned(), timestamp_text),
    );
}

/// `text` safe inside HTML text and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hostile_status() -> pb::ListServicesResponse {
        pb::ListServicesResponse {
            router_id: "r<!--SERVICES-->".to_owned(),
            services: vec![pb::ServiceStatus {
                name: "pkg.S".to_owned(),
                strategy: "STRATEGY_ROUND_ROBIN".to_owned(),
                instances: vec![pb::InstanceStatus {
                    id: "<script>alert(1)</script>".to_owned(),
                    labels: [("zone\"".to_owned(), "<b>x</b>'".to_owned())].into(),
                    serving: true,
                    calls_finished: 7,
                    ..Default::default()
                }],
                recent_errors: vec![pb::RecentError {
                    method: "/pkg.S/M".to_owned(),
                    instance: "<img src=x onerror=alert(2)>".to_owned(),
                    code: 13,
                    message: "</td><script>alert(3)</script>".to_owned(),
                    time: None,
                }],
                errors_recorded: 1,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn registrant_strings_are_escaped_and_markers_in_them_are_not_expanded() {
        let html = render(&hostile_status(), SystemTime::UNIX_EPOCH);
        assert_eq!(
            html.matches("<script>").count(),
            1,
            "only the page's own script"
        );
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains(r#"data-instance="&lt;script&gt;alert(1)&lt;/script&gt;""#));
        assert!(html.contains("zone&quot;=&lt;b&gt;x&lt;/b&gt;&#39;"));
        assert!(html.contains("&lt;/td&gt;&lt;script&gt;alert(3)"));
        assert!(
            html.contains("r&lt;!--SERVICES--&gt;"),
            "the router id stays text"
        );
        assert_eq!(html.matches(r#"<section class="service""#).count(), 1);
        assert!(html.contains(r#"<td class="num calls">7</td>"#));
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_script_and_style() {
        let html = render(&hostile_status(), SystemTime::UNIX_EPOCH);
        assert!(html.contains(&format!("<script>{SCRIPT}</script>")));
        assert!(html.contains(&format!("<style>{STYLE}</style>")));
        let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(SCRIPT));
        assert!(
            POLICY.contains(&format!("script-src 'sha256-{digest}'")),
            "{}",
            *POLICY
        );
        assert!(POLICY.starts_with("default-src 'none'"));
    }

    #[test]
    fn an_ejected_instance_is_marked_with_its_ejections_and_time_left() {
        let status = pb::ListServicesResponse {
            router_id: "r".to_owned(),
            services: vec![pb::ServiceStatus {
                name: "pkg.S".to_owned(),
                ejections: 3,
                instances_ejected: 1,
                instances: vec![
                    pb::InstanceStatus {
                        id: "bad".to_owned(),
                        serving: true,
                        ejected: true,
                        times_ejected: 2,
                        ejection_remaining_millis: 29_500,
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
        };
        let html = render(&status, SystemTime::UNIX_EPOCH);
        assert!(
            html.contains(r#"<tr data-instance="bad" class="ejected"><td class="id">bad</td><td class="state ejected">ejected</td>"#),
            "{html}"
        );
        assert!(html.contains(r#"<td class="num ejections ejected">2 (30s left)</td>"#));
        assert!(html.contains(r#"<tr data-instance="good"><td class="id">good</td><td class="state serving">serving</td>"#));
        assert!(html.contains(r#"<td class="num ejections">1</td>"#));
        assert!(html.contains("1 ejected · 3 ejections"));
    }

    #[test]
    fn the_routers_an_instance_holds_have_a_column() {
        let status = pb::ListServicesResponse {
            router_id: "r".to_owned(),
            services: vec![pb::ServiceStatus {
                name: "pkg.S".to_owned(),
                instances: vec![pb::InstanceStatus {
                    id: "fleet".to_owned(),
                    serving: true,
                    weight: 1,
                    routers: 3,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let html = render(&status, SystemTime::UNIX_EPOCH);
        assert!(html.contains(r#"<th class="num">Routers</th>"#), "{html}");
        assert!(
            html.contains(r#"<td class="num weight">1</td><td class="num routers">3</td>"#),
            "{html}"
        );
    }

    #[test]
    fn warnings_are_listed_and_the_strategy_named_as_configured() {
        let status = pb::ListServicesResponse {
            router_id: "r".to_owned(),
            services: vec![pb::ServiceStatus {
                name: "pkg.S".to_owned(),
                strategy: "STRATEGY_ROUND_ROBIN".to_owned(),
                warnings: vec!["`services.\"pkg.S\".methods.<Get>`: no such method".to_owned()],
                ..Default::default()
            }],
        };
        let html = render(&status, SystemTime::UNIX_EPOCH);
        assert!(
            html.contains(r#"<span class="meta">round-robin · "#),
            "{html}"
        );
        assert!(
            html.contains(r#"<ul class="warnings"><li>`services.&quot;pkg.S&quot;.methods.&lt;Get&gt;`: no such method</li></ul>"#),
            "{html}"
        );
    }

    #[test]
    fn no_service_says_so() {
        let html = render(&pb::ListServicesResponse::default(), SystemTime::UNIX_EPOCH);
        assert!(html.contains("No service is known yet"));
        assert!(html.contains("1970-01-01T00:00:00Z"));
    }
}
