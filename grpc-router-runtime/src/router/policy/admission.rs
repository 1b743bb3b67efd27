//! Admission: the policies a call meets before its request is read, as one
//! ordered list of stages built when the settings are set or reloaded
//! ([`Pipeline::new`]), so the call path runs a list rather than knowing
//! each policy.
//!
//! The order puts the cheapest refusal first where that is safe:
//!
//! 1. the per-client rate limit, when it tells clients apart by their
//!    address: a client cannot change its address call by call, so a flood
//!    of calls with invalid tokens is refused here before any signature is
//!    checked;
//! 2. client authentication and authorization (the `ClientAuth` hook: JWT
//!    signatures, allow rules), which also sets the verified identity header;
//! 3. the per-client rate limit keyed by a header: after the hook, because
//!    the header may be the identity the hook writes (or a credential it
//!    checks), and a fresh header value is a fresh bucket;
//! 4. the limits every client shares (the method's, then the service's):
//!    after the hook, so calls that fail authentication never use up the
//!    budget of the clients that pass it;
//! 5. the deadline policy (a default, a ceiling) and the refusal of a call
//!    whose deadline is already over.
//!
//! Stages are an enum in a `Vec` built at configure time: a call walks the
//! list with a `match` per stage, with no allocation or boxing of its own.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use tokio::time::Instant;
use tonic::Status;

use crate::router::RouterConfig;
use crate::router::authz::ClientAuth;
use crate::router::deadline::Deadlines;
use crate::router::limit::Limiters;
use crate::router::reply::deadline_exceeded;

/// What admission sees of a call, and what it decides for it.
#[derive(Debug)]
pub(crate) struct CallContext<'a> {
    /// The service's full name, `pkg.Service`.
    pub(crate) service: &'a str,
    /// The method's name, `SayHello`.
    pub(crate) method: &'a str,
    /// The client's address, as text.
    pub(crate) peer: &'a str,
    /// The client's TLS certificates (DER, the leaf first), when it
    /// presented any.
    pub(crate) peer_certificates: &'a [Bytes],
    /// The client's request headers; client authentication sets the
    /// verified identity in them.
    pub(crate) headers: &'a mut HeaderMap,
    /// When the request reached the router.
    pub(crate) received: Instant,
    /// When the call's deadline passes, once the deadline stage has run.
    pub(crate) deadline: Option<Instant>,
}

/// One pre-forward policy: lets a call go on or refuses it.
pub(crate) trait Admission {
    /// Lets the call go on (possibly changing it: headers, deadline), or
    /// refuses it with the status the client gets.
    fn admit(&self, call: &mut CallContext<'_>) -> Result<(), Status>;

    /// Whether a refusal of this stage is one of the router's refusals
    /// (listed in the recent errors and the refusal log); a deadline already
    /// over is not.
    fn is_policy_refusal(&self) -> bool {
        true
    }
}

/// The per-client rate limit.
#[derive(Debug)]
pub(crate) struct ClientLimit(Arc<Limiters>);

impl Admission for ClientLimit {
    fn admit(&self, call: &mut CallContext<'_>) -> Result<(), Status> {
        self.0.admit_client(call.service, call.peer, call.headers)
    }
}

impl Admission for ClientAuth {
    fn admit(&self, call: &mut CallContext<'_>) -> Result<(), Status> {
        ClientAuth::admit(
            self,
            call.service,
            call.method,
            call.peer,
            call.peer_certificates,
            call.headers,
        )
    }
}

/// The rate limits every client shares: the method's, then the service's.
#[derive(Debug)]
pub(crate) struct SharedLimits(Arc<Limiters>);

impl Admission for SharedLimits {
    fn admit(&self, call: &mut CallContext<'_>) -> Result<(), Status> {
        self.0.admit_shared(call.service, call.method)
    }
}

/// The deadline policy: the call's `grpc-timeout`, defaulted and capped,
/// counted from the request's arrival; a deadline already over fails the
/// call at once.
#[derive(Debug)]
pub(crate) struct DeadlineStage(Deadlines);

impl Admission for DeadlineStage {
    fn admit(&self, call: &mut CallContext<'_>) -> Result<(), Status> {
        let timeout = crate::metadata::timeout_from_headers(call.headers);
        let timeout = if self.0.is_empty() {
            timeout
        } else {
            self.0.of(call.method).apply(timeout)
        };
        // tonic's transport server also times the call from `grpc-timeout`,
        // until the response headers, and then fails it as CANCELLED
        // ("Timeout expired"). The router's deadline counts from the
        // request's arrival and fires one timer tick (1 ms) earlier, so the
        // client reliably gets DEADLINE_EXCEEDED as gRPC specifies.
        call.deadline = timeout.map(|t| call.received + t.saturating_sub(Duration::from_millis(1)));
        // A deadline already over (`grpc-timeout: 0n`, `1u` ...) fails at
        // once: the call is not forwarded.
        if call.deadline.is_some_and(|d| d <= Instant::now()) {
            return Err(deadline_exceeded());
        }
        Ok(())
    }

    fn is_policy_refusal(&self) -> bool {
        false
    }
}

/// One stage of the pipeline.
#[derive(Debug)]
pub(crate) enum Stage {
    /// The per-client rate limit.
    ClientLimit(ClientLimit),
    /// Client authentication and authorization.
    ClientAuth(ClientAuth),
    /// The method's and the service's rate limits.
    SharedLimits(SharedLimits),
    /// The deadline policy.
    Deadline(DeadlineStage),
}

impl Admission for Stage {
    fn admit(&self, call: &mut CallContext<'_>) -> Result<(), Status> {
        match self {
            Stage::ClientLimit(s) => s.admit(call),
            Stage::ClientAuth(s) => Admission::admit(s, call),
            Stage::SharedLimits(s) => s.admit(call),
            Stage::Deadline(s) => s.admit(call),
        }
    }

    fn is_policy_refusal(&self) -> bool {
        match self {
            Stage::ClientLimit(s) => s.is_policy_refusal(),
            Stage::ClientAuth(s) => s.is_policy_refusal(),
            Stage::SharedLimits(s) => s.is_policy_refusal(),
            Stage::Deadline(s) => s.is_policy_refusal(),
        }
    }
}

impl Stage {
    /// The stage's name, for tests.
    #[cfg(test)]
    fn name(&self) -> &'static str {
        match self {
            Stage::ClientLimit(_) => "client-limit",
            Stage::ClientAuth(_) => "client-auth",
            Stage::SharedLimits(_) => "shared-limits",
            Stage::Deadline(_) => "deadline",
        }
    }
}

/// A refused call: the status the client gets, and whether it is one of
/// the router's policy refusals (recorded as such).
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: Status,
    pub(crate) is_policy: bool,
}

/// The admission stages of one configuration, in order.
#[derive(Debug)]
pub(crate) struct Pipeline {
    stages: Vec<Stage>,
}

impl Pipeline {
    /// The stages of `config`, with its rate limits enforced by `limiters`
    /// (kept across reloads that leave the limits alone).
    pub(crate) fn new(config: &RouterConfig, limiters: Option<Arc<Limiters>>) -> Self {
        let mut stages = Vec::with_capacity(5);
        let client_limit = limiters.as_ref().filter(|l| l.limits_clients());
        let peer_keyed = client_limit.is_some_and(|l| l.keys_clients_by_peer());
        if let Some(l) = client_limit.filter(|_| peer_keyed) {
            stages.push(Stage::ClientLimit(ClientLimit(l.clone())));
        }
        if let Some(auth) = &config.client_auth {
            stages.push(Stage::ClientAuth(auth.clone()));
        }
        if let Some(l) = client_limit.filter(|_| !peer_keyed) {
            stages.push(Stage::ClientLimit(ClientLimit(l.clone())));
        }
        if let Some(l) = limiters.as_ref().filter(|l| l.limits_shared()) {
            stages.push(Stage::SharedLimits(SharedLimits(l.clone())));
        }
        stages.push(Stage::Deadline(DeadlineStage(config.deadlines.clone())));
        Pipeline { stages }
    }

    /// Runs `call` through every stage in order; the first refusal ends it.
    pub(crate) fn admit(&self, call: &mut CallContext<'_>) -> Result<(), Refusal> {
        for stage in &self.stages {
            if let Err(status) = stage.admit(call) {
                return Err(Refusal {
                    status,
                    is_policy: stage.is_policy_refusal(),
                });
            }
        }
        Ok(())
    }

    /// The stages' names, in order.
    #[cfg(test)]
    fn names(&self) -> Vec<&'static str> {
        self.stages.iter().map(Stage::name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{ClientKey, DeadlinePolicy, RateLimit, RateLimits};
    use std::num::NonZeroU32;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).expect("non-zero")
    }

    fn limit(per_second: u32, burst: u32) -> RateLimit {
        RateLimit {
            per_second: n(per_second),
            burst: n(burst),
        }
    }

    /// A hook that refuses every call as a bad token, counting its calls.
    fn refusing_auth(checks: &Arc<AtomicUsize>) -> ClientAuth {
        let checks = checks.clone();
        ClientAuth::new(Arc::new(move |_| {
            checks.fetch_add(1, Ordering::Relaxed);
            Err(Status::unauthenticated("bad token signature"))
        }))
    }

    fn pipeline(config: &RouterConfig) -> Pipeline {
        let limiters = Limiters::new(&config.rate_limits).map(Arc::new);
        Pipeline::new(config, limiters)
    }

    /// Runs one call from `peer` with `headers` through `pipeline`.
    fn admit(pipeline: &Pipeline, peer: &str, headers: &mut HeaderMap) -> Result<(), Refusal> {
        pipeline.admit(&mut CallContext {
            service: "a.B",
            method: "M",
            peer,
            peer_certificates: &[],
            headers,
            received: Instant::now(),
            deadline: None,
        })
    }

    #[test]
    fn a_flood_of_invalid_tokens_is_refused_by_the_per_peer_limit_before_any_signature_check() {
        let checks = Arc::new(AtomicUsize::new(0));
        let config = RouterConfig {
            client_auth: Some(refusing_auth(&checks)),
            rate_limits: RateLimits {
                per_client: Some((ClientKey::PeerAddress, limit(1, 3))),
                ..RateLimits::default()
            },
            ..RouterConfig::default()
        };
        let pipeline = pipeline(&config);
        let started = std::time::Instant::now();
        let mut refused = Vec::new();
        for port in 0..200u16 {
            let peer = format!("10.0.0.1:{}", 1000 + port);
            let refusal = admit(&pipeline, &peer, &mut HeaderMap::new()).expect_err("refused");
            assert!(refusal.is_policy);
            refused.push(refusal.status.code());
        }
        // The burst of 3, and one more per second the loop took.
        let allowed = 3 + usize::try_from(started.elapsed().as_secs()).unwrap_or(usize::MAX);
        let checked = checks.load(Ordering::Relaxed);
        assert!(
            (3..=allowed).contains(&checked),
            "{checked} tokens verified"
        );
        assert!(
            refused[..3]
                .iter()
                .all(|c| *c == tonic::Code::Unauthenticated)
        );
        let limited = refused
            .iter()
            .filter(|c| **c == tonic::Code::ResourceExhausted)
            .count();
        assert_eq!(
            limited,
            200 - checked,
            "every other call refused by the limit"
        );
    }

    #[test]
    fn unauthenticated_calls_never_use_up_the_services_shared_budget() {
        let checks = Arc::new(AtomicUsize::new(0));
        let config = RouterConfig {
            client_auth: Some(refusing_auth(&checks)),
            rate_limits: RateLimits {
                service: Some(limit(1, 1)),
                ..RateLimits::default()
            },
            ..RouterConfig::default()
        };
        let limiters = Limiters::new(&config.rate_limits).map(Arc::new);
        let pipeline = Pipeline::new(&config, limiters.clone());
        assert_eq!(
            pipeline.names(),
            ["client-auth", "shared-limits", "deadline"]
        );
        for _ in 0..100 {
            let refusal =
                admit(&pipeline, "10.0.0.1:1", &mut HeaderMap::new()).expect_err("refused");
            assert_eq!(refusal.status.code(), tonic::Code::Unauthenticated);
        }
        assert_eq!(
            checks.load(Ordering::Relaxed),
            100,
            "every call is verified"
        );
        // The service's one call a second is still there for a valid client.
        limiters
            .expect("limiters")
            .admit_shared("a.B", "M")
            .expect("the budget is untouched");
    }

    #[test]
    fn a_limit_keyed_by_a_header_runs_after_the_hook_that_may_write_that_header() {
        let config = RouterConfig {
            client_auth: Some(ClientAuth::new(Arc::new(|_| Ok(Some("alice".to_owned()))))),
            rate_limits: RateLimits {
                per_client: Some((
                    ClientKey::Header(crate::router::IDENTITY_HEADER.to_owned()),
                    limit(1, 1),
                )),
                methods: [("M".to_owned(), limit(100, 100))].into(),
                ..RateLimits::default()
            },
            ..RouterConfig::default()
        };
        let pipeline = pipeline(&config);
        assert_eq!(
            pipeline.names(),
            ["client-auth", "client-limit", "shared-limits", "deadline"]
        );
        let mut forged = HeaderMap::new();
        forged.insert(
            crate::router::IDENTITY_HEADER,
            "mallory".parse().expect("ascii"),
        );
        admit(&pipeline, "10.0.0.1:1", &mut forged).expect("alice's first call");
        let mut forged = HeaderMap::new();
        forged.insert(
            crate::router::IDENTITY_HEADER,
            "eve".parse().expect("ascii"),
        );
        let refusal = admit(&pipeline, "10.0.0.2:1", &mut forged).expect_err("alice again");
        assert!(
            refusal.status.message().contains("client `alice`"),
            "{:?}",
            refusal.status
        );
    }

    #[test]
    fn the_stages_follow_the_configuration_and_the_deadline_is_always_last() {
        let bare = pipeline(&RouterConfig::default());
        assert_eq!(bare.names(), ["deadline"]);
        let config = RouterConfig {
            client_auth: Some(ClientAuth::new(Arc::new(|_| Ok(None)))),
            rate_limits: RateLimits {
                per_client: Some((ClientKey::PeerAddress, limit(5, 5))),
                service: Some(limit(5, 5)),
                ..RateLimits::default()
            },
            ..RouterConfig::default()
        };
        assert_eq!(
            pipeline(&config).names(),
            ["client-limit", "client-auth", "shared-limits", "deadline"]
        );
        let instance_only = RouterConfig {
            rate_limits: RateLimits {
                per_instance: Some(limit(5, 5)),
                ..RateLimits::default()
            },
            ..RouterConfig::default()
        };
        assert_eq!(pipeline(&instance_only).names(), ["deadline"]);
    }

    #[test]
    fn the_deadline_stage_defaults_caps_and_refuses_a_deadline_already_over() {
        let config = RouterConfig {
            deadlines: Deadlines {
                service: DeadlinePolicy {
                    default: Some(Duration::from_secs(5)),
                    max: Some(Duration::from_secs(30)),
                },
                ..Deadlines::default()
            },
            ..RouterConfig::default()
        };
        let pipeline = pipeline(&config);
        let received = Instant::now();
        let deadline = |headers: &mut HeaderMap| {
            let mut call = CallContext {
                service: "a.B",
                method: "M",
                peer: "",
                peer_certificates: &[],
                headers,
                received,
                deadline: None,
            };
            pipeline.admit(&mut call).expect("admitted");
            call.deadline
        };
        let tick = Duration::from_millis(1);
        let mut headers = HeaderMap::new();
        let five = received + Duration::from_secs(5) - tick;
        assert_eq!(deadline(&mut headers), Some(five), "the default");
        headers.insert("grpc-timeout", "1H".parse().expect("ascii"));
        let thirty = received + Duration::from_secs(30) - tick;
        assert_eq!(deadline(&mut headers), Some(thirty), "the ceiling");
        let mut over = HeaderMap::new();
        over.insert("grpc-timeout", "0n".parse().expect("ascii"));
        let refusal = admit(&pipeline, "", &mut over).expect_err("already over");
        assert_eq!(refusal.status.code(), tonic::Code::DeadlineExceeded);
        assert!(!refusal.is_policy, "not listed as a policy refusal");
    }
}
