//! The router's deadline policy: a deadline for calls that carry none, and
//! a ceiling for those that ask for longer.

use std::collections::HashMap;
use std::time::Duration;

/// Deadlines the router imposes on calls of a service or one method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadlinePolicy {
    /// The deadline of a call that sends no `grpc-timeout`.
    pub default: Option<Duration>,
    /// The longest deadline a call gets: a client asking for longer (or for
    /// none, without `default`) is held to this.
    pub max: Option<Duration>,
}

impl DeadlinePolicy {
    /// Each setting of `self`, else `base`'s.
    pub fn over(self, base: DeadlinePolicy) -> DeadlinePolicy {
        DeadlinePolicy {
            default: self.default.or(base.default),
            max: self.max.or(base.max),
        }
    }

    /// The timeout a call with the client's `requested` timeout gets. The
    /// instance sees this one in its `grpc-timeout`, so its handler knows
    /// how long it has.
    pub fn apply(self, requested: Option<Duration>) -> Option<Duration> {
        let timeout = requested.or(self.default);
        match (timeout, self.max) {
            (Some(t), Some(max)) => Some(t.min(max)),
            (None, max) => max,
            (t, None) => t,
        }
    }
}

/// The deadline policies of a service: one for all its methods and
/// overrides by method name (`SayHello`, as in the proto).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deadlines {
    /// The policy of every method without its own.
    pub service: DeadlinePolicy,
    /// Per-method settings, each over `service`.
    pub methods: HashMap<String, DeadlinePolicy>,
}

impl Deadlines {
    /// The policy of `method` (its name, not its path).
    pub fn of(&self, method: &str) -> DeadlinePolicy {
        match self.methods.get(method) {
            Some(policy) => policy.over(self.service),
            None => self.service,
        }
    }

    /// Whether no deadline is imposed at all (the common case, checked
    /// first on the hot path).
    pub fn is_empty(&self) -> bool {
        self.service == DeadlinePolicy::default() && self.methods.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_call_without_a_deadline_gets_the_default_and_longer_ones_are_capped() {
        let policy = DeadlinePolicy {
            default: Some(S(5)),
            max: Some(S(30)),
        };
        assert_eq!(policy.apply(None), Some(S(5)));
        assert_eq!(policy.apply(Some(S(1))), Some(S(1)));
        assert_eq!(policy.apply(Some(S(60))), Some(S(30)));
        let cap_only = DeadlinePolicy {
            default: None,
            max: Some(S(30)),
        };
        assert_eq!(cap_only.apply(None), Some(S(30)));
        assert_eq!(DeadlinePolicy::default().apply(None), None);
        assert_eq!(DeadlinePolicy::default().apply(Some(S(9))), Some(S(9)));
    }

    #[test]
    fn a_method_setting_overrides_the_service_one_field_by_field() {
        let deadlines = Deadlines {
            service: DeadlinePolicy {
                default: Some(S(5)),
                max: Some(S(30)),
            },
            methods: HashMap::from([(
                "Export".to_owned(),
                DeadlinePolicy {
                    default: None,
                    max: Some(S(600)),
                },
            )]),
        };
        assert_eq!(deadlines.of("Export").apply(None), Some(S(5)));
        assert_eq!(deadlines.of("Export").apply(Some(S(300))), Some(S(300)));
        assert_eq!(deadlines.of("Other").apply(Some(S(300))), Some(S(30)));
        assert!(!deadlines.is_empty());
        assert!(Deadlines::default().is_empty());
    }
}
