//! Ten thousand registrations on one router.

use test_kit as common;

use std::time::{Duration, Instant};

use common::test_greeter::TestGreeter;
use common::{RawRegistration, TestRouter, start_instance_with, within};
use myservice::pb::HelloRequest;
use myservice::pb::greeter_server::GreeterServer;
use router_runtime::bridge::BridgeConfig;
use router_runtime::router::{RouterConfig, SELECT_HEADER};
use tonic::Request;

const RAW: usize = 10_000;
/// hyper's default limit of concurrent streams per HTTP/2 connection is 200.
const PER_CONNECTION: usize = 190;

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn p50_of_selected_calls(router: &TestRouter, calls: usize) -> Duration {
    let mut client = router.client().await;
    let mut latencies = Vec::with_capacity(calls);
    for i in 0..calls {
        let mut request = Request::new(HelloRequest {
            name: format!("{i}"),
            payload: vec![],
        });
        request
            .metadata_mut()
            .insert(SELECT_HEADER, "kind=real".parse().expect("ascii"));
        let started = Instant::now();
        within(5, "selected call", client.say_hello(request))
            .await
            .expect("call succeeds");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    latencies[calls / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_registrations_stay_cheap_and_routable() {
    // The raw registrations never answer pings: a long heartbeat timeout
    // keeps them registered however slowly a loaded machine opens them.
    let router = TestRouter::start(RouterConfig {
        heartbeat_timeout: Duration::from_secs(600),
        ..RouterConfig::default()
    })
    .await;
    let mut real = Vec::new();
    for id in ["real-1", "real-2"] {
        let options = BridgeConfig::new(router.endpoint())
            .instance_id(id)
            .label("kind", "real");
        real.push(
            start_instance_with(&router, options, GreeterServer::new(TestGreeter::new(id).0)).await,
        );
    }
    let p50_small = p50_of_selected_calls(&router, 300).await;

    let rss_before = rss_kib();
    let started = Instant::now();
    let mut registrations = Vec::with_capacity(RAW);
    let mut tasks = Vec::new();
    for batch in 0..RAW.div_ceil(PER_CONNECTION) {
        let endpoint = router.endpoint();
        tasks.push(tokio::spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(endpoint)
                .expect("endpoint")
                .connect()
                .await
                .expect("connects");
            let mut opened = Vec::new();
            for k in 0..PER_CONNECTION {
                let n = batch * PER_CONNECTION + k;
                if n >= RAW {
                    break;
                }
                opened.push(
                    RawRegistration::open(channel.clone(), &format!("raw-{n}"), &[("kind", "raw")])
                        .await
                        .expect("registers"),
                );
            }
            opened
        }));
    }
    for task in tasks {
        registrations.extend(within(120, "registrations", task).await.expect("task"));
    }
    router.wait_for_instances(RAW + 2).await;
    let took = started.elapsed();
    let rss_after = rss_kib();

    let p50_large = p50_of_selected_calls(&router, 300).await;
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        eprintln!(
            "{RAW} registrations in {took:?}; process RSS +{} KiB ({:.2} KiB per registration, router and clients together)",
            after.saturating_sub(before),
            after.saturating_sub(before) as f64 / RAW as f64
        );
    }
    eprintln!(
        "selected unary p50: {p50_small:?} with 2 instances, {p50_large:?} with {} instances",
        RAW + 2
    );
    assert_eq!(router.router.registry().len(), RAW + 2);
    let started = Instant::now();
    drop(registrations);
    router.wait_for_instances(2).await;
    eprintln!("{RAW} registrations gone in {:?}", started.elapsed());
}
