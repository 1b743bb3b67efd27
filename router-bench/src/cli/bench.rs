//! The flags of `router-bench`, and the settings they resolve to (with
//! `--quick` defaults applied).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::cli::{ServeRouterArgs, parse_duration};
use crate::inprocess::{
    BUILT_IN_TARGETS, DYNAMIC_TARGET, ExtraTarget, METRICS_TARGET, Scenario, Settings,
};
use crate::procs::h2load::Shape;
use crate::procs::{Exes, ProcsSettings, Tool};
use crate::report::Format;

/// Measures grpc-router's routed path side by side with a direct tonic
/// server: in one process, the compiled router and a dynamic router
/// (without a subcommand); or as deployed, every target a process of its
/// own (`procs`).
#[derive(Debug, Parser)]
#[command(name = "router-bench", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// `procs` measures every target as a process of its own; the hidden
    /// `serve-router` is the router child of the registrations scenario.
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

    /// The `router-bench` (or `router-soak`) binary the registrations
    /// scenario runs as its router child (as `serve-router`), for example a
    /// build with another allocator, or a script that runs one under a heap
    /// profiler [default: this binary].
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

    /// Run only these targets (`direct`, `routed`, `dynamic`,
    /// `dynamic+metrics` or an extra target's name), comma separated; for
    /// profiling one path.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,

    /// Tokio worker threads [default: the number of CPUs].
    #[arg(long)]
    pub threads: Option<usize>,

    /// Also measure `dynamic+metrics`: the in-process dynamic router
    /// recording its Prometheus metrics (encoded once a second, as a scraper
    /// would), side by side with `dynamic`, to measure what the metrics cost.
    #[arg(long)]
    pub metrics: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The router as deployed: direct, routed (`router` + `instance`),
    /// daemon (`grpc-router` + `instance`), nginx and HAProxy (in front of
    /// direct) each in processes of their own, measured in one interleaved
    /// run: unary throughput (h2load and tonic), latency one call at a time,
    /// server streams, bidi ping-pong.
    Procs(Box<ProcsArgs>),
    /// Serves a Greeter router, prints its bound address on stdout and exits
    /// when stdin closes (used by the registrations scenario, so the router's
    /// memory is measured in a process of its own).
    #[command(hide = true)]
    ServeRouter(ServeRouterArgs),
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
    /// Compare Connect calls (unary JSON over HTTP/1.1 and HTTP/2, unary
    /// protobuf over HTTP/1.1) with gRPC calls through the same router
    /// (the example `router` with one `instance`), one call at a time.
    #[arg(long, conflicts_with = "policies")]
    pub connect: bool,
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
            connect: self.connect,
            policy_set: if self.policy_set.is_empty() {
                crate::procs::policies::ALL.to_vec()
            } else {
                self.policy_set.clone()
            },
        })
    }
}

fn parse_extra_target(text: &str) -> Result<ExtraTarget, String> {
    let (name, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=HOST:PORT, got {text:?}"))?;
    let name = name.trim();
    if name.is_empty() || BUILT_IN_TARGETS.contains(&name) || name == METRICS_TARGET {
        return Err(format!(
            "extra target name must be non-empty and not `direct`, `routed`, `dynamic` or `dynamic+metrics`, got {name:?}"
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

impl Cli {
    /// The in-process bench's settings (everything but the subcommand and
    /// thread count).
    pub fn settings(&self) -> Result<Settings, String> {
        let cli = self;
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
        let known = |name: &str| {
            BUILT_IN_TARGETS.contains(&name)
                || name == METRICS_TARGET
                || cli.extra_target.iter().any(|e| e.name == name)
        };
        if let Some(unknown) = cli.only.iter().find(|o| !known(o)) {
            let hint = if unknown == "daemon" {
                format!(
                    "; the in-process dynamic router is `{DYNAMIC_TARGET}`, the real grpc-router daemon runs in `router-bench procs`"
                )
            } else {
                String::new()
            };
            return Err(format!(
                "--only: unknown target {unknown:?} (direct, routed, {DYNAMIC_TARGET}, {METRICS_TARGET} or an --extra-target name){hint}"
            ));
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_targets_parse() {
        let t = parse_extra_target("nginx=127.0.0.1:8080");
        assert!(matches!(t, Ok(ExtraTarget { ref name, .. }) if name == "nginx"));
        assert!(parse_extra_target("routed=127.0.0.1:1").is_err());
        assert!(parse_extra_target("dynamic=127.0.0.1:1").is_err());
        // A real grpc-router started by hand may be called `daemon`.
        assert!(parse_extra_target("daemon=127.0.0.1:1").is_ok());
        assert!(parse_extra_target("127.0.0.1:1").is_err());
    }

    #[test]
    fn quick_defaults() {
        let cli = Cli::parse_from(["router-bench", "--quick"]);
        let s = cli.settings().expect("settings");
        assert_eq!(s.rounds, 2);
        assert_eq!(s.instances, 1000);
        assert_eq!(s.scenarios.len(), 4);
    }

    #[test]
    fn only_names_a_target_that_runs_in_this_process() {
        let ok = Cli::parse_from(["router-bench", "--only", "direct,dynamic+metrics"]);
        assert!(ok.settings().is_ok());
        let extra = Cli::parse_from([
            "router-bench",
            "--extra-target",
            "nginx=127.0.0.1:1",
            "--only",
            "nginx",
        ]);
        assert!(extra.settings().is_ok());
        let daemon = Cli::parse_from(["router-bench", "--only", "daemon"]);
        let error = daemon.settings().expect_err("no in-process daemon");
        assert!(error.contains("router-bench procs"), "{error}");
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
}
