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
}
