//! The label sets of the router's metrics and the spelling of their values.
//!
//! The `grpc_*` label names and values are go-grpc-prometheus's (and
//! grpc-ecosystem's `go-grpc-middleware/providers/prometheus`), so dashboards
//! and alerts written for Go servers work unchanged: `grpc_type` is `unary`,
//! `client_stream`, `server_stream` or `bidi_stream`, and `grpc_code` is the
//! Go name of the status code (`OK`, `Canceled`, `NotFound`,
//! `DeadlineExceeded` ...), not the upper-case name of the gRPC spec.

use prometheus_client::encoding::EncodeLabelSet;
use tonic::Code;

use crate::descriptor::MethodKind;

/// The `grpc_service` of events that cannot be put on a service the router
/// routes: a registration refused before its service was admitted (an
/// unknown or never-defined service, or one over the router's service
/// limit). A fixed value keeps the label's values bounded whatever names
/// hostile registrants send.
pub const UNKNOWN_SERVICE: &str = "<unknown>";

/// Every status code's `grpc_code` value, indexed by the code's number.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The number of status codes (the size of a per-code cache).
pub(crate) const CODES: usize = CODE_NAMES.len();

/// The index of `code` in a per-code cache (an unknown number counts as
/// `Unknown`, as tonic reads it).
pub(crate) fn code_index(code: Code) -> usize {
    usize::try_from(code as i32)
        .ok()
        .filter(|i| *i < CODES)
        .unwrap_or(Code::Unknown as usize)
}

/// The `grpc_code` value of `code`: Go's `codes.Code.String()`.
pub fn code_name(code: Code) -> &'static str {
    CODE_NAMES[code_index(code)]
}

/// The `grpc_type` value of a method kind.
pub fn kind_name(kind: MethodKind) -> &'static str {
    match kind {
        MethodKind::Unary => "unary",
        MethodKind::ClientStreaming => "client_stream",
        MethodKind::ServerStreaming => "server_stream",
        MethodKind::BidiStreaming => "bidi_stream",
    }
}

/// One method of one service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct MethodLabels {
    pub(crate) grpc_service: String,
    pub(crate) grpc_method: String,
    pub(crate) grpc_type: &'static str,
}

/// A method and the status its calls ended with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct HandledLabels {
    pub(crate) grpc_service: String,
    pub(crate) grpc_method: String,
    pub(crate) grpc_type: &'static str,
    pub(crate) grpc_code: &'static str,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ServiceLabels {
    pub(crate) grpc_service: String,
}

/// A service and the protocol its clients called with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ProtocolLabels {
    pub(crate) grpc_service: String,
    /// `grpc`, `grpc-web` or `connect`.
    pub(crate) protocol: String,
}

/// A service and how a wait for an instance ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct WaitLabels {
    pub(crate) grpc_service: String,
    /// [`crate::router::WaitOutcome::name`].
    pub(crate) outcome: &'static str,
}

/// What happened to a registration, and for a refusal its class.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct EventLabels {
    pub(crate) grpc_service: String,
    pub(crate) event: &'static str,
    /// The refusal's status code (`grpc_code` spelling); empty for the other
    /// events.
    pub(crate) reason: &'static str,
}

/// One instance of one service (the per-instance metrics). The label is
/// `instance_id`, not `instance`: Prometheus sets `instance` on every scraped
/// series (the target's address) and would rename ours.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct InstanceLabels {
    pub(crate) grpc_service: String,
    pub(crate) instance_id: String,
}

/// What happened to a registration (the `event` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// Admitted: the instance takes calls.
    Accepted,
    /// Refused before it was admitted, with the refusal's code.
    Refused(Code),
    /// Closed because the same instance registered again.
    Replaced,
    /// Ended by the bridge after a drain.
    Drained,
    /// Ended without a drain: the stream broke or closed, or the bridge
    /// broke the protocol.
    Lost,
    /// Closed by the router: no answer to pings for the heartbeat timeout.
    Evicted,
    /// Closed by the router (shutdown, `close_registrations`).
    Closed,
    /// Closed by the router because it no longer passes the registration
    /// check (a reload changed it), with the check's code.
    Revoked(Code),
}

impl Event {
    /// The `event` and `reason` label values.
    pub(crate) fn labels(self) -> (&'static str, &'static str) {
        match self {
            Event::Accepted => ("accepted", ""),
            Event::Refused(code) => ("refused", code_name(code)),
            Event::Replaced => ("replaced", ""),
            Event::Drained => ("drained", ""),
            Event::Lost => ("lost", ""),
            Event::Evicted => ("evicted", ""),
            Event::Closed => ("closed", ""),
            Event::Revoked(code) => ("closed", code_name(code)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_spelt_as_go_grpc_prometheus_spells_them() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::Cancelled), "Canceled");
        assert_eq!(code_name(Code::NotFound), "NotFound");
        assert_eq!(code_name(Code::DeadlineExceeded), "DeadlineExceeded");
        assert_eq!(code_name(Code::Unavailable), "Unavailable");
        assert_eq!(code_name(Code::ResourceExhausted), "ResourceExhausted");
        assert_eq!(code_name(Code::Unauthenticated), "Unauthenticated");
        // Every code has its own name, in the order of the code numbers.
        for (i, name) in CODE_NAMES.iter().enumerate() {
            let code = Code::from_i32(i32::try_from(i).expect("small"));
            assert_eq!(code_name(code), *name);
        }
    }

    #[test]
    fn method_kinds_are_spelt_as_go_grpc_prometheus_spells_them() {
        assert_eq!(kind_name(MethodKind::Unary), "unary");
        assert_eq!(kind_name(MethodKind::ClientStreaming), "client_stream");
        assert_eq!(kind_name(MethodKind::ServerStreaming), "server_stream");
        assert_eq!(kind_name(MethodKind::BidiStreaming), "bidi_stream");
    }

    #[test]
    fn only_refusals_carry_a_reason() {
        assert_eq!(Event::Accepted.labels(), ("accepted", ""));
        assert_eq!(
            Event::Refused(Code::PermissionDenied).labels(),
            ("refused", "PermissionDenied")
        );
        assert_eq!(Event::Evicted.labels(), ("evicted", ""));
    }
}
