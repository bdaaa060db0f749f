//! Concurrency on the writer, on DynamoDB Local: many tasks update one
//! aggregate with `put_versioned` and the version they read, each commit
//! carrying one outbox event whose sequence is the new version. The final
//! version must equal the number of successful commits, the table and its
//! stream must hold exactly one outbox event per successful commit, with
//! sequences 1..=n, and none of a refused commit.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodbstreams::types::{AttributeValue as StreamsValue, OperationType};
use outbox_cli::bootstrap::create_outbox_table;
use outbox_core::{OutboxEvent, SystemClock};
use outbox_dynamodb::{
    DynamoDbOutboxWriter, Item, OutboxSchema, OutboxTransaction, WriteError, put_versioned,
};
use outbox_tests::{dynamodb_client, read_stream, unique_name};
use serde_json::json;

const TASKS: usize = 8;
const ATTEMPTS_PER_TASK: usize = 12;
const AGGREGATE: &str = "o-contended";

#[derive(Debug)]
enum Attempt {
    Committed { version: u64, event_id: String },
    Refused { event_id: String, why: &'static str },
}

async fn current_version(table: &str) -> Option<u64> {
    let item = dynamodb_client()
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(format!("Order#{AGGREGATE}")))
        .key("sk", AttributeValue::S("ORDER".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item;
    match item?.get("version")? {
        AttributeValue::N(n) => Some(n.parse().unwrap()),
        other => panic!("version is {other:?}"),
    }
}

async fn attempt(writer: &DynamoDbOutboxWriter, table: &str, task: usize, round: usize) -> Attempt {
    let expected = current_version(table).await;
    let version = expected.map_or(1, |v| v + 1);
    let event = OutboxEvent::builder("com.example.orders", "OrderChanged")
        .aggregate("Order", AGGREGATE)
        .sequence(version)
        .payload(&json!({ "task": task, "round": round }))
        .build(&SystemClock)
        .unwrap();
    let event_id = event.id().to_string();
    let order: Item = HashMap::from([
        ("pk".to_owned(), AttributeValue::S(format!("Order#{AGGREGATE}"))),
        ("sk".to_owned(), AttributeValue::S("ORDER".into())),
        ("last_event".to_owned(), AttributeValue::S(event_id.clone())),
    ]);
    let tx = OutboxTransaction::new()
        .operation(put_versioned(table, order, "version", expected).unwrap())
        .event(event);
    match writer.commit(tx).await {
        Ok(receipt) => {
            assert_eq!(receipt.event_ids.len(), 1);
            Attempt::Committed { version, event_id }
        }
        Err(WriteError::ConditionFailed { .. }) => Attempt::Refused {
            event_id,
            why: "condition",
        },
        Err(WriteError::TransactionConflict) => Attempt::Refused {
            event_id,
            why: "conflict",
        },
        // Anything else could be ambiguous (did it commit?) and is not expected here.
        Err(other) => panic!("unexpected writer error: {other:?}"),
    }
}

fn string_of(value: Option<&StreamsValue>) -> Option<String> {
    match value? {
        StreamsValue::S(s) => Some(s.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_of_one_aggregate_commit_exactly_one_event_per_successful_version() {
    let table = unique_name("contended");
    create_outbox_table(&dynamodb_client(), &table).await.unwrap();
    let writer = Arc::new(DynamoDbOutboxWriter::new(
        dynamodb_client(),
        OutboxSchema::new(&table),
    ));
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (writer, table) = (Arc::clone(&writer), table.clone());
            tokio::spawn(async move {
                let mut attempts = Vec::new();
                for round in 0..ATTEMPTS_PER_TASK {
                    attempts.push(attempt(&writer, &table, task, round).await);
                }
                attempts
            })
        })
        .collect();
    let mut attempts = Vec::new();
    for task in tasks {
        attempts.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();

    let committed: HashMap<String, u64> = attempts
        .iter()
        .filter_map(|a| match a {
            Attempt::Committed { version, event_id } => Some((event_id.clone(), *version)),
            Attempt::Refused { .. } => None,
        })
        .collect();
    let refused: HashSet<String> = attempts
        .iter()
        .filter_map(|a| match a {
            Attempt::Refused { event_id, .. } => Some(event_id.clone()),
            Attempt::Committed { .. } => None,
        })
        .collect();
    let conflicts = attempts
        .iter()
        .filter(|a| matches!(a, Attempt::Refused { why: "conflict", .. }))
        .count();
    let successes = committed.len() as u64;

    // The aggregate: its version counts the successful commits, and its last
    // writer is the commit that made that version.
    let final_version = current_version(&table).await.unwrap();
    assert_eq!(final_version, successes, "final version == successful commits");
    let mut versions: Vec<u64> = committed.values().copied().collect();
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=successes).collect::<Vec<_>>(),
        "each version committed once"
    );

    // The table: one outbox item per successful commit, sequences 1..=n.
    let items = dynamodb_client()
        .query()
        .table_name(&table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :outbox)")
        .expression_attribute_values(":pk", AttributeValue::S(format!("Order#{AGGREGATE}")))
        .expression_attribute_values(":outbox", AttributeValue::S("OUTBOX#".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    let schema = OutboxSchema::new(&table);
    let stored: Vec<OutboxEvent> = items.iter().map(|i| schema.decode_item(i).unwrap()).collect();
    assert_eq!(
        stored.len() as u64,
        successes,
        "one outbox event per successful commit"
    );
    for event in &stored {
        let id = event.id().to_string();
        assert_eq!(
            committed.get(&id),
            Some(&event.sequence()),
            "event {id} belongs to its commit"
        );
        assert!(!refused.contains(&id));
    }

    // The stream: exactly one outbox INSERT per successful commit, none of a refused one.
    let inserted: Vec<String> = read_stream(&table)
        .await
        .iter()
        .filter(|r| r.event_name() == Some(&OperationType::Insert))
        .filter_map(|r| {
            let image = r.dynamodb()?.new_image()?;
            image
                .contains_key("outbox")
                .then(|| string_of(image.get("event_id")))?
        })
        .collect();
    let unique: HashSet<&String> = inserted.iter().collect();
    assert_eq!(inserted.len(), unique.len(), "no event inserted twice");
    assert_eq!(
        inserted.len() as u64,
        successes,
        "the stream carries one insert per commit"
    );
    assert!(inserted.iter().all(|id| committed.contains_key(id)));
    assert!(
        inserted.iter().all(|id| !refused.contains(id)),
        "no event of a refused commit"
    );

    eprintln!(
        "writer concurrency: {TASKS} tasks x {ATTEMPTS_PER_TASK} attempts on one aggregate in {:.1} s: \
         {successes} committed (final version {final_version}), {} refused ({} stale version, {conflicts} \
         transaction conflicts); {} outbox items, {} stream inserts",
        elapsed.as_secs_f64(),
        refused.len(),
        refused.len() - conflicts,
        stored.len(),
        inserted.len()
    );
    assert!(!refused.is_empty(), "the tasks did contend");
    assert!(successes >= TASKS as u64, "progress was made");
}
