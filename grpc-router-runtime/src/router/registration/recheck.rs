//! Registrations checked again when the registration check changes (a
//! reload turns registration tokens on, drops a token, or narrows the
//! allowed certificate SANs): a registration that no longer passes is closed
//! with the check's status, and the id it held is free; one that passes is
//! bound to the identity the check returns now.
//!
//! The check sees what the registration presented when it registered: the
//! `Register` call's metadata (without the transport headers every call
//! carries), the bridge's address and TLS client certificates, and its
//! `Hello` as the router recorded it (without the service description).

use std::sync::Arc;

use bytes::Bytes;
use tonic::Status;
use tonic::metadata::MetadataMap;
use tracing::warn;

use crate::metrics::Event;
use crate::pb;
use crate::router::registry::Instance;
use crate::router::{RegisterRequest, RouterConfig, RouterCore, session};

/// Headers every gRPC call carries: never credentials, so not kept.
const TRANSPORT_HEADERS: [&str; 6] = [
    "te",
    "content-type",
    "user-agent",
    "grpc-accept-encoding",
    "grpc-encoding",
    "grpc-timeout",
];

/// What a registration presented to the registration check, kept to check
/// it again. A bridge that sent only transport headers over plain TCP keeps
/// no allocation here.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    /// The `Register` call's metadata without [`TRANSPORT_HEADERS`]; `None`
    /// when nothing else came.
    metadata: Option<Box<MetadataMap>>,
    /// The bridge's address, as text.
    peer: Box<str>,
    /// Its TLS client certificates (DER, the leaf first).
    certificates: Box<[Bytes]>,
}

impl Credentials {
    /// What a `Register` call with `metadata`, from `peer`, with TLS client
    /// `certificates` presented.
    pub(crate) fn new(metadata: &MetadataMap, peer: &str, certificates: &[Bytes]) -> Self {
        let mut headers = metadata.clone().into_headers();
        for name in TRANSPORT_HEADERS {
            headers.remove(name);
        }
        Credentials {
            metadata: (!headers.is_empty()).then(|| Box::new(MetadataMap::from_headers(headers))),
            peer: peer.into(),
            certificates: certificates.into(),
        }
    }
}

/// Whether two configurations check registrations differently (another
/// hook, or one where there was none).
pub(crate) fn check_changed(before: &RouterConfig, after: &RouterConfig) -> bool {
    match (&before.authorize, &after.authorize) {
        (None, None) => false,
        (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
        _ => true,
    }
}

/// Checks every live registration of `core` with its current check.
pub(crate) fn recheck_all(core: &RouterCore) {
    let config = core.config();
    for instance in core.registry.snapshot().iter() {
        recheck(core, &config, instance);
    }
}

/// Checks `instance` with `config`'s registration check: closes it with the
/// check's status when it no longer passes, else binds its id to the
/// identity the check returns now.
pub(crate) fn recheck(core: &RouterCore, config: &RouterConfig, instance: &Instance) {
    if instance.is_closed() {
        return;
    }
    let verdict = match &config.authorize {
        None => Ok(None),
        Some(authorize) => {
            let credentials = &instance.credentials;
            let none = MetadataMap::new();
            authorize(&RegisterRequest {
                metadata: credentials.metadata.as_deref().unwrap_or(&none),
                hello: &recorded_hello(core, instance),
                peer: &credentials.peer,
                peer_certificates: &credentials.certificates,
            })
        }
    };
    match verdict {
        Ok(identity) => instance.set_identity(identity),
        Err(status) => {
            warn!(
                event = "revoked",
                service = core.service.name(),
                instance = instance.id(),
                registration = instance.registration,
                code = ?status.code(),
                reason = status.message(),
                "registration no longer passes the registration check; closing it"
            );
            session::record(core, Event::Revoked(status.code()));
            let reason = format!(
                "the registration of `{}` no longer passes the router's registration check \
                 (its configuration changed): {}",
                instance.id(),
                status.message()
            );
            session::end_registration(
                core,
                instance,
                &reason,
                Some(Status::new(status.code(), reason.clone())),
            );
        }
    }
}

/// The `Hello` of `instance` as the router recorded it: what it declared,
/// without its service description.
fn recorded_hello(core: &RouterCore, instance: &Instance) -> pb::Hello {
    let info = instance.info();
    pb::Hello {
        protocol_version: session::PROTOCOL_VERSION,
        instance_id: info.id.clone(),
        service: core.service.name().to_owned(),
        labels: info.labels.clone().into_iter().collect(),
        weight: info.weight,
        max_concurrent_calls: info.max_concurrent_calls,
        routing_keys: info.routing_keys.clone(),
        initial_window: instance.request_window,
        max_frame_size: u32::try_from(instance.max_frame).unwrap_or(u32::MAX),
        incarnation: info.incarnation.clone(),
        ..Default::default()
    }
}
