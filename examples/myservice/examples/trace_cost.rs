//! What tracing costs the hop: unary SayHello calls through a real router and
//! a real bridge on 127.0.0.1, in one process, with the process's tracing in
//! one of three modes:
//!
//! - `off`: no subscriber (the call spans are disabled);
//! - `logs`: text logs at `info` to a sink, as the daemon logs without OTLP
//!   (the `DEBUG` call spans stay disabled);
//! - `traces`: the logs plus the OpenTelemetry layer the daemon installs
//!   (call spans only, no location/thread/timing attributes), a batch span
//!   processor and an exporter that drops the batches (so the numbers are
//!   the hop's cost, not a collector's), every call sampled.
//!
//! Every call carries a client `traceparent` in every mode. Prints one line:
//! mode, calls, calls/s, p50 and p99 latency in µs, spans exported.
//!
//! `cargo run --release -p myservice --example trace_cost -- traces 20000 16`
//! (mode, calls, concurrent callers). Run the modes one after the other,
//! several times, and compare medians: one process has one subscriber.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use myservice::greeter::GreeterImpl;
use myservice::pb::greeter_client::GreeterClient;
use myservice::pb::{GreeterBridge, GreeterRouter, HelloRequest};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use router_runtime::bridge::BridgeConfig;
use router_runtime::router::RouterConfig;
use tokio_stream::wrappers::TcpListenerStream;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Drops every batch, counting the spans.
#[derive(Debug, Clone, Default)]
struct Discard(Arc<AtomicU64>);

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Text logs at `info`, thrown away.
fn logs<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_filter(tracing_subscriber::EnvFilter::new("info"))
}

/// Installs the mode's subscriber; the provider (traces only) to flush.
fn install(mode: &str, exported: &Discard) -> Option<SdkTracerProvider> {
    match mode {
        "off" => None,
        "logs" => {
            tracing_subscriber::registry().with(logs()).init();
            None
        }
        "traces" => {
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exported.clone())
                .build();
            // As the daemon's `traces::export_layer`.
            let traces = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("trace-cost"))
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_filter(
                    tracing_subscriber::filter::Targets::new()
                        .with_target(router_runtime::trace::TARGET, tracing::Level::TRACE),
                );
            tracing_subscriber::registry()
                .with(traces)
                .with(logs())
                .init();
            Some(provider)
        }
        other => panic!("unknown mode `{other}`: off, logs or traces"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "off".into());
    let calls: usize = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let callers: usize = args.next().map_or(Ok(16), |a| a.parse())?;
    let exported = Discard::default();
    let provider = install(&mode, &exported);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = GreeterRouter::new(RouterConfig::default());
    let server = router.add_to(tonic::transport::Server::builder().tcp_nodelay(true));
    tokio::spawn(server.serve_with_incoming(TcpListenerStream::new(listener)));
    let bridge = GreeterBridge::new(GreeterImpl::new("a"))
        .connect(BridgeConfig::new(format!("http://{addr}")).instance_id("a"));
    tokio::time::timeout(Duration::from_secs(10), bridge.registered()).await?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;

    let call = |client: &mut GreeterClient<tonic::transport::Channel>| {
        let mut request = tonic::Request::new(HelloRequest {
            name: "bench".into(),
            payload: Default::default(),
        });
        request.metadata_mut().insert(
            "traceparent",
            tonic::metadata::MetadataValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        let mut client = client.clone();
        async move { client.say_hello(request).await.map(|_| ()) }
    };
    // Warm-up: connections, allocator, caches.
    let mut client = GreeterClient::new(channel.clone());
    for _ in 0..1_000 {
        call(&mut client).await?;
    }

    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..callers {
        let mut client = GreeterClient::new(channel.clone());
        let share = calls / callers + usize::from(i < calls % callers);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            for _ in 0..share {
                let t = Instant::now();
                call(&mut client).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, tonic::Status>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(calls);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0, |d| d.as_micros())
    };
    if let Some(provider) = &provider {
        provider.force_flush()?;
    }
    // Two spans per call (router and handler), warm-up included; fewer when
    // the batch processor's queue (2048 spans) overflowed and dropped some.
    let spans = exported.0.load(Ordering::Relaxed);
    println!(
        "{mode} calls={calls} callers={callers} rps={:.0} p50_us={} p99_us={} spans_exported={spans}",
        calls as f64 / elapsed.as_secs_f64(),
        at(0.50),
        at(0.99)
    );
    bridge.abort().await;
    Ok(())
}
