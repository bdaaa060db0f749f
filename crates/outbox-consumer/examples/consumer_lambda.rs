//! An idempotent consumer Lambda: the target of an EventBridge rule on the
//! outbox bus, that handles each outbox event at most once per event id.
//!
//! Environment:
//! - `IDEMPOTENCY_TABLE_NAME` (required): the idempotency table (partition key
//!   `pk` S, TTL on `ttl`; see the crate docs for SAM and CDK);
//! - `CONSUMER_SCOPE` (default `example-consumer`): this consumer's prefix in
//!   the table, so that several consumers can share it;
//! - `IDEMPOTENCY_IN_PROGRESS_SECONDS` (default 60): how long a claim holds, at
//!   least the function's timeout;
//! - `OUTBOX_DYNAMODB_ENDPOINT` (optional): a DynamoDB endpoint override, for
//!   DynamoDB Local.
//!
//! Build it with `cargo build -p outbox-consumer --example consumer_lambda`
//! (or `cargo lambda build --example consumer_lambda`). Each invocation answers
//! `{"event_id", "event_type", "duplicate", "result"}`; a delivery that arrives
//! while the same event is being handled fails with `Retryable.InProgress`, so
//! that EventBridge's retry comes back once the first one finished.

use std::time::Duration;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use outbox_consumer::{ConsumerError, IdempotencyStore, IdempotentConsumer, outbox_event_from_detail};
use outbox_core::OutboxEvent;
use serde_json::{Value, json};

/// The table, from the environment.
const ENV_TABLE: &str = "IDEMPOTENCY_TABLE_NAME";
/// The consumer's scope in the table.
const ENV_SCOPE: &str = "CONSUMER_SCOPE";
/// The claim's expiry in seconds.
const ENV_IN_PROGRESS_SECONDS: &str = "IDEMPOTENCY_IN_PROGRESS_SECONDS";
/// DynamoDB endpoint override (local emulators only).
const ENV_DYNAMODB_ENDPOINT: &str = "OUTBOX_DYNAMODB_ENDPOINT";

/// The business logic, run at most once per event id: here, a summary of the
/// event. Its result is stored and handed back to duplicates.
async fn handle_order_event(event: &OutboxEvent) -> Result<Value, std::convert::Infallible> {
    tracing::info!(
        event_id = %event.id(),
        event_type = event.event_type(),
        aggregate_id = event.aggregate_id(),
        sequence = event.sequence(),
        "handling event"
    );
    Ok(json!({
        "order": event.aggregate_id(),
        "version": event.sequence(),
        "handled": event.event_type(),
    }))
}

/// One invocation: parse the envelope from `detail`, process it once.
async fn handler(
    consumer: &IdempotentConsumer,
    event: LambdaEvent<EventBridgeEvent<Value>>,
) -> Result<Value, Diagnostic> {
    let outbox_event = outbox_event_from_detail(&event.payload.detail).map_err(|e| Diagnostic {
        error_type: "NonRetryable.NotAnOutboxEvent".into(),
        error_message: e.to_string(),
    })?;
    let processed = consumer
        .process(&outbox_event, || handle_order_event(&outbox_event))
        .await
        .map_err(|e| diagnostic(&e))?;
    Ok(json!({
        "event_id": outbox_event.id().to_string(),
        "event_type": outbox_event.event_type(),
        "duplicate": processed.is_duplicate(),
        "result": processed.value(),
    }))
}

/// `Retryable.<kind>` or `NonRetryable.<kind>`, with the whole chain of causes.
fn diagnostic(error: &ConsumerError) -> Diagnostic {
    let kind = match error {
        ConsumerError::InProgress { .. } => "InProgress",
        ConsumerError::Handler(_) => "Handler",
        ConsumerError::Throttled => "Throttled",
        _ => "Idempotency",
    };
    let class = if error.is_retryable() {
        "Retryable"
    } else {
        "NonRetryable"
    };
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    Diagnostic {
        error_type: format!("{class}.{kind}"),
        error_message: message,
    }
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let table =
        std::env::var(ENV_TABLE).map_err(|_| format!("environment variable {ENV_TABLE} is required"))?;
    let scope = std::env::var(ENV_SCOPE).unwrap_or_else(|_| "example-consumer".into());
    let in_progress = match std::env::var(ENV_IN_PROGRESS_SECONDS) {
        Ok(v) => v
            .parse::<u64>()
            .map_err(|e| format!("environment variable {ENV_IN_PROGRESS_SECONDS}={v:?} is invalid: {e}"))?,
        Err(_) => 60,
    };
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(&sdk);
    if let Ok(endpoint) = std::env::var(ENV_DYNAMODB_ENDPOINT) {
        dynamodb = dynamodb.endpoint_url(endpoint);
    }
    let store = IdempotencyStore::new(
        aws_sdk_dynamodb::Client::from_conf(dynamodb.build()),
        table,
        scope,
    )
    .with_in_progress_expiry(Duration::from_secs(in_progress));
    let consumer = IdempotentConsumer::new(store);
    lambda_runtime::run(service_fn(|event| handler(&consumer, event))).await
}
