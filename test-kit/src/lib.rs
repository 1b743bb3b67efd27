//! What the end-to-end tests share: a real router on 127.0.0.1:0
//! ([`TestRouter`]), real bridges ([`start_instance`]) and real tonic
//! clients ([`connect`]), the Greeter fixture ([`test_greeter::TestGreeter`]:
//! a Greeter whose requests say how to answer), a register stream driven by
//! hand ([`RawRegistration`], [`RawRouter`]) for hostile peers, and one way
//! to wait: [`within`] (a future, with a timeout) and [`eventually`] (a
//! condition, polled, with a timeout).

pub mod connect;
pub mod grpc_web;
pub mod test_greeter;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use myservice::pb::greeter_client::GreeterClient;
use myservice::pb::greeter_server::{Greeter, GreeterServer};
use myservice::pb::{GreeterBridge, GreeterRouter};
use router_runtime::bridge::{BridgeConfig, BridgeHandle};
use router_runtime::router::RouterConfig;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};

/// Fails the test if `future` takes longer than `secs` seconds.
pub async fn within<T>(secs: u64, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {secs}s waiting for {what}"),
    }
}

/// A router serving on a loopback port.
pub struct TestRouter {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The router, for its stats, registry and settings.
    pub router: GreeterRouter,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestRouter {
    /// A router with `config` on a free loopback port.
    pub async fn start(config: RouterConfig) -> TestRouter {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start_on(listener, config).await
    }

    /// A router with `config` on `listener` (for a restart on the same port).
    pub async fn start_on(listener: TcpListener, config: RouterConfig) -> TestRouter {
        let addr = listener.local_addr().expect("local addr");
        let router = GreeterRouter::new(config);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = router.add_to(Server::builder());
        let signal = router.shutdown_signal(
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(5),
        );
        let task = tokio::spawn(async move {
            server
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal)
                .await
                .expect("router serves");
        });
        TestRouter {
            addr,
            router,
            stop: Some(stop),
            task,
        }
    }

    /// Its address as a bridge or client endpoint (`http://127.0.0.1:port`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A Greeter client connected to it.
    pub async fn client(&self) -> GreeterClient<Channel> {
        GreeterClient::new(self.channel().await)
    }

    /// A connection to the router, for clients of any of its services.
    pub async fn channel(&self) -> Channel {
        connect_channel(self.addr).await
    }

    /// Waits until `n` instances are registered.
    pub async fn wait_for_instances(&self, n: usize) {
        within(
            10,
            "instances to register",
            self.router.registry().wait_until(|k| k == n),
        )
        .await;
    }

    /// Shuts down gracefully: calls in flight finish, registrations get a
    /// GoAway, the server stops.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        within(10, "router shutdown", &mut self.task)
            .await
            .expect("router task");
    }
}

/// A tonic client for `addr`.
pub async fn connect(addr: SocketAddr) -> GreeterClient<Channel> {
    GreeterClient::new(connect_channel(addr).await)
}

/// A connection to `addr`.
pub async fn connect_channel(addr: SocketAddr) -> Channel {
    within(
        10,
        "client connection",
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect(),
    )
    .await
    .expect("client connects")
}

/// Starts a bridge for `service` registered as `id` and waits until it is.
pub async fn start_instance<T: Greeter>(router: &TestRouter, id: &str, service: T) -> BridgeHandle {
    start_instance_with(
        router,
        BridgeConfig::new(router.endpoint()).instance_id(id),
        GreeterServer::new(service),
    )
    .await
}

/// Starts a bridge with explicit options and server, and waits for its
/// registration.
pub async fn start_instance_with<T: Greeter>(
    _router: &TestRouter,
    options: BridgeConfig,
    server: GreeterServer<T>,
) -> BridgeHandle {
    let handle = GreeterBridge::from_server(server).connect(options);
    within(10, "bridge registration", handle.registered()).await;
    handle
}

/// Serves `service` directly (no router) on a loopback port, for side-by-side
/// comparisons.
pub async fn start_direct<T: Greeter>(service: T) -> SocketAddr {
    start_direct_server(GreeterServer::new(service)).await
}

/// Serves an already configured server (compression, limits) directly.
pub async fn start_direct_server<T: Greeter>(server: GreeterServer<T>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = Server::builder()
            .add_service(server)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    addr
}

/// A Greeter client over a bare HTTP/2 client, without tonic's channel
/// layers: it sends `grpc-timeout` but sets no timer of its own, as some gRPC
/// clients do, so the router's own deadline enforcement shows.
pub fn bare_client(
    addr: SocketAddr,
) -> GreeterClient<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        tonic::body::Body,
    >,
> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let origin = format!("http://{addr}").parse().expect("origin");
    GreeterClient::with_origin(client, origin)
}

/// A registration opened by hand on the router's register endpoint, speaking
/// the protocol frame by frame: for tests of misbehaving or silent bridges,
/// and for registering thousands of instances over few connections.
pub struct RawRegistration {
    /// Frames to send to the router.
    pub out: tokio::sync::mpsc::UnboundedSender<router_runtime::wire::BridgeFrame>,
    /// Frames the router sent.
    pub frames: tonic::Streaming<router_runtime::wire::RouterFrame>,
}

impl RawRegistration {
    /// Opens a register stream to `router` (no Hello is sent yet).
    pub async fn open(
        channel: Channel,
        id: &str,
        labels: &[(&str, &str)],
    ) -> Result<RawRegistration, tonic::Status> {
        Self::open_with(channel, Self::hello(id, labels)).await
    }

    /// The Hello a well-behaved bridge sends.
    pub fn hello(id: &str, labels: &[(&str, &str)]) -> router_runtime::pb::Hello {
        use router_runtime::pb;
        pb::Hello {
            protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
            instance_id: id.to_owned(),
            service: "myservice.v1.Greeter".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            weight: 1,
            initial_window: 64 * 1024,
            max_frame_size: 64 * 1024,
            ..Default::default()
        }
    }

    /// Registers with an arbitrary Hello.
    pub async fn open_with(
        channel: Channel,
        hello: router_runtime::pb::Hello,
    ) -> Result<RawRegistration, tonic::Status> {
        use router_runtime::codec::FrameCodec;
        use router_runtime::wire::{BridgeFrame, RouterFrame};
        let (out, rx) = tokio::sync::mpsc::unbounded_channel();
        let _ = out.send(BridgeFrame::Hello(hello));
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let response = grpc
            .streaming(
                tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
                http::uri::PathAndQuery::from_static("/myservice.v1.GreeterRouter/Register"),
                FrameCodec::<BridgeFrame, RouterFrame>::default(),
            )
            .await?;
        let mut frames = response.into_inner();
        match frames.message().await? {
            Some(RouterFrame::Welcome(_)) => Ok(RawRegistration { out, frames }),
            other => Err(tonic::Status::internal(format!(
                "expected Welcome, got {other:?}"
            ))),
        }
    }
}

/// Opens a server stream that never ends on its own (the test greeter's
/// `endless`), with `payload_size` bytes in each message.
pub async fn open_endless_stream(
    client: &mut GreeterClient<Channel>,
    payload_size: u32,
) -> tonic::Streaming<myservice::pb::HelloReply> {
    within(
        5,
        "endless stream",
        client.stream_greetings(myservice::pb::StreamRequest {
            name: "endless".into(),
            count: 0,
            payload_size,
        }),
    )
    .await
    .expect("stream starts")
    .into_inner()
}

/// A SayHello request for `name`, with no payload.
pub fn hello(name: &str) -> myservice::pb::HelloRequest {
    myservice::pb::HelloRequest {
        name: name.into(),
        payload: vec![],
    }
}

/// Calls SayHello and returns the id of the instance that answered.
pub async fn served_by(
    client: &mut GreeterClient<Channel>,
    request: tonic::Request<myservice::pb::HelloRequest>,
) -> String {
    within(5, "call", client.say_hello(request))
        .await
        .expect("call succeeds")
        .into_inner()
        .instance_id
}

/// How often [`eventually`] and [`poll`] look again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Waits until `condition` holds, checking it every [`POLL_INTERVAL`];
/// fails the test after `secs` seconds. For states that no event announces
/// (byte counters, flags).
pub async fn eventually(secs: u64, what: &str, mut condition: impl FnMut() -> bool) {
    poll(secs, what, || std::future::ready(condition().then_some(()))).await;
}

/// Waits until `probe` gives a value, asking again every [`POLL_INTERVAL`];
/// fails the test after `secs` seconds naming `what`. For states no event
/// announces that take a call to read (an admin service, a scrape, a file,
/// a child process).
pub async fn poll<T, F>(secs: u64, what: &str, mut probe: impl FnMut() -> F) -> T
where
    F: Future<Output = Option<T>>,
{
    within(secs, what, async {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            tick.tick().await;
        }
    })
    .await
}

impl RawRegistration {
    /// Reads frames until the next call `Start` (skipping pings and window
    /// updates), failing the test after five seconds.
    pub async fn next_start(&mut self) -> router_runtime::pb::CallStart {
        use router_runtime::wire::RouterFrame;
        loop {
            match within(5, "a call start", self.frames.message()).await {
                Ok(Some(RouterFrame::Start(start))) => return start,
                Ok(Some(_)) => continue,
                other => panic!("expected a call start, got {other:?}"),
            }
        }
    }

    /// Reads frames until the register stream ends, returning its status
    /// (`None` for a clean end), failing the test after `secs` seconds.
    pub async fn end_status(&mut self, secs: u64) -> Option<tonic::Status> {
        within(secs, "the register stream to end", async {
            loop {
                match self.frames.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return None,
                    Err(status) => return Some(status),
                }
            }
        })
        .await
    }

    /// Sends a frame as the bridge.
    pub fn send(&self, frame: router_runtime::wire::BridgeFrame) {
        self.out.send(frame).expect("register stream open");
    }
}

/// A router written frame by frame: serves `GreeterRouter/Register` on a
/// loopback port and hands each bridge's register stream to the test, which
/// answers it by hand. For tests of how a bridge treats a misbehaving router.
pub struct RawRouter {
    /// Where it listens.
    pub addr: SocketAddr,
    sessions: tokio::sync::mpsc::UnboundedReceiver<RawRouterSession>,
}

/// One bridge's register stream on a [`RawRouter`].
pub struct RawRouterSession {
    /// Frames to the bridge.
    pub out: tokio::sync::mpsc::UnboundedSender<router_runtime::wire::RouterFrame>,
    /// Frames from the bridge.
    pub frames: tonic::Streaming<router_runtime::wire::BridgeFrame>,
}

#[derive(Clone)]
struct RawRegister {
    sessions: tokio::sync::mpsc::UnboundedSender<RawRouterSession>,
}

impl tonic::server::NamedService for RawRegister {
    const NAME: &'static str = "myservice.v1.GreeterRouter";
}

impl tonic::server::StreamingService<router_runtime::wire::BridgeFrame> for RawRegister {
    type Response = router_runtime::wire::RouterFrame;
    type ResponseStream = tokio_stream::wrappers::UnboundedReceiverStream<
        Result<router_runtime::wire::RouterFrame, tonic::Status>,
    >;
    type Future = std::future::Ready<Result<tonic::Response<Self::ResponseStream>, tonic::Status>>;

    fn call(
        &mut self,
        request: tonic::Request<tonic::Streaming<router_runtime::wire::BridgeFrame>>,
    ) -> Self::Future {
        let (out, rx) = tokio::sync::mpsc::unbounded_channel();
        let (to_stream, stream_rx) = tokio::sync::mpsc::unbounded_channel();
        // Forward the test's frames as `Ok` items of the response stream.
        tokio::spawn(async move {
            let mut rx = rx;
            while let Some(frame) = rx.recv().await {
                if to_stream.send(Ok(frame)).is_err() {
                    return;
                }
            }
        });
        let _ = self.sessions.send(RawRouterSession {
            out,
            frames: request.into_inner(),
        });
        std::future::ready(Ok(tonic::Response::new(
            tokio_stream::wrappers::UnboundedReceiverStream::new(stream_rx),
        )))
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for RawRegister {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let handler = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(router_runtime::codec::FrameCodec::<
                router_runtime::wire::RouterFrame,
                router_runtime::wire::BridgeFrame,
            >::default());
            Ok(grpc.streaming(handler, request).await)
        })
    }
}

impl RawRouter {
    /// Starts serving on a loopback port.
    pub async fn start() -> RawRouter {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (sessions_tx, sessions) = tokio::sync::mpsc::unbounded_channel();
        let service = RawRegister {
            sessions: sessions_tx,
        };
        tokio::spawn(async move {
            let _ = Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        RawRouter { addr, sessions }
    }

    /// The endpoint bridges dial.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next bridge's register stream, after its Hello, answered with
    /// `welcome`.
    pub async fn accept(&mut self, welcome: router_runtime::pb::Welcome) -> RawRouterSession {
        use router_runtime::wire::{BridgeFrame, RouterFrame};
        let mut session = within(10, "a bridge to register", self.sessions.recv())
            .await
            .expect("router running");
        match within(5, "Hello", session.frames.message()).await {
            Ok(Some(BridgeFrame::Hello(_))) => {}
            other => panic!("expected Hello, got {other:?}"),
        }
        session
            .out
            .send(RouterFrame::Welcome(welcome))
            .expect("stream open");
        session
    }
}

/// Waits (up to `secs`) until a test greeter's server-stream producer
/// reports that it is blocked: every buffer between the handler and the
/// client is full.
pub async fn producer_blocked(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<test_greeter::Event>,
    secs: u64,
) {
    loop {
        match within(secs, "the producer to block", events.recv()).await {
            Some(test_greeter::Event::ProducerBlocked(_)) => return,
            Some(_) => continue,
            None => panic!("events closed"),
        }
    }
}

/// POSTs `body` to `path` on `addr` over HTTP/1.1, with `headers` (each
/// line ending in `\r\n`), and reads nothing of the answer: a client that
/// stops reading. Dropping the connection is the client leaving.
pub async fn post_and_stop_reading(
    addr: SocketAddr,
    path: &str,
    headers: &str,
    body: &[u8],
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut client = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\n{headers}content-length: {}\r\n\r\n",
        body.len()
    );
    client
        .write_all(head.as_bytes())
        .await
        .expect("request head");
    client.write_all(body).await.expect("request body");
    client
}
