//! `router-bench` without a subcommand: the routed path side by side with a
//! direct tonic server, in this process, with real tonic clients.
//!
//! - `direct`: a tonic server (`GreeterServer<GreeterImpl>`) on 127.0.0.1:0;
//! - `routed`: the compiled `GreeterRouter` with one bridge instance running
//!   the same `GreeterImpl`;
//! - `dynamic`: a `DynamicRouter` served by `RouterServer` (the router the
//!   `grpc-router` daemon builds, learning the service from the
//!   registration) with the same kind of bridge instance; in this process,
//!   so not the daemon (`router-bench procs` measures the real one);
//! - `dynamic+metrics` (`--metrics`): the same, recording its Prometheus
//!   metrics;
//! - scenarios `unary`, `stream` and `pingpong` alternate the targets in
//!   interleaved rounds (first round discarded), so machine noise hits all
//!   alike;
//! - scenario `registrations` runs the router in a child process (the hidden
//!   `serve-router` subcommand) and reports its memory per registration and
//!   the latency with many registered instances.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::BoxError;
use crate::load::Workload;
use crate::machine::Machine;
use crate::report::{self, Format};
use crate::scenarios::{Row, Timing, Unit, interleaved};
use crate::servers;
use crate::target::Target;

/// The in-process dynamic router's target name.
pub const DYNAMIC_TARGET: &str = "dynamic";

/// The targets every side-by-side scenario measures (extra targets run the
/// unary scenario only).
pub const BUILT_IN_TARGETS: [&str; 3] = ["direct", "routed", DYNAMIC_TARGET];

/// The dynamic router with its metrics on (`--metrics`); it runs every
/// side-by-side scenario, like the built-in targets.
pub const METRICS_TARGET: &str = "dynamic+metrics";

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Every scenario below.
    All,
    /// SayHello with a small payload at several concurrencies.
    Unary,
    /// StreamGreetings of large messages.
    Stream,
    /// Chat with one message in flight per stream.
    Pingpong,
    /// Latency and router memory with many registered instances.
    Registrations,
}

/// An extra unary target: a name and an address.
#[derive(Debug, Clone)]
pub struct ExtraTarget {
    /// The column name.
    pub name: String,
    /// Where to connect.
    pub addr: SocketAddr,
}

/// What `router-bench` (no subcommand) does.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Scenarios to run, in order, without duplicates.
    pub scenarios: Vec<Scenario>,
    /// Measured time per target and round.
    pub duration: Duration,
    /// Rounds, the first being a warm-up.
    pub rounds: u32,
    /// Whether `--quick` was given.
    pub quick: bool,
    /// Output format.
    pub format: Format,
    /// Client connections per target.
    pub connections: usize,
    /// Unary concurrencies.
    pub concurrency: Vec<usize>,
    /// Unary payload size.
    pub payload_size: usize,
    /// Stream concurrencies.
    pub stream_concurrency: Vec<usize>,
    /// Messages per streaming call.
    pub stream_count: u32,
    /// Bytes per streamed message.
    pub stream_message_size: u32,
    /// Ping-pong concurrencies.
    pub pingpong_concurrency: Vec<usize>,
    /// Idle registrations.
    pub instances: usize,
    /// Connections carrying the idle registrations.
    pub register_connections: usize,
    /// Unary callers in the registrations scenario.
    pub registrations_concurrency: usize,
    /// Registrations awaiting their Welcome at once; 0 for no bound.
    pub register_in_flight: usize,
    /// The router child of the registrations scenario; `None` is this
    /// binary.
    pub router_exe: Option<PathBuf>,
    /// Extra unary targets.
    pub extra_targets: Vec<ExtraTarget>,
    /// Direct server address.
    pub direct_listen: SocketAddr,
    /// Targets to run; empty runs all.
    pub only: Vec<String>,
    /// Whether `dynamic+metrics` runs too.
    pub metrics: bool,
}

impl Settings {
    /// Whether the target named `name` runs.
    pub fn runs_target(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }
}

/// Runs the scenarios and prints the report (`threads`: the runtime's
/// worker threads, for the report).
pub async fn run(settings: Settings, threads: usize) -> Result<(), BoxError> {
    let format = settings.format;
    let machine = Machine::detect();
    print!("{}", report::machine(format, &machine, &settings, threads));

    let side_by_side = settings
        .scenarios
        .iter()
        .any(|s| matches!(s, Scenario::Unary | Scenario::Stream | Scenario::Pingpong));
    if side_by_side {
        let rows = run_side_by_side(&settings).await?;
        print!(
            "{}",
            report::heading(
                format,
                "Routed (compiled router) and dynamic (DynamicRouter), in this process, vs direct"
            )
        );
        let extras: Vec<String> = settings
            .extra_targets
            .iter()
            .filter(|e| settings.runs_target(&e.name))
            .map(|e| e.name.clone())
            .collect();
        print!("{}", report::summary(format, &rows, &extras));
        print!(
            "{}",
            report::heading(format, "Details (all measured rounds together)")
        );
        print!("{}", report::details(format, &rows));
    }
    if settings.scenarios.contains(&Scenario::Registrations) {
        eprint!("registrations ({} idle instances) ", settings.instances);
        let measured = crate::registrations::run(&settings).await?;
        eprintln!();
        print!(
            "{}",
            report::heading(
                format,
                &format!(
                    "Many registrations (router in a child process, calls select `kind=real`, {}-byte unary payload)",
                    settings.payload_size
                )
            )
        );
        print!("{}", report::registrations(format, &measured));
    }
    let bullet = if format == Format::Markdown {
        "\n- "
    } else {
        "\n"
    };
    if let Some(load) = crate::machine::load_average() {
        println!("{bullet}1-minute load average at end: {load:.2}");
    }
    Ok(())
}

/// Runs the unary, stream and ping-pong scenarios that were asked for.
async fn run_side_by_side(settings: &Settings) -> Result<Vec<Row>, BoxError> {
    let direct_addr = servers::start_direct(settings.direct_listen).await?;
    let routed_server = servers::start_routed().await?;
    let dynamic_server = servers::start_dynamic(None).await?;
    let mut all: Vec<Target> = vec![
        Target::connect("direct", direct_addr, settings.connections).await?,
        Target::connect("routed", routed_server.addr, settings.connections).await?,
        Target::connect(DYNAMIC_TARGET, dynamic_server.addr, settings.connections).await?,
    ];
    let metered = if settings.metrics {
        let mut registry = router_runtime::prometheus_client::registry::Registry::default();
        let metrics = router_runtime::metrics::RouterMetrics::register(&mut registry);
        let server = servers::start_dynamic(Some(metrics)).await?;
        all.push(Target::connect(METRICS_TARGET, server.addr, settings.connections).await?);
        // A scrape a second, as Prometheus would (every 15 s by default).
        let scraper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let format = router_runtime::metrics::Format::OpenMetrics;
                std::hint::black_box(router_runtime::metrics::encode(&registry, format).ok());
            }
        });
        Some((server, scraper))
    } else {
        None
    };
    for extra in &settings.extra_targets {
        all.push(Target::connect(extra.name.clone(), extra.addr, settings.connections).await?);
    }
    let pick = |include_extras: bool| -> Vec<&Target> {
        all.iter()
            .filter(|t| {
                include_extras
                    || BUILT_IN_TARGETS.contains(&t.name.as_str())
                    || t.name == METRICS_TARGET
            })
            .filter(|t| settings.runs_target(&t.name))
            .collect()
    };
    let timing = Timing {
        rounds: settings.rounds,
        duration: settings.duration,
    };
    let stream_name = format!(
        "stream {}x{} KiB",
        settings.stream_count,
        settings.stream_message_size / 1024
    );
    let mut rows = Vec::new();
    for scenario in &settings.scenarios {
        let (name, unit, workload, concurrencies, extras) = match scenario {
            Scenario::Unary => (
                "unary",
                Unit::Calls,
                Workload::Unary {
                    payload: vec![0x5a; settings.payload_size],
                },
                &settings.concurrency,
                true,
            ),
            Scenario::Stream => (
                stream_name.as_str(),
                Unit::MiB,
                Workload::Stream {
                    count: settings.stream_count,
                    size: settings.stream_message_size,
                },
                &settings.stream_concurrency,
                false,
            ),
            Scenario::Pingpong => (
                "pingpong",
                Unit::RoundTrips,
                Workload::PingPong,
                &settings.pingpong_concurrency,
                false,
            ),
            Scenario::Registrations | Scenario::All => continue,
        };
        let progress = name.split_whitespace().next().unwrap_or(name);
        for &c in concurrencies {
            eprint!("{progress} c={c} ");
            let row = interleaved(name, unit, &pick(extras), &workload, c, timing).await?;
            eprintln!();
            rows.push(row);
        }
    }
    let stats = routed_server.router.stats();
    eprintln!(
        "router: {} calls started, {} retried",
        stats.calls_started(),
        stats.calls_retried()
    );
    let (started, retried) = dynamic_server.calls();
    eprintln!("dynamic router: {started} calls started, {retried} retried");
    routed_server.bridge.abort().await;
    dynamic_server.stop().await;
    if let Some((server, scraper)) = metered {
        scraper.abort();
        server.stop().await;
    }
    Ok(rows)
}
