//! The flags of `router-soak`: the checks that run for a while against a
//! router child process (`soak`, `memory`), and the settings they resolve to.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::cli::ServeRouterArgs;
use crate::memory::MemorySettings;
use crate::report::Format;
use crate::soak::SoakSettings;

/// Long-running checks of grpc-router's router, in a child process of its
/// own with instance processes behind it: a soak under instance churn, and
/// the memory it keeps after hostile load.
#[derive(Debug, Parser)]
#[command(name = "router-soak", version)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,

    /// Tokio worker threads [default: the number of CPUs].
    #[arg(long, global = true)]
    pub threads: Option<usize>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mixed load for a long time while instances join, drain and are
    /// killed; fails when a call hangs or the router's RSS keeps growing.
    Soak(SoakArgs),
    /// The router's memory after load: idle, thousands of abandoned streams,
    /// hundreds of stalled ones (router and instance in processes of their
    /// own; RSS from /proc).
    Memory(MemoryArgs),
    /// Serves a Greeter router, prints its bound address on stdout and exits
    /// when stdin closes: the router child `soak` and `memory` start.
    #[command(hide = true)]
    ServeRouter(ServeRouterArgs),
}

/// Flags of `router-soak soak`.
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
    /// A `router-soak` (or `router-bench`) binary to run as the router, as
    /// `serve-router`, or a `grpc-router` binary (run as `serve`) [default:
    /// this one].
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

/// Flags of `router-soak memory`.
#[derive(Debug, Clone, Args)]
pub struct MemoryArgs {
    /// A `router-soak` (or `router-bench`) binary to run as the router,
    /// as `serve-router` (repeatable, one column each; for example builds
    /// with `--features mimalloc` or `--no-default-features`), or a
    /// `grpc-router` daemon binary (run as `serve`) [default: this binary].
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soak_takes_fractional_minutes() {
        let cli = Cli::parse_from(["router-soak", "soak", "--minutes", "0.3"]);
        let Command::Soak(args) = cli.command else {
            panic!("expected the soak subcommand");
        };
        let s = args.settings().expect("settings");
        assert_eq!(s.duration, Duration::from_secs(18));
        assert!(s.churn_every < s.duration);
        let bad = Cli::parse_from(["router-soak", "soak", "--minutes", "0"]);
        let Command::Soak(args) = bad.command else {
            panic!("expected the soak subcommand");
        };
        assert!(args.settings().is_err());
    }

    #[test]
    fn memory_needs_positive_counts() {
        let cli = Cli::parse_from(["router-soak", "memory", "--connections", "0"]);
        let Command::Memory(args) = cli.command else {
            panic!("expected the memory subcommand");
        };
        assert!(args.settings().is_err());
    }
}
