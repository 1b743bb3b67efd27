//! Messages over a size limit: the statuses the router and the bridge answer
//! them with.
//!
//! gRPC's code for a message larger than a configured limit is
//! RESOURCE_EXHAUSTED (its status-code table; grpc-go, grpc-java and grpcio
//! answer it); tonic 0.14 says OUT_OF_RANGE for its own decoding and
//! encoding limits. The router and the bridge answer RESOURCE_EXHAUSTED,
//! with a message naming the limit, whose limit it is and the setting that
//! raises it, and turn tonic's own limit errors into the same.

use tonic::{Code, Status};

/// A limit tonic's codec enforced, read from its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TonicLimit {
    /// A received message over `max_decoding_message_size`.
    Decoded {
        /// The message's length.
        found: usize,
        /// The limit.
        limit: usize,
    },
    /// A compressed message that decompresses past the decoding limit.
    Decompressed {
        /// The limit.
        limit: usize,
    },
    /// A message to send over `max_encoding_message_size`.
    Encoded {
        /// The message's length.
        found: usize,
        /// The limit.
        limit: usize,
    },
}

/// The number in `text` between `before` and `after`.
fn number_between(text: &str, before: &str, after: &str) -> Option<usize> {
    let start = text.find(before)? + before.len();
    let rest = &text[start..];
    rest[..rest.find(after)?].trim().parse().ok()
}

/// The limit tonic's codec reports in a status, if it is one of its limit
/// errors (tonic 0.14's wording, which `tonic_wording_is_recognised` pins).
pub(crate) fn tonic_limit(code: Code, message: &str) -> Option<TonicLimit> {
    let sizes = |prefix: &str| {
        let rest = message.strip_prefix(prefix)?;
        Some((
            number_between(rest, "found ", " bytes")?,
            number_between(rest, "the limit is: ", " bytes")?,
        ))
    };
    match code {
        Code::OutOfRange => {
            if let Some((found, limit)) = sizes("Error, decoded message length too large") {
                return Some(TonicLimit::Decoded { found, limit });
            }
            sizes("Error, encoded message length too large")
                .map(|(found, limit)| TonicLimit::Encoded { found, limit })
        }
        Code::ResourceExhausted => message
            .strip_prefix("Error decompressing: size limit")
            .and_then(|rest| number_between(rest, "of ", " bytes"))
            .map(|limit| TonicLimit::Decompressed { limit }),
        _ => None,
    }
}

/// Where a router's size limits are set: the embedder's `RouterConfig`
/// field, and the `grpc-router` daemon's key for `service`.
fn router_settings(field: &str, key: &str, section: &str) -> String {
    format!("raise it with RouterConfig::{field}, or {key} in grpc-router's {section}")
}

/// `[defaults]` or the service's own table, as grpc-router's config names it.
fn service_sections(service: &str) -> String {
    format!("[defaults] or [services.\"{service}\"]")
}

/// The router's status for a client's request that its decoder refused
/// (`status`, tonic's): RESOURCE_EXHAUSTED naming the router's limit for
/// `service` and its settings. Any other status is returned as it is.
pub(crate) fn router_request(status: Status, service: &str) -> Status {
    let settings = || {
        router_settings(
            "max_message_size",
            "max_request_message_bytes",
            &service_sections(service),
        )
    };
    match tonic_limit(status.code(), status.message()) {
        Some(TonicLimit::Decoded { found, limit }) => Status::resource_exhausted(format!(
            "request message of {found} bytes exceeds the router's limit of {limit} bytes for `{service}` ({})",
            settings()
        )),
        Some(TonicLimit::Decompressed { limit }) => Status::resource_exhausted(format!(
            "request message decompresses to more than the router's limit of {limit} bytes for `{service}` ({})",
            settings()
        )),
        _ => status,
    }
}

/// The size of a message as far as it is known: exact for a whole message,
/// a lower bound for one refused while its chunks arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Size {
    /// The whole message's length.
    Exactly(usize),
    /// A message still arriving in chunks, longer than this.
    MoreThan(usize),
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Size::Exactly(n) => write!(f, "{n} bytes"),
            Size::MoreThan(n) => write!(f, "more than {n} bytes"),
        }
    }
}

/// The router's status for a response message from `instance` over its
/// `max_response_message_size` (`limit`) for `service`.
pub(crate) fn router_response(size: Size, limit: usize, instance: &str, service: &str) -> Status {
    Status::resource_exhausted(format!(
        "response message of {size} from instance `{instance}` exceeds the router's limit of {limit} bytes for `{service}` ({})",
        router_settings(
            "max_response_message_size",
            "max_response_message_bytes",
            &service_sections(service)
        )
    ))
}

/// The router's status for a call failed because `instance`'s partly
/// received response messages, across its calls, would pass the router's
/// bound per registration (`limit`).
pub(crate) fn router_partial(limit: usize, instance: &str) -> Status {
    Status::resource_exhausted(format!(
        "instance `{instance}` would make the router hold more than its limit of {limit} bytes of partly received response messages per registration ({})",
        router_settings(
            "max_partial_response_bytes",
            "max_partial_response_bytes",
            "[limits]"
        )
    ))
}

/// The bridge's status for a request message over its own
/// `max_message_size` (`limit`).
pub(crate) fn bridge_request(size: Size, limit: usize, instance: &str) -> Status {
    Status::resource_exhausted(format!(
        "request message of {size} exceeds instance `{instance}`'s limit of {limit} bytes (raise it with BridgeConfig::max_message_size)"
    ))
}

/// The bridge's status for what the instance's tonic server answered
/// (`code`, `message`): RESOURCE_EXHAUSTED naming the server's limit when it
/// is one of tonic's limit errors, else `None` (the server's own status
/// stands).
pub(crate) fn bridge_server(code: Code, message: &str, instance: &str) -> Option<Status> {
    let status = match tonic_limit(code, message)? {
        TonicLimit::Decoded { found, limit } => format!(
            "request message of {found} bytes exceeds instance `{instance}`'s server limit of {limit} bytes (raise its tonic server's max_decoding_message_size)"
        ),
        TonicLimit::Decompressed { limit } => format!(
            "request message decompresses to more than instance `{instance}`'s server limit of {limit} bytes (raise its tonic server's max_decoding_message_size)"
        ),
        TonicLimit::Encoded { found, limit } => format!(
            "response message of {found} bytes exceeds instance `{instance}`'s server limit of {limit} bytes (raise its tonic server's max_encoding_message_size)"
        ),
    };
    Some(Status::resource_exhausted(status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, Bytes, BytesMut};
    use tonic::codec::{Codec, Encoder};

    /// A codec of raw bytes, to make tonic's own limit errors.
    #[derive(Default)]
    struct Raw;

    impl Encoder for Raw {
        type Item = Bytes;
        type Error = Status;
        fn encode(
            &mut self,
            item: Bytes,
            dst: &mut tonic::codec::EncodeBuf<'_>,
        ) -> Result<(), Status> {
            dst.put(item);
            Ok(())
        }
    }

    /// tonic's status for a received message of `found` bytes over `limit`.
    async fn tonic_decode_error(found: usize, limit: usize) -> Status {
        let mut framed = BytesMut::new();
        framed.put_u8(0);
        framed.put_u32(u32::try_from(found).expect("small"));
        framed.put_bytes(0, found);
        let body = tonic::body::Body::new(http_body_util::Full::new(framed.freeze()));
        let mut stream = tonic::Streaming::new_request(
            crate::codec::RawCodec.decoder(),
            body,
            None,
            Some(limit),
        );
        stream.message().await.expect_err("over the limit")
    }

    #[tokio::test]
    async fn tonic_wording_is_recognised() {
        let status = tonic_decode_error(100, 10).await;
        assert_eq!(
            tonic_limit(status.code(), status.message()),
            Some(TonicLimit::Decoded {
                found: 100,
                limit: 10
            }),
            "{status:?}"
        );
        let encoded = tonic::codec::EncodeBody::new_server(
            Raw,
            tokio_stream::once(Ok(Bytes::from_static(&[1; 100]))),
            None,
            tonic::codec::SingleMessageCompressionOverride::default(),
            Some(10),
        );
        let frame = http_body_util::BodyExt::collect(encoded)
            .await
            .expect("the error travels in the trailers");
        let trailers = frame.trailers().expect("trailers").clone();
        let status = Status::from_header_map(&trailers).expect("a status");
        assert_eq!(
            tonic_limit(status.code(), status.message()),
            Some(TonicLimit::Encoded {
                found: 100,
                limit: 10
            }),
            "{status:?}"
        );
    }

    #[tokio::test]
    async fn the_routers_request_status_names_the_size_the_limit_and_the_settings() {
        let status = router_request(tonic_decode_error(5000, 4096).await, "pkg.Svc");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "request message of 5000 bytes exceeds the router's limit of 4096 bytes for `pkg.Svc` (raise it with RouterConfig::max_message_size, or max_request_message_bytes in grpc-router's [defaults] or [services.\"pkg.Svc\"])"
        );
        let other = router_request(Status::internal("bad frame"), "pkg.Svc");
        assert_eq!(
            (other.code(), other.message()),
            (Code::Internal, "bad frame")
        );
    }
}
