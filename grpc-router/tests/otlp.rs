//! Traces across processes, as deployed: a client sends a W3C `traceparent`,
//! the daemon (feature `otel`, `[tracing] otlp_endpoint`) and the example
//! Rust instance (feature `otel`, `OTEL_EXPORTER_OTLP_ENDPOINT`) export their
//! spans to a real OTLP/gRPC receiver run by the test, which must see
//! client → router → instance in one trace.
//!
//! The instance binary is built by the test (`cargo test --workspace
//! --no-run`, in this workspace's target directory: a no-op within `cargo
//! test --workspace`) because a test cannot name another package's binary.
//! Run with `cargo test -p grpc-router --test otlp` (`otel` is a default
//! feature of both).

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Daemon, config_with, instance_binary, within};
use myservice::pb::HelloRequest;
use myservice::pb::greeter_client::GreeterClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tokio::sync::Notify;

/// The client's trace and span.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const SAY_HELLO: &str = "myservice.v1.Greeter/SayHello";

/// A span as received, with the `service.name` of its resource.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    span: Span,
}

/// An OTLP/gRPC trace receiver keeping every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("spans");
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| string_attribute(&r.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        self.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// Serves the receiver on a free loopback port.
    async fn start() -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (receiver, addr)
    }

    /// Waits until a span named `name` from `service` has arrived.
    async fn span_of(&self, service: &str, name: &str) -> Span {
        within(30, &format!("{service}'s span {name}"), async {
            loop {
                let arrived = self.arrived.notified();
                if let Some(found) = self
                    .spans
                    .lock()
                    .expect("spans")
                    .iter()
                    .find(|r| r.service == service && r.span.name == name)
                {
                    return found.span.clone();
                }
                arrived.await;
            }
        })
        .await
    }
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref() {
            Some(AnyValue {
                value: Some(any_value::Value::IntValue(i)),
            }) => Some(*i),
            _ => None,
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the RPC conventions on a server span of a successful SayHello.
fn assert_server_span(span: &Span, who: &str) {
    assert_eq!(span.kind, SpanKind::Server as i32, "{who}: kind");
    assert_eq!(hex(&span.trace_id), TRACE_ID, "{who}: the client's trace");
    let attributes = &span.attributes;
    assert_eq!(
        string_attribute(attributes, "rpc.system").as_deref(),
        Some("grpc"),
        "{who}"
    );
    assert_eq!(
        string_attribute(attributes, "rpc.service").as_deref(),
        Some("myservice.v1.Greeter"),
        "{who}"
    );
    assert_eq!(
        string_attribute(attributes, "rpc.method").as_deref(),
        Some("SayHello"),
        "{who}"
    );
    assert_eq!(
        int_attribute(attributes, "rpc.grpc.status_code"),
        Some(0),
        "{who}"
    );
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the instance registered with `daemon`, exporting to `collector`,
/// and waits for its `registered as` line.
fn start_instance(binary: &std::path::Path, daemon: &Daemon, collector: SocketAddr) -> Killed {
    let mut child = Command::new(binary)
        .args(["--router", &daemon.registrations_url(), "--id", "rust-a"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .env_remove("OTEL_SERVICE_NAME")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the instance");
    let stdout = child.stdout.take().expect("stdout");
    let child = Killed(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the instance registers within 30 s");
    assert_eq!(line, "registered as rust-a");
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trace_continues_through_the_daemon_into_the_rust_instance() {
    let binary = tokio::task::spawn_blocking(instance_binary)
        .await
        .expect("build");
    let (receiver, collector) = Receiver::start().await;
    let daemon = Daemon::start_with_env(
        &config_with(&format!(
            "[tracing]\notlp_endpoint = \"http://{collector}\"\nservice_name = \"router-under-test\"\n"
        )),
        &[("OTEL_BSP_SCHEDULE_DELAY", "50")],
    );
    let _instance = start_instance(&binary, &daemon, collector);
    daemon.wait_for_instances("myservice.v1.Greeter", 1).await;

    let mut client = GreeterClient::new(daemon.channel().await);
    let mut request = tonic::Request::new(HelloRequest {
        name: "traced".into(),
        payload: vec![],
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CLIENT_SPAN}-01")
            .parse()
            .expect("ascii"),
    );
    let reply = within(10, "SayHello", client.say_hello(request))
        .await
        .expect("the call succeeds")
        .into_inner();
    assert_eq!(reply.instance_id, "rust-a");

    let router = receiver.span_of("router-under-test", SAY_HELLO).await;
    let instance = receiver.span_of("myservice-instance", SAY_HELLO).await;
    assert_server_span(&router, "router");
    assert_server_span(&instance, "instance");
    assert_eq!(
        hex(&router.parent_span_id),
        CLIENT_SPAN,
        "the router's span is the client's child"
    );
    assert_eq!(
        instance.parent_span_id, router.span_id,
        "the instance's span is the router's child"
    );
    assert_eq!(
        string_attribute(&router.attributes, "grpc_router.instance").as_deref(),
        Some("rust-a")
    );
}
