//! The outbox event envelope.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use uuid::{ContextV7, Timestamp, Uuid};

use crate::{Clock, EnvelopeError, Payload};

/// CloudEvents attribute names that metadata keys may not take.
pub(crate) const RESERVED_ATTRIBUTES: &[&str] = &[
    "id",
    "source",
    "specversion",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
    "data",
    "data_base64",
    "traceparent",
    "tracestate",
    "sequence",
];

/// Longest metadata key: the CloudEvents 1.0 spec asks extension names to be
/// at most 20 characters so that every transport can carry them.
pub const MAX_METADATA_KEY_LEN: usize = 20;

/// One event written to the outbox in the same transaction as the aggregate
/// change that produced it, and later published to the bus.
///
/// Build one with [`OutboxEvent::builder`]; every field is validated there and
/// again when an envelope is parsed, so a value of this type is always valid.
/// The JSON form ([`to_json`](Self::to_json)) is the `Detail` published to
/// EventBridge; [`to_cloudevent`](Self::to_cloudevent) gives CloudEvents 1.0
/// structured mode.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawEvent")]
pub struct OutboxEvent {
    id: Uuid,
    source: String,
    event_type: String,
    aggregate_type: String,
    aggregate_id: String,
    sequence: u64,
    occurred_at: DateTime<Utc>,
    payload: Payload,
    trace_parent: Option<TraceParent>,
    metadata: BTreeMap<String, String>,
}

impl Serialize for OutboxEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        /// The envelope's fields as they are written, borrowed.
        #[derive(Serialize)]
        struct Envelope<'a> {
            id: &'a Uuid,
            source: &'a str,
            event_type: &'a str,
            aggregate_type: &'a str,
            aggregate_id: &'a str,
            sequence: u64,
            #[serde(serialize_with = "serialize_time")]
            occurred_at: &'a DateTime<Utc>,
            payload: &'a Payload,
            #[serde(skip_serializing_if = "Option::is_none")]
            trace_parent: Option<&'a TraceParent>,
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            metadata: &'a BTreeMap<String, String>,
        }
        Envelope {
            id: &self.id,
            source: self.source(),
            event_type: self.event_type(),
            aggregate_type: self.aggregate_type(),
            aggregate_id: self.aggregate_id(),
            sequence: self.sequence,
            occurred_at: &self.occurred_at,
            payload: &self.payload,
            trace_parent: self.trace_parent.as_ref(),
            metadata: &self.metadata,
        }
        .serialize(s)
    }
}

fn serialize_time<S: Serializer>(time: &&DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(time))
}

/// RFC 3339 with milliseconds and a `Z`, the form used everywhere in the envelope.
pub(crate) fn format_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 timestamp.
pub(crate) fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>, EnvelopeError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| EnvelopeError::Invalid {
            field: field.to_owned(),
            reason: format!("not an RFC 3339 timestamp ({e}): {text:?}"),
        })
}

impl OutboxEvent {
    /// Starts an event from its producer (`source`, e.g. `com.example.orders`)
    /// and its type (e.g. `OrderPlaced`).
    pub fn builder(source: impl Into<String>, event_type: impl Into<String>) -> OutboxEventBuilder {
        OutboxEventBuilder {
            source: source.into(),
            event_type: event_type.into(),
            aggregate: None,
            sequence: None,
            payload: None,
            id: None,
            occurred_at: None,
            trace_parent: None,
            metadata: BTreeMap::new(),
        }
    }

    /// Unique, time-ordered id (UUIDv7 when built here). Consumers de-duplicate on it.
    pub fn id(&self) -> Uuid {
        self.id
    }
    /// The producer, e.g. `com.example.orders`.
    pub fn source(&self) -> &str {
        &self.source
    }
    /// The event type, e.g. `OrderPlaced`.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }
    /// The kind of aggregate that changed, e.g. `Order`.
    pub fn aggregate_type(&self) -> &str {
        &self.aggregate_type
    }
    /// The id of the aggregate that changed.
    pub fn aggregate_id(&self) -> &str {
        &self.aggregate_id
    }
    /// The aggregate's version that produced this event; orders events per aggregate.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
    /// When the change was made (millisecond precision, UTC).
    pub fn occurred_at(&self) -> DateTime<Utc> {
        self.occurred_at
    }
    /// The event's data, as validated JSON text ([`Payload::to_value`] and
    /// [`Payload::deserialize`] parse it).
    pub fn payload(&self) -> &Payload {
        &self.payload
    }
    /// The W3C trace context captured when the event was written, if any.
    pub fn trace_parent(&self) -> Option<&TraceParent> {
        self.trace_parent.as_ref()
    }
    /// Small string map: correlation id, tenant, ...
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The envelope as compact JSON text (the EventBridge `Detail`).
    pub fn to_json(&self) -> String {
        // Serialising this type cannot fail: every key is a string and the
        // payload is already validated JSON text.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses and validates an envelope from JSON text.
    pub fn from_json(text: &str) -> Result<Self, EnvelopeError> {
        let raw: RawEvent = serde_json::from_str(text).map_err(EnvelopeError::Json)?;
        Self::try_from(raw)
    }

    /// The length of [`to_json`](Self::to_json)'s text in bytes, counted
    /// by serde_json without keeping the text.
    pub fn json_len(&self) -> usize {
        /// Counts what serde_json writes.
        struct Counter(usize);
        impl std::io::Write for Counter {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut counter = Counter(0);
        // As in `to_json`: serialising this type cannot fail.
        let _ = serde_json::to_writer(&mut counter, self);
        counter.0
    }

    /// The payload alone, as JSON text (how the DynamoDB item and the Cosmos
    /// document store it).
    pub fn payload_json(&self) -> &str {
        self.payload.as_str()
    }
}

/// Builds a validated [`OutboxEvent`]. See [`OutboxEvent::builder`].
#[derive(Debug)]
#[must_use]
pub struct OutboxEventBuilder {
    source: String,
    event_type: String,
    aggregate: Option<(String, String)>,
    sequence: Option<u64>,
    payload: Option<Result<Payload, EnvelopeError>>,
    id: Option<Uuid>,
    occurred_at: Option<DateTime<Utc>>,
    trace_parent: Option<String>,
    metadata: BTreeMap<String, String>,
}

impl OutboxEventBuilder {
    /// The aggregate that changed: its type (no `/` in it) and its id.
    pub fn aggregate(mut self, aggregate_type: impl Into<String>, aggregate_id: impl Into<String>) -> Self {
        self.aggregate = Some((aggregate_type.into(), aggregate_id.into()));
        self
    }

    /// The aggregate's version after the change.
    pub fn sequence(mut self, sequence: u64) -> Self {
        self.sequence = Some(sequence);
        self
    }

    /// The payload, from anything serde can serialise; an error surfaces in
    /// [`build`](Self::build).
    pub fn payload<T: Serialize + ?Sized>(mut self, payload: &T) -> Self {
        self.payload = Some(Payload::serialize(payload));
        self
    }

    /// The payload, as a JSON value.
    pub fn payload_value(mut self, payload: Value) -> Self {
        self.payload = Some(Payload::from_value(&payload));
        self
    }

    /// The payload, as JSON text (kept as it is, once checked to be JSON;
    /// an error surfaces in [`build`](Self::build)).
    pub fn payload_json(mut self, text: impl Into<String>) -> Self {
        self.payload = Some(Payload::from_json(text));
        self
    }

    /// The payload, already validated.
    pub fn payload_raw(mut self, payload: Payload) -> Self {
        self.payload = Some(Ok(payload));
        self
    }

    /// A given id instead of a fresh UUIDv7 (for replays and tests).
    pub fn id(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }

    /// A given time instead of the clock's.
    pub fn occurred_at(mut self, at: DateTime<Utc>) -> Self {
        self.occurred_at = Some(at);
        self
    }

    /// A W3C `traceparent` value, validated in [`build`](Self::build).
    pub fn trace_parent(mut self, traceparent: impl Into<String>) -> Self {
        self.trace_parent = Some(traceparent.into());
        self
    }

    /// Adds one metadata entry. Keys follow the CloudEvents extension naming
    /// rules (lowercase ASCII letters and digits, 1 to 20 characters, not a
    /// CloudEvents attribute name), so the envelope maps to CloudEvents and
    /// back without loss.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Validates the fields and builds the event. Time and the id come from
    /// `clock` unless they were given.
    pub fn build(self, clock: &dyn Clock) -> Result<OutboxEvent, EnvelopeError> {
        let (aggregate_type, aggregate_id) = self.aggregate.ok_or(EnvelopeError::Missing {
            field: "aggregate_type",
        })?;
        let sequence = self
            .sequence
            .ok_or(EnvelopeError::Missing { field: "sequence" })?;
        let payload = self
            .payload
            .ok_or(EnvelopeError::Missing { field: "payload" })??;
        let occurred_at = self.occurred_at.unwrap_or_else(|| clock.now()).trunc_subsecs(3);
        let id = self.id.unwrap_or_else(|| new_v7(occurred_at));
        let trace_parent = self.trace_parent.map(|t| TraceParent::parse(&t)).transpose()?;
        validate(OutboxEvent {
            id,
            source: self.source,
            event_type: self.event_type,
            aggregate_type,
            aggregate_id,
            sequence,
            occurred_at,
            payload,
            trace_parent,
            metadata: self.metadata,
        })
    }
}

/// A UUIDv7 whose time part is `at`. One process-wide counter keeps ids
/// made in the same millisecond in creation order.
fn new_v7(at: DateTime<Utc>) -> Uuid {
    static CONTEXT: Mutex<ContextV7> = Mutex::new(ContextV7::new());
    let secs = u64::try_from(at.timestamp()).unwrap_or(0);
    let context = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    Uuid::new_v7(Timestamp::from_unix(&*context, secs, at.timestamp_subsec_nanos()))
}

fn non_empty(field: &'static str, value: &str) -> Result<(), EnvelopeError> {
    if value.trim().is_empty() {
        Err(EnvelopeError::Empty { field })
    } else {
        Ok(())
    }
}

/// Checks what the builder and the parser both require.
pub(crate) fn validate(event: OutboxEvent) -> Result<OutboxEvent, EnvelopeError> {
    non_empty("source", event.source())?;
    non_empty("event_type", event.event_type())?;
    non_empty("aggregate_type", event.aggregate_type())?;
    non_empty("aggregate_id", event.aggregate_id())?;
    if event.aggregate_type().contains('/') {
        return Err(EnvelopeError::Invalid {
            field: "aggregate_type".into(),
            reason: format!(
                "must not contain `/` (the CloudEvents subject is `aggregate_type/aggregate_id`): {:?}",
                event.aggregate_type()
            ),
        });
    }
    for key in event.metadata.keys() {
        validate_metadata_key(key)?;
    }
    Ok(event)
}

pub(crate) fn validate_metadata_key(key: &str) -> Result<(), EnvelopeError> {
    let well_formed = !key.is_empty()
        && key.len() <= MAX_METADATA_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !well_formed {
        return Err(EnvelopeError::Invalid {
            field: format!("metadata.{key}"),
            reason: format!(
                "metadata keys must be 1 to {MAX_METADATA_KEY_LEN} lowercase ASCII letters or digits (CloudEvents extension names)"
            ),
        });
    }
    if RESERVED_ATTRIBUTES.contains(&key) {
        return Err(EnvelopeError::Invalid {
            field: format!("metadata.{key}"),
            reason: "is a CloudEvents attribute name".into(),
        });
    }
    Ok(())
}

/// The envelope as it is on the wire, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    id: Option<Uuid>,
    source: Option<String>,
    event_type: Option<String>,
    aggregate_type: Option<String>,
    aggregate_id: Option<String>,
    sequence: Option<u64>,
    occurred_at: Option<String>,
    // Not an `Option`: serde reads `null` as `None`, and `"payload": null`
    // is a payload (the JSON null), not a missing one.
    #[serde(default)]
    payload: Present<Payload>,
    trace_parent: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

impl TryFrom<RawEvent> for OutboxEvent {
    type Error = EnvelopeError;

    fn try_from(raw: RawEvent) -> Result<Self, Self::Error> {
        let occurred_at = raw
            .occurred_at
            .ok_or(EnvelopeError::Missing { field: "occurred_at" })?;
        let id = raw.id.ok_or(EnvelopeError::Missing { field: "id" })?;
        let source = raw.source.ok_or(EnvelopeError::Missing { field: "source" })?;
        let event_type = raw
            .event_type
            .ok_or(EnvelopeError::Missing { field: "event_type" })?;
        let aggregate_type = raw.aggregate_type.ok_or(EnvelopeError::Missing {
            field: "aggregate_type",
        })?;
        let aggregate_id = raw.aggregate_id.ok_or(EnvelopeError::Missing {
            field: "aggregate_id",
        })?;
        validate(OutboxEvent {
            id,
            source,
            event_type,
            aggregate_type,
            aggregate_id,
            sequence: raw.sequence.ok_or(EnvelopeError::Missing { field: "sequence" })?,
            occurred_at: parse_time("occurred_at", &occurred_at)?,
            payload: raw.payload.0.ok_or(EnvelopeError::Missing { field: "payload" })?,
            trace_parent: raw.trace_parent.map(|t| TraceParent::parse(&t)).transpose()?,
            metadata: raw.metadata,
        })
    }
}

/// A field that is absent (`None`, with `#[serde(default)]`) or present with
/// any value, `null` included.
struct Present<T>(Option<T>);

impl<T> Default for Present<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Present<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(|value| Self(Some(value)))
    }
}

/// A parts-of constructor for the crates that store the envelope field by
/// field (the DynamoDB item, the Cosmos document). Validates like the builder.
#[derive(Debug, Clone)]
pub struct OutboxEventParts {
    /// See [`OutboxEvent::id`].
    pub id: Uuid,
    /// See [`OutboxEvent::source`].
    pub source: String,
    /// See [`OutboxEvent::event_type`].
    pub event_type: String,
    /// See [`OutboxEvent::aggregate_type`].
    pub aggregate_type: String,
    /// See [`OutboxEvent::aggregate_id`].
    pub aggregate_id: String,
    /// See [`OutboxEvent::sequence`].
    pub sequence: u64,
    /// See [`OutboxEvent::occurred_at`].
    pub occurred_at: DateTime<Utc>,
    /// See [`OutboxEvent::payload`].
    pub payload: Payload,
    /// A W3C `traceparent`, validated.
    pub trace_parent: Option<String>,
    /// See [`OutboxEvent::metadata`].
    pub metadata: BTreeMap<String, String>,
}

impl TryFrom<OutboxEventParts> for OutboxEvent {
    type Error = EnvelopeError;

    fn try_from(p: OutboxEventParts) -> Result<Self, Self::Error> {
        validate(OutboxEvent {
            id: p.id,
            source: p.source,
            event_type: p.event_type,
            aggregate_type: p.aggregate_type,
            aggregate_id: p.aggregate_id,
            sequence: p.sequence,
            occurred_at: p.occurred_at,
            payload: p.payload,
            trace_parent: p.trace_parent.map(|t| TraceParent::parse(&t)).transpose()?,
            metadata: p.metadata,
        })
    }
}

impl OutboxEvent {
    /// Splits the event into its fields (the inverse of `OutboxEvent::try_from(parts)`).
    pub fn into_parts(self) -> OutboxEventParts {
        OutboxEventParts {
            id: self.id,
            source: self.source,
            event_type: self.event_type,
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            sequence: self.sequence,
            occurred_at: self.occurred_at,
            payload: self.payload,
            trace_parent: self.trace_parent.map(|t| t.0),
            metadata: self.metadata,
        }
    }
}

/// A W3C Trace Context `traceparent` value (version `00`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TraceParent(String);

impl TraceParent {
    /// Parses `00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>`,
    /// lowercase, with non-zero trace and parent ids.
    pub fn parse(value: &str) -> Result<Self, EnvelopeError> {
        let invalid = || EnvelopeError::InvalidTraceParent {
            value: value.to_owned(),
        };
        let parts: Vec<&str> = value.split('-').collect();
        let [version, trace_id, parent_id, flags] = parts.as_slice() else {
            return Err(invalid());
        };
        let lower_hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let all_zero = |s: &str| s.bytes().all(|b| b == b'0');
        if *version != "00"
            || !lower_hex(trace_id, 32)
            || !lower_hex(parent_id, 16)
            || !lower_hex(flags, 2)
            || all_zero(trace_id)
            || all_zero(parent_id)
        {
            return Err(invalid());
        }
        Ok(Self(value.to_owned()))
    }

    /// The header value.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 32-hex-digit trace id.
    pub fn trace_id(&self) -> &str {
        &self.0[3..35]
    }

    /// The 16-hex-digit parent (span) id.
    pub fn parent_id(&self) -> &str {
        &self.0[36..52]
    }

    /// Whether the `sampled` flag is set.
    pub fn sampled(&self) -> bool {
        u8::from_str_radix(&self.0[53..55], 16).is_ok_and(|f| f & 1 == 1)
    }

    /// The same context as an AWS X-Ray trace header
    /// (`Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=<0|1>`), the form
    /// EventBridge's `TraceHeader` takes.
    pub fn to_xray_header(&self) -> String {
        let trace = self.trace_id();
        format!(
            "Root=1-{}-{};Parent={};Sampled={}",
            &trace[..8],
            &trace[8..],
            self.parent_id(),
            u8::from(self.sampled())
        )
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TraceParent {
    type Error = EnvelopeError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TraceParent> for String {
    fn from(value: TraceParent) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FixedClock, MAX_PAYLOAD_DEPTH};
    use chrono::TimeZone;
    use serde_json::json;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// The counted length is the written one, whatever the texts.
        #[test]
        fn json_len_is_the_length_of_to_json(
            texts in proptest::collection::vec(proptest::prelude::any::<String>(), 3),
            metadata in proptest::collection::btree_map("[a-z0-9]{1,20}", proptest::prelude::any::<String>(), 0..3),
            sequence in proptest::prelude::any::<u64>(),
            trace in proptest::prelude::any::<bool>(),
        ) {
            let mut parts = builder().build(&clock()).unwrap().into_parts();
            parts.event_type = format!("t{}", texts[0]);
            parts.aggregate_id = format!("i{}", texts[1]);
            parts.sequence = sequence;
            parts.trace_parent = trace.then(|| TP.to_owned());
            parts.metadata = metadata.into_iter().filter(|(k, _)| validate_metadata_key(k).is_ok()).collect();
            parts.payload = Payload::serialize(&json!({ "t": texts[2] })).unwrap();
            let event = OutboxEvent::try_from(parts).unwrap();
            proptest::prop_assert_eq!(event.json_len(), event.to_json().len());
        }
    }

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn clock() -> FixedClock {
        FixedClock::new(
            Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
                + chrono::Duration::nanoseconds(123_456_789),
        )
    }

    fn builder() -> OutboxEventBuilder {
        OutboxEvent::builder("com.example.orders", "OrderPlaced")
            .aggregate("Order", "o-1")
            .sequence(3)
            .payload(&json!({"total": 1999, "lines": [{"sku": "A", "qty": 2}]}))
    }

    #[test]
    fn builds_with_clock_time_truncated_to_millis_and_a_v7_id() {
        let event = builder().build(&clock()).unwrap();
        assert_eq!(
            event.occurred_at(),
            Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap() + chrono::Duration::milliseconds(123)
        );
        assert_eq!(event.id().get_version_num(), 7);
        // The id's time is the clock's, or later: one process-wide context keeps
        // ids monotonic even if an earlier id was made with a later time.
        let (secs, _) = event.id().get_timestamp().unwrap().to_unix();
        assert!(secs >= 1_795_428_000, "{secs}");
        assert_eq!(event.sequence(), 3);
        assert_eq!(event.aggregate_type(), "Order");
        assert!(event.trace_parent().is_none());
    }

    #[test]
    fn ids_are_unique_and_time_ordered_even_within_a_millisecond() {
        let c = clock();
        let a = builder().build(&c).unwrap();
        let b = builder().build(&c).unwrap();
        c.advance(chrono::Duration::milliseconds(1));
        let d = builder().build(&c).unwrap();
        assert!(
            a.id() < b.id() && b.id() < d.id(),
            "{} {} {}",
            a.id(),
            b.id(),
            d.id()
        );
    }

    #[test]
    fn json_round_trip_keeps_every_field() {
        let event = builder()
            .trace_parent(TP)
            .metadata("tenant", "acme")
            .metadata("correlationid", "c-9")
            .build(&clock())
            .unwrap();
        let text = event.to_json();
        assert_eq!(OutboxEvent::from_json(&text).unwrap(), event);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["occurred_at"], "2026-11-23T10:00:00.123Z");
        assert_eq!(v["event_type"], "OrderPlaced");
        assert_eq!(v["trace_parent"], TP);
        assert_eq!(v["metadata"]["tenant"], "acme");
        assert_eq!(v["payload"]["lines"][0]["qty"], 2);
    }

    #[test]
    fn optional_fields_are_left_out_of_json() {
        let v: Value = serde_json::from_str(&builder().build(&clock()).unwrap().to_json()).unwrap();
        assert!(v.get("trace_parent").is_none());
        assert!(v.get("metadata").is_none());
    }

    #[test]
    fn every_empty_name_is_refused_by_name() {
        let cases: [(OutboxEventBuilder, &str); 4] = [
            (OutboxEvent::builder(" ", "T").aggregate("A", "1"), "source"),
            (OutboxEvent::builder("s", "").aggregate("A", "1"), "event_type"),
            (
                OutboxEvent::builder("s", "T").aggregate("", "1"),
                "aggregate_type",
            ),
            (
                OutboxEvent::builder("s", "T").aggregate("A", "\t"),
                "aggregate_id",
            ),
        ];
        for (b, field) in cases {
            let err = b
                .sequence(1)
                .payload_value(json!({}))
                .build(&clock())
                .unwrap_err();
            assert!(
                matches!(err, EnvelopeError::Empty { field: f } if f == field),
                "{field}: {err}"
            );
            assert!(err.to_string().contains(field));
        }
    }

    #[test]
    fn missing_parts_are_named() {
        let c = clock();
        let no_agg = OutboxEvent::builder("s", "T")
            .sequence(1)
            .payload_value(json!(1))
            .build(&c)
            .unwrap_err();
        assert!(matches!(
            no_agg,
            EnvelopeError::Missing {
                field: "aggregate_type"
            }
        ));
        let no_seq = OutboxEvent::builder("s", "T")
            .aggregate("A", "1")
            .payload_value(json!(1))
            .build(&c)
            .unwrap_err();
        assert!(matches!(no_seq, EnvelopeError::Missing { field: "sequence" }));
        let no_payload = OutboxEvent::builder("s", "T")
            .aggregate("A", "1")
            .sequence(1)
            .build(&c)
            .unwrap_err();
        assert!(matches!(no_payload, EnvelopeError::Missing { field: "payload" }));
    }

    #[test]
    fn aggregate_type_with_a_slash_is_refused() {
        let err = builder()
            .aggregate("Order/Line", "1")
            .build(&clock())
            .unwrap_err();
        assert!(err.to_string().contains("aggregate_type"), "{err}");
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            "garbage",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let err = builder().trace_parent(bad).build(&clock()).unwrap_err();
            assert!(
                matches!(err, EnvelopeError::InvalidTraceParent { .. }),
                "{bad:?} gave {err}"
            );
        }
    }

    #[test]
    fn traceparent_maps_to_an_xray_header() {
        let tp = TraceParent::parse(TP).unwrap();
        assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.parent_id(), "00f067aa0ba902b7");
        assert!(tp.sampled());
        assert_eq!(
            tp.to_xray_header(),
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"
        );
        let unsampled =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(unsampled.to_xray_header().ends_with("Sampled=0"));
    }

    #[test]
    fn a_payload_that_cannot_be_json_is_an_error() {
        let mut map = std::collections::HashMap::new();
        map.insert((1, 2), "tuple keys are not JSON object keys");
        let err = builder().payload(&map).build(&clock()).unwrap_err();
        assert!(matches!(err, EnvelopeError::Payload(_)));
        assert!(err.to_string().contains("payload"));
    }

    #[test]
    fn bad_metadata_keys_are_refused() {
        for key in [
            "",
            "Tenant",
            "correlation_id",
            "averyveryverylongkeyname",
            "subject",
            "id",
        ] {
            let err = builder().metadata(key, "v").build(&clock()).unwrap_err();
            assert!(
                matches!(err, EnvelopeError::Invalid { ref field, .. } if field == &format!("metadata.{key}")),
                "{key:?}: {err}"
            );
        }
    }

    #[test]
    fn parsing_names_missing_and_malformed_fields() {
        let good: Value = serde_json::from_str(&builder().build(&clock()).unwrap().to_json()).unwrap();
        for field in [
            "id",
            "source",
            "event_type",
            "aggregate_type",
            "aggregate_id",
            "sequence",
            "occurred_at",
            "payload",
        ] {
            let mut v = good.clone();
            v.as_object_mut().unwrap().remove(field);
            let err = OutboxEvent::from_json(&v.to_string()).unwrap_err();
            assert!(
                err.to_string().contains(field) || matches!(err, EnvelopeError::Json(_)),
                "{field}: {err}"
            );
            assert!(
                matches!(err, EnvelopeError::Missing { field: f } if f == field),
                "{field}: {err}"
            );
        }
        let mut v = good.clone();
        v["occurred_at"] = "yesterday".into();
        assert!(
            OutboxEvent::from_json(&v.to_string())
                .unwrap_err()
                .to_string()
                .contains("occurred_at")
        );
        let mut v = good.clone();
        v["sequence"] = json!(-1);
        assert!(matches!(
            OutboxEvent::from_json(&v.to_string()).unwrap_err(),
            EnvelopeError::Json(_)
        ));
        let mut v = good;
        v["surprise"] = json!(true);
        assert!(matches!(
            OutboxEvent::from_json(&v.to_string()).unwrap_err(),
            EnvelopeError::Json(_)
        ));
        assert!(matches!(
            OutboxEvent::from_json("not json").unwrap_err(),
            EnvelopeError::Json(_)
        ));
    }

    #[test]
    fn a_null_payload_round_trips_and_a_missing_one_is_named() {
        let event = builder().payload_value(Value::Null).build(&clock()).unwrap();
        let text = event.to_json();
        assert!(text.contains(r#""payload":null"#), "{text}");
        let back = OutboxEvent::from_json(&text).unwrap();
        assert!(back.payload().is_null());
        assert_eq!(back, event);
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v.as_object_mut().unwrap().remove("payload");
        assert!(matches!(
            OutboxEvent::from_json(&v.to_string()).unwrap_err(),
            EnvelopeError::Missing { field: "payload" }
        ));
    }

    #[test]
    fn payloads_of_any_depth_round_trip_through_the_envelope() {
        // serde_json's Value parser stops at 128 levels; the envelope keeps
        // the payload as text, so the envelope around it adds no limit.
        for depth in [126, 127, 128, 129, MAX_PAYLOAD_DEPTH] {
            let text = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let event = builder().payload_json(text.clone()).build(&clock()).unwrap();
            let back = OutboxEvent::from_json(&event.to_json()).unwrap();
            assert_eq!(back.payload().as_str(), text, "depth {depth}");
            assert_eq!(back.json_len(), event.json_len());
        }
    }

    #[test]
    fn payload_text_is_kept_as_given() {
        let text = r#"{"big":123456789012345678901234567890,"price":1.10}"#;
        let event = builder().payload_json(text).build(&clock()).unwrap();
        assert_eq!(event.payload_json(), text);
        assert!(event.to_json().contains(text));
        let err = builder().payload_json("{oops").build(&clock()).unwrap_err();
        assert!(matches!(err, EnvelopeError::Payload(_)), "{err}");
        let too_deep = format!(
            "{}{}",
            "[".repeat(MAX_PAYLOAD_DEPTH + 1),
            "]".repeat(MAX_PAYLOAD_DEPTH + 1)
        );
        let err = builder().payload_json(too_deep).build(&clock()).unwrap_err();
        assert!(
            matches!(err, EnvelopeError::Invalid { ref field, .. } if field == "payload"),
            "{err}"
        );
    }

    #[test]
    fn parts_round_trip() {
        let event = builder()
            .trace_parent(TP)
            .metadata("tenant", "t")
            .build(&clock())
            .unwrap();
        assert_eq!(OutboxEvent::try_from(event.clone().into_parts()).unwrap(), event);
    }

    proptest::proptest! {
        #[test]
        fn any_valid_event_round_trips_through_json_and_cloudevents(
            source in "[a-z]{1,8}(\\.[a-z]{1,8}){0,3}",
            event_type in "[A-Za-z]{1,20}",
            aggregate_type in "[A-Za-z]{1,12}",
            aggregate_id in "[^\\s][^\\u{0}]{0,30}",
            sequence in proptest::num::u64::ANY,
            millis in 0i64..4_102_444_800_000,
            text in ".{0,40}",
            number in proptest::num::f64::NORMAL,
            meta in proptest::collection::btree_map("[a-z0-9]{1,20}", ".{0,10}", 0..4),
        ) {
            let mut b = OutboxEvent::builder(source, event_type)
                .aggregate(aggregate_type, aggregate_id)
                .sequence(sequence)
                .occurred_at(DateTime::from_timestamp_millis(millis).unwrap())
                .payload(&json!({"text": text, "n": number}));
            for (k, v) in meta.into_iter().filter(|(k, _)| !RESERVED_ATTRIBUTES.contains(&k.as_str())) {
                b = b.metadata(k, v);
            }
            let event = b.build(&clock()).unwrap();
            proptest::prop_assert_eq!(&OutboxEvent::from_json(&event.to_json()).unwrap(), &event);
            proptest::prop_assert_eq!(&OutboxEvent::from_cloudevent(&event.to_cloudevent().unwrap()).unwrap(), &event);
        }
    }
}
