//! The writer's unit tests.

use super::*;
use chrono::{TimeZone, Utc};
use outbox_core::FixedClock;

fn event(n: u64) -> OutboxEvent {
    let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap());
    OutboxEvent::builder("com.example.orders", "OrderPlaced")
        .aggregate("Order", "o-1")
        .id(Uuid::from_u128(u128::from(n)))
        .sequence(n)
        .payload(&json!({ "n": n }))
        .build(&clock)
        .unwrap()
}

fn schema() -> CosmosOutboxSchema {
    CosmosOutboxSchema::new("pk")
}

fn results(json: Value) -> TransactionalBatchResponse {
    serde_json::from_value(json).unwrap()
}

#[test]
fn operations_come_first_then_one_create_per_event() {
    let batch = OutboxBatch::new("o-1")
        .operation(BatchOperation::replace_if_match(
            "o-1",
            json!({"id": "o-1", "pk": "o-1", "status": "PLACED"}),
            "\"etag-1\"",
        ))
        .operation(BatchOperation::delete("cart-1"))
        .event(event(1))
        .event(event(2));
    let prepared = build_batch(&schema(), &batch).unwrap();
    assert_eq!(
        prepared.descriptions,
        vec![
            "replace o-1".to_owned(),
            "delete cart-1".into(),
            format!("outbox event {}", event(1).id()),
            format!("outbox event {}", event(2).id()),
        ]
    );
    assert!(prepared.request_bytes > 100);
}

#[test]
fn the_operation_limit_is_checked_at_the_boundary() {
    let mut batch = OutboxBatch::new("o-1");
    for n in 0..MAX_BATCH_OPERATIONS as u64 {
        batch = batch.event(event(n));
    }
    assert!(
        build_batch(&schema(), &batch).is_ok(),
        "100 operations are allowed"
    );
    let batch = batch.event(event(1000));
    assert!(matches!(
        build_batch(&schema(), &batch),
        Err(WriteError::TooManyOperations {
            count: 101,
            limit: 100
        })
    ));
}

#[test]
fn the_size_limit_counts_the_request_body_as_the_sdk_serialises_it() {
    let pad = |n: usize| json!({"id": "big", "pk": "o-1", "pad": "x".repeat(n)});
    let empty = build_batch(
        &schema(),
        &OutboxBatch::new("o-1").operation(BatchOperation::upsert(pad(0))),
    )
    .unwrap()
    .request_bytes;
    let fits = MAX_BATCH_REQUEST_BYTES - empty;
    let at_limit = OutboxBatch::new("o-1").operation(BatchOperation::upsert(pad(fits)));
    assert_eq!(
        build_batch(&schema(), &at_limit).unwrap().request_bytes,
        MAX_BATCH_REQUEST_BYTES
    );
    let over = OutboxBatch::new("o-1").operation(BatchOperation::upsert(pad(fits + 1)));
    assert!(matches!(
        build_batch(&schema(), &over),
        Err(WriteError::TooLarge { size, limit: MAX_BATCH_REQUEST_BYTES }) if size == MAX_BATCH_REQUEST_BYTES + 1
    ));
}

#[test]
fn documents_must_carry_an_id_and_the_batch_partition() {
    let cases = [
        (BatchOperation::create(json!({"pk": "o-1"})), "no string `id`"),
        (
            BatchOperation::create(json!({"id": "a", "pk": "o-2"})),
            "one logical partition",
        ),
        (BatchOperation::create(json!({"id": "a"})), "nothing"),
        (BatchOperation::create(json!([1])), "not a JSON object"),
        (
            BatchOperation::replace("a", json!({"id": "b", "pk": "o-1"})),
            "replaces \"a\"",
        ),
        (BatchOperation::delete(""), "id is empty"),
    ];
    for (op, needle) in cases {
        let err = build_batch(&schema(), &OutboxBatch::new("o-1").operation(op)).unwrap_err();
        assert!(
            matches!(&err, WriteError::Invalid { reason } if reason.contains(needle) && reason.contains("#0")),
            "{needle}: {err}"
        );
    }
    assert!(matches!(
        build_batch(&schema(), &OutboxBatch::new("o-1")),
        Err(WriteError::Invalid { .. })
    ));
    let big = OutboxEvent::builder("s", "T")
        .aggregate("A", "a")
        .sequence(MAX_SEQUENCE + 1)
        .payload(&json!({}))
        .build(&outbox_core::SystemClock)
        .unwrap();
    assert!(matches!(
        build_batch(&schema(), &OutboxBatch::new("o-1").event(big)),
        Err(WriteError::Invalid { reason }) if reason.contains("sequence")
    ));
}

#[test]
fn a_rolled_back_batch_names_the_failing_operation_not_the_424s() {
    let descriptions: Vec<String> = vec![
        "replace o-1".into(),
        "outbox event e1".into(),
        "outbox event e2".into(),
    ];
    let cases = [
        (412, "PreconditionFailed"),
        (409, "Conflict"),
        (404, "NotFound"),
        (400, "Rejected"),
    ];
    for (status, variant) in cases {
        let r = results(json!([
            {"statusCode": 424}, {"statusCode": status, "substatusCode": 7}, {"statusCode": 424}
        ]));
        let err = interpret_batch_results(&r, &descriptions).unwrap_err();
        assert_eq!(err.failed_operation(), Some(1), "{variant}");
        assert!(err.to_string().contains("#1 (outbox event e1)"), "{err}");
        assert!(format!("{err:?}").starts_with(variant), "{err:?}");
    }
    let throttled = results(
        json!([{"statusCode": 429, "retryAfterMilliseconds": 250}, {"statusCode": 424}, {"statusCode": 424}]),
    );
    let err = interpret_batch_results(&throttled, &descriptions).unwrap_err();
    assert!(err.is_retryable());
    assert!(
        matches!(err, WriteError::Throttled { retry_after: Some(d) } if d.as_millis() == 250),
        "{err:?}"
    );
    let ok = results(
        json!([{"statusCode": 200, "eTag": "\"a\""}, {"statusCode": 201, "eTag": "\"b\""}, {"statusCode": 201}]),
    );
    assert_eq!(
        interpret_batch_results(&ok, &descriptions).unwrap(),
        vec![Some("\"a\"".into()), Some("\"b\"".into()), None]
    );
    let short = results(json!([{"statusCode": 200}]));
    assert!(interpret_batch_results(&short, &descriptions).is_err());
}

#[test]
fn error_classes_say_what_to_do() {
    let conflict = WriteError::PreconditionFailed {
        operation: 0,
        description: "replace o-1".into(),
    };
    assert!(conflict.needs_fresh_read() && !conflict.is_retryable());
    let throttled = WriteError::Throttled { retry_after: None };
    assert!(throttled.is_retryable() && !throttled.needs_fresh_read());
    let too_large = WriteError::TooLarge { size: 3, limit: 2 };
    assert!(!too_large.is_retryable() && !too_large.needs_fresh_read());
}
