//! Lambda DynamoDB Streams events made of outbox `INSERT` records, as the
//! event source mapping delivers them, with order payloads of a chosen size.
//! Items are built with the writer's own schema
//! ([`OutboxSchema::to_item`]), so the relay decodes exactly what production
//! would give it.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, TimeZone, Utc};
use outbox_core::{EnvelopeError, FixedClock, OutboxEvent};
use outbox_dynamodb::{OutboxSchema, item_size};
use serde_json::{Map, Value, json};

/// Lambda's invocation payload limit: 6 MB (6,291,456 bytes). An event
/// source mapping never delivers a bigger batch.
pub const LAMBDA_PAYLOAD_LIMIT_BYTES: usize = 6 * 1024 * 1024;

/// The table the generated records come from.
pub const TABLE: &str = "orders";
/// The producer of the generated events.
pub const SOURCE: &str = "com.example.orders";
/// The stream ARN on every record.
pub const STREAM_ARN: &str =
    "arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2026-11-23T09:00:00.000";
/// Aggregates the events are spread over.
pub const AGGREGATES: u64 = 500;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSpec {
    /// Most records.
    pub records: usize,
    /// Size of each payload as compact JSON text (0: the smallest order payload).
    pub payload_bytes: usize,
    /// Stop before the event's JSON text would exceed this many bytes.
    pub max_bytes: Option<usize>,
    /// Seed of the ids and the payload content.
    pub seed: u64,
}

impl BatchSpec {
    /// `records` records with `payload_bytes` payloads, no byte limit, seed 1.
    pub fn new(records: usize, payload_bytes: usize) -> Self {
        Self {
            records,
            payload_bytes,
            max_bytes: None,
            seed: 1,
        }
    }
}

/// A generated event.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The Lambda event as compact JSON text.
    pub json: String,
    /// Its records (all outbox inserts).
    pub records: usize,
    /// Mean payload size in bytes (compact JSON).
    pub payload_bytes: usize,
}

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
        .single()
        .unwrap_or_default()
}

/// An order payload whose compact JSON text is `target` bytes long: an
/// order with lines and a padding note, or the smallest order,
/// `{"orderId":"o-<n>"}`, when `target` is too small for an order with its
/// fields (under about 100 bytes).
pub fn payload(target: usize, n: u64, rng: &mut fastrand::Rng) -> Value {
    let order_id = format!("o-{n}");
    let mut value = json!({
        "orderId": order_id,
        "customerId": format!("c-{}", n % 977),
        "currency": "EUR",
        "total": 0,
        "lines": [],
        "note": "",
    });
    // Room kept for the digits of `total` and the separators.
    let skeleton = value.to_string().len() + 24;
    if target < skeleton {
        return json!({ "orderId": order_id });
    }
    let mut lines = Vec::new();
    let mut lines_len = 0;
    let mut total = 0u64;
    loop {
        let qty = rng.u64(1..5);
        let price = rng.u64(100..10_000);
        let line = json!({ "sku": format!("SKU-{:06}", rng.u32(0..1_000_000)), "qty": qty, "price": price });
        let len = line.to_string().len() + 1;
        if skeleton + lines_len + len > target {
            break;
        }
        lines_len += len;
        total += qty * price;
        lines.push(line);
    }
    value["lines"] = Value::Array(lines);
    value["total"] = json!(total);
    let missing = target.saturating_sub(value.to_string().len());
    value["note"] = Value::String("x".repeat(missing));
    value
}

/// The `n`-th generated event.
pub fn event(n: u64, payload_bytes: usize, rng: &mut fastrand::Rng) -> Result<OutboxEvent, EnvelopeError> {
    let at = base_time() + Duration::milliseconds(i64::try_from(n).unwrap_or(i64::MAX));
    let mut random = [0u8; 10];
    rng.fill(&mut random);
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    let id = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
    OutboxEvent::builder(SOURCE, "OrderPlaced")
        .aggregate("Order", format!("o-{}", n % AGGREGATES))
        .sequence(n / AGGREGATES + 1)
        .id(id)
        .occurred_at(at)
        .payload_value(payload(payload_bytes, n, rng))
        .build(&FixedClock::new(at))
}

/// An attribute value in DynamoDB JSON (`{"S": "x"}`, binary as base64), the
/// form Lambda's event carries.
pub fn attribute_json(value: &AttributeValue) -> Value {
    let list = |items: &[String]| Value::Array(items.iter().map(|s| Value::String(s.clone())).collect());
    match value {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::B(b) => json!({ "B": aws_smithy_types::base64::encode(b.as_ref()) }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(b) => json!({ "NULL": b }),
        AttributeValue::Ss(v) => json!({ "SS": list(v) }),
        AttributeValue::Ns(v) => json!({ "NS": list(v) }),
        AttributeValue::Bs(v) => json!({
            "BS": v.iter().map(|b| aws_smithy_types::base64::encode(b.as_ref())).collect::<Vec<_>>()
        }),
        AttributeValue::M(m) => json!({ "M": item_json(m) }),
        AttributeValue::L(l) => json!({ "L": l.iter().map(attribute_json).collect::<Vec<_>>() }),
        _ => json!({ "NULL": true }),
    }
}

/// An item in DynamoDB JSON.
pub fn item_json(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        item.iter()
            .map(|(k, v)| (k.clone(), attribute_json(v)))
            .collect::<Map<String, Value>>(),
    )
}

/// The Lambda record of the outbox `INSERT` of `event` at position `n`.
pub fn insert_record(schema: &OutboxSchema, event: &OutboxEvent, n: u64, rng: &mut fastrand::Rng) -> Value {
    let item = schema.to_item(event, OutboxSchema::default_partition_value(event));
    let keys: HashMap<String, AttributeValue> = [schema.partition_key(), schema.sort_key()]
        .into_iter()
        .filter_map(|k| item.get(k).map(|v| (k.to_owned(), v.clone())))
        .collect();
    json!({
        "eventID": format!("{:016x}{:016x}", rng.u64(..), rng.u64(..)),
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "eu-west-1",
        "dynamodb": {
            "ApproximateCreationDateTime": event.occurred_at().timestamp(),
            "Keys": item_json(&keys),
            "NewImage": item_json(&item),
            "SequenceNumber": format!("{}", 400_000_000_000_000_000_000u128 + u128::from(n) * 100),
            "SizeBytes": item_size(&item),
            "StreamViewType": "NEW_IMAGE",
        },
        "eventSourceARN": STREAM_ARN,
    })
}

/// Generates the Lambda event described by `spec`.
pub fn generate(spec: BatchSpec) -> Result<Batch, EnvelopeError> {
    let schema = OutboxSchema::new(TABLE);
    let mut rng = fastrand::Rng::with_seed(spec.seed);
    let head = r#"{"Records":["#;
    let tail = "]}";
    let mut json = String::from(head);
    let mut records = 0usize;
    let mut payload_total = 0usize;
    for n in 0..spec.records as u64 {
        let event = event(n, spec.payload_bytes, &mut rng)?;
        let record = insert_record(&schema, &event, n, &mut rng).to_string();
        let separator = usize::from(records > 0);
        if let Some(max) = spec.max_bytes
            && json.len() + separator + record.len() + tail.len() > max
        {
            break;
        }
        if records > 0 {
            json.push(',');
        }
        json.push_str(&record);
        payload_total += event.payload_json().len();
        records += 1;
    }
    json.push_str(tail);
    Ok(Batch {
        json,
        records,
        payload_bytes: payload_total.checked_div(records).unwrap_or(0),
    })
}

/// The standard event files of the benchmarks: name, spec.
pub fn standard_batches() -> Vec<(&'static str, BatchSpec)> {
    vec![
        ("dynamodb-100x1k.json", BatchSpec::new(100, 1024)),
        ("dynamodb-1000x1k.json", BatchSpec::new(1_000, 1024)),
        ("dynamodb-10000x1k.json", BatchSpec::new(10_000, 1024)),
        ("dynamodb-1000x16k.json", BatchSpec::new(1_000, 16 * 1024)),
        ("dynamodb-10000xmin.json", BatchSpec::new(10_000, 0)),
        (
            "dynamodb-6mb.json",
            BatchSpec {
                max_bytes: Some(LAMBDA_PAYLOAD_LIMIT_BYTES),
                ..BatchSpec::new(10_000, 0)
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::dynamodb::Event;
    use outbox_core::Decoded;
    use outbox_dynamodb_relay::DynamoDbStreamDecoder;

    #[test]
    fn payloads_have_the_requested_size() {
        let mut rng = fastrand::Rng::with_seed(7);
        for target in [0, 10, 60, 120, 1024, 16 * 1024] {
            let text = payload(target, 42, &mut rng).to_string();
            if target >= 120 {
                assert_eq!(text.len(), target, "{text}");
            } else {
                assert_eq!(text, r#"{"orderId":"o-42"}"#);
            }
        }
    }

    #[test]
    fn every_generated_record_decodes_into_its_event_in_order() {
        let batch = generate(BatchSpec::new(25, 1024)).unwrap();
        assert_eq!(batch.records, 25);
        assert_eq!(batch.payload_bytes, 1024);
        let event: Event = serde_json::from_str(&batch.json).unwrap();
        let decoder = DynamoDbStreamDecoder::new(OutboxSchema::new(TABLE));
        let records = decoder.decode_lambda_event(&event).unwrap();
        assert_eq!(records.len(), 25);
        let mut previous = String::new();
        for (n, record) in records.iter().enumerate() {
            let Decoded::Event(e) = &record.decoded else {
                panic!("record {n} did not decode: {:?}", record.decoded);
            };
            assert_eq!(e.payload_json().len(), 1024);
            assert_eq!(e.aggregate_id(), format!("o-{n}"));
            assert!(record.position > previous, "positions ascend");
            previous = record.position.clone();
        }
    }

    #[test]
    fn generation_is_deterministic_and_a_byte_limit_is_kept() {
        // The same records, field for field (attribute maps are compared as
        // maps: their key order follows a randomly seeded hash).
        let parse = |json: &str| serde_json::from_str::<serde_json::Value>(json).unwrap();
        assert_eq!(
            parse(&generate(BatchSpec::new(5, 300)).unwrap().json),
            parse(&generate(BatchSpec::new(5, 300)).unwrap().json)
        );
        let limited = generate(BatchSpec {
            max_bytes: Some(20_000),
            ..BatchSpec::new(1_000, 0)
        })
        .unwrap();
        assert!(limited.json.len() <= 20_000);
        assert!(limited.records > 5 && limited.records < 1_000);
        let more = generate(BatchSpec::new(limited.records + 1, 0)).unwrap();
        assert!(
            more.json.len() > 20_000,
            "the limit stopped at the last record that fits"
        );
        let parsed: Event = serde_json::from_str(&limited.json).unwrap();
        assert_eq!(parsed.records.len(), limited.records);
    }
}
