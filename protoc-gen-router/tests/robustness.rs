//! The plugin never panics: garbage in, an error response (or exit code) out.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use prost::Message;
use prost_types::compiler::CodeGeneratorResponse;
use protoc_gen_router::{compile_pool, encode_request, execute};

/// A tiny deterministic xorshift64 generator.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn response(request: &[u8]) -> CodeGeneratorResponse {
    let bytes = execute(request);
    let response =
        CodeGeneratorResponse::decode(bytes.as_slice()).expect("execute returns a valid response");
    if let Some(error) = &response.error {
        assert!(
            !error.starts_with("internal error"),
            "the generator panicked: {error}"
        );
    }
    response
}

#[test]
fn random_bytes_give_error_responses() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut errors = 0;
    for _ in 0..4000 {
        let len = (rng.next() % 300) as usize;
        let input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if response(&input).error.is_some() {
            errors += 1;
        }
    }
    assert!(
        errors > 3000,
        "most garbage must be refused, refused {errors}"
    );
}

#[test]
fn mutated_requests_never_panic() {
    let example = common::root().join("examples/myservice/proto");
    let file = example.join("myservice/v1/myservice.proto");
    let (pool, names) = compile_pool(&[&example], &[file]).expect("example compiles");
    let request = encode_request(&pool, &names, Some("rust=true"));
    assert!(response(&request).error.is_none());

    let mut rng = XorShift(42);
    for _ in 0..1500 {
        let mut input = request.clone();
        for _ in 0..=(rng.next() % 4) {
            let at = (rng.next() as usize) % input.len();
            input[at] = rng.next() as u8;
        }
        if rng.next().is_multiple_of(4) {
            let cut = (rng.next() as usize) % input.len();
            input.truncate(cut);
        }
        response(&input);
    }
}

#[test]
fn binary_refuses_garbage_stdin() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_protoc-gen-router"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the plugin binary runs");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(b"this is not a CodeGeneratorRequest\xff\xff")
        .expect("writing stdin");
    let output = child.wait_with_output().expect("the plugin exits");
    assert!(!output.status.success(), "exit status {:?}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("malformed CodeGeneratorRequest"),
        "stderr: {stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn binary_answers_a_valid_request() {
    let example = common::root().join("examples/myservice/proto");
    let file = example.join("myservice/v1/myservice.proto");
    let (pool, names) = compile_pool(&[&example], &[file]).expect("example compiles");
    let request = encode_request(&pool, &names, None);
    let mut child = Command::new(env!("CARGO_BIN_EXE_protoc-gen-router"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the plugin binary runs");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(&request)
        .expect("writing stdin");
    let output = child.wait_with_output().expect("the plugin exits");
    assert!(output.status.success());
    let response = CodeGeneratorResponse::decode(output.stdout.as_slice()).expect("a response");
    assert_eq!(response.error, None);
    assert_eq!(response.file.len(), 1);
}

/// Runs the binary with `args` and an open stdin that never sends anything,
/// so a binary that waited for a request would hang (the test's timeout).
fn run_with_args(args: &[&str]) -> std::process::Output {
    let child = Command::new(env!("CARGO_BIN_EXE_protoc-gen-router"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the plugin binary runs");
    // stdin stays open (piped, never closed) until the child exits.
    child.wait_with_output().expect("the plugin exits")
}

#[test]
fn help_prints_usage_instead_of_waiting_for_a_request() {
    let output = run_with_args(&["--help"]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("protoc-gen-router"), "{text}");
    assert!(text.contains("rust=true"), "{text}");
}

#[test]
fn version_prints_the_crate_version() {
    let output = run_with_args(&["--version"]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("protoc-gen-router {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn an_unknown_argument_is_refused() {
    let output = run_with_args(&["--frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--frobnicate"));
}
