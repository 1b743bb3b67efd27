//! The Connect protocol through the router (`RouterServer::connect`): unary
//! calls in protobuf and JSON over HTTP/1.1 and HTTP/2, GET for methods
//! without side effects, server streams in envelopes with the
//! end-of-stream message, errors as Connect JSON with the spec's HTTP
//! status, `connect-timeout-ms` as the deadline, gzip, the pin header, and
//! hostile clients (an oversize body, a bad envelope, one that stops
//! reading a stream, then leaves). The instance behind sees an ordinary
//! gRPC call with a protobuf message.

use std::io::{Read, Write};
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use myservice::pb::{GreeterRouter, HelloReply, HelloRequest, StreamRequest};
use prost::Message;
use router_runtime::bridge::{BridgeConfig, BridgeHandle};
use router_runtime::router::RouterConfig;
use router_runtime::server::{Listener, RouterServer};
use serde_json::{Value, json};
use test_kit::connect::{envelope, envelopes, send_h2};
use test_kit::grpc_web::send;
use test_kit::test_greeter::{Event, TestGreeter};
use test_kit::within;
use tokio::sync::oneshot;

const SAY_HELLO: &str = "/myservice.v1.Greeter/SayHello";
const STREAM: &str = "/myservice.v1.Greeter/StreamGreetings";

/// A router with Connect on a free port and its instances.
struct ConnectRouter {
    addr: SocketAddr,
    router: GreeterRouter,
    _instances: Vec<BridgeHandle>,
    _stop: oneshot::Sender<()>,
}

impl ConnectRouter {
    /// The example's router (which serves Connect) with the example's
    /// instance `c-a`.
    async fn example() -> ConnectRouter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let router = GreeterRouter::new(RouterConfig::default());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(myservice::demo::serve_router(
            router.clone(),
            listener,
            async {
                let _ = stopped.await;
            },
        ));
        let instance = myservice::demo::start_instance(
            BridgeConfig::new(format!("http://{addr}")).instance_id("c-a"),
        );
        let started = ConnectRouter {
            addr,
            router,
            _instances: vec![instance],
            _stop: stop,
        };
        started.wait_for(1).await;
        started
    }

    /// A `RouterServer` with Connect, changed by `build`, and a
    /// [`TestGreeter`] instance for each id; returns its events too.
    async fn test_greeters(
        config: RouterConfig,
        ids: &[&str],
        build: impl FnOnce(RouterServer) -> RouterServer,
    ) -> (ConnectRouter, tokio::sync::mpsc::UnboundedReceiver<Event>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let router = GreeterRouter::new(config);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = build(RouterServer::new("connect").route(&router).connect(true));
        tokio::spawn(server.serve(Listener::from_tcp(listener), None, async {
            let _ = stopped.await;
        }));
        let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
        let mut instances = Vec::new();
        for id in ids {
            let mut greeter = TestGreeter::new(id).0;
            greeter.events = events_tx.clone();
            instances.push(
                myservice::pb::GreeterBridge::new(greeter)
                    .connect(BridgeConfig::new(format!("http://{addr}")).instance_id(*id)),
            );
        }
        let started = ConnectRouter {
            addr,
            router,
            _instances: instances,
            _stop: stop,
        };
        started.wait_for(ids.len()).await;
        (started, events)
    }

    async fn wait_for(&self, n: usize) {
        within(
            10,
            "the instances to register",
            self.router.registry().wait_until(|have| have >= n),
        )
        .await;
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A POST of `body` to `path` with `content_type` and `headers`.
    fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::post(self.url(path)).header("content-type", content_type);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(Full::new(body.into())).expect("request")
    }
}

fn json_of(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

fn header<'a>(response: &'a http::Response<Bytes>, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

#[tokio::test]
async fn a_json_unary_call_over_http1_is_transcoded_to_protobuf_and_back() {
    let router = ConnectRouter::example().await;
    let answer = send(router.post(SAY_HELLO, "application/json", r#"{"name":"Ada"}"#, &[])).await;
    assert_eq!(answer.status(), http::StatusCode::OK, "{answer:?}");
    assert_eq!(header(&answer, "content-type"), "application/json");
    assert_eq!(
        json_of(answer.body()),
        json!({"message": "Hello, Ada!", "instanceId": "c-a"})
    );
}

#[tokio::test]
async fn a_proto_unary_call_over_http2_reaches_the_instance_with_its_metadata_back() {
    let router = ConnectRouter::example().await;
    let request = HelloRequest {
        name: "Lin".into(),
        payload: vec![],
    };
    let answer = send_h2(router.post(
        SAY_HELLO,
        "application/proto",
        request.encode_to_vec(),
        &[
            ("connect-protocol-version", "1"),
            ("x-echo", "1"),
            ("x-note", "kept"),
        ],
    ))
    .await;
    assert_eq!(answer.status(), http::StatusCode::OK, "{answer:?}");
    assert_eq!(header(&answer, "content-type"), "application/proto");
    assert_eq!(header(&answer, "x-note"), "kept", "metadata both ways");
    let reply = HelloReply::decode(answer.into_body()).expect("a HelloReply");
    assert_eq!(reply.message, "Hello, Lin!");
    assert_eq!(reply.instance_id, "c-a");
}

#[tokio::test]
async fn a_json_server_stream_delivers_every_message_then_the_end_of_stream() {
    let router = ConnectRouter::example().await;
    for h2 in [false, true] {
        let request = router.post(
            STREAM,
            "application/connect+json",
            envelope(0, br#"{"name":"Grace","count":3}"#),
            &[],
        );
        let answer = if h2 {
            send_h2(request).await
        } else {
            send(request).await
        };
        assert_eq!(answer.status(), http::StatusCode::OK);
        assert_eq!(header(&answer, "content-type"), "application/connect+json");
        let frames = envelopes(answer.into_body());
        assert_eq!(frames.len(), 4, "three messages and the end: {frames:?}");
        for (i, (flags, data)) in frames[..3].iter().enumerate() {
            assert_eq!(*flags, 0);
            assert_eq!(
                json_of(data),
                json!({"message": format!("Hello #{i}, Grace!"), "instanceId": "c-a"})
            );
        }
        assert_eq!(frames[3].0, 2, "the end-of-stream flag");
        assert_eq!(json_of(&frames[3].1), json!({}));
    }
}

#[tokio::test]
async fn a_failed_server_stream_ends_with_the_error_in_the_end_of_stream_message() {
    let router = ConnectRouter::example().await;
    let request = StreamRequest {
        name: "fail:7".into(),
        count: 1,
        payload_size: 0,
    };
    let answer = send(router.post(
        STREAM,
        "application/connect+proto",
        envelope(0, &request.encode_to_vec()),
        &[],
    ))
    .await;
    assert_eq!(
        answer.status(),
        http::StatusCode::OK,
        "stream errors are not HTTP errors"
    );
    let frames = envelopes(answer.into_body());
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].0, 2);
    let end = json_of(&frames[0].1);
    assert_eq!(end["error"]["code"], "permission_denied", "{end}");
    assert_eq!(
        end["error"]["message"],
        myservice::greeter::REQUESTED_FAILURE
    );
}

#[tokio::test]
async fn an_instances_error_is_connect_json_with_the_specs_http_status() {
    let router = ConnectRouter::example().await;
    let table = [
        (1, "canceled", 499),
        (3, "invalid_argument", 400),
        (5, "not_found", 404),
        (7, "permission_denied", 403),
        (8, "resource_exhausted", 429),
        (9, "failed_precondition", 400),
        (12, "unimplemented", 501),
        (13, "internal", 500),
        (14, "unavailable", 503),
        (16, "unauthenticated", 401),
    ];
    for (code, name, status) in table {
        let body = format!(r#"{{"name":"fail:{code}"}}"#);
        let answer = send(router.post(SAY_HELLO, "application/json", body, &[])).await;
        assert_eq!(answer.status().as_u16(), status, "{name}");
        assert_eq!(header(&answer, "content-type"), "application/json");
        let error = json_of(answer.body());
        assert_eq!(error["code"], name);
        assert_eq!(error["message"], myservice::greeter::REQUESTED_FAILURE);
    }
}

#[tokio::test]
async fn trailers_of_a_failed_call_reach_the_connect_client_as_headers() {
    let (router, _events) =
        ConnectRouter::test_greeters(RouterConfig::default(), &["t"], |s| s).await;
    let answer =
        send(router.post(SAY_HELLO, "application/json", r#"{"name":"status:6"}"#, &[])).await;
    assert_eq!(answer.status().as_u16(), 409);
    assert_eq!(header(&answer, "x-trailer"), "trailing value");
    let error = json_of(answer.body());
    assert_eq!(error["code"], "already_exists");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("ünïcode, 100% \"quoted\""), "{message}");
}

#[tokio::test]
async fn status_details_reach_the_connect_client_as_type_and_unpadded_base64() {
    use base64::Engine as _;
    let (router, _events) =
        ConnectRouter::test_greeters(RouterConfig::default(), &["d"], |s| s).await;
    let answer = send(router.post(
        SAY_HELLO,
        "application/json",
        r#"{"name":"details:QUOTA"}"#,
        &[],
    ))
    .await;
    assert_eq!(answer.status().as_u16(), 400, "failed_precondition is 400");
    let error = json_of(answer.body());
    assert_eq!(error["code"], "failed_precondition");
    assert_eq!(error["message"], "with details");
    let details = error["details"].as_array().expect("details");
    assert_eq!(details.len(), 1, "{error}");
    assert_eq!(details[0]["type"], "google.rpc.ErrorInfo");
    let value = details[0]["value"].as_str().expect("a value");
    assert!(!value.ends_with('='), "unpadded: {value}");
    let info = test_kit::test_greeter::ErrorInfo::decode(
        &base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(value)
            .expect("base64")[..],
    )
    .expect("an ErrorInfo");
    assert_eq!(info.reason, "QUOTA");
    assert_eq!(info.domain, "test.example");
}

#[tokio::test]
async fn a_browser_on_an_allowed_origin_gets_its_connect_preflight_answered_and_reads_the_answer() {
    let cors = router_runtime::server::Cors::new(["http://app.example:8080"]).expect("an origin");
    let (router, _events) =
        ConnectRouter::test_greeters(RouterConfig::default(), &["b"], |s| s.cors(cors)).await;
    let preflight = http::Request::builder()
        .method(http::Method::OPTIONS)
        .uri(router.url(SAY_HELLO))
        .header("origin", "http://app.example:8080")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,connect-protocol-version,connect-timeout-ms,authorization",
        )
        .body(Full::new(Bytes::new()))
        .expect("request");
    let answer = send(preflight).await;
    assert!(answer.status().is_success(), "{answer:?}");
    let allowed = header(&answer, "access-control-allow-headers").to_ascii_lowercase();
    for name in [
        "connect-protocol-version",
        "connect-timeout-ms",
        "authorization",
    ] {
        assert!(allowed.contains(name), "{allowed}");
    }
    let call = send(router.post(
        SAY_HELLO,
        "application/json",
        r#"{"name":"web"}"#,
        &[
            ("origin", "http://app.example:8080"),
            ("connect-protocol-version", "1"),
        ],
    ))
    .await;
    assert_eq!(call.status(), http::StatusCode::OK, "{call:?}");
    assert_eq!(
        header(&call, "access-control-allow-origin"),
        "http://app.example:8080"
    );
    assert_eq!(json_of(call.body())["instanceId"], "b");
}

#[tokio::test]
async fn connect_timeout_ms_is_the_deadline_and_its_expiry_is_deadline_exceeded() {
    let (router, _events) =
        ConnectRouter::test_greeters(RouterConfig::default(), &["t"], |s| s).await;
    let started = std::time::Instant::now();
    let answer = send(router.post(
        SAY_HELLO,
        "application/json",
        r#"{"name":"slow:5000"}"#,
        &[("connect-timeout-ms", "200")],
    ))
    .await;
    assert_eq!(answer.status().as_u16(), 504, "{answer:?}");
    assert_eq!(json_of(answer.body())["code"], "deadline_exceeded");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));

    let bad = send(router.post(
        SAY_HELLO,
        "application/json",
        r#"{"name":"x"}"#,
        &[("connect-timeout-ms", "soon")],
    ))
    .await;
    assert_eq!(bad.status().as_u16(), 400);
    let message = json_of(bad.body())["message"].to_string();
    assert!(message.contains("connect-timeout-ms"), "{message}");
}

#[tokio::test]
async fn gzip_bodies_are_read_and_large_answers_sent_compressed_when_accepted() {
    let router = ConnectRouter::example().await;
    let request = HelloRequest {
        name: "Zip".into(),
        payload: vec![b'z'; 8192],
    };
    let answer = send(router.post(
        SAY_HELLO,
        "application/proto",
        gzip(&request.encode_to_vec()),
        &[("content-encoding", "gzip"), ("accept-encoding", "gzip")],
    ))
    .await;
    assert_eq!(answer.status(), http::StatusCode::OK, "{answer:?}");
    assert_eq!(header(&answer, "content-encoding"), "gzip");
    let reply = HelloReply::decode(&gunzip(answer.body())[..]).expect("a HelloReply");
    assert_eq!(reply.payload.len(), 8192);

    let unknown = send(router.post(
        SAY_HELLO,
        "application/proto",
        request.encode_to_vec(),
        &[("content-encoding", "br")],
    ))
    .await;
    assert_eq!(unknown.status().as_u16(), 501);
    assert_eq!(header(&unknown, "accept-encoding"), "gzip");
    assert_eq!(json_of(unknown.body())["code"], "unimplemented");
}

/// The Greeter's descriptor set with `WhoAmI` declared
/// `idempotency_level = NO_SIDE_EFFECTS` (the example's proto says only
/// `router.v1.idempotent`), as a service that allows GET would.
fn who_am_i_without_side_effects() -> prost_types::FileDescriptorSet {
    use router_runtime::descriptor::ServiceSpec;
    let mut set = prost_types::FileDescriptorSet::decode(
        <myservice::pb::GreeterSpec as ServiceSpec>::FILE_DESCRIPTOR_SET,
    )
    .expect("the Greeter's set");
    let method = set
        .file
        .iter_mut()
        .flat_map(|f| f.service.iter_mut())
        .filter(|s| s.name() == "Greeter")
        .flat_map(|s| s.method.iter_mut())
        .find(|m| m.name() == "WhoAmI")
        .expect("WhoAmI");
    let options = method.options.get_or_insert_with(Default::default);
    options.set_idempotency_level(prost_types::method_options::IdempotencyLevel::NoSideEffects);
    set
}

#[tokio::test]
async fn a_get_calls_a_method_without_side_effects_and_other_methods_must_post() {
    let (router, _events) =
        ConnectRouter::test_greeters(RouterConfig::default(), &["g"], |server| {
            server
                .catalog()
                .add_set(who_am_i_without_side_effects())
                .expect("a valid set");
            server
        })
        .await;
    let get = |query: &str| {
        http::Request::get(router.url(&format!("/myservice.v1.Greeter/WhoAmI?{query}")))
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let answer = send(get("connect=v1&encoding=json&message=%7B%7D")).await;
    assert_eq!(answer.status(), http::StatusCode::OK, "{answer:?}");
    assert_eq!(json_of(answer.body()), json!({"instanceId": "g"}));

    // The message in URL-safe base64, as proto (google.protobuf.Empty: no bytes).
    let answer = send_h2(get("encoding=proto&base64=1&message=")).await;
    assert_eq!(answer.status(), http::StatusCode::OK, "{answer:?}");

    let say_hello = http::Request::get(router.url(&format!(
        "{SAY_HELLO}?encoding=json&message=%7B%22name%22%3A%22x%22%7D"
    )))
    .body(Full::new(Bytes::new()))
    .expect("request");
    let refused = send(say_hello).await;
    assert_eq!(refused.status().as_u16(), 405);
    assert_eq!(header(&refused, "allow"), "POST");
}

#[tokio::test]
async fn unknown_fields_malformed_json_and_wrong_content_types_get_errors_naming_the_problem() {
    let router = ConnectRouter::example().await;
    let unknown = send(router.post(
        SAY_HELLO,
        "application/json",
        r#"{"name":"x","nickname":"y"}"#,
        &[],
    ))
    .await;
    assert_eq!(unknown.status().as_u16(), 400);
    let error = json_of(unknown.body());
    assert_eq!(error["code"], "invalid_argument");
    assert!(error["message"].to_string().contains("nickname"), "{error}");

    let malformed = send(router.post(SAY_HELLO, "application/json", r#"{"name":"#, &[])).await;
    assert_eq!(malformed.status().as_u16(), 400);
    let error = json_of(malformed.body());
    assert!(
        error["message"]
            .to_string()
            .contains("myservice.v1.HelloRequest"),
        "{error}"
    );

    let wrong_type = send(router.post(SAY_HELLO, "text/plain", "hello", &[])).await;
    assert_eq!(wrong_type.status().as_u16(), 415);
    assert!(header(&wrong_type, "accept-post").contains("application/json"));
    assert!(
        json_of(wrong_type.body())["message"]
            .to_string()
            .contains("text/plain")
    );
}

#[tokio::test]
async fn the_pin_header_routes_a_connect_call_as_it_routes_a_grpc_call() {
    let (router, _events) =
        ConnectRouter::test_greeters(RouterConfig::default(), &["p-a", "p-b"], |s| s).await;
    for _ in 0..4 {
        let answer = send(router.post(
            SAY_HELLO,
            "application/json",
            r#"{"name":"pin"}"#,
            &[(router_runtime::router::PIN_HEADER, "p-b")],
        ))
        .await;
        assert_eq!(answer.status(), http::StatusCode::OK, "{answer:?}");
        assert_eq!(json_of(answer.body())["instanceId"], "p-b");
    }
}

#[tokio::test]
async fn an_oversize_body_is_refused_resource_exhausted_naming_the_limit() {
    let config = RouterConfig {
        max_message_size: 1024,
        ..RouterConfig::default()
    };
    let (router, _events) = ConnectRouter::test_greeters(config, &["o"], |s| s).await;
    let big = HelloRequest {
        name: "big".into(),
        payload: vec![1; 4096],
    };
    for content_type in ["application/proto", "application/json"] {
        let body = if content_type == "application/proto" {
            big.encode_to_vec()
        } else {
            format!(r#"{{"name":"{}"}}"#, "x".repeat(4096)).into_bytes()
        };
        let answer = send(router.post(SAY_HELLO, content_type, body, &[])).await;
        assert_eq!(answer.status().as_u16(), 429, "{content_type}");
        let error = json_of(answer.body());
        assert_eq!(error["code"], "resource_exhausted");
        assert!(error["message"].to_string().contains("1024"), "{error}");
    }
    // A gzip bomb stops at the limit too.
    let bomb = gzip(
        &HelloRequest {
            name: "bomb".into(),
            payload: vec![0; 1 << 18],
        }
        .encode_to_vec(),
    );
    assert!(bomb.len() < 1024);
    let answer = send(router.post(
        SAY_HELLO,
        "application/proto",
        bomb,
        &[("content-encoding", "gzip")],
    ))
    .await;
    assert_eq!(answer.status().as_u16(), 429);
    // And a streamed envelope over it.
    let answer = send(router.post(
        STREAM,
        "application/connect+proto",
        envelope(0, &big.encode_to_vec()),
        &[],
    ))
    .await;
    let frames = envelopes(answer.into_body());
    assert_eq!(json_of(&frames[0].1)["error"]["code"], "resource_exhausted");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_body_is_answered_at_its_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let router = ConnectRouter::example().await;
    let mut client = tokio::net::TcpStream::connect(router.addr)
        .await
        .expect("connects");
    let head = format!(
        "POST {SAY_HELLO} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         connect-timeout-ms: 300\r\ncontent-length: 100\r\n\r\n{{\"name\":",
        router.addr
    );
    client
        .write_all(head.as_bytes())
        .await
        .expect("half a request");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    within(5, "the deadline's answer", async {
        while !String::from_utf8_lossy(&answer).contains("deadline_exceeded") {
            let n = client.read(&mut chunk).await.expect("reads");
            assert!(
                n > 0,
                "closed without an answer: {}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    assert!(text.contains("connect-timeout-ms"), "{text}");
}

#[tokio::test]
async fn a_bad_envelope_ends_the_stream_with_invalid_argument_naming_it() {
    let router = ConnectRouter::example().await;
    let request = StreamRequest {
        name: "x".into(),
        count: 1,
        payload_size: 0,
    };
    // A client may not send an end-of-stream envelope.
    let answer = send(router.post(
        STREAM,
        "application/connect+proto",
        envelope(2, &request.encode_to_vec()),
        &[],
    ))
    .await;
    let frames = envelopes(answer.into_body());
    let end = json_of(&frames.last().expect("an end").1);
    assert_eq!(end["error"]["code"], "invalid_argument", "{end}");
    assert!(
        end["error"]["message"].to_string().contains("0x02"),
        "{end}"
    );
    // An envelope cut short.
    let mut cut = envelope(0, &request.encode_to_vec());
    cut.truncate(cut.len() - 1);
    let answer = send(router.post(STREAM, "application/connect+proto", cut, &[])).await;
    let frames = envelopes(answer.into_body());
    let end = json_of(&frames.last().expect("an end").1);
    assert_eq!(end["error"]["code"], "invalid_argument", "{end}");
}

#[tokio::test]
async fn a_connect_client_that_stops_reading_a_stream_costs_one_window_and_leaving_frees_it() {
    let config = RouterConfig::default();
    let bound = config.initial_window as usize + config.max_frame_size as usize;
    let (router, mut events) = ConnectRouter::test_greeters(config, &["a"], |s| s).await;
    // A client asks for an endless stream of 32 KiB messages over HTTP/1.1
    // and never reads the answer.
    let body = envelope(
        0,
        &StreamRequest {
            name: "endless".into(),
            count: 0,
            payload_size: 32 * 1024,
        }
        .encode_to_vec(),
    );
    let client = test_kit::post_and_stop_reading(
        router.addr,
        STREAM,
        "content-type: application/connect+proto\r\n",
        &body,
    )
    .await;
    test_kit::producer_blocked(&mut events, 20).await;
    let instance = router.router.registry().snapshot()[0].clone();
    let held = instance.buffered_response_bytes();
    assert_eq!(held.len(), 1, "one call in flight");
    assert!(
        held[0] <= bound,
        "the router holds {} bytes; bound {bound}",
        held[0]
    );

    // The client goes away mid-call: the router lets go of the call.
    drop(client);
    within(
        10,
        "the router to drop the call",
        router.router.stats().wait_idle(),
    )
    .await;
}
