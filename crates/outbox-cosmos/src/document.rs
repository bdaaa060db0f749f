//! The outbox document schema: how an [`OutboxEvent`] is stored in Cosmos DB,
//! in one place, for the writer that creates it and the relay that decodes it.
//!
//! The fields are those of the DynamoDB outbox item, as JSON:
//!
//! | field | JSON type | value |
//! |---|---|---|
//! | `id` | string | the event id (UUID): unique in the logical partition |
//! | *partition key* (e.g. `pk`) | string | the aggregate's partition key value: the batch's |
//! | *marker* (default `outbox`) | string | `v1`: the schema version; what the relay selects on |
//! | `ttl` | number | seconds the document lives after its last write (the container needs a default TTL, `-1` is enough) |
//! | `source` | string | producer |
//! | `event_type` | string | event type |
//! | `aggregate_type` | string | |
//! | `aggregate_id` | string | |
//! | `sequence` | number | the aggregate's version, at most 2^53 - 1 (Cosmos DB numbers are IEEE 754 doubles) |
//! | `occurred_at` | string | RFC 3339, milliseconds, UTC |
//! | `payload` | string | the payload as JSON text (lossless: no number or type conversion) |
//! | `trace_parent` | string | optional W3C traceparent |
//! | `metadata` | object of strings | optional |

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use outbox_core::{Decoded, OutboxEvent, OutboxEventParts, Payload, RelayRecord, SkipReason};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::DecodeError;

/// Field holding the document id: the event id.
pub const FIELD_ID: &str = "id";
/// Field holding the time to live in seconds (Cosmos DB's fixed name).
pub const FIELD_TTL: &str = "ttl";
/// Field holding the event source.
pub const FIELD_SOURCE: &str = "source";
/// Field holding the event type.
pub const FIELD_EVENT_TYPE: &str = "event_type";
/// Field holding the aggregate type.
pub const FIELD_AGGREGATE_TYPE: &str = "aggregate_type";
/// Field holding the aggregate id.
pub const FIELD_AGGREGATE_ID: &str = "aggregate_id";
/// Field holding the aggregate version (a number).
pub const FIELD_SEQUENCE: &str = "sequence";
/// Field holding the commit time (RFC 3339).
pub const FIELD_OCCURRED_AT: &str = "occurred_at";
/// Field holding the payload as JSON text.
pub const FIELD_PAYLOAD: &str = "payload";
/// Field holding the optional W3C traceparent.
pub const FIELD_TRACE_PARENT: &str = "trace_parent";
/// Field holding the optional metadata object.
pub const FIELD_METADATA: &str = "metadata";
/// Value of the marker field: the version of this schema.
pub const MARKER_VALUE: &str = "v1";
/// The largest sequence a document stores exactly: Cosmos DB keeps numbers
/// as IEEE 754 doubles, exact up to 2^53 - 1.
pub const MAX_SEQUENCE: u64 = (1 << 53) - 1;

const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How outbox documents are stored: the partition key property, the marker
/// field and how long documents live.
///
/// Outbox documents go to the aggregate's own logical partition (the batch's
/// partition key), so the change feed delivers each aggregate's events in
/// order from one feed range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosmosOutboxSchema {
    partition_key: String,
    marker_field: String,
    retention: Duration,
}

impl CosmosOutboxSchema {
    /// Outbox documents in a container partitioned on the top-level property
    /// `partition_key` (`"pk"` or `"/pk"`), with the marker `outbox` and a
    /// 7-day retention.
    pub fn new(partition_key: impl Into<String>) -> Self {
        let partition_key = partition_key.into();
        let partition_key = partition_key
            .strip_prefix('/')
            .unwrap_or(&partition_key)
            .to_owned();
        Self {
            partition_key,
            marker_field: "outbox".into(),
            retention: DEFAULT_RETENTION,
        }
    }

    /// Names the marker field.
    #[must_use]
    pub fn with_marker_field(mut self, name: impl Into<String>) -> Self {
        self.marker_field = name.into();
        self
    }

    /// How long an outbox document lives after it is written before Cosmos
    /// DB's TTL removes it (whole seconds; at least one).
    #[must_use]
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// The partition key property (without the leading `/`).
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }

    /// The marker field name.
    pub fn marker_field(&self) -> &str {
        &self.marker_field
    }

    /// The retention.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// The `ttl` value written: the retention in whole seconds, at least 1.
    pub fn ttl_seconds(&self) -> u64 {
        self.retention.as_secs().max(1)
    }

    /// The document for `event` in the logical partition `partition_key_value`.
    pub fn to_document(&self, event: &OutboxEvent, partition_key_value: &str) -> Value {
        let mut doc = Map::with_capacity(14);
        doc.insert(FIELD_ID.into(), Value::String(event.id().to_string()));
        doc.insert(
            self.partition_key.clone(),
            Value::String(partition_key_value.to_owned()),
        );
        doc.insert(self.marker_field.clone(), Value::String(MARKER_VALUE.into()));
        doc.insert(FIELD_TTL.into(), Value::from(self.ttl_seconds()));
        doc.insert(FIELD_SOURCE.into(), Value::String(event.source().to_owned()));
        doc.insert(
            FIELD_EVENT_TYPE.into(),
            Value::String(event.event_type().to_owned()),
        );
        doc.insert(
            FIELD_AGGREGATE_TYPE.into(),
            Value::String(event.aggregate_type().to_owned()),
        );
        doc.insert(
            FIELD_AGGREGATE_ID.into(),
            Value::String(event.aggregate_id().to_owned()),
        );
        doc.insert(FIELD_SEQUENCE.into(), Value::from(event.sequence()));
        doc.insert(
            FIELD_OCCURRED_AT.into(),
            Value::String(
                event
                    .occurred_at()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
        );
        doc.insert(
            FIELD_PAYLOAD.into(),
            Value::String(event.payload_json().to_owned()),
        );
        if let Some(tp) = event.trace_parent() {
            doc.insert(FIELD_TRACE_PARENT.into(), Value::String(tp.as_str().to_owned()));
        }
        if !event.metadata().is_empty() {
            let map = event
                .metadata()
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            doc.insert(FIELD_METADATA.into(), Value::Object(map));
        }
        Value::Object(doc)
    }

    /// Whether `document` carries this schema's marker field (with any
    /// value): documents without it are not outbox documents and are skipped.
    pub fn is_outbox_document(&self, document: &Value) -> bool {
        document.get(&self.marker_field).is_some_and(|v| !v.is_null())
    }

    /// Decodes an outbox document back into its event. The document must
    /// carry the marker; every missing or mistyped field is an error that
    /// names it. System properties (`_rid`, `_etag`, `_ts`, `_lsn`, ...) and
    /// other fields are ignored.
    pub fn decode_document(&self, document: &Value) -> Result<OutboxEvent, DecodeError> {
        let Some(doc) = document.as_object() else {
            return Err(DecodeError::WrongType {
                name: "(document)".into(),
                expected: "object",
                found: type_name(document),
            });
        };
        match doc.get(&self.marker_field) {
            Some(Value::String(v)) if v == MARKER_VALUE => {}
            Some(Value::String(v)) => return Err(DecodeError::UnsupportedVersion { found: v.clone() }),
            None | Some(Value::Null) => {
                return Err(DecodeError::MissingField {
                    name: self.marker_field.clone(),
                });
            }
            Some(other) => return Err(mistyped(&self.marker_field, "string", other)),
        }
        let id = Uuid::parse_str(string(doc, FIELD_ID)?)
            .map_err(|e| invalid(FIELD_ID, format!("not a UUID: {e}")))?;
        let sequence = match doc.get(FIELD_SEQUENCE) {
            Some(Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| invalid(FIELD_SEQUENCE, format!("not an unsigned integer: {n}")))?,
            Some(Value::Null) | None => {
                return Err(DecodeError::MissingField {
                    name: FIELD_SEQUENCE.into(),
                });
            }
            Some(other) => return Err(mistyped(FIELD_SEQUENCE, "number", other)),
        };
        let occurred_text = string(doc, FIELD_OCCURRED_AT)?;
        let occurred_at = DateTime::parse_from_rfc3339(occurred_text)
            .map_err(|e| invalid(FIELD_OCCURRED_AT, format!("not an RFC 3339 timestamp: {e}")))?
            .with_timezone(&Utc);
        let payload = Payload::from_json(string(doc, FIELD_PAYLOAD)?)
            .map_err(|e| invalid(FIELD_PAYLOAD, outbox_core::error_chain(&e)))?;
        let trace_parent = match doc.get(FIELD_TRACE_PARENT) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(mistyped(FIELD_TRACE_PARENT, "string", other)),
        };
        let metadata = match doc.get(FIELD_METADATA) {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    other => Err(mistyped(&format!("{FIELD_METADATA}.{k}"), "string", other)),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(mistyped(FIELD_METADATA, "object", other)),
        };
        OutboxEvent::try_from(OutboxEventParts {
            id,
            source: string(doc, FIELD_SOURCE)?.to_owned(),
            event_type: string(doc, FIELD_EVENT_TYPE)?.to_owned(),
            aggregate_type: string(doc, FIELD_AGGREGATE_TYPE)?.to_owned(),
            aggregate_id: string(doc, FIELD_AGGREGATE_ID)?.to_owned(),
            sequence,
            occurred_at,
            payload,
            trace_parent,
            metadata,
        })
        .map_err(DecodeError::from)
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn mistyped(name: &str, expected: &'static str, found: &Value) -> DecodeError {
    DecodeError::WrongType {
        name: name.to_owned(),
        expected,
        found: type_name(found),
    }
}

fn invalid(name: &str, reason: String) -> DecodeError {
    DecodeError::InvalidValue {
        name: name.to_owned(),
        reason,
    }
}

fn string<'a>(doc: &'a Map<String, Value>, name: &str) -> Result<&'a str, DecodeError> {
    match doc.get(name) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(DecodeError::MissingField {
            name: name.to_owned(),
        }),
        Some(other) => Err(mistyped(name, "string", other)),
    }
}

/// Turns changed documents (from the change feed or a Functions trigger)
/// into the relay's records: documents without the marker are skipped,
/// outbox documents decode into events, and outbox documents that do not
/// decode are poison, kept whole for the quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosmosChangeDecoder {
    schema: CosmosOutboxSchema,
}

impl CosmosChangeDecoder {
    /// A decoder for documents written with `schema`.
    pub fn new(schema: CosmosOutboxSchema) -> Self {
        Self { schema }
    }

    /// The schema.
    pub fn schema(&self) -> &CosmosOutboxSchema {
        &self.schema
    }

    /// The position of the `index`-th document of a batch, as the relay
    /// reports it (`#<index> id=<id> lsn=<_lsn>`): unique in the batch, and
    /// enough for a person to find the document.
    pub fn position(index: usize, document: &Value) -> String {
        let id = document.get(FIELD_ID).and_then(Value::as_str).unwrap_or("?");
        match document.get("_lsn").and_then(Value::as_u64) {
            Some(lsn) => format!("#{index} id={id} lsn={lsn}"),
            None => format!("#{index} id={id}"),
        }
    }

    /// The record of one changed document.
    pub fn decode_change(&self, index: usize, document: &Value) -> RelayRecord {
        let position = Self::position(index, document);
        let decoded = if !self.schema.is_outbox_document(document) {
            Decoded::Skip(SkipReason::NotOutbox)
        } else {
            match self.schema.decode_document(document) {
                Ok(event) => Decoded::Event(Box::new(event)),
                Err(error) => Decoded::Poison {
                    reason: error.to_string(),
                    raw: document.to_string(),
                },
            }
        };
        RelayRecord { position, decoded }
    }

    /// The records of a batch of changed documents, in order.
    pub fn decode_changes<'a>(&self, documents: impl IntoIterator<Item = &'a Value>) -> Vec<RelayRecord> {
        documents
            .into_iter()
            .enumerate()
            .map(|(i, doc)| self.decode_change(i, doc))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use outbox_core::FixedClock;
    use serde_json::json;

    fn event() -> OutboxEvent {
        let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap());
        OutboxEvent::builder("com.example.orders", "OrderPlaced")
            .aggregate("Order", "o-1")
            .sequence(42)
            .payload(&json!({"total": 12.5, "big": 12345678901234567890u64}))
            .trace_parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .metadata("tenant", "acme")
            .build(&clock)
            .unwrap()
    }

    #[test]
    fn document_has_the_documented_fields() {
        let schema = CosmosOutboxSchema::new("/pk").with_retention(Duration::from_secs(86_400));
        let e = event();
        let doc = schema.to_document(&e, "Order#o-1");
        assert_eq!(doc["id"], json!(e.id().to_string()));
        assert_eq!(doc["pk"], json!("Order#o-1"));
        assert_eq!(doc["outbox"], json!("v1"));
        assert_eq!(doc["ttl"], json!(86_400));
        assert_eq!(doc[FIELD_SEQUENCE], json!(42));
        assert_eq!(doc[FIELD_OCCURRED_AT], json!("2026-11-23T10:00:00.000Z"));
        let payload: Value = serde_json::from_str(doc[FIELD_PAYLOAD].as_str().unwrap()).unwrap();
        assert_eq!(
            payload,
            json!({"total": 12.5, "big": 12345678901234567890u64}),
            "JSON text, numbers exact"
        );
        assert_eq!(doc[FIELD_METADATA], json!({"tenant": "acme"}));
        assert_eq!(doc.as_object().unwrap().len(), 13);
    }

    #[test]
    fn decode_inverts_encode_and_ignores_system_properties() {
        let schema = CosmosOutboxSchema::new("tenant").with_marker_field("m");
        let e = event();
        let mut doc = schema.to_document(&e, "x");
        doc["_etag"] = json!("\"0000\"");
        doc["_ts"] = json!(1_700_000_000);
        doc["_lsn"] = json!(17);
        assert!(schema.is_outbox_document(&doc));
        assert_eq!(schema.decode_document(&doc).unwrap(), e);
    }

    #[test]
    fn decode_names_the_missing_or_mistyped_field() {
        let schema = CosmosOutboxSchema::new("pk");
        let good = schema.to_document(&event(), "x");
        for name in [
            FIELD_ID,
            FIELD_SOURCE,
            FIELD_EVENT_TYPE,
            FIELD_AGGREGATE_TYPE,
            FIELD_AGGREGATE_ID,
            FIELD_SEQUENCE,
            FIELD_OCCURRED_AT,
            FIELD_PAYLOAD,
            "outbox",
        ] {
            let mut doc = good.clone();
            doc.as_object_mut().unwrap().remove(name);
            let err = schema.decode_document(&doc).unwrap_err();
            assert_eq!(err, DecodeError::MissingField { name: name.into() }, "{name}");
            let mut doc = good.clone();
            doc[name] = json!(true);
            let err = schema.decode_document(&doc).unwrap_err();
            assert!(
                matches!(&err, DecodeError::WrongType { name: n, found: "a boolean", .. } if n == name),
                "{name}: {err}"
            );
        }
        let bad_values = [
            (FIELD_ID, json!("nope")),
            (FIELD_SEQUENCE, json!(-1)),
            (FIELD_SEQUENCE, json!(1.5)),
            (FIELD_OCCURRED_AT, json!("tomorrow")),
            (FIELD_PAYLOAD, json!("{not json")),
        ];
        for (name, value) in bad_values {
            let mut doc = good.clone();
            doc[name] = value;
            let err = schema.decode_document(&doc).unwrap_err();
            assert!(
                matches!(&err, DecodeError::InvalidValue { name: n, .. } if n == name),
                "{name}: {err}"
            );
        }
        let mut doc = good.clone();
        doc[FIELD_METADATA] = json!({"k": 1});
        assert!(
            schema
                .decode_document(&doc)
                .unwrap_err()
                .to_string()
                .contains("metadata.k")
        );
        let mut doc = good.clone();
        doc["outbox"] = json!("v9");
        assert!(matches!(
            schema.decode_document(&doc).unwrap_err(),
            DecodeError::UnsupportedVersion { .. }
        ));
        let mut doc = good;
        doc[FIELD_SOURCE] = json!("");
        assert!(matches!(
            schema.decode_document(&doc).unwrap_err(),
            DecodeError::Envelope { .. }
        ));
    }

    #[test]
    fn changes_are_skipped_decoded_or_poison_with_the_whole_document() {
        let schema = CosmosOutboxSchema::new("pk");
        let decoder = CosmosChangeDecoder::new(schema.clone());
        let e = event();
        let good = schema.to_document(&e, "x");
        let mut bad = good.clone();
        bad[FIELD_SEQUENCE] = json!("42");
        bad["_lsn"] = json!(9);
        let aggregate = json!({"id": "o-1", "pk": "x", "status": "PLACED", "outbox": null});
        let records = decoder.decode_changes([&aggregate, &good, &bad]);
        assert_eq!(records[0].decoded, Decoded::Skip(SkipReason::NotOutbox));
        assert_eq!(records[0].position, "#0 id=o-1");
        assert_eq!(records[1].decoded, Decoded::Event(Box::new(e)));
        let Decoded::Poison { reason, raw } = &records[2].decoded else {
            panic!("not poison: {:?}", records[2].decoded)
        };
        assert!(reason.contains("sequence"), "{reason}");
        assert_eq!(
            serde_json::from_str::<Value>(raw).unwrap(),
            bad,
            "the whole document is kept"
        );
        assert!(records[2].position.ends_with("lsn=9"));
    }

    proptest::proptest! {
        #[test]
        fn any_event_round_trips(seq in 0u64..=MAX_SEQUENCE, n in proptest::num::i64::ANY, s in ".{0,40}") {
            let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
            let event = OutboxEvent::builder("src", "Type")
                .aggregate("Agg", "a-1")
                .sequence(seq)
                .payload(&json!({ "n": n, "s": s }))
                .build(&clock)
                .unwrap();
            let schema = CosmosOutboxSchema::new("pk");
            let doc = schema.to_document(&event, "p");
            // through JSON text, as Cosmos DB stores it
            let stored: Value = serde_json::from_str(&doc.to_string()).unwrap();
            proptest::prop_assert_eq!(schema.decode_document(&stored).unwrap(), event);
        }
    }
}
