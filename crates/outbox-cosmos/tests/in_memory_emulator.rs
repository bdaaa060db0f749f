//! The writer and the change-feed processor against Microsoft's in-memory
//! Cosmos DB emulator (`azure_data_cosmos_driver`, feature
//! `__internal_in_memory_emulator`): real SDK pipeline, real batch semantics
//! (atomic, 207/424), real change feed with continuations, partition splits,
//! and fault injection (429, 503). Nothing here is skipped.

#![allow(clippy::large_futures, clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos_driver::fault_injection::{
    CustomResponseBuilder, FaultInjectionConditionBuilder, FaultInjectionErrorType,
    FaultInjectionResultBuilder, FaultInjectionRule, FaultInjectionRuleBuilder, FaultOperationType,
};
mod common;

use common::{DB, Emulator, ORDERS};
use outbox_core::fakes::{Fault, FlakySink, RecordingQuarantine, RecordingSink};
use outbox_core::{
    ChunkLimits, EntryResult, EventSink, FailureClass, OutboxEvent, Relay, RelayConfig, RetryPolicy,
    SinkError, SystemClock,
};
use outbox_cosmos::{
    BatchOperation, CosmosChangeDecoder, CosmosChangeFeedProcessor, CosmosLeaseStore, CosmosOutboxSchema,
    CosmosOutboxWriter, Lease, OutboxBatch, ProcessorConfig, ProcessorReport, WriteError,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

fn schema() -> CosmosOutboxSchema {
    CosmosOutboxSchema::new("/pk")
}

fn event(aggregate: &str, sequence: u64) -> OutboxEvent {
    OutboxEvent::builder("com.example.orders", "OrderChanged")
        .aggregate("Order", aggregate)
        .sequence(sequence)
        .payload(&json!({ "order": aggregate, "version": sequence }))
        .build(&SystemClock)
        .unwrap()
}

fn pk(aggregate: &str) -> String {
    format!("Order#{aggregate}")
}

/// Writes `orders` aggregates, each created with one event then updated
/// `updates` times with one event each; returns every event id per aggregate, in order.
async fn write_orders(
    writer: &CosmosOutboxWriter,
    prefix: &str,
    orders: usize,
    updates: u64,
) -> BTreeMap<String, Vec<Uuid>> {
    let mut written = BTreeMap::new();
    for i in 0..orders {
        let id = format!("{prefix}-{i}");
        let key = pk(&id);
        let mut ids = Vec::new();
        let first = event(&id, 1);
        ids.push(first.id());
        let receipt = writer
            .commit(
                OutboxBatch::new(&key)
                    .operation(BatchOperation::create(json!({"id": id, "pk": key, "version": 1})))
                    .event(first),
            )
            .await
            .unwrap();
        let mut etag = receipt.etags[0].clone().unwrap();
        for version in 2..=updates + 1 {
            let e = event(&id, version);
            ids.push(e.id());
            let receipt = writer
                .commit(
                    OutboxBatch::new(&key)
                        .operation(BatchOperation::replace_if_match(
                            &id,
                            json!({"id": id, "pk": key, "version": version}),
                            &etag,
                        ))
                        .event(e),
                )
                .await
                .unwrap();
            etag = receipt.etags[0].clone().unwrap();
        }
        written.insert(id, ids);
    }
    written
}

fn relay_config() -> RelayConfig {
    RelayConfig {
        retry: RetryPolicy {
            max_retries: 2,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        },
        max_concurrency: 4,
        deadline_margin: Duration::from_millis(50),
    }
}

fn processor_config(owner: &str) -> ProcessorConfig {
    let mut config = ProcessorConfig::new(owner);
    config.lease_duration = Duration::from_millis(900);
    config.discovery_interval = Duration::from_millis(100);
    config.backoff_initial = Duration::from_millis(5);
    config.backoff_max = Duration::from_millis(40);
    config.max_items_per_page = 25;
    config.batch_deadline = Duration::from_secs(5);
    config
}

/// A sink several processors (and the test) share.
#[derive(Clone, Default)]
struct SharedSink(Arc<RecordingSink>);

impl EventSink for SharedSink {
    fn limits(&self) -> ChunkLimits {
        self.0.limits()
    }
    fn entry_size(&self, event: &OutboxEvent) -> usize {
        self.0.entry_size(event)
    }
    async fn publish(&self, events: &[&OutboxEvent]) -> Result<Vec<EntryResult>, SinkError> {
        self.0.publish(events).await
    }
}

impl SharedSink {
    fn ids(&self) -> Vec<Uuid> {
        self.0.published().iter().map(OutboxEvent::id).collect()
    }
}

/// A processor running on its own task, stopped by `stop()`.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<ProcessorReport>,
}

fn start<S: EventSink + 'static>(
    orders: ContainerClient,
    leases: ContainerClient,
    sink: S,
    quarantine: Arc<RecordingQuarantine>,
    config: ProcessorConfig,
) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let processor = CosmosChangeFeedProcessor::new(
        orders,
        CosmosLeaseStore::new(leases, "orders-relay").unwrap(),
        CosmosChangeDecoder::new(schema()),
        Relay::new(sink, SharedQuarantine(quarantine), relay_config()),
        config,
    );
    let task = tokio::spawn(async move {
        processor
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    Running {
        stop: Some(stop),
        task,
    }
}

impl Running {
    async fn stop(mut self) -> ProcessorReport {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the processor stops within 10 s")
            .unwrap()
    }
}

struct SharedQuarantine(Arc<RecordingQuarantine>);

impl outbox_core::Quarantine for SharedQuarantine {
    async fn quarantine(
        &self,
        record: &outbox_core::QuarantinedRecord,
    ) -> Result<(), outbox_core::QuarantineError> {
        self.0.quarantine(record).await
    }
}

/// Waits until `done()` holds, failing the test after `limit`.
async fn eventually<F: Fn() -> bool>(limit: Duration, what: &str, done: F) {
    let start = tokio::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn eventually_async<F, Fut>(limit: Duration, what: &str, done: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every written event was published, each aggregate's events in order;
/// returns how many times each id was published.
fn assert_all_delivered_in_order(
    published: &[Uuid],
    written: &BTreeMap<String, Vec<Uuid>>,
) -> HashMap<Uuid, usize> {
    let mut counts: HashMap<Uuid, usize> = HashMap::new();
    for id in published {
        *counts.entry(*id).or_default() += 1;
    }
    for (aggregate, ids) in written {
        for id in ids {
            assert!(
                counts.contains_key(id),
                "event {id} of {aggregate} was never published"
            );
        }
        // first publication of each event, in publication order
        let firsts: Vec<Uuid> = {
            let mut seen = std::collections::HashSet::new();
            published
                .iter()
                .filter(|id| ids.contains(id) && seen.insert(**id))
                .copied()
                .collect()
        };
        assert_eq!(&firsts, ids, "events of {aggregate} published out of order");
    }
    counts
}

async fn leases_of(leases: &ContainerClient) -> Vec<Lease> {
    CosmosLeaseStore::new(leases.clone(), "orders-relay")
        .unwrap()
        .list()
        .await
        .unwrap()
}

async fn read(container: &ContainerClient, partition: &str, id: &str) -> Option<Value> {
    match container.read_item(partition.to_owned(), id, None).await {
        Ok(response) => Some(response.into_model::<Value>().unwrap()),
        Err(e) if e.status().is_not_found() => None,
        Err(e) => panic!("read failed: {e}"),
    }
}

// ---------------------------------------------------------------------------
// writer

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_commit_writes_the_aggregate_and_its_outbox_documents_together() {
    let emulator = Emulator::new(1);
    let (orders, _) = emulator.containers(vec![]).await;
    let writer = CosmosOutboxWriter::new(orders.clone(), schema());
    let key = pk("o-1");
    let placed = event("o-1", 1);
    let receipt = writer
        .commit(
            OutboxBatch::new(&key)
                .operation(BatchOperation::create(
                    json!({"id": "o-1", "pk": key, "status": "PLACED"}),
                ))
                .event(placed.clone()),
        )
        .await
        .unwrap();
    assert_eq!(receipt.event_ids, vec![placed.id()]);
    assert_eq!(receipt.operations, 2);

    let aggregate = read(&orders, &key, "o-1").await.expect("aggregate written");
    assert_eq!(aggregate["status"], "PLACED");
    let outbox = read(&orders, &key, &placed.id().to_string())
        .await
        .expect("outbox document written");
    assert_eq!(outbox["outbox"], "v1");
    assert_eq!(outbox["ttl"], json!(7 * 24 * 3600));
    assert_eq!(schema().decode_document(&outbox).unwrap(), placed);

    // The etag the batch returned is the aggregate's current etag: the next IfMatch.
    assert_eq!(receipt.etags[0].as_deref(), aggregate["_etag"].as_str());
    let shipped = event("o-1", 2);
    writer
        .commit(
            OutboxBatch::new(&key)
                .operation(BatchOperation::replace_if_match(
                    "o-1",
                    json!({"id": "o-1", "pk": key, "status": "SHIPPED"}),
                    receipt.etags[0].clone().unwrap(),
                ))
                .event(shipped.clone()),
        )
        .await
        .unwrap();
    assert_eq!(read(&orders, &key, "o-1").await.unwrap()["status"], "SHIPPED");
    assert!(read(&orders, &key, &shipped.id().to_string()).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_if_match_writes_nothing_and_names_the_operation() {
    let emulator = Emulator::new(1);
    let (orders, _) = emulator.containers(vec![]).await;
    let writer = CosmosOutboxWriter::new(orders.clone(), schema());
    let key = pk("o-2");
    let first = writer
        .commit(
            OutboxBatch::new(&key)
                .operation(BatchOperation::create(
                    json!({"id": "o-2", "pk": key, "status": "PLACED"}),
                ))
                .event(event("o-2", 1)),
        )
        .await
        .unwrap();
    let stale = first.etags[0].clone().unwrap();
    // Someone else updates the order.
    writer
        .commit(OutboxBatch::new(&key).operation(BatchOperation::replace_if_match(
            "o-2",
            json!({"id": "o-2", "pk": key, "status": "PAID"}),
            &stale,
        )))
        .await
        .unwrap();

    let lost = event("o-2", 2);
    let err = writer
        .commit(
            OutboxBatch::new(&key)
                .operation(BatchOperation::check_if_match("o-2", "\"not-the-etag\""))
                .event(lost.clone()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, WriteError::PreconditionFailed { operation: 0, description } if description == "check o-2"),
        "{err:?}"
    );
    let err = writer
        .commit(
            OutboxBatch::new(&key)
                .operation(BatchOperation::create(json!({"id": "audit-1", "pk": key})))
                .operation(BatchOperation::replace_if_match(
                    "o-2",
                    json!({"id": "o-2", "pk": key, "status": "CANCELLED"}),
                    &stale,
                ))
                .event(lost.clone()),
        )
        .await
        .unwrap_err();
    assert!(err.needs_fresh_read() && !err.is_retryable());
    assert_eq!(err.failed_operation(), Some(1), "{err}");
    assert!(err.to_string().contains("#1 (replace o-2)"), "{err}");
    assert_eq!(
        read(&orders, &key, "o-2").await.unwrap()["status"],
        "PAID",
        "aggregate unchanged"
    );
    assert!(
        read(&orders, &key, "audit-1").await.is_none(),
        "the operation before it was rolled back"
    );
    assert!(
        read(&orders, &key, &lost.id().to_string()).await.is_none(),
        "no outbox document"
    );

    // Writing the same event twice is a conflict on the outbox document's create.
    let dup = first.event_ids[0];
    let again = OutboxEvent::builder("com.example.orders", "OrderChanged")
        .aggregate("Order", "o-2")
        .id(dup)
        .sequence(1)
        .payload(&json!({}))
        .build(&SystemClock)
        .unwrap();
    let err = writer
        .commit(OutboxBatch::new(&key).event(again))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, WriteError::Conflict { operation: 0, description } if description.contains(&dup.to_string())),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_batch_is_a_retryable_error_with_the_servers_retry_after() {
    let emulator = Emulator::new(1);
    let throttle = FaultInjectionResultBuilder::new()
        .with_custom_response(
            CustomResponseBuilder::new(429u16.into())
                .with_header("x-ms-retry-after-ms", "3")
                .with_body(r#"{"code":"TooManyRequests","message":"injected"}"#)
                .build(),
        )
        .build();
    let rule = Arc::new(
        FaultInjectionRuleBuilder::new("throttle-batches", throttle)
            .with_condition(
                FaultInjectionConditionBuilder::new()
                    .with_operation_type(FaultOperationType::BatchItem)
                    .build(),
            )
            .build(),
    );
    let (orders, _) = emulator.containers(vec![rule.clone()]).await;
    let writer = CosmosOutboxWriter::new(orders.clone(), schema());
    let key = pk("o-3");
    let e = event("o-3", 1);
    let err = writer
        .commit(
            OutboxBatch::new(&key)
                .operation(BatchOperation::upsert(json!({"id": "o-3", "pk": key})))
                .event(e.clone()),
        )
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        matches!(err, WriteError::Throttled { retry_after: Some(d) } if d == Duration::from_millis(3)),
        "{err:?}"
    );
    assert!(rule.hit_count() > 1, "the SDK retried before giving up");
    assert!(read(&orders, &key, &e.id().to_string()).await.is_none());
    rule.disable();
    writer
        .commit(OutboxBatch::new(&key).event(e.clone()))
        .await
        .expect("the same batch succeeds once the throttling stops");
}

// ---------------------------------------------------------------------------
// change-feed processor

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_processor_delivers_every_outbox_event_of_every_partition_exactly_once() {
    let emulator = Emulator::new(4);
    let (orders, leases) = emulator.containers(vec![]).await;
    let writer = CosmosOutboxWriter::new(orders.clone(), schema());
    let written = write_orders(&writer, "a", 24, 2).await;
    // A malformed outbox document and a plain document, outside the writer.
    let mut poison = schema().to_document(&event("bad", 1), "Order#bad");
    poison["payload"] = json!("{not json");
    orders
        .create_item(
            "Order#bad".to_owned(),
            poison["id"].as_str().unwrap(),
            &poison,
            None,
        )
        .await
        .unwrap();
    orders
        .create_item(
            "Customer#c-1".to_owned(),
            "c-1",
            json!({"id": "c-1", "pk": "Customer#c-1"}),
            None,
        )
        .await
        .unwrap();

    let sink = SharedSink::default();
    let quarantine = Arc::new(RecordingQuarantine::default());
    let expected: usize = written.values().map(Vec::len).sum();
    let running = start(
        orders.clone(),
        leases.clone(),
        sink.clone(),
        quarantine.clone(),
        processor_config("p1"),
    );
    eventually(Duration::from_secs(20), "every event published", || {
        sink.ids().len() >= expected && !quarantine.records().is_empty()
    })
    .await;
    let report = running.stop().await;

    let counts = assert_all_delivered_in_order(&sink.ids(), &written);
    assert_eq!(sink.ids().len(), expected, "exactly once: {counts:?}");
    let q = quarantine.records();
    assert_eq!(q.len(), 1);
    assert!(q[0].reason.contains("payload"), "{}", q[0].reason);
    assert!(
        q[0].raw.as_deref().unwrap().contains("{not json"),
        "the whole document is quarantined"
    );
    assert_eq!(report.published, expected);
    assert!(
        report.skipped > 24,
        "aggregates and the customer are skipped: {report:?}"
    );

    let leases = leases_of(&leases).await;
    assert_eq!(leases.len(), 4, "one lease per feed range");
    assert!(leases.iter().all(|l| l.owner.is_none()), "released on shutdown");
    assert!(
        leases.iter().all(|l| l.continuation.is_some()),
        "every range checkpointed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_processor_resumes_from_its_leases_without_loss() {
    let emulator = Emulator::new(2);
    let (orders, leases) = emulator.containers(vec![]).await;
    let writer = CosmosOutboxWriter::new(orders.clone(), schema());
    let before = write_orders(&writer, "before", 10, 1).await;
    let first = SharedSink::default();
    let quarantine = Arc::new(RecordingQuarantine::default());
    let running = start(
        orders.clone(),
        leases.clone(),
        first.clone(),
        quarantine.clone(),
        processor_config("p1"),
    );
    eventually(Duration::from_secs(20), "the first run's events", || {
        first.ids().len() >= 20
    })
    .await;
    running.stop().await;
    assert_all_delivered_in_order(&first.ids(), &before);

    // Written while no processor runs.
    let during = write_orders(&writer, "during", 10, 1).await;
    let second = SharedSink::default();
    let running = start(
        orders.clone(),
        leases.clone(),
        second.clone(),
        quarantine.clone(),
        processor_config("p2"),
    );
    eventually(Duration::from_secs(20), "the second run's events", || {
        second.ids().len() >= 20
    })
    .await;
    // A little longer, to see that nothing old comes again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.stop().await;
    let counts = assert_all_delivered_in_order(&second.ids(), &during);
    assert_eq!(
        second.ids().len(),
        20,
        "resumed at the checkpoints: nothing replayed ({counts:?})"
    );
    let old: Vec<_> = before
        .values()
        .flatten()
        .filter(|id| second.ids().contains(id))
        .collect();
    assert!(old.is_empty(), "events of the first run delivered again: {old:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_page_not_fully_delivered_is_not_checkpointed_and_is_read_again() {
    let emulator = Emulator::new(1);
    let (orders, leases) = emulator.containers(vec![]).await;
    let writer = CosmosOutboxWriter::new(orders.clone(), schema());
    let written = write_orders(&writer, "f", 6, 0).await;
    let stuck = written["f-3"][0];
    // Refused (transiently) 5 times: more than the relay's 2 retries, so the
    // first page fails once and is read again.
    let sink = FlakySink::new(move |e, offered| {
        if e.id() == stuck && offered < 5 {
            Fault::Entry(FailureClass::Transient, "ThrottlingException")
        } else {
            Fault::Accept
        }
    });
    let quarantine = Arc::new(RecordingQuarantine::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let processor = CosmosChangeFeedProcessor::new(
        orders.clone(),
        CosmosLeaseStore::new(leases.clone(), "orders-relay").unwrap(),
        CosmosChangeDecoder::new(schema()),
        Relay::new(sink, SharedQuarantine(quarantine), relay_config()),
        processor_config("p1"),
    );
    let run = processor.run(async {
        let _ = stopped.await;
    });
    let watch = async {
        eventually(Duration::from_secs(20), "the stuck event", || {
            processor
                .relay()
                .sink()
                .accepted()
                .iter()
                .any(|e| e.id() == stuck)
        })
        .await;
        let _ = stop.send(());
    };
    let (report, ()) = tokio::join!(run, watch);
    let report = report.unwrap();
    assert!(report.failed_pages >= 1, "{report:?}");
    let accepted: Vec<Uuid> = processor
        .relay()
        .sink()
        .accepted()
        .iter()
        .map(OutboxEvent::id)
        .collect();
    let counts = assert_all_delivered_in_order(&accepted, &written);
    assert_eq!(counts[&stuck], 1);
    assert!(
        counts.values().all(|n| *n == 1),
        "the page is read again, but what the processor delivered is not published again: {counts:?}"
    );
    let lease = &leases_of(&leases).await[0];
    assert!(lease.continuation.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processors_share_the_ranges_and_take_over_a_stopped_ones() {
    let emulator = Emulator::new(4);
    let (orders, leases) = emulator.containers(vec![]).await;
    let writer = CosmosOutboxWriter::new(orders.clone(), schema());
    let sink = SharedSink::default();
    let quarantine = Arc::new(RecordingQuarantine::default());
    let p1 = start(
        orders.clone(),
        leases.clone(),
        sink.clone(),
        quarantine.clone(),
        processor_config("p1"),
    );
    let (orders2, leases2) = emulator.containers(vec![]).await;
    let p2 = start(
        orders2.clone(),
        leases2.clone(),
        sink.clone(),
        quarantine.clone(),
        processor_config("p2"),
    );
    let owners = |leases: &[Lease]| {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for lease in leases {
            if let Some(owner) = &lease.owner {
                // The configured name, without the per-process part.
                let name = owner.split('#').next().unwrap_or_default();
                *counts.entry(name.to_owned()).or_default() += 1;
            }
        }
        counts
    };
    eventually_async(Duration::from_secs(20), "two ranges each", || async {
        owners(&leases_of(&leases).await) == BTreeMap::from([("p1".to_owned(), 2), ("p2".to_owned(), 2)])
    })
    .await;
    let shared = write_orders(&writer, "s", 16, 1).await;
    eventually(Duration::from_secs(20), "the shared events", || {
        sink.ids().len() >= 32
    })
    .await;

    // p2 stops (gracefully): its ranges are released and p1 takes them.
    let p2_report = p2.stop().await;
    assert!(p2_report.published > 0, "p2 delivered its share: {p2_report:?}");
    eventually_async(Duration::from_secs(20), "p1 owning every range", || async {
        owners(&leases_of(&leases).await) == BTreeMap::from([("p1".to_owned(), 4)])
    })
    .await;
    let alone = write_orders(&writer, "t", 16, 0).await;
    eventually(
        Duration::from_secs(20),
        "the events written after the take-over",
        || sink.ids().len() >= 32 + 16,
    )
    .await;

    // p3 joins and is killed without releasing: its leases expire and p1 takes them back.
    let (orders3, leases3) = emulator.containers(vec![]).await;
    let p3 = start(
        orders3,
        leases3,
        sink.clone(),
        quarantine.clone(),
        processor_config("p3"),
    );
    eventually_async(Duration::from_secs(20), "p3 taking its share", || async {
        owners(&leases_of(&leases).await).get("p3").copied() == Some(2)
    })
    .await;
    p3.task.abort();
    let last = write_orders(&writer, "u", 8, 0).await;
    eventually_async(
        Duration::from_secs(20),
        "p1 taking the dead instance's ranges",
        || async { owners(&leases_of(&leases).await) == BTreeMap::from([("p1".to_owned(), 4)]) },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the events of the dead instance's ranges",
        || sink.ids().len() >= 32 + 16 + 8,
    )
    .await;
    p1.stop().await;

    let mut all = shared;
    all.extend(alone);
    all.extend(last);
    assert_all_delivered_in_order(&sink.ids(), &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_split_is_followed_by_child_leases_without_loss() {
    let emulator = Emulator::new(1);
    let (orders, leases) = emulator.containers(vec![]).await;
    let writer = CosmosOutboxWriter::new(orders.clone(), schema());
    let before = write_orders(&writer, "b", 12, 1).await;
    let sink = SharedSink::default();
    let quarantine = Arc::new(RecordingQuarantine::default());
    let running = start(
        orders.clone(),
        leases.clone(),
        sink.clone(),
        quarantine.clone(),
        processor_config("p1"),
    );
    eventually(Duration::from_secs(20), "the events before the split", || {
        sink.ids().len() >= 24
    })
    .await;
    let parent = leases_of(&leases).await;
    assert_eq!(parent.len(), 1);

    let store = emulator.store();
    store.split_partition(DB, ORDERS, 0, Duration::from_millis(50));
    store.wait_for_split(DB, ORDERS, 0).await;
    let after = write_orders(&writer, "c", 12, 1).await;
    eventually_async(
        Duration::from_secs(20),
        "two child leases, both taken",
        || async {
            let leases = leases_of(&leases).await;
            leases.len() == 2
                && leases.iter().all(|l| {
                    l.parent.as_deref() == Some(parent[0].id.as_str())
                        && l.owner.as_deref().is_some_and(|o| o.starts_with("p1#"))
                })
        },
    )
    .await;
    // Read by the child leases' workers, which started from the parent's continuation.
    let children_only = write_orders(&writer, "d", 12, 1).await;
    let mut all = before;
    all.extend(after);
    all.extend(children_only);
    let total: usize = all.values().map(Vec::len).sum();
    eventually(Duration::from_secs(20), "the events after the split", || {
        let ids = sink.ids();
        all.values().flatten().all(|id| ids.contains(id))
    })
    .await;
    let report = running.stop().await;
    assert_eq!(report.splits, 1, "{report:?}");
    let counts = assert_all_delivered_in_order(&sink.ids(), &all);
    assert_eq!(
        sink.ids().len(),
        total,
        "the children resumed exactly where the parent stopped ({} events published twice)",
        counts.values().filter(|n| **n > 1).count()
    );
    let children = leases_of(&leases).await;
    assert!(
        children
            .iter()
            .all(|l| l.continuation.is_some() && l.owner.is_none())
    );
    assert!(
        children.iter().all(|l| l.continuation != parent[0].continuation),
        "both children checkpointed on their own"
    );
}

fn rule(
    id: &str,
    error: FaultInjectionErrorType,
    operation: FaultOperationType,
    hits: u32,
) -> Arc<FaultInjectionRule> {
    Arc::new(
        FaultInjectionRuleBuilder::new(id, FaultInjectionResultBuilder::new().with_error(error).build())
            .with_condition(
                FaultInjectionConditionBuilder::new()
                    .with_operation_type(operation)
                    .build(),
            )
            .with_hit_limit(hits)
            .build(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttling_and_503s_are_retried_without_loss() {
    let emulator = Emulator::new(2);
    let (orders, _) = emulator.containers(vec![]).await;
    let writer = CosmosOutboxWriter::new(orders.clone(), schema());
    let written = write_orders(&writer, "t", 10, 2).await;

    let rules = vec![
        rule(
            "cf-429",
            FaultInjectionErrorType::TooManyRequests,
            FaultOperationType::ChangeFeedItem,
            4,
        ),
        rule(
            "cf-503",
            FaultInjectionErrorType::ServiceUnavailable,
            FaultOperationType::ChangeFeedItem,
            6,
        ),
        rule(
            "lease-503",
            FaultInjectionErrorType::ServiceUnavailable,
            FaultOperationType::ReplaceItem,
            3,
        ),
        rule(
            "lease-read-429",
            FaultInjectionErrorType::TooManyRequests,
            FaultOperationType::ReadItem,
            3,
        ),
        rule(
            "query-503",
            FaultInjectionErrorType::ServiceUnavailable,
            FaultOperationType::QueryItem,
            2,
        ),
    ];
    let (faulty_orders, faulty_leases) = emulator.containers(rules.clone()).await;
    let sink = SharedSink::default();
    let quarantine = Arc::new(RecordingQuarantine::default());
    let running = start(
        faulty_orders,
        faulty_leases,
        sink.clone(),
        quarantine,
        processor_config("p1"),
    );
    eventually(Duration::from_secs(30), "every event despite the faults", || {
        sink.ids().len() >= 30
    })
    .await;
    let report = running.stop().await;
    for rule in &rules {
        assert!(rule.hit_count() > 0, "fault {} was never injected", rule.id());
    }
    assert_all_delivered_in_order(&sink.ids(), &written);
    assert!(
        report.stream_rebuilds >= 1,
        "a 503 the SDK gave up on rebuilt the stream: {report:?}"
    );
    tracing::info!(?report, "faults survived");
}
