//! A `grpc-router` daemon process for the end-to-end tests: its config file,
//! its addresses, signals and exit.

#![allow(dead_code, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};
use tonic::transport::{Channel, Endpoint};

/// The end-to-end tests' one way to wait on a future, with a timeout.
pub use test_kit::{poll, within};

/// The daemon binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_grpc-router"))
}

/// The lines a process wrote to stderr, collected by a reader thread as
/// they come, for assertions on its log.
#[derive(Default)]
pub struct LogLines {
    lines: Mutex<Vec<String>>,
    /// Woken at each new line (and at the end of the stream).
    added: tokio::sync::Notify,
}

impl LogLines {
    /// Collects `stream`'s lines on a thread of its own, echoing each to the
    /// test's stderr (shown when a test fails).
    pub fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<LogLines> {
        let log = Arc::new(LogLines::default());
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                eprintln!("[daemon] {line}");
                sink.lines.lock().expect("log lines").push(line);
                sink.added.notify_waiters();
            }
            sink.added.notify_waiters();
        });
        log
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("log lines").clone()
    }

    /// How many lines there are so far (a mark for [`LogLines::wait_for_after`]).
    pub fn mark(&self) -> usize {
        self.lines.lock().expect("log lines").len()
    }

    /// The lines so far that contain every one of `needles`.
    pub fn matching(&self, needles: &[&str]) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .collect()
    }

    /// Waits up to `secs` seconds for a line containing every one of
    /// `needles`, and returns it.
    pub async fn wait_for(&self, needles: &[&str], secs: u64) -> String {
        self.wait_for_after(0, needles, secs).await
    }

    /// Like [`LogLines::wait_for`], among the lines after `mark`.
    pub async fn wait_for_after(&self, mark: usize, needles: &[&str], secs: u64) -> String {
        let found = tokio::time::timeout(Duration::from_secs(secs), async {
            loop {
                let added = self.added.notified();
                tokio::pin!(added);
                added.as_mut().enable();
                if let Some(line) = self
                    .lines
                    .lock()
                    .expect("log lines")
                    .iter()
                    .skip(mark)
                    .find(|l| needles.iter().all(|n| l.contains(n)))
                {
                    return line.clone();
                }
                added.await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "no log line with {needles:?} within {secs}s; the log after line {mark}:\n{}",
                self.lines()
                    .iter()
                    .skip(mark)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
    }
}

/// A running daemon.
pub struct Daemon {
    child: Child,
    /// What it writes to stderr (its log).
    pub log: Arc<LogLines>,
    pub clients: SocketAddr,
    pub registrations: SocketAddr,
    /// The admin HTTP listener (`/metrics`, status page, `/healthz`), when
    /// the config has one.
    pub admin: Option<SocketAddr>,
    /// The KEDA external scaler's listener, when the config has one.
    pub keda: Option<SocketAddr>,
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

/// An admin listener's answer.
pub struct HttpResponse {
    pub code: u16,
    /// The status line and headers, as received.
    pub head: String,
    pub body: String,
}

impl HttpResponse {
    /// The value of header `name` (case-insensitive), or "".
    pub fn header(&self, name: &str) -> String {
        self.head
            .lines()
            .find_map(|l| {
                let (key, value) = l.split_once(':')?;
                key.eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_default()
    }
}

/// The config every test starts from: both listeners on loopback port 0,
/// quick heartbeats; `extra` is appended.
pub fn config_with(extra: &str) -> String {
    format!(
        "router_id = \"test-router\"\n\
         [clients]\naddress = \"127.0.0.1:0\"\n\
         [registrations]\naddress = \"127.0.0.1:0\"\n\
         [shutdown]\ngrace = \"10s\"\n\
         [admin]\naddress = \"127.0.0.1:0\"\n\
         [log]\nlevel = \"info\"\n\
         {extra}\n"
    )
}

impl Daemon {
    /// Starts `grpc-router serve` with `config` and waits for its
    /// `listening` line.
    pub fn start(config: &str) -> Daemon {
        Self::start_with_env(config, &[])
    }

    /// Like [`Daemon::start`], with extra environment variables.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_with(config, &[], env)
    }

    /// Like [`Daemon::start`], with extra `serve` flags and environment
    /// variables.
    pub fn start_with(config: &str, flags: &[&str], env: &[(&str, &str)]) -> Daemon {
        Self::spawn(config, |path| {
            let mut command = Command::new(binary());
            command
                .args(["serve", "--config"])
                .arg(path)
                .args(flags)
                .envs(env.iter().copied());
            command
        })
    }

    /// Starts the daemon from a POSIX shell that first runs `script` (for
    /// example `export NAME=value`), as an operator's start script would.
    pub fn start_in_shell(config: &str, script: &str) -> Daemon {
        Self::spawn(config, |path| {
            let mut command = Command::new("/bin/sh");
            command
                .arg("-c")
                .arg(format!("{script}\nexec \"$0\" serve --config \"$1\""))
                .arg(binary())
                .arg(path);
            command
        })
    }

    fn spawn(config: &str, command: impl FnOnce(&std::path::Path) -> Command) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("router.toml");
        std::fs::write(&path, config).expect("write config");
        let mut child = command(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start grpc-router");
        let log = LogLines::collect(child.stderr.take().expect("stderr"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if line.starts_with("listening ") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                // Never leave a daemon behind a failed test.
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the daemon printed no listening line within 20 s; its log:\n{}",
                    log.lines().join("\n")
                );
            }
        };
        let addr = |key: &str| -> Option<SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|a| a.parse().ok())
        };
        let daemon = Daemon {
            clients: addr("clients=").unwrap_or(([0, 0, 0, 0], 0).into()),
            registrations: addr("registrations=").unwrap_or(([0, 0, 0, 0], 0).into()),
            admin: addr("admin="),
            keda: addr("keda="),
            child,
            log,
            config: path,
            _dir: dir,
        };
        assert!(
            daemon.clients.port() != 0 && daemon.registrations.port() != 0,
            "no listener addresses in {line:?}"
        );
        daemon
    }

    /// `GET path` on the admin listener: the status code and the body.
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        let response = self.http_request(path, &[]).await;
        (response.code, response.body)
    }

    /// `GET path` on the admin listener with extra request `headers`, over
    /// HTTP/1.0 (the body is not chunked).
    pub async fn http_request(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let exchange = async {
            let admin = self.admin.expect("the config has an [admin] listener");
            let mut stream = tokio::net::TcpStream::connect(admin).await?;
            stream
                .write_all(format!("GET {path} HTTP/1.0\r\nHost: admin\r\n{extra}\r\n").as_bytes())
                .await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
        };
        let response = within(5, "admin HTTP response", exchange)
            .await
            .expect("admin listener answers");
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("a status line");
        HttpResponse {
            code,
            head: head.to_owned(),
            body: body.to_owned(),
        }
    }

    /// The URL clients call.
    pub fn clients_url(&self) -> String {
        format!("http://{}", self.clients)
    }

    /// The admin listener's URL (`grpc-router status --router`).
    pub fn admin_url(&self) -> String {
        format!(
            "http://{}",
            self.admin.expect("the config has an [admin] listener")
        )
    }

    /// The URL bridges register with.
    pub fn registrations_url(&self) -> String {
        format!("http://{}", self.registrations)
    }

    /// A channel to the clients' listener.
    pub async fn channel(&self) -> Channel {
        within(
            5,
            "connect to the daemon",
            Endpoint::from_shared(self.clients_url())
                .expect("url")
                .connect(),
        )
        .await
        .expect("connects")
    }

    /// A channel to the admin service: the admin listener, or without one
    /// the clients' listener (whose config must say `serve_admin = true`).
    pub async fn admin_channel(&self) -> Channel {
        let url = match self.admin {
            Some(admin) => format!("http://{admin}"),
            None => self.clients_url(),
        };
        within(
            5,
            "connect to the daemon's admin service",
            Endpoint::from_shared(url).expect("url").connect(),
        )
        .await
        .expect("connects")
    }

    /// A channel to the registrations' listener.
    pub async fn registration_channel(&self) -> Channel {
        within(
            5,
            "connect to the daemon",
            Endpoint::from_shared(self.registrations_url())
                .expect("url")
                .connect(),
        )
        .await
        .expect("connects")
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid")).expect("pid");
        kill_process(pid, signal).expect("signal the daemon");
    }

    /// Rewrites the config file and sends SIGHUP.
    pub fn reload(&self, config: &str) {
        std::fs::write(&self.config, config).expect("rewrite config");
        self.signal(Signal::HUP);
    }

    /// The daemon's resident memory now (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the daemon's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(mut self, secs: u64) -> ExitStatus {
        let child = &mut self.child;
        poll(secs, "the daemon to exit", || {
            std::future::ready(child.try_wait().expect("wait"))
        })
        .await
    }

    /// The admin service's view of service `name` (`None` if unknown).
    pub async fn service_status(&self, name: &str) -> Option<router_runtime::pb::ServiceStatus> {
        let mut admin = router_runtime::pb::router_admin_client::RouterAdminClient::new(
            self.admin_channel().await,
        );
        let response = within(
            5,
            "admin",
            admin.list_services(router_runtime::pb::ListServicesRequest::default()),
        )
        .await
        .expect("admin answers")
        .into_inner();
        response.services.into_iter().find(|s| s.name == name)
    }

    /// Waits until service `name` has `n` instances registered.
    pub async fn wait_for_instances(&self, name: &str, n: usize) {
        poll(20, &format!("{n} instances of {name}"), || async {
            self.service_status(name)
                .await
                .is_some_and(|s| s.instances.len() == n)
                .then_some(())
        })
        .await;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The frames a hand-opened register stream sends, and the daemon's.
pub type RawStream = (
    tokio::sync::mpsc::UnboundedSender<router_runtime::wire::BridgeFrame>,
    tonic::Streaming<router_runtime::wire::RouterFrame>,
);

/// Opens a register stream with the daemon by hand, sending `hello`: the
/// stream and the daemon's `Welcome`, or its refusal (a status, or INTERNAL
/// naming another first frame).
pub async fn raw_register(
    daemon: &Daemon,
    hello: router_runtime::pb::Hello,
) -> Result<(RawStream, router_runtime::pb::Welcome), tonic::Status> {
    use router_runtime::codec::FrameCodec;
    use router_runtime::wire::{BridgeFrame, RouterFrame};
    let (out, rx) = tokio::sync::mpsc::unbounded_channel();
    let _ = out.send(BridgeFrame::Hello(hello));
    let mut grpc = tonic::client::Grpc::new(daemon.registration_channel().await);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut frames = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
            http::uri::PathAndQuery::from_static("/myservice.v1.GreeterRouter/Register"),
            FrameCodec::<BridgeFrame, RouterFrame>::default(),
        )
        .await?
        .into_inner();
    match frames.message().await? {
        Some(RouterFrame::Welcome(welcome)) => Ok(((out, frames), welcome)),
        other => Err(tonic::Status::internal(format!(
            "expected Welcome, got {other:?}"
        ))),
    }
}

/// The example instance (its default features include `otel`), built as
/// `cargo test --workspace` builds it (the example's own tests need it), so
/// that inside that run this builds nothing; returns its path. (A `cargo
/// build` of one package here would resolve other features and compile much
/// of the workspace again.)
pub fn instance_binary() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["test", "--quiet", "--workspace", "--no-run"])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "the example instance does not build:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    target.join("debug").join("instance")
}
