//! The admin listener (`[admin] address`): what operators and their tools
//! read, apart from the routed traffic.
//!
//! - `GET /healthz`: 200 while the process serves (a liveness probe).
//! - `GET /metrics`: the router's Prometheus metrics, OpenMetrics text when
//!   the scraper asks for it (Prometheus does), else the Prometheus text
//!   format 0.0.4.
//! - `GET /` and `GET /status`: the live status page; `GET /status.json`: its
//!   data, as `grpc-router status --json` prints it ([`crate::status_page`]).
//! - `router.v1.RouterAdmin` over gRPC (HTTP/2 with prior knowledge, as
//!   tonic and grpc-go clients speak it): what `grpc-router status` reads.
//!
//! One port speaks both HTTP/1.1 and HTTP/2 (hyper tells them apart by the
//! HTTP/2 preface). With `[admin] tokens_sha256`, everything but `/healthz`
//! needs `authorization: Bearer <token>` with a listed token (HTTP 401, or
//! gRPC UNAUTHENTICATED); without it, nothing does: bind it to a private
//! address.

use std::future::Future;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use router_runtime::admin::{AdminService, AuthorizeAdmin};
use router_runtime::metrics::Format;
use router_runtime::prometheus_client::registry::Registry;
use router_runtime::router::DynamicRouter;
use tracing::warn;

use crate::config::{Config, TokenHash};

/// The admin listener's credential: the tokens `[admin] tokens_sha256`
/// lists, read from the running configuration at each request, so a reload
/// changes them. No token listed: every request passes.
#[derive(Clone)]
pub struct AdminTokens(Arc<dyn Fn() -> Vec<TokenHash> + Send + Sync>);

impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AdminTokens")
            .field(&(self.0)().len())
            .finish()
    }
}

impl AdminTokens {
    /// No credential: every request passes.
    pub fn none() -> Self {
        AdminTokens(Arc::new(Vec::new))
    }

    /// The tokens of the running configuration `config`.
    pub fn of(config: Arc<Mutex<Config>>) -> Self {
        AdminTokens(Arc::new(move || {
            config
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .admin
                .tokens_sha256
                .clone()
        }))
    }

    /// Whether a request with the `authorization` header value
    /// `authorization` may read the admin listener, or why not.
    pub fn check(&self, authorization: Option<&str>) -> Result<(), String> {
        let tokens = (self.0)();
        if tokens.is_empty() {
            return Ok(());
        }
        let Some(token) = authorization.and_then(|v| v.strip_prefix("Bearer ")) else {
            return Err(
                "the admin listener needs `authorization: Bearer <token>` with a token whose \
                 SHA-256 `[admin] tokens_sha256` lists (`grpc-router status --token-file FILE`)"
                    .to_owned(),
            );
        };
        if tokens.contains(&TokenHash::of(token.trim())) {
            Ok(())
        } else {
            Err(
                "the admin token is not accepted: its SHA-256 is not in `[admin] tokens_sha256`"
                    .to_owned(),
            )
        }
    }

    /// The same check for gRPC admin calls: UNAUTHENTICATED saying why.
    pub fn for_grpc(&self) -> AuthorizeAdmin {
        let tokens = self.clone();
        Arc::new(move |metadata: &tonic::metadata::MetadataMap| {
            let authorization = metadata.get("authorization").and_then(|v| v.to_str().ok());
            tokens
                .check(authorization)
                .map_err(tonic::Status::unauthenticated)
        })
    }
}

/// What the admin handlers read.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The router's id (`router_id`).
    pub router_id: String,
    /// The router whose services are reported.
    pub router: DynamicRouter,
    /// The registry `/metrics` encodes (404 without one).
    pub metrics: Option<Arc<Registry>>,
    /// Who may read everything but `/healthz`.
    pub tokens: AdminTokens,
}

impl AdminState {
    /// The state of the admin listener of `router`, with no credential.
    pub fn new(router_id: String, router: DynamicRouter) -> Self {
        AdminState {
            router_id,
            router,
            metrics: None,
            tokens: AdminTokens::none(),
        }
    }

    /// The same state, serving `registry` at `/metrics`.
    pub fn with_metrics(mut self, registry: Arc<Registry>) -> Self {
        self.metrics = Some(registry);
        self
    }

    /// The same state, requiring one of `tokens` for everything but
    /// `/healthz`.
    pub fn with_tokens(mut self, tokens: AdminTokens) -> Self {
        self.tokens = tokens;
        self
    }
}

/// The path prefix of the gRPC admin service.
const ADMIN_SERVICE: &str = "/router.v1.RouterAdmin/{*method}";

/// Every admin route: the pages (behind the tokens when some are listed),
/// `/healthz` (never), and the gRPC admin service (its own token check
/// answers in gRPC terms).
pub fn routes(state: AdminState) -> Router {
    let admin = AdminService::new(state.router_id.clone())
        .with_dynamic(&state.router)
        .with_auth(state.tokens.for_grpc())
        .into_server();
    let pages = Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(crate::status_page::page))
        .route("/status", get(crate::status_page::page))
        .route("/status.json", get(crate::status_page::json))
        .route_layer(axum::middleware::from_fn_with_state(
            state.tokens.clone(),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(pages)
        .with_state(state)
        .route_service(ADMIN_SERVICE, admin)
}

/// Lets a page request through when it carries an admin token (or none is
/// needed); else 401 with `WWW-Authenticate: Bearer`.
async fn require_token(
    State(tokens): State<AdminTokens>,
    request: Request,
    next: Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match tokens.check(authorization) {
        Ok(()) => next.run(request).await,
        Err(why) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            format!("{why}\n"),
        )
            .into_response(),
    }
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
