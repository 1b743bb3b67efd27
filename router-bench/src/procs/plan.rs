//! The comparison runner every `procs` scenario parametrises. A [`Plan`]
//! names the targets (process sets, `direct` first, each with the headers
//! its clients send) and the measurements; [`Plan::connect`] opens the
//! clients and checks every target with one call; [`Plan::measure`] runs
//! each measurement against every target in interleaved rounds (the order
//! rotating each round, the first round a warm-up), sampling the load
//! average before each; [`Results`] holds the figures, the rounds and the
//! failed calls, and renders the tables every scenario prints.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::BoxError;
use crate::load::Workload;
use crate::machine::{Machine, load_average};
use crate::process::TempDir;
use crate::procs::h2load::{self, H2loadRun};
use crate::procs::table::{self, Figures, RoundRatios};
use crate::procs::targets::Running;
use crate::procs::{ProcsSettings, Tool};
use crate::report::{heading, rounds_note};
use crate::scenarios::{Row, Timing, Unit, interleaved, rotate};
use crate::target::Target;

/// A measurement of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measurement {
    /// Unary throughput with h2load (skipped with a note when h2load is not
    /// installed).
    H2load,
    /// Unary throughput with tonic clients, many calls in flight.
    Unary,
    /// Unary latency, one call at a time over one connection.
    Latency,
    /// Concurrent server streams.
    Streams,
    /// Bidi ping-pong, one message in flight on one stream.
    PingPong,
}

impl Measurement {
    /// Every measurement, in the order they run.
    pub const ALL: [Measurement; 5] = [
        Measurement::H2load,
        Measurement::Unary,
        Measurement::Latency,
        Measurement::Streams,
        Measurement::PingPong,
    ];

    /// The measurement's tonic side: its row name, unit, workload,
    /// concurrency and whether it uses the single connection; `None` for
    /// h2load.
    fn tonic(self, s: &ProcsSettings) -> Option<(&'static str, Unit, Workload, usize, bool)> {
        let unary = || Workload::Unary {
            payload: vec![0x5a; s.payload_size],
        };
        Some(match self {
            Measurement::H2load => return None,
            Measurement::Unary => ("unary", Unit::Calls, unary(), s.unary_concurrency, false),
            Measurement::Latency => ("latency", Unit::Calls, unary(), 1, true),
            Measurement::Streams => (
                "streams",
                Unit::MiB,
                Workload::Stream {
                    count: s.stream_count,
                    size: s.stream_message_size,
                },
                s.stream_calls,
                false,
            ),
            Measurement::PingPong => ("pingpong", Unit::RoundTrips, Workload::PingPong, 1, true),
        })
    }

    /// What the progress line says.
    fn progress(self, s: &ProcsSettings) -> String {
        match self {
            Measurement::H2load => "h2load unary".to_owned(),
            Measurement::Unary => format!("tonic unary c={}", s.unary_concurrency),
            Measurement::Latency => "unary, 1 call at a time".to_owned(),
            Measurement::Streams => format!("server streams c={}", s.stream_calls),
            Measurement::PingPong => "bidi ping-pong".to_owned(),
        }
    }
}

/// One comparison: its targets and measurements.
pub struct Plan<'a> {
    settings: &'a ProcsSettings,
    machine: Machine,
    measurements: Vec<Measurement>,
    targets: Vec<Running>,
    h2load: Option<PathBuf>,
    notes: Vec<String>,
}

/// The client connections to every target: many for throughput, one for
/// one call at a time.
pub struct Clients {
    wide: Vec<Target>,
    single: Vec<Target>,
}

impl<'a> Plan<'a> {
    /// A plan of `measurements` (h2load's dropped, with a note, when it is
    /// skipped or not installed) and no target yet.
    pub fn new(settings: &'a ProcsSettings, measurements: &[Measurement]) -> Plan<'a> {
        let mut notes = Vec::new();
        let h2load = if measurements.contains(&Measurement::H2load) {
            settings
                .tool(Tool::H2load)
                .map_err(|note| notes.push(note))
                .ok()
        } else {
            None
        };
        Plan {
            settings,
            machine: Machine::detect(),
            measurements: measurements
                .iter()
                .copied()
                .filter(|m| *m != Measurement::H2load || h2load.is_some())
                .collect(),
            targets: Vec::new(),
            h2load,
            notes,
        }
    }

    /// Adds a target (the first added, `direct`, is the baseline).
    pub fn add(&mut self, target: Running) {
        self.targets.push(target);
    }

    /// Adds a note under the tables (a target or tool left out).
    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// The target named `name`.
    pub fn target(&self, name: &str) -> Result<&Running, BoxError> {
        self.targets
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| format!("no target {name} in the plan").into())
    }

    /// Connects to every target and checks it answers one call (with its
    /// headers) echoing the payload.
    pub async fn connect(&self) -> Result<Clients, BoxError> {
        let names: Vec<&str> = self.targets.iter().map(|t| t.name.as_str()).collect();
        eprintln!("procs: targets {}", names.join(", "));
        let mut clients = Clients {
            wide: Vec::new(),
            single: Vec::new(),
        };
        for r in &self.targets {
            let connect = async |connections| {
                Ok::<_, BoxError>(
                    Target::connect(r.name.clone(), r.addr, connections)
                        .await?
                        .with_headers(r.headers.clone()),
                )
            };
            clients.wide.push(connect(self.settings.connections).await?);
            clients.single.push(connect(1).await?);
        }
        for target in &clients.single {
            target.check(self.settings.payload_size).await?;
        }
        Ok(clients)
    }

    /// Runs every measurement against every target.
    pub async fn measure(&self, clients: &Clients) -> Result<Results, BoxError> {
        let settings = self.settings;
        let timing = Timing {
            rounds: settings.rounds,
            duration: settings.duration,
        };
        let mut loads = Vec::new();
        let mut rows = Vec::new();
        let mut h2load = None;
        for &measurement in &self.measurements {
            eprint!("{} ", measurement.progress(settings));
            loads.extend(load_average());
            match measurement.tonic(settings) {
                Some((name, unit, workload, concurrency, single)) => {
                    let targets = if single {
                        &clients.single
                    } else {
                        &clients.wide
                    };
                    let targets: Vec<&Target> = targets.iter().collect();
                    let row =
                        interleaved(name, unit, &targets, &workload, concurrency, timing).await?;
                    rows.push((measurement, row));
                }
                None => h2load = Some(self.h2load_rounds(timing).await?),
            }
            eprintln!();
        }
        loads.extend(load_average());
        let mut results = Results {
            machine: self.machine.clone(),
            names: self.targets.iter().map(|t| t.name.clone()).collect(),
            rows,
            h2load,
            figures: Vec::new(),
            failures: Vec::new(),
            loads,
            notes: self.notes.clone(),
        };
        results.figures = results
            .names
            .iter()
            .map(|n| results.figures_of(n))
            .collect();
        results.failures = results.failed_calls(settings.payload_size);
        Ok(results)
    }

    /// h2load against every target, each measured round kept apart.
    async fn h2load_rounds(&self, timing: Timing) -> Result<Vec<Vec<H2loadRun>>, BoxError> {
        let Some(exe) = &self.h2load else {
            return Ok(Vec::new());
        };
        let dir = TempDir::new("h2load")?;
        let body = dir.write(
            "request.bin",
            &h2load::request_body(self.settings.payload_size),
        )?;
        let shape = self.settings.h2load;
        rotate(self.targets.len(), timing.rounds, async |index| {
            let target = &self.targets[index];
            let headers: Vec<String> = target.headers.iter().map(|h| h.h2load_arg()).collect();
            h2load::run(exe, target.addr, &body, shape, timing.duration, &headers)
                .await
                .map_err(|e| format!("h2load on {}: {e}", target.name).into())
        })
        .await
    }

    /// The admin addresses of the targets that have one.
    pub fn admins(&self) -> Vec<(String, SocketAddr)> {
        self.targets
            .iter()
            .filter_map(|t| Some((t.name.clone(), t.admin?)))
            .collect()
    }
}

/// What a comparison measured.
pub struct Results {
    /// The machine it ran on.
    pub machine: Machine,
    /// The targets, in the plan's order.
    pub names: Vec<String>,
    /// The tonic measurements.
    pub rows: Vec<(Measurement, Row)>,
    /// h2load's measured rounds per target, in the plan's order (`None`:
    /// h2load did not run).
    pub h2load: Option<Vec<Vec<H2loadRun>>>,
    /// Every target's figures.
    pub figures: Vec<Figures>,
    /// Measurements with failed calls; a scenario may add its own.
    pub failures: Vec<String>,
    /// The 1-minute load average before each measurement and at the end.
    pub loads: Vec<f64>,
    /// Targets or tools left out.
    pub notes: Vec<String>,
}

impl Results {
    fn row(&self, measurement: Measurement) -> Option<&Row> {
        self.rows
            .iter()
            .find(|(m, _)| *m == measurement)
            .map(|(_, row)| row)
    }

    fn h2load_of(&self, name: &str) -> Option<&[H2loadRun]> {
        let index = self.names.iter().position(|n| n == name)?;
        Some(self.h2load.as_ref()?.get(index)?.as_slice())
    }

    fn h2load_total(&self, name: &str) -> Option<H2loadRun> {
        let mut total = H2loadRun::default();
        for run in self.h2load_of(name)? {
            total.merge(run);
        }
        Some(total)
    }

    fn figures_of(&self, name: &str) -> Figures {
        let of = |m: Measurement| self.row(m).and_then(|row| row.target(name));
        let latency = of(Measurement::Latency);
        let pingpong = of(Measurement::PingPong);
        Figures {
            target: name.to_owned(),
            h2load_rps: self.h2load_total(name).map(|run| run.per_sec()),
            tonic_rps: of(Measurement::Unary).map(|m| m.throughput(Unit::Calls)),
            p50_us: latency.map(|m| m.total.latency_us(0.5)),
            p99_us: latency.map(|m| m.total.latency_us(0.99)),
            streams_mib: of(Measurement::Streams).map(|m| m.throughput(Unit::MiB)),
            pingpong_rtps: pingpong.map(|m| m.throughput(Unit::RoundTrips)),
            pingpong_p50_us: pingpong.map(|m| m.total.latency_us(0.5)),
        }
    }

    fn failed_calls(&self, payload_size: usize) -> Vec<String> {
        let mut failures = Vec::new();
        for (_, row) in &self.rows {
            for m in &row.targets {
                if m.total.errors > 0 {
                    failures.push(format!(
                        "{} on {}: {} failed calls, first: {}",
                        row.scenario,
                        m.target,
                        m.total.errors,
                        m.total.first_error.as_deref().unwrap_or("?")
                    ));
                }
            }
        }
        for name in &self.names {
            let Some(run) = self.h2load_total(name) else {
                continue;
            };
            if run.failed > 0 {
                failures.push(format!("h2load on {name}: {} failed requests", run.failed));
            }
            if let Err(e) = run.check_replies(payload_size) {
                failures.push(format!("h2load on {name}: {e}"));
            }
        }
        failures
    }

    /// The figures of `name`.
    pub fn figures(&self, name: &str) -> Option<&Figures> {
        self.figures.iter().find(|f| f.target == name)
    }

    /// `other` against `base`, round by round.
    pub fn round_ratios(&self, other: &str, base: &str) -> RoundRatios {
        let tonic = |m: Measurement, name: &str| -> Vec<f64> {
            let Some(row) = self.row(m) else {
                return Vec::new();
            };
            row.target(name)
                .map(|t| {
                    t.rounds
                        .iter()
                        .map(|s| match row.unit {
                            Unit::MiB => s.mib_per_sec(),
                            Unit::Calls | Unit::RoundTrips => s.ops_per_sec(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let ratios = |m: Measurement| table::round_ratios(&tonic(m, other), &tonic(m, base));
        let h2load = |name: &str| -> Option<Vec<f64>> {
            Some(
                self.h2load_of(name)?
                    .iter()
                    .map(H2loadRun::per_sec)
                    .collect(),
            )
        };
        RoundRatios {
            h2load: h2load(other)
                .zip(h2load(base))
                .map(|(o, b)| table::round_ratios(&o, &b)),
            tonic: ratios(Measurement::Unary),
            streams: ratios(Measurement::Streams),
            pingpong: ratios(Measurement::PingPong),
        }
    }

    /// The tables every scenario prints: under `title`, every target
    /// against direct; then the absolute numbers.
    pub fn tables(&self, settings: &ProcsSettings, title: &str) -> String {
        let format = settings.format;
        let labels = settings.labels();
        let mut out = heading(format, title);
        out.push_str(&table::ratio_table(format, &self.figures, &labels));
        out.push_str(&heading(format, "Absolute numbers"));
        out.push_str(&table::absolute_table(format, &self.figures, &labels));
        out
    }

    /// The notes under the tables: the machine and its load, how the run
    /// was shaped, `lines` of the scenario's own, and what was left out.
    pub fn footer(&self, settings: &ProcsSettings, lines: &[String]) -> String {
        let bullet = settings.format.bullet();
        let load = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |l| format!("{l:.2}"));
        let (low, high) = self
            .loads
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), l| {
                (lo.min(*l), hi.max(*l))
            });
        let mut out = String::from("\n");
        let _ = writeln!(
            out,
            "{bullet}machine: {} ({} CPUs); 1-minute load average at start {}, during the run {}–{}, at end {}",
            self.machine.cpu_model,
            self.machine.cpus,
            load(self.machine.load_at_start),
            load(low.is_finite().then_some(low)),
            load(high.is_finite().then_some(high)),
            load(self.loads.last().copied()),
        );
        let rounds = rounds_note(settings.rounds, settings.duration, settings.quick);
        let _ = writeln!(out, "{bullet}{rounds}");
        let _ = writeln!(
            out,
            "{bullet}unary: SayHello with a {}-byte payload (echoed); tonic clients over {} connections; 1 call at a time over 1 connection; ping-pong: one Chat stream, one message in flight",
            settings.payload_size, settings.connections
        );
        for line in lines.iter().chain(&self.notes) {
            let _ = writeln!(out, "{bullet}{line}");
        }
        out
    }

    /// An error (after printing each failure as `what: failure`) if any
    /// measurement had failed or refused calls.
    pub fn verdict(&self, what: &str) -> Result<(), BoxError> {
        if self.failures.is_empty() {
            return Ok(());
        }
        for f in &self.failures {
            eprintln!("{what}: {f}");
        }
        Err(format!(
            "{} measurements had failed or refused calls",
            self.failures.len()
        )
        .into())
    }
}
