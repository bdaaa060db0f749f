//! [`SqsQuarantine`]: the relay's [`Quarantine`] over an Amazon SQS queue,
//! and [`QuarantineMessage`], the body of its messages.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_sqs::types::MessageAttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use outbox_core::{
    Clock, EnvelopeError, OutboxEvent, Quarantine, QuarantineError, QuarantinedRecord, SystemClock,
};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::claim_check::{ClaimCheck, S3ClaimCheck};
use crate::{QuarantineMessageError, ResolveError};

/// Default size limit of one quarantine message, body and attributes: the
/// SQS message size limit documented as 256 KiB (262,144 bytes), counting the
/// body and each attribute's name, type and value. Queues can now take up to
/// 1 MiB; raise the limit with
/// [`SqsQuarantine::with_max_message_bytes`] where the queue is set so.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Message attribute holding why the record was quarantined (at most
/// [`MAX_REASON_ATTRIBUTE_BYTES`]; the body has it in full).
pub const ATTRIBUTE_REASON: &str = "reason";
/// Message attribute holding the event id, when the record is an event.
pub const ATTRIBUTE_EVENT_ID: &str = "event_id";
/// Message attribute holding the event type, when the record is an event.
pub const ATTRIBUTE_EVENT_TYPE: &str = "event_type";
/// Longest `reason` attribute value in bytes; a longer reason is cut there in
/// the attribute only.
pub const MAX_REASON_ATTRIBUTE_BYTES: usize = 256;

/// The body of a quarantine message: a record that can never be delivered,
/// with why and where it came from, in full. Redrive tooling reads it back
/// with [`from_body`](Self::from_body).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QuarantineMessage {
    /// Why the record was quarantined.
    pub reason: String,
    /// The record's position in its stream (DynamoDB sequence number, ...).
    pub position: String,
    /// Where the record came from, e.g. `dynamodb:<table>`.
    #[serde(default)]
    pub origin: Option<String>,
    /// When it was quarantined (RFC 3339).
    #[serde(serialize_with = "serialize_time")]
    pub quarantined_at: DateTime<Utc>,
    /// The event envelope as a JSON object, kept as its text, when the
    /// record decoded into one ([`outbox_event`](Self::outbox_event) parses
    /// it back). Text rather than a `serde_json::Value`, whose recursion
    /// limit (128) is below the payload depth the envelope allows.
    #[serde(default)]
    pub event: Option<Box<RawValue>>,
    /// The full original record, as JSON text, when it did not decode.
    #[serde(default)]
    pub raw: Option<String>,
    /// Where the whole message is stored when it was too large for the
    /// queue; `event` and `raw` are then left out here
    /// ([`resolve`](Self::resolve) reads the whole message back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_check: Option<ClaimCheck>,
}

/// Equal when every field is, the event compared by its text.
impl PartialEq for QuarantineMessage {
    fn eq(&self, other: &Self) -> bool {
        self.reason == other.reason
            && self.position == other.position
            && self.origin == other.origin
            && self.quarantined_at == other.quarantined_at
            && self.event.as_ref().map(|e| e.get()) == other.event.as_ref().map(|e| e.get())
            && self.raw == other.raw
            && self.claim_check == other.claim_check
    }
}

fn serialize_time<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Millis, true))
}

impl QuarantineMessage {
    /// The message for `record`, from `origin`, quarantined at `at`.
    pub fn new(record: &QuarantinedRecord, origin: Option<&str>, at: DateTime<Utc>) -> Self {
        Self {
            reason: record.reason.clone(),
            position: record.position.clone(),
            origin: origin.map(str::to_owned),
            quarantined_at: at,
            event: record.event.as_ref().map(envelope_text),
            raw: record.raw.clone(),
            claim_check: None,
        }
    }

    /// The message that stands for this one when it is stored at `check`:
    /// the same reason, position, origin and time, without the record.
    pub fn claimed(&self, check: ClaimCheck) -> Self {
        Self {
            reason: self.reason.clone(),
            position: self.position.clone(),
            origin: self.origin.clone(),
            quarantined_at: self.quarantined_at,
            event: None,
            raw: None,
            claim_check: Some(check),
        }
    }

    /// The whole message: this one, or the one stored at its claim-check,
    /// read with `s3`.
    pub async fn resolve(self, s3: &aws_sdk_s3::Client) -> Result<Self, ResolveError> {
        let Some(check) = &self.claim_check else {
            return Ok(self);
        };
        let body = crate::claim_check::fetch(s3, check).await?;
        Ok(Self::from_body(&body)?)
    }

    /// The message as an SQS message body: compact JSON in which every
    /// character is one SQS accepts (U+FFFE and U+FFFF, which SQS refuses,
    /// are written as JSON escapes).
    pub fn to_body(&self) -> String {
        // Serialising cannot fail: every key is a string and `event` is
        // already JSON text.
        let json = serde_json::to_string(self).unwrap_or_default();
        if json.contains(['\u{FFFE}', '\u{FFFF}']) {
            // These can only occur inside JSON strings, where an escape means
            // the same character.
            json.replace('\u{FFFE}', "\\ufffe").replace('\u{FFFF}', "\\uffff")
        } else {
            json
        }
    }

    /// Reads a message body back.
    pub fn from_body(body: &str) -> Result<Self, QuarantineMessageError> {
        serde_json::from_str(body).map_err(QuarantineMessageError::new)
    }

    /// The quarantined event, parsed and validated, when there is one.
    pub fn outbox_event(&self) -> Option<Result<OutboxEvent, EnvelopeError>> {
        self.event.as_ref().map(|text| OutboxEvent::from_json(text.get()))
    }
}

fn envelope_text(event: &OutboxEvent) -> Box<RawValue> {
    // The envelope is always one JSON object.
    RawValue::from_string(event.to_json()).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// Keeps records that can never be delivered in an SQS queue, one message
/// per record, whose body is a [`QuarantineMessage`] as JSON, with the
/// attributes [`ATTRIBUTE_REASON`] and, for an event, [`ATTRIBUTE_EVENT_ID`]
/// and [`ATTRIBUTE_EVENT_TYPE`].
///
/// A message larger than [`with_max_message_bytes`](Self::with_max_message_bytes)
/// (default [`DEFAULT_MAX_MESSAGE_BYTES`], the SQS limit) is refused with a
/// [`QuarantineError`] and nothing is sent. It is never truncated: a cut
/// record could not be redriven. The record then counts as failed, so the
/// host's failure path keeps it (the batch is retried, then the on-failure
/// destination gets it). Note that an event too large for a 256 KB
/// `PutEvents` request is also too large for a 256 KiB message: quarantining
/// such events needs a queue (and this limit) of up to 1 MiB.
#[derive(Clone)]
pub struct SqsQuarantine {
    client: Client,
    queue_url: String,
    origin: Option<String>,
    max_message_bytes: usize,
    claim_check: Option<S3ClaimCheck>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SqsQuarantine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsQuarantine")
            .field("queue_url", &self.queue_url)
            .field("origin", &self.origin)
            .field("max_message_bytes", &self.max_message_bytes)
            .field(
                "claim_check",
                &self.claim_check.as_ref().map(S3ClaimCheck::bucket),
            )
            .finish_non_exhaustive()
    }
}

impl SqsQuarantine {
    /// A quarantine sending to the queue at `queue_url` with `client`.
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            origin: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            claim_check: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// Labels every message with where its records come from, e.g.
    /// `dynamodb:<table>`.
    #[must_use]
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Uses `bytes` as the message size limit instead of
    /// [`DEFAULT_MAX_MESSAGE_BYTES`].
    #[must_use]
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Stores a message too large for the queue in `store` and sends its
    /// claim-check instead, so that no record is refused for its size.
    #[must_use]
    pub fn with_claim_check(mut self, store: S3ClaimCheck) -> Self {
        self.claim_check = Some(store);
        self
    }

    /// Uses `clock` for `quarantined_at`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The queue URL.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// The message size limit in bytes.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }
}

/// Replaces what SQS does not accept in a message (anything but tab, line
/// feed, carriage return, U+0020..U+D7FF, U+E000..U+FFFD, U+10000..) with
/// U+FFFD.
fn sqs_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'.. => c,
            _ => char::REPLACEMENT_CHARACTER,
        })
        .collect()
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The message attributes of `record`, as (name, value) pairs.
fn attributes(record: &QuarantinedRecord) -> Vec<(&'static str, String)> {
    let mut attributes = vec![(
        ATTRIBUTE_REASON,
        sqs_text(cut(&record.reason, MAX_REASON_ATTRIBUTE_BYTES)),
    )];
    if let Some(event) = &record.event {
        attributes.push((ATTRIBUTE_EVENT_ID, event.id().to_string()));
        attributes.push((ATTRIBUTE_EVENT_TYPE, sqs_text(event.event_type())));
    }
    // SQS refuses empty attribute values.
    attributes.retain(|(_, value)| !value.is_empty());
    attributes
}

/// The data type of every attribute.
const STRING_TYPE: &str = "String";

/// The size SQS counts for a message: the body, plus each attribute's name,
/// data type and value.
fn message_size(body: &str, attributes: &[(&str, String)]) -> usize {
    body.len()
        + attributes
            .iter()
            .map(|(name, value)| name.len() + STRING_TYPE.len() + value.len())
            .sum::<usize>()
}

impl SqsQuarantine {
    /// The message body for `record`: the message itself, or, when it is
    /// too large for the queue, its claim-check after storing it.
    async fn body(
        &self,
        record: &QuarantinedRecord,
        attributes_size: usize,
    ) -> Result<String, QuarantineError> {
        let message = QuarantineMessage::new(record, self.origin.as_deref(), self.clock.now());
        let body = message.to_body();
        let size = body.len() + attributes_size;
        if size <= self.max_message_bytes {
            return Ok(body);
        }
        let Some(store) = &self.claim_check else {
            tracing::warn!(
                position = %record.position,
                size,
                limit = self.max_message_bytes,
                "quarantine message too large and no claim-check bucket; not sent"
            );
            return Err(QuarantineError {
                message: format!(
                    "quarantine message for record {} is {size} bytes; the queue takes at most {} bytes. \
                     Set a claim-check bucket (OUTBOX_CLAIM_CHECK_BUCKET) to store large records in S3, \
                     or raise the limit (OUTBOX_QUARANTINE_MAX_MESSAGE_BYTES) with the queue's. \
                     The record is not truncated: it fails and stays with the host's failure path",
                    record.position, self.max_message_bytes
                ),
            });
        };
        // Boxed: the S3 call's future is deep, and it is rarely taken.
        let check = Box::pin(store.store(body, message.quarantined_at))
            .await
            .map_err(|error| QuarantineError {
                message: outbox_core::error_chain(&error),
            })?;
        tracing::info!(position = %record.position, size, object = %check.uri(), "quarantine message stored by claim-check");
        Ok(message.claimed(check).to_body())
    }
}

impl Quarantine for SqsQuarantine {
    async fn quarantine(&self, record: &QuarantinedRecord) -> Result<(), QuarantineError> {
        let attributes = attributes(record);
        let body = self.body(record, message_size("", &attributes)).await?;
        let mut values = HashMap::with_capacity(attributes.len());
        for (name, value) in attributes {
            let value = MessageAttributeValue::builder()
                .data_type(STRING_TYPE)
                .string_value(value)
                .build()
                .map_err(|e| QuarantineError {
                    message: format!("message attribute {name}: {}", DisplayErrorContext(&e)),
                })?;
            values.insert(name.to_owned(), value);
        }
        let sent = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .set_message_attributes(Some(values))
            .send()
            .await;
        match sent {
            Ok(output) => {
                tracing::debug!(
                    position = %record.position,
                    message_id = output.message_id().unwrap_or_default(),
                    "quarantine message sent"
                );
                Ok(())
            }
            Err(err) => {
                let code = err.code().unwrap_or("Unknown").to_owned();
                let chain = DisplayErrorContext(&err).to_string();
                tracing::warn!(position = %record.position, code = %code, error = %chain, "SQS SendMessage failed");
                Err(QuarantineError {
                    message: format!("SQS SendMessage failed ({code}): {chain}"),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use outbox_core::FixedClock;
    use serde_json::Value;

    fn event() -> OutboxEvent {
        OutboxEvent::builder("com.example.orders", "OrderPlaced")
            .aggregate("Order", "o-42")
            .sequence(2)
            .payload(&serde_json::json!({ "total": 1999, "items": [1, 2.5, "x"] }))
            .metadata("tenant", "acme")
            .build(&FixedClock::new(
                Utc.with_ymd_and_hms(2025, 5, 6, 7, 8, 9).unwrap(),
            ))
            .unwrap()
    }

    #[test]
    fn an_event_nested_deeper_than_a_value_tree_reads_back_whole() {
        let deep = format!("{}1{}", "[".repeat(500), "]".repeat(500));
        let event = OutboxEvent::builder("com.example.orders", "OrderPlaced")
            .aggregate("Order", "o-42")
            .sequence(2)
            .payload_json(deep.clone())
            .build(&FixedClock::new(
                Utc.with_ymd_and_hms(2025, 5, 6, 7, 8, 9).unwrap(),
            ))
            .unwrap();
        let record = QuarantinedRecord {
            position: "7".into(),
            reason: "refused".into(),
            event: Some(event.clone()),
            raw: None,
        };
        let body = QuarantineMessage::new(&record, None, at()).to_body();
        let back = QuarantineMessage::from_body(&body).unwrap();
        let read = back.outbox_event().unwrap().unwrap();
        assert_eq!(read.payload().as_str(), deep);
        assert_eq!(read.to_json(), event.to_json());
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 5, 6, 7, 9, 0).unwrap() + chrono::Duration::milliseconds(250)
    }

    #[test]
    fn an_event_message_round_trips_with_the_envelope_as_an_object() {
        let event = event();
        let record = QuarantinedRecord {
            position: "4900000000000000000001".into(),
            reason: "refused by the bus: MalformedDetail: bad".into(),
            event: Some(event.clone()),
            raw: None,
        };
        let message = QuarantineMessage::new(&record, Some("dynamodb:orders"), at());
        let body = message.to_body();
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["quarantined_at"], "2025-05-06T07:09:00.250Z");
        assert_eq!(json["origin"], "dynamodb:orders");
        assert_eq!(json["event"]["event_type"], "OrderPlaced");
        assert!(json["event"].is_object());
        assert_eq!(json["raw"], Value::Null);

        let back = QuarantineMessage::from_body(&body).unwrap();
        assert_eq!(back, message);
        assert_eq!(back.outbox_event().unwrap().unwrap(), event);
    }

    #[test]
    fn a_poison_message_keeps_the_raw_record_even_with_characters_sqs_refuses() {
        let raw = "{\"odd\":\"\u{FFFE}\u{FFFF}\u{1}\"}";
        let record = QuarantinedRecord {
            position: "7".into(),
            reason: "poison record: missing field `source`".into(),
            event: None,
            raw: Some(raw.into()),
        };
        let message = QuarantineMessage::new(&record, None, at());
        let body = message.to_body();
        assert!(!body.contains(['\u{FFFE}', '\u{FFFF}', '\u{1}']), "{body}");
        assert_eq!(sqs_text(&body), body, "every character is one SQS accepts");
        let back = QuarantineMessage::from_body(&body).unwrap();
        assert_eq!(back.raw.as_deref(), Some(raw));
        assert_eq!(back.origin, None);
        assert!(back.outbox_event().is_none());
    }

    #[test]
    fn a_body_that_is_not_a_message_is_an_error_with_its_place() {
        let err = QuarantineMessage::from_body("{\"reason\": 1}").unwrap_err();
        assert_eq!(err.line(), 1);
        assert!(err.to_string().starts_with("not a quarantine message body"));
        assert!(std::error::Error::source(&err).is_some());
        assert!(QuarantineMessage::from_body("not json").is_err());
    }

    #[test]
    fn attributes_name_the_reason_and_the_event() {
        let event = event();
        let record = QuarantinedRecord {
            position: "1".into(),
            reason: format!("refused: {}\u{0}", "é".repeat(200)),
            event: Some(event.clone()),
            raw: None,
        };
        let attrs = attributes(&record);
        let get = |n: &str| attrs.iter().find(|(name, _)| *name == n).map(|(_, v)| v.clone());
        let reason = get(ATTRIBUTE_REASON).unwrap();
        assert!(reason.len() <= MAX_REASON_ATTRIBUTE_BYTES && reason.starts_with("refused: é"));
        assert_eq!(get(ATTRIBUTE_EVENT_ID), Some(event.id().to_string()));
        assert_eq!(get(ATTRIBUTE_EVENT_TYPE), Some("OrderPlaced".into()));

        let poison = QuarantinedRecord {
            position: "2".into(),
            reason: "bad\u{0}".into(),
            event: None,
            raw: Some("{}".into()),
        };
        assert_eq!(
            attributes(&poison),
            vec![(ATTRIBUTE_REASON, "bad\u{FFFD}".to_owned())]
        );
    }

    #[test]
    fn message_size_counts_body_and_attribute_names_types_and_values() {
        let attrs = vec![("reason", "abc".to_owned()), ("event_id", "x".to_owned())];
        assert_eq!(message_size("{}", &attrs), 2 + (6 + 6 + 3) + (8 + 6 + 1));
    }

    #[test]
    fn cut_respects_character_boundaries() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("abc", 10), "abc");
    }

    #[test]
    fn default_limit_is_the_documented_sqs_limit() {
        assert_eq!(DEFAULT_MAX_MESSAGE_BYTES, 262_144);
    }
}
