//! Choosing an instance for a call: every rule in one place.
//!
//! [`Balancer::pick`] applies, in order: a pinned instance id (the pin
//! header), an instance that claimed the call's routing key, the label
//! selector (through the snapshot's label index), then the [`Strategy`] among
//! the available candidates, comparing loads by the [`LoadMeasure`].
//! Instances a call already tried are excluded throughout. Every strategy
//! walks its candidates without allocating, so a pick stays cheap with
//! thousands of instances.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng};

use crate::descriptor::Strategy;
use crate::router::instance_budget::InstanceLimit;
use crate::router::registry::{Instance, Snapshot};

/// Which instances a call may go to, from its metadata and request.
#[derive(Debug, Default, Clone)]
pub(crate) struct Selection<'a> {
    /// Only this instance id (the pin header).
    pub pinned: Option<&'a str>,
    /// Only instances whose labels contain all these pairs.
    pub labels: Vec<(&'a str, &'a str)>,
    /// The routing key: claimed keys and consistent hashing.
    pub key: Option<&'a [u8]>,
    /// Registrations the call already tried (a retry never returns to one).
    pub exclude: &'a [u64],
    /// The called method's tag: only instances that serve it take the call.
    pub method: u32,
    /// The per-instance rate limit: an instance with no room under it is
    /// passed over.
    pub limit: Option<InstanceLimit>,
}

impl Selection<'_> {
    fn excludes(&self, instance: &Instance) -> bool {
        self.exclude.contains(&instance.registration)
            || !instance.serves(self.method)
            || self.over_limit(instance)
    }

    /// Whether `instance` has no room under the per-instance limit.
    fn over_limit(&self, instance: &Instance) -> bool {
        self.limit.is_some_and(|l| !l.has_room(&instance.budget))
    }

    /// Whether an instance of `snapshot` that could otherwise take the call
    /// was passed over for the per-instance limit alone (looked at only once
    /// a pick failed, to say why).
    fn passed_over_for_limit(&self, snapshot: &Snapshot) -> bool {
        self.limit.is_some()
            && snapshot.iter().any(|i| {
                self.pinned.is_none_or(|id| i.id() == id)
                    && !self.exclude.contains(&i.registration)
                    && i.serves(self.method)
                    && i.is_available()
                    && self.labels_match(i)
                    && self.over_limit(i)
            })
    }

    fn labels_match(&self, instance: &Instance) -> bool {
        self.labels
            .iter()
            .all(|(k, v)| instance.info().labels.get(*k).map(String::as_str) == Some(*v))
    }
}

/// Why no instance was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PickError {
    /// No instance of the service is registered.
    NoInstances,
    /// Instances are registered but none can take a call now (draining, not
    /// serving, at their concurrency limit or congested).
    NoneAvailable,
    /// The pinned instance is registered but cannot take this call: it is
    /// draining, not serving, at its limit, congested, or already failed it.
    PinnedUnavailable(String),
    /// The pinned instance is not registered.
    PinnedNotFound(String),
    /// No registered instance matches the label selector.
    NoLabelMatch,
    /// Every instance that could take the call is over its per-instance
    /// rate limit (of this many calls per second).
    OverInstanceLimit(u32),
}

/// What power of two choices compares: the load of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadMeasure {
    /// Calls answered with one message (unary and client-streaming) in
    /// flight. Server and bidi streams are left out: they are often
    /// long-lived and idle, and counting them would starve an instance that
    /// holds a few open streams of every other call.
    #[default]
    UnaryOutstanding,
    /// Every call in flight, streams included.
    Outstanding,
}

impl LoadMeasure {
    /// The load of `instance` by this measure.
    pub fn of(self, instance: &Instance) -> u32 {
        match self {
            LoadMeasure::UnaryOutstanding => instance.unary_outstanding(),
            LoadMeasure::Outstanding => instance.outstanding(),
        }
    }
}

enum RngSource {
    Thread,
    Seeded(Mutex<SmallRng>),
}

fn strategy_code(strategy: Strategy) -> u8 {
    match strategy {
        Strategy::RoundRobin => 0,
        Strategy::PowerOfTwoChoices => 1,
        Strategy::Weighted => 2,
        Strategy::ConsistentHash => 3,
    }
}

/// Picks instances with one strategy.
pub(crate) struct Balancer {
    strategy: AtomicU8,
    load: LoadMeasure,
    next: AtomicUsize,
    rng: RngSource,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("strategy", &self.strategy())
            .finish_non_exhaustive()
    }
}

impl Balancer {
    /// A balancer using the thread-local random generator.
    pub(crate) fn new(strategy: Strategy) -> Self {
        Balancer {
            strategy: AtomicU8::new(strategy_code(strategy)),
            load: LoadMeasure::default(),
            next: AtomicUsize::new(0),
            rng: RngSource::Thread,
        }
    }

    /// The same balancer comparing loads by `load` (power of two choices).
    pub(crate) fn with_load(mut self, load: LoadMeasure) -> Self {
        self.load = load;
        self
    }

    /// A balancer with a seeded generator, for deterministic tests.
    pub(crate) fn seeded(strategy: Strategy, seed: u64) -> Self {
        Balancer {
            strategy: AtomicU8::new(strategy_code(strategy)),
            load: LoadMeasure::default(),
            next: AtomicUsize::new(0),
            rng: RngSource::Seeded(Mutex::new(SmallRng::seed_from_u64(seed))),
        }
    }

    /// The strategy.
    pub(crate) fn strategy(&self) -> Strategy {
        match self.strategy.load(Ordering::Relaxed) {
            0 => Strategy::RoundRobin,
            1 => Strategy::PowerOfTwoChoices,
            2 => Strategy::Weighted,
            _ => Strategy::ConsistentHash,
        }
    }

    /// Switches the strategy; calls picked from now on use it.
    pub(crate) fn set_strategy(&self, strategy: Strategy) {
        self.strategy
            .store(strategy_code(strategy), Ordering::Relaxed);
    }

    fn random_below(&self, n: usize) -> usize {
        match &self.rng {
            RngSource::Thread => rand::rng().random_range(0..n),
            RngSource::Seeded(rng) => rng
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .random_range(0..n),
        }
    }

    fn random_unit(&self) -> f64 {
        match &self.rng {
            RngSource::Thread => rand::rng().random::<f64>(),
            RngSource::Seeded(rng) => rng.lock().unwrap_or_else(|e| e.into_inner()).random(),
        }
    }

    /// Picks an instance of `snapshot` for a call: the pinned instance, else
    /// the one that claimed the routing key (while available and matching the
    /// labels), else the strategy's choice among the available instances that
    /// match the labels. Instances in `selection.exclude`, and those with no
    /// room under `selection.limit`, are never picked; when the limit alone
    /// left none, the error says so. The caller charges the instance it
    /// uses ([`InstanceLimit::charge`]).
    pub(crate) fn pick(
        &self,
        snapshot: &Snapshot,
        selection: &Selection<'_>,
    ) -> Result<Arc<Instance>, PickError> {
        match self.pick_among(snapshot, selection) {
            Err(PickError::NoneAvailable | PickError::PinnedUnavailable(_))
                if selection.passed_over_for_limit(snapshot) =>
            {
                let per_second = selection.limit.map_or(0, |l| l.per_second);
                Err(PickError::OverInstanceLimit(per_second))
            }
            picked => picked,
        }
    }

    fn pick_among(
        &self,
        snapshot: &Snapshot,
        selection: &Selection<'_>,
    ) -> Result<Arc<Instance>, PickError> {
        if snapshot.is_empty() {
            return Err(PickError::NoInstances);
        }
        if let Some(id) = selection.pinned {
            let instance = snapshot
                .by_id(id)
                .ok_or_else(|| PickError::PinnedNotFound(id.to_owned()))?;
            return if instance.is_available() && !selection.excludes(instance) {
                Ok(instance.clone())
            } else {
                Err(PickError::PinnedUnavailable(id.to_owned()))
            };
        }
        if let Some(owner) = selection
            .key
            .and_then(|key| std::str::from_utf8(key).ok())
            .and_then(|key| snapshot.by_routing_key(key))
            .filter(|owner| {
                !selection.excludes(owner) && owner.is_available() && selection.labels_match(owner)
            })
        {
            return Ok(owner.clone());
        }
        if selection.labels.is_empty() {
            return self.choose(snapshot, selection);
        }
        let candidates = snapshot.with_labels(&selection.labels);
        if candidates.is_empty() {
            return Err(PickError::NoLabelMatch);
        }
        self.choose(&candidates, selection)
    }

    /// The strategy's choice among `candidates` (already narrowed to the
    /// call's labels) that are available and not excluded.
    fn choose(
        &self,
        candidates: &[Arc<Instance>],
        selection: &Selection<'_>,
    ) -> Result<Arc<Instance>, PickError> {
        let available = |i: &Instance| !selection.excludes(i) && i.is_available();
        let picked = match (self.strategy(), selection.key) {
            (Strategy::RoundRobin, _) => self.round_robin(candidates, &available),
            (Strategy::Weighted, _) => self.weighted(candidates, &available),
            (Strategy::ConsistentHash, Some(key)) => rendezvous(candidates, key, &available),
            (Strategy::PowerOfTwoChoices, _) | (Strategy::ConsistentHash, None) => {
                self.power_of_two(candidates, &available)
            }
        };
        picked.ok_or(PickError::NoneAvailable)
    }

    fn round_robin(
        &self,
        instances: &[Arc<Instance>],
        ok: &dyn Fn(&Instance) -> bool,
    ) -> Option<Arc<Instance>> {
        let n = instances.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| &instances[(start + k) % n])
            .find(|i| ok(i))
            .cloned()
    }

    fn weighted(
        &self,
        instances: &[Arc<Instance>],
        ok: &dyn Fn(&Instance) -> bool,
    ) -> Option<Arc<Instance>> {
        let total: u64 = instances
            .iter()
            .filter(|i| ok(i))
            .map(|i| u64::from(i.info().weight.max(1)))
            .sum();
        if total == 0 {
            return None;
        }
        let mut point = (self.random_unit() * total as f64) as u64;
        for instance in instances.iter().filter(|i| ok(i)) {
            let w = u64::from(instance.info().weight.max(1));
            if point < w {
                return Some(instance.clone());
            }
            point -= w;
        }
        instances.iter().rev().find(|i| ok(i)).cloned()
    }

    fn power_of_two(
        &self,
        instances: &[Arc<Instance>],
        ok: &dyn Fn(&Instance) -> bool,
    ) -> Option<Arc<Instance>> {
        let n = instances.len();
        // Sample a few times; with most instances available this finds two at
        // once. Otherwise fall back to a scan.
        let mut first: Option<&Arc<Instance>> = None;
        for _ in 0..4 {
            let candidate = &instances[self.random_below(n)];
            if !ok(candidate) {
                continue;
            }
            match first {
                None => first = Some(candidate),
                Some(f) if f.registration == candidate.registration && n > 1 => continue,
                Some(f) => {
                    let load = |i: &Instance| self.load.of(i);
                    return Some(if load(candidate) < load(f) {
                        candidate.clone()
                    } else {
                        f.clone()
                    });
                }
            }
        }
        if let Some(f) = first
            && n == 1
        {
            return Some(f.clone());
        }
        // Scan: least outstanding among the available, starting at a random
        // point so ties spread.
        let start = self.random_below(n);
        (0..n)
            .map(|k| &instances[(start + k) % n])
            .filter(|i| ok(i))
            .min_by_key(|i| self.load.of(i))
            .cloned()
    }
}

/// Rendezvous (highest random weight) hashing: each key goes to the instance
/// with the highest hash of (key, instance id). Removing an instance moves only
/// the keys it held.
fn rendezvous(
    instances: &[Arc<Instance>],
    key: &[u8],
    ok: &dyn Fn(&Instance) -> bool,
) -> Option<Arc<Instance>> {
    let key_hash = fnv1a(key, FNV_OFFSET);
    instances
        .iter()
        .filter(|i| ok(i))
        .max_by_key(|i| mix(fnv1a(i.id().as_bytes(), key_hash)))
        .cloned()
}

pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

pub(crate) fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64's finaliser: spreads FNV's weak low bits.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::registry::InstanceInfo;
    use std::collections::HashMap;
    use std::sync::atomic::Ordering;

    fn instance(
        registration: u64,
        id: &str,
        weight: u32,
        labels: &[(&str, &str)],
    ) -> Arc<Instance> {
        registered(registration, id, weight, labels, vec![])
    }

    fn registered(
        registration: u64,
        id: &str,
        weight: u32,
        labels: &[(&str, &str)],
        routing_keys: Vec<String>,
    ) -> Arc<Instance> {
        let (out, _) = crate::router::outbound::Outbox::new(1 << 20);
        Arc::new(Instance::new(
            registration,
            InstanceInfo {
                id: id.to_owned(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                weight,
                max_concurrent_calls: 0,
                routing_keys,
                ..InstanceInfo::default()
            },
            out,
            1024,
            1024,
            2048,
        ))
    }

    fn fleet(n: usize) -> Vec<Arc<Instance>> {
        (0..n)
            .map(|i| instance(i as u64 + 1, &format!("i{i}"), 1, &[]))
            .collect()
    }

    fn snap(instances: &[Arc<Instance>]) -> Snapshot {
        Snapshot::new(instances.to_vec())
    }

    fn counts(
        balancer: &Balancer,
        instances: &[Arc<Instance>],
        calls: usize,
    ) -> HashMap<String, usize> {
        let snapshot = snap(instances);
        let mut counts = HashMap::new();
        for _ in 0..calls {
            let picked = balancer
                .pick(&snapshot, &Selection::default())
                .expect("an instance");
            *counts.entry(picked.id().to_owned()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn round_robin_spreads_calls_within_one() {
        let instances = fleet(7);
        let counts = counts(&Balancer::seeded(Strategy::RoundRobin, 1), &instances, 1000);
        let (min, max) = (
            counts.values().min().copied().unwrap_or(0),
            counts.values().max().copied().unwrap_or(0),
        );
        assert_eq!(counts.len(), 7);
        assert!(max - min <= 1, "{counts:?}");
    }

    #[test]
    fn weighted_three_to_one_holds_within_five_percent() {
        let instances = vec![instance(1, "heavy", 3, &[]), instance(2, "light", 1, &[])];
        let counts = counts(&Balancer::seeded(Strategy::Weighted, 7), &instances, 10_000);
        let heavy = counts["heavy"] as f64 / 10_000.0;
        assert!((heavy - 0.75).abs() < 0.05 * 0.75, "heavy share {heavy}");
    }

    #[test]
    fn power_of_two_choices_avoids_the_busiest_instance() {
        let instances = fleet(3);
        instances[0].outstanding.store(50, Ordering::Relaxed);
        instances[0].unary_outstanding.store(50, Ordering::Relaxed);
        let counts = counts(
            &Balancer::seeded(Strategy::PowerOfTwoChoices, 3),
            &instances,
            3000,
        );
        let busy = counts.get("i0").copied().unwrap_or(0);
        assert!(busy < 300, "busy instance got {busy} of 3000: {counts:?}");
    }

    #[test]
    fn consistent_hashing_keeps_keys_and_moves_about_a_tenth_on_removal() {
        let instances = fleet(10);
        let balancer = Balancer::seeded(Strategy::ConsistentHash, 0);
        let pick = |instances: &[Arc<Instance>], key: &str| {
            let selection = Selection {
                key: Some(key.as_bytes()),
                ..Selection::default()
            };
            balancer
                .pick(&snap(instances), &selection)
                .expect("an instance")
                .id()
                .to_owned()
        };
        let keys: Vec<String> = (0..10_000).map(|k| format!("user-{k}")).collect();
        let before: Vec<String> = keys.iter().map(|k| pick(&instances, k)).collect();
        for (key, owner) in keys.iter().zip(&before).take(100) {
            assert_eq!(&pick(&instances, key), owner, "same key, same instance");
        }
        let fewer: Vec<Arc<Instance>> = instances
            .iter()
            .filter(|i| i.id() != "i3")
            .cloned()
            .collect();
        let moved = keys
            .iter()
            .zip(&before)
            .filter(|(key, owner)| &pick(&fewer, key) != *owner)
            .count();
        let held_by_removed = before.iter().filter(|o| *o == "i3").count();
        assert_eq!(
            moved, held_by_removed,
            "only the removed instance's keys move"
        );
        assert!(moved < 1500, "{moved} of 10000 keys moved");
        assert!(
            moved > 500,
            "{moved} of 10000 keys moved: the spread is uneven"
        );
    }

    #[test]
    fn pins_and_label_selectors_choose_exactly() {
        let instances = vec![
            instance(1, "a", 1, &[("tenant", "x")]),
            instance(2, "b", 1, &[("tenant", "y"), ("canary", "true")]),
            instance(3, "c", 1, &[("tenant", "y")]),
        ];
        let balancer = Balancer::seeded(Strategy::RoundRobin, 0);
        let instances = snap(&instances);
        for _ in 0..10 {
            let pinned = Selection {
                pinned: Some("c"),
                ..Selection::default()
            };
            assert_eq!(balancer.pick(&instances, &pinned).expect("c").id(), "c");
            let canary = Selection {
                labels: vec![("tenant", "y"), ("canary", "true")],
                ..Selection::default()
            };
            assert_eq!(balancer.pick(&instances, &canary).expect("b").id(), "b");
        }
        let unknown = Selection {
            pinned: Some("zz"),
            ..Selection::default()
        };
        assert_eq!(
            balancer
                .pick(&instances, &unknown)
                .map(|i| i.id().to_owned()),
            Err(PickError::PinnedNotFound("zz".into()))
        );
        let nobody = Selection {
            labels: vec![("tenant", "z")],
            ..Selection::default()
        };
        assert_eq!(
            balancer
                .pick(&instances, &nobody)
                .map(|i| i.id().to_owned()),
            Err(PickError::NoLabelMatch)
        );
    }

    #[test]
    fn draining_and_not_serving_instances_get_no_calls() {
        let instances = fleet(3);
        instances[0].set_draining();
        instances[1].set_serving(false);
        for strategy in [
            Strategy::RoundRobin,
            Strategy::PowerOfTwoChoices,
            Strategy::Weighted,
            Strategy::ConsistentHash,
        ] {
            let counts = counts(&Balancer::seeded(strategy, 5), &instances, 200);
            assert_eq!(counts.keys().collect::<Vec<_>>(), ["i2"], "{strategy:?}");
        }
        instances[2].set_draining();
        assert_eq!(
            Balancer::new(Strategy::RoundRobin)
                .pick(&snap(&instances), &Selection::default())
                .map(|i| i.id().to_owned()),
            Err(PickError::NoneAvailable)
        );
    }

    fn claiming(registration: u64, id: &str, key: &str, labels: &[(&str, &str)]) -> Arc<Instance> {
        registered(registration, id, 1, labels, vec![key.to_owned()])
    }

    #[test]
    fn a_claimed_routing_key_wins_over_the_strategy_until_its_owner_is_excluded() {
        let instances = vec![
            instance(1, "a", 1, &[]),
            claiming(2, "owner", "tenant-7", &[("zone", "eu")]),
            instance(3, "c", 1, &[]),
        ];
        let snapshot = snap(&instances);
        let balancer = Balancer::seeded(Strategy::RoundRobin, 0);
        let keyed = Selection {
            key: Some(b"tenant-7"),
            ..Selection::default()
        };
        for _ in 0..5 {
            assert_eq!(
                balancer.pick(&snapshot, &keyed).expect("owner").id(),
                "owner"
            );
        }
        // A selector the owner does not match, or a retry after it failed,
        // falls through to the strategy.
        let elsewhere = Selection {
            labels: vec![("zone", "us")],
            ..keyed.clone()
        };
        assert_eq!(
            balancer
                .pick(&snapshot, &elsewhere)
                .map(|i| i.id().to_owned()),
            Err(PickError::NoLabelMatch)
        );
        let retried = Selection {
            exclude: &[2],
            ..keyed.clone()
        };
        for _ in 0..5 {
            assert_ne!(
                balancer.pick(&snapshot, &retried).expect("another").id(),
                "owner"
            );
        }
    }

    #[test]
    fn a_retry_never_returns_to_any_instance_it_tried() {
        let instances = fleet(3);
        let snapshot = snap(&instances);
        for strategy in [
            Strategy::RoundRobin,
            Strategy::PowerOfTwoChoices,
            Strategy::Weighted,
            Strategy::ConsistentHash,
        ] {
            let balancer = Balancer::seeded(strategy, 11);
            let third = Selection {
                key: Some(b"k"),
                exclude: &[1, 2],
                ..Selection::default()
            };
            for _ in 0..20 {
                assert_eq!(
                    balancer.pick(&snapshot, &third).expect("the last one").id(),
                    "i2",
                    "{strategy:?}"
                );
            }
            let none_left = Selection {
                exclude: &[1, 2, 3],
                ..Selection::default()
            };
            assert_eq!(
                balancer
                    .pick(&snapshot, &none_left)
                    .map(|i| i.id().to_owned()),
                Err(PickError::NoneAvailable),
                "{strategy:?}"
            );
        }
    }

    #[test]
    fn instances_over_their_rate_limit_are_filtered_out_by_every_strategy() {
        use crate::router::limit::RateLimit;
        use std::num::NonZeroU32;
        let one = NonZeroU32::new(1).expect("non-zero");
        let limit = InstanceLimit::new(RateLimit::per_second(one), 1_000);
        let with_limit = Selection {
            limit: Some(limit),
            ..Selection::default()
        };
        for strategy in [
            Strategy::RoundRobin,
            Strategy::Weighted,
            Strategy::PowerOfTwoChoices,
            Strategy::ConsistentHash,
        ] {
            let instances = fleet(3);
            let snapshot = snap(&instances);
            let balancer = Balancer::seeded(strategy, 7);
            let mut seen = Vec::new();
            for _ in 0..3 {
                let picked = balancer.pick(&snapshot, &with_limit).expect("room left");
                limit.charge(&picked.budget);
                seen.push(picked.id().to_owned());
            }
            seen.sort();
            assert_eq!(seen, ["i0", "i1", "i2"], "{strategy:?}: each once");
            assert_eq!(
                balancer
                    .pick(&snapshot, &with_limit)
                    .map(|i| i.id().to_owned()),
                Err(PickError::OverInstanceLimit(1)),
                "{strategy:?}"
            );
            let pinned = Selection {
                pinned: Some("i1"),
                ..with_limit.clone()
            };
            assert_eq!(
                balancer.pick(&snapshot, &pinned).map(|i| i.id().to_owned()),
                Err(PickError::OverInstanceLimit(1)),
                "{strategy:?}: a pinned instance over its limit says so"
            );
        }
    }

    #[test]
    fn looking_at_two_instances_charges_neither() {
        use crate::router::limit::RateLimit;
        use std::num::NonZeroU32;
        let one = NonZeroU32::new(1).expect("non-zero");
        let limit = InstanceLimit::new(RateLimit::per_second(one), 1_000);
        let instances = fleet(2);
        let snapshot = snap(&instances);
        let balancer = Balancer::seeded(Strategy::PowerOfTwoChoices, 3);
        let with_limit = Selection {
            limit: Some(limit),
            ..Selection::default()
        };
        for _ in 0..10 {
            balancer
                .pick(&snapshot, &with_limit)
                .expect("nothing was charged");
        }
        assert!(instances.iter().all(|i| limit.has_room(&i.budget)));
    }

    #[test]
    fn a_pinned_instance_that_was_tried_or_is_unavailable_is_not_picked() {
        let instances = fleet(2);
        let snapshot = snap(&instances);
        let balancer = Balancer::seeded(Strategy::RoundRobin, 0);
        let pinned = Selection {
            pinned: Some("i0"),
            exclude: &[1],
            ..Selection::default()
        };
        assert_eq!(
            balancer.pick(&snapshot, &pinned).map(|i| i.id().to_owned()),
            Err(PickError::PinnedUnavailable("i0".into()))
        );
        instances[1].set_draining();
        let draining = Selection {
            pinned: Some("i1"),
            ..Selection::default()
        };
        assert_eq!(
            balancer
                .pick(&snapshot, &draining)
                .map(|i| i.id().to_owned()),
            Err(PickError::PinnedUnavailable("i1".into()))
        );
    }

    #[test]
    fn labels_narrow_through_the_index_then_the_strategy_spreads() {
        let instances = vec![
            instance(1, "a", 1, &[("zone", "eu")]),
            instance(2, "b", 1, &[("zone", "us")]),
            instance(3, "c", 1, &[("zone", "eu")]),
        ];
        let snapshot = snap(&instances);
        let balancer = Balancer::seeded(Strategy::RoundRobin, 0);
        let eu = Selection {
            labels: vec![("zone", "eu")],
            ..Selection::default()
        };
        let mut seen = HashMap::new();
        for _ in 0..100 {
            *seen
                .entry(balancer.pick(&snapshot, &eu).expect("eu").id().to_owned())
                .or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen["a"], 50);
        assert_eq!(seen["c"], 50);
    }
}
