//! Rate limits, retries and outlier detection: their settings, checks and
//! the router policies they give.

use std::time::Duration;

use router_runtime::router::{
    ClientKey, OutlierDetection, RateLimit, RateLimits, RetryPolicies, RetryPolicy, RetryThrottling,
};
use serde::{Deserialize, Serialize};

use super::service::ServiceSettings;
use super::validate::Invalid;
use super::values::{duration, duration_option, http_header, status_code};

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
    pub(super) fn detection(&self) -> OutlierDetection {
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

    pub(super) fn check(&self, at: &str) -> Result<(), Invalid> {
        if let Some(bad) = self
            .failure_codes
            .iter()
            .flatten()
            .find(|c| status_code(c).is_none())
        {
            return Err(Invalid::new(
                format!("{at}.failure_codes"),
                format!("`{bad}` is not a gRPC status name (UNAVAILABLE, INTERNAL, ...)"),
            ));
        }
        if self.failure_rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
            return Err(Invalid::new(
                format!("{at}.failure_rate"),
                "must be 0 to 1".to_owned(),
            ));
        }
        if self.max_ejected_percent.is_some_and(|p| p > 100) {
            return Err(Invalid::new(
                format!("{at}.max_ejected_percent"),
                "must be 0 to 100".to_owned(),
            ));
        }
        let d = self.detection();
        if d.base_ejection.is_zero() || d.max_ejection < d.base_ejection || d.window.is_zero() {
            return Err(Invalid::new(
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

    pub(super) fn check(&self, at: &str) -> Result<(), Invalid> {
        if !(2..=5).contains(&self.max_attempts) {
            return Err(Invalid::new(
                format!("{at}.max_attempts"),
                "must be 2 to 5".to_owned(),
            ));
        }
        if self.initial_backoff.is_zero() || self.max_backoff < self.initial_backoff {
            return Err(Invalid::new(
                format!("{at}.max_backoff"),
                "backoffs must be more than 0 and max_backoff at least initial_backoff".to_owned(),
            ));
        }
        if !(self.backoff_multiplier >= 1.0 && self.backoff_multiplier.is_finite()) {
            return Err(Invalid::new(
                format!("{at}.backoff_multiplier"),
                "must be at least 1".to_owned(),
            ));
        }
        if self.retryable_status_codes.is_empty() {
            return Err(Invalid::new(
                format!("{at}.retryable_status_codes"),
                "must name at least one status".to_owned(),
            ));
        }
        if let Some(bad) = self
            .retryable_status_codes
            .iter()
            .find(|c| status_code(c).is_none())
        {
            return Err(Invalid::new(
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

    pub(super) fn check(self, at: &str) -> Result<(), Invalid> {
        if self.per_second == 0 {
            return Err(Invalid::new(
                format!("{at}.per_second"),
                "must be more than 0".to_owned(),
            ));
        }
        if self.burst == Some(0) {
            return Err(Invalid::new(
                format!("{at}.burst"),
                "must be more than 0".to_owned(),
            ));
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
    pub(super) fn client_key(&self) -> Option<ClientKey> {
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

impl ServiceSettings {
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

    /// Checks the service's and the instances' rate limits at `name`.
    pub(super) fn check_rate_limits(&self, name: &str) -> Result<(), Invalid> {
        if let Some(limit) = self.rate_limit {
            limit.check(&format!("{name}.rate_limit"))?;
        }
        if let Some(limit) = self.instance_rate_limit {
            limit.check(&format!("{name}.instance_rate_limit"))?;
        }
        Ok(())
    }

    /// Checks the retry policies (the service's and each method's), the
    /// retry throttling and the outlier detection at `name`.
    pub(super) fn check_retries(&self, name: &str) -> Result<(), Invalid> {
        if let Some(policy) = &self.retry_policy {
            policy.check(&format!("{name}.retry_policy"))?;
        }
        if let Some(outliers) = &self.outlier_detection {
            outliers.check(&format!("{name}.outlier_detection"))?;
        }
        if let Some(t) = self.retry_throttling
            && (!(1..=1000).contains(&t.max_tokens) || !(0.0..=1.0).contains(&t.token_ratio))
        {
            return Err(Invalid::new(
                format!("{name}.retry_throttling"),
                "max_tokens must be 1 to 1000 and token_ratio 0 to 1".to_owned(),
            ));
        }
        for (method, m) in &self.methods {
            if let Some(policy) = &m.retry_policy {
                policy.check(&format!("{name}.methods.{method}.retry_policy"))?;
            }
        }
        Ok(())
    }

    /// Checks the per-client and the per-method rate limits at `name`.
    pub(super) fn check_client_and_method_limits(&self, name: &str) -> Result<(), Invalid> {
        if let Some(client) = &self.client_rate_limit {
            let at = format!("{name}.client_rate_limit");
            RateLimitSetting {
                per_second: client.per_second,
                burst: client.burst,
            }
            .check(&at)?;
            if client.client_key().is_none() {
                return Err(Invalid::new(
                    format!("{at}.key"),
                    format!(
                        "`{}` is neither `peer` nor `header:<lowercase header name>`",
                        client.key
                    ),
                ));
            }
        }
        for (method, m) in &self.methods {
            if let Some(limit) = m.rate_limit {
                limit.check(&format!("{name}.methods.{method}.rate_limit"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use router_runtime::router::ClientKey;

    use crate::config::testing::{error, parse};

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
}
