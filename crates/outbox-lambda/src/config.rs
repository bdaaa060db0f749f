//! The function's configuration, read once from environment variables.
//!
//! The variable names are constants shared with `template.yaml` and the CDK
//! construct; a test keeps them in step.

use outbox_core::config::RELAY_VARIABLES;
use outbox_core::{Env, RelayConfig};
use outbox_dynamodb::OutboxSchema;
use outbox_eventbridge::{EVENTBRIDGE_VARIABLES, EventBridgeConfig};

pub use outbox_core::ConfigError;
pub use outbox_core::config::{
    ENV_DEADLINE_MARGIN_MS, ENV_MAX_CONCURRENCY, ENV_MAX_RETRIES, ENV_RETRY_BASE_MS, ENV_RETRY_MAX_MS,
};
pub use outbox_eventbridge::{
    ENV_EVENT_BUS_NAME, ENV_MAX_REQUEST_BYTES, ENV_PUT_EVENTS_TIMEOUT_MS, ENV_QUARANTINE_QUEUE_URL,
};

/// Name of the table whose stream is relayed (a label in quarantined records and metrics). Required.
pub const ENV_TABLE_NAME: &str = "OUTBOX_TABLE_NAME";
/// Partition key attribute name (default `pk`).
pub const ENV_PARTITION_KEY: &str = "OUTBOX_PARTITION_KEY";
/// Sort key attribute name (default `sk`).
pub const ENV_SORT_KEY: &str = "OUTBOX_SORT_KEY";
/// Marker attribute name (default `outbox`).
pub const ENV_MARKER_ATTRIBUTE: &str = "OUTBOX_MARKER_ATTRIBUTE";
/// CloudWatch namespace of the EMF metrics (default `OutboxRelay`).
pub const ENV_METRICS_NAMESPACE: &str = "OUTBOX_METRICS_NAMESPACE";

/// Every variable the function reads, for the test that compares them with
/// the deployment templates and for the warning about unknown ones.
pub fn all_variables() -> Vec<&'static str> {
    let mut all = vec![
        ENV_TABLE_NAME,
        ENV_PARTITION_KEY,
        ENV_SORT_KEY,
        ENV_MARKER_ATTRIBUTE,
        ENV_METRICS_NAMESPACE,
    ];
    all.extend_from_slice(EVENTBRIDGE_VARIABLES);
    all.extend_from_slice(RELAY_VARIABLES);
    all
}

/// The relay function's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// The source table.
    pub table_name: String,
    /// How outbox items are stored.
    pub schema: OutboxSchema,
    /// The bus, the quarantine queue and the request limits.
    pub eventbridge: EventBridgeConfig,
    /// Publishing and retries.
    pub relay: RelayConfig,
    /// EMF namespace.
    pub metrics_namespace: String,
}

/// The item schema of `table` with the attribute names the variables set.
pub fn schema_from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>, table: &str) -> OutboxSchema {
    let mut schema = OutboxSchema::new(table);
    if let Some(v) = env.text(ENV_PARTITION_KEY) {
        schema = schema.with_partition_key(v);
    }
    if let Some(v) = env.text(ENV_SORT_KEY) {
        schema = schema.with_sort_key(v);
    }
    if let Some(v) = env.text(ENV_MARKER_ATTRIBUTE) {
        schema = schema.with_marker_attribute(v);
    }
    schema
}

impl Config {
    /// Reads the configuration through `lookup` (a variable name to its value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(lookup);
        let table_name = env.required(ENV_TABLE_NAME)?;
        let schema = schema_from_env(&env, &table_name);
        Ok(Self {
            eventbridge: EventBridgeConfig::from_env(&env)?,
            relay: RelayConfig::from_env(&env)?,
            table_name,
            schema,
            metrics_namespace: env
                .text(ENV_METRICS_NAMESPACE)
                .unwrap_or_else(|| "OutboxRelay".into()),
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
    use std::time::Duration;

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
        assert_eq!(c.eventbridge.event_bus_name, "orders-bus");
        assert_eq!(c.schema, OutboxSchema::new("orders"));
        assert_eq!(c.eventbridge.max_request_bytes, 262_144);
        assert_eq!(c.relay, RelayConfig::default());
        assert_eq!(c.metrics_namespace, "OutboxRelay");
        assert_eq!(c.eventbridge.put_events_timeout, Duration::from_secs(10));
    }

    #[test]
    fn large_events_by_claim_check_need_a_bucket() {
        use outbox_eventbridge::{ENV_CLAIM_CHECK_BUCKET, ENV_LARGE_EVENTS, LargeEvents};
        assert_eq!(
            parse(&base()).unwrap().eventbridge.large_events,
            LargeEvents::Quarantine
        );
        let mut vars = base();
        vars.insert(ENV_LARGE_EVENTS, "claim-check".into());
        let err = parse(&vars).unwrap_err().to_string();
        assert!(
            err.contains(ENV_LARGE_EVENTS) && err.contains(ENV_CLAIM_CHECK_BUCKET),
            "{err}"
        );
        vars.insert(ENV_CLAIM_CHECK_BUCKET, "claims".into());
        assert_eq!(
            parse(&vars).unwrap().eventbridge.large_events,
            LargeEvents::ClaimCheck
        );
        vars.insert(ENV_LARGE_EVENTS, "drop".into());
        let err = parse(&vars).unwrap_err().to_string();
        assert!(err.contains("`quarantine` or `claim-check`"), "{err}");
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
        assert_eq!(c.eventbridge.max_request_bytes, 1_048_576);
        assert_eq!(c.relay.max_concurrency, 8);
        assert_eq!(c.relay.retry.max_retries, 0);
        assert_eq!(c.relay.retry.base_delay, Duration::from_millis(10));
        assert_eq!(c.relay.deadline_margin, Duration::from_millis(500));
        assert_eq!(c.eventbridge.put_events_timeout, Duration::from_millis(2500));
    }
}
