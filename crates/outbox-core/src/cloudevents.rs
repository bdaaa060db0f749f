//! The CloudEvents 1.0 structured-mode JSON mapping of the envelope.
//!
//! | envelope | CloudEvents |
//! |---|---|
//! | `id` | `id` |
//! | `source` | `source` |
//! | `event_type` | `type` |
//! | `aggregate_type`, `aggregate_id` | `subject` = `aggregate_type/aggregate_id` |
//! | `sequence` | extension `sequence` (a decimal string, per the sequence extension) |
//! | `occurred_at` | `time` |
//! | `payload` | `data`, with `datacontenttype` `application/json` |
//! | `trace_parent` | extension `traceparent` (distributed tracing extension) |
//! | `metadata` | one extension per entry |

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::envelope::{RESERVED_ATTRIBUTES, format_time, parse_time, serialized_len, validate_metadata_key};
use crate::{EnvelopeError, OutboxEvent, OutboxEventParts, Payload, TraceParent};

const SPEC_VERSION: &str = "1.0";
const JSON_CONTENT_TYPE: &str = "application/json";

impl OutboxEvent {
    /// The event as a CloudEvents 1.0 structured-mode JSON object. Fails
    /// only for a payload nested deeper than a `serde_json::Value` can be
    /// parsed (128 levels).
    pub fn to_cloudevent(&self) -> Result<Value, EnvelopeError> {
        let mut ce = Map::new();
        ce.insert("specversion".into(), SPEC_VERSION.into());
        ce.insert("id".into(), self.id().to_string().into());
        ce.insert("source".into(), self.source().into());
        ce.insert("type".into(), self.event_type().into());
        ce.insert(
            "subject".into(),
            format!("{}/{}", self.aggregate_type(), self.aggregate_id()).into(),
        );
        ce.insert("time".into(), format_time(&self.occurred_at()).into());
        ce.insert("datacontenttype".into(), JSON_CONTENT_TYPE.into());
        ce.insert("sequence".into(), self.sequence().to_string().into());
        if let Some(tp) = self.trace_parent() {
            ce.insert("traceparent".into(), tp.as_str().into());
        }
        for (k, v) in self.metadata() {
            ce.insert(k.clone(), v.clone().into());
        }
        let data = self.payload().to_value().map_err(|e| EnvelopeError::Invalid {
            field: "payload".into(),
            reason: format!("cannot be a JSON value tree: {e}"),
        })?;
        ce.insert("data".into(), data);
        Ok(Value::Object(ce))
    }

    /// The event as CloudEvents 1.0 structured-mode JSON text: the same
    /// attributes as [`to_cloudevent`](Self::to_cloudevent), written
    /// straight from the envelope. The payload's text is copied as it is,
    /// so this cannot fail, whatever the payload's depth (a JSON value tree
    /// stops at 128 levels), and it is what a bus carries when it carries
    /// CloudEvents.
    pub fn to_cloudevent_json(&self) -> String {
        // Serialising cannot fail: every key is a string and the payload is
        // already validated JSON text.
        serde_json::to_string(&Structured::of(self)).unwrap_or_default()
    }

    /// The length of [`to_cloudevent_json`](Self::to_cloudevent_json)'s text
    /// in bytes, counted by serde_json without keeping the text (what a
    /// size limit on the bus needs to know).
    pub fn cloudevent_json_len(&self) -> usize {
        serialized_len(&Structured::of(self))
    }

    /// Parses a CloudEvents 1.0 structured-mode JSON object produced by
    /// [`to_cloudevent`](Self::to_cloudevent) (or by anyone following the same
    /// mapping). Every other extension attribute must be a string and becomes
    /// a metadata entry.
    pub fn from_cloudevent(value: &Value) -> Result<Self, EnvelopeError> {
        let Value::Object(ce) = value else {
            return Err(invalid("cloudevent", "must be a JSON object"));
        };
        let text = |name: &'static str| -> Result<&str, EnvelopeError> {
            match ce.get(name) {
                None => Err(EnvelopeError::Missing { field: name }),
                Some(Value::String(s)) => Ok(s.as_str()),
                Some(_) => Err(invalid(name, "must be a string")),
            }
        };
        let spec = text("specversion")?;
        if spec != SPEC_VERSION {
            return Err(invalid(
                "specversion",
                &format!("only {SPEC_VERSION} is supported, got {spec:?}"),
            ));
        }
        if let Some(ct) = ce.get("datacontenttype")
            && ct.as_str() != Some(JSON_CONTENT_TYPE)
        {
            return Err(invalid(
                "datacontenttype",
                &format!("must be {JSON_CONTENT_TYPE:?}, got {ct}"),
            ));
        }
        if ce.contains_key("data_base64") {
            return Err(invalid(
                "data_base64",
                "binary data is not an outbox payload; use JSON `data`",
            ));
        }
        let id = Uuid::parse_str(text("id")?).map_err(|e| invalid("id", &format!("not a UUID: {e}")))?;
        let subject = text("subject")?;
        let Some((aggregate_type, aggregate_id)) = subject.split_once('/') else {
            return Err(invalid(
                "subject",
                &format!("must be `aggregate_type/aggregate_id`, got {subject:?}"),
            ));
        };
        let sequence = text("sequence")?
            .parse::<u64>()
            .map_err(|e| invalid("sequence", &format!("not an unsigned integer: {e}")))?;
        let occurred_at = parse_time("time", text("time")?)?;
        let trace_parent = match ce.get("traceparent") {
            None => None,
            Some(_) => Some(text("traceparent")?.to_owned()),
        };
        let mut metadata = BTreeMap::new();
        for (key, value) in ce {
            if RESERVED_ATTRIBUTES.contains(&key.as_str()) {
                continue;
            }
            validate_metadata_key(key)?;
            let Value::String(v) = value else {
                return Err(invalid(
                    key,
                    "extension attributes must be strings to map to metadata",
                ));
            };
            metadata.insert(key.clone(), v.clone());
        }
        OutboxEvent::try_from(OutboxEventParts {
            id,
            source: text("source")?.to_owned(),
            event_type: text("type")?.to_owned(),
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            sequence,
            occurred_at,
            payload: Payload::from_value(ce.get("data").ok_or(EnvelopeError::Missing { field: "data" })?)?,
            trace_parent,
            metadata,
        })
    }
}

/// A CloudEvents 1.0 structured-mode event, borrowed from an envelope.
#[derive(Serialize)]
struct Structured<'a> {
    specversion: &'static str,
    id: Uuid,
    source: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    subject: Subject<'a>,
    time: String,
    datacontenttype: &'static str,
    #[serde(serialize_with = "decimal_string")]
    sequence: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a TraceParent>,
    #[serde(flatten)]
    metadata: &'a BTreeMap<String, String>,
    data: &'a Payload,
}

impl<'a> Structured<'a> {
    fn of(event: &'a OutboxEvent) -> Self {
        Self {
            specversion: SPEC_VERSION,
            id: event.id(),
            source: event.source(),
            event_type: event.event_type(),
            subject: Subject(event.aggregate_type(), event.aggregate_id()),
            time: format_time(&event.occurred_at()),
            datacontenttype: JSON_CONTENT_TYPE,
            sequence: event.sequence(),
            traceparent: event.trace_parent(),
            metadata: event.metadata(),
            data: event.payload(),
        }
    }
}

/// The `subject` attribute: `aggregate_type/aggregate_id`, written without
/// an intermediate string.
struct Subject<'a>(&'a str, &'a str);

impl Serialize for Subject<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}/{}", self.0, self.1))
    }
}

/// The sequence extension's value: the number as a decimal string.
fn decimal_string<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn invalid(field: &str, reason: &str) -> EnvelopeError {
    EnvelopeError::Invalid {
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FixedClock;
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    fn event() -> OutboxEvent {
        let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap());
        OutboxEvent::builder("com.example.orders", "OrderPlaced")
            .aggregate("Order", "o-1/with-slash")
            .sequence(7)
            .payload(&json!({"total": 5}))
            .trace_parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .metadata("tenant", "acme")
            .build(&clock)
            .unwrap()
    }

    #[test]
    fn maps_every_field_to_its_cloudevents_attribute() {
        let e = event();
        let ce = e.to_cloudevent().unwrap();
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["id"], e.id().to_string());
        assert_eq!(ce["source"], "com.example.orders");
        assert_eq!(ce["type"], "OrderPlaced");
        assert_eq!(ce["subject"], "Order/o-1/with-slash");
        assert_eq!(ce["time"], "2026-11-23T10:00:00.000Z");
        assert_eq!(ce["datacontenttype"], "application/json");
        assert_eq!(ce["sequence"], "7");
        assert_eq!(
            ce["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(ce["tenant"], "acme");
        assert_eq!(ce["data"], json!({"total": 5}));
    }

    #[test]
    fn round_trips_with_a_slash_in_the_aggregate_id() {
        let e = event();
        assert_eq!(
            OutboxEvent::from_cloudevent(&e.to_cloudevent().unwrap()).unwrap(),
            e
        );
    }

    #[test]
    fn the_json_text_is_the_same_cloudevent_and_its_length_is_counted() {
        let mut without_trace = event().into_parts();
        without_trace.trace_parent = None;
        without_trace.metadata.clear();
        for e in [event(), OutboxEvent::try_from(without_trace).unwrap()] {
            let text = e.to_cloudevent_json();
            let parsed: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(parsed, e.to_cloudevent().unwrap());
            assert_eq!(e.cloudevent_json_len(), text.len());
            assert_eq!(OutboxEvent::from_cloudevent(&parsed).unwrap(), e);
        }
    }

    #[test]
    fn the_json_text_keeps_a_payload_deeper_than_a_value_tree_can_hold() {
        let deep = format!("{}1{}", "[".repeat(500), "]".repeat(500));
        let e = OutboxEvent::builder("s", "T")
            .aggregate("A", "1")
            .sequence(1)
            .payload_json(deep.clone())
            .build(&FixedClock::new(
                Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            ))
            .unwrap();
        assert!(e.to_cloudevent().is_err());
        let text = e.to_cloudevent_json();
        assert!(text.ends_with(&format!(r#""data":{deep}}}"#)), "{text}");
        assert_eq!(e.cloudevent_json_len(), text.len());
    }

    #[test]
    fn refuses_what_does_not_map_back() {
        let good = event().to_cloudevent().unwrap();
        type Mutation = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("specversion", Box::new(|v| v["specversion"] = "0.3".into())),
            (
                "datacontenttype",
                Box::new(|v| v["datacontenttype"] = "text/plain".into()),
            ),
            ("data_base64", Box::new(|v| v["data_base64"] = "AAAA".into())),
            ("id", Box::new(|v| v["id"] = "not-a-uuid".into())),
            ("subject", Box::new(|v| v["subject"] = "no-slash".into())),
            ("sequence", Box::new(|v| v["sequence"] = "-4".into())),
            ("sequence", Box::new(|v| v["sequence"] = json!(4))),
            ("time", Box::new(|v| v["time"] = "noon".into())),
            ("traceparent", Box::new(|v| v["traceparent"] = "00-xyz".into())),
            ("tenant", Box::new(|v| v["tenant"] = json!(1))),
            ("Bad_Ext", Box::new(|v| v["Bad_Ext"] = "x".into())),
            (
                "data",
                Box::new(|v| drop(v.as_object_mut().map(|o| o.remove("data")))),
            ),
            (
                "type",
                Box::new(|v| drop(v.as_object_mut().map(|o| o.remove("type")))),
            ),
        ];
        for (field, mutate) in cases {
            let mut v = good.clone();
            mutate(&mut v);
            let err = OutboxEvent::from_cloudevent(&v).unwrap_err();
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
        assert!(OutboxEvent::from_cloudevent(&json!([1, 2])).is_err());
    }
}
