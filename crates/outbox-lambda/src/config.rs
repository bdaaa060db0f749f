//! The function's configuration, read once from environment variables.
//!
//! The variable names are constants shared with `template.yaml` and the CDK
//! construct; a test keeps them in step.

use std::time::Duration;

use outbox_core::{RelayConfig, RetryPolicy};
use outbox_dynamodb::OutboxSchema;

/// Name of the EventBridge bus events are published to. Required.
pub const ENV_EVENT_BUS_NAME: &str = "OUTBOX_EVENT_BUS_NAME";
/// URL of the SQS queue that receives quarantined records. Required.
pub const ENV_QUARANTINE_QUEUE_URL: &str = "OUTBOX_QUARANTINE_QUEUE_URL";
/// Name of the table whose stream is relayed (a label in quarantined records and metrics). Required.
pub const ENV_TABLE_NAME: &str = "OUTBOX_TABLE_NAME";
/// Partition key attribute name (default `pk`).
pub const ENV_PARTITION_KEY: &str = "OUTBOX_PARTITION_KEY";
/// Sort key attribute name (default `sk`).
pub const ENV_SORT_KEY: &str = "OUTBOX_SORT_KEY";
/// Marker attribute name (default `outbox`).
pub const ENV_MARKER_ATTRIBUTE: &str = "OUTBOX_MARKER_ATTRIBUTE";
/// Largest PutEvents request in bytes (default 262144, the documented 256 KB).
pub const ENV_MAX_REQUEST_BYTES: &str = "OUTBOX_MAX_REQUEST_BYTES";
/// Most PutEvents calls in flight (default 4).
pub const ENV_MAX_CONCURRENCY: &str = "OUTBOX_MAX_CONCURRENCY";
/// Retries of transient failures within one invocation (default 6).
pub const ENV_MAX_RETRIES: &str = "OUTBOX_MAX_RETRIES";
/// Backoff of the first retry in milliseconds (default 50).
pub const ENV_RETRY_BASE_MS: &str = "OUTBOX_RETRY_BASE_MS";
/// Largest backoff in milliseconds (default 5000).
pub const ENV_RETRY_MAX_MS: &str = "OUTBOX_RETRY_MAX_MS";
/// Time kept before the invocation's deadline, in milliseconds (default 2000).
pub const ENV_DEADLINE_MARGIN_MS: &str = "OUTBOX_DEADLINE_MARGIN_MS";
/// CloudWatch namespace of the EMF metrics (default `OutboxRelay`).
pub const ENV_METRICS_NAMESPACE: &str = "OUTBOX_METRICS_NAMESPACE";
/// Longest PutEvents call attempt in milliseconds, answer included
/// (default 10000): the SDK client's operation attempt timeout.
pub const ENV_PUT_EVENTS_TIMEOUT_MS: &str = "OUTBOX_PUT_EVENTS_TIMEOUT_MS";

/// Every variable the function reads, for the test that compares them with
/// the deployment templates.
pub const ALL_VARIABLES: &[&str] = &[
    ENV_EVENT_BUS_NAME,
    ENV_QUARANTINE_QUEUE_URL,
    ENV_TABLE_NAME,
    ENV_PARTITION_KEY,
    ENV_SORT_KEY,
    ENV_MARKER_ATTRIBUTE,
    ENV_MAX_REQUEST_BYTES,
    ENV_MAX_CONCURRENCY,
    ENV_MAX_RETRIES,
    ENV_RETRY_BASE_MS,
    ENV_RETRY_MAX_MS,
    ENV_DEADLINE_MARGIN_MS,
    ENV_METRICS_NAMESPACE,
    ENV_PUT_EVENTS_TIMEOUT_MS,
];

/// A configuration problem: the whole invocation fails, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required variable is not set (or empty).
    #[error("environment variable {name} is required")]
    Missing {
        /// The variable.
        name: &'static str,
    },
    /// A variable's value cannot be used.
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

/// The relay function's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// The bus.
    pub event_bus_name: String,
    /// The quarantine queue.
    pub quarantine_queue_url: String,
    /// The source table.
    pub table_name: String,
    /// How outbox items are stored.
    pub schema: OutboxSchema,
    /// PutEvents request size limit.
    pub max_request_bytes: usize,
    /// Publishing and retries.
    pub relay: RelayConfig,
    /// EMF namespace.
    pub metrics_namespace: String,
    /// Longest PutEvents call attempt.
    pub put_events_timeout: Duration,
}

impl Config {
    /// Reads the configuration through `lookup` (a variable name to its value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| lookup(name).filter(|v| !v.trim().is_empty());
        let required = |name: &'static str| get(name).ok_or(ConfigError::Missing { name });
        let number = |name: &'static str, default: u64, min: u64| -> Result<u64, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(value) => match value.trim().parse::<u64>() {
                    Ok(n) if n >= min => Ok(n),
                    Ok(_) => Err(ConfigError::Invalid {
                        name,
                        value,
                        reason: format!("must be at least {min}"),
                    }),
                    Err(e) => Err(ConfigError::Invalid {
                        name,
                        value,
                        reason: format!("not a whole number: {e}"),
                    }),
                },
            }
        };
        let table_name = required(ENV_TABLE_NAME)?;
        let mut schema = OutboxSchema::new(&table_name);
        if let Some(v) = get(ENV_PARTITION_KEY) {
            schema = schema.with_partition_key(v);
        }
        if let Some(v) = get(ENV_SORT_KEY) {
            schema = schema.with_sort_key(v);
        }
        if let Some(v) = get(ENV_MARKER_ATTRIBUTE) {
            schema = schema.with_marker_attribute(v);
        }
        let retry = RetryPolicy {
            max_retries: u32::try_from(number(ENV_MAX_RETRIES, 6, 0)?).unwrap_or(u32::MAX),
            base_delay: Duration::from_millis(number(ENV_RETRY_BASE_MS, 50, 1)?),
            max_delay: Duration::from_millis(number(ENV_RETRY_MAX_MS, 5000, 1)?),
        };
        Ok(Self {
            event_bus_name: required(ENV_EVENT_BUS_NAME)?,
            quarantine_queue_url: required(ENV_QUARANTINE_QUEUE_URL)?,
            table_name,
            schema,
            max_request_bytes: usize::try_from(number(ENV_MAX_REQUEST_BYTES, 256 * 1024, 1024)?)
                .unwrap_or(usize::MAX),
            relay: RelayConfig {
                retry,
                max_concurrency: usize::try_from(number(ENV_MAX_CONCURRENCY, 4, 1)?).unwrap_or(usize::MAX),
                deadline_margin: Duration::from_millis(number(ENV_DEADLINE_MARGIN_MS, 2000, 0)?),
            },
            metrics_namespace: get(ENV_METRICS_NAMESPACE).unwrap_or_else(|| "OutboxRelay".into()),
            put_events_timeout: Duration::from_millis(number(ENV_PUT_EVENTS_TIMEOUT_MS, 10_000, 1)?),
        })
    }

    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, String> {
        HashMap::from([
            (ENV_EVENT_BUS_NAME, "orders-bus".to_string()),
            (ENV_QUARANTINE_QUEUE_URL, "http://127.0.0.1:1/q".to_string()),
            (ENV_TABLE_NAME, "orders".to_string()),
        ])
    }

    fn parse(vars: &HashMap<&'static str, String>) -> Result<Config, ConfigError> {
        Config::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn defaults_apply_when_only_the_required_variables_are_set() {
        let c = parse(&base()).unwrap();
        assert_eq!(c.event_bus_name, "orders-bus");
        assert_eq!(c.schema, OutboxSchema::new("orders"));
        assert_eq!(c.max_request_bytes, 262_144);
        assert_eq!(c.relay, RelayConfig::default());
        assert_eq!(c.metrics_namespace, "OutboxRelay");
        assert_eq!(c.put_events_timeout, Duration::from_secs(10));
    }

    #[test]
    fn each_missing_required_variable_is_named() {
        for name in [ENV_EVENT_BUS_NAME, ENV_QUARANTINE_QUEUE_URL, ENV_TABLE_NAME] {
            let mut vars = base();
            vars.remove(name);
            assert_eq!(parse(&vars).unwrap_err(), ConfigError::Missing { name });
            vars.insert(name, "  ".into());
            assert_eq!(parse(&vars).unwrap_err(), ConfigError::Missing { name });
        }
    }

    #[test]
    fn invalid_numbers_are_named_with_their_value() {
        for (name, value) in [
            (ENV_MAX_CONCURRENCY, "0"),
            (ENV_MAX_CONCURRENCY, "four"),
            (ENV_MAX_REQUEST_BYTES, "10"),
            (ENV_MAX_RETRIES, "-1"),
        ] {
            let mut vars = base();
            vars.insert(name, value.into());
            let err = parse(&vars).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { name: n, value: v, .. } if *n == name && v == value),
                "{err}"
            );
            assert!(err.to_string().contains(name));
        }
    }

    #[test]
    fn overrides_are_read() {
        let mut vars = base();
        for (k, v) in [
            (ENV_PARTITION_KEY, "PK"),
            (ENV_SORT_KEY, "SK"),
            (ENV_MARKER_ATTRIBUTE, "is_outbox"),
            (ENV_MAX_REQUEST_BYTES, "1048576"),
            (ENV_MAX_CONCURRENCY, "8"),
            (ENV_MAX_RETRIES, "0"),
            (ENV_RETRY_BASE_MS, "10"),
            (ENV_RETRY_MAX_MS, "100"),
            (ENV_DEADLINE_MARGIN_MS, "500"),
            (ENV_PUT_EVENTS_TIMEOUT_MS, "2500"),
        ] {
            vars.insert(k, v.into());
        }
        let c = parse(&vars).unwrap();
        assert_eq!(c.schema.partition_key(), "PK");
        assert_eq!(c.schema.sort_key(), "SK");
        assert_eq!(c.schema.marker_attribute(), "is_outbox");
        assert_eq!(c.max_request_bytes, 1_048_576);
        assert_eq!(c.relay.max_concurrency, 8);
        assert_eq!(c.relay.retry.max_retries, 0);
        assert_eq!(c.relay.retry.base_delay, Duration::from_millis(10));
        assert_eq!(c.relay.deadline_margin, Duration::from_millis(500));
        assert_eq!(c.put_events_timeout, Duration::from_millis(2500));
    }
}
