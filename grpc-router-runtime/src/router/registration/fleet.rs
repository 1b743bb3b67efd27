//! A fleet of router replicas as its bridges see it: the replicas a bridge
//! should hold one registration with each, sent in every `Welcome` and, to
//! bridges whose `Hello` set `discovery`, in a `Peers` frame whenever the
//! list changes.

use std::sync::{Arc, Weak};

use tokio::sync::watch;
use tracing::debug;

use crate::pb;
use crate::router::RouterCore;
use crate::wire::{DUPLICATE_TRAILER, RouterFrame};

/// The router replicas of a fleet, this one included, as bridges reach them.
/// One `Fleet` is shared (through [`RouterConfig::fleet`](crate::router::RouterConfig::fleet))
/// by every service's router of a process; [`Fleet::set`] tells every live
/// registration that asked for it.
#[derive(Debug)]
pub struct Fleet {
    peers: watch::Sender<Arc<Vec<pb::RouterPeer>>>,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            peers: watch::Sender::new(Arc::new(Vec::new())),
        }
    }
}

impl Fleet {
    /// A fleet that knows no replicas yet (bridges then keep the endpoints
    /// they were given).
    pub fn new() -> Arc<Self> {
        Arc::new(Fleet::default())
    }

    /// Replaces the list of replicas (the router's own entry included).
    /// Returns whether it changed; when it did, every live registration
    /// whose bridge takes `Peers` frames gets the new list.
    pub fn set(&self, peers: Vec<pb::RouterPeer>) -> bool {
        self.peers.send_if_modified(|current| {
            if **current == peers {
                return false;
            }
            *current = Arc::new(peers);
            true
        })
    }

    /// The replicas now.
    pub fn peers(&self) -> Arc<Vec<pb::RouterPeer>> {
        self.peers.borrow().clone()
    }
}

/// Refuses a registration whose bridge holds one with this router already
/// (its `Hello.registered_with` lists `router_id`): ALREADY_EXISTS with the
/// [`DUPLICATE_TRAILER`], so the bridge's live registration stays.
pub(crate) fn refuse_duplicate(hello: &pb::Hello, router_id: &str) -> Result<(), tonic::Status> {
    if !hello.registered_with.iter().any(|id| id == router_id) {
        return Ok(());
    }
    let mut status = tonic::Status::already_exists(format!(
        "instance `{}` holds a registration with router `{router_id}` already; \
         this second one is refused",
        hello.instance_id
    ));
    if let Ok(value) = router_id.parse() {
        status.metadata_mut().insert(DUPLICATE_TRAILER, value);
    }
    Err(status)
}

/// Whether `status` is [`refuse_duplicate`]'s (not a failure to log).
pub(crate) fn is_duplicate(status: &tonic::Status) -> bool {
    status.metadata().contains_key(DUPLICATE_TRAILER)
}

/// Sends `Peers` to every registration of `core` that takes it whenever
/// `fleet` changes, until the core is gone. Started with the core's first
/// registration.
pub(crate) fn announce(core: &Arc<RouterCore>, fleet: &Fleet) {
    let weak: Weak<RouterCore> = Arc::downgrade(core);
    let mut changes = fleet.peers.subscribe();
    changes.mark_unchanged();
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let peers = changes.borrow_and_update().clone();
            let Some(core) = weak.upgrade() else { return };
            let frame = pb::Peers {
                peers: peers.to_vec(),
            };
            let mut told = 0usize;
            for instance in core.registry.snapshot().iter() {
                if instance.discovery && instance.send(RouterFrame::Peers(frame.clone())) {
                    told += 1;
                }
            }
            debug!(
                service = core.service.name(),
                replicas = peers.len(),
                registrations = told,
                "fleet changed; told its bridges"
            );
        }
    });
}
