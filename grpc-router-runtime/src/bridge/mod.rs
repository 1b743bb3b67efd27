//! The bridge: connects a user's ordinary tonic service to routers.
//!
//! The bridge dials out to each router, registers over one `Register` stream,
//! and runs every call the router forwards through the user's generated tonic
//! server (`GreeterServer<MyGreeter>`) as a real HTTP/2-shaped request: tonic
//! itself decodes the messages, builds the `tonic::Request` with metadata and
//! `Streaming` inputs, and encodes the response and status. The user's code
//! cannot tell it was not called directly.
//!
//! ```no_run
//! # use router_runtime::codegen::*;
//! # async fn demo<S: ServiceSpec, T>(bridge: Bridge<S, T>)
//! # where T: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>, Error = std::convert::Infallible> + Clone + Send + Sync + 'static, T::Future: Send {
//! // `GreeterBridge::new(MyGreeter)` is generated and returns a `Bridge`.
//! let handle = bridge.connect(BridgeConfig::new("http://127.0.0.1:50051").instance_id("a"));
//! handle.registered().await;
//! // ... later, finish calls in flight and leave:
//! handle.shutdown().await;
//! # }
//! ```

pub(crate) mod body;
mod call;
mod endpoint;
mod error;
mod fleet;
pub(crate) mod session;

pub use endpoint::EndpointError;
pub use error::RegistrationError;

use std::collections::HashMap;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::descriptor::ServiceSpec;

/// The certificates a client presented to the router over TLS (DER, the
/// client's own first), in the request extensions of a routed call.
///
/// tonic's `Request::peer_certs()` reads connection info only tonic can
/// build, so it is `None` in a routed call; [`peer_certificates`] reads
/// either, so one handler works routed and direct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificates(pub Arc<Vec<bytes::Bytes>>);

/// The client's TLS certificates (DER, its own first) in a handler: those
/// the router saw for a routed call, tonic's `peer_certs()` for a direct one;
/// `None` for plain connections or clients without a certificate.
///
/// ```
/// # fn handler(request: &tonic::Request<()>) {
/// if let Some(certs) = router_runtime::bridge::peer_certificates(request) {
///     println!("the client presented {} certificates", certs.len());
/// }
/// # }
/// ```
pub fn peer_certificates<T>(request: &tonic::Request<T>) -> Option<Arc<Vec<bytes::Bytes>>> {
    if let Some(routed) = request.extensions().get::<PeerCertificates>() {
        return Some(routed.0.clone());
    }
    request.peer_certs().map(|certs| {
        Arc::new(
            certs
                .iter()
                .map(|c| bytes::Bytes::copy_from_slice(c.as_ref()))
                .collect(),
        )
    })
}

/// The bridge's former name for [`BridgeConfig`], kept so existing code
/// builds.
pub type BridgeOptions = BridgeConfig;

/// How a bridge registers and behaves (the bridge's counterpart of
/// [`crate::router::RouterConfig`]).
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Router endpoints (`http://host:port`); the bridge registers with every
    /// one of them.
    pub endpoints: Vec<String>,
    /// The instance's stable id. Defaults to a random one.
    pub instance_id: String,
    /// Labels routers can select on (zone, version, tenant ...).
    pub labels: HashMap<String, String>,
    /// Weight for the weighted strategy.
    pub weight: u32,
    /// The most calls the instance takes at once; 0 for no limit.
    pub max_concurrent_calls: u32,
    /// Routing keys this instance claims: a call whose routing key (the
    /// method's `route_key` field, or the router's routing-key header) equals
    /// one of them goes to this instance while it is available, whatever the
    /// strategy.
    pub routing_keys: Vec<String>,
    /// Credit, in bytes, granted to the router for each call's requests.
    pub initial_window: u32,
    /// The largest frame payload accepted from the router.
    pub max_frame_size: u32,
    /// The largest request message the bridge reassembles, in bytes.
    pub max_message_size: usize,
    /// First reconnect delay; doubles up to `reconnect_max`, with jitter.
    pub reconnect_initial: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// How long to wait for a TCP connection.
    pub connect_timeout: Duration,
    /// How long a shutdown waits for calls in flight before dropping them.
    pub drain_timeout: Duration,
    /// When set, each endpoint's host name is resolved to all its addresses
    /// and re-resolved this often; the bridge registers with every address
    /// (a router fleet behind one DNS name).
    pub resolve_interval: Option<Duration>,
    /// How names are resolved when `resolve_interval` is set.
    pub resolver: Resolver,
    /// TLS for the connections to routers (`https://` endpoints): the CA to
    /// trust, the server name, a client identity for mutual TLS.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// Metadata sent with every `Register` call, for the router's
    /// `RouterConfig::authorize` (for example `authorization: Bearer ...`).
    pub register_metadata: tonic::metadata::MetadataMap,
    /// Whether a call's first poll runs on the registration's reader instead
    /// of a task of its own (default `true`). A handler that answers without
    /// waiting (most unary calls) then costs no task spawn and no wake-up; a
    /// call that waits moves to its own task at its first `Pending`. Turn it
    /// off when handlers do long synchronous work before their first
    /// `.await`: that work would hold up the frames of the registration's
    /// other calls while it runs.
    pub inline_first_poll: bool,
    /// Whether the bridge follows a router fleet (default `true`): a router
    /// with a `[cluster]` lists its replicas in `Welcome` and `Peers`, and
    /// the bridge then holds one registration per replica (at most 64),
    /// whatever endpoint it was given (a balancer in front of the fleet, or
    /// one replica). Routers without a fleet list none: the bridge
    /// registers with its endpoints only, as when this is off.
    pub discovery: bool,
}

/// Resolves a router host name to the addresses of every router replica.
pub trait Resolve: Send + Sync + 'static {
    /// All addresses of `host` on `port`.
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> futures_util::future::BoxFuture<'static, std::io::Result<Vec<std::net::SocketAddr>>>;
}

/// The system resolver (`getaddrinfo` through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> futures_util::future::BoxFuture<'static, std::io::Result<Vec<std::net::SocketAddr>>> {
        let target = format!("{host}:{port}");
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
    }
}

/// A shared [`Resolve`] implementation.
#[derive(Clone)]
pub struct Resolver(pub Arc<dyn Resolve>);

impl Default for Resolver {
    fn default() -> Self {
        Resolver(Arc::new(SystemResolver))
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl BridgeConfig {
    /// Checks every endpoint: `http://host:port`, or `https://host:port`
    /// with [`BridgeConfig::tls`]. [`Bridge::connect`] makes the same check
    /// and does not dial (or retry) an endpoint that fails it, reporting the
    /// error in [`BridgeHandle::registrations`]; call this first to fail at
    /// once.
    ///
    /// ```
    /// use router_runtime::bridge::{BridgeConfig, EndpointError};
    ///
    /// assert!(BridgeConfig::new("http://127.0.0.1:50051").validate().is_ok());
    /// assert!(matches!(
    ///     BridgeConfig::new("127.0.0.1:50051").validate(),
    ///     Err(EndpointError::MissingScheme { .. })
    /// ));
    /// ```
    pub fn validate(&self) -> Result<(), EndpointError> {
        self.endpoints
            .iter()
            .try_for_each(|e| endpoint::check(e, self.tls.is_some()))
    }

    /// Options registering with one router at `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        BridgeConfig {
            endpoints: vec![endpoint.into()],
            instance_id: format!("instance-{:016x}", rand::random::<u64>()),
            labels: HashMap::new(),
            weight: 1,
            max_concurrent_calls: 0,
            routing_keys: Vec::new(),
            initial_window: crate::defaults::WINDOW,
            max_frame_size: crate::defaults::MAX_FRAME,
            max_message_size: crate::defaults::MAX_MESSAGE,
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            resolve_interval: None,
            resolver: Resolver::default(),
            register_metadata: tonic::metadata::MetadataMap::new(),
            tls: None,
            inline_first_poll: true,
            discovery: true,
        }
    }

    /// Resolves each endpoint's host to all its addresses every `interval` and
    /// registers with each (see [`BridgeConfig::resolve_interval`]).
    pub fn resolve_every(mut self, interval: Duration) -> Self {
        self.resolve_interval = Some(interval);
        self
    }

    /// Uses `resolver` for [`BridgeConfig::resolve_every`].
    pub fn resolver(mut self, resolver: impl Resolve) -> Self {
        self.resolver = Resolver(Arc::new(resolver));
        self
    }

    /// Also registers with `endpoint`.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoints.push(endpoint.into());
        self
    }

    /// Sets the instance id.
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = id.into();
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the weight.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Claims a routing key (see [`BridgeConfig::routing_keys`]).
    pub fn routing_key(mut self, key: impl Into<String>) -> Self {
        self.routing_keys.push(key.into());
        self
    }

    /// Adds metadata to the `Register` call (see
    /// [`BridgeConfig::register_metadata`]). Keys that are not valid ASCII
    /// metadata keys or values are refused.
    pub fn register_header(
        mut self,
        key: &'static str,
        value: &str,
    ) -> Result<Self, tonic::metadata::errors::InvalidMetadataValue> {
        self.register_metadata.insert(key, value.parse()?);
        Ok(self)
    }

    /// Connects to routers over TLS (see [`BridgeConfig::tls`]).
    pub fn tls(mut self, config: tonic::transport::ClientTlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Runs each call's first poll on the registration's reader, or not (see
    /// [`BridgeConfig::inline_first_poll`]).
    pub fn inline_first_poll(mut self, inline: bool) -> Self {
        self.inline_first_poll = inline;
        self
    }

    /// Follows a router fleet, or not (see [`BridgeConfig::discovery`]).
    pub fn discovery(mut self, follow: bool) -> Self {
        self.discovery = follow;
        self
    }

    /// Sets the concurrency limit.
    pub fn max_concurrent_calls(mut self, limit: u32) -> Self {
        self.max_concurrent_calls = limit;
        self
    }

    /// Sets the largest request message, in bytes.
    pub fn max_message_size(mut self, limit: usize) -> Self {
        self.max_message_size = limit;
        self
    }
}

/// The state of a bridge's registrations, observable through
/// [`BridgeHandle::registrations`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeState {
    /// How many routers the bridge is registered with now.
    pub registered: usize,
    /// The last registration error, if any.
    pub last_error: Option<RegistrationError>,
    /// How many routers hold this bridge's instance id for another bridge
    /// process: the registration there was replaced (the other process took
    /// the id over while this one did not answer a ping, e.g. frozen or cut
    /// off) or is refused as replaced. The bridge tries again there at its
    /// longest backoff and, once registered there again, no longer counts
    /// it. Non-zero means two processes run with one instance id.
    pub replaced: usize,
}

/// A service the bridge can run calls through: what tonic generates for a
/// service (`GreeterServer<T>`), or any tower service of the same shape.
pub trait BridgedService:
    tower::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error = Infallible,
        Future: Send,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> BridgedService for T where
    T: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
            Future: Send,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// Connects the service `T` (the user's implementation wrapped in tonic's
/// generated server) to routers as an instance of `S`.
pub struct Bridge<S, T> {
    service: T,
    _service: PhantomData<fn() -> S>,
}

impl<S, T: std::fmt::Debug> std::fmt::Debug for Bridge<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("service", &self.service)
            .finish()
    }
}

impl<S: ServiceSpec, T: BridgedService> Bridge<S, T> {
    /// A bridge running calls through `service`.
    pub fn new(service: T) -> Self {
        Bridge {
            service,
            _service: PhantomData,
        }
    }

    /// Registers with every endpoint of `options` in the background, keeping
    /// each registration alive and reconnecting with backoff. Must be called
    /// inside a tokio runtime.
    pub fn connect(self, options: BridgeConfig) -> BridgeHandle {
        let shutdown = CancellationToken::new();
        let abort = CancellationToken::new();
        let (state, state_rx) = watch::channel(BridgeState::default());
        let shared = Arc::new(session::Shared {
            service_name: S::NAME,
            descriptor: S::DESCRIPTOR,
            register_path: format!("/{}/Register", S::REGISTER_NAME),
            description: S::DESCRIPTOR.describe(S::FILE_DESCRIPTOR_SET),
            options,
            shutdown: shutdown.clone(),
            abort: abort.clone(),
            state,
            serving: watch::Sender::new(true),
            active: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            incarnation: format!("{:032x}", rand::random::<u128>()),
            discovery: Default::default(),
        });
        let mut tasks: Vec<JoinHandle<()>> = shared
            .options
            .endpoints
            .iter()
            .map(|endpoint| match shared.options.resolve_interval {
                Some(interval) => tokio::spawn(session::run_resolved(
                    shared.clone(),
                    self.service.clone(),
                    endpoint.clone(),
                    interval,
                )),
                None => tokio::spawn(session::run_endpoint(
                    shared.clone(),
                    self.service.clone(),
                    endpoint.clone(),
                    shared.shutdown.clone(),
                    fleet::Role::Seed,
                )),
            })
            .collect();
        if shared.options.discovery {
            tasks.push(tokio::spawn(fleet::follow(
                shared.clone(),
                self.service.clone(),
            )));
        }
        BridgeHandle {
            shared,
            shutdown,
            abort,
            state: state_rx,
            tasks,
        }
    }
}

/// Controls a connected bridge.
pub struct BridgeHandle {
    shared: Arc<session::Shared>,
    shutdown: CancellationToken,
    abort: CancellationToken,
    state: watch::Receiver<BridgeState>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for BridgeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeHandle")
            .field("instance_id", &self.shared.options.instance_id)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl BridgeHandle {
    /// Reports the instance serving or not serving to every router at once
    /// (`grpc.health.v1` semantics): a not-serving instance gets no new calls
    /// until it reports serving again; its calls in flight continue.
    pub fn set_serving(&self, serving: bool) {
        self.shared.serving.send_replace(serving);
    }

    /// The instance id this bridge registers as.
    pub fn instance_id(&self) -> &str {
        &self.shared.options.instance_id
    }

    /// Waits until the bridge is registered with at least one router.
    pub async fn registered(&self) {
        self.registered_with(1).await;
    }

    /// Waits until the bridge is registered with `n` routers.
    pub async fn registered_with(&self, n: usize) {
        let mut state = self.state.clone();
        let _ = state.wait_for(|s| s.registered >= n).await;
    }

    /// The current registration state.
    pub fn registrations(&self) -> watch::Receiver<BridgeState> {
        self.state.clone()
    }

    /// Drains and leaves: tells every router to send no new calls, lets the
    /// calls in flight finish (up to `drain_timeout`), then disconnects.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Drops every registration at once, failing calls in flight, as a crash
    /// would. For tests and emergencies.
    pub async fn abort(self) {
        self.abort.cancel();
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
