//! Logs to stderr, as text or one JSON object per line, with a level that a
//! reload can change; beside them, the layer that exports traces (if any).
//! The log filter is the log layer's own, so it does not decide which
//! spans are exported.

use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::{Log, LogFormat};
use crate::traces::BoxedLayer;

/// The subscriber under the log layer: the registry and the trace exporter.
type Base = Layered<Option<BoxedLayer>, Registry>;

/// Changes the log filter of the running process.
#[derive(Clone)]
pub struct LogHandle {
    filter: Option<reload::Handle<EnvFilter, Base>>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle").finish_non_exhaustive()
    }
}

impl LogHandle {
    /// Sets the filter to `log.level` and the access log on or off, unless
    /// `RUST_LOG` decides it.
    pub fn set(&self, log: &Log) {
        if std::env::var_os("RUST_LOG").is_some() {
            return;
        }
        if let (Some(handle), Ok(filter)) =
            (&self.filter, EnvFilter::builder().parse(directives(log)))
        {
            let _ = handle.reload(filter);
        }
    }
}

/// The target of the access log's events.
pub const ACCESS_TARGET: &str = "router_runtime::access";

/// The target of the events that say how a reload (SIGHUP) went: always
/// logged, at INFO (or ERROR for a refused file), whatever `log.level`, so
/// a reload gets an answer in the log even at `level = "warn"`.
pub const RELOAD_TARGET: &str = "grpc_router::reload";

/// `log.level` with the access log switched on or off and the reload
/// outcome on, after it (a later directive for the same target wins).
fn directives(log: &Log) -> String {
    let access = if log.access { "info" } else { "off" };
    format!(
        "{},{ACCESS_TARGET}={access},{RELOAD_TARGET}=info",
        log.level
    )
}

fn filter(log: &Log) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::builder().parse(directives(log)))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the process's subscriber (once; later calls change nothing):
/// the logs, and `traces` (the exporter's layer) when given.
pub fn init(log: &Log, traces: Option<BoxedLayer>) -> LogHandle {
    let (filter, handle) = reload::Layer::new(filter(log));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let base = tracing_subscriber::registry().with(traces);
    let installed = match log.format {
        LogFormat::Text => base
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Json => base
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
    };
    LogHandle {
        filter: installed.is_ok().then_some(handle),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_outcomes_are_on_whatever_the_level() {
        for level in ["warn", "error", "off", "debug"] {
            let log = Log {
                level: level.to_owned(),
                ..Log::default()
            };
            let filter = EnvFilter::builder().parse(directives(&log)).expect("valid");
            assert!(
                filter.to_string().contains("grpc_router::reload=info"),
                "{level}: {filter}"
            );
        }
    }

    #[test]
    fn the_access_log_is_off_unless_asked_for_whatever_the_level() {
        let mut log = Log {
            level: "debug".to_owned(),
            ..Log::default()
        };
        let off = EnvFilter::builder().parse(directives(&log)).expect("valid");
        assert!(
            off.to_string().contains("router_runtime::access=off"),
            "{off}"
        );
        log.access = true;
        let on = EnvFilter::builder().parse(directives(&log)).expect("valid");
        assert!(
            on.to_string().contains("router_runtime::access=info"),
            "{on}"
        );
    }
}
