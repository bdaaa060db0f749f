//! The production Lambda handler (`outbox_lambda::build_handler`) on the JSON
//! fixtures, publishing to moto's EventBridge and quarantining to moto's SQS.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::HashMap;

use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{Context, LambdaEvent};
use outbox_cli::bootstrap::{LocalStack, create_local_stack, drain_queue};
use outbox_dynamodb_relay::LambdaStreamBatch;
use outbox_eventbridge::QuarantineMessage;
use outbox_lambda::{Config, ENV_EVENT_BUS_NAME, ENV_QUARANTINE_QUEUE_URL, ENV_TABLE_NAME, build_handler};
use outbox_tests::{MOTO_ENDPOINT_VAR, dynamodb_client, endpoint, s3_client, unique_name};
use outbox_tests::{eventbridge_client, sqs_client};
use serde_json::Value;

fn fixture(name: &str) -> Event {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn stack() -> LocalStack {
    let moto = endpoint(MOTO_ENDPOINT_VAR);
    create_local_stack(
        &dynamodb_client(),
        &eventbridge_client(&moto),
        &sqs_client(&moto),
        &s3_client(&moto),
        &unique_name("handler"),
        "com.example.orders",
    )
    .await
    .expect("local stack")
}

fn handler_config(stack: &LocalStack, quarantine_url: &str) -> Config {
    let vars = HashMap::from([
        (ENV_EVENT_BUS_NAME, stack.bus.bus.clone()),
        (ENV_QUARANTINE_QUEUE_URL, quarantine_url.to_owned()),
        (ENV_TABLE_NAME, stack.table.clone()),
        (outbox_lambda::ENV_RETRY_BASE_MS, "5".to_owned()),
        (outbox_lambda::ENV_MAX_RETRIES, "2".to_owned()),
    ]);
    Config::from_lookup(|k| vars.get(k).cloned()).expect("config")
}

/// Event ids of the outbox inserts of a fixture that decode.
fn valid_event_ids(event: &Event) -> Vec<String> {
    let decoder = outbox_dynamodb_relay::DynamoDbStreamDecoder::new(outbox_dynamodb::OutboxSchema::new("t"));
    event
        .records
        .iter()
        .filter_map(
            |r| match decoder.decode_lambda_record(r).expect("decodes").decoded {
                outbox_core::Decoded::Event(e) => Some(e.id().to_string()),
                _ => None,
            },
        )
        .collect()
}

#[tokio::test]
async fn a_mixed_batch_publishes_the_events_quarantines_the_poison_and_reports_no_failure() {
    let stack = stack().await;
    let handler = build_handler(
        &handler_config(&stack, &stack.quarantine.url),
        &outbox_tests::sdk_config().await,
    );
    let event = fixture("dynamodb-mixed-batch.json");
    let expected = valid_event_ids(&event);
    assert!(expected.len() >= 2, "the fixture has valid events");

    let response = handler
        .handle(LambdaEvent::new(
            LambdaStreamBatch::from_event(&event),
            Context::default(),
        ))
        .await
        .expect("handled");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");

    let sqs = sqs_client(&endpoint(MOTO_ENDPOINT_VAR));
    let delivered = drain_queue(&sqs, &stack.bus.target.url).await.unwrap();
    let mut ids: Vec<String> = delivered
        .iter()
        .map(|m| {
            let envelope: Value = serde_json::from_str(&m.body).unwrap();
            assert_eq!(envelope["source"], "com.example.orders");
            envelope["detail"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    let mut expected = expected;
    expected.sort();
    assert_eq!(ids, expected, "every valid event arrived once through the bus");

    let quarantined = drain_queue(&sqs, &stack.quarantine.url).await.unwrap();
    assert_eq!(quarantined.len(), 1, "the malformed outbox item is quarantined");
    let message = QuarantineMessage::from_body(&quarantined[0].body).unwrap();
    assert!(message.reason.contains("sequence"), "{}", message.reason);
    let raw = message.raw.expect("the full record is kept");
    assert!(
        raw.contains("payload"),
        "the payload travels with the poison record: {raw}"
    );
}

#[tokio::test]
async fn a_quarantine_that_cannot_take_the_poison_record_makes_it_the_batch_item_failure() {
    let stack = stack().await;
    let missing = format!("{}-does-not-exist", stack.quarantine.url);
    let handler = build_handler(
        &handler_config(&stack, &missing),
        &outbox_tests::sdk_config().await,
    );
    let event = fixture("dynamodb-mixed-batch.json");
    let decoder = outbox_dynamodb_relay::DynamoDbStreamDecoder::new(outbox_dynamodb::OutboxSchema::new("t"));
    let poison_position = event
        .records
        .iter()
        .map(|r| decoder.decode_lambda_record(r).unwrap())
        .find(|r| matches!(r.decoded, outbox_core::Decoded::Poison { .. }))
        .map(|r| r.position)
        .expect("the fixture has a poison record");

    let response = handler
        .handle(LambdaEvent::new(
            LambdaStreamBatch::from_event(&event),
            Context::default(),
        ))
        .await
        .expect("handled");
    let reported: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(reported, vec![Some(poison_position)]);
}

#[tokio::test]
async fn a_bus_that_does_not_exist_fails_every_event_without_quarantining_any() {
    let stack = stack().await;
    let mut config = handler_config(&stack, &stack.quarantine.url);
    config.eventbridge.event_bus_name = format!("{}-missing", stack.bus.bus);
    let handler = build_handler(&config, &outbox_tests::sdk_config().await);
    let event = fixture("dynamodb-insert.json");
    let first = event.records[0].change.sequence_number.clone();
    let response = handler
        .handle(LambdaEvent::new(
            LambdaStreamBatch::from_event(&event),
            Context::default(),
        ))
        .await
        .expect("handled");
    let reported: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(
        reported,
        vec![first],
        "the first record is reported; the batch is retried later"
    );
    let sqs = sqs_client(&endpoint(MOTO_ENDPOINT_VAR));
    assert!(drain_queue(&sqs, &stack.quarantine.url).await.unwrap().is_empty());
}
