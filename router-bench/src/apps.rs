//! The workspace's binaries as child processes ([`Proc`]): the example
//! `direct` server, `router` and `instance`, and the `grpc-router` daemon,
//! each started on 127.0.0.1 port 0 with its readiness line awaited.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::BoxError;
use crate::process::{Proc, TempDir};

/// How long a process may take to print its address or register.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an instance is given to drain when its guard is dropped.
const INSTANCE_GRACE: Duration = Duration::from_secs(3);

/// A binary of this workspace: `explicit`, or `name` next to this executable
/// (cargo puts every binary of a profile in `target/<profile>/`).
pub fn sibling(explicit: Option<&Path>, name: &str) -> Result<PathBuf, BoxError> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let path = std::env::current_exe()?.with_file_name(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no {name} binary at {}: build the binaries first, with the same profile as this one \
             (`cargo build --release -p myservice --bins -p grpc-router -p router-bench`), \
             or give its path with a flag",
            path.display()
        )
        .into())
    }
}

/// A child process's command with quiet logs.
pub fn command(exe: &Path) -> Command {
    let mut command = Command::new(exe);
    command.env("RUST_LOG", "warn");
    command
}

/// Starts the example `direct` server; its address.
pub async fn start_direct(exe: &Path) -> Result<(Proc, SocketAddr), BoxError> {
    let mut cmd = command(exe);
    cmd.args(["--listen", "127.0.0.1:0", "--id", "direct"]);
    let mut proc = Proc::spawn("direct", cmd)?;
    let addr = proc.wait_line(START_TIMEOUT, parse_listening_on).await?;
    Ok((proc, addr))
}

/// Starts the example (compiled) `router`; its address.
pub async fn start_router(exe: &Path) -> Result<(Proc, SocketAddr), BoxError> {
    let mut cmd = command(exe);
    cmd.args(["--listen", "127.0.0.1:0"]);
    let mut proc = Proc::spawn("router", cmd)?;
    let addr = proc.wait_line(START_TIMEOUT, parse_listening_on).await?;
    Ok((proc, addr))
}

/// Starts the example `instance` as `id` (with `labels`, `key=value`)
/// registering with the router at `router`, and waits until it printed that
/// the router accepted it. Dropping the guard sends SIGTERM first, so the
/// instance drains and leaves its router cleanly.
pub async fn start_instance(
    exe: &Path,
    router: SocketAddr,
    id: &str,
    labels: &[&str],
) -> Result<Proc, BoxError> {
    let mut cmd = command(exe);
    cmd.arg("--router")
        .arg(format!("http://{router}"))
        .args(["--id", id]);
    for label in labels {
        cmd.args(["--label", label]);
    }
    let mut proc = Proc::spawn(id, cmd)?;
    let expected = format!("registered as {id}");
    proc.wait_line(START_TIMEOUT, move |line| (line == expected).then_some(()))
        .await?;
    Ok(proc.stop_gracefully(INSTANCE_GRACE))
}

/// A daemon configuration: clients and registrations on one listener (its
/// default) on a free port, an admin listener on another if `admin`,
/// warnings only.
pub fn daemon_config(router_id: &str, admin: bool) -> String {
    let admin = if admin {
        "[admin]\naddress = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    format!(
        "router_id = \"{router_id}\"\n[clients]\naddress = \"127.0.0.1:0\"\n{admin}[log]\nlevel = \"warn\"\n"
    )
}

/// A running `grpc-router serve`.
pub struct Daemon {
    /// The process.
    pub proc: Proc,
    /// Where clients call it.
    pub clients: SocketAddr,
    /// Where instances register.
    pub registrations: SocketAddr,
    /// Its admin listener (`/metrics`), when configured.
    pub admin: Option<SocketAddr>,
    /// Its configuration file.
    pub dir: TempDir,
}

/// Starts `grpc-router serve` (`exe`) as `name` with `config`, and the
/// environment `env` (secrets the configuration names).
pub async fn start_daemon(
    exe: &Path,
    name: &str,
    config: &str,
    env: &[(&str, &str)],
) -> Result<Daemon, BoxError> {
    let dir = TempDir::new(&name.replace('+', "-"))?;
    let path = dir.write("router.toml", config.as_bytes())?;
    let mut cmd = command(exe);
    cmd.arg("serve").arg("--config").arg(&path);
    cmd.envs(env.iter().copied());
    let mut proc = Proc::spawn(name, cmd)?;
    let listening = proc
        .wait_line(START_TIMEOUT, parse_daemon_listening)
        .await?;
    Ok(Daemon {
        proc,
        clients: listening.clients,
        registrations: listening.registrations,
        admin: listening.admin,
        dir,
    })
}

/// The address in a `listening on ADDR` line (the example `router` and
/// `direct` binaries).
pub fn parse_listening_on(line: &str) -> Option<SocketAddr> {
    line.strip_prefix("listening on ")?.trim().parse().ok()
}

/// The addresses in the daemon's `listening clients=ADDR [registrations=ADDR]
/// [admin=ADDR]` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonListening {
    /// `clients=`.
    pub clients: SocketAddr,
    /// `registrations=`, else the clients' address (one shared listener).
    pub registrations: SocketAddr,
    /// `admin=`, if the admin listener is on.
    pub admin: Option<SocketAddr>,
}

/// Reads the daemon's `listening ...` line.
pub fn parse_daemon_listening(line: &str) -> Option<DaemonListening> {
    let mut words = line.split_whitespace();
    if words.next()? != "listening" {
        return None;
    }
    let (mut clients, mut registrations, mut admin) = (None, None, None);
    for word in words {
        if let Some((key, addr)) = word.split_once('=') {
            let slot = match key {
                "clients" => &mut clients,
                "registrations" => &mut registrations,
                "admin" => &mut admin,
                _ => continue,
            };
            *slot = addr.parse().ok();
        }
    }
    let clients = clients?;
    Some(DaemonListening {
        clients,
        registrations: registrations.unwrap_or(clients),
        admin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn reads_the_examples_listening_line() {
        assert_eq!(
            parse_listening_on("listening on 127.0.0.1:4242"),
            Some(addr("127.0.0.1:4242"))
        );
        assert_eq!(parse_listening_on("listening on nowhere"), None);
        assert_eq!(parse_listening_on("registered as x"), None);
    }

    #[test]
    fn reads_the_daemons_listening_line() {
        let line =
            "listening clients=127.0.0.1:1000 registrations=127.0.0.1:1001 admin=127.0.0.1:1002";
        assert_eq!(
            parse_daemon_listening(line),
            Some(DaemonListening {
                clients: addr("127.0.0.1:1000"),
                registrations: addr("127.0.0.1:1001"),
                admin: Some(addr("127.0.0.1:1002")),
            })
        );
        let shared = parse_daemon_listening("listening clients=127.0.0.1:7").expect("parsed");
        assert_eq!((shared.registrations, shared.admin), (shared.clients, None));
        assert_eq!(
            parse_daemon_listening("listening registrations=127.0.0.1:7"),
            None
        );
        assert_eq!(parse_daemon_listening("starting clients=127.0.0.1:7"), None);
    }

    #[test]
    fn the_daemon_config_has_an_admin_listener_only_when_asked() {
        let plain = daemon_config("a", false);
        assert!(plain.contains("router_id = \"a\"") && !plain.contains("[admin]"));
        assert!(daemon_config("a", true).contains("[admin]\naddress = \"127.0.0.1:0\""));
    }
}
