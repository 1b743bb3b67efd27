//! End to end: `grpc-router` on SIGTERM. Health says NOT_SERVING at once;
//! with `shutdown.delay` the listeners keep serving for that long; then
//! every connection gets GOAWAY and its calls in flight go on; at the end of
//! `shutdown.grace` whatever is left ends (UNAVAILABLE for clients that
//! read) and the process exits, whatever its clients do.

mod common;

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::{Daemon, config_with, poll, within};
use myservice::pb::greeter_client::GreeterClient;
use myservice::pb::greeter_server::Greeter;
use myservice::pb::{
    ChatMessage, GreeterBridge, HelloReply, HelloRequest, InstanceInfo, Number, StreamRequest,
    SumReply,
};
use prost::Message as _;
use router_runtime::bridge::BridgeConfig;
use rustix::process::Signal;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

const GREETER: &str = "myservice.v1.Greeter";

fn greeter_instance(daemon: &Daemon, id: &str) -> router_runtime::bridge::BridgeHandle {
    myservice::demo::start_instance(BridgeConfig::new(daemon.registrations_url()).instance_id(id))
}

fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.into(),
        payload: vec![],
    }
}

/// `message` as one gRPC length-prefixed message.
fn grpc_frame(message: &impl prost::Message) -> Bytes {
    let encoded = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + encoded.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(encoded.len()).expect("small"));
    frame.put_slice(&encoded);
    frame.freeze()
}

/// A gRPC request head for `path` on `addr`.
fn grpc_request(addr: SocketAddr, path: &str) -> http::Request<()> {
    http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request")
}

/// A raw HTTP/2 connection to `addr`: its request handle and its connection
/// future, which the caller polls (or stops polling).
async fn h2_connect(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    h2::client::Connection<tokio::net::TcpStream, Bytes>,
) {
    let tcp = within(5, "TCP connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connects");
    within(5, "HTTP/2 handshake", h2::client::handshake(tcp))
        .await
        .expect("handshake")
}

/// Health `service` on `health`, or the error.
async fn health_check(
    health: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Result<i32, Status> {
    within(
        5,
        "health check",
        health.check(HealthCheckRequest {
            service: service.into(),
        }),
    )
    .await
    .map(|r| r.into_inner().status)
}

#[tokio::test]
async fn sigterm_exits_within_the_grace_period_while_a_client_holds_a_stream_it_does_not_read() {
    let daemon = Daemon::start_with_env(&config_with(""), &[("GRPC_ROUTER_SHUTDOWN__GRACE", "2s")]);
    let _instance = greeter_instance(&daemon, "greeter-1");
    daemon.wait_for_instances(GREETER, 1).await;

    // A large server stream whose client reads nothing at all: once the
    // response headers are in, its connection is never polled again (no
    // WINDOW_UPDATE, no read from the socket), and it does not cancel.
    let (mut send, connection) = h2_connect(daemon.clients).await;
    let mut connection = Box::pin(connection);
    let (response, mut body) = send
        .send_request(
            grpc_request(daemon.clients, "/myservice.v1.Greeter/StreamGreetings"),
            false,
        )
        .expect("request sent");
    body.send_data(
        grpc_frame(&StreamRequest {
            name: "flood".into(),
            count: 1_000_000,
            payload_size: 64 * 1024,
        }),
        true,
    )
    .expect("request body");
    let response = within(5, "the stream's response headers", async {
        tokio::select! {
            response = response => response.expect("response"),
            ended = &mut connection => panic!("the connection ended first: {ended:?}"),
        }
    })
    .await;
    assert_eq!(response.status(), 200);
    let _held = (send, connection, response);

    let signalled = Instant::now();
    daemon.signal(Signal::TERM);
    let exit = daemon.wait_exit(30).await;
    let took = signalled.elapsed();
    eprintln!("the daemon exited {took:?} after SIGTERM (grace 2 s)");
    assert!(exit.success(), "exits 0: {exit:?}");
    assert!(
        took < Duration::from_secs(3),
        "exits within grace (2 s) + 1 s of SIGTERM, took {took:?}"
    );
}

#[tokio::test]
async fn a_health_watch_sees_not_serving_at_sigterm_then_ends_unavailable_after_the_grace_period() {
    let daemon = Daemon::start_with_env(&config_with(""), &[("GRPC_ROUTER_SHUTDOWN__GRACE", "2s")]);
    let mut health = HealthClient::new(daemon.channel().await);
    let mut watch = within(
        5,
        "watch",
        health.watch(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .expect("watch starts")
    .into_inner();
    let first = within(5, "first status", watch.message())
        .await
        .expect("ok")
        .expect("a status");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let signalled = Instant::now();
    daemon.signal(Signal::TERM);
    let next: Option<HealthCheckResponse> = within(5, "NOT_SERVING", watch.message())
        .await
        .expect("the watch goes on after SIGTERM");
    assert_eq!(
        next.map(|r| r.status),
        Some(ServingStatus::NotServing as i32)
    );
    let end = within(10, "the watch's end", watch.message()).await;
    let status = end.expect_err("the watch ends with a status, not OK");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("shutting down"),
        "{}",
        status.message()
    );
    let exit = daemon.wait_exit(30).await;
    assert!(exit.success(), "{exit:?}");
    let took = signalled.elapsed();
    eprintln!("the daemon exited {took:?} after SIGTERM (grace 2 s)");
    assert!(
        took < Duration::from_secs(3),
        "exits within grace (2 s) + 1 s of SIGTERM, took {took:?}"
    );
}

#[tokio::test]
async fn a_stream_still_open_at_the_end_of_the_grace_period_ends_unavailable() {
    let daemon = Daemon::start_with_env(&config_with(""), &[("GRPC_ROUTER_SHUTDOWN__GRACE", "1s")]);
    let _instance = greeter_instance(&daemon, "greeter-1");
    daemon.wait_for_instances(GREETER, 1).await;
    let mut client = GreeterClient::new(daemon.channel().await);
    let (tx, rx) = mpsc::channel::<ChatMessage>(4);
    tx.send(ChatMessage {
        text: "hi".into(),
        seq: 0,
    })
    .await
    .expect("send");
    let mut replies = within(
        5,
        "chat",
        client.chat(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await
    .expect("chat starts")
    .into_inner();
    within(5, "echo", replies.message())
        .await
        .expect("echo")
        .expect("a reply");

    // The client keeps its side open and reads.
    daemon.signal(Signal::TERM);
    let end = within(10, "the chat's end", replies.message()).await;
    let status = end.expect_err("the call ends with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    drop(tx);
    assert!(daemon.wait_exit(30).await.success());
}

#[tokio::test]
async fn during_the_shutdown_delay_health_says_not_serving_and_new_calls_succeed() {
    let daemon = Daemon::start(&config_with("").replace(
        "[shutdown]\ngrace = \"10s\"\n",
        "[shutdown]\ngrace = \"10s\"\ndelay = \"60s\"\n",
    ));
    let _instance = greeter_instance(&daemon, "greeter-1");
    daemon.wait_for_instances(GREETER, 1).await;
    let channel = daemon.channel().await;
    let mut health = HealthClient::new(channel.clone());
    let mut greeter = GreeterClient::new(channel);
    assert_eq!(
        health_check(&mut health, "").await.expect("checks"),
        ServingStatus::Serving as i32
    );
    within(5, "SayHello", greeter.say_hello(hello("before")))
        .await
        .expect("served");

    daemon.signal(Signal::TERM);
    poll(10, "health to say NOT_SERVING", || {
        let mut health = health.clone();
        async move {
            let status = health_check(&mut health, "")
                .await
                .expect("the open channel still answers");
            (status == ServingStatus::NotServing as i32).then_some(())
        }
    })
    .await;
    assert_eq!(
        health_check(&mut health, GREETER)
            .await
            .expect("per service"),
        ServingStatus::NotServing as i32,
        "every service says NOT_SERVING too"
    );
    // New calls, on the open channel and on a new connection, are served.
    let reply = within(5, "SayHello", greeter.say_hello(hello("during")))
        .await
        .expect("a new call on the open channel is served during the delay");
    assert_eq!(reply.into_inner().message, "Hello, during!");
    let mut fresh = GreeterClient::new(daemon.channel().await);
    within(5, "SayHello", fresh.say_hello(hello("fresh")))
        .await
        .expect("a new connection is served during the delay");
}

/// A Greeter whose SayHello says when it started and answers only once
/// released.
#[derive(Clone)]
struct Gated {
    entered: mpsc::UnboundedSender<()>,
    release: watch::Receiver<bool>,
}

type BoxStream<T> = Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Greeter for Gated {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let _ = self.entered.send(());
        let mut release = self.release.clone();
        let _ = release.wait_for(|go| *go).await;
        Ok(Response::new(HelloReply {
            message: format!("Hello, {}!", request.into_inner().name),
            instance_id: "gated".into(),
            payload: Default::default(),
        }))
    }

    type StreamGreetingsStream = BoxStream<HelloReply>;

    async fn stream_greetings(
        &self,
        _: Request<StreamRequest>,
    ) -> Result<Response<Self::StreamGreetingsStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn sum(&self, _: Request<Streaming<Number>>) -> Result<Response<SumReply>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    type ChatStream = BoxStream<ChatMessage>;

    async fn chat(
        &self,
        _: Request<Streaming<ChatMessage>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn who_am_i(&self, _: Request<()>) -> Result<Response<InstanceInfo>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

#[tokio::test]
async fn an_open_connection_gets_goaway_at_sigterm_and_its_unary_call_in_flight_completes_ok() {
    let daemon = Daemon::start(&config_with(""));
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let (release, release_rx) = watch::channel(false);
    let _instance = GreeterBridge::new(Gated {
        entered: entered_tx,
        release: release_rx,
    })
    .connect(BridgeConfig::new(daemon.registrations_url()).instance_id("gated"));
    daemon.wait_for_instances(GREETER, 1).await;

    let (send, connection) = h2_connect(daemon.clients).await;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut send = within(5, "ready", send.ready()).await.expect("ready");
    let (response, mut body) = send
        .send_request(
            grpc_request(daemon.clients, "/myservice.v1.Greeter/SayHello"),
            false,
        )
        .expect("request sent");
    body.send_data(grpc_frame(&hello("in flight")), true)
        .expect("request body");
    within(5, "the handler to start", entered.recv())
        .await
        .expect("entered");

    daemon.signal(Signal::TERM);
    // The connection hears GOAWAY: it opens no new stream.
    let refused = within(10, "GOAWAY", async {
        loop {
            match send.clone().ready().await {
                Err(e) => return e,
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    assert!(refused.is_go_away(), "{refused:?}");

    // The call in flight goes on and completes OK.
    let _ = release.send(true);
    let response = within(10, "the response", response)
        .await
        .expect("the call in flight is answered");
    assert_eq!(response.status(), 200);
    let mut reply = response.into_body();
    let mut data = BytesMut::new();
    while let Some(chunk) = within(5, "data", reply.data()).await {
        let chunk = chunk.expect("data");
        let _ = reply.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = within(5, "trailers", reply.trailers())
        .await
        .expect("trailers")
        .expect("some");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..]),
        "{trailers:?}"
    );
    let answer = HelloReply::decode(data.get(5..).expect("a message")).expect("HelloReply");
    assert_eq!(answer.message, "Hello, in flight!");
    assert!(daemon.wait_exit(30).await.success());
}
