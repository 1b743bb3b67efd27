//! The call path: a client call admitted, started on the chosen instance, its
//! requests pumped and its response streamed back, and the answers the router
//! gives itself.

pub(super) mod call;
pub(super) mod client_body;
pub(super) mod local_reply;
pub(super) mod pump;
pub(super) mod reply;
pub(super) mod start;
