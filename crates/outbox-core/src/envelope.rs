//! The outbox event envelope.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use uuid::{ContextV7, Timestamp, Uuid};

use crate::{Clock, EnvelopeError, Payload};

mod trace;
pub use trace::TraceParent;

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
/// EventBridge by default; [`to_cloudevent`](Self::to_cloudevent) and
/// [`to_cloudevent_json`](Self::to_cloudevent_json) give CloudEvents 1.0
/// structured mode, the other bus format.
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
            trace_capture: true,
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

    /// The envelope as compact JSON text (the EventBridge `Detail` in the
    /// envelope bus format).
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
        serialized_len(self)
    }

    /// The payload alone, as JSON text (how the DynamoDB item and the Cosmos
    /// document store it).
    pub fn payload_json(&self) -> &str {
        self.payload.as_str()
    }
}

/// The length in bytes of `value`'s compact JSON text, counted by
/// serde_json without keeping the text (0 if it cannot be serialised).
pub(crate) fn serialized_len<T: Serialize + ?Sized>(value: &T) -> usize {
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
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => 0,
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
    trace_capture: bool,
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

    /// A W3C `traceparent` value, validated in [`build`](Self::build). It
    /// wins over the context [`build`](Self::build) would capture.
    pub fn trace_parent(mut self, traceparent: impl Into<String>) -> Self {
        self.trace_parent = Some(traceparent.into());
        self
    }

    /// Builds the event without a trace context unless
    /// [`trace_parent`](Self::trace_parent) gives one: nothing is captured.
    /// For events that must be the same wherever they are built: a write
    /// retried with the same `client_request_token` from another Lambda
    /// invocation (whose trace differs), rebuilt or replayed events.
    pub fn no_trace_capture(mut self) -> Self {
        self.trace_capture = false;
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
    ///
    /// The trace context is the one given with
    /// [`trace_parent`](Self::trace_parent); without one (and unless
    /// [`no_trace_capture`](Self::no_trace_capture)), it is captured from
    /// where the event is built, so that consumers continue the producer's
    /// trace: with the `opentelemetry` feature, the current `tracing` span's
    /// OpenTelemetry context (when valid); else, in AWS Lambda, the
    /// invocation's X-Ray trace header (`_X_AMZN_TRACE_ID`). Elsewhere the
    /// event has none.
    pub fn build(self, clock: &dyn Clock) -> Result<OutboxEvent, EnvelopeError> {
        self.build_in(clock, &|name| std::env::var(name).ok())
    }

    /// [`build`](Self::build), reading the environment through `env` (a
    /// variable name to its value).
    fn build_in(
        self,
        clock: &dyn Clock,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<OutboxEvent, EnvelopeError> {
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
        let trace_parent = match self.trace_parent {
            Some(given) => Some(TraceParent::parse(&given)?),
            None if self.trace_capture => trace::captured(env),
            None => None,
        };
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
            trace_parent: self.trace_parent.map(String::from),
            metadata: self.metadata,
        }
    }
}

#[cfg(test)]
mod tests;
