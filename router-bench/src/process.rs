//! Child processes of the bench: started in a process group of their own,
//! their readiness (a stdout line, or a port that accepts connections)
//! awaited under a timeout, and the whole group killed when the guard is
//! dropped (on return, on error and on panic).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::BoxError;
use crate::machine::Memory;

/// A running child process; dropping it kills its process group (so nginx's
/// workers go with their master) and reaps it.
pub struct Proc {
    /// What the process is, for messages (`router`, `nginx` ...).
    pub name: String,
    child: Child,
    pid: u32,
    /// Held open: a child that watches its stdin (the bench's own
    /// `serve-router`) exits when the bench goes away, however it ends.
    _stdin: Option<ChildStdin>,
    /// Time given to exit after SIGTERM before the SIGKILL (`None`: SIGKILL
    /// at once).
    grace: Option<Duration>,
}

impl Proc {
    /// Starts `command` in a process group of its own, stdin an open pipe,
    /// stdout piped (for [`Proc::wait_line`]; unread output is discarded),
    /// stderr inherited.
    pub fn spawn(name: &str, mut command: Command) -> Result<Proc, BoxError> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let shown = format!("{command:?}");
        let mut command = tokio::process::Command::from(command);
        command.process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {name} ({shown}): {e}"))?;
        let pid = child
            .id()
            .ok_or_else(|| format!("{name} exited before it could be watched"))?;
        Ok(Proc {
            name: name.to_owned(),
            _stdin: child.stdin.take(),
            child,
            pid,
            grace: None,
        })
    }

    /// On drop, sends SIGTERM first and waits up to `grace` for the process
    /// to exit (an instance then drains and leaves its router without a
    /// warning), before the SIGKILL.
    pub fn stop_gracefully(mut self, grace: Duration) -> Proc {
        self.grace = Some(grace);
        self
    }

    /// Waits up to `timeout` for the first stdout line for which `parse`
    /// gives a value, and returns that value. Later output is read and
    /// discarded by a task of its own, so the child never blocks on (or
    /// fails writing to) its stdout. Callable once.
    pub async fn wait_line<T: Send + 'static>(
        &mut self,
        timeout: Duration,
        parse: impl Fn(&str) -> Option<T> + Send + 'static,
    ) -> Result<T, BoxError> {
        let stdout = self
            .child
            .stdout
            .take()
            .ok_or_else(|| format!("{}: stdout already taken", self.name))?;
        let (found_tx, found) = oneshot::channel::<Result<T, String>>();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut seen = Vec::new();
            let outcome = loop {
                match lines.next_line().await {
                    Ok(None) => {
                        break Err(format!(
                            "closed its stdout without the expected line (it printed {seen:?})"
                        ));
                    }
                    Ok(Some(line)) => {
                        let text = line.trim_end();
                        if let Some(value) = parse(text) {
                            break Ok(value);
                        }
                        if seen.len() < 5 {
                            seen.push(text.to_owned());
                        }
                    }
                    Err(e) => break Err(format!("cannot read its stdout: {e}")),
                }
            };
            let _ = found_tx.send(outcome);
            while let Ok(Some(_)) = lines.next_line().await {}
        });
        let failure = match tokio::time::timeout(timeout, found).await {
            Ok(Ok(Ok(value))) => return Ok(value),
            Ok(Ok(Err(e))) => e,
            Ok(Err(_)) => "its stdout reader failed".to_owned(),
            Err(_) => format!("printed no readiness line within {timeout:?}"),
        };
        let exit = self.exit_note();
        Err(format!("{}: {failure}{exit}", self.name).into())
    }

    /// Waits up to `timeout` until `addr` accepts TCP connections (for tools
    /// that print nothing when ready), failing early if the process exits.
    pub async fn wait_listening(
        &mut self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<(), BoxError> {
        let give_up = Instant::now() + timeout;
        loop {
            self.check_running()?;
            let attempt =
                tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
                    .await;
            if let Ok(Ok(_)) = attempt {
                return Ok(());
            }
            if Instant::now() >= give_up {
                return Err(
                    format!("{} is not listening on {addr} after {timeout:?}", self.name).into(),
                );
            }
            // Nothing to wait on but the port itself: poll it.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The process's resident set size now and at its highest.
    pub fn memory(&self) -> Result<Memory, BoxError> {
        crate::machine::memory(self.pid)
    }

    /// An error if the process has exited (with its status).
    pub fn check_running(&mut self) -> Result<(), BoxError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("{} exited: {status}", self.name).into()),
            Err(e) => Err(format!("cannot query {}: {e}", self.name).into()),
        }
    }

    /// Sends SIGTERM (an instance drains and leaves) and waits up to
    /// `timeout` for the process to exit, killing it if it does not; whether
    /// it exited by itself.
    pub async fn drain(mut self, timeout: Duration) -> Result<bool, BoxError> {
        if self.running() {
            self.signal(Signal::TERM)
                .map_err(|e| format!("cannot send SIGTERM to {}: {e}", self.name))?;
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) => Err(format!("waiting for {}: {e}", self.name).into()),
            Err(_) => {
                self.kill().await?;
                Ok(false)
            }
        }
    }

    /// Sends SIGKILL to the process group and reaps the process.
    pub async fn kill(mut self) -> Result<(), BoxError> {
        if self.running() {
            let _ = self.signal(Signal::KILL);
        }
        self.child
            .wait()
            .await
            .map(drop)
            .map_err(|e| format!("cannot reap {}: {e}", self.name).into())
    }

    /// Whether the process has not exited. Until it is reaped (by this
    /// call seeing it exit, or by a wait) its pid stays taken, so a signal
    /// sent to its group after a `true` cannot reach a recycled pid.
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` to the process group (the child leads it).
    fn signal(&self, signal: Signal) -> Result<(), String> {
        let group = i32::try_from(self.pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| format!("{} has no valid process id", self.name))?;
        kill_process_group(group, signal).map_err(|e| e.to_string())
    }

    fn exit_note(&mut self) -> String {
        match self.child.try_wait() {
            Ok(Some(status)) => format!(" (exited: {status})"),
            _ => String::new(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(grace) = self.grace
            && self.running()
            && self.signal(Signal::TERM).is_ok()
        {
            let give_up = std::time::Instant::now() + grace;
            // A synchronous drop has no exit event to wait on: poll.
            while self.running() && std::time::Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if self.running() {
            // The whole group: nginx's workers go with their master.
            let _ = self.signal(Signal::KILL);
            let give_up = std::time::Instant::now() + Duration::from_secs(5);
            while self.running() && std::time::Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// A free TCP port on 127.0.0.1, for tools that cannot listen on port 0 and
/// report the port: the system picks it (bind to port 0), the socket is
/// closed, and the tool binds it right after.
pub fn free_port() -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot bind 127.0.0.1:0 to find a free port: {e}"))?;
    Ok(listener.local_addr()?)
}

/// A directory removed (with its contents) when dropped.
pub struct TempDir {
    /// Its path.
    pub path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/router-bench-<pid>-<name>`.
    pub fn new(name: &str) -> Result<TempDir, BoxError> {
        let path = std::env::temp_dir().join(format!("router-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TempDir { path })
    }

    /// Writes `contents` to the file `name` in the directory.
    pub fn write(&self, name: &str, contents: &[u8]) -> Result<PathBuf, BoxError> {
        let path = self.path.join(name);
        std::fs::write(&path, contents)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// An executable named `name`: on `PATH`, or in the sbin directories a
/// non-root `PATH` may lack (Debian installs nginx and haproxy in
/// `/usr/sbin`).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_is_on_loopback_and_not_zero() {
        let addr = free_port().expect("free port");
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0);
    }

    #[tokio::test]
    async fn dropping_the_guard_kills_the_process() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo ready; exec sleep 600"]);
        let mut proc = Proc::spawn("sleeper", command).expect("spawn sh");
        let line = proc
            .wait_line(Duration::from_secs(10), |l| (l == "ready").then_some(()))
            .await;
        assert!(line.is_ok(), "{line:?}");
        let pid = proc.pid();
        proc.check_running().expect("running");
        drop(proc);
        // Killed and reaped by the guard: the pid no longer names the sleeper.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&cmdline).contains("600"));
    }

    #[tokio::test]
    async fn a_child_that_exits_without_its_line_is_an_error() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo something else"]);
        let mut proc = Proc::spawn("quitter", command).expect("spawn sh");
        let line = proc
            .wait_line(Duration::from_secs(10), |l| (l == "ready").then_some(()))
            .await;
        let error = line.expect_err("no readiness line").to_string();
        assert!(error.contains("something else"), "{error}");
    }

    #[tokio::test]
    async fn a_drained_process_that_exits_on_sigterm_exited_by_itself() {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "trap 'exit 0' TERM; echo ready; while :; do sleep 1; done",
        ]);
        let mut proc = Proc::spawn("drainer", command).expect("spawn sh");
        proc.wait_line(Duration::from_secs(10), |l| (l == "ready").then_some(()))
            .await
            .expect("ready");
        assert!(proc.drain(Duration::from_secs(10)).await.expect("drained"));
    }

    #[tokio::test]
    async fn a_drained_process_that_ignores_sigterm_is_killed() {
        let mut command = Command::new("sh");
        command.args(["-c", "trap '' TERM; echo ready; exec sleep 600"]);
        let mut proc = Proc::spawn("stubborn", command).expect("spawn sh");
        proc.wait_line(Duration::from_secs(10), |l| (l == "ready").then_some(()))
            .await
            .expect("ready");
        let pid = proc.pid();
        let exited = proc
            .drain(Duration::from_millis(200))
            .await
            .expect("killed");
        assert!(!exited);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&cmdline).contains("600"));
    }
}
