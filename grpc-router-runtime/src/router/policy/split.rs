//! Traffic splits for canaries and A/B tests: a service's calls divided by
//! weight between sets of instance labels (95 % `version=v1`, 5 %
//! `version=v2`).
//!
//! A call with a routing key always lands in the same split (the key's hash
//! picks it), so a user stays on one version; other calls are split at
//! random. An explicit `x-router-select` or pin header bypasses the split.
//! When the chosen split has no instance that can take the call, the others
//! are tried in order of weight, so a canary with no instance left never
//! fails calls.

use crate::router::balance::{FNV_OFFSET, fnv1a, mix};

/// One share of a split: the instances carrying all of `labels` take
/// `weight` parts of the calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficSplit {
    /// Label pairs an instance must carry, e.g. `[("version", "v2")]`.
    pub labels: Vec<(String, String)>,
    /// Its share, relative to the others' weights.
    pub weight: u32,
}

/// A service's traffic split; empty means no split.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrafficSplits {
    splits: Vec<TrafficSplit>,
    total: u64,
}

impl TrafficSplits {
    /// The split over `splits` (shares of weight 0 take no call unless the
    /// others have no instance).
    pub fn new(splits: Vec<TrafficSplit>) -> Self {
        let total = splits.iter().map(|s| u64::from(s.weight)).sum();
        TrafficSplits { splits, total }
    }

    /// Whether there is no split.
    pub fn is_empty(&self) -> bool {
        self.splits.is_empty()
    }

    /// The shares.
    pub fn splits(&self) -> &[TrafficSplit] {
        &self.splits
    }

    /// The order in which a call tries the shares: first the one its routing
    /// key (or, without one, `random`) falls in, then the rest by weight.
    pub(crate) fn order(&self, key: Option<&[u8]>, random: u64) -> Vec<&TrafficSplit> {
        let mut order: Vec<&TrafficSplit> = self.splits.iter().collect();
        if self.total == 0 {
            return order;
        }
        let point = match key {
            Some(key) => mix(fnv1a(key, FNV_OFFSET)),
            None => random,
        } % self.total;
        let mut upto = 0;
        let first = self
            .splits
            .iter()
            .position(|s| {
                upto += u64::from(s.weight);
                point < upto
            })
            .unwrap_or(0);
        let chosen = order.remove(first);
        order.sort_by_key(|s| std::cmp::Reverse(s.weight));
        order.insert(0, chosen);
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary() -> TrafficSplits {
        TrafficSplits::new(vec![
            TrafficSplit {
                labels: vec![("version".into(), "v1".into())],
                weight: 95,
            },
            TrafficSplit {
                labels: vec![("version".into(), "v2".into())],
                weight: 5,
            },
        ])
    }

    fn first_version(order: &[&TrafficSplit]) -> String {
        order[0].labels[0].1.clone()
    }

    #[test]
    fn random_calls_divide_by_weight() {
        let splits = canary();
        let v2 = (0..100_000u64)
            .filter(|i| first_version(&splits.order(None, mix(*i))) == "v2")
            .count();
        assert!((4_500..=5_500).contains(&v2), "{v2} of 100000 to v2");
    }

    #[test]
    fn a_routing_key_always_lands_in_the_same_split_and_keys_divide_by_weight() {
        let splits = canary();
        let mut v2 = 0;
        for user in 0..20_000 {
            let key = format!("user-{user}");
            let first = first_version(&splits.order(Some(key.as_bytes()), 1));
            for random in [2, 99, 12345] {
                assert_eq!(
                    first_version(&splits.order(Some(key.as_bytes()), random)),
                    first,
                    "sticky"
                );
            }
            v2 += usize::from(first == "v2");
        }
        assert!((800..=1_200).contains(&v2), "{v2} of 20000 keys to v2");
    }

    #[test]
    fn the_other_shares_follow_the_chosen_one_by_weight() {
        let splits = TrafficSplits::new(vec![
            TrafficSplit {
                labels: vec![("v".into(), "a".into())],
                weight: 1,
            },
            TrafficSplit {
                labels: vec![("v".into(), "b".into())],
                weight: 10,
            },
            TrafficSplit {
                labels: vec![("v".into(), "c".into())],
                weight: 5,
            },
        ]);
        let order: Vec<String> = splits
            .order(None, 0)
            .iter()
            .map(|s| s.labels[0].1.clone())
            .collect();
        assert_eq!(order, ["a", "b", "c"]);
        let order: Vec<String> = splits
            .order(None, 15)
            .iter()
            .map(|s| s.labels[0].1.clone())
            .collect();
        assert_eq!(order, ["c", "b", "a"]);
        assert!(TrafficSplits::default().is_empty());
    }
}
