//! The unary, stream and ping-pong scenarios: every target measured in
//! interleaved rounds (the order rotates every round, the first round is a
//! warm-up), so machine noise hits all targets alike.

use std::time::Duration;

use crate::BoxError;
use crate::load::{self, Header, Sample, Workload};
use crate::servers::Target;

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

/// Measures `workload` at `concurrency` against every target in
/// `timing.rounds` interleaved rounds of `timing.duration` each.
pub async fn interleaved(
    scenario: &str,
    unit: Unit,
    targets: &[&Target],
    workload: &Workload,
    concurrency: usize,
    timing: Timing,
    header: Option<&Header>,
) -> Result<Row, BoxError> {
    let Timing { rounds, duration } = timing;
    let mut measured: Vec<Measured> = targets
        .iter()
        .map(|t| Measured {
            target: t.name.clone(),
            rounds: Vec::new(),
            total: Sample::empty(),
        })
        .collect();
    for round in 0..rounds {
        for k in 0..targets.len() {
            let index = (k + round as usize) % targets.len();
            let sample = load::run(targets[index], workload, concurrency, duration, header).await?;
            if round > 0 {
                let m = &mut measured[index];
                m.total.merge(&sample);
                m.total.elapsed += sample.elapsed;
                m.rounds.push(sample);
            }
        }
        eprint!(".");
    }
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
