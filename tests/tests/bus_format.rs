//! The CloudEvents bus format on the local emulators: writer → DynamoDB
//! Local's stream → the standalone relay with `OUTBOX_BUS_FORMAT=cloudevents`
//! → moto's EventBridge → a rule → an SQS queue, then the consumer crate.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use outbox_cli::bootstrap::{LocalStack, create_local_stack, drain_queue};
use outbox_cli::relay::{RunnerOptions, run_dynamodb};
use outbox_consumer::{outbox_event_from_eventbridge, resolve_claim_check};
use outbox_core::{CLAIM_CHECK_METADATA_KEY, OutboxEvent, SystemClock};
use outbox_dynamodb::{DynamoDbOutboxWriter, OutboxSchema, OutboxTransaction};
use outbox_dynamodb_relay::RunnerConfig;
use outbox_eventbridge::{ENV_BUS_FORMAT, ENV_CLAIM_CHECK_BUCKET, ENV_LARGE_EVENTS};
use outbox_lambda::Config;
use outbox_tests::{MOTO_ENDPOINT_VAR, dynamodb_client, endpoint, s3_client, unique_name};
use outbox_tests::{eventbridge_client, sqs_client};
use serde_json::{Value, json};

const SOURCE: &str = "com.example.orders";

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
    .expect("local stack")
}

/// The events written: small ones (one with a trace context and metadata)
/// and one too large for a `PutEvents` request.
fn events() -> Vec<OutboxEvent> {
    let mut events: Vec<OutboxEvent> = (0..5u64)
        .map(|i| {
            OutboxEvent::builder(SOURCE, "OrderPlaced")
                .aggregate("Order", format!("o-{i}"))
                .sequence(i + 1)
                .payload(&json!({ "order": i, "total": 1999, "note": "café" }))
                .build(&SystemClock)
                .unwrap()
        })
        .collect();
    events.push(
        OutboxEvent::builder(SOURCE, "OrderShipped")
            .aggregate("Order", "o-traced")
            .sequence(2)
            .payload(&json!({ "carrier": "ups" }))
            .trace_parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .metadata("tenant", "acme")
            .build(&SystemClock)
            .unwrap(),
    );
    events.push(
        OutboxEvent::builder(SOURCE, "OrderImported")
            .aggregate("Order", "o-big")
            .sequence(1)
            .payload(&json!({ "lines": "x".repeat(300 * 1024) }))
            .build(&SystemClock)
            .unwrap(),
    );
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_as_cloudevents_reach_the_consumer_equal_to_what_was_written() {
    let stack = stack(&unique_name("cloudevents")).await;
    // The large event is published by claim-check, so the writer lets it in.
    let schema = OutboxSchema::new(&stack.table).with_max_event_bytes(None);
    let writer = DynamoDbOutboxWriter::new(dynamodb_client(), schema);
    let written = events();
    for event in &written {
        writer
            .commit(OutboxTransaction::new().event(event.clone()))
            .await
            .unwrap();
    }

    let vars = HashMap::from([
        (outbox_lambda::ENV_TABLE_NAME, stack.table.clone()),
        (outbox_lambda::ENV_EVENT_BUS_NAME, stack.bus.bus.clone()),
        (
            outbox_lambda::ENV_QUARANTINE_QUEUE_URL,
            stack.quarantine.url.clone(),
        ),
        (ENV_BUS_FORMAT, "cloudevents".to_owned()),
        (ENV_LARGE_EVENTS, "claim-check".to_owned()),
        (ENV_CLAIM_CHECK_BUCKET, stack.claim_checks.clone()),
    ]);
    let config = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let mut runner = RunnerConfig::new("cloudevents");
    runner.backoff_initial = Duration::from_millis(20);
    runner.backoff_max = Duration::from_millis(200);
    let options = RunnerOptions {
        lease_table: format!("{}-leases", stack.table),
        create_lease_table: true,
        on_failure_queue_url: stack.on_failure.url.clone(),
        runner,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(async move {
        run_dynamodb(&config, &options, &outbox_tests::sdk_config().await, async move {
            let _ = stopped.await;
        })
        .await
    });

    let moto = endpoint(MOTO_ENDPOINT_VAR);
    let (sqs, s3) = (sqs_client(&moto), s3_client(&moto));
    let wanted: HashSet<String> = written.iter().map(|e| e.id().to_string()).collect();
    let mut delivered: HashMap<String, Value> = HashMap::new();
    let until = Instant::now() + Duration::from_secs(30);
    while !wanted.iter().all(|id| delivered.contains_key(id)) && Instant::now() < until {
        for message in drain_queue(&sqs, &stack.bus.target.url).await.unwrap() {
            let body: Value = serde_json::from_str(&message.body).unwrap();
            let id = body["detail"]["id"].as_str().unwrap().to_owned();
            delivered.insert(id, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(()).unwrap();
    let report = relay.await.unwrap().unwrap();
    assert_eq!(report.quarantined, 0);
    let arrived: HashSet<String> = delivered.keys().cloned().collect();
    assert_eq!(arrived, wanted, "every event arrives, nothing else");

    for event in &written {
        let body = &delivered[&event.id().to_string()];
        let detail = &body["detail"];
        assert_eq!(detail["specversion"], "1.0", "{detail}");
        assert_eq!(detail["type"], event.event_type());
        assert_eq!(
            detail["subject"],
            format!("{}/{}", event.aggregate_type(), event.aggregate_id())
        );
        assert_eq!(body["source"], SOURCE);
        assert_eq!(body["detail-type"], event.event_type());
        let large = event.aggregate_id() == "o-big";
        assert_eq!(
            detail.get(CLAIM_CHECK_METADATA_KEY).is_some(),
            large,
            "only the large event travels by claim-check: {}",
            event.aggregate_id()
        );

        let parsed = outbox_event_from_eventbridge(body).unwrap();
        assert_eq!(parsed.claim_check().is_some(), large);
        let whole = resolve_claim_check(parsed, &s3).await.unwrap();
        assert_eq!(&whole, event, "decoded as written: {}", event.aggregate_id());
    }
    let traced = &delivered[&written[5].id().to_string()]["detail"];
    assert_eq!(
        traced["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(traced["tenant"], "acme");
}
