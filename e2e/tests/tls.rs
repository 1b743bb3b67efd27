//! Bridges and clients reach a router over TLS.

use test_kit as common;

use common::test_greeter::TestGreeter;
use common::within;
use myservice::pb::greeter_client::GreeterClient;
use myservice::pb::{GreeterBridge, GreeterRouter, HelloRequest};
use router_runtime::bridge::BridgeConfig;
use router_runtime::router::RouterConfig;
use tokio::net::TcpListener;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

#[tokio::test]
async fn bridges_and_clients_use_tls_to_the_router() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("a self-signed certificate");
    let cert_pem = certified.cert.pem();
    let key_pem = certified.signing_key.serialize_pem();

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = GreeterRouter::new(RouterConfig::default());
    let server = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(&cert_pem, &key_pem)))
        .expect("server TLS");
    let serving = router.add_to(server);
    let task = tokio::spawn(async move {
        serving
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let endpoint = format!("https://{addr}");
    let bridge = GreeterBridge::new(TestGreeter::new("secure").0).connect(
        BridgeConfig::new(endpoint.clone())
            .instance_id("secure")
            .tls(tls.clone()),
    );
    within(10, "registration over TLS", bridge.registered()).await;

    let channel = Endpoint::from_shared(endpoint)
        .expect("endpoint")
        .tls_config(tls)
        .expect("client TLS")
        .connect()
        .await
        .expect("client connects over TLS");
    let mut client = GreeterClient::new(channel);
    let reply = within(
        5,
        "call over TLS",
        client.say_hello(HelloRequest {
            name: "peer".into(),
            payload: vec![],
        }),
    )
    .await
    .expect("call succeeds")
    .into_inner();
    assert_eq!(reply.instance_id, "secure");
    // The client's address reaches the handler through TLS too.
    assert!(
        reply.message.starts_with("Some(127.0.0.1:"),
        "{}",
        reply.message
    );

    // A bridge that does not trust the router's certificate never registers.
    let untrusting = GreeterBridge::new(TestGreeter::new("untrusting").0).connect(
        BridgeConfig::new(format!("https://{addr}"))
            .instance_id("untrusting")
            .tls(ClientTlsConfig::new().domain_name("localhost")),
    );
    let mut state = untrusting.registrations();
    within(10, "the TLS failure to be reported", async {
        while state.borrow_and_update().last_error.is_none() {
            if state.changed().await.is_err() {
                break;
            }
        }
    })
    .await;
    assert_eq!(router.registry().len(), 1);
    untrusting.abort().await;
    bridge.shutdown().await;
    task.abort();
}

/// A CA, a server certificate for `localhost` and a client certificate, both
/// signed by the CA: (CA PEM, server identity, client identity, client DER).
fn mutual_tls_material() -> (String, Identity, Identity, Vec<u8>) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let leaf = |name: &str| {
        let key = KeyPair::generate().expect("leaf key");
        let cert = CertificateParams::new(vec![name.to_owned()])
            .expect("leaf params")
            .signed_by(&key, &ca)
            .expect("leaf certificate");
        (cert, key)
    };
    let (server_cert, server_key) = leaf("localhost");
    let (client_cert, client_key) = leaf("client");
    (
        ca.pem(),
        Identity::from_pem(server_cert.pem(), server_key.serialize_pem()),
        Identity::from_pem(client_cert.pem(), client_key.serialize_pem()),
        client_cert.der().to_vec(),
    )
}

/// Serves `routes` over TLS that asks clients for a certificate signed by `ca`.
async fn serve_mutual_tls(
    ca_pem: &str,
    identity: Identity,
    build: impl FnOnce(Server) -> tonic::transport::server::Router,
) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = Server::builder()
        .tls_config(
            ServerTlsConfig::new()
                .identity(identity)
                .client_ca_root(Certificate::from_pem(ca_pem))
                .client_auth_optional(true),
        )
        .expect("server TLS");
    let routes = build(server);
    tokio::spawn(async move {
        routes
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    addr
}

/// Calls `certs` over mutual TLS; returns the handler's count and first certificate.
async fn certificates_seen(addr: std::net::SocketAddr, tls: ClientTlsConfig) -> (String, Vec<u8>) {
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("client TLS")
        .connect()
        .await
        .expect("client connects over TLS");
    let reply = within(
        5,
        "certs call",
        GreeterClient::new(channel).say_hello(HelloRequest {
            name: "certs".into(),
            payload: vec![],
        }),
    )
    .await
    .expect("call succeeds")
    .into_inner();
    (reply.message, reply.payload.to_vec())
}

#[tokio::test]
async fn the_handler_sees_the_client_certificate_the_router_received() {
    let (ca_pem, server_identity, client_identity, client_der) = mutual_tls_material();
    let router = GreeterRouter::new(RouterConfig::default());
    let router_addr = {
        let router = router.clone();
        serve_mutual_tls(&ca_pem, server_identity.clone(), move |server| {
            router.add_to(server)
        })
        .await
    };
    let direct_addr = serve_mutual_tls(&ca_pem, server_identity, |mut server| {
        server.add_service(myservice::pb::greeter_server::GreeterServer::new(
            TestGreeter::new("direct").0,
        ))
    })
    .await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca_pem))
        .domain_name("localhost");
    // The bridge presents no certificate (optional client auth).
    let bridge = GreeterBridge::new(TestGreeter::new("secure").0).connect(
        BridgeConfig::new(format!("https://{router_addr}"))
            .instance_id("secure")
            .tls(tls.clone()),
    );
    within(10, "registration over TLS", bridge.registered()).await;

    let with_identity = tls.clone().identity(client_identity);
    let routed = certificates_seen(router_addr, with_identity.clone()).await;
    let direct = certificates_seen(direct_addr, with_identity).await;
    assert_eq!(routed.0, "1", "one client certificate reached the handler");
    assert!(routed.1 == client_der, "it is the client's certificate");
    assert_eq!(routed, direct, "routed and direct handlers see the same");

    let anonymous = certificates_seen(router_addr, tls).await;
    assert_eq!(anonymous, ("0".to_owned(), Vec::new()));
    bridge.shutdown().await;
}
