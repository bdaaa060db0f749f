//! The writer demo: commits orders and their events through the outbox
//! writer on DynamoDB Local, shows what landed in the table, and reads the
//! table's stream back to show one INSERT per outbox event.

use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodbstreams::types::{AttributeValue as StreamValue, OperationType};
use outbox_core::{OutboxEvent, SystemClock};
use outbox_dynamodb::{
    DynamoDbOutboxWriter, Item, OutboxSchema, OutboxTransaction, WriteError, put_versioned,
};
use serde_json::json;

use crate::bootstrap::{create_outbox_table, read_stream};
use crate::local::{dynamodb_client, streams_client};

/// What the demo does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// DynamoDB (Local) endpoint.
    pub dynamodb_endpoint: String,
    /// Orders to place.
    pub orders: u32,
}

/// What the demo counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DemoReport {
    /// The table it created.
    pub table: String,
    /// Transactions committed.
    pub commits: u32,
    /// Outbox events committed.
    pub events: u32,
    /// Stale writes refused with a version conflict.
    pub conflicts: u32,
    /// Retries absorbed by the client request token.
    pub idempotent_retries: u32,
    /// INSERT records of outbox items seen on the stream.
    pub stream_outbox_inserts: u32,
    /// Other stream records (the aggregates).
    pub stream_other: u32,
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
    /// Writing the report failed.
    #[error("writing output failed")]
    Output(#[from] std::io::Error),
    /// What the stream shows does not match what was committed.
    #[error("the stream does not match the commits: {0}")]
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
    OutboxEvent::builder("com.example.orders", event_type)
        .aggregate("Order", format!("o-{id}"))
        .sequence(sequence)
        .payload(&json!({ "orderId": format!("o-{id}"), "total": total, "currency": "EUR" }))
        .metadata("tenant", "demo")
        .build(&SystemClock)
}

fn text(v: Option<&StreamValue>) -> &str {
    match v {
        Some(StreamValue::S(s) | StreamValue::N(s)) => s,
        _ => "-",
    }
}

/// Runs the demo, writing what happens to `out`.
pub async fn run(options: &DemoOptions, out: &mut dyn Write) -> Result<DemoReport, DemoError> {
    let client = dynamodb_client(&options.dynamodb_endpoint);
    let started = Instant::now();
    let table = format!("outbox-demo-{}", chrono_free_millis());
    create_outbox_table(&client, &table).await?;
    writeln!(
        out,
        "created table {table} (pk/sk, NEW_IMAGE stream, TTL on `ttl`)"
    )?;
    let writer = DynamoDbOutboxWriter::new(client.clone(), OutboxSchema::new(&table));
    let mut report = DemoReport {
        table: table.clone(),
        ..DemoReport::default()
    };

    for id in 1..=options.orders {
        let total = 1000 + id * 150;
        writer
            .commit(
                OutboxTransaction::new()
                    .operation(put_versioned(
                        &table,
                        order(id, "PLACED", total),
                        "version",
                        None,
                    )?)
                    .event(event(id, 1, "OrderPlaced", total)?),
            )
            .await?;
        report.commits += 1;
        report.events += 1;
        if id % 2 == 1 {
            let tx = OutboxTransaction::new()
                .operation(put_versioned(
                    &table,
                    order(id, "PAID", total),
                    "version",
                    Some(1),
                )?)
                .event(event(id, 2, "OrderPaid", total)?)
                .event(event(id, 2, "ShipmentRequested", total)?);
            writer.commit(tx).await?;
            report.commits += 1;
            report.events += 2;
        }
    }
    writeln!(
        out,
        "committed {} transactions carrying {} outbox events for {} orders",
        report.commits, report.events, options.orders
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
        Err(err @ WriteError::ConditionFailed { .. }) => {
            writeln!(out, "stale update of o-1 refused: {err}")?;
            report.conflicts += 1;
        }
        Ok(_) => return Err(DemoError::Mismatch("a stale update of o-1 was committed".into())),
        Err(other) => return Err(other.into()),
    }

    // A retry with the same ClientRequestToken does not write a second event.
    let id = options.orders + 1;
    let tx = OutboxTransaction::new()
        .operation(put_versioned(&table, order(id, "PLACED", 500), "version", None)?)
        .event(event(id, 1, "OrderPlaced", 500)?)
        .client_request_token(format!("place-o-{id}"));
    writer.commit(tx.clone()).await?;
    writer.commit(tx).await?;
    report.commits += 1;
    report.events += 1;
    report.idempotent_retries += 1;
    writeln!(
        out,
        "o-{id} committed twice with one ClientRequestToken: one event"
    )?;

    let partition = client
        .query()
        .table_name(&table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S("Order#o-1".into()))
        .send()
        .await
        .map_err(|e| DemoError::Mismatch(format!("query failed: {e}")))?;
    writeln!(out, "\npartition Order#o-1 (aggregate and its outbox items):")?;
    for item in partition.items() {
        let s = |k: &str| match item.get(k) {
            Some(AttributeValue::S(v) | AttributeValue::N(v)) => v.as_str(),
            _ => "",
        };
        writeln!(
            out,
            "  sk={:<70} version={:<2} status={:<7} event_type={}",
            s("sk"),
            s("version"),
            s("status"),
            s("event_type")
        )?;
    }

    let streams = streams_client(&options.dynamodb_endpoint);
    let records = read_stream(&client, &streams, &table).await?;
    writeln!(out, "\nstream records of {table}:")?;
    for r in &records {
        let Some(data) = r.dynamodb() else { continue };
        let image = data.new_image().cloned().unwrap_or_default();
        let kind = r.event_name().map_or("?", OperationType::as_str);
        if image.contains_key("outbox") {
            report.stream_outbox_inserts += u32::from(r.event_name() == Some(&OperationType::Insert));
            writeln!(
                out,
                "  {} {kind:<6} outbox  {:<18} {}#{} seq={} id={}",
                data.sequence_number().unwrap_or_default(),
                text(image.get("event_type")),
                text(image.get("aggregate_type")),
                text(image.get("aggregate_id")),
                text(image.get("sequence")),
                text(image.get("event_id")),
            )?;
        } else {
            report.stream_other += 1;
            writeln!(
                out,
                "  {} {kind:<6} item    {} version={}",
                data.sequence_number().unwrap_or_default(),
                text(image.get("pk")),
                text(image.get("version")),
            )?;
        }
    }
    writeln!(
        out,
        "\nsummary: {} events committed, {} outbox INSERTs on the stream, {} aggregate records, {} conflict refused, {} retry absorbed ({} ms)",
        report.events,
        report.stream_outbox_inserts,
        report.stream_other,
        report.conflicts,
        report.idempotent_retries,
        started.elapsed().as_millis()
    )?;
    if report.stream_outbox_inserts != report.events {
        return Err(DemoError::Mismatch(format!(
            "{} events committed but {} outbox INSERTs on the stream",
            report.events, report.stream_outbox_inserts
        )));
    }
    Ok(report)
}

fn chrono_free_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}
