//! End to end: where the admin service (`router.v1.RouterAdmin`, what
//! `grpc-router status` reads) is served, and who may read it. It lists every
//! service, instance, label and recent error, so it is served on the admin
//! listener (HTTP/2 for gRPC, next to the HTTP/1.1 pages), not on the
//! clients' listener unless the config says so, and behind the admin tokens
//! when the config lists some.

mod common;

use common::{Daemon, config_with, within};
use router_runtime::bridge::BridgeConfig;
use router_runtime::pb;
use router_runtime::pb::router_admin_client::RouterAdminClient;

const GREETER: &str = "myservice.v1.Greeter";
const ADMIN_TOKEN: &str = "operators-only";

/// Runs `grpc-router status` with `args`: (succeeded, stdout, stderr).
fn status(args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(common::binary())
        .arg("status")
        .args(args)
        .output()
        .expect("grpc-router status runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A daemon with one Greeter instance registered as `fleet-a`.
async fn daemon_with_an_instance(extra: &str) -> (Daemon, router_runtime::bridge::BridgeHandle) {
    let daemon = Daemon::start(&config_with(extra));
    let instance = myservice::demo::start_instance(
        BridgeConfig::new(daemon.registrations_url())
            .instance_id("fleet-a")
            .label("zone", "secret-zone"),
    );
    within(10, "the registration", instance.registered()).await;
    (daemon, instance)
}

#[tokio::test]
async fn status_through_the_clients_port_fails_saying_where_the_admin_service_is() {
    let (daemon, _instance) = daemon_with_an_instance("").await;
    let (ok, out, err) = status(&["--router", &daemon.clients_url()]);
    assert!(!ok, "the clients' port listed the fleet:\n{out}");
    assert!(!out.contains("fleet-a"), "{out}");
    assert!(
        err.contains("does not serve the admin service")
            && err.contains("[admin] address")
            && err.contains("serve_admin"),
        "{err}"
    );
    // The same for any gRPC client: the clients' port has no RouterAdmin.
    let mut admin = RouterAdminClient::new(daemon.channel().await);
    let refused = within(
        5,
        "admin on the clients' port",
        admin.list_services(pb::ListServicesRequest::default()),
    )
    .await
    .expect_err("not served");
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
}

#[tokio::test]
async fn status_through_the_admin_listener_lists_the_fleet_and_the_pages_still_work() {
    let (daemon, _instance) = daemon_with_an_instance("").await;
    let (ok, out, err) = status(&["--router", &daemon.admin_url()]);
    assert!(ok, "{err}");
    assert!(out.contains("fleet-a") && out.contains(GREETER), "{out}");
    // The HTTP/1.1 pages share the listener.
    let (code, json) = daemon.http_get("/status.json").await;
    assert_eq!(code, 200);
    assert!(json.contains("fleet-a"), "{json}");
    let (code, page) = daemon.http_get("/").await;
    assert_eq!(code, 200);
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    let (code, metrics) = daemon.http_get("/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.contains("grpc_router_registrations"), "{metrics}");
}

#[tokio::test]
async fn with_admin_tokens_the_admin_service_and_pages_need_one() {
    let hash = grpc_router::config::TokenHash::of(ADMIN_TOKEN).hex();
    let config = config_with("").replace(
        "[admin]\n",
        &format!("[admin]\ntokens_sha256 = [\"{hash}\"]\n"),
    );
    let daemon = Daemon::start(&config);
    let _instance = myservice::demo::start_instance(
        BridgeConfig::new(daemon.registrations_url()).instance_id("fleet-a"),
    );

    let (ok, out, err) = status(&["--router", &daemon.admin_url()]);
    assert!(!ok, "listed without a token:\n{out}");
    assert!(
        err.contains("UNAUTHENTICATED") && err.contains("--token-file"),
        "{err}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "guess\n").expect("write");
    let (ok, _, err) = status(&[
        "--router",
        &daemon.admin_url(),
        "--token-file",
        &wrong.display().to_string(),
    ]);
    assert!(!ok && err.contains("UNAUTHENTICATED"), "{err}");
    let right = dir.path().join("token");
    std::fs::write(&right, format!("{ADMIN_TOKEN}\n")).expect("write");
    within(10, "the instance listed", async {
        loop {
            let (ok, out, err) = status(&[
                "--router",
                &daemon.admin_url(),
                "--token-file",
                &right.display().to_string(),
            ]);
            assert!(ok, "{err}");
            if out.contains("fleet-a") {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;

    // The pages that describe the fleet need the token too; liveness does not.
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    for path in ["/", "/status", "/status.json", "/metrics"] {
        let refused = daemon.http_request(path, &[]).await;
        assert_eq!(refused.code, 401, "{path}: {}", refused.body);
        assert_eq!(refused.header("www-authenticate"), "Bearer", "{path}");
        let wrong = daemon
            .http_request(path, &[("Authorization", "Bearer guess")])
            .await;
        assert_eq!(wrong.code, 401, "{path}");
        let allowed = daemon
            .http_request(path, &[("Authorization", &bearer)])
            .await;
        assert_eq!(allowed.code, 200, "{path}: {}", allowed.body);
    }
    let (code, _) = daemon.http_get("/healthz").await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn the_admin_service_on_the_clients_port_is_opt_in() {
    let config = config_with("").replace("[clients]\n", "[clients]\nserve_admin = true\n");
    let daemon = Daemon::start(&config);
    let _instance = myservice::demo::start_instance(
        BridgeConfig::new(daemon.registrations_url()).instance_id("fleet-a"),
    );
    daemon.wait_for_instances(GREETER, 1).await;
    let (ok, out, err) = status(&["--router", &daemon.clients_url()]);
    assert!(ok, "{err}");
    assert!(out.contains("fleet-a"), "{out}");
}
