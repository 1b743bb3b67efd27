//! The register stream: a bridge's Hello accepted or refused, its frames read
//! and written, and registrations checked again when the check changes.

pub(crate) mod bridge_kind;
pub(super) mod outbound;
pub(super) mod recheck;
pub(super) mod session;
