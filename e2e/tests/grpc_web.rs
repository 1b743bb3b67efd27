//! gRPC-Web through the router (`RouterServer::grpc_web`): a browser's
//! protocol over HTTP/1.1, binary and base64 text, unary and server
//! streaming, with the status in the body's trailer frame; the instance
//! behind sees an ordinary gRPC call.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use myservice::pb::{GreeterRouter, HelloReply, HelloRequest, StreamRequest};
use prost::Message;
use router_runtime::bridge::{BridgeConfig, BridgeHandle};
use router_runtime::router::RouterConfig;
use router_runtime::server::{Cors, Listener, RouterServer};
use test_kit::grpc_web::{self, frames, send};
use test_kit::within;
use tokio::sync::oneshot;

/// The example's router (which serves gRPC-Web) on a free port, with one
/// instance `web-a` registered.
struct WebRouter {
    addr: SocketAddr,
    _instance: BridgeHandle,
    _stop: oneshot::Sender<()>,
}

impl WebRouter {
    /// The example's router.
    async fn start() -> WebRouter {
        Self::start_with(None).await
    }

    /// A `RouterServer` with gRPC-Web, and `cors` if given (else the
    /// example's router).
    async fn start_with(cors: Option<Cors>) -> WebRouter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let router = GreeterRouter::new(RouterConfig::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async {
            let _ = stopped.await;
        };
        match cors {
            None => {
                tokio::spawn(myservice::demo::serve_router(
                    router.clone(),
                    listener,
                    stopped,
                ));
            }
            Some(cors) => {
                let server = RouterServer::new("web").route(&router).cors(cors);
                tokio::spawn(server.serve(Listener::from_tcp(listener), None, stopped));
            }
        }
        let instance = myservice::demo::start_instance(
            BridgeConfig::new(format!("http://{addr}")).instance_id("web-a"),
        );
        within(10, "the instance to register", async {
            router.registry().wait_until(|n| n >= 1).await;
        })
        .await;
        WebRouter {
            addr,
            _instance: instance,
            _stop: stop,
        }
    }

    /// POSTs `message` to `path` as gRPC-Web over HTTP/1.1 with
    /// `content_type`; returns the HTTP status, the response's content type
    /// and its body (decoded from base64 for the text form), and the
    /// response headers.
    async fn call(
        &self,
        path: &str,
        content_type: &str,
        message: &impl Message,
    ) -> (http::StatusCode, String, Bytes, http::HeaderMap) {
        let framed = grpc_web::frame(message);
        let text = content_type.starts_with("application/grpc-web-text");
        let body = if text {
            Bytes::from(base64_encode(&framed))
        } else {
            Bytes::from(framed)
        };
        let request = http::Request::post(format!("http://{}{path}", self.addr))
            .header("content-type", content_type)
            .header("x-grpc-web", "1")
            .header("accept", content_type)
            .body(Full::new(body))
            .expect("request");
        let (parts, body) = grpc_web::send(request).await.into_parts();
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let (status, headers) = (parts.status, parts.headers);
        let body = if text {
            Bytes::from(base64_decode(&body))
        } else {
            body
        };
        (status, content_type, body, headers)
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes a gRPC-Web text body: base64 chunks, each padded on its own.
fn base64_decode(text: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let mut out = Vec::new();
    for chunk in text.split_inclusive(|b| *b == b'=') {
        let chunk: Vec<u8> = chunk
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        if !chunk.is_empty() && chunk != b"=" {
            out.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(&chunk)
                    .expect("base64"),
            );
        }
    }
    out
}

fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.into(),
        ..HelloRequest::default()
    }
}

#[tokio::test]
async fn a_grpc_web_unary_call_over_http1_reaches_the_instance_with_the_status_in_the_trailer_frame()
 {
    let router = WebRouter::start().await;
    let (status, content_type, body, _) = router
        .call(
            "/myservice.v1.Greeter/SayHello",
            "application/grpc-web+proto",
            &hello("Ada"),
        )
        .await;
    assert_eq!(status, http::StatusCode::OK);
    assert!(
        content_type.starts_with("application/grpc-web"),
        "{content_type}"
    );
    let (messages, trailers) = frames(body);
    assert_eq!(messages.len(), 1, "{trailers}");
    let reply = HelloReply::decode(messages[0].clone()).expect("a HelloReply");
    assert_eq!(reply.message, "Hello, Ada!");
    assert_eq!(reply.instance_id, "web-a");
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
}

#[tokio::test]
async fn a_grpc_web_text_server_stream_delivers_every_message_then_ok() {
    let router = WebRouter::start().await;
    let request = StreamRequest {
        name: "Grace".into(),
        count: 5,
        payload_size: 0,
    };
    let (status, _, body, _) = router
        .call(
            "/myservice.v1.Greeter/StreamGreetings",
            "application/grpc-web-text",
            &request,
        )
        .await;
    assert_eq!(status, http::StatusCode::OK);
    let (messages, trailers) = frames(body);
    assert_eq!(messages.len(), 5, "{trailers}");
    for message in messages {
        let reply = HelloReply::decode(message).expect("a HelloReply");
        assert_eq!(reply.instance_id, "web-a");
    }
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
}

#[tokio::test]
async fn a_failing_call_reports_the_instances_status_and_message_to_the_grpc_web_client() {
    let router = WebRouter::start().await;
    let (status, _, body, headers) = router
        .call(
            "/myservice.v1.Greeter/SayHello",
            "application/grpc-web+proto",
            &hello("fail:5"),
        )
        .await;
    assert_eq!(
        status,
        http::StatusCode::OK,
        "gRPC-Web errors are not HTTP errors"
    );
    let (messages, trailers) = frames(body);
    assert!(messages.is_empty());
    // An answer without messages may be "trailers-only": the status in the
    // response headers instead of a trailer frame; clients read either.
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            trailers
                .lines()
                .find_map(|l| l.strip_prefix("grpc-status:").map(|v| v.trim().to_owned()))
        });
    assert_eq!(code.as_deref(), Some("5"), "{headers:?} {trailers}");
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| trailers.clone());
    assert!(
        message
            .replace("%20", " ")
            .contains(myservice::greeter::REQUESTED_FAILURE),
        "the instance's message reaches the client: {message}"
    );
}

#[tokio::test]
async fn grpc_clients_on_http2_are_served_as_before_on_the_same_listener() {
    let router = WebRouter::start().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", router.addr))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connects");
    let reply = within(
        10,
        "SayHello over gRPC",
        myservice::pb::greeter_client::GreeterClient::new(channel).say_hello(hello("Lin")),
    )
    .await
    .expect("served")
    .into_inner();
    assert_eq!(reply.instance_id, "web-a");
}

fn preflight(router: &WebRouter, origin: &str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(http::Method::OPTIONS)
        .uri(format!(
            "http://{}/myservice.v1.Greeter/SayHello",
            router.addr
        ))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,x-user-agent,authorization",
        )
        .body(Full::new(Bytes::new()))
        .expect("request")
}

#[tokio::test]
async fn a_browser_on_an_allowed_origin_gets_its_preflight_answered_and_can_read_the_status() {
    let cors = Cors::new(["http://app.example:8080"]).expect("a valid origin");
    let router = WebRouter::start_with(Some(cors)).await;
    let answer = send(preflight(&router, "http://app.example:8080")).await;
    assert!(answer.status().is_success(), "{answer:?}");
    let headers = answer.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://app.example:8080"
    );
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .expect("text")
        .to_ascii_lowercase();
    for header in ["content-type", "x-grpc-web", "authorization"] {
        assert!(allowed.contains(header), "{allowed}");
    }
    assert!(headers.contains_key("access-control-max-age"));

    // The call itself carries the headers that let the script read it.
    let framed = grpc_web::frame(&hello("Ada"));
    let call = http::Request::post(format!(
        "http://{}/myservice.v1.Greeter/SayHello",
        router.addr
    ))
    .header("origin", "http://app.example:8080")
    .header("content-type", "application/grpc-web+proto")
    .header("x-grpc-web", "1")
    .body(Full::new(Bytes::from(framed)))
    .expect("request");
    let answer = send(call).await;
    assert_eq!(
        answer.headers()["access-control-allow-origin"],
        "http://app.example:8080"
    );
    assert_eq!(answer.headers()["access-control-expose-headers"], "*");
    let (messages, trailers) = frames(answer.into_body());
    assert_eq!(messages.len(), 1, "{trailers}");
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
}

#[tokio::test]
async fn another_origin_gets_no_cors_headers_so_the_browser_refuses_it() {
    let cors = Cors::new(["https://app.example"]).expect("a valid origin");
    let router = WebRouter::start_with(Some(cors)).await;
    let answer = send(preflight(&router, "https://evil.example")).await;
    assert!(
        !answer.headers().contains_key("access-control-allow-origin"),
        "{:?}",
        answer.headers()
    );
}

#[tokio::test]
async fn without_cors_the_example_router_sends_no_cors_headers() {
    let router = WebRouter::start().await;
    let answer = send(preflight(&router, "https://app.example")).await;
    assert!(
        !answer.headers().contains_key("access-control-allow-origin"),
        "{:?}",
        answer.headers()
    );
}

/// The status of a gRPC-Web answer: from the headers (trailers-only) or the
/// trailer frame.
fn grpc_status(answer: http::Response<Bytes>) -> (Option<String>, String) {
    let in_headers = answer
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (_, trailers) = frames(answer.into_body());
    let code = in_headers.or_else(|| {
        trailers
            .lines()
            .find_map(|l| l.strip_prefix("grpc-status:").map(|v| v.trim().to_owned()))
    });
    (code, trailers)
}

fn web_post(
    router: &WebRouter,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("http://{}{path}", router.addr))
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
        .body(Full::new(Bytes::from(body)))
        .expect("request")
}

#[tokio::test]
async fn a_grpc_web_request_over_the_message_limit_fails_resource_exhausted() {
    let router = WebRouter::start().await;
    let limit = RouterConfig::default().max_message_size;
    let oversized = HelloRequest {
        name: "big".into(),
        payload: vec![7; limit + 1],
    };
    let answer = send(web_post(
        &router,
        "/myservice.v1.Greeter/SayHello",
        "application/grpc-web+proto",
        grpc_web::frame(&oversized),
    ))
    .await;
    let (code, trailers) = grpc_status(answer);
    assert_eq!(code.as_deref(), Some("8"), "{trailers}");
}

#[tokio::test]
async fn a_grpc_web_text_body_that_is_not_base64_gets_an_error_not_a_hang() {
    let router = WebRouter::start().await;
    let answer = send(web_post(
        &router,
        "/myservice.v1.Greeter/SayHello",
        "application/grpc-web-text",
        b"this is *not* base64!".to_vec(),
    ))
    .await;
    // tonic-web answers at once, naming the bad byte (with INTERNAL, where
    // INVALID_ARGUMENT would be the better code).
    let message = answer
        .headers()
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .replace("%20", " ");
    assert!(message.contains("Invalid symbol"), "{message}");
    let (code, trailers) = grpc_status(answer);
    assert_eq!(code.as_deref(), Some("13"), "{trailers}");
}

#[tokio::test]
async fn a_browser_that_stops_reading_a_stream_costs_the_router_one_window_and_leaving_frees_it() {
    use test_kit::test_greeter::TestGreeter;

    let config = RouterConfig::default();
    let bound = config.initial_window as usize + config.max_frame_size as usize;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let router = GreeterRouter::new(config);
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        RouterServer::new("web")
            .route(&router)
            .grpc_web(true)
            .serve(Listener::from_tcp(listener), None, async {
                let _ = stopped.await;
            }),
    );
    let (greeter, mut events) = TestGreeter::new("a");
    let _instance = myservice::pb::GreeterBridge::new(greeter)
        .connect(BridgeConfig::new(format!("http://{addr}")).instance_id("a"));
    within(
        10,
        "the instance to register",
        router.registry().wait_until(|n| n >= 1),
    )
    .await;

    // A browser asks for an endless stream of 32 KiB messages over HTTP/1.1
    // and never reads the answer.
    let body = grpc_web::frame(&StreamRequest {
        name: "endless".into(),
        count: 0,
        payload_size: 32 * 1024,
    });
    let browser = test_kit::post_and_stop_reading(
        addr,
        "/myservice.v1.Greeter/StreamGreetings",
        "content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n",
        &body,
    )
    .await;
    test_kit::producer_blocked(&mut events, 20).await;
    let instance = router.registry().snapshot()[0].clone();
    let held = instance.buffered_response_bytes();
    assert_eq!(held.len(), 1, "one call in flight");
    assert!(
        held[0] <= bound,
        "the router holds {} bytes; bound {bound}",
        held[0]
    );

    // Other calls go on meanwhile, over gRPC.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connects");
    within(
        5,
        "SayHello beside the stalled stream",
        myservice::pb::greeter_client::GreeterClient::new(channel).say_hello(hello("Lin")),
    )
    .await
    .expect("served");

    // The browser goes away mid-call: the router lets go of the call.
    drop(browser);
    within(
        10,
        "the router to drop the call",
        router.stats().wait_idle(),
    )
    .await;
    assert_eq!(instance.partial_response_bytes(), 0);
    assert!(instance.buffered_response_bytes().is_empty());
}
