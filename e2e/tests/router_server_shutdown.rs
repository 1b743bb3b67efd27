//! A compiled router's `RouterServer` shuts down within its grace period
//! whatever its clients do.

use test_kit as common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::test_greeter::TestGreeter;
use common::{connect, open_endless_stream, within};
use myservice::pb::{GreeterBridge, GreeterRouter};
use router_runtime::bridge::BridgeConfig;
use router_runtime::router::RouterConfig;
use router_runtime::server::{Listener, RouterServer};
use tokio::sync::oneshot;

#[tokio::test]
async fn a_router_server_returns_within_the_grace_period_while_a_client_holds_a_stream_it_does_not_read()
 {
    let listener = Listener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = GreeterRouter::new(RouterConfig::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        RouterServer::new("test")
            .route(&router)
            .grace(Duration::from_secs(1))
            .serve(listener, None, async {
                let _ = stopped.await;
            }),
    );
    let (greeter, _events) = TestGreeter::new("instance-1");
    let instance = GreeterBridge::new(greeter)
        .connect(BridgeConfig::new(format!("http://{addr}")).instance_id("instance-1"));
    within(10, "registration", instance.registered()).await;

    // An endless stream of 64 KiB messages that the client never reads:
    // the connection's windows fill and the router can write nothing more.
    let mut client = connect(addr).await;
    let _unread = open_endless_stream(&mut client, 64 * 1024).await;

    let signalled = Instant::now();
    let _ = stop.send(());
    within(10, "the server to return", server)
        .await
        .expect("server task")
        .expect("serves and stops cleanly");
    let took = signalled.elapsed();
    eprintln!("serve returned {took:?} after the signal (grace 1 s)");
    assert!(
        took < Duration::from_secs(2),
        "returns within grace (1 s) + 1 s of the signal, took {took:?}"
    );
}
