//! The runner's settings, its report and its errors.

use std::time::Duration;

use outbox_core::Backoff;
use outbox_core::host::{HostConfig, instance_owner};

use crate::{LeaseError, StreamError};

use super::MAX_GET_RECORDS_LIMIT;

/// How the runner reads, leases and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunnerConfig {
    /// This runner's identity in the lease table; unique per running
    /// process ([`new`](Self::new) makes it so).
    pub owner: String,
    /// How long a lease lasts without renewal (renewed every third of it).
    pub lease_duration: Duration,
    /// The largest `Limit` of a `GetRecords`, 1 to
    /// [`MAX_GET_RECORDS_LIMIT`]. Each shard's worker halves its limit
    /// (down to 10) after a batch that reached `batch_deadline` and doubles
    /// it back after a full batch that took less than half of it.
    pub batch_limit: i32,
    /// How long a record may keep failing, from its first failure (by any
    /// runner), before it goes to the on-failure destination, as Lambda's
    /// `MaximumRecordAgeInSeconds` does. Time rather than attempts, so that
    /// a bus outage shorter than this sends nothing there.
    pub retry_budget: Duration,
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
    /// Defaults for a runner named `name` (its owner id is the name with
    /// a per-process part, [`instance_owner`]): 10 s leases, batches of
    /// up to 1000, a failing record retried for 15 minutes, backoff 100 ms
    /// doubling to 2 s, 30 s per batch, discovery every 10 s.
    pub fn new(name: &str) -> Self {
        Self {
            owner: instance_owner(name),
            lease_duration: Duration::from_secs(10),
            batch_limit: MAX_GET_RECORDS_LIMIT,
            retry_budget: Duration::from_secs(15 * 60),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            batch_deadline: Duration::from_secs(30),
            discovery_interval: Duration::from_secs(10),
        }
    }

    /// Checks the values, naming the first that is wrong.
    pub fn validate(&self) -> Result<(), RunnerError> {
        let invalid = |reason: String| Err(RunnerError::InvalidConfig { reason });
        if !(1..=MAX_GET_RECORDS_LIMIT).contains(&self.batch_limit) {
            return invalid(format!(
                "batch_limit is {}; GetRecords takes 1 to {MAX_GET_RECORDS_LIMIT}",
                self.batch_limit
            ));
        }
        self.host().validate().or_else(invalid)
    }

    /// The backoff before attempt `attempt` (1-based) of something that
    /// failed or found nothing: `backoff_initial * 2^(attempt-1)`, at most
    /// `backoff_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.backoffs().delay(attempt)
    }

    /// The backoff of every wait.
    pub(crate) fn backoffs(&self) -> Backoff {
        Backoff {
            initial: self.backoff_initial,
            max: self.backoff_max,
        }
    }

    /// The settings the host skeleton reads.
    pub(crate) fn host(&self) -> HostConfig {
        HostConfig {
            owner: self.owner.clone(),
            lease_duration: self.lease_duration,
            backoff_initial: self.backoff_initial,
            backoff_max: self.backoff_max,
            batch_deadline: self.batch_deadline,
            discovery_interval: self.discovery_interval,
        }
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
    /// Events read again after a failure that this runner had delivered:
    /// not published again.
    pub already_delivered: usize,
    /// Records quarantined by the relay (poison, oversize, refused).
    pub quarantined: usize,
    /// Batches with a record neither delivered nor quarantined.
    pub failed_batches: usize,
    /// Records sent to the on-failure destination after their retries.
    pub sent_to_on_failure: usize,
    /// Closed shards read to their end.
    pub shards_finished: usize,
    /// The longest time the relay spent on one batch; at most
    /// [`RunnerConfig::batch_deadline`].
    pub longest_batch: Duration,
}

impl std::fmt::Display for RunnerReport {
    /// One line for people: `12 batches, 3,000 records: 2,990 published, ...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} batches, {} records: {} published, {} skipped, {} quarantined, {} already delivered; \
             {} failed batches, {} sent to the on-failure queue, {} shards finished; longest batch {:.1} s",
            self.batches,
            self.records,
            self.published,
            self.skipped,
            self.quarantined,
            self.already_delivered,
            self.failed_batches,
            self.sent_to_on_failure,
            self.shards_finished,
            self.longest_batch.as_secs_f64()
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
    Lease(#[from] LeaseError),
}
