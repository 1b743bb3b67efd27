//! Static descriptions of routed services, emitted by `protoc-gen-router`.
//!
//! The generated code describes each service once, as a `const`
//! [`ServiceDescriptor`], and names it through a marker type implementing
//! [`ServiceSpec`]. Everything else (routing, forwarding, bridging) is generic
//! over that marker and lives in this crate.

/// The shape of a method's request and response streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// Whether the client sends exactly one request message.
    pub const fn single_request(self) -> bool {
        matches!(self, MethodKind::Unary | MethodKind::ServerStreaming)
    }

    /// Whether the server answers with exactly one response message.
    pub const fn single_response(self) -> bool {
        matches!(self, MethodKind::Unary | MethodKind::ClientStreaming)
    }

    /// The wire value of this kind in `router.v1.CallStart.kind`.
    pub const fn wire(self) -> crate::pb::MethodKind {
        match self {
            MethodKind::Unary => crate::pb::MethodKind::Unary,
            MethodKind::ServerStreaming => crate::pb::MethodKind::ServerStreaming,
            MethodKind::ClientStreaming => crate::pb::MethodKind::ClientStreaming,
            MethodKind::BidiStreaming => crate::pb::MethodKind::BidiStreaming,
        }
    }
}

/// How a router picks an instance for a call (`router.v1.Strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// Each call to the next instance in turn.
    RoundRobin,
    /// Two instances at random, the one with fewer outstanding calls.
    #[default]
    PowerOfTwoChoices,
    /// At random, in proportion to the instances' weights.
    Weighted,
    /// Rendezvous hashing of the call's routing key.
    ConsistentHash,
}

impl Strategy {
    /// The strategy's name as [`FromStr`](std::str::FromStr) reads it and
    /// the example router's `--strategy` takes it (`round-robin`, `p2c`,
    /// `weighted`, `consistent-hash`).
    pub const fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round-robin",
            Strategy::PowerOfTwoChoices => "p2c",
            Strategy::Weighted => "weighted",
            Strategy::ConsistentHash => "consistent-hash",
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A strategy name [`Strategy::from_str`](std::str::FromStr::from_str) does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown strategy `{0}` (expected round-robin, p2c, weighted or consistent-hash)")]
pub struct UnknownStrategy(pub String);

impl std::str::FromStr for Strategy {
    type Err = UnknownStrategy;

    /// Reads `round-robin`, `p2c` (or `power-of-two-choices`), `weighted`
    /// and `consistent-hash`, ignoring case, `_` for `-` and the
    /// `STRATEGY_` prefix of the proto enum's value names.
    ///
    /// ```
    /// use router_runtime::router::Strategy;
    ///
    /// assert_eq!("round-robin".parse(), Ok(Strategy::RoundRobin));
    /// assert_eq!("STRATEGY_CONSISTENT_HASH".parse(), Ok(Strategy::ConsistentHash));
    /// assert!("fastest".parse::<Strategy>().is_err());
    /// ```
    fn from_str(name: &str) -> Result<Self, UnknownStrategy> {
        let normal = name.trim().to_ascii_lowercase().replace('_', "-");
        match normal.strip_prefix("strategy-").unwrap_or(&normal) {
            "round-robin" => Ok(Strategy::RoundRobin),
            "p2c" | "power-of-two-choices" => Ok(Strategy::PowerOfTwoChoices),
            "weighted" => Ok(Strategy::Weighted),
            "consistent-hash" => Ok(Strategy::ConsistentHash),
            _ => Err(UnknownStrategy(name.to_owned())),
        }
    }
}

/// One method of a routed service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodDescriptor {
    /// The method's proto name, for example `SayHello`.
    pub name: &'static str,
    /// The full gRPC path, for example `/myservice.v1.Greeter/SayHello`.
    pub path: &'static str,
    /// The method's field number in the generated `Call`/`Reply` oneofs.
    pub tag: u32,
    /// The method's streaming shape.
    pub kind: MethodKind,
    /// Field numbers leading from the request message to its routing key field
    /// (`(router.v1.route_key)`); empty when the method has none.
    pub route_key: &'static [u32],
    /// Whether the method may be retried after it reached an instance
    /// (`(router.v1.idempotent)`).
    pub idempotent: bool,
}

/// A routed service: its names, methods and default strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceDescriptor {
    /// The fully qualified service name, for example `myservice.v1.Greeter`.
    pub name: &'static str,
    /// The fully qualified name of the generated register service, for example
    /// `myservice.v1.GreeterRouter`.
    pub register_name: &'static str,
    /// The methods, in proto order.
    pub methods: &'static [MethodDescriptor],
    /// The strategy used unless the router is configured otherwise
    /// (`(router.v1.default_strategy)`).
    pub default_strategy: Strategy,
}

impl ServiceDescriptor {
    /// Finds a method by its full gRPC path.
    pub fn method_by_path(&self, path: &str) -> Option<&'static MethodDescriptor> {
        self.methods.iter().find(|m| m.path == path)
    }

    /// Finds a method by its oneof tag.
    pub fn method_by_tag(&self, tag: u32) -> Option<&'static MethodDescriptor> {
        self.methods.iter().find(|m| m.tag == tag)
    }
}

/// Names a routed service at the type level; implemented by a generated
/// marker type per service, for example `GreeterSpec`.
pub trait ServiceSpec: Send + Sync + 'static {
    /// The fully qualified service name (`ServiceDescriptor::name`).
    const NAME: &'static str;
    /// The fully qualified register service name
    /// (`ServiceDescriptor::register_name`).
    const REGISTER_NAME: &'static str;
    /// The full description of the service.
    const DESCRIPTOR: &'static ServiceDescriptor;
    /// The encoded `google.protobuf.FileDescriptorSet` of the service's
    /// `.proto` files and all their imports (for gRPC server reflection, here
    /// and on routers that learn the service from its registrations); empty
    /// for code generated before it was embedded.
    const FILE_DESCRIPTOR_SET: &'static [u8] = &[];
}

impl ServiceDescriptor {
    /// The service as a bridge describes it in its `Hello`, with the encoded
    /// `file_descriptor_set` of its files.
    pub fn describe(&self, file_descriptor_set: &'static [u8]) -> crate::pb::ServiceDescription {
        crate::pb::ServiceDescription {
            name: self.name.to_owned(),
            methods: self
                .methods
                .iter()
                .map(|m| crate::pb::MethodDescription {
                    name: m.name.to_owned(),
                    path: m.path.to_owned(),
                    tag: m.tag,
                    kind: m.kind.wire() as i32,
                    route_key: m.route_key.to_vec(),
                    idempotent: m.idempotent,
                })
                .collect(),
            default_strategy: self.default_strategy.name().to_owned(),
            file_descriptor_set: bytes::Bytes::from_static(file_descriptor_set),
        }
    }
}

impl MethodKind {
    /// The kind of a `router.v1.MethodKind` wire value; `None` for
    /// `METHOD_KIND_UNSPECIFIED` and unknown values.
    pub fn from_wire(value: i32) -> Option<Self> {
        match crate::pb::MethodKind::try_from(value).ok()? {
            crate::pb::MethodKind::Unary => Some(MethodKind::Unary),
            crate::pb::MethodKind::ServerStreaming => Some(MethodKind::ServerStreaming),
            crate::pb::MethodKind::ClientStreaming => Some(MethodKind::ClientStreaming),
            crate::pb::MethodKind::BidiStreaming => Some(MethodKind::BidiStreaming),
            crate::pb::MethodKind::Unspecified => None,
        }
    }

    /// How the kind reads in messages: `unary`, `server streaming` ...
    pub const fn describe(self) -> &'static str {
        match self {
            MethodKind::Unary => "unary",
            MethodKind::ServerStreaming => "server streaming",
            MethodKind::ClientStreaming => "client streaming",
            MethodKind::BidiStreaming => "bidirectional streaming",
        }
    }
}
