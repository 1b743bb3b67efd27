//! A client's reset reaches the handler as a cancellation, never as the end
//! of its input: a handler that took a reset for a half-close would finish
//! its work and answer OK to a client that gave up on it.

use test_kit as common;

use std::pin::Pin;

use common::{TestRouter, start_instance, within};
use futures_util::Stream;
use myservice::pb::greeter_client::GreeterClient;
use myservice::pb::greeter_server::Greeter;
use myservice::pb::{
    ChatMessage, HelloReply, HelloRequest, InstanceInfo, Number, StreamRequest, SumReply,
};
use router_runtime::router::RouterConfig;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};

/// The metadata key carrying the test's number for the call.
const CALL: &str = "x-call";

/// How a handler's input ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The request stream ended cleanly: the handler finished and answered.
    Clean,
    /// Reading the request stream failed with this code.
    Error(Code),
    /// The handler's future was dropped before it finished (cancelled).
    Dropped,
}

#[derive(Debug)]
enum Event {
    /// Call `n`'s handler has read the messages the client sent so far.
    Received(u32),
    /// Call `n`'s handler ended this way.
    Ended(u32, End),
}

/// Reports [`End::Dropped`] unless the handler reported another end first.
struct Ending {
    call: u32,
    events: mpsc::UnboundedSender<Event>,
    reported: bool,
}

impl Ending {
    fn report(&mut self, end: End) {
        self.reported = true;
        let _ = self.events.send(Event::Ended(self.call, end));
    }
}

impl Drop for Ending {
    fn drop(&mut self) {
        if !self.reported {
            let _ = self.events.send(Event::Ended(self.call, End::Dropped));
        }
    }
}

/// A Greeter whose client-streaming and bidi handlers read their whole
/// input before answering (so the client's response future is pending until
/// then, and dropping it resets the stream) and report how the input ended.
#[derive(Clone)]
struct Recorder {
    events: mpsc::UnboundedSender<Event>,
}

impl Recorder {
    async fn consume<T: Send + 'static>(
        &self,
        request: Request<Streaming<T>>,
    ) -> Result<(), Status> {
        let call = request
            .metadata()
            .get(CALL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(u32::MAX);
        let mut ending = Ending {
            call,
            events: self.events.clone(),
            reported: false,
        };
        let mut input = request.into_inner();
        let mut received = 0;
        loop {
            match input.message().await {
                Ok(Some(_)) => {
                    received += 1;
                    if received == 2 {
                        let _ = self.events.send(Event::Received(call));
                    }
                }
                Ok(None) => {
                    ending.report(End::Clean);
                    return Ok(());
                }
                Err(status) => {
                    ending.report(End::Error(status.code()));
                    return Err(status);
                }
            }
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Greeter for Recorder {
    async fn say_hello(&self, _: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    type StreamGreetingsStream = BoxStream<HelloReply>;

    async fn stream_greetings(
        &self,
        _: Request<StreamRequest>,
    ) -> Result<Response<Self::StreamGreetingsStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn sum(&self, request: Request<Streaming<Number>>) -> Result<Response<SumReply>, Status> {
        self.consume(request).await?;
        Ok(Response::new(SumReply::default()))
    }

    type ChatStream = BoxStream<ChatMessage>;

    async fn chat(
        &self,
        request: Request<Streaming<ChatMessage>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        self.consume(request).await?;
        Ok(Response::new(Box::pin(tokio_stream::empty())))
    }

    async fn who_am_i(&self, _: Request<()>) -> Result<Response<InstanceInfo>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    ClientStreaming,
    Bidi,
}

/// Starts call `n` of `kind` with two request messages and the request
/// stream left open; returns the sender that keeps it open.
fn start_call(
    client: &GreeterClient<Channel>,
    kind: Kind,
    n: u32,
) -> (tokio::task::JoinHandle<()>, Box<dyn std::any::Any + Send>) {
    let mut client = client.clone();
    let call_id = n.to_string().parse().expect("ascii");
    match kind {
        Kind::ClientStreaming => {
            let (tx, rx) = mpsc::channel(4);
            for value in [1, 2] {
                tx.try_send(Number { value }).expect("room");
            }
            let mut request = Request::new(ReceiverStream::new(rx));
            request.metadata_mut().insert(CALL, call_id);
            let task = tokio::spawn(async move {
                let _ = client.sum(request).await;
            });
            (task, Box::new(tx))
        }
        Kind::Bidi => {
            let (tx, rx) = mpsc::channel(4);
            for seq in [1, 2] {
                tx.try_send(ChatMessage {
                    text: "hi".into(),
                    seq,
                })
                .expect("room");
            }
            let mut request = Request::new(ReceiverStream::new(rx));
            request.metadata_mut().insert(CALL, call_id);
            let task = tokio::spawn(async move {
                let _ = client.chat(request).await;
            });
            (task, Box::new(tx))
        }
    }
}

/// `runs` calls of `kind`, each reset by the client (its response future
/// dropped, the request stream still open: RST_STREAM, never END_STREAM)
/// once the handler has read the first messages; how many handlers saw each
/// kind of end.
async fn cancel_repeatedly(kind: Kind, runs: u32) -> Vec<(End, u32)> {
    let router = TestRouter::start(RouterConfig::default()).await;
    let (events, mut seen) = mpsc::unbounded_channel();
    let _instance = start_instance(&router, "a", Recorder { events }).await;
    let client = router.client().await;
    let mut tally: Vec<(End, u32)> = Vec::new();
    for n in 0..runs {
        let (call, open) = start_call(&client, kind, n);
        within(10, "the handler to read the first messages", async {
            loop {
                match seen.recv().await {
                    Some(Event::Received(m)) if m == n => return,
                    Some(Event::Received(_)) => continue,
                    Some(Event::Ended(m, end)) => panic!("call {m} ended {end:?} before the reset"),
                    None => panic!("the instance is gone"),
                }
            }
        })
        .await;
        // The client gives up: hyper resets the stream.
        call.abort();
        let _ = call.await;
        let end = within(10, "the handler to end", async {
            loop {
                match seen.recv().await {
                    Some(Event::Ended(m, end)) if m == n => return end,
                    Some(_) => continue,
                    None => panic!("the instance is gone"),
                }
            }
        })
        .await;
        drop(open);
        match tally.iter_mut().find(|(e, _)| *e == end) {
            Some((_, count)) => *count += 1,
            None => tally.push((end, 1)),
        }
    }
    eprintln!("{kind:?}: {runs} client resets, handler ends: {tally:?}");
    tally
}

/// Fails unless no handler took a reset for the end of its input.
fn assert_never_end_of_input(kind: Kind, tally: &[(End, u32)]) {
    let wrong: u32 = tally
        .iter()
        .filter(|(end, _)| *end == End::Clean)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        wrong, 0,
        "{kind:?}: {wrong} handlers saw a client's reset as the end of their input and answered OK ({tally:?})"
    );
}

// A multi-threaded runtime, as a deployed router runs: the request pump and
// the client connection's task then see the reset at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_reset_of_a_client_stream_reaches_the_handler_as_a_cancel_never_as_end_of_input() {
    let tally = cancel_repeatedly(Kind::ClientStreaming, 300).await;
    assert_never_end_of_input(Kind::ClientStreaming, &tally);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_reset_of_a_bidi_stream_reaches_the_handler_as_a_cancel_never_as_end_of_input() {
    let tally = cancel_repeatedly(Kind::Bidi, 300).await;
    assert_never_end_of_input(Kind::Bidi, &tally);
}
