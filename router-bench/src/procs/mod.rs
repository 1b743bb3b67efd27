//! `router-bench procs`: the router as deployed. Every target is a process
//! of its own with tokio's default runtime, started from the binaries next to
//! this one (or given by flags), on 127.0.0.1:
//!
//! - `direct`: the example `direct` binary (the Greeter on a plain tonic
//!   server);
//! - `routed`: the example `router` with one example `instance` registered;
//! - `daemon`: `grpc-router serve` with one `instance` registered;
//! - `nginx`: nginx `grpc_pass` (one worker) in front of `direct`;
//! - `haproxy`: HAProxy (`mode http`, HTTP/2 both sides, one thread) in
//!   front of `direct`.
//!
//! Measured in one interleaved run (per measurement, rounds alternate the
//! targets in a rotating order; the first round is a warm-up): unary
//! throughput with h2load and with a tonic client, the latency of one call at
//! a time, server streams, and bidi ping-pong. nginx, HAProxy and h2load are
//! optional: missing ones are skipped with a note.
//!
//! Every scenario is a [`plan::Plan`] of targets and measurements run by the
//! same code: this one ([`run`]) and the traffic policies' ([`policies`]).

pub mod connect;
pub mod h2load;
pub mod plan;
pub mod policies;
pub mod proxies;
pub mod table;
pub mod targets;

use std::path::PathBuf;
use std::time::Duration;

use crate::BoxError;
use crate::apps::daemon_config;
use crate::process::find_tool;
use crate::procs::h2load::Shape;
use crate::procs::plan::{Measurement, Plan};
use crate::procs::table::Labels;
use crate::report::Format;

/// The optional tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tool {
    /// nginx `grpc_pass` in front of the direct server.
    Nginx,
    /// HAProxy in front of the direct server.
    Haproxy,
    /// h2load for unary throughput.
    H2load,
}

impl Tool {
    /// The executable's name.
    pub fn exe_name(self) -> &'static str {
        match self {
            Tool::Nginx => "nginx",
            Tool::Haproxy => "haproxy",
            Tool::H2load => "h2load",
        }
    }

    /// The Debian package that provides it.
    pub fn package(self) -> &'static str {
        match self {
            Tool::Nginx => "nginx",
            Tool::Haproxy => "haproxy",
            Tool::H2load => "nghttp2-client",
        }
    }
}

/// The binaries `procs` runs; `None` looks next to this executable.
#[derive(Debug, Clone, Default)]
pub struct Exes {
    /// The example `direct` binary.
    pub direct: Option<PathBuf>,
    /// The example `router` binary.
    pub router: Option<PathBuf>,
    /// The example `instance` binary.
    pub instance: Option<PathBuf>,
    /// The `grpc-router` daemon binary.
    pub daemon: Option<PathBuf>,
    /// nginx, HAProxy and h2load given explicitly (else found on `PATH`).
    pub tools: Vec<(Tool, PathBuf)>,
}

/// What `router-bench procs` does.
#[derive(Debug, Clone)]
pub struct ProcsSettings {
    /// Rounds per measurement, the first a warm-up.
    pub rounds: u32,
    /// Time per target and round.
    pub duration: Duration,
    /// Whether `--quick` was given.
    pub quick: bool,
    /// Output format.
    pub format: Format,
    /// Binaries.
    pub exes: Exes,
    /// Optional tools not to run.
    pub skip: Vec<Tool>,
    /// Targets to run (empty: all).
    pub only: Vec<String>,
    /// h2load's connections and streams per connection.
    pub h2load: Shape,
    /// tonic unary calls in flight.
    pub unary_concurrency: usize,
    /// tonic client connections for the unary and stream measurements.
    pub connections: usize,
    /// Payload bytes of each unary request (echoed back).
    pub payload_size: usize,
    /// Concurrent server streams.
    pub stream_calls: usize,
    /// Messages per server stream.
    pub stream_count: u32,
    /// Bytes per streamed message.
    pub stream_message_size: u32,
    /// Whether to measure the daemon with every traffic policy on against
    /// the daemon with none (`--policies`, [`policies::run`]) instead.
    pub policies: bool,
    /// The policies `--policies` turns on.
    pub policy_set: Vec<policies::Policy>,
    /// Whether to compare Connect calls with gRPC calls through the same
    /// router instead (`--connect`, [`connect::run`]).
    pub connect: bool,
}

impl ProcsSettings {
    /// Whether the target named `target` runs (`direct` always does).
    pub fn runs(&self, target: &str) -> bool {
        target == "direct" || self.only.is_empty() || self.only.iter().any(|o| o == target)
    }

    /// How the measurements are shaped, for the column headers.
    pub fn labels(&self) -> Labels {
        Labels {
            h2load_connections: self.h2load.connections,
            h2load_streams: self.h2load.streams,
            unary_concurrency: self.unary_concurrency,
            stream_calls: self.stream_calls,
            stream_count: self.stream_count,
            stream_message_size: self.stream_message_size,
        }
    }

    /// The tool's executable, unless skipped or not installed (the note
    /// that says so).
    pub fn tool(&self, tool: Tool) -> Result<PathBuf, String> {
        if self.skip.contains(&tool) {
            return Err(format!("{}: skipped (--skip)", tool.exe_name()));
        }
        if let Some((_, path)) = self.exes.tools.iter().find(|(t, _)| *t == tool) {
            return Ok(path.clone());
        }
        find_tool(tool.exe_name()).ok_or_else(|| {
            format!(
                "{}: not installed, skipped (`apt-get install -y {}`)",
                tool.exe_name(),
                tool.package()
            )
        })
    }
}

/// Starts every target, measures, prints the tables; fails when any call
/// failed (after printing).
pub async fn run(settings: &ProcsSettings) -> Result<(), BoxError> {
    let exes = &settings.exes;
    let mut plan = Plan::new(settings, &Measurement::ALL);
    let direct = targets::direct(exes).await?;
    let direct_addr = direct.addr;
    plan.add(direct);
    if settings.runs("routed") {
        plan.add(targets::routed(exes).await?);
    }
    if settings.runs("daemon") {
        let config = daemon_config("procs-daemon", false);
        plan.add(targets::daemon(exes, "daemon", &config, &[], &[]).await?);
    }
    for tool in [Tool::Nginx, Tool::Haproxy] {
        if !settings.runs(tool.exe_name()) {
            continue;
        }
        match settings.tool(tool) {
            Ok(exe) => plan.add(targets::proxy(tool, &exe, direct_addr).await?),
            Err(note) => plan.note(note),
        }
    }
    let clients = plan.connect().await?;
    let results = plan.measure(&clients).await?;
    drop(clients);
    drop(plan);
    print!(
        "{}{}",
        results.tables(
            settings,
            "As deployed: every target a process of its own (tokio's default runtime), ratios against direct",
        ),
        results.footer(settings, &[])
    );
    results.verdict("procs")
}
