//! Calls that wait for an instance (scale to zero): with
//! [`RouterConfig::wait_for_instance`](crate::router::RouterConfig) set, a
//! call that finds no instance able to take it waits, within its deadline
//! and the configured bound, for the registry to get one (a registration, an
//! instance back from draining or not serving, an ejection that ends), then
//! proceeds; otherwise it fails UNAVAILABLE saying how long it waited.
//!
//! Waiters sleep on the registry's change channel (every registration,
//! removal and serving or draining change wakes them) and, while an
//! instance is ejected, until the soonest ejection ends: nothing polls. The
//! waiting calls of a service are bounded in number and in the request bytes
//! they hold ([`WaitForInstance::max_calls`], [`WaitForInstance::max_bytes`]);
//! a call beyond the bound fails RESOURCE_EXHAUSTED at once. A waiting
//! call's slot is a guard: a client that cancels (the call's future dropped)
//! frees it at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;

use crate::router::RouterCore;
use crate::router::balance::PickError;

/// The most calls of one service that wait at once, by default.
pub const DEFAULT_MAX_WAITING_CALLS: usize = 1000;
/// The most request bytes the waiting calls of one service hold together, by
/// default (64 MiB).
pub const DEFAULT_MAX_WAITING_BYTES: usize = 64 * 1024 * 1024;

/// Told the service's name when a call starts waiting and no instance of the
/// service is registered at all (the moment to start one: an activation
/// hook). It runs on the call's task: it must not block (spawn the work).
pub type WaitHook = Arc<dyn Fn(&str) + Send + Sync>;

/// How a call waits for an instance when none can take it
/// ([`RouterConfig::wait_for_instance`](crate::router::RouterConfig)).
#[derive(Clone)]
pub struct WaitForInstance {
    /// The longest a call waits (its deadline, when sooner, ends the wait
    /// first with DEADLINE_EXCEEDED).
    pub wait: Duration,
    /// The most calls of the service waiting at once; one more fails
    /// RESOURCE_EXHAUSTED at once.
    pub max_calls: usize,
    /// The most request bytes the service's waiting calls hold together; a
    /// call that would take them past it fails RESOURCE_EXHAUSTED at once.
    pub max_bytes: usize,
    /// Called when a call starts waiting for a service with no instance
    /// registered (see [`WaitHook`]).
    pub on_wait: Option<WaitHook>,
}

impl WaitForInstance {
    /// Waiting up to `wait`, with the default bounds and no hook.
    pub fn new(wait: Duration) -> Self {
        WaitForInstance {
            wait,
            max_calls: DEFAULT_MAX_WAITING_CALLS,
            max_bytes: DEFAULT_MAX_WAITING_BYTES,
            on_wait: None,
        }
    }
}

impl std::fmt::Debug for WaitForInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitForInstance")
            .field("wait", &self.wait)
            .field("max_calls", &self.max_calls)
            .field("max_bytes", &self.max_bytes)
            .field("on_wait", &self.on_wait.as_ref().map(|_| "<fn>"))
            .finish()
    }
}

/// The calls of one service waiting for an instance right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WaitingNow {
    /// Calls waiting.
    pub calls: usize,
    /// The request bytes they hold.
    pub bytes: usize,
    /// Calls that started waiting since the router started (grows by one at
    /// each start, so a watcher sees every start, even one that ended
    /// before it looked).
    pub started: u64,
}

/// How a wait ended (the `outcome` label of `grpc_router_waits_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitOutcome {
    /// An instance took the call.
    Served,
    /// The wait bound passed first: UNAVAILABLE.
    TimedOut,
    /// The call's deadline passed first: DEADLINE_EXCEEDED.
    Deadline,
    /// The client went away while the call waited.
    Cancelled,
    /// Over the bound on waiting calls: RESOURCE_EXHAUSTED without waiting.
    Refused,
}

impl WaitOutcome {
    /// Every outcome, in the order of [`WaitOutcome::index`].
    pub const ALL: [WaitOutcome; 5] = [
        WaitOutcome::Served,
        WaitOutcome::TimedOut,
        WaitOutcome::Deadline,
        WaitOutcome::Cancelled,
        WaitOutcome::Refused,
    ];

    /// Its label value.
    pub fn name(self) -> &'static str {
        match self {
            WaitOutcome::Served => "served",
            WaitOutcome::TimedOut => "timed_out",
            WaitOutcome::Deadline => "deadline",
            WaitOutcome::Cancelled => "cancelled",
            WaitOutcome::Refused => "refused",
        }
    }
}

/// The waiting calls of one service: how many, their bytes, and a channel
/// that sees each change (the KEDA scaler pushes from it).
#[derive(Debug)]
pub struct WaitingCalls {
    now: watch::Sender<WaitingNow>,
}

impl Default for WaitingCalls {
    fn default() -> Self {
        WaitingCalls {
            now: watch::Sender::new(WaitingNow::default()),
        }
    }
}

impl WaitingCalls {
    /// The calls waiting now and their bytes.
    pub fn now(&self) -> WaitingNow {
        *self.now.borrow()
    }

    /// Calls waiting now.
    pub fn calls(&self) -> usize {
        self.now.borrow().calls
    }

    /// A receiver that sees every call start and stop waiting.
    pub fn subscribe(&self) -> watch::Receiver<WaitingNow> {
        self.now.subscribe()
    }

    /// Takes a slot for a call holding `bytes`, if the bound allows it.
    fn enter(&self, settings: &WaitForInstance, bytes: usize) -> bool {
        self.now.send_if_modified(|now| {
            let over_bytes = now.bytes.saturating_add(bytes) > settings.max_bytes;
            if now.calls >= settings.max_calls || over_bytes {
                return false;
            }
            now.calls += 1;
            now.bytes += bytes;
            now.started += 1;
            true
        })
    }

    fn leave(&self, bytes: usize) {
        self.now.send_modify(|now| {
            now.calls = now.calls.saturating_sub(1);
            now.bytes = now.bytes.saturating_sub(bytes);
        });
    }
}

/// Why [`pick_or_wait`] has no instance for the call.
pub(crate) enum Waited {
    /// The call did not wait (waiting is off, or the reason is not one an
    /// instance's arrival cures): the pick's error as it is.
    NotWaiting(PickError),
    /// It waited the whole bound: the last pick's error, and how long.
    GaveUp(PickError, Duration),
    /// It ended otherwise (its deadline, or over the bound): this status.
    Failed(Status),
}

impl Waited {
    /// The status the call fails with; `pick_status` words a pick's error.
    pub(crate) fn status(self, pick_status: impl FnOnce(PickError) -> Status) -> Status {
        match self {
            Waited::NotWaiting(error) => pick_status(error),
            Waited::GaveUp(error, waited) => {
                let status = pick_status(error);
                Status::new(
                    status.code(),
                    format!(
                        "{} (the call waited {} for an instance: `wait_for_instance`)",
                        status.message(),
                        duration_text(waited)
                    ),
                )
            }
            Waited::Failed(status) => status,
        }
    }
}

fn duration_text(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Whether an instance's arrival (or return) may cure `error`: not a rate
/// limit.
fn waitable(error: &PickError) -> bool {
    !matches!(error, PickError::OverInstanceLimit(_))
}

/// A waiting call's slot: it leaves the count when dropped, and a drop
/// before [`Slot::finish`] is a cancelled wait.
struct Slot<'a> {
    core: &'a RouterCore,
    bytes: usize,
    since: Instant,
    outcome: Option<WaitOutcome>,
}

impl Slot<'_> {
    fn finish(mut self, outcome: WaitOutcome) {
        self.outcome = Some(outcome);
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.core.waiting.leave(self.bytes);
        let outcome = self.outcome.unwrap_or(WaitOutcome::Cancelled);
        if let Some(metrics) = &self.core.metrics {
            metrics.waited(outcome, Some(self.since.elapsed()));
        }
    }
}

/// `pick()`'s instance; when it finds none and waiting is on (and `first`:
/// the call's first pick, not a retry's), the call waits for one as the
/// [module](self) says. `bytes` are the request bytes the call holds.
pub(crate) async fn pick_or_wait<T>(
    core: &RouterCore,
    deadline: Option<Instant>,
    bytes: usize,
    first: bool,
    mut pick: impl FnMut() -> Result<T, PickError>,
) -> Result<T, Waited> {
    // The common case first: an instance takes the call, at no cost more.
    let mut error = match pick() {
        Ok(instance) => return Ok(instance),
        Err(error) => error,
    };
    let config = core.config();
    let settings = match &config.wait_for_instance {
        Some(settings) if first && waitable(&error) && !settings.wait.is_zero() => settings,
        _ => return Err(Waited::NotWaiting(error)),
    };
    if !core.waiting.enter(settings, bytes) {
        if let Some(metrics) = &core.metrics {
            metrics.waited(WaitOutcome::Refused, None);
        }
        let waiting = core.waiting.now();
        return Err(Waited::Failed(Status::resource_exhausted(format!(
            "no instance of `{}` can take the call now and {} calls ({} request bytes) already wait \
             for one: the bound is `max_waiting_calls` = {}, `max_waiting_bytes` = {}",
            core.service.name(),
            waiting.calls,
            waiting.bytes,
            settings.max_calls,
            settings.max_bytes,
        ))));
    }
    let since = Instant::now();
    let slot = Slot {
        core,
        bytes,
        since,
        outcome: None,
    };
    if core.registry.is_empty()
        && let Some(hook) = &settings.on_wait
    {
        hook(core.service.name());
    }
    let until = since + settings.wait;
    let end = deadline.map_or(until, |d| d.min(until));
    let mut changed = core.registry.changed();
    loop {
        // Seen before the pick: a change after it wakes the wait below (the
        // first pick here also sees a change since the one that failed).
        changed.borrow_and_update();
        match pick() {
            Ok(instance) => {
                slot.finish(WaitOutcome::Served);
                return Ok(instance);
            }
            Err(next) => error = next,
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| d <= now) {
            slot.finish(WaitOutcome::Deadline);
            return Err(Waited::Failed(Status::deadline_exceeded(format!(
                "deadline exceeded while the call waited {} for an instance of `{}`",
                duration_text(since.elapsed()),
                core.service.name()
            ))));
        }
        if now >= until || !waitable(&error) {
            slot.finish(WaitOutcome::TimedOut);
            // The bound, as configured, when it ran out (not the timer's
            // late wake-up).
            return Err(Waited::GaveUp(error, since.elapsed().min(settings.wait)));
        }
        let wake = soonest_ejection_end(core).map_or(end, |at| at.min(end));
        tokio::select! {
            biased;
            result = changed.changed() => {
                if result.is_err() {
                    // The registry is gone with its router: nothing to wait for.
                    tokio::time::sleep_until(end).await;
                }
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// The method at `path` of a service known by name only (named in the
/// configuration, or kept from a past run, with no registration yet):
/// waiting is on, the call waits, as for an instance, for a registration to
/// define the service (`headers`' `grpc-timeout` from `received` is its
/// deadline). `None`: the service was defined without that method.
pub(crate) async fn method_once_defined(
    core: &RouterCore,
    path: &str,
    headers: &http::HeaderMap,
    received: Instant,
) -> Result<Option<Arc<crate::router::Method>>, Status> {
    let deadline = crate::metadata::timeout_from_headers(headers).map(|t| received + t);
    let defined = || {
        if !core.service.is_defined() {
            return Err(PickError::NoInstances);
        }
        Ok(core.service.methods().by_path(path).cloned())
    };
    pick_or_wait(core, deadline, 0, true, defined)
        .await
        .map_err(|waited| {
            waited.status(|_| {
                Status::unavailable(format!(
                    "no instance of `{}` is registered",
                    core.service.name()
                ))
            })
        })
}

/// When the soonest ejection among the service's instances ends, if any
/// instance is ejected: a waiting call picks again then.
fn soonest_ejection_end(core: &RouterCore) -> Option<Instant> {
    let now = Instant::now();
    core.registry
        .snapshot()
        .iter()
        .filter_map(|i| i.ejection_remaining())
        .min()
        .map(|left| now + left + Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_counts_calls_and_bytes() {
        let waiting = WaitingCalls::default();
        let settings = WaitForInstance {
            max_calls: 2,
            max_bytes: 100,
            ..WaitForInstance::new(Duration::from_secs(1))
        };
        assert!(waiting.enter(&settings, 60));
        assert!(!waiting.enter(&settings, 41), "over the bytes");
        assert!(waiting.enter(&settings, 40));
        assert!(!waiting.enter(&settings, 0), "over the calls");
        assert_eq!(
            waiting.now(),
            WaitingNow {
                calls: 2,
                bytes: 100,
                started: 2
            }
        );
        waiting.leave(60);
        assert!(waiting.enter(&settings, 10));
        assert_eq!(waiting.calls(), 2);
    }

    #[test]
    fn a_gave_up_status_says_how_long_the_call_waited() {
        let status = Waited::GaveUp(PickError::NoInstances, Duration::from_millis(2500))
            .status(|_| Status::unavailable("no instance of `x` is registered"));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status.message(),
            "no instance of `x` is registered (the call waited 2.5 s for an instance: `wait_for_instance`)"
        );
    }
}
