//! A router server with everything an operator expects, in a few lines:
//! the routed services, `grpc.health.v1` per service, gRPC server reflection
//! (v1 and v1alpha) of every routed service, TCP_NODELAY, optional TLS per
//! listener, an optional separate listener for registrations, and a
//! graceful shutdown.
//!
//! The admin service (`router.v1.RouterAdmin`, what `grpc-router status`
//! reads) lists every instance, its labels and the recent error messages,
//! so it is not served unless asked for: [`RouterServer::serve_admin`]
//! serves it on the clients' listener (for a router only trusted clients
//! reach, or with [`RouterServer::admin_auth`]), and
//! [`RouterServer::admin_service`] hands it out to serve on a private
//! listener of your own.
//!
//! ```no_run
//! # use router_runtime::codegen::*;
//! # async fn demo<S: ServiceSpec>(router: Router<S>) -> Result<(), Box<dyn std::error::Error>> {
//! use router_runtime::server::{Listener, RouterServer, shutdown_signal};
//!
//! let listener = Listener::bind("127.0.0.1:50051".parse()?).await?;
//! RouterServer::new("router-1")
//!     .route(&router)
//!     .serve(listener, None, shutdown_signal())
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! On shutdown (`signal` resolving) the server goes through these steps,
//! each bounded in time, so the process exits within `delay + grace` and
//! half a second whatever its clients and instances do:
//!
//! 1. **Signal**: health (`grpc.health.v1`, Check and Watch, `""` and every
//!    service) says NOT_SERVING and new registrations are refused (they
//!    register with another router).
//! 2. **Delay** ([`RouterServer::delay`], none by default): the listeners stay
//!    open and new calls are served as before, so that load balancers that
//!    watch health or the endpoints (Envoy's drain time, Kubernetes endpoint
//!    propagation) stop sending here first.
//! 3. **Stop accepting**: the listeners close and every connection gets an
//!    HTTP/2 GOAWAY: clients open new calls elsewhere and the calls in
//!    flight go on.
//! 4. **Grace** ([`RouterServer::grace`], 30 s by default): the calls in
//!    flight get that long to finish. Once none is left, or at the end of
//!    the grace period, every instance gets `GoAway` (it registers with
//!    another router replica) and the routed calls still open end with
//!    UNAVAILABLE, as do the server's own (a health Watch, say).
//! 5. **Close**: half a second later ([`CLOSE_AFTER`]), the connections
//!    still open, such as one whose client stopped reading, are closed, and
//!    `serve` returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::ServiceExt;
use tracing::{info, warn};

use crate::admin::AdminService;
use crate::descriptor::ServiceSpec;
use crate::reflection::DescriptorCatalog;
use crate::router::{DynamicRouter, Router, RouterCore, ServiceChange};

mod connect;
mod cors;
mod cutoff;
mod grpc_web_mark;
mod kill;

pub use connect::Protocol;
pub use cors::{Cors, DEFAULT_MAX_AGE as DEFAULT_CORS_MAX_AGE, InvalidOrigin};

use cutoff::Cutoff;
use kill::KillSwitch;

/// The default time calls in flight get to finish at shutdown.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// How long after the calls still open at the end of the grace period were
/// ended with UNAVAILABLE the connections still open are closed: time for
/// their status to reach the clients that read.
pub const CLOSE_AFTER: Duration = Duration::from_millis(500);

/// Why a router server could not start or failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The TLS settings of a listener were refused.
    #[error("invalid TLS settings for the {listener} listener: {cause}")]
    Tls {
        /// `clients` or `registrations`.
        listener: &'static str,
        /// What tonic said.
        cause: String,
    },
    /// A descriptor set could not be read for reflection.
    #[error("invalid descriptor set for reflection: {0}")]
    Reflection(String),
    /// The HTTP/2 server failed.
    #[error("the {listener} server failed: {cause}")]
    Transport {
        /// `clients` or `registrations`.
        listener: &'static str,
        /// What tonic said.
        cause: String,
    },
}

/// A bound TCP listener and its optional TLS settings.
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    tls: Option<ServerTlsConfig>,
}

impl Listener {
    /// Binds `addr` (port 0 picks a free port), without TLS.
    pub async fn bind(addr: SocketAddr) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok(Listener::from_tcp(listener))
    }

    /// Serves on an already bound listener.
    pub fn from_tcp(listener: TcpListener) -> Self {
        Listener {
            listener,
            tls: None,
        }
    }

    /// Serves TLS with `tls` (with a client CA for mutual TLS).
    pub fn with_tls(mut self, tls: ServerTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Builds and runs a router server (see the module docs).
pub struct RouterServer {
    router_id: String,
    delay: Duration,
    grace: Duration,
    /// Cancelled at the end of the grace period: the server's own calls
    /// still open end (see `cutoff`).
    cut: CancellationToken,
    catalog: DescriptorCatalog,
    admin: AdminService,
    typed: Vec<TypedRoutes>,
    dynamic: Option<DynamicRouter>,
    extra: tonic::service::RoutesBuilder,
    reflection_error: Option<String>,
    /// Whether the clients' listener serves the admin service.
    serve_admin: bool,
    /// Whether the clients' listener also speaks gRPC-Web (and HTTP/1.1).
    grpc_web: bool,
    /// Whether the clients' listener also speaks the Connect protocol.
    connect: bool,
    /// Cross-origin access to the clients' listener.
    cors: Option<Cors>,
}

/// A compiled router's two services and its core.
struct TypedRoutes {
    core: Arc<RouterCore>,
    add_clients: Box<dyn FnOnce(&mut tonic::service::RoutesBuilder) + Send>,
    add_registrations: Box<dyn FnOnce(&mut tonic::service::RoutesBuilder) + Send>,
}

impl std::fmt::Debug for RouterServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterServer")
            .field("router_id", &self.router_id)
            .field("delay", &self.delay)
            .field("grace", &self.grace)
            .field("services", &self.catalog.services())
            .finish_non_exhaustive()
    }
}

impl RouterServer {
    /// A server reporting `router_id` in the admin service, routing nothing
    /// yet.
    pub fn new(router_id: impl Into<String>) -> Self {
        let router_id = router_id.into();
        let catalog = DescriptorCatalog::new();
        let mut reflection_error = None;
        for (set, services) in [
            (
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                &["grpc.health.v1.Health"][..],
            ),
            // Described, and listed only once served (`serve_admin`).
            (crate::pb::FILE_DESCRIPTOR_SET, &[][..]),
        ] {
            match catalog.add_encoded_set(set) {
                Ok(()) => services.iter().for_each(|s| catalog.list_service(s)),
                Err(e) => reflection_error = Some(e.to_string()),
            }
        }
        if let Err(e) = catalog.include_reflection_services() {
            reflection_error = Some(e.to_string());
        }
        RouterServer {
            admin: AdminService::new(router_id.clone()),
            router_id,
            delay: Duration::ZERO,
            grace: DEFAULT_GRACE,
            cut: CancellationToken::new(),
            catalog,
            typed: Vec::new(),
            dynamic: None,
            extra: tonic::service::RoutesBuilder::default(),
            reflection_error,
            serve_admin: false,
            grpc_web: false,
            connect: false,
            cors: None,
        }
    }

    /// Serves the admin service (`router.v1.RouterAdmin`) on the clients'
    /// listener when `serve` is true; by default it is not served. It lists
    /// every routed service and instance with its labels, call counts and
    /// recent error messages: serve it there only where the clients'
    /// listener is private, or require a credential with
    /// [`RouterServer::admin_auth`]. To serve it on a listener of your own
    /// instead, use [`RouterServer::admin_service`].
    ///
    /// ```no_run
    /// # use router_runtime::codegen::*;
    /// # async fn demo<S: ServiceSpec>(router: Router<S>) -> Result<(), Box<dyn std::error::Error>> {
    /// use router_runtime::server::{Listener, RouterServer, shutdown_signal};
    ///
    /// // A router on a private network: `grpc-router status` may read it.
    /// let listener = Listener::bind("10.0.0.5:50051".parse()?).await?;
    /// RouterServer::new("router-1")
    ///     .route(&router)
    ///     .serve_admin(true)
    ///     .serve(listener, None, shutdown_signal())
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn serve_admin(mut self, serve: bool) -> Self {
        self.serve_admin = serve;
        self
    }

    /// Whether the clients' listener also serves gRPC-Web clients (browsers,
    /// `buf curl --protocol grpcweb`): `application/grpc-web` (binary) and
    /// `application/grpc-web-text` (base64) requests over HTTP/1.1 or HTTP/2,
    /// translated to gRPC before routing (tonic-web), so routing, limits,
    /// credentials and metrics apply to them as to any call. Unary and
    /// server-streaming methods; the status arrives in the body's trailer
    /// frame as the gRPC-Web spec says. Off by default: the listener then
    /// speaks HTTP/2 only. The registrations listener is never affected.
    pub fn grpc_web(mut self, enabled: bool) -> Self {
        self.grpc_web = enabled;
        self
    }

    /// Whether the clients' listener also serves Connect clients
    /// (connectrpc.com: `buf curl --protocol connect`, Connect-Web in
    /// browsers, or `curl` with a JSON body): unary calls POSTed as
    /// `application/proto` or `application/json` (and GET for methods with
    /// `idempotency_level = NO_SIDE_EFFECTS`), streaming calls as
    /// `application/connect+proto` or `+json`, over HTTP/1.1 or HTTP/2,
    /// gzip as negotiated. Each is translated to gRPC before routing, so
    /// routing, limits, credentials (`authorization`), deadlines
    /// (`connect-timeout-ms`) and metrics apply to it as to any call; JSON
    /// is translated with the descriptors the router holds (compiled
    /// services' and those registrations send), and the instance always
    /// receives protobuf. Errors are Connect JSON with the spec's HTTP
    /// status. The translated request carries [`Protocol::Connect`] in its
    /// extensions. Off by default. The registrations listener is never
    /// affected.
    pub fn connect(mut self, enabled: bool) -> Self {
        self.connect = enabled;
        self
    }

    /// Lets browsers on the origins `cors` names call the clients' listener
    /// (with [`RouterServer::grpc_web`]): preflight requests are answered
    /// and responses carry the CORS headers. Without it (the default) the
    /// listener sends no CORS headers, and browsers allow only pages of its
    /// own origin. Implies [`RouterServer::grpc_web`]: browsers call
    /// with gRPC-Web.
    pub fn cors(mut self, cors: Cors) -> Self {
        self.cors = Some(cors);
        self
    }

    /// Requires `auth` to pass for every admin call (on the clients'
    /// listener with [`RouterServer::serve_admin`], and in
    /// [`RouterServer::admin_service`]).
    pub fn admin_auth(mut self, auth: crate::admin::AuthorizeAdmin) -> Self {
        self.admin = self.admin.with_auth(auth);
        self
    }

    /// The admin service of the routers added so far (add routers first),
    /// to serve on a listener of your own, for example one only operators
    /// reach.
    pub fn admin_service(&self) -> AdminService {
        self.admin.clone()
    }

    /// How long calls in flight get to finish at shutdown, once the
    /// listeners have closed, before the registrations and the calls still
    /// open are closed (see the module docs).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How long after the shutdown signal the server keeps its listeners
    /// open and serves new calls while health says NOT_SERVING, before it
    /// stops accepting (none by default; see the module docs). Give it the
    /// time the load balancers in front need to stop sending here.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Routes the compiled service of `router`, with reflection from its
    /// generated descriptor set.
    pub fn route<S: ServiceSpec>(mut self, router: &Router<S>) -> Self {
        self.admin = self.admin.with_router(router);
        if !S::FILE_DESCRIPTOR_SET.is_empty() {
            if let Err(e) = self.catalog.add_encoded_set(S::FILE_DESCRIPTOR_SET) {
                self.reflection_error = Some(format!("`{}`: {e}", S::NAME));
            }
            self.catalog.list_service(S::NAME);
        }
        let (clients, registrations) = (router.clone(), router.clone());
        self.typed.push(TypedRoutes {
            core: router.core().clone(),
            add_clients: Box::new(move |routes| {
                routes.add_service(clients.client_service());
            }),
            add_registrations: Box::new(move |routes| {
                routes.add_service(registrations.register_service());
            }),
        });
        self
    }

    /// Routes every service that registers with `router`, with reflection
    /// from the descriptor sets its registrations send.
    pub fn route_dynamic(mut self, router: &DynamicRouter) -> Self {
        self.admin = self.admin.with_dynamic(router);
        self.dynamic = Some(router.clone());
        self
    }

    /// Serves another tonic service next to the routed ones (on the clients
    /// listener), for example an embedder's own.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.extra
            .add_service(Cutoff::new(service, self.cut.clone()));
        self
    }

    /// The reflection catalog (to add descriptor sets of added services).
    pub fn catalog(&self) -> &DescriptorCatalog {
        &self.catalog
    }

    /// Health follows each compiled router's instances and the dynamic
    /// router's services; the tasks that follow them, to stop with the
    /// server. (Not async: the server's future need not be `Sync`.)
    fn follow_health(
        &self,
        reporter: &tonic_health::server::HealthReporter,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let tracked = self
            .typed
            .iter()
            .map(|typed| tokio::spawn(track_health(typed.core.clone(), reporter.clone())))
            .collect();
        if let Some(dynamic) = &self.dynamic {
            subscribe_dynamic(dynamic, &self.catalog, reporter);
        }
        tracked
    }

    /// The clients' routes (the routed services, health, reflection, the
    /// admin service when asked for, and the dynamic router's fallback) and
    /// the registrations' routes (on the clients' when not `separate`),
    /// with the compiled routers' cores.
    fn take_routes(
        &mut self,
        health: tonic_health::pb::health_server::HealthServer<
            impl tonic_health::pb::health_server::Health,
        >,
        separate: bool,
    ) -> (
        tonic::service::Routes,
        tonic::service::Routes,
        Vec<Arc<RouterCore>>,
    ) {
        let cut = &self.cut;
        let mut client_routes = std::mem::take(&mut self.extra);
        client_routes
            .add_service(Cutoff::new(health.clone(), cut.clone()))
            .add_service(Cutoff::new(self.catalog.v1_service(), cut.clone()))
            .add_service(Cutoff::new(self.catalog.v1alpha_service(), cut.clone()));
        if self.serve_admin {
            self.catalog.list_service("router.v1.RouterAdmin");
            client_routes.add_service(Cutoff::new(self.admin.clone().into_server(), cut.clone()));
        }
        let mut register_routes = tonic::service::RoutesBuilder::default();
        register_routes.add_service(Cutoff::new(health, cut.clone()));
        let mut cores = Vec::new();
        for typed in std::mem::take(&mut self.typed) {
            cores.push(typed.core);
            (typed.add_clients)(&mut client_routes);
            if separate {
                (typed.add_registrations)(&mut register_routes);
            } else {
                (typed.add_registrations)(&mut client_routes);
            }
        }
        let mut client_routes = client_routes.routes();
        let mut register_routes = register_routes.routes();
        if let Some(dynamic) = &self.dynamic {
            client_routes = with_fallback(
                client_routes,
                if separate {
                    tower::util::BoxCloneSyncService::new(dynamic.client_side())
                } else {
                    tower::util::BoxCloneSyncService::new(dynamic.clone())
                },
            );
            register_routes = with_fallback(
                register_routes,
                tower::util::BoxCloneSyncService::new(dynamic.register_side()),
            );
        }
        (client_routes, register_routes, cores)
    }

    /// Serves clients on `clients` and registrations on `registrations` (or
    /// on `clients` too when `None`) until `signal` resolves, then shuts down
    /// gracefully and returns within `delay + grace` and [`CLOSE_AFTER`]
    /// (see the module docs).
    pub async fn serve(
        mut self,
        clients: Listener,
        registrations: Option<Listener>,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        if let Some(e) = self.reflection_error {
            return Err(ServeError::Reflection(e));
        }
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", ServingStatus::Serving)
            .await;
        let tracked = self.follow_health(&reporter);
        let separate = registrations.is_some();
        let (client_routes, register_routes, cores) = self.take_routes(health, separate);
        let limits = connect::Limits::new(cores.clone(), self.dynamic.clone());
        let cut = self.cut.clone();

        let kill = KillSwitch::new();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let drain = Drain {
            cores,
            dynamic: self.dynamic.clone(),
            reporter: reporter.clone(),
            delay: self.delay,
            grace: self.grace,
            router_id: self.router_id.clone(),
            stop: stop_tx,
            cut,
            kill: kill.clone(),
        };
        let drained = tokio::spawn(async move {
            signal.await;
            drain.run().await;
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let clients_server = run_listener(
            "clients",
            clients,
            client_routes,
            Protocols {
                grpc_web: self.grpc_web || self.cors.is_some(),
                connect: self
                    .connect
                    .then(|| connect::ConnectLayer::new(self.catalog.clone(), limits)),
                cors: self.cors,
            },
            &kill,
            stopped(stop_rx.clone()),
        );
        let result = match registrations {
            Some(registrations) => {
                let registrations_server = run_listener(
                    "registrations",
                    registrations,
                    register_routes,
                    Protocols::default(),
                    &kill,
                    stopped(stop_rx),
                );
                let (a, b) = tokio::join!(clients_server, registrations_server);
                a.and(b)
            }
            None => clients_server.await,
        };
        drained.abort();
        for task in tracked {
            task.abort();
        }
        result
    }
}

/// Adds `fallback` for every path no named service serves.
fn with_fallback(
    routes: tonic::service::Routes,
    fallback: tower::util::BoxCloneSyncService<
        http::Request<tonic::body::Body>,
        http::Response<tonic::body::Body>,
        std::convert::Infallible,
    >,
) -> tonic::service::Routes {
    let fallback = fallback
        .map_request(|req: http::Request<axum::body::Body>| req.map(tonic::body::Body::new));
    tonic::service::Routes::from(routes.into_axum_router().fallback_service(fallback))
}

/// What a listener speaks besides gRPC over HTTP/2.
#[derive(Clone, Default)]
struct Protocols {
    /// gRPC-Web (and with it HTTP/1.1).
    grpc_web: bool,
    /// Connect (and with it HTTP/1.1).
    connect: Option<connect::ConnectLayer>,
    /// Cross-origin access for browsers.
    cors: Option<Cors>,
}

async fn run_listener(
    name: &'static str,
    listener: Listener,
    routes: tonic::service::Routes,
    protocols: Protocols,
    kill: &std::sync::Arc<KillSwitch>,
    stopped: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let kill = kill.clone();
    let incoming = TcpListenerStream::new(listener.listener).map(move |stream| {
        stream.map(|stream| {
            // Small frames must not wait for Nagle's algorithm.
            let _ = stream.set_nodelay(true);
            kill.wrap(stream)
        })
    });
    let mut server = Server::builder();
    if let Some(tls) = listener.tls {
        server = server.tls_config(tls).map_err(|e| ServeError::Tls {
            listener: name,
            cause: crate::bridge::session::error_chain(&e),
        })?;
    }
    let served = if protocols.grpc_web || protocols.connect.is_some() || protocols.cors.is_some() {
        // CORS outermost (preflights), then Connect, whose requests
        // tonic-web would refuse over HTTP/1.1, then gRPC-Web.
        server
            .accept_http1(true)
            .layer(tower::util::option_layer(
                protocols.cors.as_ref().map(Cors::layer),
            ))
            .layer(tower::util::option_layer(protocols.connect))
            .layer(tower::util::option_layer(
                protocols
                    .grpc_web
                    .then_some(grpc_web_mark::GrpcWebMarkLayer),
            ))
            .layer(tower::util::option_layer(
                protocols.grpc_web.then(tonic_web::GrpcWebLayer::new),
            ))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, stopped)
            .await
    } else {
        server
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, stopped)
            .await
    };
    served.map_err(|e| ServeError::Transport {
        listener: name,
        cause: crate::bridge::session::error_chain(&e),
    })
}

/// The shutdown sequence after the signal (the steps in the module docs).
struct Drain {
    cores: Vec<Arc<RouterCore>>,
    dynamic: Option<DynamicRouter>,
    reporter: HealthReporter,
    delay: Duration,
    grace: Duration,
    router_id: String,
    /// Closes the listeners (tonic then sends every connection GOAWAY).
    stop: tokio::sync::watch::Sender<bool>,
    cut: CancellationToken,
    kill: Arc<KillSwitch>,
}

impl Drain {
    async fn run(self) {
        info!(
            delay = ?self.delay,
            grace = ?self.grace,
            "shutting down: health says NOT_SERVING; the listeners close after the delay, \
             then calls in flight get the grace period to finish"
        );
        let cores = self.stop_serving().await;
        tokio::time::sleep(self.delay).await;
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + self.grace;
        let idle = async {
            for core in &cores {
                core.stats.wait_idle().await;
            }
            if let Some(dynamic) = &self.dynamic {
                dynamic.wait_idle().await;
            }
        };
        if tokio::time::timeout_at(deadline, idle).await.is_err() {
            let left: u64 = cores.iter().map(|c| c.stats.calls_active()).sum::<u64>()
                + self.dynamic.as_ref().map_or(0, |d| d.calls_active());
            warn!(
                calls = left,
                "grace period over; closing registrations with calls in flight (they end UNAVAILABLE)"
            );
        }
        let reason = format!("router `{}` shutting down", self.router_id);
        for core in &cores {
            core.close_registrations(&reason);
        }
        if let Some(dynamic) = &self.dynamic {
            dynamic.close_registrations(&reason);
        }
        // Only calls of the server's own services (a health Watch, say), or
        // connections whose clients stopped reading, are left now: `serve`
        // returns as soon as the last connection closes.
        tokio::time::sleep_until(deadline).await;
        self.cut.cancel();
        tokio::time::sleep(CLOSE_AFTER).await;
        let closed = self.kill.kill();
        if closed > 0 {
            warn!(
                connections = closed,
                "grace period over; closed the connections still open"
            );
        }
    }

    /// Health says NOT_SERVING and registrations are refused, from now on;
    /// returns the cores of the compiled services.
    async fn stop_serving(&self) -> Vec<Arc<RouterCore>> {
        self.reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let mut cores = self.cores.clone();
        if let Some(dynamic) = &self.dynamic {
            dynamic.refuse_registrations();
            cores.extend(dynamic.cores());
        }
        for core in &cores {
            core.closing
                .store(true, std::sync::atomic::Ordering::Release);
            self.reporter
                .set_service_status(core.service.name(), ServingStatus::NotServing)
                .await;
        }
        cores.truncate(self.cores.len());
        cores
    }
}

/// Keeps `core`'s health status in step with its instances: SERVING while
/// one can take calls.
async fn track_health(core: Arc<RouterCore>, reporter: HealthReporter) {
    let mut changed = core.registry.changed();
    let mut reported = None;
    loop {
        let closing = core.closing.load(std::sync::atomic::Ordering::Acquire);
        let status = if core.registry.is_serving() && !closing {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        // Registrations come and go far more often than the status changes.
        if reported != Some(status) {
            reporter
                .set_service_status(core.service.name(), status)
                .await;
            reported = Some(status);
            // A shutdown may have begun while this was written: look again,
            // so SERVING never outlives its NOT_SERVING.
            continue;
        }
        if changed.changed().await.is_err() {
            return;
        }
    }
}

/// Keeps reflection and health in step with a dynamic router's services.
fn subscribe_dynamic(
    router: &DynamicRouter,
    catalog: &DescriptorCatalog,
    reporter: &HealthReporter,
) {
    let catalog = catalog.clone();
    let reporter = reporter.clone();
    let runtime = tokio::runtime::Handle::current();
    router.subscribe(move |service, change| {
        let set = service.file_descriptor_set();
        if !set.is_empty() {
            match catalog.add_encoded_set(&set) {
                Ok(()) => catalog.list_service(service.name()),
                Err(e) => warn!(
                    service = service.name(),
                    error = %e,
                    "the registration's descriptor set is invalid; reflection does not describe the service"
                ),
            }
        }
        if matches!(change, ServiceChange::Defined | ServiceChange::Configured) {
            // One tracker per service for the router's life (a service stays
            // known once defined).
            let core = service.core().clone();
            if !core
                .health_tracked
                .swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                runtime.spawn(track_health(core, reporter.clone()));
            }
        }
    });
}

/// Resolves on Ctrl-C or SIGTERM (or never, if neither can be listened
/// for).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            warn!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
