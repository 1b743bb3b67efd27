//! End to end: who owns an instance id when registrations carry tokens. Two
//! bridge processes with the same token and id do not evict each other; a
//! frozen owner is taken over once, and refused when it wakes; a reload that
//! turns tokens on closes the registrations that no longer pass.
//!
//! The instances are real processes: this test binary started again in
//! [`instance_process`] mode, running the example Greeter through the Rust
//! bridge (as `examples/myservice/src/bin/instance.rs` does), so they can be
//! frozen with SIGSTOP.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Daemon, config_with, poll, within};
use router_runtime::bridge::BridgeConfig;
use rustix::process::{Pid, Signal, kill_process};
use tokio::sync::mpsc;

const GREETER: &str = "myservice.v1.Greeter";
const TOKEN: &str = "fleet-token";

/// The daemon's config: registration tokens (when `tokens`), heartbeats
/// every second, and a heartbeat timeout long enough that no owner is
/// evicted during a test (a takeover, not an eviction, frees its id).
fn config(tokens: bool) -> String {
    let hash = grpc_router::config::TokenHash::of(TOKEN).hex();
    let tokens = if tokens {
        format!("tokens_sha256 = [\"{hash}\"]\n")
    } else {
        String::new()
    };
    config_with("[defaults]\nheartbeat_interval = \"1s\"\nheartbeat_timeout = \"120s\"\n")
        .replace("[registrations]\n", &format!("[registrations]\n{tokens}"))
}

/// Not a test: the body of an instance process (see the module docs). It
/// runs only when [`InstanceProcess::start`] starts this binary with the
/// `INSTANCE_PROCESS_*` variables, and prints every change of its
/// `BridgeState` on stdout, one line each.
#[test]
#[ignore = "the body of an instance process, started by the tests"]
fn instance_process() {
    let Ok(endpoint) = std::env::var("INSTANCE_PROCESS_ROUTER") else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let mut options = BridgeConfig::new(endpoint)
            .instance_id(var("INSTANCE_PROCESS_ID"))
            .label("process", var("INSTANCE_PROCESS_LABEL"));
        options.reconnect_initial = Duration::from_millis(50);
        options.reconnect_max = Duration::from_millis(500);
        let token = var("INSTANCE_PROCESS_TOKEN");
        if !token.is_empty() {
            options.register_metadata.insert(
                "authorization",
                format!("Bearer {token}").parse().expect("ascii"),
            );
        }
        let bridge = myservice::demo::start_instance(options);
        let mut state = bridge.registrations();
        loop {
            let line = {
                let s = state.borrow_and_update();
                format!(
                    "state registered={} replaced={} last_error={}",
                    s.registered,
                    s.replaced,
                    s.last_error
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                )
            };
            println!("{line}");
            if state.changed().await.is_err() {
                return;
            }
        }
    });
}

/// A bridge process registered as `id`, labelled `process=<label>`.
struct InstanceProcess {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl InstanceProcess {
    fn start(daemon: &Daemon, id: &str, label: &str, token: &str) -> InstanceProcess {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["instance_process", "--exact", "--ignored", "--nocapture"])
            .env("INSTANCE_PROCESS_ROUTER", daemon.registrations_url())
            .env("INSTANCE_PROCESS_ID", id)
            .env("INSTANCE_PROCESS_LABEL", label)
            .env("INSTANCE_PROCESS_TOKEN", token)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start an instance process");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if line.starts_with("state ") && tx.send(line).is_err() {
                    return;
                }
            }
        });
        InstanceProcess { child, lines }
    }

    /// Waits for a state line containing `text`; returns it.
    async fn wait_state(&mut self, text: &str) -> String {
        within(30, &format!("an instance state with {text:?}"), async {
            loop {
                let line = self.lines.recv().await.expect("the instance runs");
                if line.contains(text) {
                    return line;
                }
            }
        })
        .await
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid")).expect("pid");
        kill_process(pid, signal).expect("signal the instance");
    }
}

impl Drop for InstanceProcess {
    fn drop(&mut self) {
        // A frozen process must be woken to die cleanly.
        let _ = self.child.kill();
        self.signal(Signal::CONT);
        let _ = self.child.wait();
    }
}

/// The daemon's registration events of the Greeter, by `(event, reason)`.
struct Events(std::collections::HashMap<(String, String), u64>);

impl Events {
    async fn scrape(daemon: &Daemon) -> Events {
        let (code, body) = daemon.http_get("/metrics").await;
        assert_eq!(code, 200, "{body}");
        let prefix =
            format!("grpc_router_registration_events_total{{grpc_service=\"{GREETER}\",event=\"");
        let counts = body
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|rest| {
                let (event, rest) = rest.split_once("\",reason=\"")?;
                let (reason, value) = rest.split_once("\"} ")?;
                let value = value.trim().parse::<f64>().ok()? as u64;
                Some(((event.to_owned(), reason.to_owned()), value))
            })
            .collect();
        Events(counts)
    }

    /// The count of `event` with `reason` (0 when never counted).
    fn get(&self, event: &str, reason: &str) -> u64 {
        self.0
            .get(&(event.to_owned(), reason.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

/// Waits until the daemon's registration events satisfy `condition`;
/// returns them.
async fn until_events(daemon: &Daemon, what: &str, condition: impl Fn(&Events) -> bool) -> Events {
    poll(30, what, || async {
        let events = Events::scrape(daemon).await;
        condition(&events).then_some(events)
    })
    .await
}

/// The `process` label of the live registration of `id`.
async fn owner_of(daemon: &Daemon, id: &str) -> Option<String> {
    daemon
        .service_status(GREETER)
        .await?
        .instances
        .into_iter()
        .find(|i| i.id == id)
        .and_then(|i| i.labels.get("process").cloned())
}

#[tokio::test]
async fn two_processes_with_the_same_token_and_id_do_not_evict_each_other_and_a_frozen_owner_is_taken_over_once()
 {
    let daemon = Daemon::start(&config(true));
    let mut a = InstanceProcess::start(&daemon, "dup", "a", TOKEN);
    a.wait_state("registered=1").await;

    // The second process is refused while the owner answers pings; the
    // owner is never replaced.
    let mut b = InstanceProcess::start(&daemon, "dup", "b", TOKEN);
    let events = until_events(
        &daemon,
        "three refusals of the second process (or a replacement)",
        |e| e.get("refused", "AlreadyExists") >= 3 || e.get("replaced", "") >= 1,
    )
    .await;
    assert_eq!(events.get("replaced", ""), 0, "no replacement");
    assert_eq!(owner_of(&daemon, "dup").await.as_deref(), Some("a"));
    let refusal = b.wait_state("AlreadyExists").await;
    assert!(refusal.contains("held by a live registration"), "{refusal}");

    // Frozen, the owner stops answering pings: the second process takes the
    // id over, once.
    a.signal(Signal::STOP);
    b.wait_state("registered=1").await;
    assert_eq!(owner_of(&daemon, "dup").await.as_deref(), Some("b"));
    assert_eq!(Events::scrape(&daemon).await.get("replaced", ""), 1);

    // Woken, the old owner learns it was replaced, backs off, and is
    // refused while the new owner lives: no loop.
    let refused_before = Events::scrape(&daemon).await.get("refused", "Aborted");
    a.signal(Signal::CONT);
    let replaced = a.wait_state("replaced=1").await;
    assert!(replaced.contains("registered=0"), "{replaced}");
    until_events(&daemon, "two refusals of the replaced process", |e| {
        e.get("refused", "Aborted") >= refused_before + 2
    })
    .await;
    let refusal = a.wait_state("taken over").await;
    assert!(refusal.contains("replaced=1"), "{refusal}");
    assert_eq!(
        Events::scrape(&daemon).await.get("replaced", ""),
        1,
        "still one takeover"
    );
    assert_eq!(owner_of(&daemon, "dup").await.as_deref(), Some("b"));
}

#[tokio::test]
async fn a_reload_that_turns_tokens_on_closes_the_registrations_without_one_and_frees_their_ids() {
    let daemon = Daemon::start(&config(false));
    let anonymous = myservice::demo::start_instance(
        BridgeConfig::new(daemon.registrations_url()).instance_id("anonymous"),
    );
    let mut with_token = BridgeConfig::new(daemon.registrations_url()).instance_id("member");
    with_token.register_metadata.insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("ascii"),
    );
    let member = myservice::demo::start_instance(with_token);
    within(10, "both registrations", async {
        anonymous.registered().await;
        member.registered().await;
    })
    .await;

    daemon.reload(&config(true));
    let mut state = anonymous.registrations();
    let closed = within(
        10,
        "the anonymous registration to be closed",
        state.wait_for(|s| s.registered == 0 && s.last_error.is_some()),
    )
    .await
    .expect("bridge alive")
    .clone();
    let error = closed.last_error.expect("an error").to_string();
    assert!(
        error.contains("Unauthenticated") && error.contains("authorization"),
        "{error}"
    );
    assert_eq!(
        Events::scrape(&daemon)
            .await
            .get("closed", "Unauthenticated"),
        1
    );
    daemon.wait_for_instances(GREETER, 1).await;
    let ids: Vec<String> = daemon
        .service_status(GREETER)
        .await
        .expect("known")
        .instances
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, ["member"], "the registration with the token stays");

    // The id the closed registration held is free for a bridge with the
    // token.
    let mut comeback = BridgeConfig::new(daemon.registrations_url()).instance_id("anonymous");
    comeback.register_metadata.insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("ascii"),
    );
    let comeback = myservice::demo::start_instance(comeback);
    within(
        10,
        "the id taken by a bridge with the token",
        comeback.registered(),
    )
    .await;
    daemon.wait_for_instances(GREETER, 2).await;
}
