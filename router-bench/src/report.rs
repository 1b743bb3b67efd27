//! The result tables, as aligned text or Markdown.

use std::fmt::Write;

use crate::inprocess::{DYNAMIC_TARGET, METRICS_TARGET, Settings};
use crate::machine::Machine;
use crate::registrations::Registrations;
use crate::scenarios::{Measured, Row, Unit};

/// How result tables are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned plain text.
    Table,
    /// Markdown tables, ready to paste into the README.
    Markdown,
}

impl Format {
    /// What starts a line of the notes under a table.
    pub fn bullet(self) -> &'static str {
        match self {
            Format::Markdown => "- ",
            Format::Table => "",
        }
    }
}

/// A table of text cells.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Table {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank).
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Renders the table; the first column is left aligned, the others right
    /// aligned.
    pub fn render(&self, format: Format) -> String {
        let columns = self.headers.len();
        let cell = |row: &[String], c: usize| row.get(c).cloned().unwrap_or_default();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (c, width) in widths.iter_mut().enumerate() {
                *width = (*width).max(cell(row, c).chars().count());
            }
        }
        let pad = |text: &str, c: usize| {
            let fill = widths[c].saturating_sub(text.chars().count());
            if c == 0 {
                format!("{text}{}", " ".repeat(fill))
            } else {
                format!("{}{text}", " ".repeat(fill))
            }
        };
        let mut out = String::new();
        match format {
            Format::Markdown => {
                let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
                out.push_str(&line(
                    (0..columns).map(|c| pad(&self.headers[c], c)).collect(),
                ));
                out.push_str(&line(
                    (0..columns)
                        .map(|c| {
                            let dashes = "-".repeat(widths[c].max(3) - 1);
                            if c == 0 {
                                format!("{dashes}-")
                            } else {
                                format!("{dashes}:")
                            }
                        })
                        .collect(),
                ));
                for row in &self.rows {
                    out.push_str(&line((0..columns).map(|c| pad(&cell(row, c), c)).collect()));
                }
            }
            Format::Table => {
                let line = |cells: Vec<String>| format!("{}\n", cells.join("  ").trim_end());
                out.push_str(&line(
                    (0..columns).map(|c| pad(&self.headers[c], c)).collect(),
                ));
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                out.push_str(&line(rule));
                for row in &self.rows {
                    out.push_str(&line((0..columns).map(|c| pad(&cell(row, c), c)).collect()));
                }
            }
        }
        out
    }
}

/// A heading in `format`.
pub fn heading(format: Format, text: &str) -> String {
    match format {
        Format::Markdown => format!("\n### {text}\n\n"),
        Format::Table => format!("\n== {text} ==\n"),
    }
}

/// The machine and run description.
pub fn machine(format: Format, machine: &Machine, settings: &Settings, threads: usize) -> String {
    let mut out = heading(format, "Machine");
    let bullet = format.bullet();
    let load = machine
        .load_at_start
        .map_or_else(|| "unknown".to_owned(), |l| format!("{l:.2}"));
    let _ = writeln!(
        out,
        "{bullet}CPU: {} ({} CPUs)",
        machine.cpu_model, machine.cpus
    );
    let _ = writeln!(
        out,
        "{bullet}tokio worker threads: {threads}; client connections per target: {}",
        settings.connections
    );
    let rounds = rounds_note(settings.rounds, settings.duration, settings.quick);
    let _ = writeln!(out, "{bullet}{rounds}");
    let _ = writeln!(out, "{bullet}1-minute load average at start: {load}");
    out
}

/// How the rounds ran, for the notes under a report.
pub fn rounds_note(rounds: u32, duration: std::time::Duration, quick: bool) -> String {
    format!(
        "{rounds} rounds × {duration:?} per target and measurement (first round discarded, targets interleaved, order rotated each round){}",
        if quick { "; --quick" } else { "" }
    )
}

/// A throughput in `unit`, human readable.
pub fn throughput(value: f64, unit: Unit) -> String {
    match unit {
        Unit::MiB => format!("{value:.1} {}", unit.label()),
        Unit::Calls | Unit::RoundTrips => format!("{} {}", thousands(value), unit.label()),
    }
}

/// A whole number with thousands separators (`1,234,567`).
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Microseconds, human readable.
pub fn micros(us: f64) -> String {
    if us.abs() < 100.0 {
        format!("{us:.1} µs")
    } else {
        format!("{us:.0} µs")
    }
}

/// Microseconds with a sign (`+80.0 µs`), for added latency.
pub fn signed_micros(us: f64) -> String {
    if us >= 0.0 {
        format!("+{}", micros(us))
    } else {
        micros(us)
    }
}

fn ratio(num: f64, den: f64) -> String {
    if den > 0.0 {
        format!("{:.2}", num / den)
    } else {
        "n/a".to_owned()
    }
}

/// The summary table: per row, direct vs routed, then the dynamic router
/// against both (when it ran), then extra targets against direct.
pub fn summary(format: Format, rows: &[Row], extras: &[String]) -> String {
    let dynamic = rows.iter().any(|r| r.target(DYNAMIC_TARGET).is_some());
    let mut headers: Vec<String> = [
        "scenario",
        "concurrency",
        "direct",
        "routed",
        "routed/direct",
        "added p50",
        "added p99",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if dynamic {
        headers.extend(
            [
                DYNAMIC_TARGET,
                "dynamic/direct",
                "dynamic/routed",
                "dynamic-routed p50",
                "dynamic-routed p99",
            ]
            .map(str::to_owned),
        );
    }
    let metrics = rows.iter().any(|r| r.target(METRICS_TARGET).is_some());
    if metrics {
        headers.extend(
            [
                METRICS_TARGET,
                "metrics/dynamic",
                "metrics-dynamic p50",
                "metrics-dynamic p99",
            ]
            .map(str::to_owned),
        );
    }
    for extra in extras {
        headers.push(extra.clone());
        headers.push(format!("{extra}/direct"));
        headers.push(format!("{extra} added p50"));
    }
    let mut table = Table::new(headers);
    for row in rows {
        let direct = row.target("direct");
        let routed = row.target("routed");
        let value = |m: Option<&Measured>| {
            m.map_or_else(
                || "-".to_owned(),
                |m| throughput(m.throughput(row.unit), row.unit),
            )
        };
        let against = |base: Option<&Measured>, other: Option<&Measured>| -> [String; 3] {
            match (base, other) {
                (Some(d), Some(o)) => [
                    ratio(o.throughput(row.unit), d.throughput(row.unit)),
                    signed_micros(o.total.latency_us(0.5) - d.total.latency_us(0.5)),
                    signed_micros(o.total.latency_us(0.99) - d.total.latency_us(0.99)),
                ],
                _ => ["-".to_owned(), "-".to_owned(), "-".to_owned()],
            }
        };
        let compare = |other: Option<&Measured>| against(direct, other);
        let [r, p50, p99] = compare(routed);
        let mut cells = vec![
            row.scenario.clone(),
            row.concurrency.to_string(),
            value(direct),
            value(routed),
            r,
            p50,
            p99,
        ];
        if dynamic {
            let d = row.target(DYNAMIC_TARGET);
            let [vs_direct, _, _] = compare(d);
            let [vs_routed, p50, p99] = against(routed, d);
            cells.extend([value(d), vs_direct, vs_routed, p50, p99]);
        }
        if metrics {
            let m = row.target(METRICS_TARGET);
            let [vs_dynamic, p50, p99] = against(row.target(DYNAMIC_TARGET), m);
            cells.extend([value(m), vs_dynamic, p50, p99]);
        }
        for extra in extras {
            let other = row.target(extra);
            let [r, p50, _] = compare(other);
            cells.push(value(other));
            cells.push(r);
            cells.push(p50);
        }
        table.push(cells);
    }
    table.render(format)
}

/// Every target of every row: throughput, its spread across rounds, and
/// latency percentiles.
pub fn details(format: Format, rows: &[Row]) -> String {
    let mut table = Table::new([
        "scenario",
        "concurrency",
        "target",
        "throughput",
        "round spread",
        "p50",
        "p90",
        "p99",
        "calls",
        "errors",
    ]);
    for row in rows {
        for m in &row.targets {
            table.push(vec![
                row.scenario.clone(),
                row.concurrency.to_string(),
                m.target.clone(),
                throughput(m.throughput(row.unit), row.unit),
                format!("±{:.0}%", 50.0 * m.spread(row.unit)),
                micros(m.total.latency_us(0.5)),
                micros(m.total.latency_us(0.9)),
                micros(m.total.latency_us(0.99)),
                m.total.ops.to_string(),
                m.total.errors.to_string(),
            ]);
        }
    }
    table.render(format)
}

/// The registrations scenario's table and memory figures.
pub fn registrations(format: Format, r: &Registrations) -> String {
    let mut table = Table::new([
        "registered instances",
        "concurrency",
        "routed unary",
        "p50",
        "p99",
        "router RSS",
    ]);
    let row = |instances: String, m: &Measured, rss: u64| {
        vec![
            instances,
            r.concurrency.to_string(),
            throughput(m.throughput(Unit::Calls), Unit::Calls),
            micros(m.total.latency_us(0.5)),
            micros(m.total.latency_us(0.99)),
            format!("{:.1} MiB", rss as f64 / 1024.0),
        ]
    };
    table.push(row("2".to_owned(), &r.before, r.rss_before_kib));
    table.push(row(
        format!("{} (2 + {} idle)", r.instances + 2, r.instances),
        &r.after,
        r.rss_after_kib,
    ));
    let mut out = table.render(format);
    let bullet = format.bullet();
    if format == Format::Markdown {
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "{bullet}router RSS per idle registration: {:.2} KiB {:.1} s later, {:.2} KiB 0.5 s later ({} registrations over {} HTTP/2 connections, registered in {:.2} s = {} registrations/s)",
        r.settled_kib_per_registration(),
        crate::registrations::SETTLED.as_secs_f64() + 0.5,
        r.kib_per_registration(),
        r.instances,
        r.connections,
        r.register_time.as_secs_f64(),
        thousands(r.instances as f64 / r.register_time.as_secs_f64().max(1e-9)),
    );
    let _ = writeln!(
        out,
        "{bullet}added latency with {} idle instances: p50 {}, p99 {}; throughput ratio {}",
        r.instances,
        signed_micros(r.after.total.latency_us(0.5) - r.before.total.latency_us(0.5)),
        signed_micros(r.after.total.latency_us(0.99) - r.before.total.latency_us(0.99)),
        ratio(
            r.after.throughput(Unit::Calls),
            r.before.throughput(Unit::Calls)
        ),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234.0), "1,234");
        assert_eq!(thousands(1234567.0), "1,234,567");
    }

    #[test]
    fn markdown_table_shape() {
        let mut t = Table::new(["a", "bb"]);
        t.push(vec!["x".into(), "1".into()]);
        let text = t.render(Format::Markdown);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.starts_with('|') && l.ends_with('|')));
        assert!(lines[1].contains("--:"));
    }

    fn measured(target: &str, ops: u64, latency_us: u64) -> Measured {
        let mut total = crate::load::Sample::empty();
        total.ops = ops;
        total.elapsed = std::time::Duration::from_secs(1);
        let _ = total.latency.record(latency_us * 1000);
        Measured {
            target: target.to_owned(),
            rounds: vec![total.clone()],
            total,
        }
    }

    #[test]
    fn summary_compares_the_dynamic_router_with_direct_and_routed() {
        let row = Row {
            scenario: "unary".to_owned(),
            concurrency: 1,
            unit: Unit::Calls,
            targets: vec![
                measured("direct", 1000, 100),
                measured("routed", 500, 200),
                measured("dynamic", 400, 250),
            ],
        };
        let text = summary(Format::Markdown, &[row], &[]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("| dynamic/direct | dynamic/routed | dynamic-routed p50 |"));
        let cells: Vec<&str> = lines[2].split('|').map(str::trim).collect();
        // scenario, concurrency, direct, routed, routed/direct, p50, p99,
        // dynamic, dynamic/direct, dynamic/routed, dynamic-routed p50 and p99.
        assert_eq!(
            &cells[5..13],
            [
                "0.50",
                "+100 µs",
                "+100 µs",
                "400 req/s",
                "0.40",
                "0.80",
                "+50.0 µs",
                "+50.0 µs"
            ]
        );
    }

    #[test]
    fn summary_without_the_dynamic_router_keeps_the_old_columns() {
        let row = Row {
            scenario: "unary".to_owned(),
            concurrency: 1,
            unit: Unit::Calls,
            targets: vec![measured("direct", 1000, 100), measured("routed", 500, 200)],
        };
        let text = summary(Format::Table, &[row], &[]);
        assert!(!text.contains("dynamic"));
        assert!(
            text.lines()
                .next()
                .is_some_and(|h| h.ends_with("added p99"))
        );
    }
}
