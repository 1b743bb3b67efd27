//! Generates the Greeter messages, tonic server/client, router protos and the
//! Rust router and bridge with protoc-gen-router's builder: no protoc needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    protoc_gen_router::Builder::new()
        .include("proto")
        .compile(&["proto/myservice/v1/myservice.proto"])?;
    Ok(())
}
