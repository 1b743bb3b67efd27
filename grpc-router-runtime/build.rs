//! Compiles the router protos (envelope types, options, admin service) with
//! protox and tonic-prost-build, so no protoc is needed.
//!
//! `router/v1/router.proto` and `router/v1/options.proto` live in
//! protoc-gen-router (`protoc-gen-router/proto`), which embeds them; they are
//! taken from it (a build dependency), so there is one copy of each and the
//! generator and the runtime cannot disagree on the envelopes. This crate owns
//! `router/v1/admin.proto` (`proto/`), the admin service only it serves.

use std::path::PathBuf;

use protoc_gen_router::EmbeddedFileResolver;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest.join("proto");
    let files = [
        protoc_gen_router::ROUTER_PROTO_NAME,
        protoc_gen_router::OPTIONS_PROTO_NAME,
        "router/v1/admin.proto",
    ];
    println!(
        "cargo:rerun-if-changed={}",
        proto_root.join("router/v1/admin.proto").display()
    );
    let mut compiler =
        protox::Compiler::with_file_resolver(EmbeddedFileResolver::new().chain(&[&proto_root]));
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(files)?;
    let fds = compiler.file_descriptor_set();
    let mut config = prost_build::Config::new();
    config.bytes(["."]);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("router_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
