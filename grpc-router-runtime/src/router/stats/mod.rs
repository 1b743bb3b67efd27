//! What the router records of finished calls: per-instance call statistics and
//! each service's recent errors.

pub(super) mod call_stats;
pub(super) mod recent_errors;
