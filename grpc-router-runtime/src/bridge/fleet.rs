//! Discovery of a router fleet through the register stream: a router with a
//! fleet lists its replicas in `Welcome` and `Peers`; the bridge keeps one
//! registration per replica, telling replicas apart by the `router_id` of
//! their `Welcome`, dials every listed address it holds no registration
//! with, names the replicas it holds in every `Hello` (a replica it holds
//! refuses a second registration, which a balancer could send it) and drops
//! registrations to addresses no longer listed. A router without a fleet (an older one, or one without
//! `[cluster]`) lists none and the bridge keeps to the endpoints it was
//! given.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::BridgedService;
use super::session::{self, Shared};
use crate::pb;

/// The most router replicas a bridge registers with through discovery; a
/// longer list is cut (sorted by address) and the cut logged.
pub(crate) const MAX_REPLICAS: usize = 64;

/// Which registration a session is: one of the configured endpoints, or a
/// replica address a router listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// A configured endpoint (perhaps a balancer in front of the fleet).
    Seed,
    /// A replica's registration address (`host:port`) from a router's list.
    Listed(String),
}

/// What the bridge knows of the fleet, shared by all its registrations.
#[derive(Debug)]
pub(crate) struct Discovery {
    state: Mutex<State>,
    /// Bumped at every change of `state`, to wake waiting registrations and
    /// the task that follows the list.
    changed: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    /// The router ids this bridge holds a registration with, each with the
    /// token of the registration holding it.
    held: HashMap<String, u64>,
    /// The token of the next claim.
    next_claim: u64,
    /// The latest non-empty list of replicas a router sent, sorted and
    /// deduplicated by address.
    peers: Vec<pb::RouterPeer>,
    /// The router id a listed address answered with.
    learned: HashMap<String, String>,
}

impl State {
    /// The router id at `address`, as listed or as learned by dialling it.
    fn id_of<'a>(&'a self, peer: &'a pb::RouterPeer) -> Option<&'a str> {
        if !peer.router_id.is_empty() {
            return Some(&peer.router_id);
        }
        self.learned.get(&peer.address).map(String::as_str)
    }

    /// Whether a registration in `role` is worth dialling now.
    fn wanted(&self, role: &Role) -> bool {
        if self.peers.is_empty() {
            // No fleet known: every endpoint is dialled, as without discovery.
            return true;
        }
        match role {
            // Through a balancer: while some listed replica is not held.
            Role::Seed => self
                .peers
                .iter()
                .any(|p| self.id_of(p).is_none_or(|id| !self.held.contains_key(id))),
            Role::Listed(address) => {
                let listed = self.peers.iter().find(|p| &p.address == address);
                listed
                    .and_then(|p| self.id_of(p))
                    .is_none_or(|id| !self.held.contains_key(id))
            }
        }
    }
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            state: Mutex::new(State::default()),
            changed: watch::Sender::new(0),
        }
    }
}

/// A registration's hold on its replica, released when dropped.
#[derive(Debug)]
pub(crate) struct Claim {
    discovery: Arc<Discovery>,
    router_id: String,
    token: u64,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut state = self.discovery.lock();
        // Not when a newer registration took the replica over.
        if state.held.get(&self.router_id) == Some(&self.token) {
            state.held.remove(&self.router_id);
        }
        drop(state);
        self.discovery.bump();
    }
}

impl Discovery {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Takes the replica a `Welcome` came from, and the router's list. No
    /// claim from a router without a fleet: its id says nothing (routers of
    /// old fleets may share one). A registration that reached a replica
    /// another one holds (two dials in flight at once, neither yet named in
    /// `Hello.registered_with`) replaced that one on the router, which closes
    /// it: the claim passes to the newer.
    pub(crate) fn claim(self: &Arc<Self>, welcome: &pb::Welcome, role: &Role) -> Option<Claim> {
        if welcome.peers.is_empty() || welcome.router_id.is_empty() {
            return None;
        }
        let mut state = self.lock();
        if let Role::Listed(address) = role {
            state
                .learned
                .insert(address.clone(), welcome.router_id.clone());
        }
        state.next_claim += 1;
        let token = state.next_claim;
        if state
            .held
            .insert(welcome.router_id.clone(), token)
            .is_some()
        {
            debug!(router = %welcome.router_id, "a second registration replaced this bridge's first with the router");
        }
        drop(state);
        self.offer(&welcome.peers);
        self.bump();
        Some(Claim {
            discovery: self.clone(),
            router_id: welcome.router_id.clone(),
            token,
        })
    }

    /// The router ids this bridge holds a registration with, for its
    /// `Hello.registered_with`.
    pub(crate) fn held(&self) -> Vec<String> {
        let mut held: Vec<String> = self.lock().held.keys().cloned().collect();
        held.sort();
        held
    }

    /// A router's list of replicas (from `Welcome` or `Peers`); an empty
    /// list is ignored (that router knows no fleet).
    pub(crate) fn offer(&self, peers: &[pb::RouterPeer]) {
        if peers.is_empty() {
            return;
        }
        let mut sorted: Vec<pb::RouterPeer> = Vec::with_capacity(peers.len());
        for peer in peers {
            match sorted.iter_mut().find(|p| p.address == peer.address) {
                Some(known) if known.router_id.is_empty() => {
                    known.router_id.clone_from(&peer.router_id);
                }
                Some(_) => {}
                None => sorted.push(peer.clone()),
            }
        }
        sorted.sort_by(|a, b| a.address.cmp(&b.address));
        let mut state = self.lock();
        if state.peers == sorted {
            return;
        }
        let listed: HashSet<&String> = sorted.iter().map(|p| &p.address).collect();
        state.learned.retain(|address, _| listed.contains(address));
        state.peers = sorted;
        drop(state);
        self.bump();
    }

    /// Waits until a registration in `role` is worth dialling (see
    /// [`State::wanted`]); false when `stop` fires first.
    pub(crate) async fn wait_until_wanted(&self, role: &Role, stop: &CancellationToken) -> bool {
        let mut changes = self.changed.subscribe();
        loop {
            if self.lock().wanted(role) {
                return true;
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return false },
                _ = stop.cancelled() => return false,
            }
        }
    }

    /// The listed addresses to dial, at most [`MAX_REPLICAS`].
    fn addresses(&self) -> (Vec<String>, usize) {
        let state = self.lock();
        let all = state.peers.len();
        let addresses = state
            .peers
            .iter()
            .take(MAX_REPLICAS)
            .map(|p| p.address.clone())
            .collect();
        (addresses, all)
    }
}

/// Follows the fleet's list until shutdown: a registration task per listed
/// address (but the configured endpoints'), drained and dropped when its
/// address leaves the list.
pub(crate) async fn follow<T: BridgedService>(shared: Arc<Shared>, service: T) {
    let scheme = if shared.options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut tasks: HashMap<String, (CancellationToken, JoinHandle<()>)> = HashMap::new();
    let mut changes = shared.discovery.changed.subscribe();
    let mut reported = 0;
    loop {
        let (addresses, all) = shared.discovery.addresses();
        if all > MAX_REPLICAS && all != reported {
            warn!(
                listed = all,
                limit = MAX_REPLICAS,
                "the router lists more replicas than a bridge registers with; \
                 keeping the first by address"
            );
        }
        reported = all;
        let wanted: HashMap<String, String> = addresses
            .into_iter()
            .map(|address| (format!("{scheme}://{address}"), address))
            .filter(|(endpoint, _)| !shared.options.endpoints.contains(endpoint))
            .collect();
        tasks.retain(|endpoint, (stop, _)| {
            let keep = wanted.contains_key(endpoint);
            if !keep {
                info!(%endpoint, "router replica no longer listed; draining its registration");
                stop.cancel();
            }
            keep
        });
        for (endpoint, address) in wanted {
            tasks.entry(endpoint.clone()).or_insert_with(|| {
                info!(%endpoint, "router replica listed; registering with it");
                let stop = shared.shutdown.child_token();
                let task = tokio::spawn(session::run_endpoint(
                    shared.clone(),
                    service.clone(),
                    endpoint,
                    stop.clone(),
                    Role::Listed(address),
                ));
                (stop, task)
            });
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            _ = shared.shutdown.cancelled() => break,
        }
    }
    for (_, (_, task)) in tasks {
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, address: &str) -> pb::RouterPeer {
        pb::RouterPeer {
            router_id: id.into(),
            address: address.into(),
        }
    }

    fn welcome(id: &str, peers: Vec<pb::RouterPeer>) -> pb::Welcome {
        pb::Welcome {
            router_id: id.into(),
            peers,
            ..Default::default()
        }
    }

    #[test]
    fn without_a_fleet_every_endpoint_is_dialled_and_nothing_is_claimed() {
        let discovery = Arc::new(Discovery::default());
        assert!(discovery.lock().wanted(&Role::Seed));
        assert!(
            discovery
                .claim(&welcome("r", Vec::new()), &Role::Seed)
                .is_none()
        );
        // Two old routers with one id are both kept.
        assert!(
            discovery
                .claim(&welcome("r", Vec::new()), &Role::Seed)
                .is_none()
        );
        assert!(discovery.held().is_empty());
    }

    #[test]
    fn a_held_replica_is_not_dialled_again_until_released() {
        let discovery = Arc::new(Discovery::default());
        let list = vec![peer("a", "h:1"), peer("", "h:2")];
        let held = discovery
            .claim(&welcome("a", list.clone()), &Role::Seed)
            .expect("claimed");
        assert_eq!(discovery.held(), ["a"]);
        assert!(!discovery.lock().wanted(&Role::Listed("h:1".into())));
        // Nothing is known of h:2 yet: it and the seed are dialled.
        assert!(discovery.lock().wanted(&Role::Listed("h:2".into())));
        assert!(discovery.lock().wanted(&Role::Seed));
        // h:2 answers as `a` too (a second address of one replica): now
        // neither is dialled while `a` is held, nor the seed.
        let second = discovery.claim(&welcome("a", list), &Role::Listed("h:2".into()));
        drop(held);
        let state = discovery.lock();
        assert!(!state.wanted(&Role::Listed("h:2".into())));
        assert!(!state.wanted(&Role::Seed));
        drop(state);
        drop(second);
        assert!(discovery.held().is_empty());
        assert!(discovery.lock().wanted(&Role::Listed("h:1".into())));
    }

    #[test]
    fn a_newer_registration_with_a_replica_keeps_it_when_the_older_ends() {
        let discovery = Arc::new(Discovery::default());
        let list = vec![peer("a", "h:1")];
        let older = discovery.claim(&welcome("a", list.clone()), &Role::Seed);
        let newer = discovery.claim(&welcome("a", list), &Role::Listed("h:1".into()));
        drop(older);
        assert_eq!(discovery.held(), ["a"]);
        assert!(!discovery.lock().wanted(&Role::Seed));
        drop(newer);
        assert!(discovery.lock().wanted(&Role::Seed));
    }

    #[test]
    fn the_seed_is_wanted_while_a_listed_replica_is_not_held() {
        let discovery = Arc::new(Discovery::default());
        let list = vec![peer("a", "h:1"), peer("b", "h:2")];
        let _a = discovery.claim(&welcome("a", list), &Role::Seed);
        assert!(discovery.lock().wanted(&Role::Seed));
        assert!(discovery.lock().wanted(&Role::Listed("h:2".into())));
        let _b = discovery.claim(&welcome("b", Vec::new()), &Role::Listed("h:2".into()));
        // An old router's Welcome claims nothing: `b` is still missing.
        assert!(discovery.lock().wanted(&Role::Seed));
    }

    #[test]
    fn a_new_list_replaces_the_old_and_forgets_unlisted_addresses() {
        let discovery = Discovery::default();
        discovery.offer(&[peer("", "h:2"), peer("a", "h:1"), peer("", "h:1")]);
        assert_eq!(
            discovery.addresses(),
            (vec!["h:1".to_owned(), "h:2".to_owned()], 2)
        );
        discovery.lock().learned.insert("h:2".into(), "b".into());
        discovery.offer(&[peer("a", "h:1"), peer("", "h:3")]);
        assert!(discovery.lock().learned.is_empty());
        discovery.offer(&[]);
        assert_eq!(discovery.addresses().1, 2, "an empty list is ignored");
    }

    #[test]
    fn at_most_max_replicas_addresses_are_dialled() {
        let discovery = Discovery::default();
        let list: Vec<_> = (0..100).map(|i| peer("", &format!("h:{i:03}"))).collect();
        discovery.offer(&list);
        let (addresses, all) = discovery.addresses();
        assert_eq!((addresses.len(), all), (MAX_REPLICAS, 100));
    }
}
