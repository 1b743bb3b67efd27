//! A conformance table for the Connect protocol on the router's clients'
//! listener. The Connect conformance suite's client-facing cases need its
//! runner and reference clients, which CI does not have; these cases are
//! derived from the spec (connectrpc.com/docs/protocol) instead, one row
//! each: content types, methods, the status mapping, envelopes,
//! end-of-stream messages, timeouts, GET, compression, errors, JSON. Each
//! row names the rule it checks; the test runs them all against one router
//! (the example's Greeter instance behind it) and prints the table with its
//! results, failing if any row fails.

use std::io::{Read, Write};
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use myservice::pb::{GreeterRouter, HelloReply, HelloRequest, StreamRequest};
use prost::Message;
use router_runtime::bridge::{BridgeConfig, BridgeHandle};
use router_runtime::router::RouterConfig;
use router_runtime::server::{Listener, RouterServer};
use serde_json::Value;
use test_kit::connect::{envelope, envelopes, send_h2};
use test_kit::grpc_web::send;
use test_kit::within;

/// HTTP/1.1 or HTTP/2 (prior knowledge).
#[derive(Clone, Copy, Debug)]
enum Http {
    H1,
    H2,
}

/// What a row expects besides the HTTP status.
enum Check {
    /// The body is this JSON.
    Json(&'static str),
    /// A Connect unary error with this code, its message containing the
    /// text.
    Error(&'static str, &'static str),
    /// A stream of this many messages, then an end-of-stream message with
    /// this error code (or none).
    Stream(usize, Option<&'static str>),
    /// Anything else.
    Custom(fn(&http::Response<Bytes>) -> Result<(), String>),
}

/// One row of the table.
struct Case {
    id: &'static str,
    rule: &'static str,
    http: Http,
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: fn() -> Vec<u8>,
    status: u16,
    check: Check,
}

const SAY_HELLO: &str = "/myservice.v1.Greeter/SayHello";
const STREAM: &str = "/myservice.v1.Greeter/StreamGreetings";
const JSON: &[(&str, &str)] = &[("content-type", "application/json")];
const PROTO: &[(&str, &str)] = &[("content-type", "application/proto")];
const STREAM_JSON: &[(&str, &str)] = &[("content-type", "application/connect+json")];
const STREAM_PROTO: &[(&str, &str)] = &[("content-type", "application/connect+proto")];

fn hello(name: &str, payload: usize) -> Vec<u8> {
    HelloRequest {
        name: name.into(),
        payload: vec![b'p'; payload],
    }
    .encode_to_vec()
}

fn stream_request(name: &str, count: u32, payload_size: u32) -> Vec<u8> {
    StreamRequest {
        name: name.into(),
        count,
        payload_size,
    }
    .encode_to_vec()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

fn gunzip(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .map_err(|e| format!("not gzip: {e}"))?;
    Ok(out)
}

fn header(response: &http::Response<Bytes>, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn json(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes)
        .map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// A `fail:<code>` unary JSON call and the status the spec gives the code.
macro_rules! status_row {
    ($code:literal, $name:literal, $status:literal) => {
        Case {
            id: concat!("unary-error-", $name),
            rule: concat!("gRPC code ", $code, " is `", $name, "` with HTTP ", $status),
            http: Http::H1,
            method: "POST",
            path: SAY_HELLO,
            headers: JSON,
            body: || {
                concat!(r#"{"name":"fail:"#, $code, r#""}"#)
                    .as_bytes()
                    .to_vec()
            },
            status: $status,
            check: Check::Error($name, "requested failure"),
        }
    };
}

/// The table.
fn cases() -> Vec<Case> {
    vec![
        // Unary: content types, codecs, HTTP versions.
        Case {
            id: "unary-json-h1",
            rule: "unary POST application/json: the response is the message in JSON, content type application/json",
            http: Http::H1,
            method: "POST",
            path: SAY_HELLO,
            headers: JSON,
            body: || br#"{"name":"Ada"}"#.to_vec(),
            status: 200,
            check: Check::Json(r#"{"message":"Hello, Ada!","instanceId":"conf"}"#),
        },
        Case {
            id: "unary-json-h2",
            rule: "the same over HTTP/2",
            http: Http::H2,
            method: "POST",
            path: SAY_HELLO,
            headers: JSON,
            body: || br#"{"name":"Ada"}"#.to_vec(),
            status: 200,
            check: Check::Json(r#"{"message":"Hello, Ada!","instanceId":"conf"}"#),
        },
        Case {
            id: "unary-json-charset",
            rule: "application/json with a charset parameter is JSON",
            http: Http::H1,
            method: "POST",
            path: SAY_HELLO,
            headers: &[("content-type", "application/json; charset=utf-8")],
            body: || br#"{"name":"Ada"}"#.to_vec(),
            status: 200,
            check: Check::Json(r#"{"message":"Hello, Ada!","instanceId":"conf"}"#),
        },
        Case {
            id: "unary-json-empty-body",
            rule: "an empty JSON body is the empty message",
            http: Http::H1,
            method: "POST",
            path: SAY_HELLO,
            headers: JSON,
            body: Vec::new,
            status: 200,
            check: Check::Json(r#"{"message":"Hello, !","instanceId":"conf"}"#),
        },
        Case {
            id: "unary-json-well-known-type",
            rule: "google.protobuf.Empty input is `{}` in JSON",
            http: Http::H1,
            method: "POST",
            path: "/myservice.v1.Greeter/WhoAmI",
            headers: JSON,
            body: || b"{}".to_vec(),
            status: 200,
            check: Check::Json(r#"{"instanceId":"conf"}"#),
        },
        Case {
            id: "unary-proto-h1",
            rule: "unary POST application/proto: the response is the binary message, content type application/proto",
            http: Http::H1,
            method: "POST",
            path: SAY_HELLO,
            headers: &[
                ("content-type", "application/proto"),
                ("connect-protocol-version", "1"),
            ],
            body: || hello("Lin", 0),
            status: 200,
            check: Check::Custom(|r| {
                if header(r, "content-type") != "application/proto" {
                    return Err(format!("content type {}", header(r, "content-type")));
                }
                let reply = HelloReply::decode(r.body().clone()).map_err(|e| e.to_string())?;
                (reply.message == "Hello, Lin!")
                    .then_some(())
                    .ok_or(reply.message)
            }),
        },
        Case {
            id: "unary-proto-h2",
            rule: "the same over HTTP/2",
            http: Http::H2,
            method: "POST",
            path: SAY_HELLO,
            headers: PROTO,
            body: || hello("Lin", 0),
            status: 200,
            check: Check::Custom(|r| {
                HelloReply::decode(r.body().clone())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }),
        },
        Case {
            id: "unary-metadata",
            rule: "request headers are metadata; response metadata comes back as headers",
            http: Http::H1,
            method: "POST",
            path: SAY_HELLO,
            headers: &[
                ("content-type", "application/json"),
                ("x-echo", "1"),
                ("x-tenant", "t-1"),
            ],
            body: || br#"{"name":"m"}"#.to_vec(),
            status: 200,
            check: Check::Custom(|r| {
                (header(r, "x-tenant") == "t-1")
                    .then_some(())
                    .ok_or(format!("{:?}", r.headers()))
            }),
        },
        // Errors: the status mapping table of the spec.
        status_row!(1, "canceled", 499),
        status_row!(2, "unknown", 500),
        status_row!(3, "invalid_argument", 400),
        status_row!(4, "deadline_exceeded", 504),
        status_row!(5, "not_found", 404),
        status_row!(6, "already_exists", 409),
        status_row!(7, "permission_denied", 403),
        status_row!(8, "resource_exhausted", 429),
        status_row!(9, "failed_precondition", 400),
        status_row!(10, "aborted", 409),
        status_row!(11, "out_of_range", 400),
        status_row!(12, "unimplemented", 501),
        status_row!(13, "internal", 500),
        status_row!(14, "unavailable", 503),
        status_row!(15, "data_loss", 500),
        status_row!(16, "unauthenticated", 401),
        Case {
            id: "unary-error-content-type",
            rule: "a unary error body is application/json whatever the request's codec",
            http: Http::H1,
            method: "POST",
            path: SAY_HELLO,
            headers: PROTO,
            body: || hello("fail:5", 0),
            status: 404,
            check: Check::Custom(|r| {
                let ct = header(r, "content-type");
                (ct == "application/json").then_some(()).ok_or(ct)?;
                let error = json(r.body())?;
                (error["code"] == "not_found")
                    .then_some(())
                    .ok_or(error.to_string())
            }),
        },
        // Bad input.
        Case {
            id: "unary-unknown-field",
            rule: "a JSON field the message does not have is invalid_argument naming it",
            http: Http::H1,
            method: "POST",
            path: SAY_HELLO,
            headers: JSON,
            body: || br#"{"name":"x","nickname":"y"}"#.to_vec(),
            status: 400,
            check: Check::Error("invalid_argument", "nickname"),
        },
        Case {
            id: "unary-malformed-json",
            rule: "malformed JSON is invalid_argument naming the message type",
            http: Http::H1,
            method: "POST",
            path: SAY_HELLO,
            headers: JSON,
            body: || br#"{"name":"#.to_vec(),
            status: 400,
            check: Check::Error("invalid_argument", "myservice.v1.HelloRequest"),
        },
        Case {
            id: "unary-json-wrong-type",
            rule: "a JSON value of the wrong type is invalid_argument",
            http: Http::H1,
            method: "POST",
            path: SAY_HELLO,
            headers: JSON,
            body: || br#"{"name":5}"#.to_vec(),
            status: 400,
            check: Check::Error("invalid_argument", "HelloRequest"),
        },
        Case {
            id: "unary-unsupported-content-type",
            rule: "a content type the server does not speak is HTTP 415",
            http: Http::H1,
            method: "POST",
            path: SAY_HELLO,
            headers: &[("content-type", "text/plain")],
            body: || b"hello".to_vec(),
            status: 415,
            check: Check::Custom(|r| {
                header(r, "accept-post")
                    .contains("application/json")
                    .then_some(())
                    .ok_or(header(r, "accept-post"))
            }),
        },
        Case {
            id: "stream-unsupported-codec",
            rule: "application/connect+<codec> with an unknown codec is HTTP 415",
            http: Http::H1,
            method: "POST",
            path: STREAM,
            headers: &[("content-type", "application/connect+thrift")],
            body: Vec::new,
            status: 415,
            check: Check::Custom(|_| Ok(())),
        },
        Case {
            id: "unary-not-post",
            rule: "unary calls are POST (or GET): another method is HTTP 405",
            http: Http::H1,
            method: "PUT",
            path: SAY_HELLO,
            headers: JSON,
            body: || b"{}".to_vec(),
            status: 405,
            check: Check::Custom(|r| {
                (header(r, "allow") == "POST")
                    .then_some(())
                    .ok_or(header(r, "allow"))
            }),
        },
        Case {
            id: "unary-unknown-method",
            rule: "a method the service lacks is unimplemented (501)",
            http: Http::H1,
            method: "POST",
            path: "/myservice.v1.Greeter/Nope",
            headers: JSON,
            body: || b"{}".to_vec(),
            status: 501,
            check: Check::Error("unimplemented", "Nope"),
        },
        Case {
            id: "unary-unknown-service-json",
            rule: "JSON for a service the router has no descriptor of is unimplemented, saying why",
            http: Http::H1,
            method: "POST",
            path: "/nowhere.v1.Ghost/Boo",
            headers: JSON,
            body: || b"{}".to_vec(),
            status: 501,
            check: Check::Error("unimplemented", "no descriptor"),
        },
        Case {
            id: "unary-unknown-service-proto",
            rule: "protobuf for an unknown service is routed, and the router's unimplemented comes back",
            http: Http::H1,
            method: "POST",
            path: "/nowhere.v1.Ghost/Boo",
            headers: PROTO,
            body: Vec::new,
            status: 501,
            check: Check::Error("unimplemented", ""),
        },
        Case {
            id: "unary-protocol-on-stream-method",
            rule: "the unary protocol on a method that answers several messages is an error, not a truncated answer",
            http: Http::H1,
            method: "POST",
            path: STREAM,
            headers: JSON,
            body: || br#"{"name":"x","count":2}"#.to_vec(),
            status: 501,
            check: Check::Error("unimplemented", "streams"),
        },
        // Timeouts.
        Case {
            id: "timeout-valid",
            rule: "connect-timeout-ms is the deadline; a call within it succeeds",
            http: Http::H1,
            method: "POST",
            path: SAY_HELLO,
            headers: &[
                ("content-type", "application/json"),
                ("connect-timeout-ms", "5000"),
            ],
            body: || br#"{"name":"t"}"#.to_vec(),
            status: 200,
            check: Check::Custom(|_| Ok(())),
        },
        Case {
            id: "timeout-expired",
            rule: "a deadline that passes is deadline_exceeded (504)",
            http: Http::H1,
            method: "POST",
            path: SAY_HELLO,
            headers: &[
                ("content-type", "application/json"),
                ("connect-timeout-ms", "0"),
            ],
            body: || br#"{"name":"t"}"#.to_vec(),
            status: 504,
            check: Check::Error("deadline_exceeded", ""),
        },
        Case {
            id: "timeout-invalid",
            rule: "connect-timeout-ms that is not 1 to 10 digits is invalid_argument",
            http: Http::H1,
            method: "POST",
            path: SAY_HELLO,
            headers: &[
                ("content-type", "application/json"),
                ("connect-timeout-ms", "12345678901"),
            ],
            body: || br#"{"name":"t"}"#.to_vec(),
            status: 400,
            check: Check::Error("invalid_argument", "connect-timeout-ms"),
        },
        // Compression.
        Case {
            id: "unary-gzip-request",
            rule: "content-encoding: gzip bodies are read",
            http: Http::H1,
            method: "POST",
            path: SAY_HELLO,
            headers: &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            body: || gzip(br#"{"name":"Zip"}"#),
            status: 200,
            check: Check::Json(r#"{"message":"Hello, Zip!","instanceId":"conf"}"#),
        },
        Case {
            id: "unary-gzip-response",
            rule: "accept-encoding: gzip gets a gzip body with content-encoding: gzip",
            http: Http::H2,
            method: "POST",
            path: SAY_HELLO,
            headers: &[
                ("content-type", "application/proto"),
                ("accept-encoding", "gzip"),
            ],
            body: || hello("big", 8192),
            status: 200,
            check: Check::Custom(|r| {
                (header(r, "content-encoding") == "gzip")
                    .then_some(())
                    .ok_or(header(r, "content-encoding"))?;
                let reply =
                    HelloReply::decode(&gunzip(r.body())?[..]).map_err(|e| e.to_string())?;
                (reply.payload.len() == 8192)
                    .then_some(())
                    .ok_or(reply.payload.len().to_string())
            }),
        },
        Case {
            id: "unary-identity-response",
            rule: "without accept-encoding the answer is not compressed",
            http: Http::H1,
            method: "POST",
            path: SAY_HELLO,
            headers: PROTO,
            body: || hello("big", 8192),
            status: 200,
            check: Check::Custom(|r| {
                header(r, "content-encoding")
                    .is_empty()
                    .then_some(())
                    .ok_or(header(r, "content-encoding"))
            }),
        },
        Case {
            id: "unary-unknown-compression",
            rule: "an unsupported content-encoding is unimplemented, with accept-encoding listing what is",
            http: Http::H1,
            method: "POST",
            path: SAY_HELLO,
            headers: &[
                ("content-type", "application/json"),
                ("content-encoding", "br"),
            ],
            body: || b"{}".to_vec(),
            status: 501,
            check: Check::Custom(|r| {
                (header(r, "accept-encoding") == "gzip")
                    .then_some(())
                    .ok_or(header(r, "accept-encoding"))
            }),
        },
        // GET.
        Case {
            id: "get-json",
            rule: "GET with encoding=json&message=<url-encoded JSON> calls a NO_SIDE_EFFECTS method",
            http: Http::H1,
            method: "GET",
            path: "/myservice.v1.Greeter/WhoAmI?connect=v1&encoding=json&message=%7B%7D",
            headers: &[],
            body: Vec::new,
            status: 200,
            check: Check::Json(r#"{"instanceId":"conf"}"#),
        },
        Case {
            id: "get-proto-base64",
            rule: "GET with encoding=proto&base64=1 (URL-safe base64 message)",
            http: Http::H2,
            method: "GET",
            path: "/myservice.v1.Greeter/WhoAmI?encoding=proto&base64=1&message=",
            headers: &[],
            body: Vec::new,
            status: 200,
            check: Check::Custom(|r| {
                (header(r, "content-type") == "application/proto")
                    .then_some(())
                    .ok_or(header(r, "content-type"))
            }),
        },
        Case {
            id: "get-standard-base64",
            rule: "GET with standard base64 (`+`, `/`, padding) is read as well as URL-safe",
            http: Http::H1,
            method: "GET",
            // An Empty with an unknown varint field 1: 08 8f bf 01.
            path: "/myservice.v1.Greeter/WhoAmI?encoding=proto&base64=1&message=CI%2B%2FAQ%3D%3D",
            headers: &[],
            body: Vec::new,
            status: 200,
            check: Check::Custom(|_| Ok(())),
        },
        Case {
            id: "get-gzip",
            rule: "GET with compression=gzip: the message is gzip, base64 URL-safe",
            http: Http::H1,
            method: "GET",
            // gzip of `{}`, URL-safe base64 without padding.
            path: "/myservice.v1.Greeter/WhoAmI?encoding=json&base64=1&compression=gzip&message=H4sIAAAAAAACA6uuBQBDv6ajAgAAAA",
            headers: &[],
            body: Vec::new,
            status: 200,
            check: Check::Json(r#"{"instanceId":"conf"}"#),
        },
        Case {
            id: "get-side-effects",
            rule: "GET of a method without NO_SIDE_EFFECTS is refused (405, Allow: POST)",
            http: Http::H1,
            method: "GET",
            path: "/myservice.v1.Greeter/SayHello?encoding=json&message=%7B%7D",
            headers: &[],
            body: Vec::new,
            status: 405,
            check: Check::Custom(|r| {
                (header(r, "allow") == "POST")
                    .then_some(())
                    .ok_or(header(r, "allow"))
            }),
        },
        Case {
            id: "get-bad-encoding",
            rule: "GET with an unknown encoding is invalid_argument",
            http: Http::H1,
            method: "GET",
            path: "/myservice.v1.Greeter/WhoAmI?encoding=xml&message=x",
            headers: &[],
            body: Vec::new,
            status: 400,
            check: Check::Error("invalid_argument", "xml"),
        },
        // Streams.
        Case {
            id: "stream-json",
            rule: "application/connect+json: messages in envelopes (flag 0), then the end-of-stream envelope (flag 2) `{}`",
            http: Http::H1,
            method: "POST",
            path: STREAM,
            headers: STREAM_JSON,
            body: || envelope(0, br#"{"name":"s","count":3}"#),
            status: 200,
            check: Check::Stream(3, None),
        },
        Case {
            id: "stream-proto-h2",
            rule: "application/connect+proto over HTTP/2",
            http: Http::H2,
            method: "POST",
            path: STREAM,
            headers: STREAM_PROTO,
            body: || envelope(0, &stream_request("s", 2, 0)),
            status: 200,
            check: Check::Stream(2, None),
        },
        Case {
            id: "stream-error",
            rule: "a stream's error is in the end-of-stream message, with HTTP 200",
            http: Http::H1,
            method: "POST",
            path: STREAM,
            headers: STREAM_PROTO,
            body: || envelope(0, &stream_request("fail:5", 1, 0)),
            status: 200,
            check: Check::Stream(0, Some("not_found")),
        },
        Case {
            id: "stream-client-streaming-int64",
            rule: "client streaming over HTTP/1.1; int64 fields are JSON strings",
            http: Http::H1,
            method: "POST",
            path: "/myservice.v1.Greeter/Sum",
            headers: STREAM_JSON,
            body: || {
                let mut body = envelope(0, br#"{"value":"1"}"#);
                body.extend(envelope(0, br#"{"value":2}"#));
                body.extend(envelope(0, br#"{"value":"3"}"#));
                body
            },
            status: 200,
            check: Check::Custom(|r| {
                let frames = envelopes(r.body().clone());
                let reply = json(&frames.first().ok_or("no message")?.1)?;
                (reply["total"] == "6" && reply["count"] == "3")
                    .then_some(())
                    .ok_or(reply.to_string())
            }),
        },
        Case {
            id: "stream-bidi-h2",
            rule: "bidirectional streaming over HTTP/2 (half duplex); uint64 fields are JSON strings",
            http: Http::H2,
            method: "POST",
            path: "/myservice.v1.Greeter/Chat",
            headers: STREAM_JSON,
            body: || {
                let mut body = envelope(0, br#"{"text":"a","seq":"1"}"#);
                body.extend(envelope(0, br#"{"text":"b","seq":2}"#));
                body
            },
            status: 200,
            check: Check::Custom(|r| {
                let frames = envelopes(r.body().clone());
                let first = json(&frames.first().ok_or("no message")?.1)?;
                (frames.len() == 3 && first["seq"] == "1")
                    .then_some(())
                    .ok_or(format!("{frames:?}"))
            }),
        },
        Case {
            id: "stream-compressed-request",
            rule: "an envelope with flag 1 is compressed with connect-content-encoding",
            http: Http::H1,
            method: "POST",
            path: STREAM,
            headers: &[
                ("content-type", "application/connect+json"),
                ("connect-content-encoding", "gzip"),
            ],
            body: || envelope(1, &gzip(br#"{"name":"z","count":1}"#)),
            status: 200,
            check: Check::Stream(1, None),
        },
        Case {
            id: "stream-compressed-response",
            rule: "connect-accept-encoding: gzip gets compressed envelopes (flag 1) and connect-content-encoding: gzip",
            http: Http::H1,
            method: "POST",
            path: STREAM,
            headers: &[
                ("content-type", "application/connect+proto"),
                ("connect-accept-encoding", "gzip"),
            ],
            body: || envelope(0, &stream_request("z", 2, 4096)),
            status: 200,
            check: Check::Custom(|r| {
                (header(r, "connect-content-encoding") == "gzip")
                    .then_some(())
                    .ok_or(header(r, "connect-content-encoding"))?;
                let frames = envelopes(r.body().clone());
                for (flags, data) in &frames[..frames.len() - 1] {
                    if *flags != 1 {
                        return Err(format!("flags {flags}"));
                    }
                    HelloReply::decode(&gunzip(data)?[..]).map_err(|e| e.to_string())?;
                }
                Ok(())
            }),
        },
        Case {
            id: "stream-compressed-flag-without-encoding",
            rule: "a compressed envelope without connect-content-encoding is invalid_argument",
            http: Http::H1,
            method: "POST",
            path: STREAM,
            headers: STREAM_JSON,
            body: || envelope(1, &gzip(br#"{"name":"z","count":1}"#)),
            status: 200,
            check: Check::Stream(0, Some("invalid_argument")),
        },
        Case {
            id: "stream-unknown-compression",
            rule: "an unsupported connect-content-encoding is unimplemented",
            http: Http::H1,
            method: "POST",
            path: STREAM,
            headers: &[
                ("content-type", "application/connect+json"),
                ("connect-content-encoding", "br"),
            ],
            body: || envelope(0, br#"{"name":"z","count":1}"#),
            status: 200,
            check: Check::Stream(0, Some("unimplemented")),
        },
        Case {
            id: "stream-end-flag-from-client",
            rule: "a client's envelope with the end-of-stream flag is invalid_argument",
            http: Http::H1,
            method: "POST",
            path: STREAM,
            headers: STREAM_PROTO,
            body: || envelope(2, &stream_request("x", 1, 0)),
            status: 200,
            check: Check::Stream(0, Some("invalid_argument")),
        },
        Case {
            id: "stream-truncated-envelope",
            rule: "a request body ending inside an envelope is invalid_argument",
            http: Http::H1,
            method: "POST",
            path: STREAM,
            headers: STREAM_PROTO,
            body: || {
                let mut body = envelope(0, &stream_request("x", 1, 0));
                body.truncate(body.len() - 1);
                body
            },
            status: 200,
            check: Check::Stream(0, Some("invalid_argument")),
        },
        Case {
            id: "stream-unknown-field",
            rule: "an unknown JSON field in a stream's message is invalid_argument naming it",
            http: Http::H1,
            method: "POST",
            path: STREAM,
            headers: STREAM_JSON,
            body: || envelope(0, br#"{"name":"x","colour":"red"}"#),
            status: 200,
            check: Check::Stream(0, Some("invalid_argument")),
        },
    ]
}

/// The router: the example's Greeter with Connect, `WhoAmI` declared
/// NO_SIDE_EFFECTS (so GET applies), one instance `conf`.
async fn start() -> (
    SocketAddr,
    GreeterRouter,
    BridgeHandle,
    tokio::sync::oneshot::Sender<()>,
) {
    use router_runtime::descriptor::ServiceSpec;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let router = GreeterRouter::new(RouterConfig::default());
    let server = RouterServer::new("conformance")
        .route(&router)
        .connect(true)
        .grpc_web(true);
    let mut set = prost_types::FileDescriptorSet::decode(
        <myservice::pb::GreeterSpec as ServiceSpec>::FILE_DESCRIPTOR_SET,
    )
    .expect("the Greeter's set");
    for method in set
        .file
        .iter_mut()
        .flat_map(|f| f.service.iter_mut())
        .flat_map(|s| s.method.iter_mut())
        .filter(|m| m.name() == "WhoAmI")
    {
        method
            .options
            .get_or_insert_with(Default::default)
            .set_idempotency_level(prost_types::method_options::IdempotencyLevel::NoSideEffects);
    }
    server.catalog().add_set(set).expect("a valid set");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(Listener::from_tcp(listener), None, async {
        let _ = stopped.await;
    }));
    let instance = myservice::demo::start_instance(
        BridgeConfig::new(format!("http://{addr}")).instance_id("conf"),
    );
    within(
        10,
        "the instance to register",
        router.registry().wait_until(|n| n >= 1),
    )
    .await;
    (addr, router, instance, stop)
}

/// Runs one row; the error says what differed.
async fn run(addr: SocketAddr, case: &Case) -> Result<(), String> {
    let mut request = http::Request::builder()
        .method(case.method)
        .uri(format!("http://{addr}{}", case.path));
    for (name, value) in case.headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from((case.body)())))
        .map_err(|e| e.to_string())?;
    let response = match case.http {
        Http::H1 => send(request).await,
        Http::H2 => send_h2(request).await,
    };
    if response.status().as_u16() != case.status {
        return Err(format!(
            "HTTP {} (expected {}): {}",
            response.status(),
            case.status,
            String::from_utf8_lossy(response.body())
        ));
    }
    match &case.check {
        Check::Json(expected) => {
            let expected: Value = serde_json::from_str(expected).map_err(|e| e.to_string())?;
            let found = json(response.body())?;
            (found == expected)
                .then_some(())
                .ok_or(format!("body {found}"))
        }
        Check::Error(code, contains) => {
            let error = json(response.body())?;
            if error["code"] != *code {
                return Err(format!("error {error}"));
            }
            let message = error["message"].as_str().unwrap_or_default();
            message
                .contains(contains)
                .then_some(())
                .ok_or(format!("message `{message}` lacks `{contains}`"))
        }
        Check::Stream(messages, error) => {
            let frames = envelopes(response.body().clone());
            let (end, data) = frames.split_last().ok_or("no envelope")?;
            if end.0 != 2 || data.iter().any(|(flags, _)| *flags & 2 != 0) {
                return Err(format!("envelope flags {frames:?}"));
            }
            if data.len() != *messages {
                return Err(format!("{} messages, not {messages}", data.len()));
            }
            let end = json(&end.1)?;
            let code = end["error"]["code"].as_str();
            (code == *error)
                .then_some(())
                .ok_or(format!("end of stream {end}"))
        }
        Check::Custom(check) => check(&response),
    }
}

#[tokio::test]
async fn every_case_derived_from_the_connect_spec_passes() {
    let (addr, _router, _instance, _stop) = start().await;
    let cases = cases();
    let mut failed = Vec::new();
    println!("| case | http | rule | result |\n|---|---|---|---|");
    for case in &cases {
        let result = run(addr, case).await;
        println!(
            "| {} | {:?} | {} | {} |",
            case.id,
            case.http,
            case.rule,
            match &result {
                Ok(()) => "pass".to_owned(),
                Err(e) => format!("FAIL: {e}"),
            }
        );
        if let Err(e) = result {
            failed.push(format!("{}: {e}", case.id));
        }
    }
    println!(
        "{} of {} cases pass",
        cases.len() - failed.len(),
        cases.len()
    );
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
}
