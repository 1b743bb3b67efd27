//! Connect's compression: `gzip` and `identity`, as negotiated with
//! `content-encoding`/`accept-encoding` (unary) and
//! `connect-content-encoding`/`connect-accept-encoding` (streams).
//! Decompression stops at the message limit, so a small compressed body
//! cannot make the router hold a large one.

use std::io::{Read, Write};

use bytes::Bytes;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use super::error::ConnectError;

/// The encodings the router reads and writes, as `accept-encoding` lists
/// them.
pub(crate) const ACCEPTED: &str = "gzip";

/// Messages smaller than this are sent uncompressed even to a client that
/// accepts gzip: compression would cost more than it saves.
pub(crate) const COMPRESS_FROM: usize = 1024;

/// A body or message encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// Not compressed.
    Identity,
    /// gzip.
    Gzip,
}

impl Encoding {
    /// The encoding a `content-encoding` value (or `compression` query
    /// parameter) names; an error naming it when the router does not
    /// speak it (Connect's `unimplemented`).
    pub(crate) fn parse(value: Option<&str>) -> Result<Encoding, ConnectError> {
        match value.map(str::trim) {
            None | Some("") | Some("identity") => Ok(Encoding::Identity),
            Some(v) if v.eq_ignore_ascii_case("gzip") => Ok(Encoding::Gzip),
            Some(other) => Err(ConnectError::new(
                tonic::Code::Unimplemented,
                format!("unknown compression `{other}`: the router accepts gzip and identity"),
            )),
        }
    }

    /// gzip when an `accept-encoding` list holds it, else identity.
    pub(crate) fn negotiate(accept: Option<&str>) -> Encoding {
        let accepts_gzip = accept.is_some_and(|list| {
            list.split(',').any(|item| {
                let mut parts = item.split(';');
                let name = parts.next().unwrap_or_default().trim();
                let refused = parts.any(|p| p.trim().replace(' ', "") == "q=0");
                name.eq_ignore_ascii_case("gzip") && !refused
            })
        });
        if accepts_gzip {
            Encoding::Gzip
        } else {
            Encoding::Identity
        }
    }
}

/// `data` decompressed, failing past `limit` bytes (RESOURCE_EXHAUSTED) or
/// on bytes that are not gzip (INVALID_ARGUMENT).
pub(crate) fn decompress(
    encoding: Encoding,
    data: Bytes,
    limit: usize,
) -> Result<Bytes, ConnectError> {
    match encoding {
        Encoding::Identity => Ok(data),
        Encoding::Gzip => {
            let mut out = Vec::new();
            let read = GzDecoder::new(&data[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out);
            if let Err(e) = read {
                return Err(ConnectError::invalid(format!(
                    "the gzip-compressed message does not decompress: {e}"
                )));
            }
            if out.len() > limit {
                return Err(ConnectError::new(
                    tonic::Code::ResourceExhausted,
                    format!("the message decompresses to more than the limit of {limit} bytes"),
                ));
            }
            Ok(Bytes::from(out))
        }
    }
}

/// `data` compressed with `encoding`.
pub(crate) fn compress(encoding: Encoding, data: Bytes) -> Bytes {
    match encoding {
        Encoding::Identity => data,
        Encoding::Gzip => {
            let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
            // Writing to a Vec cannot fail.
            match encoder.write_all(&data).and_then(|()| encoder.finish()) {
                Ok(out) => Bytes::from(out),
                Err(_) => data,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_round_trips_and_stops_at_the_limit() {
        let data = Bytes::from(vec![b'a'; 10_000]);
        let packed = compress(Encoding::Gzip, data.clone());
        assert!(packed.len() < 200);
        assert_eq!(
            decompress(Encoding::Gzip, packed.clone(), 10_000).expect("fits"),
            data
        );
        let error = decompress(Encoding::Gzip, packed, 9_999).expect_err("over");
        assert_eq!(error.code, tonic::Code::ResourceExhausted);
        assert!(error.message.contains("9999"), "{}", error.message);
    }

    #[test]
    fn encodings_are_negotiated_from_accept_lists() {
        assert_eq!(Encoding::negotiate(Some("br, gzip")), Encoding::Gzip);
        assert_eq!(Encoding::negotiate(Some("gzip;q=0")), Encoding::Identity);
        assert_eq!(Encoding::negotiate(None), Encoding::Identity);
        assert!(Encoding::parse(Some("br")).is_err());
        assert_eq!(Encoding::parse(Some("GZIP")).ok(), Some(Encoding::Gzip));
    }
}
