//! The KEDA external scaler (`externalscaler.ExternalScaler`, KEDA's
//! vendored `proto/externalscaler/externalscaler.proto`), served on
//! `[keda] listen`, so KEDA scales a service's instances from zero.
//!
//! The ScaledObject's trigger names the service in its metadata
//! (`service: myservice.v1.Greeter`) and optionally `target`, the calls one
//! instance should have (default [`DEFAULT_TARGET`]). The metric is the
//! service's calls waiting for an instance plus those in flight; the service
//! is active while it is above zero. `StreamIsActive` answers at once and
//! then whenever that changes, so a call that starts waiting reaches KEDA at
//! once (no polling interval). A service the router does not know yet is
//! inactive with a metric of 0.

use std::pin::Pin;
use std::sync::Arc;

use router_runtime::router::{DynamicRouter, ServiceHandle};
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The generated types, server and client of `externalscaler.proto`.
#[allow(missing_docs, clippy::pedantic, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("externalscaler");
}

use pb::external_scaler_server::{ExternalScaler, ExternalScalerServer};

/// The trigger metadata key that names the service.
pub const SERVICE_KEY: &str = "service";
/// The trigger metadata key of the calls per instance KEDA aims for.
pub const TARGET_KEY: &str = "target";
/// The calls per instance when the trigger names no `target`.
pub const DEFAULT_TARGET: i64 = 10;

/// The scaler: reads the router's services. Cheap to clone.
#[derive(Clone)]
pub struct Scaler {
    router: DynamicRouter,
    /// Bumped whenever the router learns or is configured with a service,
    /// so a stream for a service not known yet sees it come.
    services: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for Scaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scaler").finish_non_exhaustive()
    }
}

impl Scaler {
    /// A scaler over `router`'s services.
    pub fn new(router: DynamicRouter) -> Self {
        let services = Arc::new(watch::Sender::new(0u64));
        let bump = services.clone();
        router.subscribe(move |_, _| {
            bump.send_modify(|n| *n += 1);
        });
        Scaler { router, services }
    }

    /// The tonic service to serve.
    pub fn service(self) -> ExternalScalerServer<Scaler> {
        ExternalScalerServer::new(self)
    }

    /// The calls of `service` waiting for an instance plus those in flight
    /// (0 for a service the router does not know).
    pub fn load(&self, service: &str) -> u64 {
        self.router.service(service).map_or(0, |s| load_of(&s))
    }
}

fn load_of(service: &ServiceHandle) -> u64 {
    let waiting = u64::try_from(service.waiting().calls()).unwrap_or(u64::MAX);
    waiting.saturating_add(service.stats().calls_active())
}

/// The service a ScaledObject's trigger names.
fn service_of(reference: Option<&pb::ScaledObjectRef>) -> Result<String, Status> {
    reference
        .and_then(|r| r.scaler_metadata.get(SERVICE_KEY))
        .filter(|s| !s.is_empty())
        .cloned()
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "the trigger's metadata must name the service: `{SERVICE_KEY}: <package>.<Service>`"
            ))
        })
}

fn metric_name(service: &str) -> String {
    let cleaned: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("grpc-router-{cleaned}")
}

/// The stream of `StreamIsActive`.
type ActiveStream = Pin<Box<dyn Stream<Item = Result<pb::IsActiveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for Scaler {
    async fn is_active(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::IsActiveResponse>, Status> {
        let service = service_of(Some(request.get_ref()))?;
        Ok(Response::new(pb::IsActiveResponse {
            result: self.load(&service) > 0,
        }))
    }

    type StreamIsActiveStream = ActiveStream;

    async fn stream_is_active(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<ActiveStream>, Status> {
        let service = service_of(Some(request.get_ref()))?;
        let scaler = self.clone();
        let stream = async_stream(scaler, service);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_metric_spec(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::GetMetricSpecResponse>, Status> {
        let reference = request.get_ref();
        let service = service_of(Some(reference))?;
        let target = match reference.scaler_metadata.get(TARGET_KEY) {
            None => DEFAULT_TARGET,
            Some(text) => text.parse::<i64>().ok().filter(|t| *t > 0).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "the trigger's `{TARGET_KEY}` ({text:?}) is not a whole number of calls per instance above 0"
                ))
            })?,
        };
        Ok(Response::new(pb::GetMetricSpecResponse {
            metric_specs: vec![pb::MetricSpec {
                metric_name: metric_name(&service),
                target_size: target,
                target_size_float: target as f64,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        let service = service_of(request.get_ref().scaled_object_ref.as_ref())?;
        let load = self.load(&service);
        Ok(Response::new(pb::GetMetricsResponse {
            metric_values: vec![pb::MetricValue {
                metric_name: metric_name(&service),
                metric_value: i64::try_from(load).unwrap_or(i64::MAX),
                metric_value_float: load as f64,
            }],
        }))
    }

    type StreamMetricSpecStream =
        Pin<Box<dyn Stream<Item = Result<pb::GetMetricSpecResponse, Status>> + Send>>;

    async fn stream_metric_spec(
        &self,
        _request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<Self::StreamMetricSpecStream>, Status> {
        Err(Status::unimplemented(
            "the metric spec does not change: KEDA reads it with GetMetricSpec",
        ))
    }
}

/// `StreamIsActive`'s answers for `service`: the state now, then each
/// change. It wakes when a call starts or stops waiting, when the calls in
/// flight leave or reach zero, and when the router learns a service.
fn async_stream(
    scaler: Scaler,
    service: String,
) -> impl Stream<Item = Result<pb::IsActiveResponse, Status>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut services = scaler.services.subscribe();
        let mut sent: Option<bool> = None;
        loop {
            services.borrow_and_update();
            let handle = scaler.router.service(&service);
            // Each watch is set up before the state is read: no change after
            // the read is missed.
            let mut waiting = handle.as_ref().map(|h| h.waiting().subscribe());
            let busy = handle.as_ref().map(|h| h.stats().became_busy());
            let active = handle.as_ref().is_some_and(|h| load_of(h) > 0);
            if sent != Some(active) {
                if tx
                    .send(Ok(pb::IsActiveResponse { result: active }))
                    .await
                    .is_err()
                {
                    return;
                }
                sent = Some(active);
            }
            let in_flight = handle
                .as_ref()
                .is_some_and(|h| h.stats().calls_active() > 0);
            let idle_or_busy = async {
                match (&handle, busy) {
                    (Some(h), _) if in_flight => h.stats().wait_idle().await,
                    (Some(_), Some(busy)) => busy.await,
                    _ => std::future::pending().await,
                }
            };
            let waiting_changed = async {
                match waiting.as_mut() {
                    Some(w) => {
                        if w.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = waiting_changed => {}
                () = idle_or_busy => {}
                changed = services.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Serves the scaler on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    scaler: Scaler,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    // No Nagle delay: a push must not wait for the previous one's ACK
    // (the builder's own `tcp_nodelay` applies only to listeners it binds).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(scaler.service())
        .serve_with_incoming_shutdown(incoming, stop)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metric_is_named_for_the_service_in_kubernetes_spelling() {
        assert_eq!(
            metric_name("myservice.v1.Greeter"),
            "grpc-router-myservice-v1-greeter"
        );
    }

    #[test]
    fn a_trigger_without_a_service_is_refused_saying_what_to_write() {
        let status = service_of(Some(&pb::ScaledObjectRef::default())).expect_err("no service");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("service: "), "{status:?}");
    }
}
