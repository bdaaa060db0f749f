//! Events published by claim-check: the delivered event carries the address
//! of the whole event in S3 (see [`OutboxEvent::claim_check`]).

use aws_sdk_s3::error::DisplayErrorContext;
use outbox_core::{ClaimCheck, OutboxEvent};

/// A claim-checked event whose whole text could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("event {event_id} is stored at {uri} and could not be read back: {reason}")]
pub struct ClaimCheckError {
    event_id: uuid::Uuid,
    uri: String,
    reason: String,
}

/// The whole event: `event` itself, or, when it was published by
/// claim-check, the event stored at its address, read with `s3` (which needs
/// `s3:GetObject` on the claim-check bucket's objects). The stored event must
/// be the same event (same id) in full.
pub async fn resolve_claim_check(
    event: OutboxEvent,
    s3: &aws_sdk_s3::Client,
) -> Result<OutboxEvent, ClaimCheckError> {
    let Some(check) = event.claim_check() else {
        return Ok(event);
    };
    let fail = |reason: String| ClaimCheckError {
        event_id: event.id(),
        uri: check.uri(),
        reason,
    };
    let text = read(s3, &check).await.map_err(fail)?;
    let whole = OutboxEvent::from_json(&text).map_err(|e| fail(format!("not an outbox event: {e}")))?;
    if whole.id() != event.id() {
        return Err(fail(format!("the object holds event {}", whole.id())));
    }
    Ok(whole)
}

async fn read(s3: &aws_sdk_s3::Client, check: &ClaimCheck) -> Result<String, String> {
    let object = s3
        .get_object()
        .bucket(&check.bucket)
        .key(&check.key)
        .send()
        .await
        .map_err(|e| DisplayErrorContext(&e).to_string())?;
    let bytes = object
        .body
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .into_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
}
