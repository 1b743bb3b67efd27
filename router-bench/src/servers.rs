//! What the benchmark measures: a direct tonic server, a compiled router and
//! the daemon's dynamic router, each with one bridge instance (all in this
//! process), and a router in a child process (for the registrations scenario,
//! so its memory can be read on its own).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::time::Duration;

use myservice_example::greeter::GreeterImpl;
use myservice_example::pb::greeter_client::GreeterClient;
use myservice_example::pb::greeter_server::GreeterServer;
use myservice_example::pb::{GreeterBridge, GreeterRouter};
use router_runtime::admin::AdminService;
use router_runtime::bridge::{BridgeConfig, BridgeHandle};
use router_runtime::pb;
use router_runtime::pb::router_admin_client::RouterAdminClient;
use router_runtime::router::{DynamicRouter, RouterConfig};
use router_runtime::server::{Listener, RouterServer};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};

use crate::BoxError;
use crate::machine::Memory;

/// How long to wait for a connection, a registration or a child's address.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A named address with its client connections.
#[derive(Clone)]
pub struct Target {
    /// `direct`, `routed` or an extra target's name.
    pub name: String,
    /// One client per connection; workers share them round robin.
    pub clients: Vec<GreeterClient<Channel>>,
}

impl Target {
    /// Opens `connections` separate HTTP/2 connections to `addr`.
    pub async fn connect(
        name: impl Into<String>,
        addr: SocketAddr,
        connections: usize,
    ) -> Result<Target, BoxError> {
        let name = name.into();
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections {
            let channel = tokio::time::timeout(
                SETUP_TIMEOUT,
                Endpoint::from_shared(format!("http://{addr}"))?
                    .tcp_nodelay(true)
                    .connect(),
            )
            .await
            .map_err(|_| format!("timed out connecting to {name} at {addr}"))?
            .map_err(|e| format!("cannot connect to {name} at {addr}: {e}"))?;
            clients.push(GreeterClient::new(channel));
        }
        Ok(Target { name, clients })
    }

    /// The client worker `worker` uses.
    pub fn client(&self, worker: usize) -> GreeterClient<Channel> {
        self.clients[worker % self.clients.len()].clone()
    }
}

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
    let bridge = connect_bridge(addr, "bench-instance", None);
    tokio::time::timeout(SETUP_TIMEOUT, bridge.registered())
        .await
        .map_err(|_| "the bridge did not register with the in-process router")?;
    Ok(InProcessRouter {
        addr,
        router,
        bridge,
    })
}

/// The `grpc-router` daemon's router in this process: a [`DynamicRouter`]
/// (no service compiled in) served by [`RouterServer`] on one listener for
/// clients and registrations (the daemon's default), with one bridge
/// instance registered as [`start_routed`]'s.
pub struct InProcessDaemon {
    /// Where clients call the router.
    pub addr: SocketAddr,
    /// The router (kept for its stats).
    pub router: DynamicRouter,
    /// The bridge instance.
    pub bridge: BridgeHandle,
    server: tokio::task::JoinHandle<()>,
}

/// Starts a dynamic router served by `RouterServer` on 127.0.0.1:0 and
/// connects one bridge instance to it.
pub async fn start_daemon() -> Result<InProcessDaemon, BoxError> {
    start_daemon_with(None).await
}

/// [`start_daemon`], its router recording into `metrics` when given.
pub async fn start_daemon_with(
    metrics: Option<router_runtime::metrics::RouterMetrics>,
) -> Result<InProcessDaemon, BoxError> {
    let listener = Listener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let router = DynamicRouter::new(RouterConfig {
        metrics,
        ..RouterConfig::default()
    });
    let served = RouterServer::new("bench-daemon").route_dynamic(&router);
    let server = tokio::spawn(async move {
        if let Err(e) = served.serve(listener, None, std::future::pending()).await {
            eprintln!("daemon router stopped: {e}");
        }
    });
    let bridge = connect_bridge(addr, "bench-instance", None);
    tokio::time::timeout(SETUP_TIMEOUT, bridge.registered())
        .await
        .map_err(|_| "the bridge did not register with the in-process dynamic router")?;
    Ok(InProcessDaemon {
        addr,
        router,
        bridge,
        server,
    })
}

impl InProcessDaemon {
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

/// The configuration a `grpc-router` child runs with.
const DAEMON_CONFIG: &str =
    "router_id = \"bench-daemon\"\n[clients]\naddress = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n";

/// A router running in a child process (this binary's `serve-router`, or the
/// `grpc-router` daemon).
pub struct RouterChild {
    child: Child,
    /// Closing it tells the child to exit.
    _stdin: Option<ChildStdin>,
    /// Where the child's router listens.
    pub addr: SocketAddr,
    /// The global allocator the child runs with (`glibc`, `mimalloc` ...).
    pub allocator: String,
}

impl RouterChild {
    /// Re-executes this binary as `serve-router` and reads its address.
    pub async fn spawn() -> Result<RouterChild, BoxError> {
        RouterChild::spawn_exe(&std::env::current_exe()?, None).await
    }

    /// Runs `exe` (a `router-bench` binary, perhaps built with another
    /// allocator) as `serve-router`, with each call's response window
    /// `window_kib` if given, and reads its address. A `grpc-router` binary
    /// (the daemon) runs as `serve` with a configuration listening on
    /// 127.0.0.1:0 for clients and registrations.
    pub async fn spawn_exe(exe: &Path, window_kib: Option<u32>) -> Result<RouterChild, BoxError> {
        let daemon = exe
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("grpc-router"));
        let mut command = std::process::Command::new(exe);
        let mut config = None;
        if daemon {
            if window_kib.is_some() {
                return Err("--window-kib cannot be given to grpc-router (no such setting)".into());
            }
            let path = std::env::temp_dir()
                .join(format!("router-bench-daemon-{}.toml", std::process::id()));
            std::fs::write(&path, DAEMON_CONFIG)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            command.arg("serve").arg("--config").arg(&path);
            config = Some(path);
        } else {
            command.args(["serve-router", "--listen", "127.0.0.1:0"]);
            if let Some(kib) = window_kib {
                command.args(["--window-kib", &kib.to_string()]);
            }
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the router child {}: {e}", exe.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("child has no stdout")?;
        let line = tokio::time::timeout(
            SETUP_TIMEOUT,
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                BufReader::new(stdout).read_line(&mut line).map(|_| line)
            }),
        )
        .await;
        if let Some(path) = config {
            // Read once at start; only a SIGHUP (never sent) reads it again.
            let _ = std::fs::remove_file(path);
        }
        let parsed = match line {
            Ok(Ok(Ok(line))) => {
                let mut words = line.split_whitespace();
                // `ADDR ALLOCATOR`, or the daemon's `listening clients=ADDR ...`.
                let (addr, allocator) = match words.next() {
                    Some("listening") => (
                        words.next().and_then(|w| w.strip_prefix("clients=")),
                        "grpc-router",
                    ),
                    first => (first, words.next().unwrap_or("unknown")),
                };
                let addr = addr.and_then(|a| a.parse::<SocketAddr>().ok());
                addr.map(|addr| (addr, allocator.to_owned()))
            }
            _ => None,
        };
        match parsed {
            Some((addr, allocator)) => Ok(RouterChild {
                child,
                _stdin: stdin,
                addr,
                allocator,
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err("the router child process did not print its address".into())
            }
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> Result<u64, BoxError> {
        crate::machine::vm_rss_kib(self.pid())
    }

    /// The child's resident set size now and at its highest.
    pub fn memory(&self) -> Result<Memory, BoxError> {
        crate::machine::memory(self.pid())
    }

    /// Calls the child's router holds state for (from its admin service).
    pub async fn active_calls(&self) -> Result<u64, BoxError> {
        let mut admin = RouterAdminClient::connect(format!("http://{}", self.addr))
            .await
            .map_err(|e| format!("cannot reach the router child's admin service: {e}"))?;
        let listed = admin
            .list_services(pb::ListServicesRequest::default())
            .await?
            .into_inner();
        Ok(listed.services.iter().map(|s| s.active_calls).sum())
    }

    /// Waits until the child's router holds no call, polling its admin
    /// service, for at most `timeout`.
    pub async fn wait_idle(&self, timeout: Duration) -> Result<(), BoxError> {
        let give_up = tokio::time::Instant::now() + timeout;
        loop {
            let active = self.active_calls().await?;
            if active == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(format!(
                    "the router child still holds {active} calls after {timeout:?}"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for RouterChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
