//! Bridges and clients reach a router over TLS.

mod common;

use common::test_greeter::TestGreeter;
use common::within;
use myservice_example::pb::greeter_client::GreeterClient;
use myservice_example::pb::{GreeterBridge, GreeterRouter, HelloRequest};
use router_runtime::bridge::BridgeOptions;
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
        BridgeOptions::new(endpoint.clone())
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
        BridgeOptions::new(format!("https://{addr}"))
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
