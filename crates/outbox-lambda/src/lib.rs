//! The outbox relay as an AWS Lambda function for DynamoDB Streams.
//!
//! The event source mapping delivers ordered batches of stream records; the
//! handler decodes them, publishes the outbox events to EventBridge through
//! the shared relay algorithm, quarantines what can never be delivered to
//! SQS, and returns `batchItemFailures` naming the first record that is
//! neither delivered nor quarantined. `Err` is only for whole-invocation
//! problems (configuration).
//!
//! ```no_run
//! use outbox_lambda::{Config, build_handler};
//!
//! # async fn run() -> Result<(), lambda_runtime::Error> {
//! let config = outbox_lambda::config_from_env(&[])?;
//! let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
//! let handler = build_handler(&config, &sdk);
//! lambda_runtime::run(lambda_runtime::service_fn(|event| handler.handle(event))).await
//! # }
//! ```

mod config;
mod handler;
mod metrics;

pub use config::*;
pub use handler::{HandlerError, RelayHandler, deadline_from_epoch_ms, response_for};
pub use metrics::{MAX_EMF_VALUES, emf_line};

use outbox_core::Relay;
use outbox_dynamodb_relay::DynamoDbStreamDecoder;
use outbox_eventbridge::{EventBridgeSink, SqsQuarantine};

/// The production sink and quarantine: EventBridge, SQS and S3 clients
/// built from the SDK configuration (endpoints, credentials, retries), the
/// `PutEvents` attempt timeout, the message limit and the claim-check bucket
/// from `config`.
pub fn build_sink_and_quarantine(
    config: &Config,
    sdk: &aws_config::SdkConfig,
) -> (EventBridgeSink, SqsQuarantine) {
    let sink = config.eventbridge.sink(sdk);
    let quarantine = config.eventbridge.quarantine(
        sdk,
        &config.eventbridge.quarantine_queue_url,
        &format!("dynamodb:{}", config.table_name),
    );
    (sink, quarantine)
}

/// The configuration from the process environment, after a warning for each
/// `OUTBOX_*` variable that neither it nor `also_read` (a host's own, such as
/// the command's) names, with the closest one that exists.
pub fn config_from_env(also_read: &[&'static str]) -> Result<Config, ConfigError> {
    let mut known = all_variables();
    known.extend_from_slice(also_read);
    for (name, closest) in outbox_core::config::unknown_variables(std::env::vars().map(|(k, _)| k), &known) {
        match closest {
            Some(closest) => {
                tracing::warn!(variable = %name, "unknown variable ignored; did you mean {closest}?")
            }
            None => tracing::warn!(variable = %name, "unknown variable ignored"),
        }
    }
    Config::from_env()
}

/// The production handler: EventBridge sink and SQS quarantine built from
/// `config` and the SDK configuration.
pub fn build_handler(
    config: &Config,
    sdk: &aws_config::SdkConfig,
) -> RelayHandler<EventBridgeSink, SqsQuarantine> {
    let (sink, quarantine) = build_sink_and_quarantine(config, sdk);
    RelayHandler::new(
        DynamoDbStreamDecoder::new(config.schema.clone()),
        Relay::new(sink, quarantine, config.relay.clone()),
        &config.metrics_namespace,
    )
}
