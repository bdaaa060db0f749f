//! `outbox relay cosmos`: the Cosmos DB change-feed processor outside Azure
//! Functions (a container on Azure Container Apps, a VM, a laptop against
//! the Docker emulator), publishing to EventBridge with an SQS quarantine.

use std::future::Future;
use std::time::Duration;

use outbox_core::{Relay, RelayConfig};
use outbox_cosmos::{
    ConnectError, CosmosChangeDecoder, CosmosChangeFeedProcessor, CosmosLeaseStore, CosmosOutboxSchema,
    LeaseError, MAX_ITEMS_PER_PAGE, ProcessorConfig, ProcessorError, ProcessorReport, container_client,
    cosmos_client_with_key,
};
use outbox_eventbridge::{
    BusFormat, DEFAULT_MAX_REQUEST_BYTES, ENV_BUS_FORMAT, ENV_EVENT_BUS_NAME, ENV_MAX_REQUEST_BYTES,
    ENV_QUARANTINE_QUEUE_URL, EventBridgeConfig,
};

use crate::relay::shutdown_signal;

/// `outbox relay cosmos`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct CosmosArgs {
    /// Cosmos DB account endpoint, e.g. `https://<account>.documents.azure.com:443/`.
    #[arg(long, env = "COSMOS_ENDPOINT")]
    pub endpoint: String,
    /// Account key (read-write: the processor writes its leases).
    #[arg(long, env = "COSMOS_KEY", hide_env_values = true)]
    pub key: String,
    /// Region the client prefers, e.g. westeurope.
    #[arg(long, env = "COSMOS_REGION", default_value = "eastus")]
    pub region: String,
    /// Database of the monitored and the lease container.
    #[arg(long, env = "OUTBOX_COSMOS_DATABASE")]
    pub database: String,
    /// Container whose change feed is relayed (aggregates and outbox documents).
    #[arg(long, env = "OUTBOX_COSMOS_CONTAINER")]
    pub container: String,
    /// Lease container, partitioned on /id (one lease document per feed range).
    #[arg(long, env = "OUTBOX_COSMOS_LEASE_CONTAINER")]
    pub lease_container: String,
    /// Name shared by the instances that split the ranges between them (the lease prefix).
    #[arg(long, env = "OUTBOX_COSMOS_PROCESSOR_NAME", default_value = "outbox-relay")]
    pub processor_name: String,
    /// Marker field of outbox documents.
    #[arg(long, env = "OUTBOX_COSMOS_MARKER_FIELD", default_value = "outbox")]
    pub marker_field: String,
    // The sink and the quarantine also read the other OUTBOX_* EventBridge
    // variables, as every host does: OUTBOX_CLAIM_CHECK_BUCKET,
    // OUTBOX_QUARANTINE_MAX_MESSAGE_BYTES, OUTBOX_LARGE_EVENTS,
    // OUTBOX_PUT_EVENTS_TIMEOUT_MS.
    /// EventBridge bus events are published to.
    #[arg(long, env = "OUTBOX_EVENT_BUS_NAME")]
    pub event_bus_name: String,
    /// SQS queue for documents that can never be delivered.
    #[arg(long, env = "OUTBOX_QUARANTINE_QUEUE_URL")]
    pub quarantine_queue_url: String,
    /// Largest PutEvents request in bytes.
    #[arg(long, env = "OUTBOX_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    /// Form of each entry's Detail: the outbox envelope, or a CloudEvents 1.0 event.
    #[arg(long, env = "OUTBOX_BUS_FORMAT", default_value_t = BusFormat::Envelope)]
    pub bus_format: BusFormat,
    /// This instance's id in the leases (default: host name and pid).
    #[arg(long, env = "OUTBOX_RUNNER_OWNER")]
    pub owner: Option<String>,
    /// Lease duration in seconds: a stopped instance's ranges are taken over within about this long.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_seconds: u64,
    /// Most documents per change-feed page (the unit relayed and checkpointed).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_ITEMS_PER_PAGE)))]
    pub max_items: u32,
    /// Longest pause between two polls of an idle range, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub max_poll_delay_ms: u64,
}

impl CosmosArgs {
    /// The EventBridge configuration: these arguments' bus, queue, request
    /// limit and format, and the other EventBridge variables from `lookup`
    /// (the claim-check bucket, the queue's message limit, large events,
    /// the call timeout), read and checked the way every host reads them.
    pub fn eventbridge_config(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<EventBridgeConfig, outbox_core::ConfigError> {
        let given = [
            (ENV_EVENT_BUS_NAME, self.event_bus_name.clone()),
            (ENV_QUARANTINE_QUEUE_URL, self.quarantine_queue_url.clone()),
            (ENV_MAX_REQUEST_BYTES, self.max_request_bytes.to_string()),
            (ENV_BUS_FORMAT, self.bus_format.to_string()),
        ];
        EventBridgeConfig::from_env(&outbox_core::Env::new(|name: &str| {
            given
                .iter()
                .find(|(given, _)| *given == name)
                .map(|(_, value)| value.clone())
                .or_else(|| lookup(name))
        }))
    }

    /// The processor settings these arguments ask for, with `owner` when none was given.
    pub fn processor_config(&self, default_owner: impl FnOnce() -> String) -> ProcessorConfig {
        let mut config = ProcessorConfig::new(&self.owner.clone().unwrap_or_else(default_owner));
        config.lease_duration = Duration::from_secs(self.lease_seconds);
        config.discovery_interval = config.lease_duration / 3;
        config.max_items_per_page = self.max_items;
        config.backoff_max = Duration::from_millis(self.max_poll_delay_ms).max(config.backoff_initial);
        config
    }
}

/// Why `outbox relay cosmos` stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CosmosCommandError {
    /// The Cosmos DB client or a container could not be opened.
    #[error("connecting to Cosmos DB failed")]
    Connect(#[from] ConnectError),
    /// The lease store cannot be used with these arguments.
    #[error("the lease store cannot be set up")]
    Lease(#[from] LeaseError),
    /// The processor failed.
    #[error("the change-feed processor failed")]
    Processor(#[from] ProcessorError),
    /// A relay variable (`OUTBOX_MAX_RETRIES`, ...) cannot be used.
    #[error("the relay's configuration cannot be used")]
    Config(#[from] outbox_core::ConfigError),
}

/// Runs the processor until `shutdown` completes, then returns what it did.
pub async fn run_cosmos(
    args: &CosmosArgs,
    config: ProcessorConfig,
    sdk: &aws_config::SdkConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<ProcessorReport, CosmosCommandError> {
    // The same relay variables as every other host.
    let relay = RelayConfig::from_env(&outbox_core::Env::process())?;
    let client = cosmos_client_with_key(&args.endpoint, args.key.clone(), &args.region).await?;
    let monitored = container_client(&client, &args.database, &args.container).await?;
    let leases = container_client(&client, &args.database, &args.lease_container).await?;
    let eventbridge = args.eventbridge_config(|name| std::env::var(name).ok())?;
    let sink = eventbridge.sink(sdk);
    let quarantine = eventbridge.quarantine(
        sdk,
        &eventbridge.quarantine_queue_url,
        &format!("cosmos:{}/{}", args.database, args.container),
    );
    // Decoding needs only the marker; the partition key property is not read.
    let schema = CosmosOutboxSchema::new("pk").with_marker_field(&args.marker_field);
    let processor = CosmosChangeFeedProcessor::new(
        monitored,
        CosmosLeaseStore::new(leases, &args.processor_name)?,
        CosmosChangeDecoder::new(schema),
        Relay::new(sink, quarantine, relay),
        config,
    );
    Ok(processor.run(shutdown).await?)
}

/// `outbox relay cosmos`: runs until SIGINT or SIGTERM.
pub async fn run(
    args: &CosmosArgs,
    default_owner: impl FnOnce() -> String,
) -> Result<(), CosmosCommandError> {
    let config = args.processor_config(default_owner);
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let report = run_cosmos(args, config, &sdk, shutdown_signal()).await?;
    tracing::info!(?report, "relay stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: CosmosArgs,
    }

    fn parse(extra: &[&str]) -> Result<CosmosArgs, clap::Error> {
        let mut argv = vec![
            "outbox",
            "--endpoint",
            "https://acct.documents.azure.com:443/",
            "--key",
            "a2V5",
            "--database",
            "shop",
            "--container",
            "orders",
            "--lease-container",
            "relay-leases",
            "--event-bus-name",
            "orders-bus",
            "--quarantine-queue-url",
            "http://127.0.0.1:1/q",
        ];
        argv.extend_from_slice(extra);
        Wrapper::try_parse_from(argv).map(|w| w.args)
    }

    #[test]
    fn the_sink_and_quarantine_take_the_flags_and_the_other_eventbridge_variables() {
        let args = parse(&["--bus-format", "cloudevents"]).unwrap();
        let env = |name: &str| match name {
            "OUTBOX_CLAIM_CHECK_BUCKET" => Some("claims".to_owned()),
            "OUTBOX_LARGE_EVENTS" => Some("claim-check".to_owned()),
            "OUTBOX_QUARANTINE_MAX_MESSAGE_BYTES" => Some("1048576".to_owned()),
            // A flag wins over its variable.
            "OUTBOX_EVENT_BUS_NAME" => Some("other-bus".to_owned()),
            _ => None,
        };
        let config = args.eventbridge_config(env).unwrap();
        assert_eq!(config.event_bus_name, "orders-bus");
        assert_eq!(config.quarantine_queue_url, "http://127.0.0.1:1/q");
        assert_eq!(config.bus_format, BusFormat::CloudEvents);
        assert_eq!(config.claim_check_bucket.as_deref(), Some("claims"));
        assert_eq!(config.large_events, outbox_eventbridge::LargeEvents::ClaimCheck);
        assert_eq!(config.quarantine_max_message_bytes, 1_048_576);

        let bad = |name: &str| (name == "OUTBOX_LARGE_EVENTS").then(|| "sometimes".to_owned());
        let err = args.eventbridge_config(bad).unwrap_err().to_string();
        assert!(err.contains("OUTBOX_LARGE_EVENTS"), "{err}");
    }

    #[test]
    fn flags_map_to_the_processor_settings() {
        let args = parse(&[
            "--lease-seconds",
            "30",
            "--max-items",
            "250",
            "--max-poll-delay-ms",
            "500",
        ])
        .unwrap();
        let config = args.processor_config(|| "host-1".into());
        assert!(config.owner.starts_with("host-1#"), "{}", config.owner);
        assert_eq!(config.lease_duration, Duration::from_secs(30));
        assert_eq!(config.discovery_interval, Duration::from_secs(10));
        assert_eq!(config.max_items_per_page, 250);
        assert_eq!(config.backoff_max, Duration::from_millis(500));
        assert!(config.validate().is_ok());
        assert_eq!(args.processor_name, "outbox-relay");
        assert_eq!(args.region, "eastus");
        assert_eq!(args.bus_format, BusFormat::Envelope);
        let cloudevents = parse(&["--bus-format", "cloudevents"]).unwrap();
        assert_eq!(cloudevents.bus_format, BusFormat::CloudEvents);
        let named = parse(&["--owner", "relay-a"]).unwrap();
        let owner = named.processor_config(|| unreachable!()).owner;
        assert!(owner.starts_with("relay-a#"), "{owner}");
    }

    #[test]
    fn out_of_range_values_are_refused_by_name() {
        let err = parse(&["--max-items", "5000"]).unwrap_err();
        assert!(err.to_string().contains("--max-items"), "{err}");
        let err = parse(&["--lease-seconds", "0"]).unwrap_err();
        assert!(err.to_string().contains("--lease-seconds"), "{err}");
        let err = parse(&["--bus-format", "xml"]).unwrap_err().to_string();
        assert!(
            err.contains("--bus-format") && err.contains("`envelope` or `cloudevents`"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_bad_endpoint_is_a_connect_error_naming_it() {
        let args = parse(&[]).map(|mut a| {
            a.endpoint = "not a url".into();
            a
        });
        let args = args.unwrap();
        let sdk = aws_config::SdkConfig::builder().build();
        let err = run_cosmos(
            &args,
            args.processor_config(|| "me".into()),
            &sdk,
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, CosmosCommandError::Connect(ConnectError::InvalidEndpoint { endpoint, .. }) if endpoint == "not a url"),
            "{err:?}"
        );
    }
}
