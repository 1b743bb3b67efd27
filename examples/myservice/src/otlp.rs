//! OTLP export of an instance's call spans (feature `otel`), configured by
//! OpenTelemetry's standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns it on, `OTEL_SERVICE_NAME`
//! names the instance's service (default `myservice-instance`),
//! `OTEL_TRACES_SAMPLER` and `OTEL_BSP_*` tune sampling and batching.
//!
//! The bridge's span of each call (`router_runtime::trace`, target
//! [`router_runtime::trace::TARGET`]) continues the `traceparent` the router
//! sends, so the instance's spans join the client's trace under the router's.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The service name the spans carry when `OTEL_SERVICE_NAME` is unset.
pub const DEFAULT_SERVICE_NAME: &str = "myservice-instance";

/// A running exporter; [`Exporter::shutdown`] sends the spans still
/// buffered.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
    /// The endpoint the spans go to, as configured.
    pub endpoint: String,
}

impl Exporter {
    /// Exports what is still buffered and stops.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("instance: flushing traces to {} failed: {e}", self.endpoint);
        }
    }
}

/// The configured OTLP endpoint, if any.
fn endpoint() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .find_map(|key| std::env::var(key).ok().filter(|v| !v.trim().is_empty()))
}

/// Logs to stderr as [`crate::demo::init_tracing`] does and, when an OTLP
/// endpoint is configured, exports the call spans there; `Ok(None)` when
/// none is. Must run inside a Tokio runtime (the OTLP client's connection
/// lives there).
pub fn init(default_filter: &str) -> Result<Option<Exporter>, String> {
    let Some(endpoint) = endpoint() else {
        crate::demo::init_tracing(default_filter);
        return Ok(None);
    };
    // The endpoint comes from the environment, read by the exporter itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| format!("cannot export traces to {endpoint}: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(DEFAULT_SERVICE_NAME);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("myservice-instance"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(
            Targets::new().with_target(router_runtime::trace::TARGET, tracing::Level::TRACE),
        );
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_filter(filter);
    tracing_subscriber::registry()
        .with(spans)
        .with(logs)
        .try_init()
        .map_err(|e| format!("cannot install the trace exporter: {e}"))?;
    Ok(Some(Exporter { provider, endpoint }))
}
