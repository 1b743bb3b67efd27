//! Generates the messages, tonic server/client, router protos and the Rust
//! router and bridge of both example services (`myservice.v1.Greeter` and
//! `inventory.v1.Inventory`) with protoc-gen-router's builder, in one call: no
//! protoc needed. `Builder::configure` passes prost settings through.
//!
//! Also writes `OUT_DIR/myservice_descriptor.bin`, the encoded
//! `FileDescriptorSet` of `myservice.proto` and its imports, which the router
//! binary serves through gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    protoc_gen_router::Builder::new()
        .include("proto")
        // prost settings pass through: replies carry their padding as
        // `bytes::Bytes`, and `InstanceInfo` sorts. Neither
        // changes what the router forwards (tests/method_kinds.rs).
        .configure(|b| {
            b.bytes(".myservice.v1.HelloReply.payload")
                .type_attribute(".myservice.v1.InstanceInfo", "#[derive(PartialOrd, Ord)]")
        })
        .compile(&[
            "proto/myservice/v1/myservice.proto",
            "proto/inventory/v1/inventory.proto",
        ])?;

    // One descriptor set for reflection: the Greeter and the router's admin
    // service, with every import (a file registered twice would clash).
    let descriptors = protox::compile(
        ["myservice/v1/myservice.proto", "router/v1/admin.proto"],
        ["proto", "../../proto"],
    )?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("myservice_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=../../proto");
    Ok(())
}
