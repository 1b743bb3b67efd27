//! End to end: per-method settings do what they say, whether set in the
//! file or by an environment variable (a shell-exportable one too), and a
//! setting for a method the service does not have is a warning once the
//! service is known: in the log, the admin service and `grpc-router status`.

mod common;

use common::{Daemon, config_with, within};
use myservice::pb::HelloRequest;
use myservice::pb::greeter_client::GreeterClient;
use router_runtime::bridge::BridgeConfig;
use tonic::Code;

const GREETER: &str = "myservice.v1.Greeter";

/// Sends 20 `SayHello` calls in a row and counts those refused as over a
/// rate limit (any other failure fails the test).
async fn refused_of_twenty(daemon: &Daemon) -> usize {
    let mut client = GreeterClient::new(daemon.channel().await);
    let mut refused = 0;
    for i in 0..20 {
        let call = client.say_hello(HelloRequest {
            name: format!("call-{i}"),
            payload: vec![],
        });
        match within(5, "SayHello", call).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::ResourceExhausted => refused += 1,
            Err(status) => panic!("call {i} failed otherwise: {status:?}"),
        }
    }
    refused
}

async fn with_instance(daemon: &Daemon) -> router_runtime::bridge::BridgeHandle {
    let instance = myservice::demo::start_instance(
        BridgeConfig::new(daemon.registrations_url()).instance_id("a"),
    );
    within(10, "registration", instance.registered()).await;
    daemon.wait_for_instances(GREETER, 1).await;
    instance
}

#[tokio::test]
async fn a_method_rate_limit_from_a_variable_keeps_the_method_name_and_limits_it() {
    let daemon = Daemon::start_with_env(
        &config_with(""),
        &[(
            "GRPC_ROUTER_SERVICES__myservice.v1.Greeter__METHODS__SayHello__RATE_LIMIT",
            "{ per_second = 1, burst = 1 }",
        )],
    );
    let _instance = with_instance(&daemon).await;
    let refused = refused_of_twenty(&daemon).await;
    // However slow the machine, 20 calls in a row do not all fall in
    // separate seconds.
    assert!(
        refused > 0,
        "a 1/s limit on SayHello refuses some of 20 calls in a row; none was"
    );
}

#[tokio::test]
async fn a_method_rate_limit_exported_by_a_posix_shell_limits_the_method() {
    // Names a POSIX shell exports: letters, digits and `_` only; the
    // service's dots are written `_`.
    let daemon = Daemon::start_in_shell(
        &config_with(""),
        "export GRPC_ROUTER_SERVICES__myservice_v1_Greeter__METHODS__SayHello__RATE_LIMIT__PER_SECOND=1\n\
         export GRPC_ROUTER_SERVICES__myservice_v1_Greeter__METHODS__SayHello__RATE_LIMIT__BURST=1",
    );
    let _instance = with_instance(&daemon).await;
    let refused = refused_of_twenty(&daemon).await;
    // However slow the machine, 20 calls in a row do not all fall in
    // separate seconds.
    assert!(
        refused > 0,
        "a 1/s limit on SayHello refuses some of 20 calls in a row; none was"
    );
}

#[tokio::test]
async fn a_setting_for_a_method_the_service_lacks_is_a_warning_once_the_service_registers() {
    let daemon = Daemon::start(&config_with(
        "[services.\"myservice.v1.Greeter\".methods.SayHelo]\nrate_limit = { per_second = 1 }\n\
         [services.\"myservice.v1.Greeter\".methods.SayHello]\nmax_deadline = \"5s\"\n",
    ));
    let before = daemon
        .service_status(GREETER)
        .await
        .expect("a configured service is known");
    assert!(
        before.warnings.is_empty(),
        "no warning before the methods are known: {:?}",
        before.warnings
    );
    let _instance = with_instance(&daemon).await;

    let line = daemon
        .log
        .wait_for(&["WARN", "methods.SayHelo`", "did you mean `SayHello`"], 10)
        .await;
    assert!(line.contains(GREETER), "{line}");
    assert!(
        daemon.log.matching(&["methods.SayHello`"]).is_empty(),
        "a method the service has gives no warning"
    );

    let status = daemon.service_status(GREETER).await.expect("known");
    assert_eq!(status.warnings.len(), 1, "{:?}", status.warnings);
    assert!(
        status.warnings[0].starts_with(
            "`services.\"myservice.v1.Greeter\".methods.SayHelo`: `myservice.v1.Greeter` has no method `SayHelo`"
        ),
        "{:?}",
        status.warnings
    );

    let out = std::process::Command::new(common::binary())
        .args(["status", "--router", &daemon.admin_url()])
        .output()
        .expect("grpc-router status runs");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("  warning: `services.\"myservice.v1.Greeter\".methods.SayHelo`"),
        "{table}"
    );

    let (code, page) = daemon.http_get("/").await;
    assert_eq!(code, 200);
    assert!(page.contains(r#"<ul class="warnings"><li>"#), "{page}");

    // A reload that fixes the name clears the warning.
    daemon.reload(&config_with(
        "[services.\"myservice.v1.Greeter\".methods.SayHello]\nrate_limit = { per_second = 1 }\n",
    ));
    daemon.log.wait_for(&["configuration reloaded"], 10).await;
    let status = daemon.service_status(GREETER).await.expect("known");
    assert!(status.warnings.is_empty(), "{:?}", status.warnings);
}
