//! The protoc/buf plugin: reads a `CodeGeneratorRequest` on stdin and writes
//! a `CodeGeneratorResponse` on stdout. `--help` and `--version` print and
//! exit instead.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

const HELP: &str = "\
protoc-gen-router: a protoc/buf plugin generating typed gRPC routers and service bridges.

protoc and buf run it: it reads a CodeGeneratorRequest on standard input and
writes a CodeGeneratorResponse on standard output. For every input file with
services it writes <file>_router.proto, and with rust=true <file>_router.rs.

Usage:
  protoc --router_out=OUT [--router_opt=PARAMS] FILE.proto...
  buf generate          (a `local: protoc-gen-router` plugin in buf.gen.yaml)
  protoc-gen-router --help | --version

Parameters (comma-separated key=value):
  rust=true|false         also write the Rust glue (default false)
  runtime_crate=PATH      Rust path of the runtime crate (default ::router_runtime)
  router_config=FILE      router options from a sidecar file (router.v1.RouterOptionsFile
                          in text format) instead of (router.v1.*) options in the protos
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => {}
        Some("-h" | "--help") => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Some("-V" | "--version") => {
            println!("protoc-gen-router {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!(
                "protoc-gen-router: unknown argument `{other}`; it takes none when run by \
                 protoc or buf (see --help)"
            );
            return ExitCode::from(2);
        }
    }
    if std::io::stdin().is_terminal() {
        eprintln!(
            "protoc-gen-router: standard input is a terminal, but this program is a protoc/buf \
             plugin that reads a CodeGeneratorRequest there (see --help)"
        );
        return ExitCode::from(2);
    }
    let mut request = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut request) {
        eprintln!("protoc-gen-router: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    let response = match protoc_gen_router::try_execute(&request) {
        Ok(response) => response,
        Err(e) => {
            eprintln!("protoc-gen-router: {e} (this program is a protoc/buf plugin)");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::io::stdout().write_all(&response) {
        eprintln!("protoc-gen-router: cannot write stdout: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
