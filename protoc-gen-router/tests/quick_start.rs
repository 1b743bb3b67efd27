//! Builds a new crate exactly as the README's quick start says: its
//! Cargo.toml dependencies, build.rs and src/lib.rs are the README's own
//! snippets, over a copy of the example proto. A README that drifts from what
//! works fails here.
//!
//! The README depends on the registry (`grpc-router-runtime = "0.1"`); the crate
//! gets a `[patch.crates-io]` that points both crates at this workspace, or,
//! with `QUICK_START_PACKAGES` set to a directory holding the unpacked
//! packages (`grpc-router-runtime-<version>/`, `protoc-gen-router-<version>/`, as
//! `cargo package` leaves them in `target/package`), at those:
//! `.ci/publish-check.sh` builds the quick start from the packaged crates
//! that way.
//!
//! It runs `cargo build` in the shared target directory (`CARGO_TARGET_DIR`,
//! else this workspace's `target/`), with this workspace's Cargo.lock, so
//! only the new crate and the few dependencies whose features differ compile:
//! minutes on a fresh machine, seconds after (the crate lives in
//! `CARGO_TARGET_TMPDIR`).

mod common;

use std::path::Path;
use std::process::Command;

/// The body of the first fenced block after `marker` in `readme`.
fn block_after<'a>(readme: &'a str, marker: &str) -> &'a str {
    let at = readme
        .find(marker)
        .unwrap_or_else(|| panic!("README has no `{marker}`"));
    let rest = &readme[at..];
    let open = rest.find("```").expect("a fenced block after the marker");
    let body_start = open + rest[open..].find('\n').expect("a fence line") + 1;
    let close = rest[body_start..]
        .find("```")
        .expect("the fenced block ends");
    &rest[body_start..body_start + close]
}

/// The published crates the quick start depends on.
const CRATES: [&str; 2] = ["grpc-router-runtime", "protoc-gen-router"];

/// A `[patch.crates-io]` section pointing the README's registry dependencies
/// at local sources: the unpacked packages in `$QUICK_START_PACKAGES` when set
/// (failing if one is missing), else this workspace's crate directories.
fn patch_section(root: &Path) -> String {
    let mut patch = String::from("\n[patch.crates-io]\n");
    for name in CRATES {
        let dir = match std::env::var_os("QUICK_START_PACKAGES") {
            Some(packages) => {
                let dir =
                    Path::new(&packages).join(format!("{name}-{}", env!("CARGO_PKG_VERSION")));
                assert!(
                    dir.join("Cargo.toml").is_file(),
                    "QUICK_START_PACKAGES: no unpacked package {} (run `cargo package`)",
                    dir.display()
                );
                dir
            }
            None => root.join(name),
        };
        patch.push_str(&format!(
            "{name} = {{ path = {:?} }}\n",
            dir.display().to_string()
        ));
    }
    patch
}

/// The README's `**Cargo.toml**` block, checked to depend on the registry
/// (what a user writes), then `more` (lines added to its last section, the
/// build dependencies), then the patch to local sources.
fn dependencies(root: &Path, readme: &str, more: &str) -> String {
    let dependencies = block_after(readme, "**Cargo.toml**");
    for name in CRATES {
        assert!(
            dependencies.contains(&format!("{name} = \"0.1\"")),
            "the quick start depends on {name} from the registry:\n{dependencies}"
        );
    }
    format!("{dependencies}{more}{}", patch_section(root))
}

/// Where the new crate lives: its own directory per source of the crates, so
/// switching between the workspace and the packages rebuilds neither.
fn crate_dir(name: &str) -> std::path::PathBuf {
    let suffix = if std::env::var_os("QUICK_START_PACKAGES").is_some() {
        "-packaged"
    } else {
        ""
    };
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}{suffix}"))
}

#[test]
fn a_new_crate_builds_from_the_readme_quick_start() {
    let root = common::root().canonicalize().expect("the workspace root");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let dependencies = dependencies(&root, &readme, "");
    let build_rs = block_after(&readme, "**build.rs**");
    let lib_rs = block_after(&readme, "**src/lib.rs**");
    assert!(dependencies.contains("prost-types"), "{dependencies}");

    // A stable directory under the target dir, so a second run is incremental.
    let krate = crate_dir("quick-start");
    let _ = std::fs::remove_dir_all(krate.join("src"));
    let krate = krate.as_path();
    let write = |path: &str, text: &str| {
        let path = krate.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
    };
    write(
        "Cargo.toml",
        &format!(
            "[package]\nname = \"quick-start\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\
             publish = false\n\n[workspace]\n\n{dependencies}"
        ),
    );
    write("build.rs", build_rs);
    // The README's module, plus the items its router and instance snippets use.
    write(
        "src/lib.rs",
        &format!(
            "{lib_rs}\n\
             /// The quick start's router.\n\
             pub fn router() -> pb::GreeterRouter {{\n    \
                 pb::GreeterRouter::new(router_runtime::router::RouterConfig::default())\n\
             }}\n\n\
             /// The quick start's log filter.\n\
             pub fn filter() -> tracing_subscriber::EnvFilter {{\n    \
                 tracing_subscriber::EnvFilter::new(\"info\")\n\
             }}\n\n\
             /// The quick start's bridge, around any Greeter implementation.\n\
             pub fn bridge<T: pb::greeter_server::Greeter>(service: T) -> impl Sized {{\n    \
                 pb::GreeterBridge::new(service)\n\
             }}\n"
        ),
    );
    let proto = "proto/myservice/v1/myservice.proto";
    write(
        proto,
        &std::fs::read_to_string(root.join("examples/myservice").join(proto)).expect("the proto"),
    );
    std::fs::copy(root.join("Cargo.lock"), krate.join("Cargo.lock")).expect("Cargo.lock");

    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--quiet", "--lib"])
        .current_dir(krate)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "the quick start crate does not build:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(Path::new(&target).join("debug").is_dir());
}

/// The buf layout of the README: prost and tonic code of the package (here
/// from tonic-prost-build, which the buf community plugins wrap) and the
/// checked-in glue of `examples/buf-user/gen`, included into one module,
/// build together.
#[test]
fn the_buf_glue_builds_included_beside_prost_and_tonic_code() {
    let root = common::root().canonicalize().expect("the workspace root");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let dependencies = dependencies(&root, &readme, "protox = \"0.10\"\n");
    let krate = crate_dir("buf-user");
    let _ = std::fs::remove_dir_all(krate.join("src"));
    let write = |path: &str, text: &str| {
        let path = krate.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
    };
    let module = root.join("examples/buf-user");
    write(
        "Cargo.toml",
        &format!(
            "[package]\nname = \"buf-user\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\
             publish = false\n\n[workspace]\n\n{dependencies}"
        ),
    );
    write(
        "build.rs",
        &format!(
            "fn main() -> Result<(), Box<dyn std::error::Error>> {{\n    \
                 let fds = protox::compile([\"shop/v1/shop.proto\", \"shop/v1/types.proto\"], [{include:?}])?;\n    \
                 protoc_gen_router::tonic_prost_build::configure().compile_fds(fds)?;\n    \
                 Ok(())\n\
             }}\n",
            include = module.join("proto").display().to_string()
        ),
    );
    write(
        "src/lib.rs",
        &format!(
            "pub mod pb {{\n    \
                 include!(concat!(env!(\"OUT_DIR\"), \"/shop.v1.rs\"));\n    \
                 include!({glue:?});\n\
             }}\n\n\
             /// The router of the buf-generated glue.\n\
             pub fn router() -> pb::OrderServiceRouter {{\n    \
                 pb::OrderServiceRouter::new(router_runtime::router::RouterConfig::default())\n\
             }}\n\n\
             /// Its bridge, around any implementation.\n\
             pub fn bridge<T: pb::order_service_server::OrderService>(service: T) -> impl Sized {{\n    \
                 pb::OrderServiceBridge::new(service)\n\
             }}\n",
            glue = module
                .join("gen/shop/v1/shop_router.rs")
                .display()
                .to_string()
        ),
    );
    std::fs::copy(root.join("Cargo.lock"), krate.join("Cargo.lock")).expect("Cargo.lock");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--quiet", "--lib"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "the buf-style crate does not build:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
