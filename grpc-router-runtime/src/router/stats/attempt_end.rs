//! The one place that sees how each attempt on an instance ends: the
//! attempt's guard reports its end once ([`ended`]), and every observer in
//! [`OBSERVERS`] gets it, in order. Adding what an attempt's end feeds is a
//! new observer here, not an edit in the forwarding code.
//!
//! The call as a whole (its metrics record, its span) ends with the
//! client's response stream, and the retry decision (with the retry
//! budget) is [`crate::router::retry::RetryState::decide`].

use std::time::Duration;

use tonic::Code;

use crate::router::RouterCore;
use crate::router::recent_errors::Outcome;
use crate::router::registry::Instance;
use crate::router::service::Method;

/// How one attempt ended.
pub(crate) struct AttemptEnd<'a> {
    pub(crate) core: &'a RouterCore,
    pub(crate) instance: &'a Instance,
    pub(crate) method: &'a Method,
    pub(crate) call_id: u64,
    pub(crate) outcome: &'a Outcome,
    /// From the attempt's start on the instance to its end.
    pub(crate) elapsed: Duration,
    /// Whether the outcome is the instance's answer (its handler's status,
    /// or the router's verdict on what the instance sent), which outlier
    /// detection judges it by; not so for a call the instance refused
    /// without running it, lost by the instance going away, or abandoned by
    /// the client.
    pub(crate) judges_instance: bool,
}

impl AttemptEnd<'_> {
    /// The attempt's status code.
    pub(crate) fn code(&self) -> Code {
        match self.outcome {
            Outcome::Ok => Code::Ok,
            Outcome::Failed(code, _) => *code,
        }
    }
}

/// Something told of every attempt's end.
pub(crate) trait AttemptObserver: Sync {
    /// The attempt `end` ended.
    fn attempt_ended(&self, end: &AttemptEnd<'_>);
}

/// The instance's call statistics (counts, rate, latency).
struct InstanceStats;

impl AttemptObserver for InstanceStats {
    fn attempt_ended(&self, end: &AttemptEnd<'_>) {
        end.instance
            .stats
            .record(*end.outcome == Outcome::Ok, end.elapsed);
    }
}

/// The access log: one line per attempt, at its own target so that a
/// filter switches it (`router_runtime::access=info`); failures also at
/// DEBUG with their message.
struct AccessLog;

impl AttemptObserver for AccessLog {
    fn attempt_ended(&self, end: &AttemptEnd<'_>) {
        let code = end.code();
        let duration_us = u64::try_from(end.elapsed.as_micros()).unwrap_or(u64::MAX);
        tracing::info!(
            target: "router_runtime::access",
            service = end.core.service.name(),
            method = &*end.method.name,
            instance = end.instance.id(),
            call_id = end.call_id,
            code = ?code,
            duration_us,
            "call"
        );
        if let Outcome::Failed(code, message) = end.outcome
            && *code != Code::Cancelled
        {
            tracing::debug!(
                event = "call_failed",
                service = end.core.service.name(),
                method = &*end.method.name,
                instance = end.instance.id(),
                call_id = end.call_id,
                code = ?code,
                message = message.as_ref(),
                "call failed"
            );
        }
    }
}

/// The service's recent errors.
struct RecentErrors;

impl AttemptObserver for RecentErrors {
    fn attempt_ended(&self, end: &AttemptEnd<'_>) {
        if let Outcome::Failed(code, message) = end.outcome {
            let (path, id) = (&end.method.path, end.instance.id());
            end.core.recent_errors.push(path, id, *code, message);
        }
    }
}

/// Outlier detection, for the ends that judge the instance.
struct OutlierFeed;

impl AttemptObserver for OutlierFeed {
    fn attempt_ended(&self, end: &AttemptEnd<'_>) {
        if end.judges_instance {
            end.core.record_outcome(end.instance, end.code());
        }
    }
}

/// Every observer, in the order they are told.
pub(crate) static OBSERVERS: [&dyn AttemptObserver; 4] =
    [&InstanceStats, &AccessLog, &RecentErrors, &OutlierFeed];

/// Tells every observer of `end`.
pub(crate) fn ended(end: &AttemptEnd<'_>) {
    for observer in OBSERVERS {
        observer.attempt_ended(end);
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::Arc;

    use super::*;
    use crate::descriptor::MethodKind;
    use crate::router::outlier::OutlierDetection;
    use crate::router::registry::InstanceInfo;
    use crate::router::{RouterConfig, ServiceTable};

    fn fixture() -> (RouterCore, Arc<Instance>, Method) {
        let config = RouterConfig {
            outlier_detection: Some(OutlierDetection {
                consecutive_failures: 2,
                ..OutlierDetection::default()
            }),
            ..RouterConfig::default()
        };
        let core = RouterCore::new(config, ServiceTable::learning("pkg.Svc"));
        let (out, _) = crate::router::outbound::Outbox::new(1 << 20);
        let instance = Arc::new(Instance::new(
            1,
            InstanceInfo {
                id: "a".to_owned(),
                ..InstanceInfo::default()
            },
            out,
            1024,
            1024,
            2048,
        ));
        let method = Method {
            name: "Get".into(),
            path: "/pkg.Svc/Get".into(),
            tag: 1,
            kind: MethodKind::Unary,
            route_key: Box::new([]),
            idempotent: false,
            metrics: Default::default(),
            gate: Default::default(),
        };
        (core, instance, method)
    }

    fn end<'a>(
        core: &'a RouterCore,
        instance: &'a Instance,
        method: &'a Method,
        outcome: &'a Outcome,
        judges_instance: bool,
    ) -> AttemptEnd<'a> {
        AttemptEnd {
            core,
            instance,
            method,
            call_id: 7,
            outcome,
            elapsed: Duration::from_millis(3),
            judges_instance,
        }
    }

    #[test]
    fn an_attempt_end_reaches_the_instance_stats_the_recent_errors_and_outlier_detection() {
        let (core, instance, method) = fixture();
        let failed = Outcome::Failed(Code::Unavailable, Cow::Borrowed("down"));
        ended(&end(&core, &instance, &method, &failed, true));
        ended(&end(&core, &instance, &method, &Outcome::Ok, true));
        let stats = instance.call_stats();
        assert_eq!((stats.finished, stats.failed), (2, 1));
        let errors = core.recent_errors.list();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            (errors[0].instance.as_str(), errors[0].code),
            ("a", Code::Unavailable)
        );
        assert!(!instance.is_ejected(), "an OK between the failures");
        ended(&end(&core, &instance, &method, &failed, true));
        ended(&end(&core, &instance, &method, &failed, true));
        assert!(instance.is_ejected(), "two failures in a row eject");
    }

    #[test]
    fn ends_that_do_not_judge_the_instance_never_eject_it() {
        let (core, instance, method) = fixture();
        let lost = Outcome::Failed(Code::Unavailable, Cow::Borrowed("instance went away"));
        for _ in 0..5 {
            ended(&end(&core, &instance, &method, &lost, false));
        }
        assert!(!instance.is_ejected());
        assert_eq!(instance.call_stats().failed, 5, "still counted");
        assert_eq!(core.recent_errors.recorded(), 5);
    }
}
