//! Every method kind through a real router and bridge, with real tonic clients.

use test_kit as common;

use common::test_greeter::TestGreeter;
use common::{TestRouter, start_instance, start_instance_with, within};
use myservice::pb::greeter_server::GreeterServer;
use myservice::pb::{ChatMessage, HelloRequest, Number, StreamRequest};
use router_runtime::bridge::BridgeConfig;
use router_runtime::router::RouterConfig;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::codec::CompressionEncoding;

fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.into(),
        payload: vec![],
    }
}

#[tokio::test]
async fn unary_call_returns_the_instance_answer() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let (greeter, _events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter).await;
    let mut client = router.client().await;
    let reply = within(5, "unary reply", client.say_hello(hello("Ada")))
        .await
        .expect("call succeeds")
        .into_inner();
    assert_eq!(reply.message, "Hello, Ada!");
    assert_eq!(reply.instance_id, "a");
    assert_eq!(router.router.stats().calls_started(), 1);
}

#[tokio::test]
async fn server_streaming_delivers_1000_messages_in_order() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let (greeter, _events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter).await;
    let mut client = router.client().await;
    let request = StreamRequest {
        name: "n".into(),
        count: 1000,
        payload_size: 100,
    };
    let mut stream = within(5, "stream start", client.stream_greetings(request))
        .await
        .expect("stream starts")
        .into_inner();
    let mut received = 0u32;
    while let Some(reply) = within(5, "next message", stream.message())
        .await
        .expect("message")
    {
        assert_eq!(reply.message, received.to_string());
        assert_eq!(reply.payload.len(), 100);
        received += 1;
    }
    assert_eq!(received, 1000);
}

#[tokio::test]
async fn client_streaming_sums_1000_messages() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let (greeter, _events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter).await;
    let mut client = router.client().await;
    let numbers = tokio_stream::iter((1..=1000).map(|value| Number { value }));
    let reply = within(10, "sum", client.sum(numbers))
        .await
        .expect("sum succeeds")
        .into_inner();
    assert_eq!(reply.count, 1000);
    assert_eq!(reply.total, 500_500);
}

#[tokio::test]
async fn bidi_answers_each_message_before_the_request_stream_ends() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let (greeter, _events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter).await;
    let mut client = router.client().await;
    let (tx, rx) = mpsc::channel(1);
    tx.send(ChatMessage {
        text: "ping 0".into(),
        seq: 0,
    })
    .await
    .expect("first message queued");
    let mut replies = within(5, "chat start", client.chat(ReceiverStream::new(rx)))
        .await
        .expect("chat starts")
        .into_inner();
    // Ping-pong: each next request is sent only after its predecessor's answer
    // came back, so the request stream is still open for every answer.
    for seq in 0..100u64 {
        let reply = within(5, "pong", replies.message())
            .await
            .expect("reply")
            .expect("stream open");
        assert_eq!(reply.seq, seq);
        assert_eq!(reply.text, format!("re: ping {seq}"));
        if seq < 99 {
            tx.send(ChatMessage {
                text: format!("ping {}", seq + 1),
                seq: seq + 1,
            })
            .await
            .expect("next message queued");
        }
    }
    drop(tx);
    assert!(
        within(5, "end", replies.message())
            .await
            .expect("clean end")
            .is_none()
    );
}

#[tokio::test]
async fn a_thousand_concurrent_unary_calls_get_their_own_answers() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let (greeter, _events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter).await;
    let client = router.client().await;
    let calls = (0..1000).map(|i| {
        let mut client = client.clone();
        tokio::spawn(async move {
            let reply = client.say_hello(hello(&format!("caller {i}"))).await?;
            Ok::<_, tonic::Status>((i, reply.into_inner().message))
        })
    });
    let results = within(30, "1000 calls", futures_util::future::join_all(calls)).await;
    for result in results {
        let (i, message) = result.expect("task").expect("call succeeds");
        assert_eq!(message, format!("Hello, caller {i}!"));
    }
    assert_eq!(router.router.stats().calls_started(), 1000);
    within(5, "calls to settle", router.router.stats().wait_idle()).await;
}

#[tokio::test]
async fn gzip_requested_by_the_client_works_both_ways() {
    let config = RouterConfig {
        send_compression: vec![CompressionEncoding::Gzip],
        ..RouterConfig::default()
    };
    let router = TestRouter::start(config).await;
    let (greeter, _events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter).await;
    let mut client = router
        .client()
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let payload = vec![42u8; 200_000];
    let reply = within(
        5,
        "compressed call",
        client.say_hello(HelloRequest {
            name: "zip".into(),
            payload: payload.clone(),
        }),
    )
    .await
    .expect("call succeeds");
    assert_eq!(
        reply.metadata().get("grpc-encoding").map(|v| v.as_bytes()),
        Some(&b"gzip"[..]),
        "the router compressed its response"
    );
    assert_eq!(reply.into_inner().payload, payload);
}

/// build.rs configures `HelloReply.payload` as `bytes::Bytes` and gives
/// `InstanceInfo` an `Ord` derive (`Builder::configure`): the router forwards
/// encoded bytes, so such prost settings change nothing on the route.
#[tokio::test]
async fn a_reply_configured_with_bytes_routes_like_a_direct_call() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let (greeter, _events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter).await;
    let (direct_greeter, _direct_events) = TestGreeter::new("a");
    let direct = common::start_direct(direct_greeter).await;
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let request = HelloRequest {
        name: "echo".into(),
        payload: payload.clone(),
    };
    let mut routed_client = router.client().await;
    let routed = within(5, "routed call", routed_client.say_hello(request.clone()))
        .await
        .expect("routed call succeeds")
        .into_inner();
    let mut direct_client = common::connect(direct).await;
    let direct = within(5, "direct call", direct_client.say_hello(request))
        .await
        .expect("direct call succeeds")
        .into_inner();
    let routed_payload: &bytes::Bytes = &routed.payload;
    assert!(
        routed_payload == &payload[..],
        "the Bytes payload came back intact"
    );
    assert_eq!(routed, direct);

    let mut who = Vec::new();
    for _ in 0..2 {
        who.push(
            within(5, "who am i", routed_client.who_am_i(()))
                .await
                .expect("who am i")
                .into_inner(),
        );
    }
    who.sort();
    assert_eq!(who[0].instance_id, "a");
}

/// Sends one compressed call with `encoding` both ways and returns the
/// response's `grpc-encoding` and payload.
async fn compressed_call(
    addr: std::net::SocketAddr,
    encoding: CompressionEncoding,
    payload: &[u8],
) -> (Option<String>, Vec<u8>) {
    let mut client = common::connect(addr)
        .await
        .send_compressed(encoding)
        .accept_compressed(encoding);
    let reply = within(
        5,
        "compressed call",
        client.say_hello(HelloRequest {
            name: "zip".into(),
            payload: payload.to_vec(),
        }),
    )
    .await
    .unwrap_or_else(|status| panic!("{encoding:?} call fails: {status}"));
    let header = reply
        .metadata()
        .get("grpc-encoding")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (header, reply.into_inner().payload.to_vec())
}

#[tokio::test]
async fn zstd_and_deflate_pass_both_ways_as_with_a_direct_server() {
    let all = [
        CompressionEncoding::Zstd,
        CompressionEncoding::Deflate,
        CompressionEncoding::Gzip,
    ];
    let config = RouterConfig {
        send_compression: all.to_vec(),
        ..RouterConfig::default()
    };
    let router = TestRouter::start(config).await;
    let (greeter, _events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter.clone()).await;
    let mut direct_server = GreeterServer::new(greeter);
    for encoding in all {
        direct_server = direct_server
            .accept_compressed(encoding)
            .send_compressed(encoding);
    }
    let direct = common::start_direct_server(direct_server).await;

    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 7) as u8).collect();
    for (encoding, name) in [
        (CompressionEncoding::Zstd, "zstd"),
        (CompressionEncoding::Deflate, "deflate"),
    ] {
        let routed = compressed_call(router.addr, encoding, &payload).await;
        let direct = compressed_call(direct, encoding, &payload).await;
        assert_eq!(
            routed.0.as_deref(),
            Some(name),
            "the router answered in {name}"
        );
        assert_eq!(routed, direct, "{name}: routed and direct agree");
        assert!(routed.1 == payload, "{name}: the payload came back intact");
    }
}

#[tokio::test]
async fn the_router_accepts_every_encoding_by_default_and_answers_uncompressed() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let (greeter, _events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter).await;
    for encoding in [
        CompressionEncoding::Gzip,
        CompressionEncoding::Deflate,
        CompressionEncoding::Zstd,
    ] {
        let (header, payload) = compressed_call(router.addr, encoding, b"abc").await;
        assert_eq!(
            header, None,
            "{encoding:?}: responses are not compressed by default"
        );
        assert_eq!(payload, b"abc");
    }
}

const SIXTEEN_MIB: usize = 16 * 1024 * 1024;

#[tokio::test]
async fn sixteen_mib_messages_pass_both_ways_when_limits_allow() {
    let limit = SIXTEEN_MIB + 1024 * 1024;
    let config = RouterConfig {
        max_message_size: limit,
        ..RouterConfig::default()
    };
    let router = TestRouter::start(config).await;
    let (greeter, _events) = TestGreeter::new("a");
    let server = GreeterServer::new(greeter)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let options = BridgeConfig::new(router.endpoint())
        .instance_id("a")
        .max_message_size(limit);
    let _instance = start_instance_with(&router, options, server).await;
    let mut client = router
        .client()
        .await
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let payload: Vec<u8> = (0..SIXTEEN_MIB).map(|i| (i % 251) as u8).collect();
    let reply = within(
        60,
        "16 MiB echo",
        client.say_hello(HelloRequest {
            name: "big".into(),
            payload: payload.clone(),
        }),
    )
    .await
    .expect("large call succeeds")
    .into_inner();
    assert!(reply.payload == payload, "payload came back intact");
}

/// Asks `addr` for one 5 MiB streamed response with a client that accepts
/// 8 MiB; returns the payload length or the status code.
async fn five_mib_response(addr: std::net::SocketAddr) -> Result<usize, Code> {
    let mut client = common::connect(addr)
        .await
        .max_decoding_message_size(8 * 1024 * 1024);
    let mut stream = within(
        10,
        "stream start",
        client.stream_greetings(StreamRequest {
            name: "n".into(),
            count: 1,
            payload_size: 5 * 1024 * 1024,
        }),
    )
    .await
    .map_err(|s| s.code())?
    .into_inner();
    let reply = within(10, "the large message", stream.message())
        .await
        .map_err(|s| s.code())?
        .expect("one message");
    Ok(reply.payload.len())
}

#[tokio::test]
async fn response_size_is_limited_by_the_client_as_direct_unless_the_router_is_configured() {
    let (greeter, _events) = TestGreeter::new("a");
    let direct = common::start_direct(greeter.clone()).await;
    let router = TestRouter::start(RouterConfig::default()).await;
    let _instance = start_instance(&router, "a", greeter.clone()).await;
    assert_eq!(five_mib_response(direct).await, Ok(5 * 1024 * 1024));
    assert_eq!(
        five_mib_response(router.addr).await,
        Ok(5 * 1024 * 1024),
        "the router's 4 MiB request limit does not cap responses"
    );

    let limited = TestRouter::start(RouterConfig {
        max_response_message_size: 1024 * 1024,
        ..RouterConfig::default()
    })
    .await;
    let _limited_instance = start_instance(&limited, "a", greeter).await;
    assert_eq!(
        five_mib_response(limited.addr).await,
        Err(Code::ResourceExhausted),
        "a configured response limit applies at the router"
    );
}

/// Calls with a 5 MiB request and asks for a 5 MiB response; returns both codes.
async fn oversized_codes(addr: std::net::SocketAddr) -> (Code, Code) {
    let mut client = common::connect(addr).await;
    let request = within(
        10,
        "oversized request",
        client.say_hello(HelloRequest {
            name: "big".into(),
            payload: vec![1; 5 * 1024 * 1024],
        }),
    )
    .await
    .expect_err("over 4 MiB is refused")
    .code();
    let response = match within(
        10,
        "oversized response",
        client.stream_greetings(StreamRequest {
            name: "n".into(),
            count: 1,
            payload_size: 5 * 1024 * 1024,
        }),
    )
    .await
    {
        Ok(stream) => within(10, "oversized message", stream.into_inner().next())
            .await
            .expect("an item")
            .expect_err("over 4 MiB is refused")
            .code(),
        Err(status) => status.code(),
    };
    (request, response)
}

#[tokio::test]
async fn messages_over_the_default_limit_fail_where_they_fail_directly_with_grpcs_code() {
    let router = TestRouter::start(RouterConfig::default()).await;
    let (greeter, _events) = TestGreeter::new("a");
    let _instance = start_instance(&router, "a", greeter.clone()).await;
    let direct = common::start_direct(greeter).await;

    let routed = oversized_codes(router.addr).await;
    let direct = oversized_codes(direct).await;
    // The request fails at the router (its `max_message_size`, 4 MiB as the
    // direct tonic server's) with gRPC's RESOURCE_EXHAUSTED, where tonic's
    // server says OUT_OF_RANGE; the response fails at the client, which
    // answers for its own limit as in the direct call (the router sets no
    // limit of its own below 64 MiB).
    assert_eq!(direct, (Code::OutOfRange, Code::OutOfRange));
    assert_eq!(routed, (Code::ResourceExhausted, Code::OutOfRange));
}
