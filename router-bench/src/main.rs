//! `router-bench`: measures grpc-router's routed path side by side with a
//! direct tonic server, in one process, with real tonic clients.
//!
//! - a direct tonic server (`GreeterServer<GreeterImpl>`) on 127.0.0.1:0;
//! - a router on 127.0.0.1:0 with one bridge instance running the same
//!   `GreeterImpl` (`routed`: the compiled `GreeterRouter`);
//! - the `grpc-router` daemon's router on 127.0.0.1:0 (`daemon`: a
//!   `DynamicRouter` served by `RouterServer`, learning the service from the
//!   registration) with the same kind of bridge instance;
//! - scenarios `unary`, `stream` and `pingpong` alternate direct, routed and
//!   daemon in interleaved rounds (first round discarded), so machine noise
//!   hits all alike;
//! - scenario `registrations` runs the router in a child process (this binary's
//!   hidden `serve-router` subcommand) and reports its memory per registration
//!   and the latency with many registered instances.
//! - subcommand `memory` measures the router child's memory after abandoned
//!   and stalled streams, with a real instance process behind it;
//! - subcommand `procs` runs every target as deployed, each a process of its
//!   own (direct, router + instance, daemon + instance, nginx, HAProxy), and
//!   measures them in one interleaved run (h2load where installed);
//!   `procs --policies` measures the daemon with every traffic policy on
//!   against the daemon with none, the same way;
//! - subcommand `soak` runs mixed load for a long time (30 minutes by
//!   default) while instance processes join, drain and are killed, and fails
//!   on a hung call or router memory that keeps growing.
//!
//! Run `router-bench --help` for the flags; `--quick` is a smoke run.

mod alloc;
mod churn;
mod cli;
mod instances;
mod load;
mod machine;
mod memory;
mod procs;
mod registrations;
mod report;
mod scenarios;
mod servers;
mod soak;
mod soak_load;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::cli::{Cli, Command, Scenario, Settings};
use crate::load::Workload;
use crate::machine::Machine;
use crate::scenarios::{Row, Timing, Unit, interleaved};
use crate::servers::Target;

/// The targets every side-by-side scenario measures (extra targets run the
/// unary scenario only).
pub const BUILT_IN_TARGETS: [&str; 3] = ["direct", "routed", "daemon"];

/// The daemon's router with its metrics on (`--metrics`); it runs every
/// side-by-side scenario, like the built-in targets.
pub const METRICS_TARGET: &str = "daemon+metrics";

/// Errors of the benchmark: reported and turned into a failing exit code.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("router-bench: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match &cli.command {
        Some(Command::ServeRouter { listen, window_kib }) => {
            runtime.block_on(servers::serve_router_child(*listen, *window_kib))
        }
        Some(Command::Memory(args)) => match args.settings() {
            Ok(settings) => runtime.block_on(memory::run(&settings)),
            Err(e) => Err(e.into()),
        },
        Some(Command::Soak(args)) => match args.settings() {
            Ok(settings) => runtime.block_on(soak::run(&settings)),
            Err(e) => Err(e.into()),
        },
        Some(Command::Procs(args)) => match args.settings() {
            // Ctrl-C drops the run, and with it the guards that kill the
            // child processes.
            Ok(settings) => runtime.block_on(async {
                let run = async {
                    if settings.policies {
                        procs::policies::run(&settings).await
                    } else {
                        procs::run(&settings).await
                    }
                };
                tokio::select! {
                    done = run => done,
                    _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
                }
            }),
            Err(e) => Err(e.into()),
        },
        None => match Settings::from_cli(&cli) {
            Ok(settings) => runtime.block_on(run(settings, threads)),
            Err(e) => Err(e.into()),
        },
    };
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("router-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings, threads: usize) -> Result<(), BoxError> {
    let format = settings.format;
    let machine = Machine::detect();
    print!("{}", report::machine(format, &machine, &settings, threads));

    let side_by_side = settings
        .scenarios
        .iter()
        .any(|s| matches!(s, Scenario::Unary | Scenario::Stream | Scenario::Pingpong));
    if side_by_side {
        let rows = run_side_by_side(&settings).await?;
        print!("{}", report::heading(format, "Routed and daemon vs direct"));
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
        let measured = registrations::run(&settings).await?;
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
    let bullet = if format == cli::Format::Markdown {
        "\n- "
    } else {
        "\n"
    };
    if let Some(load) = machine::load_average() {
        println!("{bullet}1-minute load average at end: {load:.2}");
    }
    Ok(())
}

/// Runs the unary, stream and ping-pong scenarios that were asked for.
async fn run_side_by_side(settings: &Settings) -> Result<Vec<Row>, BoxError> {
    let direct_addr = servers::start_direct(settings.direct_listen).await?;
    let routed_server = servers::start_routed().await?;
    let daemon_server = servers::start_daemon().await?;
    let mut all: Vec<Target> = vec![
        Target::connect("direct", direct_addr, settings.connections).await?,
        Target::connect("routed", routed_server.addr, settings.connections).await?,
        Target::connect("daemon", daemon_server.addr, settings.connections).await?,
    ];
    let metered = if settings.metrics {
        let mut registry = router_runtime::prometheus_client::registry::Registry::default();
        let metrics = router_runtime::metrics::RouterMetrics::register(&mut registry);
        let server = servers::start_daemon_with(Some(metrics)).await?;
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
    let mut rows = Vec::new();
    for scenario in &settings.scenarios {
        match scenario {
            Scenario::Unary => {
                let workload = Workload::Unary {
                    payload: vec![0x5a; settings.payload_size],
                };
                for &c in &settings.concurrency {
                    eprint!("unary c={c} ");
                    let row = interleaved(
                        "unary",
                        Unit::Calls,
                        &pick(true),
                        &workload,
                        c,
                        timing,
                        None,
                    )
                    .await?;
                    eprintln!();
                    rows.push(row);
                }
            }
            Scenario::Stream => {
                let workload = Workload::Stream {
                    count: settings.stream_count,
                    size: settings.stream_message_size,
                };
                let name = format!(
                    "stream {}x{} KiB",
                    settings.stream_count,
                    settings.stream_message_size / 1024
                );
                for &c in &settings.stream_concurrency {
                    eprint!("stream c={c} ");
                    let row =
                        interleaved(&name, Unit::MiB, &pick(false), &workload, c, timing, None)
                            .await?;
                    eprintln!();
                    rows.push(row);
                }
            }
            Scenario::Pingpong => {
                for &c in &settings.pingpong_concurrency {
                    eprint!("pingpong c={c} ");
                    let row = interleaved(
                        "pingpong",
                        Unit::RoundTrips,
                        &pick(false),
                        &Workload::PingPong,
                        c,
                        timing,
                        None,
                    )
                    .await?;
                    eprintln!();
                    rows.push(row);
                }
            }
            Scenario::Registrations | Scenario::All => {}
        }
    }
    let stats = routed_server.router.stats();
    eprintln!(
        "router: {} calls started, {} retried",
        stats.calls_started(),
        stats.calls_retried()
    );
    let (started, retried) = daemon_server.calls();
    eprintln!("daemon router: {started} calls started, {retried} retried");
    routed_server.bridge.abort().await;
    daemon_server.stop().await;
    if let Some((server, scraper)) = metered {
        scraper.abort();
        server.stop().await;
    }
    Ok(rows)
}
