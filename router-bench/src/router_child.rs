//! A router in a child process, so its memory can be read on its own: this
//! package's hidden `serve-router` (a compiled Greeter router with its admin
//! service; [`crate::servers::serve_router_child`]), run from this binary or
//! another build of it, or the `grpc-router` daemon.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use router_runtime::pb;
use router_runtime::pb::router_admin_client::RouterAdminClient;

use crate::BoxError;
use crate::apps::{self, START_TIMEOUT};
use crate::machine::Memory;
use crate::process::{Proc, TempDir};

/// A router running in a child process.
pub struct RouterChild {
    proc: Proc,
    /// The daemon's configuration directory.
    _dir: Option<TempDir>,
    /// Where the child's router listens (clients, registrations and its
    /// admin service).
    pub addr: SocketAddr,
    /// The global allocator the child runs with (`glibc`, `jemalloc` ...;
    /// `grpc-router` for the daemon).
    pub allocator: String,
}

impl RouterChild {
    /// Runs `exe` (a build of this package, perhaps with another allocator;
    /// `None` is this binary) as `serve-router`, with each call's response
    /// window `window_kib` if given. A `grpc-router` binary (the daemon) runs
    /// as `serve` with a configuration listening on 127.0.0.1:0 for clients
    /// and registrations.
    pub async fn spawn(
        exe: Option<&Path>,
        window_kib: Option<u32>,
    ) -> Result<RouterChild, BoxError> {
        let exe = match exe {
            Some(exe) => exe.to_owned(),
            None => std::env::current_exe()?,
        };
        let exe = exe.as_path();
        let daemon = exe
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("grpc-router"));
        if daemon {
            if window_kib.is_some() {
                return Err("--window-kib cannot be given to grpc-router (no such setting)".into());
            }
            let config = apps::daemon_config("bench-daemon", false);
            let daemon = apps::start_daemon(exe, "grpc-router", &config, &[]).await?;
            return Ok(RouterChild {
                proc: daemon.proc,
                _dir: Some(daemon.dir),
                addr: daemon.clients,
                allocator: "grpc-router".to_owned(),
            });
        }
        let mut command = apps::command(exe);
        command.args(["serve-router", "--listen", "127.0.0.1:0"]);
        if let Some(kib) = window_kib {
            command.args(["--window-kib", &kib.to_string()]);
        }
        let mut proc = Proc::spawn("router child", command)?;
        // `ADDR ALLOCATOR`.
        let (addr, allocator) = proc
            .wait_line(START_TIMEOUT, |line| {
                let mut words = line.split_whitespace();
                let addr = words.next()?.parse::<SocketAddr>().ok()?;
                Some((addr, words.next().unwrap_or("unknown").to_owned()))
            })
            .await?;
        Ok(RouterChild {
            proc,
            _dir: None,
            addr,
            allocator,
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The child's resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> Result<u64, BoxError> {
        Ok(self.proc.memory()?.rss_kib)
    }

    /// The child's resident set size now and at its highest.
    pub fn memory(&self) -> Result<Memory, BoxError> {
        self.proc.memory()
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
