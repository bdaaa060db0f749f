//! Microsoft's in-memory Cosmos DB emulator, set up the same way for every
//! test binary: one account, an `orders` container on `/pk` and a `leases`
//! container on `/id`.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // each test binary uses a part

use std::sync::Arc;

use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::options::Region;
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, CosmosClientBuilder, CosmosRuntimeBuilder, RoutingStrategy,
};
use azure_data_cosmos_driver::fault_injection::FaultInjectionRule;
use azure_data_cosmos_driver::in_memory_emulator::{
    ConsistencyLevel, ContainerConfig, EmulatorStore, InMemoryEmulatorHttpClient, VirtualAccountConfig,
    VirtualRegion,
};
use serde_json::json;

pub const GATEWAY: &str = "https://eastus.emulator.local";
pub const DB: &str = "shop";
pub const ORDERS: &str = "orders";
pub const LEASES: &str = "leases";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// One in-memory account with an `orders` container (`/pk`, `partitions`
/// physical partitions) and a `leases` container (`/id`).
pub struct Emulator {
    emulator: Arc<InMemoryEmulatorHttpClient>,
}

impl Emulator {
    pub fn new(partitions: u32) -> Self {
        init_tracing();
        let url = GATEWAY.parse::<AccountEndpoint>().unwrap().into_url();
        let config = VirtualAccountConfig::new(vec![VirtualRegion::new("East US", url)])
            .unwrap()
            .with_consistency(ConsistencyLevel::Session);
        let emulator = Arc::new(InMemoryEmulatorHttpClient::new(config));
        let store = emulator.store();
        store.create_database(DB);
        store.create_container_with_config(
            DB,
            ORDERS,
            serde_json::from_value(json!({"paths": ["/pk"], "kind": "Hash", "version": 2})).unwrap(),
            ContainerConfig::new()
                .with_partition_count(partitions)
                .build()
                .unwrap(),
        );
        store.create_container(
            DB,
            LEASES,
            serde_json::from_value(json!({"paths": ["/id"], "kind": "Hash", "version": 2})).unwrap(),
        );
        Self { emulator }
    }

    pub fn store(&self) -> Arc<EmulatorStore> {
        self.emulator.store()
    }

    /// A client of its own (its own SDK runtime), with these fault rules.
    pub async fn containers(
        &self,
        rules: Vec<Arc<FaultInjectionRule>>,
    ) -> (ContainerClient, ContainerClient) {
        let builder = if rules.is_empty() {
            self.emulator.runtime_builder()
        } else {
            self.emulator.runtime_builder_with_fault_rules(rules)
        };
        let account = AccountReference::with_authentication_key(
            GATEWAY.parse::<AccountEndpoint>().unwrap(),
            "dGVzdGtleQ==",
        );
        let client = CosmosClientBuilder::new()
            .with_runtime(CosmosRuntimeBuilder::from(builder).build().await.unwrap())
            .build(account, RoutingStrategy::ProximityTo(Region::EAST_US))
            .await
            .unwrap();
        let db = client.database_client(DB);
        (
            db.container_client(ORDERS, None).await.unwrap(),
            db.container_client(LEASES, None).await.unwrap(),
        )
    }
}
