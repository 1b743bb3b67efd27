//! `grpc-router serve`: the dynamic router on its listeners, reloaded on
//! SIGHUP, drained on SIGTERM (or Ctrl-C).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use router_runtime::metrics::{MetricsOptions, RouterMetrics};
use router_runtime::prometheus_client::registry::Registry;
use router_runtime::router::{DynamicRouter, RouterConfig};
use router_runtime::server::{Listener, RouterServer, ServeError};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tracing::{error, info, warn};

use crate::admin_http::{self, AdminState, AdminTokens};
use crate::config::{Config, ConfigError, Tls};
use crate::logging::{LogHandle, RELOAD_TARGET};
use crate::source::ConfigSource;

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A CORS origin is not one (checked at load too).
    #[error("clients.cors.allowed_origins: {0}")]
    Cors(#[from] router_runtime::server::InvalidOrigin),
    /// A TLS file could not be read.
    #[error("{setting}: cannot read {path}: {source}")]
    TlsFile {
        /// The setting, for example `clients.tls.cert`.
        setting: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The KEDA scaler's address could not be bound.
    #[error("keda.listen: cannot listen on {address}: {source}")]
    KedaBind {
        /// The configured address.
        address: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The admin listener's address could not be bound.
    #[error("admin.address: cannot listen on {address}: {source}")]
    AdminBind {
        /// The configured address.
        address: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A listener's address could not be bound.
    #[error("{setting}: {source}")]
    Listen {
        /// The setting, for example `clients.address`.
        setting: &'static str,
        /// Why.
        source: ServeError,
    },
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The state file cannot be written.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// Serves `config` (read from `source`, which SIGHUP reads again) until
/// SIGTERM or Ctrl-C, then drains. Prints `listening clients=ADDR
/// registrations=ADDR` (and ` admin=ADDR` with an admin listener, ` keda=ADDR`
/// with the KEDA scaler) on stdout
/// once bound.
pub async fn serve(
    source: ConfigSource,
    config: Config,
    log: LogHandle,
) -> Result<(), DaemonError> {
    let (router, registry) = build_router(&config)?;
    let bound = Bound::bind(&config).await?;
    if let Some(registrations) = bound.registrations_addr() {
        config.cluster_state.update(&config.cluster);
        config
            .cluster_state
            .start(config.router_id(), registrations);
    }
    // Before the `listening` line: a signal sent right after it is answered
    // (SIGHUP, unhandled, would end the process).
    let streams = listen_for_signals();
    bound.announce(&config);

    let (delay, grace) = (config.shutdown.delay, config.shutdown.grace);
    let router_id = config.router_id();
    let served = RouterServer::new(router_id.clone())
        .route_dynamic(&router)
        .delay(delay)
        .serve_admin(config.clients.serve_admin)
        .grpc_web(config.clients.grpc_web)
        .connect(config.clients.connect);
    let served = match config.clients.cors.as_ref().map(|c| c.cors()).transpose()? {
        Some(cors) => served.cors(cors),
        None => served,
    };
    let current = Arc::new(Mutex::new(config));
    let admin_tokens = AdminTokens::of(current.clone());
    let side = SideListeners::start(
        bound.admin,
        bound.keda,
        &router,
        registry,
        router_id,
        &admin_tokens,
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(signals(
        streams,
        source,
        current,
        router.clone(),
        log,
        stop_tx,
    ));
    let served = served
        .admin_auth(admin_tokens.for_grpc())
        .grace(grace)
        .serve(bound.clients, bound.registrations, async move {
            let _ = stop_rx.await;
        })
        .await;
    side.stop().await;
    served?;
    info!("grpc-router stopped");
    Ok(())
}

/// The dynamic router of `config` (its services configured, the learnt
/// ones of the state file back) and the metrics registry the admin
/// listener serves (empty without an admin listener: nothing is recorded).
fn build_router(config: &Config) -> Result<(DynamicRouter, Registry), DaemonError> {
    let mut registry = Registry::default();
    let metrics = config.admin.address.map(|_| {
        RouterMetrics::register_with(
            &mut registry,
            MetricsOptions {
                per_instance: config.admin.per_instance_metrics,
            },
        )
    });
    if metrics.is_some() {
        registry.register_collector(Box::new(crate::activate::ActivationsCollector(
            crate::activate::Activations::global().clone(),
        )));
    }
    let router = DynamicRouter::with_max_services(
        RouterConfig {
            metrics,
            ..config.default_router_config()
        },
        config.limits.max_services,
    );
    router.configure(
        config.default_router_config(),
        config.service_router_configs(),
    );
    if let Some(file) = &config.state.file {
        crate::state::start(&router, file)?;
    }
    Ok((router, registry))
}

/// The daemon's listeners, bound before anything is served, so a port in
/// use stops the start naming its setting.
struct Bound {
    clients: Listener,
    registrations: Option<Listener>,
    admin: Option<tokio::net::TcpListener>,
    keda: Option<tokio::net::TcpListener>,
}

impl Bound {
    async fn bind(config: &Config) -> Result<Self, DaemonError> {
        let clients = listener(
            &config.clients.address,
            config.clients.tls.as_ref(),
            "clients",
            "clients.address",
        )
        .await?;
        let registrations = match config.registrations.address {
            Some(address) => Some(
                listener(
                    &address,
                    config.registrations.tls.as_ref(),
                    "registrations",
                    "registrations.address",
                )
                .await?,
            ),
            None => None,
        };
        let admin = match config.admin.address {
            Some(address) => Some(bind_admin(address).await?),
            None => None,
        };
        let keda = match config.keda.listen {
            Some(address) => Some(
                tokio::net::TcpListener::bind(address)
                    .await
                    .map_err(|source| DaemonError::KedaBind { address, source })?,
            ),
            None => None,
        };
        Ok(Bound {
            clients,
            registrations,
            admin,
            keda,
        })
    }

    /// Where instances register: the registrations listener's address, or
    /// the clients' when they share one.
    fn registrations_addr(&self) -> Option<std::net::SocketAddr> {
        self.registrations
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .or_else(|| self.clients.local_addr().ok())
    }

    /// Logs where the daemon serves, and prints the `listening` line.
    fn announce(&self, config: &Config) {
        let keda_addr = self.keda.as_ref().and_then(|l| l.local_addr().ok());
        let admin_addr = self.admin.as_ref().and_then(|l| l.local_addr().ok());
        let clients_addr = self.clients.local_addr().ok();
        let registrations_addr = self.registrations_addr();
        info!(
            router_id = %config.router_id(),
            clients = ?clients_addr,
            registrations = ?registrations_addr,
            admin = ?admin_addr,
            services = ?config.services.keys().collect::<Vec<_>>(),
            "grpc-router serving"
        );
        if let (Some(c), Some(r)) = (clients_addr, registrations_addr) {
            let mut stdout = std::io::stdout();
            let admin = admin_addr
                .map(|a| format!(" admin={a}"))
                .unwrap_or_default();
            let keda = keda_addr.map(|a| format!(" keda={a}")).unwrap_or_default();
            let _ = writeln!(
                stdout,
                "listening clients={c} registrations={r}{admin}{keda}"
            );
            let _ = stdout.flush();
        }
    }
}

/// The listeners beside the router's: the admin listener (pages, metrics)
/// and KEDA's scaler. Both outlive the drain, so the drain can be watched
/// and the calls that drain still count for the autoscaler.
struct SideListeners {
    admin_task: Option<tokio::task::JoinHandle<()>>,
    admin_stop: tokio::sync::oneshot::Sender<()>,
    keda_stop: tokio::sync::oneshot::Sender<()>,
}

impl SideListeners {
    fn start(
        admin: Option<tokio::net::TcpListener>,
        keda: Option<tokio::net::TcpListener>,
        router: &DynamicRouter,
        registry: Registry,
        router_id: String,
        admin_tokens: &AdminTokens,
    ) -> Self {
        let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_task = admin.map(|listener| {
            let app = admin_http::routes(
                AdminState::new(router_id, router.clone())
                    .with_metrics(Arc::new(registry))
                    .with_tokens(admin_tokens.clone()),
            );
            tokio::spawn(admin_http::serve(listener, app, async move {
                let _ = admin_stopped.await;
            }))
        });
        let (keda_stop, keda_stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some(listener) = keda {
            let scaler = crate::keda::Scaler::new(router.clone());
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = keda_stopped.await;
                };
                if let Err(e) = crate::keda::serve(listener, scaler, stopped).await {
                    error!(error = %e, "the KEDA scaler listener failed");
                }
            });
        }
        SideListeners {
            admin_task,
            admin_stop,
            keda_stop,
        }
    }

    /// Stops both once the router has stopped; a scraper or a status page
    /// still connected does not hold the exit.
    async fn stop(self) {
        let _ = self.admin_stop.send(());
        let _ = self.keda_stop.send(());
        if let Some(mut task) = self.admin_task
            && tokio::time::timeout(router_runtime::server::CLOSE_AFTER, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

async fn bind_admin(address: std::net::SocketAddr) -> Result<tokio::net::TcpListener, DaemonError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| DaemonError::AdminBind { address, source })
}

async fn listener(
    address: &std::net::SocketAddr,
    tls: Option<&Tls>,
    name: &str,
    setting: &'static str,
) -> Result<Listener, DaemonError> {
    let listener = Listener::bind(*address)
        .await
        .map_err(|source| DaemonError::Listen { setting, source })?;
    Ok(match tls {
        Some(tls) => listener.with_tls(tls_config(tls, name)?),
        None => listener,
    })
}

fn tls_config(tls: &Tls, listener: &str) -> Result<ServerTlsConfig, DaemonError> {
    let read = |key: &str, path: &PathBuf| {
        std::fs::read(path).map_err(|source| DaemonError::TlsFile {
            setting: format!("{listener}.tls.{key}"),
            path: path.clone(),
            source,
        })
    };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(
        read("cert", &tls.cert)?,
        read("key", &tls.key)?,
    ));
    if let Some(ca) = &tls.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read("client_ca", ca)?));
    }
    Ok(config)
}

/// The SIGHUP and SIGTERM streams.
#[cfg(unix)]
type Streams = std::io::Result<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>;
/// Without Unix signals, only Ctrl-C.
#[cfg(not(unix))]
type Streams = ();

/// Listens for SIGHUP and SIGTERM from now on.
fn listen_for_signals() -> Streams {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        Ok((
            signal(SignalKind::hangup())?,
            signal(SignalKind::terminate())?,
        ))
    }
}

/// SIGHUP reloads, SIGTERM and Ctrl-C stop.
async fn signals(
    streams: Streams,
    source: ConfigSource,
    current: Arc<Mutex<Config>>,
    router: DynamicRouter,
    log: LogHandle,
    stop: tokio::sync::oneshot::Sender<()>,
) {
    #[cfg(unix)]
    {
        let Ok((mut hup, mut term)) = streams else {
            error!("cannot listen for SIGHUP and SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            let _ = stop.send(());
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => reload(&source, &current, &router, &log),
                _ = term.recv() => {
                    info!("SIGTERM: shutting down");
                    break;
                }
                _ = tokio::signal::ctrl_c() => {
                    info!("Ctrl-C: shutting down");
                    break;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (streams, &source, &current, &router, &log);
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop.send(());
}

/// Re-reads the configuration (the command line's flags still over it); a
/// valid one applies to new calls and registrations at once, an invalid one
/// is refused and the old one stays. Its outcome is logged at
/// [`RELOAD_TARGET`], which every log level shows.
pub fn reload(
    source: &ConfigSource,
    current: &Mutex<Config>,
    router: &DynamicRouter,
    log: &LogHandle,
) {
    let mut next = match source.load() {
        Ok(next) => next,
        Err(e) => {
            error!(
                target: RELOAD_TARGET,
                error = %e,
                "configuration reload refused; the running configuration stays"
            );
            return;
        }
    };
    let mut current = current.lock().unwrap_or_else(|e| e.into_inner());
    for (setting, changed) in [
        ("clients", current.clients != next.clients),
        (
            "registrations.address",
            current.registrations.address != next.registrations.address,
        ),
        (
            "registrations.tls",
            current.registrations.tls != next.registrations.tls,
        ),
        ("log.format", current.log.format != next.log.format),
        (
            "shutdown.grace",
            current.shutdown.grace != next.shutdown.grace,
        ),
        (
            "shutdown.delay",
            current.shutdown.delay != next.shutdown.delay,
        ),
        ("state.file", current.state != next.state),
        (
            "limits.max_services",
            current.limits.max_services != next.limits.max_services,
        ),
        ("router_id", current.router_id != next.router_id),
        ("admin.address", current.admin.address != next.admin.address),
        (
            "admin.per_instance_metrics",
            current.admin.per_instance_metrics != next.admin.per_instance_metrics,
        ),
        ("tracing", current.tracing != next.tracing),
        ("runtime", current.runtime != next.runtime),
        ("keda.listen", current.keda != next.keda),
    ] {
        if changed {
            warn!(
                target: RELOAD_TARGET,
                setting,
                "changing this setting needs a restart; it keeps its running value"
            );
        }
    }
    next.router_id = current.router_id.clone();
    next.cluster_state = current.cluster_state.clone();
    next.cluster_state.update(&next.cluster);
    router.configure(next.default_router_config(), next.service_router_configs());
    log.set(&next.log);
    info!(
        target: RELOAD_TARGET,
        services = ?next.services.keys().collect::<Vec<_>>(),
        "configuration reloaded"
    );
    *current = next;
}
