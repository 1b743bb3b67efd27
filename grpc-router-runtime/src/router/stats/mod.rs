//! What the router records of finished calls: the observers of each
//! attempt's end, per-instance call statistics and each service's recent
//! errors.

pub(super) mod attempt_end;
pub(super) mod call_stats;
pub(super) mod recent_errors;
