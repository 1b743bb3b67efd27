//! Compiled descriptor sets (`protoc -o FILE`, `buf build -o FILE.binpb`)
//! read for `grpc-router check-config --descriptor-set`: which methods each
//! service has, so a setting for a method a service lacks is a warning
//! before the router ever runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use router_runtime::codegen::prost::Message as _;

/// Why a descriptor set could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorSetError {
    /// The file could not be read.
    #[error("--descriptor-set {path}: cannot read it: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not an encoded `FileDescriptorSet`.
    #[error(
        "--descriptor-set {path}: not a FileDescriptorSet ({source}); write one with \
         `protoc -o FILE` or `buf build -o FILE.binpb`"
    )]
    Decode {
        /// The file.
        path: PathBuf,
        /// Why.
        source: router_runtime::codegen::prost::DecodeError,
    },
}

/// The services of the descriptor set in `path`, by full name
/// (`pkg.Service`), each with its method names.
pub fn read_methods(path: &Path) -> Result<BTreeMap<String, Vec<String>>, DescriptorSetError> {
    let bytes = std::fs::read(path).map_err(|source| DescriptorSetError::Read {
        path: path.to_owned(),
        source,
    })?;
    methods(&bytes).map_err(|source| DescriptorSetError::Decode {
        path: path.to_owned(),
        source,
    })
}

/// The services of an encoded `FileDescriptorSet`, with their methods.
pub fn methods(
    encoded: &[u8],
) -> Result<BTreeMap<String, Vec<String>>, router_runtime::codegen::prost::DecodeError> {
    let set = prost_types::FileDescriptorSet::decode(encoded)?;
    let mut services = BTreeMap::new();
    for file in &set.file {
        let package = file.package();
        for service in &file.service {
            let name = if package.is_empty() {
                service.name().to_owned()
            } else {
                format!("{package}.{}", service.name())
            };
            let methods = service.method.iter().map(|m| m.name().to_owned()).collect();
            services.insert(name, methods);
        }
    }
    Ok(services)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_gives_each_service_with_its_methods() {
        let set = prost_types::FileDescriptorSet {
            file: vec![prost_types::FileDescriptorProto {
                package: Some("pkg.v1".to_owned()),
                service: vec![prost_types::ServiceDescriptorProto {
                    name: Some("Svc".to_owned()),
                    method: vec![prost_types::MethodDescriptorProto {
                        name: Some("Get".to_owned()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let services = methods(&set.encode_to_vec()).expect("decodes");
        assert_eq!(services["pkg.v1.Svc"], ["Get"]);
    }

    #[test]
    fn a_file_that_is_not_a_set_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("set.binpb");
        std::fs::write(&path, b"\xff\xff\xff").expect("write");
        let e = read_methods(&path).expect_err("garbage").to_string();
        assert!(e.starts_with("--descriptor-set "), "{e}");
        assert!(e.contains("not a FileDescriptorSet"), "{e}");
    }
}
