//! The bench's two command lines as the README and CI use them: the
//! subcommands and scenarios they offer, and a clear refusal of a flag that
//! does not exist (not a run with defaults).
//!
//! (These tests are also why `cargo test --workspace` builds both binaries
//! with the test suite's features, so CI's bench runs build nothing again.)

use std::process::{Command, Output};

fn run(binary: &str, args: &[&str]) -> Output {
    Command::new(binary)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{binary} runs: {e}"))
}

#[test]
fn router_bench_offers_the_procs_comparison_and_every_scenario() {
    let out = run(env!("CARGO_BIN_EXE_router-bench"), &["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for offered in ["procs", "unary", "stream", "pingpong", "registrations"] {
        assert!(help.contains(offered), "`{offered}` missing from:\n{help}");
    }
}

#[test]
fn router_soak_offers_the_soak_and_the_memory_checks() {
    let out = run(env!("CARGO_BIN_EXE_router-soak"), &["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for offered in ["soak", "memory"] {
        assert!(help.contains(offered), "`{offered}` missing from:\n{help}");
    }
}

#[test]
fn an_unknown_flag_is_refused_by_name() {
    let out = run(
        env!("CARGO_BIN_EXE_router-bench"),
        &["procs", "--no-such-flag"],
    );
    assert!(!out.status.success(), "ran with an unknown flag");
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("--no-such-flag"), "{error}");
}
