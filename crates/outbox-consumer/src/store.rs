//! [`IdempotencyStore`]: the idempotency table, one record per processed
//! event id, and [`create_idempotency_table`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters as _;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, Put,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem,
};
use chrono::{DateTime, TimeDelta, Utc};
use outbox_core::{Clock, SystemClock};

use crate::ConsumerError;
use crate::error::sdk_error;

/// A DynamoDB item.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// Partition key (S): `<scope>#<event id>`.
pub const ATTR_KEY: &str = "pk";
/// Record state (S): [`STATUS_IN_PROGRESS`] or [`STATUS_COMPLETED`].
pub const ATTR_STATUS: &str = "status";
/// When an in-progress claim expires (N, epoch milliseconds); after it,
/// another delivery may take the event over.
pub const ATTR_EXPIRES_AT: &str = "expires_at";
/// When DynamoDB may delete the record (N, epoch seconds): the table's TTL
/// attribute. A record past it counts as absent even before TTL removes it.
pub const ATTR_TTL: &str = "ttl";
/// The handler's result as JSON text (S), on completed records.
pub const ATTR_RESULT: &str = "result";
/// [`ATTR_STATUS`] of a record whose handler is running.
pub const STATUS_IN_PROGRESS: &str = "IN_PROGRESS";
/// [`ATTR_STATUS`] of a record whose handler finished (or whose transaction committed).
pub const STATUS_COMPLETED: &str = "COMPLETED";

/// How long an in-progress claim holds by default. Set it (with
/// [`IdempotencyStore::with_in_progress_expiry`]) to at least the longest a
/// handler can run, e.g. the Lambda function's timeout: a claim that expires
/// while its handler still runs lets a duplicate delivery run it again.
pub const DEFAULT_IN_PROGRESS_EXPIRY: Duration = Duration::from_secs(60);

/// How long a completed record is kept by default: 7 days, the outbox
/// items' default retention, so that replaying any event still in the
/// outbox is absorbed.
pub const DEFAULT_COMPLETED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most actions in one `TransactWriteItems` request: the DynamoDB API
/// reference documents up to 100 actions per transaction (it was 25 before
/// September 2022). The idempotency record counts as one of them.
pub const MAX_TRANSACT_ITEMS: usize = 100;

/// How many times [`IdempotencyStore::claim`] tries when the record changes
/// between its conditional put and the read that explains a refusal.
const MAX_CLAIM_ATTEMPTS: usize = 3;

/// How long [`create_idempotency_table`] waits for a new table to become active.
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// The state of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordStatus {
    /// A handler is running (or crashed before its claim expired).
    InProgress,
    /// The event was processed.
    Completed,
}

/// One record of the idempotency table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdempotencyRecord {
    /// The key, `<scope>#<event id>`.
    pub key: String,
    /// In progress or completed.
    pub status: RecordStatus,
    /// When an in-progress claim expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// When DynamoDB may delete the record (epoch seconds).
    pub ttl: Option<i64>,
    /// The handler's result as JSON text (completed records written by
    /// [`IdempotencyStore::complete`]; the transactional marker has none).
    pub result: Option<String>,
}

impl IdempotencyRecord {
    /// Decodes an item of the idempotency table.
    pub(crate) fn from_item(item: &Item) -> Result<Self, ConsumerError> {
        let key = match item.get(ATTR_KEY) {
            Some(AttributeValue::S(k)) => k.clone(),
            _ => {
                return Err(ConsumerError::MalformedRecord {
                    key: String::new(),
                    reason: format!("attribute `{ATTR_KEY}` is missing or not a string"),
                });
            }
        };
        let malformed = |reason: String| ConsumerError::MalformedRecord {
            key: key.clone(),
            reason,
        };
        let status = match item.get(ATTR_STATUS) {
            Some(AttributeValue::S(s)) if s == STATUS_IN_PROGRESS => RecordStatus::InProgress,
            Some(AttributeValue::S(s)) if s == STATUS_COMPLETED => RecordStatus::Completed,
            Some(AttributeValue::S(s)) => return Err(malformed(format!("unknown status {s:?}"))),
            _ => {
                return Err(malformed(format!(
                    "attribute `{ATTR_STATUS}` is missing or not a string"
                )));
            }
        };
        let number = |name: &str| -> Result<Option<i64>, ConsumerError> {
            match item.get(name) {
                None | Some(AttributeValue::Null(_)) => Ok(None),
                Some(AttributeValue::N(n)) => n
                    .parse::<i64>()
                    .map(Some)
                    .map_err(|e| malformed(format!("attribute `{name}` is not an integer: {e}"))),
                Some(_) => Err(malformed(format!("attribute `{name}` is not a number"))),
            }
        };
        let expires_at = number(ATTR_EXPIRES_AT)?.and_then(DateTime::from_timestamp_millis);
        let ttl = number(ATTR_TTL)?;
        let result = match item.get(ATTR_RESULT) {
            None | Some(AttributeValue::Null(_)) => None,
            Some(AttributeValue::S(s)) => Some(s.clone()),
            Some(_) => return Err(malformed(format!("attribute `{ATTR_RESULT}` is not a string"))),
        };
        if status == RecordStatus::InProgress && expires_at.is_none() {
            return Err(malformed(format!(
                "an in-progress record needs `{ATTR_EXPIRES_AT}`"
            )));
        }
        Ok(Self {
            key,
            status,
            expires_at,
            ttl,
            result,
        })
    }

    /// What this record means at `now`: the same rule as the claim's
    /// condition expression.
    pub(crate) fn state_at(&self, now: DateTime<Utc>) -> RecordState {
        if self.ttl.is_some_and(|ttl| ttl < now.timestamp()) {
            return RecordState::Absent;
        }
        match self.status {
            RecordStatus::Completed => RecordState::Completed,
            RecordStatus::InProgress => match self.expires_at {
                Some(at) if at > now => RecordState::InProgress(at),
                _ => RecordState::Absent,
            },
        }
    }
}

/// What a record means at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordState {
    /// No record, or one that no longer counts (expired claim, past TTL).
    Absent,
    /// A live claim, until the time given.
    InProgress(DateTime<Utc>),
    /// Processed.
    Completed,
}

/// The answer of [`IdempotencyStore::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// This caller holds the event until `expires_at`: run the handler, then
    /// [`complete`](IdempotencyStore::complete) or
    /// [`release`](IdempotencyStore::release).
    Claimed {
        /// When the claim expires.
        expires_at: DateTime<Utc>,
    },
    /// Another delivery holds the event until `expires_at`.
    InProgress {
        /// When its claim expires.
        expires_at: DateTime<Utc>,
    },
    /// The event was processed; the record holds the result.
    Completed(IdempotencyRecord),
}

/// The claim's condition: no record, or one that no longer counts (past its
/// TTL, or an in-progress claim past its expiry).
const CLAIM_CONDITION: &str =
    "attribute_not_exists(#pk) OR #ttl < :now_s OR (#status = :in_progress AND #expires_at < :now_ms)";

/// The idempotency table: one record per processed event id, scoped by
/// consumer so that several consumers can share one table.
///
/// # Schema
///
/// | attribute | type | value |
/// |---|---|---|
/// | `pk` (partition key) | S | `<scope>#<event id>` |
/// | `status` | S | `IN_PROGRESS` or `COMPLETED` |
/// | `expires_at` | N | in-progress records: when the claim expires (epoch milliseconds) |
/// | `ttl` | N | when DynamoDB may delete the record (epoch seconds; the table's TTL attribute) |
/// | `result` | S | completed records: the handler's result as JSON text |
///
/// The table needs only the partition key `pk` (S); turn TTL on for `ttl`.
/// [`create_idempotency_table`] makes one.
#[derive(Clone)]
pub struct IdempotencyStore {
    client: Client,
    table: String,
    scope: String,
    in_progress_expiry: TimeDelta,
    completed_ttl: TimeDelta,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for IdempotencyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyStore")
            .field("table", &self.table)
            .field("scope", &self.scope)
            .field("in_progress_expiry", &self.in_progress_expiry)
            .field("completed_ttl", &self.completed_ttl)
            .finish_non_exhaustive()
    }
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

impl IdempotencyStore {
    /// The records of consumer `scope` (e.g. `billing`) in `table`, with the
    /// default expiry ([`DEFAULT_IN_PROGRESS_EXPIRY`]) and retention
    /// ([`DEFAULT_COMPLETED_TTL`]).
    pub fn new(client: Client, table: impl Into<String>, scope: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            scope: scope.into(),
            in_progress_expiry: delta(DEFAULT_IN_PROGRESS_EXPIRY),
            completed_ttl: delta(DEFAULT_COMPLETED_TTL),
            clock: Arc::new(SystemClock),
        }
    }

    /// How long a claim holds: at least the longest a handler runs.
    #[must_use]
    pub fn with_in_progress_expiry(mut self, expiry: Duration) -> Self {
        self.in_progress_expiry = delta(expiry);
        self
    }

    /// How long records are kept (the `ttl` attribute): at least as long as
    /// duplicates can arrive, replays included.
    #[must_use]
    pub fn with_completed_ttl(mut self, ttl: Duration) -> Self {
        self.completed_ttl = delta(ttl);
        self
    }

    /// Uses `clock` for expiries and TTLs (a `FixedClock` in tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The consumer's scope.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The record key of event `id`: `<scope>#<id>`.
    pub fn key(&self, id: &str) -> Result<String, ConsumerError> {
        if id.trim().is_empty() {
            return Err(ConsumerError::Invalid {
                reason: "the event id is empty".into(),
            });
        }
        Ok(format!("{}#{id}", self.scope))
    }

    fn ttl_at(&self, now: DateTime<Utc>) -> i64 {
        now.checked_add_signed(self.completed_ttl)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
            .timestamp()
    }

    /// The item of a fresh claim at `now`.
    pub(crate) fn in_progress_item(&self, key: &str, now: DateTime<Utc>) -> (Item, DateTime<Utc>) {
        let expires_at = now
            .checked_add_signed(self.in_progress_expiry)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let item = HashMap::from([
            (ATTR_KEY.to_owned(), AttributeValue::S(key.to_owned())),
            (
                ATTR_STATUS.to_owned(),
                AttributeValue::S(STATUS_IN_PROGRESS.into()),
            ),
            (
                ATTR_EXPIRES_AT.to_owned(),
                AttributeValue::N(expires_at.timestamp_millis().to_string()),
            ),
            (
                ATTR_TTL.to_owned(),
                AttributeValue::N(self.ttl_at(now).to_string()),
            ),
        ]);
        (item, expires_at)
    }

    /// The item of a completed record at `now`.
    pub(crate) fn completed_item(&self, key: &str, now: DateTime<Utc>, result: Option<&str>) -> Item {
        let mut item = HashMap::from([
            (ATTR_KEY.to_owned(), AttributeValue::S(key.to_owned())),
            (ATTR_STATUS.to_owned(), AttributeValue::S(STATUS_COMPLETED.into())),
            (
                ATTR_TTL.to_owned(),
                AttributeValue::N(self.ttl_at(now).to_string()),
            ),
        ]);
        if let Some(result) = result {
            item.insert(ATTR_RESULT.to_owned(), AttributeValue::S(result.to_owned()));
        }
        item
    }

    /// Claims event `id` for this caller: a conditional put of an in-progress
    /// record that succeeds only if there is no record, or one that no longer
    /// counts (an in-progress claim past its expiry, a record past its TTL).
    /// When the put is refused, says why: a live claim of another delivery,
    /// or the completed record.
    pub async fn claim(&self, id: &str) -> Result<Claim, ConsumerError> {
        let key = self.key(id)?;
        let mut last_seen = self.clock.now();
        for _ in 0..MAX_CLAIM_ATTEMPTS {
            let now = self.clock.now();
            let (item, expires_at) = self.in_progress_item(&key, now);
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(CLAIM_CONDITION)
                .expression_attribute_names("#pk", ATTR_KEY)
                .expression_attribute_names("#ttl", ATTR_TTL)
                .expression_attribute_names("#status", ATTR_STATUS)
                .expression_attribute_names("#expires_at", ATTR_EXPIRES_AT)
                .expression_attribute_values(":now_s", AttributeValue::N(now.timestamp().to_string()))
                .expression_attribute_values(":now_ms", AttributeValue::N(now.timestamp_millis().to_string()))
                .expression_attribute_values(":in_progress", AttributeValue::S(STATUS_IN_PROGRESS.into()))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            let refused_with = match put {
                Ok(_) => {
                    tracing::debug!(key = %key, %expires_at, "event claimed");
                    return Ok(Claim::Claimed { expires_at });
                }
                Err(SdkError::ServiceError(se)) => match se.into_err() {
                    PutItemError::ConditionalCheckFailedException(e) => e.item,
                    other => return Err(crate::error::service_error(other)),
                },
                Err(other) => return Err(sdk_error(other)),
            };
            // DynamoDB returns the item that failed the condition; read it if
            // it did not (older emulators).
            let existing = match refused_with {
                Some(item) => Some(IdempotencyRecord::from_item(&item)?),
                None => self.get_by_key(&key).await?,
            };
            let Some(record) = existing else {
                continue; // deleted in between: try again
            };
            match record.state_at(now) {
                RecordState::Completed => {
                    tracing::debug!(key = %key, "event already processed");
                    return Ok(Claim::Completed(record));
                }
                RecordState::InProgress(expires_at) => {
                    tracing::debug!(key = %key, %expires_at, "event in progress elsewhere");
                    return Ok(Claim::InProgress { expires_at });
                }
                RecordState::Absent => last_seen = now, // changed in between: try again
            }
        }
        Ok(Claim::InProgress {
            expires_at: last_seen,
        })
    }

    /// Marks event `id` completed with `result` (JSON text), for
    /// [`DEFAULT_COMPLETED_TTL`] or the configured time.
    pub async fn complete(&self, id: &str, result: &str) -> Result<(), ConsumerError> {
        let key = self.key(id)?;
        let item = self.completed_item(&key, self.clock.now(), Some(result));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(sdk_error)?;
        tracing::debug!(key = %key, "event completed");
        Ok(())
    }

    /// Removes the in-progress claim of event `id`, so that another delivery
    /// can run the handler. A completed record is left alone.
    pub async fn release(&self, id: &str) -> Result<(), ConsumerError> {
        let key = self.key(id)?;
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(ATTR_KEY, AttributeValue::S(key.clone()))
            .condition_expression("#status = :in_progress")
            .expression_attribute_names("#status", ATTR_STATUS)
            .expression_attribute_values(":in_progress", AttributeValue::S(STATUS_IN_PROGRESS.into()))
            .send()
            .await;
        match deleted {
            Ok(_) => {
                tracing::debug!(key = %key, "claim released");
                Ok(())
            }
            Err(SdkError::ServiceError(se))
                if matches!(se.err(), DeleteItemError::ConditionalCheckFailedException(_)) =>
            {
                tracing::debug!(key = %key, "nothing to release");
                Ok(())
            }
            Err(other) => Err(sdk_error(other)),
        }
    }

    /// The record of event `id`, read consistently, if there is one.
    pub async fn get(&self, id: &str) -> Result<Option<IdempotencyRecord>, ConsumerError> {
        let key = self.key(id)?;
        self.get_by_key(&key).await
    }

    async fn get_by_key(&self, key: &str) -> Result<Option<IdempotencyRecord>, ConsumerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(ATTR_KEY, AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        out.item().map(IdempotencyRecord::from_item).transpose()
    }

    /// The transactional mode's idempotency record for event `id`: a `Put` of
    /// a completed record (no result) that succeeds only if the key is absent
    /// (`attribute_not_exists(pk)`). Append it to the consumer's own
    /// `TransactWriteItems`, or let [`commit_with_marker`](Self::commit_with_marker)
    /// do it: the consumer's writes and the id land together or not at all.
    pub fn transaction_marker(&self, id: &str) -> Result<TransactWriteItem, ConsumerError> {
        let key = self.key(id)?;
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.completed_item(&key, self.clock.now(), None)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", ATTR_KEY)
            .build()
            .map_err(|e| ConsumerError::Invalid {
                reason: e.to_string(),
            })?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Commits the consumer's own `items` and the idempotency record of event
    /// `id` in one `TransactWriteItems`: both or neither. If the id is
    /// already recorded, nothing is written and the answer is
    /// [`ConsumerError::Duplicate`]; if one of `items`' own conditions fails,
    /// it is [`ConsumerError::ConditionFailed`] naming it.
    pub async fn commit_with_marker(
        &self,
        id: &str,
        items: Vec<TransactWriteItem>,
    ) -> Result<(), ConsumerError> {
        let marker = self.transaction_marker(id)?;
        let (items, marker_index) = crate::transaction::with_marker(items, marker)?;
        let sent = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match sent {
            Ok(_) => {
                tracing::debug!(
                    event_id = id,
                    actions = marker_index + 1,
                    "consumer transaction committed"
                );
                Ok(())
            }
            Err(err) => {
                let err = crate::transaction::classify(err, id, marker_index);
                tracing::debug!(
                    event_id = id,
                    error = %err,
                    retryable = err.is_retryable(),
                    "consumer transaction failed"
                );
                Err(err)
            }
        }
    }
}

/// Creates an idempotency table named `table` (partition key `pk` of type
/// S, on-demand) if it does not exist, waits until it is active, and turns
/// TTL on for `ttl`. An existing table is fine.
pub async fn create_idempotency_table(client: &Client, table: &str) -> Result<(), ConsumerError> {
    let invalid = |e: aws_sdk_dynamodb::error::BuildError| ConsumerError::Invalid {
        reason: e.to_string(),
    };
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(ATTR_KEY)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(invalid)?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(ATTR_KEY)
                .key_type(KeyType::Hash)
                .build()
                .map_err(invalid)?,
        )
        .send()
        .await;
    let existed = match created {
        Ok(_) => false,
        Err(SdkError::ServiceError(se)) if se.err().code() == Some("ResourceInUseException") => {
            tracing::debug!(table, "idempotency table exists");
            true
        }
        Err(err) => return Err(sdk_error(err)),
    };
    client
        .wait_until_table_exists()
        .table_name(table)
        .wait(TABLE_ACTIVE_TIMEOUT)
        .await
        .map_err(|e| ConsumerError::Service {
            retryable: true,
            source: format!(
                "idempotency table {table} not active after {TABLE_ACTIVE_TIMEOUT:?}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            )
            .into(),
        })?;
    let ttl = client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(ATTR_TTL)
                .build()
                .map_err(invalid)?,
        )
        .send()
        .await;
    match ttl {
        Ok(_) => Ok(()),
        // Turning TTL on again is refused ("TimeToLive is already enabled").
        Err(SdkError::ServiceError(se)) if existed && se.err().code() == Some("ValidationException") => {
            Ok(())
        }
        Err(err) => Err(sdk_error(err)),
    }
}

#[cfg(test)]
mod tests;
