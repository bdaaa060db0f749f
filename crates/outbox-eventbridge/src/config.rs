//! The EventBridge side of a relay's configuration, from environment
//! variables: the bus and the form of what is published on it, the
//! quarantine queue with its claim-check bucket, and the request limits.

use std::time::Duration;

use outbox_core::{ConfigError, Env};

use crate::{
    BusFormat, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_REQUEST_BYTES, EventBridgeSink, S3ClaimCheck,
    SqsQuarantine,
};

/// Name (or ARN) of the EventBridge bus events are published to. Required.
pub const ENV_EVENT_BUS_NAME: &str = "OUTBOX_EVENT_BUS_NAME";
/// URL of the SQS queue that receives quarantined records. Required.
pub const ENV_QUARANTINE_QUEUE_URL: &str = "OUTBOX_QUARANTINE_QUEUE_URL";
/// Largest PutEvents request in bytes (default 262144, the documented 256 KB;
/// 1024 to 16 MiB).
pub const ENV_MAX_REQUEST_BYTES: &str = "OUTBOX_MAX_REQUEST_BYTES";
/// Longest PutEvents attempt in milliseconds, answer included (default 10000):
/// the SDK client's operation attempt timeout.
pub const ENV_PUT_EVENTS_TIMEOUT_MS: &str = "OUTBOX_PUT_EVENTS_TIMEOUT_MS";

/// Largest quarantine message in bytes, body and attributes (default 262144;
/// 1024 to 1048576): the quarantine queue's `MaximumMessageSize`.
pub const ENV_QUARANTINE_MAX_MESSAGE_BYTES: &str = "OUTBOX_QUARANTINE_MAX_MESSAGE_BYTES";
/// S3 bucket where a quarantine message too large for the queue is stored,
/// the message carrying its address. Unset: such a record fails instead.
pub const ENV_CLAIM_CHECK_BUCKET: &str = "OUTBOX_CLAIM_CHECK_BUCKET";

/// What to do with an event too large for a `PutEvents` request:
/// `quarantine` (default) or `claim-check` (store it in
/// `OUTBOX_CLAIM_CHECK_BUCKET` and publish its address; consumers read it
/// back).
pub const ENV_LARGE_EVENTS: &str = "OUTBOX_LARGE_EVENTS";

/// The form of each entry's `Detail` ([`BusFormat`]): `envelope` (default,
/// the outbox envelope) or `cloudevents` (CloudEvents 1.0 structured JSON).
pub const ENV_BUS_FORMAT: &str = "OUTBOX_BUS_FORMAT";

/// The variables [`EventBridgeConfig::from_env`] reads.
pub const EVENTBRIDGE_VARIABLES: &[&str] = &[
    ENV_EVENT_BUS_NAME,
    ENV_QUARANTINE_QUEUE_URL,
    ENV_MAX_REQUEST_BYTES,
    ENV_PUT_EVENTS_TIMEOUT_MS,
    ENV_QUARANTINE_MAX_MESSAGE_BYTES,
    ENV_CLAIM_CHECK_BUCKET,
    ENV_LARGE_EVENTS,
    ENV_BUS_FORMAT,
];

/// What a relay does with an event too large for a `PutEvents` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LargeEvents {
    /// Quarantine it (the writer's default size check keeps such events out).
    #[default]
    Quarantine,
    /// Publish it by claim-check through the claim-check bucket.
    ClaimCheck,
}

/// Where a relay publishes and quarantines, and its request limits.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventBridgeConfig {
    /// The bus.
    pub event_bus_name: String,
    /// The quarantine queue.
    pub quarantine_queue_url: String,
    /// PutEvents request size limit.
    pub max_request_bytes: usize,
    /// Longest PutEvents call attempt.
    pub put_events_timeout: Duration,
    /// The quarantine queue's message size limit.
    pub quarantine_max_message_bytes: usize,
    /// Where messages too large for the queue are stored.
    pub claim_check_bucket: Option<String>,
    /// What to do with events too large for a request.
    pub large_events: LargeEvents,
    /// The form of each entry's `Detail`.
    pub bus_format: BusFormat,
}

impl EventBridgeConfig {
    /// An EventBridge client from the shared AWS configuration, each
    /// `PutEvents` attempt bounded by [`put_events_timeout`](Self::put_events_timeout).
    pub fn client(&self, sdk: &aws_types::SdkConfig) -> aws_sdk_eventbridge::Client {
        let mut timeouts = sdk.timeout_config().map(|t| t.to_builder()).unwrap_or_default();
        timeouts.set_operation_attempt_timeout(Some(self.put_events_timeout));
        let conf = aws_sdk_eventbridge::config::Builder::from(sdk)
            .timeout_config(timeouts.build())
            .build();
        aws_sdk_eventbridge::Client::from_conf(conf)
    }

    /// The sink: the client of [`client`](Self::client), the bus, the
    /// request limit, the bus format and, with [`LargeEvents::ClaimCheck`],
    /// the claim-check bucket for events too large for a request.
    pub fn sink(&self, sdk: &aws_types::SdkConfig) -> EventBridgeSink {
        let sink = EventBridgeSink::new(self.client(sdk), &self.event_bus_name)
            .with_max_request_bytes(self.max_request_bytes)
            .with_bus_format(self.bus_format);
        match (&self.large_events, &self.claim_check_bucket) {
            (LargeEvents::ClaimCheck, Some(bucket)) => {
                sink.with_large_events(S3ClaimCheck::new(aws_sdk_s3::Client::new(sdk), bucket))
            }
            _ => sink,
        }
    }

    /// An SQS quarantine sending to `queue_url` (the quarantine queue, or a
    /// host's on-failure queue) with this configuration's message limit and
    /// claim-check bucket, labelled with `origin`.
    pub fn quarantine(&self, sdk: &aws_types::SdkConfig, queue_url: &str, origin: &str) -> SqsQuarantine {
        let quarantine = SqsQuarantine::new(aws_sdk_sqs::Client::new(sdk), queue_url)
            .with_origin(origin)
            .with_max_message_bytes(self.quarantine_max_message_bytes);
        match &self.claim_check_bucket {
            Some(bucket) => {
                quarantine.with_claim_check(S3ClaimCheck::new(aws_sdk_s3::Client::new(sdk), bucket))
            }
            None => quarantine,
        }
    }

    /// Reads [`EVENTBRIDGE_VARIABLES`].
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(Self {
            event_bus_name: env.required(ENV_EVENT_BUS_NAME)?,
            quarantine_queue_url: env.required(ENV_QUARANTINE_QUEUE_URL)?,
            max_request_bytes: env.count(
                ENV_MAX_REQUEST_BYTES,
                DEFAULT_MAX_REQUEST_BYTES,
                1024..=16 << 20,
            )?,
            put_events_timeout: env.millis(ENV_PUT_EVENTS_TIMEOUT_MS, 10_000, 1..=600_000)?,
            quarantine_max_message_bytes: env.count(
                ENV_QUARANTINE_MAX_MESSAGE_BYTES,
                DEFAULT_MAX_MESSAGE_BYTES,
                1024..=1 << 20,
            )?,
            claim_check_bucket: env.text(ENV_CLAIM_CHECK_BUCKET),
            large_events: match env.text(ENV_LARGE_EVENTS).as_deref() {
                None | Some("quarantine") => LargeEvents::Quarantine,
                Some("claim-check") if env.text(ENV_CLAIM_CHECK_BUCKET).is_some() => LargeEvents::ClaimCheck,
                Some("claim-check") => {
                    return Err(ConfigError::Invalid {
                        name: ENV_LARGE_EVENTS,
                        value: "claim-check".into(),
                        reason: format!(
                            "publishing by claim-check needs a bucket: set {ENV_CLAIM_CHECK_BUCKET}"
                        ),
                    });
                }
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        name: ENV_LARGE_EVENTS,
                        value: other.into(),
                        reason: "it must be `quarantine` or `claim-check`".into(),
                    });
                }
            },
            bus_format: match env.text(ENV_BUS_FORMAT) {
                None => BusFormat::Envelope,
                Some(text) => text.parse().map_err(|_| ConfigError::Invalid {
                    name: ENV_BUS_FORMAT,
                    value: text.clone(),
                    reason: "it must be `envelope` or `cloudevents`".into(),
                })?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(extra: &[(&str, &str)]) -> Result<EventBridgeConfig, ConfigError> {
        let mut vars: HashMap<&str, &str> = HashMap::from([
            (ENV_EVENT_BUS_NAME, "orders-bus"),
            (ENV_QUARANTINE_QUEUE_URL, "http://127.0.0.1:1/q"),
        ]);
        vars.extend(extra.iter().copied());
        EventBridgeConfig::from_env(&Env::new(|k| vars.get(k).map(|v| (*v).to_owned())))
    }

    #[test]
    fn the_bus_format_is_the_envelope_unless_set() {
        assert_eq!(parse(&[]).unwrap().bus_format, BusFormat::Envelope);
        for format in BusFormat::ALL {
            let config = parse(&[(ENV_BUS_FORMAT, format.as_str())]).unwrap();
            assert_eq!(config.bus_format, format);
        }
    }

    #[test]
    fn an_unknown_bus_format_is_named_with_the_accepted_values() {
        let err = parse(&[(ENV_BUS_FORMAT, "cloud-events")]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { name: ENV_BUS_FORMAT, value, .. } if value == "cloud-events"),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(ENV_BUS_FORMAT) && text.contains("`envelope` or `cloudevents`"),
            "{text}"
        );
    }
}
