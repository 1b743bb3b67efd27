//! The smallest useful instance, as shown in the README: runs an ordinary
//! tonic implementation of the Greeter behind a router it dials out to.
//!
//! `cargo run -p myservice --example minimal_instance`

use myservice::greeter::GreeterImpl;
use myservice::pb::GreeterBridge;
use router_runtime::bridge::BridgeConfig;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs (connection failures and their causes) on stderr; RUST_LOG overrides `info`.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let options = BridgeConfig::new("http://127.0.0.1:50051").instance_id("instance-a");
    options.validate()?; // a bad endpoint (no `http://`) fails here, at once
    let handle = GreeterBridge::new(GreeterImpl::new("instance-a")).connect(options);
    handle.registered().await;
    println!("registered");
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await; // drain: finish the calls in flight, then leave
    Ok(())
}
