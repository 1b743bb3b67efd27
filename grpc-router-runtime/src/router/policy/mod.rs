//! The traffic policies applied to a call before and while it is forwarded:
//! the admission pipeline (the pre-forward policies in order), authorization, rate and instance limits, deadlines, retries, traffic
//! splits, outlier ejection, the per-method settings, and how a refusal is
//! recorded.

pub(super) mod admission;
pub(super) mod authz;
pub(super) mod concurrency;
pub(super) mod deadline;
pub(super) mod instance_budget;
pub(super) mod limit;
pub(super) mod method_settings;
pub(super) mod outlier;
pub(super) mod refusal;
pub(super) mod retry;
pub(super) mod split;
