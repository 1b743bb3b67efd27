//! End to end: a reload (SIGHUP) keeps what the command line decided and
//! always says how it went, whatever the log level.

mod common;

use common::{Daemon, config_with, within};
use myservice::pb::HelloRequest;
use myservice::pb::greeter_client::GreeterClient;
use router_runtime::bridge::BridgeConfig;

const ACCESS: &str = r#""target":"router_runtime::access""#;

async fn say_hello(daemon: &Daemon) {
    let mut client = GreeterClient::new(daemon.channel().await);
    within(
        5,
        "SayHello",
        client.say_hello(HelloRequest {
            name: "x".into(),
            payload: vec![],
        }),
    )
    .await
    .expect("routed");
}

#[tokio::test]
async fn the_access_log_and_json_flags_survive_a_reload() {
    let config = config_with("");
    let daemon = Daemon::start_with(&config, &["--access-log", "--log-format", "json"], &[]);
    let instance = myservice::demo::start_instance(
        BridgeConfig::new(daemon.registrations_url()).instance_id("a"),
    );
    within(10, "registration", instance.registered()).await;
    say_hello(&daemon).await;
    daemon.log.wait_for(&[ACCESS], 10).await;

    let mark = daemon.log.mark();
    daemon.reload(&config);
    daemon
        .log
        .wait_for_after(mark, &["configuration reloaded"], 10)
        .await;
    let restart_warnings: Vec<String> = daemon.log.lines()[mark..]
        .iter()
        .filter(|l| l.contains("needs a restart"))
        .cloned()
        .collect();
    assert!(
        restart_warnings.is_empty(),
        "the flags are not changes the reload warns about: {restart_warnings:?}"
    );

    let mark = daemon.log.mark();
    say_hello(&daemon).await;
    let line = daemon.log.wait_for_after(mark, &[ACCESS], 10).await;
    assert!(line.starts_with('{'), "still JSON: {line}");
}

#[tokio::test]
async fn a_reload_is_logged_at_log_level_warn() {
    let config = config_with("").replace("level = \"info\"", "level = \"warn\"");
    assert!(config.contains("level = \"warn\""), "{config}");
    let daemon = Daemon::start(&config);
    let mark = daemon.log.mark();
    daemon.reload(&config);
    let line = daemon
        .log
        .wait_for_after(mark, &["configuration reloaded"], 10)
        .await;
    assert!(line.contains("INFO"), "{line}");
    // A refused file is said too.
    let mark = daemon.log.mark();
    daemon.reload("[defaults]\nstrategy = \"fastest\"\n");
    daemon
        .log
        .wait_for_after(mark, &["configuration reload refused", "fastest"], 10)
        .await;
}
