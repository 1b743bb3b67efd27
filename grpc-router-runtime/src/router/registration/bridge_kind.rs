//! Which bridge implementation opened a register stream, told by the
//! `user-agent` of its `Register` call, so that a refusal can say how *that*
//! bridge is fixed (a Python instance is not rebuilt with protoc-gen-router).

use tonic::metadata::MetadataMap;

/// The implementation of a registering bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BridgeKind {
    /// `grpc-router-runtime`'s bridge (tonic's user agent).
    Rust,
    /// `bridges/python` (its own user agent; grpcio's for old versions).
    Python,
    /// Anything else speaking the protocol.
    Other,
}

impl BridgeKind {
    /// The kind named by the request's `user-agent`.
    pub(crate) fn of(metadata: &MetadataMap) -> Self {
        let agent = metadata
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if agent.contains("grpc-router-bridge-python") || agent.contains("grpc-python") {
            BridgeKind::Python
        } else if agent.contains("tonic/") {
            BridgeKind::Rust
        } else {
            BridgeKind::Other
        }
    }

    /// What a bridge of this kind that sent no `Hello.description` needs.
    pub(crate) fn without_description(self) -> &'static str {
        match self {
            BridgeKind::Rust => {
                "this Rust bridge sent none: rebuild the instance with a current grpc-router-runtime \
                 and protoc-gen-router"
            }
            BridgeKind::Python => {
                "this Python bridge sent none: upgrade the grpc-router-bridge package (older \
                 versions send no description) and regenerate `<file>_router_bridge.py` with a \
                 current protoc-gen-router (`python=true`) so it embeds the descriptor set"
            }
            BridgeKind::Other => {
                "the bridge sent none: a bridge must send `Hello.description` \
                 (router/v1/router.proto), the service's methods with their paths, kinds and tags"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(agent: &str) -> BridgeKind {
        let mut metadata = MetadataMap::new();
        metadata.insert("user-agent", agent.parse().expect("ascii"));
        BridgeKind::of(&metadata)
    }

    #[test]
    fn the_user_agent_names_the_bridge() {
        assert_eq!(
            kind("grpc-router-bridge-python/0.1.0 grpc-python-asyncio/1.76.0 grpc-c/51.0.0"),
            BridgeKind::Python
        );
        assert_eq!(
            kind("grpc-python-asyncio/1.60.0 grpc-c/37.0.0 (linux; chttp2)"),
            BridgeKind::Python
        );
        assert_eq!(kind("tonic/0.14.2"), BridgeKind::Rust);
        assert_eq!(kind("grpc-go/1.70.0"), BridgeKind::Other);
        assert_eq!(BridgeKind::of(&MetadataMap::new()), BridgeKind::Other);
    }
}
