//! The register stream: a bridge's Hello accepted or refused, its frames read
//! and written, registrations checked again when the check changes, and the
//! fleet of replicas told to bridges.

pub(crate) mod bridge_kind;
pub(super) mod fleet;
pub(super) mod outbound;
pub(super) mod recheck;
pub(super) mod session;
