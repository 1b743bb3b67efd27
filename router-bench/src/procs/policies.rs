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
//!   throttling, a traffic split (all calls to `version=v1`), a default
//!   and maximum deadline, and service and method concurrency limits.
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
use std::time::Duration;

use myservice::pb::HelloRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::BoxError;
use crate::apps::daemon_config;
use crate::load::Header;
use crate::procs::plan::{Measurement, Plan, Results};
use crate::procs::table::{Versus, versus_table};
use crate::procs::{ProcsSettings, targets};
use crate::report::heading;
use crate::target::Target;

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
    /// Service and method concurrency limits (`max_concurrent_calls`).
    Concurrency,
}

/// Every policy.
pub const ALL: [Policy; 7] = [
    Policy::Jwt,
    Policy::Limits,
    Policy::Outlier,
    Policy::Retry,
    Policy::Split,
    Policy::Deadline,
    Policy::Concurrency,
];

/// The policies of `set` on for the Greeter. The limits are far above what
/// two CPUs can send, so none refuses a call; outlier detection, retries
/// and the split do their bookkeeping on every call.
fn policies_config(set: &[Policy]) -> String {
    let on = |p: Policy| set.contains(&p);
    let mut config = daemon_config("procs-policies", true);
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
    if on(Policy::Concurrency) {
        config.push_str("max_concurrent_calls = 1000000\n");
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
    if on(Policy::Limits) || on(Policy::Retry) || on(Policy::Concurrency) {
        let _ = writeln!(config, "[services.\"{SERVICE}\".methods.SayHello]");
    }
    if on(Policy::Limits) {
        config.push_str("rate_limit = { per_second = 10000000, burst = 1000000 }\n");
    }
    if on(Policy::Concurrency) {
        config.push_str("max_concurrent_calls = 1000000\n");
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
    let answer = tokio::time::timeout(
        crate::apps::START_TIMEOUT,
        target.client(0).say_hello(request),
    )
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

/// Runs the comparison and prints its tables; fails when the policies are
/// not in force or when any measured call was refused or failed.
pub async fn run(settings: &ProcsSettings) -> Result<(), BoxError> {
    let exes = &settings.exes;
    let secret = secret();
    let bearer = format!("Bearer {}", token(&secret, ROLE)?);
    let wrong_role = format!("Bearer {}", token(&secret, "someone-else")?);
    // Every client sends the same token to every target, so the targets
    // differ only in what the router does with it.
    let headers = vec![Header::new("authorization", &bearer)?];
    let labels = ["version=v1"];
    let mut plan = Plan::new(settings, &MEASUREMENTS);
    plan.add(targets::direct(exes).await?.with_headers(headers.clone()));
    let none = daemon_config("procs-daemon", true);
    let none = targets::daemon(exes, NONE, &none, &[], &labels).await?;
    plan.add(none.with_headers(headers.clone()));
    let config = policies_config(&settings.policy_set);
    let env = [(SECRET_ENV, secret.as_str())];
    let policed = targets::daemon(exes, POLICIES, &config, &env, &labels).await?;
    plan.add(policed.with_headers(headers));

    let clients = plan.connect().await?;
    check_in_force(&plan, settings, &wrong_role).await?;
    let admins = plan.admins();
    let mut before = Vec::new();
    for (_, admin) in &admins {
        before.push(handled(*admin).await?);
    }
    let mut results = plan.measure(&clients).await?;
    // What each daemon counted: every measured call must have ended OK.
    let mut counted = Vec::new();
    for ((name, admin), before) in admins.iter().zip(&before) {
        let after = handled(*admin).await?;
        let refused = not_ok(before, &after);
        let delta = |code: &str| {
            after.get(code).copied().unwrap_or(0.0) - before.get(code).copied().unwrap_or(0.0)
        };
        if !refused.is_empty() {
            results.failures.push(format!(
                "{name} ended calls other than OK during the measurements: {}",
                refused
                    .iter()
                    .map(|(code, n)| format!("{n} {code}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        counted.push(format!(
            "{name} {:.0} OK, {:.0} refused or failed, {:.0} cancelled by the client (h2load's calls in flight at its time limit)",
            delta("OK"),
            refused.iter().fold(0.0, |sum, (_, n)| sum + n),
            delta("Canceled"),
        ));
    }
    drop(clients);
    drop(plan);

    print!("{}", render(settings, &results, &counted));
    results.verdict("procs --policies")
}

/// What `--policies` measures: no server streams (the policies act once per
/// call, and the streams' figures are `procs`'s).
const MEASUREMENTS: [Measurement; 4] = [
    Measurement::H2load,
    Measurement::Unary,
    Measurement::Latency,
    Measurement::PingPong,
];

/// The policies are in force: with JWT on, a call without a token is
/// UNAUTHENTICATED and one whose token lacks the claim PERMISSION_DENIED;
/// the daemon without policies takes a call without a token.
async fn check_in_force(
    plan: &Plan<'_>,
    settings: &ProcsSettings,
    wrong_role: &str,
) -> Result<(), BoxError> {
    let connect = async |name: &str| {
        let target = plan.target(name)?;
        Target::connect(name, target.addr, 1).await
    };
    let none = connect(NONE).await?;
    let policed = connect(POLICIES).await?;
    let mut checks = vec![(&none, None, tonic::Code::Ok)];
    if settings.policy_set.contains(&Policy::Jwt) {
        checks.push((&policed, None, tonic::Code::Unauthenticated));
        checks.push((&policed, Some(wrong_role), tonic::Code::PermissionDenied));
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
    Ok(())
}

/// The report: policies against none, then every target against direct;
/// under them which policies were on and what the daemons counted.
fn render(settings: &ProcsSettings, results: &Results, counted: &[String]) -> String {
    let format = settings.format;
    let mut out = heading(
        format,
        "Every traffic policy on against none (grpc-router and its instance as processes of their own)",
    );
    if let (Some(none), Some(policies)) = (results.figures(NONE), results.figures(POLICIES)) {
        let columns = Versus {
            base: "daemon (no policy)",
            other: POLICIES,
            ratio: "policies / none",
        };
        let rounds = results.round_ratios(POLICIES, NONE);
        out.push_str(&versus_table(format, none, policies, &rounds, columns));
    }
    out.push_str(&results.tables(settings, "Against direct"));
    let set = &settings.policy_set;
    let lines = [
        format!(
            "policies: {}; every client sends the same bearer token to every target",
            if set.len() == ALL.len() {
                "JWT (HS256) client auth + an allow rule on a claim, service/method/client/instance rate limits (10M/s, not reached), outlier detection (both rules), retry policy for SayHello + retry throttling, a split (100 % to version=v1), default and max deadline, service and method concurrency limits (1M, not reached)".to_owned()
            } else {
                format!("only {set:?} (--policy-set)")
            }
        ),
        format!(
            "calls the daemons ended during the measurements (their grpc_server_handled_total): {}",
            counted.join("; ")
        ),
    ];
    out.push_str(&results.footer(settings, &lines));
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
            "max_concurrent_calls = 1000000",
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
}
