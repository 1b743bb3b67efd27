//! The daemon's configuration: a TOML file (unknown keys are errors), every
//! setting also settable by an environment variable
//! `GRPC_ROUTER_<SECTION>__<KEY>` (double underscore between levels, for
//! example `GRPC_ROUTER_LOG__LEVEL=debug` or
//! `GRPC_ROUTER_SERVICES__myservice.v1.Greeter__STRATEGY=round-robin`).
//!
//! Errors name the file, line and column, and the setting's path
//! (`defaults.strategy`), or the environment variable that set it.
//!
//! The module is split by job:
//! - `sections`: the daemon-wide sections (listeners, limits, admin, log,
//!   tracing, ...);
//! - `cluster`: `[cluster]`, the replicas of a fleet;
//! - `service`: a service's settings and their checks;
//! - `inherit`: how they inherit from `[defaults]` (derived, field by
//!   field);
//! - `policies`: rate limits, retries and outlier detection;
//! - `concurrency`: the concurrency limits (`max_concurrent_calls`);
//! - `activate`: the activation hook and the KEDA scaler's listener;
//! - `values`: values written as text (durations, token hashes, ...);
//! - `file`: reading the file and placing errors at their line;
//! - `env`: the `GRPC_ROUTER_*` overlay;
//! - `validate`: what one field cannot check;
//! - `router_config`: the `RouterConfig` of each service.

mod activate;
mod cluster;
mod concurrency;
mod env;
mod file;
mod inherit;
mod policies;
mod router_config;
mod sections;
mod service;
#[cfg(test)]
mod testing;
mod validate;
mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use router_runtime::router::RouterConfig;
use serde::{Deserialize, Serialize};

use crate::jwt::Verifier;

pub use activate::{ActivateSetting, Keda};
pub use cluster::{Cluster, host_port};
pub use concurrency::{ConcurrencyQueueSetting, DEFAULT_MAX_WAITING};
pub use policies::{
    ClientRateLimitSetting, OutlierSetting, RateLimitSetting, RetryPolicySetting,
    RetryThrottlingSetting,
};
pub use sections::{
    Admin, Auth, ClientsListener, CorsSettings, Limits, Log, LogFormat, NO_OTEL, Registrations,
    Runtime, Shutdown, State, Tls, Tracing,
};
pub use service::{MethodSettings, ServiceSettings, SplitShare};
pub use values::TokenHash;

use file::{from_file, locate};
use validate::Invalid;

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
    /// The KEDA external scaler (`[keda] listen`).
    #[serde(default)]
    pub keda: Keda,
    /// The replicas of this router's fleet, told to bridges.
    #[serde(default)]
    pub cluster: Cluster,
    /// The fleet the routers tell bridges of, carried over reloads; not a
    /// setting.
    #[serde(skip)]
    pub cluster_state: crate::cluster::ClusterState,
    /// The verifier of `[auth.jwt]`, built when the configuration is
    /// loaded; not a setting.
    #[serde(skip)]
    pub jwt_verifier: LoadedVerifier,
}

/// The JWT verifier of a loaded configuration: built once per load
/// ([`Config::parse`], [`Config::load`], so once per reload), with the key
/// read through the environment the configuration was parsed with, and
/// shared by every service, so the bound of its cache of verified tokens is
/// the router's, not each service's.
#[derive(Debug, Clone, Default)]
pub struct LoadedVerifier(Option<Arc<Verifier>>);

impl LoadedVerifier {
    /// The verifier, when the configuration was loaded with `[auth.jwt]`.
    pub fn get(&self) -> Option<&Arc<Verifier>> {
        self.0.as_ref()
    }
}

/// Any two compare equal: a verifier follows from `[auth.jwt]` (and the
/// key it names), which configurations compare as settings.
impl PartialEq for LoadedVerifier {
    fn eq(&self, _: &Self) -> bool {
        true
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

    /// Parses `text` (read from `path`, for messages) and applies the
    /// `GRPC_ROUTER_*` variables of `env`. The variable `[auth.jwt]
    /// hmac_secret_env` names is read from `env` too, not from the process.
    pub fn parse(
        path: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let variables: Vec<(String, String)> = env.into_iter().collect();
        let lookup = |name: &str| {
            variables
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let mut config = from_file(path, text)?;
        let verifier = config.check(&lookup).map_err(
            |Invalid {
                 key: field,
                 message,
             }| {
                let (line, column) = locate(text, &field);
                ConfigError::File {
                    path: path.to_owned(),
                    line,
                    column,
                    field,
                    message,
                }
            },
        )?;
        let overrides: Vec<(String, String)> = variables
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .cloned()
            .collect();
        if overrides.is_empty() {
            config.jwt_verifier = verifier;
            return Ok(config);
        }
        // The file's verifier is dropped: the variables may change
        // `[auth.jwt]`.
        env::overlay(path, text, &config, &overrides, &lookup)
    }

    /// The router id in effect.
    pub fn router_id(&self) -> String {
        self.router_id.clone().unwrap_or_else(host_name)
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

#[cfg(test)]
mod tests {
    use router_runtime::router::Strategy;

    use crate::config::testing::parse;

    #[test]
    fn the_effective_config_reads_back_as_itself() {
        let config = parse("[defaults]\nstrategy = \"consistent-hash\"\n").expect("valid");
        let text = config.effective_toml();
        let again = parse(&text).expect("the printed config is valid");
        assert_eq!(again.defaults.strategy, Some(Strategy::ConsistentHash));
        assert!(text.contains("heartbeat_timeout = \"30s\""), "{text}");
    }
}
