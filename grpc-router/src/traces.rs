//! Traces of forwarded calls exported over OpenTelemetry OTLP/gRPC
//! (`[tracing] otlp_endpoint`), with the `otel` feature.
//!
//! The router's call spans (`router_runtime::trace`) continue each client's
//! W3C `traceparent` and name themselves as the parent the instance sees.
//! Only those spans (target [`router_runtime::trace::TARGET`]) and their
//! events are exported; the log filter does not apply to them, so exporting
//! works at any log level, and logs stay as they are.

use tracing_subscriber::{Layer, Registry};

use crate::config::Tracing;

/// A layer of the process's subscriber, type-erased so that the logging
/// stack has one type with or without traces.
pub type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The running exporter; [`Traces::shutdown`] flushes the spans still
/// buffered.
#[derive(Debug, Default)]
pub struct Traces {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

/// The exporter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot export traces to {endpoint}: {message}")]
pub struct TracesError {
    /// The configured endpoint.
    pub endpoint: String,
    /// Why.
    pub message: String,
}

impl Traces {
    /// Sets up the exporter `config` asks for and the layer that feeds it;
    /// no layer when `otlp_endpoint` is unset. Must run inside a Tokio
    /// runtime (the OTLP client's connection lives there).
    pub fn start(config: &Tracing) -> Result<(Traces, Option<BoxedLayer>), TracesError> {
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok((Traces::default(), None));
        };
        Self::start_otlp(config, endpoint)
    }

    #[cfg(feature = "otel")]
    fn start_otlp(
        config: &Tracing,
        endpoint: &str,
    ) -> Result<(Traces, Option<BoxedLayer>), TracesError> {
        use opentelemetry::trace::TracerProvider as _;
        use opentelemetry_otlp::WithExportConfig as _;
        use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| TracesError {
                endpoint: endpoint.to_owned(),
                message: e.to_string(),
            })?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(config.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let layer = export_layer(provider.tracer("grpc-router"));
        Ok((
            Traces {
                provider: Some(provider),
            },
            Some(layer),
        ))
    }

    #[cfg(not(feature = "otel"))]
    fn start_otlp(
        _config: &Tracing,
        endpoint: &str,
    ) -> Result<(Traces, Option<BoxedLayer>), TracesError> {
        // The configuration check refuses this first; kept for callers that
        // build a `Tracing` by hand.
        Err(TracesError {
            endpoint: endpoint.to_owned(),
            message: crate::config::NO_OTEL.to_owned(),
        })
    }

    /// Exports what is still buffered and stops the exporter.
    pub fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("grpc-router: flushing traces failed: {e}");
        }
    }
}

/// The layer that turns the call spans into OpenTelemetry spans of `tracer`:
/// only the call spans' target, none of the `tracing` layer's own extra
/// attributes (source location, threads, busy/idle times) on the hop.
#[cfg(feature = "otel")]
pub fn export_layer<T>(tracer: T) -> BoxedLayer
where
    T: opentelemetry::trace::Tracer + Send + Sync + 'static,
    T::Span: Send + Sync,
{
    use tracing_subscriber::filter::Targets;
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(
            Targets::new().with_target(router_runtime::trace::TARGET, tracing::Level::TRACE),
        )
        .boxed()
}
