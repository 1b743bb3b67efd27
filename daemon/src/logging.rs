//! Logs to stderr, as text or one JSON object per line, with a level that a
//! reload can change.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{Log, LogFormat};

/// Changes the log filter of the running process.
#[derive(Clone)]
pub struct LogHandle {
    filter: Option<reload::Handle<EnvFilter, Registry>>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle").finish_non_exhaustive()
    }
}

impl LogHandle {
    /// Sets the filter to `level`, unless `RUST_LOG` decides it.
    pub fn set_level(&self, level: &str) {
        if std::env::var_os("RUST_LOG").is_some() {
            return;
        }
        if let (Some(handle), Ok(filter)) = (&self.filter, EnvFilter::builder().parse(level)) {
            let _ = handle.reload(filter);
        }
    }
}

fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::builder().parse(level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the process's subscriber (once; later calls change nothing).
pub fn init(log: &Log) -> LogHandle {
    let (filter, handle) = reload::Layer::new(filter(&log.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let installed = match log.format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    LogHandle {
        filter: installed.is_ok().then_some(handle),
    }
}
