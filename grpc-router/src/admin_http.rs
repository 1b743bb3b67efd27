//! The admin HTTP listener (`[admin] address`): what operators and their
//! tools read, apart from the routed traffic.
//!
//! - `GET /healthz`: 200 while the process serves (a liveness probe).
//! - `GET /metrics`: the router's Prometheus metrics, OpenMetrics text when
//!   the scraper asks for it (Prometheus does), else the Prometheus text
//!   format 0.0.4.
//! - `GET /` and `GET /status`: the live status page; `GET /status.json`: its
//!   data, as `grpc-router status --json` prints it ([`crate::status_page`]).
//!
//! It has no credentials of its own: bind it to a private address.

use std::future::Future;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use router_runtime::metrics::Format;
use router_runtime::prometheus_client::registry::Registry;
use router_runtime::router::DynamicRouter;
use tracing::warn;

/// What the admin handlers read.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The router's id (`router_id`).
    pub router_id: String,
    /// The router whose services are reported.
    pub router: DynamicRouter,
    /// The registry `/metrics` encodes (404 without one).
    pub metrics: Option<Arc<Registry>>,
}

impl AdminState {
    /// The state of the admin listener of `router`.
    pub fn new(router_id: String, router: DynamicRouter) -> Self {
        AdminState {
            router_id,
            router,
            metrics: None,
        }
    }

    /// The same state, serving `registry` at `/metrics`.
    pub fn with_metrics(mut self, registry: Arc<Registry>) -> Self {
        self.metrics = Some(registry);
        self
    }
}

/// Every admin route.
pub fn routes(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/", get(crate::status_page::page))
        .route("/status", get(crate::status_page::page))
        .route("/status.json", get(crate::status_page::json))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Encodes the registry on each scrape (a `String` body, so the response has
/// a content length).
async fn metrics(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let Some(registry) = &state.metrics else {
        return (StatusCode::NOT_FOUND, "no metrics\n").into_response();
    };
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    match router_runtime::metrics::encode(registry, format) {
        Ok(text) => ([(header::CONTENT_TYPE, format.content_type())], text).into_response(),
        Err(e) => {
            warn!(error = %e, "cannot encode the metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the metrics\n",
            )
                .into_response()
        }
    }
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
