//! The standalone DynamoDB Streams runner: the relay outside Lambda (see
//! [`DynamoDbStreamRunner`]).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::error::display::DisplayErrorContext;
use futures_util::stream::{FuturesUnordered, StreamExt};
use outbox_core::{EventSink, Quarantine, Relay};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use crate::balance::{StreamShard, plan_leases};
use crate::lease::{ErrorClass, classify};
use crate::{DynamoDbLeaseStore, DynamoDbStreamDecoder, LeaseError, ShardKey};

/// The most records one `GetRecords` call returns (its `Limit` is at most
/// 1000, "DynamoDB Streams API Reference: GetRecords").
pub const MAX_GET_RECORDS_LIMIT: i32 = 1000;

/// How often a lease call that failed transiently is retried inside a batch
/// before the shard is let go (another round takes it up again).
const LEASE_CALL_RETRIES: u32 = 5;

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

/// What the coordinator tells a shard worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Run,
    Shutdown,
    Lost,
}

/// Why a shard worker ended.
#[derive(Debug)]
enum Exit {
    /// The shard is closed and done; its lease is finished.
    Finished,
    /// Shutdown: the batch in hand is checkpointed; release the lease.
    Stopped,
    /// The lease is someone else's now.
    Lost,
    /// The lease table kept failing: release and take it up again later.
    Interrupted,
    /// The run must stop.
    Fatal(RunnerError),
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

/// How often a running runner logs its counts at `info`.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// A shard being worked on.
struct Held {
    stop: watch::Sender<Stop>,
    /// Being handed over to another runner: it ends at its next batch
    /// boundary and its lease is released.
    handing_over: bool,
    /// Until when the lease is surely ours (measured from before the last
    /// successful acquire or renewal).
    valid_until: Instant,
}

type WorkerFuture<'a> = Pin<Box<dyn Future<Output = (String, Exit)> + Send + 'a>>;

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
///   record after a backoff. After [`RunnerConfig::max_batch_retries`] retries
///   of one record it goes to the on-failure destination and the checkpoint
///   moves past it, as Lambda's `MaximumRetryAttempts` and on-failure
///   destination do.
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
        let renew_every = self.config.lease_duration / 3;
        let mut shutdown = std::pin::pin!(shutdown);
        let mut held: HashMap<String, Held> = HashMap::new();
        let mut workers: FuturesUnordered<WorkerFuture<'_>> = FuturesUnordered::new();
        let mut next_discovery = Instant::now();
        let mut next_renewal = Instant::now() + renew_every;
        let mut next_progress = Instant::now() + PROGRESS_EVERY;
        let mut discovery_failures = 0u32;
        let mut failure: Option<RunnerError> = None;
        tracing::info!(stream_arn = %self.stream_arn, owner = %self.config.owner, "stream runner started");
        self.announce().await;

        loop {
            if Instant::now() >= next_discovery {
                match self.discover(&mut held, &mut workers).await {
                    Ok(()) => {
                        discovery_failures = 0;
                        next_discovery = Instant::now() + self.config.discovery_interval;
                    }
                    Err(ReadError::Fatal(error)) => {
                        failure = Some(error);
                        break;
                    }
                    Err(other) => {
                        discovery_failures += 1;
                        let reason = match other {
                            ReadError::Transient(reason) => reason,
                            _ => "the stream answered unexpectedly".to_owned(),
                        };
                        tracing::warn!(attempt = discovery_failures, error = %reason, "shard discovery failed; retrying");
                        let delay = self
                            .config
                            .backoff(discovery_failures)
                            .min(self.config.discovery_interval);
                        next_discovery = Instant::now() + delay;
                    }
                }
            }
            if Instant::now() >= next_renewal {
                if let Err(error) = self.renew_all(&mut held).await {
                    failure = Some(error);
                    break;
                }
                next_renewal = Instant::now() + renew_every;
            }
            if Instant::now() >= next_progress {
                let report = self.report.lock().unwrap_or_else(|e| e.into_inner()).clone();
                tracing::info!(
                    shards = held.len(),
                    batches = report.batches,
                    published = report.published,
                    skipped = report.skipped,
                    quarantined = report.quarantined,
                    failed_batches = report.failed_batches,
                    sent_to_on_failure = report.sent_to_on_failure,
                    "progress"
                );
                next_progress = Instant::now() + PROGRESS_EVERY;
            }
            tokio::select! {
                biased;
                () = &mut shutdown => {
                    tracing::info!(shards = held.len(), "shutdown requested");
                    break;
                }
                Some((shard_id, exit)) = workers.next(), if !workers.is_empty() => {
                    if matches!(exit, Exit::Finished) {
                        next_discovery = Instant::now();
                    }
                    if let Some(error) = self.worker_ended(&mut held, shard_id, exit).await {
                        failure = Some(error);
                        break;
                    }
                }
                () = tokio::time::sleep_until(next_discovery.min(next_renewal)) => {}
            }
        }

        // Let every worker finish its batch in hand, keeping the leases alive meanwhile.
        for shard in held.values() {
            shard.stop.send_if_modified(|stop| {
                let running = *stop == Stop::Run;
                if running {
                    *stop = Stop::Shutdown;
                }
                running
            });
        }
        while !workers.is_empty() {
            tokio::select! {
                Some((shard_id, exit)) = workers.next() => {
                    if let Some(error) = self.worker_ended(&mut held, shard_id, exit).await {
                        failure.get_or_insert(error);
                    }
                }
                () = tokio::time::sleep_until(next_renewal) => {
                    if let Err(error) = self.renew_all(&mut held).await {
                        tracing::error!(error = %DisplayErrorContext(&error), "renewing leases failed during shutdown");
                    }
                    next_renewal = Instant::now() + renew_every;
                }
            }
        }
        if let Err(error) = self.leases.withdraw(&self.stream_arn, &self.config.owner).await {
            tracing::warn!(error = %DisplayErrorContext(&error), "withdrawing this runner failed; it will expire");
        }
        let report = self.report.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match failure {
            Some(error) => {
                tracing::error!(error = %DisplayErrorContext(&error), "stream runner failed");
                Err(error)
            }
            None => {
                tracing::info!(?report, "stream runner stopped");
                Ok(report)
            }
        }
    }

    /// Lists the shards and leases, and takes every shard that may be taken.
    async fn discover<'a>(
        &'a self,
        held: &mut HashMap<String, Held>,
        workers: &mut FuturesUnordered<WorkerFuture<'a>>,
    ) -> Result<(), ReadError> {
        let shards = self.describe_shards().await?;
        let leases = self
            .leases
            .list(&self.stream_arn)
            .await
            .map_err(lease_read_error)?;
        let runners = match self.leases.runners(&self.stream_arn).await {
            Ok(runners) => runners,
            Err(error) if error.is_retryable() => {
                tracing::warn!(error = %DisplayErrorContext(&error), "reading the live runners failed; counting lease holders only");
                Vec::new()
            }
            Err(error) => return Err(lease_read_error(error)),
        };
        let now_ms = self.leases.now_ms();
        let mine: HashSet<String> = held
            .iter()
            .filter(|(_, h)| !h.handing_over)
            .map(|(id, _)| id.clone())
            .collect();
        let plan = plan_leases(&shards, &leases, &runners, &self.config.owner, &mine, now_ms);
        if plan.shed > 0 {
            self.hand_over(held, plan.shed, plan.target);
        }
        for shard in plan.take {
            let key = ShardKey::new(&self.stream_arn, &shard.shard_id);
            let started = Instant::now();
            let acquired = self
                .leases
                .acquire(
                    &key,
                    &self.config.owner,
                    shard.parent.as_deref(),
                    self.config.lease_duration,
                )
                .await;
            match acquired {
                Ok(lease) => {
                    tracing::info!(shard_id = %lease.shard_id, checkpoint = ?lease.checkpoint, "lease acquired");
                    let (stop, stopped) = watch::channel(Stop::Run);
                    held.insert(
                        shard.shard_id.clone(),
                        Held {
                            stop,
                            handing_over: false,
                            valid_until: started + self.config.lease_duration,
                        },
                    );
                    let span = tracing::info_span!("shard", shard_id = %lease.shard_id);
                    workers.push(Box::pin(self.work(lease, stopped).instrument(span)));
                }
                Err(LeaseError::Held { owner, .. }) => {
                    tracing::debug!(shard_id = %shard.shard_id, %owner, "shard taken by another runner");
                }
                Err(LeaseError::Finished { .. }) => {
                    tracing::debug!(shard_id = %shard.shard_id, "shard finished meanwhile");
                }
                Err(error) => return Err(lease_read_error(error)),
            }
        }
        Ok(())
    }

    /// Asks `count` of the held shards (the last in id order) to end at their
    /// next batch boundary, so their leases are released for a runner short
    /// of its share.
    fn hand_over(&self, held: &mut HashMap<String, Held>, count: usize, target: usize) {
        let mut ids: Vec<&String> = held
            .iter()
            .filter(|(_, h)| !h.handing_over && *h.stop.borrow() == Stop::Run)
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        let chosen: Vec<String> = ids.into_iter().rev().take(count).cloned().collect();
        for shard_id in chosen {
            if let Some(shard) = held.get_mut(&shard_id) {
                tracing::info!(%shard_id, target, "handing the shard over to balance the load");
                shard.handing_over = true;
                shard.stop.send_replace(Stop::Shutdown);
            }
        }
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

    /// Renews every lease held; a lost one, or one that could not be renewed
    /// in time, stops its worker.
    async fn renew_all(&self, held: &mut HashMap<String, Held>) -> Result<(), RunnerError> {
        self.announce().await;
        for (shard_id, shard) in held.iter_mut() {
            if *shard.stop.borrow() == Stop::Lost {
                continue;
            }
            let key = ShardKey::new(&self.stream_arn, shard_id);
            let started = Instant::now();
            match self
                .leases
                .renew(&key, &self.config.owner, self.config.lease_duration)
                .await
            {
                Ok(_) => shard.valid_until = started + self.config.lease_duration,
                Err(LeaseError::LostLease { owner, .. }) => {
                    tracing::warn!(%shard_id, new_owner = ?owner, "lease lost; stopping the shard");
                    shard.stop.send_replace(Stop::Lost);
                }
                Err(error) if error.is_retryable() => {
                    let expiring = Instant::now() + self.config.lease_duration / 3 >= shard.valid_until;
                    tracing::warn!(%shard_id, expiring, error = %DisplayErrorContext(&error), "lease renewal failed");
                    if expiring {
                        shard.stop.send_replace(Stop::Lost);
                    }
                }
                Err(error) => return Err(RunnerError::Lease(error)),
            }
        }
        Ok(())
    }

    /// Tells the other runners that this one is alive, for one lease duration.
    async fn announce(&self) {
        if let Err(error) = self
            .leases
            .announce(&self.stream_arn, &self.config.owner, self.config.lease_duration)
            .await
        {
            tracing::warn!(error = %DisplayErrorContext(&error), "announcing this runner failed");
        }
    }

    /// Handles a worker's end: releases the lease when it is still ours and
    /// the shard is not finished. Returns the run's error, if it is one.
    async fn worker_ended(
        &self,
        held: &mut HashMap<String, Held>,
        shard_id: String,
        exit: Exit,
    ) -> Option<RunnerError> {
        held.remove(&shard_id);
        let (release, error) = match exit {
            Exit::Finished | Exit::Lost => (false, None),
            Exit::Stopped | Exit::Interrupted => (true, None),
            Exit::Fatal(error) => (true, Some(error)),
        };
        if release {
            let key = ShardKey::new(&self.stream_arn, &shard_id);
            match self.leases.release(&key, &self.config.owner).await {
                Ok(()) => tracing::info!(%shard_id, "lease released"),
                Err(error) => {
                    tracing::warn!(%shard_id, error = %DisplayErrorContext(&error), "releasing the lease failed; it will expire");
                }
            }
        }
        error
    }
}

/// A lease store error met during discovery.
fn lease_read_error(error: LeaseError) -> ReadError {
    if error.is_retryable() {
        ReadError::Transient(DisplayErrorContext(&error).to_string())
    } else {
        ReadError::Fatal(RunnerError::Lease(error))
    }
}

mod config;
mod worker;

pub use config::{RunnerConfig, RunnerError, RunnerReport};
#[cfg(test)]
use worker::{BatchPlan, exhausted_record, plan_batch};

#[cfg(test)]
mod tests;
