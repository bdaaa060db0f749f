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

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::envelope::{RESERVED_ATTRIBUTES, format_time, parse_time, validate_metadata_key};
use crate::{EnvelopeError, OutboxEvent, OutboxEventParts, Payload};

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
