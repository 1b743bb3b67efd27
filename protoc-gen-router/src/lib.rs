//! `protoc-gen-router`: generates typed gRPC routers and service bridges.
//!
//! For every input file with services the generator emits a router `.proto`
//! (`<file>_router.proto`: per service the typed `<S>Call`/`<S>Reply` oneofs,
//! the register stream frames and the `<S>Router` register service; left out
//! when only Python glue is asked for, see [`Params::writes_router_proto`])
//! and, optionally, Rust glue (`<S>_DESCRIPTOR`, `<S>Spec`, `<S>Router`,
//! `<S>Bridge`) for the `router_runtime` crate and a Python module of service
//! descriptors (`<file>_router_bridge.py`) for the Python bridge.
//!
//! Two entry points share one pipeline ([`ir`] model, then emitters), so their
//! outputs are byte-identical:
//!
//! - the protoc/buf plugin binary, a thin wrapper over [`execute`];
//! - the build.rs [`Builder`], which compiles protos with protox (no protoc).
//!
//! ```no_run
//! // build.rs
//! protoc_gen_router::Builder::new()
//!     .include("proto")
//!     .compile(&["proto/myservice/v1/myservice.proto"])?;
//! # Ok::<(), protoc_gen_router::Error>(())
//! ```

mod bridge_rs;
mod builder;
mod error;
pub mod ident;
pub mod ir;
mod params;
mod python;
mod router_proto;
mod router_rs;
mod rust;
mod sidecar;
mod verify;

use prost::Message;
use prost::bytes::Buf;
use prost::encoding::{
    DecodeContext, WireType, decode_key, decode_varint, encode_key, encode_varint, skip_field,
};
use prost_reflect::DescriptorPool;
use prost_types::compiler::{CodeGeneratorRequest, CodeGeneratorResponse, code_generator_response};

pub use builder::{
    Builder, EmbeddedFileResolver, OPTIONS_PROTO, OPTIONS_PROTO_NAME, ROUTER_PROTO,
    ROUTER_PROTO_NAME, compile_pool,
};
pub use error::{Error, Site};
pub use ir::Strategy;
pub use params::{DEFAULT_RUNTIME_CRATE, Params};
pub use sidecar::{MethodOptions, OPTIONS_FILE_MESSAGE, RouterOptions, ServiceOptions};
/// tonic-prost-build, whose builder [`Builder::configure`] hands out, so a
/// build script needs no dependency of its own on it.
pub use tonic_prost_build;

/// One generated file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedFile {
    /// The file's name relative to the output directory, for example
    /// `myservice/v1/myservice_router.proto`.
    pub name: String,
    /// The file's contents.
    pub content: String,
}

/// Generates the outputs for `files_to_generate`, whose descriptors (with
/// their imports) are in `pool`.
///
/// Per file with services: `<file>_router.proto` (unless
/// [`Params::writes_router_proto`] says not: by default when only Python glue
/// is asked for), with [`Params::rust`] also `<file>_router.rs`, with
/// [`Params::python`] also `<file>_router_bridge.py`. Files without services
/// produce nothing.
pub fn generate(
    pool: &DescriptorPool,
    files_to_generate: &[String],
    params: &Params,
) -> Result<Vec<GeneratedFile>, Error> {
    let files = model(pool, files_to_generate, params)?;
    let mut out = Vec::new();
    for file in &files {
        if params.writes_router_proto() {
            out.push(GeneratedFile {
                name: file.router_proto_name(),
                content: checked_router_proto(pool, file)?,
            });
        }
        if params.rust {
            out.push(GeneratedFile {
                name: file.router_rs_name(),
                content: rust::generate(file, params)?,
            });
        }
        if params.python {
            out.push(GeneratedFile {
                name: python::module_name(file),
                content: python::generate(file)?,
            });
        }
    }
    Ok(out)
}

/// The validated model of `files_to_generate`, with the router options of
/// [`Params::router_config`] (when set) over those in the protos.
pub fn model(
    pool: &DescriptorPool,
    files_to_generate: &[String],
    params: &Params,
) -> Result<Vec<ir::File>, Error> {
    let options = match &params.router_config {
        Some(path) => RouterOptions::load(path)?,
        None => RouterOptions::new(),
    };
    ir::build_with(pool, files_to_generate, params.rust, &options)
}

/// The router `.proto` text of `file`, compiled once against `pool` (the
/// descriptors it was built from) so a proto that does not compile is an
/// error naming its service and method rather than an output.
pub(crate) fn checked_router_proto(
    pool: &DescriptorPool,
    file: &ir::File,
) -> Result<String, Error> {
    let (text, origins) = router_proto::generate_with_origins(file);
    verify::check(pool, file, &text, &origins)?;
    Ok(text)
}

/// The router `.proto` text of one model file (the file [`generate`] names
/// `<file>_router.proto`).
pub fn router_proto(file: &ir::File) -> String {
    router_proto::generate(file)
}

/// The Rust glue of one model file (the file [`generate`] names
/// `<file>_router.rs` with `rust=true`).
pub fn router_rs(file: &ir::File, params: &Params) -> Result<String, Error> {
    rust::generate(file, params)
}

/// The Python bridge module of one model file (the file [`generate`] names
/// `<file>_router_bridge.py` with `python=true`).
pub fn router_bridge_py(file: &ir::File) -> Result<String, Error> {
    python::generate(file)
}

/// A decoded plugin request.
#[derive(Clone, Debug)]
pub struct Request {
    /// The files protoc/buf asks to generate.
    pub files_to_generate: Vec<String>,
    /// The parsed plugin parameter.
    pub params: Params,
    /// All files of the request, with their option extensions intact.
    pub pool: DescriptorPool,
}

/// Decodes an encoded `CodeGeneratorRequest`.
///
/// The descriptor pool is built from the raw `proto_file` entries rather than
/// from `prost_types` (which drops extensions), so the `router.v1` options
/// remain readable.
pub fn decode_request(request: &[u8]) -> Result<Request, Error> {
    let decoded = CodeGeneratorRequest::decode(request)
        .map_err(|e| Error::MalformedRequest(e.to_string()))?;
    let params = decoded.parameter.as_deref().unwrap_or_default().parse()?;
    let fds = proto_files_as_descriptor_set(request)?;
    let pool =
        DescriptorPool::decode(fds.as_slice()).map_err(|e| Error::Descriptors(e.to_string()))?;
    Ok(Request {
        files_to_generate: decoded.file_to_generate,
        params,
        pool,
    })
}

/// Re-wraps every `proto_file` (field 15) of a `CodeGeneratorRequest` as a
/// `file` (field 1) of a `FileDescriptorSet`, byte for byte.
fn proto_files_as_descriptor_set(request: &[u8]) -> Result<Vec<u8>, Error> {
    let malformed = |e: prost::DecodeError| Error::MalformedRequest(e.to_string());
    let mut buf = request;
    let mut out = Vec::with_capacity(request.len());
    while buf.has_remaining() {
        let (field, wire_type) = decode_key(&mut buf).map_err(malformed)?;
        if field == 15 && wire_type == WireType::LengthDelimited {
            let len = decode_varint(&mut buf).map_err(malformed)?;
            let len = usize::try_from(len)
                .ok()
                .filter(|len| *len <= buf.remaining())
                .ok_or_else(|| Error::MalformedRequest("truncated proto_file".into()))?;
            encode_key(1, WireType::LengthDelimited, &mut out);
            encode_varint(len as u64, &mut out);
            out.extend_from_slice(&buf[..len]);
            buf.advance(len);
        } else {
            skip_field(wire_type, field, &mut buf, DecodeContext::default()).map_err(malformed)?;
        }
    }
    Ok(out)
}

/// Encodes a `CodeGeneratorRequest` whose `proto_file`s are the files of
/// `pool` (imports first, extensions intact), as protoc would send it.
///
/// Used by tests and tools that drive [`execute`] without protoc.
pub fn encode_request(
    pool: &DescriptorPool,
    files_to_generate: &[String],
    parameter: Option<&str>,
) -> Vec<u8> {
    let head = CodeGeneratorRequest {
        file_to_generate: files_to_generate.to_vec(),
        parameter: parameter.map(str::to_owned),
        proto_file: Vec::new(),
        compiler_version: None,
    };
    let mut out = head.encode_to_vec();
    for file in pool.files() {
        let bytes = file.encode_to_vec();
        encode_key(15, WireType::LengthDelimited, &mut out);
        encode_varint(bytes.len() as u64, &mut out);
        out.extend_from_slice(&bytes);
    }
    out
}

/// Runs the plugin on an encoded `CodeGeneratorRequest` and returns the
/// encoded `CodeGeneratorResponse`, or an error when the request itself
/// cannot be decoded (the binary then exits non-zero).
///
/// Generation errors (bad options, collisions, bad parameters) are returned
/// inside the response's `error` field, as protoc expects.
pub fn try_execute(request: &[u8]) -> Result<Vec<u8>, Error> {
    let outcome = std::panic::catch_unwind(|| -> Result<CodeGeneratorResponse, Error> {
        let request = match decode_request(request) {
            Ok(request) => request,
            Err(e @ (Error::MalformedRequest(_) | Error::Descriptors(_))) => return Err(e),
            Err(e) => return Ok(error_response(&e)),
        };
        Ok(
            match generate(&request.pool, &request.files_to_generate, &request.params) {
                Ok(files) => CodeGeneratorResponse {
                    supported_features: Some(supported_features()),
                    file: files
                        .into_iter()
                        .map(|f| code_generator_response::File {
                            name: Some(f.name),
                            content: Some(f.content),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                },
                Err(e) => error_response(&e),
            },
        )
    });
    match outcome {
        Ok(Ok(response)) => Ok(response.encode_to_vec()),
        Ok(Err(e)) => Err(e),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Ok(error_response(&Error::Internal(message)).encode_to_vec())
        }
    }
}

/// Runs the plugin on an encoded `CodeGeneratorRequest` and returns the
/// encoded `CodeGeneratorResponse`; every failure, including an undecodable
/// request, lands in the response's `error` field. Never panics.
pub fn execute(request: &[u8]) -> Vec<u8> {
    try_execute(request).unwrap_or_else(|e| error_response(&e).encode_to_vec())
}

fn supported_features() -> u64 {
    code_generator_response::Feature::Proto3Optional as u64
}

fn error_response(error: &Error) -> CodeGeneratorResponse {
    CodeGeneratorResponse {
        error: Some(error.to_string()),
        supported_features: Some(supported_features()),
        ..Default::default()
    }
}
