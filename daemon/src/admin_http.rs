//! The admin HTTP listener (`[admin] address`): what operators and their
//! tools read, apart from the routed traffic.
//!
//! - `GET /healthz`: 200 while the process serves (a liveness probe).
//!
//! It has no credentials of its own: bind it to a private address.

use std::future::Future;

use axum::Router;
use axum::routing::get;
use router_runtime::router::DynamicRouter;
use tracing::warn;

/// What the admin handlers read.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The router's id (`router_id`).
    pub router_id: String,
    /// The router whose services are reported.
    pub router: DynamicRouter,
}

impl AdminState {
    /// The state of the admin listener of `router`.
    pub fn new(router_id: String, router: DynamicRouter) -> Self {
        AdminState { router_id, router }
    }
}

/// Every admin route.
pub fn routes(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        warn!(error = %e, "the admin listener failed");
    }
}
