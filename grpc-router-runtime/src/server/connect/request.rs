//! What a request on the clients' listener is, told by its method and
//! content type (a Connect unary POST or GET, a Connect stream, or
//! something else: gRPC, gRPC-Web), and the headers of the gRPC request a
//! Connect request becomes: metadata kept (`authorization` too), Connect's
//! own headers dropped, `connect-timeout-ms` as `grpc-timeout`.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, header};

use super::error::ConnectError;

/// A message codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    /// Binary protobuf.
    Proto,
    /// The proto3 JSON mapping.
    Json,
}

impl Codec {
    /// The codec a codec name (`proto`, `json`) names.
    pub(crate) fn named(name: &str) -> Option<Codec> {
        match name.trim() {
            "proto" => Some(Codec::Proto),
            "json" => Some(Codec::Json),
            _ => None,
        }
    }

    /// The content type of a unary answer.
    pub(crate) fn unary_content_type(self) -> &'static str {
        match self {
            Codec::Proto => "application/proto",
            Codec::Json => "application/json",
        }
    }

    /// The content type of a stream's answer.
    pub(crate) fn stream_content_type(self) -> &'static str {
        match self {
            Codec::Proto => "application/connect+proto",
            Codec::Json => "application/connect+json",
        }
    }
}

/// What a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A Connect unary call, POST with `application/proto` or `/json`.
    Unary(Codec),
    /// A Connect unary call as a GET with the message in the query.
    Get,
    /// A Connect streaming call (`application/connect+proto` or `+json`).
    Stream(Codec),
    /// Neither: passed on unchanged (gRPC, gRPC-Web).
    Other,
    /// A request whose content type no protocol of the listener speaks
    /// (HTTP 415).
    Unsupported,
    /// A Connect content type with a method other than POST (HTTP 405).
    NotPost,
}

/// The content types a Connect client may POST, for `Accept-Post`.
pub(crate) const ACCEPT_POST: &str = "application/proto, application/json, application/connect+proto, application/connect+json, application/grpc, application/grpc-web, application/grpc-web-text";

/// Tells what a request is from its method, content type and query.
pub(crate) fn shape(method: &Method, headers: &HeaderMap, query: Option<&str>) -> Shape {
    // Compared without allocating: every gRPC call passes here.
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim());
    let is = |t: &str, expected: &str| t.eq_ignore_ascii_case(expected);
    let starts = |t: &str, prefix: &str| {
        t.len() >= prefix.len()
            && t.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    let shape = match content_type {
        Some(t) if starts(t, "application/grpc") => Shape::Other,
        Some(t) if is(t, "application/proto") => Shape::Unary(Codec::Proto),
        Some(t) if is(t, "application/json") => Shape::Unary(Codec::Json),
        Some(t) if starts(t, "application/connect+") => {
            let codec = t
                .get("application/connect+".len()..)
                .unwrap_or_default()
                .to_ascii_lowercase();
            match Codec::named(&codec) {
                Some(codec) => Shape::Stream(codec),
                None => Shape::Unsupported,
            }
        }
        _ if *method == Method::GET
            && query.is_some_and(|q| q.split('&').any(|p| p.starts_with("encoding="))) =>
        {
            Shape::Get
        }
        // CORS preflights, and whatever else the inner layers answer.
        _ if *method != Method::POST => Shape::Other,
        _ => Shape::Unsupported,
    };
    match shape {
        Shape::Unary(_) | Shape::Stream(_) if *method != Method::POST => Shape::NotPost,
        shape => shape,
    }
}

/// The deadline a `connect-timeout-ms` header asks for: `None` without
/// one, an error naming the value when it is not 1 to 10 digits.
pub(crate) fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, ConnectError> {
    let Some(value) = headers.get("connect-timeout-ms") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConnectError::invalid(format!(
            "connect-timeout-ms `{}` is not a number of milliseconds (1 to 10 digits)",
            String::from_utf8_lossy(value.as_bytes())
        )));
    }
    let millis: u64 = text.parse().unwrap_or(u64::MAX);
    Ok(Some(Duration::from_millis(millis)))
}

/// Headers of a Connect request that are not the call's metadata.
fn is_protocol_header(name: &str) -> bool {
    name.starts_with("connect-")
        || name.starts_with("grpc-")
        || matches!(
            name,
            "content-type"
                | "content-length"
                | "content-encoding"
                | "accept"
                | "accept-encoding"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "transfer-encoding"
                | "upgrade"
                | "te"
                | "host"
        )
}

/// The headers of the gRPC request a Connect request with `headers`
/// becomes: its metadata (`authorization`, routing headers ...), the gRPC
/// content type, and `timeout` as `grpc-timeout`.
pub(crate) fn grpc_headers(headers: &HeaderMap, timeout: Option<Duration>) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len() + 3);
    for (name, value) in headers {
        if !is_protocol_header(name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    out.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(timeout) = timeout {
        // In milliseconds, as asked, while they fit gRPC's eight digits.
        let millis = timeout.as_millis();
        let value = if millis <= 99_999_999 && timeout.subsec_nanos() % 1_000_000 == 0 {
            HeaderValue::from_str(&format!("{millis}m")).ok()
        } else {
            None
        };
        out.insert(
            "grpc-timeout",
            value.unwrap_or_else(|| crate::metadata::format_timeout(timeout)),
        );
    }
    out
}

/// The gRPC request a Connect request (its `parts`) becomes, with `body`
/// (gRPC-framed messages) and `timeout`: POST to the same path (the query
/// dropped) and authority, HTTP/2, the metadata headers, the same
/// extensions and [`Protocol::Connect`](super::Protocol::Connect).
pub(crate) fn grpc_request(
    parts: http::request::Parts,
    body: tonic::body::Body,
    timeout: Option<Duration>,
) -> http::Request<tonic::body::Body> {
    let authority = parts.uri.authority().cloned().or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse().ok())
    });
    let mut uri = http::Uri::builder().path_and_query(parts.uri.path());
    if let Some(authority) = authority {
        uri = uri
            .scheme(
                parts
                    .uri
                    .scheme()
                    .cloned()
                    .unwrap_or(http::uri::Scheme::HTTP),
            )
            .authority(authority);
    }
    let mut request = http::Request::new(body);
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri.build().unwrap_or_default();
    *request.version_mut() = http::Version::HTTP_2;
    *request.headers_mut() = grpc_headers(&parts.headers, timeout);
    *request.extensions_mut() = parts.extensions;
    request.extensions_mut().insert(super::Protocol::Connect);
    request
}

/// The metadata in a gRPC response's headers or trailers: everything but
/// gRPC's and HTTP's own.
pub(crate) fn metadata(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let name_text = name.as_str();
        if !is_protocol_header(name_text) && name_text != "trailer" && name_text != "date" {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn requests_are_told_by_method_and_content_type() {
        let post = Method::POST;
        let cases = [
            ("application/proto", Shape::Unary(Codec::Proto)),
            ("application/json", Shape::Unary(Codec::Json)),
            ("application/json; charset=utf-8", Shape::Unary(Codec::Json)),
            ("application/connect+proto", Shape::Stream(Codec::Proto)),
            ("application/connect+json", Shape::Stream(Codec::Json)),
            ("application/connect+thrift", Shape::Unsupported),
            ("application/grpc", Shape::Other),
            ("application/grpc-web+proto", Shape::Other),
            ("Application/JSON", Shape::Unary(Codec::Json)),
            ("application/Connect+JSON", Shape::Stream(Codec::Json)),
            ("text/plain", Shape::Unsupported),
        ];
        for (content_type, expected) in cases {
            let map = headers(&[("content-type", content_type)]);
            assert_eq!(shape(&post, &map, None), expected, "{content_type}");
        }
        let none = HeaderMap::new();
        assert_eq!(
            shape(&Method::GET, &none, Some("encoding=json&message=%7B%7D")),
            Shape::Get
        );
        assert_eq!(shape(&Method::OPTIONS, &none, None), Shape::Other);
        let json = headers(&[("content-type", "application/json")]);
        assert_eq!(shape(&Method::PUT, &json, None), Shape::NotPost);
        assert_eq!(shape(&post, &none, None), Shape::Unsupported);
    }

    #[test]
    fn the_timeout_becomes_grpc_timeout_and_metadata_is_kept() {
        let map = headers(&[
            ("connect-timeout-ms", "1500"),
            ("connect-protocol-version", "1"),
            ("authorization", "Bearer x"),
            ("x-route-key", "k"),
            ("content-type", "application/json"),
            ("accept-encoding", "gzip"),
        ]);
        let timeout = timeout(&map).expect("valid");
        assert_eq!(timeout, Some(Duration::from_millis(1500)));
        let grpc = grpc_headers(&map, timeout);
        assert_eq!(grpc["grpc-timeout"], "1500m");
        assert_eq!(grpc["authorization"], "Bearer x");
        assert_eq!(grpc["x-route-key"], "k");
        assert_eq!(grpc["content-type"], "application/grpc");
        assert!(!grpc.contains_key("connect-protocol-version"));
        assert!(!grpc.contains_key("accept-encoding"));
    }

    #[test]
    fn the_grpc_request_keeps_path_authority_and_extensions() {
        let request = http::Request::post("/pkg.Svc/M?x=1")
            .header("host", "router.example:8080")
            .header("content-type", "application/json")
            .header("authorization", "Bearer t")
            .extension(7u32)
            .body(())
            .expect("request");
        let (parts, ()) = request.into_parts();
        let grpc = grpc_request(parts, tonic::body::Body::empty(), None);
        assert_eq!(grpc.uri(), "http://router.example:8080/pkg.Svc/M");
        assert_eq!(grpc.method(), Method::POST);
        assert_eq!(grpc.version(), http::Version::HTTP_2);
        assert_eq!(grpc.headers()["authorization"], "Bearer t");
        assert_eq!(grpc.headers()["content-type"], "application/grpc");
        assert_eq!(grpc.extensions().get::<u32>(), Some(&7));
        assert_eq!(
            grpc.extensions().get::<super::super::Protocol>(),
            Some(&super::super::Protocol::Connect)
        );
    }

    #[test]
    fn a_timeout_that_is_not_digits_is_named() {
        for bad in ["", "-1", "1.5", "12345678901", "soon"] {
            let map = headers(&[(
                "connect-timeout-ms",
                Box::leak(bad.to_owned().into_boxed_str()),
            )]);
            let error = timeout(&map).expect_err(bad);
            assert!(error.message.contains(bad), "{}", error.message);
        }
    }
}
