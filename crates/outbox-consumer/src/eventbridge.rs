//! Reading the outbox event back from an EventBridge event, in either bus
//! format: the outbox envelope or a CloudEvents 1.0 structured event.

use outbox_core::{EnvelopeError, OutboxEvent};
use serde_json::Value;

/// The outbox event in an EventBridge event (the JSON a rule target gets):
/// its `detail` is what the relay published, read by
/// [`outbox_event_from_detail`]. A missing `detail` is
/// [`EnvelopeError::Missing`].
pub fn outbox_event_from_eventbridge(event: &Value) -> Result<OutboxEvent, EnvelopeError> {
    let detail = event
        .get("detail")
        .ok_or(EnvelopeError::Missing { field: "detail" })?;
    outbox_event_from_detail(detail)
}

/// The outbox event in an EventBridge event's `detail` (e.g.
/// `aws_lambda_events`' `EventBridgeEvent::detail`), whichever bus format
/// the relay was set to: a `detail` with a `specversion` attribute is a
/// CloudEvents event ([`OutboxEvent::from_cloudevent`]), anything else must
/// be the envelope ([`OutboxEvent::from_json`]). Both are validated; the
/// error names the field at fault. A `detail` that is a JSON string holding
/// either one's text is read too.
pub fn outbox_event_from_detail(detail: &Value) -> Result<OutboxEvent, EnvelopeError> {
    match detail {
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(value) if is_cloudevent(&value) => OutboxEvent::from_cloudevent(&value),
            // Parsed from the text itself: an envelope's payload may be
            // nested deeper than a JSON value tree holds.
            _ => OutboxEvent::from_json(text),
        },
        other if is_cloudevent(other) => OutboxEvent::from_cloudevent(other),
        other => OutboxEvent::from_json(&other.to_string()),
    }
}

/// Whether `detail` is a CloudEvents event: an object with `specversion`
/// (which the envelope never has).
fn is_cloudevent(detail: &Value) -> bool {
    detail.get("specversion").is_some()
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
    fn an_envelope_detail_is_read_as_the_envelope() {
        let e = event();
        let detail: Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(outbox_event_from_eventbridge(&delivered(detail)).unwrap(), e);
        assert_eq!(
            outbox_event_from_eventbridge(&delivered(Value::String(e.to_json()))).unwrap(),
            e
        );
    }

    #[test]
    fn a_cloudevents_detail_is_read_as_a_cloudevent() {
        let e = event();
        let detail: Value = serde_json::from_str(&e.to_cloudevent_json()).unwrap();
        assert_eq!(detail["specversion"], "1.0");
        assert_eq!(outbox_event_from_eventbridge(&delivered(detail)).unwrap(), e);
        assert_eq!(
            outbox_event_from_eventbridge(&delivered(Value::String(e.to_cloudevent_json()))).unwrap(),
            e
        );
    }

    #[test]
    fn a_claim_checked_cloudevent_keeps_its_address() {
        let check = outbox_core::ClaimCheck::new("claims", "outbox/events/e.json", 300_000);
        let claimed = event().claimed(&check).unwrap();
        let detail: Value = serde_json::from_str(&claimed.to_cloudevent_json()).unwrap();
        let read = outbox_event_from_detail(&detail).unwrap();
        assert_eq!(read.claim_check(), Some(check));
        assert_eq!(read, claimed);
    }

    #[test]
    fn a_bad_cloudevent_is_an_error_naming_the_attribute() {
        let mut detail: Value = serde_json::from_str(&event().to_cloudevent_json()).unwrap();
        detail.as_object_mut().unwrap().remove("subject");
        assert!(matches!(
            outbox_event_from_detail(&detail),
            Err(EnvelopeError::Missing { field: "subject" })
        ));
        detail["subject"] = "Order/o-1".into();
        detail["specversion"] = "0.3".into();
        let err = outbox_event_from_detail(&detail).unwrap_err().to_string();
        assert!(err.contains("specversion") && err.contains("1.0"), "{err}");
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
