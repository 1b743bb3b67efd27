//! Generates the messages, tonic server/client, router protos and the Rust
//! router and bridge of both example services (`myservice.v1.Greeter` and
//! `inventory.v1.Inventory`) with protoc-gen-router's builder, in one call: no
//! protoc needed. `Builder::configure` passes prost settings through.
//!
//! Reflection needs no separate descriptor set: the generated code embeds it
//! (`GreeterSpec::FILE_DESCRIPTOR_SET`), and `RouterServer` serves it.

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

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
