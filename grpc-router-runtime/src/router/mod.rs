//! The router: serves a service's own paths to unmodified gRPC clients and
//! forwards each call to a registered instance over its register stream.
//!
//! ```no_run
//! # use router_runtime::codegen::*;
//! # fn demo<S: ServiceSpec>() -> Result<(), Box<dyn std::error::Error>> {
//! // `GreeterRouter` is generated: `Router<GreeterSpec>`.
//! let router = Router::<S>::new(RouterConfig::default());
//! let server = tonic::transport::Server::builder();
//! let _routes = router.add_to(server); // serves `/pkg.Greeter/*` and `/pkg.GreeterRouter/Register`
//! # Ok(()) }
//! ```

mod dynamic;
mod forward;
mod instances;
mod policy;
mod registration;
mod stats;

// The modules by their old flat names, for paths inside the router.
use forward::{call, client_body, local_reply, pump, reply, start};
use instances::{balance, registry, route_key, service, waiting};
use policy::{
    admission, authz, concurrency, deadline, instance_budget, limit, method_settings, outlier,
    refusal, retry, split,
};
pub(crate) use registration::bridge_kind;
use registration::{fleet, outbound, recheck, session};
use stats::{attempt_end, call_stats, recent_errors};

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::{ArcSwap, ArcSwapOption};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Request, Response};
use tonic::body::Body;
use tonic::codec::CompressionEncoding;
use tonic::server::{Grpc, NamedService};

pub use authz::{AuthorizeCall, CallRequest, ClientAuth, IDENTITY_HEADER};
pub(crate) use balance::Balancer;
pub use balance::LoadMeasure;
pub use call_stats::{CallStats, InstanceStats, LATENCY_WINDOW_SECS, RATE_WINDOW_SECS};
pub use concurrency::{ConcurrencyLimits, ConcurrencyQueue};
pub(crate) use concurrency::{status as concurrency_status, totals as concurrency_totals};
pub use deadline::{DeadlinePolicy, Deadlines};
pub use dynamic::{DEFAULT_MAX_SERVICES, DynamicRouter, DynamicSide, ServiceChange, ServiceHandle};
pub use fleet::Fleet;
pub use limit::{ClientKey, RateLimit, RateLimits};
pub use method_settings::{NamedMethod, unknown_method_warnings};
pub use outlier::OutlierDetection;
pub use recent_errors::{MAX_ERROR_MESSAGE, RECENT_ERRORS, RecentError};
pub use registry::{Instance, InstanceInfo, Registry, Snapshot};
pub use retry::{RetryPolicies, RetryPolicy, RetryThrottling};
pub use split::{TrafficSplit, TrafficSplits};
pub use waiting::{
    DEFAULT_MAX_WAITING_BYTES, DEFAULT_MAX_WAITING_CALLS, WaitForInstance, WaitHook, WaitOutcome,
    WaitingCalls, WaitingNow,
};

use crate::codec::{FrameCodec, RawCodec, frame_limit};
use crate::descriptor::{ServiceDescriptor, ServiceSpec};
/// The balancing strategies (`RouterConfig::strategy`), readable from text
/// with `FromStr`.
pub use crate::descriptor::{Strategy, UnknownStrategy};
use crate::wire::{BridgeFrame, RouterFrame};
pub(crate) use service::{Method, ServiceTable};
#[cfg(test)]
pub(crate) use session::record as session_record;

/// Header naming the instance a call must go to (pinned routing).
pub const PIN_HEADER: &str = "x-router-instance";
/// Header holding a label selector, `key=value[,key=value...]`: only instances
/// with all these labels take the call.
pub const SELECT_HEADER: &str = "x-router-select";

/// What a registration check ([`Authorize`]) sees of a `Register` call.
#[derive(Debug)]
pub struct RegisterRequest<'a> {
    /// The `Register` call's metadata (for example `authorization`).
    pub metadata: &'a tonic::metadata::MetadataMap,
    /// The bridge's `Hello`.
    pub hello: &'a crate::pb::Hello,
    /// The bridge's address, as text (empty when unknown).
    pub peer: &'a str,
    /// The certificates (DER, the leaf first) the bridge presented on a TLS
    /// listener with a client CA: verified by that CA during the handshake.
    /// Empty over plain TCP or without a client certificate.
    pub peer_certificates: &'a [bytes::Bytes],
}

/// Decides whether a bridge may register: it sees the `Register` call's
/// metadata (for example an `authorization` header), the bridge's `Hello`
/// and its TLS client certificates ([`RegisterRequest`]), and refuses with a
/// status (UNAUTHENTICATED, PERMISSION_DENIED ...).
///
/// An accepted registration may name the credential it proved
/// (`Ok(Some(identity))`, for example which token or certificate name): the
/// instance id is then bound to that identity while it is registered, and a
/// registration of the same id with another identity is refused with
/// PERMISSION_DENIED, even once the first one stops answering pings (until
/// it is evicted). A registration with the same identity from another
/// bridge process is still refused ALREADY_EXISTS while the first one
/// answers pings: the credential says who may hold the id, not which
/// process holding it is alive.
///
/// When a reload installs another hook, every live registration is checked
/// again with what it presented when it registered (its metadata without
/// the transport headers, its `Hello` without the description, its address
/// and certificates): one that no longer passes is closed with the hook's
/// status.
pub type Authorize =
    Arc<dyn Fn(&RegisterRequest<'_>) -> Result<Option<String>, tonic::Status> + Send + Sync>;

/// How a router behaves. `Default` gives production defaults.
#[derive(Clone)]
pub struct RouterConfig {
    /// An identifier for logs and the `Welcome` frame.
    pub router_id: String,
    /// The balancing strategy; `None` uses the service's default from
    /// `(router.v1.default_strategy)`.
    pub strategy: Option<Strategy>,
    /// What power of two choices compares between two instances.
    pub load_measure: LoadMeasure,
    /// Seed for the balancer's random choices, for deterministic tests.
    pub rng_seed: Option<u64>,
    /// Credit, in bytes, granted to a bridge for each call's responses.
    pub initial_window: u32,
    /// The largest frame payload the router accepts from a bridge; larger
    /// messages arrive in chunks.
    pub max_frame_size: u32,
    /// The largest request message, in bytes, the router takes from a client
    /// (tonic's server default, 4 MiB). A larger one fails the call at once,
    /// in every method kind, with RESOURCE_EXHAUSTED (gRPC's code for it; a
    /// tonic server says OUT_OF_RANGE) naming the limit and this setting.
    /// Set it to the instances' `max_decoding_message_size` when they take
    /// larger requests.
    pub max_message_size: usize,
    /// The largest response message, in bytes, the router forwards to a
    /// client: 64 MiB by default, far above common client receive limits, so
    /// the client's own limit applies exactly as in a direct call (tonic:
    /// OUT_OF_RANGE, grpcio: RESOURCE_EXHAUSTED), while a bridge still cannot
    /// make the router reassemble an unbounded message. A larger response
    /// fails with RESOURCE_EXHAUSTED at the router, naming the instance and
    /// this setting, and the instance gets `Cancel`. The instance's own
    /// `max_encoding_message_size` applies on its side.
    pub max_response_message_size: usize,
    /// The bytes of partly received (chunked) response messages the router
    /// holds for one registration, across all its calls (64 MiB by default,
    /// one message of the largest `max_response_message_size`). A chunk that
    /// would take a registration past it fails its call with
    /// RESOURCE_EXHAUSTED naming the instance and this setting, and the
    /// instance gets `Cancel`: an instance that never ends its messages costs
    /// the router at most this (plus each call's window), however many calls
    /// it holds. Set it to at least `max_response_message_size`, or a
    /// response of that size fails even alone.
    pub max_partial_response_bytes: usize,
    /// How often the router pings each bridge.
    pub heartbeat_interval: Duration,
    /// A bridge silent for this long is dropped and its calls fail.
    pub heartbeat_timeout: Duration,
    /// A metadata header whose value is the routing key for consistent
    /// hashing, used when the method has no `route_key` field or it is empty.
    pub route_key_header: Option<String>,
    /// The encodings of compressed client requests the router accepts
    /// (default gzip, deflate and zstd). A request in another encoding fails
    /// with UNIMPLEMENTED listing these in `grpc-accept-encoding`, as a tonic
    /// server answers it.
    pub accept_compression: Vec<CompressionEncoding>,
    /// The encodings the router may compress responses with (default none);
    /// it compresses only for a client that lists one of them in its
    /// `grpc-accept-encoding`, as a tonic server with `send_compressed` does.
    pub send_compression: Vec<CompressionEncoding>,
    /// How long a bridge has to send its `Hello`.
    pub hello_timeout: Duration,
    /// The bytes the router queues for one registration's register stream
    /// before it counts the instance congested: a congested instance takes
    /// no new calls and its request senders wait, so a bridge that stops
    /// reading cannot grow the router's memory. (It is evicted once it
    /// misses pings for `heartbeat_timeout`.)
    pub max_queued_bytes: usize,
    /// Checks every registration before it is accepted; `None` accepts any
    /// bridge that speaks the protocol (only for trusted networks).
    pub authorize: Option<Authorize>,
    /// Deadlines the router imposes: a default for calls that carry none, a
    /// maximum for those that ask for longer (per service, overridable per
    /// method). The instance sees the resulting `grpc-timeout`.
    pub deadlines: Deadlines,
    /// Divides the service's calls by weight between label sets (canaries,
    /// A/B tests); sticky by routing key. An explicit `x-router-select` or
    /// pin header bypasses it.
    pub splits: TrafficSplits,
    /// Calls per second for the service, per method and per client; a call
    /// over a limit fails RESOURCE_EXHAUSTED naming it.
    pub rate_limits: RateLimits,
    /// Calls in flight at once for the service and per method
    /// (`max_concurrent_calls`); a call over a limit fails
    /// RESOURCE_EXHAUSTED, or waits for a slot as the queue allows.
    pub concurrency: ConcurrencyLimits,
    /// Decides per call whether the client may call the method, and passes
    /// its verified identity to the instance; `None` lets every client call.
    pub client_auth: Option<ClientAuth>,
    /// Retries of attempts that failed before any response (gRPC's
    /// `retryPolicy`, per method or for the idempotent ones), throttled by a
    /// budget (`retryThrottling`).
    pub retries: RetryPolicies,
    /// Ejects instances whose calls keep failing (Envoy's outlier
    /// detection); `None` ejects none.
    pub outlier_detection: Option<OutlierDetection>,
    /// The metric families the router reports into (see
    /// [`crate::metrics`]); `None` records nothing. Read when the router (or
    /// a dynamic router's service) is made: a later `reconfigure` does not
    /// change it.
    pub metrics: Option<crate::metrics::RouterMetrics>,
    /// The methods the configuration names for this service (per-method
    /// deadlines, limits, retry policies): once the service's methods are
    /// known, each it does not have is a warning, logged and listed in the
    /// admin service's `ServiceStatus.warnings`.
    pub named_methods: Vec<NamedMethod>,
    /// Whether and how long a call that finds no instance able to take it
    /// waits for one (scale to zero; see [`WaitForInstance`]); `None` (the
    /// default) fails such a call UNAVAILABLE at once.
    pub wait_for_instance: Option<WaitForInstance>,
    /// The router replicas of this router's fleet, sent to bridges in
    /// `Welcome` and `Peers` so each holds a registration with every
    /// replica; `None` (or an empty fleet) sends none. Share one [`Fleet`]
    /// between every config of a process: a `reconfigure` keeps the fleet
    /// the router's first registration found.
    pub fleet: Option<Arc<Fleet>>,
}

impl std::fmt::Debug for RouterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterConfig")
            .field("router_id", &self.router_id)
            .field("strategy", &self.strategy)
            .field("initial_window", &self.initial_window)
            .field("max_frame_size", &self.max_frame_size)
            .field("max_message_size", &self.max_message_size)
            .field("max_response_message_size", &self.max_response_message_size)
            .field(
                "max_partial_response_bytes",
                &self.max_partial_response_bytes,
            )
            .field("accept_compression", &self.accept_compression)
            .field("send_compression", &self.send_compression)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("route_key_header", &self.route_key_header)
            .field("authorize", &self.authorize.as_ref().map(|_| "<fn>"))
            .field("metrics", &self.metrics)
            .field("fleet", &self.fleet)
            .finish_non_exhaustive()
    }
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            router_id: format!("router-{}", std::process::id()),
            strategy: None,
            load_measure: LoadMeasure::default(),
            rng_seed: None,
            initial_window: crate::defaults::WINDOW,
            max_frame_size: crate::defaults::MAX_FRAME,
            max_message_size: crate::defaults::MAX_MESSAGE,
            max_response_message_size: crate::defaults::MAX_RESPONSE_MESSAGE,
            max_partial_response_bytes: crate::defaults::MAX_PARTIAL_RESPONSE,
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(30),
            route_key_header: None,
            accept_compression: vec![
                CompressionEncoding::Gzip,
                CompressionEncoding::Deflate,
                CompressionEncoding::Zstd,
            ],
            send_compression: Vec::new(),
            hello_timeout: Duration::from_secs(10),
            max_queued_bytes: 8 * 1024 * 1024,
            authorize: None,
            deadlines: Deadlines::default(),
            splits: TrafficSplits::default(),
            rate_limits: RateLimits::default(),
            concurrency: ConcurrencyLimits::default(),
            client_auth: None,
            retries: RetryPolicies::default(),
            outlier_detection: None,
            metrics: None,
            named_methods: Vec::new(),
            wait_for_instance: None,
            fleet: None,
        }
    }
}

impl RouterConfig {
    /// The same settings, with calls that find no instance waiting for one
    /// as `waiting` says (see [`RouterConfig::wait_for_instance`]).
    pub fn with_wait_for_instance(mut self, waiting: WaitForInstance) -> Self {
        self.wait_for_instance = Some(waiting);
        self
    }
}

/// Counters of a router, for tests and metrics.
#[derive(Debug, Default)]
pub struct RouterStats {
    calls_started: AtomicU64,
    calls_active: crate::gauge::Gauge,
    calls_retried: AtomicU64,
    retries_throttled: AtomicU64,
    registrations_refused: AtomicU64,
    ejections: AtomicU64,
    /// Calls by the protocol the client used: gRPC, gRPC-Web, Connect.
    by_protocol: [AtomicU64; 3],
}

impl RouterStats {
    /// Calls forwarded to an instance since start.
    pub fn calls_started(&self) -> u64 {
        self.calls_started.load(Ordering::Relaxed)
    }

    /// Calls the router holds state for right now.
    pub fn calls_active(&self) -> u64 {
        u64::try_from(self.calls_active.get()).unwrap_or(u64::MAX)
    }

    /// Waits until the router holds no call state at all.
    pub async fn wait_idle(&self) {
        self.calls_active.zero().await;
    }

    /// A future that completes the next time a call starts while none was
    /// active. Made before reading [`RouterStats::calls_active`], it misses
    /// no start after that read (the KEDA scaler waits on it).
    pub fn became_busy(&self) -> tokio::sync::futures::Notified<'_> {
        self.calls_active.busy()
    }

    /// Retries the retry policy wanted but the retry budget stopped.
    pub fn retries_throttled(&self) -> u64 {
        self.retries_throttled.load(Ordering::Relaxed)
    }

    pub(crate) fn retry_throttled(&self) {
        self.retries_throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// Instances ejected by outlier detection since start.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Registrations refused since start (any reason).
    pub fn registrations_refused(&self) -> u64 {
        self.registrations_refused.load(Ordering::Relaxed)
    }

    pub(crate) fn registration_refused(&self) {
        self.registrations_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn call_started(&self) {
        self.calls_started.fetch_add(1, Ordering::Relaxed);
        self.calls_active.inc();
    }

    pub(crate) fn call_ended(&self) {
        self.calls_active.dec();
    }

    /// Counts a call that arrived over `protocol` (`None`: gRPC).
    pub(crate) fn arrived(&self, protocol: Option<crate::server::Protocol>) {
        self.by_protocol[protocol_index(protocol)].fetch_add(1, Ordering::Relaxed);
    }

    /// Calls since start by the protocol the client used, as
    /// `(protocol, calls)`: `grpc`, `grpc-web`, `connect`.
    pub fn calls_by_protocol(&self) -> [(&'static str, u64); 3] {
        std::array::from_fn(|i| (PROTOCOLS[i], self.by_protocol[i].load(Ordering::Relaxed)))
    }

    /// Retries: calls moved to another instance because the first never got
    /// them, and attempts the retry policy repeated.
    pub fn calls_retried(&self) -> u64 {
        self.calls_retried.load(Ordering::Relaxed)
    }
}

/// The protocols' names, in the order of [`RouterStats::calls_by_protocol`].
const PROTOCOLS: [&str; 3] = ["grpc", "grpc-web", "connect"];

/// The slot of `protocol` in [`RouterStats::calls_by_protocol`].
fn protocol_index(protocol: Option<crate::server::Protocol>) -> usize {
    match protocol {
        Some(crate::server::Protocol::GrpcWeb) => 1,
        Some(crate::server::Protocol::Connect) => 2,
        _ => 0,
    }
}

/// Everything a router shares between its services and tasks: one routed
/// service, its registrations and its settings.
pub(crate) struct RouterCore {
    config: ArcSwap<RouterConfig>,
    /// The rate limiters of `config.rate_limits` (kept across reloads that
    /// leave the limits alone).
    pub(crate) limiters: ArcSwapOption<limit::Limiters>,
    /// The admission stages of `config` (see [`admission`]), built with the
    /// settings.
    pub(crate) admission: ArcSwap<admission::Pipeline>,
    /// The service's calls under its concurrency limit (see
    /// [`concurrency`]).
    pub(crate) concurrency: concurrency::Gate,
    pub(crate) service: ServiceTable,
    pub(crate) registry: Registry,
    pub(crate) balancer: Balancer,
    pub(crate) stats: RouterStats,
    /// The retry throttling's tokens.
    pub(crate) retry_budget: retry::RetryBudget,
    /// The service's last failed calls.
    pub(crate) recent_errors: recent_errors::RecentErrors,
    /// The log budget of refused calls.
    pub(crate) refusals: refusal::LogLimiter,
    /// Settings for methods the service does not have (see
    /// [`method_settings`]).
    method_warnings: std::sync::Mutex<Vec<String>>,
    /// Whether the heartbeat sweeper runs (started with the first
    /// registration, inside the server's runtime).
    pub(crate) sweeper_started: AtomicBool,
    /// Set when the router shuts down: new registrations are refused.
    pub(crate) closing: AtomicBool,
    /// Told when a registration defines or extends the service's methods.
    listener: Option<ServiceListener>,
    /// Whether a server keeps the service's health status (one tracker).
    pub(crate) health_tracked: AtomicBool,
    /// The service's metrics, when the router reports any.
    pub(crate) metrics: Option<crate::metrics::ServiceMetrics>,
    /// The calls waiting for an instance (see [`waiting`]).
    pub(crate) waiting: WaitingCalls,
}

/// Told when a registration defines or extends a service's methods (the
/// dynamic router updates reflection from it).
/// Its flag says whether the registration (re)defined the methods (else it
/// added some).
pub(crate) type ServiceListener = Arc<dyn Fn(&RouterCore, bool) + Send + Sync>;

impl std::fmt::Debug for RouterCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterCore")
            .field("service", &self.service.name())
            .field("instances", &self.registry.len())
            .field("strategy", &self.balancer.strategy())
            .finish_non_exhaustive()
    }
}

impl RouterCore {
    pub(crate) fn new(config: RouterConfig, service: ServiceTable) -> Self {
        let strategy = config.strategy.unwrap_or(service.default_strategy());
        let balancer = match config.rng_seed {
            Some(seed) => Balancer::seeded(strategy, seed),
            None => Balancer::new(strategy),
        }
        .with_load(config.load_measure);
        let metrics = config
            .metrics
            .as_ref()
            .map(|m| m.for_service(service.name()));
        let limiters = limit::Limiters::new(&config.rate_limits).map(Arc::new);
        RouterCore {
            admission: ArcSwap::from_pointee(admission::Pipeline::new(&config, limiters.clone())),
            limiters: ArcSwapOption::new(limiters),
            concurrency: Default::default(),
            metrics,
            config: ArcSwap::from_pointee(config),
            registry: Registry::new(service.name()),
            service,
            balancer,
            stats: RouterStats::default(),
            retry_budget: retry::RetryBudget::default(),
            recent_errors: Default::default(),
            refusals: Default::default(),
            method_warnings: Default::default(),
            sweeper_started: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            listener: None,
            health_tracked: AtomicBool::new(false),
            waiting: WaitingCalls::default(),
        }
    }

    /// The core, shared, and read by its metrics at every scrape.
    pub(crate) fn shared(self) -> Arc<Self> {
        self.check_method_settings();
        let core = Arc::new(self);
        if let Some(metrics) = &core.metrics {
            metrics.track(&core);
        }
        core
    }

    /// The same core, telling `listener` of every change of its methods.
    pub(crate) fn with_listener(mut self, listener: ServiceListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Tells the listener the service's methods changed.
    pub(crate) fn service_changed(&self, defined: bool) {
        self.check_method_settings();
        if let Some(listener) = &self.listener {
            listener(self, defined);
        }
    }

    /// Feeds a finished call's status to outlier detection, ejecting the
    /// instance when it is an outlier and the service's share allows.
    pub(crate) fn record_outcome(&self, instance: &Instance, code: tonic::Code) {
        let config = self.config.load();
        let Some(detection) = &config.outlier_detection else {
            return;
        };
        let now = crate::clock::now_ms();
        if instance.outlier.record(detection, code, now) != outlier::Verdict::Eject {
            return;
        }
        let snapshot = self.registry.snapshot();
        let ejected = snapshot
            .iter()
            .filter(|i| i.outlier.is_ejected(now))
            .count();
        if !outlier::may_eject(detection, ejected, snapshot.len()) {
            tracing::info!(
                service = self.service.name(),
                instance = instance.id(),
                ejected,
                "outlier not ejected: the service's share of ejected instances is reached"
            );
            return;
        }
        let length = instance.outlier.eject(detection, now);
        self.stats.ejections.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            event = "ejected",
            service = self.service.name(),
            instance = instance.id(),
            code = ?code,
            for_ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX),
            times = instance.outlier.times_ejected(),
            "instance ejected as an outlier"
        );
    }

    /// The settings in force now.
    pub(crate) fn config(&self) -> Arc<RouterConfig> {
        self.config.load_full()
    }

    /// Replaces the settings: calls and registrations that start from now
    /// on use them; those in flight keep the ones they started with. When
    /// the registration check (`authorize`) changes, every registration is
    /// checked again: one that no longer passes is closed with the check's
    /// status (UNAUTHENTICATED ...), freeing its id.
    pub(crate) fn reconfigure(&self, config: RouterConfig) {
        let same_limits = match &*self.limiters.load() {
            Some(limiters) => limiters.enforce(&config.rate_limits),
            None => config.rate_limits.is_empty(),
        };
        if !same_limits {
            self.limiters
                .store(limit::Limiters::new(&config.rate_limits).map(Arc::new));
        }
        // Stored before the settings, as the limiters are: a call that sees
        // the new settings meets their admission stages.
        self.admission.store(Arc::new(admission::Pipeline::new(
            &config,
            self.limiters.load_full(),
        )));
        let before = self.config.swap(Arc::new(config));
        self.refresh_strategy();
        if recheck::check_changed(&before, &self.config.load()) {
            // Registrations that no longer pass the new check are closed.
            recheck::recheck_all(self);
        }
        self.check_method_settings();
    }

    /// Compares the methods the settings name with the service's (once
    /// they are known), logging each new warning at WARN.
    fn check_method_settings(&self) {
        if !self.service.is_defined() {
            return;
        }
        let methods = self.service.methods();
        let warnings = unknown_method_warnings(
            self.service.name(),
            &self.config.load().named_methods,
            methods.iter().map(|m| &*m.name),
        );
        let mut current = self
            .method_warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for warning in warnings.iter().filter(|w| !current.contains(w)) {
            tracing::warn!(
                event = "unknown-method",
                service = self.service.name(),
                "{warning}"
            );
        }
        *current = warnings;
    }

    /// The warnings about the service's settings in force now.
    pub(crate) fn warnings(&self) -> Vec<String> {
        self.method_warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets the balancer to the configured strategy, else the service's own.
    pub(crate) fn refresh_strategy(&self) {
        let strategy = self
            .config
            .load()
            .strategy
            .unwrap_or(self.service.default_strategy());
        self.balancer.set_strategy(strategy);
    }

    /// Ends every registration: each bridge gets a GoAway (and reconnects,
    /// here or to another router); calls still in flight fail with
    /// UNAVAILABLE.
    pub(crate) fn close_registrations(&self, reason: &str) {
        let instances = self.registry.snapshot();
        self.registry
            .remove_all(instances.iter().map(|i| i.registration));
        for instance in instances.iter() {
            session::record(self, crate::metrics::Event::Closed);
            instance.shut_after(
                &tonic::Status::unavailable(format!(
                    "router closed the registration of `{}`: {reason}",
                    instance.id()
                )),
                Some(RouterFrame::GoAway(crate::pb::GoAway {
                    reason: reason.to_owned(),
                    refused: false,
                })),
                None,
            );
        }
    }

    /// Serves one client call of the routed service.
    pub(crate) async fn serve_call(self: Arc<Self>, req: Request<Body>) -> Response<Body> {
        let received = tokio::time::Instant::now();
        let mut method = self.service.methods().by_path(req.uri().path()).cloned();
        if method.is_none() && !self.service.is_defined() {
            // Known by name (configured) but never registered: as with no
            // instance left, the service is unavailable, not unknown (after
            // waiting for a registration, when calls wait).
            let (path, headers) = (req.uri().path(), req.headers());
            match waiting::method_once_defined(&self, path, headers, received).await {
                Ok(defined) => method = defined,
                Err(status) => return status.into_http(),
            }
        }
        let Some(method) = method else {
            return unimplemented_response();
        };
        let config = self.config();
        let mut grpc = Grpc::new(RawCodec).max_decoding_message_size(config.max_message_size);
        for encoding in &config.accept_compression {
            grpc = grpc.accept_compressed(*encoding);
        }
        for encoding in &config.send_compression {
            grpc = grpc.send_compressed(*encoding);
        }
        // Streamed requests: tell a client's reset from the end of its stream.
        let (req, body) = if method.kind.single_request() {
            (req, None)
        } else {
            let (req, body) = client_body::watch(req);
            (req, Some(body))
        };
        let handler = call::Forward {
            core: self,
            method,
            received,
            body,
        };
        grpc.streaming(handler, req).await
    }

    /// Serves one `Register` call of a bridge.
    pub(crate) async fn serve_register(self: Arc<Self>, req: Request<Body>) -> Response<Body> {
        let mut grpc = Grpc::new(FrameCodec::<RouterFrame, BridgeFrame>::default())
            .max_decoding_message_size(frame_limit(self.config.load().max_frame_size));
        let handler = session::Register { core: self };
        grpc.streaming(handler, req).await
    }
}

/// A router for the service `S`. Cheap to clone; clones share state.
///
/// Generated code names it per service, for example
/// `pub type GreeterRouter = Router<GreeterSpec>;`.
pub struct Router<S> {
    core: Arc<RouterCore>,
    _service: PhantomData<fn() -> S>,
}

impl<S> Clone for Router<S> {
    fn clone(&self) -> Self {
        Router {
            core: self.core.clone(),
            _service: PhantomData,
        }
    }
}

impl<S> std::fmt::Debug for Router<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("service", &self.core.service.name())
            .field("instances", &self.core.registry.len())
            .finish()
    }
}

impl<S: ServiceSpec> Default for Router<S> {
    fn default() -> Self {
        Self::new(RouterConfig::default())
    }
}

impl<S: ServiceSpec> Router<S> {
    /// A router with `config`.
    pub fn new(config: RouterConfig) -> Self {
        let service = ServiceTable::compiled(S::DESCRIPTOR, S::FILE_DESCRIPTOR_SET);
        Router {
            core: RouterCore::new(config, service).shared(),
            _service: PhantomData,
        }
    }

    pub(crate) fn core(&self) -> &Arc<RouterCore> {
        &self.core
    }

    /// The service this router serves.
    pub fn descriptor(&self) -> &'static ServiceDescriptor {
        S::DESCRIPTOR
    }

    /// The router's id (from its config), as sent to bridges in `Welcome`.
    pub fn config_router_id(&self) -> String {
        self.core.config().router_id.clone()
    }

    /// The settings in force.
    pub fn config(&self) -> Arc<RouterConfig> {
        self.core.config()
    }

    /// Replaces the router's settings (a hot reload): calls and
    /// registrations that start from now on use them, and those in flight
    /// keep the settings they started with. Registrations stay, except when
    /// the new `authorize` hook (another `Arc`, or one where there was none)
    /// refuses them: each live registration is checked again, and one that
    /// no longer passes is closed with the hook's status, freeing its id.
    pub fn reconfigure(&self, config: RouterConfig) {
        self.core.reconfigure(config);
    }

    /// The strategy in use.
    pub fn strategy(&self) -> Strategy {
        self.core.balancer.strategy()
    }

    /// The service's status, as the admin service's `ListServices` reports
    /// it (instances, calls, concurrency limits, recent errors).
    pub fn status(&self) -> crate::pb::ServiceStatus {
        crate::admin::status(&self.core)
    }

    /// The live registrations.
    pub fn registry(&self) -> &Registry {
        &self.core.registry
    }

    /// The router's counters.
    pub fn stats(&self) -> &RouterStats {
        &self.core.stats
    }

    /// The calls waiting for an instance (see
    /// [`RouterConfig::wait_for_instance`]).
    pub fn waiting(&self) -> &WaitingCalls {
        &self.core.waiting
    }

    /// The tonic service that serves `S`'s own paths to clients.
    pub fn client_service(&self) -> RoutedService<S> {
        RouterService::new(self.core.clone())
    }

    /// The tonic service that instances register with.
    pub fn register_service(&self) -> RegisterService<S> {
        RouterService::new(self.core.clone())
    }

    /// Adds both services to a tonic server.
    pub fn add_to<L>(
        &self,
        mut server: tonic::transport::Server<L>,
    ) -> tonic::transport::server::Router<L>
    where
        L: Clone,
    {
        server
            .add_service(self.client_service())
            .add_service(self.register_service())
    }

    /// Ends every registration: each bridge gets a GoAway (and reconnects,
    /// here or to another router); calls still in flight fail with
    /// UNAVAILABLE.
    pub fn close_registrations(&self, reason: &str) {
        self.core.close_registrations(reason);
    }

    /// A shutdown signal for tonic's `serve_with_shutdown`: once `signal`
    /// resolves, waits up to `grace` for the calls in flight, then closes every
    /// registration so the long-lived register streams do not hold the server
    /// open. tonic then waits for every connection to close, which a client
    /// that stopped reading never lets happen; for a shutdown bounded in
    /// time (and NOT_SERVING on health first) serve with
    /// [`RouterServer`](crate::server::RouterServer).
    pub fn shutdown_signal(
        &self,
        signal: impl std::future::Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let router = self.clone();
        async move {
            signal.await;
            let _ = tokio::time::timeout(grace, router.core.stats.wait_idle()).await;
            router.close_registrations("router shutting down");
        }
    }

    /// Adds both services to a routes builder (to combine several routers, health
    /// and reflection on one server).
    pub fn add_to_routes(&self, routes: &mut tonic::service::RoutesBuilder) {
        routes.add_service(self.client_service());
        routes.add_service(self.register_service());
    }
}

/// One of the two tower services a router serves, `K` saying which: the
/// routed service's own paths ([`RoutedService`]) or its register endpoint
/// ([`RegisterService`]). Cheap to clone; clones share the router's state.
pub struct RouterService<S, K> {
    core: Arc<RouterCore>,
    _role: PhantomData<fn() -> (S, K)>,
}

impl<S, K> RouterService<S, K> {
    fn new(core: Arc<RouterCore>) -> Self {
        RouterService {
            core,
            _role: PhantomData,
        }
    }
}

impl<S, K> Clone for RouterService<S, K> {
    fn clone(&self) -> Self {
        RouterService::new(self.core.clone())
    }
}

/// What one of a router's services serves (sealed: only [`Routed`] and
/// [`Registering`]; its functions take the router's private core, which no
/// caller outside the crate can name or call with).
#[allow(private_interfaces)]
mod role {
    use super::*;

    /// What one of a router's services serves.
    pub trait Role<S: ServiceSpec> {
        /// The gRPC service name it is served under.
        const NAME: &'static str;

        /// Handles one HTTP/2 request.
        fn serve(
            core: Arc<RouterCore>,
            request: Request<Body>,
        ) -> BoxFuture<'static, Response<Body>>;
    }
}
use role::Role;

/// The routed service's own paths (`/pkg.Service/Method`), for clients.
#[derive(Debug)]
pub enum Routed {}

/// The register endpoint (`/pkg.ServiceRouter/Register`), for instances.
#[derive(Debug)]
pub enum Registering {}

/// Serves a routed service's own paths (`/pkg.Service/Method`) to clients.
pub type RoutedService<S> = RouterService<S, Routed>;

/// Serves `/pkg.ServiceRouter/Register`, where instances register.
pub type RegisterService<S> = RouterService<S, Registering>;

#[allow(private_interfaces)]
impl<S: ServiceSpec> Role<S> for Routed {
    const NAME: &'static str = S::NAME;

    fn serve(core: Arc<RouterCore>, req: Request<Body>) -> BoxFuture<'static, Response<Body>> {
        Box::pin(core.serve_call(req))
    }
}

#[allow(private_interfaces)]
impl<S: ServiceSpec> Role<S> for Registering {
    const NAME: &'static str = S::REGISTER_NAME;

    fn serve(core: Arc<RouterCore>, req: Request<Body>) -> BoxFuture<'static, Response<Body>> {
        Box::pin(async move {
            let path = req.uri().path();
            if path
                .strip_prefix('/')
                .and_then(|p| p.strip_suffix("/Register"))
                != Some(S::REGISTER_NAME)
            {
                // A bridge of another service, or a client at the
                // registrations address.
                let status = tonic::Status::unimplemented(format!(
                    "this router registers only `{}` (`/{}/Register`), not `{path}`",
                    S::NAME,
                    S::REGISTER_NAME
                ));
                return local_reply::after_first_message(req, status).await;
            }
            core.serve_register(req).await
        })
    }
}

impl<S: ServiceSpec, K: Role<S>> NamedService for RouterService<S, K> {
    const NAME: &'static str = K::NAME;
}

/// A gRPC response with `grpc-status: UNIMPLEMENTED`, as tonic answers an
/// unknown method.
fn unimplemented_response() -> Response<Body> {
    let mut response = Response::new(Body::default());
    let headers = response.headers_mut();
    headers.insert(
        "grpc-status",
        http::HeaderValue::from(tonic::Code::Unimplemented as i32),
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

impl<S: ServiceSpec, K: Role<S>> tower::Service<Request<Body>> for RouterService<S, K> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let response = K::serve(self.core.clone(), req);
        Box::pin(async move { Ok(response.await) })
    }
}
