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
    #[error("{file}: service `{service}`: method `{method}`: {origin} {tag} is invalid: {reason}")]
    InvalidTag {
        /// The file defining the service.
        file: String,
        /// The service's full name.
        service: String,
        /// The method's name.
        method: String,
        /// Where the tag came from: `option (router.v1.tag) =` or `default tag`.
        origin: String,
        /// The tag.
        tag: u64,
        /// Why it is refused.
        reason: &'static str,
    },

    /// Two methods of one service use the same tag.
    #[error(
        "{file}: service `{service}`: methods `{first}` and `{second}` both use tag {tag}; \
         pin distinct tags with option (router.v1.tag)"
    )]
    DuplicateTag {
        /// The file defining the service.
        file: String,
        /// The service's full name.
        service: String,
        /// The earlier method.
        first: String,
        /// The later method.
        second: String,
        /// The shared tag.
        tag: u32,
    },

    /// A method's `(router.v1.route_key)` does not name a usable field.
    #[error(
        "{file}: service `{service}`: method `{method}`: option (router.v1.route_key) = \"{path}\": {reason}"
    )]
    RouteKey {
        /// The file defining the service.
        file: String,
        /// The service's full name.
        service: String,
        /// The method's name.
        method: String,
        /// The option's value.
        path: String,
        /// Why it is refused.
        reason: String,
    },

    /// A router option has a value of the wrong type or an unknown value.
    #[error("{file}: service `{service}`{method}: option ({option}): {reason}")]
    InvalidOption {
        /// The file defining the service.
        file: String,
        /// The service's full name.
        service: String,
        /// `: method `X`` or empty for a service option.
        method: String,
        /// The option's full name, for example `router.v1.default_strategy`.
        option: String,
        /// Why it is refused.
        reason: String,
    },

    /// Two methods of one service map to the same oneof arm name.
    #[error(
        "{file}: service `{service}`: methods `{first}` and `{second}` collide as oneof arm `{arm}` \
         in the generated messages; rename one of them"
    )]
    MethodNameCollision {
        /// The file defining the service.
        file: String,
        /// The service's full name.
        service: String,
        /// The earlier method (or `call_id`, the envelope field).
        first: String,
        /// The later method.
        second: String,
        /// The colliding arm name.
        arm: String,
    },

    /// A name the generator would emit is already taken.
    #[error("{file}: service `{service}`: generated {kind} `{name}` collides with {existing}")]
    NameCollision {
        /// The file defining the service.
        file: String,
        /// The service's full name.
        service: String,
        /// What is generated: `message`, `service`, `Rust item`.
        kind: &'static str,
        /// The generated name.
        name: String,
        /// What it collides with.
        existing: String,
    },

    /// Generated Rust code did not parse (a name the generator cannot express).
    #[error("{file}: service `{service}`: cannot generate Rust code: {reason}")]
    RustCodegen {
        /// The file defining the service.
        file: String,
        /// The service's full name.
        service: String,
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
