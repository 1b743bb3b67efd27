//! What the example binaries share, so each `main` is a handful of lines:
//!
//! - [`serve_router`]: a Greeter router, `grpc.health.v1` and gRPC server
//!   reflection on one listener ([`RunningRouter`] runs it in the background).
//! - [`start_instance`]: a [`GreeterImpl`] registered with routers through the
//!   generated `GreeterBridge`.
//! - [`connect`] and [`run_client`]: call every method kind through a router
//!   and record which instance served each call.
//! - [`run_demo`]: a router, two instances and the client in one process.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use router_runtime::bridge::{BridgeConfig, BridgeHandle};
use router_runtime::codegen::{ServiceSpec, Strategy};
use router_runtime::router::RouterConfig;
use router_runtime::server::{Listener, RouterServer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as WireServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tracing_subscriber::EnvFilter;

use crate::greeter::GreeterImpl;
use crate::pb::greeter_client::GreeterClient;
use crate::pb::{
    ChatMessage, GreeterBridge, GreeterRouter, GreeterSpec, HelloRequest, Number, StreamRequest,
};

/// The error type of the example binaries: any error, with a readable message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The routed service's full name, as health reports it.
pub const SERVICE_NAME: &str = <GreeterSpec as ServiceSpec>::NAME;

/// The deadline of every call the client routine makes.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the demo waits for registrations, drains and the router's stop.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Logs to stderr (colored only on a terminal), filtered by `RUST_LOG` or
/// else by `default_filter` (for example `"info"`).
pub fn init_tracing(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    router_runtime::server::shutdown_signal().await;
}

/// Parses a balancing strategy as the `--strategy` flag spells it:
/// `round-robin`, `p2c`, `weighted` or `consistent-hash`.
pub fn parse_strategy(name: &str) -> Result<Strategy, String> {
    name.parse()
        .map_err(|e: router_runtime::router::UnknownStrategy| e.to_string())
}

/// Every compression encoding the router and the examples support.
pub const ALL_COMPRESSION: [CompressionEncoding; 3] = [
    CompressionEncoding::Gzip,
    CompressionEncoding::Deflate,
    CompressionEncoding::Zstd,
];

/// Parses a compression encoding as the binaries' flags spell it: `gzip`,
/// `deflate` or `zstd`.
pub fn parse_compression(name: &str) -> Result<CompressionEncoding, String> {
    match name.trim() {
        "gzip" => Ok(CompressionEncoding::Gzip),
        "deflate" => Ok(CompressionEncoding::Deflate),
        "zstd" => Ok(CompressionEncoding::Zstd),
        other => Err(format!(
            "unknown compression {other:?}: use gzip, deflate or zstd"
        )),
    }
}

/// The `--strategy` spelling of `strategy`.
pub fn strategy_name(strategy: Strategy) -> &'static str {
    strategy.name()
}

/// Serves `router` on `listener` until `shutdown` completes: the Greeter's own
/// paths for clients, the register endpoint for instances, `grpc.health.v1`
/// (`myservice.v1.Greeter` is SERVING while at least one instance is
/// registered), the `router.v1.RouterAdmin` admin service and gRPC server
/// reflection; gRPC-Web and Connect clients too (`RouterServer::grpc_web`,
/// `RouterServer::connect`).
pub async fn serve_router(
    router: GreeterRouter,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    serve_router_with(router, listener, shutdown, None).await
}

/// [`serve_router`], over TLS when `tls` is given (clients and bridges then
/// dial `https://`).
pub async fn serve_router_with(
    router: GreeterRouter,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<(), Error> {
    let mut listener = Listener::from_tcp(listener);
    if let Some(tls) = tls {
        listener = listener.with_tls(tls);
    }
    RouterServer::new(router.config_router_id())
        .route(&router)
        // The example serves its admin service (`grpc-router status`) to
        // whoever reaches its one port: fine on loopback, not in production
        // (see `RouterServer::serve_admin`).
        .serve_admin(true)
        // Browsers and `buf curl --protocol grpcweb` reach it too, and
        // Connect clients (`buf curl --protocol connect`, `curl` with JSON).
        .grpc_web(true)
        .connect(true)
        .grace(Duration::from_secs(10))
        .serve(listener, None, shutdown)
        .await
        .map_err(|e| format!("router server failed: {e}").into())
}

/// A router serving in the background of this process.
#[derive(Debug)]
pub struct RunningRouter {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The router, to watch its registry and counters.
    pub router: GreeterRouter,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), Error>>,
}

impl RunningRouter {
    /// Binds `listen` (port 0 picks a free port) and serves a router with
    /// `config` there, as [`serve_router`] does.
    pub async fn start(listen: SocketAddr, config: RouterConfig) -> Result<Self, Error> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr()?;
        let router = GreeterRouter::new(config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_router(router.clone(), listener, async {
            let _ = stopped.await;
        }));
        Ok(RunningRouter {
            addr,
            router,
            stop,
            task,
        })
    }

    /// The URL instances and clients dial: `http://<addr>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections and waits (up to `timeout`) for open ones
    /// to finish.
    pub async fn stop(self, timeout: Duration) -> Result<(), Error> {
        let _ = self.stop.send(());
        let mut task = self.task;
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(Ok(served)) => served,
            Ok(Err(join)) => Err(format!("router task failed: {join}").into()),
            Err(_) => {
                task.abort();
                Err(format!("router did not stop within {timeout:?}").into())
            }
        }
    }
}

/// Runs a [`GreeterImpl`] named after `options.instance_id` as an instance
/// registered with every router of `options`.
pub fn start_instance(options: BridgeConfig) -> BridgeHandle {
    GreeterBridge::new(GreeterImpl::new(options.instance_id.clone())).connect(options)
}

/// A channel to the router at `endpoint` (`http://host:port`).
pub async fn connect_channel(endpoint: &str) -> Result<Channel, Error> {
    Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| format!("bad router address {endpoint:?}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| {
            format!(
                "cannot connect to the router at {endpoint}: {}",
                error_chain(&e)
            )
            .into()
        })
}

/// A Greeter client for the router at `endpoint` (`http://host:port`).
pub async fn connect(endpoint: &str) -> Result<GreeterClient<Channel>, Error> {
    Ok(GreeterClient::new(connect_channel(endpoint).await?))
}

/// Watches the router's `grpc.health.v1` status of [`SERVICE_NAME`] until it
/// is SERVING, for at most `timeout`.
pub async fn wait_until_serving(channel: Channel, timeout: Duration) -> Result<(), Error> {
    let watch = async {
        let mut statuses = HealthClient::new(channel)
            .watch(HealthCheckRequest {
                service: SERVICE_NAME.to_string(),
            })
            .await
            .map_err(|status| status_error("health watch", &status))?
            .into_inner();
        let mut last = WireServingStatus::Unknown;
        while let Some(response) = statuses.next().await {
            let response = response.map_err(|status| status_error("health watch", &status))?;
            last = response.status();
            if last == WireServingStatus::Serving {
                return Ok(());
            }
        }
        Err::<(), Error>(
            format!(
                "health watch ended while {SERVICE_NAME} was {}",
                last.as_str_name()
            )
            .into(),
        )
    };
    tokio::time::timeout(timeout, watch)
        .await
        .map_err(|_| Error::from(format!("{SERVICE_NAME} not SERVING within {timeout:?}")))?
}

/// One call the client routine made and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// The method and its arguments, for example `SayHello(name="Ada")`.
    pub call: String,
    /// What came back, in short.
    pub result: String,
    /// The instance (or instances) that served the call.
    pub served_by: String,
}

/// `message` as a request with the routine's deadline.
fn request<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// Runs `call`, failing with a message naming `what` if it fails or takes
/// longer than [`CALL_TIMEOUT`] (plus a margin for the server's own deadline).
async fn bounded<T>(
    what: &str,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Error> {
    match tokio::time::timeout(CALL_TIMEOUT + Duration::from_secs(1), call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(status_error(what, &status)),
        Err(_) => Err(format!("{what}: no answer within {CALL_TIMEOUT:?}").into()),
    }
}

/// Collects a response stream within [`CALL_TIMEOUT`].
async fn collect<T>(what: &str, mut stream: tonic::Streaming<T>) -> Result<Vec<T>, Error> {
    let all = async {
        let mut items = Vec::new();
        while let Some(item) = stream.next().await {
            items.push(item.map_err(|status| status_error(what, &status))?);
        }
        Ok::<_, Error>(items)
    };
    match tokio::time::timeout(CALL_TIMEOUT + Duration::from_secs(1), all).await {
        Ok(items) => items,
        Err(_) => Err(format!("{what}: stream did not end within {CALL_TIMEOUT:?}").into()),
    }
}

fn status_error(what: &str, status: &Status) -> Error {
    format!(
        "{what} failed: {:?}: {}",
        status.code(),
        if status.message().is_empty() {
            "(no message)"
        } else {
            status.message()
        }
    )
    .into()
}

/// Fails with `message` unless `ok`.
fn check(ok: bool, message: impl FnOnce() -> String) -> Result<(), Error> {
    if ok { Ok(()) } else { Err(message().into()) }
}

/// The distinct values of `ids`, in order of first appearance, joined by `, `.
fn distinct<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for id in ids {
        if !seen.contains(&id) {
            seen.push(id);
        }
    }
    seen.join(", ")
}

const NAMES: [&str; 6] = ["Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret"];

/// Calls every method kind through the router behind `client` and checks
/// each answer: `unary_calls` SayHello calls (at least one), StreamGreetings
/// with count 5, Sum of 1..=10, Chat with 3 messages, and WhoAmI.
pub async fn run_client(
    client: &mut GreeterClient<Channel>,
    unary_calls: usize,
) -> Result<Vec<CallRecord>, Error> {
    let mut records = Vec::new();

    for i in 0..unary_calls.max(1) {
        let name = NAMES[i % NAMES.len()];
        let reply = bounded(
            "SayHello",
            client.say_hello(request(HelloRequest {
                name: name.to_string(),
                payload: Vec::new(),
            })),
        )
        .await?;
        let expected = format!("Hello, {name}!");
        check(reply.message == expected, || {
            format!("SayHello: expected {expected:?}, got {:?}", reply.message)
        })?;
        records.push(CallRecord {
            call: format!("SayHello(name={name:?})"),
            result: format!("{:?}", reply.message),
            served_by: reply.instance_id,
        });
    }

    let stream = bounded(
        "StreamGreetings",
        client.stream_greetings(request(StreamRequest {
            name: "Ada".to_string(),
            count: 5,
            payload_size: 0,
        })),
    )
    .await?;
    let greetings = collect("StreamGreetings", stream).await?;
    check(greetings.len() == 5, || {
        format!(
            "StreamGreetings: expected 5 greetings, got {}",
            greetings.len()
        )
    })?;
    for (i, greeting) in greetings.iter().enumerate() {
        let expected = format!("Hello #{i}, Ada!");
        check(greeting.message == expected, || {
            format!(
                "StreamGreetings: expected {expected:?}, got {:?}",
                greeting.message
            )
        })?;
    }
    records.push(CallRecord {
        call: "StreamGreetings(name=\"Ada\", count=5)".to_string(),
        result: format!(
            "5 greetings, {:?} .. {:?}",
            greetings[0].message, greetings[4].message
        ),
        served_by: distinct(greetings.iter().map(|g| g.instance_id.as_str())),
    });

    let numbers: Vec<Number> = (1..=10).map(|value| Number { value }).collect();
    let sum = bounded("Sum", client.sum(request(tokio_stream::iter(numbers)))).await?;
    check(sum.total == 55 && sum.count == 10, || {
        format!(
            "Sum: expected total 55 of 10 numbers, got {} of {}",
            sum.total, sum.count
        )
    })?;
    records.push(CallRecord {
        call: "Sum(1..=10)".to_string(),
        result: format!("total {} of {} numbers", sum.total, sum.count),
        served_by: sum.instance_id,
    });

    let texts = ["hi", "how are you?", "bye"];
    let messages: Vec<ChatMessage> = texts
        .iter()
        .zip(1u64..)
        .map(|(text, seq)| ChatMessage {
            text: (*text).to_string(),
            seq,
        })
        .collect();
    let stream = bounded("Chat", client.chat(request(tokio_stream::iter(messages)))).await?;
    let echoes = collect("Chat", stream).await?;
    check(echoes.len() == texts.len(), || {
        format!("Chat: expected 3 echoes, got {}", echoes.len())
    })?;
    let mut chat_instances = Vec::new();
    for ((echo, text), seq) in echoes.iter().zip(texts).zip(1u64..) {
        let instance = echo
            .text
            .strip_prefix(text)
            .and_then(|rest| rest.strip_prefix(" (from "))
            .and_then(|rest| rest.strip_suffix(')'));
        match instance {
            Some(instance) if echo.seq == seq => chat_instances.push(instance),
            _ => {
                return Err(format!(
                    "Chat: expected an echo of {text:?} (seq {seq}), got {:?} (seq {})",
                    echo.text, echo.seq
                )
                .into());
            }
        }
    }
    records.push(CallRecord {
        call: "Chat(3 messages)".to_string(),
        result: format!("3 echoes in order, last {:?}", echoes[2].text),
        served_by: distinct(chat_instances),
    });

    let me = bounded("WhoAmI", client.who_am_i(request(()))).await?;
    check(!me.instance_id.is_empty(), || {
        "WhoAmI: empty instance id".to_string()
    })?;
    records.push(CallRecord {
        call: "WhoAmI()".to_string(),
        result: format!("{:?}", me.instance_id),
        served_by: me.instance_id,
    });

    Ok(records)
}

/// How many calls of `records` each instance served.
pub fn calls_per_instance(records: &[CallRecord]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for record in records {
        for instance in record.served_by.split(", ") {
            *counts.entry(instance.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// `records` as an aligned table, one call per line, then the calls per
/// instance.
pub fn format_report(records: &[CallRecord]) -> String {
    let call_width = records
        .iter()
        .map(|r| r.call.len())
        .chain([4])
        .max()
        .unwrap_or(4);
    let result_width = records
        .iter()
        .map(|r| r.result.len())
        .chain([6])
        .max()
        .unwrap_or(6);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  {:<call_width$}  {:<result_width$}  served by",
        "call", "result"
    );
    for record in records {
        let _ = writeln!(
            out,
            "  {:<call_width$}  {:<result_width$}  {}",
            record.call, record.result, record.served_by
        );
    }
    let counts: Vec<String> = calls_per_instance(records)
        .into_iter()
        .map(|(instance, n)| format!("{instance}: {n}"))
        .collect();
    let _ = writeln!(out, "  calls per instance: {}", counts.join(", "));
    out
}

/// `error` and its sources, joined by `: ` (tonic's transport errors say
/// little on their own).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Waits (up to the step timeout) until the router has `n` instances.
async fn wait_for_instances(router: &RunningRouter, n: usize, what: &str) -> Result<(), Error> {
    tokio::time::timeout(
        STEP_TIMEOUT,
        router.router.registry().wait_until(|k| k == n),
    )
    .await
    .map_err(|_| {
        format!(
            "{what}: the router has {} instance(s), expected {n}, after {STEP_TIMEOUT:?}",
            router.router.registry().len()
        )
        .into()
    })
}

/// The whole example in one process: starts a router on a free loopback port
/// (round robin, so calls alternate), registers `instance-a` and
/// `instance-b`, runs [`run_client`] with `unary_calls` SayHello calls, prints
/// a report, drains both instances and stops the router. Fails if any step
/// fails or if an instance served no call.
pub async fn run_demo(unary_calls: usize) -> Result<(), Error> {
    let config = RouterConfig {
        strategy: Some(Strategy::RoundRobin),
        ..RouterConfig::default()
    };
    let router = RunningRouter::start(SocketAddr::from(([127, 0, 0, 1], 0)), config).await?;
    println!(
        "router      listening on {} (strategy {})",
        router.addr,
        strategy_name(router.router.strategy())
    );

    let ids = ["instance-a", "instance-b"];
    let instances: Vec<BridgeHandle> = ids
        .iter()
        .map(|id| start_instance(BridgeConfig::new(router.endpoint()).instance_id(*id)))
        .collect();
    if let Err(e) = wait_for_instances(&router, ids.len(), "registration").await {
        let errors: Vec<String> = instances
            .iter()
            .filter_map(|handle| {
                handle
                    .registrations()
                    .borrow()
                    .last_error
                    .as_ref()
                    .map(ToString::to_string)
            })
            .collect();
        return Err(format!("{e}; bridge errors: {}", errors.join("; ")).into());
    }
    println!("instances   {} registered", ids.join(" and "));

    let channel = connect_channel(&router.endpoint()).await?;
    wait_until_serving(channel.clone(), STEP_TIMEOUT).await?;
    println!("health      {SERVICE_NAME} is SERVING");
    let mut client = GreeterClient::new(channel);

    println!();
    let records = run_client(&mut client, unary_calls).await?;
    print!("{}", format_report(&records));
    println!();
    let counts = calls_per_instance(&records);
    for id in ids {
        check(counts.contains_key(id), || {
            format!("{id} served no call: the router did not balance")
        })?;
    }
    drop(client);

    for (id, handle) in ids.iter().zip(instances) {
        tokio::time::timeout(STEP_TIMEOUT, handle.shutdown())
            .await
            .map_err(|_| format!("{id} did not drain within {STEP_TIMEOUT:?}"))?;
        println!("shutdown    {id} drained and left");
    }
    wait_for_instances(&router, 0, "shutdown").await?;
    router.stop(STEP_TIMEOUT).await?;
    println!("shutdown    router stopped");
    Ok(())
}
