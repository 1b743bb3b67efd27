//! The runtime's hand-written frame codec against the prost types generated
//! from the example's router proto: every frame kind, both directions, both
//! ways round. This is what keeps the generator's frame numbers and the
//! runtime's (`router_runtime::wire::field`) from drifting apart.

use bytes::Bytes;
use myservice::pb::{
    ChatMessage, GreeterBridgeFrame, GreeterCall, GreeterReply, GreeterRouterFrame, HelloReply,
    HelloRequest, greeter_bridge_frame, greeter_call, greeter_reply, greeter_router_frame,
};
use prost::Message;
use router_runtime::pb;
use router_runtime::wire::{BridgeFrame, DecodeFrame, EncodeFrame, Payload, RouterFrame};

fn hand_encoded(frame: &impl EncodeFrame) -> Bytes {
    let mut buf = Vec::with_capacity(frame.encoded_len());
    frame.encode(&mut buf);
    assert_eq!(buf.len(), frame.encoded_len(), "encoded_len is exact");
    Bytes::from(buf)
}

/// Checks that `generated` and `hand` are the same frame, whichever side
/// encodes it.
fn router_frame_agrees(generated: greeter_router_frame::Frame, hand: RouterFrame) {
    let generated = GreeterRouterFrame {
        frame: Some(generated),
    };
    let decoded = RouterFrame::decode(Bytes::from(generated.encode_to_vec()))
        .expect("the hand codec decodes the generated encoding");
    assert_eq!(decoded, hand, "generated -> hand");
    let back =
        GreeterRouterFrame::decode(hand_encoded(&hand)).expect("prost decodes the hand encoding");
    assert_eq!(back, generated, "hand -> generated");
}

fn bridge_frame_agrees(generated: greeter_bridge_frame::Frame, hand: BridgeFrame) {
    let generated = GreeterBridgeFrame {
        frame: Some(generated),
    };
    let decoded = BridgeFrame::decode(Bytes::from(generated.encode_to_vec()))
        .expect("the hand codec decodes the generated encoding");
    assert_eq!(decoded, hand, "generated -> hand");
    let back =
        GreeterBridgeFrame::decode(hand_encoded(&hand)).expect("prost decodes the hand encoding");
    assert_eq!(back, generated, "hand -> generated");
}

#[test]
fn every_router_frame_encodes_the_same_with_generated_types_and_the_hand_codec() {
    use greeter_router_frame::Frame;
    let welcome = pb::Welcome {
        protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
        router_id: "r".into(),
        initial_window: 1,
        max_frame_size: 2,
        heartbeat_interval_ms: 3,
        heartbeat_timeout_ms: 4,
        peers: vec![pb::RouterPeer {
            router_id: "r".into(),
            address: "127.0.0.1:50052".into(),
        }],
    };
    router_frame_agrees(
        Frame::Welcome(welcome.clone()),
        RouterFrame::Welcome(welcome),
    );
    let start = pb::CallStart {
        call_id: 7,
        method_tag: 10,
        path: "/myservice.v1.Greeter/SayHello".into(),
        timeout_micros: 5,
        kind: pb::MethodKind::Unary as i32,
        peer: "127.0.0.1:1".into(),
        local: "127.0.0.1:2".into(),
        ..Default::default()
    };
    router_frame_agrees(Frame::Start(start.clone()), RouterFrame::Start(start));
    let request = HelloRequest {
        name: "n".into(),
        payload: vec![1, 2, 3],
    };
    router_frame_agrees(
        Frame::Call(GreeterCall {
            call_id: 7,
            method: Some(greeter_call::Method::SayHello(request.clone())),
        }),
        RouterFrame::Call(Payload {
            call_id: 7,
            tag: 10,
            message: request.encode_to_vec().into(),
        }),
    );
    let chat = ChatMessage {
        text: "t".into(),
        seq: 9,
    };
    router_frame_agrees(
        Frame::Call(GreeterCall {
            call_id: u64::MAX,
            method: Some(greeter_call::Method::Chat(chat.clone())),
        }),
        RouterFrame::Call(Payload {
            call_id: u64::MAX,
            tag: 13,
            message: chat.encode_to_vec().into(),
        }),
    );
    let half = pb::HalfClose { call_id: 7 };
    router_frame_agrees(Frame::HalfClose(half), RouterFrame::HalfClose(half));
    let cancel = pb::Cancel {
        call_id: 7,
        code: 1,
        reason: "r".into(),
    };
    router_frame_agrees(Frame::Cancel(cancel.clone()), RouterFrame::Cancel(cancel));
    let update = pb::WindowUpdate {
        call_id: 7,
        increment: 100,
    };
    router_frame_agrees(
        Frame::WindowUpdate(update),
        RouterFrame::WindowUpdate(update),
    );
    let ping = pb::Ping { nonce: 42 };
    router_frame_agrees(Frame::Ping(ping), RouterFrame::Ping(ping));
    let go_away = pb::GoAway {
        reason: "bye".into(),
        refused: true,
    };
    router_frame_agrees(Frame::GoAway(go_away.clone()), RouterFrame::GoAway(go_away));
    let chunk = pb::MessageChunk {
        call_id: 7,
        data: Bytes::from_static(b"abc"),
        last: true,
    };
    router_frame_agrees(Frame::Chunk(chunk.clone()), RouterFrame::Chunk(chunk));
    let peers = pb::Peers {
        peers: vec![
            pb::RouterPeer {
                router_id: "r".into(),
                address: "10.0.0.1:50052".into(),
            },
            pb::RouterPeer {
                router_id: String::new(),
                address: "10.0.0.2:50052".into(),
            },
        ],
    };
    router_frame_agrees(Frame::Peers(peers.clone()), RouterFrame::Peers(peers));
}

#[test]
fn every_bridge_frame_encodes_the_same_with_generated_types_and_the_hand_codec() {
    use greeter_bridge_frame::Frame;
    let hello = pb::Hello {
        protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
        instance_id: "i".into(),
        service: "myservice.v1.Greeter".into(),
        weight: 2,
        routing_keys: vec!["k".into()],
        initial_window: 3,
        max_frame_size: 4,
        ..Default::default()
    };
    bridge_frame_agrees(Frame::Hello(hello.clone()), BridgeFrame::Hello(hello));
    let headers = pb::Headers {
        call_id: 7,
        metadata: Some(pb::Metadata {
            entries: vec![pb::MetadataEntry {
                key: "x-a".into(),
                value: Some(pb::metadata_entry::Value::Ascii("b".into())),
            }],
        }),
    };
    bridge_frame_agrees(
        Frame::Headers(headers.clone()),
        BridgeFrame::Headers(headers),
    );
    let reply = HelloReply {
        message: "m".into(),
        instance_id: "i".into(),
        payload: Default::default(),
    };
    bridge_frame_agrees(
        Frame::Reply(GreeterReply {
            call_id: 7,
            method: Some(greeter_reply::Method::StreamGreetings(reply.clone())),
        }),
        BridgeFrame::Reply(Payload {
            call_id: 7,
            tag: 11,
            message: reply.encode_to_vec().into(),
        }),
    );
    let trailers = pb::Trailers {
        call_id: 7,
        code: 5,
        message: "not found".into(),
        details: Bytes::from_static(b"d"),
        not_started: true,
        ..Default::default()
    };
    bridge_frame_agrees(
        Frame::Trailers(trailers.clone()),
        BridgeFrame::Trailers(trailers),
    );
    let update = pb::WindowUpdate {
        call_id: 7,
        increment: 9,
    };
    bridge_frame_agrees(
        Frame::WindowUpdate(update),
        BridgeFrame::WindowUpdate(update),
    );
    let beat = pb::Heartbeat {
        active_calls: 3,
        status: pb::ServingStatus::NotServing as i32,
        routers: 2,
    };
    bridge_frame_agrees(Frame::Heartbeat(beat), BridgeFrame::Heartbeat(beat));
    let drain = pb::Drain { reason: "r".into() };
    bridge_frame_agrees(Frame::Drain(drain.clone()), BridgeFrame::Drain(drain));
    let chunk = pb::MessageChunk {
        call_id: 7,
        data: Bytes::from_static(b"xyz"),
        last: false,
    };
    bridge_frame_agrees(Frame::Chunk(chunk.clone()), BridgeFrame::Chunk(chunk));
    let pong = pb::Pong { nonce: 42 };
    bridge_frame_agrees(Frame::Pong(pong), BridgeFrame::Pong(pong));
}
