//! The Greeter served directly, without a router: the same `GreeterImpl` an
//! `instance` runs, on an ordinary tonic server, for side-by-side comparisons
//! of routed and direct calls (`.ci/interop.sh`).
//!
//! Prints `listening on <addr>` on stdout once bound; logs go to stderr
//! (`RUST_LOG`).

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use myservice::demo::{self, Error};
use myservice::greeter::GreeterImpl;
use myservice::pb::greeter_server::GreeterServer;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;

/// Serves myservice.v1.Greeter directly (no router), accepting gzip, deflate
/// and zstd requests.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:50061")]
    listen: SocketAddr,
    /// The instance id the Greeter reports.
    #[arg(long, default_value = "direct")]
    id: String,
    /// Compress responses with these encodings for clients that accept one
    /// (comma-separated: gzip, deflate, zstd).
    #[arg(long, value_delimiter = ',', value_parser = demo::parse_compression)]
    compress_responses: Vec<CompressionEncoding>,
}

#[tokio::main]
async fn main() -> ExitCode {
    demo::init_tracing("info");
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("direct: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Error> {
    let mut server = GreeterServer::new(GreeterImpl::new(args.id));
    for encoding in demo::ALL_COMPRESSION {
        server = server.accept_compressed(encoding);
    }
    for encoding in args.compress_responses {
        server = server.send_compressed(encoding);
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    println!("listening on {}", listener.local_addr()?);
    // Nagle's algorithm off, as the router's listener has it (and tonic's own
    // `serve`): without it small gRPC frames wait for delayed ACKs, and a
    // side-by-side comparison (`router-bench procs`) would measure that.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(server)
        .serve_with_incoming_shutdown(incoming, demo::shutdown_signal())
        .await?;
    Ok(())
}
