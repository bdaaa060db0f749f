//! `outbox redrive` and `outbox replay` against moto (SQS, EventBridge with
//! a rule to a target queue) and DynamoDB Local.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};

use chrono::{DateTime, TimeDelta, Utc};
use outbox_cli::bootstrap::{LocalStack, create_local_stack, drain_queue};
use outbox_cli::redrive::{RedriveOptions, Sources, redrive};
use outbox_cli::replay::{ReplayOptions, ReplaySelection, replay};
use outbox_core::{FixedClock, OutboxEvent, Quarantine, QuarantinedRecord, SystemClock};
use outbox_dynamodb::{DynamoDbOutboxWriter, OutboxSchema, OutboxTransaction};
use outbox_dynamodb_relay::DynamoDbStreamDecoder;
use outbox_eventbridge::{EventBridgeSink, QuarantineMessage, S3ClaimCheck, SqsQuarantine};
use outbox_tests::{
    DYNAMODB_ENDPOINT_VAR, MOTO_ENDPOINT_VAR, dynamodb_client, endpoint, outbox_binary, s3_client,
    unique_name,
};
use outbox_tests::{eventbridge_client, sqs_client, streams_client};
use serde_json::{Value, json};

const SOURCE: &str = "com.example.orders";

async fn stack(prefix: &str) -> LocalStack {
    let moto = endpoint(MOTO_ENDPOINT_VAR);
    create_local_stack(
        &dynamodb_client(),
        &eventbridge_client(&moto),
        &sqs_client(&moto),
        &s3_client(&moto),
        &unique_name(prefix),
        SOURCE,
    )
    .await
    .unwrap()
}

fn sqs() -> aws_sdk_sqs::Client {
    sqs_client(&endpoint(MOTO_ENDPOINT_VAR))
}

fn s3() -> aws_sdk_s3::Client {
    s3_client(&endpoint(MOTO_ENDPOINT_VAR))
}

/// The clients `redrive` reads with, against the emulators.
struct Clients {
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    decoder: DynamoDbStreamDecoder,
}

impl Clients {
    fn sources(&self) -> Sources<'_> {
        Sources {
            sqs: &self.sqs,
            s3: &self.s3,
            streams: &self.streams,
            decoder: &self.decoder,
        }
    }
}

fn clients() -> Clients {
    Clients {
        sqs: sqs(),
        s3: s3(),
        streams: streams_client(),
        decoder: DynamoDbStreamDecoder::new(OutboxSchema::new("orders")),
    }
}

fn sink(bus: &str) -> EventBridgeSink {
    EventBridgeSink::new(eventbridge_client(&endpoint(MOTO_ENDPOINT_VAR)), bus)
}

fn event(order: &str, sequence: u64) -> OutboxEvent {
    OutboxEvent::builder(SOURCE, "OrderChanged")
        .aggregate("Order", order)
        .sequence(sequence)
        .payload(&json!({ "order": order, "sequence": sequence }))
        .build(&SystemClock)
        .unwrap()
}

fn event_at(order: &str, sequence: u64, at: DateTime<Utc>) -> OutboxEvent {
    OutboxEvent::builder(SOURCE, "OrderChanged")
        .aggregate("Order", order)
        .sequence(sequence)
        .payload(&json!({ "order": order }))
        .build(&FixedClock::new(at))
        .unwrap()
}

fn ids<'a>(events: impl IntoIterator<Item = &'a OutboxEvent>) -> BTreeSet<String> {
    events.into_iter().map(|e| e.id().to_string()).collect()
}

/// Quarantines `events` (as the relay does) and one poison record that has
/// only its raw stream record.
async fn quarantine(stack: &LocalStack, events: &[OutboxEvent]) {
    let quarantine = SqsQuarantine::new(sqs(), &stack.quarantine.url).with_origin("dynamodb:orders");
    for (i, e) in events.iter().enumerate() {
        quarantine
            .quarantine(&QuarantinedRecord {
                position: format!("{:021}", 100 + i),
                reason: "permanent entry error: InvalidArgument".into(),
                event: Some(e.clone()),
                raw: None,
            })
            .await
            .unwrap();
    }
    quarantine
        .quarantine(&QuarantinedRecord {
            position: "000000000000000000999".into(),
            reason: "malformed outbox item: attribute `sequence` has type S, expected N".into(),
            event: None,
            raw: Some(r#"{"eventName":"INSERT","dynamodb":{"NewImage":{"outbox":{"S":"v1"}}}}"#.into()),
        })
        .await
        .unwrap();
}

/// Event ids of what the bus delivered to the target queue, in arrival order.
async fn delivered(stack: &LocalStack) -> Vec<String> {
    drain_queue(&sqs(), &stack.bus.target.url)
        .await
        .unwrap()
        .iter()
        .map(|m| {
            let body: Value = serde_json::from_str(&m.body).unwrap();
            body["detail"]["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// What is left in the quarantine queue (taken out).
async fn left_in_quarantine(stack: &LocalStack) -> Vec<QuarantineMessage> {
    drain_queue(&sqs(), &stack.quarantine.url)
        .await
        .unwrap()
        .iter()
        .map(|m| QuarantineMessage::from_body(&m.body).unwrap())
        .collect()
}

fn redrive_options(stack: &LocalStack) -> RedriveOptions {
    RedriveOptions {
        wait_seconds: 0,
        ..RedriveOptions::new(&stack.quarantine.url)
    }
}

#[tokio::test]
async fn redrive_republishes_quarantined_events_and_leaves_only_the_raw_record() {
    let stack = stack("redrive").await;
    let events: Vec<OutboxEvent> = (1..=3).map(|i| event(&format!("o-{i}"), 1)).collect();
    quarantine(&stack, &events).await;

    let mut out = Vec::new();
    let report = redrive(
        &clients().sources(),
        &sink(&stack.bus.bus),
        &redrive_options(&stack),
        &mut out,
    )
    .await
    .unwrap();
    let out = String::from_utf8(out).unwrap();

    assert_eq!(
        (report.listed, report.republished, report.raw_only, report.failed),
        (4, 3, 1, 0),
        "{out}"
    );
    let arrived = delivered(&stack).await;
    assert_eq!(arrived.len(), 3, "each event once");
    assert_eq!(arrived.into_iter().collect::<BTreeSet<_>>(), ids(&events));
    let left = left_in_quarantine(&stack).await;
    assert_eq!(left.len(), 1, "only the raw record is left: {left:?}");
    assert!(left[0].event.is_none() && left[0].raw.is_some());
    assert_eq!(left[0].position, "000000000000000000999");
    for e in &events {
        assert!(
            out.contains(&format!("{}  OrderChanged", e.id())),
            "listed: {out}"
        );
        assert!(out.contains(&format!("republished {}", e.id())), "{out}");
    }
    assert!(out.contains("raw record only"), "{out}");
}

#[tokio::test]
async fn a_record_too_large_for_the_queue_is_stored_in_s3_and_redriven_whole() {
    let stack = stack("claim").await;
    let quarantine = SqsQuarantine::new(sqs(), &stack.quarantine.url)
        .with_origin("dynamodb:orders")
        .with_claim_check(S3ClaimCheck::new(s3(), &stack.claim_checks));
    // 300 KB of payload: over the queue's 256 KiB and over a PutEvents entry.
    let big = OutboxEvent::builder(SOURCE, "OrderChanged")
        .aggregate("Order", "big")
        .sequence(1)
        .payload(&json!({ "blob": "x".repeat(300 * 1024) }))
        .build(&SystemClock)
        .unwrap();
    quarantine
        .quarantine(&QuarantinedRecord {
            position: "000000000000000000100".into(),
            reason: "event too large".into(),
            event: Some(big.clone()),
            raw: None,
        })
        .await
        .unwrap();
    let raw = format!(r#"{{"eventName":"INSERT","junk":"{}"}}"#, "y".repeat(350 * 1024));
    quarantine
        .quarantine(&QuarantinedRecord {
            position: "000000000000000000101".into(),
            reason: "malformed outbox item".into(),
            event: None,
            raw: Some(raw.clone()),
        })
        .await
        .unwrap();

    let messages = left_in_quarantine(&stack).await;
    assert_eq!(messages.len(), 2);
    for message in &messages {
        let check = message.claim_check.as_ref().expect("stored by claim-check");
        assert!(
            message.event.is_none() && message.raw.is_none(),
            "the record is not in the message"
        );
        assert!(check.bytes > 300 * 1024, "{check:?}");
        let head = s3()
            .head_object()
            .bucket(&check.bucket)
            .key(&check.key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.server_side_encryption().map(|e| e.as_str()),
            Some("AES256"),
            "stored encrypted"
        );
        let whole = message.clone().resolve(&s3()).await.unwrap();
        assert_eq!(
            (&whole.reason, &whole.position),
            (&message.reason, &message.position)
        );
        match whole.outbox_event() {
            Some(event) => assert_eq!(event.unwrap(), big),
            None => assert_eq!(whole.raw.as_deref(), Some(raw.as_str())),
        }
    }

    // Quarantine again (the messages were taken out above) and redrive: the
    // event is read whole from S3 and republished; the bus refuses it for its
    // size, so it stays in the queue, and the poison record stays too.
    for message in &messages {
        sqs()
            .send_message()
            .queue_url(&stack.quarantine.url)
            .message_body(message.to_body())
            .send()
            .await
            .unwrap();
    }
    let mut out = Vec::new();
    let report = redrive(
        &clients().sources(),
        &sink(&stack.bus.bus),
        &redrive_options(&stack),
        &mut out,
    )
    .await
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!((report.listed, report.raw_only), (2, 1), "{out}");
    assert!(
        out.contains(&big.id().to_string()),
        "the event is listed whole: {out}"
    );
    assert_eq!(left_in_quarantine(&stack).await.len(), 2);
}

/// The Lambda event source mapping's on-failure message names a batch, not
/// its records: redrive reads the batch back from the stream, republishes
/// its events and deletes the message.
#[tokio::test]
async fn an_event_source_mapping_on_failure_message_is_read_back_from_the_stream_and_redriven() {
    let stack = stack("esm").await;
    let events: Vec<OutboxEvent> = (1..=3).map(|i| event(&format!("esm-{i}"), 1)).collect();
    write(&stack, &events).await;
    let records = outbox_tests::read_stream(&stack.table).await;
    let sequence = |r: &aws_sdk_dynamodbstreams::types::Record| {
        r.dynamodb().and_then(|d| d.sequence_number()).unwrap().to_owned()
    };
    let described = dynamodb_client()
        .describe_table()
        .table_name(&stack.table)
        .send()
        .await
        .unwrap();
    let stream_arn = described
        .table()
        .and_then(|t| t.latest_stream_arn())
        .unwrap()
        .to_owned();
    let shards = streams_client()
        .describe_stream()
        .stream_arn(&stream_arn)
        .send()
        .await
        .unwrap();
    let shard_id = shards.stream_description().unwrap().shards()[0]
        .shard_id()
        .unwrap()
        .to_owned();
    // As Lambda writes it once a batch exhausted its retries.
    let message = json!({
        "requestContext": {"requestId": "r-1", "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:relay",
                           "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 11},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": null},
        "version": "1.0",
        "timestamp": "2026-12-06T05:00:00.000Z",
        "DDBStreamBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": sequence(&records[0]),
            "endSequenceNumber": sequence(&records[2]),
            "approximateArrivalOfFirstRecord": "2026-12-06T04:59:00Z",
            "approximateArrivalOfLastRecord": "2026-12-06T04:59:01Z",
            "batchSize": 3,
            "streamArn": stream_arn
        }
    });
    sqs()
        .send_message()
        .queue_url(&stack.on_failure.url)
        .message_body(message.to_string())
        .send()
        .await
        .unwrap();

    let mut out = Vec::new();
    let options = RedriveOptions {
        wait_seconds: 0,
        ..RedriveOptions::new(&stack.on_failure.url)
    };
    let report = redrive(&clients().sources(), &sink(&stack.bus.bus), &options, &mut out)
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        (
            report.listed,
            report.batches,
            report.republished,
            report.failed,
            report.unreadable
        ),
        (1, 1, 3, 0, 0),
        "{out}"
    );
    assert!(out.contains("on-failure batch of shard"), "{out}");
    let mut arrived = delivered(&stack).await;
    arrived.sort();
    let mut expected: Vec<String> = events.iter().map(|e| e.id().to_string()).collect();
    expected.sort();
    assert_eq!(arrived, expected);
    assert!(
        drain_queue(&sqs(), &stack.on_failure.url)
            .await
            .unwrap()
            .is_empty(),
        "the message is deleted once its events are republished"
    );
}

#[tokio::test]
async fn redrive_dry_run_only_lists_and_event_ids_select() {
    let stack = stack("redrive-select").await;
    let events: Vec<OutboxEvent> = (1..=3).map(|i| event(&format!("o-{i}"), 1)).collect();
    quarantine(&stack, &events).await;
    let sink = sink(&stack.bus.bus);

    let mut out = Vec::new();
    let dry = RedriveOptions {
        dry_run: true,
        ..redrive_options(&stack)
    };
    let report = redrive(&clients().sources(), &sink, &dry, &mut out)
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!((report.listed, report.republished), (4, 0), "{out}");
    assert!(events.iter().all(|e| out.contains(&e.id().to_string())), "{out}");
    assert!(out.contains("dry run: 3 event(s) would be republished"), "{out}");
    assert!(delivered(&stack).await.is_empty(), "a dry run publishes nothing");

    // The dry run made its messages visible again: a real run sees them all.
    let chosen = events[1].id().to_string();
    let selected = RedriveOptions {
        event_ids: vec![chosen.clone(), "00000000-0000-0000-0000-000000000000".into()],
        ..redrive_options(&stack)
    };
    let report = redrive(&clients().sources(), &sink, &selected, &mut Vec::new())
        .await
        .unwrap();
    assert_eq!(
        (
            report.listed,
            report.republished,
            report.not_selected,
            report.raw_only
        ),
        (4, 1, 2, 1)
    );
    assert_eq!(
        report.not_found,
        vec!["00000000-0000-0000-0000-000000000000".to_owned()]
    );
    assert_eq!(delivered(&stack).await, vec![chosen.clone()]);
    let left = left_in_quarantine(&stack).await;
    let left_ids: BTreeSet<String> = left
        .iter()
        .filter_map(|m| m.outbox_event().map(|e| e.unwrap().id().to_string()))
        .collect();
    assert_eq!(left_ids, ids([&events[0], &events[2]]));
    assert_eq!(left.len(), 3, "two unselected events and the raw record");
}

#[tokio::test]
async fn a_publish_failure_leaves_the_messages_in_the_queue() {
    let stack = stack("redrive-fail").await;
    let events: Vec<OutboxEvent> = (1..=3).map(|i| event(&format!("o-{i}"), 1)).collect();
    quarantine(&stack, &events).await;

    let mut out = Vec::new();
    let missing_bus = sink(&format!("{}-missing", stack.bus.bus));
    let report = redrive(
        &clients().sources(),
        &missing_bus,
        &redrive_options(&stack),
        &mut out,
    )
    .await
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!((report.republished, report.failed), (0, 3), "{out}");
    assert!(out.contains("left in the queue"), "{out}");
    assert!(delivered(&stack).await.is_empty());

    // Everything is still there (and visible at once): the next run with the
    // right bus delivers it.
    let report = redrive(
        &clients().sources(),
        &sink(&stack.bus.bus),
        &redrive_options(&stack),
        &mut Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!((report.listed, report.republished), (4, 3));
    assert_eq!(
        delivered(&stack).await.into_iter().collect::<BTreeSet<_>>(),
        ids(&events)
    );
}

async fn write(stack: &LocalStack, events: &[OutboxEvent]) {
    let writer = DynamoDbOutboxWriter::new(dynamodb_client(), OutboxSchema::new(&stack.table));
    for e in events {
        writer
            .commit(OutboxTransaction::new().event(e.clone()))
            .await
            .unwrap();
    }
}

fn replay_options(stack: &LocalStack, selection: ReplaySelection) -> ReplayOptions {
    ReplayOptions {
        schema: OutboxSchema::new(&stack.table),
        selection,
        from: None,
        to: None,
        now: Utc::now(),
        event_ids: Vec::new(),
        dry_run: false,
    }
}

/// A poison item fixed in the table arrives on the stream as a MODIFY,
/// which the relay skips: `outbox replay --event-id` republishes it.
#[tokio::test]
async fn a_fixed_poison_item_is_republished_by_replaying_its_event_id() {
    let stack = stack("fixed").await;
    let schema = OutboxSchema::new(&stack.table);
    let neighbour = event("fixed", 1);
    write(&stack, std::slice::from_ref(&neighbour)).await;
    let poison = event("fixed", 2);
    let mut item = schema.to_item(&poison, OutboxSchema::default_partition_value(&poison));
    item.insert(
        "sequence".into(),
        aws_sdk_dynamodb::types::AttributeValue::S("two".into()),
    );
    let key: std::collections::HashMap<_, _> = ["pk", "sk"]
        .into_iter()
        .map(|k| (k.to_owned(), item[k].clone()))
        .collect();
    let ddb = dynamodb_client();
    ddb.put_item()
        .table_name(&stack.table)
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    let broken = replay(
        &ddb,
        &sink(&stack.bus.bus),
        &replay_options(&stack, order("fixed")),
        &mut Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(broken.undecodable, 1, "the poison item does not decode");
    drain_queue(&sqs(), &stack.bus.target.url).await.unwrap();

    // The fix: the attribute gets its right type.
    ddb.update_item()
        .table_name(&stack.table)
        .set_key(Some(key))
        .update_expression("SET #s = :s")
        .expression_attribute_names("#s", "sequence")
        .expression_attribute_values(":s", aws_sdk_dynamodb::types::AttributeValue::N("2".into()))
        .send()
        .await
        .unwrap();
    let mut out = Vec::new();
    let options = ReplayOptions {
        event_ids: vec![poison.id().to_string()],
        ..replay_options(&stack, order("fixed"))
    };
    let report = replay(&ddb, &sink(&stack.bus.bus), &options, &mut out)
        .await
        .unwrap();
    assert_eq!(
        (report.found, report.published),
        (1, 1),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(
        delivered(&stack).await,
        [poison.id().to_string()],
        "only the fixed event"
    );
}

fn order(id: &str) -> ReplaySelection {
    ReplaySelection::Aggregate {
        aggregate_type: "Order".into(),
        aggregate_id: id.into(),
    }
}

#[tokio::test]
async fn replay_republishes_an_aggregates_events_in_sequence_order() {
    let stack = stack("replay-agg").await;
    let o1: Vec<OutboxEvent> = (1..=3).map(|s| event("o-1", s)).collect();
    let o2: Vec<OutboxEvent> = (1..=2).map(|s| event("o-2", s)).collect();
    // Written out of order: the sort key puts them in sequence order.
    write(
        &stack,
        &[
            o1[2].clone(),
            o2[0].clone(),
            o1[0].clone(),
            o2[1].clone(),
            o1[1].clone(),
        ],
    )
    .await;

    let mut out = Vec::new();
    let report = replay(
        &dynamodb_client(),
        &sink(&stack.bus.bus),
        &replay_options(&stack, order("o-1")),
        &mut out,
    )
    .await
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        (report.found, report.published, report.failed),
        (3, 3, 0),
        "{out}"
    );
    let expected: Vec<String> = o1.iter().map(|e| e.id().to_string()).collect();
    assert_eq!(
        delivered(&stack).await,
        expected,
        "o-1's events, in sequence order"
    );
    assert!(out.contains("3 republished"), "{out}");
}

#[tokio::test]
async fn replay_republishes_a_time_range_of_events_still_within_their_ttl() {
    let stack = stack("replay-range").await;
    let now = Utc::now();
    let hours = |h: i64| now - TimeDelta::hours(h);
    let expired = event_at("o-1", 1, now - TimeDelta::days(8)); // past its 7-day TTL
    let before = event_at("o-1", 2, hours(3));
    let in_range = [
        event_at("o-1", 3, hours(2)),
        event_at("o-2", 1, hours(1) - TimeDelta::minutes(5)),
        event_at("o-1", 4, hours(1)),
    ];
    let after = event_at("o-2", 2, now);
    let mut all = vec![expired.clone(), before.clone(), after.clone()];
    all.extend(in_range.iter().cloned());
    write(&stack, &all).await;

    let range = ReplayOptions {
        from: Some(hours(2)),
        to: Some(now - TimeDelta::minutes(30)),
        ..replay_options(&stack, ReplaySelection::Table)
    };
    let report = replay(&dynamodb_client(), &sink(&stack.bus.bus), &range, &mut Vec::new())
        .await
        .unwrap();
    assert_eq!((report.found, report.published), (3, 3));
    let expected: Vec<String> = in_range.iter().map(|e| e.id().to_string()).collect();
    assert_eq!(delivered(&stack).await, expected, "in occurred_at order");

    // An open start reaches back only as far as the TTL.
    let open = ReplayOptions {
        to: Some(hours(2)),
        ..replay_options(&stack, ReplaySelection::Table)
    };
    let report = replay(&dynamodb_client(), &sink(&stack.bus.bus), &open, &mut Vec::new())
        .await
        .unwrap();
    assert_eq!(report.found, 1);
    assert_eq!(delivered(&stack).await, vec![before.id().to_string()]);
}

#[tokio::test]
async fn replay_dry_run_publishes_nothing() {
    let stack = stack("replay-dry").await;
    let events: Vec<OutboxEvent> = (1..=2).map(|s| event("o-1", s)).collect();
    write(&stack, &events).await;

    let mut out = Vec::new();
    let dry = ReplayOptions {
        dry_run: true,
        from: Some(Utc::now() - TimeDelta::hours(1)),
        ..replay_options(&stack, order("o-1"))
    };
    let report = replay(&dynamodb_client(), &sink(&stack.bus.bus), &dry, &mut out)
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!((report.found, report.published), (2, 0));
    assert!(events.iter().all(|e| out.contains(&e.id().to_string())), "{out}");
    assert!(out.contains("nothing published"), "{out}");
    assert!(delivered(&stack).await.is_empty());
}

/// Runs the `outbox` command with the emulators as endpoint overrides.
fn outbox(args: &[&str]) -> Output {
    let moto = endpoint(MOTO_ENDPOINT_VAR);
    Command::new(outbox_binary())
        .args(args)
        .env_remove("OUTBOX_EVENT_BUS_NAME")
        .env_remove("OUTBOX_TABLE_NAME")
        .env_remove("OUTBOX_QUARANTINE_QUEUE_URL")
        .env("AWS_ENDPOINT_URL_EVENTBRIDGE", &moto)
        .env("AWS_ENDPOINT_URL_SQS", &moto)
        .env("AWS_ENDPOINT_URL_DYNAMODB", endpoint(DYNAMODB_ENDPOINT_VAR))
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_outbox_command_redrives_and_replays() {
    let stack = stack("cli").await;
    let quarantined = event("o-1", 1);
    quarantine(&stack, std::slice::from_ref(&quarantined)).await;
    let written: Vec<OutboxEvent> = (1..=2).map(|s| event("o-2", s)).collect();
    write(&stack, &written).await;

    let missing = format!("{}-missing", stack.bus.bus);
    let failed = outbox(&[
        "redrive",
        "--queue-url",
        &stack.quarantine.url,
        "--bus",
        &missing,
        "--wait-seconds",
        "0",
    ]);
    assert!(!failed.status.success(), "a publish failure fails the command");
    assert!(String::from_utf8_lossy(&failed.stderr).contains("not republished"));

    let redriven = outbox(&[
        "redrive",
        "--queue-url",
        &stack.quarantine.url,
        "--bus",
        &stack.bus.bus,
        "--wait-seconds",
        "0",
    ]);
    let stdout = String::from_utf8_lossy(&redriven.stdout);
    assert!(
        redriven.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&redriven.stderr)
    );
    assert!(
        stdout.contains(&format!("republished {}", quarantined.id())),
        "{stdout}"
    );
    assert_eq!(delivered(&stack).await, vec![quarantined.id().to_string()]);

    let replayed = outbox(&[
        "replay",
        "--table",
        &stack.table,
        "--bus",
        &stack.bus.bus,
        "--aggregate-type",
        "Order",
        "--aggregate-id",
        "o-2",
    ]);
    let stdout = String::from_utf8_lossy(&replayed.stdout);
    assert!(
        replayed.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert!(stdout.contains("2 republished"), "{stdout}");
    let expected: Vec<String> = written.iter().map(|e| e.id().to_string()).collect();
    assert_eq!(delivered(&stack).await, expected);

    let nothing = outbox(&["replay", "--table", &stack.table, "--dry-run"]);
    assert!(!nothing.status.success());
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("say what to replay"));
}
