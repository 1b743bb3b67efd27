//! Marks a gRPC-Web request with [`Protocol::GrpcWeb`] before tonic-web
//! translates it, so the router counts calls by the protocol the client
//! used (`grpc_router_calls_by_protocol_total`).

use std::task::{Context, Poll};

use super::Protocol;

/// The layer of [`GrpcWebMark`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GrpcWebMarkLayer;

impl<S> tower::Layer<S> for GrpcWebMarkLayer {
    type Service = GrpcWebMark<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcWebMark { inner }
    }
}

/// Puts [`Protocol::GrpcWeb`] in the extensions of a request whose content
/// type is gRPC-Web's, then calls `inner`.
#[derive(Debug, Clone)]
pub(crate) struct GrpcWebMark<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for GrpcWebMark<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if is_grpc_web(request.headers()) {
            request.extensions_mut().insert(Protocol::GrpcWeb);
        }
        self.inner.call(request)
    }
}

/// Whether `headers` say gRPC-Web (`application/grpc-web`, `+proto`,
/// `-text`, ...).
fn is_grpc_web(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc-web"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_grpc_web_content_types_are_marked() {
        let headers = |ct: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::CONTENT_TYPE, ct.parse().expect("header"));
            h
        };
        assert!(is_grpc_web(&headers("application/grpc-web+proto")));
        assert!(is_grpc_web(&headers("application/grpc-web-text")));
        assert!(!is_grpc_web(&headers("application/grpc")));
        assert!(!is_grpc_web(&headers("application/json")));
        assert!(!is_grpc_web(&http::HeaderMap::new()));
    }
}
