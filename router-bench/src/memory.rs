//! `router-soak memory`: the router's memory after load (issue 9, item 6).
//!
//! The router runs as a child process (this binary's `serve-router`, or
//! another build of this package given with `--router-exe`, for example one
//! built with another allocator, or the `grpc-router` daemon binary, whose
//! column is named `grpc-router`) with one real bridge instance process (the
//! example `instance` binary) behind it. Its `VmRSS` and `VmHWM` are read from
//! `/proc/<pid>/status`:
//!
//! 1. idle, after a few warm-up calls;
//! 2. while 5,000 server streams (`StreamGreetings` with no end) are opened,
//!    read for one message and dropped (the client resets them), a bounded
//!    number at a time; and once the router's admin service reports 0 calls;
//! 3. while 300 such streams with a payload are held by clients that never
//!    read them (an HTTP/2 stream window of 0 bytes, so the router buffers up
//!    to each call's window); and after they are all reset and released.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use myservice::pb::greeter_client::GreeterClient;
use myservice::pb::{HelloRequest, StreamRequest};
use router_runtime::router::RouterConfig;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::BoxError;
use crate::apps::{sibling, start_instance};
use crate::machine::Memory;
use crate::report::{Format, Table};
use crate::router_child::RouterChild;
use crate::target::Target;

/// How long to wait for the router to release every call.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(60);

/// What `router-soak memory` does.
#[derive(Debug, Clone)]
pub struct MemorySettings {
    /// Router binaries to measure (builds of this package, or `grpc-router`);
    /// empty measures this one.
    pub router_exes: Vec<PathBuf>,
    /// The example `instance` binary; `None` looks next to this one.
    pub instance_exe: Option<PathBuf>,
    /// Abandoned streams in total.
    pub abandoned: usize,
    /// Abandoned streams open at once.
    pub abandon_concurrency: usize,
    /// Payload bytes per message of the abandoned streams.
    pub abandoned_payload: u32,
    /// Stalled streams.
    pub stalled: usize,
    /// Payload bytes per message of the stalled streams.
    pub stalled_payload: u32,
    /// Client connections for each phase.
    pub connections: usize,
    /// Each call's response window in the router, KiB; `None` is the
    /// router's default.
    pub window_kib: Option<u32>,
    /// How long after the last release the final RSS is read.
    pub linger: Duration,
    /// Output format.
    pub format: Format,
}

/// One router's memory through the phases, in KiB.
#[derive(Debug, Clone)]
pub struct MemoryRun {
    /// The allocator the router child reported.
    pub allocator: String,
    /// Idle, after warm-up.
    pub idle: Memory,
    /// Highest RSS sampled while the abandoned streams ran.
    pub abandoned_peak_kib: u64,
    /// After the abandoned streams were all released.
    pub abandoned_after: Memory,
    /// RSS with every stalled stream open and buffered.
    pub stalled_peak_kib: u64,
    /// After the stalled streams were reset and released.
    pub stalled_after: Memory,
    /// How long the router took to release the abandoned streams.
    pub abandoned_release: Duration,
    /// How long it took to release the stalled streams.
    pub stalled_release: Duration,
    /// RSS a while later (`linger`), once an allocator that returns memory
    /// with a delay (jemalloc's decay) has done so.
    pub lingered: Memory,
}

/// Runs the measurement once per router binary and prints the table.
pub async fn run(settings: &MemorySettings) -> Result<(), BoxError> {
    let exes = if settings.router_exes.is_empty() {
        vec![std::env::current_exe()?]
    } else {
        settings.router_exes.clone()
    };
    let instance = sibling(settings.instance_exe.as_deref(), "instance")?;
    let mut runs = Vec::new();
    for exe in &exes {
        eprintln!("memory: router {}", exe.display());
        runs.push(measure(settings, exe, &instance).await?);
    }
    print!("{}", render(settings, &runs));
    Ok(())
}

async fn measure(
    settings: &MemorySettings,
    router_exe: &std::path::Path,
    instance_exe: &std::path::Path,
) -> Result<MemoryRun, BoxError> {
    let child = RouterChild::spawn(Some(router_exe), settings.window_kib).await?;
    let instance = start_instance(instance_exe, child.addr, "memory-instance", &[]).await?;
    let target = Target::connect("routed", child.addr, settings.connections).await?;
    warm_up(&target).await?;
    settle().await;
    let idle = child.memory()?;
    eprintln!("  idle: {} KiB", idle.rss_kib);

    let sampler = PeakSampler::start(child.pid());
    let started = Instant::now();
    abandon_streams(&target, settings).await?;
    let released = Instant::now();
    child.wait_idle(RELEASE_TIMEOUT).await?;
    let abandoned_release = released.elapsed();
    let abandoned_peak_kib = sampler.stop();
    settle().await;
    let abandoned_after = child.memory()?;
    eprintln!(
        "  {} abandoned streams in {:.1} s: peak {abandoned_peak_kib} KiB, after {} KiB",
        settings.abandoned,
        started.elapsed().as_secs_f64(),
        abandoned_after.rss_kib
    );

    let stalled = stall_streams(&child, settings).await?;
    let stalled_peak_kib = child.memory()?.rss_kib;
    drop(stalled);
    let released = Instant::now();
    child.wait_idle(RELEASE_TIMEOUT).await?;
    let stalled_release = released.elapsed();
    settle().await;
    let stalled_after = child.memory()?;
    eprintln!(
        "  {} stalled streams: peak {stalled_peak_kib} KiB, after {} KiB",
        settings.stalled, stalled_after.rss_kib
    );
    tokio::time::sleep(settings.linger).await;
    let lingered = child.memory()?;
    instance.kill().await?;
    Ok(MemoryRun {
        lingered,
        allocator: child.allocator.clone(),
        idle,
        abandoned_peak_kib,
        abandoned_after,
        stalled_peak_kib,
        stalled_after,
        abandoned_release,
        stalled_release,
    })
}

/// Lets the router finish its bookkeeping and the allocator its frees.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// A few calls of each kind the phases use, so lazily built state (codecs,
/// connection buffers) is in the idle figure.
async fn warm_up(target: &Target) -> Result<(), BoxError> {
    for i in 0..100 {
        target
            .client(i)
            .say_hello(HelloRequest {
                name: "warm-up".to_owned(),
                payload: vec![0; 100],
            })
            .await?;
    }
    let mut replies = target
        .client(0)
        .stream_greetings(StreamRequest {
            name: "warm-up".to_owned(),
            count: 64,
            payload_size: 16 * 1024,
        })
        .await?
        .into_inner();
    while replies.message().await?.is_some() {}
    Ok(())
}

/// An endless server stream: the example greeter sends `count` messages, and
/// `u32::MAX` of them do not end while the measurement runs. (`count: 0`
/// ends at once with OK.)
fn endless(name: &str, payload_size: u32) -> StreamRequest {
    StreamRequest {
        name: name.to_owned(),
        count: u32::MAX,
        payload_size,
    }
}

/// Opens `settings.abandoned` endless streams, `abandon_concurrency` at a
/// time; each reads its first message and is dropped (RST_STREAM CANCEL).
async fn abandon_streams(target: &Target, settings: &MemorySettings) -> Result<(), BoxError> {
    let limit = Arc::new(Semaphore::new(settings.abandon_concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for i in 0..settings.abandoned {
        let permit = limit.clone().acquire_owned().await?;
        let mut client = target.client(i);
        let request = endless("abandoned", settings.abandoned_payload);
        tasks.spawn(async move {
            let _permit = permit;
            let mut replies = client.stream_greetings(request).await?.into_inner();
            replies.message().await?;
            Ok::<(), tonic::Status>(())
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Streams held open and never read; dropping them resets them.
struct Stalled {
    _streams: Vec<tonic::Streaming<myservice::pb::HelloReply>>,
}

/// Opens `settings.stalled` endless streams over connections whose HTTP/2
/// stream window is 0 bytes and never reads them; returns once the router's
/// RSS stopped growing (it buffered what each call's window allows).
async fn stall_streams(
    child: &RouterChild,
    settings: &MemorySettings,
) -> Result<Stalled, BoxError> {
    let mut clients = Vec::new();
    for _ in 0..settings.connections.max(1) {
        let channel: Channel = Endpoint::from_shared(format!("http://{}", child.addr))?
            .initial_stream_window_size(Some(0))
            .tcp_nodelay(true)
            .connect()
            .await?;
        clients.push(GreeterClient::new(channel));
    }
    let mut streams = Vec::with_capacity(settings.stalled);
    for i in 0..settings.stalled {
        let mut client = clients[i % clients.len()].clone();
        let response = client
            .stream_greetings(endless("stalled", settings.stalled_payload))
            .await?;
        streams.push(response.into_inner());
    }
    // The instance fills each call's window; wait until the router's RSS
    // holds still for a second (or 30 s pass).
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut last = child.memory()?.rss_kib;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = child.memory()?.rss_kib;
        if now.abs_diff(last) * 200 < last || Instant::now() >= give_up {
            break;
        }
        last = now;
    }
    Ok(Stalled { _streams: streams })
}

/// Samples a process's RSS every 20 ms in the background and keeps the
/// highest value.
struct PeakSampler {
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakSampler {
    fn start(pid: u32) -> PeakSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let kept = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok(memory) = crate::machine::memory(pid) {
                    kept.fetch_max(memory.rss_kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        PeakSampler { peak, task }
    }

    /// Stops sampling; the highest RSS seen, KiB.
    fn stop(self) -> u64 {
        self.task.abort();
        self.peak.load(Ordering::Relaxed)
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn delta_mib(kib: u64, base: u64) -> String {
    let d = kib as f64 - base as f64;
    format!("{}{:.1}", if d >= 0.0 { "+" } else { "" }, d / 1024.0)
}

/// The report: one column per router binary (allocator).
pub fn render(settings: &MemorySettings, runs: &[MemoryRun]) -> String {
    let format = settings.format;
    let mut out = crate::report::heading(
        format,
        &format!(
            "Router memory after load (router child process, one instance process; RSS in MiB, change from idle in brackets; window {} KiB per call)",
            settings
                .window_kib
                .unwrap_or(RouterConfig::default().initial_window / 1024)
        ),
    );
    let mut headers = vec!["phase".to_owned()];
    headers.extend(runs.iter().map(|r| r.allocator.clone()));
    let mut table = Table::new(headers);
    let row = |label: String, value: &dyn Fn(&MemoryRun) -> String| {
        let mut cells = vec![label];
        cells.extend(runs.iter().map(value));
        cells
    };
    let with_delta = |kib: u64, base: u64| format!("{} ({})", mib(kib), delta_mib(kib, base));
    table.push(row("idle".into(), &|r| mib(r.idle.rss_kib)));
    table.push(row(
        format!(
            "{} abandoned streams, peak ({} at once, {} B messages)",
            settings.abandoned, settings.abandon_concurrency, settings.abandoned_payload
        ),
        &|r| with_delta(r.abandoned_peak_kib, r.idle.rss_kib),
    ));
    table.push(row("  after release".into(), &|r| {
        with_delta(r.abandoned_after.rss_kib, r.idle.rss_kib)
    }));
    table.push(row(
        format!(
            "{} stalled streams, peak ({} KiB messages)",
            settings.stalled,
            settings.stalled_payload / 1024
        ),
        &|r| with_delta(r.stalled_peak_kib, r.idle.rss_kib),
    ));
    table.push(row("  per stalled stream (KiB)".into(), &|r| {
        let held = r.stalled_peak_kib.saturating_sub(r.abandoned_after.rss_kib);
        format!("{:.0}", held as f64 / settings.stalled.max(1) as f64)
    }));
    table.push(row("  after reset and release".into(), &|r| {
        with_delta(r.stalled_after.rss_kib, r.idle.rss_kib)
    }));
    table.push(row(
        format!("  {} s later", settings.linger.as_secs_f64()),
        &|r| with_delta(r.lingered.rss_kib, r.idle.rss_kib),
    ));
    table.push(row("release time, abandoned / stalled (s)".into(), &|r| {
        format!(
            "{:.1} / {:.1}",
            r.abandoned_release.as_secs_f64(),
            r.stalled_release.as_secs_f64()
        )
    }));
    out.push_str(&table.render(format));
    out.push_str(
        "\nPer stalled stream: (peak - RSS before the stalled streams) / streams, against the call window. \"After\" is read once the admin service reports 0 calls, plus 2 s.\n",
    );
    out
}
