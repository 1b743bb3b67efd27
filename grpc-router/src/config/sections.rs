//! The daemon-wide sections: listeners, limits, shutdown, state, auth,
//! admin, logging, tracing and the runtime.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use router_runtime::router::RouterConfig;
use serde::{Deserialize, Serialize};

use super::values::{TokenHash, duration, log_level};

/// The async runtime (tokio's multi-threaded scheduler). Changing it needs a
/// restart.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// Worker threads [default: `TOKIO_WORKER_THREADS` when set, else one per
    /// CPU]. Where the router shares few CPUs with its instances or the load
    /// generator (a sidecar, a small VM), fewer threads mean fewer wake-ups
    /// across threads: measure with `router-bench procs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,
}

/// The most worker threads `runtime.worker_threads` accepts.
pub(super) const MAX_WORKER_THREADS: usize = 1024;

/// The clients' listener.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientsListener {
    /// The address to listen on (port 0: any free port).
    #[serde(default = "default_clients_address")]
    pub address: SocketAddr,
    /// TLS for this listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// Also serve the admin service (`router.v1.RouterAdmin`, what
    /// `grpc-router status` reads) here. Off by default: it lists every
    /// instance, label and recent error, and this listener is the one
    /// exposed to clients; the admin listener serves it anyway. With
    /// `[admin] tokens_sha256`, a call here needs a token too. Changing it
    /// needs a restart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub serve_admin: bool,
    /// Also serve gRPC-Web clients (browsers, `buf curl --protocol
    /// grpcweb`): HTTP/1.1 is accepted and gRPC-Web requests are translated
    /// to gRPC before routing, so every setting applies to them. Off by
    /// default (HTTP/2 gRPC only). Changing it needs a restart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grpc_web: bool,
    /// Also serve Connect clients (`buf curl --protocol connect`,
    /// Connect-Web, `curl` with a JSON body): HTTP/1.1 is accepted, unary
    /// calls as `application/proto` or `application/json` (GET for
    /// methods without side effects) and streams as
    /// `application/connect+proto`/`+json` are translated to gRPC before
    /// routing, JSON with the services' descriptors. Off by default.
    /// Changing it needs a restart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub connect: bool,
    /// Browser origins allowed to call here (CORS), for gRPC-Web pages on
    /// another origin; implies `grpc_web`. Unset: no CORS headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsSettings>,
}

impl Default for ClientsListener {
    fn default() -> Self {
        ClientsListener {
            address: default_clients_address(),
            tls: None,
            serve_admin: false,
            grpc_web: false,
            connect: false,
            cors: None,
        }
    }
}

/// `[clients.cors]`: which browser origins may call the clients' listener.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    /// Origins as browsers send them (`https://app.example.com`,
    /// `http://localhost:5173`), or `"*"` for any.
    pub allowed_origins: Vec<String>,
    /// How long a browser may keep a preflight answer (default 10 minutes).
    #[serde(default = "default_cors_max_age", with = "duration")]
    pub max_age: Duration,
}

impl CorsSettings {
    /// The runtime's CORS settings, or what is wrong with an origin.
    pub fn cors(
        &self,
    ) -> Result<router_runtime::server::Cors, router_runtime::server::InvalidOrigin> {
        Ok(router_runtime::server::Cors::new(&self.allowed_origins)?.max_age(self.max_age))
    }
}

fn default_cors_max_age() -> Duration {
    router_runtime::server::DEFAULT_CORS_MAX_AGE
}

pub(super) fn default_clients_address() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 50051))
}

/// The registrations' listener and credentials.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Registrations {
    /// A separate address for registrations (so the two can be firewalled
    /// apart); without it instances register on the clients' listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
    /// TLS for this listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// Registration credentials: SHA-256 (hex) of the bearer tokens a
    /// bridge may present as `authorization: Bearer <token>`. Empty: any
    /// bridge may register (trusted networks only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens_sha256: Vec<TokenHash>,
    /// Subject alternative names an instance's TLS client certificate must
    /// carry (one of them): `spiffe://...` or `uri:...`, `dns:<name>`,
    /// `email:<address>`, each with at most one `*`. Needs a `client_ca` on
    /// the listener instances register on. With `tokens_sha256` too, both
    /// are required. Empty: any certificate the CA signed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_sans: Vec<crate::sans::SanPattern>,
}

/// TLS settings of a listener.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle: when set, peers must present a certificate it signed
    /// (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
}

/// Limits on what registrations may make the router hold.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The most services the router learns from registrations.
    #[serde(default = "default_max_services")]
    pub max_services: usize,
    /// Bytes queued for one registration's stream before the instance
    /// counts as congested (default 8 MiB).
    #[serde(default = "default_max_queued_bytes")]
    pub max_queued_bytes: usize,
    /// Bytes of partly received (chunked) response messages the router
    /// holds for one registration, across its calls (default 64 MiB); past
    /// it the call fails RESOURCE_EXHAUSTED naming the instance.
    #[serde(default = "default_max_partial_response_bytes")]
    pub max_partial_response_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_services: default_max_services(),
            max_queued_bytes: default_max_queued_bytes(),
            max_partial_response_bytes: default_max_partial_response_bytes(),
        }
    }
}

fn default_max_partial_response_bytes() -> usize {
    RouterConfig::default().max_partial_response_bytes
}

fn default_max_services() -> usize {
    router_runtime::router::DEFAULT_MAX_SERVICES
}

fn default_max_queued_bytes() -> usize {
    RouterConfig::default().max_queued_bytes
}

/// What happens on SIGTERM: health says NOT_SERVING at once, the
/// listeners keep serving for `delay`, then close (connections get GOAWAY),
/// calls in flight get `grace`, then whatever is left is closed.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Shutdown {
    /// How long the listeners stay open and serve new calls, with health
    /// NOT_SERVING, before they close: the time load balancers need to stop
    /// sending here (none by default).
    #[serde(default, with = "duration")]
    pub delay: Duration,
    /// How long calls in flight get to finish once the listeners closed,
    /// before instances get GoAway and the calls and connections still open
    /// are closed.
    #[serde(default = "default_grace", with = "duration")]
    pub grace: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            delay: Duration::ZERO,
            grace: default_grace(),
        }
    }
}

/// What the router keeps across restarts.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// A file where the router keeps the description of every service it
    /// learnt, so that after a restart those services answer UNAVAILABLE
    /// (retryable) and reflection describes them until their instances
    /// register again. Without it a restarted router answers UNIMPLEMENTED
    /// for them until then. Its directory must be writable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

fn default_grace() -> Duration {
    router_runtime::server::DEFAULT_GRACE
}

/// How clients authenticate.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// JWT bearer tokens: with this section every call needs a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<crate::jwt::JwtSettings>,
}

/// The admin listener: `/metrics`, the status page and `/healthz` over
/// HTTP/1.1, the admin service (`router.v1.RouterAdmin`) over gRPC.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Where it listens, for example `0.0.0.0:9090`; without it there is no
    /// admin listener. It serves no routed traffic: keep it on a private
    /// network (Prometheus scrapes it). Changing it needs a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
    /// Admin credentials: SHA-256 (hex) of the bearer tokens that may read
    /// the admin listener (`authorization: Bearer <token>`; `grpc-router
    /// status --token-file`). With any, everything but `/healthz` needs
    /// one, the admin service on the clients' listener too
    /// (`clients.serve_admin`). Empty: no credential (a private network
    /// only). A reload applies a change at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens_sha256: Vec<TokenHash>,
    /// Per-instance call counts and latency on `/metrics`
    /// (`grpc_router_instance_*`, labelled with each instance's id): one
    /// series per live registration, so off by default. Changing it needs
    /// a restart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_instance_metrics: bool,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// A `tracing` filter: `info`, `debug`, `info,router_runtime=debug` ...
    /// (`RUST_LOG` wins when set).
    #[serde(default = "default_level", deserialize_with = "log_level")]
    pub level: String,
    /// `text` or `json` (one JSON object per line).
    #[serde(default)]
    pub format: LogFormat,
    /// One line per finished call (service, method, instance, code,
    /// duration, bytes), at target `router_runtime::access`.
    #[serde(default)]
    pub access: bool,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: default_level(),
            format: LogFormat::default(),
            access: false,
        }
    }
}

fn default_level() -> String {
    "info".to_owned()
}

/// Traces: the router's span of every forwarded call, continuing the
/// client's W3C `traceparent`, exported over OTLP/gRPC.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// The OTLP/gRPC collector, for example `http://127.0.0.1:4317`; unset:
    /// no traces are exported (trace headers still pass through).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// The exported spans' `service.name` (default `grpc-router`).
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// The share of new traces recorded, from 0 to 1 (default 1). A call
    /// whose client sent a `traceparent` follows the client's decision.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
}

impl Default for Tracing {
    fn default() -> Self {
        Tracing {
            otlp_endpoint: None,
            service_name: default_service_name(),
            sample_ratio: default_sample_ratio(),
        }
    }
}

fn default_service_name() -> String {
    "grpc-router".to_owned()
}

fn default_sample_ratio() -> f64 {
    1.0
}

/// Why `tracing.otlp_endpoint` cannot be used by a build without `otel`.
pub const NO_OTEL: &str = "this grpc-router was built without the `otel` feature (its default features include it); remove the setting or use a build with it";

impl Tracing {
    /// Checks the section: (key, message) of the first problem.
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(endpoint) = &self.otlp_endpoint {
            otlp_endpoint(endpoint).map_err(|m| ("otlp_endpoint", m))?;
            if !cfg!(feature = "otel") {
                return Err(("otlp_endpoint", NO_OTEL.to_owned()));
            }
        }
        if self.service_name.trim().is_empty() {
            return Err(("service_name", "must not be empty".to_owned()));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err((
                "sample_ratio",
                format!(
                    "{} is not between 0 and 1 (the share of new traces recorded: 1 records all, 0.01 one in a hundred)",
                    self.sample_ratio
                ),
            ));
        }
        Ok(())
    }
}

/// Checks that `text` is an OTLP/gRPC URL: `http` or `https`, a host and
/// port, no path.
fn otlp_endpoint(text: &str) -> Result<(), String> {
    let bad = |why: &str| {
        format!("`{text}` is not an OTLP/gRPC endpoint ({why}); write e.g. `http://127.0.0.1:4317`")
    };
    let uri: http::Uri = text.parse().map_err(|_| bad("not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(bad("the scheme must be http or https"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("OTLP/gRPC takes no path"));
    }
    Ok(())
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogFormat;
    use crate::config::testing::{error, parse};

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let config = parse("").expect("valid");
        assert_eq!(config.clients.address, default_clients_address());
        assert_eq!(config.registrations.address, None);
        assert_eq!(config.shutdown.grace, Duration::from_secs(30));
        assert_eq!(config.log.format, LogFormat::Text);
    }

    #[test]
    fn a_bad_address_is_named() {
        let e = error("[clients]\naddress = \"localhost\"\n");
        assert!(e.starts_with("router.toml:2:"), "{e}");
        assert!(e.contains("`clients.address`"), "{e}");
    }

    #[test]
    fn tracing_is_off_by_default() {
        let config = parse("").expect("valid");
        assert_eq!(config.tracing.otlp_endpoint, None);
        assert_eq!(config.tracing.service_name, "grpc-router");
        assert_eq!(config.tracing.sample_ratio, 1.0);
    }

    #[cfg(feature = "otel")]
    #[test]
    fn a_tracing_section_is_read() {
        let config = parse(
            "[tracing]\notlp_endpoint = \"http://127.0.0.1:4317\"\nservice_name = \"edge\"\nsample_ratio = 0.25\n",
        )
        .expect("valid");
        assert_eq!(
            config.tracing.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4317")
        );
        assert_eq!(config.tracing.service_name, "edge");
        assert_eq!(config.tracing.sample_ratio, 0.25);
        let again = parse(&config.effective_toml()).expect("the printed config is valid");
        assert_eq!(again.tracing, config.tracing);
    }
}
