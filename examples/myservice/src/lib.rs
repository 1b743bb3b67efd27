//! The example Greeter service, routed by grpc-router.
//!
//! - [`pb`]: the generated messages, tonic server and client, router protocol
//!   types, and the generated `GreeterRouter` / `GreeterBridge`.
//! - [`greeter`]: an ordinary tonic implementation of the service, which knows
//!   nothing about routers.
//! - [`demo`]: helpers the binaries share.

pub mod demo;
pub mod greeter;

/// Generated code for `myservice.v1`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("myservice.v1");
}
