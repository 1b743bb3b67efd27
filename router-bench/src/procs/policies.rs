//! `router-bench procs --policies`: what the traffic policies cost, as
//! deployed. Two `grpc-router serve` processes, each with one example
//! `instance` process registered (labelled `version=v1`), measured in one
//! interleaved run with the direct server as the baseline:
//!
//! - `daemon`: no policy;
//! - `daemon+policies`: every policy on for the Greeter: JWT client
//!   authentication (HS256, the secret from an environment variable) and an
//!   `allow` rule on the token's `role` claim, service, method, per-client
//!   and per-instance rate limits (far above what the run sends), outlier
//!   detection (both rules), a retry policy for `SayHello` with retry
//!   throttling, a traffic split (all calls to `version=v1`), and a default
//!   and maximum deadline.
//!
//! Every client (h2load and tonic, for every target) sends the same
//! `authorization: Bearer <jwt>` header, so the targets differ only in what
//! the router does with it. Both daemons have an admin listener: before the
//! measurements the bench checks that the policies are on (a call without a
//! token, and one whose token lacks the claim, are refused), and afterwards
//! it reads each daemon's `grpc_server_handled_total` and fails the run if
//! any measured call ended other than OK.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use myservice_example::pb::HelloRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::metadata::{AsciiMetadataValue, MetadataKey};

use super::process::{Proc, TempDir, parse_daemon_listening};
use super::table::{self, Figures};
use super::{
    ProcsSettings, Running, START_TIMEOUT, Tool, command, h2load_rounds, sibling, start_direct,
    start_instance,
};
use crate::BoxError;
use crate::cli::Format;
use crate::load::{Header, Workload};
use crate::machine::{Machine, load_average};
use crate::procs::h2load::H2loadRun;
use crate::report::{Table, micros};
use crate::scenarios::{Measured, Row, Timing, Unit, interleaved};
use crate::servers::Target;

/// The service the policies apply to.
const SERVICE: &str = "myservice.v1.Greeter";
/// The environment variable the policies daemon reads its HMAC secret from.
const SECRET_ENV: &str = "ROUTER_BENCH_JWT_SECRET";
/// The tokens' issuer and audience.
const ISSUER: &str = "router-bench";
const AUDIENCE: &str = "grpc-router";
/// The claim the allow rule wants.
const ROLE: &str = "bench";

/// The target names.
const NONE: &str = "daemon";
const POLICIES: &str = "daemon+policies";

/// The config both daemons share: clients and registrations on one free
/// port, an admin listener (metrics) on another, warnings only.
fn base_config(router_id: &str) -> String {
    format!(
        "router_id = \"{router_id}\"\n\
         [clients]\naddress = \"127.0.0.1:0\"\n\
         [admin]\naddress = \"127.0.0.1:0\"\n\
         [log]\nlevel = \"warn\"\n"
    )
}

/// The policies `daemon+policies` can turn on (all by default; fewer with
/// `--policy-set`, to see what each costs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// JWT client authentication and an `allow` rule on a claim.
    Jwt,
    /// Service, method, per-client and per-instance rate limits.
    Limits,
    /// Outlier detection (failures in a row and a failure rate).
    Outlier,
    /// A retry policy for the service and for `SayHello`, retry throttling.
    Retry,
    /// A traffic split: every call to `version=v1`.
    Split,
    /// A default and a maximum deadline.
    Deadline,
}

/// Every policy.
pub const ALL: [Policy; 6] = [
    Policy::Jwt,
    Policy::Limits,
    Policy::Outlier,
    Policy::Retry,
    Policy::Split,
    Policy::Deadline,
];

/// The policies of `set` on for the Greeter. The limits are far above what
/// two CPUs can send, so none refuses a call; outlier detection, retries
/// and the split do their bookkeeping on every call.
fn policies_config(set: &[Policy]) -> String {
    let on = |p: Policy| set.contains(&p);
    let mut config = base_config("procs-policies");
    if on(Policy::Jwt) {
        let _ = write!(
            config,
            "[auth.jwt]\n\
             issuer = \"{ISSUER}\"\n\
             audience = \"{AUDIENCE}\"\n\
             hmac_secret_env = \"{SECRET_ENV}\"\n"
        );
    }
    let _ = writeln!(config, "[services.\"{SERVICE}\"]");
    if on(Policy::Deadline) {
        config.push_str("default_deadline = \"5s\"\nmax_deadline = \"30s\"\n");
    }
    if on(Policy::Limits) {
        config.push_str(
            "rate_limit = { per_second = 10000000, burst = 1000000 }\n\
             client_rate_limit = { key = \"peer\", per_second = 10000000, burst = 1000000 }\n\
             instance_rate_limit = { per_second = 10000000, burst = 1000000 }\n",
        );
    }
    if on(Policy::Retry) {
        config.push_str(
            "retry_policy = { max_attempts = 3, initial_backoff = \"10ms\", max_backoff = \"100ms\", backoff_multiplier = 2.0, retryable_status_codes = [\"UNAVAILABLE\"] }\n\
             retry_throttling = { max_tokens = 100, token_ratio = 0.1 }\n",
        );
    }
    if on(Policy::Outlier) {
        config.push_str(
            "outlier_detection = { consecutive_failures = 5, failure_rate = 0.5, min_calls = 100, window = \"10s\", base_ejection = \"30s\", max_ejected_percent = 50 }\n",
        );
    }
    if on(Policy::Limits) || on(Policy::Retry) {
        let _ = writeln!(config, "[services.\"{SERVICE}\".methods.SayHello]");
    }
    if on(Policy::Limits) {
        config.push_str("rate_limit = { per_second = 10000000, burst = 1000000 }\n");
    }
    if on(Policy::Retry) {
        config.push_str(
            "retry_policy = { max_attempts = 2, initial_backoff = \"10ms\", max_backoff = \"50ms\", backoff_multiplier = 2.0, retryable_status_codes = [\"UNAVAILABLE\", \"RESOURCE_EXHAUSTED\"] }\n",
        );
    }
    if on(Policy::Jwt) {
        let _ = write!(
            config,
            "[[services.\"{SERVICE}\".allow]]\nclaims = {{ role = \"{ROLE}\" }}\n"
        );
    }
    if on(Policy::Split) {
        let _ = write!(
            config,
            "[[services.\"{SERVICE}\".split]]\nlabels = {{ version = \"v1\" }}\nweight = 100\n"
        );
    }
    config
}

/// A daemon target with its admin listener.
struct DaemonTarget {
    running: Running,
    admin: SocketAddr,
}

/// Starts `grpc-router serve` with `config` (and `env`), then one instance
/// labelled `version=v1` registered with it.
async fn start_daemon(
    daemon: &Path,
    instance: &Path,
    name: &'static str,
    config: &str,
    env: &[(&str, &str)],
) -> Result<DaemonTarget, BoxError> {
    let dir = TempDir::new(name)?;
    let path = dir.write("router.toml", config.as_bytes())?;
    let mut cmd = command(daemon);
    cmd.arg("serve").arg("--config").arg(&path);
    cmd.envs(env.iter().copied());
    let mut proc = Proc::spawn(name, cmd)?;
    let (clients, registrations, admin) = proc
        .wait_line(START_TIMEOUT, |line| {
            let (clients, registrations) = parse_daemon_listening(line)?;
            let admin = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("admin="))
                .and_then(|a| a.parse().ok())?;
            Some((clients, registrations, admin))
        })
        .await?;
    let id = format!("procs-{}", name.replace('+', "-"));
    let instance = start_instance(instance, registrations, &id, &["version=v1"]).await?;
    Ok(DaemonTarget {
        running: Running {
            name,
            addr: clients,
            _procs: vec![instance, proc],
            _proxy: None,
            _dir: Some(dir),
        },
        admin,
    })
}

/// A fresh random secret (hex of 32 bytes from the kernel, else the clock).
fn secret() -> String {
    let mut bytes = [0u8; 32];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if random.is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes[..16].copy_from_slice(&nanos.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An HS256 token for the bench's client, valid for an hour, with `role`.
fn token(secret: &str, role: &str) -> Result<String, BoxError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "router-bench",
        "role": role,
        "iat": now,
        "exp": now + 3600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| format!("cannot sign the bench's JWT: {e}").into())
}

/// One SayHello with `authorization` (or none): its status code.
async fn code_of(target: &Target, authorization: Option<&str>) -> Result<tonic::Code, BoxError> {
    let mut request = tonic::Request::new(HelloRequest {
        name: "policy-check".to_owned(),
        payload: Vec::new(),
    });
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse()?);
    }
    let answer = tokio::time::timeout(START_TIMEOUT, target.client(0).say_hello(request))
        .await
        .map_err(|_| format!("{}: the policy check timed out", target.name))?;
    Ok(match answer {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    })
}

/// The calls a daemon ended, by `grpc_code`, from its `/metrics`.
async fn handled(admin: SocketAddr) -> Result<BTreeMap<String, f64>, BoxError> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(admin).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: admin\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("{admin}/metrics did not answer within 10 s"))?
        .map_err(|e| format!("cannot read {admin}/metrics: {e}"))?;
    Ok(handled_by_code(&response))
}

/// Sums `grpc_server_handled_total` of the Greeter by `grpc_code` in a
/// Prometheus text scrape.
fn handled_by_code(scrape: &str) -> BTreeMap<String, f64> {
    let mut codes = BTreeMap::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("grpc_server_handled_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        if !labels.contains(&format!("grpc_service=\"{SERVICE}\"")) {
            continue;
        }
        let code = labels
            .split(',')
            .find_map(|l| l.strip_prefix("grpc_code=\""))
            .and_then(|c| c.strip_suffix('"'))
            .unwrap_or("?");
        let value: f64 = value
            .split_whitespace()
            .next()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0.0);
        *codes.entry(code.to_owned()).or_insert(0.0) += value;
    }
    codes
}

/// The calls that ended other than OK between two scrapes, by code;
/// `Canceled` is left out: h2load stops at its time limit with requests in
/// flight, and the router counts those as the client's cancellations.
fn not_ok(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<(String, f64)> {
    after
        .iter()
        .filter(|(code, _)| code.as_str() != "OK" && code.as_str() != "Canceled")
        .map(|(code, n)| (code.clone(), n - before.get(code).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n > 0.0)
        .collect()
}

/// The 1-minute load average now, for the report.
fn sample_load(loads: &mut Vec<f64>) {
    if let Some(load) = load_average() {
        loads.push(load);
    }
}

/// Runs the comparison and prints its tables; fails when the policies are
/// not in force or when any measured call was refused or failed.
pub async fn run(settings: &ProcsSettings) -> Result<(), BoxError> {
    let machine = Machine::detect();
    let mut loads = Vec::new();
    sample_load(&mut loads);
    let exes = &settings.exes;
    let mut notes: Vec<String> = Vec::new();
    let direct_exe = sibling(exes.direct.as_deref(), "direct")?;
    let instance = sibling(exes.instance.as_deref(), "instance")?;
    let daemon = sibling(exes.daemon.as_deref(), "grpc-router")?;
    let secret = secret();
    let bearer = format!("Bearer {}", token(&secret, ROLE)?);
    let wrong_role = format!("Bearer {}", token(&secret, "someone-else")?);

    let (direct_proc, direct_addr) = start_direct(&direct_exe).await?;
    let none = start_daemon(&daemon, &instance, NONE, &base_config("procs-daemon"), &[]).await?;
    let policies = start_daemon(
        &daemon,
        &instance,
        POLICIES,
        &policies_config(&settings.policy_set),
        &[(SECRET_ENV, secret.as_str())],
    )
    .await?;
    let admins = [(NONE, none.admin), (POLICIES, policies.admin)];
    let running = vec![
        Running {
            name: "direct",
            addr: direct_addr,
            _procs: vec![direct_proc],
            _proxy: None,
            _dir: None,
        },
        none.running,
        policies.running,
    ];
    let h2load = match settings.tool(Tool::H2load) {
        Ok(exe) => Some(exe),
        Err(note) => {
            notes.push(note);
            None
        }
    };
    eprintln!("procs --policies: targets direct, {NONE}, {POLICIES}");

    let mut wide = Vec::new();
    let mut single = Vec::new();
    for r in &running {
        wide.push(Target::connect(r.name, r.addr, settings.connections).await?);
        single.push(Target::connect(r.name, r.addr, 1).await?);
    }
    for target in &single {
        check_with(target, settings.payload_size, &bearer).await?;
    }
    // The policies are in force: no token, or a token without the claim,
    // is refused; the daemon without policies takes both.
    let policed = &single[2];
    let jwt = settings.policy_set.contains(&Policy::Jwt);
    let mut checks = vec![(&single[1], None, tonic::Code::Ok)];
    if jwt {
        checks.push((policed, None, tonic::Code::Unauthenticated));
        checks.push((
            policed,
            Some(wrong_role.as_str()),
            tonic::Code::PermissionDenied,
        ));
    }
    for (target, authorization, expected) in checks {
        let code = code_of(target, authorization).await?;
        if code != expected {
            return Err(format!(
                "{}: a call {} ended {code:?}, expected {expected:?}: the policies are not as configured",
                target.name,
                if authorization.is_some() {
                    "with a token lacking the role"
                } else {
                    "without a token"
                }
            )
            .into());
        }
    }
    let mut before = Vec::new();
    for (name, admin) in admins {
        before.push((name, handled(admin).await?));
    }

    let timing = Timing {
        rounds: settings.rounds,
        duration: settings.duration,
    };
    let header = Header {
        key: MetadataKey::from_static("authorization"),
        value: AsciiMetadataValue::try_from(bearer.as_str())
            .map_err(|e| format!("the bearer token is not a header value: {e}"))?,
    };
    let wide_refs: Vec<&Target> = wide.iter().collect();
    let single_refs: Vec<&Target> = single.iter().collect();
    let unary = Workload::Unary {
        payload: vec![0x5a; settings.payload_size],
    };

    let h2load_rounds = match &h2load {
        Some(exe) => {
            eprint!("h2load unary ");
            sample_load(&mut loads);
            let headers = [format!("authorization: {bearer}")];
            let rounds = h2load_rounds(exe, &running, settings, timing, &headers).await?;
            eprintln!();
            Some(rounds)
        }
        None => None,
    };
    eprint!("tonic unary c={} ", settings.unary_concurrency);
    sample_load(&mut loads);
    let tonic = interleaved(
        "unary",
        Unit::Calls,
        &wide_refs,
        &unary,
        settings.unary_concurrency,
        timing,
        Some(&header),
    )
    .await?;
    eprintln!();
    eprint!("unary, 1 call at a time ");
    sample_load(&mut loads);
    let latency = interleaved(
        "latency",
        Unit::Calls,
        &single_refs,
        &unary,
        1,
        timing,
        Some(&header),
    )
    .await?;
    eprintln!();
    eprint!("bidi ping-pong ");
    sample_load(&mut loads);
    let pingpong = interleaved(
        "pingpong",
        Unit::RoundTrips,
        &single_refs,
        &Workload::PingPong,
        1,
        timing,
        Some(&header),
    )
    .await?;
    eprintln!();
    sample_load(&mut loads);

    let mut failures = Vec::new();
    for row in [&tonic, &latency, &pingpong] {
        for m in &row.targets {
            if m.total.errors > 0 {
                failures.push(format!(
                    "{} on {}: {} failed calls, first: {}",
                    row.scenario,
                    m.target,
                    m.total.errors,
                    m.total.first_error.as_deref().unwrap_or("?")
                ));
            }
        }
    }
    let h2load_totals: Option<Vec<(String, H2loadRun)>> = h2load_rounds.as_ref().map(|rounds| {
        rounds
            .iter()
            .map(|(name, runs)| {
                let mut total = H2loadRun::default();
                for run in runs {
                    total.merge(run);
                }
                (name.clone(), total)
            })
            .collect()
    });
    if let Some(totals) = &h2load_totals {
        for (name, run) in totals {
            if run.failed > 0 {
                failures.push(format!("h2load on {name}: {} failed requests", run.failed));
            }
            if let Err(e) = run.check_replies(settings.payload_size) {
                failures.push(format!("h2load on {name}: {e}"));
            }
        }
    }
    // What each daemon counted: every measured call must have ended OK.
    let mut counted = Vec::new();
    for ((name, admin), (_, before)) in admins.iter().zip(&before) {
        let after = handled(*admin).await?;
        let refused = not_ok(before, &after);
        let delta = |code: &str| {
            after.get(code).copied().unwrap_or(0.0) - before.get(code).copied().unwrap_or(0.0)
        };
        let (ok, canceled) = (delta("OK"), delta("Canceled"));
        if !refused.is_empty() {
            failures.push(format!(
                "{name} ended calls other than OK during the measurements: {}",
                refused
                    .iter()
                    .map(|(code, n)| format!("{n} {code}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        counted.push(Counted {
            name,
            ok,
            canceled,
            other: refused.iter().fold(0.0, |sum, (_, n)| sum + n),
        });
    }

    let names = ["direct", NONE, POLICIES];
    let figures: Vec<Figures> = names
        .iter()
        .map(|name| {
            let of = |row: &Row| row.target(name).cloned();
            let lat: Option<Measured> = of(&latency);
            let pp: Option<Measured> = of(&pingpong);
            Figures {
                target: (*name).to_owned(),
                h2load_rps: h2load_totals
                    .as_ref()
                    .and_then(|t| t.iter().find(|(n, _)| n == name))
                    .map(|(_, run)| run.per_sec()),
                tonic_rps: of(&tonic).map(|m| m.throughput(Unit::Calls)),
                p50_us: lat.as_ref().map(|m| m.total.latency_us(0.5)),
                p99_us: lat.as_ref().map(|m| m.total.latency_us(0.99)),
                streams_mib: None,
                pingpong_rtps: pp.as_ref().map(|m| m.throughput(Unit::RoundTrips)),
                pingpong_p50_us: pp.as_ref().map(|m| m.total.latency_us(0.5)),
            }
        })
        .collect();
    let per_round = PerRound {
        h2load: h2load_rounds.as_ref().map(|rounds| {
            let of = |name: &str| -> Vec<f64> {
                rounds
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, runs)| runs.iter().map(H2loadRun::per_sec).collect())
                    .unwrap_or_default()
            };
            round_ratios(&of(POLICIES), &of(NONE))
        }),
        tonic: row_round_ratios(&tonic, Unit::Calls),
        pingpong: row_round_ratios(&pingpong, Unit::RoundTrips),
    };
    drop(wide);
    drop(single);
    drop(running);
    sample_load(&mut loads);

    print!(
        "{}",
        render(
            settings, &machine, &figures, &per_round, &loads, &counted, &notes
        )
    );
    if failures.is_empty() {
        Ok(())
    } else {
        for f in &failures {
            eprintln!("procs --policies: {f}");
        }
        Err(format!(
            "{} measurements had refused or failed calls",
            failures.len()
        )
        .into())
    }
}

/// The first call through `target`, with the token: it must succeed and
/// echo the payload.
async fn check_with(target: &Target, payload_size: usize, bearer: &str) -> Result<(), BoxError> {
    let mut request = tonic::Request::new(HelloRequest {
        name: "check".to_owned(),
        payload: vec![0x5a; payload_size],
    });
    request
        .metadata_mut()
        .insert("authorization", bearer.parse()?);
    let reply = tokio::time::timeout(START_TIMEOUT, target.client(0).say_hello(request))
        .await
        .map_err(|_| format!("{}: the first call timed out", target.name))?
        .map_err(|status| format!("{}: the first call failed: {status}", target.name))?;
    if reply.get_ref().payload.len() != payload_size {
        return Err(format!("{}: the reply does not echo the payload", target.name).into());
    }
    Ok(())
}

/// What a daemon counted during the measurements.
#[derive(Debug)]
struct Counted {
    name: &'static str,
    ok: f64,
    /// Calls h2load left in flight at its time limit.
    canceled: f64,
    /// Anything else: refusals and failures.
    other: f64,
}

/// policies / none, round by round (the rounds ran interleaved, so each
/// pair shared the machine's state).
#[derive(Debug, Default)]
struct PerRound {
    h2load: Option<Vec<f64>>,
    tonic: Vec<f64>,
    pingpong: Vec<f64>,
}

fn round_ratios(policies: &[f64], none: &[f64]) -> Vec<f64> {
    policies
        .iter()
        .zip(none)
        .filter(|(_, n)| **n > 0.0)
        .map(|(p, n)| p / n)
        .collect()
}

fn row_round_ratios(row: &Row, unit: Unit) -> Vec<f64> {
    let of = |name: &str| -> Vec<f64> {
        row.target(name)
            .map(|m| {
                m.rounds
                    .iter()
                    .map(|s| match unit {
                        Unit::MiB => s.mib_per_sec(),
                        Unit::Calls | Unit::RoundTrips => s.ops_per_sec(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    round_ratios(&of(POLICIES), &of(NONE))
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

fn list(values: &[f64]) -> String {
    if values.is_empty() {
        return "-".to_owned();
    }
    values
        .iter()
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table of policies against none: throughput ratios (of the totals,
/// and the median and list of the per-round ratios) and added latency.
fn policies_table(format: Format, figures: &[Figures], per_round: &PerRound) -> String {
    let find = |name: &str| figures.iter().find(|f| f.target == name);
    let (Some(none), Some(policies)) = (find(NONE), find(POLICIES)) else {
        return String::new();
    };
    let ratio = |p: Option<f64>, n: Option<f64>| match (p, n) {
        (Some(p), Some(n)) if n > 0.0 => format!("{:.2}", p / n),
        _ => "-".to_owned(),
    };
    let added = |p: Option<f64>, n: Option<f64>| match (p, n) {
        (Some(p), Some(n)) if p >= n => format!("+{}", micros(p - n)),
        (Some(p), Some(n)) => micros(p - n),
        _ => "-".to_owned(),
    };
    let mut table = Table::new([
        "measurement",
        "daemon (no policy)",
        "daemon+policies",
        "policies / none",
        "median of rounds",
        "per round",
    ]);
    let rate =
        |v: Option<f64>, unit: &str| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0} {unit}"));
    let lat = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), micros);
    let rounds = |values: Option<&Vec<f64>>| {
        values.map_or(("-".to_owned(), "-".to_owned()), |v| {
            (
                median(v).map_or_else(|| "-".to_owned(), |m| format!("{m:.2}")),
                list(v),
            )
        })
    };
    if none.h2load_rps.is_some() {
        let (m, l) = rounds(per_round.h2load.as_ref());
        table.push(vec![
            "unary throughput, h2load".to_owned(),
            rate(none.h2load_rps, "req/s"),
            rate(policies.h2load_rps, "req/s"),
            ratio(policies.h2load_rps, none.h2load_rps),
            m,
            l,
        ]);
    }
    let (m, l) = rounds(Some(&per_round.tonic));
    table.push(vec![
        "unary throughput, tonic".to_owned(),
        rate(none.tonic_rps, "req/s"),
        rate(policies.tonic_rps, "req/s"),
        ratio(policies.tonic_rps, none.tonic_rps),
        m,
        l,
    ]);
    table.push(vec![
        "p50, 1 call at a time".to_owned(),
        lat(none.p50_us),
        lat(policies.p50_us),
        added(policies.p50_us, none.p50_us),
        "-".to_owned(),
        "-".to_owned(),
    ]);
    table.push(vec![
        "p99, 1 call at a time".to_owned(),
        lat(none.p99_us),
        lat(policies.p99_us),
        added(policies.p99_us, none.p99_us),
        "-".to_owned(),
        "-".to_owned(),
    ]);
    let (m, l) = rounds(Some(&per_round.pingpong));
    table.push(vec![
        "ping-pong".to_owned(),
        rate(none.pingpong_rtps, "rt/s"),
        rate(policies.pingpong_rtps, "rt/s"),
        ratio(policies.pingpong_rtps, none.pingpong_rtps),
        m,
        l,
    ]);
    table.push(vec![
        "ping-pong p50".to_owned(),
        lat(none.pingpong_p50_us),
        lat(policies.pingpong_p50_us),
        added(policies.pingpong_p50_us, none.pingpong_p50_us),
        "-".to_owned(),
        "-".to_owned(),
    ]);
    table.render(format)
}

#[allow(clippy::too_many_arguments)]
fn render(
    settings: &ProcsSettings,
    machine: &Machine,
    figures: &[Figures],
    per_round: &PerRound,
    loads: &[f64],
    counted: &[Counted],
    notes: &[String],
) -> String {
    let format = settings.format;
    let bullet = if format == Format::Markdown { "- " } else { "" };
    let labels = settings.labels();
    let mut out = crate::report::heading(
        format,
        "Every traffic policy on against none (grpc-router and its instance as processes of their own)",
    );
    out.push_str(&policies_table(format, figures, per_round));
    out.push_str(&crate::report::heading(format, "Against direct"));
    out.push_str(&table::ratio_table(format, figures, &labels));
    out.push_str(&crate::report::heading(format, "Absolute numbers"));
    out.push_str(&table::absolute_table(format, figures, &labels));
    out.push('\n');
    let load = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |l| format!("{l:.2}"));
    let (low, high) = loads
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), l| {
            (lo.min(*l), hi.max(*l))
        });
    let _ = writeln!(
        out,
        "{bullet}machine: {} ({} CPUs); 1-minute load average at start {}, during the run {}–{}, at end {}",
        machine.cpu_model,
        machine.cpus,
        load(machine.load_at_start),
        load(low.is_finite().then_some(low)),
        load(high.is_finite().then_some(high)),
        load(loads.last().copied()),
    );
    let _ = writeln!(
        out,
        "{bullet}{} rounds × {:?} per target and measurement (first round discarded, targets interleaved, order rotated each round){}",
        settings.rounds,
        settings.duration,
        if settings.quick { "; --quick" } else { "" }
    );
    let set = &settings.policy_set;
    let _ = writeln!(
        out,
        "{bullet}policies: {}; every client sends the same bearer token to every target",
        if set.len() == ALL.len() {
            "JWT (HS256) client auth + an allow rule on a claim, service/method/client/instance rate limits (10M/s, not reached), outlier detection (both rules), retry policy for SayHello + retry throttling, a split (100 % to version=v1), default and max deadline".to_owned()
        } else {
            format!("only {set:?} (--policy-set)")
        }
    );
    let _ = writeln!(
        out,
        "{bullet}calls the daemons ended during the measurements (their grpc_server_handled_total): {}",
        counted
            .iter()
            .map(|c| {
                format!(
                    "{} {:.0} OK, {:.0} refused or failed, {:.0} cancelled by the client (h2load's calls in flight at its time limit)",
                    c.name, c.ok, c.other, c.canceled
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    );
    for note in notes {
        let _ = writeln!(out, "{bullet}{note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handled_calls_are_summed_by_code_for_the_greeter_only() {
        let scrape = "# TYPE grpc_server_handled_total counter\n\
            grpc_server_handled_total{grpc_service=\"myservice.v1.Greeter\",grpc_method=\"SayHello\",grpc_type=\"unary\",grpc_code=\"OK\"} 10\n\
            grpc_server_handled_total{grpc_service=\"myservice.v1.Greeter\",grpc_method=\"Chat\",grpc_type=\"bidi_stream\",grpc_code=\"OK\"} 2\n\
            grpc_server_handled_total{grpc_service=\"myservice.v1.Greeter\",grpc_method=\"SayHello\",grpc_type=\"unary\",grpc_code=\"Unauthenticated\"} 1\n\
            grpc_server_handled_total{grpc_service=\"other.v1.X\",grpc_method=\"M\",grpc_type=\"unary\",grpc_code=\"Internal\"} 7\n\
            grpc_server_started_total{grpc_service=\"myservice.v1.Greeter\",grpc_method=\"SayHello\",grpc_type=\"unary\"} 11\n";
        let codes = handled_by_code(scrape);
        assert_eq!(codes.get("OK"), Some(&12.0));
        assert_eq!(codes.get("Unauthenticated"), Some(&1.0));
        assert_eq!(codes.len(), 2);
        let mut later = codes.clone();
        later.insert("OK".into(), 500.0);
        later.insert("Canceled".into(), 64.0);
        assert!(
            not_ok(&codes, &later).is_empty(),
            "only OK and Canceled grew"
        );
        later.insert("ResourceExhausted".into(), 3.0);
        assert_eq!(
            not_ok(&codes, &later),
            [("ResourceExhausted".to_owned(), 3.0)]
        );
    }

    #[test]
    fn the_policies_config_is_one_the_daemon_accepts_in_shape() {
        let config = policies_config(&ALL);
        for key in [
            "[auth.jwt]",
            "hmac_secret_env = \"ROUTER_BENCH_JWT_SECRET\"",
            "client_rate_limit",
            "instance_rate_limit",
            "outlier_detection",
            "retry_policy",
            "[[services.\"myservice.v1.Greeter\".allow]]",
            "[[services.\"myservice.v1.Greeter\".split]]",
            "default_deadline",
            "max_deadline",
        ] {
            assert!(config.contains(key), "{key} in\n{config}");
        }
    }

    #[test]
    fn a_policy_left_out_leaves_no_key() {
        let config = policies_config(&[Policy::Split, Policy::Deadline]);
        assert!(
            !config.contains("auth.jwt") && !config.contains("rate_limit"),
            "{config}"
        );
        assert!(
            config.contains("split") && config.contains("max_deadline"),
            "{config}"
        );
        assert!(!config.contains("methods.SayHello"), "{config}");
    }

    #[test]
    fn per_round_ratios_pair_rounds_and_skip_empty_ones() {
        assert_eq!(
            round_ratios(&[9.0, 10.0, 4.0], &[10.0, 10.0, 0.0]),
            [0.9, 1.0]
        );
        assert_eq!(median(&[0.9, 1.1, 1.0]), Some(1.0));
        assert_eq!(median(&[0.9, 1.0]), Some(0.95));
        assert_eq!(median(&[]), None);
    }
}
