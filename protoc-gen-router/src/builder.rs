//! The build.rs API: compile protos with protox, generate router protos,
//! run tonic-prost-build over everything and append the Rust glue.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost_reflect::DescriptorPool;
use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};

use crate::ir::Strategy;
use crate::{Error, Params, RouterOptions, ir};

/// The import name of the envelope types.
pub const ROUTER_PROTO_NAME: &str = "router/v1/router.proto";
/// The import name of the router options.
pub const OPTIONS_PROTO_NAME: &str = "router/v1/options.proto";
/// The text of `router/v1/router.proto`, embedded in the generator.
pub const ROUTER_PROTO: &str = include_str!("../proto/router/v1/router.proto");
/// The text of `router/v1/options.proto`, embedded in the generator.
pub const OPTIONS_PROTO: &str = include_str!("../proto/router/v1/options.proto");

/// A protox [`FileResolver`] serving in-memory files by import name: always
/// `router/v1/router.proto` and `router/v1/options.proto`, plus any added
/// with [`EmbeddedFileResolver::with_file`].
#[derive(Clone, Debug)]
pub struct EmbeddedFileResolver {
    files: BTreeMap<String, String>,
}

impl Default for EmbeddedFileResolver {
    fn default() -> Self {
        Self::new()
    }
}

impl EmbeddedFileResolver {
    /// A resolver for the two embedded router protos.
    pub fn new() -> Self {
        let mut files = BTreeMap::new();
        files.insert(ROUTER_PROTO_NAME.to_owned(), ROUTER_PROTO.to_owned());
        files.insert(OPTIONS_PROTO_NAME.to_owned(), OPTIONS_PROTO.to_owned());
        EmbeddedFileResolver { files }
    }

    /// Also serves `source` under the import name `name`.
    pub fn with_file(mut self, name: impl Into<String>, source: impl Into<String>) -> Self {
        self.files.insert(name.into(), source.into());
        self
    }

    /// A resolver chain: these files first, then each include directory, then
    /// the well-known types.
    pub fn chain<P: AsRef<Path>>(self, includes: &[P]) -> ChainFileResolver {
        let mut chain = ChainFileResolver::new();
        chain.add(self);
        for include in includes {
            chain.add(IncludeFileResolver::new(include.as_ref().to_owned()));
        }
        chain.add(GoogleFileResolver::new());
        chain
    }
}

impl FileResolver for EmbeddedFileResolver {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.files.get(name) {
            Some(source) => File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// Compiles protos into tonic code plus router glue, from build.rs, without protoc.
///
/// ```no_run
/// // build.rs
/// protoc_gen_router::Builder::new()
///     .include("proto")
///     .compile(&["proto/myservice/v1/myservice.proto"])?;
/// # Ok::<(), protoc_gen_router::Error>(())
/// ```
///
/// Then `tonic::include_proto!("myservice.v1")` brings the messages, the
/// tonic client and server, the router protocol messages and the
/// `GreeterRouter` / `GreeterBridge` glue into one module.
#[derive(Clone, Debug)]
#[must_use]
pub struct Builder {
    includes: Vec<PathBuf>,
    out_dir: Option<PathBuf>,
    router_proto_out: Option<PathBuf>,
    runtime_crate: String,
    emit_rerun_if_changed: bool,
    build_client: bool,
    configure: Vec<Configure>,
    file_descriptor_set_path: Option<PathBuf>,
    router_config_files: Vec<PathBuf>,
    router_options: RouterOptions,
}

/// A user function applied to tonic-prost-build's builder.
#[derive(Clone)]
struct Configure(
    Arc<dyn Fn(tonic_prost_build::Builder) -> tonic_prost_build::Builder + Send + Sync>,
);

impl std::fmt::Debug for Configure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Configure(..)")
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// A builder with no include directories, writing to `OUT_DIR`.
    pub fn new() -> Self {
        Builder {
            includes: Vec::new(),
            out_dir: None,
            router_proto_out: None,
            runtime_crate: crate::DEFAULT_RUNTIME_CRATE.to_owned(),
            emit_rerun_if_changed: true,
            build_client: true,
            configure: Vec::new(),
            file_descriptor_set_path: None,
            router_config_files: Vec::new(),
            router_options: RouterOptions::new(),
        }
    }

    /// Reads router options from a sidecar file (`router.v1.RouterOptionsFile`
    /// in protobuf text format, see `router/v1/options.proto`), so the service
    /// protos need not import `router/v1/options.proto`. Repeatable; later
    /// files and the methods below win over earlier ones, and all of them
    /// over options in the protos.
    pub fn router_config(mut self, path: impl AsRef<Path>) -> Self {
        self.router_config_files.push(path.as_ref().to_owned());
        self
    }

    /// Router options built in code (see [`RouterOptions`]), merged over
    /// the sidecar files.
    pub fn router_options(mut self, options: &RouterOptions) -> Self {
        self.router_options.merge(options);
        self
    }

    /// As `option (router.v1.default_strategy)` on service `service`
    /// (fully qualified: `myservice.v1.Greeter`).
    pub fn default_strategy(mut self, service: &str, strategy: Strategy) -> Self {
        self.router_options.service_mut(service).default_strategy = Some(strategy);
        self
    }

    /// As `option (router.v1.tag)` on `method` of `service`.
    pub fn tag(mut self, service: &str, method: &str, tag: u32) -> Self {
        self.router_options.method_mut(service, method).tag = Some(tag);
        self
    }

    /// As `option (router.v1.route_key)` on `method` of `service`: the
    /// request field path (`user.id`) hashed by consistent hashing.
    pub fn route_key(mut self, service: &str, method: &str, path: &str) -> Self {
        self.router_options.method_mut(service, method).route_key = Some(path.to_owned());
        self
    }

    /// As `option (router.v1.idempotent)` on `method` of `service`.
    pub fn idempotent(mut self, service: &str, method: &str, idempotent: bool) -> Self {
        self.router_options.method_mut(service, method).idempotent = Some(idempotent);
        self
    }

    /// Passes settings to tonic-prost-build's builder (and through it to
    /// prost-build), for everything this builder does not set itself:
    /// `bytes`, `btree_map`, `type_attribute`, `field_attribute`, `boxed`,
    /// `extern_path`, `compile_well_known_types`, `build_server`,
    /// `server_attribute` ... Repeatable; applied in order.
    ///
    /// ```no_run
    /// // build.rs
    /// protoc_gen_router::Builder::new()
    ///     .include("proto")
    ///     .configure(|b| {
    ///         b.bytes(".")
    ///             .type_attribute(".myservice.v1.HelloRequest", "#[derive(Eq, Hash)]")
    ///     })
    ///     .compile(&["proto/myservice/v1/myservice.proto"])?;
    /// # Ok::<(), protoc_gen_router::Error>(())
    /// ```
    ///
    /// The router forwards payloads as encoded bytes, so prost settings of
    /// the user's messages never change what is routed. Four settings stay
    /// this builder's: the output directory ([`Builder::out_dir`]), the
    /// extern path of `.router.v1` (the runtime crate's types),
    /// `emit_rerun_if_changed` ([`Builder::emit_rerun_if_changed`]) and the
    /// file descriptor set ([`Builder::file_descriptor_set_path`]); they are
    /// applied after this function. Keep `build_server` on: the bridge wraps
    /// tonic's server.
    pub fn configure(
        mut self,
        f: impl Fn(tonic_prost_build::Builder) -> tonic_prost_build::Builder + Send + Sync + 'static,
    ) -> Self {
        self.configure.push(Configure(Arc::new(f)));
        self
    }

    /// Also writes the encoded `google.protobuf.FileDescriptorSet` of the
    /// compiled protos, their imports and the generated router protos to
    /// `path` (for gRPC server reflection, `tonic_reflection`'s
    /// `register_encoded_file_descriptor_set`).
    pub fn file_descriptor_set_path(mut self, path: impl AsRef<Path>) -> Self {
        self.file_descriptor_set_path = Some(path.as_ref().to_owned());
        self
    }

    /// Adds an include directory (repeatable). `router/v1/*.proto` and the
    /// well-known types are always resolvable.
    pub fn include(mut self, dir: impl AsRef<Path>) -> Self {
        self.includes.push(dir.as_ref().to_owned());
        self
    }

    /// Writes the Rust code to `dir` instead of `OUT_DIR`.
    pub fn out_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.out_dir = Some(dir.as_ref().to_owned());
        self
    }

    /// Also writes the generated `*_router.proto` files under `dir`.
    pub fn router_proto_out(mut self, dir: impl AsRef<Path>) -> Self {
        self.router_proto_out = Some(dir.as_ref().to_owned());
        self
    }

    /// The Rust path of the runtime crate (default `::router_runtime`).
    pub fn runtime_crate(mut self, path: impl Into<String>) -> Self {
        self.runtime_crate = path.into();
        self
    }

    /// Whether to print `cargo:rerun-if-changed` lines (default true).
    pub fn emit_rerun_if_changed(mut self, enable: bool) -> Self {
        self.emit_rerun_if_changed = enable;
        self
    }

    /// Whether tonic also generates clients (default true).
    pub fn build_client(mut self, enable: bool) -> Self {
        self.build_client = enable;
        self
    }

    fn params(&self) -> Result<Params, Error> {
        format!("rust=true,runtime_crate={}", self.runtime_crate).parse()
    }

    fn compile_error(context: String) -> impl FnOnce(protox::Error) -> Error {
        move |source| Error::Compile {
            context,
            source: Box::new(source),
        }
    }

    /// Compiles `protos` (paths under an include directory), generates the
    /// router protos, runs tonic-prost-build over originals and router protos,
    /// and appends each service's Rust glue to its package's `<package>.rs`.
    pub fn compile<P: AsRef<Path>>(self, protos: &[P]) -> Result<(), Error> {
        let params = self.params()?;
        if self.emit_rerun_if_changed {
            for path in protos
                .iter()
                .map(AsRef::as_ref)
                .chain(self.includes.iter().map(PathBuf::as_path))
                .chain(self.router_config_files.iter().map(PathBuf::as_path))
            {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }

        // 1. The user's files.
        let mut compiler =
            protox::Compiler::with_file_resolver(EmbeddedFileResolver::new().chain(&self.includes));
        compiler.include_source_info(true).include_imports(true);
        for proto in protos {
            compiler
                .open_file(proto)
                .map_err(Self::compile_error(format!(
                    "compiling {}",
                    proto.as_ref().display()
                )))?;
        }
        let names: Vec<String> = compiler
            .files()
            .filter(|f| !f.is_import())
            .map(|f| f.name().to_owned())
            .collect();
        let pool = compiler.descriptor_pool();

        // 2. The model and the router protos.
        let mut options = RouterOptions::new();
        for path in &self.router_config_files {
            options.merge(&RouterOptions::load(path)?);
        }
        options.merge(&self.router_options);
        let files = ir::build_with(&pool, &names, true, &options)?;
        let mut resolver = EmbeddedFileResolver::new();
        let mut generated = Vec::new();
        for file in &files {
            let name = file.router_proto_name();
            let text = crate::checked_router_proto(&pool, file)?;
            if let Some(dir) = &self.router_proto_out {
                write(&dir.join(&name), &text)?;
            }
            resolver = resolver.with_file(name.clone(), text);
            generated.push(name);
        }

        // 3. Originals and router protos together, through tonic.
        let mut compiler = protox::Compiler::with_file_resolver(resolver.chain(&self.includes));
        compiler.include_imports(true);
        for name in names.iter().chain(&generated) {
            compiler
                .open_file(name)
                .map_err(Self::compile_error(format!("compiling {name}")))?;
        }
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or_else(|| {
                    Error::Internal(
                        "OUT_DIR is not set; call from build.rs or set Builder::out_dir".into(),
                    )
                })?,
        };
        if let Some(path) = &self.file_descriptor_set_path {
            let bytes = compiler.encode_file_descriptor_set();
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                    path: parent.to_owned(),
                    source,
                })?;
            }
            std::fs::write(path, bytes).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        }
        let mut tonic = tonic_prost_build::configure().build_client(self.build_client);
        for configure in &self.configure {
            tonic = (configure.0)(tonic);
        }
        tonic
            .emit_rerun_if_changed(false)
            .out_dir(&out_dir)
            .extern_path(".router.v1", format!("{}::pb", self.runtime_crate))
            .compile_fds(compiler.file_descriptor_set())
            .map_err(Error::Tonic)?;

        // 4. The glue, appended to each package's module file.
        let mut by_package: BTreeMap<String, String> = BTreeMap::new();
        for file in &files {
            let glue = crate::router_rs(file, &params)?;
            by_package
                .entry(file.package.clone())
                .or_default()
                .push_str(&glue);
        }
        for (package, glue) in by_package {
            let path = out_dir.join(if package.is_empty() {
                "_.rs".to_owned()
            } else {
                format!("{package}.rs")
            });
            let mut text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            if let Some(at) = text.find(GLUE_MARKER) {
                text.truncate(at);
            }
            text.push_str(&glue);
            write(&path, &text)?;
        }
        Ok(())
    }
}

/// The start of every glue file; the builder cuts an existing module file at
/// it before appending, so repeated builds never duplicate the glue.
const GLUE_MARKER: &str = "// @generated by protoc-gen-router from ";

fn write(path: &Path, text: &str) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io {
            path: parent.to_owned(),
            source,
        })?;
    }
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// Compiles `protos` with protox (embedded router protos, `includes`, the
/// well-known types) and returns the pool and the names of the files asked
/// for, ready for [`crate::generate`].
pub fn compile_pool(
    includes: &[impl AsRef<Path>],
    protos: &[impl AsRef<Path>],
) -> Result<(DescriptorPool, Vec<String>), Error> {
    let mut compiler =
        protox::Compiler::with_file_resolver(EmbeddedFileResolver::new().chain(includes));
    compiler.include_source_info(true).include_imports(true);
    for proto in protos {
        compiler
            .open_file(proto)
            .map_err(Builder::compile_error(format!(
                "compiling {}",
                proto.as_ref().display()
            )))?;
    }
    let names = compiler
        .files()
        .filter(|f| !f.is_import())
        .map(|f| f.name().to_owned())
        .collect();
    Ok((compiler.descriptor_pool(), names))
}
