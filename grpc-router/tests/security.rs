//! The daemon's TLS listeners (with client certificates on the registration
//! listener) and registration tokens.

mod common;

use common::{Daemon, within};
use myservice::pb::HelloRequest;
use myservice::pb::greeter_client::GreeterClient;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use router_runtime::bridge::BridgeConfig;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const GREETER: &str = "myservice.v1.Greeter";

/// A CA, and certificates it signed for the daemon (localhost) and a bridge.
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("signed");
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca_cert.pem(),
        server: leaf(vec!["localhost".into()]),
        client: leaf(vec!["bridge.local".into()]),
    }
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

#[tokio::test]
async fn tls_listeners_with_client_certificates_for_registrations() {
    let pki = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = write(dir.path(), "ca.pem", &pki.ca);
    let cert = write(dir.path(), "server.pem", &pki.server.0);
    let key = write(dir.path(), "server.key", &pki.server.1);
    let daemon = Daemon::start(&format!(
        "[clients]\naddress = \"127.0.0.1:0\"\n\
         [clients.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n\
         [registrations]\naddress = \"127.0.0.1:0\"\n\
         [registrations.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nclient_ca = \"{ca}\"\n"
    ));
    let trust = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    let registrations = format!("https://{}", daemon.registrations);

    // Without a client certificate the registration listener refuses.
    let anonymous = myservice::demo::start_instance(
        BridgeConfig::new(registrations.clone())
            .instance_id("anonymous")
            .tls(trust.clone()),
    );
    let mut state = anonymous.registrations();
    let refused = within(
        10,
        "the refusal",
        state.wait_for(|s| s.last_error.is_some()),
    )
    .await
    .expect("state")
    .clone();
    assert_eq!(refused.registered, 0, "{refused:?}");

    // With one the CA signed, it registers; clients call over TLS.
    let bridge = myservice::demo::start_instance(
        BridgeConfig::new(registrations)
            .instance_id("certified")
            .tls(
                trust
                    .clone()
                    .identity(Identity::from_pem(&pki.client.0, &pki.client.1)),
            ),
    );
    within(10, "registration over mTLS", bridge.registered()).await;
    let channel = Endpoint::from_shared(format!("https://{}", daemon.clients))
        .expect("url")
        .tls_config(trust)
        .expect("tls")
        .connect()
        .await
        .expect("connects over TLS");
    let reply = within(
        5,
        "call over TLS",
        GreeterClient::new(channel).say_hello(HelloRequest {
            name: "tls".into(),
            payload: vec![],
        }),
    )
    .await
    .expect("routed")
    .into_inner();
    assert_eq!(reply.instance_id, "certified");
}

#[tokio::test]
async fn registration_tokens_admit_only_bridges_with_a_listed_token() {
    let hash = grpc_router::config::TokenHash::of("s3cret").hex();
    let daemon = Daemon::start(&common::config_with("").replace(
        "[registrations]\n",
        &format!("[registrations]\ntokens_sha256 = [\"{hash}\"]\n"),
    ));
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("authorization", "Bearer guess".parse().expect("ascii"));
    let mut wrong = BridgeConfig::new(daemon.registrations_url()).instance_id("intruder");
    wrong.register_metadata = metadata;
    let intruder = myservice::demo::start_instance(wrong);
    let mut state = intruder.registrations();
    let refused = within(
        10,
        "the refusal",
        state.wait_for(|s| s.last_error.is_some()),
    )
    .await
    .expect("state")
    .clone();
    let error = refused.last_error.expect("an error").to_string();
    assert!(error.contains("not accepted"), "{error}");

    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("authorization", "Bearer s3cret".parse().expect("ascii"));
    let mut right = BridgeConfig::new(daemon.registrations_url()).instance_id("member");
    right.register_metadata = metadata;
    let member = myservice::demo::start_instance(right);
    within(10, "registration with the token", member.registered()).await;
    let status = daemon.service_status(GREETER).await.expect("known");
    let ids: Vec<&str> = status.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["member"]);
}

#[tokio::test]
async fn an_id_takeover_with_another_token_is_refused_while_the_owner_keeps_serving() {
    let hashes = ["team-a", "team-b"].map(|t| grpc_router::config::TokenHash::of(t).hex());
    let daemon = Daemon::start(&common::config_with("").replace(
        "[registrations]\n",
        &format!(
            "[registrations]\ntokens_sha256 = [\"{}\", \"{}\"]\n",
            hashes[0], hashes[1]
        ),
    ));
    let with_token = |token: &str| {
        let mut options = BridgeConfig::new(daemon.registrations_url()).instance_id("payments-1");
        options.register_metadata.insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
        options
    };
    let owner = myservice::demo::start_instance(with_token("team-a"));
    within(10, "the owner's registration", owner.registered()).await;

    // Another listed token may register, but not under the owner's id.
    let intruder = myservice::demo::start_instance(with_token("team-b"));
    let mut state = intruder.registrations();
    let refused = within(
        10,
        "the takeover's refusal",
        state.wait_for(|s| s.last_error.is_some()),
    )
    .await
    .expect("state")
    .clone();
    let error = refused.last_error.expect("an error").to_string();
    assert!(
        error.contains("PermissionDenied") && error.contains("another credential"),
        "{error}"
    );
    let status = daemon.service_status(GREETER).await.expect("known");
    assert_eq!(status.instances.len(), 1);
    let mut client = GreeterClient::new(daemon.channel().await);
    let reply = within(
        5,
        "a call",
        client.say_hello(HelloRequest {
            name: "x".into(),
            payload: vec![],
        }),
    )
    .await
    .expect("the owner serves");
    assert!(!reply.into_inner().message.is_empty());
}
