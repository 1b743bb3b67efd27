//! Reading a routing key straight from a request's wire bytes.
//!
//! The generator resolves `(router.v1.route_key) = "user.id"` to field numbers
//! (`[2, 1]`); the router walks the encoded request along them without
//! decoding the message, and hashes the raw bytes of the value it finds.

use bytes::{Buf, Bytes};
use prost::encoding::{WireType, decode_key, decode_varint};

/// The raw bytes of the field at `path` in the encoded message `message`:
/// the content of a length-delimited field, or the encoding of a scalar. The
/// last occurrence wins, as in protobuf's merge rules. `None` when absent or
/// malformed.
pub(crate) fn extract(message: &Bytes, path: &[u32]) -> Option<Bytes> {
    let (&last, parents) = path.split_last()?;
    let mut current = message.clone();
    for &field in parents {
        current = find(&current, field, true)?;
    }
    find(&current, last, false)
}

fn find(message: &Bytes, wanted: u32, must_be_message: bool) -> Option<Bytes> {
    let mut buf = message.clone();
    let mut found = None;
    while buf.has_remaining() {
        let (field, wire_type) = decode_key(&mut buf).ok()?;
        let start = message.len() - buf.remaining();
        let value = match wire_type {
            WireType::Varint => {
                decode_varint(&mut buf).ok()?;
                message.slice(start..message.len() - buf.remaining())
            }
            WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                let n = if wire_type == WireType::SixtyFourBit {
                    8
                } else {
                    4
                };
                if buf.remaining() < n {
                    return None;
                }
                buf.advance(n);
                message.slice(start..start + n)
            }
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                if len > buf.remaining() {
                    return None;
                }
                let begin = message.len() - buf.remaining();
                buf.advance(len);
                message.slice(begin..begin + len)
            }
            WireType::StartGroup | WireType::EndGroup => return None,
        };
        if field == wanted && (!must_be_message || wire_type == WireType::LengthDelimited) {
            found = Some(value);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_strings_and_scalars() {
        // message { 1: "x", 2: { 1: "user-7", 3: varint 300 }, 5: fixed32 }
        let inner: &[u8] = &[
            0x0a, 6, b'u', b's', b'e', b'r', b'-', b'7', 0x18, 0xac, 0x02,
        ];
        let mut msg = vec![0x0a, 1, b'x', 0x12, inner.len() as u8];
        msg.extend_from_slice(inner);
        msg.extend_from_slice(&[0x2d, 1, 2, 3, 4]);
        let msg = Bytes::from(msg);
        assert_eq!(extract(&msg, &[2, 1]).as_deref(), Some(&b"user-7"[..]));
        assert_eq!(extract(&msg, &[2, 3]).as_deref(), Some(&[0xac, 0x02][..]));
        assert_eq!(extract(&msg, &[5]).as_deref(), Some(&[1, 2, 3, 4][..]));
        assert_eq!(extract(&msg, &[1]).as_deref(), Some(&b"x"[..]));
        assert_eq!(extract(&msg, &[4]), None);
        assert_eq!(extract(&msg, &[1, 1]), None);
    }

    #[test]
    fn last_occurrence_wins_and_garbage_is_none() {
        let msg = Bytes::from_static(&[0x0a, 1, b'a', 0x0a, 1, b'b']);
        assert_eq!(extract(&msg, &[1]).as_deref(), Some(&b"b"[..]));
        assert_eq!(extract(&Bytes::from_static(&[0x0a, 9, 1]), &[1]), None);
        assert_eq!(extract(&Bytes::from_static(&[0xff]), &[1]), None);
    }
}
