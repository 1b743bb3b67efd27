//! `grpc-router`: serve, check a configuration, or show a running router's
//! status.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use grpc_router::config::{Config, LogFormat};
use grpc_router::source::{ConfigSource, Overrides};

/// jemalloc returns the memory of released calls to the system.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A gRPC router for services whose instances dial out and register.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Route every service that registers, until SIGTERM (SIGHUP reloads
    /// the configuration).
    Serve {
        /// The configuration file (TOML); GRPC_ROUTER_* variables override it.
        #[arg(long, short, default_value = "/etc/grpc-router/router.toml")]
        config: PathBuf,
        /// Overrides `log.format`: `text` or `json` (one object per line).
        #[arg(long, value_parser = ["text", "json"])]
        log_format: Option<String>,
        /// Overrides `log.access`: one line per call at target
        /// `router_runtime::access`.
        #[arg(long)]
        access_log: bool,
    },
    /// Validate a configuration file and print the effective configuration.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
        /// A compiled descriptor set (`protoc -o FILE`, `buf build -o
        /// FILE.binpb`) of services the router will route: a per-method
        /// setting for a method they do not have is then a warning.
        /// Repeatable.
        #[arg(long = "descriptor-set", value_name = "FILE")]
        descriptor_sets: Vec<PathBuf>,
    },
    /// Show a running router's services and instances (from its admin
    /// listener).
    Status {
        /// The router's admin listener (`[admin] address`; a clients'
        /// listener only with `[clients] serve_admin = true`):
        /// `http://host:port`, `https://host:port` or `host:port`.
        #[arg(long, default_value = grpc_router::status::DEFAULT_ADMIN_URL)]
        router: String,
        /// A file holding an admin token (`[admin] tokens_sha256`), sent as
        /// `authorization: Bearer <token>`.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig {
            file,
            descriptor_sets,
        } => check_config(&file, &descriptor_sets),
        Command::Serve {
            config,
            log_format,
            access_log,
        } => serve(ConfigSource {
            path: config,
            overrides: Overrides {
                log_format: log_format.as_deref().map(|f| match f {
                    "json" => LogFormat::Json,
                    _ => LogFormat::Text,
                }),
                access_log,
            },
        }),
        Command::Status {
            router,
            token_file,
            json,
        } => status(&router, token_file.as_deref(), json),
    }
}

/// `grpc-router serve`: loads the configuration (exit 2 when it is
/// invalid), starts the runtime, the traces and the log, and runs the
/// daemon until it stops.
fn serve(source: ConfigSource) -> ExitCode {
    let config = match source.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("grpc-router: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.runtime.worker_threads {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("grpc-router: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP client's connection lives on the runtime.
    let started = {
        let _runtime = runtime.enter();
        grpc_router::traces::Traces::start(&config.tracing)
    };
    let (traces, layer) = match started {
        Ok(started) => started,
        Err(e) => {
            eprintln!("grpc-router: {e}");
            return ExitCode::FAILURE;
        }
    };
    let log = grpc_router::logging::init(&config.log, layer);
    let code = match runtime.block_on(grpc_router::daemon::serve(source, config, log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once, in the log's format (the logs go to stderr).
            tracing::error!("grpc-router failed: {e}");
            ExitCode::FAILURE
        }
    };
    // Flushes the spans still buffered while the runtime still runs the
    // exporter's connection.
    traces.shutdown();
    code
}

/// `grpc-router status`: the router's services, as a table or JSON.
fn status(router: &str, token_file: Option<&std::path::Path>, json: bool) -> ExitCode {
    let token = match token_file {
        None => None,
        Some(path) => match std::fs::read_to_string(path) {
            Ok(token) => Some(token),
            Err(e) => {
                eprintln!("grpc-router: --token-file {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("grpc-router: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(grpc_router::status::fetch(router, token.as_deref())) {
        Ok(status) => {
            if json {
                println!("{}", grpc_router::status::json(&status));
            } else {
                print!("{}", grpc_router::status::table(&status));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("grpc-router: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `grpc-router check-config`: the effective configuration on stdout, then
/// on stderr the warnings (settings for methods the services of the
/// descriptor sets do not have) and `valid`; exit 2 for an invalid file.
fn check_config(file: &std::path::Path, descriptor_sets: &[PathBuf]) -> ExitCode {
    let config = match Config::load(file, std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("grpc-router: {e}");
            return ExitCode::from(2);
        }
    };
    let mut known = std::collections::BTreeMap::new();
    for set in descriptor_sets {
        match grpc_router::descriptors::read_methods(set) {
            Ok(services) => known.extend(services),
            Err(e) => {
                eprintln!("grpc-router: {e}");
                return ExitCode::from(2);
            }
        }
    }
    print!("{}", config.effective_toml());
    for warning in config.method_warnings(&known) {
        eprintln!("grpc-router: warning: {warning}");
    }
    eprintln!("{}: valid", file.display());
    ExitCode::SUCCESS
}
