//! The metrics read from the routers' own state at scrape time:
//! registrations, calls in flight, retries, register-stream queues, the
//! response bytes held for slow clients, outlier ejections and the calls
//! under concurrency limits and those waiting for an instance. They
//! cost nothing between scrapes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::WeakCore;
use super::labels::{ProtocolLabels, ServiceLabels};

/// The cores a registry reports, held weakly: a core dropped (a dynamic
/// router's retired service) leaves the scrape.
#[derive(Debug, Default)]
pub(crate) struct Cores(Mutex<Vec<WeakCore>>);

impl Cores {
    /// Adds a core, forgetting the dropped ones.
    pub(crate) fn track(&self, core: WeakCore) {
        let mut cores = self.lock();
        cores.retain(|c| c.strong_count() > 0);
        cores.push(core);
    }

    fn lock(&self) -> MutexGuard<'_, Vec<WeakCore>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The figures of every live service, by name (several cores of one
    /// name add up).
    fn read(&self) -> BTreeMap<String, Figures> {
        let cores: Vec<_> = self.lock().iter().filter_map(|c| c.upgrade()).collect();
        let mut services: BTreeMap<String, Figures> = BTreeMap::new();
        for core in cores {
            let snapshot = core.registry.snapshot();
            // A service no registration defined and none is registered with
            // (a refused first registration) is not reported: its name is
            // the registrant's, not the operator's. (Calls wait only for a
            // service a registration defined or the configuration names.)
            if !core.service.is_defined() && snapshot.is_empty() && core.waiting.calls() == 0 {
                continue;
            }
            let figures = services.entry(core.service.name().to_owned()).or_default();
            figures.registrations += as_i64(snapshot.len());
            figures.in_flight += i64::try_from(core.stats.calls_active()).unwrap_or(i64::MAX);
            figures.retries += core.stats.calls_retried();
            figures.ejections += core.stats.ejections();
            for (slot, (protocol, calls)) in core.stats.calls_by_protocol().into_iter().enumerate()
            {
                figures.by_protocol[slot].0 = protocol;
                figures.by_protocol[slot].1 += calls;
            }
            let (waiting, refused) = crate::router::concurrency_totals(&core);
            figures.concurrency_waiting += i64::from(waiting);
            figures.concurrency_refused += refused;
            let waiting = core.waiting.now();
            figures.waiting += as_i64(waiting.calls);
            figures.waiting_bytes += as_i64(waiting.bytes);
            for instance in snapshot.iter() {
                figures.queued_bytes += as_i64(instance.queued_bytes());
                figures.response_buffer_bytes += as_i64(instance.buffered_response_total());
                figures.partial_response_bytes += as_i64(instance.partial_response_bytes());
                figures.congested += i64::from(instance.is_congested());
                figures.ejected += i64::from(instance.is_ejected());
            }
        }
        services
    }
}

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One service's figures at a scrape.
#[derive(Debug, Default)]
struct Figures {
    registrations: i64,
    in_flight: i64,
    retries: u64,
    queued_bytes: i64,
    response_buffer_bytes: i64,
    partial_response_bytes: i64,
    congested: i64,
    ejections: u64,
    ejected: i64,
    /// Calls by protocol, as `RouterStats::calls_by_protocol` gives them.
    by_protocol: [(&'static str, u64); 3],
    concurrency_waiting: i64,
    concurrency_refused: u64,
    waiting: i64,
    waiting_bytes: i64,
}

/// The scrape-time collector registered with the families.
#[derive(Debug)]
pub(crate) struct Collector {
    cores: Arc<Cores>,
}

impl Collector {
    pub(crate) fn new(cores: Arc<Cores>) -> Self {
        Collector { cores }
    }
}

/// Encodes one gauge family from the figures.
fn gauges(
    encoder: &mut DescriptorEncoder,
    services: &BTreeMap<String, Figures>,
    name: &str,
    help: &str,
    value: impl Fn(&Figures) -> i64,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (service, figures) in services {
        let labels = ServiceLabels {
            grpc_service: service.clone(),
        };
        ConstGauge::new(value(figures)).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Encodes one counter family from the figures (`_total` is appended).
fn counters(
    encoder: &mut DescriptorEncoder,
    services: &BTreeMap<String, Figures>,
    name: &str,
    help: &str,
    value: impl Fn(&Figures) -> u64,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (service, figures) in services {
        let labels = ServiceLabels {
            grpc_service: service.clone(),
        };
        ConstCounter::new(value(figures)).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Encodes `grpc_router_calls_by_protocol_total`.
fn calls_by_protocol(
    encoder: &mut DescriptorEncoder,
    services: &BTreeMap<String, Figures>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "grpc_router_calls_by_protocol",
        "Calls by the protocol the client used: grpc, grpc-web or connect (JSON or proto)",
        None,
        MetricType::Counter,
    )?;
    for (service, figures) in services {
        for (protocol, calls) in figures.by_protocol {
            let labels = ProtocolLabels {
                grpc_service: service.clone(),
                protocol: protocol.to_owned(),
            };
            ConstCounter::new(calls).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let services = self.cores.read();
        gauges(
            &mut encoder,
            &services,
            "grpc_router_registrations",
            "Live registrations (instances) of each service",
            |f| f.registrations,
        )?;
        gauges(
            &mut encoder,
            &services,
            "grpc_router_calls_in_flight",
            "Calls the router holds state for (started on an instance, not yet ended)",
            |f| f.in_flight,
        )?;
        gauges(
            &mut encoder,
            &services,
            "grpc_router_register_queue_bytes",
            "Bytes queued for the services' register streams and not yet written",
            |f| f.queued_bytes,
        )?;
        gauges(
            &mut encoder,
            &services,
            "grpc_router_response_buffer_bytes",
            "Response bytes received from instances and not yet taken by the clients' connections",
            |f| f.response_buffer_bytes,
        )?;
        gauges(
            &mut encoder,
            &services,
            "grpc_router_partial_response_bytes",
            "Bytes of partly received (chunked) response messages held for reassembly",
            |f| f.partial_response_bytes,
        )?;
        gauges(
            &mut encoder,
            &services,
            "grpc_router_registrations_congested",
            "Registrations whose register-stream queue is over max_queued_bytes (taking no new calls)",
            |f| f.congested,
        )?;
        gauges(
            &mut encoder,
            &services,
            "grpc_router_instances_ejected",
            "Instances outlier detection has ejected now (taking no calls)",
            |f| f.ejected,
        )?;
        gauges(
            &mut encoder,
            &services,
            "grpc_router_calls_waiting",
            "Calls waiting for an instance (wait_for_instance)",
            |f| f.waiting,
        )?;
        gauges(
            &mut encoder,
            &services,
            "grpc_router_waiting_request_bytes",
            "Request bytes the calls waiting for an instance hold",
            |f| f.waiting_bytes,
        )?;
        counters(
            &mut encoder,
            &services,
            "grpc_router_call_retries",
            "Calls moved to another instance because the first never ran them",
            |f| f.retries,
        )?;
        gauges(
            &mut encoder,
            &services,
            "grpc_router_concurrency_waiting_calls",
            "Calls waiting for a slot under a concurrency limit (max_concurrent_calls)",
            |f| f.concurrency_waiting,
        )?;
        counters(
            &mut encoder,
            &services,
            "grpc_router_concurrency_refused_calls",
            "Calls refused by a concurrency limit (max_concurrent_calls), at once or after waiting",
            |f| f.concurrency_refused,
        )?;
        calls_by_protocol(&mut encoder, &services)?;
        counters(
            &mut encoder,
            &services,
            "grpc_router_ejections",
            "Instances ejected by outlier detection (each ejection, a repeated one too)",
            |f| f.ejections,
        )?;
        Ok(())
    }
}
