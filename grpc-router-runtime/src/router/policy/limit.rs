//! Rate limits: calls per second for a whole service, for one method, and
//! for each client (by its address or a header), enforced with `governor`'s
//! GCRA before the call is read or forwarded. A call over a limit fails
//! RESOURCE_EXHAUSTED naming the limit. The per-client state is bounded:
//! past `max_clients` tracked keys, keys that are back at a full bucket are
//! dropped, and if that is not enough the table starts over (a flood of
//! distinct keys costs them their buckets, never the router its memory).
//! The per-instance limit is configured here and applied by the balancer
//! (see [`crate::router::instance_budget`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::HeaderMap;
use tonic::Status;

/// One limit: a steady rate and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Calls per second, sustained.
    pub per_second: NonZeroU32,
    /// Calls allowed at once after a quiet spell (at least 1).
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// `per_second` calls per second with bursts of as many.
    pub fn per_second(per_second: NonZeroU32) -> Self {
        RateLimit {
            per_second,
            burst: per_second,
        }
    }

    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

/// What identifies a client for its own limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientKey {
    /// The client's IP address (the port is left out).
    PeerAddress,
    /// The value of this request header. A caller without it (or with a
    /// value that is not text) is keyed by its IP address, as with
    /// [`ClientKey::PeerAddress`], in buckets apart from the header's values:
    /// callers without the header do not share one bucket.
    Header(String),
}

/// A service's rate limits; the default limits nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// All calls of the service together.
    pub service: Option<RateLimit>,
    /// Calls of one method (by name, `SayHello`), on top of `service`.
    pub methods: HashMap<String, RateLimit>,
    /// Each client's calls of the service.
    pub per_client: Option<(ClientKey, RateLimit)>,
    /// The most clients tracked at once (default 100,000).
    pub max_clients: usize,
    /// Calls the router sends each instance: one over it is skipped for
    /// another, and when every instance is over, the call fails
    /// RESOURCE_EXHAUSTED.
    pub per_instance: Option<RateLimit>,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            service: None,
            methods: HashMap::new(),
            per_client: None,
            max_clients: 100_000,
            per_instance: None,
        }
    }
}

impl RateLimits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.service.is_none()
            && self.methods.is_empty()
            && self.per_client.is_none()
            && self.per_instance.is_none()
    }
}

/// The limiters built from a service's [`RateLimits`]; their state lives as
/// long as the limits stay the same across reloads.
pub(crate) struct Limiters {
    limits: RateLimits,
    service: Option<DefaultDirectRateLimiter>,
    methods: HashMap<String, DefaultDirectRateLimiter>,
    clients: Option<Clients>,
}

struct Clients {
    key: ClientKey,
    limit: RateLimit,
    table: Mutex<Arc<DefaultKeyedRateLimiter<String>>>,
}

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiters")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Limiters {
    /// The limiters of `limits`, or `None` when it limits nothing.
    pub(crate) fn new(limits: &RateLimits) -> Option<Self> {
        if limits.is_empty() {
            return None;
        }
        Some(Limiters {
            limits: limits.clone(),
            service: limits.service.map(|l| RateLimiter::direct(l.quota())),
            methods: limits
                .methods
                .iter()
                .map(|(name, l)| (name.clone(), RateLimiter::direct(l.quota())))
                .collect(),
            clients: limits.per_client.clone().map(|(key, limit)| Clients {
                key,
                limit,
                table: Mutex::new(Arc::new(RateLimiter::keyed(limit.quota()))),
            }),
        })
    }

    /// Whether these limiters enforce `limits` (else they are rebuilt).
    pub(crate) fn enforce(&self, limits: &RateLimits) -> bool {
        &self.limits == limits
    }

    /// Admits one call of `method` from the client at `peer` with `headers`,
    /// or names the limit it is over. The client's limit is checked first,
    /// so one noisy client does not use up the service's budget. (The
    /// router runs the two halves as separate admission stages:
    /// [`Limiters::admit_client`] and [`Limiters::admit_shared`].)
    #[cfg(test)]
    pub(crate) fn admit(
        &self,
        service: &str,
        method: &str,
        peer: &str,
        headers: &HeaderMap,
    ) -> Result<(), Status> {
        self.admit_client(service, peer, headers)?;
        self.admit_shared(service, method)
    }

    /// Whether there is a per-client limit.
    pub(crate) fn limits_clients(&self) -> bool {
        self.clients.is_some()
    }

    /// Whether the per-client limit tells clients apart by their address
    /// (which a client cannot change call by call), not by a header.
    pub(crate) fn keys_clients_by_peer(&self) -> bool {
        self.clients
            .as_ref()
            .is_some_and(|c| c.key == ClientKey::PeerAddress)
    }

    /// Whether there is a limit shared by every client (the service's, or
    /// a method's).
    pub(crate) fn limits_shared(&self) -> bool {
        self.service.is_some() || !self.methods.is_empty()
    }

    /// Admits one call from the client at `peer` with `headers` under the
    /// per-client limit, or names the client over it.
    pub(crate) fn admit_client(
        &self,
        service: &str,
        peer: &str,
        headers: &HeaderMap,
    ) -> Result<(), Status> {
        let Some(clients) = &self.clients else {
            return Ok(());
        };
        let key = client_key(&clients.key, peer, headers);
        if clients.check(&key, self.limits.max_clients).is_ok() {
            return Ok(());
        }
        let who = match (key.strip_prefix(NO_HEADER), &clients.key) {
            (Some(ip), ClientKey::Header(name)) => {
                format!("client at `{ip}` (no `{name}` header)")
            }
            _ => format!("client `{key}`"),
        };
        Err(Status::resource_exhausted(format!(
            "rate limit: {who} is over its {} calls/s for `{service}`",
            clients.limit.per_second
        )))
    }

    /// Admits one call of `method` under the limits every client shares
    /// (the method's, then the service's), or names the limit it is over.
    pub(crate) fn admit_shared(&self, service: &str, method: &str) -> Result<(), Status> {
        if let (Some(limiter), Some(limit)) =
            (self.methods.get(method), self.limits.methods.get(method))
            && limiter.check().is_err()
        {
            return Err(Status::resource_exhausted(format!(
                "rate limit: `{service}/{method}` is over its {} calls/s",
                limit.per_second
            )));
        }
        if let (Some(limiter), Some(limit)) = (&self.service, self.limits.service)
            && limiter.check().is_err()
        {
            return Err(Status::resource_exhausted(format!(
                "rate limit: `{service}` is over its {} calls/s",
                limit.per_second
            )));
        }
        Ok(())
    }

    /// The per-instance limit, when there is one.
    pub(crate) fn per_instance(&self) -> Option<RateLimit> {
        self.limits.per_instance
    }

    /// How many clients are tracked now.
    #[cfg(test)]
    fn clients_tracked(&self) -> usize {
        self.clients.as_ref().map(|c| c.table().len()).unwrap_or(0)
    }
}

impl Clients {
    fn table(&self) -> Arc<DefaultKeyedRateLimiter<String>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn check(&self, key: &String, max_clients: usize) -> Result<(), ()> {
        let table = self.table();
        let allowed = table.check_key(key).is_ok();
        if table.len() > max_clients {
            table.retain_recent();
            if table.len() > max_clients {
                // Still full of live keys: start over rather than grow.
                *self.table.lock().unwrap_or_else(|e| e.into_inner()) =
                    Arc::new(RateLimiter::keyed(self.limit.quota()));
            } else {
                table.shrink_to_fit();
            }
        }
        if allowed { Ok(()) } else { Err(()) }
    }
}

/// Starts the bucket key of a caller without the limit's header: such a
/// caller is keyed by its IP address, and no header value can start with a
/// NUL, so it never shares a bucket with a header's value.
const NO_HEADER: &str = "\0";

/// The bucket key of a call from `peer` with `headers`: its IP address, or
/// the header's value (its IP address after [`NO_HEADER`] without one).
fn client_key(key: &ClientKey, peer: &str, headers: &HeaderMap) -> String {
    match key {
        ClientKey::PeerAddress => peer_ip(peer),
        ClientKey::Header(name) => match headers.get(name).and_then(|v| v.to_str().ok()) {
            Some(value) => value.to_owned(),
            None => format!("{NO_HEADER}{}", peer_ip(peer)),
        },
    }
}

/// The IP of a `host:port` peer address (the whole text when it is not one).
fn peer_ip(peer: &str) -> String {
    peer.parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| peer.parse::<IpAddr>())
        .map(|ip| ip.to_string())
        .unwrap_or_else(|_| peer.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).expect("non-zero")
    }

    #[test]
    fn a_burst_passes_and_the_next_call_is_refused_naming_the_limit() {
        let limits = RateLimits {
            methods: HashMap::from([(
                "SayHello".to_owned(),
                RateLimit {
                    per_second: n(1),
                    burst: n(3),
                },
            )]),
            ..RateLimits::default()
        };
        let limiters = Limiters::new(&limits).expect("limits");
        let headers = HeaderMap::new();
        for _ in 0..3 {
            limiters
                .admit("a.B", "SayHello", "127.0.0.1:1", &headers)
                .expect("within the burst");
        }
        let refused = limiters
            .admit("a.B", "SayHello", "127.0.0.1:1", &headers)
            .expect_err("over");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("`a.B/SayHello`"), "{refused:?}");
        assert!(refused.message().contains("1 calls/s"), "{refused:?}");
        limiters
            .admit("a.B", "Other", "127.0.0.1:1", &headers)
            .expect("another method is not limited");
    }

    #[test]
    fn a_saturated_limit_admits_its_burst_then_its_rate_on_a_simulated_clock() {
        use governor::clock::FakeRelativeClock;
        let limit = RateLimit {
            per_second: n(100),
            burst: n(10),
        };
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::direct_with_clock(limit.quota(), clock.clone());
        // Ten seconds of a caller trying every millisecond.
        let mut admitted = 0u32;
        for _ in 0..10_000 {
            if limiter.check().is_ok() {
                admitted += 1;
            }
            clock.advance(std::time::Duration::from_millis(1));
        }
        // The burst at once, then one call every 10 ms.
        assert!(
            (10 + 999..=10 + 1000).contains(&admitted),
            "{admitted} admitted in 10 s at 100/s with a burst of 10"
        );
        // After a quiet second the whole burst is back, and no more.
        clock.advance(std::time::Duration::from_secs(1));
        let burst = (0..20).filter(|_| limiter.check().is_ok()).count();
        assert_eq!(burst, 10);
    }

    #[test]
    fn each_client_address_has_its_own_bucket_whatever_its_port() {
        let limits = RateLimits {
            per_client: Some((
                ClientKey::PeerAddress,
                RateLimit {
                    per_second: n(1),
                    burst: n(1),
                },
            )),
            ..RateLimits::default()
        };
        let limiters = Limiters::new(&limits).expect("limits");
        let h = HeaderMap::new();
        limiters
            .admit("a.B", "M", "10.0.0.1:1000", &h)
            .expect("first");
        let refused = limiters
            .admit("a.B", "M", "10.0.0.1:2000", &h)
            .expect_err("same address");
        assert!(refused.message().contains("`10.0.0.1`"), "{refused:?}");
        limiters
            .admit("a.B", "M", "10.0.0.2:1000", &h)
            .expect("another client");
        limiters.admit("a.B", "M", "[::1]:5", &h).expect("v6");
    }

    #[test]
    fn callers_without_the_header_are_limited_by_their_address_apart_from_header_values() {
        let limits = RateLimits {
            per_client: Some((
                ClientKey::Header("x-api-key".to_owned()),
                RateLimit {
                    per_second: n(1),
                    burst: n(1),
                },
            )),
            ..RateLimits::default()
        };
        let limiters = Limiters::new(&limits).expect("limits");
        let none = HeaderMap::new();
        limiters
            .admit("a.B", "M", "10.0.0.1:1000", &none)
            .expect("the first caller without the header");
        limiters
            .admit("a.B", "M", "10.0.0.2:1000", &none)
            .expect("another address without the header has its own bucket");
        let refused = limiters
            .admit("a.B", "M", "10.0.0.1:2000", &none)
            .expect_err("the same address again");
        assert!(
            refused
                .message()
                .contains("client at `10.0.0.1` (no `x-api-key` header)"),
            "{refused:?}"
        );
        let mut spoof = HeaderMap::new();
        spoof.insert("x-api-key", "10.0.0.1".parse().expect("ascii"));
        limiters
            .admit("a.B", "M", "10.0.0.9:1", &spoof)
            .expect("a header value equal to an address is another bucket");
        let refused = limiters
            .admit("a.B", "M", "10.0.0.8:1", &spoof)
            .expect_err("the same header value from elsewhere");
        assert!(
            refused.message().contains("client `10.0.0.1`"),
            "{refused:?}"
        );
    }

    #[test]
    fn a_flood_of_distinct_client_keys_stays_bounded() {
        let limits = RateLimits {
            per_client: Some((
                ClientKey::Header("x-api-key".to_owned()),
                RateLimit {
                    per_second: n(1),
                    burst: n(1),
                },
            )),
            max_clients: 1_000,
            ..RateLimits::default()
        };
        let limiters = Limiters::new(&limits).expect("limits");
        for i in 0..20_000 {
            let mut headers = HeaderMap::new();
            headers.insert("x-api-key", format!("key-{i}").parse().expect("ascii"));
            let _ = limiters.admit("a.B", "M", "127.0.0.1:1", &headers);
            assert!(limiters.clients_tracked() <= 1_001);
        }
    }

    #[test]
    fn unchanged_limits_keep_their_limiters_and_no_limit_builds_none() {
        assert!(Limiters::new(&RateLimits::default()).is_none());
        let limits = RateLimits {
            service: Some(RateLimit::per_second(n(5))),
            ..RateLimits::default()
        };
        let limiters = Limiters::new(&limits).expect("limits");
        assert!(limiters.enforce(&limits));
        assert!(!limiters.enforce(&RateLimits::default()));
    }
}
