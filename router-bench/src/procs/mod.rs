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

pub mod h2load;
pub mod policies;
pub mod process;
pub mod proxies;
pub mod table;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use myservice_example::pb::HelloRequest;

use crate::BoxError;
use crate::cli::Format;
use crate::load::Workload;
use crate::machine::{Machine, load_average};
use crate::procs::h2load::{H2loadRun, Shape};
use crate::procs::process::{Proc, TempDir, find_tool, parse_daemon_listening, parse_listening_on};
use crate::procs::proxies::Proxy;
use crate::procs::table::{Figures, Labels};
use crate::scenarios::{Measured, Row, Timing, Unit, interleaved};
use crate::servers::Target;

/// How long a process may take to print its address or register.
const START_TIMEOUT: Duration = Duration::from_secs(30);

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
}

impl ProcsSettings {
    fn runs(&self, target: &str) -> bool {
        target == "direct" || self.only.is_empty() || self.only.iter().any(|o| o == target)
    }

    fn labels(&self) -> Labels {
        Labels {
            h2load_connections: self.h2load.connections,
            h2load_streams: self.h2load.streams,
            unary_concurrency: self.unary_concurrency,
            stream_calls: self.stream_calls,
            stream_count: self.stream_count,
            stream_message_size: self.stream_message_size,
        }
    }

    /// The tool's executable, unless skipped or not installed.
    fn tool(&self, tool: Tool) -> Result<PathBuf, String> {
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

/// A binary of this workspace: `explicit`, or `name` next to this executable.
fn sibling(explicit: Option<&Path>, name: &str) -> Result<PathBuf, BoxError> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let path = std::env::current_exe()?.with_file_name(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no {name} binary at {}: build the binaries first, with the same profile as router-bench \
             (`cargo build --release -p myservice-example --bins -p grpc-router -p router-bench`), \
             or give its path with a flag",
            path.display()
        )
        .into())
    }
}

/// A child process's command with quiet logs.
fn command(exe: &Path) -> Command {
    let mut command = Command::new(exe);
    command.env("RUST_LOG", "warn");
    command
}

/// The processes behind one target, kept alive while it is measured.
struct Running {
    name: &'static str,
    addr: SocketAddr,
    /// Kept for their `Drop`: the instance first (it drains and leaves),
    /// then its router.
    _procs: Vec<Proc>,
    _proxy: Option<Proxy>,
    _dir: Option<TempDir>,
}

async fn start_direct(exe: &Path) -> Result<(Proc, SocketAddr), BoxError> {
    let mut cmd = command(exe);
    cmd.args(["--listen", "127.0.0.1:0", "--id", "direct"]);
    let mut proc = Proc::spawn("direct", cmd)?;
    let addr = proc.wait_line(START_TIMEOUT, parse_listening_on).await?;
    Ok((proc, addr))
}

async fn start_instance(
    exe: &Path,
    router: SocketAddr,
    id: &str,
    labels: &[&str],
) -> Result<Proc, BoxError> {
    let mut cmd = command(exe);
    cmd.arg("--router")
        .arg(format!("http://{router}"))
        .args(["--id", id]);
    for label in labels {
        cmd.args(["--label", label]);
    }
    let mut proc = Proc::spawn(id, cmd)?;
    let expected = format!("registered as {id}");
    proc.wait_line(START_TIMEOUT, move |line| (line == expected).then_some(()))
        .await?;
    // SIGTERM drains an instance: it leaves its router cleanly.
    Ok(proc.stop_gracefully(Duration::from_secs(3)))
}

async fn start_routed(router: &Path, instance: &Path) -> Result<Running, BoxError> {
    let mut cmd = command(router);
    cmd.args(["--listen", "127.0.0.1:0"]);
    let mut proc = Proc::spawn("router", cmd)?;
    let addr = proc.wait_line(START_TIMEOUT, parse_listening_on).await?;
    let instance = start_instance(instance, addr, "procs-routed", &[]).await?;
    Ok(Running {
        name: "routed",
        addr,
        _procs: vec![instance, proc],
        _proxy: None,
        _dir: None,
    })
}

/// The daemon's configuration: clients and registrations on one listener
/// (its default) on a free port, warnings only.
const DAEMON_CONFIG: &str =
    "router_id = \"procs-daemon\"\n[clients]\naddress = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n";

async fn start_daemon(daemon: &Path, instance: &Path) -> Result<Running, BoxError> {
    let dir = TempDir::new("daemon")?;
    let config = dir.write("router.toml", DAEMON_CONFIG.as_bytes())?;
    let mut cmd = command(daemon);
    cmd.arg("serve").arg("--config").arg(&config);
    let mut proc = Proc::spawn("grpc-router", cmd)?;
    let (clients, registrations) = proc
        .wait_line(START_TIMEOUT, parse_daemon_listening)
        .await?;
    let instance = start_instance(instance, registrations, "procs-daemon", &[]).await?;
    Ok(Running {
        name: "daemon",
        addr: clients,
        _procs: vec![instance, proc],
        _proxy: None,
        _dir: Some(dir),
    })
}

/// One SayHello through `target`, so a broken target fails before the
/// measurements, with its name.
async fn check(target: &Target, payload_size: usize) -> Result<(), BoxError> {
    let request = HelloRequest {
        name: "check".to_owned(),
        payload: vec![0x5a; payload_size],
    };
    let reply = tokio::time::timeout(START_TIMEOUT, target.client(0).say_hello(request))
        .await
        .map_err(|_| format!("{}: the first call timed out", target.name))?
        .map_err(|status| format!("{}: the first call failed: {status}", target.name))?;
    if reply.get_ref().payload.len() != payload_size {
        return Err(format!("{}: the reply does not echo the payload", target.name).into());
    }
    Ok(())
}

/// Starts every target, measures, prints the tables; fails when any call
/// failed (after printing).
pub async fn run(settings: &ProcsSettings) -> Result<(), BoxError> {
    let machine = Machine::detect();
    let exes = &settings.exes;
    let mut notes: Vec<String> = Vec::new();
    let direct_exe = sibling(exes.direct.as_deref(), "direct")?;
    let (direct_proc, direct_addr) = start_direct(&direct_exe).await?;
    let mut running = vec![Running {
        name: "direct",
        addr: direct_addr,
        _procs: vec![direct_proc],
        _proxy: None,
        _dir: None,
    }];
    if settings.runs("routed") || settings.runs("daemon") {
        let instance = sibling(exes.instance.as_deref(), "instance")?;
        if settings.runs("routed") {
            let router = sibling(exes.router.as_deref(), "router")?;
            running.push(start_routed(&router, &instance).await?);
        }
        if settings.runs("daemon") {
            let daemon = sibling(exes.daemon.as_deref(), "grpc-router")?;
            running.push(start_daemon(&daemon, &instance).await?);
        }
    }
    for (tool, name) in [(Tool::Nginx, "nginx"), (Tool::Haproxy, "haproxy")] {
        if !settings.runs(name) {
            continue;
        }
        match settings.tool(tool) {
            Ok(exe) => {
                let proxy = match tool {
                    Tool::Nginx => proxies::start_nginx(&exe, direct_addr).await?,
                    _ => proxies::start_haproxy(&exe, direct_addr).await?,
                };
                running.push(Running {
                    name,
                    addr: proxy.addr,
                    _procs: Vec::new(),
                    _proxy: Some(proxy),
                    _dir: None,
                });
            }
            Err(note) => notes.push(note),
        }
    }
    let h2load = match settings.tool(Tool::H2load) {
        Ok(exe) => Some(exe),
        Err(note) => {
            notes.push(note);
            None
        }
    };
    let names: Vec<&str> = running.iter().map(|r| r.name).collect();
    eprintln!("procs: targets {}", names.join(", "));

    // Many connections for throughput, one for one call at a time.
    let mut wide = Vec::new();
    let mut single = Vec::new();
    for r in &running {
        wide.push(Target::connect(r.name, r.addr, settings.connections).await?);
        single.push(Target::connect(r.name, r.addr, 1).await?);
    }
    for target in &single {
        check(target, settings.payload_size).await?;
    }
    let timing = Timing {
        rounds: settings.rounds,
        duration: settings.duration,
    };
    let wide_refs: Vec<&Target> = wide.iter().collect();
    let single_refs: Vec<&Target> = single.iter().collect();
    let unary = Workload::Unary {
        payload: vec![0x5a; settings.payload_size],
    };

    let h2load_totals = match &h2load {
        Some(exe) => {
            eprint!("h2load unary ");
            let totals = h2load_interleaved(exe, &running, settings, timing, &[]).await?;
            eprintln!();
            Some(totals)
        }
        None => None,
    };
    eprint!("tonic unary c={} ", settings.unary_concurrency);
    let tonic = interleaved(
        "unary",
        Unit::Calls,
        &wide_refs,
        &unary,
        settings.unary_concurrency,
        timing,
        None,
    )
    .await?;
    eprintln!();
    eprint!("unary, 1 call at a time ");
    let latency = interleaved(
        "latency",
        Unit::Calls,
        &single_refs,
        &unary,
        1,
        timing,
        None,
    )
    .await?;
    eprintln!();
    eprint!("server streams c={} ", settings.stream_calls);
    let streams = interleaved(
        "streams",
        Unit::MiB,
        &wide_refs,
        &Workload::Stream {
            count: settings.stream_count,
            size: settings.stream_message_size,
        },
        settings.stream_calls,
        timing,
        None,
    )
    .await?;
    eprintln!();
    eprint!("bidi ping-pong ");
    let pingpong = interleaved(
        "pingpong",
        Unit::RoundTrips,
        &single_refs,
        &Workload::PingPong,
        1,
        timing,
        None,
    )
    .await?;
    eprintln!();

    let mut failures = Vec::new();
    for row in [&tonic, &latency, &streams, &pingpong] {
        for m in &row.targets {
            if m.total.errors > 0 {
                failures.push(format!(
                    "{} on {}: {} failed calls, first: {}",
                    row.scenario,
                    m.target,
                    m.total.errors,
                    m.total.first_error.as_deref().unwrap_or("?")
                ));
            }
        }
    }
    let figures: Vec<Figures> = names
        .iter()
        .map(|name| {
            let of = |row: &Row| row.target(name).cloned();
            let h2 = h2load_totals
                .as_ref()
                .and_then(|t| t.iter().find(|(n, _)| n == name))
                .map(|(_, run)| run.per_sec());
            let lat: Option<Measured> = of(&latency);
            let pp: Option<Measured> = of(&pingpong);
            Figures {
                target: (*name).to_owned(),
                h2load_rps: h2,
                tonic_rps: of(&tonic).map(|m| m.throughput(Unit::Calls)),
                p50_us: lat.as_ref().map(|m| m.total.latency_us(0.5)),
                p99_us: lat.as_ref().map(|m| m.total.latency_us(0.99)),
                streams_mib: of(&streams).map(|m| m.throughput(Unit::MiB)),
                pingpong_rtps: pp.as_ref().map(|m| m.throughput(Unit::RoundTrips)),
                pingpong_p50_us: pp.as_ref().map(|m| m.total.latency_us(0.5)),
            }
        })
        .collect();
    if let Some(totals) = &h2load_totals {
        for (name, run) in totals {
            if run.failed > 0 {
                failures.push(format!("h2load on {name}: {} failed requests", run.failed));
            }
            if let Err(e) = run.check_replies(settings.payload_size) {
                failures.push(format!("h2load on {name}: {e}"));
            }
        }
    }
    drop(wide);
    drop(single);
    drop(running);

    print!("{}", render(settings, &machine, &figures, &notes));
    if failures.is_empty() {
        Ok(())
    } else {
        for f in &failures {
            eprintln!("procs: {f}");
        }
        Err(format!("{} measurements had failed calls", failures.len()).into())
    }
}

/// h2load against every target in interleaved rounds (the order rotates
/// every round, the first round is discarded), sending `headers` with each
/// request; the totals per target.
async fn h2load_interleaved(
    exe: &Path,
    running: &[Running],
    settings: &ProcsSettings,
    timing: Timing,
    headers: &[String],
) -> Result<Vec<(String, H2loadRun)>, BoxError> {
    let rounds = h2load_rounds(exe, running, settings, timing, headers).await?;
    Ok(rounds
        .into_iter()
        .map(|(name, runs)| {
            let mut total = H2loadRun::default();
            for run in &runs {
                total.merge(run);
            }
            (name, total)
        })
        .collect())
}

/// Like [`h2load_interleaved`], each measured round's run kept apart.
async fn h2load_rounds(
    exe: &Path,
    running: &[Running],
    settings: &ProcsSettings,
    timing: Timing,
    headers: &[String],
) -> Result<Vec<(String, Vec<H2loadRun>)>, BoxError> {
    let dir = TempDir::new("h2load")?;
    let body = dir.write("request.bin", &h2load::request_body(settings.payload_size))?;
    let mut rounds: Vec<(String, Vec<H2loadRun>)> = running
        .iter()
        .map(|r| (r.name.to_owned(), Vec::new()))
        .collect();
    for round in 0..timing.rounds {
        for k in 0..running.len() {
            let index = (k + round as usize) % running.len();
            let target = &running[index];
            let run = h2load::run(
                exe,
                target.addr,
                &body,
                settings.h2load,
                timing.duration,
                headers,
            )
            .await
            .map_err(|e| format!("h2load on {}: {e}", target.name))?;
            if round > 0 {
                rounds[index].1.push(run);
            }
        }
        eprint!(".");
    }
    Ok(rounds)
}

fn render(
    settings: &ProcsSettings,
    machine: &Machine,
    figures: &[Figures],
    notes: &[String],
) -> String {
    let format = settings.format;
    let bullet = if format == Format::Markdown { "- " } else { "" };
    let labels = settings.labels();
    let mut out = crate::report::heading(
        format,
        "As deployed: every target a process of its own (tokio's default runtime), ratios against direct",
    );
    out.push_str(&table::ratio_table(format, figures, &labels));
    out.push_str(&crate::report::heading(format, "Absolute numbers"));
    out.push_str(&table::absolute_table(format, figures, &labels));
    out.push('\n');
    let _ = writeln!(
        out,
        "{bullet}machine: {} ({} CPUs); 1-minute load average at start {}, at end {}",
        machine.cpu_model,
        machine.cpus,
        machine
            .load_at_start
            .map_or_else(|| "?".to_owned(), |l| format!("{l:.2}")),
        load_average().map_or_else(|| "?".to_owned(), |l| format!("{l:.2}")),
    );
    let _ = writeln!(
        out,
        "{bullet}{} rounds × {:?} per target and measurement (first round discarded, targets interleaved, order rotated each round){}",
        settings.rounds,
        settings.duration,
        if settings.quick { "; --quick" } else { "" }
    );
    let _ = writeln!(
        out,
        "{bullet}unary: SayHello with a {}-byte payload (echoed); tonic clients over {} connections; 1 call at a time over 1 connection; ping-pong: one Chat stream, one message in flight",
        settings.payload_size, settings.connections
    );
    for note in notes {
        let _ = writeln!(out, "{bullet}{note}");
    }
    out
}
