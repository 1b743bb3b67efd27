//! The Greeter router: serves `myservice.v1.Greeter` to ordinary gRPC clients
//! and forwards each call to an instance registered on the same port, with
//! `grpc.health.v1` and server reflection alongside.
//!
//! Prints `listening on <addr>` on stdout once bound (so `--listen
//! 127.0.0.1:0` works from scripts); logs go to stderr (`RUST_LOG`).

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use myservice::demo::{self, Error};
use myservice::pb::GreeterRouter;
use router_runtime::codegen::Strategy;
use router_runtime::router::{ConcurrencyQueue, RouterConfig};
use tokio::net::TcpListener;

/// jemalloc returns the memory of released calls to the system (after its
/// decay time); glibc's malloc keeps most of it (`router-bench memory`).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Routes myservice.v1.Greeter calls to registered instances.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on, for clients and instances alike (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Balancing strategy: round-robin, p2c, weighted or consistent-hash
    /// [default: the service's, p2c].
    #[arg(long, value_parser = demo::parse_strategy)]
    strategy: Option<Strategy>,
    /// Largest request message, in bytes [default: 4194304].
    #[arg(long)]
    max_message_size: Option<usize>,
    /// Largest response message, in bytes, the router reassembles and
    /// forwards [default: 64 MiB; below it the client's receive limit
    /// applies, as in a direct call].
    #[arg(long)]
    max_response_message_size: Option<usize>,
    /// Compress responses with these encodings for clients that accept one
    /// (comma-separated: gzip, deflate, zstd) [default: none]. Compressed
    /// requests in any of the three are always accepted.
    #[arg(long, value_delimiter = ',', value_parser = demo::parse_compression)]
    compress_responses: Vec<tonic::codec::CompressionEncoding>,
    /// Metadata header whose value is the routing key for consistent-hash
    /// when a method has no `route_key` field (for example x-tenant).
    #[arg(long)]
    route_key_header: Option<String>,
    /// How often to ping each instance, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    heartbeat_interval_ms: u64,
    /// After how many milliseconds of silence an instance is dropped.
    #[arg(long, default_value_t = 30_000)]
    heartbeat_timeout_ms: u64,
    /// Serve TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Accept only registrations whose `Register` call carries
    /// `authorization: Bearer TOKEN` (others get UNAUTHENTICATED).
    #[arg(long)]
    register_token: Option<String>,
    /// At most this many calls in flight at once (`max_concurrent_calls`);
    /// past it a call fails RESOURCE_EXHAUSTED, or waits with
    /// --concurrency-queue-ms [default: no limit].
    #[arg(long)]
    max_concurrent_calls: Option<std::num::NonZeroU32>,
    /// A call over --max-concurrent-calls waits up to this many milliseconds
    /// for a slot, in a queue of at most 1024 calls [default: it fails at once].
    #[arg(long, requires = "max_concurrent_calls")]
    concurrency_queue_ms: Option<u64>,
}

#[tokio::main]
async fn main() -> ExitCode {
    demo::init_tracing("info");
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("router: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Error> {
    let mut config = RouterConfig {
        strategy: args.strategy,
        route_key_header: args.route_key_header,
        heartbeat_interval: std::time::Duration::from_millis(args.heartbeat_interval_ms),
        heartbeat_timeout: std::time::Duration::from_millis(args.heartbeat_timeout_ms),
        send_compression: args.compress_responses,
        ..RouterConfig::default()
    };
    if let Some(limit) = args.max_response_message_size {
        config.max_response_message_size = limit;
    }
    if let Some(limit) = args.max_message_size {
        config.max_message_size = limit;
    }
    config.concurrency.service = args.max_concurrent_calls;
    config.concurrency.queue = args.concurrency_queue_ms.map(|ms| ConcurrencyQueue {
        timeout: std::time::Duration::from_millis(ms),
        max_waiting: 1024,
    });
    if let Some(token) = args.register_token {
        let expected = format!("Bearer {token}");
        config.authorize = Some(std::sync::Arc::new(move |register| {
            match register.metadata.get("authorization").map(|v| v.as_bytes()) {
                Some(value) if value == expected.as_bytes() => {
                    Ok(Some("register token".to_owned()))
                }
                Some(_) => Err(tonic::Status::unauthenticated(
                    "the register token in `authorization` is wrong",
                )),
                None => Err(tonic::Status::unauthenticated(
                    "registering needs `authorization: Bearer <token>`",
                )),
            }
        }));
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |path: &std::path::Path| {
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
            };
            let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
            Some(tonic::transport::ServerTlsConfig::new().identity(identity))
        }
        _ => None,
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let router = GreeterRouter::new(config);
    println!("listening on {}", listener.local_addr()?);
    tracing::info!(
        strategy = demo::strategy_name(router.strategy()),
        "routing {}",
        demo::SERVICE_NAME
    );
    demo::serve_router_with(router, listener, demo::shutdown_signal(), tls).await
}
