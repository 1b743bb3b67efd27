//! The `grpc-router` daemon: one binary and a config file that route every
//! service whose instances register with it (no service compiled in).
//!
//! - [`activate`]: the activation hook run when calls wait for a service
//!   with no instance.
//! - [`keda`]: the KEDA external scaler (`[keda] listen`).
//! - [`admin_http`]: the admin HTTP listener (`/metrics`, status page,
//!   `/healthz`).
//! - [`cluster`]: the fleet of replicas (`[cluster]`) told to bridges.
//! - [`config`]: the TOML configuration and its `GRPC_ROUTER_*` overrides.
//! - [`daemon`]: `grpc-router serve`: listeners, reload on SIGHUP, drain on
//!   SIGTERM.
//! - [`descriptors`]: compiled descriptor sets `check-config` reads.
//! - [`status`]: `grpc-router status`: a running router's services and
//!   instances.
//! - [`status_page`]: the admin listener's live status page and
//!   `/status.json`.
//! - [`credentials`]: registration tokens and instance certificate SANs.
//! - [`sans`]: certificate SANs and the patterns that match them.
//! - [`jwt`]: client JWTs and per-method authorization rules.
//! - [`logging`]: text or JSON logs with a reloadable level.
//! - [`source`]: the file, variables and flags a configuration is read
//!   from (at start and at each reload).
//! - [`state`]: the learnt services kept across restarts (`[state] file`).
//! - [`traces`]: call spans exported over OpenTelemetry OTLP (`otel`
//!   feature).

pub mod activate;
pub mod admin_http;
pub mod cluster;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod descriptors;
pub mod jwt;
pub mod keda;
pub mod logging;
pub mod sans;
pub mod source;
pub mod state;
pub mod status;
pub mod status_page;
pub mod traces;
