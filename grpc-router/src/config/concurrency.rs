//! The concurrency limits' settings, together: `max_concurrent_calls` (a
//! service's, in `[defaults]` or `[services."<name>"]`, and a method's in
//! `[services."<name>".methods.<Method>]`) and `concurrency_queue`, their
//! checks, and the router's [`ConcurrencyLimits`] they give.

use std::num::NonZeroU32;
use std::time::Duration;

use router_runtime::router::{ConcurrencyLimits, ConcurrencyQueue};
use serde::{Deserialize, Serialize};

use super::service::ServiceSettings;
use super::validate::Invalid;
use super::values::duration;

/// The most calls waiting for one limit's slots when `max_waiting` is not
/// set (Envoy's `max_pending_requests` default).
pub const DEFAULT_MAX_WAITING: u32 = 1024;

/// How calls over a concurrency limit wait for a slot
/// (`concurrency_queue = { timeout = "100ms", max_waiting = 100 }`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyQueueSetting {
    /// The longest a call waits for a slot (its deadline may end it sooner).
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// The most calls waiting for one limit's slots (default 1024); past it a
    /// call fails at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_waiting: Option<u32>,
}

impl ServiceSettings {
    /// The concurrency limits these settings give.
    pub fn concurrency_limits(&self) -> ConcurrencyLimits {
        ConcurrencyLimits {
            service: self.max_concurrent_calls.and_then(NonZeroU32::new),
            methods: self
                .methods
                .iter()
                .filter_map(|(name, m)| {
                    Some((name.clone(), NonZeroU32::new(m.max_concurrent_calls?)?))
                })
                .collect(),
            queue: self.concurrency_queue.map(|q| ConcurrencyQueue {
                timeout: q.timeout,
                max_waiting: q.max_waiting.unwrap_or(DEFAULT_MAX_WAITING),
            }),
        }
    }

    /// Checks the concurrency settings at `name`.
    pub(super) fn check_concurrency(&self, name: &str) -> Result<(), Invalid> {
        let positive = |at: String, value: Option<u32>| match value {
            Some(0) => Err(Invalid::new(
                at,
                "must be more than 0 (leave it out for no limit)".to_owned(),
            )),
            _ => Ok(()),
        };
        positive(
            format!("{name}.max_concurrent_calls"),
            self.max_concurrent_calls,
        )?;
        for (method, m) in &self.methods {
            positive(
                format!("{name}.methods.{method}.max_concurrent_calls"),
                m.max_concurrent_calls,
            )?;
        }
        if let Some(queue) = self.concurrency_queue {
            let at = format!("{name}.concurrency_queue");
            if queue.timeout.is_zero() {
                return Err(Invalid::new(
                    format!("{at}.timeout"),
                    "must be more than 0 (leave the queue out for calls to fail at once)"
                        .to_owned(),
                ));
            }
            positive(format!("{at}.max_waiting"), queue.max_waiting)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::testing::{error, parse};

    #[test]
    fn limits_come_from_the_defaults_the_service_and_its_methods() {
        let config = parse(
            "[defaults]\nmax_concurrent_calls = 100\n\
             concurrency_queue = { timeout = \"250ms\" }\n\
             [services.\"a.B\".methods.Export]\nmax_concurrent_calls = 4\n\
             [services.\"c.D\"]\nmax_concurrent_calls = 7\n\
             concurrency_queue = { timeout = \"1s\", max_waiting = 3 }\n",
        )
        .expect("valid");
        let configs = config.service_router_configs();
        let of = |name: &str| {
            configs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, c)| c.concurrency.clone())
                .expect("configured")
        };
        let a = of("a.B");
        assert_eq!(a.service.map(|n| n.get()), Some(100), "inherited");
        assert_eq!(a.methods.get("Export").map(|n| n.get()), Some(4));
        let queue = a.queue.expect("inherited queue");
        assert_eq!(
            (queue.timeout, queue.max_waiting),
            (Duration::from_millis(250), 1024)
        );
        let c = of("c.D");
        assert_eq!(c.service.map(|n| n.get()), Some(7));
        let queue = c.queue.expect("its own queue");
        assert_eq!(
            (queue.timeout, queue.max_waiting),
            (Duration::from_secs(1), 3)
        );
        assert!(config.default_router_config().concurrency.service.is_some());
    }

    #[test]
    fn zero_limits_and_an_empty_queue_are_errors_naming_the_setting() {
        let e = error("[services.\"a.B\"]\nmax_concurrent_calls = 0\n");
        assert!(e.contains("services.\"a.B\".max_concurrent_calls"), "{e}");
        assert!(e.contains("leave it out"), "{e}");
        let e = error("[services.\"a.B\".methods.Get]\nmax_concurrent_calls = 0\n");
        assert!(e.contains("methods.Get.max_concurrent_calls"), "{e}");
        let e = error("[defaults]\nconcurrency_queue = { timeout = \"0s\" }\n");
        assert!(e.contains("defaults.concurrency_queue.timeout"), "{e}");
        let e = error("[defaults]\nconcurrency_queue = { timeout = \"1s\", max_waiting = 0 }\n");
        assert!(e.contains("concurrency_queue.max_waiting"), "{e}");
    }
}
