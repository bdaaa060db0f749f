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
//! - the AWS SDK's own settings, `AWS_ENDPOINT_URL_DYNAMODB` for DynamoDB
//!   Local among them.
//!
//! Its Lambda dependencies are behind the `example-lambda` feature (the
//! library does not pull in `lambda_runtime`):
//! `cargo lambda build --release --arm64 -p outbox-consumer --features example-lambda
//! --bin outbox-example-consumer`. `template.yaml` (`DeployExampleConsumer=true`)
//! and the CDK construct (`exampleConsumer`) deploy it.
//!
//! Each invocation answers `{"event_id", "event_type", "duplicate", "result"}`;
//! a delivery that arrives while the same event is being handled fails with
//! `Retryable.InProgress`, so that the asynchronous invocation's retry comes
//! back once the first one finished.

use std::time::Duration;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use outbox_consumer::{
    ConsumerError, DEFAULT_IN_PROGRESS_EXPIRY, IdempotencyStore, IdempotentConsumer,
    outbox_event_from_detail, resolve_claim_check,
};
use outbox_core::OutboxEvent;
use serde_json::{Value, json};

/// The idempotency table (required).
const ENV_TABLE: &str = "IDEMPOTENCY_TABLE_NAME";
/// The consumer's scope in the table.
const ENV_SCOPE: &str = "CONSUMER_SCOPE";
/// The claim's expiry in seconds.
const ENV_IN_PROGRESS_SECONDS: &str = "IDEMPOTENCY_IN_PROGRESS_SECONDS";
/// The scope when `CONSUMER_SCOPE` is not set.
const DEFAULT_SCOPE: &str = "example-consumer";

/// The function's settings, read once at cold start.
#[derive(Debug, PartialEq)]
struct Config {
    table: String,
    scope: String,
    in_progress: Duration,
}

impl Config {
    /// The settings from `lookup` (the environment, or a map in tests). A
    /// missing or invalid variable is an error that names it.
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let table = lookup(ENV_TABLE)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("environment variable {ENV_TABLE} is required"))?;
        let in_progress = match lookup(ENV_IN_PROGRESS_SECONDS) {
            None => DEFAULT_IN_PROGRESS_EXPIRY,
            Some(v) => match v.parse::<u64>() {
                Ok(seconds) if seconds > 0 => Duration::from_secs(seconds),
                _ => {
                    return Err(format!(
                        "environment variable {ENV_IN_PROGRESS_SECONDS}={v:?} is not a positive number of seconds"
                    ));
                }
            },
        };
        Ok(Self {
            table,
            scope: lookup(ENV_SCOPE).unwrap_or_else(|| DEFAULT_SCOPE.into()),
            in_progress,
        })
    }
}

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

/// One invocation: parse the envelope from `detail` (read whole from S3
/// when it was published by claim-check), process it once.
async fn handler(
    consumer: &IdempotentConsumer,
    s3: &aws_sdk_s3::Client,
    event: LambdaEvent<EventBridgeEvent<Value>>,
) -> Result<Value, Diagnostic> {
    let outbox_event = outbox_event_from_detail(&event.payload.detail).map_err(|e| Diagnostic {
        error_type: "NonRetryable.NotAnOutboxEvent".into(),
        error_message: e.to_string(),
    })?;
    let outbox_event = resolve_claim_check(outbox_event, s3)
        .await
        .map_err(|e| Diagnostic {
            error_type: "Retryable.ClaimCheck".into(),
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
    let message = outbox_core::error_chain(error);
    Diagnostic {
        error_type: format!("{class}.{kind}"),
        error_message: message,
    }
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = Config::from_lookup(|name| std::env::var(name).ok())?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let store = IdempotencyStore::new(aws_sdk_dynamodb::Client::new(&sdk), config.table, config.scope)
        .with_in_progress_expiry(config.in_progress);
    let consumer = IdempotentConsumer::new(store);
    let s3 = aws_sdk_s3::Client::new(&sdk);
    lambda_runtime::run(service_fn(|event| handler(&consumer, &s3, event))).await
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use chrono::{DateTime, Utc};
    use lambda_runtime::Context;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, String> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        Config::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn config_needs_only_the_table() {
        assert_eq!(
            config(&[(ENV_TABLE, "idempotency")]),
            Ok(Config {
                table: "idempotency".into(),
                scope: DEFAULT_SCOPE.into(),
                in_progress: DEFAULT_IN_PROGRESS_EXPIRY,
            })
        );
        let all = config(&[
            (ENV_TABLE, "t"),
            (ENV_SCOPE, "billing"),
            (ENV_IN_PROGRESS_SECONDS, "90"),
        ]);
        assert_eq!(
            all,
            Ok(Config {
                table: "t".into(),
                scope: "billing".into(),
                in_progress: Duration::from_secs(90),
            })
        );
    }

    #[test]
    fn config_errors_name_the_variable() {
        let missing = config(&[]).unwrap_err();
        assert!(missing.contains(ENV_TABLE), "{missing}");
        let empty = config(&[(ENV_TABLE, "")]).unwrap_err();
        assert!(empty.contains(ENV_TABLE), "{empty}");
        for bad in ["soon", "0", "-5"] {
            let e = config(&[(ENV_TABLE, "t"), (ENV_IN_PROGRESS_SECONDS, bad)]).unwrap_err();
            assert!(e.contains(ENV_IN_PROGRESS_SECONDS), "{e}");
        }
    }

    #[test]
    fn diagnostics_say_whether_a_retry_can_help() {
        let in_progress = diagnostic(&ConsumerError::InProgress {
            id: "e1".into(),
            expires_at: DateTime::<Utc>::UNIX_EPOCH,
        });
        assert_eq!(in_progress.error_type, "Retryable.InProgress");
        let handler = diagnostic(&ConsumerError::Handler("card declined".into()));
        assert_eq!(handler.error_type, "Retryable.Handler");
        assert_eq!(handler.error_message, "the event handler failed: card declined");
        let rejected = diagnostic(&ConsumerError::Rejected {
            code: "ResourceNotFoundException".into(),
            message: "no table".into(),
        });
        assert_eq!(rejected.error_type, "NonRetryable.Idempotency");
    }

    #[tokio::test]
    async fn an_event_that_is_not_an_outbox_envelope_is_not_retried() {
        // Refused before any DynamoDB call: the client never sends.
        let client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::Config::builder()
                .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
                .endpoint_url("http://127.0.0.1:9")
                .build(),
        );
        let consumer = IdempotentConsumer::new(IdempotencyStore::new(client, "t", "s"));
        let payload: EventBridgeEvent<Value> = serde_json::from_value(json!({
            "detail-type": "OrderPlaced",
            "source": "com.example.orders",
            "detail": {"hello": "world"},
        }))
        .unwrap();
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .region(aws_sdk_s3::config::Region::new("us-east-1"))
                .endpoint_url("http://127.0.0.1:9")
                .build(),
        );
        let err = handler(&consumer, &s3, LambdaEvent::new(payload, Context::default()))
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "NonRetryable.NotAnOutboxEvent");
    }
}
