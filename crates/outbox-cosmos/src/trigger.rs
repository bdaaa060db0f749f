//! The Azure Functions Cosmos DB trigger, seen from a custom handler: the
//! invocation request the Functions host sends, the relay run over its
//! documents, and the response that tells the host whether to retry.
//!
//! A custom handler receives, for a non-HTTP trigger, a JSON request
//! `{"Data": {"<binding name>": <documents>}, "Metadata": {...}}`, where the
//! documents are a JSON array, or a string holding one. It answers
//! `{"Outputs": {}, "Logs": [...], "ReturnValue": null}`; a status other
//! than 2xx fails the invocation, and the function's retry policy (with the
//! Cosmos DB trigger, the lease checkpoint does not move until the retries
//! end) delivers the same documents again.

use outbox_core::{BatchOutcome, EventSink, Quarantine, Relay};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::CosmosChangeDecoder;

/// An invocation request that cannot be relayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TriggerError {
    /// The body is not a JSON object with a `Data` object.
    #[error("the invocation is not a custom handler request: {reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: String,
    },
    /// `Data` has no entry for the trigger binding.
    #[error(
        "the invocation has no `Data.{binding}`; name the Cosmos DB trigger binding `{binding}` in function.json"
    )]
    MissingBinding {
        /// The binding name looked for.
        binding: String,
    },
    /// The binding's value is not an array of documents.
    #[error("`Data.{binding}` is not an array of documents: {reason}")]
    NotDocuments {
        /// The binding name.
        binding: String,
        /// What was found.
        reason: String,
    },
}

/// The documents of a Cosmos DB trigger invocation, in delivery order.
pub fn trigger_documents(body: &[u8], binding: &str) -> Result<Vec<Value>, TriggerError> {
    let request: Value = serde_json::from_slice(body).map_err(|e| TriggerError::InvalidRequest {
        reason: format!("not JSON: {e}"),
    })?;
    let data =
        request
            .get("Data")
            .and_then(Value::as_object)
            .ok_or_else(|| TriggerError::InvalidRequest {
                reason: "no `Data` object".into(),
            })?;
    let value = data.get(binding).ok_or_else(|| TriggerError::MissingBinding {
        binding: binding.to_owned(),
    })?;
    let not_documents = |reason: String| TriggerError::NotDocuments {
        binding: binding.to_owned(),
        reason,
    };
    let documents = match value {
        Value::Array(documents) => documents.clone(),
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(documents)) => documents,
            Ok(other) => return Err(not_documents(format!("a string holding {}", kind(&other)))),
            Err(e) => return Err(not_documents(format!("a string that is not JSON ({e})"))),
        },
        other => return Err(not_documents(kind(other).to_owned())),
    };
    Ok(documents)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The answer to the Functions host: `{"Outputs": {}, "Logs": [...], "ReturnValue": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvocationResponse {
    /// The HTTP status: 200 when every document was delivered or
    /// quarantined, 500 otherwise (the host retries the invocation).
    pub status: u16,
    /// Lines the host adds to the invocation's log.
    pub logs: Vec<String>,
    /// A summary of what was done.
    pub return_value: Value,
}

impl InvocationResponse {
    /// The response for a relayed batch.
    pub fn for_outcome(outcome: &BatchOutcome) -> Self {
        let summary = json!({
            "records": outcome.records,
            "published": outcome.published,
            "skipped": outcome.skipped,
            "quarantined": outcome.quarantined,
            "failed": outcome.failed,
            "first_failure": outcome.first_failure,
        });
        match &outcome.first_failure {
            None => Self {
                status: 200,
                logs: vec![format!(
                    "relayed {} documents: {} published, {} skipped, {} quarantined",
                    outcome.records, outcome.published, outcome.skipped, outcome.quarantined
                )],
                return_value: summary,
            },
            Some(position) => Self {
                status: 500,
                logs: vec![format!(
                    "{} of {} documents neither delivered nor quarantined (first: {position}); failing the invocation so the host retries it",
                    outcome.failed, outcome.records
                )],
                return_value: summary,
            },
        }
    }

    /// The response for an invocation that cannot be relayed (status 400:
    /// the invocation fails and is retried, so nothing is skipped while the
    /// configuration is fixed).
    pub fn for_error(error: &TriggerError) -> Self {
        Self {
            status: 400,
            logs: vec![error.to_string()],
            return_value: Value::Null,
        }
    }

    /// Whether the invocation succeeded.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        json!({ "Outputs": {}, "Logs": self.logs, "ReturnValue": self.return_value }).to_string()
    }
}

/// What one trigger invocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TriggerOutcome {
    /// The relay's outcome (empty when the request could not be read).
    pub outcome: BatchOutcome,
    /// The answer to send to the host.
    pub response: InvocationResponse,
}

/// Relays the documents of one Cosmos DB trigger invocation (`body`, with
/// the documents under `Data.<binding>`) and builds the host's answer:
/// success only when every document was delivered or quarantined.
pub async fn relay_trigger_invocation<S: EventSink, Q: Quarantine>(
    relay: &Relay<S, Q>,
    decoder: &CosmosChangeDecoder,
    body: &[u8],
    binding: &str,
    deadline: Option<Instant>,
) -> TriggerOutcome {
    let documents = match trigger_documents(body, binding) {
        Ok(documents) => documents,
        Err(error) => {
            tracing::error!(error = %error, "invocation cannot be relayed");
            return TriggerOutcome {
                outcome: BatchOutcome::default(),
                response: InvocationResponse::for_error(&error),
            };
        }
    };
    let records = decoder.decode_changes(&documents);
    let outcome = relay.relay(&records, deadline).await;
    let response = InvocationResponse::for_outcome(&outcome);
    if response.succeeded() {
        tracing::info!(
            records = outcome.records,
            published = outcome.published,
            "invocation relayed"
        );
    } else {
        tracing::warn!(failed = outcome.failed, first_failure = ?outcome.first_failure, "invocation failed; the host retries it");
    }
    TriggerOutcome { outcome, response }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CosmosOutboxSchema;
    use chrono::{TimeZone, Utc};
    use outbox_core::fakes::{Fault, FlakySink, RecordingQuarantine, RecordingSink};
    use outbox_core::{FailureClass, FixedClock, OutboxEvent, RelayConfig, RetryPolicy};
    use std::time::Duration;

    fn event(n: u64) -> OutboxEvent {
        let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap());
        OutboxEvent::builder("com.example.orders", "OrderPlaced")
            .aggregate("Order", "o-1")
            .id(uuid::Uuid::from_u128(u128::from(n)))
            .sequence(n)
            .payload(&json!({ "n": n }))
            .build(&clock)
            .unwrap()
    }

    fn config() -> RelayConfig {
        RelayConfig {
            retry: RetryPolicy {
                max_retries: 2,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(2),
            },
            ..RelayConfig::default()
        }
    }

    fn body(documents: &[Value], as_string: bool) -> Vec<u8> {
        let value = if as_string {
            Value::String(Value::Array(documents.to_vec()).to_string())
        } else {
            Value::Array(documents.to_vec())
        };
        json!({ "Data": { "documents": value }, "Metadata": { "sys": { "MethodName": "relay" } } })
            .to_string()
            .into_bytes()
    }

    fn documents() -> Vec<Value> {
        let schema = CosmosOutboxSchema::new("pk");
        let mut poison = schema.to_document(&event(3), "o-1");
        poison["payload"] = json!("{broken");
        vec![
            json!({"id": "o-1", "pk": "o-1", "status": "PLACED"}),
            schema.to_document(&event(1), "o-1"),
            schema.to_document(&event(2), "o-1"),
            poison,
        ]
    }

    #[test]
    fn documents_come_as_an_array_or_a_string_holding_one() {
        for as_string in [false, true] {
            assert_eq!(
                trigger_documents(&body(&documents(), as_string), "documents").unwrap(),
                documents()
            );
        }
        assert!(matches!(
            trigger_documents(&body(&documents(), false), "input"),
            Err(TriggerError::MissingBinding { binding }) if binding == "input"
        ));
        assert!(matches!(
            trigger_documents(b"nope", "documents"),
            Err(TriggerError::InvalidRequest { .. })
        ));
        assert!(matches!(
            trigger_documents(br#"{"Data": {"documents": "{}"}}"#, "documents"),
            Err(TriggerError::NotDocuments { reason, .. }) if reason.contains("an object")
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fully_handled_batch_answers_200_with_the_host_shape() {
        let relay = Relay::new(RecordingSink::default(), RecordingQuarantine::default(), config());
        let decoder = CosmosChangeDecoder::new(CosmosOutboxSchema::new("pk"));
        let result =
            relay_trigger_invocation(&relay, &decoder, &body(&documents(), true), "documents", None).await;
        assert_eq!(result.response.status, 200);
        assert_eq!(
            (
                result.outcome.published,
                result.outcome.skipped,
                result.outcome.quarantined
            ),
            (2, 1, 1)
        );
        let ids: Vec<_> = relay.sink().published().iter().map(OutboxEvent::id).collect();
        assert_eq!(ids, vec![event(1).id(), event(2).id()]);
        let q = relay.quarantine().records();
        assert!(
            q[0].raw.as_deref().unwrap().contains("{broken"),
            "the whole document is quarantined"
        );
        let answer: Value = serde_json::from_str(&result.response.to_json()).unwrap();
        assert_eq!(answer["Outputs"], json!({}));
        assert_eq!(answer["ReturnValue"]["published"], 2);
        assert!(answer["Logs"][0].as_str().unwrap().contains("2 published"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_undelivered_event_fails_the_invocation_so_the_host_retries() {
        let stuck = event(2).id();
        let sink = FlakySink::new(move |e, _| {
            if e.id() == stuck {
                Fault::Entry(FailureClass::Transient, "ThrottlingException")
            } else {
                Fault::Accept
            }
        });
        let relay = Relay::new(sink, RecordingQuarantine::default(), config());
        let decoder = CosmosChangeDecoder::new(CosmosOutboxSchema::new("pk"));
        let result =
            relay_trigger_invocation(&relay, &decoder, &body(&documents(), false), "documents", None).await;
        assert_eq!(result.response.status, 500);
        assert!(!result.response.succeeded());
        assert_eq!(
            result.outcome.first_failure.as_deref(),
            Some(format!("#2 id={stuck}").as_str())
        );
        let bad = relay_trigger_invocation(&relay, &decoder, b"{}", "documents", None).await;
        assert_eq!(bad.response.status, 400);
    }
}
