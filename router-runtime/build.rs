//! Compiles `proto/router/v1/*.proto` (the envelope types) with protox, so no protoc is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest.join("../proto");
    let files = ["router/v1/router.proto", "router/v1/options.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }
    let fds = protox::compile(files, [&proto_root])?;
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    Ok(())
}
