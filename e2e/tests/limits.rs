//! Message size limits, both directions, every method kind: a message over
//! a limit fails the call at once with RESOURCE_EXHAUSTED (gRPC's code for
//! it) and a message naming the limit and the setting that raises it; and a
//! rogue instance that never ends its messages costs the router a bounded
//! number of bytes, whatever the number of its calls.

use test_kit as common;

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::test_greeter::TestGreeter;
use common::{RawRegistration, TestRouter, start_instance_with, within};
use myservice::pb::StreamRequest;
use myservice::pb::greeter_server::GreeterServer;
use router_runtime::bridge::BridgeConfig;
use router_runtime::codec::RawCodec;
use router_runtime::pb;
use router_runtime::router::RouterConfig;
use router_runtime::wire::{BridgeFrame, RouterFrame};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

const MIB: usize = 1024 * 1024;

/// The Greeter's methods, one of each kind.
const METHODS: [&str; 4] = [
    "/myservice.v1.Greeter/SayHello",
    "/myservice.v1.Greeter/StreamGreetings",
    "/myservice.v1.Greeter/Sum",
    "/myservice.v1.Greeter/Chat",
];

/// A valid message of every request type the Greeter takes, `size` bytes
/// long: one length-delimited field 15, which none of them declares (so a
/// handler sees a default message).
fn message_of(size: usize) -> Bytes {
    let mut prefix = BytesMut::new();
    prefix.put_u8((15 << 3) | 2);
    let mut length = size - 1;
    // The varint's own length, then the payload's.
    loop {
        let mut varint = BytesMut::new();
        prost::encoding::encode_varint(length as u64, &mut varint);
        if 1 + varint.len() + length == size {
            prefix.extend_from_slice(&varint);
            break;
        }
        length -= 1;
    }
    let mut message = BytesMut::with_capacity(size);
    message.extend_from_slice(&prefix);
    message.resize(size, 0xab);
    message.freeze()
}

/// Calls `path` with `message` as its first request message and the request
/// stream left open (a streaming client still sending), and returns the
/// status the call ends with; fails the test if it ends OK or takes more
/// than ten seconds.
async fn call_status(channel: Channel, path: &'static str, message: Bytes) -> Status {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tx.send(message).await.expect("queued");
    let mut grpc = tonic::client::Grpc::new(channel);
    let status = within(10, &format!("{path} to fail"), async {
        grpc.ready().await.expect("ready");
        let response = grpc
            .streaming(
                tonic::Request::new(ReceiverStream::new(rx)),
                http::uri::PathAndQuery::from_static(path),
                RawCodec,
            )
            .await;
        let mut stream = match response {
            Err(status) => return status,
            Ok(response) => response.into_inner(),
        };
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("{path} ended OK"),
                Err(status) => return status,
            }
        }
    })
    .await;
    drop(tx);
    status
}

/// Asserts `status` is RESOURCE_EXHAUSTED and its message names each of
/// `words`.
fn assert_exhausted(path: &str, status: &Status, words: &[&str]) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{path}: {status:?}");
    for word in words {
        assert!(
            status.message().contains(word),
            "{path}: the message names `{word}`: {:?}",
            status.message()
        );
    }
}

#[tokio::test]
async fn a_request_over_the_routers_limit_fails_at_once_with_resource_exhausted_in_every_method_kind()
 {
    let router = TestRouter::start(RouterConfig::default()).await;
    let (greeter, _events) = TestGreeter::new("a");
    let _instance = start_instance_with(
        &router,
        BridgeConfig::new(router.endpoint())
            .instance_id("a")
            .max_message_size(16 * MIB),
        GreeterServer::new(greeter).max_decoding_message_size(16 * MIB),
    )
    .await;
    let message = message_of(5 * MIB);
    for path in METHODS {
        let status = call_status(router.channel().await, path, message.clone()).await;
        assert_exhausted(
            path,
            &status,
            &[
                &message.len().to_string(),
                "4194304",
                "max_message_size",
                "max_request_message_bytes",
            ],
        );
    }
    // Nothing is left of the refused calls.
    within(5, "the calls to end", router.router.stats().wait_idle()).await;
}

#[tokio::test]
async fn a_request_over_the_instances_limit_fails_at_once_with_resource_exhausted_in_every_method_kind()
 {
    let router = TestRouter::start(RouterConfig {
        max_message_size: 16 * MIB,
        ..RouterConfig::default()
    })
    .await;
    let (greeter, _events) = TestGreeter::new("small");
    let _instance = start_instance_with(
        &router,
        BridgeConfig::new(router.endpoint())
            .instance_id("small")
            .max_message_size(MIB),
        GreeterServer::new(greeter),
    )
    .await;
    let message = message_of(2 * MIB);
    for path in METHODS {
        let status = call_status(router.channel().await, path, message.clone()).await;
        assert_exhausted(
            path,
            &status,
            &["`small`", "1048576", "BridgeConfig::max_message_size"],
        );
    }
    within(5, "the calls to end", router.router.stats().wait_idle()).await;
}

#[tokio::test]
async fn a_request_over_the_instance_servers_own_limit_fails_with_resource_exhausted_in_every_method_kind()
 {
    let router = TestRouter::start(RouterConfig {
        max_message_size: 16 * MIB,
        ..RouterConfig::default()
    })
    .await;
    let (greeter, _events) = TestGreeter::new("strict");
    let _instance = start_instance_with(
        &router,
        BridgeConfig::new(router.endpoint())
            .instance_id("strict")
            .max_message_size(16 * MIB),
        GreeterServer::new(greeter).max_decoding_message_size(MIB),
    )
    .await;
    let message = message_of(2 * MIB);
    for path in METHODS {
        let status = call_status(router.channel().await, path, message.clone()).await;
        assert_exhausted(
            path,
            &status,
            &[
                &message.len().to_string(),
                "1048576",
                "`strict`",
                "max_decoding_message_size",
            ],
        );
    }
}

/// What the rogue instance saw of the calls it was given.
#[derive(Debug, Default)]
struct RogueReport {
    /// The `Cancel` frames the router sent, in order.
    cancels: Vec<pb::Cancel>,
    /// Chunk bytes it sent in all.
    sent: usize,
}

/// Plays an instance that answers every call with response headers and then
/// a message that never ends: chunks of 64 KiB, never `last`, as fast as the
/// router's credit (`window` per call, then its `WindowUpdate`s) allows.
/// Returns once the router cancelled `calls` calls.
async fn never_ending_messages(
    mut rogue: RawRegistration,
    window: u32,
    calls: usize,
) -> RogueReport {
    const CHUNK: usize = 64 * 1024;
    let chunk = Bytes::from(vec![7u8; CHUNK]);
    let mut credit: std::collections::HashMap<u64, usize> = Default::default();
    let mut report = RogueReport::default();
    let send_within =
        |rogue: &RawRegistration, report: &mut RogueReport, call_id: u64, credit: &mut usize| {
            while *credit > 0 {
                let size = CHUNK.min(*credit);
                *credit -= size;
                report.sent += size;
                rogue.send(BridgeFrame::Chunk(pb::MessageChunk {
                    call_id,
                    data: chunk.slice(..size),
                    last: false,
                }));
            }
        };
    while report.cancels.len() < calls {
        let frame = match rogue.frames.message().await {
            Ok(Some(frame)) => frame,
            other => panic!("the rogue's register stream ended: {other:?}"),
        };
        match frame {
            RouterFrame::Start(start) => {
                rogue.send(BridgeFrame::Headers(pb::Headers {
                    call_id: start.call_id,
                    metadata: Some(pb::Metadata::default()),
                }));
                let left = credit.entry(start.call_id).or_insert(window as usize);
                send_within(&rogue, &mut report, start.call_id, left);
            }
            RouterFrame::WindowUpdate(update) => {
                if let Some(left) = credit.get_mut(&update.call_id) {
                    *left += update.increment as usize;
                    send_within(&rogue, &mut report, update.call_id, left);
                }
            }
            RouterFrame::Cancel(cancel) => {
                credit.remove(&cancel.call_id);
                report.cancels.push(cancel);
            }
            RouterFrame::Ping(ping) => {
                rogue.send(BridgeFrame::Pong(pb::Pong { nonce: ping.nonce }))
            }
            _ => {}
        }
    }
    report
}

#[tokio::test]
async fn a_response_over_the_routers_limit_fails_at_once_with_resource_exhausted_in_every_method_kind()
 {
    let config = RouterConfig {
        max_message_size: 16 * MIB,
        max_response_message_size: MIB,
        ..RouterConfig::default()
    };
    let window = config.initial_window;
    let router = TestRouter::start(config).await;
    let rogue = RawRegistration::open(router.channel().await, "big", &[])
        .await
        .expect("registered");
    router.wait_for_instances(1).await;
    let rogue = tokio::spawn(never_ending_messages(rogue, window, METHODS.len()));
    for path in METHODS {
        let status = call_status(router.channel().await, path, message_of(16)).await;
        assert_exhausted(
            path,
            &status,
            &[
                "`big`",
                "1048576",
                "max_response_message_size",
                "max_response_message_bytes",
            ],
        );
    }
    let report = within(10, "the rogue to see every cancel", rogue)
        .await
        .expect("rogue task");
    for cancel in &report.cancels {
        assert_eq!(cancel.code, Code::ResourceExhausted as i32, "{cancel:?}");
    }
}

#[tokio::test]
async fn a_rogue_instance_sending_never_ending_messages_on_ten_calls_holds_at_most_the_registrations_bound()
 {
    const CALLS: usize = 10;
    let bound = 4 * MIB;
    // The per-message limit stays at its 64 MiB default: the bound per
    // registration is what holds the rogue's ten calls.
    let config = RouterConfig {
        max_partial_response_bytes: bound,
        ..RouterConfig::default()
    };
    let window = config.initial_window;
    let router = TestRouter::start(config).await;
    let rogue = RawRegistration::open(router.channel().await, "rogue", &[])
        .await
        .expect("registered");
    router.wait_for_instances(1).await;
    let instance = router.router.registry().snapshot()[0].clone();
    let rogue = tokio::spawn(never_ending_messages(rogue, window, CALLS));

    let mut calls = Vec::new();
    for i in 0..CALLS {
        let mut client = router.client().await;
        calls.push(tokio::spawn(async move {
            let mut stream = client
                .stream_greetings(StreamRequest {
                    name: format!("call-{i}"),
                    count: 1,
                    payload_size: 0,
                })
                .await?
                .into_inner();
            loop {
                if stream.message().await?.is_none() {
                    return Ok::<(), Status>(());
                }
            }
        }));
    }
    // Sample what the router holds while the calls run.
    let mut peak = 0;
    let statuses = within(20, "every call to fail", async {
        let mut statuses = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        while statuses.len() < CALLS {
            tick.tick().await;
            let held = instance.partial_response_bytes();
            peak = peak.max(held);
            assert!(
                held <= bound,
                "the router holds {held} bytes of the rogue's partial messages, over the bound of {bound}"
            );
            let mut left = Vec::new();
            for call in calls.drain(..) {
                if call.is_finished() {
                    statuses.push(call.await.expect("call task"));
                } else {
                    left.push(call);
                }
            }
            calls = left;
        }
        statuses
    })
    .await;
    eprintln!(
        "rogue instance, {CALLS} calls: at most {peak} bytes of partial messages held (bound {bound})"
    );
    for status in statuses {
        let status = status.expect_err("a never-ending message fails the call");
        assert_exhausted(
            "StreamGreetings",
            &status,
            &["`rogue`", &bound.to_string(), "max_partial_response_bytes"],
        );
    }
    let report = within(10, "the rogue to see every cancel", rogue)
        .await
        .expect("rogue task");
    assert_eq!(report.cancels.len(), CALLS);
    for cancel in &report.cancels {
        assert_eq!(cancel.code, Code::ResourceExhausted as i32, "{cancel:?}");
    }
    eprintln!("the rogue sent {} bytes in all", report.sent);
    common::eventually(5, "nothing held once the calls ended", || {
        instance.partial_response_bytes() == 0
    })
    .await;
}
