//! The protoc/buf plugin: reads a `CodeGeneratorRequest` on stdin and writes
//! a `CodeGeneratorResponse` on stdout.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
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
