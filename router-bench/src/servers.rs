//! The in-process servers of `router-bench`: a direct tonic server, a
//! compiled router and a dynamic router, each with one bridge instance (all
//! in this process); and `serve-router`, the router a [`RouterChild`] runs.
//!
//! [`RouterChild`]: crate::router_child::RouterChild

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use myservice::greeter::GreeterImpl;
use myservice::pb::greeter_server::GreeterServer;
use myservice::pb::{GreeterBridge, GreeterRouter};
use router_runtime::admin::AdminService;
use router_runtime::bridge::{BridgeConfig, BridgeHandle};
use router_runtime::router::{DynamicRouter, RouterConfig};
use router_runtime::server::{Listener, RouterServer};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::BoxError;

/// How long to wait for a bridge to register.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Accepted connections of `listener`, with Nagle's algorithm off (as tonic's
/// own `serve` and the example's router do): without it small gRPC frames
/// wait for delayed ACKs and the tail latency jumps to ~40 ms.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serves `GreeterImpl` directly with tonic on `listen`.
pub async fn start_direct(listen: SocketAddr) -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("direct server cannot bind {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let served = Server::builder()
            .add_service(GreeterServer::new(GreeterImpl::new("direct")))
            .serve_with_incoming(incoming(listener))
            .await;
        if let Err(e) = served {
            eprintln!("direct server stopped: {e}");
        }
    });
    Ok(addr)
}

/// A router in this process with one bridge instance running `GreeterImpl`.
pub struct InProcessRouter {
    /// Where clients call the router.
    pub addr: SocketAddr,
    /// The router (kept for its stats).
    pub router: GreeterRouter,
    /// The bridge instance.
    pub bridge: BridgeHandle,
}

/// Starts a router on 127.0.0.1:0 and connects one bridge instance to it.
pub async fn start_routed() -> Result<InProcessRouter, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = GreeterRouter::new(RouterConfig::default());
    let server = router.add_to(Server::builder());
    tokio::spawn(async move {
        if let Err(e) = server.serve_with_incoming(incoming(listener)).await {
            eprintln!("router stopped: {e}");
        }
    });
    let bridge = registered_bridge(addr, "router").await?;
    Ok(InProcessRouter {
        addr,
        router,
        bridge,
    })
}

/// A dynamic router in this process, as the `grpc-router` daemon builds it:
/// a [`DynamicRouter`] (no service compiled in, the Greeter learnt from the
/// registration) served by [`RouterServer`] on one listener for clients and
/// registrations, with one bridge instance registered as [`start_routed`]'s.
/// Not the daemon: no configuration, policies, logging or process of its
/// own (`router-bench procs` measures the real `grpc-router`).
pub struct InProcessDynamic {
    /// Where clients call the router.
    pub addr: SocketAddr,
    /// The router (kept for its stats).
    pub router: DynamicRouter,
    /// The bridge instance.
    pub bridge: BridgeHandle,
    server: tokio::task::JoinHandle<()>,
}

/// Starts a dynamic router served by `RouterServer` on 127.0.0.1:0 and
/// connects one bridge instance to it; its router records into `metrics`
/// when given.
pub async fn start_dynamic(
    metrics: Option<router_runtime::metrics::RouterMetrics>,
) -> Result<InProcessDynamic, BoxError> {
    let listener = Listener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let router = DynamicRouter::new(RouterConfig {
        metrics,
        ..RouterConfig::default()
    });
    let served = RouterServer::new("bench-dynamic").route_dynamic(&router);
    let server = tokio::spawn(async move {
        if let Err(e) = served.serve(listener, None, std::future::pending()).await {
            eprintln!("dynamic router stopped: {e}");
        }
    });
    let bridge = registered_bridge(addr, "dynamic router").await?;
    Ok(InProcessDynamic {
        addr,
        router,
        bridge,
        server,
    })
}

impl InProcessDynamic {
    /// Calls the router started and retried, over every service it learnt.
    pub fn calls(&self) -> (u64, u64) {
        self.router.services().iter().fold((0, 0), |(s, r), svc| {
            (
                s + svc.stats().calls_started(),
                r + svc.stats().calls_retried(),
            )
        })
    }

    /// Stops the bridge, then the server.
    pub async fn stop(self) {
        self.bridge.abort().await;
        self.server.abort();
    }
}

/// One bridge instance registered with the in-process `router` at `addr`.
async fn registered_bridge(addr: SocketAddr, router: &str) -> Result<BridgeHandle, BoxError> {
    let bridge = connect_bridge(addr, "bench-instance", None);
    tokio::time::timeout(SETUP_TIMEOUT, bridge.registered())
        .await
        .map_err(|_| format!("the bridge did not register with the in-process {router}"))?;
    Ok(bridge)
}

/// Connects a bridge running `GreeterImpl` as `id` to the router at `addr`,
/// optionally with one label.
pub fn connect_bridge(addr: SocketAddr, id: &str, label: Option<(&str, &str)>) -> BridgeHandle {
    let mut options = BridgeConfig::new(format!("http://{addr}")).instance_id(id);
    if let Some((key, value)) = label {
        options = options.label(key, value);
    }
    GreeterBridge::new(GreeterImpl::new(id)).connect(options)
}

/// The `serve-router` subcommand: serves a router (and its admin service)
/// whose HTTP/2 connections take many concurrent streams, prints the bound
/// address and the allocator's name on stdout, and returns when stdin reaches
/// end of file (the parent went away). `window_kib` sets each call's response
/// window.
pub async fn serve_router_child(
    listen: SocketAddr,
    window_kib: Option<u32>,
) -> Result<(), BoxError> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{addr} {}", crate::alloc::NAME)?;
        stdout.flush()?;
    }
    let mut config = RouterConfig::default();
    if let Some(kib) = window_kib {
        config.initial_window = kib.saturating_mul(1024).max(1);
    }
    let router = GreeterRouter::new(config);
    let admin = AdminService::new(router.config_router_id())
        .with_router(&router)
        .into_server();
    let server = router
        .add_to(Server::builder().max_concurrent_streams(Some(100_000)))
        .add_service(admin);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = stop.send(());
    });
    tokio::select! {
        served = server.serve_with_incoming(incoming(listener)) => served?,
        _ = stopped => {}
    }
    Ok(())
}
