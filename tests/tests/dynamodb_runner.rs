//! The standalone DynamoDB Streams runner and its lease store against
//! DynamoDB Local: delivery, order, checkpoints, resumption, lease takeover,
//! the on-failure destination, poison records and records of any size.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use outbox_cli::bootstrap::{create_bucket, create_outbox_table, create_queue, drain_queue};
use outbox_core::fakes::{Fault, FlakySink, RecordingQuarantine, RecordingSink};
use outbox_core::{
    ChunkLimits, EntryResult, EventSink, FailureClass, FixedClock, OutboxEvent, Quarantine, QuarantineError,
    QuarantinedRecord, Relay, RelayConfig, RetryPolicy, SinkError, SystemClock,
};
use outbox_dynamodb::{DynamoDbOutboxWriter, OutboxSchema, OutboxTransaction, put_versioned};
use outbox_dynamodb_relay::{
    DynamoDbLeaseStore, DynamoDbStreamDecoder, DynamoDbStreamRunner, Lease, LeaseError, RunnerConfig,
    RunnerError, RunnerReport, ShardKey, create_lease_table, stream_arn_for_table,
};
use outbox_eventbridge::{QuarantineMessage, S3ClaimCheck, SqsQuarantine};
use outbox_tests::{
    MOTO_ENDPOINT_VAR, dynamodb_client, endpoint, read_stream, s3_client, sqs_client, streams_client,
    unique_name,
};
use serde_json::json;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

/// Lease duration in these tests.
const LEASE: Duration = Duration::from_secs(2);
/// How long a test waits for something that should happen.
const PATIENCE: Duration = Duration::from_secs(15);

/// A port fake behind an `Arc`, so the test can look at it after the runner
/// (which owns its sink and quarantines) is gone. A sink can also fire
/// `trigger` once it has accepted `at` events.
struct Shared<T> {
    inner: Arc<T>,
    trigger: Option<(usize, Arc<Notify>)>,
    accepted: AtomicU32,
}

impl<T> Shared<T> {
    fn new(inner: &Arc<T>) -> Self {
        Self {
            inner: Arc::clone(inner),
            trigger: None,
            accepted: AtomicU32::new(0),
        }
    }

    fn with_trigger(mut self, at: usize, notify: &Arc<Notify>) -> Self {
        self.trigger = Some((at, Arc::clone(notify)));
        self
    }
}

impl<T: EventSink> EventSink for Shared<T> {
    fn limits(&self) -> ChunkLimits {
        self.inner.limits()
    }

    fn entry_size(&self, event: &OutboxEvent) -> usize {
        self.inner.entry_size(event)
    }

    async fn publish(&self, events: &[&OutboxEvent]) -> Result<Vec<EntryResult>, SinkError> {
        let results = self.inner.publish(events).await?;
        let accepted = results.iter().filter(|r| **r == EntryResult::Published).count() as u32;
        let total = self.accepted.fetch_add(accepted, Ordering::SeqCst) + accepted;
        if let Some((at, notify)) = &self.trigger
            && total as usize >= *at
        {
            notify.notify_one();
        }
        Ok(results)
    }
}

impl<T: Quarantine> Quarantine for Shared<T> {
    fn quarantine(
        &self,
        record: &QuarantinedRecord,
    ) -> impl Future<Output = Result<(), QuarantineError>> + Send {
        self.inner.quarantine(record)
    }
}

struct Fixture {
    table: String,
    leases_table: String,
    stream_arn: String,
    writer: DynamoDbOutboxWriter,
}

impl Fixture {
    async fn new() -> Self {
        let client = dynamodb_client();
        let table = unique_name("runner");
        create_outbox_table(&client, &table)
            .await
            .expect("create outbox table");
        let leases_table = unique_name("runner-leases");
        create_lease_table(&client, &leases_table)
            .await
            .expect("create lease table");
        let stream_arn = stream_arn_for_table(&client, &table).await.expect("stream ARN");
        let writer = DynamoDbOutboxWriter::new(client, OutboxSchema::new(&table));
        Self {
            table,
            leases_table,
            stream_arn,
            writer,
        }
    }

    fn lease_store(&self) -> DynamoDbLeaseStore {
        DynamoDbLeaseStore::new(dynamodb_client(), &self.leases_table)
    }

    fn runner<S, Q, F>(
        &self,
        sink: S,
        quarantine: Q,
        on_failure: F,
        config: RunnerConfig,
    ) -> DynamoDbStreamRunner<S, Q, F>
    where
        S: EventSink,
        Q: Quarantine,
        F: Quarantine,
    {
        DynamoDbStreamRunner::new(
            streams_client(),
            self.lease_store(),
            &self.stream_arn,
            DynamoDbStreamDecoder::new(OutboxSchema::new(&self.table)),
            Relay::new(sink, quarantine, relay_config()),
            on_failure,
            config,
        )
    }

    /// Commits one event of aggregate `Order/<aggregate>`, with the aggregate
    /// item itself when `with_aggregate` (a record the relay skips).
    async fn write(&self, aggregate: &str, sequence: u64, with_aggregate: bool) -> OutboxEvent {
        let e = event(aggregate, sequence);
        let mut tx = OutboxTransaction::new().event(e.clone());
        if with_aggregate {
            let item = HashMap::from([
                ("pk".to_string(), AttributeValue::S(format!("Order#{aggregate}"))),
                ("sk".to_string(), AttributeValue::S("ORDER".into())),
                ("status".to_string(), AttributeValue::S(format!("v{sequence}"))),
            ]);
            let expected = sequence.checked_sub(1).filter(|v| *v > 0);
            tx = tx.operation(put_versioned(&self.table, item, "version", expected).unwrap());
        }
        self.writer.commit(tx).await.expect("commit");
        e
    }

    async fn leases(&self) -> Vec<Lease> {
        self.lease_store()
            .list(&self.stream_arn)
            .await
            .expect("list leases")
    }

    /// The sequence number of the last record in the stream.
    async fn last_position(&self) -> String {
        let records = read_stream(&self.table).await;
        records
            .last()
            .and_then(|r| r.dynamodb())
            .and_then(|d| d.sequence_number())
            .expect("a last record")
            .to_owned()
    }
}

fn event(aggregate: &str, sequence: u64) -> OutboxEvent {
    OutboxEvent::builder("com.example.orders", "OrderChanged")
        .aggregate("Order", aggregate)
        .sequence(sequence)
        .payload(&json!({ "order": aggregate, "version": sequence }))
        .build(&SystemClock)
        .expect("valid event")
}

fn relay_config() -> RelayConfig {
    RelayConfig {
        retry: RetryPolicy {
            max_retries: 1,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(10),
        },
        max_concurrency: 4,
        deadline_margin: Duration::from_millis(50),
    }
}

fn config(owner: &str) -> RunnerConfig {
    let mut config = RunnerConfig::new(owner);
    config.lease_duration = LEASE;
    config.backoff_initial = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(200);
    config.discovery_interval = Duration::from_millis(200);
    config.batch_deadline = Duration::from_secs(5);
    config
}

/// A runner on its own task, stopped through `stop`.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<RunnerReport, RunnerError>>,
}

fn start<S, Q, F>(runner: DynamoDbStreamRunner<S, Q, F>) -> Running
where
    S: EventSink + 'static,
    Q: Quarantine + 'static,
    F: Quarantine + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async move {
        let _ = stopped.await;
    }));
    Running { stop, task }
}

impl Running {
    async fn shutdown(self) -> RunnerReport {
        let _ = self.stop.send(());
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("runner stops in time")
            .expect("runner task")
            .expect("runner result")
    }
}

/// Waits until `condition` holds, or fails the test saying `what`.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn ids(events: &[OutboxEvent]) -> Vec<Uuid> {
    events.iter().map(OutboxEvent::id).collect()
}

/// Each aggregate's sequences in publication order.
fn sequences_by_aggregate(events: &[OutboxEvent]) -> HashMap<String, Vec<u64>> {
    let mut by = HashMap::<String, Vec<u64>>::new();
    for e in events {
        by.entry(e.aggregate_id().to_owned())
            .or_default()
            .push(e.sequence());
    }
    by
}

#[tokio::test]
async fn every_event_is_published_once_in_aggregate_order_and_checkpointed() {
    let f = Fixture::new().await;
    let mut written = Vec::new();
    for sequence in 1..=5 {
        for aggregate in ["a", "b", "c"] {
            written.push(f.write(aggregate, sequence, aggregate == "a").await);
        }
    }
    let sink = Arc::new(RecordingSink::default());
    let quarantine = Arc::new(RecordingQuarantine::default());
    let on_failure = Arc::new(RecordingQuarantine::default());
    let running = start(f.runner(
        Shared::new(&sink),
        Shared::new(&quarantine),
        Shared::new(&on_failure),
        config("solo"),
    ));
    eventually("15 events published", || sink.published().len() >= 15).await;
    let last = f.last_position().await;
    let leases = f.lease_store();
    let key = ShardKey::new(&f.stream_arn, f.leases().await[0].shard_id.clone());
    let deadline = Instant::now() + PATIENCE;
    while leases.get(&key).await.unwrap().and_then(|l| l.checkpoint) != Some(last.clone()) {
        assert!(Instant::now() < deadline, "checkpoint never reached {last}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = running.shutdown().await;

    let published = sink.published();
    assert_eq!(published.len(), 15, "each event exactly once");
    assert_eq!(
        ids(&published).into_iter().collect::<HashSet<_>>(),
        ids(&written).into_iter().collect::<HashSet<_>>()
    );
    for (aggregate, sequences) in sequences_by_aggregate(&published) {
        assert_eq!(sequences, [1, 2, 3, 4, 5], "order of aggregate {aggregate}");
    }
    assert_eq!(report.published, 15);
    assert_eq!(report.skipped, 5, "the five writes of aggregate a's own item");
    assert_eq!(report.records, 20);
    assert_eq!(
        (
            report.quarantined,
            report.failed_batches,
            report.sent_to_on_failure
        ),
        (0, 0, 0)
    );
    assert!(quarantine.records().is_empty() && on_failure.records().is_empty());

    let leases = f.leases().await;
    assert_eq!(
        leases.len(),
        1,
        "DynamoDB Local streams have one shard: {leases:?}"
    );
    assert_eq!(leases[0].checkpoint.as_deref(), Some(last.as_str()));
    assert_eq!(leases[0].owner, None, "released on shutdown");
    assert!(!leases[0].finished, "the shard is still open");
}

#[tokio::test]
async fn a_stopped_runner_hands_over_at_its_checkpoint() {
    let f = Fixture::new().await;
    let mut written = Vec::new();
    for sequence in 1..=12 {
        written.push(f.write("r", sequence, false).await);
    }

    // Runner 1 reads 3 records per batch and is told to stop once 4 events
    // are out: it finishes the batch in hand, checkpoints it and releases.
    let first_sink = Arc::new(RecordingSink::default());
    let stop_first = Arc::new(Notify::new());
    let mut first_config = config("first");
    first_config.batch_limit = 3;
    let first = f.runner(
        Shared::new(&first_sink).with_trigger(4, &stop_first),
        RecordingQuarantine::default(),
        RecordingQuarantine::default(),
        first_config,
    );
    let waiter = Arc::clone(&stop_first);
    let report = tokio::time::timeout(PATIENCE, first.run(async move { waiter.notified().await }))
        .await
        .expect("first runner stops")
        .expect("first runner result");
    let first_published = first_sink.published();
    assert!(
        (4..12).contains(&first_published.len()),
        "stopped mid-stream after {} events",
        first_published.len()
    );
    assert_eq!(first_published.len() % 3, 0, "whole batches only");
    assert_eq!(report.published, first_published.len());
    let leases = f.leases().await;
    assert_eq!(leases[0].owner, None, "released");
    let handed_over = leases[0].checkpoint.clone().expect("a checkpoint");

    // Runner 2 (another owner, same lease table) starts at that checkpoint.
    let second_sink = Arc::new(RecordingSink::default());
    let rest = 12 - first_published.len();
    let second = start(f.runner(
        Shared::new(&second_sink),
        RecordingQuarantine::default(),
        RecordingQuarantine::default(),
        config("second"),
    ));
    eventually("the rest published", || second_sink.published().len() >= rest).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = second.shutdown().await;

    let second_published = second_sink.published();
    assert_eq!(second_published.len(), rest, "nothing published twice");
    let mut all = first_published.clone();
    all.extend(second_published.iter().cloned());
    assert_eq!(ids(&all), ids(&written), "nothing lost, in order");
    assert_eq!(report.published, rest);
    let leases = f.leases().await;
    assert_eq!(
        leases[0].checkpoint.as_deref(),
        Some(f.last_position().await.as_str())
    );
    assert!(
        outbox_dynamodb_relay::compare_sequence_numbers(
            leases[0].checkpoint.as_deref().unwrap(),
            &handed_over
        )
        .is_gt()
    );
}

/// A sink that answers each call after `delay`: a bus at a distance.
struct Slow {
    inner: RecordingSink,
    delay: Duration,
}

impl EventSink for Slow {
    fn limits(&self) -> ChunkLimits {
        self.inner.limits()
    }

    fn entry_size(&self, event: &OutboxEvent) -> usize {
        self.inner.entry_size(event)
    }

    async fn publish(&self, events: &[&OutboxEvent]) -> Result<Vec<EntryResult>, SinkError> {
        tokio::time::sleep(self.delay).await;
        self.inner.publish(events).await
    }
}

/// The runner checkpoints a batch's delivered prefix as it goes: a crash in
/// the middle of a long batch repeats only about what was in flight, not
/// the batch.
#[tokio::test]
async fn a_crash_mid_batch_repeats_only_what_was_in_flight() {
    let f = Fixture::new().await;
    let mut written = Vec::new();
    for i in 0..400u32 {
        written.push(
            f.write(&format!("crash-{}", i % 40), u64::from(i / 40 + 1), false)
                .await,
        );
    }
    // 40 calls of 10, 4 at a time, 50 ms each: the batch of 400 takes about 500 ms.
    let slow = Arc::new(Slow {
        inner: RecordingSink::default(),
        delay: Duration::from_millis(50),
    });
    let crash = Arc::new(Notify::new());
    let first = start(f.runner(
        Shared::new(&slow).with_trigger(300, &crash),
        RecordingQuarantine::default(),
        RecordingQuarantine::default(),
        config("before-crash"),
    ));
    tokio::time::timeout(PATIENCE, crash.notified())
        .await
        .expect("300 delivered");
    first.task.abort();
    let _ = first.task.await;
    let before = slow.inner.published();
    let checkpoint = f.leases().await.pop().and_then(|l| l.checkpoint);
    assert!(checkpoint.is_some(), "checkpointed within the batch");

    // The lease of the crashed runner expires; a new one takes over.
    let after = Arc::new(RecordingSink::default());
    let second = start(f.runner(
        Shared::new(&after),
        RecordingQuarantine::default(),
        RecordingQuarantine::default(),
        config("after-crash"),
    ));
    let all: HashSet<Uuid> = ids(&written).into_iter().collect();
    eventually("every event after the crash", || {
        let mut seen: HashSet<Uuid> = ids(&before).into_iter().collect();
        seen.extend(ids(&after.published()));
        seen == all
    })
    .await;
    second.shutdown().await;
    let duplicates = before.len() + after.published().len() - written.len();
    assert!(
        duplicates <= 150,
        "{duplicates} delivered twice of the {} delivered before the crash",
        before.len()
    );
}

/// A deployment that gives every replica one name (`OUTBOX_RUNNER_OWNER`
/// in a template) still gets one owner per process.
#[tokio::test]
async fn two_runners_given_one_name_never_share_a_shard() {
    let f = Fixture::new().await;
    let mut written = Vec::new();
    for sequence in 1..=10 {
        written.push(f.write("same", sequence, false).await);
    }
    let sinks = [
        Arc::new(RecordingSink::default()),
        Arc::new(RecordingSink::default()),
    ];
    let configs = [config("replica"), config("replica")];
    assert_ne!(
        configs[0].owner, configs[1].owner,
        "a per-process part tells them apart"
    );
    let runners: Vec<Running> = sinks
        .iter()
        .zip(configs)
        .map(|(sink, config)| {
            start(f.runner(
                Shared::new(sink),
                RecordingQuarantine::default(),
                RecordingQuarantine::default(),
                config,
            ))
        })
        .collect();
    let total = || sinks.iter().map(|s| s.published().len()).sum::<usize>();
    eventually("ten events", || total() >= 10).await;
    tokio::time::sleep(LEASE).await;
    for running in runners {
        running.shutdown().await;
    }
    let counts = sinks.each_ref().map(|s| s.published().len());
    assert_eq!(total(), written.len(), "each event once: {counts:?}");
    assert!(counts.contains(&0), "one runner holds the one shard: {counts:?}");
}

#[tokio::test]
async fn two_runners_never_share_a_shard_and_the_survivor_takes_over_after_a_crash() {
    let f = Fixture::new().await;
    let mut written = Vec::new();
    for sequence in 1..=5 {
        written.push(f.write("t", sequence, false).await);
    }
    let sinks = [
        Arc::new(RecordingSink::default()),
        Arc::new(RecordingSink::default()),
    ];
    let mut runners: Vec<Option<Running>> = ["one", "two"]
        .iter()
        .zip(&sinks)
        .map(|(owner, sink)| {
            Some(start(f.runner(
                Shared::new(sink),
                RecordingQuarantine::default(),
                RecordingQuarantine::default(),
                config(owner),
            )))
        })
        .collect();
    let total = || sinks.iter().map(|s| s.published().len()).sum::<usize>();
    eventually("the first five events", || total() >= 5).await;
    let last = f.last_position().await;
    let deadline = Instant::now() + PATIENCE;
    let owner = loop {
        let lease = f.leases().await.pop().expect("a lease");
        if lease.checkpoint.as_deref() == Some(last.as_str()) {
            break lease.owner.expect("held");
        }
        assert!(Instant::now() < deadline, "checkpoint never reached {last}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (owner_index, survivor_index) = if owner.starts_with("one#") { (0, 1) } else { (1, 0) };
    assert_eq!(sinks[owner_index].published().len(), 5);
    assert!(
        sinks[survivor_index].published().is_empty(),
        "one owner at a time"
    );

    // Crash the owner: its task is dropped without releasing the lease.
    let crashed = runners[owner_index].take().unwrap();
    crashed.task.abort();
    assert!(crashed.task.await.unwrap_err().is_cancelled());
    let crashed_at = Instant::now();
    let lease = f.leases().await.pop().unwrap();
    assert_eq!(
        lease.owner.as_deref(),
        Some(owner.as_str()),
        "a crash does not release"
    );

    for sequence in 6..=10 {
        written.push(f.write("t", sequence, false).await);
    }
    eventually("the survivor's takeover", || {
        sinks[survivor_index].published().len() >= 5
    })
    .await;
    let waited = crashed_at.elapsed();
    assert!(
        waited >= LEASE / 2,
        "taken over only after expiry, waited {waited:?}"
    );
    let survivor = runners[survivor_index].take().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    survivor.shutdown().await;

    let mut all = sinks[owner_index].published();
    all.extend(sinks[survivor_index].published());
    assert_eq!(ids(&all), ids(&written), "everything once, in order");
    let lease = f.leases().await.pop().unwrap();
    assert_eq!(
        lease.checkpoint.as_deref(),
        Some(f.last_position().await.as_str())
    );
}

/// The retry budget is time: a bus outage shorter than it sends nothing to
/// the on-failure destination, however many attempts it takes. The runner
/// keeps the default budget (15 minutes); `OUTBOX_OUTAGE_SECONDS` sets the
/// outage (CI: 2 s; the figure in docs/RELIABILITY.md: 300 s).
#[tokio::test]
async fn an_outage_shorter_than_the_retry_budget_sends_nothing_to_on_failure() {
    let outage = Duration::from_secs(outbox_tests::size_from_env("OUTBOX_OUTAGE_SECONDS", 2) as u64);
    let f = Fixture::new().await;
    let mut written = Vec::new();
    for sequence in 1..=5 {
        written.push(f.write("outage", sequence, false).await);
    }
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let is_down = Arc::clone(&down);
    let sink = Arc::new(FlakySink::new(move |_, _| {
        if is_down.load(Ordering::SeqCst) {
            Fault::Entry(FailureClass::Transient, "InternalFailure")
        } else {
            Fault::Accept
        }
    }));
    let on_failure = Arc::new(RecordingQuarantine::default());
    let config = config("outage");
    assert_eq!(config.retry_budget, RunnerConfig::new("x").retry_budget);
    let running = start(f.runner(
        Shared::new(&sink),
        RecordingQuarantine::default(),
        Shared::new(&on_failure),
        config,
    ));
    // At least five failed attempts, where an attempt count of five would
    // already have given up.
    tokio::time::sleep(outage).await;
    down.store(false, Ordering::SeqCst);
    let recovered = Instant::now();
    eventually("every event after the outage", || sink.accepted().len() >= 5).await;
    let delivered_after = recovered.elapsed();
    let report = running.shutdown().await;
    eprintln!(
        "outage of {} s: every event delivered {:.2} s after it ended, {} sent to on-failure; {report}",
        outage.as_secs(),
        delivered_after.as_secs_f64(),
        on_failure.records().len()
    );

    assert!(report.failed_batches >= 5, "{report}");
    assert!(on_failure.records().is_empty(), "nothing sent on: {report}");
    let accepted: HashSet<Uuid> = ids(&sink.accepted()).into_iter().collect();
    assert_eq!(accepted, ids(&written).into_iter().collect());
}

#[tokio::test]
async fn a_record_the_sink_keeps_refusing_goes_to_the_on_failure_destination_after_its_retries() {
    let f = Fixture::new().await;
    let mut written = Vec::new();
    for sequence in 1..=5 {
        written.push(f.write("x", sequence, false).await);
    }
    let bad = written[2].id();
    let offers = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&offers);
    let sink = Arc::new(FlakySink::new(move |e, _| {
        if e.id() == bad {
            counted.fetch_add(1, Ordering::SeqCst);
            Fault::Entry(FailureClass::Transient, "ThrottlingException")
        } else {
            Fault::Accept
        }
    }));
    let quarantine = Arc::new(RecordingQuarantine::default());
    let on_failure = Arc::new(RecordingQuarantine::default());
    let mut config = config("retrier");
    // Attempts are about 200 ms apart (the relay's one retry, then the
    // runner's backoff), so the third attempt is past the budget.
    config.retry_budget = Duration::from_millis(300);
    let running = start(f.runner(
        Shared::new(&sink),
        Shared::new(&quarantine),
        Shared::new(&on_failure),
        config,
    ));
    eventually("the refused record sent on", || !on_failure.records().is_empty()).await;
    let last = f.last_position().await;
    let leases = f.lease_store();
    let key = ShardKey::new(&f.stream_arn, f.leases().await[0].shard_id.clone());
    let deadline = Instant::now() + PATIENCE;
    while leases.get(&key).await.unwrap().and_then(|l| l.checkpoint) != Some(last.clone()) {
        assert!(Instant::now() < deadline, "checkpoint never reached {last}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = running.shutdown().await;

    let records = read_stream(&f.table).await;
    let bad_position = records[2].dynamodb().unwrap().sequence_number().unwrap();
    let sent = on_failure.records();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].position, bad_position);
    assert_eq!(sent[0].event.as_ref().map(OutboxEvent::id), Some(bad));
    let reason = &sent[0].reason;
    let attempts: u32 = reason
        .strip_prefix("retries exhausted after ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{reason}"));
    assert!(attempts >= 2, "retried within the budget first: {reason}");
    assert_eq!(
        offers.load(Ordering::SeqCst),
        attempts * 2,
        "each batch attempt with its 1 relay retry: {reason}"
    );
    assert!(
        quarantine.records().is_empty(),
        "a transient failure is not poison"
    );

    let accepted = sink.accepted();
    let accepted_ids: HashSet<Uuid> = ids(&accepted).into_iter().collect();
    let expected: HashSet<Uuid> = ids(&written).into_iter().filter(|id| *id != bad).collect();
    assert_eq!(accepted_ids, expected, "every other event delivered");
    assert_eq!(
        accepted.len(),
        expected.len(),
        "the batch is read again from the refused record, but what was delivered is not published again"
    );
    assert!(report.already_delivered >= 2, "{report}");
    for (aggregate, sequences) in sequences_by_aggregate(&accepted) {
        assert_eq!(sequences[..2], [1, 2], "aggregate {aggregate} starts in order");
    }
    assert_eq!(report.failed_batches, attempts as usize);
    assert_eq!(report.sent_to_on_failure, 1);
}

#[tokio::test]
async fn a_poison_item_is_quarantined_and_the_rest_delivered() {
    let f = Fixture::new().await;
    let before = f.write("p", 1, false).await;
    let schema = OutboxSchema::new(&f.table);
    let poison_event = event("p", 2);
    let mut item = schema.to_item(
        &poison_event,
        OutboxSchema::default_partition_value(&poison_event),
    );
    item.insert("sequence".into(), AttributeValue::S("not-a-number".into()));
    dynamodb_client()
        .put_item()
        .table_name(&f.table)
        .set_item(Some(item))
        .send()
        .await
        .expect("put poison item");
    let after = f.write("p", 3, false).await;

    let sink = Arc::new(RecordingSink::default());
    let quarantine = Arc::new(RecordingQuarantine::default());
    let on_failure = Arc::new(RecordingQuarantine::default());
    let running = start(f.runner(
        Shared::new(&sink),
        Shared::new(&quarantine),
        Shared::new(&on_failure),
        config("poison"),
    ));
    eventually("two events and one quarantined record", || {
        sink.published().len() >= 2 && !quarantine.records().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = running.shutdown().await;

    assert_eq!(ids(&sink.published()), [before.id(), after.id()]);
    let quarantined = quarantine.records();
    assert_eq!(quarantined.len(), 1);
    let records = read_stream(&f.table).await;
    assert_eq!(
        quarantined[0].position,
        records[1].dynamodb().unwrap().sequence_number().unwrap()
    );
    assert!(
        quarantined[0].reason.contains("sequence"),
        "{}",
        quarantined[0].reason
    );
    let raw = quarantined[0].raw.as_deref().expect("the raw record");
    assert!(raw.contains("not-a-number"), "{raw}");
    assert!(raw.contains(&poison_event.id().to_string()), "{raw}");
    assert!(on_failure.records().is_empty());
    assert_eq!(
        (report.published, report.quarantined, report.failed_batches),
        (2, 1, 0)
    );
    let lease = f.leases().await.pop().unwrap();
    assert_eq!(
        lease.checkpoint.as_deref(),
        Some(f.last_position().await.as_str())
    );
}

/// Records too large for a quarantine message (a valid event over the
/// PutEvents entry limit, a poison item near DynamoDB's 400 KB) are stored
/// in S3 by claim-check; the shard moves on in one pass.
#[tokio::test]
async fn records_of_any_size_are_quarantined_by_claim_check_and_the_shard_moves_on() {
    let f = Fixture::new().await;
    let moto = endpoint(MOTO_ENDPOINT_VAR);
    let (sqs, s3) = (sqs_client(&moto), s3_client(&moto));
    let queue = create_queue(&sqs, &unique_name("claim-quarantine"))
        .await
        .unwrap();
    let bucket = create_bucket(&s3, &unique_name("claim")).await.unwrap();
    let schema = OutboxSchema::new(&f.table).with_max_event_bytes(None);
    let put = |event: &OutboxEvent, poison: bool| {
        let mut item = schema.to_item(event, OutboxSchema::default_partition_value(event));
        if poison {
            item.insert("sequence".into(), AttributeValue::S("not-a-number".into()));
        }
        dynamodb_client()
            .put_item()
            .table_name(&f.table)
            .set_item(Some(item))
            .send()
    };
    let big = |order: &str| {
        OutboxEvent::builder("com.example.orders", "OrderChanged")
            .aggregate("Order", order)
            .sequence(1)
            .payload(&json!({ "blob": "x".repeat(300 * 1024) }))
            .build(&SystemClock)
            .unwrap()
    };
    let before = f.write("a", 1, false).await;
    let too_large = big("large");
    put(&too_large, false).await.expect("put a 300 KB event");
    let poison = big("poison");
    put(&poison, true).await.expect("put a 300 KB poison item");
    let after = f.write("a", 2, false).await;

    let sink = Arc::new(RecordingSink::default());
    let quarantine = SqsQuarantine::new(sqs.clone(), &queue.url)
        .with_origin(format!("dynamodb:{}", f.table))
        .with_claim_check(S3ClaimCheck::new(s3.clone(), &bucket));
    let on_failure = Arc::new(RecordingQuarantine::default());
    let running = start(f.runner(
        Shared::new(&sink),
        quarantine,
        Shared::new(&on_failure),
        config("claim"),
    ));
    eventually("both small events", || sink.published().len() >= 2).await;
    let last = f.last_position().await;
    let leases = f.lease_store();
    let mut checkpoint = None;
    let deadline = Instant::now() + PATIENCE;
    while checkpoint.as_deref() != Some(last.as_str()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        checkpoint = leases
            .list(&f.stream_arn)
            .await
            .unwrap()
            .pop()
            .and_then(|l| l.checkpoint);
    }
    let report = running.shutdown().await;

    assert_eq!(
        checkpoint.as_deref(),
        Some(last.as_str()),
        "the checkpoint passed every record"
    );
    assert_eq!(ids(&sink.published()), [before.id(), after.id()]);
    assert_eq!(
        (
            report.quarantined,
            report.failed_batches,
            report.sent_to_on_failure
        ),
        (2, 0, 0),
        "one pass, nothing to the on-failure destination: {report}"
    );
    let messages = drain_queue(&sqs, &queue.url).await.unwrap();
    assert_eq!(messages.len(), 2);
    for message in messages {
        let message = QuarantineMessage::from_body(&message.body).unwrap();
        assert!(message.claim_check.is_some(), "{message:?}");
        let whole = message.resolve(&s3).await.unwrap();
        match whole.outbox_event() {
            Some(event) => assert_eq!(event.unwrap(), too_large),
            None => {
                let raw = whole.raw.expect("the poison record whole");
                assert!(raw.contains(&poison.id().to_string()) && raw.len() > 300 * 1024);
            }
        }
    }
}

#[tokio::test]
async fn the_lease_store_keeps_one_owner_and_a_checkpoint_that_only_moves_forward() {
    let client = dynamodb_client();
    let table = unique_name("leases");
    create_lease_table(&client, &table).await.unwrap();
    create_lease_table(&client, &table)
        .await
        .expect("an existing table is fine");
    let clock = Arc::new(FixedClock::new(chrono::Utc::now()));
    let store = DynamoDbLeaseStore::new(client, &table).with_clock(clock.clone());
    let key = ShardKey::new("arn:stream", "shard-1");
    let second = Duration::from_secs(1);

    let lease = store.acquire(&key, "a", Some("shard-0"), second).await.unwrap();
    assert_eq!(lease.owner.as_deref(), Some("a"));
    assert_eq!(
        (lease.checkpoint, lease.parent.as_deref()),
        (None, Some("shard-0"))
    );
    assert!(matches!(
        store.acquire(&key, "b", None, second).await,
        Err(LeaseError::Held { owner, .. }) if owner == "a"
    ));
    assert!(matches!(
        store.checkpoint(&key, "b", "5").await,
        Err(LeaseError::LostLease { owner: Some(o), .. }) if o == "a"
    ));

    // Numbers, not strings: "10" > "9" > "000000000000000000008".
    store
        .checkpoint(&key, "a", "000000000000000000008")
        .await
        .unwrap();
    store.checkpoint(&key, "a", "10").await.unwrap();
    store.checkpoint(&key, "a", "9").await.unwrap();
    assert_eq!(
        store.get(&key).await.unwrap().unwrap().checkpoint.as_deref(),
        Some("10")
    );
    store
        .checkpoint(&key, "a", "000000000000000000011")
        .await
        .unwrap();
    assert_eq!(
        store.get(&key).await.unwrap().unwrap().checkpoint.as_deref(),
        Some("000000000000000000011")
    );
    assert!(matches!(
        store.checkpoint(&key, "a", "12x").await,
        Err(LeaseError::InvalidSequenceNumber { .. })
    ));

    // A failing record keeps the time of its first failure; another restarts the count and the time.
    let first = store.record_failure(&key, "a", "12").await.unwrap();
    assert_eq!((first.attempts, first.since_ms), (1, store.now_ms()));
    clock.advance(chrono::Duration::milliseconds(100));
    let again = store.record_failure(&key, "a", "12").await.unwrap();
    assert_eq!((again.attempts, again.since_ms), (2, first.since_ms));
    let other = store.record_failure(&key, "a", "13").await.unwrap();
    assert_eq!((other.attempts, other.since_ms), (1, first.since_ms + 100));
    assert_eq!(
        store.get(&key).await.unwrap().unwrap().failing_since_ms,
        Some(other.since_ms)
    );
    assert!(matches!(
        store.record_failure(&key, "b", "13").await,
        Err(LeaseError::LostLease { .. })
    ));

    // Expiry: renewing keeps it, expiring lets another owner in.
    clock.advance(chrono::Duration::milliseconds(900));
    store.renew(&key, "a", second).await.unwrap();
    clock.advance(chrono::Duration::milliseconds(900));
    assert!(matches!(
        store.acquire(&key, "b", None, second).await,
        Err(LeaseError::Held { .. })
    ));
    clock.advance(chrono::Duration::milliseconds(200));
    let taken = store.acquire(&key, "b", None, second).await.unwrap();
    assert_eq!(taken.owner.as_deref(), Some("b"));
    assert_eq!(
        taken.checkpoint.as_deref(),
        Some("000000000000000000011"),
        "the checkpoint stays"
    );
    assert_eq!(
        (taken.failures, taken.failing_position.as_deref()),
        (1, Some("13"))
    );
    assert!(matches!(
        store.renew(&key, "a", second).await,
        Err(LeaseError::LostLease { .. })
    ));
    assert!(matches!(
        store.release(&key, "a").await,
        Err(LeaseError::LostLease { .. })
    ));

    // Release frees it at once; finish closes it for good.
    store.release(&key, "b").await.unwrap();
    store.acquire(&key, "a", None, second).await.unwrap();
    store.finish(&key, "a").await.unwrap();
    let finished = store.get(&key).await.unwrap().unwrap();
    assert!(finished.finished && finished.owner.is_none());
    assert!(matches!(
        store.acquire(&key, "b", None, second).await,
        Err(LeaseError::Finished { .. })
    ));
    assert_eq!(store.list("arn:stream").await.unwrap(), vec![finished]);
    assert!(store.list("arn:other").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_table_or_stream_is_a_whole_run_error() {
    let client = dynamodb_client();
    let missing = unique_name("missing");
    assert!(matches!(
        stream_arn_for_table(&client, &missing).await,
        Err(RunnerError::TableNotFound { table }) if table == missing
    ));

    let f = Fixture::new().await;
    let runner = DynamoDbStreamRunner::new(
        streams_client(),
        f.lease_store(),
        format!("{}-gone", f.stream_arn),
        DynamoDbStreamDecoder::new(OutboxSchema::new(&f.table)),
        Relay::new(
            RecordingSink::default(),
            RecordingQuarantine::default(),
            relay_config(),
        ),
        RecordingQuarantine::default(),
        config("lost"),
    );
    let result = tokio::time::timeout(PATIENCE, runner.run(std::future::pending()))
        .await
        .expect("fails at once");
    assert!(
        matches!(&result, Err(RunnerError::StreamNotFound { stream_arn }) if stream_arn.ends_with("-gone")),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_closed_shard_is_read_to_its_end_and_finished() {
    let f = Fixture::new().await;
    let mut written = Vec::new();
    for sequence in 1..=3 {
        written.push(f.write("z", sequence, false).await);
    }
    // Disabling the stream closes its shard (DynamoDB Local gives it an
    // EndingSequenceNumber, and GetRecords ends without NextShardIterator).
    dynamodb_client()
        .update_table()
        .table_name(&f.table)
        .stream_specification(
            aws_sdk_dynamodb::types::StreamSpecification::builder()
                .stream_enabled(false)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("disable the stream");
    let last = f.last_position().await;

    let sink = Arc::new(RecordingSink::default());
    let running = start(f.runner(
        Shared::new(&sink),
        RecordingQuarantine::default(),
        RecordingQuarantine::default(),
        config("closer"),
    ));
    let store = f.lease_store();
    let deadline = Instant::now() + PATIENCE;
    let lease = loop {
        if let Some(lease) = store.list(&f.stream_arn).await.unwrap().pop()
            && lease.finished
        {
            break lease;
        }
        assert!(Instant::now() < deadline, "the shard was never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await; // a discovery round after the finish
    let report = running.shutdown().await;

    assert_eq!(ids(&sink.published()), ids(&written));
    assert_eq!(lease.checkpoint.as_deref(), Some(last.as_str()));
    assert_eq!(lease.owner, None);
    assert_eq!(report.shards_finished, 1, "finished once, never taken again");
    assert_eq!(report.published, 3);
}

#[tokio::test]
async fn a_stream_without_new_images_stops_the_run() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        StreamSpecification, StreamViewType,
    };
    let client = dynamodb_client();
    let table = unique_name("keys-only");
    client
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::KeysOnly)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("create a KEYS_ONLY table");
    match stream_arn_for_table(&client, &table).await {
        Err(RunnerError::StreamViewType { view_type, .. }) => assert_eq!(view_type, "KEYS_ONLY"),
        other => panic!("expected StreamViewType, got {other:?}"),
    }
    let described = client.describe_table().table_name(&table).send().await.unwrap();
    let stream_arn = described.table().unwrap().latest_stream_arn().unwrap().to_owned();
    client
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S("k".into()))
        .send()
        .await
        .unwrap();

    let leases_table = unique_name("keys-only-leases");
    create_lease_table(&client, &leases_table).await.unwrap();
    let runner = DynamoDbStreamRunner::new(
        streams_client(),
        DynamoDbLeaseStore::new(client.clone(), &leases_table),
        &stream_arn,
        DynamoDbStreamDecoder::new(OutboxSchema::new(&table).with_sort_key("sk")),
        Relay::new(
            RecordingSink::default(),
            RecordingQuarantine::default(),
            relay_config(),
        ),
        RecordingQuarantine::default(),
        config("keys"),
    );
    let result = tokio::time::timeout(PATIENCE, runner.run(std::future::pending()))
        .await
        .expect("fails at once");
    assert!(
        matches!(
            &result,
            Err(RunnerError::Decode(
                outbox_dynamodb_relay::StreamError::MissingNewImage { .. }
            ))
        ),
        "{result:?}"
    );
    let leases = DynamoDbLeaseStore::new(client, &leases_table)
        .list(&stream_arn)
        .await
        .unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].owner, None, "released on the way out");
    assert_eq!(leases[0].checkpoint, None, "nothing was done");
}

#[tokio::test]
async fn runners_announce_themselves_until_they_withdraw_or_expire() {
    let client = dynamodb_client();
    let table = unique_name("leases");
    create_lease_table(&client, &table).await.unwrap();
    let clock = Arc::new(FixedClock::new(chrono::Utc::now()));
    let store = DynamoDbLeaseStore::new(client, &table).with_clock(clock.clone());
    let second = Duration::from_secs(1);

    store.announce("arn:stream", "b", second).await.unwrap();
    store.announce("arn:stream", "a", 10 * second).await.unwrap();
    store.announce("arn:other", "c", second).await.unwrap();
    assert_eq!(store.runners("arn:stream").await.unwrap(), ["a", "b"]);
    // The announcements are apart from the stream's leases.
    assert!(store.list("arn:stream").await.unwrap().is_empty());

    clock.advance(chrono::Duration::seconds(2));
    assert_eq!(store.runners("arn:stream").await.unwrap(), ["a"]);
    store.withdraw("arn:stream", "a").await.unwrap();
    assert!(store.runners("arn:stream").await.unwrap().is_empty());
    assert_eq!(store.runners("arn:other").await.unwrap(), Vec::<String>::new());
}
