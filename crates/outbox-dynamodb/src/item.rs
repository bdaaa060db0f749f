//! The outbox item schema: how an [`OutboxEvent`] is stored in DynamoDB, in
//! one place, for the writer that puts it and the relay that decodes it.
//!
//! | attribute | type | value |
//! |---|---|---|
//! | *partition key* (default `pk`) | S | the aggregate's partition: `<aggregate_type>#<aggregate_id>` unless given |
//! | *sort key* (default `sk`) | S | `OUTBOX#<sequence, 20 digits>#<event id>` |
//! | *marker* (default `outbox`) | S | `v1`: the schema version; what stream filters select on |
//! | *TTL* (default `ttl`) | N | epoch seconds: `occurred_at` + retention (default 7 days) |
//! | `event_id` | S | UUID |
//! | `source` | S | producer |
//! | `event_type` | S | event type |
//! | `aggregate_type` | S | |
//! | `aggregate_id` | S | |
//! | `sequence` | N | the aggregate's version |
//! | `occurred_at` | S | RFC 3339, milliseconds, UTC |
//! | `payload` | S | the payload as JSON text (lossless: no number or type conversion) |
//! | `trace_parent` | S | optional W3C traceparent |
//! | `metadata` | M of S | optional |

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, Utc};
use outbox_core::{OutboxEvent, OutboxEventParts, Payload};
use uuid::Uuid;

use crate::DecodeError;

/// A DynamoDB item.
pub type Item = HashMap<String, AttributeValue>;

/// Attribute holding the event id.
pub const ATTR_EVENT_ID: &str = "event_id";
/// Attribute holding the event source.
pub const ATTR_SOURCE: &str = "source";
/// Attribute holding the event type.
pub const ATTR_EVENT_TYPE: &str = "event_type";
/// Attribute holding the aggregate type.
pub const ATTR_AGGREGATE_TYPE: &str = "aggregate_type";
/// Attribute holding the aggregate id.
pub const ATTR_AGGREGATE_ID: &str = "aggregate_id";
/// Attribute holding the aggregate version (N).
pub const ATTR_SEQUENCE: &str = "sequence";
/// Attribute holding the commit time (RFC 3339).
pub const ATTR_OCCURRED_AT: &str = "occurred_at";
/// Attribute holding the payload as JSON text.
pub const ATTR_PAYLOAD: &str = "payload";
/// Attribute holding the optional W3C traceparent.
pub const ATTR_TRACE_PARENT: &str = "trace_parent";
/// Attribute holding the optional metadata map.
pub const ATTR_METADATA: &str = "metadata";
/// Value of the marker attribute: the version of this schema.
pub const MARKER_VALUE: &str = "v1";

const SORT_KEY_PREFIX: &str = "OUTBOX#";
/// Default largest event, as an EventBridge entry
/// ([`published_size`](crate::published_size)): the documented 256 KB `PutEvents`
/// request limit. A bigger event could never be published.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 256 * 1024;
const DEFAULT_RETENTION_DAYS: i64 = 7;

/// Where and how outbox items are stored: the table, the names of the key,
/// marker and TTL attributes, and how long items live.
///
/// The defaults suit a single-table design with a string `pk` and `sk`:
/// outbox items go to the aggregate's own partition, so DynamoDB Streams
/// delivers each aggregate's events in order from one shard. To use a
/// separate outbox table, name that table here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxSchema {
    table: String,
    partition_key: String,
    sort_key: String,
    marker_attribute: String,
    ttl_attribute: String,
    retention: Duration,
    max_event_bytes: Option<usize>,
}

impl OutboxSchema {
    /// Outbox items in `table`, with the default attribute names
    /// (`pk`, `sk`, `outbox`, `ttl`) and a 7-day retention.
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            partition_key: "pk".into(),
            sort_key: "sk".into(),
            marker_attribute: "outbox".into(),
            ttl_attribute: "ttl".into(),
            retention: Duration::days(DEFAULT_RETENTION_DAYS),
            max_event_bytes: Some(DEFAULT_MAX_EVENT_BYTES),
        }
    }

    /// Names the partition key attribute.
    #[must_use]
    pub fn with_partition_key(mut self, name: impl Into<String>) -> Self {
        self.partition_key = name.into();
        self
    }
    /// Names the sort key attribute.
    #[must_use]
    pub fn with_sort_key(mut self, name: impl Into<String>) -> Self {
        self.sort_key = name.into();
        self
    }
    /// Names the marker attribute.
    #[must_use]
    pub fn with_marker_attribute(mut self, name: impl Into<String>) -> Self {
        self.marker_attribute = name.into();
        self
    }
    /// Names the TTL attribute (the one the table's TTL setting points at).
    #[must_use]
    pub fn with_ttl_attribute(mut self, name: impl Into<String>) -> Self {
        self.ttl_attribute = name.into();
        self
    }
    /// How long an outbox item lives after `occurred_at` before TTL removes it.
    #[must_use]
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// The largest event the writer accepts, as a bus entry
    /// ([`published_size`](crate::published_size)); `None` turns the check off. Set it to
    /// the relay's `OUTBOX_MAX_REQUEST_BYTES` when that is raised.
    #[must_use]
    pub fn with_max_event_bytes(mut self, limit: Option<usize>) -> Self {
        self.max_event_bytes = limit;
        self
    }

    /// The largest event the writer accepts.
    pub fn max_event_bytes(&self) -> Option<usize> {
        self.max_event_bytes
    }

    /// The table outbox items are written to.
    pub fn table(&self) -> &str {
        &self.table
    }
    /// The partition key attribute name.
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }
    /// The sort key attribute name.
    pub fn sort_key(&self) -> &str {
        &self.sort_key
    }
    /// The marker attribute name.
    pub fn marker_attribute(&self) -> &str {
        &self.marker_attribute
    }

    /// The TTL attribute name.
    pub fn ttl_attribute(&self) -> &str {
        &self.ttl_attribute
    }
    /// The retention.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// The default partition key value of an event: `<aggregate_type>#<aggregate_id>`.
    pub fn default_partition_value(event: &OutboxEvent) -> AttributeValue {
        AttributeValue::S(format!("{}#{}", event.aggregate_type(), event.aggregate_id()))
    }

    /// The sort key value of an event: `OUTBOX#<sequence, 20 digits>#<id>`, so
    /// a query on the partition lists its events in sequence order.
    pub fn sort_value(event: &OutboxEvent) -> String {
        format!("{SORT_KEY_PREFIX}{:020}#{}", event.sequence(), event.id())
    }

    /// When the item expires (epoch seconds).
    pub fn expires_at(&self, event: &OutboxEvent) -> i64 {
        (event.occurred_at() + self.retention).timestamp()
    }

    /// The item for `event` in partition `partition`.
    pub fn to_item(&self, event: &OutboxEvent, partition: AttributeValue) -> Item {
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let mut item = Item::with_capacity(14);
        item.insert(self.partition_key.clone(), partition);
        item.insert(self.sort_key.clone(), AttributeValue::S(Self::sort_value(event)));
        item.insert(self.marker_attribute.clone(), s(MARKER_VALUE));
        item.insert(
            self.ttl_attribute.clone(),
            AttributeValue::N(self.expires_at(event).to_string()),
        );
        item.insert(ATTR_EVENT_ID.into(), AttributeValue::S(event.id().to_string()));
        item.insert(ATTR_SOURCE.into(), s(event.source()));
        item.insert(ATTR_EVENT_TYPE.into(), s(event.event_type()));
        item.insert(ATTR_AGGREGATE_TYPE.into(), s(event.aggregate_type()));
        item.insert(ATTR_AGGREGATE_ID.into(), s(event.aggregate_id()));
        item.insert(
            ATTR_SEQUENCE.into(),
            AttributeValue::N(event.sequence().to_string()),
        );
        item.insert(
            ATTR_OCCURRED_AT.into(),
            s(&event
                .occurred_at()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        item.insert(ATTR_PAYLOAD.into(), s(event.payload_json()));
        if let Some(tp) = event.trace_parent() {
            item.insert(ATTR_TRACE_PARENT.into(), s(tp.as_str()));
        }
        if !event.metadata().is_empty() {
            let map = event.metadata().iter().map(|(k, v)| (k.clone(), s(v))).collect();
            item.insert(ATTR_METADATA.into(), AttributeValue::M(map));
        }
        item
    }

    /// Whether `item` carries this schema's marker attribute (with any value):
    /// items without it are not outbox items and are skipped by the relay.
    pub fn is_outbox_item(&self, item: &Item) -> bool {
        item.contains_key(&self.marker_attribute)
    }

    /// Decodes an outbox item back into its event. The item must carry the
    /// marker; every missing or mistyped field is an error that names it.
    pub fn decode_item(&self, item: &Item) -> Result<OutboxEvent, DecodeError> {
        self.decode_parts(item, None)
    }

    /// [`decode_item`](Self::decode_item) on an item the caller no longer
    /// needs: the payload's text is moved into the event instead of copied.
    pub fn decode_item_owned(&self, mut item: Item) -> Result<OutboxEvent, DecodeError> {
        let payload = match item.remove(ATTR_PAYLOAD) {
            Some(AttributeValue::S(text)) => Some(text),
            Some(other) => {
                // Put back, for the error that names its type.
                item.insert(ATTR_PAYLOAD.into(), other);
                None
            }
            None => None,
        };
        self.decode_parts(&item, payload)
    }

    /// Decodes `item`, whose payload text is `payload` when it was taken out.
    fn decode_parts(&self, item: &Item, payload: Option<String>) -> Result<OutboxEvent, DecodeError> {
        match item.get(&self.marker_attribute) {
            Some(AttributeValue::S(v)) if v == MARKER_VALUE => {}
            Some(AttributeValue::S(v)) => {
                return Err(DecodeError::UnsupportedVersion { found: v.clone() });
            }
            Some(other) => return Err(mistyped(&self.marker_attribute, "S", other)),
            None => {
                return Err(DecodeError::MissingAttribute {
                    name: self.marker_attribute.clone(),
                });
            }
        }
        let id = parse_event_id(string(item, ATTR_EVENT_ID)?)?;
        let sequence = parse_sequence(number(item, ATTR_SEQUENCE)?)?;
        let occurred_at = parse_occurred_at(string(item, ATTR_OCCURRED_AT)?)?;
        let payload = match payload {
            Some(text) => parse_payload(text),
            None => parse_payload(string(item, ATTR_PAYLOAD)?.to_owned()),
        }?;
        let trace_parent = match item.get(ATTR_TRACE_PARENT) {
            None | Some(AttributeValue::Null(_)) => None,
            Some(AttributeValue::S(s)) => Some(s.clone()),
            Some(other) => return Err(mistyped(ATTR_TRACE_PARENT, "S", other)),
        };
        let metadata = match item.get(ATTR_METADATA) {
            None | Some(AttributeValue::Null(_)) => BTreeMap::new(),
            Some(AttributeValue::M(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    AttributeValue::S(s) => Ok((k.clone(), s.clone())),
                    other => Err(mistyped(&format!("{ATTR_METADATA}.{k}"), "S", other)),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(mistyped(ATTR_METADATA, "M", other)),
        };
        OutboxEvent::try_from(OutboxEventParts {
            id,
            source: string(item, ATTR_SOURCE)?.to_owned(),
            event_type: string(item, ATTR_EVENT_TYPE)?.to_owned(),
            aggregate_type: string(item, ATTR_AGGREGATE_TYPE)?.to_owned(),
            aggregate_id: string(item, ATTR_AGGREGATE_ID)?.to_owned(),
            sequence,
            occurred_at,
            payload,
            trace_parent,
            metadata,
        })
        .map_err(DecodeError::from)
    }
}

fn parse_event_id(text: &str) -> Result<Uuid, DecodeError> {
    Uuid::parse_str(text).map_err(|e| invalid(ATTR_EVENT_ID, format!("not a UUID: {e}")))
}

fn parse_sequence(text: &str) -> Result<u64, DecodeError> {
    text.parse::<u64>()
        .map_err(|e| invalid(ATTR_SEQUENCE, format!("not an unsigned 64-bit integer: {e}")))
}

fn parse_occurred_at(text: &str) -> Result<DateTime<Utc>, DecodeError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| invalid(ATTR_OCCURRED_AT, format!("not an RFC 3339 timestamp: {e}")))
}

fn parse_payload(text: String) -> Result<Payload, DecodeError> {
    Payload::from_json(text).map_err(|e| invalid(ATTR_PAYLOAD, outbox_core::error_chain(&e)))
}

fn type_name(value: &AttributeValue) -> &'static str {
    match value {
        AttributeValue::S(_) => "S",
        AttributeValue::N(_) => "N",
        AttributeValue::B(_) => "B",
        AttributeValue::Bool(_) => "BOOL",
        AttributeValue::Null(_) => "NULL",
        AttributeValue::M(_) => "M",
        AttributeValue::L(_) => "L",
        AttributeValue::Ss(_) => "SS",
        AttributeValue::Ns(_) => "NS",
        AttributeValue::Bs(_) => "BS",
        _ => "unknown",
    }
}

fn mistyped(name: &str, expected: &'static str, found: &AttributeValue) -> DecodeError {
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

fn string<'a>(item: &'a Item, name: &str) -> Result<&'a str, DecodeError> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Ok(s),
        Some(other) => Err(mistyped(name, "S", other)),
        None => Err(DecodeError::MissingAttribute {
            name: name.to_owned(),
        }),
    }
}

fn number<'a>(item: &'a Item, name: &str) -> Result<&'a str, DecodeError> {
    match item.get(name) {
        Some(AttributeValue::N(s)) => Ok(s),
        Some(other) => Err(mistyped(name, "N", other)),
        None => Err(DecodeError::MissingAttribute {
            name: name.to_owned(),
        }),
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
    fn item_has_the_documented_attributes() {
        let schema = OutboxSchema::new("t").with_retention(Duration::days(1));
        let e = event();
        let item = schema.to_item(&e, OutboxSchema::default_partition_value(&e));
        assert_eq!(item["pk"], AttributeValue::S("Order#o-1".into()));
        assert_eq!(
            item["sk"],
            AttributeValue::S(format!("OUTBOX#00000000000000000042#{}", e.id()))
        );
        assert_eq!(item["outbox"], AttributeValue::S("v1".into()));
        assert_eq!(
            item["ttl"],
            AttributeValue::N((e.occurred_at().timestamp() + 86_400).to_string())
        );
        assert_eq!(item[ATTR_SEQUENCE], AttributeValue::N("42".into()));
        assert_eq!(
            item[ATTR_OCCURRED_AT],
            AttributeValue::S("2026-11-23T10:00:00.000Z".into())
        );
        let AttributeValue::S(payload) = &item[ATTR_PAYLOAD] else {
            panic!("payload is not S")
        };
        let payload: serde_json::Value = serde_json::from_str(payload).unwrap();
        assert_eq!(
            payload,
            json!({"total": 12.5, "big": 12345678901234567890u64}),
            "JSON text, numbers exact"
        );
        assert_eq!(item.len(), 14);
    }

    #[test]
    fn decode_inverts_encode() {
        let schema = OutboxSchema::new("t")
            .with_partition_key("PK")
            .with_sort_key("SK")
            .with_marker_attribute("m");
        let e = event();
        let item = schema.to_item(&e, AttributeValue::S("x".into()));
        assert!(schema.is_outbox_item(&item));
        assert_eq!(schema.decode_item(&item).unwrap(), e);
        assert_eq!(schema.decode_item_owned(item).unwrap(), e);
    }

    #[test]
    fn decode_names_the_missing_or_mistyped_attribute() {
        let schema = OutboxSchema::new("t");
        let good = schema.to_item(&event(), AttributeValue::S("x".into()));
        for name in [
            ATTR_EVENT_ID,
            ATTR_SOURCE,
            ATTR_EVENT_TYPE,
            ATTR_AGGREGATE_TYPE,
            ATTR_AGGREGATE_ID,
            ATTR_SEQUENCE,
            ATTR_OCCURRED_AT,
            ATTR_PAYLOAD,
            "outbox",
        ] {
            let mut item = good.clone();
            item.remove(name);
            let err = schema.decode_item(&item).unwrap_err();
            let owned = schema.decode_item_owned(item).unwrap_err();
            assert_eq!(
                owned.to_string(),
                err.to_string(),
                "{name}: the same error either way"
            );
            assert!(
                matches!(&err, DecodeError::MissingAttribute { name: n } if n == name),
                "{name}: {err}"
            );
            let mut item = good.clone();
            item.insert(name.into(), AttributeValue::Bool(true));
            let err = schema.decode_item(&item).unwrap_err();
            let owned = schema.decode_item_owned(item).unwrap_err();
            assert_eq!(
                owned.to_string(),
                err.to_string(),
                "{name}: the same error either way"
            );
            assert!(
                matches!(&err, DecodeError::WrongType { name: n, found: "BOOL", .. } if n == name),
                "{name}: {err}"
            );
            assert!(err.to_string().contains(name));
        }
        let bad_values = [
            (ATTR_EVENT_ID, AttributeValue::S("nope".into())),
            (ATTR_SEQUENCE, AttributeValue::N("-1".into())),
            (ATTR_SEQUENCE, AttributeValue::N("1e400".into())),
            (ATTR_OCCURRED_AT, AttributeValue::S("tomorrow".into())),
            (ATTR_PAYLOAD, AttributeValue::S("{not json".into())),
        ];
        for (name, value) in bad_values {
            let mut item = good.clone();
            item.insert(name.into(), value);
            let err = schema.decode_item(&item).unwrap_err();
            assert!(
                matches!(&err, DecodeError::InvalidValue { name: n, .. } if n == name),
                "{name}: {err}"
            );
            let owned = schema.decode_item_owned(item).unwrap_err();
            assert_eq!(
                owned.to_string(),
                err.to_string(),
                "{name}: the same error either way"
            );
        }
        let mut item = good.clone();
        item.insert(
            ATTR_METADATA.into(),
            AttributeValue::M(HashMap::from([("k".into(), AttributeValue::N("1".into()))])),
        );
        assert!(
            schema
                .decode_item(&item)
                .unwrap_err()
                .to_string()
                .contains("metadata.k")
        );
        let mut item = good.clone();
        item.insert("outbox".into(), AttributeValue::S("v9".into()));
        assert!(matches!(
            schema.decode_item(&item).unwrap_err(),
            DecodeError::UnsupportedVersion { .. }
        ));
        let mut item = good;
        item.insert(ATTR_SOURCE.into(), AttributeValue::S(String::new()));
        assert!(matches!(
            schema.decode_item(&item).unwrap_err(),
            DecodeError::Envelope { .. }
        ));
    }
}
