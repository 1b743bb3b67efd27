//! A measured target as the clients see it: a name, tonic client
//! connections, and the request headers every call to it carries.

use std::net::SocketAddr;
use std::time::Duration;

use myservice::pb::HelloRequest;
use myservice::pb::greeter_client::GreeterClient;
use tonic::transport::{Channel, Endpoint};

use crate::BoxError;
use crate::load::Header;

/// How long to wait for a connection or a first call.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A named address with its client connections.
#[derive(Clone)]
pub struct Target {
    /// The column it is reported under.
    pub name: String,
    /// One client per connection; workers share them round robin.
    pub clients: Vec<GreeterClient<Channel>>,
    /// Added to every call (for example a bearer token, or a label
    /// selector).
    pub headers: Vec<Header>,
}

impl Target {
    /// Opens `connections` separate HTTP/2 connections to `addr`.
    pub async fn connect(
        name: impl Into<String>,
        addr: SocketAddr,
        connections: usize,
    ) -> Result<Target, BoxError> {
        let name = name.into();
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections {
            let channel = tokio::time::timeout(
                SETUP_TIMEOUT,
                Endpoint::from_shared(format!("http://{addr}"))?
                    .tcp_nodelay(true)
                    .connect(),
            )
            .await
            .map_err(|_| format!("timed out connecting to {name} at {addr}"))?
            .map_err(|e| format!("cannot connect to {name} at {addr}: {e}"))?;
            clients.push(GreeterClient::new(channel));
        }
        Ok(Target {
            name,
            clients,
            headers: Vec::new(),
        })
    }

    /// The same target with `headers` on every call.
    pub fn with_headers(mut self, headers: Vec<Header>) -> Target {
        self.headers = headers;
        self
    }

    /// The client worker `worker` uses.
    pub fn client(&self, worker: usize) -> GreeterClient<Channel> {
        self.clients[worker % self.clients.len()].clone()
    }

    /// `message` as a request carrying the target's headers.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        crate::load::request(message, &self.headers)
    }

    /// One SayHello with a `payload_size`-byte payload, so a broken target
    /// fails before the measurements, with its name.
    pub async fn check(&self, payload_size: usize) -> Result<(), BoxError> {
        let request = self.request(HelloRequest {
            name: "check".to_owned(),
            payload: vec![0x5a; payload_size],
        });
        let reply = tokio::time::timeout(SETUP_TIMEOUT, self.client(0).say_hello(request))
            .await
            .map_err(|_| format!("{}: the first call timed out", self.name))?
            .map_err(|status| format!("{}: the first call failed: {status}", self.name))?;
        if reply.get_ref().payload.len() != payload_size {
            return Err(format!("{}: the reply does not echo the payload", self.name).into());
        }
        Ok(())
    }
}
