//! Bridge instances as processes of their own: the example `instance` binary
//! (`examples/myservice/src/bin/instance.rs`) started against a router,
//! drained with SIGTERM (it finishes its calls in flight, then leaves) or
//! killed with SIGKILL.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::BoxError;

/// How long an instance may take to register.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(20);

/// The example `instance` binary: `explicit` if given, else the `instance`
/// next to this executable (cargo puts both in `target/<profile>/`).
pub fn instance_exe(explicit: Option<&Path>) -> Result<PathBuf, BoxError> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let me = std::env::current_exe()?;
    let sibling = me.with_file_name("instance");
    if sibling.is_file() {
        Ok(sibling)
    } else {
        Err(format!(
            "no instance binary at {}: build it with `cargo build -p myservice-example --bin instance` \
             (with the same profile as router-bench) or pass --instance-exe",
            sibling.display()
        )
        .into())
    }
}

/// One running instance process.
#[derive(Debug)]
pub struct InstanceProcess {
    /// The instance id it registered as.
    pub id: String,
    child: Child,
}

impl InstanceProcess {
    /// Starts `exe` as instance `id` registering with the router at `router`,
    /// and waits until it printed that the router accepted it.
    pub async fn start(exe: &Path, router: SocketAddr, id: &str) -> Result<Self, BoxError> {
        let mut child = Command::new(exe)
            .args(["--router", &format!("http://{router}"), "--id", id])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start instance {id} ({}): {e}", exe.display()))?;
        let stdout = child.stdout.take().ok_or("instance has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let registered = tokio::time::timeout(REGISTER_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if line.starts_with("registered as") {
                    return Ok::<bool, std::io::Error>(true);
                }
            }
            Ok(false)
        })
        .await;
        match registered {
            Ok(Ok(true)) => {
                // Keep reading so the instance never blocks on a full pipe.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                Ok(InstanceProcess {
                    id: id.to_owned(),
                    child,
                })
            }
            Ok(Ok(false)) => Err(format!("instance {id} exited before registering").into()),
            Ok(Err(e)) => Err(format!("cannot read instance {id}'s output: {e}").into()),
            Err(_) => {
                Err(format!("instance {id} did not register within {REGISTER_TIMEOUT:?}").into())
            }
        }
    }

    /// Sends SIGTERM (the instance drains) and waits up to `timeout` for it
    /// to exit; kills it if it does not. Returns whether it exited by itself.
    pub async fn drain(mut self, timeout: Duration) -> Result<bool, BoxError> {
        let pid = self
            .child
            .id()
            .and_then(|id| Pid::from_raw(i32::try_from(id).ok()?))
            .ok_or_else(|| format!("instance {} has no process id", self.id))?;
        kill_process(pid, Signal::TERM)
            .map_err(|e| format!("cannot send SIGTERM to instance {}: {e}", self.id))?;
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) => Err(format!("waiting for instance {}: {e}", self.id).into()),
            Err(_) => {
                self.kill().await?;
                Ok(false)
            }
        }
    }

    /// Sends SIGKILL and reaps the process.
    pub async fn kill(mut self) -> Result<(), BoxError> {
        self.child
            .kill()
            .await
            .map_err(|e| format!("cannot kill instance {}: {e}", self.id).into())
    }
}
