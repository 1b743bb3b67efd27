//! Values the configuration writes as text: token hashes, durations,
//! strategies, log filters, status names and header names.

use std::time::Duration;

use router_runtime::router::Strategy;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The SHA-256 of a bearer token, as 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// The hash of `token`.
    pub fn of(token: &str) -> Self {
        use sha2::Digest;
        TokenHash(sha2::Sha256::digest(token.as_bytes()).into())
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::str::FromStr for TokenHash {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = || {
            format!(
                "`{text}` is not a SHA-256 in hex (64 hex digits; `printf %s TOKEN | sha256sum`)"
            )
        };
        if text.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(TokenHash(out))
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for TokenHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

/// Reads a strategy by its name (`round-robin`).
pub(super) fn strategy<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Strategy>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse()
        .map(Some)
        .map_err(|e: router_runtime::router::UnknownStrategy| serde::de::Error::custom(e))
}

/// Writes a strategy by its name.
pub(super) fn strategy_name<S: Serializer>(
    strategy: &Option<Strategy>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match strategy {
        Some(strategy) => s.serialize_str(strategy.name()),
        None => s.serialize_none(),
    }
}

/// Reads a `tracing` filter, refusing one that does not parse.
pub(super) fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    tracing_subscriber::EnvFilter::builder()
        .parse(&text)
        .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a log filter: {e}")))?;
    Ok(text)
}

/// Reads a duration as humans write it (`250ms`, `1m30s`).
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write e.g. `250ms`, `10s`, `1m30s`")
    })
}

/// `serde(with)` for a duration written as text.
pub(super) mod duration {
    use super::*;

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }

    pub(in crate::config) fn serialize<S: Serializer>(
        value: &Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }
}

/// `serde(with)` for an optional duration written as text.
pub(super) mod duration_option {
    use super::*;

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }

    pub(in crate::config) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::duration::serialize(value, s),
            None => s.serialize_none(),
        }
    }
}

/// A gRPC status code by its service-config name (`UNAVAILABLE`).
pub(super) fn status_code(name: &str) -> Option<tonic::Code> {
    use tonic::Code;
    let code = match name {
        "CANCELLED" => Code::Cancelled,
        "UNKNOWN" => Code::Unknown,
        "INVALID_ARGUMENT" => Code::InvalidArgument,
        "DEADLINE_EXCEEDED" => Code::DeadlineExceeded,
        "NOT_FOUND" => Code::NotFound,
        "ALREADY_EXISTS" => Code::AlreadyExists,
        "PERMISSION_DENIED" => Code::PermissionDenied,
        "RESOURCE_EXHAUSTED" => Code::ResourceExhausted,
        "FAILED_PRECONDITION" => Code::FailedPrecondition,
        "ABORTED" => Code::Aborted,
        "OUT_OF_RANGE" => Code::OutOfRange,
        "UNIMPLEMENTED" => Code::Unimplemented,
        "INTERNAL" => Code::Internal,
        "UNAVAILABLE" => Code::Unavailable,
        "DATA_LOSS" => Code::DataLoss,
        "UNAUTHENTICATED" => Code::Unauthenticated,
        _ => return None,
    };
    Some(code)
}

/// Whether `name` is a valid lowercase metadata header name.
pub(super) fn http_header(name: &str) -> Result<(), ()> {
    if name.is_empty() || name != name.to_ascii_lowercase() {
        return Err(());
    }
    tonic::metadata::MetadataKey::<tonic::metadata::Ascii>::from_bytes(name.as_bytes())
        .map(|_| ())
        .map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use crate::config::testing::error;

    #[test]
    fn a_token_hash_that_is_not_hex_is_refused() {
        let e = error("[registrations]\ntokens_sha256 = [\"abc\"]\n");
        assert!(e.starts_with("router.toml:2:"), "{e}");
        assert!(e.contains("not a SHA-256"), "{e}");
    }

    #[test]
    fn a_bad_duration_is_named() {
        let e = error("[services.\"a.B\"]\nheartbeat_timeout = \"soon\"\n");
        assert!(e.starts_with("router.toml:2:"), "{e}");
        assert!(e.contains("heartbeat_timeout"), "{e}");
        assert!(e.contains("not a duration"), "{e}");
    }

    #[test]
    fn a_bad_log_format_and_a_wrong_type_are_named() {
        let e = error("[log]\nformat = \"yaml\"\n");
        assert!(e.contains("`log.format`"), "{e}");
        let e = error("[limits]\nmax_services = \"many\"\n");
        assert!(e.starts_with("router.toml:2:"), "{e}");
        assert!(e.contains("`limits.max_services`"), "{e}");
    }
}
