//! # grpc-router-runtime
//!
//! The runtime of grpc-router: everything that is not generated per service.
//!
//! - [`router`]: serves a service's own paths to unmodified gRPC clients and
//!   forwards each call to a registered instance ([`router::Router`]).
//! - [`bridge`]: connects a user's ordinary tonic service to routers
//!   ([`bridge::Bridge`]).
//! - [`wire`], [`codec`]: the register-stream protocol
//!   (`protoc-gen-router/proto/router/v1/router.proto`): its frames and their codecs, public
//!   for tools and tests that speak the protocol by hand. Flow control,
//!   metadata translation and the queues are internal (see ARCHITECTURE.md).
//! - [`metrics`]: Prometheus metrics of routers, into a registry the
//!   embedder owns ([`metrics::RouterMetrics`]).
//! - [`admin`]: the `router.v1.RouterAdmin` service for operators.
//! - [`server`]: a router server with health, reflection ([`reflection`]),
//!   admin and graceful shutdown in a few lines ([`server::RouterServer`]).
//! - [`trace`]: the `tracing` spans of forwarded calls (W3C trace context
//!   through the hop with the `otel` feature).
//! - [`codegen`]: the re-exports generated code uses, so a user's crate has one
//!   version of tonic and prost.

#![warn(unreachable_pub)]

pub mod admin;
pub mod bridge;
mod clock;
pub mod codec;
pub mod codegen;
pub mod defaults;
pub mod descriptor;
pub(crate) mod flow;
mod gauge;
pub(crate) mod metadata;
pub mod metrics;
pub(crate) mod oversize;
pub mod pb;
pub(crate) mod queue;
pub mod reflection;
pub mod router;
pub mod server;
pub mod trace;
pub mod wire;

/// The `prometheus-client` crate the metrics are built on, so an embedder
/// names the same [`Registry`](prometheus_client::registry::Registry) type.
pub use prometheus_client;
