//! The end-to-end demo on local emulators: the writer commits orders and
//! their events to DynamoDB Local, the standalone relay tails the table's
//! stream and publishes to EventBridge (moto), a rule delivers to an SQS
//! queue, and the demo reads that queue to show what arrived.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use outbox_core::{OutboxEvent, SystemClock};
use outbox_dynamodb::{
    ATTR_SEQUENCE, DynamoDbOutboxWriter, Item, OutboxSchema, OutboxTransaction, WriteError, put_versioned,
};
use outbox_dynamodb_relay::{RunnerConfig, RunnerReport};
use outbox_eventbridge::QuarantineMessage;
use outbox_lambda::{Config, ENV_EVENT_BUS_NAME, ENV_QUARANTINE_QUEUE_URL, ENV_TABLE_NAME};
use serde_json::{Value, json};

use crate::bootstrap::{LocalStack, ReceivedMessage, create_local_stack, drain_queue};
use crate::relay::{RunnerOptions, run_dynamodb};

const SOURCE: &str = "com.example.orders";

/// What the demo does. The endpoints come from the AWS configuration
/// (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Orders to place.
    pub orders: u32,
}

/// What the demo counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DemoReport {
    /// Outbox events committed.
    pub written: usize,
    /// Distinct events that arrived at the bus's target queue.
    pub delivered: usize,
    /// Arrivals of an event already seen (at-least-once delivery).
    pub duplicates: usize,
    /// Records the relay skipped (aggregates, updates).
    pub skipped: usize,
    /// Records quarantined.
    pub quarantined: usize,
    /// Deliveries the idempotent consumer handled (its handler ran).
    pub consumed: usize,
    /// Redeliveries the consumer absorbed without running its handler.
    pub duplicates_absorbed: usize,
    /// Commit-to-delivery latency, 50th percentile, milliseconds.
    pub latency_p50_ms: i64,
    /// Commit-to-delivery latency, 99th percentile, milliseconds.
    pub latency_p99_ms: i64,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// Creating or reading local resources failed.
    #[error("local resources")]
    Bootstrap(#[from] crate::bootstrap::BootstrapError),
    /// A commit that should have succeeded failed.
    #[error("commit failed")]
    Write(#[from] WriteError),
    /// Building an event failed.
    #[error("building an event failed")]
    Envelope(#[from] outbox_core::EnvelopeError),
    /// The relay's configuration is wrong.
    #[error("relay configuration")]
    Config(#[from] outbox_lambda::ConfigError),
    /// The relay failed.
    #[error("the relay failed")]
    Relay(#[from] crate::relay::RelayCommandError),
    /// The idempotent consumer failed.
    #[error("the consumer failed")]
    Consumer(#[from] outbox_consumer::ConsumerError),
    /// Replaying events failed.
    #[error("the replay failed")]
    Replay(#[from] crate::replay::ReplayError),
    /// Writing the report failed.
    #[error("writing output failed")]
    Output(#[from] std::io::Error),
    /// What arrived does not match what was written.
    #[error("{0}")]
    Mismatch(String),
}

fn order(id: u32, status: &str, total: u32) -> Item {
    HashMap::from([
        ("pk".to_string(), AttributeValue::S(format!("Order#o-{id}"))),
        ("sk".to_string(), AttributeValue::S("ORDER".into())),
        ("status".to_string(), AttributeValue::S(status.into())),
        ("total".to_string(), AttributeValue::N(total.to_string())),
    ])
}

fn event(
    id: u32,
    sequence: u64,
    event_type: &str,
    total: u32,
) -> Result<OutboxEvent, outbox_core::EnvelopeError> {
    OutboxEvent::builder(SOURCE, event_type)
        .aggregate("Order", format!("o-{id}"))
        .sequence(sequence)
        .payload(&json!({ "orderId": format!("o-{id}"), "total": total, "currency": "EUR" }))
        .metadata("tenant", "demo")
        .build(&SystemClock)
}

/// Commits the orders; returns the ids of the events written.
async fn write_orders(
    writer: &DynamoDbOutboxWriter,
    orders: u32,
    out: &mut dyn Write,
) -> Result<Vec<OutboxEvent>, DemoError> {
    let table = writer.schema().table().to_owned();
    // Client request tokens are remembered per account for 10 minutes, across
    // tables: make this run's tokens its own.
    let run = uuid::Uuid::now_v7().simple().to_string();
    let run = &run[run.len() - 8..];
    let mut written = Vec::new();
    for id in 1..=orders {
        let total = 1000 + id * 150;
        let placed = event(id, 1, "OrderPlaced", total)?;
        writer
            .commit(
                OutboxTransaction::new()
                    .operation(put_versioned(
                        &table,
                        order(id, "PLACED", total),
                        "version",
                        None,
                    )?)
                    .event(placed.clone())
                    .client_request_token(format!("place-o-{id}-{run}")),
            )
            .await?;
        written.push(placed);
        if id % 2 == 1 {
            let paid = event(id, 2, "OrderPaid", total)?;
            let shipment = event(id, 2, "ShipmentRequested", total)?;
            writer
                .commit(
                    OutboxTransaction::new()
                        .operation(put_versioned(
                            &table,
                            order(id, "PAID", total),
                            "version",
                            Some(1),
                        )?)
                        .event(paid.clone())
                        .event(shipment.clone()),
                )
                .await?;
            written.extend([paid, shipment]);
        }
    }
    writeln!(
        out,
        "wrote {orders} orders: {} outbox events, each in the transaction of its change",
        written.len()
    )?;

    // A writer holding a stale version loses, and writes no event.
    let stale = OutboxTransaction::new()
        .operation(put_versioned(
            &table,
            order(1, "CANCELLED", 0),
            "version",
            Some(1),
        )?)
        .event(event(1, 2, "OrderCancelled", 0)?);
    match writer.commit(stale).await {
        Err(err @ WriteError::ConditionFailed { .. }) => writeln!(out, "stale update of o-1 refused: {err}")?,
        Ok(_) => return Err(DemoError::Mismatch("a stale update of o-1 was committed".into())),
        Err(other) => return Err(other.into()),
    }
    // A retry with the same ClientRequestToken does not write a second event.
    let retry = OutboxTransaction::new()
        .operation(put_versioned(&table, order(1, "PLACED", 1150), "version", None)?)
        .event(written[0].clone())
        .client_request_token(format!("place-o-1-{run}"));
    writer.commit(retry).await?;
    writeln!(
        out,
        "o-1 placed again with its ClientRequestToken: absorbed, no second event"
    )?;
    Ok(written)
}

/// Puts an outbox item whose `sequence` is a string: the relay must
/// quarantine it with its full content and deliver everything else.
async fn write_poison(client: &aws_sdk_dynamodb::Client, schema: &OutboxSchema) -> Result<(), DemoError> {
    let poison = event(999, 1, "OrderPlaced", 1)?;
    let mut item = schema.to_item(&poison, OutboxSchema::default_partition_value(&poison));
    item.insert(ATTR_SEQUENCE.into(), AttributeValue::S("one".into()));
    client
        .put_item()
        .table_name(schema.table())
        .set_item(Some(item))
        .send()
        .await
        .map_err(|e| DemoError::Mismatch(format!("writing the poison item failed: {e}")))?;
    Ok(())
}

fn relay_config(stack: &LocalStack) -> Result<Config, outbox_lambda::ConfigError> {
    let vars = HashMap::from([
        (ENV_TABLE_NAME, stack.table.clone()),
        (ENV_EVENT_BUS_NAME, stack.bus.bus.clone()),
        (ENV_QUARANTINE_QUEUE_URL, stack.quarantine.url.clone()),
    ]);
    Config::from_lookup(|k| vars.get(k).cloned())
}

/// Runs every delivered envelope through the idempotent consumer; returns
/// (handler runs, duplicates absorbed).
async fn consume(
    consumer: &outbox_consumer::IdempotentConsumer,
    envelopes: &[Value],
) -> Result<(usize, usize), DemoError> {
    let (mut ran, mut absorbed) = (0, 0);
    for envelope in envelopes {
        let event = outbox_consumer::outbox_event_from_eventbridge(envelope)?;
        let outcome = consumer
            .process(&event, || async {
                // The consumer's own work would go here, once per event id.
                Ok::<_, std::convert::Infallible>(json!({ "handled": event.event_type() }))
            })
            .await?;
        if outcome.is_duplicate() {
            absorbed += 1;
        } else {
            ran += 1;
        }
    }
    Ok((ran, absorbed))
}

/// The consumer side: an idempotent consumer handles every delivery once,
/// then `outbox replay` republishes one aggregate's events through the bus
/// and the consumer absorbs them as duplicates.
async fn consumer_stage(
    sdk: &aws_config::SdkConfig,
    stack: &LocalStack,
    prefix: &str,
    first_delivery: &[Value],
    out: &mut dyn Write,
) -> Result<(usize, usize), DemoError> {
    use outbox_consumer::{IdempotencyStore, IdempotentConsumer, create_idempotency_table};
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let table = format!("{prefix}-idempotency");
    create_idempotency_table(&ddb, &table).await?;
    let consumer = IdempotentConsumer::new(IdempotencyStore::new(ddb.clone(), &table, "demo-consumer"));
    let (ran, _) = consume(&consumer, first_delivery).await?;

    let sink =
        outbox_eventbridge::EventBridgeSink::new(aws_sdk_eventbridge::Client::new(sdk), &stack.bus.bus);
    let replay = crate::replay::ReplayOptions {
        schema: OutboxSchema::new(&stack.table),
        selection: crate::replay::ReplaySelection::Aggregate {
            aggregate_type: "Order".into(),
            aggregate_id: "o-1".into(),
        },
        from: None,
        to: None,
        now: chrono::Utc::now(),
        event_ids: Vec::new(),
        dry_run: false,
    };
    let replayed = crate::replay::replay(&ddb, &sink, &replay, &mut std::io::sink()).await?;
    let mut redelivered = Vec::new();
    let until = Instant::now() + Duration::from_secs(20);
    while redelivered.len() < replayed.published && Instant::now() < until {
        for m in drain_queue(&sqs, &stack.bus.target.url).await? {
            redelivered.push(serde_json::from_str(&m.body).unwrap_or(Value::Null));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ran_again, absorbed) = consume(&consumer, &redelivered).await?;
    writeln!(
        out,
        "\nconsumer (idempotency table {table}): handled {ran} deliveries once; `outbox replay` of Order#o-1 \
         republished {} events, {} came back through the bus and were absorbed as duplicates ({ran_again} handler runs)",
        replayed.published, absorbed,
    )?;
    if ran_again != 0 || absorbed != replayed.published {
        return Err(DemoError::Mismatch(format!(
            "replayed {} events: {absorbed} absorbed, {ran_again} handled again",
            replayed.published
        )));
    }
    Ok((ran, absorbed))
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64)).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs the demo, writing what happens to `out`.
pub async fn run(
    sdk: &aws_config::SdkConfig,
    options: &DemoOptions,
    out: &mut dyn Write,
) -> Result<DemoReport, DemoError> {
    let started = Instant::now();
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let prefix = format!("demo-{}", std::process::id());
    let stack = create_local_stack(
        &ddb,
        &aws_sdk_eventbridge::Client::new(sdk),
        &sqs,
        &aws_sdk_s3::Client::new(sdk),
        &prefix,
        SOURCE,
    )
    .await?;
    writeln!(
        out,
        "local stack: table {} (stream NEW_IMAGE, TTL), bus {} with a rule to queue {}, quarantine and on-failure queues",
        stack.table, stack.bus.bus, stack.bus.target.url
    )?;

    let schema = OutboxSchema::new(&stack.table);
    let writer = DynamoDbOutboxWriter::new(ddb.clone(), schema.clone());
    let written = write_orders(&writer, options.orders, out).await?;
    write_poison(&ddb, &schema).await?;
    writeln!(
        out,
        "wrote one malformed outbox item (`sequence` is a string) to show the quarantine"
    )?;

    let config = relay_config(&stack)?;
    let mut runner = RunnerConfig::new("demo");
    runner.backoff_initial = Duration::from_millis(50);
    runner.backoff_max = Duration::from_millis(500);
    let runner_options = RunnerOptions {
        lease_table: format!("{prefix}-leases"),
        create_lease_table: true,
        on_failure_queue_url: stack.on_failure.url.clone(),
        runner,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay_sdk = sdk.clone();
    let relay = tokio::spawn(async move {
        run_dynamodb(&config, &runner_options, &relay_sdk, async move {
            let _ = stopped.await;
        })
        .await
    });
    writeln!(
        out,
        "relay running (standalone stream runner → EventBridge); waiting for deliveries..."
    )?;

    let wanted: HashSet<String> = written.iter().map(|e| e.id().to_string()).collect();
    let mut arrivals: Vec<(Value, ReceivedMessage)> = Vec::new();
    let mut seen = HashSet::new();
    let wait_until = Instant::now() + Duration::from_secs(60);
    while !wanted.is_subset(&seen) && Instant::now() < wait_until && !relay.is_finished() {
        for message in drain_queue(&sqs, &stack.bus.target.url).await? {
            let envelope: Value = serde_json::from_str(&message.body).unwrap_or(Value::Null);
            if let Some(id) = envelope["detail"]["id"].as_str() {
                seen.insert(id.to_owned());
            }
            arrivals.push((envelope, message));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    let report: RunnerReport = match relay.await {
        Ok(result) => result?,
        Err(join) => return Err(DemoError::Mismatch(format!("the relay task failed: {join}"))),
    };

    writeln!(
        out,
        "\narrived at the bus's target queue (first 12 of {}):",
        arrivals.len()
    )?;
    let mut latencies = Vec::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (envelope, message) in &arrivals {
        let detail = &envelope["detail"];
        let occurred =
            chrono::DateTime::parse_from_rfc3339(detail["occurred_at"].as_str().unwrap_or_default())
                .map(|t| t.timestamp_millis())
                .unwrap_or(message.sent_at_ms);
        latencies.push(message.sent_at_ms - occurred);
        *counts
            .entry(detail["id"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    for (envelope, message) in arrivals.iter().take(12) {
        let d = &envelope["detail"];
        writeln!(
            out,
            "  {:<18} {}#{:<5} seq={} id={} (+{} ms)",
            envelope["detail-type"].as_str().unwrap_or("?"),
            d["aggregate_type"].as_str().unwrap_or("?"),
            d["aggregate_id"].as_str().unwrap_or("?"),
            d["sequence"],
            d["id"].as_str().unwrap_or("?"),
            message.sent_at_ms
                - chrono::DateTime::parse_from_rfc3339(d["occurred_at"].as_str().unwrap_or_default())
                    .map(|t| t.timestamp_millis())
                    .unwrap_or(message.sent_at_ms),
        )?;
    }

    let quarantined = drain_queue(&sqs, &stack.quarantine.url).await?;
    writeln!(out, "\nquarantine queue ({} message):", quarantined.len())?;
    for message in &quarantined {
        match QuarantineMessage::from_body(&message.body) {
            Ok(q) => writeln!(
                out,
                "  position {} — {} (full record kept: {} bytes)",
                q.position,
                q.reason,
                q.raw.as_deref().map_or(0, str::len)
            )?,
            Err(e) => writeln!(out, "  unreadable quarantine message: {e}")?,
        }
    }

    let envelopes: Vec<Value> = arrivals.iter().map(|(envelope, _)| envelope.clone()).collect();
    let (consumed, duplicates_absorbed) = consumer_stage(sdk, &stack, &prefix, &envelopes, out).await?;

    latencies.sort_unstable();
    let demo = DemoReport {
        written: written.len(),
        delivered: seen.intersection(&wanted).count(),
        duplicates: counts.values().map(|n| n - 1).sum(),
        skipped: report.skipped,
        quarantined: report.quarantined,
        consumed,
        duplicates_absorbed,
        latency_p50_ms: percentile(&latencies, 50.0),
        latency_p99_ms: percentile(&latencies, 99.0),
    };
    writeln!(
        out,
        "\nsummary: written {}, published {}, delivered {} (duplicates {}), skipped {}, quarantined {}, \
         consumed {} (replayed duplicates absorbed {}), commit-to-delivery p50 {} ms / p99 {} ms, {:.1} s in all",
        demo.written,
        report.published,
        demo.delivered,
        demo.duplicates,
        demo.skipped,
        demo.quarantined,
        demo.consumed,
        demo.duplicates_absorbed,
        demo.latency_p50_ms,
        demo.latency_p99_ms,
        started.elapsed().as_secs_f64()
    )?;
    if demo.delivered != demo.written {
        return Err(DemoError::Mismatch(format!(
            "{} events written but {} delivered",
            demo.written, demo.delivered
        )));
    }
    if quarantined.len() != 1 {
        return Err(DemoError::Mismatch(format!(
            "expected 1 quarantined record, found {}",
            quarantined.len()
        )));
    }
    Ok(demo)
}
