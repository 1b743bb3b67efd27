//! The targets of `router-bench procs`, each a set of processes: the
//! example `direct` server; the example `router` with one `instance`; a
//! `grpc-router serve` with one `instance`; nginx or HAProxy in front of
//! `direct`.

use std::net::SocketAddr;
use std::path::Path;

use crate::BoxError;
use crate::apps::{self, sibling, start_instance};
use crate::load::Header;
use crate::process::{Proc, TempDir};
use crate::procs::proxies;
use crate::procs::{Exes, Tool};

/// The processes behind one target, kept alive while it is measured.
pub struct Running {
    /// The column it is reported under.
    pub name: String,
    /// Where clients call it.
    pub addr: SocketAddr,
    /// Its admin listener (a daemon's `/metrics`), if it has one.
    pub admin: Option<SocketAddr>,
    /// Sent with every call to it, by tonic and by h2load.
    pub headers: Vec<Header>,
    /// Killed on drop, in order: an instance first (it drains and leaves),
    /// then its router.
    _procs: Vec<Proc>,
    /// Removed after the processes are gone (fields drop in order).
    _dirs: Vec<TempDir>,
}

impl Running {
    /// The same target with `headers` on every call.
    pub fn with_headers(mut self, headers: Vec<Header>) -> Running {
        self.headers = headers;
        self
    }

    fn new(name: &str, addr: SocketAddr, procs: Vec<Proc>, dirs: Vec<TempDir>) -> Running {
        Running {
            name: name.to_owned(),
            addr,
            admin: None,
            headers: Vec::new(),
            _procs: procs,
            _dirs: dirs,
        }
    }
}

/// `direct`: the Greeter on a plain tonic server.
pub async fn direct(exes: &Exes) -> Result<Running, BoxError> {
    let exe = sibling(exes.direct.as_deref(), "direct")?;
    let (proc, addr) = apps::start_direct(&exe).await?;
    Ok(Running::new("direct", addr, vec![proc], Vec::new()))
}

/// `routed`: the example (compiled) `router` with one `instance`.
pub async fn routed(exes: &Exes) -> Result<Running, BoxError> {
    let router = sibling(exes.router.as_deref(), "router")?;
    let instance = sibling(exes.instance.as_deref(), "instance")?;
    let (proc, addr) = apps::start_router(&router).await?;
    let instance = start_instance(&instance, addr, "procs-routed", &[]).await?;
    Ok(Running::new(
        "routed",
        addr,
        vec![instance, proc],
        Vec::new(),
    ))
}

/// `grpc-router serve` named `name`, with `config` and the environment
/// `env`, and one `instance` with `labels` registered.
pub async fn daemon(
    exes: &Exes,
    name: &str,
    config: &str,
    env: &[(&str, &str)],
    labels: &[&str],
) -> Result<Running, BoxError> {
    let exe = sibling(exes.daemon.as_deref(), "grpc-router")?;
    let instance = sibling(exes.instance.as_deref(), "instance")?;
    let daemon = apps::start_daemon(&exe, name, config, env).await?;
    let id = format!("procs-{}", name.replace('+', "-"));
    let instance = start_instance(&instance, daemon.registrations, &id, labels).await?;
    let mut running = Running::new(
        name,
        daemon.clients,
        vec![instance, daemon.proc],
        vec![daemon.dir],
    );
    running.admin = daemon.admin;
    Ok(running)
}

/// nginx or HAProxy (`exe`) in front of `upstream`.
pub async fn proxy(tool: Tool, exe: &Path, upstream: SocketAddr) -> Result<Running, BoxError> {
    let proxy = match tool {
        Tool::Nginx => proxies::start_nginx(exe, upstream).await?,
        Tool::Haproxy => proxies::start_haproxy(exe, upstream).await?,
        Tool::H2load => return Err("h2load is a client, not a proxy".into()),
    };
    Ok(Running::new(
        tool.exe_name(),
        proxy.addr,
        vec![proxy.proc],
        vec![proxy.dir],
    ))
}
