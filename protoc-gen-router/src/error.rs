//! The errors of the generator, the plugin and the build.rs [`Builder`](crate::Builder).

use std::path::PathBuf;

/// Everything that can go wrong while generating routers.
///
/// Every variant's message names the file, and where it applies the service,
/// method and option involved, so a user can fix the proto without reading
/// generator code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The plugin input is not a valid `CodeGeneratorRequest`.
    #[error("malformed CodeGeneratorRequest: {0}")]
    MalformedRequest(String),

    /// The request's files do not form a valid descriptor set.
    #[error("invalid file descriptors in the request: {0}")]
    Descriptors(String),

    /// A plugin parameter is unknown or has a bad value.
    #[error("plugin parameter `{parameter}`: {reason}")]
    Parameter {
        /// The offending `key=value` item (or key).
        parameter: String,
        /// Why it was refused.
        reason: String,
    },

    /// A file to generate is not among the request's files.
    #[error("{file}: file to generate is missing from the descriptors")]
    MissingFile {
        /// The file name.
        file: String,
    },

    /// A method's `(router.v1.tag)` (or its default tag) is not usable.
    #[error("{site}: {origin} {tag} is invalid: {reason}")]
    InvalidTag {
        /// The file, service and method.
        site: Box<Site>,
        /// Where the tag came from: `option (router.v1.tag) =` or `default tag`.
        origin: &'static str,
        /// The tag.
        tag: u64,
        /// Why it is refused.
        reason: &'static str,
    },

    /// Two methods of one service use the same tag.
    #[error(
        "{site}: methods `{first}` and `{second}` both use tag {tag}; \
         pin distinct tags with option (router.v1.tag)"
    )]
    DuplicateTag {
        /// The file and service.
        site: Box<Site>,
        /// The earlier method.
        first: String,
        /// The later method.
        second: String,
        /// The shared tag.
        tag: u32,
    },

    /// A method's `(router.v1.route_key)` does not name a usable field.
    #[error("{site}: {origin} \"{path}\": {reason}")]
    RouteKey {
        /// The file, service and method.
        site: Box<Site>,
        /// Where the key came from: `option (router.v1.route_key) =` or
        /// `route_key in the router options:`.
        origin: &'static str,
        /// The option's value.
        path: String,
        /// Why it is refused.
        reason: String,
    },

    /// A router option has a value of the wrong type or an unknown value.
    #[error("{site}: option ({option}): {reason}")]
    InvalidOption {
        /// The file, service and (for method options) method.
        site: Box<Site>,
        /// The option's full name, for example `router.v1.default_strategy`.
        option: &'static str,
        /// Why it is refused.
        reason: String,
    },

    /// Two methods of one service map to the same oneof arm name.
    #[error(
        "{site}: methods `{first}` and `{second}` collide as oneof arm `{arm}` \
         in the generated messages; rename one of them"
    )]
    MethodNameCollision {
        /// The file and service.
        site: Box<Site>,
        /// The earlier method (or `call_id`, the envelope field).
        first: String,
        /// The later method.
        second: String,
        /// The colliding arm name.
        arm: String,
    },

    /// A router options file (or the `Builder`'s router options) is
    /// malformed or names a service or method that does not exist.
    #[error("router options {origin}: {reason}")]
    RouterOptions {
        /// The file, or the service the options are for.
        origin: String,
        /// What is wrong.
        reason: String,
    },

    /// A name the generator would emit is already taken.
    #[error("{site}: generated {kind} `{name}` collides with {existing}")]
    NameCollision {
        /// The file and service.
        site: Box<Site>,
        /// What is generated: `message`, `service`, `Rust item`.
        kind: &'static str,
        /// The generated name.
        name: String,
        /// What it collides with.
        existing: String,
    },

    /// A generated router proto did not compile: a bug of the generator that
    /// its own check caught before answering.
    #[error(
        "{site}: generated {generated} does not compile: {reason} \
         (a bug in protoc-gen-router, please report it with the input proto)"
    )]
    GeneratedProto {
        /// The file, service and (when the compiler points at an arm) method.
        site: Box<Site>,
        /// The generated file's name.
        generated: String,
        /// The compiler's complaint.
        reason: String,
    },

    /// Generated Rust code did not parse (a name the generator cannot express).
    #[error("{site}: cannot generate Rust code: {reason}")]
    RustCodegen {
        /// The file and service.
        site: Box<Site>,
        /// The parser's complaint.
        reason: String,
    },

    /// protox failed to compile protos (build.rs path).
    #[error("{context}: {source}")]
    Compile {
        /// What was being compiled.
        context: String,
        /// The compiler error, with file and position.
        #[source]
        source: Box<protox::Error>,
    },

    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// tonic/prost code generation failed (build.rs path).
    #[error("tonic-prost-build: {0}")]
    Tonic(#[source] std::io::Error),

    /// The generator itself failed unexpectedly; this is a bug.
    #[error("internal error in protoc-gen-router (please report): {0}")]
    Internal(String),
}

/// Where in the protos an error was found: displayed as
/// ``file.proto: service `pkg.Service`: method `Method` ``.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// The file defining the service.
    pub file: String,
    /// The service's full name.
    pub service: String,
    /// The method's name, for method-level errors.
    pub method: Option<String>,
}

impl Site {
    /// A service-level site.
    pub fn service(file: &str, service: &str) -> Box<Site> {
        Box::new(Site {
            file: file.to_owned(),
            service: service.to_owned(),
            method: None,
        })
    }

    /// A method-level site.
    pub fn method(file: &str, service: &str, method: &str) -> Box<Site> {
        Box::new(Site {
            file: file.to_owned(),
            service: service.to_owned(),
            method: Some(method.to_owned()),
        })
    }
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: service `{}`", self.file, self.service)?;
        if let Some(method) = &self.method {
            write!(f, ": method `{method}`")?;
        }
        Ok(())
    }
}
