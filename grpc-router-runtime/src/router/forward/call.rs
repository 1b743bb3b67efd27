//! Forwarding one client call, in steps: admit it (the admission stages:
//! limits, client auth, deadline), read its request, choose an instance,
//! start an attempt there, and on an attempt that ends without an answer act
//! on the retry decision ([`crate::router::retry::RetryState::decide`]);
//! the answered attempt's response stream goes to tonic.
//!
//! The pieces: [`crate::router::balance`] picks, [`crate::router::start`] writes the `Start`,
//! [`crate::router::pump`] sends the requests, [`crate::router::reply`] streams the response.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::HeaderMap;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::flow::Intake;
use crate::metrics::{CallRecord, RequestMeter};
use crate::router::admission::{CallContext, Refusal};
use crate::router::balance::{PickError, Selection};
use crate::router::client_body::BodyWatch;
use crate::router::concurrency::{self, Permit};
use crate::router::instance_budget::InstanceLimit;
use crate::router::pump::{ClientStream, Requests, send_requests};
use crate::router::registry::Instance;
use crate::router::reply::{CallGuard, First, ReplyStream, deadline_exceeded};
use crate::router::retry::{Decision, Ending, RetryRules, RetryState};
use crate::router::service::Method;
use crate::router::split::TrafficSplit;
use crate::router::start::{CallTemplate, Started, try_start};
use crate::router::{PIN_HEADER, RouterConfig, RouterCore, SELECT_HEADER, route_key, waiting};
use crate::{metadata, trace};

/// The handler of one routed method.
pub(crate) struct Forward {
    pub(crate) core: Arc<RouterCore>,
    pub(crate) method: Arc<Method>,
    /// When the request reached the router's service.
    pub(crate) received: Instant,
    /// How the client's request body ends, for methods whose requests
    /// stream.
    pub(crate) body: Option<BodyWatch>,
}

impl tonic::server::StreamingService<Bytes> for Forward {
    type Response = Bytes;
    type ResponseStream = ReplyStream;
    type Future = BoxFuture<'static, Result<Response<ReplyStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        let span = trace::router_span(&self.method.path);
        trace::continue_trace(&span, request.metadata());
        Box::pin(trace::forwarding(
            span.clone(),
            forward(
                self.core.clone(),
                self.method.clone(),
                self.received,
                request,
                self.body.take().unwrap_or_default(),
                span,
            ),
        ))
    }
}

/// The client connection's addresses, passed on so the handler sees them.
struct Addresses {
    peer: String,
    local: String,
    /// The client's TLS certificates (DER), when it presented any.
    peer_certificates: Vec<Bytes>,
}

impl Addresses {
    /// The addresses tonic recorded for the connection, plain or TLS.
    fn of(extensions: &tonic::Extensions) -> Self {
        use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
        let connection = extensions.get::<TcpConnectInfo>().or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .map(TlsConnectInfo::get_ref)
        });
        let text = |addr: Option<std::net::SocketAddr>| addr.map(address_text).unwrap_or_default();
        let peer_certificates = crate::router::authz::peer_certificates(extensions);
        Addresses {
            peer: text(connection.and_then(TcpConnectInfo::remote_addr)),
            local: text(connection.and_then(TcpConnectInfo::local_addr)),
            peer_certificates,
        }
    }
}

/// `addr` as text, from a small per-thread cache: formatting an address
/// costs more than the rest of a call's routing decision, and a router sees
/// the same few addresses call after call (its own listener, and each client
/// connection's several streams in a row).
fn address_text(addr: std::net::SocketAddr) -> String {
    use std::cell::RefCell;
    const ENTRIES: usize = 8;
    /// The next slot to replace, and the addresses formatted so far.
    type Cache = (usize, [Option<(std::net::SocketAddr, String)>; ENTRIES]);
    thread_local! {
        static CACHE: RefCell<Cache> = const { RefCell::new((0, [const { None }; ENTRIES])) };
    }
    CACHE.with_borrow_mut(|(next, entries)| {
        if let Some((_, text)) = entries.iter().flatten().find(|(a, _)| *a == addr) {
            return text.clone();
        }
        let text = addr.to_string();
        entries[*next] = Some((addr, text.clone()));
        *next = (*next + 1) % ENTRIES;
        text
    })
}

/// Whether `deadline` has passed.
fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| d <= Instant::now())
}

async fn forward(
    core: Arc<RouterCore>,
    method: Arc<Method>,
    received: Instant,
    request: Request<Streaming<Bytes>>,
    body: BodyWatch,
    span: tracing::Span,
) -> Result<Response<ReplyStream>, Status> {
    let mut record = CallRecord::start(&core, &method, received);
    let protocol = request.extensions().get::<crate::server::Protocol>();
    core.stats.arrived(protocol.copied());
    // Boxed once here: the layers above (the span, tonic's handler) then move
    // a pointer, not the whole routing state, at each poll boundary.
    let client = ClientRequest { request, body };
    let routed = Box::pin(route(core, method, received, client, span, &mut record)).await;
    match routed {
        Ok((mut response, permit)) => {
            // The response stream records the final status, and holds the
            // call's concurrency slots to its end.
            let reply = response.get_mut();
            reply.record = std::mem::take(&mut record);
            reply.permit = permit;
            Ok(response)
        }
        Err(status) => {
            record.finish(status.code());
            Err(status)
        }
    }
}

/// The client's call as tonic hands it over, and how its body ends.
struct ClientRequest {
    request: Request<Streaming<Bytes>>,
    body: BodyWatch,
}

async fn route(
    core: Arc<RouterCore>,
    method: Arc<Method>,
    received: Instant,
    client: ClientRequest,
    span: tracing::Span,
    record: &mut CallRecord,
) -> Result<(Response<ReplyStream>, Permit), Status> {
    let ClientRequest { request, body } = client;
    let (metadata_map, extensions, mut stream) = request.into_parts();
    let addresses = Addresses::of(&extensions);
    let mut headers = metadata_map.into_headers();
    // The settings this call keeps to its end, whatever a reload changes.
    let config = core.config();
    let deadline = admit(&core, &method, received, &addresses, &mut headers)?;
    let permit = enter_limits(&config, &core, &method, &addresses.peer, deadline).await?;
    let mut template = CallTemplate {
        method: method.clone(),
        metadata: metadata::from_headers(&headers),
        peer: addresses.peer,
        local: addresses.local,
        peer_certificates: addresses.peer_certificates,
        deadline,
    };
    trace::propagate(&span, &mut template.metadata);
    let requests = if method.kind.single_request() {
        // The request stream itself is kept until the call is routed.
        Requests::Single(read_request(&core, &mut stream, deadline, record).await?)
    } else {
        Requests::Stream(Box::new(ClientStream {
            messages: stream,
            body,
            service: core.service.shared_name(),
        }))
    };
    if expired(deadline) {
        return Err(deadline_exceeded());
    }
    let key = routing_key(&core, &method, &requests, &headers);
    let base = Selection {
        limit: instance_limit(&core),
        ..selection(&headers, key.as_deref(), method.tag)
    };
    let shares = split_shares(&config, &base);
    // A single request can be sent again; a client stream cannot.
    let resend = match &requests {
        Requests::Single(message) => Some(message.clone()),
        Requests::Stream(_) => None,
    };
    let attempts = Attempts {
        rules: RetryRules::new(&config, &core, &method, resend.is_some(), deadline),
        core: &core,
        method: &method,
        template,
        span: &span,
        resend,
        state: RetryState::default(),
        retries: 0,
    };
    let response = attempts.run(&base, &shares, requests, record).await?;
    Ok((response, permit))
}

/// Takes the call's slots under the concurrency limits (see
/// [`crate::router::concurrency`]), a refusal recorded as the router's.
async fn enter_limits(
    config: &RouterConfig,
    core: &Arc<RouterCore>,
    method: &Arc<Method>,
    peer: &str,
    deadline: Option<Instant>,
) -> Result<Permit, Status> {
    if config.concurrency.is_empty() {
        return Ok(Permit::default());
    }
    concurrency::enter(config, core, method, deadline)
        .await
        .map_err(|status| match status.code() {
            tonic::Code::ResourceExhausted => crate::router::refusal::record_as(
                core,
                &method.path,
                peer,
                status,
                crate::router::refusal::Reason::ConcurrencyLimit,
                crate::clock::now_ms(),
            ),
            _ => status,
        })
}

/// Runs the call through the admission stages (see
/// [`crate::router::admission`]): its deadline, or the status it is refused
/// with (a policy's refusal recorded as one).
fn admit(
    core: &RouterCore,
    method: &Method,
    received: Instant,
    addresses: &Addresses,
    headers: &mut HeaderMap,
) -> Result<Option<Instant>, Status> {
    let mut call = CallContext {
        service: core.service.name(),
        method: &method.name,
        peer: &addresses.peer,
        peer_certificates: &addresses.peer_certificates,
        headers,
        received,
        deadline: None,
    };
    match core.admission.load().admit(&mut call) {
        Ok(()) => Ok(call.deadline),
        Err(Refusal {
            status,
            is_policy: true,
        }) => Err(crate::router::refusal::record(
            core,
            &method.path,
            &addresses.peer,
            status,
            crate::clock::now_ms(),
        )),
        Err(Refusal { status, .. }) => Err(status),
    }
}

/// The one request message of a single-request method (`None` when the
/// client sent none), read within the call's deadline.
async fn read_request(
    core: &RouterCore,
    stream: &mut Streaming<Bytes>,
    deadline: Option<Instant>,
    record: &mut CallRecord,
) -> Result<Option<Bytes>, Status> {
    let read = match deadline {
        Some(d) => tokio::time::timeout_at(d, stream.message())
            .await
            .map_err(|_| deadline_exceeded())?,
        None => stream.message().await,
    };
    let message =
        read.map_err(|status| crate::oversize::router_request(status, core.service.name()))?;
    if let Some(message) = &message {
        record.received(message.len());
    }
    Ok(message)
}

/// Which instances may take the call, by its headers (the pin and the label
/// selector) and its routing key.
fn selection<'a>(headers: &'a HeaderMap, key: Option<&'a [u8]>, method: u32) -> Selection<'a> {
    Selection {
        pinned: headers.get(PIN_HEADER).and_then(|v| v.to_str().ok()),
        labels: headers
            .get(SELECT_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(parse_selector)
            .unwrap_or_default(),
        key,
        exclude: &[],
        method,
        limit: None,
    }
}

/// The per-instance rate limit, when the service has one (timed at each
/// pick: see [`pick`]).
fn instance_limit(core: &RouterCore) -> Option<InstanceLimit> {
    let limiters = core.limiters.load();
    let limit = Option::as_deref(&*limiters)?.per_instance()?;
    Some(InstanceLimit::new(limit, 0))
}

/// The traffic split's shares, in the order the call tries them; none when
/// there is no split or the client chose instances itself (a pin or a
/// label selector).
fn split_shares<'a>(config: &'a RouterConfig, base: &Selection<'_>) -> Vec<&'a TrafficSplit> {
    if base.pinned.is_none() && base.labels.is_empty() && !config.splits.is_empty() {
        config.splits.order(base.key, rand::random())
    } else {
        Vec::new()
    }
}

/// One call's attempts: what every attempt sends, and the retry state
/// between them.
struct Attempts<'a> {
    core: &'a Arc<RouterCore>,
    method: &'a Arc<Method>,
    template: CallTemplate,
    span: &'a tracing::Span,
    /// The request, to send again (single-request methods only).
    resend: Option<Option<Bytes>>,
    rules: RetryRules<'a>,
    state: RetryState,
    /// The retries recorded on the call's span.
    retries: usize,
}

/// How one attempt went.
enum Attempt {
    /// The instance answered with headers: the response for the client.
    Answered(Response<ReplyStream>),
    /// Its `Start` was never written; the requests come back.
    NotStarted(Requests),
    /// It ended before any response; its stream is kept until the retry
    /// decision is made (and the backoff slept), as the attempt's slot on
    /// its instance is.
    Ended(Ending, ReplyStream),
}

impl Attempts<'_> {
    /// Tries instances until one answers or the retry decision gives up.
    async fn run(
        mut self,
        base: &Selection<'_>,
        shares: &[&TrafficSplit],
        requests: Requests,
        record: &mut CallRecord,
    ) -> Result<Response<ReplyStream>, Status> {
        let mut requests = Some(requests);
        loop {
            let instance = self.choose(base, shares, record).await?;
            let Some(pending) = requests
                .take()
                .or_else(|| self.resend.clone().map(Requests::Single))
            else {
                return Err(Status::internal("router lost the call's requests"));
            };
            match self.start(&instance, pending, record).await {
                Attempt::Answered(response) => return Ok(response),
                Attempt::NotStarted(pending) => {
                    // It never reached the instance: safe to try another.
                    requests = Some(pending);
                    self.after(&instance, Ending::NotStarted).await?;
                }
                Attempt::Ended(ending, reply) => {
                    self.after(&instance, ending).await?;
                    drop(reply);
                }
            }
        }
    }

    /// The instance for the next attempt (never one the call tried); the
    /// first attempt may wait for one ([`crate::router::waiting`]).
    async fn choose(
        &self,
        base: &Selection<'_>,
        shares: &[&TrafficSplit],
        record: &CallRecord,
    ) -> Result<Arc<Instance>, Status> {
        let selection = Selection {
            exclude: &self.state.tried,
            ..base.clone()
        };
        let (first, held) = (self.state.tried.is_empty(), self.resend.iter().flatten());
        let held = held.map(Bytes::len).sum();
        let deadline = self.template.deadline;
        let picked = || pick(self.core, &selection, shares);
        waiting::pick_or_wait(self.core, deadline, held, first, picked)
            .await
            .map_err(|waited| {
                waited.status(|e| {
                    record.no_instance();
                    pick_status(self.core, self.method, &self.template.peer, e)
                })
            })
    }

    /// Starts an attempt on `instance` and waits for its first event (the
    /// attempt's end goes to the attempt observers, outlier detection among
    /// them).
    async fn start(
        &mut self,
        instance: &Arc<Instance>,
        pending: Requests,
        record: &mut CallRecord,
    ) -> Attempt {
        let Some(started) = try_start(instance, &self.template, &pending) else {
            return Attempt::NotStarted(pending);
        };
        record.on_instance(instance.id());
        let deadline = self.template.deadline;
        let (core, method, span) = (self.core, self.method, self.span);
        let mut reply = respond(core, method, instance, started, pending, deadline, span);
        let first = reply.first_event().await;
        if let First::Headers(_) | First::Failed(_) = &first {
            trace::record_attempts(span, instance.id(), self.retries);
        }
        let ending = match first {
            First::Headers(md) => {
                if self.rules.policy.is_some() {
                    core.retry_budget.answered(self.rules.throttling);
                }
                reply.trace = trace::Pending::new(span.clone());
                return Attempt::Answered(Response::from_parts(
                    MetadataMap::from_headers(metadata::to_headers(Some(&md))),
                    reply,
                    Default::default(),
                ));
            }
            First::Lost(status) => Ending::Lost(status),
            First::Refused(status) => Ending::Refused(status),
            First::Failed(status) => Ending::Failed(status),
        };
        Attempt::Ended(ending, reply)
    }

    /// Acts on the retry decision after `instance`'s attempt ended: `Ok`
    /// once the call may try again (after the policy's backoff), else the
    /// status the call fails with.
    async fn after(&mut self, instance: &Instance, ending: Ending) -> Result<(), Status> {
        let registration = instance.registration;
        let decision = self.state.decide(
            &self.rules,
            &ending,
            registration,
            Instant::now(),
            rand::random(),
        );
        let status = match (decision, ending) {
            (Decision::Retry(backoff), ending) => {
                if let Ending::Failed(_) = ending {
                    tokio::time::sleep(backoff).await;
                    set_previous_attempts(&mut self.template.metadata, self.state.answered());
                }
                self.core
                    .stats
                    .calls_retried
                    .fetch_add(1, Ordering::Relaxed);
                let reason = ending.status().map_or("not started", Status::message);
                trace::record_retry(self.span, &mut self.retries, instance.id(), reason);
                return Ok(());
            }
            (_, Ending::NotStarted) => {
                trace::record_attempts(self.span, instance.id(), self.retries);
                Status::unavailable(format!(
                    "no instance of `{}` could take the call",
                    self.core.service.name()
                ))
            }
            (_, Ending::Lost(status) | Ending::Refused(status)) => {
                trace::record_attempts(self.span, instance.id(), self.retries);
                status
            }
            (Decision::Throttled, Ending::Failed(status)) => {
                self.core.stats.retry_throttled();
                status
            }
            (Decision::GiveUp, Ending::Failed(status)) => status,
        };
        Err(status)
    }
}

/// Sets `grpc-previous-rpc-attempts` for a retry.
fn set_previous_attempts(metadata: &mut crate::pb::Metadata, previous: u32) {
    const KEY: &str = "grpc-previous-rpc-attempts";
    metadata.entries.retain(|e| e.key != KEY);
    metadata.entries.push(crate::pb::MetadataEntry {
        key: KEY.to_owned(),
        value: Some(crate::pb::metadata_entry::Value::Ascii(
            previous.to_string(),
        )),
    });
}

/// Sets up a started call's response side and, unless the request went with
/// the `Start`, its request pump.
fn respond(
    core: &Arc<RouterCore>,
    method: &Arc<Method>,
    instance: &Arc<Instance>,
    started: Started,
    requests: Requests,
    deadline: Option<Instant>,
    span: &tracing::Span,
) -> ReplyStream {
    let Started { opened, inline } = started;
    core.stats.call_started();
    let mut guard = CallGuard {
        core: core.clone(),
        instance: instance.clone(),
        call_id: opened.call_id,
        finished: false,
        pump: None,
        method: method.clone(),
        started: std::time::Instant::now(),
        ended: false,
    };
    if !inline {
        let pump = tokio::spawn(send_requests(
            instance.clone(),
            opened.call_id,
            method.tag,
            opened.request_credit,
            requests,
            trace::CreditWait::new(span.clone()),
            RequestMeter::new(core, method),
        ));
        guard.pump = Some(pump.abort_handle());
    }
    let config = core.config();
    ReplyStream {
        events: opened.events,
        intake: Intake::pooled(
            opened.window,
            config.initial_window,
            config.max_response_message_size,
            instance.partial.clone(),
        ),
        method: method.clone(),
        messages: 0,
        guard,
        deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        done: false,
        trace: trace::Pending::default(),
        record: CallRecord::default(),
        permit: Default::default(),
    }
}

/// The balancer's pick for `selection`, within the traffic split's shares
/// (in `shares` order, the first that has an instance for the call) when
/// there is a split; the instance picked is charged to the per-instance
/// limit.
fn pick(
    core: &RouterCore,
    selection: &Selection<'_>,
    shares: &[&TrafficSplit],
) -> Result<Arc<Instance>, PickError> {
    let Some(limit) = selection.limit else {
        return pick_within_split(core, selection, shares);
    };
    // The limit as of now: a call may pick again after waiting.
    let limit = limit.at(crate::clock::now_ns());
    let now = Selection {
        limit: Some(limit),
        ..selection.clone()
    };
    let instance = pick_within_split(core, &now, shares)?;
    limit.charge(&instance.budget);
    Ok(instance)
}

/// [`pick`] before the charge.
fn pick_within_split(
    core: &RouterCore,
    selection: &Selection<'_>,
    shares: &[&TrafficSplit],
) -> Result<Arc<Instance>, PickError> {
    let snapshot = core.registry.snapshot();
    let Some((first, rest)) = shares.split_first() else {
        return core.balancer.pick(&snapshot, selection);
    };
    let within = |share: &TrafficSplit| {
        let labels = share
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        core.balancer.pick(
            &snapshot,
            &Selection {
                labels,
                ..selection.clone()
            },
        )
    };
    let primary = within(first);
    if primary.is_ok() {
        return primary;
    }
    rest.iter()
        .find_map(|share| within(share).ok())
        .ok_or_else(|| primary.err().unwrap_or(PickError::NoneAvailable))
}

fn parse_selector(text: &str) -> Vec<(&str, &str)> {
    text.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

/// The call's routing key: the method's `route_key` field, else the
/// configured header.
fn routing_key(
    core: &RouterCore,
    method: &Method,
    requests: &Requests,
    headers: &HeaderMap,
) -> Option<Bytes> {
    if let (false, Requests::Single(Some(message))) = (method.route_key.is_empty(), requests)
        && let Some(key) = route_key::extract(message, &method.route_key)
    {
        return Some(key);
    }
    let config = core.config();
    let header = config.route_key_header.as_deref()?;
    headers
        .get(header)
        .map(|v| Bytes::copy_from_slice(v.as_bytes()))
}

fn pick_status(core: &RouterCore, method: &Method, peer: &str, error: PickError) -> Status {
    let status = pick_error_status(core, method, error);
    if status.code() == tonic::Code::ResourceExhausted {
        // Every instance over its rate limit: a refusal like the others.
        return crate::router::refusal::record(
            core,
            &method.path,
            peer,
            status,
            crate::clock::now_ms(),
        );
    }
    let (code, message) = (status.code(), status.message());
    core.recent_errors.push(&method.path, "", code, message);
    status
}

fn pick_error_status(core: &RouterCore, method: &Method, error: PickError) -> Status {
    let service = core.service.name();
    match error {
        PickError::NoneAvailable
            if !core
                .registry
                .snapshot()
                .iter()
                .any(|i| i.serves(method.tag)) =>
        {
            Status::unavailable(format!(
                "no registered instance of `{service}` serves `{}`",
                method.name
            ))
        }
        PickError::NoInstances => {
            Status::unavailable(format!("no instance of `{service}` is registered"))
        }
        PickError::NoneAvailable => Status::unavailable(format!(
            "no instance of `{service}` can take a call now (all draining, not serving, at their concurrency limit or congested)"
        )),
        PickError::PinnedNotFound(id) => Status::unavailable(format!(
            "instance `{id}` (from `{PIN_HEADER}`) of `{service}` is not registered"
        )),
        PickError::PinnedUnavailable(id) => Status::unavailable(format!(
            "instance `{id}` (from `{PIN_HEADER}`) of `{service}` cannot take the call now (draining, not serving, at its limit, congested, or it already failed this call)"
        )),
        PickError::NoLabelMatch => Status::unavailable(format!(
            "no instance of `{service}` matches the `{SELECT_HEADER}` selector"
        )),
        PickError::OverInstanceLimit(per_second) => Status::resource_exhausted(format!(
            "rate limit: every instance of `{service}` that could take the call is over its {per_second} calls/s"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_text_is_right_for_more_addresses_than_the_cache_holds() {
        let addrs: Vec<std::net::SocketAddr> = (0..20u16)
            .map(|i| std::net::SocketAddr::from(([127, 0, 0, 1], 40000 + i)))
            .chain(std::iter::once("[::1]:443".parse().expect("address")))
            .collect();
        for _ in 0..3 {
            for addr in &addrs {
                assert_eq!(address_text(*addr), addr.to_string());
            }
        }
    }
}
