//! Conversions between HTTP/2 headers and the protocol's metadata, status and
//! deadline fields.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::percent_decode;
use tonic::{Code, Status};

use crate::pb;
use crate::pb::metadata_entry::Value;

/// gRPC's base64 for `-bin` values: written without padding, read with or
/// without it (as tonic and grpc-go do).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Headers that belong to one HTTP/2 hop or to the gRPC framing, never to the
/// application: they are not forwarded as metadata.
fn is_reserved(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "content-length"
            | "te"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "date"
            | "grpc-timeout"
            | "grpc-encoding"
            | "grpc-accept-encoding"
            | "grpc-message-type"
            | "grpc-status"
            | "grpc-message"
            | "grpc-status-details-bin"
    )
}

/// Collects the application metadata of `headers`, in order, keeping repeated
/// keys and decoding `-bin` values.
pub(crate) fn from_headers(headers: &HeaderMap) -> pb::Metadata {
    // Most header maps hold only reserved headers: allocate for what is kept.
    let mut entries = Vec::new();
    for (name, value) in headers {
        let key = name.as_str();
        if is_reserved(key) {
            continue;
        }
        let value = if key.ends_with("-bin") {
            match BASE64.decode(value.as_bytes()) {
                Ok(raw) => Value::Binary(Bytes::from(raw)),
                // Not valid base64: pass the text on untouched.
                Err(_) => Value::Ascii(String::from_utf8_lossy(value.as_bytes()).into_owned()),
            }
        } else {
            Value::Ascii(String::from_utf8_lossy(value.as_bytes()).into_owned())
        };
        entries.push(pb::MetadataEntry {
            key: key.to_owned(),
            value: Some(value),
        });
    }
    pb::Metadata { entries }
}

/// Appends `metadata` to `headers`, encoding `-bin` values. Entries that are
/// not valid header names or values, or that name reserved headers, are
/// skipped: a peer cannot smuggle framing headers through metadata.
pub(crate) fn append_to_headers(metadata: &pb::Metadata, headers: &mut HeaderMap) {
    for entry in &metadata.entries {
        if is_reserved(&entry.key) {
            continue;
        }
        let Ok(name) = HeaderName::from_bytes(entry.key.as_bytes()) else {
            continue;
        };
        let value = match &entry.value {
            Some(Value::Binary(raw)) => HeaderValue::from_str(&BASE64.encode(raw)),
            Some(Value::Ascii(text)) => HeaderValue::from_str(text),
            None => continue,
        };
        if let Ok(value) = value {
            headers.append(name, value);
        }
    }
}

/// Builds a header map from `metadata`.
pub(crate) fn to_headers(metadata: Option<&pb::Metadata>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(metadata) = metadata {
        append_to_headers(metadata, &mut headers);
    }
    headers
}

/// Parses a `grpc-timeout` header value (`1*8DIGIT` and a unit of `H`, `M`,
/// `S`, `m`, `u` or `n`).
pub(crate) fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Formats a `grpc-timeout` header value in the finest unit whose amount fits
/// in eight digits, rounded up to that unit.
pub(crate) fn format_timeout(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in units {
        let amount = nanos.div_ceil(per);
        if amount <= MAX {
            return HeaderValue::from_str(&format!("{amount}{unit}"))
                .unwrap_or(HeaderValue::from_static("99999999H"));
        }
    }
    HeaderValue::from_static("99999999H")
}

/// Reads the deadline a client asked for in `headers`, if any.
pub(crate) fn timeout_from_headers(headers: &HeaderMap) -> Option<Duration> {
    parse_timeout(headers.get("grpc-timeout")?.as_bytes())
}

/// Reads a gRPC status out of trailers (or trailers-only response headers):
/// `None` when there is no `grpc-status`. Never panics on bad input.
pub(crate) fn trailers_from_headers(call_id: u64, headers: &HeaderMap) -> Option<pb::Trailers> {
    let code = headers.get("grpc-status")?;
    let code = std::str::from_utf8(code.as_bytes())
        .ok()
        .and_then(|c| c.trim().parse::<i32>().ok())
        .unwrap_or(Code::Unknown as i32);
    let message = headers
        .get("grpc-message")
        .map(|m| {
            percent_decode(m.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let details = headers
        .get("grpc-status-details-bin")
        .and_then(|d| BASE64.decode(d.as_bytes()).ok())
        .map(Bytes::from)
        .unwrap_or_default();
    Some(pb::Trailers {
        call_id,
        code,
        message,
        details,
        metadata: Some(from_headers(headers)),
        not_started: false,
    })
}

/// Turns trailers into the tonic status a client sees, with details and
/// trailing metadata. An OK status carries trailing metadata too.
pub(crate) fn status_from_trailers(trailers: pb::Trailers) -> Status {
    let metadata =
        tonic::metadata::MetadataMap::from_headers(to_headers(trailers.metadata.as_ref()));
    Status::with_details_and_metadata(
        Code::from_i32(trailers.code),
        trailers.message,
        trailers.details,
        metadata,
    )
}

/// Turns a tonic status (for example a transport error on the instance) into
/// trailers.
pub(crate) fn trailers_from_status(call_id: u64, status: &Status) -> pb::Trailers {
    pb::Trailers {
        call_id,
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: status.details().to_vec().into(),
        metadata: Some(from_headers(status.metadata().as_ref())),
        not_started: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_trip_in_every_unit() {
        for (text, expected) in [
            ("200m", Duration::from_millis(200)),
            ("5S", Duration::from_secs(5)),
            ("3M", Duration::from_secs(180)),
            ("1H", Duration::from_secs(3600)),
            ("750u", Duration::from_micros(750)),
            ("99999999n", Duration::from_nanos(99_999_999)),
        ] {
            assert_eq!(parse_timeout(text.as_bytes()), Some(expected), "{text}");
            let formatted = format_timeout(expected);
            assert_eq!(parse_timeout(formatted.as_bytes()), Some(expected));
        }
    }

    #[test]
    fn bad_timeouts_are_rejected() {
        for text in ["", "m", "123456789m", "12x", "-1m", "1.5S"] {
            assert_eq!(parse_timeout(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn metadata_keeps_repeated_and_binary_values() {
        let mut headers = HeaderMap::new();
        headers.append("x-multi", HeaderValue::from_static("one"));
        headers.append("x-multi", HeaderValue::from_static("two"));
        headers.append("x-raw-bin", HeaderValue::from_static("AAEC/w"));
        headers.append("content-type", HeaderValue::from_static("application/grpc"));
        headers.append("grpc-timeout", HeaderValue::from_static("1S"));
        let md = from_headers(&headers);
        assert_eq!(md.entries.len(), 3);
        assert_eq!(
            md.entries[2].value,
            Some(Value::Binary(Bytes::from_static(&[0, 1, 2, 255])))
        );
        let back = to_headers(Some(&md));
        let multi: Vec<_> = back.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["one", "two"]);
        assert_eq!(
            back.get("x-raw-bin").map(|v| v.as_bytes()),
            Some(&b"AAEC/w"[..])
        );
        assert!(back.get("content-type").is_none());
    }

    #[test]
    fn trailers_parse_without_panicking_on_bad_input() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("nonsense"));
        headers.insert("grpc-status-details-bin", HeaderValue::from_static("!!!"));
        headers.insert("grpc-message", HeaderValue::from_static("a%20b"));
        let t = trailers_from_headers(1, &headers).expect("has status");
        assert_eq!(t.code, Code::Unknown as i32);
        assert_eq!(t.message, "a b");
        assert!(t.details.is_empty());
    }
}
