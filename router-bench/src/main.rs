//! `router-bench`: grpc-router's routed path measured side by side with a
//! direct tonic server, in interleaved rounds.
//!
//! - without a subcommand, in this process: the compiled router and a
//!   dynamic router, each with a bridge instance, against a direct tonic
//!   server (scenarios `unary`, `stream`, `pingpong`), and the router's
//!   memory and latency with many registrations (scenario `registrations`,
//!   router in a child process);
//! - `procs`: every target as deployed, each a process of its own (direct,
//!   router + instance, `grpc-router` + instance, nginx, HAProxy), measured
//!   in one interleaved run (h2load where installed); `procs --policies`
//!   measures the daemon with every traffic policy on against the daemon
//!   with none, the same way.
//!
//! The long-running checks (soak, memory after load) are `router-soak`.
//! Run `router-bench --help` for the flags; `--quick` is a smoke run.

use std::process::ExitCode;

use clap::Parser;
use router_bench::cli::bench::{Cli, Command};
use router_bench::{inprocess, procs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    router_bench::cli::main("router-bench", cli.threads, async |threads| {
        match &cli.command {
            Some(Command::ServeRouter(args)) => args.run().await,
            Some(Command::Procs(args)) => {
                let settings = args.settings()?;
                if settings.policies {
                    procs::policies::run(&settings).await
                } else if settings.connect {
                    procs::connect::run(&settings).await
                } else {
                    procs::run(&settings).await
                }
            }
            None => inprocess::run(cli.settings()?, threads).await,
        }
    })
}
