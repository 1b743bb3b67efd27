//! An ordinary tonic implementation of `inventory.v1.Inventory`, the second
//! example service, and the helpers that register it with routers.
//!
//! [`InventoryImpl`] knows nothing about routers: it keeps its stock in
//! memory (seeded with [`SEEDED_ITEMS`]) and stamps every answer with the
//! instance name it was given. [`start_inventory_instance`] runs it through
//! the generated `InventoryBridge`, which dials out to routers and registers.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use futures_util::Stream;
use router_runtime::bridge::{BridgeConfig, BridgeHandle};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::inventory_pb::inventory_server::Inventory;
use crate::inventory_pb::{
    GetItemRequest, InventoryBridge, Item, ListItemsRequest, StockAdjustment, StockSummary,
};

/// The items every new [`InventoryImpl`] starts with, in SKU order:
/// `(sku, name, quantity)`.
pub const SEEDED_ITEMS: [(&str, &str, i64); 4] = [
    ("sku-001", "bolt", 120),
    ("sku-002", "nut", 300),
    ("sku-003", "washer", 75),
    ("sku-004", "bracket", 12),
];

/// One item in the store.
#[derive(Debug, Clone)]
struct Stock {
    name: String,
    quantity: i64,
    updated_at: SystemTime,
}

/// Serves `inventory.v1.Inventory` from an in-memory store, saying which
/// instance answered in every `served_by` field. Clones share the store.
#[derive(Debug, Clone)]
pub struct InventoryImpl {
    instance: String,
    store: Arc<Mutex<BTreeMap<String, Stock>>>,
}

impl InventoryImpl {
    /// An inventory holding [`SEEDED_ITEMS`], reporting itself as `instance`.
    pub fn new(instance: impl Into<String>) -> Self {
        let now = SystemTime::now();
        let store = SEEDED_ITEMS
            .iter()
            .map(|&(sku, name, quantity)| {
                let stock = Stock {
                    name: name.to_string(),
                    quantity,
                    updated_at: now,
                };
                (sku.to_string(), stock)
            })
            .collect();
        InventoryImpl {
            instance: instance.into(),
            store: Arc::new(Mutex::new(store)),
        }
    }

    /// The instance name this inventory answers with.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The store, even if a panic poisoned its lock (every update is applied
    /// whole under the lock, so the data stays consistent).
    fn store(&self) -> MutexGuard<'_, BTreeMap<String, Stock>> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `stock` as the wire message for `sku`.
    fn item(&self, sku: &str, stock: &Stock) -> Item {
        Item {
            sku: sku.to_string(),
            name: stock.name.clone(),
            quantity: stock.quantity,
            served_by: self.instance.clone(),
            updated_at: Some(stock.updated_at.into()),
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Inventory for InventoryImpl {
    /// The item `sku`, or NOT_FOUND.
    async fn get_item(&self, request: Request<GetItemRequest>) -> Result<Response<Item>, Status> {
        let sku = request.into_inner().sku;
        let store = self.store();
        let stock = store
            .get(&sku)
            .ok_or_else(|| Status::not_found(format!("GetItem: no item with sku {sku:?}")))?;
        Ok(Response::new(self.item(&sku, stock)))
    }

    type ListItemsStream = BoxStream<Item>;

    /// Up to `limit` items (every item when `limit` is 0 or less), in SKU
    /// order, as they are when the call starts.
    async fn list_items(
        &self,
        request: Request<ListItemsRequest>,
    ) -> Result<Response<Self::ListItemsStream>, Status> {
        let limit = usize::try_from(request.into_inner().limit)
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or(usize::MAX);
        let items: Vec<Result<Item, Status>> = self
            .store()
            .iter()
            .take(limit)
            .map(|(sku, stock)| Ok(self.item(sku, stock)))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    /// Reads every adjustment, then applies them all or none: an unknown SKU
    /// fails the call with NOT_FOUND and changes nothing.
    async fn adjust_stock(
        &self,
        request: Request<Streaming<StockAdjustment>>,
    ) -> Result<Response<StockSummary>, Status> {
        let mut stream = request.into_inner();
        let mut adjustments = Vec::new();
        while let Some(adjustment) = stream.next().await {
            adjustments.push(adjustment?);
        }
        let now = SystemTime::now();
        let mut store = self.store();
        if let Some(unknown) = adjustments.iter().find(|a| !store.contains_key(&a.sku)) {
            return Err(Status::not_found(format!(
                "AdjustStock: no item with sku {:?}; no adjustment applied",
                unknown.sku
            )));
        }
        let mut total_delta = 0i64;
        for adjustment in &adjustments {
            if let Some(stock) = store.get_mut(&adjustment.sku) {
                stock.quantity = stock.quantity.saturating_add(adjustment.delta);
                stock.updated_at = now;
            }
            total_delta = total_delta.saturating_add(adjustment.delta);
        }
        Ok(Response::new(StockSummary {
            adjustments: i64::try_from(adjustments.len()).unwrap_or(i64::MAX),
            total_delta,
            served_by: self.instance.clone(),
        }))
    }
}

/// Runs an [`InventoryImpl`] named after `options.instance_id` through the
/// generated `InventoryBridge`, registering with every router of `options`
/// in the background. Must be called inside a tokio runtime.
pub fn start_inventory(options: BridgeConfig) -> BridgeHandle {
    InventoryBridge::new(InventoryImpl::new(options.instance_id.clone())).connect(options)
}

/// [`start_inventory`] with instance id (and `served_by`) `id`, registering
/// with each router of `endpoints` (`http://host:port`) and default options
/// otherwise. With no endpoints it registers nowhere. Wait on
/// [`BridgeHandle::registered`] or the router's registry to know it is in.
pub fn start_inventory_instance(endpoints: Vec<String>, id: &str) -> BridgeHandle {
    let mut options = BridgeConfig::new(String::new()).instance_id(id);
    options.endpoints = endpoints;
    start_inventory(options)
}
