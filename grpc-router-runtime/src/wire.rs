//! The frames of the register stream, encoded and decoded by hand.
//!
//! Every generated `<Service>RouterFrame` / `<Service>BridgeFrame` is a `oneof`
//! with fixed field numbers (see `protoc-gen-router/proto/router/v1/router.proto`). The typed
//! payload arms (`<Service>Call` / `<Service>Reply`) hold `call_id = 1` and one
//! `oneof method` arm whose field number is the method's tag. A message-typed
//! arm is wire-identical to a `bytes` field with the same number, so the router
//! writes and reads payloads as raw bytes: it never decodes or re-encodes the
//! client's messages. Only the instance's own tonic server decodes them.

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use prost::encoding::{
    WireType, decode_key, decode_varint, encode_key, encode_varint, encoded_len_varint, key_len,
};

use crate::pb;

/// The field numbers of the register stream, in one place: the arms of the
/// generated `<Service>RouterFrame.frame` and `<Service>BridgeFrame.frame`
/// oneofs and the `call_id` of `<Service>Call` / `<Service>Reply`.
/// `protoc-gen-router` emits the same numbers; the example's `wire` test
/// encodes every frame with the generated prost types and decodes it with
/// this codec, and back, so the two cannot drift apart.
pub mod field {
    /// `call_id` in `<Service>Call` and `<Service>Reply`; the method arms use
    /// the methods' tags, from 10 up.
    pub const CALL_ID: u32 = 1;

    /// The arms of `<Service>RouterFrame.frame`.
    pub mod router {
        /// `Welcome`.
        pub const WELCOME: u32 = 1;
        /// `CallStart`.
        pub const START: u32 = 2;
        /// `<Service>Call`.
        pub const CALL: u32 = 3;
        /// `HalfClose`.
        pub const HALF_CLOSE: u32 = 4;
        /// `Cancel`.
        pub const CANCEL: u32 = 5;
        /// `WindowUpdate`.
        pub const WINDOW_UPDATE: u32 = 6;
        /// `Ping`.
        pub const PING: u32 = 7;
        /// `GoAway`.
        pub const GO_AWAY: u32 = 8;
        /// `MessageChunk`.
        pub const CHUNK: u32 = 9;
        /// `Peers`.
        pub const PEERS: u32 = 10;
    }

    /// The arms of `<Service>BridgeFrame.frame`.
    pub mod bridge {
        /// `Hello`.
        pub const HELLO: u32 = 1;
        /// `Headers`.
        pub const HEADERS: u32 = 2;
        /// `<Service>Reply`.
        pub const REPLY: u32 = 3;
        /// `Trailers`.
        pub const TRAILERS: u32 = 4;
        /// `WindowUpdate`.
        pub const WINDOW_UPDATE: u32 = 5;
        /// `Heartbeat`.
        pub const HEARTBEAT: u32 = 6;
        /// `Drain`.
        pub const DRAIN: u32 = 7;
        /// `MessageChunk`.
        pub const CHUNK: u32 = 8;
        /// `Pong`.
        pub const PONG: u32 = 9;
    }
}

/// The trailer of the ALREADY_EXISTS status a router refuses a second
/// registration of a bridge with, when the bridge's `Hello.registered_with`
/// lists the router's id: its value is that id.
pub const DUPLICATE_TRAILER: &str = "router-duplicate";

/// A frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The bytes are not valid protobuf.
    #[error("malformed frame: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The frame's oneof is empty or names no known frame.
    #[error("frame carries no known frame kind (field {0})")]
    UnknownFrame(u32),
    /// A length or field runs past the end of the frame.
    #[error("truncated frame")]
    Truncated,
    /// The frame uses protobuf groups, which no frame has.
    #[error("unexpected group in frame")]
    Group,
    /// A payload frame lacks its method arm.
    #[error("payload frame for call {0} carries no message")]
    EmptyPayload(u64),
}

/// One message of a call, as raw protobuf bytes of the method's request or
/// response type, tagged with the method's oneof number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// The call.
    pub call_id: u64,
    /// The method's oneof tag.
    pub tag: u32,
    /// The encoded message.
    pub message: Bytes,
}

/// A frame the router sends to a bridge.
#[derive(Clone, Debug, PartialEq)]
pub enum RouterFrame {
    /// Registration accepted.
    Welcome(pb::Welcome),
    /// A new call.
    Start(pb::CallStart),
    /// One whole request message.
    Call(Payload),
    /// The client sent its last request.
    HalfClose(pb::HalfClose),
    /// The client went away or its deadline expired.
    Cancel(pb::Cancel),
    /// Credit for a call's responses.
    WindowUpdate(pb::WindowUpdate),
    /// Liveness probe.
    Ping(pb::Ping),
    /// The router is closing this registration.
    GoAway(pb::GoAway),
    /// A piece of a large request message.
    Chunk(pb::MessageChunk),
    /// The router replicas of the fleet changed (only to bridges whose
    /// `Hello` set `discovery`).
    Peers(pb::Peers),
}

/// A frame a bridge sends to the router.
#[derive(Clone, Debug, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "`Hello` goes once per registration; boxing it would change this public enum \
              for the 24 bytes its `registered_with` added"
)]
pub enum BridgeFrame {
    /// Registration request; always the first frame.
    Hello(pb::Hello),
    /// A call's response headers.
    Headers(pb::Headers),
    /// One whole response message.
    Reply(Payload),
    /// A call's end, with status.
    Trailers(pb::Trailers),
    /// Credit for a call's requests.
    WindowUpdate(pb::WindowUpdate),
    /// Periodic state report.
    Heartbeat(pb::Heartbeat),
    /// The bridge is shutting down.
    Drain(pb::Drain),
    /// A piece of a large response message.
    Chunk(pb::MessageChunk),
    /// Answer to a ping.
    Pong(pb::Pong),
}

/// Something that encodes into one register-stream message.
pub trait EncodeFrame {
    /// The encoded length in bytes.
    fn encoded_len(&self) -> usize;
    /// Appends the encoding to `buf`.
    fn encode(&self, buf: &mut impl BufMut);
}

/// Something that decodes from one register-stream message.
pub trait DecodeFrame: Sized {
    /// Decodes one frame, slicing payloads out of `buf` without copying.
    fn decode(buf: Bytes) -> Result<Self, WireError>;
}

const LEN: WireType = WireType::LengthDelimited;

fn payload_inner_len(p: &Payload) -> usize {
    key_len(field::CALL_ID)
        + encoded_len_varint(p.call_id)
        + key_len(p.tag)
        + encoded_len_varint(p.message.len() as u64)
        + p.message.len()
}

fn payload_len(field: u32, p: &Payload) -> usize {
    let inner = payload_inner_len(p);
    key_len(field) + encoded_len_varint(inner as u64) + inner
}

fn encode_payload(field: u32, p: &Payload, buf: &mut impl BufMut) {
    encode_key(field, LEN, buf);
    encode_varint(payload_inner_len(p) as u64, buf);
    encode_key(field::CALL_ID, WireType::Varint, buf);
    encode_varint(p.call_id, buf);
    encode_key(p.tag, LEN, buf);
    encode_varint(p.message.len() as u64, buf);
    buf.put_slice(&p.message);
}

fn read_len_delimited(buf: &mut Bytes) -> Result<Bytes, WireError> {
    let len = decode_varint(buf)?;
    let len = usize::try_from(len).map_err(|_| WireError::Truncated)?;
    if len > buf.remaining() {
        return Err(WireError::Truncated);
    }
    Ok(buf.split_to(len))
}

fn skip(wire_type: WireType, buf: &mut Bytes) -> Result<(), WireError> {
    match wire_type {
        WireType::Varint => {
            decode_varint(buf)?;
        }
        WireType::SixtyFourBit => {
            if buf.remaining() < 8 {
                return Err(WireError::Truncated);
            }
            buf.advance(8);
        }
        WireType::ThirtyTwoBit => {
            if buf.remaining() < 4 {
                return Err(WireError::Truncated);
            }
            buf.advance(4);
        }
        WireType::LengthDelimited => {
            read_len_delimited(buf)?;
        }
        WireType::StartGroup | WireType::EndGroup => {
            return Err(WireError::Group);
        }
    }
    Ok(())
}

/// Decodes a `<Service>Call`/`<Service>Reply` body into a [`Payload`].
fn decode_payload(mut body: Bytes) -> Result<Payload, WireError> {
    let mut call_id = 0;
    let mut arm: Option<(u32, Bytes)> = None;
    while body.has_remaining() {
        let (field, wire_type) = decode_key(&mut body)?;
        match (field, wire_type) {
            (field::CALL_ID, WireType::Varint) => call_id = decode_varint(&mut body)?,
            (tag, LEN) if tag != field::CALL_ID => {
                arm = Some((tag, read_len_delimited(&mut body)?))
            }
            _ => skip(wire_type, &mut body)?,
        }
    }
    let (tag, message) = arm.ok_or(WireError::EmptyPayload(call_id))?;
    Ok(Payload {
        call_id,
        tag,
        message,
    })
}

/// Splits a frame into its oneof field number and the arm's bytes; the last
/// arm wins, as protobuf's merge rules say.
fn decode_arm(mut buf: Bytes) -> Result<(u32, Bytes), WireError> {
    let mut arm = None;
    while buf.has_remaining() {
        let (field, wire_type) = decode_key(&mut buf)?;
        if wire_type == LEN {
            arm = Some((field, read_len_delimited(&mut buf)?));
        } else {
            skip(wire_type, &mut buf)?;
        }
    }
    arm.ok_or(WireError::UnknownFrame(0))
}

macro_rules! message_len {
    ($field:expr, $msg:expr) => {
        prost::encoding::message::encoded_len($field, $msg)
    };
}

macro_rules! message_encode {
    ($field:expr, $msg:expr, $buf:expr) => {
        prost::encoding::message::encode($field, $msg, $buf)
    };
}

impl EncodeFrame for RouterFrame {
    fn encoded_len(&self) -> usize {
        match self {
            RouterFrame::Welcome(m) => message_len!(field::router::WELCOME, m),
            RouterFrame::Start(m) => message_len!(field::router::START, m),
            RouterFrame::Call(p) => payload_len(field::router::CALL, p),
            RouterFrame::HalfClose(m) => message_len!(field::router::HALF_CLOSE, m),
            RouterFrame::Cancel(m) => message_len!(field::router::CANCEL, m),
            RouterFrame::WindowUpdate(m) => message_len!(field::router::WINDOW_UPDATE, m),
            RouterFrame::Ping(m) => message_len!(field::router::PING, m),
            RouterFrame::GoAway(m) => message_len!(field::router::GO_AWAY, m),
            RouterFrame::Chunk(m) => message_len!(field::router::CHUNK, m),
            RouterFrame::Peers(m) => message_len!(field::router::PEERS, m),
        }
    }

    fn encode(&self, buf: &mut impl BufMut) {
        match self {
            RouterFrame::Welcome(m) => message_encode!(field::router::WELCOME, m, buf),
            RouterFrame::Start(m) => message_encode!(field::router::START, m, buf),
            RouterFrame::Call(p) => encode_payload(field::router::CALL, p, buf),
            RouterFrame::HalfClose(m) => message_encode!(field::router::HALF_CLOSE, m, buf),
            RouterFrame::Cancel(m) => message_encode!(field::router::CANCEL, m, buf),
            RouterFrame::WindowUpdate(m) => message_encode!(field::router::WINDOW_UPDATE, m, buf),
            RouterFrame::Ping(m) => message_encode!(field::router::PING, m, buf),
            RouterFrame::GoAway(m) => message_encode!(field::router::GO_AWAY, m, buf),
            RouterFrame::Chunk(m) => message_encode!(field::router::CHUNK, m, buf),
            RouterFrame::Peers(m) => message_encode!(field::router::PEERS, m, buf),
        }
    }
}

impl DecodeFrame for RouterFrame {
    fn decode(buf: Bytes) -> Result<Self, WireError> {
        let (field, body) = decode_arm(buf)?;
        Ok(match field {
            field::router::WELCOME => RouterFrame::Welcome(pb::Welcome::decode(body)?),
            field::router::START => RouterFrame::Start(pb::CallStart::decode(body)?),
            field::router::CALL => RouterFrame::Call(decode_payload(body)?),
            field::router::HALF_CLOSE => RouterFrame::HalfClose(pb::HalfClose::decode(body)?),
            field::router::CANCEL => RouterFrame::Cancel(pb::Cancel::decode(body)?),
            field::router::WINDOW_UPDATE => {
                RouterFrame::WindowUpdate(pb::WindowUpdate::decode(body)?)
            }
            field::router::PING => RouterFrame::Ping(pb::Ping::decode(body)?),
            field::router::GO_AWAY => RouterFrame::GoAway(pb::GoAway::decode(body)?),
            field::router::CHUNK => RouterFrame::Chunk(pb::MessageChunk::decode(body)?),
            field::router::PEERS => RouterFrame::Peers(pb::Peers::decode(body)?),
            other => return Err(WireError::UnknownFrame(other)),
        })
    }
}

impl EncodeFrame for BridgeFrame {
    fn encoded_len(&self) -> usize {
        match self {
            BridgeFrame::Hello(m) => message_len!(field::bridge::HELLO, m),
            BridgeFrame::Headers(m) => message_len!(field::bridge::HEADERS, m),
            BridgeFrame::Reply(p) => payload_len(field::bridge::REPLY, p),
            BridgeFrame::Trailers(m) => message_len!(field::bridge::TRAILERS, m),
            BridgeFrame::WindowUpdate(m) => message_len!(field::bridge::WINDOW_UPDATE, m),
            BridgeFrame::Heartbeat(m) => message_len!(field::bridge::HEARTBEAT, m),
            BridgeFrame::Drain(m) => message_len!(field::bridge::DRAIN, m),
            BridgeFrame::Chunk(m) => message_len!(field::bridge::CHUNK, m),
            BridgeFrame::Pong(m) => message_len!(field::bridge::PONG, m),
        }
    }

    fn encode(&self, buf: &mut impl BufMut) {
        match self {
            BridgeFrame::Hello(m) => message_encode!(field::bridge::HELLO, m, buf),
            BridgeFrame::Headers(m) => message_encode!(field::bridge::HEADERS, m, buf),
            BridgeFrame::Reply(p) => encode_payload(field::bridge::REPLY, p, buf),
            BridgeFrame::Trailers(m) => message_encode!(field::bridge::TRAILERS, m, buf),
            BridgeFrame::WindowUpdate(m) => message_encode!(field::bridge::WINDOW_UPDATE, m, buf),
            BridgeFrame::Heartbeat(m) => message_encode!(field::bridge::HEARTBEAT, m, buf),
            BridgeFrame::Drain(m) => message_encode!(field::bridge::DRAIN, m, buf),
            BridgeFrame::Chunk(m) => message_encode!(field::bridge::CHUNK, m, buf),
            BridgeFrame::Pong(m) => message_encode!(field::bridge::PONG, m, buf),
        }
    }
}

impl DecodeFrame for BridgeFrame {
    fn decode(buf: Bytes) -> Result<Self, WireError> {
        let (field, body) = decode_arm(buf)?;
        Ok(match field {
            field::bridge::HELLO => BridgeFrame::Hello(pb::Hello::decode(body)?),
            field::bridge::HEADERS => BridgeFrame::Headers(pb::Headers::decode(body)?),
            field::bridge::REPLY => BridgeFrame::Reply(decode_payload(body)?),
            field::bridge::TRAILERS => BridgeFrame::Trailers(pb::Trailers::decode(body)?),
            field::bridge::WINDOW_UPDATE => {
                BridgeFrame::WindowUpdate(pb::WindowUpdate::decode(body)?)
            }
            field::bridge::HEARTBEAT => BridgeFrame::Heartbeat(pb::Heartbeat::decode(body)?),
            field::bridge::DRAIN => BridgeFrame::Drain(pb::Drain::decode(body)?),
            field::bridge::CHUNK => BridgeFrame::Chunk(pb::MessageChunk::decode(body)?),
            field::bridge::PONG => BridgeFrame::Pong(pb::Pong::decode(body)?),
            other => return Err(WireError::UnknownFrame(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_router(frame: RouterFrame) {
        let mut buf = Vec::new();
        frame.encode(&mut buf);
        assert_eq!(buf.len(), frame.encoded_len());
        let back = RouterFrame::decode(Bytes::from(buf)).expect("decodes");
        assert_eq!(back, frame);
    }

    fn roundtrip_bridge(frame: BridgeFrame) {
        let mut buf = Vec::new();
        frame.encode(&mut buf);
        assert_eq!(buf.len(), frame.encoded_len());
        let back = BridgeFrame::decode(Bytes::from(buf)).expect("decodes");
        assert_eq!(back, frame);
    }

    #[test]
    fn payload_frames_round_trip_with_any_tag() {
        for tag in [10, 11, 127, 128, 18_999, 20_000, 536_870_911] {
            roundtrip_router(RouterFrame::Call(Payload {
                call_id: u64::MAX,
                tag,
                message: Bytes::from_static(b"\x0a\x03abc"),
            }));
            roundtrip_bridge(BridgeFrame::Reply(Payload {
                call_id: 7,
                tag,
                message: Bytes::new(),
            }));
        }
    }

    #[test]
    fn envelope_frames_round_trip() {
        roundtrip_router(RouterFrame::Start(pb::CallStart {
            call_id: 3,
            method_tag: 10,
            path: "/a.B/C".into(),
            metadata: Some(pb::Metadata {
                entries: vec![pb::MetadataEntry {
                    key: "x-bin".into(),
                    value: Some(pb::metadata_entry::Value::Binary(Bytes::from_static(
                        b"\0\x01",
                    ))),
                }],
            }),
            timeout_micros: 200_000,
            kind: pb::MethodKind::Unary as i32,
            peer: "127.0.0.1:5000".into(),
            local: String::new(),
            peer_certificates: vec![Bytes::from_static(b"\x30\x03der")],
        }));
        roundtrip_router(RouterFrame::Ping(pb::Ping { nonce: 1 }));
        roundtrip_bridge(BridgeFrame::Trailers(pb::Trailers {
            call_id: 9,
            code: 5,
            message: "gone".into(),
            details: Bytes::from_static(b"\x08\x05"),
            metadata: None,
            not_started: true,
        }));
        roundtrip_bridge(BridgeFrame::Pong(pb::Pong { nonce: 2 }));
    }

    #[test]
    fn empty_payload_oneof_is_an_error() {
        let mut buf = Vec::new();
        encode_key(3, LEN, &mut buf);
        encode_varint(2, &mut buf);
        encode_key(1, WireType::Varint, &mut buf);
        encode_varint(5, &mut buf);
        assert!(matches!(
            RouterFrame::decode(Bytes::from(buf)),
            Err(WireError::EmptyPayload(5))
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len % 64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = RouterFrame::decode(Bytes::from(bytes.clone()));
            let _ = BridgeFrame::decode(Bytes::from(bytes));
        }
    }
}
