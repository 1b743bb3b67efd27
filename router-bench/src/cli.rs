//! Command-line flags, and the settings they resolve to (with `--quick`
//! defaults applied).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::memory::MemorySettings;
use crate::procs::h2load::Shape;
use crate::procs::{Exes, ProcsSettings, Tool};
use crate::soak::SoakSettings;

/// Measures grpc-router's routed path (the compiled router and the daemon's
/// dynamic router) side by side with a direct tonic server, in one process,
/// with real tonic clients.
#[derive(Debug, Parser)]
#[command(name = "router-bench", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// `memory` and `soak` run on their own; the hidden `serve-router` is the
    /// router child they and the registrations scenario start.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Scenarios to run, comma separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub scenario: Vec<Scenario>,

    /// Time measured per target and round, for example `3s` or `500ms`
    /// [default: 3s; 250ms with --quick].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Rounds per measurement; the first is a warm-up and is discarded
    /// [default: 5; 2 with --quick].
    #[arg(long)]
    pub rounds: Option<u32>,

    /// Tiny durations, 2 rounds and few instances: a smoke run of every
    /// scenario in well under 30 seconds (CI). Explicit flags still win.
    #[arg(long)]
    pub quick: bool,

    /// Output format of the result tables.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,

    /// Client connections (tonic channels) per target; workers share them
    /// round robin.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,

    /// Concurrent callers of the unary scenario, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub concurrency: Vec<usize>,

    /// Bytes of payload in each unary request (echoed in the reply).
    #[arg(long, default_value_t = 100)]
    pub payload_size: usize,

    /// Concurrent server-streaming calls of the stream scenario, comma
    /// separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub stream_concurrency: Vec<usize>,

    /// Messages per server-streaming call [default: 256; 32 with --quick].
    #[arg(long)]
    pub stream_count: Option<u32>,

    /// Payload bytes of each streamed message.
    #[arg(long, default_value_t = 64 * 1024)]
    pub stream_message_size: u32,

    /// Concurrent bidi streams of the ping-pong scenario (one message in
    /// flight on each), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub pingpong_concurrency: Vec<usize>,

    /// Idle instances the registrations scenario registers
    /// [default: 10000; 1000 with --quick].
    #[arg(long)]
    pub instances: Option<usize>,

    /// HTTP/2 connections that carry the idle registrations of the
    /// registrations scenario (each registration is one stream).
    #[arg(long, default_value_t = 16)]
    pub register_connections: usize,

    /// Concurrent unary callers while the registrations scenario measures
    /// latency.
    #[arg(long, default_value_t = 16)]
    pub registrations_concurrency: usize,

    /// Idle registrations of the registrations scenario waiting for their
    /// Welcome at once; 0 opens them all at once (a fleet reconnecting to a
    /// restarted router). A bound shows what the registrations keep without
    /// the high-water marks the burst leaves in each connection's HTTP/2
    /// buffers.
    #[arg(long, default_value_t = 0)]
    pub register_in_flight: usize,

    /// The `router-bench` binary the registrations scenario runs as its
    /// router child (as `serve-router`), for example a build with another
    /// allocator, or a script that runs one under a heap profiler
    /// [default: this binary].
    #[arg(long)]
    pub router_exe: Option<PathBuf>,

    /// An extra address to run the unary scenario against with the same
    /// clients, as `NAME=HOST:PORT` (for example an nginx `grpc_pass` in front
    /// of the direct server). Repeatable.
    #[arg(long, value_parser = parse_extra_target)]
    pub extra_target: Vec<ExtraTarget>,

    /// Address the direct server listens on (so a proxy can be pointed at it).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub direct_listen: SocketAddr,

    /// Run only these targets (`direct`, `routed`, `daemon` or an extra
    /// target's name), comma separated; for profiling one path.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,

    /// Tokio worker threads [default: the number of CPUs].
    #[arg(long)]
    pub threads: Option<usize>,

    /// Also measure `daemon+metrics`: the daemon's router recording its
    /// Prometheus metrics (encoded once a second, as a scraper would), side
    /// by side with `daemon`, to measure what the metrics cost.
    #[arg(long)]
    pub metrics: bool,
}

/// Subcommands: measurements that run the router in a process of its own.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The router's memory after load: idle, thousands of abandoned streams,
    /// hundreds of stalled ones (router and instance in processes of their
    /// own; RSS from /proc).
    Memory(MemoryArgs),
    /// Mixed load for a long time while instances join, drain and are
    /// killed; fails when a call hangs or the router's RSS keeps growing.
    Soak(SoakArgs),
    /// The router as deployed: direct, routed (`router` + `instance`),
    /// daemon (`grpc-router` + `instance`), nginx and HAProxy (in front of
    /// direct) each in processes of their own, measured in one interleaved
    /// run: unary throughput (h2load and tonic), latency one call at a time,
    /// server streams, bidi ping-pong.
    Procs(ProcsArgs),
    /// Serves a Greeter router, prints its bound address on stdout and exits
    /// when stdin closes (used by the registrations scenario, so the router's
    /// memory is measured in a process of its own).
    #[command(hide = true)]
    ServeRouter {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Each call's response window (`RouterConfig::initial_window`), KiB
        /// [default: the router's default].
        #[arg(long)]
        window_kib: Option<u32>,
    },
}

/// Flags of `router-bench memory`.
#[derive(Debug, Clone, Args)]
pub struct MemoryArgs {
    /// A `router-bench` binary to run as the router (repeatable, one column
    /// each; for example builds with `--features mimalloc` or `jemalloc`),
    /// or a `grpc-router` daemon binary (run as `serve`) [default: this
    /// binary].
    #[arg(long = "router-exe")]
    pub router_exes: Vec<PathBuf>,
    /// The example `instance` binary [default: `instance` next to this
    /// binary].
    #[arg(long)]
    pub instance_exe: Option<PathBuf>,
    /// Server streams opened, read for one message and dropped.
    #[arg(long, default_value_t = 5000)]
    pub abandoned: usize,
    /// Abandoned streams open at once.
    #[arg(long, default_value_t = 500)]
    pub abandon_concurrency: usize,
    /// Payload bytes per message of the abandoned streams.
    #[arg(long, default_value_t = 1024)]
    pub abandoned_payload: u32,
    /// Server streams held open and never read (HTTP/2 window 0).
    #[arg(long, default_value_t = 300)]
    pub stalled: usize,
    /// Payload bytes per message of the stalled streams.
    #[arg(long, default_value_t = 16 * 1024)]
    pub stalled_payload: u32,
    /// Client connections per phase.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Each call's response window in the router child, KiB [default: the
    /// router's default, 256].
    #[arg(long)]
    pub window_kib: Option<u32>,
    /// Seconds after the last release at which the RSS is read once more
    /// (allocators that return memory with a delay).
    #[arg(long, default_value_t = 15.0)]
    pub linger_secs: f64,
    /// Output format of the table.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// Flags of `router-bench soak`.
#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// How long the load runs, in minutes (fractions allowed: 0.3 is 18 s).
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    /// Instances kept registered; each churn step starts one more, then
    /// drains or kills the oldest.
    #[arg(long, default_value_t = 3)]
    pub instances: usize,
    /// Seconds between churn steps [default: a sixth of the run, 3 to 30].
    #[arg(long)]
    pub churn_every_secs: Option<f64>,
    /// Seconds between RSS samples [default: a twentieth of the run, 0.5
    /// to 10].
    #[arg(long)]
    pub sample_every_secs: Option<f64>,
    /// Unary calls per second.
    #[arg(long, default_value_t = 100.0)]
    pub unary_rate: f64,
    /// Workers per streaming kind (server, client, bidi).
    #[arg(long, default_value_t = 3)]
    pub stream_workers: usize,
    /// Client connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Router RSS growth after warm-up (least-squares trend) that fails a
    /// run of 5 minutes or more, in MiB.
    #[arg(long, default_value_t = 8.0)]
    pub max_growth_mib: f64,
    /// A `router-bench` or `grpc-router` binary to run as the router
    /// [default: this one].
    #[arg(long)]
    pub router_exe: Option<PathBuf>,
    /// The example `instance` binary [default: `instance` next to this
    /// binary].
    #[arg(long)]
    pub instance_exe: Option<PathBuf>,
    /// Output format of the tables.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// Flags of `router-bench procs`.
#[derive(Debug, Clone, Args)]
pub struct ProcsArgs {
    /// Time measured per target, measurement and round, for example `3s`
    /// [default: 3s; 200ms with --quick].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Rounds per measurement; the first is a warm-up and is discarded
    /// [default: 5; 2 with --quick].
    #[arg(long)]
    pub rounds: Option<u32>,
    /// A smoke run of a few seconds (CI). Explicit flags still win.
    #[arg(long)]
    pub quick: bool,
    /// Output format of the tables.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Measure what the traffic policies cost instead: `daemon` (no
    /// policy) against `daemon+policies` (JWT auth and an allow rule, rate
    /// limits, outlier detection, retries, a split, deadlines), direct as
    /// the baseline; unary (h2load, tonic), one call at a time, ping-pong.
    #[arg(long)]
    pub policies: bool,
    /// With `--policies`: only these policies on (`jwt`, `limits`,
    /// `outlier`, `retry`, `split`, `deadline`), comma separated, to see
    /// what each costs [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub policy_set: Vec<crate::procs::policies::Policy>,
    /// Run only these targets besides `direct` (`routed`, `daemon`, `nginx`,
    /// `haproxy`), comma separated.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Optional tools not to run even when installed, comma separated.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub skip: Vec<Tool>,
    /// h2load connections (`-c`).
    #[arg(long, default_value_t = 16)]
    pub h2load_connections: usize,
    /// h2load concurrent streams per connection (`-m`).
    #[arg(long, default_value_t = 4)]
    pub h2load_streams: usize,
    /// tonic unary calls in flight.
    #[arg(long, default_value_t = 64)]
    pub unary_concurrency: usize,
    /// tonic client connections per target for unary throughput and server
    /// streams (one call at a time and ping-pong use one).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Bytes of payload in each unary request (echoed in the reply).
    #[arg(long, default_value_t = 100)]
    pub payload_size: usize,
    /// Concurrent server-streaming calls.
    #[arg(long, default_value_t = 4)]
    pub stream_calls: usize,
    /// Messages per server-streaming call.
    #[arg(long, default_value_t = 1000)]
    pub stream_count: u32,
    /// Payload bytes of each streamed message.
    #[arg(long, default_value_t = 1024)]
    pub stream_message_size: u32,
    /// The example `direct` binary [default: next to this binary].
    #[arg(long)]
    pub direct_exe: Option<PathBuf>,
    /// The example `router` binary [default: next to this binary].
    #[arg(long)]
    pub router_exe: Option<PathBuf>,
    /// The example `instance` binary [default: next to this binary].
    #[arg(long)]
    pub instance_exe: Option<PathBuf>,
    /// The `grpc-router` binary [default: next to this binary].
    #[arg(long)]
    pub daemon_exe: Option<PathBuf>,
    /// nginx [default: found on PATH or in /usr/sbin].
    #[arg(long)]
    pub nginx: Option<PathBuf>,
    /// HAProxy [default: found on PATH or in /usr/sbin].
    #[arg(long)]
    pub haproxy: Option<PathBuf>,
    /// h2load [default: found on PATH].
    #[arg(long)]
    pub h2load: Option<PathBuf>,
}

impl ProcsArgs {
    /// The settings these flags give.
    pub fn settings(&self) -> Result<ProcsSettings, String> {
        let quick = self.quick;
        let rounds = self.rounds.unwrap_or(if quick { 2 } else { 5 });
        if rounds < 2 {
            return Err("--rounds must be at least 2 (the first round is a warm-up)".into());
        }
        let counts = [
            ("h2load-connections", self.h2load_connections),
            ("h2load-streams", self.h2load_streams),
            ("unary-concurrency", self.unary_concurrency),
            ("connections", self.connections),
            ("stream-calls", self.stream_calls),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(format!("--{name} must be positive"));
        }
        if self.stream_count == 0 {
            return Err("--stream-count must be positive".into());
        }
        if self.policies && !self.only.is_empty() {
            return Err("--only does not combine with --policies (which runs direct, daemon and daemon+policies)".into());
        }
        const TARGETS: [&str; 5] = ["direct", "routed", "daemon", "nginx", "haproxy"];
        if let Some(unknown) = self.only.iter().find(|o| !TARGETS.contains(&o.as_str())) {
            return Err(format!(
                "--only: unknown target {unknown:?} (direct, routed, daemon, nginx, haproxy)"
            ));
        }
        let tools = [
            (Tool::Nginx, &self.nginx),
            (Tool::Haproxy, &self.haproxy),
            (Tool::H2load, &self.h2load),
        ]
        .into_iter()
        .filter_map(|(tool, path)| path.clone().map(|p| (tool, p)))
        .collect();
        Ok(ProcsSettings {
            rounds,
            duration: self.duration.unwrap_or(if quick {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(3)
            }),
            quick,
            format: self.format,
            exes: Exes {
                direct: self.direct_exe.clone(),
                router: self.router_exe.clone(),
                instance: self.instance_exe.clone(),
                daemon: self.daemon_exe.clone(),
                tools,
            },
            skip: self.skip.clone(),
            only: self.only.clone(),
            h2load: Shape {
                connections: self.h2load_connections,
                streams: self.h2load_streams,
            },
            unary_concurrency: self.unary_concurrency,
            connections: self.connections,
            payload_size: self.payload_size,
            stream_calls: self.stream_calls,
            stream_count: self.stream_count,
            stream_message_size: self.stream_message_size,
            policies: self.policies,
            policy_set: if self.policy_set.is_empty() {
                crate::procs::policies::ALL.to_vec()
            } else {
                self.policy_set.clone()
            },
        })
    }
}

impl MemoryArgs {
    /// The settings these flags give.
    pub fn settings(&self) -> Result<MemorySettings, String> {
        if self.abandon_concurrency == 0 || self.connections == 0 {
            return Err("--abandon-concurrency and --connections must be positive".into());
        }
        Ok(MemorySettings {
            router_exes: self.router_exes.clone(),
            instance_exe: self.instance_exe.clone(),
            abandoned: self.abandoned,
            abandon_concurrency: self.abandon_concurrency,
            abandoned_payload: self.abandoned_payload,
            stalled: self.stalled,
            stalled_payload: self.stalled_payload,
            connections: self.connections,
            window_kib: self.window_kib,
            linger: Duration::try_from_secs_f64(self.linger_secs)
                .map_err(|e| format!("bad --linger-secs {}: {e}", self.linger_secs))?,
            format: self.format,
        })
    }
}

impl SoakArgs {
    /// The settings these flags give.
    pub fn settings(&self) -> Result<SoakSettings, String> {
        let secs = |name: &str, value: f64| {
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("--{name} must be a positive number, got {value}"))
        };
        let duration = secs("minutes", self.minutes * 60.0)?;
        let (churn, sample) = SoakSettings::intervals(duration);
        let churn_every = match self.churn_every_secs {
            Some(v) => secs("churn-every-secs", v)?,
            None => churn,
        };
        let sample_every = match self.sample_every_secs {
            Some(v) => secs("sample-every-secs", v)?,
            None => sample,
        };
        if self.instances == 0 || self.connections == 0 {
            return Err("--instances and --connections must be positive".into());
        }
        if !(self.unary_rate > 0.0 && self.unary_rate.is_finite()) {
            return Err(format!(
                "--unary-rate must be positive, got {}",
                self.unary_rate
            ));
        }
        if !(self.max_growth_mib >= 0.0 && self.max_growth_mib.is_finite()) {
            return Err(format!(
                "--max-growth-mib must be 0 or more, got {}",
                self.max_growth_mib
            ));
        }
        Ok(SoakSettings {
            duration,
            instances: self.instances,
            churn_every,
            sample_every,
            unary_rate: self.unary_rate,
            stream_workers: self.stream_workers,
            connections: self.connections,
            max_growth_kib: (self.max_growth_mib * 1024.0) as u64,
            router_exe: self.router_exe.clone(),
            instance_exe: self.instance_exe.clone(),
            format: self.format,
        })
    }
}

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Every scenario below.
    All,
    /// SayHello with a small payload at several concurrencies.
    Unary,
    /// StreamGreetings of large messages.
    Stream,
    /// Chat with one message in flight per stream.
    Pingpong,
    /// Latency and router memory with many registered instances.
    Registrations,
}

/// How result tables are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned plain text.
    Table,
    /// Markdown tables, ready to paste into the README.
    Markdown,
}

/// An extra unary target: a name and an address.
#[derive(Debug, Clone)]
pub struct ExtraTarget {
    /// The column name.
    pub name: String,
    /// Where to connect.
    pub addr: SocketAddr,
}

fn parse_extra_target(text: &str) -> Result<ExtraTarget, String> {
    let (name, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=HOST:PORT, got {text:?}"))?;
    let name = name.trim();
    if name.is_empty() || crate::BUILT_IN_TARGETS.contains(&name) {
        return Err(format!(
            "extra target name must be non-empty and not `direct`, `routed` or `daemon`, got {name:?}"
        ));
    }
    let addr = addr
        .trim()
        .parse()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?;
    Ok(ExtraTarget {
        name: name.to_owned(),
        addr,
    })
}

/// Parses `3s`, `500ms`, `2m` or a plain number of seconds (`1.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {text:?} (try 3s or 500ms)"))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("duration must be positive, got {text:?}"));
    }
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("bad duration {text:?}: {e}"))
}

/// The flags with defaults resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Scenarios to run, in order, without duplicates.
    pub scenarios: Vec<Scenario>,
    /// Measured time per target and round.
    pub duration: Duration,
    /// Rounds, the first being a warm-up.
    pub rounds: u32,
    /// Whether `--quick` was given.
    pub quick: bool,
    /// Output format.
    pub format: Format,
    /// Client connections per target.
    pub connections: usize,
    /// Unary concurrencies.
    pub concurrency: Vec<usize>,
    /// Unary payload size.
    pub payload_size: usize,
    /// Stream concurrencies.
    pub stream_concurrency: Vec<usize>,
    /// Messages per streaming call.
    pub stream_count: u32,
    /// Bytes per streamed message.
    pub stream_message_size: u32,
    /// Ping-pong concurrencies.
    pub pingpong_concurrency: Vec<usize>,
    /// Idle registrations.
    pub instances: usize,
    /// Connections carrying the idle registrations.
    pub register_connections: usize,
    /// Unary callers in the registrations scenario.
    pub registrations_concurrency: usize,
    /// Registrations awaiting their Welcome at once; 0 for no bound.
    pub register_in_flight: usize,
    /// The router child of the registrations scenario; `None` is this
    /// binary.
    pub router_exe: Option<PathBuf>,
    /// Extra unary targets.
    pub extra_targets: Vec<ExtraTarget>,
    /// Direct server address.
    pub direct_listen: SocketAddr,
    /// Targets to run; empty runs all.
    pub only: Vec<String>,
    /// Whether `daemon+metrics` runs too.
    pub metrics: bool,
}

impl Settings {
    /// Resolves `cli` (everything but the subcommand and thread count).
    pub fn from_cli(cli: &Cli) -> Result<Settings, String> {
        let quick = cli.quick;
        let mut scenarios = Vec::new();
        for scenario in &cli.scenario {
            let expanded: &[Scenario] = match scenario {
                Scenario::All => &[
                    Scenario::Unary,
                    Scenario::Stream,
                    Scenario::Pingpong,
                    Scenario::Registrations,
                ],
                other => std::slice::from_ref(other),
            };
            for s in expanded {
                if !scenarios.contains(s) {
                    scenarios.push(*s);
                }
            }
        }
        let rounds = cli.rounds.unwrap_or(if quick { 2 } else { 5 });
        if rounds < 2 {
            return Err("--rounds must be at least 2 (the first round is a warm-up)".into());
        }
        let positive = |name: &str, values: &[usize]| {
            if values.is_empty() || values.contains(&0) {
                Err(format!("--{name} needs positive values"))
            } else {
                Ok(values.to_vec())
            }
        };
        if cli.connections == 0 || cli.register_connections == 0 {
            return Err("--connections and --register-connections must be positive".into());
        }
        if cli.registrations_concurrency == 0 {
            return Err("--registrations-concurrency must be positive".into());
        }
        Ok(Settings {
            scenarios,
            duration: cli.duration.unwrap_or(if quick {
                Duration::from_millis(250)
            } else {
                Duration::from_secs(3)
            }),
            rounds,
            quick,
            format: cli.format,
            connections: cli.connections,
            concurrency: positive("concurrency", &cli.concurrency)?,
            payload_size: cli.payload_size,
            stream_concurrency: positive("stream-concurrency", &cli.stream_concurrency)?,
            stream_count: cli.stream_count.unwrap_or(if quick { 32 } else { 256 }),
            stream_message_size: cli.stream_message_size,
            pingpong_concurrency: positive("pingpong-concurrency", &cli.pingpong_concurrency)?,
            instances: cli.instances.unwrap_or(if quick { 1000 } else { 10_000 }),
            register_connections: cli.register_connections,
            registrations_concurrency: cli.registrations_concurrency,
            register_in_flight: cli.register_in_flight,
            router_exe: cli.router_exe.clone(),
            extra_targets: cli.extra_target.clone(),
            direct_listen: cli.direct_listen,
            only: cli.only.clone(),
            metrics: cli.metrics,
        })
    }

    /// Whether the target named `name` runs.
    pub fn runs_target(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn extra_targets_parse() {
        let t = parse_extra_target("nginx=127.0.0.1:8080");
        assert!(matches!(t, Ok(ExtraTarget { ref name, .. }) if name == "nginx"));
        assert!(parse_extra_target("routed=127.0.0.1:1").is_err());
        assert!(parse_extra_target("daemon=127.0.0.1:1").is_err());
        assert!(parse_extra_target("127.0.0.1:1").is_err());
    }

    #[test]
    fn quick_defaults() {
        let cli = Cli::parse_from(["router-bench", "--quick"]);
        let s = Settings::from_cli(&cli).expect("settings");
        assert_eq!(s.rounds, 2);
        assert_eq!(s.instances, 1000);
        assert_eq!(s.scenarios.len(), 4);
    }

    #[test]
    fn procs_quick_defaults_and_checks() {
        let cli = Cli::parse_from(["router-bench", "procs", "--quick", "--skip", "nginx,h2load"]);
        let Some(Command::Procs(args)) = cli.command else {
            panic!("expected the procs subcommand");
        };
        let s = args.settings().expect("settings");
        assert_eq!(s.rounds, 2);
        assert_eq!(s.duration, Duration::from_millis(200));
        assert_eq!(s.skip, [Tool::Nginx, Tool::H2load]);
        assert_eq!((s.h2load.connections, s.h2load.streams), (16, 4));
        let full = Cli::parse_from(["router-bench", "procs"]);
        let Some(Command::Procs(args)) = full.command else {
            panic!("expected the procs subcommand");
        };
        let s = args.settings().expect("settings");
        assert_eq!((s.rounds, s.duration), (5, Duration::from_secs(3)));
        let policies = Cli::parse_from(["router-bench", "procs", "--policies", "--quick"]);
        let Some(Command::Procs(args)) = policies.command else {
            panic!("expected the procs subcommand");
        };
        let s = args.settings().expect("settings");
        assert!(s.policies && s.quick);
        for bad in [
            ["router-bench", "procs", "--policies", "--only", "daemon"].as_slice(),
            ["router-bench", "procs", "--only", "envoy"].as_slice(),
            ["router-bench", "procs", "--rounds", "1"].as_slice(),
            ["router-bench", "procs", "--stream-calls", "0"].as_slice(),
        ] {
            let Some(Command::Procs(args)) = Cli::parse_from(bad).command else {
                panic!("expected the procs subcommand");
            };
            assert!(args.settings().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn soak_takes_fractional_minutes() {
        let cli = Cli::parse_from(["router-bench", "soak", "--minutes", "0.3"]);
        let Some(Command::Soak(args)) = cli.command else {
            panic!("expected the soak subcommand");
        };
        let s = args.settings().expect("settings");
        assert_eq!(s.duration, Duration::from_secs(18));
        assert!(s.churn_every < s.duration);
        let bad = Cli::parse_from(["router-bench", "soak", "--minutes", "0"]);
        let Some(Command::Soak(args)) = bad.command else {
            panic!("expected the soak subcommand");
        };
        assert!(args.settings().is_err());
    }
}
