//! Compiles every generated router proto again (protox) before the generator
//! answers, so it never emits a proto that does not compile.
//!
//! The model's checks ([`crate::ir`]) should already rule out every failure;
//! this is the last line: a failure becomes [`Error::GeneratedProto`] naming
//! the service and, when the compiler points into a method's arm, the method.

use miette::Diagnostic;
use prost::Message;
use prost_reflect::DescriptorPool;
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use crate::error::Site;
use crate::router_proto::Origin;
use crate::{EmbeddedFileResolver, Error, ir};

/// Serves the files of a descriptor pool (the plugin request's files, whose
/// sources the plugin does not have) by name, options intact.
struct PoolResolver {
    pool: DescriptorPool,
}

impl FileResolver for PoolResolver {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        let file = self
            .pool
            .get_file_by_name(name)
            .ok_or_else(|| protox::Error::file_not_found(name))?;
        File::decode_file_descriptor_proto(file.file_descriptor_proto().encode_to_vec().as_slice())
            .map_err(protox::Error::new)
    }
}

/// Compiles `text`, the router proto generated for `file` (with `origins`
/// from [`crate::router_proto::generate_with_origins`]), against `pool`.
pub fn check(
    pool: &DescriptorPool,
    file: &ir::File,
    text: &str,
    origins: &[Origin],
) -> Result<(), Error> {
    let name = file.router_proto_name();
    let mut chain = ChainFileResolver::new();
    chain.add(EmbeddedFileResolver::new().with_file(name.clone(), text.to_owned()));
    chain.add(PoolResolver { pool: pool.clone() });
    chain.add(GoogleFileResolver::new());
    // The generated file must win over a same-named file of the request.
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    compiler.include_imports(true).include_source_info(true);
    let Err(error) = compiler.open_file(&name) else {
        return Ok(());
    };
    // The compiler's labels point into the generated text ("first defined
    // here", "defined again here"); the last one inside a method's arms names
    // the method that broke it, else the service around any of them.
    let offsets: Vec<usize> = (error.file() == Some(name.as_str()))
        .then(|| error.labels())
        .flatten()
        .map(|labels| labels.map(|label| label.offset()).collect())
        .unwrap_or_default();
    let origin = offsets
        .iter()
        .rev()
        .find_map(|at| {
            origins
                .iter()
                .find(|o| o.method.is_some() && o.range.contains(at))
        })
        .or_else(|| {
            offsets
                .iter()
                .find_map(|at| origins.iter().find(|o| o.range.contains(at)))
        });
    let service = origin
        .and_then(|o| file.services.get(o.service))
        .or_else(|| file.services.first());
    let site = match (service, origin.and_then(|o| o.method)) {
        (Some(service), Some(method)) => Site::method(
            &service.file,
            &service.full_name,
            service.methods.get(method).map_or("?", |m| m.name.as_str()),
        ),
        (Some(service), None) => Site::service(&service.file, &service.full_name),
        (None, _) => Site::service(&file.name, "?"),
    };
    Err(Error::GeneratedProto {
        site,
        generated: name,
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile_pool;

    fn model(source: &str) -> (DescriptorPool, Vec<ir::File>) {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(dir.path().join("t.proto"), source).expect("write");
        let (pool, names) =
            compile_pool(&[dir.path()], &[dir.path().join("t.proto")]).expect("compiles");
        let files = ir::build(&pool, &names, false).expect("valid");
        (pool, files)
    }

    const SOURCE: &str = "syntax = \"proto3\";\npackage t;\nmessage M {}\n\
                          service S {\n  rpc A(M) returns (M);\n  rpc B(M) returns (M);\n}\n";

    #[test]
    fn a_generated_proto_that_compiles_passes() {
        let (pool, files) = model(SOURCE);
        let (text, origins) = crate::router_proto::generate_with_origins(&files[0]);
        check(&pool, &files[0], &text, &origins).expect("compiles");
    }

    #[test]
    fn a_broken_arm_is_reported_with_its_service_and_method() {
        let (pool, files) = model(SOURCE);
        let (text, origins) = crate::router_proto::generate_with_origins(&files[0]);
        // Break the second method's arm in `SCall` as an emitter bug would.
        let broken = text.replacen("    .t.M b = 11;", "    .t.M call_id = 11;", 1);
        assert_ne!(broken, text, "the arm line is where the test expects it");
        let error = check(&pool, &files[0], &broken, &origins)
            .expect_err("a duplicate field does not compile")
            .to_string();
        assert!(
            error.starts_with("t.proto: service `t.S`: method `B`: generated t_router.proto"),
            "{error}"
        );
        assert!(error.contains("call_id"), "{error}");
    }
}
