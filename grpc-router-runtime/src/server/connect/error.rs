//! Connect errors: gRPC codes under their Connect names (snake_case), the
//! HTTP status the Connect spec gives each for unary answers, and the JSON
//! body (`{"code", "message", "details": [{"type", "value"}]}`) built from a
//! gRPC status, its details (`grpc-status-details-bin`) included.

use base64::Engine as _;
use bytes::Bytes;
use http::StatusCode;
use prost::Message;
use serde_json::{Map, Value, json};
use tonic::Code;

/// A Connect error: a code, a message and the status details (each a
/// `google.protobuf.Any`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConnectError {
    pub(crate) code: Code,
    pub(crate) message: String,
    pub(crate) details: Vec<prost_types::Any>,
}

/// `google.rpc.Status`, as `grpc-status-details-bin` carries it.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

impl ConnectError {
    /// An error with no details.
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        ConnectError {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// INVALID_ARGUMENT, for a request the router cannot read.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// The error a gRPC status stands for, its details decoded from the
    /// status's `google.rpc.Status` bytes when it has them.
    pub(crate) fn from_status(status: &tonic::Status) -> Self {
        let details = RpcStatus::decode(status.details())
            .map(|s| s.details)
            .unwrap_or_default();
        ConnectError {
            code: status.code(),
            message: status.message().to_owned(),
            details,
        }
    }

    /// The HTTP status of a unary answer with this error (the Connect
    /// spec's table).
    pub(crate) fn http_status(&self) -> StatusCode {
        http_status(self.code)
    }

    /// The error as Connect's JSON object.
    pub(crate) fn to_json(&self) -> Value {
        let mut error = Map::new();
        error.insert("code".into(), Value::from(code_name(self.code)));
        if !self.message.is_empty() {
            error.insert("message".into(), Value::from(self.message.clone()));
        }
        if !self.details.is_empty() {
            let details = self
                .details
                .iter()
                .map(|any| {
                    let kind = any.type_url.rsplit('/').next().unwrap_or_default();
                    json!({
                        "type": kind,
                        "value": base64::engine::general_purpose::STANDARD_NO_PAD.encode(&any.value),
                    })
                })
                .collect();
            error.insert("details".into(), Value::Array(details));
        }
        Value::Object(error)
    }

    /// The JSON body of a unary error answer.
    pub(crate) fn body(&self) -> Bytes {
        Bytes::from(self.to_json().to_string())
    }
}

/// The Connect name of a gRPC code (`invalid_argument` ...).
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status the Connect spec gives a unary error with `code`.
pub(crate) fn http_status(code: Code) -> StatusCode {
    let status = match code {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::PermissionDenied => 403,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::Unauthenticated => 401,
    };
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_the_specs_http_status_and_snake_case_name() {
        let table = [
            (Code::Cancelled, "canceled", 499),
            (Code::Unknown, "unknown", 500),
            (Code::InvalidArgument, "invalid_argument", 400),
            (Code::DeadlineExceeded, "deadline_exceeded", 504),
            (Code::NotFound, "not_found", 404),
            (Code::AlreadyExists, "already_exists", 409),
            (Code::PermissionDenied, "permission_denied", 403),
            (Code::ResourceExhausted, "resource_exhausted", 429),
            (Code::FailedPrecondition, "failed_precondition", 400),
            (Code::Aborted, "aborted", 409),
            (Code::OutOfRange, "out_of_range", 400),
            (Code::Unimplemented, "unimplemented", 501),
            (Code::Internal, "internal", 500),
            (Code::Unavailable, "unavailable", 503),
            (Code::DataLoss, "data_loss", 500),
            (Code::Unauthenticated, "unauthenticated", 401),
        ];
        for (code, name, status) in table {
            assert_eq!(code_name(code), name);
            assert_eq!(http_status(code).as_u16(), status, "{name}");
        }
    }

    #[test]
    fn details_are_their_type_name_and_unpadded_base64() {
        let any = prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
            value: vec![1, 2, 3, 4],
        };
        let status = RpcStatus {
            code: 5,
            message: "gone".into(),
            details: vec![any],
        };
        let status = tonic::Status::with_details(
            Code::NotFound,
            "gone",
            Bytes::from(status.encode_to_vec()),
        );
        let json = ConnectError::from_status(&status).to_json();
        assert_eq!(
            json,
            json!({
                "code": "not_found",
                "message": "gone",
                "details": [{"type": "google.rpc.ErrorInfo", "value": "AQIDBA"}],
            })
        );
    }
}
