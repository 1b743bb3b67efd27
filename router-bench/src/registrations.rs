//! The registrations scenario: a router in a child process, two real bridge
//! instances (label `kind=real`), unary latency measured through the router;
//! then N idle registrations (label `kind=raw`) opened as raw register streams
//! over a few HTTP/2 connections, the router's memory read before and after,
//! and the latency measured again with N + 2 instances registered. Calls
//! carry `x-router-select: kind=real`, so only the real instances take them.

use std::sync::Arc;
use std::time::Duration;

use myservice::pb::GreeterSpec;
use router_runtime::codec::FrameCodec;
use router_runtime::codegen::ServiceSpec;
use router_runtime::pb;
use router_runtime::router::SELECT_HEADER;
use router_runtime::wire::{BridgeFrame, RouterFrame};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::transport::{Channel, Endpoint};

use crate::BoxError;
use crate::inprocess::Settings;
use crate::load::{Header, Workload};
use crate::router_child::RouterChild;
use crate::scenarios::{Measured, Timing, Unit, interleaved};
use crate::servers::connect_bridge;
use crate::target::Target;

/// What the registrations scenario measured.
#[derive(Debug)]
pub struct Registrations {
    /// Idle registrations added.
    pub instances: usize,
    /// Connections that carried them.
    pub connections: usize,
    /// Unary callers.
    pub concurrency: usize,
    /// Latency with the 2 real instances only.
    pub before: Measured,
    /// Latency with the N idle registrations added.
    pub after: Measured,
    /// Router RSS (KiB) before the idle registrations, 0.5 s after the
    /// latency measurement.
    pub rss_before_kib: u64,
    /// Router RSS (KiB) once they are all welcomed, 0.5 s later.
    pub rss_after_kib: u64,
    /// Router RSS (KiB) before the idle registrations, [`SETTLED`] later
    /// (once the allocator returned the pages the burst freed).
    pub settled_before_kib: u64,
    /// Router RSS (KiB) with them, [`SETTLED`] later.
    pub settled_after_kib: u64,
    /// Time until every idle registration got its Welcome.
    pub register_time: Duration,
}

impl Registrations {
    /// Router memory per registration, in KiB, read 0.5 s after the
    /// registrations (freed pages the allocator still holds included).
    pub fn kib_per_registration(&self) -> f64 {
        self.rss_after_kib.saturating_sub(self.rss_before_kib) as f64 / self.instances.max(1) as f64
    }

    /// Router memory per registration, in KiB, read [`SETTLED`] after the
    /// registrations: what an idle registration keeps.
    pub fn settled_kib_per_registration(&self) -> f64 {
        self.settled_after_kib
            .saturating_sub(self.settled_before_kib) as f64
            / self.instances.max(1) as f64
    }
}

/// Runs the scenario.
pub async fn run(settings: &Settings) -> Result<Registrations, BoxError> {
    let child = RouterChild::spawn(settings.router_exe.as_deref(), None).await?;
    let addr = child.addr;
    let real: Vec<_> = (0..2)
        .map(|i| connect_bridge(addr, &format!("real-{i}"), Some(("kind", "real"))))
        .collect();
    for bridge in &real {
        tokio::time::timeout(Duration::from_secs(20), bridge.registered())
            .await
            .map_err(|_| "a real instance did not register with the router child")?;
    }
    let target = Target::connect("routed", addr, settings.connections)
        .await?
        .with_headers(vec![Header::new(SELECT_HEADER, "kind=real")?]);
    let workload = Workload::Unary {
        payload: vec![0x5a; settings.payload_size],
    };
    let timing = Timing {
        rounds: settings.rounds,
        duration: settings.duration,
    };
    let concurrency = settings.registrations_concurrency;

    let before = measure(&target, &workload, concurrency, timing, "2").await?;
    settle().await;
    let rss_before_kib = child.rss_kib()?;
    tokio::time::sleep(SETTLED).await;
    let settled_before_kib = child.rss_kib()?;

    let started = Instant::now();
    let idle = register_idle(
        addr,
        settings.instances,
        settings.register_connections,
        settings.register_in_flight,
    )
    .await?;
    let register_time = started.elapsed();
    settle().await;
    let rss_after_kib = child.rss_kib()?;
    tokio::time::sleep(SETTLED).await;
    let settled_after_kib = child.rss_kib()?;

    let label = format!("{}", settings.instances + 2);
    let after = measure(&target, &workload, concurrency, timing, &label).await?;

    drop(idle);
    for bridge in real {
        bridge.abort().await;
    }
    drop(child);
    Ok(Registrations {
        instances: settings.instances,
        connections: settings.register_connections,
        concurrency,
        before,
        after,
        rss_before_kib,
        rss_after_kib,
        settled_before_kib,
        settled_after_kib,
        register_time,
    })
}

/// How long after the 0.5 s reading the RSS is read again: past jemalloc's
/// dirty-page decay (10 s), so the pages the registration burst freed (old
/// snapshots, connection write buffers) are back with the system and the
/// figure is what the registrations keep.
pub const SETTLED: Duration = Duration::from_secs(12);

/// How long the idle registrations may take to be welcomed.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(120);

/// Lets the router finish its bookkeeping (and the allocator its frees).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

async fn measure(
    target: &Target,
    workload: &Workload,
    concurrency: usize,
    timing: Timing,
    instances: &str,
) -> Result<Measured, BoxError> {
    let row = interleaved(
        &format!("unary with {instances} instances"),
        Unit::Calls,
        &[target],
        workload,
        concurrency,
        timing,
    )
    .await?;
    row.targets
        .into_iter()
        .next()
        .ok_or_else(|| "no measurement".into())
}

/// Idle registrations, kept open until dropped.
struct IdleRegistrations {
    _tasks: JoinSet<()>,
}

/// Opens `n` raw register streams spread over `connections` HTTP/2
/// connections, at most `in_flight` awaiting their Welcome at once (0: no
/// bound), and waits until the router welcomed each.
async fn register_idle(
    addr: std::net::SocketAddr,
    n: usize,
    connections: usize,
    in_flight: usize,
) -> Result<IdleRegistrations, BoxError> {
    let gate = Arc::new(Semaphore::new(if in_flight == 0 {
        Semaphore::MAX_PERMITS
    } else {
        in_flight
    }));
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to the router child: {e}"))?;
        channels.push(channel);
    }
    let mut tasks = JoinSet::new();
    let mut welcomes = Vec::with_capacity(n);
    for i in 0..n {
        let (welcomed, welcome) = oneshot::channel();
        welcomes.push(welcome);
        let permit = tokio::time::timeout(REGISTER_TIMEOUT, gate.clone().acquire_owned())
            .await
            .map_err(|_| format!("no idle registration was welcomed for {REGISTER_TIMEOUT:?}"))??;
        tasks.spawn(hold_registration(
            channels[i % channels.len()].clone(),
            format!("raw-{i}"),
            welcomed,
            permit,
        ));
    }
    let all = async {
        for (i, welcome) in welcomes.into_iter().enumerate() {
            match welcome.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("idle registration {i} failed: {e}")),
                Err(_) => return Err(format!("idle registration {i} ended before Welcome")),
            }
        }
        Ok(())
    };
    tokio::time::timeout(REGISTER_TIMEOUT, all)
        .await
        .map_err(|_| format!("{n} idle registrations took more than {REGISTER_TIMEOUT:?}"))??;
    Ok(IdleRegistrations { _tasks: tasks })
}

/// One idle registration: sends Hello, waits for Welcome, then answers pings
/// until the stream ends. It takes no calls (its label keeps them away).
async fn hold_registration(
    channel: Channel,
    instance_id: String,
    welcomed: oneshot::Sender<Result<(), String>>,
    permit: OwnedSemaphorePermit,
) {
    let (tx, rx) = mpsc::channel::<BridgeFrame>(4);
    let hello = pb::Hello {
        protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
        instance_id,
        service: GreeterSpec::NAME.to_owned(),
        labels: [("kind".to_owned(), "raw".to_owned())]
            .into_iter()
            .collect(),
        initial_window: 256 * 1024,
        max_frame_size: 64 * 1024,
        ..Default::default()
    };
    if tx.send(BridgeFrame::Hello(hello)).await.is_err() {
        let _ = welcomed.send(Err("frame channel closed".into()));
        return;
    }
    let path = match http::uri::PathAndQuery::try_from(format!(
        "/{}/Register",
        GreeterSpec::REGISTER_NAME
    )) {
        Ok(path) => path,
        Err(e) => {
            let _ = welcomed.send(Err(format!("bad register path: {e}")));
            return;
        }
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Err(e) = grpc.ready().await {
        let _ = welcomed.send(Err(format!("connection not ready: {e}")));
        return;
    }
    let response = grpc
        .streaming(
            Request::new(ReceiverStream::new(rx)),
            path,
            FrameCodec::<BridgeFrame, RouterFrame>::default(),
        )
        .await;
    let mut frames = match response {
        Ok(response) => response.into_inner(),
        Err(status) => {
            let _ = welcomed.send(Err(status.to_string()));
            return;
        }
    };
    match frames.message().await {
        Ok(Some(RouterFrame::Welcome(_))) => {
            drop(permit);
            let _ = welcomed.send(Ok(()));
        }
        Ok(Some(other)) => {
            let _ = welcomed.send(Err(format!("expected Welcome, got {other:?}")));
            return;
        }
        Ok(None) => {
            let _ = welcomed.send(Err("stream ended before Welcome".into()));
            return;
        }
        Err(status) => {
            let _ = welcomed.send(Err(status.to_string()));
            return;
        }
    }
    while let Ok(Some(frame)) = frames.message().await {
        if let RouterFrame::Ping(ping) = frame {
            let pong = BridgeFrame::Pong(pb::Pong { nonce: ping.nonce });
            if tx.send(pong).await.is_err() {
                break;
            }
        }
    }
}
