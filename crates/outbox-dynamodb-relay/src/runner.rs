//! The standalone DynamoDB Streams runner: the relay outside Lambda (see
//! [`DynamoDbStreamRunner`]).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use aws_smithy_types::error::display::DisplayErrorContext;
use futures_util::stream::{FuturesUnordered, StreamExt};
use outbox_core::{BatchOutcome, Decoded, EventSink, Quarantine, QuarantinedRecord, Relay, RelayRecord};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use crate::balance::{StreamShard, plan_leases};
use crate::lease::{ErrorClass, classify};
use crate::{DynamoDbLeaseStore, DynamoDbStreamDecoder, Lease, LeaseError, ShardKey, StreamError};

/// The most records one `GetRecords` call returns (its `Limit` is at most
/// 1000, "DynamoDB Streams API Reference: GetRecords").
pub const MAX_GET_RECORDS_LIMIT: i32 = 1000;

/// How often a lease call that failed transiently is retried inside a batch
/// before the shard is let go (another round takes it up again).
const LEASE_CALL_RETRIES: u32 = 5;

/// How often a transiently failing `DescribeTable` is retried by
/// [`stream_arn_for_table`].
const DESCRIBE_TABLE_RETRIES: u32 = 5;

/// How the runner reads, leases and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunnerConfig {
    /// This runner's identity in the lease table; unique per running process.
    pub owner: String,
    /// How long a lease lasts without renewal (renewed every third of it).
    pub lease_duration: Duration,
    /// `Limit` of each `GetRecords`, 1 to [`MAX_GET_RECORDS_LIMIT`].
    pub batch_limit: i32,
    /// Retries of a failed record before it goes to the on-failure
    /// destination (Lambda's `MaximumRetryAttempts`): it is attempted
    /// `max_batch_retries + 1` times.
    pub max_batch_retries: u32,
    /// First backoff after an empty poll, a failed batch or a transient error.
    pub backoff_initial: Duration,
    /// The backoff doubles up to this.
    pub backoff_max: Duration,
    /// How long the relay may spend on one batch, retries included.
    pub batch_deadline: Duration,
    /// How often shards are listed again.
    pub discovery_interval: Duration,
}

impl RunnerConfig {
    /// Defaults for `owner`: 10 s leases, batches of 1000, 5 retries,
    /// backoff 100 ms doubling to 2 s, 30 s per batch, discovery every 10 s.
    pub fn new(owner: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            lease_duration: Duration::from_secs(10),
            batch_limit: MAX_GET_RECORDS_LIMIT,
            max_batch_retries: 5,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            batch_deadline: Duration::from_secs(30),
            discovery_interval: Duration::from_secs(10),
        }
    }

    /// Checks the values, naming the first that is wrong.
    pub fn validate(&self) -> Result<(), RunnerError> {
        let invalid = |reason: String| Err(RunnerError::InvalidConfig { reason });
        if self.owner.is_empty() {
            return invalid("owner is empty".into());
        }
        if !(1..=MAX_GET_RECORDS_LIMIT).contains(&self.batch_limit) {
            return invalid(format!(
                "batch_limit is {}; GetRecords takes 1 to {MAX_GET_RECORDS_LIMIT}",
                self.batch_limit
            ));
        }
        if self.lease_duration < Duration::from_millis(30) {
            return invalid(format!("lease_duration {:?} is too short", self.lease_duration));
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return invalid(format!(
                "backoff must be positive and backoff_max ({:?}) at least backoff_initial ({:?})",
                self.backoff_max, self.backoff_initial
            ));
        }
        if self.batch_deadline.is_zero() || self.discovery_interval.is_zero() {
            return invalid("batch_deadline and discovery_interval must be positive".into());
        }
        Ok(())
    }

    /// The backoff before attempt `attempt` (1-based) of something that
    /// failed or found nothing: `backoff_initial * 2^(attempt-1)`, at most
    /// `backoff_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        outbox_core::Backoff {
            initial: self.backoff_initial,
            max: self.backoff_max,
        }
        .delay(attempt)
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunnerReport {
    /// Non-empty batches relayed (retries of a batch count again).
    pub batches: usize,
    /// Records in those batches (a re-read record counts again).
    pub records: usize,
    /// Events the sink accepted.
    pub published: usize,
    /// Records skipped (not outbox inserts).
    pub skipped: usize,
    /// Records quarantined by the relay (poison, oversize, refused).
    pub quarantined: usize,
    /// Batches with a record neither delivered nor quarantined.
    pub failed_batches: usize,
    /// Records sent to the on-failure destination after their retries.
    pub sent_to_on_failure: usize,
    /// Closed shards read to their end.
    pub shards_finished: usize,
}

impl std::fmt::Display for RunnerReport {
    /// One line for people: `12 batches, 3,000 records: 2,990 published, ...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} batches, {} records: {} published, {} skipped, {} quarantined; {} failed batches, \
             {} sent to the on-failure queue, {} shards finished",
            self.batches,
            self.records,
            self.published,
            self.skipped,
            self.quarantined,
            self.failed_batches,
            self.sent_to_on_failure,
            self.shards_finished
        )
    }
}

/// Why a run stopped with an error. Transient errors (throttling, 5xx,
/// timeouts) never end a run: they are retried with backoff.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// A [`RunnerConfig`] value is unusable.
    #[error("invalid runner configuration: {reason}")]
    InvalidConfig {
        /// Which value, and why.
        reason: String,
    },
    /// A stream record cannot be relayed with this configuration (e.g. a
    /// `KEYS_ONLY` stream).
    #[error("stream records cannot be relayed with this configuration")]
    Decode(#[source] StreamError),
    /// The stream does not exist (wrong ARN, or the stream was disabled and
    /// replaced).
    #[error("stream {stream_arn} not found")]
    StreamNotFound {
        /// The ARN given.
        stream_arn: String,
    },
    /// The table does not exist.
    #[error("table {table} not found")]
    TableNotFound {
        /// The table name.
        table: String,
    },
    /// The table has no stream enabled.
    #[error("table {table} has no stream enabled")]
    NoStream {
        /// The table name.
        table: String,
    },
    /// The table's stream does not carry new images.
    #[error(
        "the stream of table {table} has view type {view_type}; the relay needs NEW_IMAGE or NEW_AND_OLD_IMAGES"
    )]
    StreamViewType {
        /// The table name.
        table: String,
        /// The stream's view type.
        view_type: String,
    },
    /// The credentials may not make a call.
    #[error("{operation} was denied ({code})")]
    AccessDenied {
        /// The API operation.
        operation: &'static str,
        /// The service's error code.
        code: String,
    },
    /// The service refused a call as it is.
    #[error("{operation} was rejected: {code}: {message}")]
    Rejected {
        /// The API operation.
        operation: &'static str,
        /// The service's error code.
        code: String,
        /// The service's message.
        message: String,
    },
    /// A call kept failing transiently where the runner could not wait
    /// (looking up the stream before the run).
    #[error("{operation} kept failing")]
    Unavailable {
        /// The API operation.
        operation: &'static str,
        /// The last error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The lease store failed in a way retrying cannot fix (missing table,
    /// access denied, malformed lease).
    #[error("the lease store failed")]
    Lease(#[source] LeaseError),
}

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

/// What to checkpoint after a relayed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BatchPlan {
    /// Every record is done: checkpoint the last.
    Done { checkpoint: String },
    /// The record at index `failed` is not done: checkpoint the one before
    /// it (if any) and read again from it.
    Failed {
        checkpoint: Option<String>,
        failed: usize,
    },
}

/// The plan for a non-empty batch and its outcome's `first_failure`. A
/// failure position that is not in the batch (which the relay never reports)
/// retries the whole batch.
fn plan_batch(records: &[RelayRecord], first_failure: Option<&str>) -> Option<BatchPlan> {
    let last = records.last()?;
    Some(match first_failure {
        None => BatchPlan::Done {
            checkpoint: last.position.clone(),
        },
        Some(position) => {
            let failed = records.iter().position(|r| r.position == position).unwrap_or(0);
            BatchPlan::Failed {
                checkpoint: failed.checked_sub(1).map(|i| records[i].position.clone()),
                failed,
            }
        }
    })
}

/// What goes to the on-failure destination for a record whose retries are
/// exhausted.
fn exhausted_record(record: &RelayRecord, attempts: u32, deadline_reached: bool) -> QuarantinedRecord {
    let (event, raw, why) = match &record.decoded {
        Decoded::Event(event) => (
            Some((**event).clone()),
            None,
            if deadline_reached {
                "the batch deadline passed before the sink accepted the event"
            } else {
                "the sink did not accept the event"
            },
        ),
        Decoded::Poison { raw, .. } => (
            None,
            Some(raw.clone()),
            "the quarantine did not accept the poison record",
        ),
        Decoded::Skip(_) => (None, None, "the record was not done"),
    };
    QuarantinedRecord {
        position: record.position.clone(),
        reason: format!("retries exhausted after {attempts} attempts: {why}"),
        event,
        raw,
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

    /// Works one shard until it is finished, its lease is lost, or the run stops.
    async fn work(&self, lease: Lease, mut stop: watch::Receiver<Stop>) -> (String, Exit) {
        let exit = self.work_shard(&lease, &mut stop).await;
        tracing::debug!(?exit, "shard worker ended");
        (lease.shard_id, exit)
    }

    async fn work_shard(&self, lease: &Lease, stop: &mut watch::Receiver<Stop>) -> Exit {
        let key = ShardKey::new(&self.stream_arn, &lease.shard_id);
        let owner = self.config.owner.as_str();
        let mut start = lease.checkpoint.clone().map_or(Start::TrimHorizon, Start::After);
        let mut iterator: Option<String> = None;
        let mut idle = 0u32;
        let mut errors = 0u32;
        loop {
            let state = *stop.borrow();
            match state {
                Stop::Run => {}
                Stop::Shutdown => return Exit::Stopped,
                Stop::Lost => return Exit::Lost,
            }
            let current = match iterator.take() {
                Some(current) => current,
                None => match self.shard_iterator(&key.shard_id, &start).await {
                    Ok(Some(current)) => current,
                    Ok(None) => {
                        tracing::info!(start = ?start, "no iterator for the shard: it is closed and read");
                        return self.finish(&key, stop).await;
                    }
                    Err(ReadError::Trimmed) if start != Start::TrimHorizon => {
                        tracing::warn!(
                            shard_id = %key.shard_id,
                            start = ?start,
                            "records after the checkpoint were trimmed before they were read; restarting at TRIM_HORIZON"
                        );
                        start = Start::TrimHorizon;
                        continue;
                    }
                    Err(ReadError::Gone) => {
                        tracing::warn!(shard_id = %key.shard_id, "shard no longer in the stream; finishing it");
                        return self.finish(&key, stop).await;
                    }
                    Err(ReadError::Fatal(error)) => return Exit::Fatal(error),
                    Err(other) => {
                        errors += 1;
                        self.transient("GetShardIterator", errors, other, stop).await;
                        continue;
                    }
                },
            };
            let page = match self
                .streams
                .get_records()
                .shard_iterator(&current)
                .limit(self.config.batch_limit)
                .send()
                .await
            {
                Ok(page) => page,
                Err(err) => match read_error("GetRecords", err) {
                    ReadError::Expired => {
                        tracing::debug!(start = ?start, "shard iterator expired; getting a new one");
                        continue;
                    }
                    ReadError::Trimmed => {
                        tracing::warn!(
                            shard_id = %key.shard_id,
                            start = ?start,
                            "records were trimmed before they were read; restarting at TRIM_HORIZON"
                        );
                        start = Start::TrimHorizon;
                        continue;
                    }
                    ReadError::Gone => {
                        tracing::warn!(shard_id = %key.shard_id, "shard no longer in the stream; finishing it");
                        return self.finish(&key, stop).await;
                    }
                    ReadError::Fatal(error) => return Exit::Fatal(error),
                    other @ ReadError::Transient(_) => {
                        errors += 1;
                        iterator = Some(current);
                        self.transient("GetRecords", errors, other, stop).await;
                        continue;
                    }
                },
            };
            errors = 0;
            let next = page.next_shard_iterator;
            let records = page.records.unwrap_or_default();
            if records.is_empty() {
                match next {
                    None => return self.finish(&key, stop).await,
                    Some(next) => {
                        iterator = Some(next);
                        idle += 1;
                        pause(self.config.backoff(idle), stop).await;
                        continue;
                    }
                }
            }
            idle = 0;
            let decoded = match records
                .iter()
                .map(|record| self.decoder.decode_stream_record(record))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(decoded) => decoded,
                Err(error) => return Exit::Fatal(RunnerError::Decode(error)),
            };
            let span = tracing::info_span!("batch", records = decoded.len());
            let outcome = self
                .relay
                .relay(&decoded, Some(Instant::now() + self.config.batch_deadline))
                .instrument(span)
                .await;
            self.count(&outcome);
            let Some(plan) = plan_batch(&decoded, outcome.first_failure.as_deref()) else {
                continue;
            };
            match plan {
                BatchPlan::Done { checkpoint } => {
                    if let Err(exit) = self
                        .lease_call(stop, || self.leases.checkpoint(&key, owner, &checkpoint))
                        .await
                    {
                        return exit;
                    }
                    tracing::debug!(%checkpoint, records = decoded.len(), published = outcome.published, "batch done");
                    start = Start::After(checkpoint);
                    match next {
                        Some(next) => iterator = Some(next),
                        None => return self.finish(&key, stop).await,
                    }
                }
                BatchPlan::Failed { checkpoint, failed } => {
                    if let Some(checkpoint) = checkpoint
                        && let Err(exit) = self
                            .lease_call(stop, || self.leases.checkpoint(&key, owner, &checkpoint))
                            .await
                    {
                        return exit;
                    }
                    let record = &decoded[failed];
                    let position = record.position.as_str();
                    let attempts = match self
                        .lease_call(stop, || self.leases.record_failure(&key, owner, position))
                        .await
                    {
                        Ok(attempts) => attempts,
                        Err(exit) => return exit,
                    };
                    if attempts > self.config.max_batch_retries {
                        let exhausted = exhausted_record(record, attempts, outcome.deadline_reached);
                        match self.on_failure.quarantine(&exhausted).await {
                            Ok(()) => {
                                tracing::warn!(%position, attempts, reason = %exhausted.reason, "sent to the on-failure destination");
                                self.report
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .sent_to_on_failure += 1;
                                if let Err(exit) = self
                                    .lease_call(stop, || self.leases.checkpoint(&key, owner, position))
                                    .await
                                {
                                    return exit;
                                }
                                start = Start::After(position.to_owned());
                            }
                            Err(error) => {
                                tracing::error!(%position, attempts, error = %error, "on-failure destination refused the record; retrying");
                                start = Start::At(position.to_owned());
                                pause(self.config.backoff(attempts), stop).await;
                            }
                        }
                    } else {
                        tracing::warn!(
                            %position,
                            attempts,
                            failed = outcome.failed,
                            deadline_reached = outcome.deadline_reached,
                            "batch failed; reading again from the failed record"
                        );
                        start = Start::At(position.to_owned());
                        pause(self.config.backoff(attempts), stop).await;
                    }
                }
            }
        }
    }

    /// A new iterator for `shard_id` at `start`.
    async fn shard_iterator(&self, shard_id: &str, start: &Start) -> Result<Option<String>, ReadError> {
        let (kind, sequence_number) = match start {
            Start::TrimHorizon => (ShardIteratorType::TrimHorizon, None),
            Start::After(s) => (ShardIteratorType::AfterSequenceNumber, Some(s.clone())),
            Start::At(s) => (ShardIteratorType::AtSequenceNumber, Some(s.clone())),
        };
        self.streams
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard_id)
            .shard_iterator_type(kind)
            .set_sequence_number(sequence_number)
            .send()
            .await
            .map(|out| out.shard_iterator)
            .map_err(|err| read_error("GetShardIterator", err))
    }

    /// Logs a transient read failure and backs off.
    async fn transient(
        &self,
        operation: &'static str,
        attempt: u32,
        error: ReadError,
        stop: &mut watch::Receiver<Stop>,
    ) {
        let reason = match error {
            ReadError::Transient(reason) => reason,
            ReadError::Trimmed => "TRIM_HORIZON is trimmed".to_owned(),
            ReadError::Expired => "the iterator expired at once".to_owned(),
            _ => "unexpected answer".to_owned(),
        };
        tracing::warn!(operation, attempt, error = %reason, "stream read failed; retrying");
        pause(self.config.backoff(attempt), stop).await;
    }

    /// Marks the shard finished.
    async fn finish(&self, key: &ShardKey, stop: &watch::Receiver<Stop>) -> Exit {
        match self
            .lease_call(stop, || self.leases.finish(key, &self.config.owner))
            .await
        {
            Ok(()) => {
                tracing::info!(shard_id = %key.shard_id, "shard finished");
                self.report
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .shards_finished += 1;
                Exit::Finished
            }
            Err(exit) => exit,
        }
    }

    /// Calls the lease store, retrying transient failures a few times (not
    /// cut short by shutdown: the batch in hand is to be checkpointed).
    async fn lease_call<T, Fut>(
        &self,
        stop: &watch::Receiver<Stop>,
        mut call: impl FnMut() -> Fut,
    ) -> Result<T, Exit>
    where
        Fut: Future<Output = Result<T, LeaseError>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(LeaseError::LostLease { shard_id, owner }) => {
                    tracing::warn!(%shard_id, new_owner = ?owner, "lease lost; stopping the shard");
                    return Err(Exit::Lost);
                }
                Err(error) if error.is_retryable() && attempt < LEASE_CALL_RETRIES => {
                    attempt += 1;
                    tracing::warn!(attempt, error = %DisplayErrorContext(&error), "lease call failed; retrying");
                    tokio::time::sleep(self.config.backoff(attempt)).await;
                    if *stop.borrow() == Stop::Lost {
                        return Err(Exit::Lost);
                    }
                }
                Err(error) if error.is_retryable() => {
                    tracing::warn!(error = %DisplayErrorContext(&error), "lease table keeps failing; letting the shard go");
                    return Err(Exit::Interrupted);
                }
                Err(error) => return Err(Exit::Fatal(RunnerError::Lease(error))),
            }
        }
    }

    fn count(&self, outcome: &BatchOutcome) {
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        report.batches += 1;
        report.records += outcome.records;
        report.published += outcome.published;
        report.skipped += outcome.skipped;
        report.quarantined += outcome.quarantined;
        if outcome.first_failure.is_some() {
            report.failed_batches += 1;
        }
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

/// Sleeps for `delay`, or less if the coordinator says stop.
async fn pause(delay: Duration, stop: &mut watch::Receiver<Stop>) {
    if *stop.borrow_and_update() != Stop::Run {
        return;
    }
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        _ = stop.changed() => {}
    }
}

#[cfg(test)]
mod tests;
