//! The aggregate API against DynamoDB Local: a handler's retried invocation
//! is absorbed, a stale save is refused, a standalone event is published
//! once, and typed events come back typed from the bus (moto).
#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use outbox_cli::bootstrap::{LocalStack, create_local_stack, create_outbox_table, drain_queue};
use outbox_cli::relay::{RunnerOptions, run_dynamodb};
use outbox_dynamodb::{
    Aggregate, Command, DynamoDbAggregates, Event, OutboxSchema, Saved, Versioned, WriteError,
};
use outbox_dynamodb_relay::RunnerConfig;
use outbox_lambda::Config;
use outbox_tests::{
    MOTO_ENDPOINT_VAR, dynamodb_client, endpoint, eventbridge_client, s3_client, sqs_client, unique_name,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

const SOURCE: &str = "com.example.orders";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Event)]
struct OrderPlaced {
    total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Event)]
struct OrderPaid {
    amount: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Event)]
#[event(name = "ReportRequested")]
struct ReportRequested {
    month: String,
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

/// A command handler as a service writes it: load, decide, save.
async fn place_order(
    orders: &DynamoDbAggregates,
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

async fn table() -> (DynamoDbAggregates, String) {
    let client = dynamodb_client();
    let table = unique_name("aggregates");
    create_outbox_table(&client, &table).await.unwrap();
    (
        DynamoDbAggregates::new(client, OutboxSchema::new(&table), SOURCE),
        table,
    )
}

/// Every item of a partition, by sort key.
async fn partition(table: &str, pk: &str) -> Vec<String> {
    let out = dynamodb_client()
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(pk.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    out.items()
        .iter()
        .map(|i| i["sk"].as_s().unwrap().split('#').next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_retried_invocation_commits_once_and_writes_one_event() {
    let (orders, table) = table().await;
    let at = Utc::now();
    let first = place_order(&orders, "req-1", at, "o-1", 1999).await.unwrap();
    let Saved::Committed { version, event_ids } = &first else {
        panic!("first invocation did not commit: {first:?}")
    };
    assert_eq!(*version, 1);
    assert_eq!(event_ids.len(), 1);

    // The invocation is retried (its response was lost): it reloads version
    // 1, applies the command again and saves; the command is recognised.
    let retry = place_order(&orders, "req-1", at, "o-1", 1999).await.unwrap();
    assert_eq!(retry, Saved::AlreadyApplied);

    let order = orders.load::<Order>("o-1").await.unwrap().unwrap();
    assert_eq!(order.version(), 1);
    assert_eq!(order.state.total, 1999, "applied once");
    let mut kinds = partition(&table, "Order#o-1").await;
    kinds.sort();
    assert_eq!(
        kinds,
        ["COMMAND", "OUTBOX", "STATE"],
        "one command, one event, one state"
    );

    // A new request on the same order is a new command.
    let next = place_order(&orders, "req-2", Utc::now(), "o-1", 1).await.unwrap();
    assert!(matches!(next, Saved::Committed { version: 2, .. }), "{next:?}");
}

#[tokio::test]
async fn a_save_from_a_stale_version_is_refused_and_succeeds_after_a_reload() {
    let (orders, _table) = table().await;
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
    assert!(
        matches!(err, WriteError::ConditionFailed { operation: 1, .. }),
        "{err:?}"
    );

    let mut fresh = orders.load::<Order>("o-2").await.unwrap().unwrap();
    fresh.state.paid = 30;
    let saved = orders
        .save(&pay, &fresh, &[OrderPaid { amount: 30 }.into()])
        .await
        .unwrap();
    assert!(matches!(saved, Saved::Committed { version: 3, .. }), "{saved:?}");
}

#[tokio::test]
async fn a_standalone_event_is_published_once_per_command() {
    let (orders, table) = table().await;
    let command = Command::new("report-2026-11", Utc::now()).unwrap();
    let event = ReportRequested {
        month: "2026-11".into(),
    };
    let saved = orders.publish(&command, &event).await.unwrap();
    assert_eq!(saved.event_ids(), [command.event_id(0)]);
    assert_eq!(
        orders.publish(&command, &event).await.unwrap(),
        Saved::AlreadyApplied
    );
    let kinds = partition(&table, "standalone#report-2026-11").await;
    assert_eq!(kinds.iter().filter(|k| *k == "OUTBOX").count(), 1);
}

async fn stack(prefix: &str) -> LocalStack {
    let moto = endpoint(MOTO_ENDPOINT_VAR);
    create_local_stack(
        &dynamodb_client(),
        &eventbridge_client(&moto),
        &sqs_client(&moto),
        &s3_client(&moto),
        prefix,
        SOURCE,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_events_arrive_through_the_bus_and_decode_into_the_enum() {
    let stack = stack(&unique_name("typed")).await;
    let orders = DynamoDbAggregates::new(dynamodb_client(), OutboxSchema::new(&stack.table), SOURCE);
    let mut written = Vec::new();
    for n in 0..3u64 {
        let id = format!("o-{n}");
        let mut order = Versioned::new(Order {
            id: id.clone(),
            total: 100 + n,
            paid: 0,
        });
        let events: [OrderEvent; 1] = [OrderPlaced { total: 100 + n }.into()];
        orders
            .save(
                &Command::new(format!("place-{n}"), Utc::now()).unwrap(),
                &order,
                &events,
            )
            .await
            .unwrap();
        written.push(events[0].clone());
        order = orders.load::<Order>(&id).await.unwrap().unwrap();
        order.state.paid = 100 + n;
        let paid: [OrderEvent; 1] = [OrderPaid { amount: 100 + n }.into()];
        orders
            .save(
                &Command::new(format!("pay-{n}"), Utc::now()).unwrap(),
                &order,
                &paid,
            )
            .await
            .unwrap();
        written.push(paid[0].clone());
    }

    let vars = std::collections::HashMap::from([
        (outbox_lambda::ENV_TABLE_NAME, stack.table.clone()),
        (outbox_lambda::ENV_EVENT_BUS_NAME, stack.bus.bus.clone()),
        (
            outbox_lambda::ENV_QUARANTINE_QUEUE_URL,
            stack.quarantine.url.clone(),
        ),
    ]);
    let config = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let options = RunnerOptions {
        lease_table: format!("{}-leases", stack.table),
        create_lease_table: true,
        on_failure_queue_url: stack.on_failure.url.clone(),
        runner: RunnerConfig::new("typed"),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(async move {
        run_dynamodb(&config, &options, &outbox_tests::sdk_config().await, async move {
            let _ = stopped.await;
        })
        .await
    });

    let sqs = sqs_client(&endpoint(MOTO_ENDPOINT_VAR));
    let mut received = Vec::new();
    let mut seen = HashSet::new();
    let until = Instant::now() + Duration::from_secs(30);
    while received.len() < written.len() && Instant::now() < until {
        for m in drain_queue(&sqs, &stack.bus.target.url).await.unwrap() {
            let delivered: Value = serde_json::from_str(&m.body).unwrap();
            let typed = outbox_consumer::typed_event_from_eventbridge::<OrderEvent>(&delivered).unwrap();
            if seen.insert(typed.envelope.id()) {
                received.push((
                    typed.envelope.aggregate_id().to_owned(),
                    typed.envelope.sequence(),
                    typed.event,
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(()).unwrap();
    relay.await.unwrap().unwrap();

    received.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let decoded: Vec<OrderEvent> = received.into_iter().map(|(_, _, e)| e).collect();
    assert_eq!(decoded, written);
}
