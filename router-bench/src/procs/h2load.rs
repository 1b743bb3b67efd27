//! Unary throughput with nghttp2's `h2load` (a client in C, so the figure is
//! not bounded by a tonic client sharing the machine's CPUs): the request
//! body is one gRPC-framed `HelloRequest` in a file, posted to
//! `/myservice.v1.Greeter/SayHello` with `content-type: application/grpc` and
//! `te: trailers`.
//!
//! h2load knows nothing of gRPC: a call that fails does so in the trailers of
//! an HTTP 200 response, which h2load counts as a success. So every run also
//! checks the response bytes: each successful `SayHello` echoes the request's
//! payload, and a run whose replies carry less data than that failed.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use myservice::pb::HelloRequest;
use router_runtime::codegen::prost::Message;

use crate::BoxError;
use crate::cli::read_duration;

/// The gRPC path h2load posts to.
pub const PATH: &str = "/myservice.v1.Greeter/SayHello";

/// How the load is shaped: `-c` connections, `-m` streams on each.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Client connections (`-c`).
    pub connections: usize,
    /// Concurrent streams per connection (`-m`).
    pub streams: usize,
}

/// The request body: a gRPC length-prefixed message (flag byte 0, 4-byte
/// big-endian length) holding a `HelloRequest` with `payload_size` bytes of
/// payload, as the tonic clients send.
pub fn request_body(payload_size: usize) -> Vec<u8> {
    let message = HelloRequest {
        name: "bench".to_owned(),
        payload: vec![0x5a; payload_size],
    }
    .encode_to_vec();
    let length = u32::try_from(message.len()).unwrap_or(u32::MAX);
    let mut body = Vec::with_capacity(5 + message.len());
    body.push(0);
    body.extend_from_slice(&length.to_be_bytes());
    body.extend_from_slice(&message);
    body
}

/// What one h2load run reported.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct H2loadRun {
    /// The measured time (`finished in`).
    pub elapsed: Duration,
    /// Requests completed with a 2xx status (`succeeded`).
    pub succeeded: u64,
    /// Requests that failed (`failed` + `errored` + `timeout`).
    pub failed: u64,
    /// Response body bytes received (`traffic: ... data`).
    pub data_bytes: u64,
    /// The mean time per request (`time for request` mean).
    pub mean_request: Duration,
}

impl H2loadRun {
    /// Succeeded requests per second.
    pub fn per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.succeeded as f64 / secs
        } else {
            0.0
        }
    }

    /// Adds another run (another round).
    pub fn merge(&mut self, other: &H2loadRun) {
        let total = self.succeeded + other.succeeded;
        // Mean request time weighted by requests.
        if total > 0 {
            let weighted = self.mean_request.as_secs_f64() * self.succeeded as f64
                + other.mean_request.as_secs_f64() * other.succeeded as f64;
            self.mean_request = Duration::from_secs_f64(weighted / total as f64);
        }
        self.elapsed += other.elapsed;
        self.succeeded = total;
        self.failed += other.failed;
        self.data_bytes += other.data_bytes;
    }

    /// An error when replies carry less data than `SayHello` echoes
    /// (`payload_size` bytes each): the calls failed in their trailers.
    pub fn check_replies(&self, payload_size: usize) -> Result<(), String> {
        if self.succeeded == 0 {
            return Err("h2load completed no request".into());
        }
        let per_reply = self.data_bytes / self.succeeded;
        if per_reply < payload_size as u64 {
            return Err(format!(
                "h2load replies carry {per_reply} bytes of data each, less than the {payload_size}-byte payload SayHello echoes: the calls fail (grpc-status in the trailers)"
            ));
        }
        Ok(())
    }
}

/// Parses h2load's summary (`finished in`, `requests:`, `traffic:` and
/// `time for request:` lines).
pub fn parse(output: &str) -> Result<H2loadRun, String> {
    let line = |prefix: &str| {
        output
            .lines()
            .map(str::trim_start)
            .find(|l| l.starts_with(prefix))
            .ok_or_else(|| format!("no `{prefix}` line in h2load's output"))
    };
    let finished = line("finished in ")?;
    let elapsed = finished
        .strip_prefix("finished in ")
        .and_then(|rest| rest.split(',').next())
        .and_then(read_duration)
        .ok_or_else(|| format!("cannot read the time in {finished:?}"))?;

    let requests = line("requests:")?;
    let count = |label: &str| {
        counted(requests, label).ok_or_else(|| format!("no `{label}` count in {requests:?}"))
    };
    let succeeded = count("succeeded")?;
    let failed = count("failed")? + count("errored")? + count("timeout")?;

    let traffic = line("traffic:")?;
    let data_bytes = traffic
        .split(',')
        .find(|part| part.trim_end().ends_with("data"))
        .and_then(|part| {
            let open = part.find('(')?;
            let close = part[open..].find(')')? + open;
            part[open + 1..close].parse().ok()
        })
        .ok_or_else(|| format!("cannot read the data bytes in {traffic:?}"))?;

    let times = line("time for request:")?;
    let mean_request = times
        .strip_prefix("time for request:")
        .and_then(|rest| rest.split_whitespace().nth(2))
        .and_then(read_duration)
        .ok_or_else(|| format!("cannot read the mean in {times:?}"))?;
    Ok(H2loadRun {
        elapsed,
        succeeded,
        failed,
        data_bytes,
        mean_request,
    })
}

/// The number before `label` in a line of `N label, N label` items.
fn counted(line: &str, label: &str) -> Option<u64> {
    let rest = line.split_once(':').map_or(line, |(_, rest)| rest);
    rest.split(',').find_map(|item| {
        let mut words = item.split_whitespace();
        let number = words.next()?;
        (words.next()? == label).then(|| number.parse().ok())?
    })
}

/// Runs h2load against `addr` for `duration`, sending `headers` (`name:
/// value`) with each request besides gRPC's own, and reads its summary;
/// fails when it does not finish within `duration` plus a margin.
pub async fn run(
    exe: &Path,
    addr: SocketAddr,
    body: &Path,
    shape: Shape,
    duration: Duration,
    headers: &[String],
) -> Result<H2loadRun, BoxError> {
    let mut command = tokio::process::Command::new(exe);
    command
        .arg(format!("-c{}", shape.connections))
        .arg(format!("-m{}", shape.streams))
        .arg("-t1")
        .arg(format!("-D{}ms", duration.as_millis().max(1)))
        .arg("-d")
        .arg(body)
        .args(["-H", "content-type: application/grpc"])
        .args(["-H", "te: trailers"]);
    for header in headers {
        command.arg("-H").arg(header);
    }
    command
        .arg(format!("http://{addr}{PATH}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let limit = duration + Duration::from_secs(20);
    let output = tokio::time::timeout(limit, command.output())
        .await
        .map_err(|_| format!("h2load did not finish within {limit:?}"))?
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "h2load failed ({}): {}{}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    parse(&stdout).map_err(|e| format!("{e}; h2load printed:\n{stdout}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// h2load 1.52's summary of a timed run.
    const OUTPUT: &str = "starting benchmark...
spawning thread #0: 16 total client(s). Timing-based test with 0s of warm-up time and 3s of main duration for measurements.
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 3.00s, 24563.33 req/s, 2.91MB/s
requests: 73690 total, 73754 started, 73690 done, 73689 succeeded, 1 failed, 2 errored, 3 timeout
status codes: 73690 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 8.72MB (9145126) total, 1.42MB (1487766) headers (space savings 92.31%), 7.03MB (7369000) data
                     min         max         mean         sd        +/- sd
time for request:      391us     30.41ms      2.57ms      1.20ms    77.10%
time for connect:      115us      1.56ms       770us       418us    62.50%
time to 1st byte:     1.89ms      4.68ms      3.17ms       884us    56.25%
req/s           :    1523.61     1547.82     1535.21        6.51    62.50%
";

    #[test]
    fn parses_the_summary() {
        let run = parse(OUTPUT).expect("parsed");
        assert_eq!(run.elapsed, Duration::from_secs(3));
        assert_eq!(run.succeeded, 73689);
        assert_eq!(run.failed, 6);
        assert_eq!(run.data_bytes, 7_369_000);
        assert_eq!(run.mean_request, Duration::from_micros(2570));
        assert!((run.per_sec() - 73689.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn parses_millisecond_runs() {
        let text = OUTPUT.replace("finished in 3.00s", "finished in 250.50ms");
        let run = parse(&text).expect("parsed");
        assert_eq!(run.elapsed, Duration::from_micros(250_500));
    }

    #[test]
    fn output_without_a_summary_is_an_error() {
        let error = parse("starting benchmark...\nno clients\n").expect_err("no summary");
        assert!(error.contains("finished in"), "{error}");
        let cut = OUTPUT.replace("traffic:", "trafic:");
        assert!(parse(&cut).is_err());
    }

    #[test]
    fn replies_without_the_payload_are_failed_calls() {
        let run = parse(OUTPUT).expect("parsed");
        assert!(run.check_replies(100).is_ok());
        // 100 bytes a reply is less than a 1000-byte payload echoed back.
        assert!(run.check_replies(1000).is_err());
        let empty = H2loadRun::default();
        assert!(empty.check_replies(100).is_err());
    }

    #[test]
    fn rounds_merge_into_one_rate() {
        let mut total = H2loadRun {
            elapsed: Duration::from_secs(1),
            succeeded: 1000,
            mean_request: Duration::from_micros(100),
            ..H2loadRun::default()
        };
        total.merge(&H2loadRun {
            elapsed: Duration::from_secs(1),
            succeeded: 3000,
            failed: 2,
            data_bytes: 10,
            mean_request: Duration::from_micros(200),
        });
        assert!((total.per_sec() - 2000.0).abs() < 1e-9);
        assert_eq!(total.failed, 2);
        assert_eq!(total.mean_request, Duration::from_micros(175));
    }

    #[test]
    fn the_body_is_one_grpc_message() {
        let body = request_body(100);
        assert_eq!(body[0], 0, "uncompressed");
        let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        assert_eq!(length, body.len() - 5);
        let decoded = HelloRequest::decode(&body[5..]).expect("a HelloRequest");
        assert_eq!(decoded.payload.len(), 100);
        assert_eq!(decoded.name, "bench");
    }
}
