//! The per-call side of the metrics: the counters of one method, resolved
//! once and kept with the method, and the record of one call.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tokio::time::Instant;
use tonic::Code;

use super::labels::{self, CODES, HandledLabels, InstanceLabels, MethodLabels};
use super::{ServiceMetrics, Shared};
use crate::router::RouterCore;

/// A method's metrics, made at the method's first call. It compares equal to
/// any other and clones empty: it is a cache, not part of the method.
#[derive(Default)]
pub(crate) struct MethodCell(OnceLock<Arc<MethodMetrics>>);

impl Clone for MethodCell {
    fn clone(&self) -> Self {
        MethodCell::default()
    }
}

impl PartialEq for MethodCell {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for MethodCell {}

impl std::fmt::Debug for MethodCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MethodCell")
    }
}

/// The children of the per-method families for one method: no label is
/// hashed on a call after the first of each status code.
pub(crate) struct MethodMetrics {
    shared: Arc<Shared>,
    labels: MethodLabels,
    started: Counter,
    handled: [OnceLock<Counter>; CODES],
    handling: Histogram,
    msg_received: Counter,
    msg_sent: Counter,
    bytes_received: Counter,
    bytes_sent: Counter,
    no_instance: OnceLock<Counter>,
}

impl MethodMetrics {
    fn new(metrics: &ServiceMetrics, service: &str, method: &crate::router::Method) -> Self {
        let shared = metrics.shared.clone();
        let labels = MethodLabels {
            grpc_service: service.to_owned(),
            grpc_method: method.name.to_string(),
            grpc_type: labels::kind_name(method.kind),
        };
        MethodMetrics {
            started: shared.started.get_or_create_owned(&labels),
            handling: shared.handling.get_or_create_owned(&labels),
            msg_received: shared.msg_received.get_or_create_owned(&labels),
            msg_sent: shared.msg_sent.get_or_create_owned(&labels),
            bytes_received: shared.bytes_received.get_or_create_owned(&labels),
            bytes_sent: shared.bytes_sent.get_or_create_owned(&labels),
            handled: Default::default(),
            no_instance: OnceLock::new(),
            labels,
            shared,
        }
    }

    /// The metrics of `method` of `core`, made on first use; `None` when the
    /// core reports no metrics.
    pub(crate) fn of(core: &RouterCore, method: &crate::router::Method) -> Option<Arc<Self>> {
        let metrics = core.metrics.as_ref()?;
        Some(
            method
                .metrics
                .0
                .get_or_init(|| Arc::new(MethodMetrics::new(metrics, core.service.name(), method)))
                .clone(),
        )
    }

    fn handled(&self, code: Code) -> &Counter {
        self.handled[labels::code_index(code)].get_or_init(|| {
            self.shared.handled.get_or_create_owned(&HandledLabels {
                grpc_service: self.labels.grpc_service.clone(),
                grpc_method: self.labels.grpc_method.clone(),
                grpc_type: self.labels.grpc_type,
                grpc_code: labels::code_name(code),
            })
        })
    }

    fn received(&self, bytes: usize) {
        self.msg_received.inc();
        self.bytes_received.inc_by(as_u64(bytes));
    }
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The metrics of one client call, from its arrival to its final status. A
/// call dropped before it has a status (the client went away) ends as
/// `Canceled`. Does nothing for a router without metrics.
#[derive(Default)]
pub(crate) struct CallRecord {
    method: Option<Arc<MethodMetrics>>,
    received: Option<Instant>,
    /// The per-instance children of the instance the call went to last.
    instance: Option<(Counter, Histogram)>,
    done: bool,
}

impl CallRecord {
    /// Counts a call of `method` that reached the router at `received`.
    pub(crate) fn start(
        core: &RouterCore,
        method: &crate::router::Method,
        received: Instant,
    ) -> Self {
        let Some(metrics) = MethodMetrics::of(core, method) else {
            return CallRecord::default();
        };
        metrics.started.inc();
        CallRecord {
            method: Some(metrics),
            received: Some(received),
            instance: None,
            done: false,
        }
    }

    /// Counts a request message of `bytes` payload bytes.
    pub(crate) fn received(&self, bytes: usize) {
        if let Some(m) = &self.method {
            m.received(bytes);
        }
    }

    /// Counts a response message of `bytes` payload bytes.
    pub(crate) fn sent(&self, bytes: usize) {
        if let Some(m) = &self.method {
            m.msg_sent.inc();
            m.bytes_sent.inc_by(as_u64(bytes));
        }
    }

    /// Counts a call no instance could be picked for.
    pub(crate) fn no_instance(&self) {
        if let Some(m) = &self.method {
            m.no_instance
                .get_or_init(|| m.shared.no_instance.get_or_create_owned(&m.labels))
                .inc();
        }
    }

    /// Notes the instance the call was started on (per-instance metrics
    /// only).
    pub(crate) fn on_instance(&mut self, instance_id: &str) {
        if let Some(m) = &self.method
            && m.shared.options.per_instance
        {
            let labels = InstanceLabels {
                grpc_service: m.labels.grpc_service.clone(),
                instance_id: instance_id.to_owned(),
            };
            self.instance = Some((
                m.shared.instance_calls.get_or_create_owned(&labels),
                m.shared.instance_handling.get_or_create_owned(&labels),
            ));
        }
    }

    /// Records the call's final status (once).
    pub(crate) fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let (Some(m), Some(received)) = (&self.method, self.received) else {
            return;
        };
        let seconds = received.elapsed().as_secs_f64();
        m.handled(code).inc();
        m.handling.observe(seconds);
        if let Some((calls, handling)) = &self.instance {
            calls.inc();
            handling.observe(seconds);
        }
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

/// What a call's request pump records: the client's streamed messages and
/// the time it waited for credit, observed once when the pump ends.
pub(crate) struct RequestMeter {
    method: Arc<MethodMetrics>,
    credit_wait: Histogram,
    waited: Duration,
}

impl RequestMeter {
    /// The meter of a pumped call of `method`; `None` without metrics.
    pub(crate) fn new(core: &RouterCore, method: &crate::router::Method) -> Option<Self> {
        let service = core.metrics.as_ref()?;
        Some(RequestMeter {
            method: MethodMetrics::of(core, method)?,
            credit_wait: service.credit_wait().clone(),
            waited: Duration::ZERO,
        })
    }

    /// Counts a streamed request message.
    pub(crate) fn received(&self, bytes: usize) {
        self.method.received(bytes);
    }

    /// Adds time spent waiting for credit.
    pub(crate) fn waited(&mut self, since: Instant) {
        self.waited += since.elapsed();
    }
}

impl Drop for RequestMeter {
    fn drop(&mut self) {
        self.credit_wait.observe(self.waited.as_secs_f64());
    }
}
