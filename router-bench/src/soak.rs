//! `router-soak soak`: the router as a child process, instances as processes
//! of their own joining, draining and being killed on a schedule, mixed load
//! from tonic clients in this process, and the router's RSS sampled
//! throughout. Fails (non-zero exit) when a call hung or the RSS kept growing
//! after warm-up.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::BoxError;
use crate::apps::sibling;
use crate::churn::{ChurnCounts, Fleet};
use crate::report::{Format, Table};
use crate::router_child::RouterChild;
use crate::soak_load::{self, Failure, Kind, LoadShape, Outcome, Tally, TallyInner};
use crate::target::Target;

/// The shortest run whose RSS trend is judged: in a shorter one (the CI
/// smoke run) the warm-up is not over, so only hung calls fail it.
pub const JUDGED_RUN: Duration = Duration::from_secs(300);

/// A unary UNAVAILABLE counts as caused by a SIGKILL when the kill happened
/// while it ran, or this close to it.
const KILL_SLACK: Duration = Duration::from_millis(500);

/// What `router-soak soak` does.
#[derive(Debug, Clone)]
pub struct SoakSettings {
    /// How long the load runs.
    pub duration: Duration,
    /// Instances kept registered (one more while one is replaced).
    pub instances: usize,
    /// Time between fleet changes (a join, then a drain or a kill).
    pub churn_every: Duration,
    /// Time between RSS samples.
    pub sample_every: Duration,
    /// Unary calls per second.
    pub unary_rate: f64,
    /// Workers per streaming kind.
    pub stream_workers: usize,
    /// Client connections.
    pub connections: usize,
    /// Growth of the RSS over the last two thirds of the run that fails it,
    /// in KiB.
    pub max_growth_kib: u64,
    /// The router binary (a build of this package, or `grpc-router`); `None`
    /// is this one.
    pub router_exe: Option<PathBuf>,
    /// The example `instance` binary; `None` looks next to this one.
    pub instance_exe: Option<PathBuf>,
    /// Output format.
    pub format: Format,
}

impl SoakSettings {
    /// The churn and sampling intervals for a run of `duration`: every 30 s
    /// and 10 s, shorter for short runs (so a 20 s smoke run still churns
    /// and samples).
    pub fn intervals(duration: Duration) -> (Duration, Duration) {
        let churn = (duration / 6).clamp(Duration::from_secs(3), Duration::from_secs(30));
        let sample = (duration / 20).clamp(Duration::from_millis(500), Duration::from_secs(10));
        (churn, sample)
    }
}

/// One RSS sample.
#[derive(Debug, Clone, Copy)]
pub struct RssSample {
    /// Seconds since the load started.
    pub at_secs: f64,
    /// The router's RSS, KiB.
    pub rss_kib: u64,
}

/// What the RSS did.
#[derive(Debug, Clone)]
pub struct RssVerdict {
    /// The first sample (load starting).
    pub start_kib: u64,
    /// The first sample after warm-up (a third of the run).
    pub after_warm_up_kib: u64,
    /// The highest sample.
    pub max_kib: u64,
    /// The last sample while the load ran.
    pub end_kib: u64,
    /// Least-squares slope over the samples after warm-up, KiB per minute.
    pub slope_kib_per_min: f64,
    /// The slope times the time it covers: growth the trend explains, KiB.
    pub trend_growth_kib: f64,
    /// Whether that growth stays under the limit.
    pub flat: bool,
}

/// Judges the samples: warm-up is the first third of the run.
pub fn rss_verdict(samples: &[RssSample], max_growth_kib: u64) -> Option<RssVerdict> {
    let first = samples.first()?;
    let last = samples.last()?;
    let warm_up_end = first.at_secs + (last.at_secs - first.at_secs) / 3.0;
    let after: Vec<RssSample> = samples
        .iter()
        .copied()
        .filter(|s| s.at_secs >= warm_up_end)
        .collect();
    let after_warm_up = after.first().copied().unwrap_or(*last);
    let (slope_per_sec, span) = slope(&after);
    let trend_growth_kib = slope_per_sec * span;
    Some(RssVerdict {
        start_kib: first.rss_kib,
        after_warm_up_kib: after_warm_up.rss_kib,
        max_kib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        end_kib: last.rss_kib,
        slope_kib_per_min: slope_per_sec * 60.0,
        trend_growth_kib,
        flat: trend_growth_kib <= max_growth_kib as f64,
    })
}

/// Least-squares slope (KiB per second) of `samples` and the seconds they
/// span.
fn slope(samples: &[RssSample]) -> (f64, f64) {
    if samples.len() < 2 {
        return (0.0, 0.0);
    }
    let n = samples.len() as f64;
    let mean_t = samples.iter().map(|s| s.at_secs).sum::<f64>() / n;
    let mean_r = samples.iter().map(|s| s.rss_kib as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for s in samples {
        num += (s.at_secs - mean_t) * (s.rss_kib as f64 - mean_r);
        den += (s.at_secs - mean_t).powi(2);
    }
    let span = samples[samples.len() - 1].at_secs - samples[0].at_secs;
    if den > 0.0 {
        (num / den, span)
    } else {
        (0.0, span)
    }
}

/// Everything the soak measured.
#[derive(Debug)]
pub struct SoakReport {
    /// The router child's allocator.
    pub allocator: String,
    /// How long the load ran.
    pub ran: Duration,
    /// RSS samples.
    pub samples: Vec<RssSample>,
    /// RSS once the load stopped and the router released every call.
    pub idle_after_kib: u64,
    /// Calls by kind and outcome.
    pub tally: TallyInner,
    /// What the fleet did.
    pub churn: ChurnCounts,
}

impl SoakReport {
    /// UNAVAILABLE calls of `kind`: those during which (give or take
    /// [`KILL_SLACK`]) an instance was killed, those during which one
    /// drained (from SIGTERM until it exited), and the others.
    pub fn unavailable_split(&self, kind: Kind) -> (u64, u64, u64) {
        let overlaps = |f: &Failure, from: Instant, to: Instant| {
            from <= f.ended + KILL_SLACK && to + KILL_SLACK >= f.started
        };
        let (mut near_kill, mut near_drain, mut elsewhere) = (0, 0, 0);
        for f in self.tally.unavailable.iter().filter(|f| f.kind == kind) {
            if self.churn.kills.iter().any(|&k| overlaps(f, k, k)) {
                near_kill += 1;
            } else if self
                .churn
                .drains
                .iter()
                .any(|&(sent, exited)| overlaps(f, sent, exited))
            {
                near_drain += 1;
            } else {
                elsewhere += 1;
            }
        }
        (near_kill, near_drain, elsewhere)
    }

    /// Calls that hung.
    pub fn hung(&self) -> u64 {
        self.tally.hung.len() as u64
    }
}

/// Runs the soak and prints its report; an error when it failed.
pub async fn run(settings: &SoakSettings) -> Result<(), BoxError> {
    let instance = sibling(settings.instance_exe.as_deref(), "instance")?;
    let child = RouterChild::spawn(settings.router_exe.as_deref(), None).await?;
    let mut fleet = Fleet::start(instance, child.addr, settings.instances).await?;
    let target = Target::connect("routed", child.addr, settings.connections).await?;
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let end = started + settings.duration;
    eprintln!(
        "soak: {:.1} min, router pid {} ({}), {} instances, churn every {:?}, RSS every {:?}",
        settings.duration.as_secs_f64() / 60.0,
        child.pid(),
        child.allocator,
        settings.instances,
        settings.churn_every,
        settings.sample_every
    );
    let shape = LoadShape {
        unary_rate: settings.unary_rate,
        stream_workers: settings.stream_workers,
    };
    let load = tokio::spawn(soak_load::run(target, shape, end, tally.clone()));

    let log = fleet.log.clone();
    let churn_every = settings.churn_every;
    let churner = tokio::spawn(async move {
        let mut step = 0u64;
        loop {
            let next = Instant::now() + churn_every;
            if next >= end {
                break;
            }
            tokio::time::sleep_until(next).await;
            if let Err(e) = fleet.step(step).await {
                eprintln!("soak: fleet step {step} failed: {e}");
            }
            step += 1;
        }
        fleet
    });

    let mut samples = vec![RssSample {
        at_secs: 0.0,
        rss_kib: child.rss_kib()?,
    }];
    let mut next_sample = started;
    loop {
        next_sample += settings.sample_every;
        tokio::time::sleep_until(next_sample.min(end)).await;
        let now = Instant::now();
        let rss_kib = child.rss_kib()?;
        let at_secs = now.duration_since(started).as_secs_f64();
        samples.push(RssSample { at_secs, rss_kib });
        let counts = tally.snapshot();
        let churn = log.snapshot();
        eprintln!(
            "soak: {at_secs:6.0} s  RSS {:7.1} MiB  calls {:8}  hung {}  joined {} drained {} killed {}",
            rss_kib as f64 / 1024.0,
            counts.counts.values().sum::<u64>(),
            counts.hung.len(),
            churn.joined,
            churn.drained + churn.drain_timeouts,
            churn.killed
        );
        if now >= end {
            break;
        }
    }
    let ran = started.elapsed();
    load.await
        .map_err(|e| format!("the soak load failed: {e}"))?;
    let fleet = churner
        .await
        .map_err(|e| format!("the soak fleet failed: {e}"))?;
    child.wait_idle(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_after_kib = child.rss_kib()?;
    let churn = fleet.log.snapshot();
    fleet.stop().await;
    let report = SoakReport {
        allocator: child.allocator.clone(),
        ran,
        samples,
        idle_after_kib,
        tally: tally.snapshot(),
        churn,
    };
    print!("{}", render(settings, &report));
    let verdict = rss_verdict(&report.samples, settings.max_growth_kib);
    let mut failures = Vec::new();
    if report.hung() > 0 {
        failures.push(format!("{} calls hung", report.hung()));
    }
    if let Some(v) = &verdict
        && !v.flat
        && report.ran >= JUDGED_RUN
    {
        failures.push(format!(
            "router RSS grew {:.1} MiB after warm-up (limit {:.1} MiB)",
            v.trend_growth_kib / 1024.0,
            settings.max_growth_kib as f64 / 1024.0
        ));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("soak failed: {}", failures.join("; ")).into())
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// The soak's report tables.
pub fn render(settings: &SoakSettings, report: &SoakReport) -> String {
    let format = settings.format;
    let mut out = crate::report::heading(
        format,
        &format!(
            "Soak: {:.1} min, {} instances churned every {} s, {} unary calls/s + {} workers per streaming kind (router allocator: {})",
            report.ran.as_secs_f64() / 60.0,
            settings.instances,
            settings.churn_every.as_secs_f64(),
            settings.unary_rate,
            settings.stream_workers,
            report.allocator,
        ),
    );
    if let Some(v) = rss_verdict(&report.samples, settings.max_growth_kib) {
        let mut table = Table::new(["router RSS", "MiB"]);
        table.push(vec!["start".into(), mib(v.start_kib)]);
        table.push(vec![
            "after warm-up (1/3 of the run)".into(),
            mib(v.after_warm_up_kib),
        ]);
        table.push(vec!["max".into(), mib(v.max_kib)]);
        table.push(vec!["end (load running)".into(), mib(v.end_kib)]);
        table.push(vec![
            "after the load, 0 calls".into(),
            mib(report.idle_after_kib),
        ]);
        table.push(vec![
            "trend after warm-up (MiB/min)".into(),
            format!("{:+.3}", v.slope_kib_per_min / 1024.0),
        ]);
        let judged = if report.ran >= JUDGED_RUN {
            ""
        } else {
            ", not judged: run under 5 min"
        };
        table.push(vec![
            "flat after warm-up".into(),
            format!(
                "{} (trend {:+.1} MiB, limit {:.1}{judged})",
                if v.flat { "yes" } else { "NO" },
                v.trend_growth_kib / 1024.0,
                settings.max_growth_kib as f64 / 1024.0
            ),
        ]);
        out.push_str(&table.render(format));
        out.push('\n');
        out.push_str(&format!(
            "RSS samples (MiB, every {} s): {}\n\n",
            settings.sample_every.as_secs_f64(),
            report
                .samples
                .iter()
                .map(|s| format!("{:.1}", s.rss_kib as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }

    let outcomes = [
        (Outcome::Ok, "OK"),
        (Outcome::Unavailable, "UNAVAILABLE"),
        (Outcome::DeadlineExceeded, "DEADLINE_EXCEEDED"),
        (Outcome::Cancelled, "CANCELLED"),
        (Outcome::ClientCancel, "client cancel"),
        (Outcome::Other, "other"),
        (Outcome::Hung, "hung"),
    ];
    let mut headers = vec!["calls"];
    headers.extend(outcomes.iter().map(|(_, name)| *name));
    headers.push("total");
    let mut table = Table::new(headers);
    let count = |kind: Option<Kind>, outcome: Outcome| -> u64 {
        report
            .tally
            .counts
            .iter()
            .filter(|((k, o), _)| *o == outcome && kind.is_none_or(|kind| *k == kind))
            .map(|(_, n)| n)
            .sum()
    };
    let kinds = [
        Kind::Unary,
        Kind::ServerStream,
        Kind::ClientStream,
        Kind::Bidi,
    ];
    for kind in kinds.iter().map(|k| Some(*k)).chain([None]) {
        let mut row = vec![kind.map_or("all", Kind::label).to_owned()];
        let mut total = 0;
        for (outcome, _) in outcomes {
            let n = count(kind, outcome);
            total += n;
            row.push(n.to_string());
        }
        row.push(total.to_string());
        table.push(row);
    }
    out.push_str(&table.render(format));

    let churn = &report.churn;
    let mut notes = Vec::new();
    for kind in kinds {
        let (near_kill, near_drain, elsewhere) = report.unavailable_split(kind);
        if near_kill + near_drain + elsewhere > 0 {
            notes.push(format!(
                "{} UNAVAILABLE: {near_kill} while an instance was killed, {near_drain} while one drained, {elsewhere} at other times",
                kind.label()
            ));
        }
    }
    notes.extend([
        format!(
            "instances: {} joined, {} drained cleanly, {} drains timed out, {} killed, {} failed to start; never fewer than {} registered",
            churn.joined, churn.drained, churn.drain_timeouts, churn.killed, churn.start_failures, churn.min_live
        ),
        format!(
            "deadlines: 30% of unary calls carry 2 s, 1% 1 ms; 30% of stream calls 5 s and 10% a deadline they outlive; 10% are cancelled by the client mid-call; hung = not done {} s after the deadline, or {} s without one",
            soak_load::HUNG_MARGIN.as_secs(),
            soak_load::WATCHDOG.as_secs()
        ),
    ]);
    if report.tally.skipped_ticks > 0 {
        notes.push(format!(
            "{} unary ticks skipped (too many calls in flight)",
            report.tally.skipped_ticks
        ));
    }
    for failure in report.tally.hung.iter().take(10) {
        notes.push(format!("hung {}: {}", failure.kind.label(), failure.detail));
    }
    for ((kind, outcome), examples) in &report.tally.examples {
        notes.push(format!(
            "{} {outcome:?}, e.g.: {}",
            kind.label(),
            examples.join(" | ")
        ));
    }
    let bullet = if format == Format::Markdown { "- " } else { "" };
    out.push('\n');
    for note in notes {
        out.push_str(&format!("{bullet}{note}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(values: &[u64]) -> Vec<RssSample> {
        values
            .iter()
            .enumerate()
            .map(|(i, &rss_kib)| RssSample {
                at_secs: i as f64 * 10.0,
                rss_kib,
            })
            .collect()
    }

    #[test]
    fn flat_memory_after_warm_up_passes() {
        let v = rss_verdict(
            &samples(&[6000, 9000, 12000, 12100, 11900, 12050, 12000, 11980, 12020]),
            4096,
        )
        .expect("verdict");
        assert!(v.flat, "{v:?}");
        assert_eq!(v.start_kib, 6000);
        assert_eq!(v.max_kib, 12100);
    }

    #[test]
    fn steady_growth_after_warm_up_fails() {
        let growing: Vec<u64> = (0..30).map(|i| 10_000 + i * 1000).collect();
        let v = rss_verdict(&samples(&growing), 4096).expect("verdict");
        assert!(!v.flat, "{v:?}");
        assert!((v.slope_kib_per_min - 6000.0).abs() < 1.0, "{v:?}");
    }

    #[test]
    fn short_runs_still_churn_and_sample() {
        let (churn, sample) = SoakSettings::intervals(Duration::from_secs(20));
        assert_eq!(churn, Duration::from_secs(20) / 6);
        assert_eq!(sample, Duration::from_secs(1));
        let (churn, sample) = SoakSettings::intervals(Duration::from_secs(1800));
        assert_eq!(churn, Duration::from_secs(30));
        assert_eq!(sample, Duration::from_secs(10));
    }
}
