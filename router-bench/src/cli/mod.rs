//! The command lines of the package's two binaries (`bench`: `router-bench`;
//! `soak`: `router-soak`), what they share, and [`main`], which runs either.

pub mod bench;
pub mod soak;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::BoxError;

/// Flags of the hidden `serve-router` subcommand of both binaries: the
/// router a [`RouterChild`](crate::router_child::RouterChild) runs.
#[derive(Debug, Clone, Args)]
pub struct ServeRouterArgs {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Each call's response window (`RouterConfig::initial_window`), KiB
    /// [default: the router's default].
    #[arg(long)]
    pub window_kib: Option<u32>,
}

impl ServeRouterArgs {
    /// Serves until stdin closes.
    pub async fn run(&self) -> Result<(), BoxError> {
        crate::servers::serve_router_child(self.listen, self.window_kib).await
    }
}

/// Runs `work` (given the worker thread count) on a tokio runtime with
/// `threads` workers (default: one per CPU); Ctrl-C drops it, and with it
/// the guards that kill child processes. Reports an error as `name: error`
/// and a failing exit code.
pub fn main(
    name: &str,
    threads: Option<usize>,
    work: impl AsyncFnOnce(usize) -> Result<(), BoxError>,
) -> ExitCode {
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name}: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            done = work(threads) => done,
            _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A duration as people and tools write it: `3s`, `500ms`, `391us`, `2m`,
/// or a plain number of seconds (`1.5`); `None` if it is not one, or is
/// negative.
pub fn read_duration(text: &str) -> Option<Duration> {
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
    let value: f64 = number.trim().parse().ok()?;
    Duration::try_from_secs_f64(value * scale).ok()
}

/// Parses a positive duration flag (see [`read_duration`]).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match read_duration(text) {
        Some(d) if !d.is_zero() => Ok(d),
        Some(_) => Err(format!("duration must be positive, got {text:?}")),
        None => Err(format!("bad duration {text:?} (try 3s or 500ms)")),
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
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn tool_durations_read() {
        assert_eq!(read_duration("3.00s"), Some(Duration::from_secs(3)));
        assert_eq!(
            read_duration("599.5ms"),
            Some(Duration::from_micros(599_500))
        );
        assert_eq!(read_duration("391us"), Some(Duration::from_micros(391)));
        assert_eq!(read_duration("0us"), Some(Duration::ZERO));
        assert_eq!(read_duration("ms"), None);
    }
}
