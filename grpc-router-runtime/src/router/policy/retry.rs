//! Retries after a failed attempt, as gRPC's service config `retryPolicy`
//! defines them, and the retry throttling (`retryThrottling`) that keeps
//! retries from multiplying the load in an outage.
//!
//! A call is retried only before the client has seen any response (the
//! attempt failed with no response headers), only for a single-request
//! method (the router still holds the request), with a random exponential
//! backoff within the call's deadline. Each retry carries
//! `grpc-previous-rpc-attempts`.
//!
//! Every retry of the router is decided in one place,
//! [`RetryState::decide`]: a call whose `Start` was never written, or that
//! an instance refused without running it, goes to another instance (at
//! most [`MAX_ATTEMPTS`] attempts); one whose instance died before answering
//! is replayed once if its method is idempotent; one the handler failed is
//! retried under the retry policy and the throttling budget.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tonic::{Code, Status};

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

/// The most attempts one call makes on different instances (the first and
/// two retries) when attempts never ran there.
pub(crate) const MAX_ATTEMPTS: usize = 3;

/// What decides a call's retries and stays the same for all its attempts.
#[derive(Debug)]
pub(crate) struct RetryRules<'a> {
    /// Whether the request can be sent again (a single-request method).
    pub(crate) resend: bool,
    /// Whether the method is idempotent: an attempt whose instance died
    /// before answering may be replayed once.
    pub(crate) idempotent: bool,
    /// The retry policy of attempts the handler failed, when one applies
    /// (single-request methods only).
    pub(crate) policy: Option<&'a RetryPolicy>,
    /// The retry throttling's settings.
    pub(crate) throttling: RetryThrottling,
    /// The retry throttling's tokens.
    pub(crate) budget: &'a RetryBudget,
    /// When the call's deadline passes: no retry sleeps past it.
    pub(crate) deadline: Option<Instant>,
}

impl<'a> RetryRules<'a> {
    /// The rules of a call of `method` under `config`, throttled by
    /// `core`'s budget.
    pub(crate) fn new(
        config: &'a crate::router::RouterConfig,
        core: &'a crate::router::RouterCore,
        method: &crate::router::Method,
        resend: bool,
        deadline: Option<Instant>,
    ) -> Self {
        RetryRules {
            resend,
            idempotent: method.idempotent,
            policy: config
                .retries
                .of(&method.name, method.idempotent)
                .filter(|_| resend),
            throttling: config.retries.throttling,
            budget: &core.retry_budget,
            deadline,
        }
    }
}

/// How an attempt ended without an answer.
#[derive(Debug)]
pub(crate) enum Ending {
    /// Its `Start` was never written: the instance never saw it.
    NotStarted,
    /// The instance went away before answering.
    Lost(Status),
    /// The instance refused the call without running it (at capacity).
    Refused(Status),
    /// The call ended before any response: the handler's answer.
    Failed(Status),
}

impl Ending {
    /// The attempt's status, when the instance gave one.
    pub(crate) fn status(&self) -> Option<&Status> {
        match self {
            Ending::NotStarted => None,
            Ending::Lost(s) | Ending::Refused(s) | Ending::Failed(s) => Some(s),
        }
    }
}

/// What the call does after an attempt ended without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Tries again after this backoff (zero unless the retry policy's).
    Retry(Duration),
    /// Fails with the attempt's status: no retry applies.
    GiveUp,
    /// Fails with the attempt's status: the retry policy would retry, but
    /// the throttling budget is spent.
    Throttled,
}

/// One call's retry state: the instances it tried (never tried again),
/// whether it replayed a lost attempt, and the attempts the handler failed.
#[derive(Debug, Default)]
pub(crate) struct RetryState {
    /// The registrations the call tried and may not return to.
    pub(crate) tried: Vec<u64>,
    replayed: bool,
    answered: u32,
}

impl RetryState {
    /// The attempts the handler failed so far (the retry policy's count,
    /// sent as `grpc-previous-rpc-attempts`).
    pub(crate) fn answered(&self) -> u32 {
        self.answered
    }

    /// Decides, after the attempt on `registration` ended as `ending` at
    /// `now`, whether the call tries again; `random` (in `[0, 1)`) draws the
    /// policy's backoff. A call is tried again only when it is known not to
    /// have run (never started, refused: on another instance), once when
    /// its instance died and the method is idempotent, or under the retry
    /// policy when the handler failed it with a retryable code.
    pub(crate) fn decide(
        &mut self,
        rules: &RetryRules<'_>,
        ending: &Ending,
        registration: u64,
        now: Instant,
        random: f64,
    ) -> Decision {
        match ending {
            Ending::NotStarted => self.another(registration),
            Ending::Lost(_) => {
                // At most one replay per call.
                if rules.idempotent && rules.resend && !std::mem::replace(&mut self.replayed, true)
                {
                    self.another(registration)
                } else {
                    Decision::GiveUp
                }
            }
            Ending::Refused(_) if rules.resend => self.another(registration),
            Ending::Refused(_) => Decision::GiveUp,
            Ending::Failed(status) => self.under_policy(rules, status.code(), now, random),
        }
    }

    /// Another instance, while attempts are left.
    fn another(&mut self, registration: u64) -> Decision {
        self.tried.push(registration);
        if self.tried.len() < MAX_ATTEMPTS {
            Decision::Retry(Duration::ZERO)
        } else {
            Decision::GiveUp
        }
    }

    /// The retry policy's answer to an attempt the handler failed with
    /// `code` (which may return to the same instance).
    fn under_policy(
        &mut self,
        rules: &RetryRules<'_>,
        code: Code,
        now: Instant,
        random: f64,
    ) -> Decision {
        let Some(policy) = rules.policy else {
            return Decision::GiveUp;
        };
        self.answered += 1;
        if !policy.retryable_status_codes.contains(&code) {
            rules.budget.answered(rules.throttling);
            return Decision::GiveUp;
        }
        let budget_left = rules.budget.failed(rules.throttling);
        if !policy.retries(code, self.answered) {
            return Decision::GiveUp;
        }
        if !budget_left {
            return Decision::Throttled;
        }
        let backoff = policy.backoff(self.answered, random);
        if rules.deadline.is_some_and(|d| now + backoff >= d) {
            return Decision::GiveUp;
        }
        Decision::Retry(backoff)
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

    fn rules<'a>(
        policy: Option<&'a RetryPolicy>,
        budget: &'a RetryBudget,
        resend: bool,
        idempotent: bool,
    ) -> RetryRules<'a> {
        RetryRules {
            resend,
            idempotent,
            policy,
            throttling: RetryPolicies::default().throttling,
            budget,
            deadline: None,
        }
    }

    fn unavailable() -> Status {
        Status::unavailable("instance at capacity")
    }

    #[test]
    fn an_attempt_never_started_goes_to_another_instance_at_most_three_times() {
        let budget = RetryBudget::default();
        let rules = rules(None, &budget, false, false);
        let mut state = RetryState::default();
        let now = Instant::now();
        let retry = Decision::Retry(Duration::ZERO);
        assert_eq!(
            state.decide(&rules, &Ending::NotStarted, 1, now, 0.5),
            retry
        );
        assert_eq!(
            state.decide(&rules, &Ending::NotStarted, 2, now, 0.5),
            retry
        );
        assert_eq!(
            state.decide(&rules, &Ending::NotStarted, 3, now, 0.5),
            Decision::GiveUp
        );
        assert_eq!(
            state.tried,
            [1, 2, 3],
            "the instances the call may not return to"
        );
    }

    #[test]
    fn a_refused_attempt_is_retried_elsewhere_only_when_the_request_can_be_resent() {
        let budget = RetryBudget::default();
        let now = Instant::now();
        let refused = Ending::Refused(unavailable());
        let mut state = RetryState::default();
        let p = policy();
        let stream = rules(Some(&p), &budget, false, true);
        assert_eq!(
            state.decide(&stream, &refused, 1, now, 0.5),
            Decision::GiveUp
        );
        let single = rules(None, &budget, true, false);
        assert_eq!(
            state.decide(&single, &refused, 1, now, 0.5),
            Decision::Retry(Duration::ZERO)
        );
    }

    #[test]
    fn a_lost_attempt_is_replayed_once_and_only_for_an_idempotent_single_request() {
        let budget = RetryBudget::default();
        let now = Instant::now();
        let lost = Ending::Lost(Status::unavailable("instance went away"));
        for (resend, idempotent) in [(true, false), (false, true)] {
            let rules = rules(None, &budget, resend, idempotent);
            let mut state = RetryState::default();
            assert_eq!(state.decide(&rules, &lost, 1, now, 0.5), Decision::GiveUp);
        }
        let rules = rules(None, &budget, true, true);
        let mut state = RetryState::default();
        assert_eq!(
            state.decide(&rules, &lost, 1, now, 0.5),
            Decision::Retry(Duration::ZERO)
        );
        assert_eq!(state.decide(&rules, &lost, 2, now, 0.5), Decision::GiveUp);
        assert_eq!(
            state.decide(&rules, &Ending::NotStarted, 2, now, 0.5),
            Decision::Retry(Duration::ZERO),
            "a start that never happened still moves on"
        );
    }

    #[test]
    fn a_failed_attempt_is_retried_only_under_a_policy_for_its_codes_and_attempts() {
        let budget = RetryBudget::default();
        let now = Instant::now();
        let failed = Ending::Failed(unavailable());
        let mut state = RetryState::default();
        let none = rules(None, &budget, true, true);
        assert_eq!(state.decide(&none, &failed, 1, now, 1.0), Decision::GiveUp);
        let p = policy();
        let rules = rules(Some(&p), &budget, true, false);
        let internal = Ending::Failed(Status::internal("bug"));
        assert_eq!(
            state.decide(&rules, &internal, 1, now, 1.0),
            Decision::GiveUp
        );
        let mut state = RetryState::default();
        assert_eq!(
            state.decide(&rules, &failed, 1, now, 1.0),
            Decision::Retry(Duration::from_millis(100))
        );
        assert_eq!(
            state.decide(&rules, &failed, 1, now, 1.0),
            Decision::Retry(Duration::from_millis(200))
        );
        assert_eq!(state.answered(), 2);
        assert_eq!(
            state.decide(&rules, &failed, 1, now, 1.0),
            Decision::GiveUp,
            "max_attempts 3"
        );
        assert!(
            state.tried.is_empty(),
            "the policy may return to the instance"
        );
    }

    #[test]
    fn a_failed_attempt_is_not_retried_past_the_deadline_or_the_budget() {
        let budget = RetryBudget::default();
        let now = Instant::now();
        let failed = Ending::Failed(unavailable());
        let p = policy();
        let mut rules = rules(Some(&p), &budget, true, false);
        rules.deadline = Some(now + Duration::from_millis(50));
        let mut state = RetryState::default();
        assert_eq!(state.decide(&rules, &failed, 1, now, 1.0), Decision::GiveUp);
        rules.deadline = None;
        // Ten tokens: retries stop once half are gone.
        let mut throttled = 0;
        for _ in 0..10 {
            let mut state = RetryState::default();
            if state.decide(&rules, &failed, 1, now, 0.0) == Decision::Throttled {
                throttled += 1;
            }
        }
        assert_eq!(
            throttled,
            10 - 3,
            "retries stop once half the ten tokens are spent"
        );
    }
}
