//! The activation hook (`[services."x".activate]`): when a call starts
//! waiting for a service with no instance registered, run a command (argv,
//! the service's name in `GRPC_ROUTER_SERVICE`) or POST to an `http://` URL,
//! at most once per `cooldown` per service, for users without an
//! autoscaler (start a container, a systemd unit, a VM).
//!
//! The runtime calls [`hook`]'s closure on the call's task; it only takes
//! the service's turn (under a lock, no I/O) and spawns the work. Each
//! outcome is logged at [`TARGET`] and counted
//! (`grpc_router_activations_total{grpc_service, result}`: `started`, the
//! command was spawned; `succeeded`, it exited 0 or the URL answered 2xx;
//! `failed`, it could not be spawned, exited otherwise or the POST failed).
//! The cooldown state outlives reloads: it is kept per service for the
//! process.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use router_runtime::prometheus_client::collector::Collector;
use router_runtime::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use router_runtime::prometheus_client::metrics::MetricType;
use router_runtime::prometheus_client::metrics::counter::ConstCounter;
use router_runtime::router::WaitHook;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use crate::config::ActivateSetting;

/// The log target of activations.
pub const TARGET: &str = "grpc_router::activate";

/// How long a POST to the hook's URL may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// How an activation went (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// The command was spawned.
    Started,
    /// The command exited 0, or the URL answered 2xx.
    Succeeded,
    /// It could not be spawned, exited otherwise, or the POST failed.
    Failed,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Started => "started",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
        }
    }
}

/// Every service's last activation and the outcomes counted, for the
/// process.
#[derive(Debug, Default)]
pub struct Activations {
    last: Mutex<HashMap<String, Instant>>,
    counts: Mutex<HashMap<(String, Outcome), u64>>,
}

impl Activations {
    /// The process's activations.
    pub fn global() -> &'static Arc<Activations> {
        static GLOBAL: OnceLock<Arc<Activations>> = OnceLock::new();
        GLOBAL.get_or_init(Arc::default)
    }

    /// Whether `service` may be activated now (its last activation is at
    /// least `cooldown` old); if so, now is its last.
    fn take_turn(&self, service: &str, cooldown: Duration) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last
            .get(service)
            .is_some_and(|at| now.duration_since(*at) < cooldown)
        {
            return false;
        }
        last.insert(service.to_owned(), now);
        true
    }

    fn count(&self, service: &str, outcome: Outcome) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((service.to_owned(), outcome))
            .or_default() += 1;
    }

    /// How many activations of `service` ended with `outcome`.
    pub fn counted(&self, service: &str, outcome: Outcome) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(service.to_owned(), outcome))
            .copied()
            .unwrap_or(0)
    }

    /// Runs `setting`'s hook for `service` unless its cooldown holds.
    fn activate(self: &Arc<Self>, service: &str, setting: &ActivateSetting) {
        if !self.take_turn(service, setting.cooldown) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (this, service, setting) = (self.clone(), service.to_owned(), setting.clone());
        runtime.spawn(async move { this.run(&service, &setting).await });
    }

    async fn run(&self, service: &str, setting: &ActivateSetting) {
        match &setting.url {
            Some(url) => {
                let outcome = post(url, service).await;
                match &outcome {
                    Ok(status) => {
                        info!(target: TARGET, service, url, status, "activation POST answered")
                    }
                    Err(why) => {
                        warn!(target: TARGET, service, url, error = %why, "activation POST failed")
                    }
                }
                let ok = matches!(outcome, Ok(status) if (200..300).contains(&status));
                self.count(
                    service,
                    if ok {
                        Outcome::Succeeded
                    } else {
                        Outcome::Failed
                    },
                );
            }
            None => self.run_command(service, &setting.command).await,
        }
    }

    async fn run_command(&self, service: &str, argv: &[String]) {
        let Some((program, args)) = argv.split_first() else {
            return;
        };
        let spawned = tokio::process::Command::new(program)
            .args(args)
            .env("GRPC_ROUTER_SERVICE", service)
            .stdin(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                warn!(target: TARGET, service, command = ?argv, error = %e, "activation command could not be started");
                self.count(service, Outcome::Failed);
                return;
            }
        };
        info!(target: TARGET, service, command = ?argv, pid = child.id(), "activation command started");
        self.count(service, Outcome::Started);
        // A command that starts the instance itself may run for as long as
        // the instance does: its end is logged whenever it comes.
        match child.wait().await {
            Ok(status) if status.success() => {
                info!(target: TARGET, service, command = ?argv, "activation command succeeded");
                self.count(service, Outcome::Succeeded);
            }
            Ok(status) => {
                warn!(target: TARGET, service, command = ?argv, %status, "activation command failed");
                self.count(service, Outcome::Failed);
            }
            Err(e) => {
                warn!(target: TARGET, service, command = ?argv, error = %e, "activation command could not be waited for");
                self.count(service, Outcome::Failed);
            }
        }
    }
}

/// The wait hook that activates a service by `setting`.
pub fn hook(setting: ActivateSetting) -> WaitHook {
    let activations = Activations::global().clone();
    Arc::new(move |service: &str| activations.activate(service, &setting))
}

/// An `http://host:port/path` URL, as the hook POSTs to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `host:port` (port 80 when the URL names none).
    pub authority: String,
    /// The path and query (`/` when the URL has none).
    pub path: String,
}

impl HttpTarget {
    /// Reads `url`; `None` unless it is an `http://` URL with a host.
    pub fn parse(url: &str) -> Option<HttpTarget> {
        let uri: http::Uri = url.parse().ok()?;
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let authority = uri.authority()?;
        let port = authority.port_u16().unwrap_or(80);
        Some(HttpTarget {
            authority: format!("{}:{port}", authority.host()),
            path: uri
                .path_and_query()
                .map_or("/".to_owned(), |p| p.as_str().to_owned()),
        })
    }
}

/// POSTs `{"service": "<service>"}` to `url` (HTTP/1.1, `Connection:
/// close`); the response's status code.
async fn post(url: &str, service: &str) -> Result<u16, String> {
    let target = HttpTarget::parse(url).ok_or_else(|| format!("`{url}` is not an http:// URL"))?;
    let body = serde_json::json!({ "service": service }).to_string();
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&target.authority)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", target.authority))?;
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            target.path,
            target.authority,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("cannot send the request: {e}"))?;
        let mut head = vec![0u8; 1024];
        let mut read = 0;
        while read < head.len() && !head[..read].windows(2).any(|w| w == b"\r\n") {
            let n = stream
                .read(&mut head[read..])
                .await
                .map_err(|e| format!("cannot read the answer: {e}"))?;
            if n == 0 {
                break;
            }
            read += n;
        }
        let line = String::from_utf8_lossy(&head[..read]);
        line.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| format!("not an HTTP answer: {:?}", line.lines().next()))
    };
    tokio::time::timeout(POST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {POST_TIMEOUT:?}"))?
}

/// The scrape-time family `grpc_router_activations_total`.
#[derive(Debug)]
pub struct ActivationsCollector(pub Arc<Activations>);

impl Collector for ActivationsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut counts: Vec<((String, Outcome), u64)> = self
            .0
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        counts.sort();
        let mut family = encoder.encode_descriptor(
            "grpc_router_activations",
            "Activation hooks run for services with calls waiting and no instance, by result: started, succeeded, failed",
            None,
            MetricType::Counter,
        )?;
        for ((service, outcome), count) in counts {
            let labels = [
                ("grpc_service", service),
                ("result", outcome.name().to_owned()),
            ];
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_is_activated_at_most_once_per_cooldown() {
        let activations = Activations::default();
        assert!(activations.take_turn("a.B", Duration::from_secs(60)));
        assert!(!activations.take_turn("a.B", Duration::from_secs(60)));
        assert!(activations.take_turn("a.C", Duration::from_secs(60)));
        assert!(activations.take_turn("a.B", Duration::ZERO));
    }

    #[test]
    fn only_http_urls_are_targets() {
        assert_eq!(
            HttpTarget::parse("http://127.0.0.1:8080/start?x=1"),
            Some(HttpTarget {
                authority: "127.0.0.1:8080".into(),
                path: "/start?x=1".into()
            })
        );
        assert_eq!(
            HttpTarget::parse("http://scaler").map(|t| t.authority),
            Some("scaler:80".into())
        );
        assert!(HttpTarget::parse("https://scaler/").is_none());
        assert!(HttpTarget::parse("scaler:80").is_none());
    }
}
