//! Traces through the hop: a client's W3C trace context reaches the router's
//! span, the router's span is the parent the instance sees, and the user's
//! handler runs inside a span of the client's trace. A real router, real
//! bridges and a real tonic client on 127.0.0.1, spans exported to an
//! in-memory OpenTelemetry exporter.
//!
//! Each test is a current-thread runtime with its own subscriber
//! (`set_default`), so the router, the bridge and the client, all on the
//! test's thread, report to that test's exporter only.

use test_kit as common;

use std::pin::Pin;

use common::test_greeter::{Event, TestGreeter};
use common::{TestRouter, start_instance, within};
use futures_util::Stream;
use myservice::pb::greeter_server::Greeter;
use myservice::pb::{
    ChatMessage, HelloReply, HelloRequest, InstanceInfo, Number, StreamRequest, SumReply,
};
use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId, TracerProvider as _};
use opentelemetry::{Key, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use router_runtime::bridge::BridgeConfig;
use router_runtime::router::RouterConfig;
use tonic::{Request, Response, Status, Streaming};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;

/// The client's trace, span and `tracestate`.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const TRACESTATE: &str = "vendor=opaque-value";

/// The name of the routed method's spans.
const SAY_HELLO: &str = "myservice.v1.Greeter/SayHello";

/// Keeps every span exported to it. (opentelemetry_sdk's own in-memory
/// exporter needs its `testing` feature, which would make the tests' build
/// of every crate above opentelemetry differ from the binaries' build.)
#[derive(Debug, Clone, Default)]
struct Recorded(std::sync::Arc<std::sync::Mutex<Vec<SpanData>>>);

impl SpanExporter for Recorded {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(batch);
        Ok(())
    }
}

impl Recorded {
    fn get_finished_spans(&self) -> Result<Vec<SpanData>, std::convert::Infallible> {
        Ok(self.0.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// An exporter collecting this test's spans, installed for the current
/// thread until the guard drops.
struct Traces {
    exporter: Recorded,
    _provider: SdkTracerProvider,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Traces {
    fn install() -> Traces {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let exporter = Recorded::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("traces-test"))
            .with_filter(
                Targets::new().with_target(router_runtime::trace::TARGET, tracing::Level::TRACE),
            );
        let subscriber = tracing_subscriber::registry().with(layer);
        Traces {
            exporter,
            _provider: provider,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// The finished spans named `name`.
    fn named(&self, name: &str) -> Vec<SpanData> {
        self.exporter
            .get_finished_spans()
            .expect("finished spans")
            .into_iter()
            .filter(|s| s.name == name)
            .collect()
    }

    /// Waits until `n` spans named `name` have ended (the bridge's span ends
    /// on its own task, just after the reply went out).
    async fn wait_for(&self, name: &str, n: usize) -> Vec<SpanData> {
        within(5, "spans to end", async {
            loop {
                let spans = self.named(name);
                if spans.len() >= n {
                    return spans;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
    }
}

/// The attribute `key` of `span`.
fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == Key::new(key.to_owned()))
        .map(|kv| kv.value.clone())
}

/// The router's span (it records the instance it picked) and the bridge's.
fn router_and_bridge(spans: Vec<SpanData>) -> (SpanData, SpanData) {
    let (router, bridge): (Vec<_>, Vec<_>) = spans
        .into_iter()
        .partition(|s| attribute(s, "grpc_router.instance").is_some());
    assert_eq!((router.len(), bridge.len()), (1, 1), "one span each");
    (router[0].clone(), bridge[0].clone())
}

/// A greeting carrying the client's trace context.
fn traced_hello(traceparent: &str) -> Request<HelloRequest> {
    let mut request = Request::new(HelloRequest {
        name: "trace".into(),
        payload: Default::default(),
    });
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("ascii"));
    request
        .metadata_mut()
        .insert("tracestate", TRACESTATE.parse().expect("ascii"));
    request
}

fn client_traceparent() -> String {
    format!("00-{TRACE_ID}-{CLIENT_SPAN}-01")
}

/// A Greeter whose SayHello answers with what its handler sees of the
/// trace: `<trace id of the current span>|<traceparent>|<tracestate>`.
struct TraceGreeter(TestGreeter);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Greeter for TraceGreeter {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let current = tracing::Span::current().context();
        let trace_id = current.span().span_context().trace_id();
        let header = |key| {
            request
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        Ok(Response::new(HelloReply {
            message: format!(
                "{trace_id}|{}|{}",
                header("traceparent"),
                header("tracestate")
            ),
            instance_id: self.0.id.clone(),
            payload: Default::default(),
        }))
    }

    type StreamGreetingsStream = BoxStream<HelloReply>;

    async fn stream_greetings(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<Self::StreamGreetingsStream>, Status> {
        self.0.stream_greetings(request).await
    }

    async fn sum(&self, request: Request<Streaming<Number>>) -> Result<Response<SumReply>, Status> {
        self.0.sum(request).await
    }

    type ChatStream = BoxStream<ChatMessage>;

    async fn chat(
        &self,
        request: Request<Streaming<ChatMessage>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        self.0.chat(request).await
    }

    async fn who_am_i(&self, request: Request<()>) -> Result<Response<InstanceInfo>, Status> {
        self.0.who_am_i(request).await
    }
}

fn trace_greeter(id: &str) -> TraceGreeter {
    TraceGreeter(TestGreeter::new(id).0)
}

#[tokio::test]
async fn a_call_continues_the_clients_trace_through_the_router_into_the_handler() {
    let traces = Traces::install();
    let router = TestRouter::start(RouterConfig::default()).await;
    let _instance = start_instance(&router, "a", trace_greeter("a")).await;
    let mut client = router.client().await;

    let reply = within(
        5,
        "traced call",
        client.say_hello(traced_hello(&client_traceparent())),
    )
    .await
    .expect("ok")
    .into_inner();

    let (router_span, bridge_span) = router_and_bridge(traces.wait_for(SAY_HELLO, 2).await);
    let trace_id = TraceId::from_hex(TRACE_ID).expect("hex");
    assert_eq!(router_span.span_context.trace_id(), trace_id);
    assert_eq!(
        router_span.parent_span_id,
        SpanId::from_hex(CLIENT_SPAN).expect("hex")
    );
    assert!(router_span.parent_span_is_remote);
    assert_eq!(bridge_span.span_context.trace_id(), trace_id);
    assert_eq!(
        bridge_span.parent_span_id,
        router_span.span_context.span_id()
    );
    assert!(bridge_span.parent_span_is_remote);

    // The handler ran inside the bridge's span, and saw the router's span as
    // its caller, with the client's tracestate.
    let router_parent = format!("00-{TRACE_ID}-{}-01", router_span.span_context.span_id());
    assert_eq!(
        reply.message,
        format!("{TRACE_ID}|{router_parent}|{TRACESTATE}")
    );

    // The conventions' attributes, the pick and the status.
    for span in [&router_span, &bridge_span] {
        assert_eq!(span.span_kind, opentelemetry::trace::SpanKind::Server);
        assert_eq!(attribute(span, "rpc.system"), Some("grpc".into()));
        assert_eq!(
            attribute(span, "rpc.service"),
            Some("myservice.v1.Greeter".into())
        );
        assert_eq!(attribute(span, "rpc.method"), Some("SayHello".into()));
        assert_eq!(attribute(span, "rpc.grpc.status_code"), Some(0i64.into()));
    }
    assert_eq!(
        attribute(&router_span, "grpc_router.instance"),
        Some("a".into())
    );
    assert_eq!(attribute(&router_span, "grpc_router.retries"), None);
    // The router's span covers the bridge's.
    assert!(router_span.start_time <= bridge_span.start_time);
    assert!(router_span.end_time >= bridge_span.end_time);
    router.stop().await;
}

#[tokio::test]
async fn a_malformed_traceparent_is_ignored_and_the_router_starts_a_new_trace() {
    let traces = Traces::install();
    let router = TestRouter::start(RouterConfig::default()).await;
    let _instance = start_instance(&router, "a", trace_greeter("a")).await;
    let mut client = router.client().await;

    let bogus = "00-not-a-trace-id-at-all-01";
    let reply = within(
        5,
        "call with a bad traceparent",
        client.say_hello(traced_hello(bogus)),
    )
    .await
    .expect("the call still succeeds")
    .into_inner();

    let (router_span, bridge_span) = router_and_bridge(traces.wait_for(SAY_HELLO, 2).await);
    let new_trace = router_span.span_context.trace_id();
    assert_ne!(new_trace, TraceId::INVALID);
    assert_eq!(router_span.parent_span_id, SpanId::INVALID, "a root span");
    assert_eq!(bridge_span.span_context.trace_id(), new_trace);
    assert_eq!(
        bridge_span.parent_span_id,
        router_span.span_context.span_id()
    );
    // The handler sees the router's new trace, not the client's garbage.
    let (seen_trace, rest) = reply.message.split_once('|').expect("trace|parent|state");
    assert_eq!(seen_trace, new_trace.to_string());
    assert!(!rest.contains(bogus), "{rest}");
    router.stop().await;
}

#[tokio::test]
async fn a_retried_call_records_the_retry_and_the_instance_that_answered() {
    let traces = Traces::install();
    // As in lifecycle.rs: "busy" takes one call at a time and registers with
    // both routers; the second router does not know the first filled it, so
    // busy refuses the call without running it and the router sends it to
    // "spare".
    let first = TestRouter::start(RouterConfig::default()).await;
    let second = TestRouter::start(RouterConfig {
        strategy: Some(router_runtime::codegen::Strategy::RoundRobin),
        ..RouterConfig::default()
    })
    .await;
    let (greeter, mut events) = TestGreeter::new("busy");
    let busy = myservice::pb::GreeterBridge::new(greeter).connect(
        BridgeConfig::new(first.endpoint())
            .endpoint(second.endpoint())
            .instance_id("busy")
            .max_concurrent_calls(1),
    );
    within(10, "busy registered twice", busy.registered_with(2)).await;
    second.wait_for_instances(1).await;
    let _spare = start_instance(&second, "spare", trace_greeter("spare")).await;

    let mut through_first = first.client().await;
    let slow = tokio::spawn(async move {
        through_first
            .say_hello(HelloRequest {
                name: "slow:60000".into(),
                payload: Default::default(),
            })
            .await
    });
    loop {
        match within(5, "the slow call to start", events.recv()).await {
            Some(Event::SlowStarted) => break,
            Some(_) => continue,
            None => panic!("events closed"),
        }
    }

    let mut through_second = second.client().await;
    let reply = within(
        5,
        "retried call",
        through_second.say_hello(traced_hello(&client_traceparent())),
    )
    .await
    .expect("served elsewhere")
    .into_inner();
    assert_eq!(reply.instance_id, "spare");

    let trace_id = TraceId::from_hex(TRACE_ID).expect("hex");
    let ours = within(5, "the retried call's spans", async {
        loop {
            let spans: Vec<_> = traces
                .named(SAY_HELLO)
                .into_iter()
                .filter(|s| s.span_context.trace_id() == trace_id)
                .collect();
            if spans.len() >= 2 {
                return spans;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let (router_span, bridge_span) = router_and_bridge(ours);
    assert_eq!(
        attribute(&router_span, "grpc_router.retries"),
        Some(1i64.into())
    );
    assert_eq!(
        attribute(&router_span, "grpc_router.instance"),
        Some("spare".into())
    );
    let retry = router_span
        .events
        .iter()
        .find(|e| e.name == "retrying on another instance")
        .expect("a retry event");
    assert!(
        retry
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "grpc_router.instance" && kv.value == "busy".into()),
        "{retry:?}"
    );
    // Only the instance that ran the call has a handler span in the trace.
    assert_eq!(
        bridge_span.parent_span_id,
        router_span.span_context.span_id()
    );
    slow.abort();
    busy.abort().await;
}
