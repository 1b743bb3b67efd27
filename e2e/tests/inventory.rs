//! The second example service, `inventory.v1.Inventory`, through its
//! generated `InventoryRouter`: two instances registered with
//! `start_inventory_instance`, every method kind called with an unmodified
//! tonic `InventoryClient`.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use myservice::inventory::{SEEDED_ITEMS, start_inventory_instance};
use myservice::inventory_pb::inventory_client::InventoryClient;
use myservice::inventory_pb::{GetItemRequest, InventoryRouter, ListItemsRequest, StockAdjustment};
use router_runtime::bridge::BridgeHandle;
use router_runtime::router::RouterConfig;
use router_runtime::server::{Listener, RouterServer};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// How long any step (registration, a call, a shutdown) may take.
const STEP: Duration = Duration::from_secs(10);

/// The instance ids the fixture registers.
const IDS: [&str; 2] = ["inventory-a", "inventory-b"];

/// An `InventoryRouter` served on a loopback port, with the instances of
/// [`IDS`] registered.
struct Fixture {
    router: InventoryRouter,
    instances: Vec<BridgeHandle>,
    client: InventoryClient<Channel>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), router_runtime::server::ServeError>>,
}

/// `future`, or a panic naming `what` after [`STEP`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    test_kit::within(STEP.as_secs(), what, future).await
}

/// `message` as a request with a deadline.
fn request<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(STEP);
    request
}

impl Fixture {
    /// Starts the router with default settings (the service's default
    /// strategy, round robin), registers both instances and connects a client.
    async fn start() -> Fixture {
        let listener = Listener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("listener address");
        let router = InventoryRouter::new(RouterConfig::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(RouterServer::new("test").route(&router).serve(
            listener,
            None,
            async {
                let _ = stopped.await;
            },
        ));
        let endpoint = format!("http://{addr}");
        let instances = IDS
            .iter()
            .map(|id| start_inventory_instance(vec![endpoint.clone()], id))
            .collect();
        within(
            "both instances registering",
            router.registry().wait_until(|n| n >= IDS.len()),
        )
        .await;
        let client = within(
            "connecting to the router",
            InventoryClient::connect(endpoint),
        )
        .await
        .expect("connect to the router");
        Fixture {
            router,
            instances,
            client,
            stop,
            server,
        }
    }

    /// Drains both instances, then stops the router and checks it stopped
    /// cleanly.
    async fn stop(self) {
        drop(self.client);
        for instance in self.instances {
            within("an instance draining", instance.shutdown()).await;
        }
        within(
            "the router losing its instances",
            self.router.registry().wait_until(|n| n == 0),
        )
        .await;
        let _ = self.stop.send(());
        within("the router stopping", self.server)
            .await
            .expect("router task")
            .expect("router server");
    }
}

#[tokio::test]
async fn get_item_answers_through_the_router_from_both_instances() {
    let mut fixture = Fixture::start().await;
    let (sku, name, quantity) = SEEDED_ITEMS[0];
    let mut served_by = BTreeSet::new();
    for _ in 0..4 {
        let item = within(
            "GetItem",
            fixture.client.get_item(request(GetItemRequest {
                sku: sku.to_string(),
            })),
        )
        .await
        .expect("GetItem through the router")
        .into_inner();
        assert_eq!((item.sku.as_str(), item.name.as_str()), (sku, name));
        assert_eq!(item.quantity, quantity);
        assert!(item.updated_at.is_some(), "updated_at is set: {item:?}");
        served_by.insert(item.served_by);
    }
    let expected: BTreeSet<String> = IDS.iter().map(ToString::to_string).collect();
    assert_eq!(served_by, expected, "round robin reaches both instances");
    fixture.stop().await;
}

#[tokio::test]
async fn get_item_of_an_unknown_sku_is_not_found_through_the_router() {
    let mut fixture = Fixture::start().await;
    let status = within(
        "GetItem",
        fixture.client.get_item(request(GetItemRequest {
            sku: "sku-missing".to_string(),
        })),
    )
    .await
    .expect_err("an unknown sku fails");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("sku-missing"), "{status:?}");
    fixture.stop().await;
}

#[tokio::test]
async fn list_items_streams_up_to_the_limit_through_the_router() {
    let mut fixture = Fixture::start().await;
    let stream = within(
        "ListItems",
        fixture
            .client
            .list_items(request(ListItemsRequest { limit: 3 })),
    )
    .await
    .expect("ListItems through the router")
    .into_inner();
    let items: Vec<_> = within("the ListItems stream", stream.collect::<Vec<_>>())
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every streamed item");
    let skus: Vec<&str> = items.iter().map(|item| item.sku.as_str()).collect();
    let expected: Vec<&str> = SEEDED_ITEMS
        .iter()
        .take(3)
        .map(|(sku, _, _)| *sku)
        .collect();
    assert_eq!(skus, expected, "the first 3 items in SKU order");
    let served_by: BTreeSet<&str> = items.iter().map(|item| item.served_by.as_str()).collect();
    assert_eq!(served_by.len(), 1, "one instance serves the stream");
    assert!(
        served_by.iter().all(|id| IDS.contains(id)),
        "served by a registered instance: {served_by:?}"
    );
    fixture.stop().await;
}

#[tokio::test]
async fn adjust_stock_sums_a_client_stream_through_the_router() {
    let mut fixture = Fixture::start().await;
    let adjustments: Vec<StockAdjustment> = [("sku-001", 5), ("sku-002", -2), ("sku-001", 10)]
        .into_iter()
        .map(|(sku, delta)| StockAdjustment {
            sku: sku.to_string(),
            delta,
        })
        .collect();
    let summary = within(
        "AdjustStock",
        fixture
            .client
            .adjust_stock(request(tokio_stream::iter(adjustments))),
    )
    .await
    .expect("AdjustStock through the router")
    .into_inner();
    assert_eq!((summary.adjustments, summary.total_delta), (3, 13));
    assert!(
        IDS.contains(&summary.served_by.as_str()),
        "served by a registered instance: {summary:?}"
    );
    fixture.stop().await;
}
