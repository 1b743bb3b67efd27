//! Prometheus metrics of a router, with the Prometheus project's
//! [`prometheus_client`]: typed metric families registered into a
//! [`Registry`] the embedder owns (no global recorder), encoded as
//! OpenMetrics or Prometheus text.
//!
//! ```
//! use prometheus_client::registry::Registry;
//! use router_runtime::metrics::{self, Format, RouterMetrics};
//! use router_runtime::router::{DynamicRouter, RouterConfig};
//!
//! let mut registry = Registry::default();
//! let metrics = RouterMetrics::register(&mut registry);
//! let _router = DynamicRouter::new(RouterConfig {
//!     metrics: Some(metrics),
//!     ..RouterConfig::default()
//! });
//! let text = metrics::encode(&registry, Format::OpenMetrics).expect("encodes");
//! // A family appears once it has a series; the scrape-time gauges always do.
//! assert!(text.contains("# TYPE grpc_router_registrations gauge"));
//! ```
//!
//! The client-facing families follow go-grpc-prometheus (see [`labels`] for
//! the label values); the router's own are prefixed `grpc_router_`:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `grpc_server_started_total` | counter | `grpc_service`, `grpc_method`, `grpc_type` |
//! | `grpc_server_handled_total` | counter | the same and `grpc_code` |
//! | `grpc_server_handling_seconds` | histogram | `grpc_service`, `grpc_method`, `grpc_type` |
//! | `grpc_server_msg_received_total`, `grpc_server_msg_sent_total` | counter | the same |
//! | `grpc_server_msg_received_bytes_total`, `grpc_server_msg_sent_bytes_total` | counter | the same |
//! | `grpc_router_calls_no_instance_total` | counter | the same |
//! | `grpc_router_registrations` | gauge | `grpc_service` |
//! | `grpc_router_registration_events_total` | counter | `grpc_service`, `event`, `reason` |
//! | `grpc_router_calls_in_flight` | gauge | `grpc_service` |
//! | `grpc_router_call_retries_total` | counter | `grpc_service` |
//! | `grpc_router_heartbeats_missed_total` | counter | `grpc_service` |
//! | `grpc_router_credit_wait_seconds` | histogram | `grpc_service` |
//! | `grpc_router_register_queue_bytes` | gauge | `grpc_service` |
//! | `grpc_router_registrations_congested` | gauge | `grpc_service` |
//! | `grpc_router_instances_ejected` | gauge | `grpc_service` |
//! | `grpc_router_ejections_total` | counter | `grpc_service` |
//! | `grpc_router_calls_by_protocol_total` | counter | `grpc_service`, `protocol` |
//! | `grpc_router_concurrency_waiting_calls` | gauge | `grpc_service` |
//! | `grpc_router_concurrency_refused_calls_total` | counter | `grpc_service` |
//! | `grpc_router_calls_waiting` | gauge | `grpc_service` |
//! | `grpc_router_waiting_request_bytes` | gauge | `grpc_service` |
//! | `grpc_router_wait_seconds` | histogram | `grpc_service` |
//! | `grpc_router_waits_total` | counter | `grpc_service`, `outcome` |
//! | `grpc_router_instance_calls_total` | counter | `grpc_service`, `instance_id` (opt-in) |
//! | `grpc_router_instance_handling_seconds` | histogram | the same (opt-in) |
//!
//! The hot path touches only counters resolved once per method (kept with
//! the method) and one histogram; the gauges and the retry and ejection
//! counters are read from the routers' own state at scrape time.

mod call;
mod collect;
pub mod labels;

use std::sync::{Arc, OnceLock, Weak};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

pub(crate) use call::{CallRecord, MethodCell, RequestMeter};
pub(crate) use labels::{Event, UNKNOWN_SERVICE};
use labels::{EventLabels, HandledLabels, InstanceLabels, MethodLabels, ServiceLabels, WaitLabels};

use crate::router::RouterCore;

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A counter (its samples end in `_total`).
    Counter,
    /// A gauge.
    Gauge,
    /// A histogram (samples `_bucket`, `_sum`, `_count`).
    Histogram,
}

/// Every family the router exports, by the name of its `# TYPE` line in the
/// Prometheus text format (counters with `_total`), with its kind. The
/// `grpc_router_instance_*` ones only with [`MetricsOptions::per_instance`].
pub const EXPORTED: &[(&str, Kind)] = &[
    ("grpc_server_started_total", Kind::Counter),
    ("grpc_server_handled_total", Kind::Counter),
    ("grpc_server_handling_seconds", Kind::Histogram),
    ("grpc_server_msg_received_total", Kind::Counter),
    ("grpc_server_msg_sent_total", Kind::Counter),
    ("grpc_server_msg_received_bytes_total", Kind::Counter),
    ("grpc_server_msg_sent_bytes_total", Kind::Counter),
    ("grpc_router_calls_no_instance_total", Kind::Counter),
    ("grpc_router_registration_events_total", Kind::Counter),
    ("grpc_router_heartbeats_missed_total", Kind::Counter),
    ("grpc_router_credit_wait_seconds", Kind::Histogram),
    ("grpc_router_instance_calls_total", Kind::Counter),
    ("grpc_router_instance_handling_seconds", Kind::Histogram),
    ("grpc_router_registrations", Kind::Gauge),
    ("grpc_router_calls_in_flight", Kind::Gauge),
    ("grpc_router_register_queue_bytes", Kind::Gauge),
    ("grpc_router_response_buffer_bytes", Kind::Gauge),
    ("grpc_router_partial_response_bytes", Kind::Gauge),
    ("grpc_router_registrations_congested", Kind::Gauge),
    ("grpc_router_call_retries_total", Kind::Counter),
    ("grpc_router_instances_ejected", Kind::Gauge),
    ("grpc_router_ejections_total", Kind::Counter),
    ("grpc_router_calls_by_protocol_total", Kind::Counter),
    ("grpc_router_concurrency_waiting_calls", Kind::Gauge),
    ("grpc_router_concurrency_refused_calls_total", Kind::Counter),
    ("grpc_router_calls_waiting", Kind::Gauge),
    ("grpc_router_waiting_request_bytes", Kind::Gauge),
    ("grpc_router_wait_seconds", Kind::Histogram),
    ("grpc_router_waits_total", Kind::Counter),
];

/// Whether `sample` (a series name as a query names it, e.g.
/// `grpc_server_handling_seconds_bucket`) is a sample of an exported family.
pub fn is_exported(sample: &str) -> bool {
    EXPORTED.iter().any(|(name, kind)| match kind {
        Kind::Histogram => ["_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| sample.strip_suffix(suffix) == Some(name)),
        Kind::Counter | Kind::Gauge => sample == *name,
    })
}

/// A histogram family whose histograms have fixed buckets.
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The buckets of `grpc_server_handling_seconds` and the per-instance
/// latency: 0.5 ms to 10 s (a router adds well under a millisecond, so the
/// low end is finer than go-grpc-prometheus's default 5 ms first bucket).
const HANDLING_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The buckets of `grpc_router_credit_wait_seconds`: 100 µs to 10 s.
const WAIT_BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The buckets of `grpc_router_wait_seconds` (a call waiting for an
/// instance: a cold start takes seconds to minutes): 10 ms to 5 min.
const INSTANCE_WAIT_BUCKETS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

fn instance_wait_histogram() -> Histogram {
    Histogram::new(INSTANCE_WAIT_BUCKETS)
}

fn handling_histogram() -> Histogram {
    Histogram::new(HANDLING_BUCKETS)
}

fn wait_histogram() -> Histogram {
    Histogram::new(WAIT_BUCKETS)
}

/// What the metrics record beyond the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsOptions {
    /// Per-instance call counts and latency
    /// (`grpc_router_instance_calls_total`,
    /// `grpc_router_instance_handling_seconds`), labelled with each
    /// instance's id. Off by default: it adds a series per live
    /// registration (and a label lookup per call), and instance ids are
    /// chosen by the registrants. Series of an instance are dropped when its
    /// registration ends, so they follow the live registrations.
    pub per_instance: bool,
}

/// A router's metric families, registered in a [`Registry`]. Cheap to clone;
/// clones share the families. Give it to every router that should report
/// into that registry (`RouterConfig::metrics`): the families are labelled
/// by service, so several routers share one set.
#[derive(Clone)]
pub struct RouterMetrics {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RouterMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterMetrics")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

/// The families, shared by every router that reports into them.
pub(crate) struct Shared {
    options: MetricsOptions,
    started: Family<MethodLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    handling: Histograms<MethodLabels>,
    msg_received: Family<MethodLabels, Counter>,
    msg_sent: Family<MethodLabels, Counter>,
    bytes_received: Family<MethodLabels, Counter>,
    bytes_sent: Family<MethodLabels, Counter>,
    no_instance: Family<MethodLabels, Counter>,
    events: Family<EventLabels, Counter>,
    heartbeats_missed: Family<ServiceLabels, Counter>,
    credit_wait: Histograms<ServiceLabels>,
    instance_calls: Family<InstanceLabels, Counter>,
    instance_handling: Histograms<InstanceLabels>,
    instance_wait: Histograms<ServiceLabels>,
    waits: Family<WaitLabels, Counter>,
    /// The routers read at scrape time.
    cores: Arc<collect::Cores>,
}

impl Shared {
    /// The `grpc_server_*` families (as go-grpc-prometheus names them).
    fn register_server_families(&self, registry: &mut Registry) {
        registry.register(
            "grpc_server_started",
            "Calls started on the router, by method",
            self.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "Calls completed by the router, by method and status code (Go code names)",
            self.handled.clone(),
        );
        registry.register_with_unit(
            "grpc_server_handling",
            "Time from a call's arrival at the router to its final status",
            Unit::Seconds,
            self.handling.clone(),
        );
        registry.register(
            "grpc_server_msg_received",
            "Request messages received from clients",
            self.msg_received.clone(),
        );
        registry.register(
            "grpc_server_msg_sent",
            "Response messages sent to clients",
            self.msg_sent.clone(),
        );
        registry.register_with_unit(
            "grpc_server_msg_received",
            "Payload bytes of the request messages received from clients (decompressed, without the 5-byte prefix)",
            Unit::Bytes,
            self.bytes_received.clone(),
        );
        registry.register_with_unit(
            "grpc_server_msg_sent",
            "Payload bytes of the response messages sent to clients (before compression, without the 5-byte prefix)",
            Unit::Bytes,
            self.bytes_sent.clone(),
        );
    }

    /// The router's own families (`grpc_router_*`), the per-instance ones
    /// when asked for.
    fn register_router_families(&self, registry: &mut Registry) {
        registry.register(
            "grpc_router_calls_no_instance",
            "Calls that failed UNAVAILABLE because no instance could be picked",
            self.no_instance.clone(),
        );
        registry.register(
            "grpc_router_registration_events",
            "Registration events: accepted, refused (reason: the refusal's code), replaced, drained, lost, evicted, closed",
            self.events.clone(),
        );
        registry.register(
            "grpc_router_heartbeats_missed",
            "Pings a registration had not answered when the next one was due",
            self.heartbeats_missed.clone(),
        );
        registry.register_with_unit(
            "grpc_router_credit_wait",
            "Time a call's request pump waited for the bridge's credit or register-stream room, per pumped call",
            Unit::Seconds,
            self.credit_wait.clone(),
        );
        registry.register_with_unit(
            "grpc_router_wait",
            "Time calls waited for an instance (wait_for_instance), whatever ended the wait",
            Unit::Seconds,
            self.instance_wait.clone(),
        );
        registry.register(
            "grpc_router_waits",
            "Waits for an instance by how they ended: served, timed_out, deadline, cancelled, refused (over the bound)",
            self.waits.clone(),
        );
        if self.options.per_instance {
            registry.register(
                "grpc_router_instance_calls",
                "Calls completed by each live instance",
                self.instance_calls.clone(),
            );
            registry.register_with_unit(
                "grpc_router_instance_handling",
                "Handling time of the calls of each live instance",
                Unit::Seconds,
                self.instance_handling.clone(),
            );
        }
    }
}

impl RouterMetrics {
    /// Registers the families (default options) in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        Self::register_with(registry, MetricsOptions::default())
    }

    /// Registers the families in `registry`, with `options`.
    pub fn register_with(registry: &mut Registry, options: MetricsOptions) -> Self {
        let shared = Shared {
            options,
            started: Family::default(),
            handled: Family::default(),
            handling: Family::new_with_constructor(handling_histogram),
            msg_received: Family::default(),
            msg_sent: Family::default(),
            bytes_received: Family::default(),
            bytes_sent: Family::default(),
            no_instance: Family::default(),
            events: Family::default(),
            heartbeats_missed: Family::default(),
            credit_wait: Family::new_with_constructor(wait_histogram),
            instance_calls: Family::default(),
            instance_handling: Family::new_with_constructor(handling_histogram),
            instance_wait: Family::new_with_constructor(instance_wait_histogram),
            waits: Family::default(),
            cores: Arc::default(),
        };
        shared.register_server_families(registry);
        shared.register_router_families(registry);
        registry.register_collector(Box::new(collect::Collector::new(shared.cores.clone())));
        RouterMetrics {
            shared: Arc::new(shared),
        }
    }

    /// The options the families were registered with.
    pub fn options(&self) -> MetricsOptions {
        self.shared.options
    }

    /// Counts a registration refused before its service was admitted (an
    /// unknown service, or one over the router's limit), under
    /// [`labels::UNKNOWN_SERVICE`].
    pub(crate) fn refused_unknown(&self, code: tonic::Code) {
        self.shared.event(UNKNOWN_SERVICE, Event::Refused(code));
    }

    /// The metrics of one routed service.
    pub(crate) fn for_service(&self, service: &str) -> ServiceMetrics {
        ServiceMetrics {
            labels: ServiceLabels {
                grpc_service: service.to_owned(),
            },
            heartbeats_missed: OnceLock::new(),
            credit_wait: OnceLock::new(),
            instance_wait: OnceLock::new(),
            shared: self.shared.clone(),
        }
    }
}

impl Shared {
    fn event(&self, service: &str, event: Event) {
        let (event, reason) = event.labels();
        self.events
            .get_or_create(&EventLabels {
                grpc_service: service.to_owned(),
                event,
                reason,
            })
            .inc();
    }
}

/// The metrics of one router core (one routed service).
///
/// Its children are made on first use: only admitted services have
/// registrations that miss heartbeats or calls that wait for credit, so a
/// name a registrant made up never becomes a label value.
pub(crate) struct ServiceMetrics {
    shared: Arc<Shared>,
    labels: ServiceLabels,
    heartbeats_missed: OnceLock<Counter>,
    credit_wait: OnceLock<Histogram>,
    instance_wait: OnceLock<Histogram>,
}

impl std::fmt::Debug for ServiceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceMetrics").finish_non_exhaustive()
    }
}

impl ServiceMetrics {
    /// Reads `core` at every scrape (registrations, calls in flight,
    /// retries, queued bytes) for as long as it lives.
    pub(crate) fn track(&self, core: &Arc<RouterCore>) {
        self.shared.cores.track(Arc::downgrade(core));
    }

    /// Counts a registration event of `core`'s service. Refusals of a
    /// service no registration defined yet go under
    /// [`UNKNOWN_SERVICE`], so names sent by registrants that were never
    /// admitted cannot add label values.
    pub(crate) fn event(&self, core: &RouterCore, event: Event) {
        let service = if core.service.is_defined() {
            core.service.name()
        } else {
            UNKNOWN_SERVICE
        };
        self.shared.event(service, event);
    }

    /// Counts a ping that found the previous one unanswered.
    pub(crate) fn heartbeat_missed(&self) {
        self.heartbeats_missed
            .get_or_init(|| {
                self.shared
                    .heartbeats_missed
                    .get_or_create_owned(&self.labels)
            })
            .inc();
    }

    /// The histogram of the time pumped calls waited for credit.
    pub(crate) fn credit_wait(&self) -> &Histogram {
        self.credit_wait
            .get_or_init(|| self.shared.credit_wait.get_or_create_owned(&self.labels))
    }

    /// Records a wait for an instance that ended with `outcome`, after
    /// `waited` (`None`: refused without waiting).
    pub(crate) fn waited(
        &self,
        outcome: crate::router::WaitOutcome,
        waited: Option<std::time::Duration>,
    ) {
        self.shared
            .waits
            .get_or_create(&WaitLabels {
                grpc_service: self.labels.grpc_service.clone(),
                outcome: outcome.name(),
            })
            .inc();
        if let Some(waited) = waited {
            self.instance_wait
                .get_or_init(|| self.shared.instance_wait.get_or_create_owned(&self.labels))
                .observe(waited.as_secs_f64());
        }
    }

    /// Forgets the per-instance series of an instance whose registration
    /// ended.
    pub(crate) fn instance_gone(&self, service: &str, instance: &str) {
        if self.shared.options.per_instance {
            let labels = InstanceLabels {
                grpc_service: service.to_owned(),
                instance_id: instance.to_owned(),
            };
            self.shared.instance_calls.remove(&labels);
            self.shared.instance_handling.remove(&labels);
        }
    }
}

/// The text formats the families encode to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text (`application/openmetrics-text`).
    OpenMetrics,
    /// The Prometheus text format 0.0.4 (`text/plain`).
    Prometheus,
}

impl Format {
    /// The format a scraper asks for in its `Accept` header: OpenMetrics if
    /// it lists it (Prometheus does), else the Prometheus text format.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// Encodes every metric in `registry` as text in `format`.
pub fn encode(registry: &Registry, format: Format) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, registry)?,
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?
        }
    }
    Ok(text)
}

/// A weak handle on a core, as the collector keeps it.
pub(crate) type WeakCore = Weak<RouterCore>;

#[cfg(test)]
mod tests;
