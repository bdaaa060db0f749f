//! The aggregate API's unit tests: the transaction a save sends.

use chrono::{TimeZone, Utc};
use outbox_core::Event as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::*;
use crate::build_transact_items;

#[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema, outbox_core::Event)]
struct OrderPlaced {
    total: u64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Order {
    id: String,
    total: u64,
}

impl Aggregate for Order {
    const AGGREGATE_TYPE: &'static str = "Order";
    type Event = OrderPlaced;
    fn aggregate_id(&self) -> &str {
        &self.id
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Clashing {
    id: String,
    version: u64,
}

impl Aggregate for Clashing {
    const AGGREGATE_TYPE: &'static str = "Clashing";
    type Event = OrderPlaced;
    fn aggregate_id(&self) -> &str {
        &self.id
    }
}

fn store() -> DynamoDbAggregates {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .build();
    DynamoDbAggregates::new(
        Client::from_conf(config),
        OutboxSchema::new("orders"),
        "com.example.orders",
    )
}

fn command() -> Command {
    Command::new("req-1", Utc.timestamp_millis_opt(1_767_225_600_000).unwrap()).unwrap()
}

fn order(total: u64) -> Order {
    Order {
        id: "o-42".into(),
        total,
    }
}

#[test]
fn a_save_records_the_command_then_the_versioned_state_then_the_events() {
    let s = store();
    let loaded = Versioned::loaded(order(10), 3, None);
    let events = [OrderPlaced { total: 10 }, OrderPlaced { total: 20 }];
    let tx = s.save_transaction(&command(), &loaded, &events).unwrap();
    let items = build_transact_items(s.writer().schema(), &tx).unwrap();
    assert_eq!(items.len(), 4);

    let record = items[0].put().unwrap();
    assert_eq!(record.condition_expression(), Some("attribute_not_exists(#pk)"));
    assert_eq!(record.item()["pk"], AttributeValue::S("Order#o-42".into()));
    assert_eq!(
        record.item()["sk"],
        AttributeValue::S(format!("COMMAND#{}", command().key()))
    );
    assert!(record.item().contains_key("ttl"));

    let state = items[1].put().unwrap();
    assert_eq!(state.condition_expression(), Some("#v = :loaded"));
    assert_eq!(
        state.expression_attribute_values().unwrap()[":loaded"],
        AttributeValue::N("3".into())
    );
    assert_eq!(state.item()["version"], AttributeValue::N("5".into()));
    assert_eq!(state.item()["total"], AttributeValue::N("10".into()));
    assert_eq!(state.item()["sk"], AttributeValue::S(STATE_SORT_KEY.into()));

    let seqs: Vec<u64> = tx.events().map(OutboxEvent::sequence).collect();
    assert_eq!(seqs, [4, 5]);
    assert!(tx.events().all(|e| e.event_type() == OrderPlaced::EVENT_TYPE));
    assert_eq!(
        items[2].put().unwrap().item()["pk"],
        AttributeValue::S("Order#o-42".into())
    );
}

#[test]
fn a_new_aggregate_is_created_only_if_absent() {
    let s = store();
    let tx = s
        .save_transaction(&command(), &Versioned::new(order(1)), &[OrderPlaced { total: 1 }])
        .unwrap();
    let items = build_transact_items(s.writer().schema(), &tx).unwrap();
    let state = items[1].put().unwrap();
    assert_eq!(state.condition_expression(), Some("attribute_not_exists(#v)"));
    assert_eq!(state.item()["version"], AttributeValue::N("1".into()));
}

#[test]
fn the_same_command_builds_the_same_transaction() {
    let s = store();
    let loaded = Versioned::loaded(order(10), 3, None);
    let events = [OrderPlaced { total: 10 }];
    let a = s.save_transaction(&command(), &loaded, &events).unwrap();
    let b = s.save_transaction(&command(), &loaded, &events).unwrap();
    let ids = |tx: &OutboxTransaction| tx.events().map(OutboxEvent::id).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(
        build_transact_items(s.writer().schema(), &a).unwrap(),
        build_transact_items(s.writer().schema(), &b).unwrap()
    );
}

#[test]
fn a_field_named_like_a_table_attribute_is_refused_with_the_fix() {
    let s = store();
    let clash = Versioned::new(Clashing {
        id: "c".into(),
        version: 1,
    });
    let err = s.save_transaction(&command(), &clash, &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "aggregate Clashing/c: field `version` is an attribute the outbox table uses; rename it (#[serde(rename)])"
    );
}

#[test]
fn a_stored_item_decodes_back_with_its_version() {
    let s = store();
    let tx = s
        .save_transaction(&command(), &Versioned::loaded(order(7), 1, None), &[])
        .unwrap();
    let items = build_transact_items(s.writer().schema(), &tx).unwrap();
    let item = items[1].put().unwrap().item().clone();
    let back: Versioned<Order> = s.decode_state("o-42", item).unwrap();
    assert_eq!(back.version(), 2);
    assert_eq!(back.state, order(7));

    let mut no_version = items[1].put().unwrap().item().clone();
    no_version.remove("version");
    let err = s.decode_state::<Order>("o-42", no_version).unwrap_err();
    assert!(
        err.to_string().contains("no numeric `version` attribute"),
        "{err}"
    );
}
