//! The example's binaries as a user runs them: the demo (the README's first
//! command) and the router, an instance and the client as processes of
//! their own on loopback.
//!
//! (These tests are also why `cargo test --workspace` builds the example's
//! binaries with the test suite's features, so CI's later steps that run
//! them build nothing again.)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The longest any of these processes may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `binary` with `args`; returns it and the first stdout line that
/// starts with `prefix`, with the prefix removed.
fn start_and_read(binary: &str, args: &[&str], prefix: &str) -> (Killed, String) {
    let mut child = Command::new(binary)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{binary} starts: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let child = Killed(child);
    let (tx, rx) = mpsc::channel();
    let wanted = prefix.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(&wanted) {
                let _ = tx.send(rest.to_owned());
            }
        }
    });
    let found = rx
        .recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| panic!("{binary} never printed `{prefix}…`"));
    (child, found)
}

/// Runs `binary` with `args` to its end, within [`TIMEOUT`].
fn run(binary: &str, args: &[&str]) -> Output {
    let child = Command::new(binary)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{binary} starts: {e}"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| panic!("{binary} did not finish within {TIMEOUT:?}"))
        .expect("output")
}

#[test]
fn the_demo_runs_a_router_two_instances_and_a_client() {
    let out = run(env!("CARGO_BIN_EXE_demo"), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("demo OK"), "{stdout}");
}

#[test]
fn the_router_an_instance_and_the_client_work_as_separate_processes() {
    let (_router, address) = start_and_read(
        env!("CARGO_BIN_EXE_router"),
        &["--listen", "127.0.0.1:0"],
        "listening on ",
    );
    let endpoint = format!("http://{address}");
    let (_instance, id) = start_and_read(
        env!("CARGO_BIN_EXE_instance"),
        &["--router", &endpoint, "--id", "solo"],
        "registered as ",
    );
    assert_eq!(id, "solo");
    let out = run(
        env!("CARGO_BIN_EXE_client"),
        &["--router", &endpoint, "--unary-calls", "3"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("solo"),
        "the instance served the calls: {stdout}"
    );
}
