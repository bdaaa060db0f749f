//! The aggregate API on Microsoft's in-memory Cosmos DB emulator: the same
//! `Aggregate` types as on DynamoDB, the etag as the condition, and a
//! retried command absorbed.
#![allow(clippy::large_futures, clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use chrono::{DateTime, Utc};
use common::Emulator;
use outbox_cosmos::{
    Aggregate, Command, CosmosAggregates, CosmosOutboxSchema, Event, Saved, Versioned, WriteError,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
struct OrderPlaced {
    total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
struct OrderPaid {
    amount: u64,
}

#[derive(Debug, Clone, PartialEq, Event)]
enum OrderEvent {
    Placed(OrderPlaced),
    Paid(OrderPaid),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: String,
    total: u64,
    paid: u64,
}

impl Aggregate for Order {
    const AGGREGATE_TYPE: &'static str = "Order";
    type Event = OrderEvent;
    fn aggregate_id(&self) -> &str {
        &self.id
    }
}

async fn place_order(
    orders: &CosmosAggregates,
    request_id: &str,
    at: DateTime<Utc>,
    id: &str,
    total: u64,
) -> Result<Saved, WriteError> {
    let command = Command::new(request_id, at)?;
    let mut order = orders.load::<Order>(id).await?.unwrap_or_else(|| {
        Versioned::new(Order {
            id: id.into(),
            total: 0,
            paid: 0,
        })
    });
    order.state.total += total;
    orders
        .save(&command, &order, &[OrderPlaced { total }.into()])
        .await
}

async fn orders(emulator: &Emulator) -> CosmosAggregates {
    let (container, _) = emulator.containers(Vec::new()).await;
    CosmosAggregates::new(container, CosmosOutboxSchema::new("/pk"), "com.example.orders")
}

/// A document as stored, if it exists.
async fn read(emulator: &Emulator, pk: &str, id: &str) -> Option<Value> {
    let (container, _) = emulator.containers(Vec::new()).await;
    match container.read_item(pk.to_owned(), id, None).await {
        Ok(response) => Some(response.into_model::<Value>().unwrap()),
        Err(e) if e.status().is_not_found() => None,
        Err(e) => panic!("read failed: {e}"),
    }
}

#[tokio::test]
async fn a_retried_invocation_commits_once_and_writes_one_event() {
    let emulator = Emulator::new(1);
    let orders = orders(&emulator).await;
    let at = Utc::now();
    let first = place_order(&orders, "req-1", at, "o-1", 1999).await.unwrap();
    assert!(matches!(first, Saved::Committed { version: 1, .. }), "{first:?}");
    let command = Command::new("req-1", at).unwrap();
    assert_eq!(first.event_ids(), [command.event_id(0)]);
    assert_eq!(
        place_order(&orders, "req-1", at, "o-1", 1999).await.unwrap(),
        Saved::AlreadyApplied
    );

    let order = orders.load::<Order>("o-1").await.unwrap().unwrap();
    assert_eq!(order.version(), 1);
    assert_eq!(order.state.total, 1999, "applied once");
    assert!(order.etag().is_some());
    let record = read(&emulator, "Order#o-1", &format!("command-{}", command.key())).await;
    assert_eq!(record.unwrap()["command_id"], "req-1");
    let event = read(&emulator, "Order#o-1", &command.event_id(0).to_string()).await;
    assert_eq!(event.unwrap()["sequence"], 1);
}

#[tokio::test]
async fn a_save_with_a_stale_etag_is_refused_and_succeeds_after_a_reload() {
    let emulator = Emulator::new(1);
    let orders = orders(&emulator).await;
    place_order(&orders, "req-1", Utc::now(), "o-2", 10)
        .await
        .unwrap();
    let stale = orders.load::<Order>("o-2").await.unwrap().unwrap();
    place_order(&orders, "req-2", Utc::now(), "o-2", 20)
        .await
        .unwrap();

    let pay = Command::new("req-3", Utc::now()).unwrap();
    let mut paying = stale.clone();
    paying.state.paid = 30;
    let err = orders
        .save(&pay, &paying, &[OrderPaid { amount: 30 }.into()])
        .await
        .unwrap_err();
    assert!(err.needs_fresh_read(), "{err:?}");
    assert!(
        matches!(err, WriteError::PreconditionFailed { operation: 1, .. }),
        "{err:?}"
    );

    let mut fresh = orders.load::<Order>("o-2").await.unwrap().unwrap();
    fresh.state.paid = 30;
    let saved = orders
        .save(&pay, &fresh, &[OrderPaid { amount: 30 }.into()])
        .await
        .unwrap();
    assert!(matches!(saved, Saved::Committed { version: 3, .. }), "{saved:?}");
    let stored = orders.load::<Order>("o-2").await.unwrap().unwrap();
    assert_eq!((stored.state.total, stored.state.paid), (30, 30));
}

#[tokio::test]
async fn a_second_create_of_the_same_aggregate_is_refused() {
    let emulator = Emulator::new(1);
    let orders = orders(&emulator).await;
    place_order(&orders, "req-1", Utc::now(), "o-3", 1).await.unwrap();
    let again = Versioned::new(Order {
        id: "o-3".into(),
        total: 5,
        paid: 0,
    });
    let err = orders
        .save(&Command::new("req-9", Utc::now()).unwrap(), &again, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, WriteError::Conflict { operation: 1, .. }),
        "{err:?}"
    );
}

#[derive(Debug, Serialize, Deserialize)]
struct Clashing {
    id: String,
    pk: String,
}

impl Aggregate for Clashing {
    const AGGREGATE_TYPE: &'static str = "Clashing";
    type Event = OrderPlaced;
    fn aggregate_id(&self) -> &str {
        &self.id
    }
}

#[tokio::test]
async fn a_field_named_like_the_partition_key_is_refused_with_the_fix() {
    let emulator = Emulator::new(1);
    let orders = orders(&emulator).await;
    let clash = Versioned::new(Clashing {
        id: "c-1".into(),
        pk: "mine".into(),
    });
    let err = orders
        .save(&Command::new("req-1", Utc::now()).unwrap(), &clash, &[])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "aggregate Clashing/c-1: field `pk` is a field the container uses; rename it (#[serde(rename)])"
    );
}
