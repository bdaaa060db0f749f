//! The standalone DynamoDB Streams runner: the relay outside Lambda (see
//! [`DynamoDbStreamRunner`]).

use std::future::Future;
use std::sync::Mutex;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::error::display::DisplayErrorContext;
use outbox_core::host::{self, Acquired, Holdings, Partitions, Plan, RoundError, StopSignal, WorkerExit};
use outbox_core::{EventSink, Quarantine, Relay};
use tokio::time::Instant;
use tracing::Instrument;

use crate::balance::{StreamShard, plan_leases};
use crate::lease::{ErrorClass, classify};
use crate::{DynamoDbLeaseStore, DynamoDbStreamDecoder, Lease, LeaseError, ShardKey};

/// The most records one `GetRecords` call returns (its `Limit` is at most
/// 1000, "DynamoDB Streams API Reference: GetRecords").
pub const MAX_GET_RECORDS_LIMIT: i32 = 1000;

/// How often a transiently failing `DescribeTable` is retried by
/// [`stream_arn_for_table`].
const DESCRIBE_TABLE_RETRIES: u32 = 5;

/// The ARN of `table`'s current stream, read with `DescribeTable`. The stream
/// must be enabled and carry new images.
pub async fn stream_arn_for_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<String, RunnerError> {
    let config = RunnerConfig::new("lookup");
    let mut attempt = 0;
    let described = loop {
        match client.describe_table().table_name(table).send().await {
            Ok(out) => break out,
            Err(err) => match classify(&err) {
                ErrorClass::Transient if attempt < DESCRIBE_TABLE_RETRIES => {
                    attempt += 1;
                    tracing::warn!(table, attempt, error = %DisplayErrorContext(&err), "DescribeTable failed; retrying");
                    tokio::time::sleep(config.backoff(attempt)).await;
                }
                ErrorClass::NotFound => {
                    return Err(RunnerError::TableNotFound {
                        table: table.to_owned(),
                    });
                }
                class => return Err(fatal("DescribeTable", class, err)),
            },
        }
    };
    let description = described.table().ok_or_else(|| RunnerError::TableNotFound {
        table: table.to_owned(),
    })?;
    let spec = description.stream_specification();
    let arn = description.latest_stream_arn();
    match (spec, arn) {
        (Some(spec), Some(arn)) if spec.stream_enabled() => {
            let view_type = spec.stream_view_type().map(|v| v.as_str()).unwrap_or_default();
            if matches!(view_type, "NEW_IMAGE" | "NEW_AND_OLD_IMAGES") {
                Ok(arn.to_owned())
            } else {
                Err(RunnerError::StreamViewType {
                    table: table.to_owned(),
                    view_type: view_type.to_owned(),
                })
            }
        }
        _ => Err(RunnerError::NoStream {
            table: table.to_owned(),
        }),
    }
}

/// A whole-run error from an SDK error that is not transient.
fn fatal<E>(operation: &'static str, class: ErrorClass, err: SdkError<E, HttpResponse>) -> RunnerError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = err.code().unwrap_or("Unknown").to_owned();
    match class {
        ErrorClass::AccessDenied => RunnerError::AccessDenied { operation, code },
        ErrorClass::Transient => RunnerError::Unavailable {
            operation,
            source: Box::new(err),
        },
        _ => RunnerError::Rejected {
            operation,
            message: err.message().unwrap_or_default().to_owned(),
            code,
        },
    }
}

/// Where to start reading a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Start {
    TrimHorizon,
    After(String),
    At(String),
}

/// A failed Streams call, as a shard worker handles it.
enum ReadError {
    Expired,
    Trimmed,
    Gone,
    Transient(String),
    Fatal(RunnerError),
}

fn read_error<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> ReadError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match classify(&err) {
        ErrorClass::ExpiredIterator => ReadError::Expired,
        ErrorClass::Trimmed => ReadError::Trimmed,
        ErrorClass::NotFound => ReadError::Gone,
        ErrorClass::Transient => ReadError::Transient(DisplayErrorContext(&err).to_string()),
        class => ReadError::Fatal(fatal(operation, class, err)),
    }
}

/// The standalone runner: the relay outside Lambda.
///
/// It tails a table's stream with the DynamoDB Streams API and feeds every
/// batch of every shard to the same [`Relay`] as the Lambda function, with
/// the same partial-failure semantics:
///
/// - **Shards**: found with `DescribeStream` (all pages), again every
///   [`RunnerConfig::discovery_interval`] and whenever a shard is finished. A
///   child shard is taken only once its parent is finished (or no longer in
///   the stream), so each aggregate's events keep their order across splits.
/// - **Leases**: one per shard in a [`DynamoDbLeaseStore`]; renewed every
///   third of [`RunnerConfig::lease_duration`]; expired leases of other
///   runners are taken over; a shard whose lease is lost is dropped at once.
/// - **Batches**: `GetRecords` from the checkpoint (`AFTER_SEQUENCE_NUMBER`, or
///   `TRIM_HORIZON` without one), decoded with the [`DynamoDbStreamDecoder`],
///   relayed; the checkpoint moves to the last record, or to the record before
///   the first failure, and reading restarts `AT_SEQUENCE_NUMBER` of the failed
///   record after a backoff. A record that has kept failing for
///   [`RunnerConfig::retry_budget`] (counted in its lease from its first
///   failure, whichever runner met it) goes to the on-failure destination and
///   the checkpoint moves past it, as Lambda's `MaximumRecordAgeInSeconds`
///   and on-failure destination do.
/// - **Stream events**: an expired iterator is renewed from the checkpoint;
///   trimmed data restarts at `TRIM_HORIZON` with a warning; a closed shard
///   read to its end is finished; empty polls back off.
/// - **Shutdown**: when the `shutdown` future completes, each shard finishes
///   the batch in hand and checkpoints it, leases are released, and the run
///   returns a [`RunnerReport`].
///
/// ```no_run
/// use outbox_core::{Relay, RelayConfig};
/// use outbox_dynamodb::OutboxSchema;
/// use outbox_dynamodb_relay::{
///     DynamoDbLeaseStore, DynamoDbStreamDecoder, DynamoDbStreamRunner, RunnerConfig, stream_arn_for_table,
/// };
///
/// # async fn example<S: outbox_core::EventSink, Q: outbox_core::Quarantine, F: outbox_core::Quarantine>(
/// #     dynamodb: aws_sdk_dynamodb::Client,
/// #     streams: aws_sdk_dynamodbstreams::Client,
/// #     sink: S, quarantine: Q, on_failure: F,
/// # ) -> Result<(), Box<dyn std::error::Error>> {
/// let stream_arn = stream_arn_for_table(&dynamodb, "orders").await?;
/// let runner = DynamoDbStreamRunner::new(
///     streams,
///     DynamoDbLeaseStore::new(dynamodb, "orders-relay-leases"),
///     stream_arn,
///     DynamoDbStreamDecoder::new(OutboxSchema::new("orders")),
///     Relay::new(sink, quarantine, RelayConfig::default()),
///     on_failure,
///     RunnerConfig::new("relay-1"),
/// );
/// let report = runner.run(async { tokio::signal::ctrl_c().await.unwrap_or(()) }).await?;
/// tracing::info!(published = report.published, "relay stopped");
/// # Ok(())
/// # }
/// ```
pub struct DynamoDbStreamRunner<S, Q, F> {
    streams: aws_sdk_dynamodbstreams::Client,
    leases: DynamoDbLeaseStore,
    stream_arn: String,
    decoder: DynamoDbStreamDecoder,
    relay: Relay<S, Q>,
    on_failure: F,
    config: RunnerConfig,
    report: Mutex<RunnerReport>,
}

impl<S, Q, F> std::fmt::Debug for DynamoDbStreamRunner<S, Q, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoDbStreamRunner")
            .field("stream_arn", &self.stream_arn)
            .field("leases", &self.leases)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: EventSink, Q: Quarantine, F: Quarantine> DynamoDbStreamRunner<S, Q, F> {
    /// A runner for the stream `stream_arn` (see [`stream_arn_for_table`]),
    /// keeping its leases in `leases`, relaying with `relay`, and sending
    /// records whose retries are exhausted to `on_failure`.
    pub fn new(
        streams: aws_sdk_dynamodbstreams::Client,
        leases: DynamoDbLeaseStore,
        stream_arn: impl Into<String>,
        decoder: DynamoDbStreamDecoder,
        relay: Relay<S, Q>,
        on_failure: F,
        config: RunnerConfig,
    ) -> Self {
        Self {
            streams,
            leases,
            stream_arn: stream_arn.into(),
            decoder,
            relay,
            on_failure,
            config,
            report: Mutex::new(RunnerReport::default()),
        }
    }

    /// Runs until `shutdown` completes, then finishes the batches in hand,
    /// releases the leases and reports. An `Err` is a problem no retry can
    /// fix (configuration, missing stream, access); the leases are released
    /// then too.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<RunnerReport, RunnerError> {
        self.config.validate()?;
        tracing::info!(stream_arn = %self.stream_arn, owner = %self.config.owner, "stream runner started");
        let result = host::run(&Shards(&self), &self.config.host(), shutdown).await;
        let report = self.report();
        match result {
            Ok(()) => {
                tracing::info!(%report, "stream runner stopped");
                Ok(report)
            }
            Err(error) => {
                tracing::error!(error = %DisplayErrorContext(&error), "stream runner failed");
                Err(error)
            }
        }
    }

    fn report(&self) -> RunnerReport {
        self.report.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every shard of the stream, following `LastEvaluatedShardId`.
    async fn describe_shards(&self) -> Result<Vec<StreamShard>, ReadError> {
        let mut shards = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let described = self
                .streams
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(|err| match read_error("DescribeStream", err) {
                    ReadError::Gone => ReadError::Fatal(RunnerError::StreamNotFound {
                        stream_arn: self.stream_arn.clone(),
                    }),
                    other => other,
                })?;
            let Some(description) = described.stream_description else {
                return Ok(shards);
            };
            shards.extend(description.shards().iter().filter_map(StreamShard::from_sdk));
            match description.last_evaluated_shard_id {
                Some(last) if !last.is_empty() => start = Some(last),
                _ => return Ok(shards),
            }
        }
    }
}

/// The runner's shards, as the host skeleton drives them.
struct Shards<'a, S, Q, F>(&'a DynamoDbStreamRunner<S, Q, F>);

impl<S: EventSink, Q: Quarantine, F: Quarantine> Partitions for Shards<'_, S, Q, F> {
    type Lease = Lease;
    type LeaseError = LeaseError;
    type Error = RunnerError;

    const NAME: &'static str = "shard";

    /// Lists the shards, the leases and the live runners, takes every shard
    /// that may be taken and hands over what exceeds this runner's share.
    async fn discover(&self, held: Holdings<'_>) -> Result<Plan<Lease>, RoundError<RunnerError>> {
        let runner = self.0;
        let shards = runner.describe_shards().await.map_err(|error| match error {
            ReadError::Fatal(error) => RoundError::Fatal(error),
            ReadError::Transient(reason) => RoundError::Transient(reason),
            _ => RoundError::Transient("the stream answered unexpectedly".to_owned()),
        })?;
        let leases = runner
            .leases
            .list(&runner.stream_arn)
            .await
            .map_err(lease_round_error)?;
        let runners = match runner.leases.runners(&runner.stream_arn).await {
            Ok(runners) => runners,
            Err(error) if error.is_retryable() => {
                tracing::warn!(error = %DisplayErrorContext(&error), "reading the live runners failed; counting lease holders only");
                Vec::new()
            }
            Err(error) => return Err(lease_round_error(error)),
        };
        let owner = runner.config.owner.as_str();
        let running = held.running();
        let balance = plan_leases(
            &shards,
            &leases,
            &runners,
            owner,
            &running,
            runner.leases.now_ms(),
        );
        let mut plan = Plan::default();
        // The last in id order are handed over, so that runners agree on the order.
        let mut sorted: Vec<&String> = running.iter().collect();
        sorted.sort();
        for shard_id in sorted.into_iter().rev().take(balance.shed) {
            tracing::info!(%shard_id, target = balance.target, "handing the shard over to balance the load");
            plan.finish.push(shard_id.clone());
        }
        for shard in balance.take {
            let key = ShardKey::new(&runner.stream_arn, &shard.shard_id);
            let at = Instant::now();
            let acquired = runner
                .leases
                .acquire(&key, owner, shard.parent.as_deref(), runner.config.lease_duration)
                .await;
            match acquired {
                Ok(lease) => {
                    tracing::info!(shard_id = %lease.shard_id, checkpoint = ?lease.checkpoint, "lease acquired");
                    plan.acquired.push(Acquired {
                        id: lease.shard_id.clone(),
                        lease,
                        at,
                    });
                }
                Err(LeaseError::Held { owner, .. }) => {
                    tracing::debug!(shard_id = %shard.shard_id, %owner, "shard taken by another runner");
                }
                Err(LeaseError::Finished { .. }) => {
                    tracing::debug!(shard_id = %shard.shard_id, "shard finished meanwhile");
                }
                Err(error) => return Err(lease_round_error(error)),
            }
        }
        Ok(plan)
    }

    async fn renew(&self, shard_id: &str) -> Result<(), LeaseError> {
        let runner = self.0;
        let key = ShardKey::new(&runner.stream_arn, shard_id);
        runner
            .leases
            .renew(&key, &runner.config.owner, runner.config.lease_duration)
            .await
            .map(drop)
    }

    async fn release(&self, shard_id: &str) {
        let runner = self.0;
        let key = ShardKey::new(&runner.stream_arn, shard_id);
        match runner.leases.release(&key, &runner.config.owner).await {
            Ok(()) => tracing::info!(%shard_id, "lease released"),
            Err(error) => {
                tracing::warn!(%shard_id, error = %DisplayErrorContext(&error), "releasing the lease failed; it will expire");
            }
        }
    }

    async fn work(&self, lease: Lease, stop: StopSignal) -> WorkerExit<RunnerError> {
        let span = tracing::info_span!("shard", shard_id = %lease.shard_id);
        self.0.work(lease, stop).instrument(span).await
    }

    /// Tells the other runners that this one is alive, for one lease duration.
    async fn announce(&self) {
        let runner = self.0;
        if let Err(error) = runner
            .leases
            .announce(
                &runner.stream_arn,
                &runner.config.owner,
                runner.config.lease_duration,
            )
            .await
        {
            tracing::warn!(error = %DisplayErrorContext(&error), "announcing this runner failed");
        }
    }

    async fn withdraw(&self) {
        let runner = self.0;
        if let Err(error) = runner
            .leases
            .withdraw(&runner.stream_arn, &runner.config.owner)
            .await
        {
            tracing::warn!(error = %DisplayErrorContext(&error), "withdrawing this runner failed; it will expire");
        }
    }

    fn progress(&self, held: usize) {
        let report = self.0.report();
        tracing::info!(
            shards = held,
            batches = report.batches,
            published = report.published,
            skipped = report.skipped,
            quarantined = report.quarantined,
            failed_batches = report.failed_batches,
            sent_to_on_failure = report.sent_to_on_failure,
            "progress"
        );
    }
}

/// A lease store error met during discovery.
fn lease_round_error(error: LeaseError) -> RoundError<RunnerError> {
    if error.is_retryable() {
        RoundError::Transient(DisplayErrorContext(&error).to_string())
    } else {
        RoundError::Fatal(RunnerError::Lease(error))
    }
}

mod config;
mod worker;

pub use config::{RunnerConfig, RunnerError, RunnerReport};
#[cfg(test)]
use worker::{BatchPlan, exhausted_record, next_limit, plan_batch};

#[cfg(test)]
mod tests;
