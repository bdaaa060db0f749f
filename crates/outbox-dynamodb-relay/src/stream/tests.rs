//! The decoder's tests: fixtures, both sources, and generated records.

use std::collections::HashMap;

use super::*;
use crate::LambdaStreamBatch;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodbstreams::types::AttributeValue as StreamsValue;
use aws_sdk_dynamodbstreams::types::{Identity, OperationType, StreamRecord, StreamViewType};
use chrono::{TimeZone, Utc};
use outbox_core::{FixedClock, OutboxEvent};
use serde_json::Value;

const INSERT: &str = include_str!("../../../../tests/fixtures/dynamodb-insert.json");
const MODIFY: &str = include_str!("../../../../tests/fixtures/dynamodb-modify.json");
const TTL_REMOVE: &str = include_str!("../../../../tests/fixtures/dynamodb-ttl-remove.json");
const FOREIGN_ITEM: &str = include_str!("../../../../tests/fixtures/dynamodb-foreign-item.json");
const MALFORMED: &str = include_str!("../../../../tests/fixtures/dynamodb-malformed-outbox-item.json");
const UNKNOWN_EVENT_NAME: &str = include_str!("../../../../tests/fixtures/dynamodb-unknown-event-name.json");
const MIXED_BATCH: &str = include_str!("../../../../tests/fixtures/dynamodb-mixed-batch.json");

const FIXTURES: [(&str, &str); 7] = [
    ("insert", INSERT),
    ("modify", MODIFY),
    ("ttl-remove", TTL_REMOVE),
    ("foreign-item", FOREIGN_ITEM),
    ("malformed-outbox-item", MALFORMED),
    ("unknown-event-name", UNKNOWN_EVENT_NAME),
    ("mixed-batch", MIXED_BATCH),
];

fn decoder() -> DynamoDbStreamDecoder {
    DynamoDbStreamDecoder::new(OutboxSchema::new("orders"))
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn lambda_event(text: &str) -> LambdaEvent {
    serde_json::from_str(text).unwrap()
}

fn decode_fixture(text: &str) -> Vec<RelayRecord> {
    decoder().decode_lambda_event(&lambda_event(text)).unwrap()
}

fn event(record: &RelayRecord) -> &OutboxEvent {
    match &record.decoded {
        Decoded::Event(event) => event,
        other => panic!("{}: expected an event, got {other:?}", record.position),
    }
}

fn skip(reason: SkipReason) -> Decoded {
    Decoded::Skip(reason)
}

fn not_insert(event_name: &str) -> Decoded {
    skip(SkipReason::NotInsert {
        event_name: event_name.into(),
    })
}

/// `actual` holds every field of `expected` with the same value (numbers
/// compared by value: `1795428000` and `1795428000.0` are the same time).
fn assert_contains(actual: &Value, expected: &Value, path: &str) {
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => {
            for (name, value) in expected {
                let found = actual
                    .get(name)
                    .unwrap_or_else(|| panic!("{path}.{name} is missing"));
                assert_contains(found, value, &format!("{path}.{name}"));
            }
        }
        (Value::Number(a), Value::Number(e)) => assert_eq!(a.as_f64(), e.as_f64(), "{path}"),
        _ => assert_eq!(actual, expected, "{path}"),
    }
}

/// Same position and outcome; poison with the same reason (the raw text
/// of the two sources differs in form). `decode_item` reports the first
/// bad metadata entry in hash order, so for those only the attribute is
/// compared; a value nested past serde_json's recursion limit is that
/// error in Lambda's JSON form (see `deep_nesting_...`), so only both
/// being poison is required.
fn assert_same_decoding(a: &RelayRecord, b: &RelayRecord) {
    assert_eq!(a.position, b.position);
    match (&a.decoded, &b.decoded) {
        (Decoded::Poison { reason: ra, .. }, Decoded::Poison { reason: rb, .. }) => {
            let metadata = "attribute `metadata.";
            let too_deep = |r: &str| r.contains("recursion limit exceeded");
            let both_metadata = ra.starts_with(metadata) && rb.starts_with(metadata);
            if !(both_metadata || too_deep(ra) || too_deep(rb)) {
                assert_eq!(ra, rb);
            }
        }
        (da, db) => assert_eq!(da, db, "at {}", a.position),
    }
}

// ---- Streams API records from DynamoDB JSON, with the SDK builders ----

fn streams_value(value: &Value) -> StreamsValue {
    let (tag, inner) = value.as_object().unwrap().iter().next().unwrap();
    let strings = || -> Vec<String> {
        inner
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let blob = |s: &str| Blob::new(aws_smithy_types::base64::decode(s).unwrap());
    match tag.as_str() {
        "S" => StreamsValue::S(inner.as_str().unwrap().into()),
        "N" => StreamsValue::N(inner.as_str().unwrap().into()),
        "B" => StreamsValue::B(blob(inner.as_str().unwrap())),
        "BOOL" => StreamsValue::Bool(inner.as_bool().unwrap()),
        "NULL" => StreamsValue::Null(inner.as_bool().unwrap()),
        "SS" => StreamsValue::Ss(strings()),
        "NS" => StreamsValue::Ns(strings()),
        "BS" => StreamsValue::Bs(strings().iter().map(|s| blob(s)).collect()),
        "M" => StreamsValue::M(streams_image(inner)),
        "L" => StreamsValue::L(inner.as_array().unwrap().iter().map(streams_value).collect()),
        other => panic!("not a DynamoDB JSON type: {other}"),
    }
}

fn streams_image(image: &Value) -> HashMap<String, StreamsValue> {
    image
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, value)| (name.clone(), streams_value(value)))
        .collect()
}

fn streams_record(record: &Value) -> StreamsRecord {
    let text = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(str::to_owned);
    let change = &record["dynamodb"];
    let stream_record = StreamRecord::builder()
        .set_approximate_creation_date_time(
            change["ApproximateCreationDateTime"]
                .as_f64()
                .map(aws_smithy_types::DateTime::from_secs_f64),
        )
        .set_keys(change.get("Keys").map(streams_image))
        .set_new_image(change.get("NewImage").map(streams_image))
        .set_old_image(change.get("OldImage").map(streams_image))
        .set_sequence_number(text(change, "SequenceNumber"))
        .set_size_bytes(change["SizeBytes"].as_i64())
        .set_stream_view_type(text(change, "StreamViewType").map(|v| StreamViewType::from(v.as_str())))
        .build();
    StreamsRecord::builder()
        .set_event_id(text(record, "eventID"))
        .set_event_name(text(record, "eventName").map(|n| OperationType::from(n.as_str())))
        .set_event_version(text(record, "eventVersion"))
        .set_event_source(text(record, "eventSource"))
        .set_aws_region(text(record, "awsRegion"))
        .set_user_identity(record.get("userIdentity").map(|who| {
            Identity::builder()
                .set_type(text(who, "type"))
                .set_principal_id(text(who, "principalId"))
                .build()
        }))
        .dynamodb(stream_record)
        .build()
}

// ---- the fixtures ----

#[test]
fn insert_fixture_decodes_to_two_events() {
    let records = decode_fixture(INSERT);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].position, "400000000000000000002");
    assert_eq!(records[1].position, "400000000000000000003");

    let placed = event(&records[0]);
    assert_eq!(placed.id().to_string(), "01a207d9-2100-71a2-bb4c-5d6e7f801234");
    assert_eq!(placed.source(), "com.example.orders");
    assert_eq!(placed.event_type(), "OrderPlaced");
    assert_eq!((placed.aggregate_type(), placed.aggregate_id()), ("Order", "o-1"));
    assert_eq!(placed.sequence(), 1);
    assert_eq!(
        placed.occurred_at(),
        Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
    );
    assert_eq!(
        placed.payload().to_value().unwrap(),
        serde_json::json!({"orderId": "o-1", "total": 1999, "currency": "EUR", "lines": [{"sku": "SKU-1", "qty": 2}]})
    );
    assert_eq!(
        placed.trace_parent().map(|t| t.as_str()),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(placed.metadata().get("tenant").map(String::as_str), Some("acme"));
    assert_eq!(placed.metadata().len(), 1);

    let registered = event(&records[1]);
    assert_eq!(
        registered.id().to_string(),
        "01a207d9-21fa-72b3-8c4d-5e6f70819a2b"
    );
    assert_eq!(registered.event_type(), "CustomerRegistered");
    assert_eq!(
        (registered.aggregate_type(), registered.aggregate_id()),
        ("Customer", "c-7")
    );
    assert_eq!(registered.sequence(), 1);
    assert_eq!(
        registered.occurred_at(),
        Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap() + chrono::Duration::milliseconds(250)
    );
    assert_eq!(
        registered.payload().to_value().unwrap(),
        serde_json::json!({"customerId": "c-7", "email": "ada@example.com"})
    );
    assert!(registered.trace_parent().is_none());
    assert!(registered.metadata().is_empty());
}

#[test]
fn modify_fixture_is_skipped_as_not_insert() {
    let records = decode_fixture(MODIFY);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].position, "400000000000000000004");
    assert_eq!(records[0].decoded, not_insert("MODIFY"));
}

#[test]
fn ttl_remove_fixture_is_skipped_as_ttl_removal() {
    let records = decode_fixture(TTL_REMOVE);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].position, "400000000000000000006");
    assert_eq!(records[0].decoded, skip(SkipReason::TtlRemoval));
}

#[test]
fn foreign_item_fixture_is_skipped_as_not_outbox() {
    let records = decode_fixture(FOREIGN_ITEM);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].position, "400000000000000000001");
    assert_eq!(records[0].decoded, skip(SkipReason::NotOutbox));
}

#[test]
fn unknown_event_name_fixture_is_skipped_with_its_name() {
    let records = decode_fixture(UNKNOWN_EVENT_NAME);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].position, "400000000000000000007");
    assert_eq!(
        records[0].decoded,
        skip(SkipReason::UnknownEventName {
            event_name: "UNKNOWN_TO_SDK_VERSION".into()
        })
    );
}

#[test]
fn malformed_fixture_is_poison_naming_sequence_and_keeping_the_whole_record() {
    let records = decode_fixture(MALFORMED);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].position, "400000000000000000005");
    let Decoded::Poison { reason, raw } = &records[0].decoded else {
        panic!("expected poison, got {:?}", records[0].decoded);
    };
    assert_eq!(reason, "attribute `sequence` has type S, expected N");
    let fixture_record = &json(MALFORMED)["Records"][0];
    let raw = json(raw);
    assert_contains(&raw, fixture_record, "record");
    assert_eq!(
        raw["dynamodb"]["NewImage"]["payload"]["S"],
        "{\"orderId\":\"o-2\",\"total\":500}"
    );
    assert_eq!(raw["eventID"], "6c1b0d4ee1a54a2fb5f0d4c1e0a1b205");
}

#[test]
fn mixed_batch_fixture_decodes_every_record_in_order() {
    let records = decode_fixture(MIXED_BATCH);
    let positions: Vec<&str> = records.iter().map(|r| r.position.as_str()).collect();
    assert_eq!(
        positions,
        (1..=8)
            .map(|i| format!("4000000000000000000{i:02}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(records[0].decoded, skip(SkipReason::NotOutbox));
    assert_eq!(event(&records[1]).event_type(), "OrderPlaced");
    assert_eq!(event(&records[2]).event_type(), "CustomerRegistered");
    assert_eq!(records[3].decoded, not_insert("MODIFY"));
    assert!(
        matches!(&records[4].decoded, Decoded::Poison { reason, .. } if reason.contains("`sequence`")),
        "{:?}",
        records[4].decoded
    );
    assert_eq!(records[5].decoded, skip(SkipReason::TtlRemoval));
    assert_eq!(
        records[6].decoded,
        skip(SkipReason::UnknownEventName {
            event_name: "UNKNOWN_TO_SDK_VERSION".into()
        })
    );
    let paid = event(&records[7]);
    assert_eq!(
        (paid.event_type(), paid.aggregate_id(), paid.sequence()),
        ("OrderPaid", "o-1", 2)
    );
}

#[test]
fn mixed_batch_holds_every_case_fixture_in_order() {
    let mixed = json(MIXED_BATCH)["Records"].as_array().unwrap().clone();
    let mut found = Vec::new();
    for (name, text) in FIXTURES.iter().filter(|(name, _)| *name != "mixed-batch") {
        for record in json(text)["Records"].as_array().unwrap() {
            let at = mixed.iter().position(|m| m == record);
            assert!(
                at.is_some(),
                "{name}: record {} not in the mixed batch",
                record["eventID"]
            );
            found.push(at);
        }
    }
    found.sort_unstable();
    found.dedup();
    assert_eq!(
        found.len(),
        7,
        "the mixed batch holds the 7 records of the case fixtures"
    );
    assert!(mixed.len() >= 7);
}

#[test]
fn fixtures_are_complete_lambda_events() {
    for (name, text) in FIXTURES {
        let event = json(text);
        let records = event["Records"].as_array().unwrap();
        assert!(!records.is_empty(), "{name}");
        let mut previous = 0u128;
        for record in records {
            for field in [
                "eventID",
                "eventName",
                "eventVersion",
                "awsRegion",
                "eventSourceARN",
            ] {
                assert!(record[field].is_string(), "{name}: {field}");
            }
            assert_eq!(record["eventSource"], "aws:dynamodb", "{name}");
            let change = &record["dynamodb"];
            assert!(change["ApproximateCreationDateTime"].is_number(), "{name}");
            assert!(change["Keys"]["pk"]["S"].is_string(), "{name}");
            assert!(change["Keys"]["sk"]["S"].is_string(), "{name}");
            assert!(change["SizeBytes"].is_u64(), "{name}");
            assert_eq!(change["StreamViewType"], "NEW_IMAGE", "{name}");
            let sequence = change["SequenceNumber"].as_str().unwrap();
            assert_eq!(sequence.len(), 21, "{name}: {sequence}");
            let sequence: u128 = sequence.parse().unwrap();
            assert!(sequence > previous, "{name}: sequence numbers ascend");
            previous = sequence;
            if matches!(record["eventName"].as_str(), Some("INSERT" | "MODIFY")) {
                assert!(change["NewImage"].is_object(), "{name}");
            }
        }
        assert_eq!(lambda_event(text).records.len(), records.len(), "{name}");
    }
}

// ---- Lambda records read from their JSON text ----

#[test]
fn batches_read_from_the_event_text_decode_like_the_parsed_events() {
    for text in [INSERT, MODIFY, TTL_REMOVE, FOREIGN_ITEM, MALFORMED, MIXED_BATCH] {
        let batch = LambdaStreamBatch::from_json(text).unwrap();
        assert_eq!(batch.len(), lambda_event(text).records.len());
        let from_text = decoder().decode_lambda_batch(batch).unwrap();
        let from_event = decode_fixture(text);
        assert_eq!(from_text.len(), from_event.len());
        for (a, b) in from_text.iter().zip(&from_event) {
            // Poison differs only in its raw text: exactly the file's bytes
            // here, the parsed record written back there.
            assert_same_decoding(a, b);
        }
    }
}

#[test]
fn a_poison_record_keeps_the_exact_bytes_lambda_sent() {
    let batch = LambdaStreamBatch::from_json(MALFORMED).unwrap();
    let texts: Vec<String> = batch.records().map(str::to_owned).collect();
    let decoded = decoder().decode_lambda_batch(batch).unwrap();
    let Decoded::Poison { raw, .. } = &decoded[0].decoded else {
        panic!("{:?}", decoded[0])
    };
    assert_eq!(raw, &texts[0]);
    assert!(
        MALFORMED.contains(raw.as_str()),
        "the record's text, as it is in the file"
    );
}

#[test]
fn a_record_that_does_not_read_as_one_is_poison_when_it_has_a_position() {
    let odd = [
        r#"{"eventID":"e-1","eventName":7,"dynamodb":{"SequenceNumber":"100"}}"#,
        r#"{"eventID":"e-2","eventName":"INSERT","dynamodb":{"SequenceNumber":"200","NewImage":[1,2]}}"#,
        r#"{"eventID":"e-3","userIdentity":"someone","dynamodb":{"SequenceNumber":"300"}}"#,
    ];
    for text in odd {
        let record = decoder().decode_lambda_json(text).unwrap();
        match record.decoded {
            Decoded::Poison { reason, raw } => {
                assert!(reason.starts_with("not a DynamoDB Streams record: "), "{reason}");
                assert_eq!(raw, text);
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    for (text, event_id) in [
        (r#"{"eventID":"e-4","eventName":7}"#, Some("e-4")),
        (r#"{"eventName":7,"dynamodb":{"SequenceNumber":42}}"#, None),
        ("5", None),
        (r#""INSERT""#, None),
    ] {
        assert_eq!(
            decoder().decode_lambda_json(text).unwrap_err(),
            StreamError::MissingSequenceNumber {
                event_id: event_id.map(str::to_owned)
            },
            "{text}"
        );
    }
}

#[test]
fn escaped_strings_in_the_event_text_are_read() {
    let event = valid_event("o-\"1\"", 1);
    let twin = lambda_twin(&insert_record(streams_item(&event), "100"));
    let text = serde_json::to_string(&twin).unwrap();
    assert!(text.contains(r#"o-\"1\""#), "{text}");
    let record = decoder().decode_lambda_json(&text).unwrap();
    assert_eq!(record.decoded, Decoded::Event(Box::new(event)));
}

/// Every outbox item of the fixtures is exactly what the writer puts:
/// decoding and re-encoding it gives it back (keys, TTL, payload text).
#[test]
fn fixture_outbox_items_are_what_the_writer_writes() {
    let schema = OutboxSchema::new("orders");
    let mut checked = 0;
    for record in &lambda_event(MIXED_BATCH).records {
        if !record.change.new_image.contains_key("outbox") {
            continue;
        }
        let mut item: Item = record.change.new_image.clone().into();
        if record.event_id.ends_with("205") {
            // The malformed one: everything but its `sequence` follows the schema.
            assert_eq!(item["sequence"], AttributeValue::S("2".into()));
            item.insert("sequence".into(), AttributeValue::N("2".into()));
        }
        if record.event_name == "MODIFY" {
            continue;
        }
        let event = schema.decode_item(&item).unwrap();
        assert_eq!(event.id().get_version_num(), 7);
        let (secs, nanos) = event.id().get_timestamp().unwrap().to_unix();
        assert_eq!(
            Utc.timestamp_opt(i64::try_from(secs).unwrap(), nanos).unwrap(),
            event.occurred_at()
        );
        assert_eq!(schema.to_item(&event, item["pk"].clone()), item);
        assert_eq!(
            record.change.keys.get("sk"),
            Some(&serde_dynamo::AttributeValue::S(OutboxSchema::sort_value(&event)))
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
}

// ---- Streams API records ----

#[test]
fn streams_records_decode_like_the_lambda_records() {
    let decoder = decoder();
    for (name, text) in FIXTURES {
        let fixture = json(text);
        let lambda = lambda_event(text);
        for (record, lambda_record) in fixture["Records"].as_array().unwrap().iter().zip(&lambda.records) {
            let streams = streams_record(record);
            let from_streams = decoder.decode_stream_record(&streams).unwrap();
            let from_lambda = decoder.decode_lambda_record(lambda_record).unwrap();
            assert_same_decoding(&from_streams, &from_lambda);
            if let Decoded::Poison { raw, .. } = &from_streams.decoded {
                // Everything but the ARN, which GetRecords does not return per record.
                let mut expected = record.clone();
                expected.as_object_mut().unwrap().remove("eventSourceARN");
                assert_contains(&json(raw), &expected, name);
            }
            // The converted record is the Lambda form of the record.
            let converted = super::lambda_record(&streams);
            assert_eq!(
                &converted.change.new_image, &lambda_record.change.new_image,
                "{name}"
            );
            assert_eq!(&converted.change.keys, &lambda_record.change.keys, "{name}");
        }
    }
}

#[test]
fn streams_unknown_operation_type_is_skipped_with_its_name() {
    let record = StreamsRecord::builder()
        .event_id("e-1")
        .event_name(OperationType::from("UNKNOWN_TO_SDK_VERSION"))
        .dynamodb(
            StreamRecord::builder()
                .keys("pk", StreamsValue::S("Order#o-9".into()))
                .keys("sk", StreamsValue::S("OUTBOX#00000000000000000004#x".into()))
                .sequence_number("500000000000000000001")
                .build(),
        )
        .build();
    // The SDK keeps the name of an operation type it does not know.
    let name = record.event_name().map(OperationType::as_str);
    assert_eq!(name, Some("UNKNOWN_TO_SDK_VERSION"));
    assert!(!OperationType::values().contains(&"UNKNOWN_TO_SDK_VERSION"));
    let decoded = decoder().decode_stream_record(&record).unwrap();
    assert_eq!(decoded.position, "500000000000000000001");
    assert_eq!(
        decoded.decoded,
        skip(SkipReason::UnknownEventName {
            event_name: "UNKNOWN_TO_SDK_VERSION".into()
        })
    );
    let no_name = record.clone().to_builder_without_name();
    assert_eq!(
        decoder().decode_stream_record(&no_name).unwrap().decoded,
        skip(SkipReason::UnknownEventName {
            event_name: String::new()
        })
    );
}

trait WithoutName {
    fn to_builder_without_name(self) -> StreamsRecord;
}
impl WithoutName for StreamsRecord {
    fn to_builder_without_name(self) -> StreamsRecord {
        StreamsRecord::builder()
            .set_event_id(self.event_id().map(str::to_owned))
            .set_dynamodb(self.dynamodb().cloned())
            .build()
    }
}

fn valid_event(aggregate_id: &str, sequence: u64) -> OutboxEvent {
    let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap());
    OutboxEvent::builder("com.example.orders", "OrderPlaced")
        .aggregate("Order", aggregate_id)
        .sequence(sequence)
        .payload(&serde_json::json!({"total": 1}))
        .build(&clock)
        .unwrap()
}

fn to_streams(value: &AttributeValue) -> StreamsValue {
    match value {
        AttributeValue::S(s) => StreamsValue::S(s.clone()),
        AttributeValue::N(n) => StreamsValue::N(n.clone()),
        AttributeValue::B(b) => StreamsValue::B(b.clone()),
        AttributeValue::Bool(b) => StreamsValue::Bool(*b),
        AttributeValue::Null(b) => StreamsValue::Null(*b),
        AttributeValue::Ss(v) => StreamsValue::Ss(v.clone()),
        AttributeValue::Ns(v) => StreamsValue::Ns(v.clone()),
        AttributeValue::Bs(v) => StreamsValue::Bs(v.clone()),
        AttributeValue::M(m) => StreamsValue::M(m.iter().map(|(k, v)| (k.clone(), to_streams(v))).collect()),
        AttributeValue::L(l) => StreamsValue::L(l.iter().map(to_streams).collect()),
        other => panic!("{other:?}"),
    }
}

fn streams_item(event: &OutboxEvent) -> HashMap<String, StreamsValue> {
    let schema = OutboxSchema::new("orders");
    schema
        .to_item(event, OutboxSchema::default_partition_value(event))
        .iter()
        .map(|(k, v)| (k.clone(), to_streams(v)))
        .collect()
}

fn insert_record(image: HashMap<String, StreamsValue>, sequence_number: &str) -> StreamsRecord {
    StreamsRecord::builder()
        .event_id(format!("id-{sequence_number}"))
        .event_name(OperationType::Insert)
        .aws_region("eu-west-1")
        .dynamodb(
            StreamRecord::builder()
                .approximate_creation_date_time(aws_smithy_types::DateTime::from_secs(1_795_428_000))
                .set_keys(Some(
                    image
                        .iter()
                        .filter(|(k, _)| *k == "pk" || *k == "sk")
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ))
                .set_new_image(Some(image))
                .sequence_number(sequence_number)
                .size_bytes(100)
                .stream_view_type(StreamViewType::NewImage)
                .build(),
        )
        .build()
}

fn lambda_twin(record: &StreamsRecord) -> LambdaRecord {
    lambda_record(record)
}

#[test]
fn every_attribute_type_converts_and_renders_as_dynamodb_json() {
    let event = valid_event("o-1", 1);
    let mut image = streams_item(&event);
    let bytes = vec![0u8, 1, 2, 250, 255];
    let extra = StreamsValue::M(HashMap::from([
        ("s".into(), StreamsValue::S(String::new())),
        (
            "n".into(),
            StreamsValue::N("123456789012345678901234567890".into()),
        ),
        ("b".into(), StreamsValue::B(Blob::new(bytes.clone()))),
        ("bool".into(), StreamsValue::Bool(false)),
        ("null".into(), StreamsValue::Null(true)),
        ("ss".into(), StreamsValue::Ss(vec!["a".into(), "b".into()])),
        ("ns".into(), StreamsValue::Ns(vec!["1".into(), "-2.5".into()])),
        (
            "bs".into(),
            StreamsValue::Bs(vec![Blob::new(bytes.clone()), Blob::new(Vec::new())]),
        ),
        (
            "l".into(),
            StreamsValue::L(vec![StreamsValue::L(vec![]), StreamsValue::M(HashMap::new())]),
        ),
    ]));
    image.insert("extra".into(), extra);
    let record = insert_record(image, "500000000000000000002");

    let decoded = decoder().decode_stream_record(&record).unwrap();
    assert_eq!(decoded.decoded, Decoded::Event(Box::new(event)));

    let rendered = serde_json::to_value(lambda_record(&record)).unwrap();
    let extra = &rendered["dynamodb"]["NewImage"]["extra"]["M"];
    assert_eq!(extra["b"], serde_json::json!({"B": "AAEC+v8="}));
    assert_eq!(extra["bs"], serde_json::json!({"BS": ["AAEC+v8=", ""]}));
    assert_eq!(extra["null"], serde_json::json!({"NULL": true}));
    assert_eq!(extra["ns"], serde_json::json!({"NS": ["1", "-2.5"]}));
    assert_eq!(extra["l"], serde_json::json!({"L": [{"L": []}, {"M": {}}]}));
    assert_eq!(rendered["dynamodb"]["ApproximateCreationDateTime"], 1_795_428_000);
    assert_eq!(rendered["dynamodb"]["StreamViewType"], "NEW_IMAGE");
    assert_eq!(rendered["eventName"], "INSERT");

    // The Lambda form reads back to the same decoding.
    let text = serde_json::to_string(&lambda_twin(&record)).unwrap();
    assert_eq!(decoder().decode_lambda_json(&text).unwrap(), decoded);
}

#[test]
fn deep_nesting_outside_the_schema_attributes_does_not_matter() {
    let deep = (0..200).fold(StreamsValue::S("deep".into()), |inner, i| {
        if i % 2 == 0 {
            StreamsValue::M(HashMap::from([("a".into(), inner)]))
        } else {
            StreamsValue::L(vec![inner])
        }
    });
    let event = valid_event("o-1", 1);
    let mut image = streams_item(&event);
    image.insert("extra".into(), deep.clone());
    let record = insert_record(image, "500000000000000000003");
    let expected = Decoded::Event(Box::new(event));
    assert_eq!(decoder().decode_stream_record(&record).unwrap().decoded, expected);
    let twin = lambda_twin(&record);
    assert_eq!(decoder().decode_lambda_record(&twin).unwrap().decoded, expected);

    // Deep in a schema attribute: poison, naming the attribute. The
    // Streams API has typed the whole value, so the type error is found;
    // Lambda's JSON form is read with serde_json's recursion limit (128),
    // far past DynamoDB's own 32 levels, which is the error it names.
    let mut image = streams_item(&valid_event("o-1", 1));
    image.insert(
        "metadata".into(),
        StreamsValue::M(HashMap::from([("k".into(), deep)])),
    );
    let record = insert_record(image, "500000000000000000004");
    for decoded in [
        decoder().decode_stream_record(&record).unwrap(),
        decoder().decode_lambda_record(&lambda_twin(&record)).unwrap(),
    ] {
        match &decoded.decoded {
            Decoded::Poison { reason, raw } => {
                assert!(
                    reason == "attribute `metadata.k` has type L, expected S"
                        || reason.starts_with("attribute `metadata` is invalid: not a DynamoDB attribute value: recursion limit exceeded"),
                    "{reason}"
                );
                assert!(raw.contains("500000000000000000004"));
                assert!(raw.contains("\"deep\""));
            }
            other => panic!("{other:?}"),
        }
    }
}

// ---- MODIFY / REMOVE ----

fn change_record(
    event_name: &str,
    keys: &[(&str, &str)],
    old_image: Option<HashMap<String, StreamsValue>>,
    identity: Option<(&str, &str)>,
) -> StreamsRecord {
    StreamsRecord::builder()
        .event_id("e-2")
        .event_name(OperationType::from(event_name))
        .aws_region("eu-west-1")
        .set_user_identity(
            identity
                .map(|(kind, principal)| Identity::builder().r#type(kind).principal_id(principal).build()),
        )
        .dynamodb(
            StreamRecord::builder()
                .set_keys(Some(
                    keys.iter()
                        .map(|(k, v)| ((*k).to_owned(), StreamsValue::S((*v).to_owned())))
                        .collect(),
                ))
                .set_old_image(old_image)
                .sequence_number("600000000000000000001")
                .size_bytes(10)
                .build(),
        )
        .build()
}

#[test]
fn outbox_changes_are_recognised_by_image_marker_or_sort_key() {
    let decoder = decoder();
    let outbox_keys = [("pk", "Order#o-1"), ("sk", "OUTBOX#00000000000000000001#x")];
    let foreign_keys = [("pk", "Order#o-1"), ("sk", "ORDER")];
    let marker_only = HashMap::from([("outbox".to_owned(), StreamsValue::S("v1".into()))]);
    let ttl = Some(("Service", "dynamodb.amazonaws.com"));
    let cases = [
        // A keys-only REMOVE of an outbox item, by a user.
        (
            change_record("REMOVE", &outbox_keys, None, None),
            not_insert("REMOVE"),
        ),
        // The marker in the old image, whatever the keys.
        (
            change_record("MODIFY", &foreign_keys, Some(marker_only.clone()), None),
            not_insert("MODIFY"),
        ),
        (
            change_record("REMOVE", &foreign_keys, None, None),
            skip(SkipReason::NotOutbox),
        ),
        (
            change_record("MODIFY", &foreign_keys, None, None),
            skip(SkipReason::NotOutbox),
        ),
        // TTL removals, outbox or not, are checked first.
        (
            change_record("REMOVE", &outbox_keys, None, ttl),
            skip(SkipReason::TtlRemoval),
        ),
        (
            change_record("REMOVE", &foreign_keys, None, ttl),
            skip(SkipReason::TtlRemoval),
        ),
        // Only that exact identity is TTL, and only on REMOVE.
        (
            change_record(
                "REMOVE",
                &outbox_keys,
                None,
                Some(("Service", "other.amazonaws.com")),
            ),
            not_insert("REMOVE"),
        ),
        (
            change_record(
                "REMOVE",
                &outbox_keys,
                None,
                Some(("User", "dynamodb.amazonaws.com")),
            ),
            not_insert("REMOVE"),
        ),
        (
            change_record("MODIFY", &outbox_keys, None, ttl),
            not_insert("MODIFY"),
        ),
        // Event names are matched exactly.
        (
            change_record("remove", &outbox_keys, None, None),
            skip(SkipReason::UnknownEventName {
                event_name: "remove".into(),
            }),
        ),
    ];
    for (i, (record, expected)) in cases.iter().enumerate() {
        let from_streams = decoder.decode_stream_record(record).unwrap();
        assert_eq!(&from_streams.decoded, expected, "case {i}");
        let from_lambda = decoder.decode_lambda_record(&lambda_twin(record)).unwrap();
        assert_eq!(&from_lambda.decoded, expected, "case {i} (Lambda)");
    }

    // The schema's own sort key and marker names are used.
    let custom = DynamoDbStreamDecoder::new(
        OutboxSchema::new("t")
            .with_sort_key("SK")
            .with_marker_attribute("kind"),
    );
    assert_eq!(custom.schema().sort_key(), "SK");
    let record = change_record("REMOVE", &[("SK", "OUTBOX#1")], None, None);
    assert_eq!(
        custom.decode_stream_record(&record).unwrap().decoded,
        not_insert("REMOVE")
    );
    let record = change_record("REMOVE", &outbox_keys, Some(marker_only), None);
    assert_eq!(
        custom.decode_stream_record(&record).unwrap().decoded,
        skip(SkipReason::NotOutbox)
    );
}

#[test]
fn sort_key_prefix_matches_the_writer() {
    assert!(OutboxSchema::sort_value(&valid_event("o-1", 7)).starts_with(OUTBOX_SORT_KEY_PREFIX));
}

// ---- whole-batch errors ----

#[test]
fn a_record_without_sequence_number_fails_the_batch() {
    let mut event = lambda_event(MIXED_BATCH);
    event.records[3].change.sequence_number = None;
    assert_eq!(
        decoder().decode_lambda_event(&event),
        Err(StreamError::MissingSequenceNumber {
            event_id: Some("6c1b0d4ee1a54a2fb5f0d4c1e0a1b204".into())
        })
    );
    event.records[3].change.sequence_number = Some(String::new());
    assert!(matches!(
        decoder().decode_lambda_record(&event.records[3]),
        Err(StreamError::MissingSequenceNumber { .. })
    ));

    let without_change = StreamsRecord::builder().event_name(OperationType::Insert).build();
    let error = decoder().decode_stream_record(&without_change).unwrap_err();
    assert_eq!(error, StreamError::MissingSequenceNumber { event_id: None });
    assert_eq!(
        error.to_string(),
        "stream record without eventID has no SequenceNumber"
    );
    let error = StreamError::MissingSequenceNumber {
        event_id: Some("abc".into()),
    };
    assert_eq!(error.to_string(), "stream record abc has no SequenceNumber");
}

#[test]
fn an_insert_without_new_image_fails_the_batch() {
    let mut event = lambda_event(INSERT);
    event.records[1].change.new_image = Default::default();
    let error = decoder().decode_lambda_event(&event).unwrap_err();
    assert_eq!(
        error,
        StreamError::MissingNewImage {
            position: "400000000000000000003".into()
        }
    );
    assert!(error.to_string().contains("400000000000000000003"));
    assert!(error.to_string().contains("NEW_IMAGE or NEW_AND_OLD_IMAGES"));

    // A KEYS_ONLY record from the Streams API.
    let record = change_record("INSERT", &[("pk", "Order#o-1"), ("sk", "OUTBOX#1")], None, None);
    assert_eq!(
        decoder().decode_stream_record(&record),
        Err(StreamError::MissingNewImage {
            position: "600000000000000000001".into()
        })
    );
    // MODIFY and REMOVE do not need it.
    let record = change_record("MODIFY", &[("pk", "Order#o-1"), ("sk", "OUTBOX#1")], None, None);
    assert!(decoder().decode_stream_record(&record).is_ok());
}

mod generated;
