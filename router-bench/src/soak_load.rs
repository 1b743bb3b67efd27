//! The soak's mixed load: unary calls at a steady rate and workers running
//! server-streaming, client-streaming and bidi calls one after the other,
//! some with deadlines, some cancelled by the client mid-call. Every call
//! runs under a watchdog (its deadline plus a margin, or a fixed budget when
//! it has none); a call that outlives it is counted hung.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use myservice::pb::greeter_client::GreeterClient;
use myservice::pb::{ChatMessage, HelloRequest, Number, StreamRequest};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::target::Target;

/// Extra time a call with a deadline gets before it counts as hung.
pub const HUNG_MARGIN: Duration = Duration::from_secs(3);

/// The watchdog of a call without a deadline.
pub const WATCHDOG: Duration = Duration::from_secs(60);

/// Most unary calls in flight; beyond it a tick is skipped (and counted).
const MAX_UNARY_IN_FLIGHT: usize = 1000;

/// The kind of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// SayHello.
    Unary,
    /// StreamGreetings.
    ServerStream,
    /// Sum.
    ClientStream,
    /// Chat.
    Bidi,
}

impl Kind {
    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Unary => "unary",
            Kind::ServerStream => "server stream",
            Kind::ClientStream => "client stream",
            Kind::Bidi => "bidi",
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Status OK, with everything expected received.
    Ok,
    /// UNAVAILABLE.
    Unavailable,
    /// DEADLINE_EXCEEDED.
    DeadlineExceeded,
    /// CANCELLED from the router or the transport (tonic's own timer reports
    /// an expired deadline as CANCELLED "Timeout expired").
    Cancelled,
    /// The client cancelled the call on purpose, mid-call.
    ClientCancel,
    /// Any other status (or OK with a wrong message count).
    Other,
    /// Did not finish within its deadline plus [`HUNG_MARGIN`] (or the
    /// [`WATCHDOG`]).
    Hung,
}

/// A failure worth showing in the report.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What kind of call.
    pub kind: Kind,
    /// When it started.
    pub started: Instant,
    /// When it ended (or was given up as hung).
    pub ended: Instant,
    /// The status or what was wrong.
    pub detail: String,
}

/// Counts of calls by kind and outcome, and the failures to attribute.
#[derive(Debug, Default)]
pub struct Tally {
    inner: Mutex<TallyInner>,
}

/// A copy of a [`Tally`].
#[derive(Debug, Default, Clone)]
pub struct TallyInner {
    /// Calls by kind and outcome.
    pub counts: BTreeMap<(Kind, Outcome), u64>,
    /// UNAVAILABLE calls, to attribute to kills.
    pub unavailable: Vec<Failure>,
    /// Hung calls.
    pub hung: Vec<Failure>,
    /// The first few details of each kind and outcome but OK.
    pub examples: BTreeMap<(Kind, Outcome), Vec<String>>,
    /// Unary ticks skipped because too many calls were in flight.
    pub skipped_ticks: u64,
}

impl Tally {
    fn record(&self, kind: Kind, outcome: Outcome, failure: Option<Failure>) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        *inner.counts.entry((kind, outcome)).or_default() += 1;
        if let Some(failure) = failure {
            let examples = inner.examples.entry((kind, outcome)).or_default();
            if examples.len() < 3 && !examples.contains(&failure.detail) {
                examples.push(failure.detail.clone());
            }
            match outcome {
                Outcome::Hung => inner.hung.push(failure),
                Outcome::Unavailable => inner.unavailable.push(failure),
                _ => {}
            }
        }
    }

    fn skipped(&self) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .skipped_ticks += 1;
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> TallyInner {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// How one call is meant to go.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// The deadline sent with it (`grpc-timeout`), if any.
    deadline: Option<Duration>,
    /// Cancel (drop) the call after this many messages.
    cancel_after: Option<u32>,
    /// Whether the call is expected to outlive its deadline.
    expect_deadline: bool,
}

impl Plan {
    fn budget(&self) -> Duration {
        self.deadline.map_or(WATCHDOG, |d| d + HUNG_MARGIN)
    }
}

/// What a call returned before the watchdog looked at it.
enum Ended {
    Ok,
    ClientCancel,
    Status(Status),
    Wrong(String),
}

/// Runs `call` under its watchdog and records its outcome.
async fn watched(
    tally: &Tally,
    kind: Kind,
    plan: Plan,
    call: impl std::future::Future<Output = Ended>,
) {
    let started = Instant::now();
    let ended = tokio::time::timeout(plan.budget(), call).await;
    let failure = |detail: String| Failure {
        kind,
        started,
        ended: Instant::now(),
        detail,
    };
    match ended {
        Err(_) => tally.record(
            kind,
            Outcome::Hung,
            Some(failure(format!(
                "not done after {:?} (deadline {:?})",
                plan.budget(),
                plan.deadline
            ))),
        ),
        Ok(Ended::Ok) => tally.record(kind, Outcome::Ok, None),
        Ok(Ended::ClientCancel) => tally.record(kind, Outcome::ClientCancel, None),
        Ok(Ended::Wrong(detail)) => tally.record(kind, Outcome::Other, Some(failure(detail))),
        Ok(Ended::Status(status)) => {
            let outcome = match status.code() {
                Code::Unavailable => Outcome::Unavailable,
                Code::DeadlineExceeded => Outcome::DeadlineExceeded,
                Code::Cancelled => Outcome::Cancelled,
                _ => Outcome::Other,
            };
            let detail = format!("{:?}: {}", status.code(), status.message());
            tally.record(kind, outcome, Some(failure(detail)));
        }
    }
}

fn with_deadline<T>(message: T, deadline: Option<Duration>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(deadline) = deadline {
        request.set_timeout(deadline);
    }
    request
}

/// The plan of the `i`th call of a kind: mostly plain, some with a generous
/// deadline, some cancelled mid-call, some meant to run out of time.
fn plan(i: u64, expiring: Duration) -> Plan {
    match i % 10 {
        0..=2 => Plan {
            deadline: Some(Duration::from_secs(5)),
            cancel_after: None,
            expect_deadline: false,
        },
        3 => Plan {
            deadline: None,
            cancel_after: Some(3),
            expect_deadline: false,
        },
        4 => Plan {
            deadline: Some(expiring),
            cancel_after: None,
            expect_deadline: true,
        },
        _ => Plan {
            deadline: None,
            cancel_after: None,
            expect_deadline: false,
        },
    }
}

/// The load's shape.
#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    /// Unary calls per second.
    pub unary_rate: f64,
    /// Workers per streaming kind.
    pub stream_workers: usize,
}

/// Runs the load until `end`, then waits for every call to finish (each is
/// bounded by its watchdog).
pub async fn run(target: Target, shape: LoadShape, end: Instant, tally: Arc<Tally>) {
    let mut tasks = JoinSet::new();
    tasks.spawn(unary_ticker(
        target.clone(),
        shape.unary_rate,
        end,
        tally.clone(),
    ));
    for w in 0..shape.stream_workers {
        let client = |k: usize| target.client(w * 3 + k);
        tasks.spawn(server_streams(client(0), end, tally.clone(), w as u64));
        tasks.spawn(client_streams(client(1), end, tally.clone(), w as u64));
        tasks.spawn(bidi_streams(client(2), end, tally.clone(), w as u64));
    }
    while tasks.join_next().await.is_some() {}
}

async fn unary_ticker(target: Target, rate: f64, end: Instant, tally: Arc<Tally>) {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let in_flight = Arc::new(Semaphore::new(MAX_UNARY_IN_FLIGHT));
    let mut calls = JoinSet::new();
    let mut i = 0u64;
    while Instant::now() < end {
        ticks.tick().await;
        while calls.try_join_next().is_some() {}
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            tally.skipped();
            continue;
        };
        let mut client = target.client(i as usize);
        let tally = tally.clone();
        // Unary plans: 30% a 2 s deadline, 1% an expiring 1 ms one, the rest
        // none (watchdog only).
        let plan = match i % 100 {
            0 => Plan {
                deadline: Some(Duration::from_millis(1)),
                cancel_after: None,
                expect_deadline: true,
            },
            n if n % 10 < 3 => Plan {
                deadline: Some(Duration::from_secs(2)),
                cancel_after: None,
                expect_deadline: false,
            },
            _ => Plan {
                deadline: None,
                cancel_after: None,
                expect_deadline: false,
            },
        };
        let name = format!("soak-{i}");
        calls.spawn(async move {
            let _permit = permit;
            watched(&tally, Kind::Unary, plan, async {
                let request = HelloRequest {
                    name: name.clone(),
                    payload: vec![0x5a; 256],
                };
                match client
                    .say_hello(with_deadline(request, plan.deadline))
                    .await
                {
                    Ok(reply) if reply.get_ref().message == format!("Hello, {name}!") => Ended::Ok,
                    Ok(reply) => {
                        Ended::Wrong(format!("unexpected reply {:?}", reply.get_ref().message))
                    }
                    Err(status) => Ended::Status(status),
                }
            })
            .await;
        });
        i += 1;
    }
    while calls.join_next().await.is_some() {}
}

/// Pause between a worker's calls.
const BETWEEN_CALLS: Duration = Duration::from_millis(20);

async fn server_streams(
    mut client: GreeterClient<Channel>,
    end: Instant,
    tally: Arc<Tally>,
    worker: u64,
) {
    let mut i = worker;
    while Instant::now() < end {
        let plan = plan(i, Duration::from_millis(300));
        // An expiring call asks for an endless stream; the others for 100
        // messages of 1 KiB.
        let count = if plan.expect_deadline { u32::MAX } else { 100 };
        watched(&tally, Kind::ServerStream, plan, async {
            let request = StreamRequest {
                name: "soak".to_owned(),
                count,
                payload_size: 1024,
            };
            let mut replies = match client
                .stream_greetings(with_deadline(request, plan.deadline))
                .await
            {
                Ok(response) => response.into_inner(),
                Err(status) => return Ended::Status(status),
            };
            let mut received = 0u32;
            loop {
                if plan.cancel_after == Some(received) {
                    return Ended::ClientCancel;
                }
                match replies.message().await {
                    Ok(Some(_)) => received += 1,
                    Ok(None) if received == count => return Ended::Ok,
                    Ok(None) => {
                        return Ended::Wrong(format!("OK after {received} of {count} messages"));
                    }
                    Err(status) => return Ended::Status(status),
                }
            }
        })
        .await;
        i += 1;
        tokio::time::sleep(BETWEEN_CALLS).await;
    }
}

async fn client_streams(
    mut client: GreeterClient<Channel>,
    end: Instant,
    tally: Arc<Tally>,
    worker: u64,
) {
    let mut i = worker;
    while Instant::now() < end {
        let plan = plan(i, Duration::from_millis(100));
        watched(&tally, Kind::ClientStream, plan, async {
            let (tx, rx) = mpsc::channel::<Number>(4);
            // 20 numbers, 10 ms apart (an expiring call sends them 50 ms
            // apart, so it outlives its 100 ms deadline).
            let gap = if plan.expect_deadline { 50 } else { 10 };
            let cancel_after = plan.cancel_after;
            let feeder = tokio::spawn(async move {
                for value in 1..=20i64 {
                    if tx.send(Number { value }).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(gap)).await;
                }
            });
            let call = client.sum(with_deadline(ReceiverStream::new(rx), plan.deadline));
            let ended = match cancel_after {
                Some(n) => {
                    tokio::select! {
                        ended = call => match ended {
                            Ok(_) => Ended::Wrong("finished before the client cancelled it".into()),
                            Err(status) => Ended::Status(status),
                        },
                        () = tokio::time::sleep(Duration::from_millis(10 * u64::from(n))) => Ended::ClientCancel,
                    }
                }
                None => match call.await {
                    Ok(reply) if reply.get_ref().total == 210 && reply.get_ref().count == 20 => {
                        Ended::Ok
                    }
                    Ok(reply) => Ended::Wrong(format!(
                        "sum {} of {} numbers",
                        reply.get_ref().total,
                        reply.get_ref().count
                    )),
                    Err(status) => Ended::Status(status),
                },
            };
            feeder.abort();
            ended
        })
        .await;
        i += 1;
        tokio::time::sleep(BETWEEN_CALLS).await;
    }
}

async fn bidi_streams(
    mut client: GreeterClient<Channel>,
    end: Instant,
    tally: Arc<Tally>,
    worker: u64,
) {
    let mut i = worker;
    while Instant::now() < end {
        let plan = plan(i, Duration::from_millis(100));
        watched(&tally, Kind::Bidi, plan, async {
            let (tx, rx) = mpsc::channel::<ChatMessage>(1);
            let message = |seq: u64| ChatMessage {
                text: "soak".to_owned(),
                seq,
            };
            if tx.send(message(0)).await.is_err() {
                return Ended::Wrong("chat channel closed".into());
            }
            let mut replies = match client
                .chat(with_deadline(ReceiverStream::new(rx), plan.deadline))
                .await
            {
                Ok(response) => response.into_inner(),
                Err(status) => return Ended::Status(status),
            };
            // 20 round trips (an expiring call waits 20 ms between them).
            for seq in 0..20u64 {
                if plan.cancel_after == Some(seq as u32) {
                    return Ended::ClientCancel;
                }
                match replies.message().await {
                    Ok(Some(reply)) if reply.seq == seq => {}
                    Ok(Some(reply)) => {
                        return Ended::Wrong(format!("reply {} for message {seq}", reply.seq));
                    }
                    Ok(None) => return Ended::Wrong(format!("OK after {seq} of 20 replies")),
                    Err(status) => return Ended::Status(status),
                }
                if plan.expect_deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if seq + 1 < 20 && tx.send(message(seq + 1)).await.is_err() {
                    // The call ended (deadline, instance gone): its status
                    // says how.
                    return match replies.message().await {
                        Err(status) => Ended::Status(status),
                        Ok(_) => Ended::Wrong("request stream closed, call still open".into()),
                    };
                }
            }
            drop(tx);
            match replies.message().await {
                Ok(Some(_)) => Ended::Wrong("a reply after the last message".into()),
                Ok(None) => Ended::Ok,
                Err(status) => Ended::Status(status),
            }
        })
        .await;
        i += 1;
        tokio::time::sleep(BETWEEN_CALLS).await;
    }
}
