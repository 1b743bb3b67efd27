//! Connect unary calls: a POST with the whole message as its body
//! (`application/proto` or `application/json`, maybe gzip), or a GET with
//! it in the query for methods without side effects, turned into a gRPC
//! call with one message; the answer is the one response message with the
//! trailers as `trailer-` headers, or a Connect JSON error with the
//! spec's HTTP status.

use std::future::Future;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use tonic::Code;

use super::compress::{self, Encoding};
use super::error::ConnectError;
use super::grpc::{self, Event, Reply};
use super::request::{self, Codec};
use prost_reflect::MethodDescriptor;

use super::{BoxError, Shared, json};

/// What a unary request carries once read.
struct Unary {
    codec: Codec,
    /// The request message, decompressed, as the client encoded it.
    message: Bytes,
}

/// A unary request read and checked, ready to go to the routes.
struct Prepared {
    parts: http::request::Parts,
    /// The request message as protobuf.
    message: Bytes,
    codec: Codec,
    method: Option<MethodDescriptor>,
    path: String,
    service: String,
    /// What is left of the deadline once the body arrived.
    timeout: Option<std::time::Duration>,
}

/// Serves one Connect unary call (`get`: a GET) through `call`, the routes
/// behind.
pub(crate) async fn serve<B, F, Fut, E>(
    shared: Arc<Shared>,
    req: Request<B>,
    get: bool,
    call: F,
) -> Result<Response<tonic::body::Body>, E>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    F: FnOnce(Request<tonic::body::Body>) -> Fut,
    Fut: Future<Output = Result<Response<tonic::body::Body>, E>>,
{
    let accept = Encoding::negotiate(
        req.headers()
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    );
    let (parts, body) = req.into_parts();
    let prepared = match prepare(&shared, parts, body, get).await {
        Ok(prepared) => prepared,
        Err(refused) => return Ok(refused),
    };
    let Prepared {
        parts,
        message,
        codec,
        method,
        path,
        service,
        timeout,
    } = prepared;
    let body = tonic::body::Body::new(Full::new(grpc::frame(&message)));
    let response = call(request::grpc_request(parts, body, timeout)).await?;
    let (headers, reply) = Reply::new(response, shared.limits.response(&service));
    Ok(answer(reply, headers, &path, codec, method.as_ref(), accept).await)
}

/// Reads and checks a unary request (its timeout, body or query, method,
/// and JSON turned into protobuf); `Err` is the response that refuses it.
async fn prepare<B>(
    shared: &Shared,
    parts: http::request::Parts,
    body: B,
    get: bool,
) -> Result<Prepared, Response<tonic::body::Body>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let refuse = |error: &ConnectError| error_response(error, HeaderMap::new());
    let path = parts.uri.path().to_owned();
    let service = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let limit = shared.limits.request(&service);
    let timeout = request::timeout(&parts.headers).map_err(|e| refuse(&e))?;
    let started = tokio::time::Instant::now();
    let read = if get {
        read_get(&parts.uri, limit)
    } else {
        // The deadline covers reading the body too: a client that sends it
        // slowly holds the call no longer than it asked for.
        let read = read_post(&parts, body, limit, &service);
        match timeout {
            Some(timeout) => tokio::time::timeout(timeout, read)
                .await
                .unwrap_or_else(|_| {
                    Err(ConnectError::new(
                        Code::DeadlineExceeded,
                        format!(
                            "the request body did not arrive within connect-timeout-ms ({} ms)",
                            timeout.as_millis()
                        ),
                    ))
                }),
            None => read.await,
        }
    };
    let unary = read.map_err(|e| refuse(&e))?;
    // What is left of the deadline for the call, in whole milliseconds
    // (rounded up, as gRPC rounds its timeouts).
    let timeout = timeout.map(|t| {
        let left = t
            .saturating_sub(started.elapsed())
            .as_nanos()
            .div_ceil(1_000_000);
        std::time::Duration::from_millis(u64::try_from(left).unwrap_or(u64::MAX))
    });
    let codec = unary.codec;
    let method = shared.descriptors.method(&path).map_err(|e| refuse(&e))?;
    if get && !method.as_ref().is_some_and(json::has_no_side_effects) {
        let error = ConnectError::new(
            Code::Unimplemented,
            format!(
                "`{path}` cannot be called with GET: only methods with idempotency_level = NO_SIDE_EFFECTS can; POST it"
            ),
        );
        let mut response = refuse(&error);
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Err(response);
    }
    let message = match (codec, &method) {
        (Codec::Proto, _) => unary.message,
        (Codec::Json, Some(method)) => {
            json::to_proto(&method.input(), &unary.message).map_err(|e| refuse(&e))?
        }
        (Codec::Json, None) => return Err(refuse(&no_descriptor(&service))),
    };
    Ok(Prepared {
        parts,
        message,
        codec,
        method,
        path,
        service,
        timeout,
    })
}

/// The Connect response to the gRPC answer `reply` (with response headers
/// `headers`): its one message, or a Connect error.
async fn answer(
    mut reply: Reply,
    headers: HeaderMap,
    path: &str,
    codec: Codec,
    method: Option<&MethodDescriptor>,
    accept: Encoding,
) -> Response<tonic::body::Body> {
    let mut message = None;
    let (error, trailers) = loop {
        match reply.next().await {
            Event::Message(m) if message.is_none() => message = Some(m),
            Event::Message(_) => {
                break (
                    Some(ConnectError::new(
                        Code::Unimplemented,
                        format!(
                            "`{path}` answered more than one message: it streams, so call it with application/connect+proto or +json"
                        ),
                    )),
                    HeaderMap::new(),
                );
            }
            Event::End(error, trailers) => break (error, trailers),
        }
    };
    let error = error.or_else(|| {
        message.is_none().then(|| {
            ConnectError::new(Code::Unimplemented, format!("`{path}` answered no message"))
        })
    });
    if let Some(error) = error {
        let mut metadata = headers;
        metadata.extend(trailers);
        return error_response(&error, metadata);
    }
    let message = message.unwrap_or_default();
    let body = match (codec, method) {
        (Codec::Json, Some(method)) => match json::to_json(&method.output(), message) {
            Ok(body) => body,
            Err(error) => return error_response(&error, headers),
        },
        _ => message,
    };
    success(codec, body, accept, headers, trailers)
}

/// A POST's message: its content type's codec, the body read up to
/// `limit` bytes and decompressed.
async fn read_post<B>(
    parts: &http::request::Parts,
    body: B,
    limit: usize,
    service: &str,
) -> Result<Unary, ConnectError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let codec = match request::shape(&parts.method, &parts.headers, None) {
        request::Shape::Unary(codec) => codec,
        _ => Codec::Proto,
    };
    let encoding = Encoding::parse(
        parts
            .headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    )?;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large(declared.map(|l| l.to_string()), limit, service));
    }
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(too_large(None, limit, service));
        }
        Err(e) => {
            return Err(ConnectError::new(
                Code::InvalidArgument,
                format!("reading the request body failed: {e}"),
            ));
        }
    };
    let message = compress::decompress(encoding, body, limit)?;
    Ok(Unary { codec, message })
}

/// A GET's message: from the query's `message`, `encoding`, `base64` and
/// `compression` parameters.
fn read_get(uri: &http::Uri, limit: usize) -> Result<Unary, ConnectError> {
    let query = uri.query().unwrap_or_default();
    if query.len() > limit.saturating_mul(2) {
        return Err(ConnectError::new(
            Code::ResourceExhausted,
            format!("the GET query of {} bytes exceeds the limit", query.len()),
        ));
    }
    let mut message = None;
    let (mut codec, mut base64, mut compression) = (None, false, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = value.replace('+', " ");
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(&value).collect();
        match name {
            "message" => message = Some(decoded),
            "encoding" => {
                let name = String::from_utf8_lossy(&decoded).into_owned();
                codec = Some(Codec::named(&name).ok_or_else(|| {
                    ConnectError::invalid(format!(
                        "encoding `{name}` is not one the router speaks (proto, json)"
                    ))
                })?);
            }
            "base64" => base64 = decoded == b"1",
            "compression" => compression = Some(String::from_utf8_lossy(&decoded).into_owned()),
            _ => {}
        }
    }
    let codec = codec.ok_or_else(|| ConnectError::invalid("the GET query has no `encoding`"))?;
    let mut message = message.unwrap_or_default();
    if base64 {
        // URL-safe as the spec says; standard base64 read too (a `+` left
        // unescaped in the query arrives as a space).
        let text: Vec<u8> = message
            .iter()
            .filter(|b| **b != b'=')
            .map(|b| match b {
                b'+' | b' ' => b'-',
                b'/' => b'_',
                b => *b,
            })
            .collect();
        message = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&text)
            .map_err(|e| {
                ConnectError::invalid(format!("the GET `message` is not URL-safe base64: {e}"))
            })?;
    }
    let encoding = Encoding::parse(compression.as_deref())?;
    let message = compress::decompress(encoding, Bytes::from(message), limit)?;
    Ok(Unary { codec, message })
}

fn too_large(declared: Option<String>, limit: usize, service: &str) -> ConnectError {
    let size = declared.unwrap_or_else(|| format!("more than {limit}"));
    ConnectError::new(
        Code::ResourceExhausted,
        format!(
            "request body of {size} bytes exceeds the router's limit of {limit} bytes for `{service}` (raise it with RouterConfig::max_message_size, or max_request_message_bytes in grpc-router's [defaults] or [services.\"{service}\"])"
        ),
    )
}

/// The error of a JSON call to a service the router holds no descriptor
/// of.
pub(crate) fn no_descriptor(service: &str) -> ConnectError {
    ConnectError::new(
        Code::Unimplemented,
        format!(
            "the router holds no descriptor of service `{service}`, so it cannot translate JSON for it: call it with application/proto, or register it with its descriptor set"
        ),
    )
}

/// A successful answer: `body` (compressed if the client accepts gzip and
/// it is worth it), the headers' metadata and the trailers as `trailer-`
/// headers.
fn success(
    codec: Codec,
    body: Bytes,
    accept: Encoding,
    headers: HeaderMap,
    trailers: HeaderMap,
) -> Response<tonic::body::Body> {
    let mut response_headers = headers;
    for (name, value) in &trailers {
        if let Ok(name) = HeaderName::from_bytes(format!("trailer-{name}").as_bytes()) {
            response_headers.append(name, value.clone());
        }
    }
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(codec.unary_content_type()),
    );
    let body = if accept == Encoding::Gzip && body.len() >= compress::COMPRESS_FROM {
        response_headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        compress::compress(Encoding::Gzip, body)
    } else {
        body
    };
    let mut response = Response::new(tonic::body::Body::new(Full::new(body)));
    *response.headers_mut() = response_headers;
    response
}

/// A unary error answer: the spec's HTTP status and the JSON error, with
/// `metadata` as headers.
pub(crate) fn error_response(
    error: &ConnectError,
    metadata: HeaderMap,
) -> Response<tonic::body::Body> {
    let mut response = Response::new(tonic::body::Body::new(Full::new(error.body())));
    *response.status_mut() = error.http_status();
    let headers = response.headers_mut();
    *headers = metadata;
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if error.code == Code::Unimplemented && error.message.starts_with("unknown compression") {
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static(compress::ACCEPTED),
        );
    }
    response
}
