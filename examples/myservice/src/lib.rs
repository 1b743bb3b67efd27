//! The example Greeter service, routed by grpc-router.
//!
//! - [`pb`]: the generated messages, tonic server and client, router protocol
//!   types, and the generated `GreeterRouter` / `GreeterBridge`.
//! - [`greeter`]: an ordinary tonic implementation of the service, which knows
//!   nothing about routers.
//! - [`demo`]: what the binaries share: serving a router with health and
//!   reflection, running an instance, and the client routine.
//! - [`FILE_DESCRIPTOR_SET`]: the descriptors of `myservice.proto` and its
//!   imports, for gRPC server reflection.

pub mod demo;
pub mod greeter;

/// Generated code for `myservice.v1`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("myservice.v1");
}

/// The encoded `google.protobuf.FileDescriptorSet` of
/// `myservice/v1/myservice.proto` and every file it imports, compiled by
/// build.rs with protox. The router serves it through gRPC server reflection,
/// so `grpcurl` and `buf curl` work without proto files.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/myservice_descriptor.bin"));
