//! The router's admin service (`router.v1.RouterAdmin`): which services it
//! routes, with which strategy, to which instances (ids, labels, call
//! counts, recent error messages). That is a map of the fleet: serve it
//! where only operators reach it (a private listener), or behind a check of
//! the caller's credential ([`AdminService::with_auth`]).
//!
//! ```no_run
//! # use router_runtime::admin::AdminService;
//! # use router_runtime::codegen::*;
//! # fn demo<S: ServiceSpec>(router: &Router<S>) {
//! let admin = AdminService::new("router-1").with_router(router);
//! let _service = admin.into_server(); // add to an operators-only tonic server
//! # }
//! ```

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::descriptor::{ServiceSpec, Strategy};
use crate::pb;
use crate::pb::router_admin_server::{RouterAdmin, RouterAdminServer};
use crate::router::{DynamicRouter, Router, RouterCore};

/// Decides whether an admin call may go on, from its metadata (for example
/// `authorization`): `Err` fails it with that status (UNAUTHENTICATED ...).
pub type AuthorizeAdmin =
    Arc<dyn Fn(&tonic::metadata::MetadataMap) -> Result<(), Status> + Send + Sync>;

/// Serves `router.v1.RouterAdmin` for a set of routers.
#[derive(Clone)]
pub struct AdminService {
    router_id: String,
    routers: Vec<Arc<RouterCore>>,
    dynamic: Vec<DynamicRouter>,
    auth: Option<AuthorizeAdmin>,
}

impl std::fmt::Debug for AdminService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminService")
            .field("router_id", &self.router_id)
            .field("routers", &self.routers)
            .field("dynamic", &self.dynamic)
            .field("auth", &self.auth.as_ref().map(|_| "<fn>"))
            .finish()
    }
}

impl AdminService {
    /// An admin service reporting `router_id`, describing no router yet.
    pub fn new(router_id: impl Into<String>) -> Self {
        AdminService {
            router_id: router_id.into(),
            routers: Vec::new(),
            dynamic: Vec::new(),
            auth: None,
        }
    }

    /// Runs `auth` before every admin call: a call it refuses fails with its
    /// status and learns nothing.
    pub fn with_auth(mut self, auth: AuthorizeAdmin) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Adds a router to describe.
    pub fn with_router<S: ServiceSpec>(mut self, router: &Router<S>) -> Self {
        self.routers.push(router.core().clone());
        self
    }

    /// Adds every service of a dynamic router, as it knows them at each
    /// request.
    pub fn with_dynamic(mut self, router: &DynamicRouter) -> Self {
        self.dynamic.push(router.clone());
        self
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> RouterAdminServer<AdminService> {
        RouterAdminServer::new(self)
    }

    /// The status of every routed service (or only `service`).
    pub fn list(&self, service: &str) -> pb::ListServicesResponse {
        let learnt = self.dynamic.iter().flat_map(DynamicRouter::cores);
        let mut services: Vec<pb::ServiceStatus> = self
            .routers
            .iter()
            .cloned()
            .chain(learnt)
            .filter(|core| service.is_empty() || core.service.name() == service)
            .map(|core| status(&core))
            .collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        pb::ListServicesResponse {
            services,
            router_id: self.router_id.clone(),
        }
    }
}

fn wire_strategy(strategy: Strategy) -> pb::Strategy {
    match strategy {
        Strategy::RoundRobin => pb::Strategy::RoundRobin,
        Strategy::PowerOfTwoChoices => pb::Strategy::PowerOfTwoChoices,
        Strategy::Weighted => pb::Strategy::Weighted,
        Strategy::ConsistentHash => pb::Strategy::ConsistentHash,
    }
}

/// The service's status as the admin service reports it.
pub(crate) fn status(core: &RouterCore) -> pb::ServiceStatus {
    let now = std::time::SystemTime::now();
    let instances: Vec<pb::InstanceStatus> = core
        .registry
        .snapshot()
        .iter()
        .map(|instance| {
            let info = instance.info();
            let remaining = instance.ejection_remaining();
            let stats = instance.call_stats();
            let micros = |d: Option<std::time::Duration>| {
                d.map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            };
            pb::InstanceStatus {
                id: info.id.clone(),
                labels: info.labels.clone(),
                weight: info.weight,
                serving: instance.is_serving(),
                draining: instance.is_draining(),
                outstanding_calls: instance.outstanding(),
                max_concurrent_calls: info.max_concurrent_calls,
                connected_since: Some(prost_types::Timestamp::from(instance.connected_at())),
                calls_finished: stats.finished,
                calls_failed: stats.failed,
                calls_per_second: stats.calls_per_second,
                latency_p50_micros: micros(stats.latency_p50),
                latency_p99_micros: micros(stats.latency_p99),
                latency_samples: stats.latency_samples,
                ejected: remaining.is_some(),
                times_ejected: instance.times_ejected(),
                ejected_until: remaining.map(|r| prost_types::Timestamp::from(now + r)),
                ejection_remaining_millis: remaining
                    .map_or(0, |r| u64::try_from(r.as_millis()).unwrap_or(u64::MAX)),
                routers: instance.routers(),
            }
        })
        .collect();
    pb::ServiceStatus {
        name: core.service.name().to_owned(),
        strategy: wire_strategy(core.balancer.strategy())
            .as_str_name()
            .to_owned(),
        active_calls: core.stats.calls_active(),
        waiting_calls: u64::try_from(core.waiting.calls()).unwrap_or(u64::MAX),
        calls_started: core.stats.calls_started(),
        calls_retried: core.stats.calls_retried(),
        ejections: core.stats.ejections(),
        instances_ejected: u32::try_from(instances.iter().filter(|i| i.ejected).count())
            .unwrap_or(u32::MAX),
        instances,
        recent_errors: core
            .recent_errors
            .list()
            .into_iter()
            .map(|e| pb::RecentError {
                time: Some(prost_types::Timestamp::from(e.time)),
                method: e.method,
                instance: e.instance,
                code: e.code as i32,
                message: e.message,
            })
            .collect(),
        errors_recorded: core.recent_errors.recorded(),
        warnings: core.warnings(),
        concurrency_limits: crate::router::concurrency_status(core),
    }
}

#[tonic::async_trait]
impl RouterAdmin for AdminService {
    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        if let Some(auth) = &self.auth {
            auth(request.metadata())?;
        }
        let service = request.into_inner().service;
        let response = self.list(&service);
        if !service.is_empty() && response.services.is_empty() {
            return Err(Status::not_found(format!(
                "this router does not route `{service}`"
            )));
        }
        Ok(Response::new(response))
    }
}
