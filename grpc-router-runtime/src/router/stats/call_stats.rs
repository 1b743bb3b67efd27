//! Per-instance call statistics: calls finished and failed, calls per second
//! over the last seconds and latency percentiles over the last window.
//!
//! Recording a call costs a few relaxed atomic adds and no lock or
//! allocation:
//!
//! - **Totals**: two counters (`finished`, `failed`) since the instance
//!   registered.
//! - **Rate**: [`RATE_WINDOW_SECS`] one-second slots, each tagged with the
//!   second it counts. A call adds to the slot of its second, and the first
//!   call of a new second resets the slot it reuses. The rate is the calls of
//!   the slots of the last [`RATE_WINDOW_SECS`] seconds (the current one
//!   included) over the time they cover (at most the instance's age).
//! - **Latency**: two log-bucket histograms of [`LATENCY_WINDOW_SECS`] each
//!   (four buckets per power of two of microseconds), the current window's and
//!   the previous one's, so percentiles cover 10 to 20 seconds of calls. A
//!   percentile is reported as its bucket's upper bound: at most 25 % above
//!   the true value.
//!
//! The slots and histograms are allocated by the instance's first call, so an
//! idle registration does not carry them.
//!
//! A slot or histogram is reset by whichever call first lands in a new period
//! (a compare-and-swap); the few calls that land while it resets are left out
//! of the window (not of the totals).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The seconds the calls-per-second figure covers.
pub const RATE_WINDOW_SECS: u64 = 10;
/// The seconds each latency histogram covers; percentiles cover the current
/// and the previous one.
pub const LATENCY_WINDOW_SECS: u64 = 10;

/// Buckets per power of two (a power of two itself).
const SUB_BUCKETS: u64 = 4;
/// `log2(SUB_BUCKETS)`.
const SUB_BITS: u32 = 2;
/// Buckets of a histogram: exact below `SUB_BUCKETS` µs, then four per power
/// of two up to 2^28 µs (about 268 s); longer calls land in the last one.
const BUCKETS: usize = 108;

/// A period tag meaning "being reset now".
const RESETTING: u64 = u64::MAX;

/// Time since the process first asked: the clock every instance shares.
fn now() -> Duration {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed()
}

/// The bucket of a latency of `micros` microseconds.
fn bucket(micros: u64) -> usize {
    if micros < SUB_BUCKETS {
        return micros as usize;
    }
    let exponent = u64::from(63 - micros.leading_zeros());
    let top = micros >> (exponent - u64::from(SUB_BITS));
    let index = SUB_BUCKETS * (exponent - 1) + (top - SUB_BUCKETS);
    usize::try_from(index).map_or(BUCKETS - 1, |i| i.min(BUCKETS - 1))
}

/// The largest latency (µs) that falls in bucket `index`.
fn upper_bound(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB_BUCKETS {
        return index;
    }
    let exponent = index / SUB_BUCKETS + 1;
    let top = index % SUB_BUCKETS + SUB_BUCKETS;
    ((top + 1) << (exponent - u64::from(SUB_BITS))) - 1
}

/// Makes `tag` hold `period`, running `reset` first if it held an older one.
/// False when the sample must be left out: another call is resetting the
/// cell, or it already moved to a newer period.
fn claim(tag: &AtomicU64, period: u64, reset: impl FnOnce()) -> bool {
    let mut seen = tag.load(Ordering::Acquire);
    loop {
        if seen == period {
            return true;
        }
        if seen == RESETTING || seen > period {
            return false;
        }
        match tag.compare_exchange(seen, RESETTING, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                reset();
                tag.store(period, Ordering::Release);
                return true;
            }
            Err(current) => seen = current,
        }
    }
}

/// One second of the rate window.
#[derive(Debug, Default)]
struct RateSlot {
    second: AtomicU64,
    calls: AtomicU64,
}

/// One latency window's histogram.
#[derive(Debug)]
struct Histogram {
    window: AtomicU64,
    counts: [AtomicU32; BUCKETS],
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            window: AtomicU64::new(0),
            counts: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

impl Histogram {
    fn reset(&self) {
        for count in &self.counts {
            count.store(0, Ordering::Relaxed);
        }
    }
}

/// The call statistics of one instance (see the module documentation).
#[derive(Debug)]
pub struct InstanceStats {
    /// When the statistics began (the instance registered), on [`now`]'s clock.
    since: Duration,
    finished: AtomicU64,
    failed: AtomicU64,
    /// The rate slots and histograms (about 1 KiB), allocated by the first
    /// call: most registrations of a large fleet sit idle, and an idle
    /// registration should cost a few hundred bytes, not this.
    recent: OnceLock<Box<Recent>>,
}

/// The windows of [`InstanceStats`]: calls per second and latency.
#[derive(Debug)]
struct Recent {
    rate: [RateSlot; RATE_WINDOW_SECS as usize],
    latency: [Histogram; 2],
}

impl Recent {
    fn new() -> Box<Self> {
        Box::new(Recent {
            rate: std::array::from_fn(|_| RateSlot::default()),
            latency: std::array::from_fn(|_| Histogram::default()),
        })
    }
}

impl Default for InstanceStats {
    fn default() -> Self {
        InstanceStats::starting_at(now())
    }
}

/// What [`InstanceStats::snapshot`] reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallStats {
    /// Calls that ended, however they ended.
    pub finished: u64,
    /// Calls that ended with a status other than OK (client cancellations and
    /// deadlines included).
    pub failed: u64,
    /// Calls finished per second over the last [`RATE_WINDOW_SECS`] seconds
    /// (or since the instance registered, when that is more recent).
    pub calls_per_second: f64,
    /// The calls the latency percentiles are computed from.
    pub latency_samples: u64,
    /// The median call duration (from `Start` to the end of the call), as
    /// its bucket's upper bound; `None` without samples.
    pub latency_p50: Option<Duration>,
    /// The 99th percentile call duration, likewise.
    pub latency_p99: Option<Duration>,
}

impl InstanceStats {
    fn starting_at(since: Duration) -> Self {
        InstanceStats {
            since,
            finished: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            recent: OnceLock::new(),
        }
    }

    /// Records a call that ended now after `elapsed`, `ok` or not.
    pub(crate) fn record(&self, ok: bool, elapsed: Duration) {
        self.record_at(now(), ok, elapsed);
    }

    fn record_at(&self, now: Duration, ok: bool, elapsed: Duration) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let recent = self.recent.get_or_init(Recent::new);
        let second = now.as_secs();
        let slot = &recent.rate[(second % RATE_WINDOW_SECS) as usize];
        if claim(&slot.second, second, || {
            slot.calls.store(0, Ordering::Relaxed)
        }) {
            slot.calls.fetch_add(1, Ordering::Relaxed);
        }
        let window = second / LATENCY_WINDOW_SECS;
        let histogram = &recent.latency[(window % 2) as usize];
        if claim(&histogram.window, window, || histogram.reset()) {
            let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            histogram.counts[bucket(micros)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The statistics as of now.
    pub fn snapshot(&self) -> CallStats {
        self.snapshot_at(now())
    }

    fn snapshot_at(&self, now: Duration) -> CallStats {
        let finished = self.finished.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let Some(windows) = self.recent.get() else {
            // No call yet.
            return CallStats {
                finished,
                failed,
                calls_per_second: 0.0,
                latency_samples: 0,
                latency_p50: None,
                latency_p99: None,
            };
        };
        let second = now.as_secs();
        let recent =
            |tag: u64| tag != RESETTING && tag <= second && second - tag < RATE_WINDOW_SECS;
        let calls: u64 = windows
            .rate
            .iter()
            .filter(|slot| recent(slot.second.load(Ordering::Acquire)))
            .map(|slot| slot.calls.load(Ordering::Relaxed))
            .sum();
        // The slots cover the whole seconds before this one and this one so far.
        let covered =
            Duration::from_secs(RATE_WINDOW_SECS - 1) + (now - Duration::from_secs(second));
        let covered = covered.min(now.saturating_sub(self.since));
        let calls_per_second = if covered.is_zero() {
            0.0
        } else {
            calls as f64 / covered.as_secs_f64()
        };

        let window = second / LATENCY_WINDOW_SECS;
        let mut counts = [0u64; BUCKETS];
        for histogram in &windows.latency {
            let tag = histogram.window.load(Ordering::Acquire);
            if tag != RESETTING && tag <= window && window - tag <= 1 {
                for (sum, count) in counts.iter_mut().zip(&histogram.counts) {
                    *sum += u64::from(count.load(Ordering::Relaxed));
                }
            }
        }
        let samples: u64 = counts.iter().sum();
        CallStats {
            finished,
            failed,
            calls_per_second,
            latency_samples: samples,
            latency_p50: percentile(&counts, samples, 50),
            latency_p99: percentile(&counts, samples, 99),
        }
    }
}

/// The upper bound of the bucket holding the `percent`th percentile.
fn percentile(counts: &[u64; BUCKETS], samples: u64, percent: u64) -> Option<Duration> {
    if samples == 0 {
        return None;
    }
    let rank = (samples * percent).div_ceil(100).max(1);
    let mut seen = 0;
    for (index, count) in counts.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(Duration::from_micros(upper_bound(index)));
        }
    }
    Some(Duration::from_micros(upper_bound(BUCKETS - 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn every_latency_falls_in_a_bucket_whose_bound_is_at_most_a_quarter_above_it() {
        let mut previous = 0;
        for micros in (0..5000).chain([1 << 20, (1 << 28) - 1]) {
            let index = bucket(micros);
            assert!(index >= previous, "buckets grow with the latency");
            previous = index;
            let bound = upper_bound(index);
            assert!(
                bound >= micros,
                "{micros} µs is in bucket {index} ≤ {bound}"
            );
            assert!(
                bound as f64 <= micros as f64 * 1.25 + 1.0,
                "{micros} → {bound}"
            );
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket(1 << 28), BUCKETS - 1);
    }

    #[test]
    fn an_idle_instance_holds_no_windows_until_its_first_call() {
        let stats = InstanceStats::starting_at(secs(0.0));
        assert!(
            std::mem::size_of::<InstanceStats>() <= 48,
            "the windows are not inline"
        );
        assert!(stats.recent.get().is_none());
        let idle = stats.snapshot_at(secs(5.0));
        assert_eq!(
            idle,
            CallStats {
                finished: 0,
                failed: 0,
                calls_per_second: 0.0,
                latency_samples: 0,
                latency_p50: None,
                latency_p99: None,
            }
        );
        assert!(stats.recent.get().is_none(), "a snapshot allocates nothing");
        stats.record_at(secs(5.0), true, Duration::from_micros(100));
        assert!(stats.recent.get().is_some());
        assert_eq!(stats.snapshot_at(secs(5.5)).latency_samples, 1);
    }

    #[test]
    fn totals_count_every_call_and_failures_apart() {
        let stats = InstanceStats::starting_at(secs(0.0));
        for i in 0..7 {
            stats.record_at(secs(1.0), i % 3 != 0, Duration::from_millis(1));
        }
        let snapshot = stats.snapshot_at(secs(1.5));
        assert_eq!((snapshot.finished, snapshot.failed), (7, 3));
    }

    #[test]
    fn the_rate_counts_the_last_ten_seconds_over_the_time_they_cover() {
        let stats = InstanceStats::starting_at(secs(100.0));
        // Young instance: 20 calls in its first two seconds → 10 calls/s.
        for _ in 0..20 {
            stats.record_at(secs(101.5), true, Duration::from_millis(1));
        }
        let young = stats.snapshot_at(secs(102.0));
        assert!((young.calls_per_second - 10.0).abs() < 1e-9, "{young:?}");
        // Later: the same 20 calls, now over a full window of 9.5 s.
        let later = stats.snapshot_at(secs(110.5));
        assert!(
            (later.calls_per_second - 20.0 / 9.5).abs() < 1e-9,
            "{later:?}"
        );
        // Once their second leaves the window they no longer count.
        let gone = stats.snapshot_at(secs(111.0));
        assert_eq!(gone.calls_per_second, 0.0);
        assert_eq!(gone.finished, 20, "the totals keep them");
    }

    #[test]
    fn a_reused_rate_slot_starts_again_from_zero() {
        let stats = InstanceStats::starting_at(secs(0.0));
        stats.record_at(secs(3.2), true, Duration::ZERO);
        stats.record_at(secs(3.7), true, Duration::ZERO);
        // Second 13 reuses second 3's slot.
        stats.record_at(secs(13.1), true, Duration::ZERO);
        let snapshot = stats.snapshot_at(secs(13.5));
        assert!(
            (snapshot.calls_per_second - 1.0 / 9.5).abs() < 1e-9,
            "{snapshot:?}"
        );
    }

    #[test]
    fn percentiles_come_from_the_current_and_previous_windows_only() {
        let stats = InstanceStats::starting_at(secs(0.0));
        for _ in 0..98 {
            stats.record_at(secs(5.0), true, Duration::from_micros(1000));
        }
        for _ in 0..2 {
            stats.record_at(secs(15.0), false, Duration::from_micros(80_000));
        }
        let snapshot = stats.snapshot_at(secs(15.5));
        assert_eq!(snapshot.latency_samples, 100);
        let p50 = snapshot.latency_p50.expect("samples");
        let p99 = snapshot.latency_p99.expect("samples");
        assert!((1000..=1250).contains(&p50.as_micros()), "{p50:?}");
        assert!((80_000..=100_000).contains(&p99.as_micros()), "{p99:?}");
        // Two windows later the first window is gone, and its histogram is
        // reused from zero.
        stats.record_at(secs(25.0), true, Duration::from_micros(10));
        let snapshot = stats.snapshot_at(secs(25.0));
        assert_eq!(snapshot.latency_samples, 3);
        let snapshot = stats.snapshot_at(secs(40.0));
        assert_eq!(snapshot.latency_samples, 0);
        assert_eq!(snapshot.latency_p50, None);
    }

    #[test]
    fn concurrent_calls_are_all_counted() {
        let stats = std::sync::Arc::new(InstanceStats::starting_at(secs(0.0)));
        // The first call of the second resets its slot; the rest only add.
        stats.record_at(secs(2.0), true, Duration::ZERO);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let stats = stats.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        stats.record_at(secs(2.0), i % 2 == 0, Duration::from_micros(i));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no panic");
        }
        let snapshot = stats.snapshot_at(secs(2.5));
        assert_eq!((snapshot.finished, snapshot.failed), (40_001, 20_000));
        // All in one second and one window: none lost to a reset.
        assert_eq!(snapshot.latency_samples, 40_001);
        assert!((snapshot.calls_per_second - 40_001.0 / 2.5).abs() < 1e-6);
    }
}
