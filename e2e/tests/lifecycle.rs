//! Instances and routers coming and going under load.

use test_kit as common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::test_greeter::TestGreeter;
use common::{TestRouter, start_instance_with, within};
use myservice::pb::greeter_server::GreeterServer;
use myservice::pb::{HelloRequest, StreamRequest};
use router_runtime::bridge::{BridgeConfig, BridgeHandle};
use router_runtime::router::RouterConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;

fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.into(),
        payload: vec![],
    }
}

async fn instance(router: &TestRouter, id: &str) -> BridgeHandle {
    let options = BridgeConfig::new(router.endpoint()).instance_id(id);
    start_instance_with(router, options, GreeterServer::new(TestGreeter::new(id).0)).await
}

/// Counts of a load run.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    progress: tokio::sync::Notify,
}

/// Runs unary calls and short server streams from `workers` tasks until `stop`
/// turns true; every failure is counted and printed.
fn load(
    client: myservice::pb::greeter_client::GreeterClient<tonic::transport::Channel>,
    workers: usize,
    stop: watch::Receiver<bool>,
    tally: Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|w| {
            let mut client = client.clone();
            let stop = stop.clone();
            let tally = tally.clone();
            tokio::spawn(async move {
                let mut i = 0u64;
                while !*stop.borrow() {
                    i += 1;
                    let result = if i.is_multiple_of(5) {
                        match client
                            .stream_greetings(StreamRequest {
                                name: "s".into(),
                                count: 20,
                                payload_size: 64,
                            })
                            .await
                        {
                            Ok(stream) => {
                                let mut stream = stream.into_inner();
                                let mut n = 0;
                                loop {
                                    match stream.message().await {
                                        Ok(Some(_)) => n += 1,
                                        Ok(None) if n == 20 => break Ok(()),
                                        Ok(None) => break Err(format!("stream ended after {n}")),
                                        Err(status) => break Err(status.to_string()),
                                    }
                                }
                            }
                            Err(status) => Err(status.to_string()),
                        }
                    } else {
                        client
                            .say_hello(hello(&format!("{w}-{i}")))
                            .await
                            .map(|_| ())
                            .map_err(|s| s.to_string())
                    };
                    match result {
                        Ok(()) => {
                            tally.progress.notify_waiters();
                            tally.ok.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            eprintln!("call failed: {e}");
                            tally.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect()
}

async fn wait_for_calls(tally: &Tally, at_least: usize) {
    within(20, "calls to flow", async {
        loop {
            let progress = tally.progress.notified();
            if tally.ok.load(Ordering::Relaxed) >= at_least {
                return;
            }
            progress.await;
        }
    })
    .await;
}

#[tokio::test]
async fn draining_one_of_two_instances_under_load_fails_no_call() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let a = instance(&router, "a").await;
    let _b = instance(&router, "b").await;
    let tally = Arc::new(Tally::default());
    let (stop, stopped) = watch::channel(false);
    let workers = load(router.client().await, 8, stopped, tally.clone());
    wait_for_calls(&tally, 300).await;

    within(20, "drain", a.shutdown()).await;
    router.wait_for_instances(1).await;
    let after_drain = tally.ok.load(Ordering::Relaxed);
    wait_for_calls(&tally, after_drain + 300).await;

    stop.send_replace(true);
    for worker in workers {
        within(10, "worker", worker).await.expect("worker");
    }
    let (ok, failed) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    eprintln!("drain under load: {ok} calls succeeded, {failed} failed");
    assert_eq!(failed, 0, "calls failed during the drain");
}

#[tokio::test]
async fn bridges_reregister_after_the_router_restarts_on_the_same_port() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let addr = router.addr;
    let a = instance(&router, "a").await;
    let b = instance(&router, "b").await;
    let mut client = router.client().await;
    within(5, "call before restart", client.say_hello(hello("x")))
        .await
        .expect("ok");

    router.stop().await;
    let listener = TcpListener::bind(addr).await.expect("same port again");
    let router = TestRouter::start_on(listener, RouterConfig::default()).await;
    // The same bridges, never restarted, come back on their own.
    router.wait_for_instances(2).await;
    within(10, "bridges to report registered", a.registered()).await;
    within(10, "bridges to report registered", b.registered()).await;
    let mut client = router.client().await;
    let mut seen = std::collections::HashSet::new();
    for i in 0..20 {
        let reply = within(
            5,
            "call after restart",
            client.say_hello(hello(&i.to_string())),
        )
        .await
        .expect("calls succeed again");
        seen.insert(reply.into_inner().instance_id);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test]
async fn two_routers_serve_both_instances_and_survive_one_stopping() {
    let first = TestRouter::start(RouterConfig::default()).await;
    let second = TestRouter::start(RouterConfig::default()).await;
    let mut handles = Vec::new();
    for id in ["a", "b"] {
        let options = BridgeConfig::new(first.endpoint())
            .endpoint(second.endpoint())
            .instance_id(id);
        let handle = GreeterBridgeFor::connect(options, id);
        within(10, "both registrations", handle.registered_with(2)).await;
        handles.push(handle);
    }
    first.wait_for_instances(2).await;
    second.wait_for_instances(2).await;
    for router in [&first, &second] {
        let mut client = router.client().await;
        let mut seen = std::collections::HashSet::new();
        for i in 0..30 {
            let reply = within(5, "call", client.say_hello(hello(&i.to_string())))
                .await
                .expect("ok");
            seen.insert(reply.into_inner().instance_id);
        }
        assert_eq!(seen.len(), 2, "router {} reached {seen:?}", router.addr);
    }

    // Load through the second router while the first stops.
    let tally = Arc::new(Tally::default());
    let (stop, stopped) = watch::channel(false);
    let workers = load(second.client().await, 4, stopped, tally.clone());
    wait_for_calls(&tally, 100).await;
    first.stop().await;
    let after = tally.ok.load(Ordering::Relaxed);
    wait_for_calls(&tally, after + 200).await;
    stop.send_replace(true);
    for worker in workers {
        within(10, "worker", worker).await.expect("worker");
    }
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0);
}

/// Connects a TestGreeter bridge without waiting (several routers).
struct GreeterBridgeFor;

impl GreeterBridgeFor {
    fn connect(options: BridgeConfig, id: &str) -> BridgeHandle {
        myservice::pb::GreeterBridge::new(TestGreeter::new(id).0).connect(options)
    }
}

/// A resolver whose answer the test changes.
#[derive(Clone, Default)]
struct FakeDns(Arc<std::sync::Mutex<Vec<std::net::SocketAddr>>>);

impl FakeDns {
    fn set(&self, addrs: &[std::net::SocketAddr]) {
        *self.0.lock().expect("lock") = addrs.to_vec();
    }
}

impl router_runtime::bridge::Resolve for FakeDns {
    fn resolve(
        &self,
        host: &str,
        _port: u16,
    ) -> futures_util::future::BoxFuture<'static, std::io::Result<Vec<std::net::SocketAddr>>> {
        assert_eq!(host, "routers.test");
        let addrs = self.0.lock().expect("lock").clone();
        Box::pin(async move { Ok(addrs) })
    }
}

#[tokio::test]
async fn a_bridge_registers_with_every_address_a_router_name_resolves_to() {
    let first = TestRouter::start(RouterConfig::default()).await;
    let second = TestRouter::start(RouterConfig::default()).await;
    let dns = FakeDns::default();
    dns.set(&[first.addr]);
    let options = BridgeConfig::new("http://routers.test:50051")
        .instance_id("a")
        .resolve_every(std::time::Duration::from_millis(50))
        .resolver(dns.clone());
    let handle = GreeterBridgeFor::connect(options, "a");
    first.wait_for_instances(1).await;

    // A new replica appears in DNS: the bridge registers there too.
    dns.set(&[first.addr, second.addr]);
    second.wait_for_instances(1).await;
    within(10, "two registrations", handle.registered_with(2)).await;
    let mut client = second.client().await;
    let reply = within(
        5,
        "call via the new replica",
        client.say_hello(hello("dns")),
    )
    .await
    .expect("ok");
    assert_eq!(reply.into_inner().instance_id, "a");

    // The first replica leaves DNS: its registration is drained and closed.
    dns.set(&[second.addr]);
    first.wait_for_instances(0).await;
    assert_eq!(second.router.registry().len(), 1);
    within(10, "shutdown", handle.shutdown()).await;
    second.wait_for_instances(0).await;
}

#[tokio::test]
async fn an_instance_at_its_limit_refuses_a_call_from_another_router_which_sends_it_elsewhere() {
    use common::test_greeter::Event;
    use router_runtime::codegen::Strategy;
    let first = TestRouter::start(RouterConfig::default()).await;
    let second = TestRouter::start(RouterConfig {
        strategy: Some(Strategy::RoundRobin),
        ..RouterConfig::default()
    })
    .await;
    // "busy" takes one call at a time and registers with both routers;
    // "spare" only with the second, after "busy" (round robin starts there).
    let (greeter, mut events) = TestGreeter::new("busy");
    let busy = myservice::pb::GreeterBridge::new(greeter).connect(
        BridgeConfig::new(first.endpoint())
            .endpoint(second.endpoint())
            .instance_id("busy")
            .max_concurrent_calls(1),
    );
    within(10, "busy registered twice", busy.registered_with(2)).await;
    second.wait_for_instances(1).await;
    let _spare = instance(&second, "spare").await;

    // The first router fills busy's only slot.
    let mut through_first = first.client().await;
    let slow = tokio::spawn(async move { through_first.say_hello(hello("slow:60000")).await });
    loop {
        match within(5, "the slow call to start", events.recv()).await {
            Some(Event::SlowStarted) => break,
            Some(_) => continue,
            None => panic!("events closed"),
        }
    }

    // The second router does not know busy is full: busy refuses without
    // running the call, and the router sends it to spare.
    let mut through_second = second.client().await;
    let reply = within(5, "refused call", through_second.say_hello(hello("x")))
        .await
        .expect("served elsewhere")
        .into_inner();
    assert_eq!(reply.instance_id, "spare");
    assert!(second.router.stats().calls_retried() >= 1);
    slow.abort();
    busy.abort().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_instance_whose_process_exits_at_once_loses_no_answer() {
    use myservice::pb::GreeterBridge;
    use std::time::Duration;
    use tokio::sync::oneshot;

    let router = TestRouter::start(RouterConfig::default()).await;
    let endpoint = router.endpoint();
    let (registered_tx, registered_rx) = oneshot::channel::<()>();
    let (drain_tx, drain_rx) = oneshot::channel::<()>();
    // The instance runs on a runtime of its own, dropped the moment its drain
    // returns, as a process that exits after `shutdown()`: nothing still
    // queued is written after that.
    let process = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let (mut greeter, _events) = TestGreeter::new("exiting");
            greeter.delay = Duration::from_millis(200);
            let handle = GreeterBridge::from_server(GreeterServer::new(greeter))
                .connect(BridgeConfig::new(endpoint).instance_id("exiting"));
            handle.registered().await;
            let _ = registered_tx.send(());
            let _ = drain_rx.await;
            handle.shutdown().await;
        });
        runtime.shutdown_background();
    });
    within(10, "the instance to register", registered_rx)
        .await
        .expect("registered");
    router.wait_for_instances(1).await;
    let instance = router.router.registry().snapshot()[0].clone();

    let mut calls = Vec::new();
    for i in 0..20 {
        let mut client = router.client().await;
        calls.push(tokio::spawn(async move {
            client.say_hello(hello(&format!("c{i}"))).await
        }));
    }
    common::eventually(5, "20 calls in flight", || instance.calls_in_flight() == 20).await;
    drain_tx.send(()).expect("instance waiting");
    for call in calls {
        within(10, "a call", call)
            .await
            .expect("task")
            .expect("answered before the instance exited");
    }
    within(
        10,
        "the instance process",
        tokio::task::spawn_blocking(move || process.join()),
    )
    .await
    .expect("joined")
    .expect("the instance process ran to its end");
}
