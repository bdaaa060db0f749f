//! The idempotent consumer (`outbox-consumer`) against DynamoDB Local, and
//! on events as EventBridge (moto) delivers them.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use chrono::{TimeDelta, Utc};
use outbox_cli::bootstrap::{create_local_stack, drain_queue};
use outbox_consumer::{
    Claim, ConsumerError, IdempotencyStore, IdempotentConsumer, Processed, RecordStatus,
    create_idempotency_table, outbox_event_from_eventbridge, resolve_claim_check,
};
use outbox_core::fakes::RecordingQuarantine;
use outbox_core::{
    Decoded, EventSink, FixedClock, OutboxEvent, Relay, RelayConfig, RelayRecord, SystemClock,
};
use outbox_eventbridge::{EventBridgeSink, S3ClaimCheck};
use outbox_tests::{MOTO_ENDPOINT_VAR, dynamodb_client, endpoint, s3_client, unique_name};
use outbox_tests::{eventbridge_client, sqs_client};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};

fn event(order: &str) -> OutboxEvent {
    OutboxEvent::builder("com.example.orders", "OrderPaid")
        .aggregate("Order", order)
        .sequence(2)
        .payload(&json!({ "amount": 1999 }))
        .build(&SystemClock)
        .unwrap()
}

/// A fresh idempotency table.
async fn table() -> String {
    let name = unique_name("idem");
    create_idempotency_table(&dynamodb_client(), &name).await.unwrap();
    name
}

fn store(table: &str) -> IdempotencyStore {
    IdempotencyStore::new(dynamodb_client(), table, "billing")
}

#[tokio::test]
async fn a_duplicate_delivery_runs_the_handler_once_and_returns_the_first_result() {
    let table = table().await;
    // Creating it again is fine (an existing table is used as it is).
    create_idempotency_table(&dynamodb_client(), &table)
        .await
        .unwrap();
    let consumer = IdempotentConsumer::new(store(&table));
    let e = event("o-1");
    let runs = AtomicUsize::new(0);
    let handler = || async {
        let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
        Ok::<_, std::io::Error>(json!({ "invoice": format!("inv-{n}") }))
    };

    let first = consumer.process(&e, handler).await.unwrap();
    let second = consumer.process(&e, handler).await.unwrap();
    let by_id = consumer.process(&e.id().to_string(), handler).await.unwrap();

    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran once");
    assert_eq!(first, Processed::Ran(json!({ "invoice": "inv-1" })));
    assert_eq!(second, Processed::Duplicate(json!({ "invoice": "inv-1" })));
    assert_eq!(by_id, second);
    let record = consumer.store().get(&e.id().to_string()).await.unwrap().unwrap();
    assert_eq!(record.key, format!("billing#{}", e.id()));
    assert_eq!(record.status, RecordStatus::Completed);
    assert_eq!(record.result.as_deref(), Some(r#"{"invoice":"inv-1"}"#));

    // Another consumer (scope) sharing the table handles the event on its own.
    let shipping = IdempotentConsumer::new(IdempotencyStore::new(dynamodb_client(), &table, "shipping"));
    assert!(!shipping.process(&e, handler).await.unwrap().is_duplicate());
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_concurrent_duplicate_while_in_progress_is_refused_with_a_retryable_error() {
    let table = table().await;
    let consumer = IdempotentConsumer::new(store(&table));
    let e = event("o-2");
    let started = Notify::new();
    let (finish, finished) = oneshot::channel::<()>();
    let runs = AtomicUsize::new(0);

    let first = consumer.process(&e, || async {
        runs.fetch_add(1, Ordering::SeqCst);
        started.notify_one();
        finished.await.unwrap();
        Ok::<_, std::io::Error>("done".to_owned())
    });
    let duplicate = async {
        started.notified().await;
        let refused = consumer
            .process(&e, || async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>("second".to_owned())
            })
            .await;
        finish.send(()).unwrap();
        refused
    };
    let (first, refused) = tokio::join!(first, duplicate);

    assert_eq!(first.unwrap(), Processed::Ran("done".to_owned()));
    let refused = refused.unwrap_err();
    assert!(
        matches!(&refused, ConsumerError::InProgress { id, expires_at }
            if *id == e.id().to_string() && *expires_at > Utc::now()),
        "{refused:?}"
    );
    assert!(refused.is_retryable());
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the duplicate did not run the handler"
    );
    // Retried after the first finished, the duplicate gets the first result.
    let retried = consumer
        .process(&e, || async { Ok::<_, std::io::Error>("third".to_owned()) })
        .await
        .unwrap();
    assert_eq!(retried, Processed::Duplicate("done".to_owned()));
}

#[tokio::test]
async fn an_expired_in_progress_record_is_retried() {
    let table = table().await;
    let clock = Arc::new(FixedClock::new(Utc::now()));
    let consumer = IdempotentConsumer::new(
        store(&table)
            .with_clock(clock.clone())
            .with_in_progress_expiry(Duration::from_secs(30)),
    );
    let e = event("o-3");
    let id = e.id().to_string();
    // A delivery that claimed the event and crashed before completing it.
    assert!(matches!(
        consumer.store().claim(&id).await.unwrap(),
        Claim::Claimed { .. }
    ));
    let runs = AtomicUsize::new(0);
    let handler = || async {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<_, std::io::Error>(7)
    };

    clock.advance(TimeDelta::seconds(29));
    let early = consumer.process(&e, handler).await.unwrap_err();
    assert!(matches!(early, ConsumerError::InProgress { .. }), "{early:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    clock.advance(TimeDelta::seconds(2));
    assert_eq!(consumer.process(&e, handler).await.unwrap(), Processed::Ran(7));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        consumer.process(&e, handler).await.unwrap(),
        Processed::Duplicate(7)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_handler_error_releases_the_claim_so_that_a_retry_runs_it_again() {
    let table = table().await;
    let consumer = IdempotentConsumer::new(store(&table));
    let e = event("o-4");

    let failed = consumer
        .process(&e, || async {
            Err::<u32, _>(std::io::Error::other("card declined"))
        })
        .await
        .unwrap_err();
    assert!(matches!(&failed, ConsumerError::Handler(_)) && failed.is_retryable());
    assert_eq!(
        std::error::Error::source(&failed).unwrap().to_string(),
        "card declined"
    );
    assert!(consumer.store().get(&e.id().to_string()).await.unwrap().is_none());

    let retried = consumer
        .process(&e, || async { Ok::<_, std::io::Error>(1u32) })
        .await
        .unwrap();
    assert_eq!(retried, Processed::Ran(1));
}

#[tokio::test]
async fn a_completed_record_past_its_ttl_counts_as_absent() {
    let table = table().await;
    let clock = Arc::new(FixedClock::new(Utc::now()));
    let consumer = IdempotentConsumer::new(
        store(&table)
            .with_clock(clock.clone())
            .with_completed_ttl(Duration::from_secs(3600)),
    );
    let e = event("o-5");
    let handler = || async { Ok::<_, std::io::Error>(()) };
    assert!(!consumer.process(&e, handler).await.unwrap().is_duplicate());
    clock.advance(TimeDelta::seconds(3600));
    assert!(consumer.process(&e, handler).await.unwrap().is_duplicate());
    // DynamoDB's TTL removes items some time after their TTL: until then the
    // record is still there but no longer counts.
    clock.advance(TimeDelta::seconds(2));
    assert!(!consumer.process(&e, handler).await.unwrap().is_duplicate());
}

fn credit(table: &str, key: &str, amount: u32) -> TransactWriteItem {
    let put = Put::builder()
        .table_name(table)
        .item("pk", AttributeValue::S(key.to_owned()))
        .item("amount", AttributeValue::N(amount.to_string()))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .unwrap();
    TransactWriteItem::builder().put(put).build()
}

async fn get_item(table: &str, key: &str) -> Option<HashMap<String, AttributeValue>> {
    dynamodb_client()
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(key.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
}

#[tokio::test]
async fn the_transactional_mode_writes_the_consumers_item_and_the_id_together() {
    let table = table().await;
    let accounts = table.replace("idem", "accounts");
    create_idempotency_table(&dynamodb_client(), &accounts)
        .await
        .unwrap();
    let consumer = IdempotentConsumer::new(store(&table));
    let e = event("o-6");

    consumer
        .record_in_transaction(&e, vec![credit(&accounts, "credit-1", 1999)])
        .await
        .unwrap();
    assert!(
        get_item(&accounts, "credit-1").await.is_some(),
        "the consumer's write landed"
    );
    let marker = consumer.store().get(&e.id().to_string()).await.unwrap().unwrap();
    assert_eq!(marker.status, RecordStatus::Completed, "and the id with it");

    // A duplicate delivery, whose write would land elsewhere: nothing is written.
    let duplicate = consumer
        .record_in_transaction(&e, vec![credit(&accounts, "credit-2", 1999)])
        .await
        .unwrap_err();
    assert!(
        matches!(&duplicate, ConsumerError::Duplicate { id } if *id == e.id().to_string()),
        "{duplicate:?}"
    );
    assert!(!duplicate.is_retryable());
    assert!(
        get_item(&accounts, "credit-2").await.is_none(),
        "the duplicate wrote nothing"
    );

    // The marker can also be appended to a transaction the consumer sends itself.
    let other = event("o-7");
    let marker = consumer.transaction_marker(&other).unwrap();
    dynamodb_client()
        .transact_write_items()
        .transact_items(credit(&accounts, "credit-3", 5))
        .transact_items(marker)
        .send()
        .await
        .unwrap();
    assert!(get_item(&accounts, "credit-3").await.is_some());
    assert!(
        consumer
            .store()
            .get(&other.id().to_string())
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn the_transactional_mode_writes_neither_when_the_consumers_condition_fails() {
    let table = table().await;
    let accounts = table.replace("idem", "accounts");
    create_idempotency_table(&dynamodb_client(), &accounts)
        .await
        .unwrap();
    let consumer = IdempotentConsumer::new(store(&table));
    let e = event("o-8");
    // The consumer's own write will find its item already there.
    dynamodb_client()
        .put_item()
        .table_name(&accounts)
        .item("pk", AttributeValue::S("credit-1".into()))
        .item("amount", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();

    let refused = consumer
        .record_in_transaction(
            &e,
            vec![
                credit(&accounts, "credit-9", 3),
                credit(&accounts, "credit-1", 1999),
            ],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ConsumerError::ConditionFailed { operation: 1 }),
        "{refused:?}"
    );
    assert!(
        consumer.store().get(&e.id().to_string()).await.unwrap().is_none(),
        "the id is not recorded"
    );
    assert!(get_item(&accounts, "credit-9").await.is_none(), "no write landed");
    let kept = get_item(&accounts, "credit-1").await.unwrap();
    assert_eq!(kept["amount"], AttributeValue::N("1".into()));

    // Once the conflict is gone, the same event goes through.
    consumer
        .record_in_transaction(&e, vec![credit(&accounts, "credit-10", 1999)])
        .await
        .unwrap();
    assert!(consumer.store().get(&e.id().to_string()).await.unwrap().is_some());
}

#[tokio::test]
async fn events_delivered_by_eventbridge_are_parsed_and_processed_once() {
    let moto = endpoint(MOTO_ENDPOINT_VAR);
    let sqs = sqs_client(&moto);
    let stack = create_local_stack(
        &dynamodb_client(),
        &eventbridge_client(&moto),
        &sqs,
        &s3_client(&moto),
        &unique_name("consume"),
        "com.example.orders",
    )
    .await
    .unwrap();
    let e = event("o-9");
    let sink = EventBridgeSink::new(eventbridge_client(&moto), &stack.bus.bus);
    // The relay delivers at least once: the same event, published twice.
    for _ in 0..2 {
        sink.publish(&[&e]).await.unwrap();
    }
    let deliveries = drain_queue(&sqs, &stack.bus.target.url).await.unwrap();
    assert_eq!(deliveries.len(), 2);

    let table = table().await;
    let consumer = IdempotentConsumer::new(store(&table));
    let runs = AtomicUsize::new(0);
    let mut outcomes = Vec::new();
    for delivery in &deliveries {
        let delivered: Value = serde_json::from_str(&delivery.body).unwrap();
        let parsed = outbox_event_from_eventbridge(&delivered).unwrap();
        assert_eq!(parsed, e);
        let processed = consumer
            .process(&parsed, || async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(parsed.aggregate_id().to_owned())
            })
            .await
            .unwrap();
        outcomes.push(processed);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        outcomes,
        vec![
            Processed::Ran("o-9".to_owned()),
            Processed::Duplicate("o-9".to_owned())
        ]
    );
}

/// An event too large for EventBridge, relayed by claim-check: the bus
/// carries its address, and the consumer reads the whole event back.
#[tokio::test]
async fn an_event_published_by_claim_check_reaches_the_consumer_whole() {
    let moto = endpoint(MOTO_ENDPOINT_VAR);
    let (sqs, s3) = (sqs_client(&moto), s3_client(&moto));
    let stack = create_local_stack(
        &dynamodb_client(),
        &eventbridge_client(&moto),
        &sqs,
        &s3,
        &unique_name("large"),
        "com.example.orders",
    )
    .await
    .unwrap();
    let big = OutboxEvent::builder("com.example.orders", "OrderImported")
        .aggregate("Order", "o-big")
        .sequence(1)
        .payload(&json!({ "lines": "x".repeat(300 * 1024) }))
        .build(&SystemClock)
        .unwrap();
    let small = event("o-small");
    let sink = EventBridgeSink::new(eventbridge_client(&moto), &stack.bus.bus)
        .with_large_events(S3ClaimCheck::new(s3.clone(), &stack.claim_checks));
    assert!(sink.entry_size(&big) < 4096, "the entry published is the address");
    let relay = Relay::new(sink, RecordingQuarantine::default(), RelayConfig::default());
    let records: Vec<RelayRecord> = [&big, &small]
        .iter()
        .enumerate()
        .map(|(i, e)| RelayRecord {
            position: format!("{i:021}"),
            decoded: Decoded::Event(Box::new((*e).clone())),
        })
        .collect();
    let outcome = relay.relay(&records, None).await;
    assert_eq!((outcome.published, outcome.quarantined), (2, 0));

    let deliveries = drain_queue(&sqs, &stack.bus.target.url).await.unwrap();
    assert_eq!(deliveries.len(), 2);
    let mut whole = Vec::new();
    for delivery in &deliveries {
        let delivered: Value = serde_json::from_str(&delivery.body).unwrap();
        let parsed = outbox_event_from_eventbridge(&delivered).unwrap();
        whole.push(resolve_claim_check(parsed, &s3).await.unwrap());
    }
    whole.sort_by(|a, b| a.aggregate_id().cmp(b.aggregate_id()));
    assert_eq!(
        whole,
        vec![big, small],
        "both events whole, the large one read from S3"
    );
}
