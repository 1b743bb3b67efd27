//! The figures of `router-bench procs` and their tables: ratios against the
//! direct server, the absolute numbers, and one target against another
//! round by round.

use crate::report::{Format, Table, micros, signed_micros, thousands};

/// One target's results (`None`: not measured, for example h2load missing).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// The target's name.
    pub target: String,
    /// h2load unary calls per second.
    pub h2load_rps: Option<f64>,
    /// tonic client unary calls per second.
    pub tonic_rps: Option<f64>,
    /// Median latency of sequential unary calls, µs.
    pub p50_us: Option<f64>,
    /// 99th percentile latency of sequential unary calls, µs.
    pub p99_us: Option<f64>,
    /// Server-streamed payload, MiB/s.
    pub streams_mib: Option<f64>,
    /// Bidi ping-pong round trips per second.
    pub pingpong_rtps: Option<f64>,
    /// Median ping-pong round trip, µs.
    pub pingpong_p50_us: Option<f64>,
}

/// A target against the direct server.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ratios {
    /// h2load unary throughput × direct.
    pub h2load: Option<f64>,
    /// tonic unary throughput × direct.
    pub tonic: Option<f64>,
    /// Added median latency of one call at a time, µs.
    pub added_p50_us: Option<f64>,
    /// Added 99th percentile, µs.
    pub added_p99_us: Option<f64>,
    /// Server-stream throughput × direct.
    pub streams: Option<f64>,
    /// Ping-pong round trips × direct.
    pub pingpong: Option<f64>,
    /// Added median ping-pong round trip, µs.
    pub pingpong_added_p50_us: Option<f64>,
}

fn quotient(value: Option<f64>, base: Option<f64>) -> Option<f64> {
    match (value, base) {
        (Some(v), Some(b)) if b > 0.0 => Some(v / b),
        _ => None,
    }
}

fn difference(value: Option<f64>, base: Option<f64>) -> Option<f64> {
    Some(value? - base?)
}

/// `figures` against `direct`'s.
pub fn ratios(direct: &Figures, figures: &Figures) -> Ratios {
    Ratios {
        h2load: quotient(figures.h2load_rps, direct.h2load_rps),
        tonic: quotient(figures.tonic_rps, direct.tonic_rps),
        added_p50_us: difference(figures.p50_us, direct.p50_us),
        added_p99_us: difference(figures.p99_us, direct.p99_us),
        streams: quotient(figures.streams_mib, direct.streams_mib),
        pingpong: quotient(figures.pingpong_rtps, direct.pingpong_rtps),
        pingpong_added_p50_us: difference(figures.pingpong_p50_us, direct.pingpong_p50_us),
    }
}

/// How the measurements were shaped, for the column headers.
#[derive(Debug, Clone, Copy)]
pub struct Labels {
    /// h2load `-c`.
    pub h2load_connections: usize,
    /// h2load `-m`.
    pub h2load_streams: usize,
    /// tonic unary calls in flight.
    pub unary_concurrency: usize,
    /// Concurrent server streams.
    pub stream_calls: usize,
    /// Messages per stream.
    pub stream_count: u32,
    /// Bytes per streamed message.
    pub stream_message_size: u32,
}

impl Labels {
    fn h2load(&self) -> String {
        format!("-c{} -m{}", self.h2load_connections, self.h2load_streams)
    }

    fn streams(&self) -> String {
        let size = if self.stream_message_size.is_multiple_of(1024) {
            format!("{} KiB", self.stream_message_size / 1024)
        } else {
            format!("{} B", self.stream_message_size)
        };
        format!("{} × {} × {size}", self.stream_calls, self.stream_count)
    }
}

fn times(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

fn added(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), signed_micros)
}

fn absolute(value: Option<f64>, render: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "-".to_owned(), render)
}

fn rate(value: f64, unit: &str) -> String {
    format!("{} {unit}", thousands(value))
}

/// The ratio table: every target against `direct` (the first row, if it
/// ran; without it there is nothing to compare and the table is empty).
pub fn ratio_table(format: Format, figures: &[Figures], labels: &Labels) -> String {
    let headers = vec![
        "target".to_owned(),
        format!("unary throughput × direct (h2load {})", labels.h2load()),
        format!(
            "unary throughput × direct (tonic, {} in flight)",
            labels.unary_concurrency
        ),
        "added p50, 1 call at a time".to_owned(),
        "added p99, 1 call at a time".to_owned(),
        format!("server streams × direct ({})", labels.streams()),
        "ping-pong × direct".to_owned(),
        "added ping-pong p50".to_owned(),
    ];
    let Some(direct) = figures.iter().find(|f| f.target == "direct") else {
        return Table::new(headers).render(format);
    };
    let mut rows = Vec::new();
    for f in figures {
        let r = ratios(direct, f);
        rows.push(vec![
            f.target.clone(),
            times(r.h2load),
            times(r.tonic),
            added(r.added_p50_us),
            added(r.added_p99_us),
            times(r.streams),
            times(r.pingpong),
            added(r.pingpong_added_p50_us),
        ]);
    }
    measured_columns(headers, rows).render(format)
}

/// The absolute numbers behind the ratios.
pub fn absolute_table(format: Format, figures: &[Figures], labels: &Labels) -> String {
    let headers = vec![
        "target".to_owned(),
        format!("h2load unary ({})", labels.h2load()),
        format!("tonic unary ({} in flight)", labels.unary_concurrency),
        "p50, 1 call at a time".to_owned(),
        "p99, 1 call at a time".to_owned(),
        format!("server streams ({})", labels.streams()),
        "ping-pong".to_owned(),
        "ping-pong p50".to_owned(),
    ];
    let mut rows = Vec::new();
    for f in figures {
        rows.push(vec![
            f.target.clone(),
            absolute(f.h2load_rps, |v| rate(v, "req/s")),
            absolute(f.tonic_rps, |v| rate(v, "req/s")),
            absolute(f.p50_us, micros),
            absolute(f.p99_us, micros),
            absolute(f.streams_mib, |v| format!("{v:.1} MiB/s")),
            absolute(f.pingpong_rtps, |v| rate(v, "rt/s")),
            absolute(f.pingpong_p50_us, micros),
        ]);
    }
    measured_columns(headers, rows).render(format)
}

/// One target against a baseline, round by round: `other / base` of each
/// measured round (the rounds ran interleaved, so each pair shared the
/// machine's state).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RoundRatios {
    /// h2load unary throughput (`None`: h2load did not run).
    pub h2load: Option<Vec<f64>>,
    /// tonic unary throughput.
    pub tonic: Vec<f64>,
    /// Server-stream throughput.
    pub streams: Vec<f64>,
    /// Ping-pong round trips.
    pub pingpong: Vec<f64>,
}

/// `other[i] / base[i]` for the rounds whose base is not zero.
pub fn round_ratios(other: &[f64], base: &[f64]) -> Vec<f64> {
    other
        .iter()
        .zip(base)
        .filter(|(_, b)| **b > 0.0)
        .map(|(o, b)| o / b)
        .collect()
}

/// The median of `values`.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

fn list(values: &[f64]) -> String {
    if values.is_empty() {
        return "-".to_owned();
    }
    values
        .iter()
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The column headers of [`versus_table`]: the baseline, the other target,
/// and their ratio (for example `daemon (no policy)`, `daemon+policies`,
/// `policies / none`).
#[derive(Debug, Clone, Copy)]
pub struct Versus<'a> {
    /// The baseline's column.
    pub base: &'a str,
    /// The other target's column.
    pub other: &'a str,
    /// The ratio's column.
    pub ratio: &'a str,
}

/// `other` against `base`: each measurement's figures, the ratio of the
/// totals (added latency for latencies), and the median and list of the
/// per-round ratios. Rows of measurements that did not run are left out.
pub fn versus_table(
    format: Format,
    base: &Figures,
    other: &Figures,
    rounds: &RoundRatios,
    columns: Versus<'_>,
) -> String {
    let mut table = Table::new([
        "measurement",
        columns.base,
        columns.other,
        columns.ratio,
        "median of rounds",
        "per round",
    ]);
    let dash = || "-".to_owned();
    let requests = |v: f64| rate(v, "req/s");
    let throughput =
        |label: &str, b: Option<f64>, o: Option<f64>, show: &dyn Fn(f64) -> String, per: &[f64]| {
            vec![
                label.to_owned(),
                absolute(b, show),
                absolute(o, show),
                times(quotient(o, b)),
                median(per).map_or_else(dash, |m| format!("{m:.2}")),
                list(per),
            ]
        };
    let latency = |label: &str, b: Option<f64>, o: Option<f64>| {
        vec![
            label.to_owned(),
            absolute(b, micros),
            absolute(o, micros),
            added(difference(o, b)),
            dash(),
            dash(),
        ]
    };
    if let Some(per) = &rounds.h2load {
        let (b, o) = (base.h2load_rps, other.h2load_rps);
        table.push(throughput("unary throughput, h2load", b, o, &requests, per));
    }
    if base.tonic_rps.is_some() {
        let (b, o) = (base.tonic_rps, other.tonic_rps);
        table.push(throughput(
            "unary throughput, tonic",
            b,
            o,
            &requests,
            &rounds.tonic,
        ));
    }
    if base.p50_us.is_some() {
        table.push(latency("p50, 1 call at a time", base.p50_us, other.p50_us));
        table.push(latency("p99, 1 call at a time", base.p99_us, other.p99_us));
    }
    if base.streams_mib.is_some() {
        let (b, o) = (base.streams_mib, other.streams_mib);
        let mib = |v: f64| format!("{v:.1} MiB/s");
        table.push(throughput("server streams", b, o, &mib, &rounds.streams));
    }
    if base.pingpong_rtps.is_some() {
        let (b, o) = (base.pingpong_rtps, other.pingpong_rtps);
        let round_trips = |v: f64| rate(v, "rt/s");
        table.push(throughput(
            "ping-pong",
            b,
            o,
            &round_trips,
            &rounds.pingpong,
        ));
        let (b, o) = (base.pingpong_p50_us, other.pingpong_p50_us);
        table.push(latency("ping-pong p50", b, o));
    }
    table.render(format)
}

/// A table without the columns nothing was measured in (every cell `-`, for
/// example h2load's when it is not installed); the first column stays.
fn measured_columns(headers: Vec<String>, rows: Vec<Vec<String>>) -> Table {
    let keep: Vec<bool> = (0..headers.len())
        .map(|c| {
            c == 0 || rows.is_empty() || rows.iter().any(|r| r.get(c).is_some_and(|v| v != "-"))
        })
        .collect();
    let pick = |cells: Vec<String>| -> Vec<String> {
        cells
            .into_iter()
            .zip(&keep)
            .filter_map(|(cell, keep)| keep.then_some(cell))
            .collect()
    };
    let mut table = Table::new(pick(headers));
    for row in rows {
        table.push(pick(row));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Labels {
        Labels {
            h2load_connections: 16,
            h2load_streams: 4,
            unary_concurrency: 64,
            stream_calls: 4,
            stream_count: 1000,
            stream_message_size: 1024,
        }
    }

    fn direct() -> Figures {
        Figures {
            target: "direct".into(),
            h2load_rps: Some(40_000.0),
            tonic_rps: Some(20_000.0),
            p50_us: Some(50.0),
            p99_us: Some(120.0),
            streams_mib: Some(800.0),
            pingpong_rtps: Some(10_000.0),
            pingpong_p50_us: Some(90.0),
        }
    }

    fn routed() -> Figures {
        Figures {
            target: "routed".into(),
            h2load_rps: Some(10_000.0),
            tonic_rps: Some(8_000.0),
            p50_us: Some(130.0),
            p99_us: Some(320.0),
            streams_mib: Some(400.0),
            pingpong_rtps: Some(5_000.0),
            pingpong_p50_us: Some(190.0),
        }
    }

    #[test]
    fn ratios_divide_throughput_and_subtract_latency() {
        let r = ratios(&direct(), &routed());
        assert_eq!(r.h2load, Some(0.25));
        assert_eq!(r.tonic, Some(0.4));
        assert_eq!(r.added_p50_us, Some(80.0));
        assert_eq!(r.added_p99_us, Some(200.0));
        assert_eq!(r.streams, Some(0.5));
        assert_eq!(r.pingpong, Some(0.5));
        assert_eq!(r.pingpong_added_p50_us, Some(100.0));
        let own = ratios(&direct(), &direct());
        assert_eq!(own.tonic, Some(1.0));
        assert_eq!(own.added_p50_us, Some(0.0));
    }

    #[test]
    fn a_missing_measurement_has_no_ratio() {
        let mut d = direct();
        d.h2load_rps = None;
        d.streams_mib = Some(0.0);
        let r = ratios(&d, &routed());
        assert_eq!(r.h2load, None);
        // Dividing by a zero throughput gives no ratio, not infinity.
        assert_eq!(r.streams, None);
        assert_eq!(r.tonic, Some(0.4));
    }

    #[test]
    fn the_ratio_table_has_a_row_per_target_with_direct_as_one() {
        let text = ratio_table(Format::Markdown, &[direct(), routed()], &labels());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].contains("unary throughput × direct (h2load -c16 -m4)"));
        assert!(lines[0].contains("server streams × direct (4 × 1000 × 1 KiB)"));
        let cells =
            |line: &str| -> Vec<String> { line.split('|').map(|c| c.trim().to_owned()).collect() };
        assert_eq!(
            cells(lines[2])[1..9],
            [
                "direct", "1.00", "1.00", "+0.0 µs", "+0.0 µs", "1.00", "1.00", "+0.0 µs"
            ]
        );
        assert_eq!(
            cells(lines[3])[1..9],
            [
                "routed",
                "0.25",
                "0.40",
                "+80.0 µs",
                "+200 µs",
                "0.50",
                "0.50",
                "+100 µs"
            ]
        );
    }

    #[test]
    fn a_column_nothing_measured_is_left_out() {
        let mut d = direct();
        d.h2load_rps = None;
        let mut r = routed();
        r.h2load_rps = None;
        let text = absolute_table(Format::Markdown, &[d.clone(), r.clone()], &labels());
        assert!(!text.contains("h2load"));
        assert!(
            text.lines()
                .nth(2)
                .is_some_and(|l| l.contains("20,000 req/s"))
        );
        let ratios = ratio_table(Format::Markdown, &[d, r], &labels());
        assert!(!ratios.contains("h2load"));
        assert!(ratios.contains("tonic, 64 in flight"));
    }

    #[test]
    fn a_target_not_measured_shows_dashes() {
        let mut r = routed();
        r.h2load_rps = None;
        let text = ratio_table(Format::Table, &[direct(), r], &labels());
        assert!(text.lines().next().is_some_and(|h| h.contains("h2load")));
        let routed_line = text.lines().nth(3).expect("routed row");
        assert_eq!(routed_line.split_whitespace().nth(1), Some("-"));
    }

    #[test]
    fn per_round_ratios_pair_rounds_and_skip_empty_ones() {
        assert_eq!(
            round_ratios(&[9.0, 10.0, 4.0], &[10.0, 10.0, 0.0]),
            [0.9, 1.0]
        );
        assert_eq!(median(&[0.9, 1.1, 1.0]), Some(1.0));
        assert_eq!(median(&[0.9, 1.0]), Some(0.95));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn the_versus_table_compares_each_measurement_that_ran() {
        let mut base = direct();
        base.target = "daemon".into();
        base.streams_mib = None;
        let rounds = RoundRatios {
            h2load: Some(vec![0.2, 0.3]),
            tonic: vec![0.4, 0.5, 0.3],
            streams: Vec::new(),
            pingpong: vec![0.5],
        };
        let columns = Versus {
            base: "daemon (no policy)",
            other: "daemon+policies",
            ratio: "policies / none",
        };
        let text = versus_table(Format::Markdown, &base, &routed(), &rounds, columns);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("| daemon (no policy) | daemon+policies | policies / none |"));
        let cells =
            |line: &str| -> Vec<String> { line.split('|').map(|c| c.trim().to_owned()).collect() };
        assert_eq!(
            cells(lines[2])[1..7],
            [
                "unary throughput, h2load",
                "40,000 req/s",
                "10,000 req/s",
                "0.25",
                "0.25",
                "0.20, 0.30"
            ]
        );
        assert_eq!(cells(lines[3])[4..6], ["0.40", "0.40"]);
        assert_eq!(
            cells(lines[4])[1..5],
            ["p50, 1 call at a time", "50.0 µs", "130 µs", "+80.0 µs"]
        );
        // No streams row (not measured); ping-pong and its p50 last.
        assert_eq!(lines.len(), 8);
        assert!(lines[7].contains("ping-pong p50"));
    }

    #[test]
    fn without_direct_the_ratio_table_has_no_rows() {
        let text = ratio_table(Format::Markdown, &[routed()], &labels());
        assert_eq!(text.lines().count(), 2);
    }
}
