//! The daemon's configuration: a TOML file (unknown keys are errors), every
//! setting also settable by an environment variable
//! `GRPC_ROUTER_<SECTION>__<KEY>` (double underscore between levels, for
//! example `GRPC_ROUTER_LOG__LEVEL=debug` or
//! `GRPC_ROUTER_SERVICES__myservice.v1.Greeter__STRATEGY=round-robin`).
//!
//! Errors name the file, line and column, and the setting's path
//! (`defaults.strategy`), or the environment variable that set it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use router_runtime::router::{
    CallRequest, ClientAuth, ClientKey, DeadlinePolicy, Deadlines, NamedMethod, OutlierDetection,
    RateLimit, RateLimits, RetryPolicies, RetryPolicy, RetryThrottling, RouterConfig, Strategy,
    TrafficSplit, TrafficSplits,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The prefix of the environment variables that override settings.
pub const ENV_PREFIX: &str = "GRPC_ROUTER_";

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// An identifier for logs, the admin service and the bridges' `Welcome`
    /// (default: the host name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_id: Option<String>,
    /// The listener ordinary gRPC clients call.
    #[serde(default)]
    pub clients: ClientsListener,
    /// Where instances register.
    #[serde(default)]
    pub registrations: Registrations,
    /// Settings of every service, unless `services` says otherwise.
    #[serde(default)]
    pub defaults: ServiceSettings,
    /// Per-service settings, by full service name; these services are
    /// always known (UNAVAILABLE, not UNIMPLEMENTED, with no instance).
    #[serde(default)]
    pub services: BTreeMap<String, ServiceSettings>,
    /// Limits on what registrations may make the router hold.
    #[serde(default)]
    pub limits: Limits,
    /// What happens on SIGTERM.
    #[serde(default)]
    pub shutdown: Shutdown,
    /// What the router keeps across restarts.
    #[serde(default)]
    pub state: State,
    /// Logging.
    #[serde(default)]
    pub log: Log,
    /// The admin listener: metrics, status page, health, admin service.
    #[serde(default)]
    pub admin: Admin,
    /// Client authentication (`[auth.jwt]`).
    #[serde(default)]
    pub auth: Auth,
    /// Traces exported over OpenTelemetry OTLP (the `otel` feature).
    #[serde(default)]
    pub tracing: Tracing,
    /// The async runtime the daemon runs on.
    #[serde(default)]
    pub runtime: Runtime,
}

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
const MAX_WORKER_THREADS: usize = 1024;

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
}

impl Default for ClientsListener {
    fn default() -> Self {
        ClientsListener {
            address: default_clients_address(),
            tls: None,
            serve_admin: false,
        }
    }
}

fn default_clients_address() -> SocketAddr {
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

/// Settings of a service (in `[defaults]` or `[services."<name>"]`); a
/// per-service value wins over the default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    /// round-robin, p2c, weighted or consistent-hash (default: the
    /// service's own `(router.v1.default_strategy)`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "strategy",
        serialize_with = "strategy_name"
    )]
    pub strategy: Option<Strategy>,
    /// A metadata header whose value is the routing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_key_header: Option<String>,
    /// The largest request message, in bytes (default 4 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_message_bytes: Option<usize>,
    /// The largest response message, in bytes (default 64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_message_bytes: Option<usize>,
    /// How often the router pings each instance (default 10s).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_option"
    )]
    pub heartbeat_interval: Option<Duration>,
    /// An instance that answers no ping for this long is dropped (default
    /// 30s; more than `heartbeat_interval`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_option"
    )]
    pub heartbeat_timeout: Option<Duration>,
    /// Registration credentials for this service only (SHA-256 hex of bearer
    /// tokens), in place of `registrations.tokens_sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_sha256: Option<Vec<TokenHash>>,
    /// The SANs an instance certificate must carry to register this
    /// service, in place of `registrations.instance_sans`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_sans: Option<Vec<crate::sans::SanPattern>>,
    /// The deadline of a call that carries none (default: none).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_option"
    )]
    pub default_deadline: Option<Duration>,
    /// The longest deadline a call gets; longer ones are capped (default:
    /// no cap).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_option"
    )]
    pub max_deadline: Option<Duration>,
    /// Per-method deadline settings, by method name (`SayHello`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub methods: BTreeMap<String, MethodSettings>,
    /// A traffic split: the calls divided by weight between label sets
    /// (`[[services."pkg.Svc".split]]` with `labels` and `weight`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<SplitShare>,
    /// All calls of the service together, e.g. `{ per_second = 500, burst =
    /// 100 }`; over it a call fails RESOURCE_EXHAUSTED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSetting>,
    /// Each client's calls, e.g. `{ key = "peer", per_second = 20 }` or
    /// `{ key = "header:x-api-key", per_second = 20 }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_rate_limit: Option<ClientRateLimitSetting>,
    /// The calls sent to each instance; one over it is passed over, and
    /// with every instance over, the call fails RESOURCE_EXHAUSTED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_rate_limit: Option<RateLimitSetting>,
    /// Authorization rules (`[[services."x".allow]]` with `methods`,
    /// `identities`, `claims`, `sans`); with any, a call no rule allows
    /// fails PERMISSION_DENIED. `identities` and `claims` need
    /// `[auth.jwt]`, `sans` needs `[clients.tls] client_ca`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<crate::jwt::AllowRule>,
    /// gRPC's `retryPolicy` for the methods the proto marks idempotent
    /// (a method's own `retry_policy` applies to it whatever its marking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicySetting>,
    /// gRPC's `retryThrottling` (default `{ max_tokens = 10, token_ratio =
    /// 0.1 }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_throttling: Option<RetryThrottlingSetting>,
    /// Ejects instances whose calls keep failing (Envoy's outlier
    /// detection); every key is optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierSetting>,
}

/// `outlier_detection`: each key defaults as in `OutlierDetection`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierSetting {
    /// Failures in a row that eject (default 5; 0: not by this rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// The statuses that count as failures (default UNAVAILABLE, INTERNAL,
    /// UNKNOWN, DATA_LOSS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_codes: Option<Vec<String>>,
    /// A failure rate (0 to 1) over `window` that ejects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<f64>,
    /// Calls a window needs before its rate counts (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_calls: Option<u32>,
    /// The rate's window (default 10s).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_option"
    )]
    pub window: Option<Duration>,
    /// The first ejection's length, times the ejections so far (default 30s).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_option"
    )]
    pub base_ejection: Option<Duration>,
    /// The longest ejection (default 300s).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_option"
    )]
    pub max_ejection: Option<Duration>,
    /// The most instances out at once, in percent (default 10; one may
    /// always be).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejected_percent: Option<u32>,
}

impl OutlierSetting {
    fn detection(&self) -> OutlierDetection {
        let d = OutlierDetection::default();
        OutlierDetection {
            consecutive_failures: self.consecutive_failures.unwrap_or(d.consecutive_failures),
            failure_codes: self
                .failure_codes
                .as_ref()
                .map(|codes| codes.iter().filter_map(|c| status_code(c)).collect())
                .unwrap_or(d.failure_codes),
            failure_rate: self.failure_rate.or(d.failure_rate),
            min_calls: self.min_calls.unwrap_or(d.min_calls),
            window: self.window.unwrap_or(d.window),
            base_ejection: self.base_ejection.unwrap_or(d.base_ejection),
            max_ejection: self.max_ejection.unwrap_or(d.max_ejection),
            max_ejected_percent: self.max_ejected_percent.unwrap_or(d.max_ejected_percent),
        }
    }

    fn check(&self, at: &str) -> Result<(), (String, String)> {
        if let Some(bad) = self
            .failure_codes
            .iter()
            .flatten()
            .find(|c| status_code(c).is_none())
        {
            return Err((
                format!("{at}.failure_codes"),
                format!("`{bad}` is not a gRPC status name (UNAVAILABLE, INTERNAL, ...)"),
            ));
        }
        if self.failure_rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
            return Err((format!("{at}.failure_rate"), "must be 0 to 1".to_owned()));
        }
        if self.max_ejected_percent.is_some_and(|p| p > 100) {
            return Err((
                format!("{at}.max_ejected_percent"),
                "must be 0 to 100".to_owned(),
            ));
        }
        let d = self.detection();
        if d.base_ejection.is_zero() || d.max_ejection < d.base_ejection || d.window.is_zero() {
            return Err((
                format!("{at}.base_ejection"),
                "base_ejection and window must be more than 0, max_ejection at least base_ejection"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

/// gRPC's `retryPolicy`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicySetting {
    /// Attempts in all, the first included (2 to 5).
    pub max_attempts: u32,
    /// The first retry waits up to this (random).
    #[serde(with = "duration")]
    pub initial_backoff: Duration,
    /// No retry waits longer.
    #[serde(with = "duration")]
    pub max_backoff: Duration,
    /// Each retry multiplies the bound by this (at least 1).
    pub backoff_multiplier: f64,
    /// The statuses retried, by name (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`).
    pub retryable_status_codes: Vec<String>,
}

impl RetryPolicySetting {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            initial_backoff: self.initial_backoff,
            max_backoff: self.max_backoff,
            backoff_multiplier: self.backoff_multiplier,
            retryable_status_codes: self
                .retryable_status_codes
                .iter()
                .filter_map(|c| status_code(c))
                .collect(),
        }
    }

    fn check(&self, at: &str) -> Result<(), (String, String)> {
        if !(2..=5).contains(&self.max_attempts) {
            return Err((format!("{at}.max_attempts"), "must be 2 to 5".to_owned()));
        }
        if self.initial_backoff.is_zero() || self.max_backoff < self.initial_backoff {
            return Err((
                format!("{at}.max_backoff"),
                "backoffs must be more than 0 and max_backoff at least initial_backoff".to_owned(),
            ));
        }
        if !(self.backoff_multiplier >= 1.0 && self.backoff_multiplier.is_finite()) {
            return Err((
                format!("{at}.backoff_multiplier"),
                "must be at least 1".to_owned(),
            ));
        }
        if self.retryable_status_codes.is_empty() {
            return Err((
                format!("{at}.retryable_status_codes"),
                "must name at least one status".to_owned(),
            ));
        }
        if let Some(bad) = self
            .retryable_status_codes
            .iter()
            .find(|c| status_code(c).is_none())
        {
            return Err((
                format!("{at}.retryable_status_codes"),
                format!("`{bad}` is not a gRPC status name (UNAVAILABLE, ABORTED, ...)"),
            ));
        }
        Ok(())
    }
}

/// gRPC's `retryThrottling`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryThrottlingSetting {
    /// Tokens when all is well (1 to 1000); retries stop at half.
    pub max_tokens: u32,
    /// Tokens an answered attempt gives back (0 to 1).
    pub token_ratio: f64,
}

/// A gRPC status code by its service-config name (`UNAVAILABLE`).
fn status_code(name: &str) -> Option<tonic::Code> {
    use tonic::Code;
    let code = match name {
        "CANCELLED" => Code::Cancelled,
        "UNKNOWN" => Code::Unknown,
        "INVALID_ARGUMENT" => Code::InvalidArgument,
        "DEADLINE_EXCEEDED" => Code::DeadlineExceeded,
        "NOT_FOUND" => Code::NotFound,
        "ALREADY_EXISTS" => Code::AlreadyExists,
        "PERMISSION_DENIED" => Code::PermissionDenied,
        "RESOURCE_EXHAUSTED" => Code::ResourceExhausted,
        "FAILED_PRECONDITION" => Code::FailedPrecondition,
        "ABORTED" => Code::Aborted,
        "OUT_OF_RANGE" => Code::OutOfRange,
        "UNIMPLEMENTED" => Code::Unimplemented,
        "INTERNAL" => Code::Internal,
        "UNAVAILABLE" => Code::Unavailable,
        "DATA_LOSS" => Code::DataLoss,
        "UNAUTHENTICATED" => Code::Unauthenticated,
        _ => return None,
    };
    Some(code)
}

/// A rate limit: `per_second` sustained, bursts of `burst` (default: as
/// many as `per_second`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSetting {
    /// Calls per second.
    pub per_second: u32,
    /// Calls at once after a quiet spell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl RateLimitSetting {
    fn limit(self) -> Option<RateLimit> {
        let per_second = std::num::NonZeroU32::new(self.per_second)?;
        let burst = std::num::NonZeroU32::new(self.burst.unwrap_or(self.per_second))?;
        Some(RateLimit { per_second, burst })
    }

    fn check(self, at: &str) -> Result<(), (String, String)> {
        if self.per_second == 0 {
            return Err((format!("{at}.per_second"), "must be more than 0".to_owned()));
        }
        if self.burst == Some(0) {
            return Err((format!("{at}.burst"), "must be more than 0".to_owned()));
        }
        Ok(())
    }
}

/// A per-client rate limit and what tells clients apart.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRateLimitSetting {
    /// `peer` (the client's IP address) or `header:<name>` (the value of
    /// that request header).
    pub key: String,
    /// Calls per second, per client.
    pub per_second: u32,
    /// Calls at once after a quiet spell, per client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl ClientRateLimitSetting {
    fn client_key(&self) -> Option<ClientKey> {
        match self.key.as_str() {
            "peer" => Some(ClientKey::PeerAddress),
            other => other
                .strip_prefix("header:")
                .filter(|h| http_header(h).is_ok())
                .map(|h| ClientKey::Header(h.to_owned())),
        }
    }

    fn limit(&self) -> Option<RateLimit> {
        RateLimitSetting {
            per_second: self.per_second,
            burst: self.burst,
        }
        .limit()
    }
}

/// One share of a traffic split.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SplitShare {
    /// The labels an instance must carry, e.g. `{ version = "v2" }`.
    pub labels: BTreeMap<String, String>,
    /// Its share of the calls, relative to the other shares.
    pub weight: u32,
}

/// The settings of one method, over its service's.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MethodSettings {
    /// As `default_deadline` of the service, for this method.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_option"
    )]
    pub default_deadline: Option<Duration>,
    /// As `max_deadline` of the service, for this method.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_option"
    )]
    pub max_deadline: Option<Duration>,
    /// This method's calls together, on top of the service's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSetting>,
    /// This method's `retryPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicySetting>,
}

impl MethodSettings {
    fn policy(&self) -> DeadlinePolicy {
        DeadlinePolicy {
            default: self.default_deadline,
            max: self.max_deadline,
        }
    }
}

impl ServiceSettings {
    /// `self` over `base`: each setting of `self`, else `base`'s.
    pub fn over(&self, base: &ServiceSettings) -> ServiceSettings {
        ServiceSettings {
            strategy: self.strategy.or(base.strategy),
            route_key_header: self
                .route_key_header
                .clone()
                .or_else(|| base.route_key_header.clone()),
            max_request_message_bytes: self
                .max_request_message_bytes
                .or(base.max_request_message_bytes),
            max_response_message_bytes: self
                .max_response_message_bytes
                .or(base.max_response_message_bytes),
            heartbeat_interval: self.heartbeat_interval.or(base.heartbeat_interval),
            heartbeat_timeout: self.heartbeat_timeout.or(base.heartbeat_timeout),
            tokens_sha256: self
                .tokens_sha256
                .clone()
                .or_else(|| base.tokens_sha256.clone()),
            instance_sans: self
                .instance_sans
                .clone()
                .or_else(|| base.instance_sans.clone()),
            default_deadline: self.default_deadline.or(base.default_deadline),
            max_deadline: self.max_deadline.or(base.max_deadline),
            methods: base
                .methods
                .iter()
                .chain(&self.methods)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            split: if self.split.is_empty() {
                base.split.clone()
            } else {
                self.split.clone()
            },
            rate_limit: self.rate_limit.or(base.rate_limit),
            instance_rate_limit: self.instance_rate_limit.or(base.instance_rate_limit),
            retry_policy: self
                .retry_policy
                .clone()
                .or_else(|| base.retry_policy.clone()),
            retry_throttling: self.retry_throttling.or(base.retry_throttling),
            outlier_detection: self
                .outlier_detection
                .clone()
                .or_else(|| base.outlier_detection.clone()),
            allow: if self.allow.is_empty() {
                base.allow.clone()
            } else {
                self.allow.clone()
            },
            client_rate_limit: self
                .client_rate_limit
                .clone()
                .or_else(|| base.client_rate_limit.clone()),
        }
    }

    /// The retry policies these settings give.
    pub fn retries(&self) -> RetryPolicies {
        let defaults = RetryPolicies::default();
        RetryPolicies {
            idempotent: self.retry_policy.as_ref().map(RetryPolicySetting::policy),
            methods: self
                .methods
                .iter()
                .filter_map(|(name, m)| Some((name.clone(), m.retry_policy.as_ref()?.policy())))
                .collect(),
            throttling: self
                .retry_throttling
                .map(|t| RetryThrottling {
                    max_tokens: t.max_tokens,
                    token_ratio: t.token_ratio,
                })
                .unwrap_or(defaults.throttling),
        }
    }

    /// The rate limits these settings give.
    pub fn rate_limits(&self) -> RateLimits {
        RateLimits {
            service: self.rate_limit.and_then(RateLimitSetting::limit),
            methods: self
                .methods
                .iter()
                .filter_map(|(name, m)| Some((name.clone(), m.rate_limit?.limit()?)))
                .collect(),
            per_client: self
                .client_rate_limit
                .as_ref()
                .and_then(|c| Some((c.client_key()?, c.limit()?))),
            per_instance: self.instance_rate_limit.and_then(RateLimitSetting::limit),
            ..RateLimits::default()
        }
    }

    /// The traffic split these settings give.
    pub fn splits(&self) -> TrafficSplits {
        TrafficSplits::new(
            self.split
                .iter()
                .map(|share| TrafficSplit {
                    labels: share
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    weight: share.weight,
                })
                .collect(),
        )
    }

    /// The deadline policies these settings give.
    pub fn deadlines(&self) -> Deadlines {
        Deadlines {
            service: DeadlinePolicy {
                default: self.default_deadline,
                max: self.max_deadline,
            },
            methods: self
                .methods
                .iter()
                .map(|(name, m)| (name.clone(), m.policy()))
                .collect(),
        }
    }
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
    fn check(&self) -> Result<(), (&'static str, String)> {
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

/// The SHA-256 of a bearer token, as 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// The hash of `token`.
    pub fn of(token: &str) -> Self {
        use sha2::Digest;
        TokenHash(sha2::Sha256::digest(token.as_bytes()).into())
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::str::FromStr for TokenHash {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = || {
            format!(
                "`{text}` is not a SHA-256 in hex (64 hex digits; `printf %s TOKEN | sha256sum`)"
            )
        };
        if text.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(TokenHash(out))
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for TokenHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

fn strategy<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Strategy>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse()
        .map(Some)
        .map_err(|e: router_runtime::router::UnknownStrategy| serde::de::Error::custom(e))
}

fn strategy_name<S: Serializer>(strategy: &Option<Strategy>, s: S) -> Result<S::Ok, S::Error> {
    match strategy {
        Some(strategy) => s.serialize_str(strategy.name()),
        None => s.serialize_none(),
    }
}

fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    tracing_subscriber::EnvFilter::builder()
        .parse(&text)
        .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a log filter: {e}")))?;
    Ok(text)
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write e.g. `250ms`, `10s`, `1m30s`")
    })
}

mod duration {
    use super::*;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }
}

mod duration_option {
    use super::*;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::duration::serialize(value, s),
            None => s.serialize_none(),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A setting in the file is wrong.
    #[error("{path}:{line}:{column}: `{field}`: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The setting's path, for example `defaults.strategy`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A setting from the environment is wrong.
    #[error("environment variable {variable}: `{field}`: {message}")]
    Env {
        /// The variable.
        variable: String,
        /// The setting's path.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads `path` and then the `GRPC_ROUTER_*` variables of `env`.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text, env)
    }

    /// Parses `text` (read from `path`, for messages) and applies `env`.
    pub fn parse(
        path: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let config = from_file(path, text)?;
        config.check().map_err(|(field, message)| {
            let (line, column) = locate(text, &field);
            ConfigError::File {
                path: path.to_owned(),
                line,
                column,
                field,
                message,
            }
        })?;
        let overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        if overrides.is_empty() {
            return Ok(config);
        }
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| file_error(path, text, String::new(), &e))?;
        let mut origins = Vec::new();
        let file_services: Vec<String> = config.services.keys().cloned().collect();
        for (variable, value) in &overrides {
            let keys = env_keys(variable, &file_services).map_err(|message| ConfigError::Env {
                variable: variable.clone(),
                field: "services".to_owned(),
                message,
            })?;
            if keys.is_empty() {
                continue;
            }
            set_path(&mut table, &keys, env_value(value)).map_err(|message| ConfigError::Env {
                variable: variable.clone(),
                field: keys.join("."),
                message,
            })?;
            origins.push((keys.join("."), variable.clone()));
        }
        let config: Config = serde_path_to_error::deserialize(table).map_err(|e| {
            let field = e.path().to_string();
            let variable = origins
                .iter()
                .find(|(path, _)| field.starts_with(path.as_str()) || path.starts_with(&field))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| format!("{ENV_PREFIX}*"));
            ConfigError::Env {
                variable,
                field,
                message: e.into_inner().message().to_owned(),
            }
        })?;
        config
            .check()
            .map_err(|(field, message)| ConfigError::Env {
                variable: origins
                    .iter()
                    .find(|(path, _)| field.starts_with(path.as_str()))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| format!("{ENV_PREFIX}*")),
                field,
                message,
            })?;
        Ok(config)
    }

    /// Checks what one field cannot: (field path, message) of the first
    /// problem.
    fn check(&self) -> Result<(), (String, String)> {
        for (name, settings) in std::iter::once(("defaults".to_owned(), &self.defaults)).chain(
            self.services
                .iter()
                .map(|(name, s)| (format!("services.\"{name}\""), s)),
        ) {
            let effective = settings.over(&self.defaults);
            let interval = effective
                .heartbeat_interval
                .unwrap_or(Duration::from_secs(10));
            let timeout = effective
                .heartbeat_timeout
                .unwrap_or(Duration::from_secs(30));
            if interval.is_zero() {
                return Err((
                    format!("{name}.heartbeat_interval"),
                    "must be more than 0".to_owned(),
                ));
            }
            if timeout <= interval {
                return Err((
                    format!("{name}.heartbeat_timeout"),
                    format!(
                        "{} is not more than heartbeat_interval ({}): every instance would be dropped",
                        humantime::format_duration(timeout),
                        humantime::format_duration(interval)
                    ),
                ));
            }
            for (key, value) in [
                (
                    "max_request_message_bytes",
                    settings.max_request_message_bytes,
                ),
                (
                    "max_response_message_bytes",
                    settings.max_response_message_bytes,
                ),
            ] {
                if value == Some(0) {
                    return Err((format!("{name}.{key}"), "must be more than 0".to_owned()));
                }
            }
            let deadlines = effective.deadlines();
            for (scope, policy) in std::iter::once((name.clone(), deadlines.service)).chain(
                deadlines
                    .methods
                    .keys()
                    .map(|m| (format!("{name}.methods.{m}"), deadlines.of(m))),
            ) {
                for (key, value) in [
                    ("default_deadline", policy.default),
                    ("max_deadline", policy.max),
                ] {
                    if value.is_some_and(|d| d.is_zero()) {
                        return Err((format!("{scope}.{key}"), "must be more than 0".to_owned()));
                    }
                }
                if let (Some(default), Some(max)) = (policy.default, policy.max)
                    && default > max
                {
                    return Err((
                        format!("{scope}.default_deadline"),
                        format!(
                            "{} is more than max_deadline ({})",
                            humantime::format_duration(default),
                            humantime::format_duration(max)
                        ),
                    ));
                }
            }
            if !settings.split.is_empty() {
                if settings.split.iter().all(|share| share.weight == 0) {
                    return Err((
                        format!("{name}.split"),
                        "every share has weight 0: no call could be routed by it".to_owned(),
                    ));
                }
                if let Some(i) = settings.split.iter().position(|s| s.labels.is_empty()) {
                    return Err((
                        format!("{name}.split[{i}].labels"),
                        "must name at least one label (a share of every instance splits nothing)"
                            .to_owned(),
                    ));
                }
            }
            if let Some(limit) = settings.rate_limit {
                limit.check(&format!("{name}.rate_limit"))?;
            }
            if let Some(limit) = settings.instance_rate_limit {
                limit.check(&format!("{name}.instance_rate_limit"))?;
            }
            if let Some(policy) = &settings.retry_policy {
                policy.check(&format!("{name}.retry_policy"))?;
            }
            if let Some(outliers) = &settings.outlier_detection {
                outliers.check(&format!("{name}.outlier_detection"))?;
            }
            if let Some(t) = settings.retry_throttling
                && (!(1..=1000).contains(&t.max_tokens) || !(0.0..=1.0).contains(&t.token_ratio))
            {
                return Err((
                    format!("{name}.retry_throttling"),
                    "max_tokens must be 1 to 1000 and token_ratio 0 to 1".to_owned(),
                ));
            }
            for (method, m) in &settings.methods {
                if let Some(policy) = &m.retry_policy {
                    policy.check(&format!("{name}.methods.{method}.retry_policy"))?;
                }
            }
            self.check_credentials(&name, settings)?;
            if let Some(client) = &settings.client_rate_limit {
                let at = format!("{name}.client_rate_limit");
                RateLimitSetting {
                    per_second: client.per_second,
                    burst: client.burst,
                }
                .check(&at)?;
                if client.client_key().is_none() {
                    return Err((
                        format!("{at}.key"),
                        format!(
                            "`{}` is neither `peer` nor `header:<lowercase header name>`",
                            client.key
                        ),
                    ));
                }
            }
            for (method, m) in &settings.methods {
                if let Some(limit) = m.rate_limit {
                    limit.check(&format!("{name}.methods.{method}.rate_limit"))?;
                }
            }
            for method in settings.methods.keys() {
                if method.is_empty() || method.contains(['/', '.']) {
                    return Err((
                        format!("{name}.methods.\"{method}\""),
                        "is not a method name (as in the proto, e.g. `SayHello`)".to_owned(),
                    ));
                }
            }
            if let Some(header) = &settings.route_key_header
                && http_header(header).is_err()
            {
                return Err((
                    format!("{name}.route_key_header"),
                    format!("`{header}` is not a valid lowercase metadata header name"),
                ));
            }
        }
        for name in self.services.keys() {
            if name.is_empty() || name.starts_with('.') || name.contains('/') {
                return Err((
                    format!("services.\"{name}\""),
                    "is not a fully qualified service name (package.Service)".to_owned(),
                ));
            }
        }
        if self.registrations.address == Some(self.clients.address)
            && self.clients.address.port() != 0
        {
            return Err((
                "registrations.address".to_owned(),
                "is the clients' address; leave it out to register on the clients' listener"
                    .to_owned(),
            ));
        }
        if let Some(admin) = self.admin.address
            && admin.port() != 0
        {
            for (other, address) in [
                ("clients", Some(self.clients.address)),
                ("registrations", self.registrations.address),
            ] {
                if address == Some(admin) {
                    return Err((
                        "admin.address".to_owned(),
                        format!("is the {other}' address; the admin listener needs its own port"),
                    ));
                }
            }
        }
        if !self.admin.tokens_sha256.is_empty()
            && self.admin.address.is_none()
            && !self.clients.serve_admin
        {
            return Err((
                "admin.tokens_sha256".to_owned(),
                "guards nothing: no listener serves the admin service; set `admin.address` \
                 (or `clients.serve_admin = true`)"
                    .to_owned(),
            ));
        }
        if let Some(jwt) = &self.auth.jwt
            && let Err((setting, why)) = crate::jwt::Verifier::new(jwt, &|k| std::env::var(k).ok())
        {
            return Err((setting.to_owned(), why));
        }
        for (name, tls) in [
            ("clients.tls", &self.clients.tls),
            ("registrations.tls", &self.registrations.tls),
        ] {
            let Some(tls) = tls else { continue };
            for (key, file) in [
                ("cert", Some(&tls.cert)),
                ("key", Some(&tls.key)),
                ("client_ca", tls.client_ca.as_ref()),
            ] {
                if let Some(file) = file
                    && let Err(e) = std::fs::metadata(file)
                {
                    return Err((
                        format!("{name}.{key}"),
                        format!("cannot read {}: {e}", file.display()),
                    ));
                }
            }
        }
        if self.registrations.tls.is_some() && self.registrations.address.is_none() {
            return Err((
                "registrations.tls".to_owned(),
                "needs registrations.address (without it instances use the clients' listener and its TLS)"
                    .to_owned(),
            ));
        }
        self.tracing
            .check()
            .map_err(|(key, message)| (format!("tracing.{key}"), message))?;
        if let Some(threads) = self.runtime.worker_threads
            && !(1..=MAX_WORKER_THREADS).contains(&threads)
        {
            return Err((
                "runtime.worker_threads".to_owned(),
                format!("{threads} is not between 1 and {MAX_WORKER_THREADS}"),
            ));
        }
        if self.limits.max_services == 0 {
            return Err((
                "limits.max_services".to_owned(),
                "must be more than 0".to_owned(),
            ));
        }
        Ok(())
    }

    /// The `client_ca` of the listener instances register on, and that
    /// listener's TLS section as the configuration names it.
    fn registration_client_ca(&self) -> (Option<&PathBuf>, &'static str) {
        if self.registrations.address.is_some() {
            let ca = self
                .registrations
                .tls
                .as_ref()
                .and_then(|t| t.client_ca.as_ref());
            (ca, "[registrations.tls] client_ca")
        } else {
            let ca = self.clients.tls.as_ref().and_then(|t| t.client_ca.as_ref());
            (
                ca,
                "[clients.tls] client_ca (instances register on the clients' listener)",
            )
        }
    }

    /// The `client_ca` of the clients' listener.
    fn clients_client_ca(&self) -> Option<&PathBuf> {
        self.clients.tls.as_ref().and_then(|t| t.client_ca.as_ref())
    }

    /// Checks a service's registration SANs and allow rules against what
    /// can verify them: a certificate SAN needs a client CA on its
    /// listener, a token's identity or claims need `[auth.jwt]`.
    fn check_credentials(
        &self,
        name: &str,
        settings: &ServiceSettings,
    ) -> Result<(), (String, String)> {
        let (registration_ca, registration_listener) = self.registration_client_ca();
        if registration_ca.is_none() {
            if !self.registrations.instance_sans.is_empty() && name == "defaults" {
                return Err((
                    "registrations.instance_sans".to_owned(),
                    format!(
                        "needs {registration_listener}: instances prove their SANs with a \
                         client certificate that CA verified"
                    ),
                ));
            }
            if settings
                .instance_sans
                .as_ref()
                .is_some_and(|s| !s.is_empty())
            {
                return Err((
                    format!("{name}.instance_sans"),
                    format!(
                        "needs {registration_listener}: instances prove their SANs with a \
                         client certificate that CA verified"
                    ),
                ));
            }
        }
        let jwt = self.auth.jwt.is_some();
        let client_ca = self.clients_client_ca().is_some();
        if !settings.allow.is_empty() && !jwt && !client_ca {
            return Err((
                format!("{name}.allow"),
                "needs [auth.jwt]: rules decide on a verified token's claims \
                 (or, for `sans` rules, a client certificate: [clients.tls] client_ca)"
                    .to_owned(),
            ));
        }
        for (i, rule) in settings.allow.iter().enumerate() {
            if !jwt {
                for (key, used) in [
                    ("identities", !rule.identities.is_empty()),
                    ("claims", !rule.claims.is_empty()),
                ] {
                    if used {
                        return Err((
                            format!("{name}.allow[{i}].{key}"),
                            "needs [auth.jwt]: it matches a verified token \
                             (match a client certificate with `sans`)"
                                .to_owned(),
                        ));
                    }
                }
            }
            if !rule.sans.is_empty() && !client_ca {
                return Err((
                    format!("{name}.allow[{i}].sans"),
                    "needs [clients.tls] client_ca: clients prove their SANs with a client \
                     certificate that CA verified"
                        .to_owned(),
                ));
            }
        }
        Ok(())
    }

    /// The router id in effect.
    pub fn router_id(&self) -> String {
        self.router_id.clone().unwrap_or_else(host_name)
    }

    /// The router settings of services not named in `services`.
    pub fn default_router_config(&self) -> RouterConfig {
        self.router_config(&self.defaults)
    }

    /// The router settings of each named service.
    pub fn service_router_configs(&self) -> Vec<(String, RouterConfig)> {
        self.services
            .iter()
            .map(|(name, s)| {
                let mut config = self.router_config(&s.over(&self.defaults));
                config.named_methods = named_methods(name, s);
                (name.clone(), config)
            })
            .collect()
    }

    /// Warnings about settings for methods a service does not have, for
    /// the services whose methods `known` lists (by full service name).
    /// `[defaults.methods.X]` applies to every service that has `X`, so it
    /// is not checked.
    pub fn method_warnings(&self, known: &BTreeMap<String, Vec<String>>) -> Vec<String> {
        self.services
            .iter()
            .filter_map(|(name, s)| {
                let methods = known.get(name)?;
                Some(router_runtime::router::unknown_method_warnings(
                    name,
                    &named_methods(name, s),
                    methods.iter().map(String::as_str),
                ))
            })
            .flatten()
            .collect()
    }

    /// The call check of a service with `settings`: none without
    /// `[auth.jwt]` or a client CA on the clients' listener; fails closed if
    /// the key cannot be loaded any more.
    fn client_auth(&self, settings: &ServiceSettings) -> Option<ClientAuth> {
        let Some(jwt) = self.auth.jwt.as_ref() else {
            // Without JWTs, clients of a mutual TLS listener are named by
            // their certificates (and `sans` rules decide on them).
            self.clients_client_ca()?;
            return Some(ClientAuth::new(crate::jwt::authorize_call(
                None,
                settings.allow.clone(),
            )));
        };
        let authorize = match crate::jwt::Verifier::new(jwt, &|k| std::env::var(k).ok()) {
            Ok(verifier) => {
                crate::jwt::authorize_call(Some(Arc::new(verifier)), settings.allow.clone())
            }
            Err((setting, why)) => {
                let message = format!("{setting}: {why}");
                Arc::new(move |_: &CallRequest<'_>| {
                    Err(tonic::Status::unavailable(message.clone()))
                })
            }
        };
        Some(ClientAuth::new(authorize))
    }

    fn router_config(&self, settings: &ServiceSettings) -> RouterConfig {
        let base = RouterConfig::default();
        let tokens = settings
            .tokens_sha256
            .clone()
            .unwrap_or_else(|| self.registrations.tokens_sha256.clone());
        let instance_sans = settings
            .instance_sans
            .clone()
            .unwrap_or_else(|| self.registrations.instance_sans.clone());
        RouterConfig {
            router_id: self.router_id(),
            strategy: settings.strategy,
            route_key_header: settings.route_key_header.clone(),
            max_message_size: settings
                .max_request_message_bytes
                .unwrap_or(base.max_message_size),
            max_response_message_size: settings
                .max_response_message_bytes
                .unwrap_or(base.max_response_message_size),
            heartbeat_interval: settings
                .heartbeat_interval
                .unwrap_or(base.heartbeat_interval),
            heartbeat_timeout: settings.heartbeat_timeout.unwrap_or(base.heartbeat_timeout),
            max_queued_bytes: self.limits.max_queued_bytes,
            max_partial_response_bytes: self.limits.max_partial_response_bytes,
            authorize: crate::credentials::authorize(tokens, instance_sans),
            deadlines: settings.deadlines(),
            splits: settings.splits(),
            rate_limits: settings.rate_limits(),
            client_auth: self.client_auth(settings),
            retries: settings.retries(),
            outlier_detection: settings
                .outlier_detection
                .as_ref()
                .map(OutlierSetting::detection),
            ..base
        }
    }

    /// The configuration with every default written out, as TOML.
    pub fn effective_toml(&self) -> String {
        let mut effective = self.clone();
        effective.router_id = Some(self.router_id());
        let base = RouterConfig::default();
        let d = &mut effective.defaults;
        d.max_request_message_bytes
            .get_or_insert(base.max_message_size);
        d.max_response_message_bytes
            .get_or_insert(base.max_response_message_size);
        d.heartbeat_interval.get_or_insert(base.heartbeat_interval);
        d.heartbeat_timeout.get_or_insert(base.heartbeat_timeout);
        toml::to_string_pretty(&effective)
            .unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }
}

/// The methods `[services."<service>".methods]` names, with their settings.
fn named_methods(service: &str, settings: &ServiceSettings) -> Vec<NamedMethod> {
    settings
        .methods
        .keys()
        .map(|m| NamedMethod {
            name: m.clone(),
            setting: format!("services.\"{service}\".methods.{m}"),
        })
        .collect()
}

fn http_header(name: &str) -> Result<(), ()> {
    if name.is_empty() || name != name.to_ascii_lowercase() {
        return Err(());
    }
    tonic::metadata::MetadataKey::<tonic::metadata::Ascii>::from_bytes(name.as_bytes())
        .map(|_| ())
        .map_err(|_| ())
}

/// The host name (`HOSTNAME`, else the kernel's), for the default router id.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| format!("grpc-router-{}", std::process::id()))
}

fn from_file(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let deserializer = toml::de::Deserializer::parse(text)
        .map_err(|e| file_error(path, text, String::new(), &e))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = e.path().to_string();
        file_error(path, text, field, e.inner())
    })
}

fn file_error(path: &Path, text: &str, field: String, e: &toml::de::Error) -> ConfigError {
    let (line, column) = match e.span() {
        Some(span) => line_column(text, span.start),
        None => locate(text, &field),
    };
    let mut message = e.message().trim().to_owned();
    if let Some(hint) = unquoted_service_hint(text, &field) {
        message.push_str(&hint);
    }
    ConfigError::File {
        path: path.to_owned(),
        line,
        column,
        field: if field.is_empty() || field == "." {
            "(document)".to_owned()
        } else {
            field
        },
        message,
    }
}

/// The keys of a service's settings that are tables, which can follow the
/// service's name in a table header.
const SERVICE_TABLES: [&str; 9] = [
    "methods",
    "split",
    "allow",
    "rate_limit",
    "client_rate_limit",
    "instance_rate_limit",
    "retry_policy",
    "retry_throttling",
    "outlier_detection",
];

/// For an error inside `services.<x>` caused by a header like
/// `[services.myservice.v1.Greeter]` (TOML reads each dot as a level), the
/// hint to quote the service's name.
fn unquoted_service_hint(text: &str, field: &str) -> Option<String> {
    let first = field.strip_prefix("services.")?.split('.').next()?;
    if first.starts_with('"') {
        return None;
    }
    text.lines().find_map(|line| {
        let header = line.trim();
        let (open, close) = if header.starts_with("[[") {
            ("[[", "]]")
        } else {
            ("[", "]")
        };
        let inner = header.strip_prefix(open)?.split(close).next()?.trim();
        let parts: Vec<&str> = inner.split('.').map(str::trim).collect();
        if parts.first() != Some(&"services")
            || parts.get(1) != Some(&first)
            || parts.len() < 3
            || parts.iter().any(|p| p.starts_with('"'))
        {
            return None;
        }
        let end = parts[1..]
            .iter()
            .position(|p| SERVICE_TABLES.contains(p))
            .map_or(parts.len(), |i| i + 1);
        if end <= 2 {
            return None;
        }
        let name = parts[1..end].join(".");
        let rest: String = parts[end..].iter().map(|p| format!(".{p}")).collect();
        Some(format!(
            " (`{header}` reads as nested tables: a service name with dots must be quoted, \
             `{open}services.\"{name}\"{rest}{close}`)"
        ))
    })
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The line of the setting at `field` (`defaults.heartbeat_timeout`): the
/// last key's line inside its table, else the table's header, else 1.
fn locate(text: &str, field: &str) -> (usize, usize) {
    let parts: Vec<&str> = field.split('.').collect();
    let Some((key, tables)) = parts.split_last() else {
        return (1, 1);
    };
    let header = tables.join(".");
    let mut in_table = header.is_empty();
    let mut header_line = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            let name = trimmed.trim_matches(|c| c == '[' || c == ']').trim();
            in_table = name == header;
            if in_table {
                header_line = Some(i + 1);
            }
            if name == format!("{header}.{key}").trim_start_matches('.') {
                return (i + 1, 1);
            }
            continue;
        }
        if in_table
            && let Some((k, _)) = trimmed.split_once('=')
            && k.trim().trim_matches('"') == key.trim_matches('"')
        {
            return (i + 1, line.len() - line.trim_start().len() + 1);
        }
    }
    (header_line.unwrap_or(1), 1)
}

/// The setting path of a `GRPC_ROUTER_*` variable: levels split at `__`;
/// setting names are lowercased (`RATE_LIMIT` is `rate_limit`), while the
/// names a configuration chooses keep their case: a service name (the
/// level after `SERVICES`) and a method name (the level after `METHODS`).
///
/// A POSIX shell exports only names of letters, digits and `_`, so a
/// service name may be written with `_` for each `.`
/// (`myservice_v1_Greeter`); when the file names a service that reads the
/// same with its dots written as `_`, that service is meant (so
/// `my_pkg.v1.Svc` in the file is reached by `my_pkg_v1_Svc`), else each
/// `_` is a dot. A name with a dot is taken as written.
fn env_keys(variable: &str, file_services: &[String]) -> Result<Vec<String>, String> {
    let rest = &variable[ENV_PREFIX.len()..];
    let mut keys: Vec<String> = Vec::new();
    // What the next level names: a setting, a service or a method.
    let mut next = Level::Setting;
    for part in rest.split("__") {
        if part.is_empty() {
            continue;
        }
        let key = match next {
            Level::Service => env_service_name(part, file_services)?,
            Level::Method => part.to_owned(),
            Level::Setting => part.to_ascii_lowercase(),
        };
        next = match (next, key.as_str()) {
            (Level::Setting, "services") if keys.is_empty() => Level::Service,
            (Level::Setting, "methods") if in_service_settings(&keys) => Level::Method,
            _ => Level::Setting,
        };
        keys.push(key);
    }
    Ok(keys)
}

/// Whether `keys` lead to a service's settings: `defaults` or
/// `services.<name>`.
fn in_service_settings(keys: &[String]) -> bool {
    match keys {
        [section] => section == "defaults",
        [section, _] => section == "services",
        _ => false,
    }
}

/// What a level of a variable's name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// A setting's name (lowercased).
    Setting,
    /// A service's name (after `SERVICES`).
    Service,
    /// A method's name (after `METHODS`).
    Method,
}

/// The service a variable's service level names (see [`env_keys`]).
fn env_service_name(part: &str, file_services: &[String]) -> Result<String, String> {
    if part.contains('.') {
        return Ok(part.to_owned());
    }
    let same: Vec<&String> = file_services
        .iter()
        .filter(|s| s.replace('.', "_") == part)
        .collect();
    match same.as_slice() {
        [] => Ok(part.replace('_', ".")),
        [one] => Ok((*one).clone()),
        several => Err(format!(
            "`{part}` could be any of {}; name the service with its dots \
             (`env 'GRPC_ROUTER_SERVICES__<name>__...=...'`)",
            several
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A variable's value as TOML: a TOML literal when it reads as one (numbers,
/// booleans, arrays), else a string.
fn env_value(value: &str) -> toml::Value {
    let probe = format!("v = {value}");
    match probe.parse::<toml::Table>() {
        Ok(mut table) if !value.trim().is_empty() => table
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.to_owned())),
        _ => toml::Value::String(value.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = keys.split_last() else {
        return Ok(());
    };
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{key}` is not a table"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("router.toml"), text, Vec::new())
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("invalid").to_string()
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let config = parse("").expect("valid");
        assert_eq!(config.clients.address, default_clients_address());
        assert_eq!(config.registrations.address, None);
        assert_eq!(config.shutdown.grace, Duration::from_secs(30));
        assert_eq!(config.log.format, LogFormat::Text);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let e = error("[defaults]\nstrategy = \"p2c\"\nstratgy = \"p2c\"\n");
        assert!(e.starts_with("router.toml:3:1: `defaults.stratgy`"), "{e}");
        assert!(e.contains("unknown field `stratgy`"), "{e}");
    }

    #[test]
    fn an_unknown_strategy_is_named_with_its_line_and_field() {
        let e =
            error("[clients]\naddress = \"127.0.0.1:1\"\n\n[defaults]\nstrategy = \"fastest\"\n");
        assert!(e.starts_with("router.toml:5:"), "{e}");
        assert!(e.contains("`defaults.strategy`"), "{e}");
        assert!(e.contains("unknown strategy `fastest`"), "{e}");
    }

    #[test]
    fn a_bad_address_is_named() {
        let e = error("[clients]\naddress = \"localhost\"\n");
        assert!(e.starts_with("router.toml:2:"), "{e}");
        assert!(e.contains("`clients.address`"), "{e}");
    }

    #[test]
    fn a_bad_duration_is_named() {
        let e = error("[services.\"a.B\"]\nheartbeat_timeout = \"soon\"\n");
        assert!(e.starts_with("router.toml:2:"), "{e}");
        assert!(e.contains("heartbeat_timeout"), "{e}");
        assert!(e.contains("not a duration"), "{e}");
    }

    #[test]
    fn a_timeout_not_above_the_interval_is_refused() {
        let e = error("[defaults]\nheartbeat_interval = \"10s\"\nheartbeat_timeout = \"5s\"\n");
        assert!(
            e.starts_with("router.toml:3:1: `defaults.heartbeat_timeout`"),
            "{e}"
        );
    }

    #[test]
    fn a_token_hash_that_is_not_hex_is_refused() {
        let e = error("[registrations]\ntokens_sha256 = [\"abc\"]\n");
        assert!(e.starts_with("router.toml:2:"), "{e}");
        assert!(e.contains("not a SHA-256"), "{e}");
    }

    #[test]
    fn a_bad_log_format_and_a_wrong_type_are_named() {
        let e = error("[log]\nformat = \"yaml\"\n");
        assert!(e.contains("`log.format`"), "{e}");
        let e = error("[limits]\nmax_services = \"many\"\n");
        assert!(e.starts_with("router.toml:2:"), "{e}");
        assert!(e.contains("`limits.max_services`"), "{e}");
    }

    #[test]
    fn admin_tokens_parse_and_need_a_listener_that_serves_the_admin_service() {
        let hash = crate::config::TokenHash::of("t").hex();
        let config = parse(&format!(
            "[admin]\naddress = \"127.0.0.1:9090\"\ntokens_sha256 = [\"{hash}\"]\n"
        ))
        .expect("valid");
        assert_eq!(config.admin.tokens_sha256, [TokenHash::of("t")]);
        let e = error(&format!("[admin]\ntokens_sha256 = [\"{hash}\"]\n"));
        assert!(
            e.contains("`admin.tokens_sha256`") && e.contains("guards nothing"),
            "{e}"
        );
        let on_clients = parse(&format!(
            "[clients]\nserve_admin = true\n[admin]\ntokens_sha256 = [\"{hash}\"]\n"
        ))
        .expect("valid");
        assert!(on_clients.clients.serve_admin);
        assert!(!parse("").expect("valid").clients.serve_admin);
    }

    #[test]
    fn an_admin_listener_on_a_routed_port_is_refused() {
        let e = error(
            "[clients]\naddress = \"127.0.0.1:7000\"\n[admin]\naddress = \"127.0.0.1:7000\"\n",
        );
        assert!(e.contains("`admin.address`"), "{e}");
        assert!(e.contains("the clients' address"), "{e}");
        let config = parse("[admin]\naddress = \"127.0.0.1:9090\"\n").expect("valid");
        assert_eq!(config.admin.address.map(|a| a.port()), Some(9090));
        assert_eq!(parse("").expect("valid").admin.address, None);
    }

    #[test]
    fn deadlines_come_from_the_defaults_the_service_and_its_methods() {
        let config = parse(
            "[defaults]\ndefault_deadline = \"5s\"\nmax_deadline = \"1m\"\n\
             [services.\"a.B\"]\nmax_deadline = \"30s\"\n\
             [services.\"a.B\".methods.Export]\nmax_deadline = \"10m\"\n",
        )
        .expect("valid");
        let (_, router) = config
            .service_router_configs()
            .into_iter()
            .find(|(name, _)| name == "a.B")
            .expect("a.B");
        let s = Duration::from_secs;
        assert_eq!(router.deadlines.of("Get").apply(None), Some(s(5)));
        assert_eq!(router.deadlines.of("Get").apply(Some(s(45))), Some(s(30)));
        assert_eq!(
            router.deadlines.of("Export").apply(Some(s(300))),
            Some(s(300))
        );
        let defaults = config.default_router_config();
        assert_eq!(defaults.deadlines.of("Get").apply(Some(s(90))), Some(s(60)));
    }

    #[test]
    fn a_default_deadline_over_the_maximum_or_a_bad_method_name_is_refused() {
        let e = error(
            "[services.\"a.B\"]\nmax_deadline = \"1s\"\n\
             [services.\"a.B\".methods.Get]\ndefault_deadline = \"2s\"\n",
        );
        assert!(
            e.contains("`services.\"a.B\".methods.Get.default_deadline`"),
            "{e}"
        );
        assert!(e.contains("more than max_deadline (1s)"), "{e}");
        let e = error("[services.\"a.B\".methods.\"a.B/Get\"]\nmax_deadline = \"1s\"\n");
        assert!(e.contains("is not a method name"), "{e}");
        let e = error("[defaults]\nmax_deadline = \"0s\"\n");
        assert!(
            e.contains("`defaults.max_deadline`: must be more than 0"),
            "{e}"
        );
    }

    #[test]
    fn a_traffic_split_is_read_per_service_and_checked() {
        let config = parse(
            "[[services.\"a.B\".split]]\nlabels = { version = \"v1\" }\nweight = 95\n\
             [[services.\"a.B\".split]]\nlabels = { version = \"v2\" }\nweight = 5\n",
        )
        .expect("valid");
        let (_, router) = config
            .service_router_configs()
            .into_iter()
            .find(|(name, _)| name == "a.B")
            .expect("a.B");
        let shares = router.splits.splits();
        assert_eq!(shares.len(), 2);
        assert_eq!(shares[1].labels, [("version".to_owned(), "v2".to_owned())]);
        assert_eq!(shares[1].weight, 5);
        let e = error("[[services.\"a.B\".split]]\nlabels = { v = \"1\" }\nweight = 0\n");
        assert!(e.contains("`services.\"a.B\".split`"), "{e}");
        let e = error("[[services.\"a.B\".split]]\nlabels = {}\nweight = 1\n");
        assert!(e.contains("split[0].labels"), "{e}");
    }

    #[test]
    fn rate_limits_are_read_per_service_method_and_client_and_checked() {
        let config = parse(
            "[services.\"a.B\"]\nrate_limit = { per_second = 500, burst = 50 }\n\
             client_rate_limit = { key = \"header:x-api-key\", per_second = 5 }\n\
             [services.\"a.B\".methods.Get]\nrate_limit = { per_second = 100 }\n",
        )
        .expect("valid");
        let (_, router) = config
            .service_router_configs()
            .into_iter()
            .find(|(name, _)| name == "a.B")
            .expect("a.B");
        let limits = router.rate_limits;
        let service = limits.service.expect("service limit");
        assert_eq!((service.per_second.get(), service.burst.get()), (500, 50));
        assert_eq!(limits.methods["Get"].burst.get(), 100);
        let (key, client) = limits.per_client.expect("client limit");
        assert_eq!(key, ClientKey::Header("x-api-key".to_owned()));
        assert_eq!(client.per_second.get(), 5);
        let e = error("[services.\"a.B\"]\nrate_limit = { per_second = 0 }\n");
        assert!(
            e.contains("`services.\"a.B\".rate_limit.per_second`"),
            "{e}"
        );
        let e =
            error("[services.\"a.B\"]\nclient_rate_limit = { key = \"cookie\", per_second = 1 }\n");
        assert!(e.contains("client_rate_limit.key"), "{e}");
    }

    /// `[clients.tls]` (and, with `registrations`, a registrations
    /// listener with TLS) whose files exist, with a `client_ca` where asked.
    fn tls_sections(dir: &Path, clients_ca: bool, registrations: Option<bool>) -> String {
        let file = |name: &str| {
            let path = dir.join(name);
            std::fs::write(&path, "").expect("write");
            path.display().to_string()
        };
        let (cert, key, ca) = (file("cert.pem"), file("key.pem"), file("ca.pem"));
        let section = |with_ca: bool| {
            let ca = if with_ca {
                format!("client_ca = \"{ca}\"\n")
            } else {
                String::new()
            };
            format!("cert = \"{cert}\"\nkey = \"{key}\"\n{ca}")
        };
        let mut text = format!("[clients.tls]\n{}", section(clients_ca));
        if let Some(with_ca) = registrations {
            text.push_str(&format!(
                "[registrations]\naddress = \"127.0.0.1:0\"\n[registrations.tls]\n{}",
                section(with_ca)
            ));
        }
        text
    }

    #[test]
    fn instance_sans_need_a_client_ca_on_the_registration_listener() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sans = "[services.\"a.B\"]\ninstance_sans = [\"spiffe://corp/*\"]\n";
        let e = error(sans);
        assert!(
            e.contains(
                "`services.\"a.B\".instance_sans`: needs [clients.tls] client_ca \
                 (instances register on the clients' listener)"
            ),
            "{e}"
        );
        // A client CA on the clients' listener does not cover a separate
        // registrations listener.
        let e = error(&format!(
            "{}{sans}",
            tls_sections(dir.path(), true, Some(false))
        ));
        assert!(
            e.contains("`services.\"a.B\".instance_sans`: needs [registrations.tls] client_ca"),
            "{e}"
        );
        let e = error("[registrations]\ninstance_sans = [\"dns:greeter.internal\"]\n");
        assert!(e.contains("`registrations.instance_sans`: needs"), "{e}");
        let config = parse(&format!(
            "{}{sans}",
            tls_sections(dir.path(), false, Some(true))
        ))
        .expect("valid");
        let (_, router) = &config.service_router_configs()[0];
        assert!(router.authorize.is_some(), "registrations are checked");
        assert!(router.client_auth.is_none(), "clients are not");
    }

    #[test]
    fn a_malformed_san_pattern_is_an_error_at_its_key() {
        let e = error("[services.\"a.B\"]\ninstance_sans = [\"greeter.internal\"]\n");
        assert!(e.contains("instance_sans"), "{e}");
        assert!(e.contains("is not a SAN pattern"), "{e}");
        let e = error("[[defaults.allow]]\nsans = [\"dns:*.*.corp\"]\n");
        assert!(e.contains("sans"), "{e}");
        assert!(e.contains("more than one `*`"), "{e}");
    }

    #[test]
    fn san_rules_need_a_client_ca_and_token_rules_a_jwt_section() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jwt = "[auth.jwt]\nissuer = \"i\"\naudience = \"a\"\nhmac_secret_env = \"HOME\"\n";
        let e = error(&format!(
            "{jwt}[[services.\"a.B\".allow]]\nmethods = [\"Get\"]\n\
             [[services.\"a.B\".allow]]\nsans = [\"spiffe://corp/web\"]\n"
        ));
        assert!(
            e.contains("`services.\"a.B\".allow[1].sans`: needs [clients.tls] client_ca"),
            "{e}"
        );
        let mtls = tls_sections(dir.path(), true, None);
        let e = error(&format!(
            "{mtls}[[services.\"a.B\".allow]]\nclaims = {{ role = \"x\" }}\n"
        ));
        assert!(
            e.contains("`services.\"a.B\".allow[0].claims`: needs [auth.jwt]"),
            "{e}"
        );
        let config = parse(&format!(
            "{mtls}[[services.\"a.B\".allow]]\nsans = [\"spiffe://corp/web\"]\n"
        ))
        .expect("valid without JWTs");
        let (_, router) = &config.service_router_configs()[0];
        assert!(router.client_auth.is_some(), "clients are checked");
        assert!(router.authorize.is_none(), "registrations are not");
    }

    #[test]
    fn allow_rules_need_a_jwt_section_and_the_jwt_key_must_load() {
        let e = error("[[services.\"a.B\".allow]]\nmethods = [\"Get\"]\n");
        assert!(
            e.contains("`services.\"a.B\".allow`: needs [auth.jwt]"),
            "{e}"
        );
        let e = error(
            "[auth.jwt]\nissuer = \"i\"\naudience = \"a\"\n\
             public_key_file = \"/nonexistent/key.pem\"\n",
        );
        assert!(e.contains("`auth.jwt.public_key_file`"), "{e}");
        assert!(e.contains("/nonexistent/key.pem"), "{e}");
    }

    #[test]
    fn retry_policies_are_read_for_idempotent_methods_and_named_ones_and_checked() {
        let config = parse(
            "[services.\"a.B\"]\n\
             retry_policy = { max_attempts = 3, initial_backoff = \"100ms\", max_backoff = \"1s\", backoff_multiplier = 2.0, retryable_status_codes = [\"UNAVAILABLE\"] }\n\
             retry_throttling = { max_tokens = 20, token_ratio = 0.2 }\n\
             [services.\"a.B\".methods.Charge]\n\
             retry_policy = { max_attempts = 2, initial_backoff = \"50ms\", max_backoff = \"50ms\", backoff_multiplier = 1.0, retryable_status_codes = [\"ABORTED\"] }\n",
        )
        .expect("valid");
        let (_, router) = config
            .service_router_configs()
            .into_iter()
            .find(|(name, _)| name == "a.B")
            .expect("a.B");
        let retries = router.retries;
        assert_eq!(retries.idempotent.as_ref().map(|p| p.max_attempts), Some(3));
        assert_eq!(
            retries.methods["Charge"].retryable_status_codes,
            [tonic::Code::Aborted]
        );
        assert_eq!(retries.throttling.max_tokens, 20);
        let e = error(
            "[defaults]\nretry_policy = { max_attempts = 9, initial_backoff = \"1s\", max_backoff = \"1s\", backoff_multiplier = 1.0, retryable_status_codes = [\"UNAVAILABLE\"] }\n",
        );
        assert!(
            e.contains("`defaults.retry_policy.max_attempts`: must be 2 to 5"),
            "{e}"
        );
        let e = error(
            "[defaults]\nretry_policy = { max_attempts = 2, initial_backoff = \"1s\", max_backoff = \"1s\", backoff_multiplier = 1.0, retryable_status_codes = [\"Unavailable\"] }\n",
        );
        assert!(e.contains("`Unavailable` is not a gRPC status name"), "{e}");
    }

    #[test]
    fn outlier_detection_defaults_each_key_and_checks_them() {
        let config = parse(
            "[defaults.outlier_detection]\nconsecutive_failures = 3\nbase_ejection = \"10s\"\n",
        )
        .expect("valid");
        let detection = config
            .default_router_config()
            .outlier_detection
            .expect("on");
        assert_eq!(detection.consecutive_failures, 3);
        assert_eq!(detection.base_ejection, Duration::from_secs(10));
        assert_eq!(detection.max_ejected_percent, 10);
        let e = error("[defaults.outlier_detection]\nfailure_codes = [\"BROKEN\"]\n");
        assert!(
            e.contains("`defaults.outlier_detection.failure_codes`"),
            "{e}"
        );
        let e = error("[defaults.outlier_detection]\nmax_ejected_percent = 150\n");
        assert!(e.contains("must be 0 to 100"), "{e}");
    }

    #[test]
    fn a_toml_syntax_error_names_its_line() {
        let e = error("[clients\naddress = 1\n");
        assert!(e.starts_with("router.toml:1:"), "{e}");
    }

    #[test]
    fn runtime_worker_threads_are_read_and_checked() {
        let config = parse("[runtime]\nworker_threads = 1\n").expect("valid");
        assert_eq!(config.runtime.worker_threads, Some(1));
        assert!(config.effective_toml().contains("worker_threads = 1"));
        let e = error("[runtime]\nworker_threads = 0\n");
        assert!(
            e.contains("`runtime.worker_threads`") && e.contains("between 1 and"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_tls_file_is_named() {
        let e = error(
            "[clients.tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n",
        );
        assert!(e.contains("`clients.tls.cert`"), "{e}");
        assert!(e.contains("/nonexistent/cert.pem"), "{e}");
    }

    #[test]
    fn environment_variables_override_the_file() {
        let env = vec![
            ("GRPC_ROUTER_LOG__LEVEL".to_owned(), "debug".to_owned()),
            (
                "GRPC_ROUTER_DEFAULTS__STRATEGY".to_owned(),
                "round-robin".to_owned(),
            ),
            ("GRPC_ROUTER_SHUTDOWN__GRACE".to_owned(), "5s".to_owned()),
            (
                "GRPC_ROUTER_SERVICES__myservice.v1.Greeter__MAX_REQUEST_MESSAGE_BYTES".to_owned(),
                "1024".to_owned(),
            ),
            (
                "GRPC_ROUTER_CLIENTS__ADDRESS".to_owned(),
                "127.0.0.1:7000".to_owned(),
            ),
            ("OTHER".to_owned(), "ignored".to_owned()),
        ];
        let config =
            Config::parse(Path::new("r.toml"), "[log]\nlevel = \"info\"\n", env).expect("valid");
        assert_eq!(config.log.level, "debug");
        assert_eq!(config.defaults.strategy, Some(Strategy::RoundRobin));
        assert_eq!(config.shutdown.grace, Duration::from_secs(5));
        assert_eq!(
            config.services["myservice.v1.Greeter"].max_request_message_bytes,
            Some(1024)
        );
        assert_eq!(config.clients.address.port(), 7000);
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_variable_keeps_the_case_of_service_and_method_names() {
        let config = Config::parse(
            Path::new("r.toml"),
            "",
            env(&[
                (
                    "GRPC_ROUTER_SERVICES__myservice.v1.Greeter__METHODS__SayHello__RATE_LIMIT__PER_SECOND",
                    "1",
                ),
                (
                    "GRPC_ROUTER_DEFAULTS__METHODS__Export__MAX_DEADLINE",
                    "10m",
                ),
            ]),
        )
        .expect("valid");
        let greeter = &config.services["myservice.v1.Greeter"];
        assert_eq!(
            greeter.methods["SayHello"].rate_limit.map(|l| l.per_second),
            Some(1)
        );
        assert_eq!(
            config.defaults.methods["Export"].max_deadline,
            Some(Duration::from_secs(600))
        );
    }

    #[test]
    fn a_service_name_can_be_written_with_underscores_for_its_dots() {
        let config = Config::parse(
            Path::new("r.toml"),
            "[services.\"my_pkg.v1.Svc\"]\nstrategy = \"p2c\"\n",
            env(&[
                (
                    "GRPC_ROUTER_SERVICES__myservice_v1_Greeter__STRATEGY",
                    "round-robin",
                ),
                ("GRPC_ROUTER_SERVICES__my_pkg_v1_Svc__STRATEGY", "weighted"),
            ]),
        )
        .expect("valid");
        assert_eq!(
            config.services["myservice.v1.Greeter"].strategy,
            Some(Strategy::RoundRobin),
            "each `_` is a dot"
        );
        assert_eq!(
            config.services["my_pkg.v1.Svc"].strategy,
            Some(Strategy::Weighted),
            "the service the file names, whose own `_` stays"
        );
        assert_eq!(config.services.len(), 2, "{:?}", config.services.keys());
    }

    #[test]
    fn an_ambiguous_underscored_service_name_is_refused() {
        let e = Config::parse(
            Path::new("r.toml"),
            "[services.\"a.b_c\"]\n[services.\"a_b.c\"]\n",
            env(&[("GRPC_ROUTER_SERVICES__a_b_c__STRATEGY", "p2c")]),
        )
        .expect_err("ambiguous")
        .to_string();
        assert!(
            e.starts_with("environment variable GRPC_ROUTER_SERVICES__a_b_c__STRATEGY"),
            "{e}"
        );
        assert!(e.contains("`a.b_c`, `a_b.c`"), "{e}");
    }

    #[test]
    fn named_methods_reach_the_service_router_config() {
        let config = parse(
            "[defaults.methods.Export]\nmax_deadline = \"1m\"\n\
             [services.\"a.B\".methods.Get]\nmax_deadline = \"1s\"\n",
        )
        .expect("valid");
        let (_, router) = &config.service_router_configs()[0];
        assert_eq!(
            router.named_methods,
            [NamedMethod {
                name: "Get".to_owned(),
                setting: "services.\"a.B\".methods.Get".to_owned(),
            }],
            "the service's own, not the defaults' (which apply where they fit)"
        );
        assert!(config.default_router_config().named_methods.is_empty());
        let known = BTreeMap::from([("a.B".to_owned(), vec!["get".to_owned()])]);
        let warnings = config.method_warnings(&known);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("did you mean `get`?"), "{warnings:?}");
    }

    #[test]
    fn an_unquoted_service_name_is_hinted_with_its_quoted_form() {
        let e = error("[services.myservice.v1.Greeter]\nstrategy = \"p2c\"\n");
        assert!(e.starts_with("router.toml:1:"), "{e}");
        assert!(e.contains("`[services.\"myservice.v1.Greeter\"]`"), "{e}");
        let e = error("[services.a.B.methods.Get]\nmax_deadline = \"1s\"\n");
        assert!(e.contains("`[services.\"a.B\".methods.Get]`"), "{e}");
        let e = error("[[services.a.B.split]]\nlabels = { v = \"1\" }\nweight = 1\n");
        assert!(e.contains("`[[services.\"a.B\".split]]`"), "{e}");
        let e = error("[services.\"a.B\"]\nstratgy = \"p2c\"\n");
        assert!(!e.contains("must be quoted"), "quoted already: {e}");
    }

    #[test]
    fn a_bad_environment_value_names_the_variable() {
        let env = vec![(
            "GRPC_ROUTER_DEFAULTS__STRATEGY".to_owned(),
            "fastest".to_owned(),
        )];
        let e = Config::parse(Path::new("r.toml"), "", env)
            .expect_err("invalid")
            .to_string();
        assert!(
            e.starts_with(
                "environment variable GRPC_ROUTER_DEFAULTS__STRATEGY: `defaults.strategy`"
            ),
            "{e}"
        );
    }

    #[test]
    fn per_service_settings_fall_back_to_the_defaults() {
        let config = parse(
            "[defaults]\nstrategy = \"weighted\"\nroute_key_header = \"x-tenant\"\n\
             [services.\"a.B\"]\nstrategy = \"round-robin\"\n",
        )
        .expect("valid");
        let (name, b) = &config.service_router_configs()[0];
        assert_eq!(name, "a.B");
        assert_eq!(b.strategy, Some(Strategy::RoundRobin));
        assert_eq!(b.route_key_header.as_deref(), Some("x-tenant"));
        assert_eq!(
            config.default_router_config().strategy,
            Some(Strategy::Weighted)
        );
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

    #[test]
    fn an_otlp_endpoint_that_is_not_a_grpc_url_is_named_with_its_line() {
        for (endpoint, why) in [
            ("127.0.0.1:4317", "scheme"),
            ("udp://collector:4317", "scheme"),
            ("http://collector:4318/v1/traces", "no path"),
            ("http://", "not a URL"),
        ] {
            let e = error(&format!(
                "[log]\nlevel = \"info\"\n[tracing]\notlp_endpoint = \"{endpoint}\"\n"
            ));
            assert!(
                e.starts_with("router.toml:4:1: `tracing.otlp_endpoint`"),
                "{endpoint}: {e}"
            );
            assert!(e.contains(why), "{endpoint}: {e}");
            assert!(e.contains("http://127.0.0.1:4317"), "the fix is shown: {e}");
        }
    }

    #[cfg(not(feature = "otel"))]
    #[test]
    fn an_otlp_endpoint_without_the_otel_feature_is_refused() {
        let e = error("[tracing]\notlp_endpoint = \"http://127.0.0.1:4317\"\n");
        assert!(
            e.starts_with("router.toml:2:1: `tracing.otlp_endpoint`"),
            "{e}"
        );
        assert!(e.contains("without the `otel` feature"), "{e}");
    }

    #[test]
    fn a_sample_ratio_outside_zero_to_one_is_refused() {
        for ratio in ["1.5", "-0.1", "nan"] {
            let e = error(&format!("[tracing]\nsample_ratio = {ratio}\n"));
            assert!(
                e.starts_with("router.toml:2:1: `tracing.sample_ratio`"),
                "{ratio}: {e}"
            );
            assert!(e.contains("not between 0 and 1"), "{ratio}: {e}");
        }
        let e = error("[tracing]\nsample_ratio = \"half\"\n");
        assert!(e.contains("`tracing.sample_ratio`"), "{e}");
        let e = error("[tracing]\nservice_name = \" \"\n");
        assert!(
            e.contains("`tracing.service_name`: must not be empty"),
            "{e}"
        );
        let e = error("[tracing]\nsample_rate = 0.5\n");
        assert!(e.contains("unknown field `sample_rate`"), "{e}");
    }

    #[test]
    fn the_sample_ratio_can_come_from_the_environment() {
        for (value, expected) in [("0.5", 0.5), ("1", 1.0), ("0", 0.0)] {
            let env = vec![(
                "GRPC_ROUTER_TRACING__SAMPLE_RATIO".to_owned(),
                value.to_owned(),
            )];
            let config = Config::parse(Path::new("r.toml"), "", env).expect("valid");
            assert_eq!(config.tracing.sample_ratio, expected, "{value}");
        }
        let env = vec![(
            "GRPC_ROUTER_TRACING__SAMPLE_RATIO".to_owned(),
            "2".to_owned(),
        )];
        let e = Config::parse(Path::new("r.toml"), "", env)
            .expect_err("invalid")
            .to_string();
        assert!(
            e.starts_with(
                "environment variable GRPC_ROUTER_TRACING__SAMPLE_RATIO: `tracing.sample_ratio`"
            ),
            "{e}"
        );
    }

    #[test]
    fn the_effective_config_reads_back_as_itself() {
        let config = parse("[defaults]\nstrategy = \"consistent-hash\"\n").expect("valid");
        let text = config.effective_toml();
        let again = parse(&text).expect("the printed config is valid");
        assert_eq!(again.defaults.strategy, Some(Strategy::ConsistentHash));
        assert!(text.contains("heartbeat_timeout = \"30s\""), "{text}");
    }
}
