//! The daemon's side of a fleet (`[cluster]`): the list of replicas (this
//! one first, with its id, then its peers, static and resolved from DNS)
//! kept in the [`Fleet`] every service's router tells its bridges of, and
//! kept up to date on reloads and DNS changes.

use std::net::SocketAddr;
use std::sync::Arc;

use router_runtime::pb::RouterPeer;
use router_runtime::router::Fleet;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Cluster;

/// The fleet of a daemon and the `[cluster]` settings it follows; one per
/// process, carried from a configuration to the next on reload. Any two
/// compare equal (it is state, not a setting).
#[derive(Debug, Clone)]
pub struct ClusterState {
    fleet: Arc<Fleet>,
    settings: Arc<watch::Sender<Cluster>>,
}

impl Default for ClusterState {
    fn default() -> Self {
        ClusterState {
            fleet: Fleet::new(),
            settings: Arc::new(watch::Sender::new(Cluster::default())),
        }
    }
}

impl PartialEq for ClusterState {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl ClusterState {
    /// The fleet the routers tell their bridges of.
    pub fn fleet(&self) -> Arc<Fleet> {
        self.fleet.clone()
    }

    /// Follows new `[cluster]` settings (a reload).
    pub fn update(&self, cluster: &Cluster) {
        self.settings.send_if_modified(|current| {
            if current == cluster {
                return false;
            }
            *current = cluster.clone();
            true
        });
    }

    /// Keeps the fleet's list up to date from now on: this replica
    /// (`router_id`, advertised or listening on `registrations`) and its
    /// peers, DNS names resolved again every `resolve_every`.
    pub fn start(&self, router_id: String, registrations: SocketAddr) {
        let fleet = self.fleet.clone();
        let mut settings = self.settings.subscribe();
        tokio::spawn(async move {
            let mut resolved: Vec<String> = Vec::new();
            loop {
                let cluster = settings.borrow_and_update().clone();
                if let Some(name) = &cluster.peers_dns {
                    match tokio::net::lookup_host(name.as_str()).await {
                        Ok(addrs) => resolved = addrs.map(|a| a.to_string()).collect(),
                        // A DNS hiccup is no reason to tell bridges to leave.
                        Err(e) => {
                            warn!(name = %name, error = %e, "cluster.peers_dns did not resolve; keeping the last answer")
                        }
                    }
                } else {
                    resolved.clear();
                }
                let list = replicas(&cluster, &router_id, registrations, &resolved);
                let count = list.len();
                if fleet.set(list) {
                    info!(
                        replicas = count,
                        "cluster: the fleet changed; telling bridges"
                    );
                }
                let every = cluster.resolve_every;
                tokio::select! {
                    changed = settings.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(every), if cluster.peers_dns.is_some() => {}
                }
            }
        });
    }
}

/// The replicas of `cluster` as bridges should see them: none without
/// peers; else this one first (with its id), then each other address once.
fn replicas(
    cluster: &Cluster,
    router_id: &str,
    registrations: SocketAddr,
    resolved: &[String],
) -> Vec<RouterPeer> {
    if !cluster.is_set() {
        return Vec::new();
    }
    let own = cluster
        .advertise
        .clone()
        .unwrap_or_else(|| registrations.to_string());
    let mut list = vec![RouterPeer {
        router_id: router_id.to_owned(),
        address: own,
    }];
    for address in cluster.peers.iter().chain(resolved) {
        if !list.iter().any(|p| &p.address == address) {
            list.push(RouterPeer {
                router_id: String::new(),
                address: address.clone(),
            });
        }
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_peers_no_fleet() {
        let list = replicas(
            &Cluster::default(),
            "r1",
            "127.0.0.1:1".parse().expect("an address"),
            &[],
        );
        assert!(list.is_empty());
    }

    #[test]
    fn this_replica_comes_first_with_its_id_and_each_address_once() {
        let cluster = Cluster {
            peers: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            ..Cluster::default()
        };
        let list = replicas(
            &cluster,
            "r1",
            "127.0.0.1:1".parse().expect("an address"),
            &["127.0.0.1:3".into(), "127.0.0.1:2".into()],
        );
        let shown: Vec<(&str, &str)> = list
            .iter()
            .map(|p| (p.router_id.as_str(), p.address.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                ("r1", "127.0.0.1:1"),
                ("", "127.0.0.1:2"),
                ("", "127.0.0.1:3")
            ]
        );
    }

    #[test]
    fn advertise_names_this_replica() {
        let cluster = Cluster {
            peers: vec!["b:1".into()],
            advertise: Some("a:1".into()),
            ..Cluster::default()
        };
        let list = replicas(
            &cluster,
            "r1",
            "0.0.0.0:1".parse().expect("an address"),
            &[],
        );
        assert_eq!(list[0].address, "a:1");
    }
}
