//! Compiles the vendored KEDA external scaler proto
//! (`proto/externalscaler/externalscaler.proto`) with protox and
//! tonic-prost-build, as the runtime compiles its own: no protoc is needed.
//! The client is generated too, for the tests (a KEDA stand-in).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest.join("proto");
    let file = "externalscaler/externalscaler.proto";
    println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    let mut compiler = protox::Compiler::new([&proto_root])?;
    compiler.include_imports(true);
    compiler.open_files([file])?;
    let fds = compiler.file_descriptor_set();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds_with_config(fds, prost_build::Config::new())?;
    Ok(())
}
