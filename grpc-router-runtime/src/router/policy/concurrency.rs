//! Concurrency limits (`max_concurrent_calls`, like Envoy's circuit-breaker
//! `max_requests`): at most so many calls of a service, or of one method, in
//! flight at once. A call over a limit fails RESOURCE_EXHAUSTED at once, or,
//! with a [`ConcurrencyQueue`], waits up to its timeout (and within its
//! deadline) for a slot, in a queue of bounded length.
//!
//! Each limit counts in a [`Gate`] that lives with what it limits (the
//! service's core, each method), so a reload that changes a limit keeps the
//! count of the calls in flight: a lower limit refuses new calls until
//! enough of them end, and no call is dropped. Calls count only while a
//! limit is set: those already in flight when a reload sets one are not
//! counted against it.
//!
//! The limit runs after the admission stages
//! ([`crate::router::admission`]): it is the one policy that may wait, and a
//! call refused by any other never takes a slot.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::Status;

use crate::router::reply::deadline_exceeded;
use crate::router::service::Method;
use crate::router::{RouterConfig, RouterCore};

/// A service's concurrency limits; the default limits nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConcurrencyLimits {
    /// The calls of the whole service in flight at once.
    pub service: Option<NonZeroU32>,
    /// The calls of one method (by name, `SayHello`) in flight at once, on
    /// top of `service`.
    pub methods: HashMap<String, NonZeroU32>,
    /// How a call over a limit may wait for a slot; `None`: it fails at once.
    pub queue: Option<ConcurrencyQueue>,
}

impl ConcurrencyLimits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.service.is_none() && self.methods.is_empty()
    }
}

/// The wait of calls over a concurrency limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyQueue {
    /// The longest a call waits for a slot (its deadline may end it sooner).
    pub timeout: Duration,
    /// The most calls waiting for one limit's slots; past it a call fails
    /// at once.
    pub max_waiting: u32,
}

/// The count of one limit's calls, and its waiting calls.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    in_flight: AtomicU32,
    waiting: AtomicU32,
    /// Calls refused (at once or after waiting) since start.
    refused: AtomicU64,
    /// Told when a slot frees.
    freed: Notify,
}

/// A gate clones empty and compares equal to any other: it is state kept
/// beside what it limits, not part of it.
impl Clone for Gate {
    fn clone(&self) -> Self {
        Gate::default()
    }
}

impl PartialEq for Gate {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Gate {}

impl Gate {
    /// Takes a slot if fewer than `limit` are taken.
    fn try_enter(&self, limit: u32) -> bool {
        self.in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives a slot back and wakes one waiting call, if any waits. (A
    /// waiter counts itself before it tries for a slot, and both sides use
    /// sequentially consistent order: either the waiter sees the freed slot,
    /// or this sees the waiter.)
    fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.freed.notify_one();
        }
    }

    /// The calls holding a slot now.
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The calls waiting for a slot now.
    pub(crate) fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The calls refused since start.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Takes a slot under `limit`, waiting as `queue` allows until
    /// `deadline`; the error says which limit refused the call.
    async fn enter(
        &self,
        limit: NonZeroU32,
        queue: Option<ConcurrencyQueue>,
        deadline: Option<Instant>,
        what: &(dyn std::fmt::Display + Sync),
    ) -> Result<(), Status> {
        let limit = limit.get();
        // A newcomer does not pass calls already waiting.
        if self.waiting() == 0 && self.try_enter(limit) {
            return Ok(());
        }
        let refused = |message: String| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            Err(Status::resource_exhausted(message))
        };
        let Some(queue) = queue else {
            return refused(format!(
                "concurrency limit: {what} has its {limit} calls in flight (max_concurrent_calls)"
            ));
        };
        let Some(_waiter) = Waiter::join(self, queue.max_waiting) else {
            return refused(format!(
                "concurrency limit: {what} has its {limit} calls in flight and {} waiting \
                 (max_concurrent_calls, concurrency_queue.max_waiting)",
                queue.max_waiting
            ));
        };
        let until = Instant::now() + queue.timeout;
        let give_up = deadline.map_or(until, |d| d.min(until));
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.try_enter(limit) {
                return Ok(());
            }
            if tokio::time::timeout_at(give_up, freed).await.is_err() {
                if self.try_enter(limit) {
                    return Ok(());
                }
                if deadline.is_some_and(|d| d <= until) {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(deadline_exceeded());
                }
                return refused(format!(
                    "concurrency limit: {what} had its {limit} calls in flight for the \
                     {:?} a call may wait (max_concurrent_calls, concurrency_queue.timeout)",
                    queue.timeout
                ));
            }
        }
    }
}

/// A call counted as waiting on a gate while it lives.
struct Waiter<'a>(&'a Gate);

impl<'a> Waiter<'a> {
    fn join(gate: &'a Gate, max_waiting: u32) -> Option<Self> {
        gate.waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max_waiting).then_some(n + 1)
            })
            .ok()
            .map(|_| Waiter(gate))
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A call's slots under its method's and its service's limits, given back
/// when the call ends (dropped with its response stream).
#[derive(Debug, Default)]
pub(crate) struct Permit {
    method: Option<Arc<Method>>,
    service: Option<Arc<RouterCore>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(method) = &self.method {
            method.gate.leave();
        }
        if let Some(core) = &self.service {
            core.concurrency.leave();
        }
    }
}

/// What a limit limits, as a refusal names it (`` `pkg.Svc/Method` `` or
/// `` `pkg.Svc` ``), formatted only when a call is refused.
struct LimitName<'a>(&'a str, Option<&'a str>);

impl std::fmt::Display for LimitName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Some(method) => write!(f, "`{}/{method}`", self.0),
            None => write!(f, "`{}`", self.0),
        }
    }
}

/// Takes the call's slots under `config`'s limits: the method's, then the
/// service's. `Ok` holds the slots until dropped; a refusal says which limit
/// and gives back any slot taken.
pub(crate) async fn enter(
    config: &RouterConfig,
    core: &Arc<RouterCore>,
    method: &Arc<Method>,
    deadline: Option<Instant>,
) -> Result<Permit, Status> {
    let limits = &config.concurrency;
    let mut permit = Permit::default();
    if let Some(&limit) = limits.methods.get(&*method.name) {
        let what = LimitName(core.service.name(), Some(&method.name));
        method
            .gate
            .enter(limit, limits.queue, deadline, &what)
            .await?;
        permit.method = Some(method.clone());
    }
    if let Some(limit) = limits.service {
        let what = LimitName(core.service.name(), None);
        core.concurrency
            .enter(limit, limits.queue, deadline, &what)
            .await?;
        permit.service = Some(core.clone());
    }
    Ok(permit)
}

/// Each limit of `core`'s settings and the calls under it, the service's
/// first, then its methods' by name.
pub(crate) fn status(core: &RouterCore) -> Vec<crate::pb::ConcurrencyLimitStatus> {
    let config = core.config();
    let limits = &config.concurrency;
    let of = |method: &str, max: NonZeroU32, gate: &Gate| crate::pb::ConcurrencyLimitStatus {
        method: method.to_owned(),
        max_calls: max.get(),
        in_flight: gate.in_flight(),
        waiting: gate.waiting(),
        refused: gate.refused(),
    };
    let mut list: Vec<_> = limits
        .service
        .map(|max| of("", max, &core.concurrency))
        .into_iter()
        .collect();
    let methods = core.service.methods();
    let mut limited: Vec<_> = methods
        .iter()
        .filter_map(|m| Some((m, *limits.methods.get(&*m.name)?)))
        .collect();
    limited.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    list.extend(
        limited
            .into_iter()
            .map(|(m, max)| of(&m.name, max, &m.gate)),
    );
    list
}

/// The calls waiting under `core`'s limits, and those refused since start.
pub(crate) fn totals(core: &RouterCore) -> (u32, u64) {
    let methods = core.service.methods();
    std::iter::once(&core.concurrency)
        .chain(methods.iter().map(|m| &m.gate))
        .fold((0, 0), |(waiting, refused), gate| {
            (waiting + gate.waiting(), refused + gate.refused())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).expect("non-zero")
    }

    const QUEUE: ConcurrencyQueue = ConcurrencyQueue {
        timeout: Duration::from_secs(10),
        max_waiting: 1,
    };

    #[tokio::test]
    async fn calls_past_the_limit_fail_at_once_naming_it() {
        let gate = Gate::default();
        gate.enter(n(2), None, None, &"`a.B`").await.expect("first");
        gate.enter(n(2), None, None, &"`a.B`")
            .await
            .expect("second");
        let refused = gate
            .enter(n(2), None, None, &"`a.B`")
            .await
            .expect_err("third");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(
            refused
                .message()
                .contains("`a.B` has its 2 calls in flight"),
            "{refused:?}"
        );
        assert_eq!((gate.in_flight(), gate.refused()), (2, 1));
        gate.leave();
        gate.enter(n(2), None, None, &"`a.B`")
            .await
            .expect("a freed slot");
    }

    #[tokio::test]
    async fn a_lower_limit_counts_the_calls_already_in_flight() {
        let gate = Gate::default();
        for _ in 0..3 {
            gate.enter(n(3), None, None, &"s").await.expect("under 3");
        }
        // A reload lowers the limit to 2: new calls wait for two to end.
        assert!(gate.enter(n(2), None, None, &"s").await.is_err());
        gate.leave();
        assert!(gate.enter(n(2), None, None, &"s").await.is_err());
        gate.leave();
        gate.enter(n(2), None, None, &"s")
            .await
            .expect("under 2 again");
    }

    /// A call waiting on `gate` (limit 1, [`QUEUE`]), once it waits.
    async fn queue_one(gate: &Arc<Gate>) -> tokio::task::JoinHandle<Result<(), Status>> {
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter(n(1), Some(QUEUE), None, &"s").await }
        });
        while gate.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        waiting
    }

    #[tokio::test]
    async fn a_queued_call_takes_the_first_slot_freed() {
        let gate = Arc::new(Gate::default());
        gate.enter(n(1), None, None, &"s").await.expect("first");
        let waiting = queue_one(&gate).await;
        // A newcomer does not pass the call already waiting.
        let newcomer = gate.enter(n(1), None, None, &"s").await;
        assert!(newcomer.is_err(), "barged past the queue");
        gate.leave();
        waiting.await.expect("task").expect("the freed slot");
        assert_eq!((gate.in_flight(), gate.waiting()), (1, 0));
    }

    #[tokio::test]
    async fn the_queue_is_bounded_and_a_wait_ends_at_the_timeout_or_the_deadline() {
        let gate = Arc::new(Gate::default());
        gate.enter(n(1), None, None, &"s").await.expect("first");
        let queue = ConcurrencyQueue {
            timeout: Duration::from_millis(200),
            max_waiting: 1,
        };
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move {
                let started = Instant::now();
                let result = gate.enter(n(1), Some(queue), None, &"s").await;
                (result, started.elapsed())
            }
        });
        while gate.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        let full = gate
            .enter(n(1), Some(queue), None, &"s")
            .await
            .expect_err("queue full");
        assert!(full.message().contains("1 waiting"), "{full:?}");
        let (timed_out, waited) = waiting.await.expect("task");
        let timed_out = timed_out.expect_err("no slot freed");
        assert_eq!(timed_out.code(), Code::ResourceExhausted);
        assert!(timed_out.message().contains("200ms"), "{timed_out:?}");
        assert!(waited >= Duration::from_millis(200), "{waited:?}");

        let deadline = Instant::now() + Duration::from_millis(50);
        let late = gate
            .enter(n(1), Some(queue), Some(deadline), &"s")
            .await
            .expect_err("deadline first");
        assert_eq!(late.code(), Code::DeadlineExceeded);
        let now = Instant::now();
        assert!(now >= deadline && now < deadline + Duration::from_millis(150));
        assert_eq!((gate.waiting(), gate.refused()), (0, 3));
    }

    #[tokio::test]
    async fn a_cancelled_waiting_call_leaves_the_queue() {
        let gate = Arc::new(Gate::default());
        gate.enter(n(1), None, None, &"s").await.expect("first");
        let waiting = queue_one(&gate).await;
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(gate.waiting(), 0);
        gate.leave();
        gate.enter(n(1), Some(QUEUE), None, &"s")
            .await
            .expect("the slot");
    }
}
