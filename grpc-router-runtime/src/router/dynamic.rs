//! A router that learns the services it routes from their registrations:
//! the `grpc-router` daemon's router, with no service compiled in.
//!
//! A bridge registers at `/<package>.<Service>Router/Register` as with a
//! compiled [`Router`](super::Router); its `Hello` describes the service
//! (methods, kinds, tags, routing keys, and the encoded descriptor set for
//! reflection). The first registration defines the service, later ones must
//! be compatible (the rule is in [`service`](super::service)'s docs and the
//! README), and every call is forwarded by the same code as a compiled
//! router's: each service gets its own registry, balancer and counters.
//!
//! ```no_run
//! use router_runtime::router::{DynamicRouter, RouterConfig};
//!
//! let router = DynamicRouter::new(RouterConfig::default());
//! // Services named here are known (UNAVAILABLE, not UNIMPLEMENTED, while no
//! // instance is registered) and get their own settings.
//! router.configure(RouterConfig::default(), [("myservice.v1.Greeter".to_owned(), RouterConfig::default())]);
//! // A catch-all tower service: serve it as a tonic server's fallback.
//! let _service = router.clone();
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use tonic::body::Body;
use tracing::info;

use super::local_reply;
use super::service::ServiceTable;
use super::{Registry, RouterConfig, RouterCore, RouterStats, Strategy};

/// The most services a dynamic router learns by default.
pub const DEFAULT_MAX_SERVICES: usize = 1024;

/// A router for every service that registers with it. Cheap to clone;
/// clones share state.
#[derive(Clone)]
pub struct DynamicRouter {
    inner: Arc<Inner>,
}

struct Inner {
    /// The settings of services the configuration does not name.
    defaults: ArcSwap<RouterConfig>,
    /// Per-service settings; these services are always known.
    named: ArcSwap<HashMap<String, RouterConfig>>,
    /// Every service known or being registered, by name.
    services: ArcSwap<HashMap<Arc<str>, Arc<RouterCore>>>,
    write: Mutex<()>,
    max_services: usize,
    subscribers: Mutex<Vec<Subscriber>>,
    /// The metrics every service reports into (from the config the router
    /// was made with).
    metrics: Option<crate::metrics::RouterMetrics>,
    /// Set by [`DynamicRouter::refuse_registrations`]: services made from
    /// now on refuse registrations too.
    closing: std::sync::atomic::AtomicBool,
}

type Subscriber = Arc<dyn Fn(&ServiceHandle, ServiceChange) + Send + Sync>;

/// What happened to a service of a [`DynamicRouter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceChange {
    /// A registration defined (or redefined) the service's methods.
    Defined,
    /// A registration added methods.
    Extended,
    /// The service became known without registrations (named in the
    /// configuration).
    Configured,
}

impl std::fmt::Debug for DynamicRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicRouter")
            .field("services", &self.service_names())
            .finish()
    }
}

impl Default for DynamicRouter {
    fn default() -> Self {
        Self::new(RouterConfig::default())
    }
}

impl DynamicRouter {
    /// A router that knows no service yet; services get `defaults`. Every
    /// service reports into `defaults.metrics` (taken once, here: the configs
    /// of later [`DynamicRouter::configure`] calls do not change it).
    pub fn new(defaults: RouterConfig) -> Self {
        Self::with_max_services(defaults, DEFAULT_MAX_SERVICES)
    }

    /// A router that learns at most `max_services` services; registrations
    /// of more are refused with RESOURCE_EXHAUSTED.
    pub fn with_max_services(defaults: RouterConfig, max_services: usize) -> Self {
        DynamicRouter {
            inner: Arc::new(Inner {
                metrics: defaults.metrics.clone(),
                defaults: ArcSwap::from_pointee(defaults),
                named: ArcSwap::from_pointee(HashMap::new()),
                services: ArcSwap::from_pointee(HashMap::new()),
                write: Mutex::new(()),
                max_services,
                subscribers: Mutex::new(Vec::new()),
                closing: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Sets the settings (a hot reload): `defaults` for every service not in
    /// `named`, which are always known. Calls and registrations that start
    /// from now on use them; none in flight is dropped.
    pub fn configure(
        &self,
        defaults: RouterConfig,
        named: impl IntoIterator<Item = (String, RouterConfig)>,
    ) {
        let named: HashMap<String, RouterConfig> = named.into_iter().collect();
        let mut configured = Vec::new();
        {
            let _write = self.write();
            self.inner.defaults.store(Arc::new(defaults));
            self.inner.named.store(Arc::new(named.clone()));
            let mut services = HashMap::clone(&self.inner.services.load());
            for core in services.values() {
                core.reconfigure(self.config_for(core.service.name()));
            }
            for name in named.keys() {
                if !services.contains_key(name.as_str()) {
                    let core = self.new_core(name);
                    services.insert(name.as_str().into(), core.clone());
                    configured.push(core);
                }
            }
            self.inner.services.store(Arc::new(services));
        }
        for core in configured {
            self.notify(&core, ServiceChange::Configured);
        }
    }

    /// Calls `subscriber` for every service known now (as
    /// [`ServiceChange::Configured`] or [`ServiceChange::Defined`]) and then
    /// whenever a service is defined, extended or configured.
    pub fn subscribe(
        &self,
        subscriber: impl Fn(&ServiceHandle, ServiceChange) + Send + Sync + 'static,
    ) {
        let subscriber: Subscriber = Arc::new(subscriber);
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(subscriber.clone());
        for core in self.inner.services.load().values() {
            let change = if core.service.is_defined() {
                ServiceChange::Defined
            } else {
                ServiceChange::Configured
            };
            if core.service.is_defined() || self.is_named(core.service.name()) {
                subscriber(&ServiceHandle { core: core.clone() }, change);
            }
        }
    }

    /// The services known now: named in the configuration or defined by a
    /// registration, sorted by name.
    pub fn services(&self) -> Vec<ServiceHandle> {
        let mut services: Vec<ServiceHandle> = self
            .inner
            .services
            .load()
            .values()
            .filter(|core| core.service.is_defined() || self.is_named(core.service.name()))
            .map(|core| ServiceHandle { core: core.clone() })
            .collect();
        services.sort_by(|a, b| a.name().cmp(b.name()));
        services
    }

    /// The names of the services known now, sorted.
    pub fn service_names(&self) -> Vec<String> {
        self.services()
            .iter()
            .map(|s| s.name().to_owned())
            .collect()
    }

    /// The known service `name`.
    pub fn service(&self, name: &str) -> Option<ServiceHandle> {
        self.services().into_iter().find(|s| s.name() == name)
    }

    /// Makes the service `description` describes known, with the methods it
    /// describes and no instance, as if an instance had registered and left:
    /// calls answer UNAVAILABLE (not UNIMPLEMENTED) and reflection describes
    /// it until an instance registers, whose description then defines it
    /// afresh. For descriptions kept from an earlier run (the daemon's state
    /// file). A service known already is left as it is; an invalid
    /// description is refused (INVALID_ARGUMENT naming what is wrong), and
    /// so is one past the router's service limit (RESOURCE_EXHAUSTED).
    pub fn remember(
        &self,
        description: &crate::pb::ServiceDescription,
    ) -> Result<ServiceHandle, tonic::Status> {
        if description.methods.is_empty() {
            return Err(tonic::Status::invalid_argument(format!(
                "the description of `{}` has no method",
                description.name
            )));
        }
        let core = self.core_for_register(&description.name)?;
        if !core.service.is_defined() {
            let admitted = core.service.admit(
                Some(description),
                super::bridge_kind::BridgeKind::Other,
                || false,
                |_| (),
            );
            if let Err(status) = admitted {
                self.forget_if_unused(&core);
                return Err(status);
            }
            core.refresh_strategy();
            self.notify(&core, ServiceChange::Defined);
        }
        Ok(ServiceHandle { core })
    }

    /// Ends every registration of every service (see
    /// [`Router::close_registrations`](super::Router::close_registrations)).
    pub fn close_registrations(&self, reason: &str) {
        for core in self.inner.services.load().values() {
            core.close_registrations(reason);
        }
    }

    /// Refuses new registrations from now on (the router is shutting down);
    /// the current ones stay.
    pub fn refuse_registrations(&self) {
        let _write = self.write();
        self.inner
            .closing
            .store(true, std::sync::atomic::Ordering::Release);
        for core in self.inner.services.load().values() {
            core.closing
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Calls in flight through every service.
    pub fn calls_active(&self) -> u64 {
        self.inner
            .services
            .load()
            .values()
            .map(|core| core.stats.calls_active())
            .sum()
    }

    /// Waits until no call is in flight through any service.
    pub async fn wait_idle(&self) {
        let cores: Vec<Arc<RouterCore>> = self.inner.services.load().values().cloned().collect();
        for core in cores {
            core.stats.wait_idle().await;
        }
        // Calls may have started on an earlier service meanwhile.
        if self.calls_active() > 0 {
            Box::pin(self.wait_idle()).await;
        }
    }

    pub(crate) fn cores(&self) -> Vec<Arc<RouterCore>> {
        self.services().into_iter().map(|s| s.core).collect()
    }

    fn write(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.write.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_named(&self, name: &str) -> bool {
        self.inner.named.load().contains_key(name)
    }

    fn config_for(&self, name: &str) -> RouterConfig {
        match self.inner.named.load().get(name) {
            Some(config) => config.clone(),
            None => RouterConfig::clone(&self.inner.defaults.load()),
        }
    }

    fn new_core(&self, name: &str) -> Arc<RouterCore> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let listener = Arc::new(move |core: &RouterCore, defined: bool| {
            let Some(inner) = weak.upgrade() else { return };
            let router = DynamicRouter { inner };
            let Some(core) = router
                .inner
                .services
                .load()
                .get(core.service.name())
                .cloned()
            else {
                return;
            };
            if defined {
                info!(
                    service = core.service.name(),
                    "learnt the service from a registration"
                );
            }
            let change = if defined {
                ServiceChange::Defined
            } else {
                ServiceChange::Extended
            };
            router.notify(&core, change);
        });
        let mut config = self.config_for(name);
        config.metrics = self.inner.metrics.clone();
        let core = RouterCore::new(config, ServiceTable::learning(name)).with_listener(listener);
        // Under the write lock, as `refuse_registrations`.
        core.closing.store(
            self.inner
                .closing
                .load(std::sync::atomic::Ordering::Acquire),
            std::sync::atomic::Ordering::Release,
        );
        core.shared()
    }

    fn notify(&self, core: &Arc<RouterCore>, change: ServiceChange) {
        let subscribers: Vec<Subscriber> = self
            .inner
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let handle = ServiceHandle { core: core.clone() };
        for subscriber in subscribers {
            subscriber(&handle, change);
        }
    }

    /// The core registrations of `name` go to, made if new (unless the
    /// router is at its service limit).
    fn core_for_register(&self, name: &str) -> Result<Arc<RouterCore>, tonic::Status> {
        if let Some(core) = self.inner.services.load().get(name) {
            return Ok(core.clone());
        }
        let _write = self.write();
        let mut services = HashMap::clone(&self.inner.services.load());
        if let Some(core) = services.get(name) {
            return Ok(core.clone());
        }
        if services.len() >= self.inner.max_services {
            return Err(tonic::Status::resource_exhausted(format!(
                "this router routes at most {} services; `{name}` is not one of them",
                self.inner.max_services
            )));
        }
        let core = self.new_core(name);
        services.insert(name.into(), core.clone());
        self.inner.services.store(Arc::new(services));
        Ok(core)
    }

    /// Forgets `core` if no registration defined it, none is registered and
    /// the configuration does not name it (a failed first registration).
    fn forget_if_unused(&self, core: &Arc<RouterCore>) {
        let name = core.service.name();
        if self.is_named(name) {
            return;
        }
        core.service.retire_if(
            || core.registry.is_empty(),
            || {
                let _write = self.write();
                let mut services = HashMap::clone(&self.inner.services.load());
                if services.get(name).is_some_and(|c| Arc::ptr_eq(c, core)) {
                    services.remove(name);
                    self.inner.services.store(Arc::new(services));
                }
            },
        );
    }

    /// The router's catch-all service for client calls only: registrations
    /// are refused (UNIMPLEMENTED), for a listener only clients reach.
    pub fn client_side(&self) -> DynamicSide {
        DynamicSide {
            router: self.clone(),
            side: Side::Calls,
        }
    }

    /// The router's catch-all service for registrations only, for a listener
    /// only instances reach.
    pub fn register_side(&self) -> DynamicSide {
        DynamicSide {
            router: self.clone(),
            side: Side::Registrations,
        }
    }

    async fn serve(self, req: Request<Body>, side: Side) -> Response<Body> {
        let path = req.uri().path();
        let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.rsplit_once('/'))
        else {
            return super::unimplemented_response();
        };
        let known = self.inner.services.load().get(service).cloned();
        if side != Side::Registrations
            && let Some(core) = known
            && (core.service.is_defined() || self.is_named(service))
        {
            return core.serve_call(req).await;
        }
        let Some(name) = service
            .strip_suffix("Router")
            .filter(|_| method == "Register" && side != Side::Calls)
        else {
            if side == Side::Registrations {
                // Someone pointed a client (or `grpc-router status`) here.
                let status = tonic::Status::unimplemented(format!(
                    "this address serves only registrations \
                     (`/<package>.<Service>Router/Register`), not `{path}`"
                ));
                return local_reply::after_first_message(req, status).await;
            }
            if method == "Register" && service.ends_with("Router") {
                // A bridge pointed at the clients' listener.
                let status = tonic::Status::unimplemented(format!(
                    "this address serves clients, not registrations (`{path}`): \
                     point the bridge at the router's registrations listener"
                ));
                return local_reply::after_first_message(req, status).await;
            }
            return super::unimplemented_response();
        };
        let name = name.to_owned();
        let core = match self.core_for_register(&name) {
            Ok(core) => core,
            Err(status) => {
                if let Some(metrics) = &self.inner.metrics {
                    metrics.refused_unknown(status.code());
                }
                return local_reply::after_first_message(req, status).await;
            }
        };
        let response = core.clone().serve_register(req).await;
        if !core.service.is_defined() {
            self.forget_if_unused(&core);
        }
        response
    }
}

impl tower::Service<Request<Body>> for DynamicRouter {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let router = self.clone();
        Box::pin(async move { Ok(router.serve(req, Side::Both).await) })
    }
}

/// Which requests a [`DynamicSide`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Calls,
    Registrations,
    Both,
}

/// A [`DynamicRouter`] serving only client calls or only registrations
/// ([`DynamicRouter::client_side`], [`DynamicRouter::register_side`]), so
/// the two can be served on listeners firewalled apart.
#[derive(Debug, Clone)]
pub struct DynamicSide {
    router: DynamicRouter,
    side: Side,
}

impl tower::Service<Request<Body>> for DynamicSide {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let router = self.router.clone();
        let side = self.side;
        Box::pin(async move { Ok(router.serve(req, side).await) })
    }
}

/// One service of a [`DynamicRouter`]: its registrations and counters.
#[derive(Clone)]
pub struct ServiceHandle {
    core: Arc<RouterCore>,
}

impl std::fmt::Debug for ServiceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.core.fmt(f)
    }
}

impl ServiceHandle {
    /// The fully qualified service name.
    pub fn name(&self) -> &str {
        self.core.service.name()
    }

    /// The live registrations.
    pub fn registry(&self) -> &Registry {
        &self.core.registry
    }

    /// The service's counters.
    pub fn stats(&self) -> &RouterStats {
        &self.core.stats
    }

    /// The service's calls waiting for an instance (see
    /// [`RouterConfig::wait_for_instance`]).
    pub fn waiting(&self) -> &super::WaitingCalls {
        &self.core.waiting
    }

    /// The strategy in use.
    pub fn strategy(&self) -> Strategy {
        self.core.balancer.strategy()
    }

    /// The full gRPC paths of the methods known now.
    pub fn method_paths(&self) -> Vec<String> {
        self.core
            .service
            .methods()
            .iter()
            .map(|m| m.path.to_string())
            .collect()
    }

    /// The encoded `FileDescriptorSet` the latest defining or extending
    /// registration sent (empty when it sent none).
    pub fn file_descriptor_set(&self) -> bytes::Bytes {
        self.core.service.methods().file_descriptor_set.clone()
    }

    /// The service as its registrations described it (what
    /// [`DynamicRouter::remember`] takes back): its methods, default
    /// strategy and descriptor set; `None` while no registration described
    /// it (a service only named in the configuration).
    pub fn description(&self) -> Option<crate::pb::ServiceDescription> {
        let methods = self.core.service.methods();
        if methods.is_empty() {
            return None;
        }
        Some(crate::pb::ServiceDescription {
            name: self.name().to_owned(),
            methods: methods
                .iter()
                .map(|m| crate::pb::MethodDescription {
                    name: m.name.to_string(),
                    path: m.path.to_string(),
                    tag: m.tag,
                    kind: m.kind.wire() as i32,
                    route_key: m.route_key.to_vec(),
                    idempotent: m.idempotent,
                })
                .collect(),
            default_strategy: self.core.service.default_strategy().to_string(),
            file_descriptor_set: methods.file_descriptor_set.clone(),
        })
    }

    /// Whether any instance of the service can take a call now.
    pub fn is_serving(&self) -> bool {
        self.core.registry.is_serving()
    }

    pub(crate) fn core(&self) -> &Arc<RouterCore> {
        &self.core
    }
}
