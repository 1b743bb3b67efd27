//! End to end: scale to zero with the daemon. With `wait_for_instance`, a
//! call to a service with no instance waits for one, whether the service is
//! named in the configuration (never registered), learnt and left by its
//! last instance, or kept in the `[state] file` across a restart; the wait
//! shows in the metrics and the status; a reload turns it on; and the
//! activation hook starts a real instance process whose first call succeeds.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Daemon, config_with, instance_binary, poll, within};
use myservice::pb::greeter_client::GreeterClient;
use myservice::pb::{HelloReply, HelloRequest};
use router_runtime::bridge::{BridgeConfig, BridgeHandle};
use tokio::time::Instant;
use tonic::{Response, Status};

const GREETER: &str = "myservice.v1.Greeter";

fn greeter_instance(daemon: &Daemon, id: &str) -> BridgeHandle {
    myservice::demo::start_instance(BridgeConfig::new(daemon.registrations_url()).instance_id(id))
}

fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.into(),
        payload: vec![],
    }
}

type Call = tokio::task::JoinHandle<Result<Response<HelloReply>, Status>>;

/// A SayHello call, running.
async fn call(daemon: &Daemon, name: &str) -> Call {
    let mut client = GreeterClient::new(daemon.channel().await);
    let request = hello(name);
    tokio::spawn(async move { client.say_hello(request).await })
}

/// Waits until the admin service shows `n` calls of the Greeter waiting.
async fn until_waiting(daemon: &Daemon, n: u64) {
    poll(20, &format!("{n} calls waiting"), || async {
        let status = daemon.service_status(GREETER).await?;
        (status.waiting_calls == n).then_some(())
    })
    .await;
}

async fn answered(call: Call) -> HelloReply {
    within(20, "the waiting call", call)
        .await
        .expect("task")
        .expect("served once an instance came")
        .into_inner()
}

/// A sample of `/metrics`: the value of `metric` whose line holds every
/// label pair `labels` (0 when there is none).
async fn metric(daemon: &Daemon, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let (code, body) = daemon.http_get("/metrics").await;
    assert_eq!(code, 200);
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(metric))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_call_to_a_configured_service_with_no_instance_succeeds_once_one_registers_2s_later() {
    let daemon = Daemon::start(&config_with(&format!(
        "[services.\"{GREETER}\"]\nwait_for_instance = \"30s\"\n"
    )));
    let started = Instant::now();
    let waiting = call(&daemon, "cold").await;
    until_waiting(&daemon, 1).await;
    let service = [("grpc_service", GREETER)];
    assert_eq!(
        metric(&daemon, "grpc_router_calls_waiting", &service).await,
        1.0
    );
    let (_, page) = daemon.http_get("/status.json").await;
    let page: serde_json::Value = serde_json::from_str(&page).expect("JSON");
    assert_eq!(page["services"][0]["waiting"], 1, "{page}");
    let table = Command::new(common::binary())
        .args(["status", "--router", &daemon.admin_url()])
        .output()
        .expect("grpc-router status runs");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("waiting=1"), "{table}");
    // The instance's cold start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _instance = greeter_instance(&daemon, "late");
    assert_eq!(answered(waiting).await.instance_id, "late");
    assert!(started.elapsed() >= Duration::from_secs(2));
    let served = [("grpc_service", GREETER), ("outcome", "served")];
    assert_eq!(
        metric(&daemon, "grpc_router_waits_total", &served).await,
        1.0
    );
    assert_eq!(
        metric(&daemon, "grpc_router_wait_seconds_count", &service).await,
        1.0
    );
    assert_eq!(
        metric(&daemon, "grpc_router_calls_waiting", &service).await,
        0.0
    );
}

#[tokio::test]
async fn a_learnt_service_whose_last_instance_left_waits_for_the_next() {
    let daemon = Daemon::start(&config_with("[defaults]\nwait_for_instance = \"30s\"\n"));
    let first = greeter_instance(&daemon, "first");
    daemon.wait_for_instances(GREETER, 1).await;
    within(10, "the drain", first.shutdown()).await;
    daemon.wait_for_instances(GREETER, 0).await;
    let waiting = call(&daemon, "x").await;
    until_waiting(&daemon, 1).await;
    let _next = greeter_instance(&daemon, "next");
    assert_eq!(answered(waiting).await.instance_id, "next");
}

#[tokio::test]
async fn after_a_restart_with_a_state_file_a_call_waits_for_the_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    let config = config_with(&format!(
        "[state]\nfile = {:?}\n[defaults]\nwait_for_instance = \"30s\"\n",
        state.display().to_string()
    ));
    {
        let daemon = Daemon::start(&config);
        let instance = greeter_instance(&daemon, "before");
        daemon.wait_for_instances(GREETER, 1).await;
        drop(instance);
        poll(10, "the state file", || async {
            std::fs::read_to_string(&state)
                .ok()
                .filter(|s| s.contains(GREETER))
        })
        .await;
    }
    let daemon = Daemon::start(&config);
    let waiting = call(&daemon, "x").await;
    until_waiting(&daemon, 1).await;
    let _after = greeter_instance(&daemon, "after");
    assert_eq!(answered(waiting).await.instance_id, "after");
}

#[tokio::test]
async fn a_reload_turns_waiting_on_for_new_calls() {
    let daemon = Daemon::start(&config_with(&format!("[services.\"{GREETER}\"]\n")));
    let mut client = GreeterClient::new(daemon.channel().await);
    let status = within(5, "a call", client.say_hello(hello("x")))
        .await
        .expect_err("no instance, no wait");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(!status.message().contains("waited"), "{status:?}");
    let mark = daemon.log.mark();
    daemon.reload(&config_with(&format!(
        "[services.\"{GREETER}\"]\nwait_for_instance = \"30s\"\n"
    )));
    daemon
        .log
        .wait_for_after(mark, &["configuration reloaded"], 10)
        .await;
    let waiting = call(&daemon, "x").await;
    until_waiting(&daemon, 1).await;
    let _instance = greeter_instance(&daemon, "i");
    answered(waiting).await;
}

#[tokio::test]
async fn a_flood_of_waiting_calls_beyond_the_bound_is_refused_at_once_and_costs_no_more_than_without_waiting()
 {
    const PAYLOAD: usize = 64 * 1024;
    const FLOOD: usize = 600;
    let plain = config_with(&format!("[services.\"{GREETER}\"]\n"));
    let daemon = Daemon::start(&plain);
    // Defined by a first instance, which then leaves.
    let first = greeter_instance(&daemon, "first");
    daemon.wait_for_instances(GREETER, 1).await;
    within(10, "the drain", first.shutdown()).await;
    daemon.wait_for_instances(GREETER, 0).await;
    let before = daemon.rss_kib();
    let channel = daemon.channel().await;
    // Without waiting: the flood fails UNAVAILABLE at once.
    let (failed, peak_plain) =
        flood(&daemon, &channel, FLOOD, PAYLOAD, tonic::Code::Unavailable).await;
    assert_eq!(failed, FLOOD);

    // With waiting, and the bytes bound (300 KB) full with four calls.
    let mark = daemon.log.mark();
    daemon.reload(&format!(
        "{plain}wait_for_instance = \"60s\"\nmax_waiting_calls = 50\nmax_waiting_bytes = 300000\n"
    ));
    daemon
        .log
        .wait_for_after(mark, &["configuration reloaded"], 10)
        .await;
    let big = HelloRequest {
        name: "big".into(),
        payload: vec![7; PAYLOAD],
    };
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut client = GreeterClient::new(channel.clone());
        let request = big.clone();
        held.push(tokio::spawn(async move { client.say_hello(request).await }));
    }
    until_waiting(&daemon, 4).await;
    let (refused, peak_waiting) = flood(
        &daemon,
        &channel,
        FLOOD,
        PAYLOAD,
        tonic::Code::ResourceExhausted,
    )
    .await;
    assert_eq!(refused, FLOOD, "refused at once, none waits");
    assert_eq!(
        daemon
            .service_status(GREETER)
            .await
            .expect("known")
            .waiting_calls,
        4
    );
    let mib = |kib: u64| kib.saturating_sub(before) / 1024;
    eprintln!(
        "daemon RSS {before} KiB before; peak during {FLOOD} calls of 64 KiB at once: +{} MiB without waiting, +{} MiB with the waiting bound full",
        mib(peak_plain),
        mib(peak_waiting)
    );
    // The waiting calls hold at most the bound; a refused call costs what a
    // call refused for want of an instance costs.
    assert!(
        mib(peak_waiting) <= mib(peak_plain) + 16,
        "waiting added memory: +{} MiB against +{} MiB",
        mib(peak_waiting),
        mib(peak_plain)
    );
    let _instance = greeter_instance(&daemon, "late");
    for call in held {
        answered(call).await;
    }
}

/// `n` calls with `payload` bytes each at once on `channel`, every one
/// failing with `code`: how many, and the daemon's peak RSS meanwhile
/// (KiB).
async fn flood(
    daemon: &Daemon,
    channel: &tonic::transport::Channel,
    n: usize,
    payload: usize,
    code: tonic::Code,
) -> (usize, u64) {
    let big = HelloRequest {
        name: "big".into(),
        payload: vec![7; payload],
    };
    let mut calls = Vec::new();
    for _ in 0..n {
        let mut client = GreeterClient::new(channel.clone());
        let request = big.clone();
        calls.push(tokio::spawn(async move { client.say_hello(request).await }));
    }
    let (mut refused, mut peak) = (0, daemon.rss_kib());
    for call in calls {
        peak = peak.max(daemon.rss_kib());
        let status = within(60, "a refused call", call)
            .await
            .expect("task")
            .expect_err("no instance");
        assert_eq!(status.code(), code, "{status:?}");
        refused += 1;
    }
    (refused, peak)
}

/// Kills the process whose pid is in the file, when dropped (the instance
/// the hook started outlives the daemon otherwise).
struct KillPidFile(PathBuf);

impl Drop for KillPidFile {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

#[tokio::test]
async fn the_activation_command_starts_a_real_instance_and_the_first_call_succeeds() {
    let instance = instance_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let (router_file, pid_file, service_file) = (
        dir.path().join("router-url"),
        dir.path().join("instance.pid"),
        dir.path().join("service"),
    );
    let _kill = KillPidFile(pid_file.clone());
    // The hook: a shell that notes the service and its pid, then becomes
    // the example instance, registering with the daemon.
    let script = format!(
        "echo \"$GRPC_ROUTER_SERVICE\" > '{service}'; echo $$ > '{pid}'; exec '{instance}' --router \"$(cat '{router}')\" --id hooked",
        service = service_file.display(),
        pid = pid_file.display(),
        instance = instance.display(),
        router = router_file.display(),
    );
    let daemon = Daemon::start(&config_with(&format!(
        "[services.\"{GREETER}\"]\nwait_for_instance = \"60s\"\n\
         activate = {{ command = [\"/bin/sh\", \"-c\", {script:?}], cooldown = \"5m\" }}\n"
    )));
    std::fs::write(&router_file, daemon.registrations_url()).expect("write the router's URL");

    let mut client = GreeterClient::new(daemon.channel().await);
    let started = Instant::now();
    let reply = within(60, "the first call", client.say_hello(hello("cold")))
        .await
        .expect("the first call succeeds once the hook's instance registered")
        .into_inner();
    let cold_start = started.elapsed();
    eprintln!("cold start (first call to its answer, hook-started instance): {cold_start:?}");
    assert_eq!(reply.instance_id, "hooked");
    assert_eq!(
        std::fs::read_to_string(&service_file)
            .expect("the hook ran")
            .trim(),
        GREETER
    );
    let started_label = [("grpc_service", GREETER), ("result", "started")];
    assert_eq!(
        metric(&daemon, "grpc_router_activations_total", &started_label).await,
        1.0
    );
    daemon
        .log
        .wait_for(&["activation command started", GREETER], 5)
        .await;
}

#[tokio::test]
async fn the_activation_url_is_posted_once_per_cooldown_and_its_answer_counted() {
    // A stand-in for the operator's activator: answers 202 to each POST and
    // hands the request to the test.
    let activator = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/activate", activator.local_addr().expect("addr"));
    let (posts_tx, mut posts) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = activator.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            // Until the JSON body's end.
            while !request.ends_with(b"}") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                .await;
            let _ = posts_tx.send(String::from_utf8_lossy(&request).into_owned());
        }
    });
    let daemon = Daemon::start(&config_with(&format!(
        "[services.\"{GREETER}\"]\nwait_for_instance = \"30s\"\n\
         activate = {{ url = \"{url}\", cooldown = \"5m\" }}\n"
    )));
    let waiting = call(&daemon, "x").await;
    let post = within(10, "the activation POST", posts.recv())
        .await
        .expect("posted");
    assert!(post.starts_with("POST /activate HTTP/1.1\r\n"), "{post}");
    assert!(
        post.ends_with(&format!("{{\"service\":\"{GREETER}\"}}")),
        "{post}"
    );
    // The activator starts an instance.
    let instance = greeter_instance(&daemon, "activated");
    answered(waiting).await;
    let succeeded = [("grpc_service", GREETER), ("result", "succeeded")];
    poll(10, "the POST's answer to be counted", || async {
        (metric(&daemon, "grpc_router_activations_total", &succeeded).await == 1.0).then_some(())
    })
    .await;
    // Within the cooldown, the next wait for no instance posts nothing.
    within(10, "the drain", instance.shutdown()).await;
    daemon.wait_for_instances(GREETER, 0).await;
    let again = call(&daemon, "y").await;
    until_waiting(&daemon, 1).await;
    let _next = greeter_instance(&daemon, "next");
    answered(again).await;
    assert!(
        posts.try_recv().is_err(),
        "posted again within the cooldown"
    );
    assert_eq!(
        metric(&daemon, "grpc_router_activations_total", &succeeded).await,
        1.0
    );
}
