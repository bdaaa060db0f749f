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
//! let config = Config::from_env()?;
//! let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
//! let handler = build_handler(&config, &sdk)?;
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
use outbox_dynamodb::DynamoDbStreamDecoder;
use outbox_eventbridge::{ClientError, EventBridgeSink, PutEventsClient, SqsQuarantine};

/// The production sink and quarantine: EventBridge and SQS clients built
/// from the SDK configuration with `config`'s endpoint overrides; the
/// `PutEvents` calls go through [`PutEventsClient`] unless `config` asks for
/// the SDK's client.
///
/// # Errors
///
/// [`ClientError`] when the direct client cannot be built (no region or
/// credentials provider, no endpoint, no TLS roots).
pub fn build_sink_and_quarantine(
    config: &Config,
    sdk: &aws_config::SdkConfig,
) -> Result<(EventBridgeSink, SqsQuarantine), ClientError> {
    let sink = match config.eventbridge_client {
        EventBridgeClient::Direct => EventBridgeSink::with_client(
            PutEventsClient::from_sdk_config(sdk, config.eventbridge_endpoint.as_deref())?
                .with_attempt_timeout(config.put_events_timeout),
            &config.event_bus_name,
        ),
        EventBridgeClient::Sdk => {
            EventBridgeSink::new(eventbridge_client(config, sdk), &config.event_bus_name)
        }
    }
    .with_max_request_bytes(config.max_request_bytes);
    let quarantine = SqsQuarantine::new(sqs_client(config, sdk), &config.quarantine_queue_url)
        .with_origin(format!("dynamodb:{}", config.table_name));
    Ok((sink, quarantine))
}

/// An EventBridge SDK client with `config`'s endpoint override, if any.
pub fn eventbridge_client(config: &Config, sdk: &aws_config::SdkConfig) -> aws_sdk_eventbridge::Client {
    let mut builder = aws_sdk_eventbridge::config::Builder::from(sdk);
    if let Some(endpoint) = &config.eventbridge_endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_eventbridge::Client::from_conf(builder.build())
}

/// An SQS client with `config`'s endpoint override, if any.
pub fn sqs_client(config: &Config, sdk: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    let mut builder = aws_sdk_sqs::config::Builder::from(sdk);
    if let Some(endpoint) = &config.sqs_endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_sqs::Client::from_conf(builder.build())
}

/// The production handler: EventBridge sink and SQS quarantine built from
/// `config` and the SDK configuration (endpoint overrides applied).
///
/// # Errors
///
/// [`ClientError`], as [`build_sink_and_quarantine`].
pub fn build_handler(
    config: &Config,
    sdk: &aws_config::SdkConfig,
) -> Result<RelayHandler<EventBridgeSink, SqsQuarantine>, ClientError> {
    let (sink, quarantine) = build_sink_and_quarantine(config, sdk)?;
    Ok(RelayHandler::new(
        DynamoDbStreamDecoder::new(config.schema.clone()),
        Relay::new(sink, quarantine, config.relay.clone()),
        &config.metrics_namespace,
    ))
}
