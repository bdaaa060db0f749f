//! Reading the outbox envelope back from an EventBridge event.

use outbox_core::{EnvelopeError, OutboxEvent};
use serde_json::Value;

/// The outbox event in an EventBridge event (the JSON a rule target gets):
/// its `detail` is the envelope the relay published
/// ([`OutboxEvent::to_json`]). Validates like [`OutboxEvent::from_json`]; a
/// missing `detail` is [`EnvelopeError::Missing`].
pub fn outbox_event_from_eventbridge(event: &Value) -> Result<OutboxEvent, EnvelopeError> {
    let detail = event
        .get("detail")
        .ok_or(EnvelopeError::Missing { field: "detail" })?;
    outbox_event_from_detail(detail)
}

/// The outbox event in an EventBridge event's `detail` (e.g.
/// `aws_lambda_events`' `EventBridgeEvent::detail`). A `detail` that is a
/// JSON string holding the envelope's text is read too.
pub fn outbox_event_from_detail(detail: &Value) -> Result<OutboxEvent, EnvelopeError> {
    match detail {
        Value::String(text) => OutboxEvent::from_json(text),
        other => OutboxEvent::from_json(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox_core::SystemClock;
    use serde_json::json;

    fn event() -> OutboxEvent {
        OutboxEvent::builder("com.example.orders", "OrderPlaced")
            .aggregate("Order", "o-1")
            .sequence(3)
            .payload(&json!({ "total": 1999 }))
            .metadata("tenant", "acme")
            .build(&SystemClock)
            .unwrap()
    }

    /// The shape EventBridge delivers to a rule target.
    fn delivered(detail: Value) -> Value {
        json!({
            "version": "0",
            "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": "OrderPlaced",
            "source": "com.example.orders",
            "account": "123456789012",
            "time": "2026-03-01T12:00:00Z",
            "region": "eu-west-1",
            "resources": [],
            "detail": detail,
        })
    }

    #[test]
    fn the_detail_is_the_envelope() {
        let e = event();
        let detail: Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(outbox_event_from_eventbridge(&delivered(detail)).unwrap(), e);
        assert_eq!(
            outbox_event_from_eventbridge(&delivered(Value::String(e.to_json()))).unwrap(),
            e
        );
    }

    #[test]
    fn a_missing_or_foreign_detail_is_an_error_naming_it() {
        let mut no_detail = delivered(Value::Null);
        no_detail.as_object_mut().unwrap().remove("detail");
        assert!(matches!(
            outbox_event_from_eventbridge(&no_detail),
            Err(EnvelopeError::Missing { field: "detail" })
        ));
        assert!(outbox_event_from_eventbridge(&delivered(json!({ "instance-id": "i-1" }))).is_err());
    }
}
