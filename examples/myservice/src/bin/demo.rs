//! The whole example in one process: a router, two instances and a client.
//!
//! `cargo run -p myservice --bin demo`
//!
//! Exits 0 when every call succeeded and both instances served calls; prints
//! the failure and exits 1 otherwise. Logs (warnings only by default, see
//! `RUST_LOG`) go to stderr.

use std::process::ExitCode;
use std::time::Duration;

use myservice::demo;

/// The whole demo must finish within this.
const DEMO_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> ExitCode {
    demo::init_tracing("warn");
    println!("grpc-router demo: one router, two instances, one client\n");
    match tokio::time::timeout(DEMO_TIMEOUT, demo::run_demo(6)).await {
        Ok(Ok(())) => {
            println!("\ndemo OK");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("\ndemo FAILED: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("\ndemo FAILED: did not finish within {DEMO_TIMEOUT:?}");
            ExitCode::FAILURE
        }
    }
}
