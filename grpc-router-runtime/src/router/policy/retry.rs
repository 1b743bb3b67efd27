//! Retries after a failed attempt, as gRPC's service config `retryPolicy`
//! defines them, and the retry throttling (`retryThrottling`) that keeps
//! retries from multiplying the load in an outage.
//!
//! A call is retried only before the client has seen any response (the
//! attempt failed with no response headers), only for a single-request
//! method (the router still holds the request), with a random exponential
//! backoff within the call's deadline. Each retry carries
//! `grpc-previous-rpc-attempts`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tonic::Code;

/// gRPC's `retryPolicy` for a method.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (2 to 5, as gRPC caps it).
    pub max_attempts: u32,
    /// The backoff before the first retry is random up to this.
    pub initial_backoff: Duration,
    /// The backoff never exceeds this.
    pub max_backoff: Duration,
    /// Each further retry multiplies the backoff bound by this.
    pub backoff_multiplier: f64,
    /// The statuses that are retried (for example UNAVAILABLE).
    pub retryable_status_codes: Vec<Code>,
}

impl RetryPolicy {
    /// The random backoff before retry number `retry` (1 for the first).
    pub(crate) fn backoff(&self, retry: u32, random: f64) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let bound = self.initial_backoff.as_secs_f64() * self.backoff_multiplier.powi(exponent);
        let bound = bound.min(self.max_backoff.as_secs_f64()).max(0.0);
        Duration::from_secs_f64(bound * random.clamp(0.0, 1.0))
    }

    /// Whether a failed attempt with `code` may be followed by attempt
    /// number `attempts + 1`.
    pub(crate) fn retries(&self, code: Code, attempts: u32) -> bool {
        attempts < self.max_attempts.clamp(1, 5) && self.retryable_status_codes.contains(&code)
    }
}

/// gRPC's `retryThrottling`: every failed attempt takes a token, every
/// answered one gives back `token_ratio`; retries stop while the tokens are
/// at or below half of `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryThrottling {
    /// The tokens when all is well (at most 1000).
    pub max_tokens: u32,
    /// What an answered attempt gives back (for example 0.1).
    pub token_ratio: f64,
}

/// A service's retry settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicies {
    /// The policy of the methods the proto marks idempotent.
    pub idempotent: Option<RetryPolicy>,
    /// Policies of named methods (`SayHello`), idempotent or not.
    pub methods: HashMap<String, RetryPolicy>,
    /// The budget that stops retries in an outage.
    pub throttling: RetryThrottling,
}

impl Default for RetryPolicies {
    fn default() -> Self {
        RetryPolicies {
            idempotent: None,
            methods: HashMap::new(),
            throttling: RetryThrottling {
                max_tokens: 10,
                token_ratio: 0.1,
            },
        }
    }
}

impl RetryPolicies {
    /// The policy of `method`, if it has one.
    pub(crate) fn of(&self, method: &str, idempotent: bool) -> Option<&RetryPolicy> {
        self.methods
            .get(method)
            .or_else(|| self.idempotent.as_ref().filter(|_| idempotent))
    }
}

/// The token count of one router's retry throttling, in thousandths.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    milli_tokens: AtomicU64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            milli_tokens: AtomicU64::new(u64::MAX),
        }
    }
}

impl RetryBudget {
    fn update(&self, throttling: RetryThrottling, change: impl Fn(u64, u64) -> u64) -> u64 {
        let max = u64::from(throttling.max_tokens.min(1000)) * 1000;
        let mut current = self.milli_tokens.load(Ordering::Relaxed);
        loop {
            let next = change(current.min(max), max).min(max);
            match self.milli_tokens.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(seen) => current = seen,
            }
        }
    }

    /// An attempt failed with a retryable status; whether a retry may
    /// follow (the tokens left are above half).
    pub(crate) fn failed(&self, throttling: RetryThrottling) -> bool {
        let left = self.update(throttling, |t, _| t.saturating_sub(1000));
        left > u64::from(throttling.max_tokens.min(1000)) * 500
    }

    /// An attempt was answered.
    pub(crate) fn answered(&self, throttling: RetryThrottling) {
        // Checked cheaply first: the common case is a full budget.
        let max = u64::from(throttling.max_tokens.min(1000)) * 1000;
        if self.milli_tokens.load(Ordering::Relaxed) >= max {
            return;
        }
        let ratio = (throttling.token_ratio.clamp(0.0, 1.0) * 1000.0) as u64;
        self.update(throttling, |t, _| t.saturating_add(ratio));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(250),
            backoff_multiplier: 2.0,
            retryable_status_codes: vec![Code::Unavailable],
        }
    }

    #[test]
    fn the_backoff_grows_by_the_multiplier_up_to_the_maximum() {
        let p = policy();
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(200));
        assert_eq!(p.backoff(3, 1.0), Duration::from_millis(250));
        assert_eq!(p.backoff(3, 0.5), Duration::from_millis(125));
        assert_eq!(p.backoff(1, 0.0), Duration::ZERO);
    }

    #[test]
    fn only_retryable_codes_are_retried_and_at_most_max_attempts_times() {
        let p = policy();
        assert!(p.retries(Code::Unavailable, 1));
        assert!(p.retries(Code::Unavailable, 2));
        assert!(!p.retries(Code::Unavailable, 3));
        assert!(!p.retries(Code::Internal, 1));
        let greedy = RetryPolicy {
            max_attempts: 100,
            ..policy()
        };
        assert!(
            !greedy.retries(Code::Unavailable, 5),
            "capped at 5 attempts"
        );
    }

    #[test]
    fn retries_stop_when_half_the_tokens_are_gone_and_answers_bring_them_back() {
        let throttling = RetryThrottling {
            max_tokens: 10,
            token_ratio: 0.5,
        };
        let budget = RetryBudget::default();
        for _ in 0..4 {
            assert!(budget.failed(throttling), "tokens left above half");
        }
        assert!(!budget.failed(throttling), "5 of 10 left: no retry");
        assert!(!budget.failed(throttling));
        for _ in 0..4 {
            budget.answered(throttling);
        }
        // 4 + 4 × 0.5 = 6 tokens: the next failure leaves 5, not above half.
        assert!(!budget.failed(throttling));
        for _ in 0..4 {
            budget.answered(throttling);
        }
        assert!(budget.failed(throttling));
    }

    #[test]
    fn a_named_method_has_its_policy_and_the_service_one_covers_idempotent_methods() {
        let policies = RetryPolicies {
            idempotent: Some(policy()),
            methods: HashMap::from([(
                "Charge".to_owned(),
                RetryPolicy {
                    max_attempts: 2,
                    ..policy()
                },
            )]),
            ..RetryPolicies::default()
        };
        assert_eq!(
            policies.of("Charge", false).map(|p| p.max_attempts),
            Some(2)
        );
        assert_eq!(policies.of("Get", true).map(|p| p.max_attempts), Some(3));
        assert!(policies.of("Create", false).is_none());
    }
}
