//! The DynamoDB outbox writer against DynamoDB Local.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodbstreams::types::OperationType;
use outbox_cli::bootstrap::create_outbox_table;
use outbox_core::{OutboxEvent, SystemClock};
use outbox_dynamodb::{
    DynamoDbOutboxWriter, Item, MAX_TRANSACT_ITEMS, OutboxSchema, OutboxTransaction, WriteError,
    put_if_absent, put_versioned,
};
use outbox_tests::{dynamodb_client, dynamodb_client_at, read_stream, unique_name};
use serde_json::json;

async fn setup() -> (DynamoDbOutboxWriter, String) {
    let client = dynamodb_client();
    let table = unique_name("writer");
    create_outbox_table(&client, &table).await.expect("create table");
    (
        DynamoDbOutboxWriter::new(client, OutboxSchema::new(&table)),
        table,
    )
}

fn order(id: &str, status: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), AttributeValue::S(format!("Order#{id}"))),
        ("sk".to_string(), AttributeValue::S("ORDER".into())),
        ("status".to_string(), AttributeValue::S(status.into())),
    ])
}

fn event(id: &str, sequence: u64, event_type: &str) -> OutboxEvent {
    OutboxEvent::builder("com.example.orders", event_type)
        .aggregate("Order", id)
        .sequence(sequence)
        .payload(&json!({"order": id, "status": event_type}))
        .build(&SystemClock)
        .expect("valid event")
}

async fn items_in(writer: &DynamoDbOutboxWriter, partition: &str) -> Vec<Item> {
    let out = dynamodb_client()
        .query()
        .table_name(writer.schema().table())
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(partition.into()))
        .consistent_read(true)
        .send()
        .await
        .expect("query");
    out.items().to_vec()
}

fn outbox_items(items: &[Item]) -> Vec<&Item> {
    items.iter().filter(|i| i.contains_key("outbox")).collect()
}

#[tokio::test]
async fn a_commit_writes_the_aggregate_and_its_event_together() {
    let (writer, _) = setup().await;
    let e = event("1", 1, "OrderPlaced");
    let receipt = writer
        .commit(
            OutboxTransaction::new()
                .operation(
                    put_versioned(writer.schema().table(), order("1", "PLACED"), "version", None).unwrap(),
                )
                .event(e.clone()),
        )
        .await
        .expect("commit");
    assert_eq!(receipt.event_ids, vec![e.id()]);
    assert_eq!(receipt.actions, 2);
    let items = items_in(&writer, "Order#1").await;
    assert_eq!(items.len(), 2);
    let aggregate = items.iter().find(|i| !i.contains_key("outbox")).unwrap();
    assert_eq!(aggregate["version"], AttributeValue::N("1".into()));
    let outbox = outbox_items(&items);
    assert_eq!(outbox.len(), 1);
    assert_eq!(writer.schema().decode_item(outbox[0]).unwrap(), e);
}

#[tokio::test]
async fn a_failed_condition_writes_nothing_and_names_the_operation() {
    let (writer, table) = setup().await;
    writer
        .commit(
            OutboxTransaction::new().operation(put_if_absent(&table, order("2", "PLACED"), "pk").unwrap()),
        )
        .await
        .unwrap();
    let err = writer
        .commit(
            OutboxTransaction::new()
                .operation(put_if_absent(&table, order("3", "PLACED"), "pk").unwrap())
                .operation(put_if_absent(&table, order("2", "PLACED"), "pk").unwrap())
                .event(event("2", 1, "OrderPlaced")),
        )
        .await
        .unwrap_err();
    match &err {
        WriteError::ConditionFailed {
            operation,
            description,
        } => {
            assert_eq!(*operation, 1);
            assert!(description.contains("Order#2"), "{description}");
        }
        other => panic!("expected ConditionFailed, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(
        items_in(&writer, "Order#3").await.is_empty(),
        "operation #0 was rolled back"
    );
    assert!(
        outbox_items(&items_in(&writer, "Order#2").await).is_empty(),
        "no event was written"
    );
}

#[tokio::test]
async fn a_stale_expected_version_is_a_conflict() {
    let (writer, table) = setup().await;
    for (expected, seq) in [(None, 1), (Some(1), 2)] {
        writer
            .commit(
                OutboxTransaction::new()
                    .operation(put_versioned(&table, order("4", "X"), "version", expected).unwrap())
                    .event(event("4", seq, "OrderChanged")),
            )
            .await
            .unwrap();
    }
    let err = writer
        .commit(
            OutboxTransaction::new()
                .operation(put_versioned(&table, order("4", "Y"), "version", Some(1)).unwrap())
                .event(event("4", 2, "OrderChanged")),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, WriteError::ConditionFailed { operation: 0, .. }),
        "{err:?}"
    );
    let items = items_in(&writer, "Order#4").await;
    assert_eq!(
        outbox_items(&items).len(),
        2,
        "only the two successful commits have events"
    );
    let aggregate = items.iter().find(|i| !i.contains_key("outbox")).unwrap();
    assert_eq!(aggregate["version"], AttributeValue::N("2".into()));
    assert_eq!(aggregate["status"], AttributeValue::S("X".into()));
}

#[tokio::test]
async fn the_same_token_and_request_succeeds_again_without_a_second_event() {
    let (writer, table) = setup().await;
    let tx = OutboxTransaction::new()
        .operation(put_versioned(&table, order("5", "PLACED"), "version", None).unwrap())
        .event(event("5", 1, "OrderPlaced"))
        .client_request_token(format!("retry-5-{}", &table[table.len() - 8..]));
    let first = writer.commit(tx.clone()).await.unwrap();
    let second = writer.commit(tx).await.expect("an idempotent retry succeeds");
    assert_eq!(first, second);
    assert_eq!(outbox_items(&items_in(&writer, "Order#5").await).len(), 1);
}

#[tokio::test]
async fn the_same_token_with_another_request_is_an_idempotency_error() {
    let (writer, table) = setup().await;
    let tx = |status: &str| {
        OutboxTransaction::new()
            .operation(put_versioned(&table, order("6", status), "version", None).unwrap())
            .event(event("6", 1, "OrderPlaced"))
            .client_request_token(format!("retry-6-{}", &table[table.len() - 8..]))
    };
    writer.commit(tx("PLACED")).await.unwrap();
    let err = writer.commit(tx("CHANGED")).await.unwrap_err();
    assert!(matches!(err, WriteError::IdempotencyMismatch), "{err:?}");
    assert_eq!(outbox_items(&items_in(&writer, "Order#6").await).len(), 1);
}

#[tokio::test]
async fn limits_are_refused_before_any_network_call() {
    // Nothing listens on port 9: any call would fail as a Service error.
    let writer = DynamoDbOutboxWriter::new(dynamodb_client_at("http://127.0.0.1:9"), OutboxSchema::new("t"));
    let tx = (0..=MAX_TRANSACT_ITEMS).fold(OutboxTransaction::new(), |tx, i| {
        tx.event(event(&i.to_string(), 1, "E"))
    });
    assert!(matches!(
        writer.commit(tx).await,
        Err(WriteError::TooManyActions { count: 101, .. })
    ));
    let big = OutboxEvent::builder("s", "E")
        .aggregate("Order", "big")
        .sequence(1)
        .payload(&"x".repeat(400 * 1024))
        .build(&SystemClock)
        .unwrap();
    let err = writer
        .commit(OutboxTransaction::new().event(big.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, WriteError::EventTooLarge { .. }),
        "{err:?}: could never be published"
    );
    let unchecked = DynamoDbOutboxWriter::new(
        dynamodb_client_at("http://127.0.0.1:9"),
        OutboxSchema::new("t").with_max_event_bytes(None),
    );
    let err = unchecked
        .commit(OutboxTransaction::new().event(big))
        .await
        .unwrap_err();
    assert!(
        matches!(err, WriteError::ItemTooLarge { operation: 0, .. }),
        "{err:?}"
    );
    // and the same client does fail on the network, so the checks above proved something
    let err = writer
        .commit(OutboxTransaction::new().event(event("n", 1, "E")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, WriteError::Service { retryable: true, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_stream_shows_exactly_one_insert_per_outbox_event() {
    let (writer, table) = setup().await;
    let mut ids = Vec::new();
    for n in 0..3u64 {
        let id = format!("s{n}");
        let events = [event(&id, 1, "OrderPlaced"), event(&id, 1, "PaymentRequested")];
        // two events of one change share the sequence; their ids keep the sort keys apart
        ids.extend(events.iter().map(OutboxEvent::id));
        let tx = events.into_iter().fold(
            OutboxTransaction::new()
                .operation(put_versioned(&table, order(&id, "PLACED"), "version", None).unwrap()),
            OutboxTransaction::event,
        );
        writer.commit(tx).await.unwrap();
    }
    let records = read_stream(&table).await;
    let outbox: Vec<_> = records
        .iter()
        .filter(|r| {
            r.dynamodb()
                .and_then(|d| d.new_image())
                .is_some_and(|img| img.contains_key("outbox"))
        })
        .collect();
    assert_eq!(records.len(), 9, "3 aggregates + 6 events");
    assert_eq!(outbox.len(), 6);
    let mut seen = Vec::new();
    for r in outbox {
        assert_eq!(r.event_name(), Some(&OperationType::Insert));
        let image = r.dynamodb().and_then(|d| d.new_image()).unwrap();
        for attr in [
            "pk",
            "sk",
            "outbox",
            "ttl",
            "event_id",
            "source",
            "event_type",
            "aggregate_type",
            "aggregate_id",
            "sequence",
            "occurred_at",
            "payload",
        ] {
            assert!(image.contains_key(attr), "stream image lacks `{attr}`");
        }
        let aws_sdk_dynamodbstreams::types::AttributeValue::S(id) = &image["event_id"] else {
            panic!("event_id is not a string");
        };
        seen.push(id.parse::<uuid::Uuid>().unwrap());
    }
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
}
