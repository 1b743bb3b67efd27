//! Closed-loop load generation: `concurrency` workers each run one operation
//! after the other until the round's time is up, recording every operation's
//! latency.

use std::time::Duration;

use hdrhistogram::Histogram;
use myservice::pb::greeter_client::GreeterClient;
use myservice::pb::{ChatMessage, HelloRequest, StreamRequest};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::metadata::{AsciiMetadataValue, MetadataKey};
use tonic::transport::Channel;

use crate::BoxError;
use crate::target::Target;

/// Highest latency the histograms hold, in nanoseconds (values above are
/// clamped).
const MAX_LATENCY_NS: u64 = 120_000_000_000;

/// A new latency histogram in nanoseconds, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3) {
        Ok(h) => h,
        // The bounds are constants that hdrhistogram accepts.
        Err(e) => panic!("histogram bounds: {e}"),
    }
}

/// What each operation does.
#[derive(Debug, Clone)]
pub enum Workload {
    /// One SayHello with this payload.
    Unary {
        /// The request payload (echoed back).
        payload: Vec<u8>,
    },
    /// One StreamGreetings call, read to the end.
    Stream {
        /// Messages per call.
        count: u32,
        /// Payload bytes per message.
        size: u32,
    },
    /// One round trip on a Chat stream that lives for the whole round.
    PingPong,
}

/// One request header added to every call (for example a label selector).
#[derive(Debug, Clone)]
pub struct Header {
    /// The key.
    pub key: MetadataKey<tonic::metadata::Ascii>,
    /// The value.
    pub value: AsciiMetadataValue,
}

impl Header {
    /// The header `key: value`; an error if `value` is not a header value.
    pub fn new(key: &'static str, value: &str) -> Result<Header, BoxError> {
        Ok(Header {
            key: MetadataKey::from_static(key),
            value: AsciiMetadataValue::try_from(value)
                .map_err(|e| format!("the {key} header's value is not a header value: {e}"))?,
        })
    }

    /// As h2load's `-H` argument, `key: value`.
    pub fn h2load_arg(&self) -> String {
        format!("{}: {}", self.key, self.value.to_str().unwrap_or_default())
    }
}

/// What one round against one target measured.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Completed operations.
    pub ops: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Failed operations.
    pub errors: u64,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
    /// From the start until the last worker finished.
    pub elapsed: Duration,
    /// Per-operation latency in nanoseconds.
    pub latency: Histogram<u64>,
}

impl Sample {
    /// An empty sample.
    pub fn empty() -> Sample {
        Sample {
            ops: 0,
            bytes: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            latency: new_histogram(),
        }
    }

    /// Adds `other` (another worker, or another round).
    pub fn merge(&mut self, other: &Sample) {
        self.ops += other.ops;
        self.bytes += other.bytes;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
    }

    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        per_sec(self.ops as f64, self.elapsed)
    }

    /// MiB received per second.
    pub fn mib_per_sec(&self) -> f64 {
        per_sec(self.bytes as f64 / (1024.0 * 1024.0), self.elapsed)
    }

    /// The latency at `quantile` (0..=1), in microseconds.
    pub fn latency_us(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn record(&mut self, started: Instant) {
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.latency.saturating_record(ns.max(1));
        self.ops += 1;
    }

    fn fail(&mut self, error: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }
}

fn per_sec(amount: f64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { amount / secs } else { 0.0 }
}

/// Runs `workload` against `target` with `concurrency` workers for
/// `duration`, adding the target's headers to every call.
pub async fn run(
    target: &Target,
    workload: &Workload,
    concurrency: usize,
    duration: Duration,
) -> Result<Sample, BoxError> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        let client = target.client(worker);
        let workload = workload.clone();
        let headers = target.headers.clone();
        workers.spawn(async move {
            match workload {
                Workload::Unary { payload } => unary(client, payload, deadline, headers).await,
                Workload::Stream { count, size } => {
                    stream(client, count, size, deadline, headers).await
                }
                Workload::PingPong => pingpong(client, deadline, headers).await,
            }
        });
    }
    let mut total = Sample::empty();
    while let Some(done) = workers.join_next().await {
        total.merge(&done.map_err(|e| format!("load worker failed: {e}"))?);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

/// `message` as a request carrying `headers`.
pub fn request<T>(message: T, headers: &[Header]) -> Request<T> {
    let mut request = Request::new(message);
    for h in headers {
        request
            .metadata_mut()
            .insert(h.key.clone(), h.value.clone());
    }
    request
}

async fn unary(
    mut client: GreeterClient<Channel>,
    payload: Vec<u8>,
    deadline: Instant,
    headers: Vec<Header>,
) -> Sample {
    let mut sample = Sample::empty();
    while Instant::now() < deadline {
        let message = HelloRequest {
            name: "bench".to_owned(),
            payload: payload.clone(),
        };
        let started = Instant::now();
        match client.say_hello(request(message, &headers)).await {
            Ok(reply) => {
                sample.bytes += reply.get_ref().payload.len() as u64;
                sample.record(started);
            }
            Err(status) => sample.fail(status),
        }
    }
    sample
}

async fn stream(
    mut client: GreeterClient<Channel>,
    count: u32,
    size: u32,
    deadline: Instant,
    headers: Vec<Header>,
) -> Sample {
    let mut sample = Sample::empty();
    while Instant::now() < deadline {
        let message = StreamRequest {
            name: "bench".to_owned(),
            count,
            payload_size: size,
        };
        let started = Instant::now();
        let mut replies = match client.stream_greetings(request(message, &headers)).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                sample.fail(status);
                continue;
            }
        };
        let mut received = 0u32;
        loop {
            match replies.message().await {
                Ok(Some(reply)) => {
                    sample.bytes += reply.payload.len() as u64;
                    received += 1;
                }
                Ok(None) if received == count => {
                    sample.record(started);
                    break;
                }
                Ok(None) => {
                    sample.fail(format!("stream ended after {received} of {count} messages"));
                    break;
                }
                Err(status) => {
                    sample.fail(status);
                    break;
                }
            }
        }
    }
    sample
}

async fn pingpong(
    mut client: GreeterClient<Channel>,
    deadline: Instant,
    headers: Vec<Header>,
) -> Sample {
    let mut sample = Sample::empty();
    let (tx, rx) = mpsc::channel::<ChatMessage>(1);
    let message = |seq: u64| ChatMessage {
        text: "ping".to_owned(),
        seq,
    };
    // The first message goes out with the call, so a router that waits for it
    // before answering with headers cannot deadlock the exchange.
    if tx.send(message(0)).await.is_err() {
        sample.fail("chat request channel closed");
        return sample;
    }
    let mut replies = match client
        .chat(request(ReceiverStream::new(rx), &headers))
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => {
            sample.fail(status);
            return sample;
        }
    };
    // The first exchange includes the call's setup: not measured.
    let mut seq = 0u64;
    let mut started: Option<Instant> = None;
    loop {
        match replies.message().await {
            Ok(Some(reply)) if reply.seq == seq => {
                if let Some(started) = started {
                    sample.record(started);
                }
            }
            Ok(Some(reply)) => {
                sample.fail(format!("expected reply {seq}, got {}", reply.seq));
                break;
            }
            Ok(None) => {
                sample.fail("chat ended early");
                break;
            }
            Err(status) => {
                sample.fail(status);
                break;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        seq += 1;
        started = Some(Instant::now());
        if tx.send(message(seq)).await.is_err() {
            sample.fail("chat request channel closed");
            break;
        }
    }
    drop(tx);
    // Half-closed: drain to the end so the call finishes cleanly.
    while let Ok(Some(_)) = replies.message().await {}
    sample
}
