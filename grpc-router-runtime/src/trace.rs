//! Spans of forwarded calls: one on the router per client call, one on the
//! bridge around the user's handler, named and attributed by OpenTelemetry's
//! RPC conventions (`otel.name = pkg.Service/Method`, `rpc.system = grpc`,
//! `rpc.service`, `rpc.method`, `rpc.grpc.status_code`).
//!
//! The spans are `DEBUG` `tracing` spans with the target [`TARGET`]. With no
//! subscriber interested in them they are disabled and cost one cached
//! interest check; nothing here does any work for a disabled span.
//!
//! With the `otel` feature, a span that `tracing-opentelemetry` records
//! continues the W3C trace context (`traceparent`, `tracestate`) of the
//! incoming call, read with OpenTelemetry's global text-map propagator
//! (`opentelemetry::global::set_text_map_propagator`), and the router
//! forwards its own span as the parent the instance sees. Without the
//! feature, or with tracing off, the client's headers pass through
//! untouched like any other metadata.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tonic::{Code, Status};
use tracing::Span;
use tracing::field::Empty;

use crate::pb;

/// The `tracing` target of the call spans and of their events, for
/// filters: `router_runtime::rpc=debug` shows them in logs, and an
/// OpenTelemetry layer filtered to this target exports only them.
pub const TARGET: &str = "router_runtime::rpc";

/// The router's span of one client call of `path` (`/pkg.Service/Method`).
/// The pick, retries and time waiting for credit are recorded on it.
pub(crate) fn router_span(path: &str) -> Span {
    let (service, method) = split_path(path);
    tracing::debug_span!(
        target: TARGET,
        "router.call",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "server",
        otel.status_code = Empty,
        otel.status_description = Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        grpc_router.instance = Empty,
        grpc_router.retries = Empty,
        grpc_router.credit_wait_us = Empty,
    )
}

/// The bridge's span around the handler of one call of `path` (the
/// instance's own identity belongs to its OpenTelemetry resource).
pub(crate) fn bridge_span(path: &str) -> Span {
    let (service, method) = split_path(path);
    tracing::debug_span!(
        target: TARGET,
        "bridge.call",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "server",
        otel.status_code = Empty,
        otel.status_description = Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
    )
}

/// `("pkg.Service", "Method")` of `/pkg.Service/Method`.
fn split_path(path: &str) -> (&str, &str) {
    path.trim_start_matches('/')
        .rsplit_once('/')
        .unwrap_or((path, ""))
}

/// Records how the call ended: its gRPC code and, for the codes OpenTelemetry
/// counts as a server's error, an error status with the message. The span's
/// end time is now (it is entered once here, and `tracing-opentelemetry` ends
/// a span at its last exit).
pub(crate) fn record_end(span: &Span, code: Code, message: &str) {
    if span.is_disabled() {
        return;
    }
    let _entered = span.enter();
    span.record("rpc.grpc.status_code", code as i64);
    if is_server_error(code) {
        span.record("otel.status_code", "error");
        span.record("otel.status_description", message);
    }
}

/// The codes OpenTelemetry's RPC conventions mark as a server span's error.
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// Records the instance that answered the call, or failed it (the last
/// attempt's), and how many times the call was retried first. Recorded once
/// per call: OpenTelemetry keeps every value an attribute is set to.
pub(crate) fn record_attempts(span: &Span, instance: &str, retries: usize) {
    if span.is_disabled() {
        return;
    }
    span.record("grpc_router.instance", instance);
    if retries > 0 {
        span.record("grpc_router.retries", retries as i64);
    }
}

/// Records that the attempt on `instance` failed and the call goes to
/// another: an event on the span, and one more in `retries`.
pub(crate) fn record_retry(span: &Span, retries: &mut usize, instance: &str, reason: &str) {
    *retries += 1;
    tracing::event!(
        target: TARGET,
        parent: span,
        tracing::Level::DEBUG,
        grpc_router.instance = instance,
        grpc_router.reason = reason,
        "retrying on another instance"
    );
}

/// Runs the router's forwarding of a call inside `span` and records its
/// status when it fails before a response stream exists (a call whose
/// response stream was returned records its end there). A call dropped
/// before either (the client went away) records CANCELLED.
pub(crate) async fn forwarding<T>(
    span: Span,
    work: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    use tracing::Instrument as _;
    if span.is_disabled() {
        return work.await;
    }
    let mut pending = Pending::new(span.clone());
    let result = work.instrument(span).await;
    match &result {
        Err(status) => pending.end(status),
        // The response stream records the end.
        Ok(_) => pending.disarm(),
    }
    result
}

/// A call span whose end is not yet recorded: dropped armed, it records
/// CANCELLED.
#[derive(Debug, Default)]
pub(crate) struct Pending(Option<Span>);

impl Pending {
    /// Arms `span`, unless it is disabled.
    pub(crate) fn new(span: Span) -> Self {
        Pending((!span.is_disabled()).then_some(span))
    }

    /// Forgets the span: something else records its end.
    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }

    /// Records the call's end (once).
    pub(crate) fn end(&mut self, status: &Status) {
        if let Some(span) = self.0.take() {
            record_end(&span, status.code(), status.message());
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(span) = self.0.take() {
            record_end(&span, Code::Cancelled, "the call was cancelled");
        }
    }
}

/// Adds up the time a call's request pump waited for request credit and for
/// room in the registration's queue, and records it on the span when the
/// pump ends.
pub(crate) struct CreditWait {
    span: Span,
    waited: Duration,
}

impl CreditWait {
    /// Times waits for `span` (nothing is timed when it is disabled).
    pub(crate) fn new(span: Span) -> Self {
        CreditWait {
            span,
            waited: Duration::ZERO,
        }
    }

    /// Awaits `future`, adding the time it took to the waits.
    pub(crate) async fn time<F: Future>(&mut self, future: F) -> F::Output {
        if self.span.is_disabled() {
            return future.await;
        }
        let start = Instant::now();
        let output = future.await;
        self.waited += start.elapsed();
        output
    }
}

impl Drop for CreditWait {
    fn drop(&mut self) {
        if !self.span.is_disabled() {
            let micros = i64::try_from(self.waited.as_micros()).unwrap_or(i64::MAX);
            self.span.record("grpc_router.credit_wait_us", micros);
        }
    }
}

/// Makes `span` the child of the trace context in `metadata` (the incoming
/// call's `traceparent`/`tracestate`). A missing or malformed context leaves
/// the span a new root. Does nothing without the `otel` feature or when the
/// span is disabled; it must run before the span is first entered.
pub(crate) fn continue_trace(span: &Span, metadata: &impl Headers) {
    #[cfg(feature = "otel")]
    otel::continue_trace(span, metadata);
    #[cfg(not(feature = "otel"))]
    let _ = (span, metadata);
}

/// Replaces the trace context in `metadata` (sent on to the instance) with
/// one naming `span` as the parent, keeping `tracestate`. Leaves `metadata`
/// as it is when the span is not recorded by OpenTelemetry.
pub(crate) fn propagate(span: &Span, metadata: &mut pb::Metadata) {
    #[cfg(feature = "otel")]
    otel::propagate(span, metadata);
    #[cfg(not(feature = "otel"))]
    let _ = (span, metadata);
}

/// Read access to a call's headers, whichever form they come in.
#[cfg_attr(not(feature = "otel"), allow(dead_code))]
pub(crate) trait Headers {
    /// The first value of `key` (lowercase), as text.
    fn get(&self, key: &str) -> Option<&str>;
    /// Every key.
    fn keys(&self) -> Vec<&str>;
}

impl Headers for tonic::metadata::MetadataMap {
    fn get(&self, key: &str) -> Option<&str> {
        tonic::metadata::MetadataMap::get(self, key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        tonic::metadata::MetadataMap::keys(self)
            .map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => k.as_str(),
                tonic::metadata::KeyRef::Binary(k) => k.as_str(),
            })
            .collect()
    }
}

impl Headers for Option<&pb::Metadata> {
    fn get(&self, key: &str) -> Option<&str> {
        self.iter()
            .flat_map(|m| &m.entries)
            .find(|e| e.key == key)
            .and_then(|e| match &e.value {
                Some(pb::metadata_entry::Value::Ascii(text)) => Some(text.as_str()),
                _ => None,
            })
    }

    fn keys(&self) -> Vec<&str> {
        self.iter()
            .flat_map(|m| &m.entries)
            .map(|e| e.key.as_str())
            .collect()
    }
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::propagation::{Extractor, Injector};
    use opentelemetry::trace::TraceContextExt as _;
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    use super::Headers;
    use crate::pb;

    struct Extract<'a, H>(&'a H);

    impl<H: Headers> Extractor for Extract<'_, H> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key)
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys()
        }
    }

    pub(super) fn continue_trace(span: &Span, metadata: &impl Headers) {
        if span.is_disabled() {
            return;
        }
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&Extract(metadata))
        });
        if parent.span().span_context().is_valid() {
            // Fails only when no OpenTelemetry layer records the span.
            let _ = span.set_parent(parent);
        }
    }

    /// The entries a propagator writes.
    #[derive(Default)]
    struct Inject(Vec<(String, String)>);

    impl Injector for Inject {
        fn set(&mut self, key: &str, value: String) {
            self.0.push((key.to_ascii_lowercase(), value));
        }
    }

    pub(super) fn propagate(span: &Span, metadata: &mut pb::Metadata) {
        if span.is_disabled() {
            return;
        }
        let context = span.context();
        if !context.span().span_context().is_valid() {
            return;
        }
        let mut injected = Inject::default();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut injected)
        });
        if injected.0.is_empty() {
            return;
        }
        metadata
            .entries
            .retain(|e| !injected.0.iter().any(|(key, _)| *key == e.key));
        metadata.entries.extend(
            injected
                .0
                .into_iter()
                .map(|(key, value)| pb::MetadataEntry {
                    key,
                    value: Some(pb::metadata_entry::Value::Ascii(value)),
                }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_splits_into_service_and_method() {
        assert_eq!(
            split_path("/myservice.v1.Greeter/SayHello"),
            ("myservice.v1.Greeter", "SayHello")
        );
        assert_eq!(split_path("noslash"), ("noslash", ""));
    }

    #[test]
    fn the_server_error_codes_are_those_of_the_conventions() {
        assert!(is_server_error(Code::Unavailable));
        assert!(is_server_error(Code::Internal));
        assert!(!is_server_error(Code::NotFound));
        assert!(!is_server_error(Code::Ok));
        assert!(!is_server_error(Code::Cancelled));
    }

    #[test]
    fn metadata_headers_read_ascii_entries_only() {
        let metadata = pb::Metadata {
            entries: vec![
                pb::MetadataEntry {
                    key: "traceparent".into(),
                    value: Some(pb::metadata_entry::Value::Ascii("00-ab".into())),
                },
                pb::MetadataEntry {
                    key: "x-bin".into(),
                    value: Some(pb::metadata_entry::Value::Binary(vec![1].into())),
                },
            ],
        };
        let headers = Some(&metadata);
        assert_eq!(Headers::get(&headers, "traceparent"), Some("00-ab"));
        assert_eq!(Headers::get(&headers, "x-bin"), None);
        assert_eq!(Headers::keys(&headers), vec!["traceparent", "x-bin"]);
    }
}
