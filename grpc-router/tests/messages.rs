//! End to end: what an operator reads when something is off says what and
//! where, once.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Daemon, config_with};

fn status(router: &str) -> (i32, String, String) {
    let out = Command::new(common::binary())
        .args(["status", "--router", router])
        .output()
        .expect("grpc-router status runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn status_against_the_registrations_port_says_what_that_port_serves() {
    let daemon = Daemon::start(&config_with(""));
    let (code, stdout, stderr) = status(&daemon.registrations_url());
    assert_ne!(code, 0, "{stdout}");
    assert!(
        stderr.contains("does not serve the admin service `router.v1.RouterAdmin`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("this address serves only registrations"),
        "the listener says what it is: {stderr}"
    );
    assert!(stderr.contains("point --router at"), "{stderr}");
}

#[tokio::test]
async fn status_takes_an_address_without_a_scheme() {
    let daemon = Daemon::start(&config_with(""));
    let admin = daemon.admin.expect("an admin listener");
    let (code, stdout, stderr) = status(&admin.to_string());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("router test-router"), "{stdout}");
}

#[tokio::test]
async fn status_names_strategies_as_the_configuration_does() {
    let daemon = Daemon::start(&config_with(
        "[services.\"myservice.v1.Greeter\"]\nstrategy = \"round-robin\"\n",
    ));
    let (code, stdout, stderr) = status(&daemon.admin_url());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("strategy=round-robin "), "{stdout}");
    let (_, json) = daemon.http_get("/status.json").await;
    assert!(json.contains(r#""strategy": "round-robin""#), "{json}");
}

#[test]
fn a_port_in_use_names_the_setting_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("router.toml");
    std::fs::write(
        &path,
        config_with("").replace(
            "[clients]\naddress = \"127.0.0.1:0\"",
            &format!("[clients]\naddress = \"127.0.0.1:{port}\""),
        ),
    )
    .expect("write");
    let mut child = Command::new(common::binary())
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon did not exit on a port in use");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let log = reader.join().expect("stderr read");
    let expected = format!("clients.address: cannot listen on 127.0.0.1:{port}");
    assert_eq!(log.matches("cannot listen").count(), 1, "said once: {log}");
    assert!(log.contains(&expected), "{log}");
    drop(taken);
}
