//! A service's settings (`[defaults]` and `[services."<name>"]`), their
//! inheritance from `[defaults]` (derived: see `inherit`), the checks of
//! the routing and deadline settings, and the deadlines and traffic split
//! they give.

use std::collections::BTreeMap;
use std::time::Duration;

use router_runtime::router::{
    DeadlinePolicy, Deadlines, RouterConfig, Strategy, TrafficSplit, TrafficSplits,
};
use serde::{Deserialize, Serialize};

use super::inherit::inherited;
use super::policies::{
    ClientRateLimitSetting, OutlierSetting, RateLimitSetting, RetryPolicySetting,
    RetryThrottlingSetting,
};
use super::validate::Invalid;
use super::values::{TokenHash, duration_option, http_header, strategy, strategy_name};

inherited! {
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
        /// The service's calls in flight at once; past it a call fails
        /// RESOURCE_EXHAUSTED, or waits as `concurrency_queue` allows.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub max_concurrent_calls: Option<u32>,
        /// How a call over a concurrency limit (the service's or a method's)
        /// waits for a slot, e.g. `{ timeout = "100ms", max_waiting = 100 }`;
        /// without it such a call fails at once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub concurrency_queue: Option<super::concurrency::ConcurrencyQueueSetting>,
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
        /// A call that finds no instance able to take it waits this long
        /// for one (scale to zero); unset, it fails UNAVAILABLE at once.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "duration_option"
        )]
        pub wait_for_instance: Option<Duration>,
        /// The most calls of the service waiting for an instance at once
        /// (default 1000); one more fails RESOURCE_EXHAUSTED at once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub max_waiting_calls: Option<usize>,
        /// The most request bytes the service's waiting calls hold together
        /// (default 64 MiB).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub max_waiting_bytes: Option<usize>,
        /// What starts an instance when a call starts waiting for a service
        /// with none (`command` or `url`, and `cooldown`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub activate: Option<super::activate::ActivateSetting>,
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
    /// This method's calls in flight at once, on top of the service's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_calls: Option<u32>,
    /// This method's `retryPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicySetting>,
}

impl MethodSettings {
    pub(super) fn policy(&self) -> DeadlinePolicy {
        DeadlinePolicy {
            default: self.default_deadline,
            max: self.max_deadline,
        }
    }
}

impl ServiceSettings {
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

    /// Checks the heartbeats of these settings, in effect (over the
    /// defaults), at `name` (`defaults` or `services."<name>"`).
    pub(super) fn check_heartbeats(&self, name: &str) -> Result<(), Invalid> {
        let base = RouterConfig::default();
        let interval = self.heartbeat_interval.unwrap_or(base.heartbeat_interval);
        let timeout = self.heartbeat_timeout.unwrap_or(base.heartbeat_timeout);
        if interval.is_zero() {
            return Err(Invalid::new(
                format!("{name}.heartbeat_interval"),
                "must be more than 0".to_owned(),
            ));
        }
        if timeout <= interval {
            return Err(Invalid::new(
                format!("{name}.heartbeat_timeout"),
                format!(
                    "{} is not more than heartbeat_interval ({}): every instance would be dropped",
                    humantime::format_duration(timeout),
                    humantime::format_duration(interval)
                ),
            ));
        }
        Ok(())
    }

    /// Checks the message size limits at `name`.
    pub(super) fn check_message_sizes(&self, name: &str) -> Result<(), Invalid> {
        for (key, value) in [
            ("max_request_message_bytes", self.max_request_message_bytes),
            (
                "max_response_message_bytes",
                self.max_response_message_bytes,
            ),
        ] {
            if value == Some(0) {
                return Err(Invalid::new(
                    format!("{name}.{key}"),
                    "must be more than 0".to_owned(),
                ));
            }
        }
        Ok(())
    }

    /// Checks the deadlines of these settings, in effect, and of each
    /// method, at `name`.
    pub(super) fn check_deadlines(&self, name: &str) -> Result<(), Invalid> {
        let deadlines = self.deadlines();
        for (scope, policy) in std::iter::once((name.to_owned(), deadlines.service)).chain(
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
                    return Err(Invalid::new(
                        format!("{scope}.{key}"),
                        "must be more than 0".to_owned(),
                    ));
                }
            }
            if let (Some(default), Some(max)) = (policy.default, policy.max)
                && default > max
            {
                return Err(Invalid::new(
                    format!("{scope}.default_deadline"),
                    format!(
                        "{} is more than max_deadline ({})",
                        humantime::format_duration(default),
                        humantime::format_duration(max)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks the traffic split at `name`.
    pub(super) fn check_split(&self, name: &str) -> Result<(), Invalid> {
        if self.split.is_empty() {
            return Ok(());
        }
        if self.split.iter().all(|share| share.weight == 0) {
            return Err(Invalid::new(
                format!("{name}.split"),
                "every share has weight 0: no call could be routed by it".to_owned(),
            ));
        }
        if let Some(i) = self.split.iter().position(|s| s.labels.is_empty()) {
            return Err(Invalid::new(
                format!("{name}.split[{i}].labels"),
                "must name at least one label (a share of every instance splits nothing)"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// Checks the waiting settings at `name`.
    pub(super) fn check_waiting(&self, name: &str) -> Result<(), Invalid> {
        if self.wait_for_instance.is_some_and(|d| d.is_zero()) {
            return Err(Invalid::new(
                format!("{name}.wait_for_instance"),
                "must be more than 0 (leave it out for calls not to wait)".to_owned(),
            ));
        }
        for (key, value) in [
            ("max_waiting_calls", self.max_waiting_calls),
            ("max_waiting_bytes", self.max_waiting_bytes),
        ] {
            if value == Some(0) {
                return Err(Invalid::new(
                    format!("{name}.{key}"),
                    "must be more than 0".to_owned(),
                ));
            }
        }
        if let Some(activate) = &self.activate {
            activate.check(&format!("{name}.activate"))?;
            if self.wait_for_instance.is_none() {
                return Err(Invalid::new(
                    format!("{name}.activate"),
                    "runs when a call starts waiting: it needs `wait_for_instance`".to_owned(),
                ));
            }
        }
        Ok(())
    }

    /// How calls wait for an instance under these settings; `None` when
    /// they do not (`wait_for_instance` unset).
    pub fn waiting(&self) -> Option<router_runtime::router::WaitForInstance> {
        let mut waiting = router_runtime::router::WaitForInstance::new(self.wait_for_instance?);
        if let Some(max) = self.max_waiting_calls {
            waiting.max_calls = max;
        }
        if let Some(max) = self.max_waiting_bytes {
            waiting.max_bytes = max;
        }
        Some(waiting)
    }

    /// Checks the method names of `methods` and `route_key_header` at
    /// `name`.
    pub(super) fn check_names(&self, name: &str) -> Result<(), Invalid> {
        for method in self.methods.keys() {
            if method.is_empty() || method.contains(['/', '.']) {
                return Err(Invalid::new(
                    format!("{name}.methods.\"{method}\""),
                    "is not a method name (as in the proto, e.g. `SayHello`)".to_owned(),
                ));
            }
        }
        if let Some(header) = &self.route_key_header
            && http_header(header).is_err()
        {
            return Err(Invalid::new(
                format!("{name}.route_key_header"),
                format!("`{header}` is not a valid lowercase metadata header name"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use router_runtime::router::Strategy;

    use super::ServiceSettings;
    use crate::config::testing::{error, parse};

    /// Every setting a service can have, each set.
    const EVERY_SETTING: &str = r#"
strategy = "p2c"
route_key_header = "x-tenant"
max_request_message_bytes = 1024
max_response_message_bytes = 2048
heartbeat_interval = "5s"
heartbeat_timeout = "20s"
tokens_sha256 = ["0000000000000000000000000000000000000000000000000000000000000000"]
instance_sans = ["spiffe://corp/*"]
default_deadline = "1s"
max_deadline = "10s"
rate_limit = { per_second = 10, burst = 5 }
client_rate_limit = { key = "peer", per_second = 2 }
instance_rate_limit = { per_second = 3 }
max_concurrent_calls = 50
concurrency_queue = { timeout = "100ms", max_waiting = 10 }
retry_policy = { max_attempts = 3, initial_backoff = "100ms", max_backoff = "1s", backoff_multiplier = 2.0, retryable_status_codes = ["UNAVAILABLE"] }
retry_throttling = { max_tokens = 20, token_ratio = 0.2 }
outlier_detection = { consecutive_failures = 3 }
wait_for_instance = "30s"
max_waiting_calls = 10
max_waiting_bytes = 1000
activate = { command = ["start-instance"], cooldown = "1m" }

[methods.Get]
max_deadline = "2s"

[[split]]
labels = { version = "v2" }
weight = 1

[[allow]]
methods = ["Get"]
"#;

    #[test]
    fn a_service_that_sets_nothing_inherits_every_setting_of_the_defaults() {
        let defaults: ServiceSettings = toml::from_str(EVERY_SETTING).expect("valid settings");
        let written = toml::Table::try_from(&defaults).expect("serializable");
        for field in ServiceSettings::FIELDS {
            assert!(
                written.contains_key(*field),
                "EVERY_SETTING leaves `{field}` out: set it, so that its inheritance is tested"
            );
        }
        let inherited = ServiceSettings::default().over(&defaults);
        let read_back = toml::Table::try_from(&inherited).expect("serializable");
        for field in ServiceSettings::FIELDS {
            assert_eq!(
                read_back.get(*field),
                written.get(*field),
                "`{field}` is not inherited from [defaults]"
            );
        }
        assert_eq!(inherited, defaults);
        assert_eq!(
            defaults.over(&ServiceSettings::default()),
            defaults,
            "a service's own settings are its own"
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
}
