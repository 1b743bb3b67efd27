//! `router-bench procs --connect`: what a Connect call costs over a gRPC
//! call through the same router, in the same run. The example `router`
//! (which serves Connect) runs as a process with one `instance`; one call
//! at a time, rounds rotate the protocols (the first round a warm-up):
//!
//! - `grpc`: SayHello from a tonic client over HTTP/2;
//! - `connect-json-h1`: the same call as Connect unary JSON over HTTP/1.1
//!   (transcoded to protobuf and back by the router);
//! - `connect-json-h2`: the same over HTTP/2;
//! - `connect-proto-h1`: Connect unary protobuf over HTTP/1.1.
//!
//! Each call carries the same payload (base64 in the JSON), and each answer
//! is checked.

use std::fmt::Write as _;
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use myservice::pb::HelloRequest;
use myservice::pb::greeter_client::GreeterClient;
use prost::Message;

use crate::BoxError;
use crate::procs::{ProcsSettings, targets};
use crate::report::heading;

/// The protocols compared, `grpc` first (the baseline).
const PROTOCOLS: [&str; 4] = [
    "grpc",
    "connect-json-h1",
    "connect-json-h2",
    "connect-proto-h1",
];

/// The clients of one run, one connection each.
struct Clients {
    grpc: GreeterClient<tonic::transport::Channel>,
    h1: Client<HttpConnector, Full<Bytes>>,
    h2: Client<HttpConnector, Full<Bytes>>,
    url: String,
    payload: Vec<u8>,
    json: Bytes,
    proto: Bytes,
}

impl Clients {
    /// One call with `protocol`; an error says what was wrong.
    async fn call(&mut self, protocol: &str) -> Result<(), BoxError> {
        if protocol == "grpc" {
            let reply = self
                .grpc
                .say_hello(HelloRequest {
                    name: "bench".into(),
                    payload: self.payload.clone(),
                })
                .await?
                .into_inner();
            if reply.payload.len() != self.payload.len() {
                return Err("grpc: the payload did not come back".into());
            }
            return Ok(());
        }
        let (client, content_type, body) = match protocol {
            "connect-json-h1" => (&self.h1, "application/json", self.json.clone()),
            "connect-json-h2" => (&self.h2, "application/json", self.json.clone()),
            _ => (&self.h1, "application/proto", self.proto.clone()),
        };
        let request = http::Request::post(&self.url)
            .header("content-type", content_type)
            .body(Full::new(body))?;
        let response = client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status != http::StatusCode::OK {
            return Err(format!(
                "{protocol}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            )
            .into());
        }
        let echoed = if content_type == "application/json" {
            let reply: serde_json::Value = serde_json::from_slice(&body)?;
            reply["payload"].as_str().map_or(0, |p| p.len())
                == base64::engine::general_purpose::STANDARD
                    .encode(&self.payload)
                    .len()
        } else {
            myservice::pb::HelloReply::decode(body)?.payload.len() == self.payload.len()
        };
        if !echoed {
            return Err(format!("{protocol}: the payload did not come back").into());
        }
        Ok(())
    }
}

/// A connector with TCP_NODELAY, as tonic's: small frames do not wait for
/// Nagle's algorithm (without it an HTTP/2 request's DATA frame waits for
/// the ACK of its HEADERS frame, 40 ms with delayed ACKs).
fn connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector
}

/// Runs the comparison and prints its table.
pub async fn run(settings: &ProcsSettings) -> Result<(), BoxError> {
    let routed = targets::routed(&settings.exes).await?;
    let endpoint = format!("http://{}", routed.addr);
    let payload = vec![0x5a; settings.payload_size];
    let json = serde_json::json!({
        "name": "bench",
        "payload": base64::engine::general_purpose::STANDARD.encode(&payload),
    });
    let mut clients = Clients {
        grpc: GreeterClient::connect(endpoint.clone()).await?,
        h1: Client::builder(TokioExecutor::new()).build(connector()),
        h2: Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector()),
        url: format!("{endpoint}/myservice.v1.Greeter/SayHello"),
        json: Bytes::from(json.to_string()),
        proto: Bytes::from(
            HelloRequest {
                name: "bench".into(),
                payload: payload.clone(),
            }
            .encode_to_vec(),
        ),
        payload,
    };
    for protocol in PROTOCOLS {
        clients.call(protocol).await?;
    }
    let mut histograms: Vec<Histogram<u64>> = PROTOCOLS
        .iter()
        .map(|_| Histogram::new_with_bounds(1, 60_000_000, 3))
        .collect::<Result<_, _>>()?;
    for round in 0..settings.rounds {
        eprint!("connect: round {}/{} ", round + 1, settings.rounds);
        for step in 0..PROTOCOLS.len() {
            let index = (step + round as usize) % PROTOCOLS.len();
            let protocol = PROTOCOLS[index];
            let started = Instant::now();
            while started.elapsed() < settings.duration {
                let call = Instant::now();
                clients.call(protocol).await?;
                let micros = u64::try_from(call.elapsed().as_micros()).unwrap_or(u64::MAX);
                if round > 0 {
                    histograms[index].record(micros.max(1))?;
                }
            }
            eprint!(".");
        }
        eprintln!();
    }
    drop(clients);
    drop(routed);
    print!("{}", table(settings, &histograms));
    Ok(())
}

fn table(settings: &ProcsSettings, histograms: &[Histogram<u64>]) -> String {
    let mut out = heading(
        settings.format,
        "Connect against gRPC through the same router (example router process, one instance), one call at a time",
    );
    let base = histograms[0].value_at_quantile(0.5) as f64;
    let _ = writeln!(
        out,
        "{:<18} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "protocol", "calls", "p50 µs", "p99 µs", "mean µs", "p50 vs grpc"
    );
    for (protocol, h) in PROTOCOLS.iter().zip(histograms) {
        let p50 = h.value_at_quantile(0.5);
        let _ = writeln!(
            out,
            "{:<18} {:>9} {:>9} {:>9} {:>9.0} {:>+11.0}µs",
            protocol,
            h.len(),
            p50,
            h.value_at_quantile(0.99),
            h.mean(),
            p50 as f64 - base,
        );
    }
    let _ = writeln!(
        out,
        "\n{} rounds of {:?} per protocol (the first a warm-up, not counted), {} bytes of payload per call",
        settings.rounds, settings.duration, settings.payload_size
    );
    out
}
