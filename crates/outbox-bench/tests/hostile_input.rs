//! Hostile input, property-tested: the stream decoder (Lambda events and
//! Streams API records), the envelope parser and `outbox invoke`
//! (`outbox_cli::invoke::{parse_event, invoke}`) get arbitrary JSON,
//! attribute values of the wrong type, huge numbers, deep nesting, invalid
//! UTF-8 in binaries and mangled records. Nothing may panic; what is refused
//! is refused with an error that says where; and every outbox insert is
//! either published or quarantined with its full record, never dropped.
//! Each test prints how many inputs it tried.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_dynamodbstreams::primitives::Blob;
use aws_sdk_dynamodbstreams::types::{
    AttributeValue as StreamsValue, OperationType, Record as StreamsRecord, StreamRecord,
};
use outbox_bench::batch::{self, TABLE};
use outbox_cli::invoke::{InvokeError, invoke, parse_event};
use outbox_core::fakes::{RecordingQuarantine, RecordingSink};
use outbox_core::{Decoded, OutboxEvent, Relay, RelayConfig};
use outbox_dynamodb::OutboxSchema;
use outbox_dynamodb_relay::DynamoDbStreamDecoder;
use outbox_lambda::RelayHandler;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{Value, json};

/// Names that real events use, so that random JSON often looks almost right.
const NAMES: &[&str] = &[
    "Records",
    "eventID",
    "eventName",
    "dynamodb",
    "Keys",
    "NewImage",
    "OldImage",
    "SequenceNumber",
    "userIdentity",
    "S",
    "N",
    "B",
    "M",
    "L",
    "BOOL",
    "NULL",
    "SS",
    "NS",
    "BS",
    "outbox",
    "event_id",
    "sequence",
    "payload",
    "id",
    "source",
    "event_type",
    "aggregate_type",
    "aggregate_id",
    "occurred_at",
    "metadata",
    "trace_parent",
];

const EVENT_NAMES: &[&str] = &[
    "INSERT",
    "MODIFY",
    "REMOVE",
    "UNKNOWN_TO_SDK_VERSION",
    "",
    "insert",
];

/// Numbers that are not what a u64 `sequence` or a JSON payload expects.
const HOSTILE_NUMBERS: &[&str] = &[
    "1e400",
    "-1",
    "18446744073709551616",
    "99999999999999999999999999999999999999",
    "1.5",
    "NaN",
    "0x10",
    "",
    " 1",
    "-0",
    "1E+308",
];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(NAMES).prop_map(str::to_owned),
        1 => "\\PC{0,12}",
    ]
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,40}".prop_map(Value::from),
        proptest::sample::select(HOSTILE_NUMBERS).prop_map(Value::from),
    ];
    leaf.prop_recursive(8, 96, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(name(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A well-formed DynamoDB JSON attribute value of any type, possibly nested
/// `depth` deep, with hostile content.
fn attribute(depth: u32) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        "\\PC{0,40}".prop_map(|s| json!({ "S": s })),
        proptest::sample::select(HOSTILE_NUMBERS).prop_map(|n| json!({ "N": n })),
        any::<u64>().prop_map(|n| json!({ "N": n.to_string() })),
        // Binary: arbitrary bytes, mostly invalid UTF-8.
        proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| json!({ "B": aws_smithy_types::base64::encode(&b) })),
        any::<bool>().prop_map(|b| json!({ "BOOL": b })),
        Just(json!({ "NULL": true })),
        proptest::collection::vec("\\PC{0,8}", 1..4).prop_map(|v| json!({ "SS": v })),
        proptest::collection::vec(proptest::sample::select(HOSTILE_NUMBERS), 1..4)
            .prop_map(|v| json!({ "NS": v })),
    ];
    leaf.prop_recursive(depth, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(|l| json!({ "L": l })),
            proptest::collection::btree_map(name(), inner, 0..6).prop_map(|m| json!({ "M": m })),
        ]
    })
    .boxed()
}

/// JSON text for the payload attribute: not JSON, JSON, deep, or huge numbers.
fn payload_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,60}",
        arbitrary_json().prop_map(|v| v.to_string()),
        (1usize..400).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
        proptest::sample::select(HOSTILE_NUMBERS).prop_map(|n| format!("{{\"total\":{n}}}")),
    ]
}

/// One way to spoil an outbox record.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace (or add) an attribute of the new image.
    Attribute(String, Value),
    /// Remove an attribute of the new image.
    Remove(String),
    /// Set the payload text.
    Payload(String),
    /// Set the event name.
    EventName(String),
    /// Remove the sequence number (a whole-batch error).
    NoSequenceNumber,
    /// Remove the new image (a whole-batch error for an INSERT).
    NoNewImage,
    /// Add a TTL user identity.
    TtlIdentity,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        8 => (name(), attribute(4)).prop_map(|(n, v)| Mutation::Attribute(n, v)),
        3 => name().prop_map(Mutation::Remove),
        4 => payload_text().prop_map(Mutation::Payload),
        2 => proptest::sample::select(EVENT_NAMES).prop_map(|n| Mutation::EventName(n.to_owned())),
        1 => Just(Mutation::NoSequenceNumber),
        1 => Just(Mutation::NoNewImage),
        1 => Just(Mutation::TtlIdentity),
    ]
}

fn apply(record: &mut Value, mutation: &Mutation) {
    // `Value`'s `IndexMut` would insert a missing key: reach the image only if it is there.
    let image = record
        .get_mut("dynamodb")
        .and_then(|d| d.get_mut("NewImage"))
        .and_then(Value::as_object_mut);
    match (mutation, image) {
        (Mutation::Attribute(name, value), Some(image)) => {
            image.insert(name.clone(), value.clone());
        }
        (Mutation::Remove(name), Some(image)) => {
            image.remove(name);
        }
        (Mutation::Payload(text), Some(image)) => {
            image.insert("payload".into(), json!({ "S": text }));
        }
        (Mutation::Attribute(..) | Mutation::Remove(_) | Mutation::Payload(_), None) => {}
        (Mutation::EventName(name), _) => record["eventName"] = json!(name),
        (Mutation::NoSequenceNumber, _) => {
            if let Some(map) = record["dynamodb"].as_object_mut() {
                map.remove("SequenceNumber");
            }
        }
        (Mutation::NoNewImage, _) => {
            if let Some(map) = record["dynamodb"].as_object_mut() {
                map.remove("NewImage");
            }
        }
        (Mutation::TtlIdentity, _) => {
            record["userIdentity"] = json!({ "type": "Service", "principalId": "dynamodb.amazonaws.com" });
        }
    }
}

/// `n` cases, no regression files (the failing input is in the panic message).
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn handler() -> RelayHandler<RecordingSink, RecordingQuarantine> {
    RelayHandler::new(
        DynamoDbStreamDecoder::new(OutboxSchema::new(TABLE)),
        Relay::new(
            RecordingSink::default(),
            RecordingQuarantine::default(),
            RelayConfig::default(),
        ),
        "Hostile",
    )
    .with_metrics_writer(|_| {})
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn arbitrary_json_never_panics_and_every_refusal_says_where() {
    let tried = AtomicUsize::new(0);
    let parsed = AtomicUsize::new(0);
    let rt = runtime();
    let mut runner = TestRunner::new(cases(3_000));
    let strategy = prop_oneof![
        1 => arbitrary_json(),
        2 => proptest::collection::vec(arbitrary_json(), 0..5).prop_map(|records| json!({ "Records": records })),
    ];
    runner
        .run(&strategy, |value| {
            tried.fetch_add(1, Ordering::Relaxed);
            let text = value.to_string();
            match parse_event(&text) {
                Err(InvokeError::NotAnEvent { line, column, reason }) => {
                    prop_assert!(line >= 1 && column >= 1 && !reason.is_empty());
                }
                Err(other) => prop_assert!(false, "parsing gave {other:?}"),
                Ok(event) => {
                    parsed.fetch_add(1, Ordering::Relaxed);
                    let h = handler();
                    match rt.block_on(invoke(&h, &text)) {
                        Ok(response) => {
                            prop_assert_eq!(response, r#"{"batchItemFailures":[]}"#);
                            let published = h.relay().sink().published().len();
                            let quarantined = h.relay().quarantine().records().len();
                            prop_assert!(published + quarantined <= event.len());
                        }
                        Err(InvokeError::Handler(e)) => prop_assert!(!e.to_string().is_empty()),
                        Err(other) => prop_assert!(false, "invoke gave {other:?}"),
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "hostile input: {} arbitrary JSON documents, {} of them parsed as events and invoked; no panic",
        tried.load(Ordering::Relaxed),
        parsed.load(Ordering::Relaxed)
    );
}

#[test]
fn mangled_outbox_records_are_published_or_quarantined_with_their_record_never_dropped() {
    let tried = AtomicUsize::new(0);
    let records_tried = AtomicUsize::new(0);
    let quarantined_total = AtomicUsize::new(0);
    let batch_errors = AtomicUsize::new(0);
    let edge_payloads = AtomicUsize::new(0);
    let rt = runtime();
    let schema = OutboxSchema::new(TABLE);
    let mut runner = TestRunner::new(cases(1_500));
    let strategy =
        proptest::collection::vec((any::<u64>(), proptest::collection::vec(mutation(), 0..4)), 1..6);
    runner
        .run(&strategy, |records| {
            tried.fetch_add(1, Ordering::Relaxed);
            records_tried.fetch_add(records.len(), Ordering::Relaxed);
            let mut rng = fastrand::Rng::with_seed(7);
            let mut values = Vec::new();
            for (n, (seed, mutations)) in records.iter().enumerate() {
                let mut rng_event = fastrand::Rng::with_seed(*seed);
                let event = batch::event(n as u64, 200, &mut rng_event).unwrap();
                let mut record = batch::insert_record(&schema, &event, n as u64, &mut rng);
                for m in mutations {
                    apply(&mut record, m);
                }
                values.push(record);
            }
            let text = json!({ "Records": values }).to_string();
            let event = parse_event(&text)
                .map_err(|e| TestCaseError::fail(format!("well-formed DynamoDB JSON must parse: {e}")))?;
            let h = handler();
            match rt.block_on(invoke(&h, &text)) {
                Err(InvokeError::Handler(e)) => {
                    // Only a record without a position, or an INSERT without a
                    // new image, fails the whole batch (a stream misconfiguration).
                    batch_errors.fetch_add(1, Ordering::Relaxed);
                    let whole_batch = values.iter().any(|r| {
                        let no_image = r["dynamodb"]["NewImage"].as_object().is_none_or(|m| m.is_empty());
                        r["dynamodb"].get("SequenceNumber").is_none()
                            || (r["eventName"] == "INSERT" && no_image)
                    });
                    prop_assert!(whole_batch, "a per-record problem failed the batch: {e}");
                }
                Err(other) => prop_assert!(false, "invoke gave {other:?}"),
                Ok(response) => {
                    prop_assert_eq!(response, r#"{"batchItemFailures":[]}"#);
                    let published = h.relay().sink().published();
                    let quarantined = h.relay().quarantine().records();
                    quarantined_total.fetch_add(quarantined.len(), Ordering::Relaxed);
                    // Every INSERT of a marked item is published or quarantined.
                    let outbox_inserts: Vec<&Value> = values
                        .iter()
                        .filter(|r| {
                            r["eventName"] == "INSERT" && r["dynamodb"]["NewImage"].get("outbox").is_some()
                        })
                        .collect();
                    prop_assert_eq!(published.len() + quarantined.len(), outbox_inserts.len());
                    for q in &quarantined {
                        prop_assert!(!q.reason.is_empty());
                        if let Some(raw) = &q.raw {
                            // The full original record is kept: its eventID is in it.
                            let kept: Value = serde_json::from_str(raw).unwrap();
                            prop_assert!(values.iter().any(|r| r["eventID"] == kept["eventID"]));
                        } else {
                            prop_assert!(q.event.is_some());
                        }
                    }
                    for e in &published {
                        // Every published envelope parses back, whatever its
                        // payload (a `null`, one nested past serde_json's
                        // 128-level limit for value trees).
                        if e.payload().is_null() || e.payload().to_value().is_err() {
                            edge_payloads.fetch_add(1, Ordering::Relaxed);
                        }
                        let back = OutboxEvent::from_json(&e.to_json()).ok();
                        prop_assert_eq!(back.as_ref(), Some(e));
                    }
                    let decoded = DynamoDbStreamDecoder::new(schema.clone())
                        .decode_lambda_batch(event)
                        .unwrap();
                    let poison = decoded
                        .iter()
                        .filter(|r| matches!(r.decoded, Decoded::Poison { .. }))
                        .count();
                    prop_assert_eq!(poison, quarantined.len());
                }
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "hostile input: {} mangled events ({} records): {} poison records quarantined with their record, \
         {} whole-batch configuration errors; none dropped, no panic; every published envelope parsed back \
         ({} of them with a null payload or one too deep for a serde_json value tree)",
        tried.load(Ordering::Relaxed),
        records_tried.load(Ordering::Relaxed),
        quarantined_total.load(Ordering::Relaxed),
        batch_errors.load(Ordering::Relaxed),
        edge_payloads.load(Ordering::Relaxed),
    );
}

#[test]
fn the_envelope_parser_refuses_with_a_reason_or_round_trips() {
    let tried = AtomicUsize::new(0);
    let accepted = AtomicUsize::new(0);
    let mut rng = fastrand::Rng::with_seed(3);
    let valid: Value = serde_json::from_str(&batch::event(1, 100, &mut rng).unwrap().to_json()).unwrap();
    let field_names: Vec<String> = valid.as_object().unwrap().keys().cloned().collect();
    let mut runner = TestRunner::new(cases(3_000));
    let strategy = prop_oneof![
        1 => arbitrary_json(),
        3 => proptest::collection::vec(
            (proptest::sample::select(field_names), prop_oneof![arbitrary_json(), Just(Value::Null)], any::<bool>()),
            0..4,
        )
        .prop_map(move |edits| {
            let mut v = valid.clone();
            for (field, value, remove) in edits {
                if remove {
                    v.as_object_mut().unwrap().remove(&field);
                } else {
                    v[field.as_str()] = value;
                }
            }
            v
        }),
    ];
    runner
        .run(&strategy, |value| {
            tried.fetch_add(1, Ordering::Relaxed);
            match OutboxEvent::from_json(&value.to_string()) {
                Ok(event) => {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    let back = OutboxEvent::from_json(&event.to_json()).ok();
                    prop_assert_eq!(back.as_ref(), Some(&event));
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "hostile input: {} envelopes parsed, {} accepted (and round-tripped), the rest refused with a reason",
        tried.load(Ordering::Relaxed),
        accepted.load(Ordering::Relaxed)
    );
}

fn streams_attribute(depth: u32) -> BoxedStrategy<StreamsValue> {
    let leaf = prop_oneof![
        "\\PC{0,30}".prop_map(StreamsValue::S),
        proptest::sample::select(HOSTILE_NUMBERS).prop_map(|n| StreamsValue::N(n.to_owned())),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| StreamsValue::B(Blob::new(b))),
        any::<bool>().prop_map(StreamsValue::Bool),
        Just(StreamsValue::Null(true)),
        proptest::collection::vec("\\PC{0,8}", 1..3).prop_map(StreamsValue::Ss),
    ];
    leaf.prop_recursive(depth, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(StreamsValue::L),
            proptest::collection::hash_map(name(), inner, 0..6).prop_map(StreamsValue::M),
        ]
    })
    .boxed()
}

#[test]
fn streams_api_records_with_hostile_attributes_decode_to_an_event_a_skip_or_poison() {
    let tried = AtomicUsize::new(0);
    let poison = AtomicUsize::new(0);
    let schema = OutboxSchema::new(TABLE);
    let decoder = DynamoDbStreamDecoder::new(schema.clone());
    let mut rng = fastrand::Rng::with_seed(11);
    let base = schema.to_item(
        &batch::event(5, 100, &mut rng).unwrap(),
        aws_sdk_dynamodb::types::AttributeValue::S("Order#o-5".into()),
    );
    let mut runner = TestRunner::new(cases(1_500));
    let strategy = (
        proptest::collection::vec((name(), streams_attribute(6)), 0..4),
        proptest::sample::select(&["INSERT", "MODIFY", "REMOVE"][..]),
    );
    runner
        .run(&strategy, |(edits, event_name)| {
            tried.fetch_add(1, Ordering::Relaxed);
            let mut image: HashMap<String, StreamsValue> =
                base.iter().map(|(k, v)| (k.clone(), to_streams(v))).collect();
            for (name, value) in edits {
                image.insert(name, value);
            }
            let marked = image.contains_key("outbox");
            let record = StreamsRecord::builder()
                .event_id("e-1")
                .event_name(OperationType::from(event_name))
                .dynamodb(
                    StreamRecord::builder()
                        .sequence_number("600000000000000000001")
                        .set_new_image(Some(image))
                        .build(),
                )
                .build();
            let decoded = decoder.decode_stream_record(&record).unwrap().decoded;
            match decoded {
                Decoded::Event(_) => prop_assert!(marked && event_name == "INSERT"),
                Decoded::Skip(_) => prop_assert!(!(marked && event_name == "INSERT")),
                Decoded::Poison { reason, raw } => {
                    poison.fetch_add(1, Ordering::Relaxed);
                    prop_assert!(marked && event_name == "INSERT");
                    prop_assert!(!reason.is_empty());
                    let raw: Value = serde_json::from_str(&raw).unwrap();
                    prop_assert_eq!(&raw["eventID"], "e-1");
                }
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "hostile input: {} Streams API records ({} poison, each with its full record); no panic",
        tried.load(Ordering::Relaxed),
        poison.load(Ordering::Relaxed)
    );
}

fn to_streams(value: &aws_sdk_dynamodb::types::AttributeValue) -> StreamsValue {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    match value {
        V::S(s) => StreamsValue::S(s.clone()),
        V::N(n) => StreamsValue::N(n.clone()),
        V::M(m) => StreamsValue::M(m.iter().map(|(k, v)| (k.clone(), to_streams(v))).collect()),
        other => panic!("the generated items hold S, N and M only: {other:?}"),
    }
}

/// An attribute value nested `depth` lists deep.
fn nested_list(depth: usize) -> String {
    format!(
        "{}{{\"NULL\":true}}{}",
        "{\"L\":[".repeat(depth),
        "]}".repeat(depth)
    )
}

#[test]
fn nesting_far_past_any_limit_is_a_clear_error_not_a_stack_overflow() {
    let mut rng = fastrand::Rng::with_seed(1);
    let schema = OutboxSchema::new(TABLE);
    let event = batch::event(1, 10, &mut rng).unwrap();
    let record = batch::insert_record(&schema, &event, 1, &mut rng).to_string();

    // 100,000 levels in any attribute (DynamoDB itself stops at 32): the
    // batch is split without recursion, the record's parse hits the JSON
    // parser's recursion limit, and the record is poison, quarantined byte
    // for byte; nothing overflows the stack.
    for attribute in ["deep", "metadata"] {
        let hostile = record.replacen(
            "\"NewImage\":{",
            &format!("\"NewImage\":{{\"{attribute}\":{},", nested_list(100_000)),
            1,
        );
        let h = handler();
        let response = runtime()
            .block_on(invoke(&h, &format!("{{\"Records\":[{hostile}]}}")))
            .unwrap();
        assert_eq!(response, r#"{"batchItemFailures":[]}"#);
        let quarantined = h.relay().quarantine().records();
        assert_eq!(quarantined.len(), 1);
        assert!(
            quarantined[0].reason.contains("recursion limit"),
            "{}",
            quarantined[0].reason
        );
        assert_eq!(quarantined[0].raw.as_deref(), Some(hostile.as_str()));
        assert!(h.relay().sink().published().is_empty());
    }

    // 32 levels (DynamoDB's own limit) in an extra attribute: the event is published.
    let deep = record.replacen(
        "\"NewImage\":{",
        &format!("\"NewImage\":{{\"deep\":{},", nested_list(32)),
        1,
    );
    let h = handler();
    let response = runtime()
        .block_on(invoke(&h, &format!("{{\"Records\":[{deep}]}}")))
        .unwrap();
    assert_eq!(response, r#"{"batchItemFailures":[]}"#);
    assert_eq!(h.relay().sink().published(), vec![event.clone()]);

    // A payload nested 100,000 deep: the record is quarantined, naming the payload.
    let mut record = batch::insert_record(&schema, &event, 1, &mut rng);
    record["dynamodb"]["NewImage"]["payload"] =
        json!({ "S": format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)) });
    let text = json!({ "Records": [record] }).to_string();
    let h = handler();
    let response = runtime().block_on(invoke(&h, &text)).unwrap();
    assert_eq!(response, r#"{"batchItemFailures":[]}"#);
    let quarantined = h.relay().quarantine().records();
    assert_eq!(quarantined.len(), 1);
    assert!(
        quarantined[0].reason.contains("payload"),
        "{}",
        quarantined[0].reason
    );
    assert!(h.relay().sink().published().is_empty());
}
