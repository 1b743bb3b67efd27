//! End to end: certificate identities. Instances register only with a
//! client certificate whose SAN the service allows (`instance_sans`), the id
//! is bound to that SAN, and clients' `allow` rules match their certificate
//! SANs (`sans`), whose first URI the instance receives in
//! `x-router-identity`.

mod common;

use common::{Daemon, within};
use myservice::pb::HelloRequest;
use myservice::pb::greeter_client::GreeterClient;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use router_runtime::bridge::{BridgeConfig, BridgeHandle, BridgeState, RegistrationError};
use router_runtime::pb::router_admin_client::RouterAdminClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request};

const GREETER: &str = "myservice.v1.Greeter";
const GREETER_SAN: &str = "spiffe://corp/ns/prod/sa/greeter";
const CANARY_SAN: &str = "spiffe://corp/ns/prod/sa/greeter-canary";
const DEV_SAN: &str = "spiffe://corp/ns/dev/sa/greeter";
const FRONTEND_SAN: &str = "spiffe://corp/ns/web/sa/frontend";
const BATCH_SAN: &str = "spiffe://corp/ns/batch/sa/nightly";

/// A CA, the daemon's certificate (localhost) and a client certificate per
/// SAN, all signed by the CA.
struct Pki {
    ca: String,
    issuer: Issuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("CA").pem();
        Pki {
            ca,
            issuer: Issuer::new(ca_params, ca_key),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A certificate and key (PEM) for `sans`: URIs, or `dns:` names.
    fn leaf(&self, sans: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.strip_prefix("dns:") {
                Some(name) => SanType::DnsName(name.try_into().expect("ia5")),
                None => SanType::URI((*s).try_into().expect("ia5")),
            })
            .collect();
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }

    /// A client TLS config trusting the CA, presenting a certificate for
    /// `san` (none: no client certificate).
    fn client(&self, san: Option<&str>) -> ClientTlsConfig {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .domain_name("localhost");
        match san {
            Some(san) => {
                let (cert, key) = self.leaf(&[san]);
                tls.identity(Identity::from_pem(cert, key))
            }
            None => tls,
        }
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    }

    /// A daemon whose two listeners need client certificates from the CA,
    /// with `extra` appended to the configuration.
    fn daemon(&self, extra: &str) -> Daemon {
        let ca = self.write("ca.pem", &self.ca);
        let (cert, key) = self.leaf(&["dns:localhost"]);
        let cert = self.write("server.pem", &cert);
        let key = self.write("server.key", &key);
        Daemon::start(&format!(
            "router_id = \"test-router\"\n\
             [clients]\naddress = \"127.0.0.1:0\"\n\
             [clients.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nclient_ca = \"{ca}\"\n\
             [registrations]\naddress = \"127.0.0.1:0\"\n\
             [registrations.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nclient_ca = \"{ca}\"\n\
             [admin]\naddress = \"127.0.0.1:0\"\n\
             [services.\"{GREETER}\"]\n\
             instance_sans = [\"spiffe://corp/ns/prod/*\"]\n\
             {extra}\n"
        ))
    }
}

/// An instance `id` registering with a certificate for `san`.
fn instance(pki: &Pki, daemon: &Daemon, id: &str, san: Option<&str>) -> BridgeHandle {
    myservice::demo::start_instance(
        BridgeConfig::new(format!("https://{}", daemon.registrations))
            .instance_id(id)
            .tls(pki.client(san)),
    )
}

/// The first registration error `handle` reports.
async fn refusal(handle: &BridgeHandle) -> BridgeState {
    let mut state = handle.registrations();
    within(
        10,
        "the refusal",
        state.wait_for(|s| s.last_error.is_some()),
    )
    .await
    .expect("state")
    .clone()
}

/// A channel to the clients' listener with a certificate for `san`.
async fn channel(pki: &Pki, daemon: &Daemon, san: &str) -> Channel {
    let endpoint = Endpoint::from_shared(format!("https://{}", daemon.clients))
        .expect("url")
        .tls_config(pki.client(Some(san)))
        .expect("tls");
    within(5, "connect over mTLS", endpoint.connect())
        .await
        .expect("connects")
}

/// The ids of the Greeter's registered instances.
async fn instance_ids(_pki: &Pki, daemon: &Daemon) -> Vec<String> {
    let mut admin = RouterAdminClient::new(daemon.admin_channel().await);
    let services = within(
        5,
        "admin",
        admin.list_services(router_runtime::pb::ListServicesRequest::default()),
    )
    .await
    .expect("admin answers")
    .into_inner()
    .services;
    services
        .into_iter()
        .filter(|s| s.name == GREETER)
        .flat_map(|s| s.instances.into_iter().map(|i| i.id))
        .collect()
}

fn hello() -> Request<HelloRequest> {
    let mut request = Request::new(HelloRequest {
        name: "x".into(),
        payload: vec![],
    });
    request
        .metadata_mut()
        .insert("x-echo", "1".parse().expect("ascii"));
    // A forged identity, which the router must drop.
    request
        .metadata_mut()
        .insert("x-router-identity", "root".parse().expect("ascii"));
    request
}

#[tokio::test]
async fn an_allowed_san_registers_and_others_are_refused_naming_the_sans_seen() {
    let pki = Pki::new();
    let daemon = pki.daemon("");

    let intruder = instance(&pki, &daemon, "dev-1", Some(DEV_SAN));
    let error = refusal(&intruder)
        .await
        .last_error
        .expect("an error")
        .to_string();
    assert!(
        error.contains("PermissionDenied")
            && error.contains(&format!("(SANs [{DEV_SAN}]) may not register `{GREETER}`")),
        "{error}"
    );

    // Without a client certificate the TLS handshake fails on the daemon:
    // rustls requires one when `client_ca` is set, so no Register call
    // reaches the router to refuse. Under TLS 1.3 the client has already
    // sent its request when the daemon's alert arrives, so the bridge
    // reports its own transport status (seen: CANCELLED "operation was
    // canceled"), not a refusal from the router.
    let anonymous = instance(&pki, &daemon, "anonymous", None);
    let state = refusal(&anonymous).await;
    assert_eq!(state.registered, 0, "{state:?}");
    let error = state.last_error.expect("an error");
    assert!(
        matches!(
            &error,
            RegistrationError::Connect { .. }
                | RegistrationError::Ended {
                    code: Code::Cancelled | Code::Unavailable | Code::Unknown,
                    ..
                }
        ),
        "expected a transport error, got: {error}"
    );

    let member = instance(&pki, &daemon, "greeter-1", Some(GREETER_SAN));
    within(10, "registration with an allowed SAN", member.registered()).await;
    assert_eq!(instance_ids(&pki, &daemon).await, ["greeter-1"]);

    // Counted like any refusal: under `<unknown>` until the service's first
    // registration is admitted (refusals cannot create metric labels).
    let (_, metrics) = daemon.http_get("/metrics").await;
    // One: the certificate-less bridge never reached the router.
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("grpc_router_registration_events_total")
                && l.contains("event=\"refused\",reason=\"PermissionDenied\"")
                && l.ends_with(" 1")),
        "no refusal counted in\n{metrics}"
    );
}

#[tokio::test]
async fn an_id_takeover_by_another_allowed_san_is_refused_while_the_owner_serves() {
    let pki = Pki::new();
    let daemon = pki.daemon("");
    let owner = instance(&pki, &daemon, "greeter-1", Some(GREETER_SAN));
    within(10, "the owner's registration", owner.registered()).await;

    let other = instance(&pki, &daemon, "greeter-1", Some(CANARY_SAN));
    let error = refusal(&other)
        .await
        .last_error
        .expect("an error")
        .to_string();
    assert!(
        error.contains("PermissionDenied") && error.contains("another credential"),
        "{error}"
    );
    assert_eq!(instance_ids(&pki, &daemon).await, ["greeter-1"]);
    let reply = within(
        5,
        "a call",
        GreeterClient::new(channel(&pki, &daemon, FRONTEND_SAN).await).say_hello(hello()),
    )
    .await
    .expect("the owner serves")
    .into_inner();
    assert_eq!(reply.instance_id, "greeter-1");
}

#[tokio::test]
async fn client_rules_by_san_allow_one_certificate_and_the_instance_sees_its_san() {
    let pki = Pki::new();
    let daemon = pki.daemon(&format!(
        "[[services.\"{GREETER}\".allow]]\n\
         methods = [\"SayHello\"]\n\
         sans = [\"{FRONTEND_SAN}\"]\n"
    ));
    let member = instance(&pki, &daemon, "greeter-1", Some(GREETER_SAN));
    within(10, "registration", member.registered()).await;

    let response = within(
        5,
        "an allowed call",
        GreeterClient::new(channel(&pki, &daemon, FRONTEND_SAN).await).say_hello(hello()),
    )
    .await
    .expect("allowed");
    let identities: Vec<_> = response
        .metadata()
        .get_all("x-router-identity")
        .iter()
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(identities, [FRONTEND_SAN], "the handler saw {identities:?}");

    let status = within(
        5,
        "a denied call",
        GreeterClient::new(channel(&pki, &daemon, BATCH_SAN).await).say_hello(hello()),
    )
    .await
    .expect_err("denied");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains(&format!(
            "`{BATCH_SAN}` (certificate SANs [{BATCH_SAN}]) may not call `{GREETER}/SayHello`"
        )),
        "{status:?}"
    );

    // The allowed certificate, but a method no rule lists.
    let status = within(
        5,
        "a call of another method",
        GreeterClient::new(channel(&pki, &daemon, FRONTEND_SAN).await).who_am_i(()),
    )
    .await
    .expect_err("no rule for WhoAmI");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}
