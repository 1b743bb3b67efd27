//! End to end: `grpc-router` restarted with a `[state] file` keeps the
//! services it learnt: they answer UNAVAILABLE (retryable), not
//! UNIMPLEMENTED, and reflection describes them, until their instances
//! register again.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Daemon, config_with, poll, within};
use myservice::pb::greeter_client::GreeterClient;
use myservice::pb::{HelloReply, HelloRequest};
use router_runtime::bridge::BridgeConfig;
use rustix::process::Signal;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const GREETER: &str = "myservice.v1.Greeter";

fn greeter_instance(daemon: &Daemon, id: &str) -> router_runtime::bridge::BridgeHandle {
    myservice::demo::start_instance(BridgeConfig::new(daemon.registrations_url()).instance_id(id))
}

fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.into(),
        payload: vec![],
    }
}

fn with_state(file: &Path) -> String {
    config_with(&format!(
        "[state]\nfile = {:?}\n",
        file.display().to_string()
    ))
}

/// Waits until `file` exists and mentions `text`.
async fn wait_for_file_with(file: &Path, text: &str) -> String {
    poll(10, &format!("{} to mention {text}", file.display()), || {
        std::future::ready(
            std::fs::read_to_string(file)
                .ok()
                .filter(|contents| contents.contains(text)),
        )
    })
    .await
}

/// The services reflection lists.
async fn reflected_services(daemon: &Daemon) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let mut client = ServerReflectionClient::new(daemon.channel().await);
    let requests = tokio_stream::iter(vec![ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }]);
    let mut answers = within(5, "reflection", client.server_reflection_info(requests))
        .await
        .expect("reflection answers")
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = within(5, "list", answers.message())
        .await
        .expect("ok")
        .and_then(|r| r.message_response)
    else {
        panic!("expected a service list");
    };
    list.service.into_iter().map(|s| s.name).collect()
}

/// Runs `grpc-router serve` on `config` expecting it to fail at start: its
/// exit code and stderr.
fn serve_expecting_failure(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("router.toml");
    std::fs::write(&path, config).expect("write config");
    let mut child = Command::new(common::binary())
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start grpc-router");
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon did not stop at start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_learnt_service_answers_unavailable_after_a_restart_until_its_instance_registers_again() {
    let state = tempfile::tempdir().expect("tempdir");
    let file = state.path().join("state.json");
    let config = with_state(&file);

    let first = Daemon::start(&config);
    let instance = greeter_instance(&first, "greeter-1");
    first.wait_for_instances(GREETER, 1).await;
    let mut client = GreeterClient::new(first.channel().await);
    within(5, "SayHello", client.say_hello(hello("before")))
        .await
        .expect("routed");
    wait_for_file_with(&file, GREETER).await;
    first.signal(Signal::TERM);
    assert!(first.wait_exit(30).await.success());
    within(10, "the bridge to stop", instance.shutdown()).await;

    // Same config, same state file, no instance yet.
    let second = Daemon::start(&config);
    let mut client = GreeterClient::new(second.channel().await);
    let status = within(5, "SayHello", client.say_hello(hello("after")))
        .await
        .expect_err("no instance yet");
    assert_eq!(
        status.code(),
        tonic::Code::Unavailable,
        "retryable, not UNIMPLEMENTED: {status:?}"
    );
    assert!(status.message().contains(GREETER), "{}", status.message());
    assert!(
        reflected_services(&second)
            .await
            .contains(&GREETER.to_owned()),
        "reflection lists the remembered service"
    );
    // Health follows the service once its tracker has written a status.
    let health = HealthClient::new(second.channel().await);
    let known = poll(5, "the service's health status", || {
        let mut health = health.clone();
        async move {
            let checked = health
                .check(HealthCheckRequest {
                    service: GREETER.into(),
                })
                .await;
            match checked {
                Ok(response) => Some(response.into_inner().status),
                Err(status) if status.code() == tonic::Code::NotFound => None,
                Err(status) => panic!("health check failed: {status:?}"),
            }
        }
    })
    .await;
    assert_eq!(known, ServingStatus::NotServing as i32);

    // A service no registration ever described is still unknown.
    let mut grpc = tonic::client::Grpc::new(second.channel().await);
    within(5, "ready", grpc.ready()).await.expect("ready");
    let unknown = within(
        5,
        "unknown",
        grpc.unary(
            tonic::Request::new(hello("x")),
            http::uri::PathAndQuery::from_static("/nobody.v1.Nothing/Call"),
            tonic_prost::ProstCodec::<HelloRequest, HelloReply>::default(),
        ),
    )
    .await
    .expect_err("unknown");
    assert_eq!(unknown.code(), tonic::Code::Unimplemented);

    // The instance comes back: served again.
    let _again = greeter_instance(&second, "greeter-1");
    second.wait_for_instances(GREETER, 1).await;
    let reply = within(5, "SayHello", client.say_hello(hello("back")))
        .await
        .expect("routed once the instance re-registered");
    assert_eq!(reply.into_inner().message, "Hello, back!");
}

#[tokio::test]
async fn a_corrupt_state_file_is_set_aside_with_a_warning_and_the_router_starts() {
    let state = tempfile::tempdir().expect("tempdir");
    let file = state.path().join("state.json");
    std::fs::write(&file, "{ not json").expect("write");

    let daemon = Daemon::start(&with_state(&file));
    let bad = state.path().join("state.json.bad");
    assert_eq!(
        std::fs::read_to_string(&bad).expect("the bad file is kept aside"),
        "{ not json"
    );
    // A warning saying what is wrong.
    daemon
        .log
        .wait_for(&["state.file", "not a grpc-router state file"], 5)
        .await;

    // The router works and keeps its state in a fresh file.
    let _instance = greeter_instance(&daemon, "greeter-1");
    daemon.wait_for_instances(GREETER, 1).await;
    let contents = wait_for_file_with(&file, GREETER).await;
    assert!(contents.contains("\"version\": 1"), "{contents}");
}

#[tokio::test]
async fn an_unwritable_state_file_stops_the_daemon_at_start_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_a_directory = dir.path().join("plain-file");
    std::fs::write(&not_a_directory, "").expect("write");
    let file = not_a_directory.join("state.json");

    let (code, stderr) = serve_expecting_failure(&with_state(&file));
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("state.file") && stderr.contains(&file.display().to_string()),
        "names the setting and the file: {stderr}"
    );
}
