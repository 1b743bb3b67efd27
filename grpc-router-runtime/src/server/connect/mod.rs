//! The Connect protocol (connectrpc.com/docs/protocol) on the clients'
//! listener, as an edge translation like tonic-web's: a Connect request
//! becomes an ordinary gRPC request (HTTP/2 semantics, gRPC framing,
//! `grpc-timeout` from `connect-timeout-ms`, its metadata and
//! `authorization` kept) routed by the same routes, so routing, limits,
//! credentials and metrics apply to it as to any call; the gRPC answer
//! becomes Connect's (messages, errors as Connect JSON with their HTTP
//! status, trailers). JSON is translated from and to protobuf with the
//! descriptors the router holds; the instance always receives protobuf.
//!
//! - `request`: what a request is, and the gRPC headers of a Connect one;
//! - `unary`: POST and GET unary calls;
//! - `stream`: streaming calls (envelopes, end-of-stream message);
//! - `grpc`: the gRPC framing and the routed call's answer read back;
//! - `json`: JSON ⇄ protobuf from the descriptors;
//! - `compress`: gzip;
//! - `error`: Connect's error codes, HTTP statuses and JSON.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::TryFutureExt;
use futures_util::future::{Either, MapOk};
use http::{HeaderValue, Request, Response, StatusCode, header};
use tower::{Layer, Service, ServiceExt};

use crate::reflection::DescriptorCatalog;
use crate::router::{DynamicRouter, RouterCore};

mod compress;
mod error;
mod grpc;
mod json;
mod request;
mod stream;
mod unary;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The protocol a client called with, put in the extensions of the gRPC
/// request the routes receive (for metrics, logs): only requests
/// translated from another protocol carry one; a request without is gRPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// The Connect protocol (unary or streaming, proto or JSON).
    Connect,
    /// gRPC-Web (binary or text).
    GrpcWeb,
}

/// The message size limits of the routed services, read per call so that
/// reloads apply.
#[derive(Clone, Default)]
pub(crate) struct Limits {
    cores: Vec<Arc<RouterCore>>,
    dynamic: Option<DynamicRouter>,
}

impl Limits {
    pub(crate) fn new(cores: Vec<Arc<RouterCore>>, dynamic: Option<DynamicRouter>) -> Self {
        Limits { cores, dynamic }
    }

    fn config(&self, service: &str) -> Option<Arc<crate::router::RouterConfig>> {
        if let Some(core) = self.cores.iter().find(|c| c.service.name() == service) {
            return Some(core.config());
        }
        let handle = self.dynamic.as_ref()?.service(service)?;
        Some(handle.core().config())
    }

    /// The largest request message `service` takes.
    fn request(&self, service: &str) -> usize {
        self.config(service)
            .map_or(crate::defaults::MAX_MESSAGE, |c| c.max_message_size)
    }

    /// The largest response message the router forwards for `service`.
    fn response(&self, service: &str) -> usize {
        self.config(service)
            .map_or(crate::defaults::MAX_RESPONSE_MESSAGE, |c| {
                c.max_response_message_size
            })
    }
}

/// What every translated call needs.
pub(crate) struct Shared {
    descriptors: json::Descriptors,
    limits: Limits,
}

/// The tower layer serving Connect in front of the gRPC routes.
#[derive(Clone)]
pub(crate) struct ConnectLayer {
    shared: Arc<Shared>,
}

impl ConnectLayer {
    /// Translates with the descriptors of `catalog` and the limits of
    /// `limits`.
    pub(crate) fn new(catalog: DescriptorCatalog, limits: Limits) -> Self {
        ConnectLayer {
            shared: Arc::new(Shared {
                descriptors: json::Descriptors::new(catalog),
                limits,
            }),
        }
    }
}

impl<S> Layer<S> for ConnectLayer {
    type Service = ConnectService<S>;

    fn layer(&self, inner: S) -> ConnectService<S> {
        ConnectService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// [`ConnectLayer`]'s service.
#[derive(Clone)]
pub(crate) struct ConnectService<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, R> Service<Request<B>> for ConnectService<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    R: http_body::Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    /// gRPC (and gRPC-Web) calls go straight to the routes, unboxed;
    /// Connect calls are translated in a boxed future.
    type Future = Either<
        BoxFuture<Self::Response, S::Error>,
        MapOk<S::Future, fn(Response<R>) -> Response<tonic::body::Body>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shape = request::shape(req.method(), req.headers(), req.uri().query());
        if shape == request::Shape::Other {
            let to_body: fn(Response<R>) -> Response<tonic::body::Body> =
                |response| response.map(tonic::body::Body::new);
            return Either::Right(
                self.inner
                    .call(req.map(tonic::body::Body::new))
                    .map_ok(to_body),
            );
        }
        // The ready service for this call; a clone waits for the next.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let call = move |req: Request<tonic::body::Body>| async move {
            inner
                .oneshot(req)
                .await
                .map(|response| response.map(tonic::body::Body::new))
        };
        let shared = self.shared.clone();
        Either::Left(match shape {
            request::Shape::Unary(_) => Box::pin(unary::serve(shared, req, false, call)),
            request::Shape::Get => Box::pin(unary::serve(shared, req, true, call)),
            request::Shape::Stream(codec) => Box::pin(stream::serve(shared, req, codec, call)),
            request::Shape::Unsupported => Box::pin(async move { Ok(unsupported(&req)) }),
            // (`Other` went to the routes above.)
            request::Shape::NotPost | request::Shape::Other => {
                Box::pin(async move { Ok(not_post(&req)) })
            }
        })
    }
}

/// HTTP 405 for a Connect content type with another method than POST.
fn not_post<B>(req: &Request<B>) -> Response<tonic::body::Body> {
    let error = error::ConnectError::new(
        tonic::Code::Unimplemented,
        format!(
            "Connect calls are POSTed (or GET with the message in the query), not {}",
            req.method()
        ),
    );
    let mut response = unary::error_response(&error, http::HeaderMap::new());
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

/// HTTP 415 for a content type no protocol of the listener speaks, with
/// the ones it does in `Accept-Post`.
fn unsupported<B>(req: &Request<B>) -> Response<tonic::body::Body> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let message = match content_type {
        Some(t) => format!(
            "content type `{t}` is not one the router speaks: {}",
            request::ACCEPT_POST
        ),
        None => format!(
            "the request has no content type: the router speaks {}",
            request::ACCEPT_POST
        ),
    };
    let error = error::ConnectError::new(tonic::Code::Unknown, message);
    let mut response = unary::error_response(&error, http::HeaderMap::new());
    *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    response.headers_mut().insert(
        "accept-post",
        HeaderValue::from_static(request::ACCEPT_POST),
    );
    response
}

#[cfg(test)]
mod tests;
