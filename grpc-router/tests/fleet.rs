//! A fleet behind one address: three daemons whose `[cluster] peers` name
//! each other tell a bridge of every replica, so a bridge given one address
//! (one daemon's, or a balancer's in front of all three) registers with all
//! of them, and follows a replica replaced by another.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use common::{Daemon, poll, within};
use myservice::pb::greeter_client::GreeterClient;
use myservice::pb::{GreeterSpec, HelloRequest};
use router_runtime::bridge::{BridgeConfig, BridgeHandle};
use router_runtime::codegen::ServiceSpec;
use router_runtime::pb;
use router_runtime::wire::{BridgeFrame, DUPLICATE_TRAILER, RouterFrame};
use tokio::net::{TcpListener, TcpStream};

const GREETER: &str = "myservice.v1.Greeter";

/// A daemon's config: its own `router_id`, listeners on loopback port 0,
/// and `[cluster]` naming `peers` (none: no section).
fn config(router_id: &str, peers: &[SocketAddr]) -> String {
    let cluster = if peers.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
        format!("[cluster]\npeers = [{}]\n", list.join(", "))
    };
    format!(
        "router_id = \"{router_id}\"\n\
         [clients]\naddress = \"127.0.0.1:0\"\n\
         [registrations]\naddress = \"127.0.0.1:0\"\n\
         [shutdown]\ngrace = \"1s\"\n\
         [admin]\naddress = \"127.0.0.1:0\"\n\
         [log]\nlevel = \"info\"\n\
         [defaults]\nheartbeat_interval = \"500ms\"\nheartbeat_timeout = \"2s\"\n\
         {cluster}"
    )
}

/// Points every daemon of `fleet` (router ids `ids`) at all of their
/// registration addresses, by a reload, and waits until each applied it.
async fn form_fleet(fleet: &[&Daemon], ids: &[&str]) {
    let peers: Vec<SocketAddr> = fleet.iter().map(|d| d.registrations).collect();
    for (daemon, id) in fleet.iter().zip(ids) {
        let mark = daemon.log.mark();
        daemon.reload(&config(id, &peers));
        daemon
            .log
            .wait_for_after(mark, &["the fleet changed"], 10)
            .await;
    }
}

/// Three daemons started, not yet told of each other.
fn three_daemons() -> Vec<Daemon> {
    ["r1", "r2", "r3"]
        .iter()
        .map(|id| Daemon::start(&config(id, &[])))
        .collect()
}

fn instance(endpoint: String) -> BridgeHandle {
    myservice::demo::start_instance(BridgeConfig::new(endpoint).instance_id("fleet-instance"))
}

/// Waits up to `secs` until the instance is registered with every daemon of
/// `fleet`; returns how long that took.
async fn registered_with_all(fleet: &[&Daemon], secs: u64) -> std::time::Duration {
    let started = Instant::now();
    poll(
        secs,
        "the instance registered with every daemon",
        || async {
            for daemon in fleet {
                let registered = daemon
                    .service_status(GREETER)
                    .await
                    .is_some_and(|s| s.instances.iter().any(|i| i.id == "fleet-instance"));
                if !registered {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    started.elapsed()
}

/// Waits until every daemon of `fleet` shows the instance registered with
/// `n` routers, as its heartbeats report.
async fn reports_routers(fleet: &[&Daemon], n: u32) {
    poll(
        5,
        &format!("every daemon to show the instance with {n} routers"),
        || async {
            for daemon in fleet {
                let status = daemon.service_status(GREETER).await?;
                let instance = status.instances.iter().find(|i| i.id == "fleet-instance")?;
                if instance.routers != n {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

/// SayHello through each daemon, answered by the instance.
async fn calls_succeed_through(fleet: &[&Daemon]) {
    for daemon in fleet {
        let mut client = GreeterClient::new(daemon.channel().await);
        let reply = within(
            5,
            "SayHello",
            client.say_hello(HelloRequest {
                name: "fleet".into(),
                payload: vec![],
            }),
        )
        .await
        .unwrap_or_else(|status| {
            panic!(
                "SayHello through {} failed: {status:?}",
                daemon.registrations
            )
        })
        .into_inner();
        assert_eq!(reply.instance_id, "fleet-instance");
    }
}

#[tokio::test]
async fn a_bridge_given_one_daemon_registers_with_the_whole_fleet_and_follows_a_replacement() {
    let mut daemons = three_daemons();
    {
        let fleet: Vec<&Daemon> = daemons.iter().collect();
        form_fleet(&fleet, &["r1", "r2", "r3"]).await;
    }
    let bridge = instance(daemons[0].registrations_url());
    let took = {
        let fleet: Vec<&Daemon> = daemons.iter().collect();
        let took = registered_with_all(&fleet, 5).await;
        calls_succeed_through(&fleet).await;
        took
    };
    eprintln!("registered with 3 daemons through one address in {took:?}");

    // r2 dies; r4 takes its place on another port, and the others learn of
    // it by a reload.
    drop(daemons.remove(1));
    let r4 = Daemon::start(&config("r4", &[]));
    daemons.push(r4);
    let replaced_at = Instant::now();
    let followed = {
        let fleet: Vec<&Daemon> = daemons.iter().collect();
        form_fleet(&fleet, &["r1", "r3", "r4"]).await;
        registered_with_all(&fleet, 5).await;
        let followed = replaced_at.elapsed();
        calls_succeed_through(&fleet).await;
        // The dead replica's registration is given up: three, not four.
        reports_routers(&fleet, 3).await;
        followed
    };
    eprintln!("registered with the replacement {followed:?} after the reloads began");
    // The registration with the dead replica is given up: three, not four.
    let mut state = bridge.registrations();
    within(
        5,
        "three registrations",
        state.wait_for(|s| s.registered == 3),
    )
    .await
    .expect("bridge alive");
    bridge.shutdown().await;
}

/// A round-robin TCP balancer in front of `backends`: each accepted
/// connection is piped to the next backend. Returns its address.
async fn balancer(backends: Vec<SocketAddr>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let backend = backends[next.fetch_add(1, Ordering::Relaxed) % backends.len()];
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    address
}

#[tokio::test]
async fn a_bridge_behind_a_balancer_registers_with_every_replica() {
    let daemons = three_daemons();
    let fleet: Vec<&Daemon> = daemons.iter().collect();
    form_fleet(&fleet, &["r1", "r2", "r3"]).await;
    let front = balancer(daemons.iter().map(|d| d.registrations).collect()).await;
    let bridge = instance(format!("http://{front}"));
    let took = registered_with_all(&fleet, 5).await;
    calls_succeed_through(&fleet).await;
    eprintln!("registered with 3 daemons behind a balancer in {took:?}");
    reports_routers(&fleet, 3).await;
    // One registration per replica, none twice.
    let mut state = bridge.registrations();
    within(
        5,
        "three registrations",
        state.wait_for(|s| s.registered == 3),
    )
    .await
    .expect("bridge alive");
    for daemon in &fleet {
        let status = daemon.service_status(GREETER).await.expect("known");
        assert_eq!(status.instances.len(), 1, "one registration per replica");
    }
    bridge.shutdown().await;
}

/// A register stream opened by hand: the frames to send and the router's.
struct Raw {
    out: tokio::sync::mpsc::UnboundedSender<BridgeFrame>,
    frames: tonic::Streaming<RouterFrame>,
    welcome: pb::Welcome,
}

/// Registers instance `id` by hand with the daemon, as a bridge that takes
/// `Peers` or not and holds `registered_with` already.
async fn raw_register(
    daemon: &Daemon,
    id: &str,
    discovery: bool,
    registered_with: &[&str],
) -> Result<Raw, tonic::Status> {
    let hello = pb::Hello {
        protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
        instance_id: id.into(),
        service: GREETER.into(),
        weight: 1,
        initial_window: 64 * 1024,
        max_frame_size: 64 * 1024,
        description: Some(GreeterSpec::DESCRIPTOR.describe(GreeterSpec::FILE_DESCRIPTOR_SET)),
        incarnation: "one-process".into(),
        discovery,
        registered_with: registered_with.iter().map(|r| (*r).to_owned()).collect(),
        ..Default::default()
    };
    let ((out, frames), welcome) = common::raw_register(daemon, hello).await?;
    Ok(Raw {
        out,
        frames,
        welcome,
    })
}

impl Raw {
    /// The next frame that is not a `Ping` (each answered with its `Pong`),
    /// or `None` once `pings` pings came first.
    async fn next_but_pings(&mut self, pings: usize) -> Option<RouterFrame> {
        let mut seen = 0;
        loop {
            let frame = within(5, "a frame", self.frames.message())
                .await
                .expect("the stream is open")
                .expect("a frame");
            match frame {
                RouterFrame::Ping(ping) => {
                    let _ = self
                        .out
                        .send(BridgeFrame::Pong(pb::Pong { nonce: ping.nonce }));
                    seen += 1;
                    if seen == pings {
                        return None;
                    }
                }
                other => return Some(other),
            }
        }
    }
}

fn addresses(peers: &[pb::RouterPeer]) -> Vec<&str> {
    peers.iter().map(|p| p.address.as_str()).collect()
}

#[tokio::test]
async fn fleet_changes_reach_the_bridges_that_asked_for_them_and_no_other() {
    let d1 = Daemon::start(&config("r1", &[]));
    let d2 = Daemon::start(&config("r2", &[]));
    let mark = d1.log.mark();
    d1.reload(&config("r1", &[d1.registrations, d2.registrations]));
    d1.log
        .wait_for_after(mark, &["the fleet changed"], 10)
        .await;

    let mut new = raw_register(&d1, "new-bridge", true, &[])
        .await
        .expect("registered");
    let mut old = raw_register(&d1, "old-bridge", false, &[])
        .await
        .expect("registered");
    // Both Welcomes list the fleet, this replica first with its id (an
    // older bridge skips the field it does not know).
    for welcome in [&new.welcome, &old.welcome] {
        assert_eq!(welcome.router_id, "r1");
        assert_eq!(welcome.peers[0].router_id, "r1");
        let expected = [d1.registrations.to_string(), d2.registrations.to_string()];
        assert_eq!(addresses(&welcome.peers), expected);
    }

    // d2 leaves the list.
    let mark = d1.log.mark();
    d1.reload(&config("r1", &[d1.registrations]));
    d1.log
        .wait_for_after(mark, &["the fleet changed"], 10)
        .await;
    match new.next_but_pings(4).await {
        Some(RouterFrame::Peers(peers)) => {
            assert_eq!(addresses(&peers.peers), [d1.registrations.to_string()]);
        }
        other => panic!("expected Peers, got {other:?}"),
    }
    // The bridge that did not ask gets pings, and no Peers, which it could
    // not decode.
    assert_eq!(old.next_but_pings(2).await, None);
}

#[tokio::test]
async fn a_replica_refuses_a_second_registration_of_a_bridge_that_holds_it_and_keeps_the_first() {
    let d1 = Daemon::start(&config("r1", &[]));
    let mark = d1.log.mark();
    d1.reload(&config("r1", &[d1.registrations]));
    d1.log
        .wait_for_after(mark, &["the fleet changed"], 10)
        .await;
    let mut first = raw_register(&d1, "held", true, &[])
        .await
        .expect("registered");
    // The same process dials again (through a balancer) saying it holds r1.
    let refusal = raw_register(&d1, "held", true, &["r0", "r1"])
        .await
        .err()
        .expect("refused");
    assert_eq!(refusal.code(), tonic::Code::AlreadyExists, "{refusal:?}");
    assert_eq!(
        refusal
            .metadata()
            .get(DUPLICATE_TRAILER)
            .and_then(|v| v.to_str().ok()),
        Some("r1")
    );
    // Without r1 in the list, the same Hello would have replaced the first
    // registration (a reconnect); with it, the first stays.
    assert_eq!(first.next_but_pings(2).await, None);
    let status = d1.service_status(GREETER).await.expect("known");
    assert_eq!(status.instances.len(), 1);
    assert!(d1.log.matching(&["re-registered"]).is_empty());
}

#[tokio::test]
async fn a_daemon_finds_its_peers_through_dns_and_tells_the_bridge() {
    let d1 = Daemon::start(&config("r1", &[]));
    let d2 = Daemon::start(&config("r2", &[]));
    // `localhost` resolves to d2's loopback address (and perhaps `::1`,
    // where nothing listens: the bridge's dials there fail and back off).
    let mark = d1.log.mark();
    d1.reload(&format!(
        "{}[cluster]\npeers_dns = \"localhost:{}\"\nresolve_every = \"200ms\"\n",
        config("r1", &[]),
        d2.registrations.port()
    ));
    d1.log
        .wait_for_after(mark, &["the fleet changed"], 10)
        .await;
    let bridge = instance(d1.registrations_url());
    let took = registered_with_all(&[&d1, &d2], 5).await;
    eprintln!("registered with a peer found through DNS in {took:?}");
    calls_succeed_through(&[&d1, &d2]).await;
    bridge.shutdown().await;
}

#[tokio::test]
async fn a_bridge_behind_a_balancer_that_lost_its_replica_never_displaces_its_other_registrations()
{
    let mut daemons = three_daemons();
    {
        let fleet: Vec<&Daemon> = daemons.iter().collect();
        form_fleet(&fleet, &["r1", "r2", "r3"]).await;
    }
    let front = balancer(daemons.iter().map(|d| d.registrations).collect()).await;
    let bridge = instance(format!("http://{front}"));
    {
        let fleet: Vec<&Daemon> = daemons.iter().collect();
        registered_with_all(&fleet, 5).await;
    }
    // The balancer's first connection went to r1: the bridge's registration
    // through it is lost with r1, and it dials the balancer again, reaching
    // r2 and r3, which it holds: they refuse, keeping the live registration.
    drop(daemons.remove(0));
    let r4 = Daemon::start(&config("r4", &[]));
    daemons.push(r4);
    let fleet: Vec<&Daemon> = daemons.iter().collect();
    form_fleet(&fleet, &["r2", "r3", "r4"]).await;
    registered_with_all(&fleet, 5).await;
    calls_succeed_through(&fleet).await;
    reports_routers(&fleet, 3).await;
    for daemon in &fleet {
        assert!(
            daemon.log.matching(&["re-registered"]).is_empty(),
            "a registration of the bridge replaced another on {}",
            daemon.registrations
        );
    }
    bridge.shutdown().await;
}
