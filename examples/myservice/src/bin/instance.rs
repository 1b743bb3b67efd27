//! A Greeter instance: runs `GreeterImpl` through the generated
//! `GreeterBridge`, which dials out to each router and registers. Ctrl-C or
//! SIGTERM drains the calls in flight and leaves.
//!
//! Prints `registered as <id>` on stdout once a router accepted it; logs go to
//! stderr (`RUST_LOG`).

use std::process::ExitCode;

use clap::Parser;
use myservice_example::demo;
use router_runtime::bridge::BridgeConfig;

/// Serves myservice.v1.Greeter through routers it dials out to.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Router to register with (repeatable: registers with each).
    #[arg(long = "router", default_value = "http://127.0.0.1:50051")]
    routers: Vec<String>,
    /// This instance's id [default: a random one].
    #[arg(long)]
    id: Option<String>,
    /// A label routers can select on, as key=value (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Weight for the weighted strategy.
    #[arg(long, default_value_t = 1)]
    weight: u32,
    /// Re-resolve each router's host name this often (seconds) and register
    /// with every address it resolves to (a router fleet behind one DNS name).
    #[arg(long)]
    resolve_every_secs: Option<u64>,
}

fn parse_label(label: &str) -> Result<(String, String), String> {
    match label.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected key=value, got {label:?}")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    demo::init_tracing("info");
    let args = Args::parse();
    let mut routers = args.routers.into_iter();
    let Some(first) = routers.next() else {
        eprintln!("instance: give at least one --router");
        return ExitCode::FAILURE;
    };
    let mut options = routers.fold(BridgeConfig::new(first), BridgeConfig::endpoint);
    if let Some(id) = args.id {
        options = options.instance_id(id);
    }
    for (key, value) in args.labels {
        options = options.label(key, value);
    }
    let mut options = options.weight(args.weight);
    if let Some(secs) = args.resolve_every_secs {
        options = options.resolve_every(std::time::Duration::from_secs(secs.max(1)));
    }
    let id = options.instance_id.clone();
    if let Err(e) = options.validate() {
        eprintln!("instance: {e}");
        return ExitCode::FAILURE;
    }

    let handle = demo::start_instance(options);
    let shutdown = demo::shutdown_signal();
    tokio::pin!(shutdown);
    tokio::select! {
        () = handle.registered() => {
            println!("registered as {id}");
            shutdown.await;
        }
        () = &mut shutdown => {}
    }
    tracing::info!("{id}: draining");
    handle.shutdown().await;
    tracing::info!("{id}: left");
    ExitCode::SUCCESS
}
