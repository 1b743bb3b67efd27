//! `[cluster]`: the router replicas of a fleet, told to every bridge so it
//! holds a registration with each (see *A fleet behind one address* in
//! `docs/src/routing.md`).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::duration;

/// The shortest `cluster.resolve_every`.
const MIN_RESOLVE_EVERY: Duration = Duration::from_millis(100);

/// The replicas of this router's fleet, as bridges reach them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// The other replicas' registration addresses (`host:port`) as bridges
    /// dial them. This replica's own address may be in the list too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// A DNS name (`name:port`) resolving to every replica's registration
    /// address, looked up every `resolve_every`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers_dns: Option<String>,
    /// How often `peers_dns` is resolved again.
    #[serde(default = "default_resolve_every", with = "duration")]
    pub resolve_every: Duration,
    /// This replica's registration address as bridges reach it (`host:port`);
    /// default: the address of the registrations' listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            peers: Vec::new(),
            peers_dns: None,
            resolve_every: default_resolve_every(),
            advertise: None,
        }
    }
}

fn default_resolve_every() -> Duration {
    Duration::from_secs(10)
}

/// Splits `host:port` (`[v6]:port` too), or says what is wrong.
pub fn host_port(text: &str) -> Result<(String, u16), String> {
    let wrong = || format!("`{text}` is not `host:port` (for example `router-1.example:50052`)");
    let (host, port) = text.rsplit_once(':').ok_or_else(wrong)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains('/') {
        return Err(wrong());
    }
    let port: u16 = port.parse().map_err(|_| wrong())?;
    if port == 0 {
        return Err(format!("`{text}`: port 0 cannot be dialled"));
    }
    Ok((host.to_owned(), port))
}

impl Cluster {
    /// Whether the section names any peer: without, the router tells
    /// bridges of no fleet.
    pub fn is_set(&self) -> bool {
        !self.peers.is_empty() || self.peers_dns.is_some()
    }

    /// Checks the section: (key, message) of the first problem.
    /// `registrations` is the address instances register on (for the
    /// default `advertise`).
    pub(super) fn check(&self, registrations: SocketAddr) -> Result<(), (String, String)> {
        for (index, peer) in self.peers.iter().enumerate() {
            host_port(peer).map_err(|e| (format!("peers[{index}]"), e))?;
        }
        if let Some(name) = &self.peers_dns {
            host_port(name).map_err(|e| ("peers_dns".to_owned(), e))?;
        }
        if self.resolve_every < MIN_RESOLVE_EVERY {
            return Err((
                "resolve_every".to_owned(),
                format!("must be at least {MIN_RESOLVE_EVERY:?}"),
            ));
        }
        match &self.advertise {
            Some(advertise) => {
                host_port(advertise).map_err(|e| ("advertise".to_owned(), e))?;
            }
            None if self.is_set() && registrations.ip().is_unspecified() => {
                return Err((
                    "advertise".to_owned(),
                    format!(
                        "the registrations listen on {registrations}, which bridges cannot dial: \
                         set `advertise` to this replica's registration address as bridges \
                         reach it (e.g. `router-1.example:{}`)",
                        registrations.port()
                    ),
                ));
            }
            None => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::parse;

    #[test]
    fn no_section_is_no_fleet() {
        let config = parse("").expect("valid");
        assert!(!config.cluster.is_set());
        assert_eq!(config.cluster.resolve_every, Duration::from_secs(10));
    }

    #[test]
    fn peers_and_a_name_are_read() {
        let config = parse(
            "[registrations]\naddress = \"127.0.0.1:50052\"\n\
             [cluster]\npeers = [\"r2:50052\", \"[::1]:7\"]\npeers_dns = \"routers:50052\"\n\
             resolve_every = \"2s\"\n",
        )
        .expect("valid");
        assert_eq!(config.cluster.peers, ["r2:50052", "[::1]:7"]);
        assert_eq!(config.cluster.resolve_every, Duration::from_secs(2));
    }

    #[test]
    fn a_peer_without_a_port_is_named() {
        let error =
            parse("[cluster]\npeers = [\"r2\"]\nadvertise = \"r1:50052\"\n").expect_err("no port");
        let text = error.to_string();
        assert!(text.contains("cluster.peers[0]"), "{text}");
        assert!(text.contains("`r2` is not `host:port`"), "{text}");
    }

    #[test]
    fn a_fleet_on_an_unspecified_address_needs_advertise() {
        let error = parse("[cluster]\npeers = [\"r2:50052\"]\n").expect_err("0.0.0.0");
        let text = error.to_string();
        assert!(text.contains("cluster.advertise"), "{text}");
        assert!(text.contains("set `advertise`"), "{text}");
        assert!(parse("[cluster]\npeers = [\"r2:50052\"]\nadvertise = \"r1:50052\"\n").is_ok());
    }

    #[test]
    fn too_short_a_resolve_interval_is_refused() {
        let error =
            parse("[cluster]\npeers_dns = \"r:1\"\nresolve_every = \"1ms\"\nadvertise = \"a:1\"\n")
                .expect_err("1ms");
        assert!(
            error.to_string().contains("cluster.resolve_every"),
            "{error}"
        );
    }
}
