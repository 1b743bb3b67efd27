//! A Greeter instance: runs `GreeterImpl` through the generated
//! `GreeterBridge`, which dials out to each router and registers. Ctrl-C or
//! SIGTERM drains the calls in flight and leaves.
//!
//! Prints `registered as <id>` on stdout once a router accepted it; logs go to
//! stderr (`RUST_LOG`). Built with the `otel` feature, it exports its call
//! spans over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
//! (`myservice::otlp`).

use std::process::ExitCode;

use clap::Parser;
use myservice::demo;
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
    /// PEM CA bundle that signed the routers' certificates (dial `https://`
    /// routers over TLS).
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// The name the routers' certificates are checked against [default: the
    /// endpoint's host].
    #[arg(long)]
    tls_domain: Option<String>,
    /// PEM client certificate (with `--tls-key`): mutual TLS, e.g. for a
    /// router that checks `instance_sans`.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Registration token, sent as `authorization: Bearer <token>` (for a
    /// router with `registrations.tokens_sha256`).
    #[arg(long, env = "GRPC_ROUTER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Run every call on a task of its own from the start, instead of its
    /// first poll on the registration's reader (for comparisons; see
    /// `BridgeConfig::inline_first_poll`).
    #[arg(long)]
    spawn_every_call: bool,
}

/// The client TLS settings the flags ask for, or `None` for plain TCP.
fn tls(args: &Args) -> Result<Option<tonic::transport::ClientTlsConfig>, String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let Some(ca) = &args.tls_ca else {
        return match args.tls_cert {
            Some(_) => {
                Err("--tls-cert needs --tls-ca (the CA of the routers' certificates)".into())
            }
            None => Ok(None),
        };
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
    if let Some(domain) = &args.tls_domain {
        tls = tls.domain_name(domain.clone());
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(Some(tls))
}

fn parse_label(label: &str) -> Result<(String, String), String> {
    match label.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected key=value, got {label:?}")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    #[cfg(feature = "otel")]
    let traces = match myservice::otlp::init("info") {
        Ok(traces) => traces,
        Err(e) => {
            eprintln!("instance: {e}");
            return ExitCode::FAILURE;
        }
    };
    #[cfg(not(feature = "otel"))]
    demo::init_tracing("info");
    let tls = match tls(&args) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("instance: {e}");
            return ExitCode::FAILURE;
        }
    };
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
    let mut options = options
        .weight(args.weight)
        .inline_first_poll(!args.spawn_every_call);
    if let Some(secs) = args.resolve_every_secs {
        options = options.resolve_every(std::time::Duration::from_secs(secs.max(1)));
    }
    if let Some(tls) = tls {
        options = options.tls(tls);
    }
    if let Some(token) = &args.token {
        options = match options.register_header("authorization", &format!("Bearer {token}")) {
            Ok(options) => options,
            Err(_) => {
                eprintln!("instance: --token must be printable ASCII");
                return ExitCode::FAILURE;
            }
        };
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
    #[cfg(feature = "otel")]
    if let Some(traces) = traces {
        traces.shutdown();
    }
    ExitCode::SUCCESS
}
