//! Claim-checks: a record or an event too large to travel whole is stored
//! as an object, and what travels carries the object's address instead.

use serde::{Deserialize, Serialize};

use crate::{EnvelopeError, OutboxEvent, Payload};

/// The metadata key that marks an event whose payload is a [`ClaimCheck`]
/// (value [`CLAIM_CHECK_STORE`]) rather than the event's own payload.
pub const CLAIM_CHECK_METADATA_KEY: &str = "outboxclaimcheck";
/// The value of [`CLAIM_CHECK_METADATA_KEY`]: the object is in Amazon S3.
pub const CLAIM_CHECK_STORE: &str = "s3";

/// The address of a stored record or event: where to read it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClaimCheck {
    /// The S3 bucket.
    pub bucket: String,
    /// The object key.
    pub key: String,
    /// The object's size in bytes.
    pub bytes: usize,
}

impl ClaimCheck {
    /// The address of `bytes` bytes stored at `key` in `bucket`.
    pub fn new(bucket: impl Into<String>, key: impl Into<String>, bytes: usize) -> Self {
        Self {
            bucket: bucket.into(),
            key: key.into(),
            bytes,
        }
    }

    /// The object's `s3://bucket/key` address.
    pub fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

impl OutboxEvent {
    /// The claim-check this event carries instead of its payload, when it
    /// is one (published by claim-check: the whole event is the object).
    pub fn claim_check(&self) -> Option<ClaimCheck> {
        if self.metadata().get(CLAIM_CHECK_METADATA_KEY).map(String::as_str) != Some(CLAIM_CHECK_STORE) {
            return None;
        }
        serde_json::from_str(self.payload_json()).ok()
    }

    /// This event as it is published when the whole event is stored at
    /// `check`: the same envelope, with the claim-check as its payload and
    /// [`CLAIM_CHECK_METADATA_KEY`] set.
    pub fn claimed(&self, check: &ClaimCheck) -> Result<OutboxEvent, EnvelopeError> {
        let mut parts = self.clone().into_parts();
        let text = serde_json::to_string(check).map_err(EnvelopeError::Payload)?;
        parts.payload = Payload::from_json(text)?;
        parts
            .metadata
            .insert(CLAIM_CHECK_METADATA_KEY.to_owned(), CLAIM_CHECK_STORE.to_owned());
        OutboxEvent::try_from(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SystemClock;

    #[test]
    fn a_claimed_event_keeps_its_envelope_and_carries_the_address() {
        let event = OutboxEvent::builder("com.example", "Big")
            .aggregate("A", "1")
            .sequence(3)
            .payload(&serde_json::json!({ "blob": "x".repeat(1000) }))
            .metadata("tenant", "acme")
            .build(&SystemClock)
            .unwrap();
        assert_eq!(event.claim_check(), None);
        let check = ClaimCheck::new("bucket", "outbox/events/1.json", 1234);
        let claimed = event.claimed(&check).unwrap();
        assert_eq!(claimed.claim_check(), Some(check));
        assert_eq!((claimed.id(), claimed.sequence()), (event.id(), 3));
        assert_eq!(claimed.metadata().get("tenant").map(String::as_str), Some("acme"));
        assert!(claimed.json_len() < 500);
        // A payload that looks like a claim-check is not one without the mark.
        let lookalike = OutboxEvent::builder("com.example", "Big")
            .aggregate("A", "1")
            .sequence(1)
            .payload(&ClaimCheck::new("b", "k", 1))
            .build(&SystemClock)
            .unwrap();
        assert_eq!(lookalike.claim_check(), None);
    }
}
