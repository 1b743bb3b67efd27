//! The unary, stream and ping-pong scenarios: every target measured in
//! interleaved rounds (the order rotates every round, the first round is a
//! warm-up), so machine noise hits all targets alike.

use std::time::Duration;

use crate::BoxError;
use crate::load::{self, Sample, Workload};
use crate::target::Target;

/// What a row's throughput counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Calls per second.
    Calls,
    /// MiB of payload per second.
    MiB,
    /// Round trips per second.
    RoundTrips,
}

impl Unit {
    /// The unit's label.
    pub fn label(self) -> &'static str {
        match self {
            Unit::Calls => "req/s",
            Unit::MiB => "MiB/s",
            Unit::RoundTrips => "rt/s",
        }
    }
}

/// One target's measurements of one row.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The target's name.
    pub target: String,
    /// Each measured round (warm-up excluded).
    pub rounds: Vec<Sample>,
    /// All measured rounds together.
    pub total: Sample,
}

impl Measured {
    /// The total throughput in `unit`.
    pub fn throughput(&self, unit: Unit) -> f64 {
        throughput(&self.total, unit)
    }

    /// The relative spread of the per-round throughput: (max - min) / mean.
    pub fn spread(&self, unit: Unit) -> f64 {
        let values: Vec<f64> = self.rounds.iter().map(|s| throughput(s, unit)).collect();
        let (min, max) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(*v), hi.max(*v))
            });
        let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
        if values.is_empty() || mean <= 0.0 {
            0.0
        } else {
            (max - min) / mean
        }
    }
}

fn throughput(sample: &Sample, unit: Unit) -> f64 {
    match unit {
        Unit::MiB => sample.mib_per_sec(),
        Unit::Calls | Unit::RoundTrips => sample.ops_per_sec(),
    }
}

/// One line of the result: a scenario at one concurrency, every target.
#[derive(Debug, Clone)]
pub struct Row {
    /// The scenario's name.
    pub scenario: String,
    /// Concurrent workers.
    pub concurrency: usize,
    /// What throughput counts.
    pub unit: Unit,
    /// One entry per target, `direct` first when it ran.
    pub targets: Vec<Measured>,
}

impl Row {
    /// The measurement of `name`, if it ran.
    pub fn target(&self, name: &str) -> Option<&Measured> {
        self.targets.iter().find(|m| m.target == name)
    }
}

/// How long a measurement runs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Rounds, the first being a warm-up.
    pub rounds: u32,
    /// Time per target and round.
    pub duration: Duration,
}

/// Runs `measure(index)` for each of `targets` targets in `rounds` rounds,
/// the order rotating every round (round `r` starts with target `r mod n`);
/// the first round is a warm-up and is dropped. Per target, its measured
/// rounds in order. Prints a dot a round.
pub async fn rotate<T>(
    targets: usize,
    rounds: u32,
    mut measure: impl AsyncFnMut(usize) -> Result<T, BoxError>,
) -> Result<Vec<Vec<T>>, BoxError> {
    let mut measured: Vec<Vec<T>> = (0..targets).map(|_| Vec::new()).collect();
    for round in 0..rounds as usize {
        for k in 0..targets {
            let index = (k + round) % targets;
            let value = measure(index).await?;
            if round > 0 {
                measured[index].push(value);
            }
        }
        eprint!(".");
    }
    Ok(measured)
}

/// Measures `workload` at `concurrency` against every target in
/// `timing.rounds` interleaved rounds of `timing.duration` each.
pub async fn interleaved(
    scenario: &str,
    unit: Unit,
    targets: &[&Target],
    workload: &Workload,
    concurrency: usize,
    timing: Timing,
) -> Result<Row, BoxError> {
    let rounds = rotate(targets.len(), timing.rounds, async |index| {
        load::run(targets[index], workload, concurrency, timing.duration).await
    })
    .await?;
    let measured: Vec<Measured> = targets
        .iter()
        .zip(rounds)
        .map(|(t, rounds)| {
            let mut total = Sample::empty();
            for sample in &rounds {
                total.merge(sample);
                total.elapsed += sample.elapsed;
            }
            Measured {
                target: t.name.clone(),
                rounds,
                total,
            }
        })
        .collect();
    for m in &measured {
        if let Some(error) = &m.total.first_error {
            eprintln!(
                "\nwarning: {scenario} c={concurrency} on {}: {} failed calls, first: {error}",
                m.target, m.total.errors
            );
        }
    }
    Ok(Row {
        scenario: scenario.to_owned(),
        concurrency,
        unit,
        targets: measured,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rounds_rotate_the_order_and_drop_the_warm_up() {
        let mut order = Vec::new();
        let mut round = 0;
        let measured = rotate(3, 3, async |index| {
            order.push(index);
            round += 1;
            Ok((index, round))
        })
        .await
        .expect("measured");
        assert_eq!(order, [0, 1, 2, 1, 2, 0, 2, 0, 1]);
        // Target 0 ran 1st, 6th and 8th; the first is the warm-up.
        assert_eq!(measured[0], [(0, 6), (0, 8)]);
        assert_eq!(measured[2], [(2, 5), (2, 7)]);
    }
}
