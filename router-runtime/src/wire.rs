//! The frames of the register stream, encoded and decoded by hand.
//!
//! Every generated `<Service>RouterFrame` / `<Service>BridgeFrame` is a `oneof`
//! with fixed field numbers (see `proto/router/v1/router.proto`). The typed
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
}

/// A frame a bridge sends to the router.
#[derive(Clone, Debug, PartialEq)]
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
    key_len(1)
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
    encode_key(1, WireType::Varint, buf);
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
            (1, WireType::Varint) => call_id = decode_varint(&mut body)?,
            (tag, LEN) if tag != 1 => arm = Some((tag, read_len_delimited(&mut body)?)),
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
            RouterFrame::Welcome(m) => message_len!(1, m),
            RouterFrame::Start(m) => message_len!(2, m),
            RouterFrame::Call(p) => payload_len(3, p),
            RouterFrame::HalfClose(m) => message_len!(4, m),
            RouterFrame::Cancel(m) => message_len!(5, m),
            RouterFrame::WindowUpdate(m) => message_len!(6, m),
            RouterFrame::Ping(m) => message_len!(7, m),
            RouterFrame::GoAway(m) => message_len!(8, m),
            RouterFrame::Chunk(m) => message_len!(9, m),
        }
    }

    fn encode(&self, buf: &mut impl BufMut) {
        match self {
            RouterFrame::Welcome(m) => message_encode!(1, m, buf),
            RouterFrame::Start(m) => message_encode!(2, m, buf),
            RouterFrame::Call(p) => encode_payload(3, p, buf),
            RouterFrame::HalfClose(m) => message_encode!(4, m, buf),
            RouterFrame::Cancel(m) => message_encode!(5, m, buf),
            RouterFrame::WindowUpdate(m) => message_encode!(6, m, buf),
            RouterFrame::Ping(m) => message_encode!(7, m, buf),
            RouterFrame::GoAway(m) => message_encode!(8, m, buf),
            RouterFrame::Chunk(m) => message_encode!(9, m, buf),
        }
    }
}

impl DecodeFrame for RouterFrame {
    fn decode(buf: Bytes) -> Result<Self, WireError> {
        let (field, body) = decode_arm(buf)?;
        Ok(match field {
            1 => RouterFrame::Welcome(pb::Welcome::decode(body)?),
            2 => RouterFrame::Start(pb::CallStart::decode(body)?),
            3 => RouterFrame::Call(decode_payload(body)?),
            4 => RouterFrame::HalfClose(pb::HalfClose::decode(body)?),
            5 => RouterFrame::Cancel(pb::Cancel::decode(body)?),
            6 => RouterFrame::WindowUpdate(pb::WindowUpdate::decode(body)?),
            7 => RouterFrame::Ping(pb::Ping::decode(body)?),
            8 => RouterFrame::GoAway(pb::GoAway::decode(body)?),
            9 => RouterFrame::Chunk(pb::MessageChunk::decode(body)?),
            other => return Err(WireError::UnknownFrame(other)),
        })
    }
}

impl EncodeFrame for BridgeFrame {
    fn encoded_len(&self) -> usize {
        match self {
            BridgeFrame::Hello(m) => message_len!(1, m),
            BridgeFrame::Headers(m) => message_len!(2, m),
            BridgeFrame::Reply(p) => payload_len(3, p),
            BridgeFrame::Trailers(m) => message_len!(4, m),
            BridgeFrame::WindowUpdate(m) => message_len!(5, m),
            BridgeFrame::Heartbeat(m) => message_len!(6, m),
            BridgeFrame::Drain(m) => message_len!(7, m),
            BridgeFrame::Chunk(m) => message_len!(8, m),
            BridgeFrame::Pong(m) => message_len!(9, m),
        }
    }

    fn encode(&self, buf: &mut impl BufMut) {
        match self {
            BridgeFrame::Hello(m) => message_encode!(1, m, buf),
            BridgeFrame::Headers(m) => message_encode!(2, m, buf),
            BridgeFrame::Reply(p) => encode_payload(3, p, buf),
            BridgeFrame::Trailers(m) => message_encode!(4, m, buf),
            BridgeFrame::WindowUpdate(m) => message_encode!(5, m, buf),
            BridgeFrame::Heartbeat(m) => message_encode!(6, m, buf),
            BridgeFrame::Drain(m) => message_encode!(7, m, buf),
            BridgeFrame::Chunk(m) => message_encode!(8, m, buf),
            BridgeFrame::Pong(m) => message_encode!(9, m, buf),
        }
    }
}

impl DecodeFrame for BridgeFrame {
    fn decode(buf: Bytes) -> Result<Self, WireError> {
        let (field, body) = decode_arm(buf)?;
        Ok(match field {
            1 => BridgeFrame::Hello(pb::Hello::decode(body)?),
            2 => BridgeFrame::Headers(pb::Headers::decode(body)?),
            3 => BridgeFrame::Reply(decode_payload(body)?),
            4 => BridgeFrame::Trailers(pb::Trailers::decode(body)?),
            5 => BridgeFrame::WindowUpdate(pb::WindowUpdate::decode(body)?),
            6 => BridgeFrame::Heartbeat(pb::Heartbeat::decode(body)?),
            7 => BridgeFrame::Drain(pb::Drain::decode(body)?),
            8 => BridgeFrame::Chunk(pb::MessageChunk::decode(body)?),
            9 => BridgeFrame::Pong(pb::Pong::decode(body)?),
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
