//! `router-soak`: long-running checks of grpc-router's router, in a child
//! process of its own with instance processes behind it.
//!
//! - `soak` runs mixed load for a long time (30 minutes by default) while
//!   instance processes join, drain and are killed, and fails on a hung call
//!   or router memory that keeps growing;
//! - `memory` measures the router child's memory after abandoned and
//!   stalled streams, with a real instance process behind it.
//!
//! Run `router-soak --help` for the flags.

use std::process::ExitCode;

use clap::Parser;
use router_bench::cli::soak::{Cli, Command};
use router_bench::{memory, soak};

fn main() -> ExitCode {
    let cli = Cli::parse();
    router_bench::cli::main("router-soak", cli.threads, async |_| match &cli.command {
        Command::Soak(args) => soak::run(&args.settings()?).await,
        Command::Memory(args) => memory::run(&args.settings()?).await,
        Command::ServeRouter(args) => args.run().await,
    })
}
