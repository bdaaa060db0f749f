//! The writer and the processor against a real Cosmos DB account or the
//! Docker emulator. Built only with the `live` feature (off by default and
//! in CI); with it, the variables below are required: a missing one fails
//! the test, it is never skipped.
//!
//! ```text
//! COSMOS_ENDPOINT=https://<account>.documents.azure.com:443/ COSMOS_KEY=... \
//! COSMOS_DATABASE=shop COSMOS_CONTAINER=orders COSMOS_LEASE_CONTAINER=relay-leases \
//!   cargo test -p outbox-cosmos --features live --test live
//! ```
//!
//! The containers must exist: `COSMOS_CONTAINER` partitioned on `/pk` with
//! TTL on (default `-1`), `COSMOS_LEASE_CONTAINER` partitioned on `/id`.
#![cfg(feature = "live")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::large_futures)] // test helpers outside #[test] fns

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use outbox_core::fakes::{RecordingQuarantine, RecordingSink};
use outbox_core::{OutboxEvent, Relay, RelayConfig, SystemClock};
use outbox_cosmos::{
    BatchOperation, CosmosChangeDecoder, CosmosChangeFeedProcessor, CosmosLeaseStore, CosmosOutboxSchema,
    CosmosOutboxWriter, OutboxBatch, ProcessorConfig, WriteError, container_client, cosmos_client_with_key,
};
use serde_json::json;

fn required(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} must be set to run the live tests (feature `live`)"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_writer_and_processor_round_trip() {
    let client = cosmos_client_with_key(
        &required("COSMOS_ENDPOINT"),
        required("COSMOS_KEY"),
        &std::env::var("COSMOS_REGION").unwrap_or_else(|_| "eastus".into()),
    )
    .await
    .unwrap();
    let database = required("COSMOS_DATABASE");
    let orders = container_client(&client, &database, &required("COSMOS_CONTAINER"))
        .await
        .unwrap();
    let leases = container_client(&client, &database, &required("COSMOS_LEASE_CONTAINER"))
        .await
        .unwrap();
    let run = uuid::Uuid::now_v7().simple().to_string();
    let writer = CosmosOutboxWriter::new(orders.clone(), CosmosOutboxSchema::new("/pk"));

    let mut expected = HashSet::new();
    for i in 0..5 {
        let id = format!("live-{run}-{i}");
        let key = format!("Order#{id}");
        let event = OutboxEvent::builder("com.example.orders", "OrderPlaced")
            .aggregate("Order", &id)
            .sequence(1)
            .payload(&json!({ "run": run, "i": i }))
            .build(&SystemClock)
            .unwrap();
        expected.insert(event.id());
        let receipt = writer
            .commit(
                OutboxBatch::new(&key)
                    .operation(BatchOperation::create(json!({"id": id, "pk": key, "version": 1})))
                    .event(event),
            )
            .await
            .unwrap();
        let stale = writer
            .commit(OutboxBatch::new(&key).operation(BatchOperation::replace_if_match(
                &id,
                json!({"id": id, "pk": key, "version": 2}),
                "\"stale\"",
            )))
            .await
            .unwrap_err();
        assert!(
            matches!(stale, WriteError::PreconditionFailed { operation: 0, .. }),
            "{stale:?}"
        );
        assert!(receipt.etags[0].is_some());
    }

    let mut config = ProcessorConfig::new(format!("live-{run}"));
    config.lease_duration = Duration::from_secs(10);
    config.discovery_interval = Duration::from_secs(2);
    let processor = Arc::new(CosmosChangeFeedProcessor::new(
        orders,
        CosmosLeaseStore::new(leases, format!("live-{run}")).unwrap(),
        CosmosChangeDecoder::new(CosmosOutboxSchema::new("/pk")),
        Relay::new(
            RecordingSink::default(),
            RecordingQuarantine::default(),
            RelayConfig::default(),
        ),
        config,
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = Arc::clone(&processor);
    let task = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let seen: HashSet<_> = processor
            .relay()
            .sink()
            .published()
            .iter()
            .map(OutboxEvent::id)
            .collect();
        if expected.is_subset(&seen) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "events not relayed within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
