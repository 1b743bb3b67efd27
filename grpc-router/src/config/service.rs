//! A service's settings (`[defaults]` and `[services."<name>"]`), how a
//! service's settings inherit from `[defaults]`, and the deadlines and
//! traffic split they give.

use std::collections::BTreeMap;
use std::time::Duration;

use router_runtime::router::{DeadlinePolicy, Deadlines, Strategy, TrafficSplit, TrafficSplits};
use serde::{Deserialize, Serialize};

use super::policies::{
    ClientRateLimitSetting, OutlierSetting, RateLimitSetting, RetryPolicySetting,
    RetryThrottlingSetting,
};
use super::values::{TokenHash, duration_option, strategy, strategy_name};

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
    pub(super) fn policy(&self) -> DeadlinePolicy {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use router_runtime::router::Strategy;

    use crate::config::testing::{error, parse};

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
