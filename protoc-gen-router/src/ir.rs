//! The intermediate model: descriptors in, [`File`]s of [`Service`]s out.
//!
//! Every check the generator makes happens here, so the emitters
//! ([`crate::router_proto`], [`crate::router_rs`], [`crate::bridge_rs`]) only
//! format a model that is known to be valid.

use std::collections::{BTreeMap, HashMap};

use prost_reflect::{
    DescriptorPool, DynamicMessage, ExtensionDescriptor, FileDescriptor, Kind, MessageDescriptor,
    MethodDescriptor as ProtoMethod, ServiceDescriptor as ProtoService, Value,
};

use crate::error::Site;
use crate::sidecar::{MethodOptions, RouterOptions, ServiceOptions};
use crate::{Error, ident};

/// Full name of the method option pinning a method's oneof tag.
pub const TAG_OPTION: &str = "router.v1.tag";
/// Full name of the method option naming the routing key field path.
pub const ROUTE_KEY_OPTION: &str = "router.v1.route_key";
/// Full name of the method option marking a method idempotent.
pub const IDEMPOTENT_OPTION: &str = "router.v1.idempotent";
/// Full name of the service option choosing the default strategy.
pub const DEFAULT_STRATEGY_OPTION: &str = "router.v1.default_strategy";

/// The smallest tag a method may use; 1 to 9 are the envelope's fields.
pub const MIN_TAG: u32 = 10;
/// The largest protobuf field number.
pub const MAX_TAG: u32 = 536_870_911;

/// One input file with at least one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    /// The file's name, for example `myservice/v1/myservice.proto`.
    pub name: String,
    /// The file's package, possibly empty.
    pub package: String,
    /// The services, in proto order.
    pub services: Vec<Service>,
}

impl File {
    /// The name of the router proto generated for this file
    /// (`myservice/v1/myservice_router.proto`).
    pub fn router_proto_name(&self) -> String {
        format!("{}_router.proto", strip_proto(&self.name))
    }

    /// The name of the Rust glue generated for this file by the plugin
    /// (`myservice/v1/myservice_router.rs`).
    pub fn router_rs_name(&self) -> String {
        format!("{}_router.rs", strip_proto(&self.name))
    }
}

fn strip_proto(name: &str) -> &str {
    name.strip_suffix(".proto").unwrap_or(name)
}

/// A routed service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// The proto package, possibly empty.
    pub package: String,
    /// The service's proto name, for example `Greeter`.
    pub name: String,
    /// The fully qualified name, for example `myservice.v1.Greeter`.
    pub full_name: String,
    /// The leading comment lines of the service, without `//`.
    pub comments: Vec<String>,
    /// The file defining the service.
    pub file: String,
    /// The methods, in proto order.
    pub methods: Vec<Method>,
    /// The `(router.v1.default_strategy)` option.
    pub default_strategy: Strategy,
    /// The encoded `google.protobuf.FileDescriptorSet` of the service's file
    /// and all its imports, without source info and custom options, for
    /// gRPC server reflection on routers that learn the service.
    pub file_descriptor_set: Vec<u8>,
}

impl Service {
    /// A name derived from the service name, qualified with the package when
    /// there is one (`myservice.v1.GreeterRouter`).
    pub fn qualified(&self, suffix: &str) -> String {
        if self.package.is_empty() {
            format!("{}{suffix}", self.name)
        } else {
            format!("{}.{}{suffix}", self.package, self.name)
        }
    }

    /// The generated proto message and service names: `<S>Call`, `<S>Reply`,
    /// `<S>RouterFrame`, `<S>BridgeFrame` and the service `<S>Router`.
    pub fn generated_proto_names(&self) -> [(&'static str, String); 5] {
        let s = &self.name;
        [
            ("message", format!("{s}Call")),
            ("message", format!("{s}Reply")),
            ("message", format!("{s}RouterFrame")),
            ("message", format!("{s}BridgeFrame")),
            ("service", format!("{s}Router")),
        ]
    }

    /// The Rust items generated for the service: `<S>Spec`, `<S>Router`,
    /// `<S>Bridge` and `<S>_DESCRIPTOR`.
    pub fn generated_rust_names(&self) -> [String; 4] {
        let camel = ident::upper_camel(&self.name);
        [
            format!("{}_DESCRIPTOR", ident::shouty_snake(&self.name)),
            format!("{camel}Spec"),
            format!("{camel}Router"),
            format!("{camel}Bridge"),
        ]
    }
}

/// How a router picks an instance (`router.v1.Strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Each call to the next instance in turn.
    RoundRobin,
    /// Two instances at random, the less loaded one (also when unset).
    #[default]
    PowerOfTwoChoices,
    /// At random in proportion to weights.
    Weighted,
    /// Rendezvous hashing of the routing key.
    ConsistentHash,
}

impl Strategy {
    /// The strategy of a `router.v1.Strategy` enum number (0, unset, is the
    /// default), or `None` for an unknown number.
    pub fn from_number(number: i32) -> Option<Strategy> {
        match number {
            0 | 2 => Some(Strategy::PowerOfTwoChoices),
            1 => Some(Strategy::RoundRobin),
            3 => Some(Strategy::Weighted),
            4 => Some(Strategy::ConsistentHash),
            _ => None,
        }
    }
}

/// The streaming shape of a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodKind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStreaming,
    /// A stream of requests, one response.
    ClientStreaming,
    /// Streams both ways.
    BidiStreaming,
}

impl MethodKind {
    /// A lowercase description, for comments.
    pub fn describe(self) -> &'static str {
        match self {
            MethodKind::Unary => "unary",
            MethodKind::ServerStreaming => "server streaming",
            MethodKind::ClientStreaming => "client streaming",
            MethodKind::BidiStreaming => "bidirectional streaming",
        }
    }
}

/// One method of a routed service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Method {
    /// The proto name, for example `SayHello`.
    pub name: String,
    /// The oneof arm name, for example `say_hello`: the method's snake_case
    /// name, with an `_` appended when it would be `method`, the name of the
    /// oneof itself (a method named `Method` gets the arm `method_`, whose
    /// prost variant is still `Method`).
    pub snake_name: String,
    /// The request type, fully qualified with a leading dot.
    pub input_type: String,
    /// The response type, fully qualified with a leading dot.
    pub output_type: String,
    /// The file defining the request type.
    pub input_file: String,
    /// The file defining the response type.
    pub output_file: String,
    /// The streaming shape.
    pub kind: MethodKind,
    /// The oneof tag: pinned by `(router.v1.tag)`, else 10 + the method's index.
    pub tag: u32,
    /// The resolved `(router.v1.route_key)`.
    pub route_key: Option<RouteKey>,
    /// The `(router.v1.idempotent)` option.
    pub idempotent: bool,
    /// The leading comment lines of the method, without `//`.
    pub comments: Vec<String>,
}

/// The name of the oneof holding the arms in `<S>Call` and `<S>Reply`.
pub const ONEOF_NAME: &str = "method";

/// The oneof arm of method `name`: its snake_case form, renamed (an `_`
/// appended) when that is [`ONEOF_NAME`], because a field may not share its
/// message's scope with the oneof's name.
pub fn arm_name(name: &str) -> String {
    let snake = ident::proto_snake(name);
    if snake == ONEOF_NAME {
        format!("{snake}_")
    } else {
        snake
    }
}

/// A routing key field path, resolved against the request message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteKey {
    /// The path as written in the option, for example `user.id`.
    pub path: String,
    /// The field numbers along the path, outermost first.
    pub field_numbers: Vec<u32>,
}

/// The router option extensions found in a pool (absent when
/// `router/v1/options.proto` is not part of it).
struct Extensions {
    tag: Option<ExtensionDescriptor>,
    route_key: Option<ExtensionDescriptor>,
    idempotent: Option<ExtensionDescriptor>,
    default_strategy: Option<ExtensionDescriptor>,
}

impl Extensions {
    fn new(pool: &DescriptorPool) -> Self {
        Extensions {
            tag: pool.get_extension_by_name(TAG_OPTION),
            route_key: pool.get_extension_by_name(ROUTE_KEY_OPTION),
            idempotent: pool.get_extension_by_name(IDEMPOTENT_OPTION),
            default_strategy: pool.get_extension_by_name(DEFAULT_STRATEGY_OPTION),
        }
    }
}

fn get_ext(options: &DynamicMessage, ext: Option<&ExtensionDescriptor>) -> Option<Value> {
    let ext = ext?;
    options
        .has_extension(ext)
        .then(|| options.get_extension(ext).into_owned())
}

/// Builds and validates the model of every service in `files_to_generate`.
///
/// Files without services yield no [`File`]. With `rust`, the names of the
/// generated Rust items are checked for collisions too, across all files of
/// each package.
pub fn build(
    pool: &DescriptorPool,
    files_to_generate: &[String],
    rust: bool,
) -> Result<Vec<File>, Error> {
    build_with(pool, files_to_generate, rust, &RouterOptions::new())
}

/// [`build`], with router options from outside the protos (a sidecar file,
/// `Builder` methods) that win over the `(router.v1.*)` options in them.
pub fn build_with(
    pool: &DescriptorPool,
    files_to_generate: &[String],
    rust: bool,
    router_options: &RouterOptions,
) -> Result<Vec<File>, Error> {
    router_options.check(pool, files_to_generate)?;
    let extensions = Extensions::new(pool);
    let mut out = Vec::new();
    for name in files_to_generate {
        let file = pool
            .get_file_by_name(name)
            .ok_or_else(|| Error::MissingFile { file: name.clone() })?;
        let comments = Comments::new(&file);
        let services = file
            .services()
            .map(|s| {
                build_service(
                    &s,
                    &extensions,
                    router_options.service(s.full_name()),
                    &comments,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        if services.is_empty() {
            continue;
        }
        check_generated_names(pool, &services)?;
        out.push(File {
            name: file.name().to_owned(),
            package: file.package_name().to_owned(),
            services,
        });
    }
    if rust {
        check_rust_names(pool, &out)?;
    }
    Ok(out)
}

/// Leading comments of a file's elements, by source path.
struct Comments {
    by_path: HashMap<Vec<i32>, Vec<String>>,
}

impl Comments {
    fn new(file: &FileDescriptor) -> Self {
        let mut by_path = HashMap::new();
        if let Some(info) = &file.file_descriptor_proto().source_code_info {
            for location in &info.location {
                if let Some(text) = &location.leading_comments {
                    by_path
                        .entry(location.path.clone())
                        .or_insert_with(|| comment_lines(text));
                }
            }
        }
        Comments { by_path }
    }

    fn get(&self, path: &[i32]) -> Vec<String> {
        self.by_path.get(path).cloned().unwrap_or_default()
    }
}

/// Splits a leading comment into lines, without trailing whitespace and
/// without leading or trailing blank lines.
fn comment_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| l.trim_end().replace(['\r', '\u{0}'], ""))
        .collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    let first = lines
        .iter()
        .position(|l| !l.trim().is_empty())
        .unwrap_or(lines.len());
    lines.drain(..first);
    lines
}

fn build_service(
    service: &ProtoService,
    extensions: &Extensions,
    sidecar: Option<&ServiceOptions>,
    comments: &Comments,
) -> Result<Service, Error> {
    let file = service.parent_file().name().to_owned();
    let full_name = service.full_name().to_owned();
    let from_proto = get_ext(&service.options(), extensions.default_strategy.as_ref());
    let default_strategy = match (sidecar.and_then(|s| s.default_strategy), from_proto) {
        (Some(strategy), _) => strategy,
        (None, None) => Strategy::default(),
        (None, Some(Value::EnumNumber(n))) if Strategy::from_number(n).is_some() => {
            Strategy::from_number(n).unwrap_or_default()
        }
        (None, Some(other)) => {
            return Err(Error::InvalidOption {
                site: Site::service(&file, &full_name),
                option: DEFAULT_STRATEGY_OPTION,
                reason: format!("unknown strategy {other:?}"),
            });
        }
    };

    let mut methods: Vec<Method> = Vec::new();
    for (index, method) in service.methods().enumerate() {
        let sidecar = sidecar.and_then(|s| s.methods.get(method.name()));
        let m = build_method(service, &method, index, extensions, sidecar, comments)?;
        if let Some(prev) = methods.iter().find(|p| p.tag == m.tag) {
            return Err(Error::DuplicateTag {
                site: Site::service(&file, &full_name),
                first: prev.name.clone(),
                second: m.name,
                tag: m.tag,
            });
        }
        let squash = |s: &str| s.replace('_', "").to_ascii_lowercase();
        let collides_with = if squash(&m.snake_name) == "callid" {
            Some("call_id (the envelope field)".to_owned())
        } else {
            methods
                .iter()
                .find(|p| squash(&p.snake_name) == squash(&m.snake_name))
                .map(|p| p.name.clone())
        };
        if let Some(first) = collides_with {
            return Err(Error::MethodNameCollision {
                site: Site::service(&file, &full_name),
                first,
                arm: m.snake_name.clone(),
                second: m.name,
            });
        }
        methods.push(m);
    }

    Ok(Service {
        package: service.package_name().to_owned(),
        name: service.name().to_owned(),
        full_name,
        comments: comments.get(service.path()),
        file,
        methods,
        default_strategy,
        file_descriptor_set: descriptor_set(&service.parent_file()),
    })
}

/// The encoded descriptor set of `file` and its transitive imports, imports
/// first. Source info is left out (it would make every registration's
/// `Hello` several times larger) and so are custom options, which
/// `prost_types` does not keep; reflection clients need neither.
fn descriptor_set(file: &prost_reflect::FileDescriptor) -> Vec<u8> {
    fn visit(
        file: &prost_reflect::FileDescriptor,
        seen: &mut std::collections::HashSet<String>,
        out: &mut Vec<prost_types::FileDescriptorProto>,
    ) {
        if !seen.insert(file.name().to_owned()) {
            return;
        }
        for dependency in file.dependencies() {
            visit(&dependency, seen, out);
        }
        let mut proto = file.file_descriptor_proto().clone();
        proto.source_code_info = None;
        // protoc fills `json_name` in plugin requests, protox does not:
        // cleared, the plugin and the builder embed the same bytes (clients
        // derive it from the field name).
        proto.extension.iter_mut().for_each(|f| f.json_name = None);
        proto.message_type.iter_mut().for_each(clear_json_names);
        out.push(proto);
    }
    fn clear_json_names(message: &mut prost_types::DescriptorProto) {
        message.field.iter_mut().for_each(|f| f.json_name = None);
        message
            .extension
            .iter_mut()
            .for_each(|f| f.json_name = None);
        message.nested_type.iter_mut().for_each(clear_json_names);
    }
    let mut files = Vec::new();
    visit(file, &mut std::collections::HashSet::new(), &mut files);
    prost::Message::encode_to_vec(&prost_types::FileDescriptorSet { file: files })
}

fn build_method(
    service: &ProtoService,
    method: &ProtoMethod,
    index: usize,
    extensions: &Extensions,
    sidecar: Option<&MethodOptions>,
    comments: &Comments,
) -> Result<Method, Error> {
    let file = service.parent_file().name().to_owned();
    let options = method.options();
    let site = || Site::method(&file, service.full_name(), method.name());
    let option_error = |option: &'static str, reason: String| Error::InvalidOption {
        site: site(),
        option,
        reason,
    };

    let sidecar = sidecar.cloned().unwrap_or_default();
    let sidecar_tag = sidecar.tag.map(Value::U32);
    let tag_origin = if sidecar_tag.is_some() {
        "tag in the router options:"
    } else {
        "option (router.v1.tag) ="
    };
    let (tag, origin) = match sidecar_tag.or_else(|| get_ext(&options, extensions.tag.as_ref())) {
        Some(Value::U32(tag)) => (u64::from(tag), tag_origin),
        Some(other) => {
            return Err(option_error(
                TAG_OPTION,
                format!("expected a uint32, found {other:?}"),
            ));
        }
        None => (u64::from(MIN_TAG) + index as u64, "default tag"),
    };
    let invalid = |reason| Error::InvalidTag {
        site: site(),
        origin,
        tag,
        reason,
    };
    let tag = match tag {
        0 => {
            return Err(invalid(
                "field number 0 does not exist in protobuf; use 10 to 536870911",
            ));
        }
        1..=9 => {
            return Err(invalid(
                "1 to 9 are reserved for the envelope fields of the generated messages; use 10 to 536870911",
            ));
        }
        19_000..=19_999 => {
            return Err(invalid(
                "19000 to 19999 are reserved by protobuf; use 10 to 536870911",
            ));
        }
        t if t > u64::from(MAX_TAG) => {
            return Err(invalid("the largest protobuf field number is 536870911"));
        }
        t => u32::try_from(t).map_err(|_| invalid("out of range"))?,
    };

    let sidecar_key = sidecar.route_key.clone().map(Value::String);
    let key_origin = if sidecar_key.is_some() {
        "route_key in the router options:"
    } else {
        "option (router.v1.route_key) ="
    };
    let route_key = match sidecar_key.or_else(|| get_ext(&options, extensions.route_key.as_ref())) {
        None => None,
        Some(Value::String(path)) => Some(resolve_route_key(&method.input(), &path).map_err(
            |reason| Error::RouteKey {
                site: site(),
                origin: key_origin,
                path: path.clone(),
                reason,
            },
        )?),
        Some(other) => {
            return Err(option_error(
                ROUTE_KEY_OPTION,
                format!("expected a string, found {other:?}"),
            ));
        }
    };

    let idempotent = match sidecar
        .idempotent
        .map(Value::Bool)
        .or_else(|| get_ext(&options, extensions.idempotent.as_ref()))
    {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(other) => {
            return Err(option_error(
                IDEMPOTENT_OPTION,
                format!("expected a bool, found {other:?}"),
            ));
        }
    };

    let kind = match (method.is_client_streaming(), method.is_server_streaming()) {
        (false, false) => MethodKind::Unary,
        (false, true) => MethodKind::ServerStreaming,
        (true, false) => MethodKind::ClientStreaming,
        (true, true) => MethodKind::BidiStreaming,
    };
    let input = method.input();
    let output = method.output();
    Ok(Method {
        name: method.name().to_owned(),
        snake_name: arm_name(method.name()),
        input_type: format!(".{}", input.full_name()),
        output_type: format!(".{}", output.full_name()),
        input_file: input.parent_file().name().to_owned(),
        output_file: output.parent_file().name().to_owned(),
        kind,
        tag,
        route_key,
        idempotent,
        comments: comments.get(method.path()),
    })
}

/// Resolves a dotted field path against `message`, returning the field numbers.
fn resolve_route_key(message: &MessageDescriptor, path: &str) -> Result<RouteKey, String> {
    if path.is_empty() {
        return Err("the path is empty; name a field of the request, for example `user.id`".into());
    }
    let segments: Vec<&str> = path.split('.').collect();
    let mut current = message.clone();
    let mut numbers = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let Some(field) = current.get_field_by_name(segment) else {
            return Err(format!(
                "message `{}` has no field `{segment}`",
                current.full_name()
            ));
        };
        if field.is_map() {
            return Err(format!(
                "field `{}` is a map; a routing key must be a singular field",
                field.full_name()
            ));
        }
        if field.is_list() {
            return Err(format!(
                "field `{}` is repeated; a routing key must be a singular field",
                field.full_name()
            ));
        }
        numbers.push(field.number());
        match (field.kind(), last) {
            (Kind::Message(_), true) => {
                return Err(format!(
                    "field `{}` is a {}; the last segment must be a scalar, string, bytes or enum field",
                    field.full_name(),
                    if field.is_group() { "group" } else { "message" }
                ));
            }
            (Kind::Message(_), false) if field.is_group() => {
                return Err(format!(
                    "field `{}` is a group; only message fields can lead to the key",
                    field.full_name()
                ));
            }
            (Kind::Message(inner), false) => current = inner,
            (_, false) => {
                return Err(format!(
                    "field `{}` is not a message, so `{}` cannot continue the path",
                    field.full_name(),
                    segments[i + 1]
                ));
            }
            (_, true) => {}
        }
    }
    Ok(RouteKey {
        path: path.to_owned(),
        field_numbers: numbers,
    })
}

/// Checks the generated proto names of `services` (one file) against the
/// package's existing top-level names and against each other.
fn check_generated_names(pool: &DescriptorPool, services: &[Service]) -> Result<(), Error> {
    let Some(first) = services.first() else {
        return Ok(());
    };
    let package = first.package.as_str();
    // Existing proto names: name -> description.
    let mut existing: BTreeMap<String, String> = BTreeMap::new();
    for m in pool.all_messages() {
        if top_level_in(package, m.full_name(), m.parent_message().is_none()) {
            existing.entry(m.name().to_owned()).or_insert_with(|| {
                format!("message `{}` in {}", m.full_name(), m.parent_file().name())
            });
        }
    }
    for e in pool.all_enums() {
        if top_level_in(package, e.full_name(), e.parent_message().is_none()) {
            existing.entry(e.name().to_owned()).or_insert_with(|| {
                format!("enum `{}` in {}", e.full_name(), e.parent_file().name())
            });
        }
    }
    for s in pool.services() {
        if top_level_in(package, s.full_name(), true) {
            existing.entry(s.name().to_owned()).or_insert_with(|| {
                format!("service `{}` in {}", s.full_name(), s.parent_file().name())
            });
        }
    }

    for service in services {
        for (kind, name) in service.generated_proto_names() {
            if let Some(what) = existing.get(&name) {
                return Err(collision(service, kind, &name, what));
            }
        }
    }
    // Generated names against each other (services `Foo` and `FooRouter` ...).
    let mut generated: BTreeMap<String, String> = BTreeMap::new();
    for service in services {
        for (kind, name) in service.generated_proto_names() {
            let what = format!(
                "generated {kind} `{name}` of service `{}`",
                service.full_name
            );
            if let Some(prev) = generated.insert(name.clone(), what) {
                return Err(collision(service, kind, &name, &prev));
            }
        }
    }
    Ok(())
}

/// Whether `full` names a top-level element (`parent_none`) of `package`.
fn top_level_in(package: &str, full: &str, parent_none: bool) -> bool {
    parent_none
        && match full.rsplit_once('.') {
            Some((p, _)) => p == package,
            None => package.is_empty(),
        }
}

fn collision(service: &Service, kind: &'static str, name: &str, existing: &str) -> Error {
    Error::NameCollision {
        site: Site::service(&service.file, &service.full_name),
        kind,
        name: name.to_owned(),
        existing: existing.to_owned(),
    }
}

/// Checks the Rust items of every package that `files` generate into, across
/// all of the package's files: tonic-prost-build writes one `<package>.rs`
/// per package (and the plugin's `<file>_router.rs` files are included into
/// one module), so two files of a package share one Rust scope.
///
/// The scope holds prost's types of the package's messages and enums (existing
/// and generated), prost's modules of messages with nested types or oneofs,
/// tonic's `<service>_client`/`<service>_server` modules and the glue items
/// (`<S>_DESCRIPTOR`, `<S>Spec`, `<S>Router`, `<S>Bridge`). A generated item
/// that meets any other item of the same name is an error; clashes among the
/// user's own items are prost's to report.
fn check_rust_names(pool: &DescriptorPool, files: &[File]) -> Result<(), Error> {
    let mut packages: BTreeMap<&str, Vec<&Service>> = BTreeMap::new();
    for service in files.iter().flat_map(|f| &f.services) {
        packages.entry(&service.package).or_default().push(service);
    }
    for (package, services) in packages {
        // Existing items of the package, from every file of the pool.
        let mut scope: BTreeMap<String, String> = BTreeMap::new();
        for m in pool.all_messages() {
            if !top_level_in(package, m.full_name(), m.parent_message().is_none()) {
                continue;
            }
            let file = m.parent_file();
            scope
                .entry(ident::sanitize(&ident::upper_camel(m.name())))
                .or_insert_with(|| {
                    format!(
                        "the Rust type of message `{}` in {}",
                        m.full_name(),
                        file.name()
                    )
                });
            let nested = m.child_messages().any(|c| !c.is_map_entry())
                || m.child_enums().next().is_some()
                || m.oneofs().next().is_some();
            if nested {
                scope
                    .entry(ident::sanitize(&ident::proto_snake(m.name())))
                    .or_insert_with(|| {
                        format!(
                            "the Rust module of message `{}` in {}",
                            m.full_name(),
                            file.name()
                        )
                    });
            }
        }
        for e in pool.all_enums() {
            if top_level_in(package, e.full_name(), e.parent_message().is_none()) {
                scope
                    .entry(ident::sanitize(&ident::upper_camel(e.name())))
                    .or_insert_with(|| {
                        format!(
                            "the Rust type of enum `{}` in {}",
                            e.full_name(),
                            e.parent_file().name()
                        )
                    });
            }
        }
        for s in pool.services() {
            if top_level_in(package, s.full_name(), true) {
                for module in [
                    ident::tonic_server_module(s.name()),
                    ident::tonic_client_module(s.name()),
                ] {
                    scope.entry(module).or_insert_with(|| {
                        format!(
                            "a tonic module of service `{}` in {}",
                            s.full_name(),
                            s.parent_file().name()
                        )
                    });
                }
            }
        }
        // The generated items, each against everything seen so far.
        for service in services {
            for (item, name) in generated_rust_items(service) {
                let what = format!(
                    "{item} `{name}` generated for service `{}` in {}",
                    service.full_name, service.file
                );
                if let Some(prev) = scope.insert(name.clone(), what) {
                    return Err(collision(service, "Rust item", &name, &prev));
                }
            }
        }
    }
    Ok(())
}

/// The Rust items generated for `service` in its package's module: the prost
/// types and modules of the generated messages, the tonic modules of the
/// generated `<S>Router` service and the glue items.
fn generated_rust_items(service: &Service) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (kind, name) in service.generated_proto_names() {
        if kind == "message" {
            out.push((
                "the Rust type of message",
                ident::sanitize(&ident::upper_camel(&name)),
            ));
            // Every generated message has a oneof, except an empty service's
            // `<S>Call`/`<S>Reply`.
            let has_oneof = !service.methods.is_empty()
                || name.ends_with("RouterFrame")
                || name.ends_with("BridgeFrame");
            if has_oneof {
                out.push((
                    "the Rust module of message",
                    ident::sanitize(&ident::proto_snake(&name)),
                ));
            }
        } else {
            out.push((
                "a tonic module of service",
                ident::tonic_server_module(&name),
            ));
            out.push((
                "a tonic module of service",
                ident::tonic_client_module(&name),
            ));
        }
    }
    for name in service.generated_rust_names() {
        out.push(("the glue item", name));
    }
    out
}
