//! Where a compiled router's `RouterServer` serves the admin service
//! (`router.v1.RouterAdmin`: every instance, its labels and recent errors):
//! not on the clients' listener unless asked, behind `admin_auth` when given,
//! and on a listener of the embedder's own through `admin_service`.

use test_kit as common;

use std::sync::Arc;

use common::{connect_channel, within};
use myservice::pb::GreeterRouter;
use router_runtime::bridge::BridgeConfig;
use router_runtime::pb::ListServicesRequest;
use router_runtime::pb::router_admin_client::RouterAdminClient;
use router_runtime::reflection::DescriptorCatalog;
use router_runtime::router::RouterConfig;
use router_runtime::server::{Listener, RouterServer};
use tokio::sync::oneshot;
use tonic::Code;

const ADMIN: &str = "router.v1.RouterAdmin";

/// A `RouterServer` serving on a loopback port until dropped.
struct Served {
    addr: std::net::SocketAddr,
    catalog: DescriptorCatalog,
    _stop: oneshot::Sender<()>,
}

async fn serve(server: RouterServer) -> Served {
    let listener = Listener::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let catalog = server.catalog().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, None, async {
        let _ = stopped.await;
    }));
    Served {
        addr,
        catalog,
        _stop: stop,
    }
}

/// A Greeter router with one instance, `fleet-a`, registered.
async fn router_with_an_instance() -> (GreeterRouter, router_runtime::bridge::BridgeHandle, Served)
{
    let router = GreeterRouter::new(RouterConfig::default());
    let served = serve(RouterServer::new("r").route(&router)).await;
    let instance = myservice::demo::start_instance(
        BridgeConfig::new(format!("http://{}", served.addr)).instance_id("fleet-a"),
    );
    within(10, "registration", instance.registered()).await;
    (router, instance, served)
}

async fn list(
    addr: std::net::SocketAddr,
    token: Option<&str>,
) -> Result<router_runtime::pb::ListServicesResponse, tonic::Status> {
    let mut request = tonic::Request::new(ListServicesRequest::default());
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    let mut admin = RouterAdminClient::new(connect_channel(addr).await);
    within(5, "an admin call", admin.list_services(request))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn the_admin_service_is_not_served_to_clients_unless_asked() {
    let (_router, _instance, served) = router_with_an_instance().await;
    let refused = list(served.addr, None).await.expect_err("not served");
    assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");
    assert!(
        !served.catalog.services().iter().any(|s| s == ADMIN),
        "reflection lists {:?}",
        served.catalog.services()
    );
    // The routed service and health are served as before.
    let mut client = common::connect(served.addr).await;
    within(5, "a call", client.say_hello(common::hello("x")))
        .await
        .expect("routed");
}

#[tokio::test]
async fn serve_admin_serves_it_to_clients_and_admin_auth_guards_it() {
    let router = GreeterRouter::new(RouterConfig::default());
    let auth: router_runtime::admin::AuthorizeAdmin =
        Arc::new(
            |metadata| match metadata.get("authorization").and_then(|v| v.to_str().ok()) {
                Some("Bearer ops") => Ok(()),
                _ => Err(tonic::Status::unauthenticated("operators only")),
            },
        );
    let served = serve(
        RouterServer::new("r")
            .route(&router)
            .serve_admin(true)
            .admin_auth(auth),
    )
    .await;
    let _instance = myservice::demo::start_instance(
        BridgeConfig::new(format!("http://{}", served.addr)).instance_id("fleet-a"),
    );
    let refused = list(served.addr, None).await.expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("operators only"), "{refused:?}");
    let listed = list(served.addr, Some("ops"))
        .await
        .expect("with the token");
    assert_eq!(listed.router_id, "r");
    assert_eq!(listed.services.len(), 1);
    assert!(served.catalog.services().iter().any(|s| s == ADMIN));
}

#[tokio::test]
async fn admin_service_hands_it_out_for_a_listener_of_ones_own() {
    let router = GreeterRouter::new(RouterConfig::default());
    let server = RouterServer::new("r").route(&router);
    let admin = server.admin_service();
    let served = serve(server).await;
    let _instance = myservice::demo::start_instance(
        BridgeConfig::new(format!("http://{}", served.addr)).instance_id("fleet-a"),
    );
    within(10, "registration", router.registry().wait_until(|n| n == 1)).await;

    // A private listener of the embedder's own.
    let private = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let private_addr = private.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(admin.into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(private)),
    );
    let listed = list(private_addr, None).await.expect("served privately");
    let ids: Vec<&str> = listed.services[0]
        .instances
        .iter()
        .map(|i| i.id.as_str())
        .collect();
    assert_eq!(ids, ["fleet-a"]);
    // Not on the clients' listener.
    let refused = list(served.addr, None).await.expect_err("not served");
    assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");
}
