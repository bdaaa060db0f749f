//! The writer's unit tests.

use super::*;
use chrono::{TimeZone, Utc};
use outbox_core::FixedClock;
use serde_json::json;

/// The item-size tests build events far above the bus limit: turn that check off.
fn schema() -> OutboxSchema {
    OutboxSchema::new("orders").with_max_event_bytes(None)
}

fn event(aggregate_id: &str, sequence: u64, payload: serde_json::Value) -> OutboxEvent {
    let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap());
    OutboxEvent::builder("com.example.orders", "OrderPlaced")
        .aggregate("Order", aggregate_id)
        .sequence(sequence)
        .payload_value(payload)
        .build(&clock)
        .unwrap()
}

fn order(id: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), AttributeValue::S(format!("Order#{id}"))),
        ("sk".to_string(), AttributeValue::S("ORDER".into())),
    ])
}

#[test]
fn business_operations_come_first_then_one_conditional_put_per_event() {
    let tx = OutboxTransaction::new()
        .operation(put_versioned("orders", order("1"), "version", Some(4)).unwrap())
        .event(event("1", 5, json!({"a": 1})))
        .event_in_partition(AttributeValue::S("custom".into()), event("1", 6, json!({})));
    let items = build_transact_items(&schema(), &tx).unwrap();
    assert_eq!(items.len(), 3);
    let agg = items[0].put().unwrap();
    assert_eq!(agg.condition_expression(), Some("#v = :expected"));
    assert_eq!(agg.item()["version"], AttributeValue::N("5".into()));
    assert_eq!(
        agg.expression_attribute_values().unwrap()[":expected"],
        AttributeValue::N("4".into())
    );
    let ev = items[1].put().unwrap();
    assert_eq!(ev.table_name(), "orders");
    assert_eq!(ev.condition_expression(), Some("attribute_not_exists(#pk)"));
    assert_eq!(ev.item()["pk"], AttributeValue::S("Order#1".into()));
    assert_eq!(
        items[2].put().unwrap().item()["pk"],
        AttributeValue::S("custom".into())
    );
}

#[test]
fn create_helpers_condition_on_absence() {
    let op = put_versioned("orders", order("1"), "version", None).unwrap();
    assert_eq!(
        op.put().unwrap().condition_expression(),
        Some("attribute_not_exists(#v)")
    );
    assert_eq!(op.put().unwrap().item()["version"], AttributeValue::N("1".into()));
    let op = put_if_absent("orders", order("1"), "pk").unwrap();
    assert_eq!(
        op.put().unwrap().condition_expression(),
        Some("attribute_not_exists(#pk)")
    );
    assert!(matches!(
        put_versioned("orders", order("1"), "v", Some(u64::MAX)),
        Err(WriteError::Invalid { .. })
    ));
}

#[test]
fn action_limit_holds_at_its_boundary() {
    let tx = (0..MAX_TRANSACT_ITEMS).fold(OutboxTransaction::new(), |tx, i| {
        tx.event(event(&i.to_string(), 1, json!({})))
    });
    assert_eq!(build_transact_items(&schema(), &tx).unwrap().len(), 100);
    let tx = tx.event(event("one-more", 1, json!({})));
    let err = build_transact_items(&schema(), &tx).unwrap_err();
    assert!(
        matches!(
            err,
            WriteError::TooManyActions {
                count: 101,
                limit: 100
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("at most 100"));
}

/// An event whose item is exactly `target` bytes.
fn event_of_size(id: &str, target: usize) -> OutboxEvent {
    let base = event(id, 1, json!(""));
    let base_size = item_size(&schema().to_item(&base, OutboxSchema::default_partition_value(&base)));
    // The payload is stored as JSON text: a string of n chars takes n + 2 bytes.
    let padded = event(id, 1, json!("x".repeat(target - base_size)));
    let item = schema().to_item(&padded, OutboxSchema::default_partition_value(&padded));
    assert_eq!(item_size(&item), target);
    padded
}

#[test]
fn item_size_limit_holds_at_its_boundary_and_names_the_item() {
    let tx = OutboxTransaction::new().event(event_of_size("1", MAX_ITEM_SIZE_BYTES));
    build_transact_items(&schema(), &tx).unwrap();
    let tx = OutboxTransaction::new()
        .operation(put_if_absent("orders", order("9"), "pk").unwrap())
        .event(event_of_size("1", MAX_ITEM_SIZE_BYTES + 1));
    let err = build_transact_items(&schema(), &tx).unwrap_err();
    match &err {
        WriteError::ItemTooLarge {
            operation,
            size,
            limit,
            description,
        } => {
            assert_eq!(
                (*operation, *size, *limit),
                (1, MAX_ITEM_SIZE_BYTES + 1, MAX_ITEM_SIZE_BYTES)
            );
            assert!(description.contains("Order#1"), "{description}");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("409600"), "{err}");
}

#[test]
fn transaction_size_limit_holds_at_its_boundary() {
    // 10 items of 400 KiB = 4000 KiB; the 11th takes the total over 4 MiB.
    let full = MAX_ITEM_SIZE_BYTES;
    let mut tx = OutboxTransaction::new();
    for i in 0..10 {
        tx = tx.event(event_of_size(&i.to_string(), full));
    }
    let rest = MAX_TRANSACTION_SIZE_BYTES - 10 * full;
    let at_limit = tx.clone().event(event_of_size("last", rest));
    build_transact_items(&schema(), &at_limit).unwrap();
    let over = tx.event(event_of_size("last", rest + 1));
    let err = build_transact_items(&schema(), &over).unwrap_err();
    assert!(
        matches!(err, WriteError::TransactionTooLarge { size, limit } if size == MAX_TRANSACTION_SIZE_BYTES + 1 && limit == MAX_TRANSACTION_SIZE_BYTES),
        "{err}"
    );
}

#[test]
fn two_operations_on_one_item_are_refused() {
    let tx = OutboxTransaction::new()
        .operation(put_if_absent("orders", order("1"), "pk").unwrap())
        .delete(
            Delete::builder()
                .table_name("orders")
                .key("sk", AttributeValue::S("ORDER".into()))
                .key("pk", AttributeValue::S("Order#1".into()))
                .build()
                .unwrap(),
        );
    let err = build_transact_items(&schema(), &tx).unwrap_err();
    assert!(
        matches!(
            err,
            WriteError::DuplicateItem {
                first: 0,
                second: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("Order#1"));
    // the same key in another table is another item
    let tx = OutboxTransaction::new()
        .operation(put_if_absent("orders", order("1"), "pk").unwrap())
        .operation(put_if_absent("archive", order("1"), "pk").unwrap());
    build_transact_items(&schema(), &tx).unwrap();
}

#[test]
fn a_put_without_the_key_is_named() {
    let item = HashMap::from([("id".to_string(), AttributeValue::S("1".into()))]);
    let tx = OutboxTransaction::new().operation(put_if_absent("users", item, "id").unwrap());
    let err = build_transact_items(&schema(), &tx).unwrap_err();
    assert!(err.to_string().contains("no key attribute `pk`"), "{err}");
}

#[test]
fn empty_transactions_and_bad_tokens_are_refused() {
    assert!(matches!(
        build_transact_items(&schema(), &OutboxTransaction::new()),
        Err(WriteError::Invalid { .. })
    ));
    let tx = OutboxTransaction::new().event(event("1", 1, json!({})));
    build_transact_items(&schema(), &tx.clone().client_request_token("x".repeat(36))).unwrap();
    let err = build_transact_items(&schema(), &tx.clone().client_request_token("x".repeat(37))).unwrap_err();
    assert!(err.to_string().contains("client request token"), "{err}");
    assert!(build_transact_items(&schema(), &tx.client_request_token("")).is_err());
}

#[test]
fn an_event_that_could_never_be_published_is_refused_at_its_boundary() {
    let schema = OutboxSchema::new("orders");
    let base = event("1", 1, json!(""));
    let overhead = crate::limits::published_size(&base);
    let limit = schema.max_event_bytes().unwrap();
    // a JSON string payload of n characters adds n bytes to the envelope
    let at_limit = event("1", 1, json!("x".repeat(limit - overhead)));
    assert_eq!(crate::limits::published_size(&at_limit), limit);
    build_transact_items(&schema, &OutboxTransaction::new().event(at_limit)).unwrap();
    let over = event("1", 1, json!("x".repeat(limit - overhead + 1)));
    let err = build_transact_items(&schema, &OutboxTransaction::new().event(over.clone())).unwrap_err();
    assert!(
        matches!(&err, WriteError::EventTooLarge { event_id, size, limit: l } if *event_id == over.id().to_string() && *size == limit + 1 && *l == limit),
        "{err}"
    );
    build_transact_items(
        &schema.with_max_event_bytes(None),
        &OutboxTransaction::new().event(over),
    )
    .unwrap();
}

#[test]
fn cancellation_reasons_name_the_operation() {
    let reasons = |codes: &[&str]| -> Vec<CancellationReason> {
        codes
            .iter()
            .map(|c| CancellationReason::builder().code(*c).build())
            .collect()
    };
    let descriptions = vec!["put on `orders` {pk: \"Order#1\"}".to_string(), "outbox".into()];
    let id = Uuid::nil();
    let err = from_reasons(
        &reasons(&["ConditionalCheckFailed", "None"]),
        &descriptions,
        1,
        &[id],
    )
    .unwrap();
    assert!(
        matches!(&err, WriteError::ConditionFailed { operation: 0, description } if description.contains("Order#1"))
    );
    assert!(!err.is_retryable());
    let err = from_reasons(
        &reasons(&["None", "ConditionalCheckFailed"]),
        &descriptions,
        1,
        &[id],
    )
    .unwrap();
    assert!(matches!(err, WriteError::DuplicateEvent { operation: 1, .. }));
    let err = from_reasons(
        &reasons(&["TransactionConflict", "None"]),
        &descriptions,
        1,
        &[id],
    )
    .unwrap();
    assert!(matches!(err, WriteError::TransactionConflict) && err.is_retryable());
    let err = from_reasons(&reasons(&["None", "ThrottlingError"]), &descriptions, 1, &[id]).unwrap();
    assert!(matches!(err, WriteError::Throttled) && err.is_retryable());
    let err = from_reasons(&reasons(&["ValidationError", "None"]), &descriptions, 1, &[id]).unwrap();
    assert!(matches!(err, WriteError::Rejected { .. }) && !err.is_retryable());
    assert!(from_reasons(&reasons(&["None", "None"]), &descriptions, 1, &[id]).is_none());
}
