//! Typed events as EventBridge delivers them: the envelope, and its payload
//! decoded into the service's event type.

use outbox_core::{EnvelopeError, Events, OutboxEvent, TypedEventError};
use serde_json::Value;

use crate::outbox_event_from_eventbridge;

/// A delivered event: its envelope (id for de-duplication, aggregate,
/// sequence, time) and its payload as the typed value.
#[derive(Debug, Clone, PartialEq)]
pub struct TypedEvent<E> {
    /// The envelope.
    pub envelope: OutboxEvent,
    /// The payload, decoded into the variant the event type names.
    pub event: E,
}

/// Why a delivered event did not decode into a typed value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TypedDeliveryError {
    /// The delivered JSON is not an outbox event.
    #[error("not an outbox event")]
    Envelope(#[from] EnvelopeError),
    /// The event's type is unknown to `E`, or its payload does not fit.
    #[error(transparent)]
    Type(#[from] TypedEventError),
    /// The event was published by claim-check: its payload is the address
    /// of the whole event, which [`resolve_claim_check`](crate::resolve_claim_check)
    /// reads; decode what it returns with [`OutboxEvent::decode`].
    #[error("event {event_id} was published by claim-check; resolve it first (resolve_claim_check)")]
    ClaimCheck {
        /// The event id.
        event_id: String,
    },
}

/// The typed event in what an EventBridge rule target receives (either bus
/// format), so a consumer matches on its own enum instead of type strings.
pub fn typed_event_from_eventbridge<E: Events>(
    delivered: &Value,
) -> Result<TypedEvent<E>, TypedDeliveryError> {
    let envelope = outbox_event_from_eventbridge(delivered)?;
    typed_event(envelope)
}

/// The typed value of an envelope already read (e.g. the one
/// [`resolve_claim_check`](crate::resolve_claim_check) returns).
pub fn typed_event<E: Events>(envelope: OutboxEvent) -> Result<TypedEvent<E>, TypedDeliveryError> {
    if envelope.claim_check().is_some() {
        return Err(TypedDeliveryError::ClaimCheck {
            event_id: envelope.id().to_string(),
        });
    }
    let event = envelope.decode::<E>()?;
    Ok(TypedEvent { envelope, event })
}

#[cfg(test)]
mod tests {
    use outbox_core::{ClaimCheck, Event, SystemClock};
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
    struct OrderPlaced {
        total: u64,
    }

    fn delivered(event: &OutboxEvent) -> Value {
        json!({ "detail-type": event.event_type(), "source": event.source(), "detail": serde_json::from_str::<Value>(&event.to_json()).unwrap() })
    }

    fn placed(payload: &str) -> OutboxEvent {
        OutboxEvent::builder("com.example.orders", "OrderPlaced")
            .aggregate("Order", "o-1")
            .sequence(1)
            .payload_json(payload)
            .build(&SystemClock)
            .unwrap()
    }

    #[test]
    fn a_delivered_event_comes_back_typed_with_its_envelope() {
        let event = placed(r#"{"total":5}"#);
        let typed = typed_event_from_eventbridge::<OrderPlaced>(&delivered(&event)).unwrap();
        assert_eq!(typed.event, OrderPlaced { total: 5 });
        assert_eq!(typed.envelope, event);
    }

    #[test]
    fn a_payload_that_does_not_fit_names_the_field() {
        let err = typed_event_from_eventbridge::<OrderPlaced>(&delivered(&placed("{}"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "payload of OrderPlaced does not decode: missing field `total` at line 1 column 2"
        );
    }

    #[test]
    fn a_claim_checked_event_asks_to_be_resolved_first() {
        let check = ClaimCheck::new("b", "k", 300_000);
        let claimed = placed(r#"{"total":5}"#).claimed(&check).unwrap();
        let err = typed_event_from_eventbridge::<OrderPlaced>(&delivered(&claimed)).unwrap_err();
        assert!(matches!(err, TypedDeliveryError::ClaimCheck { .. }), "{err}");
    }
}
