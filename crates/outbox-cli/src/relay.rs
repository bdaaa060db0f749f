//! `outbox relay dynamodb`: the relay outside Lambda, tailing a table's
//! stream with the standalone runner.

use std::future::Future;

use outbox_core::Relay;
use outbox_dynamodb_relay::{
    DynamoDbLeaseStore, DynamoDbStreamDecoder, DynamoDbStreamRunner, RunnerConfig, RunnerError, RunnerReport,
    create_lease_table, stream_arn_for_table,
};
use outbox_lambda::{Config, build_sink_and_quarantine};

/// What the standalone relay needs beyond the function's configuration.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// The table holding the leases and checkpoints.
    pub lease_table: String,
    /// Create the lease table if it does not exist.
    pub create_lease_table: bool,
    /// Where records that exhausted their retries go (SQS queue URL).
    pub on_failure_queue_url: String,
    /// Runner settings (owner id, lease duration, retries, ...).
    pub runner: RunnerConfig,
}

/// Why the standalone relay stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayCommandError {
    /// The lease table could not be created.
    #[error("creating the lease table failed")]
    LeaseTable(#[source] outbox_dynamodb_relay::LeaseError),
    /// The lease table does not exist.
    #[error("the lease table {table} does not exist: create it, or pass --create-lease-table")]
    NoLeaseTable {
        /// The table.
        table: String,
    },
    /// The runner failed.
    #[error("the stream runner failed")]
    Runner(#[from] RunnerError),
}

/// Runs the standalone relay for `config.table_name` until `shutdown`
/// completes, then returns what it did.
pub async fn run_dynamodb(
    config: &Config,
    options: &RunnerOptions,
    sdk: &aws_config::SdkConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<RunnerReport, RelayCommandError> {
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let streams = aws_sdk_dynamodbstreams::Client::new(sdk);
    if options.create_lease_table {
        // An existing table is fine: several runners share one lease table.
        create_lease_table(&ddb, &options.lease_table)
            .await
            .map_err(RelayCommandError::LeaseTable)?;
    }
    let stream_arn = stream_arn_for_table(&ddb, &config.table_name).await?;
    let (sink, quarantine) = build_sink_and_quarantine(config, sdk);
    let on_failure = config.eventbridge.quarantine(
        sdk,
        &options.on_failure_queue_url,
        &format!("dynamodb:{}", config.table_name),
    );
    let runner = DynamoDbStreamRunner::new(
        streams,
        DynamoDbLeaseStore::new(ddb, &options.lease_table),
        stream_arn,
        DynamoDbStreamDecoder::new(config.schema.clone()),
        Relay::new(sink, quarantine, config.relay.clone()),
        on_failure,
        options.runner.clone(),
    );
    match runner.run(shutdown).await {
        Err(RunnerError::Lease(outbox_dynamodb_relay::LeaseError::TableNotFound { table })) => {
            Err(RelayCommandError::NoLeaseTable { table })
        }
        other => Ok(other?),
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = terminate.recv() => {},
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutdown requested");
}
