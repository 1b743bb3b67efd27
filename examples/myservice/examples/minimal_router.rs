//! The smallest useful router, as shown in the README: serves
//! `myservice.v1.Greeter` to ordinary clients and the register endpoint to
//! instances on one port, with `grpc.health.v1`, gRPC server reflection (from
//! the generated descriptor set), the admin service, TCP_NODELAY and a
//! graceful shutdown on Ctrl-C or SIGTERM.
//!
//! `cargo run -p myservice --example minimal_router`

use myservice::pb::GreeterRouter;
use router_runtime::router::RouterConfig;
use router_runtime::server::{Listener, RouterServer, shutdown_signal};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs (registrations, lost instances) on stderr; RUST_LOG overrides `info`.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let router = GreeterRouter::new(RouterConfig::default());
    let listener = Listener::bind("127.0.0.1:50051".parse()?).await?;
    RouterServer::new("router-1")
        .route(&router)
        .serve(listener, None, shutdown_signal())
        .await?;
    Ok(())
}
