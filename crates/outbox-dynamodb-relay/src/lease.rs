//! Per-shard leases and checkpoints of the standalone stream runner (see
//! [`DynamoDbLeaseStore`]).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters as _;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
};
use outbox_core::{Clock, SystemClock};

use outbox_dynamodb::Item;

pub(crate) const ATTR_PK: &str = "pk";
pub(crate) const ATTR_SK: &str = "sk";
const ATTR_OWNER: &str = "owner";
pub(crate) const ATTR_EXPIRES: &str = "lease_expires_at";
const ATTR_CHECKPOINT: &str = "checkpoint";
const ATTR_CHECKPOINT_ORDER: &str = "checkpoint_order";
const ATTR_FINISHED: &str = "finished";
const ATTR_PARENT: &str = "parent";
const ATTR_FAILURES: &str = "failures";
const ATTR_FAILING_POSITION: &str = "failing_position";
const ATTR_FAILING_SINCE: &str = "failing_since";

/// How long [`create_lease_table`] waits for a new table to become active.
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// A shard of a stream, as its lease is keyed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShardKey {
    /// The stream ARN (partition key).
    pub stream_arn: String,
    /// The shard id (sort key).
    pub shard_id: String,
}

impl ShardKey {
    /// The key of `shard_id` in `stream_arn`.
    pub fn new(stream_arn: impl Into<String>, shard_id: impl Into<String>) -> Self {
        Self {
            stream_arn: stream_arn.into(),
            shard_id: shard_id.into(),
        }
    }
}

/// The lease and checkpoint of one shard, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The stream ARN.
    pub stream_arn: String,
    /// The shard id.
    pub shard_id: String,
    /// Who holds the lease; `None` when released or finished.
    pub owner: Option<String>,
    /// When the lease expires, epoch milliseconds.
    pub expires_at_ms: i64,
    /// The last sequence number fully done; `None`: start at `TRIM_HORIZON`.
    pub checkpoint: Option<String>,
    /// The shard is closed and fully processed.
    pub finished: bool,
    /// The parent shard, when known.
    pub parent: Option<String>,
    /// How many times `failing_position` failed.
    pub failures: u32,
    /// The position that is failing, if any.
    pub failing_position: Option<String>,
    /// When `failing_position` first failed, epoch milliseconds.
    pub failing_since_ms: Option<i64>,
}

/// A record that keeps failing, as the lease counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failing {
    /// How many times it failed.
    pub attempts: u32,
    /// When it first failed, epoch milliseconds (by any runner).
    pub since_ms: i64,
}

impl Lease {
    /// Whether a runner other than `owner` holds this lease at `now_ms`.
    pub fn is_held_by_other(&self, owner: &str, now_ms: i64) -> bool {
        match &self.owner {
            Some(o) => o != owner && self.expires_at_ms >= now_ms,
            None => false,
        }
    }
}

/// Compares two stream sequence numbers as the numbers they are: DynamoDB
/// Local writes them zero-padded to 21 digits, AWS as decimal strings of
/// varying length, so comparing the strings is wrong. A value that is not a
/// decimal number sorts after every number, and two such values compare as
/// strings.
pub fn compare_sequence_numbers(a: &str, b: &str) -> std::cmp::Ordering {
    match (digits(a), digits(b)) {
        (Some(a), Some(b)) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// The significant digits of a decimal number (`"0"` for zero), or `None`.
fn digits(s: &str) -> Option<&str> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let trimmed = s.trim_start_matches('0');
    Some(if trimmed.is_empty() { "0" } else { trimmed })
}

/// A string whose byte order is the numeric order of the sequence number
/// (`<significant digits, 5 wide>:<significant digits>`), so that DynamoDB's
/// string comparison in a condition expression compares the numbers.
pub(crate) fn sequence_order_key(sequence_number: &str) -> Result<String, LeaseError> {
    let d = digits(sequence_number).ok_or_else(|| LeaseError::InvalidSequenceNumber {
        sequence_number: sequence_number.to_owned(),
    })?;
    Ok(format!("{:05}:{d}", d.len()))
}

/// Per-shard leases and checkpoints of the standalone stream runner, in a
/// DynamoDB table: which runner owns a shard (and until when), how far it is
/// done, whether a closed shard is finished, and how often one position has
/// failed.
///
/// | attribute | type | value |
/// |---|---|---|
/// | `pk` | S | the stream ARN |
/// | `sk` | S | the shard id |
/// | `owner` | S | the runner holding the lease; absent when released |
/// | `lease_expires_at` | N | epoch milliseconds; another runner may take the lease after it |
/// | `checkpoint` | S | the last sequence number fully done; absent: start at `TRIM_HORIZON` |
/// | `checkpoint_order` | S | `checkpoint` as a string that sorts like the number (see `sequence_order_key`) |
/// | `finished` | BOOL | the shard is closed and fully processed |
/// | `parent` | S | the parent shard id, when the shard has one |
/// | `failures` | N | how many times `failing_position` failed |
/// | `failing_position` | S | the sequence number that is failing |
/// | `failing_since` | N | epoch milliseconds of its first failure |
///
/// Every write is conditional (an owner, a forward-moving checkpoint), so no
/// update is lost and no shard ever has two owners in the table.
#[derive(Clone)]
pub struct DynamoDbLeaseStore {
    pub(crate) client: Client,
    pub(crate) table: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for DynamoDbLeaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoDbLeaseStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// Creates a lease table named `table` (string `pk` and `sk`, on-demand) and
/// waits until it is active. An existing table is left as it is.
pub async fn create_lease_table(client: &Client, table: &str) -> Result<(), LeaseError> {
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| rejected(table, "BuildError", e.to_string()))
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| rejected(table, "BuildError", e.to_string()))
    };
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute(ATTR_PK)?)
        .attribute_definitions(attribute(ATTR_SK)?)
        .key_schema(key(ATTR_PK, KeyType::Hash)?)
        .key_schema(key(ATTR_SK, KeyType::Range)?)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(SdkError::ServiceError(se)) if se.err().code() == Some("ResourceInUseException") => {
            tracing::debug!(table, "lease table exists");
        }
        Err(err) => return Err(lease_error(table, err)),
    }
    client
        .wait_until_table_exists()
        .table_name(table)
        .wait(TABLE_ACTIVE_TIMEOUT)
        .await
        .map_err(|e| LeaseError::Service {
            retryable: true,
            source: format!(
                "lease table {table} not active after {TABLE_ACTIVE_TIMEOUT:?}: {}",
                DisplayErrorContext(&e)
            )
            .into(),
        })?;
    Ok(())
}

/// One conditional `UpdateItem` of a lease item.
struct Update {
    expression: String,
    condition: &'static str,
    names: Vec<(&'static str, &'static str)>,
    values: Vec<(&'static str, AttributeValue)>,
}

impl DynamoDbLeaseStore {
    /// Leases in `table` (see [`create_lease_table`]), timed by the system clock.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Times leases with `clock` (lease expiry is wall-clock time shared by
    /// every runner, in epoch milliseconds).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The current time, epoch milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// Takes the lease of `shard` for `owner` until now + `duration`, if no
    /// one else holds it: the item is absent, released, expired, or already
    /// `owner`'s. Records `parent` when given. Returns the lease with its
    /// checkpoint. A finished shard is [`LeaseError::Finished`]; one held by
    /// another runner is [`LeaseError::Held`].
    pub async fn acquire(
        &self,
        shard: &ShardKey,
        owner: &str,
        parent: Option<&str>,
        duration: Duration,
    ) -> Result<Lease, LeaseError> {
        let now = self.now_ms();
        let mut expression = "SET #owner = :owner, #expires = :expires".to_owned();
        let mut names = vec![
            ("#owner", ATTR_OWNER),
            ("#expires", ATTR_EXPIRES),
            ("#finished", ATTR_FINISHED),
            ("#pk", ATTR_PK),
        ];
        let mut values = vec![
            (":owner", AttributeValue::S(owner.to_owned())),
            (":expires", millis(now.saturating_add(duration_ms(duration)))),
            (":now", millis(now)),
            (":false", AttributeValue::Bool(false)),
        ];
        if let Some(parent) = parent {
            expression.push_str(", #parent = :parent");
            names.push(("#parent", ATTR_PARENT));
            values.push((":parent", AttributeValue::S(parent.to_owned())));
        }
        let update = Update {
            expression,
            condition: "attribute_not_exists(#pk) OR ((attribute_not_exists(#finished) OR #finished = :false) \
                        AND (attribute_not_exists(#owner) OR #owner = :owner OR #expires < :now))",
            names,
            values,
        };
        match self.update(shard, update, ReturnValue::AllNew).await? {
            Ok(item) => lease_from_item(&item),
            Err(Some(old)) => {
                let old = lease_from_item(&old)?;
                if old.finished {
                    Err(LeaseError::Finished {
                        shard_id: shard.shard_id.clone(),
                    })
                } else {
                    Err(LeaseError::Held {
                        shard_id: shard.shard_id.clone(),
                        owner: old.owner.unwrap_or_default(),
                        expires_at_ms: old.expires_at_ms,
                    })
                }
            }
            Err(None) => Err(self.lost(shard).await),
        }
    }

    /// Extends `owner`'s lease of `shard` to now + `duration`.
    /// [`LeaseError::LostLease`] if `owner` no longer holds it.
    pub async fn renew(
        &self,
        shard: &ShardKey,
        owner: &str,
        duration: Duration,
    ) -> Result<Lease, LeaseError> {
        let expires = self.now_ms().saturating_add(duration_ms(duration));
        let update = Update {
            expression: "SET #expires = :expires".into(),
            condition: "#owner = :owner",
            names: vec![("#owner", ATTR_OWNER), ("#expires", ATTR_EXPIRES)],
            values: vec![
                (":owner", AttributeValue::S(owner.to_owned())),
                (":expires", millis(expires)),
            ],
        };
        self.owned_update(shard, update, ReturnValue::AllNew)
            .await
            .and_then(|item| lease_from_item(&item))
    }

    /// Records that everything up to and including `sequence_number` is done,
    /// if `owner` holds the lease. A checkpoint never moves backwards (the
    /// numbers are compared as numbers): an older or equal one is a no-op.
    pub async fn checkpoint(
        &self,
        shard: &ShardKey,
        owner: &str,
        sequence_number: &str,
    ) -> Result<(), LeaseError> {
        let order = sequence_order_key(sequence_number)?;
        let update = Update {
            expression: "SET #checkpoint = :checkpoint, #order = :order".into(),
            condition: "#owner = :owner AND (attribute_not_exists(#order) OR #order < :order)",
            names: vec![
                ("#owner", ATTR_OWNER),
                ("#checkpoint", ATTR_CHECKPOINT),
                ("#order", ATTR_CHECKPOINT_ORDER),
            ],
            values: vec![
                (":owner", AttributeValue::S(owner.to_owned())),
                (":checkpoint", AttributeValue::S(sequence_number.to_owned())),
                (":order", AttributeValue::S(order)),
            ],
        };
        match self.update(shard, update, ReturnValue::None).await? {
            Ok(_) => Ok(()),
            Err(Some(old)) => {
                let old = lease_from_item(&old)?;
                if old.owner.as_deref() == Some(owner) {
                    tracing::debug!(
                        shard_id = %shard.shard_id,
                        checkpoint = ?old.checkpoint,
                        sequence_number,
                        "checkpoint not ahead; kept"
                    );
                    Ok(())
                } else {
                    Err(LeaseError::LostLease {
                        shard_id: shard.shard_id.clone(),
                        owner: old.owner,
                    })
                }
            }
            Err(None) => Err(self.lost(shard).await),
        }
    }

    /// Counts one more failure of `position` (restarting at 1, from now,
    /// when another position was failing) and returns the count and the
    /// time of its first failure.
    pub async fn record_failure(
        &self,
        shard: &ShardKey,
        owner: &str,
        position: &str,
    ) -> Result<Failing, LeaseError> {
        let names = vec![
            ("#owner", ATTR_OWNER),
            ("#failures", ATTR_FAILURES),
            ("#position", ATTR_FAILING_POSITION),
            ("#since", ATTR_FAILING_SINCE),
        ];
        let now = self.now_ms();
        let values = || {
            vec![
                (":owner", AttributeValue::S(owner.to_owned())),
                (":position", AttributeValue::S(position.to_owned())),
                (":one", AttributeValue::N("1".into())),
                (":now", millis(now)),
            ]
        };
        // Two conditional updates cover both cases; a third round only
        // happens if the item changed in between, which an owner alone does not do.
        for _ in 0..3 {
            let same = Update {
                expression: "SET #failures = #failures + :one, #since = if_not_exists(#since, :now)".into(),
                condition: "#owner = :owner AND #position = :position",
                names: names.clone(),
                values: values(),
            };
            let old = match self.update(shard, same, ReturnValue::UpdatedNew).await? {
                Ok(item) => return failing_of(shard, &item),
                Err(old) => old,
            };
            self.check_owner(shard, owner, old).await?;
            let other = Update {
                expression: "SET #failures = :one, #position = :position, #since = :now".into(),
                condition: "#owner = :owner AND (attribute_not_exists(#position) OR #position <> :position)",
                names: names.clone(),
                values: values(),
            };
            match self.update(shard, other, ReturnValue::UpdatedNew).await? {
                Ok(item) => return failing_of(shard, &item),
                Err(old) => self.check_owner(shard, owner, old).await?,
            }
        }
        Err(LeaseError::Service {
            retryable: true,
            source: "the failure count kept changing under this owner".into(),
        })
    }

    /// Marks `shard` finished (closed and fully processed) and frees it.
    pub async fn finish(&self, shard: &ShardKey, owner: &str) -> Result<(), LeaseError> {
        let update = Update {
            expression: "SET #finished = :true, #expires = :zero REMOVE #owner, #failures, #position, #since"
                .into(),
            condition: "#owner = :owner",
            names: vec![
                ("#owner", ATTR_OWNER),
                ("#finished", ATTR_FINISHED),
                ("#expires", ATTR_EXPIRES),
                ("#failures", ATTR_FAILURES),
                ("#position", ATTR_FAILING_POSITION),
                ("#since", ATTR_FAILING_SINCE),
            ],
            values: vec![
                (":owner", AttributeValue::S(owner.to_owned())),
                (":true", AttributeValue::Bool(true)),
                (":zero", millis(0)),
            ],
        };
        self.owned_update(shard, update, ReturnValue::None)
            .await
            .map(drop)
    }

    /// Gives up `owner`'s lease of `shard`, keeping its checkpoint, so another
    /// runner can take it at once.
    pub async fn release(&self, shard: &ShardKey, owner: &str) -> Result<(), LeaseError> {
        let update = Update {
            expression: "SET #expires = :zero REMOVE #owner".into(),
            condition: "#owner = :owner",
            names: vec![("#owner", ATTR_OWNER), ("#expires", ATTR_EXPIRES)],
            values: vec![
                (":owner", AttributeValue::S(owner.to_owned())),
                (":zero", millis(0)),
            ],
        };
        self.owned_update(shard, update, ReturnValue::None)
            .await
            .map(drop)
    }

    /// Every lease of `stream_arn` (strongly consistent).
    pub async fn list(&self, stream_arn: &str) -> Result<Vec<Lease>, LeaseError> {
        self.partition(stream_arn)
            .await?
            .iter()
            .map(lease_from_item)
            .collect()
    }

    /// Every item under the partition key `pk`, through the SDK's paginator
    /// (strongly consistent).
    pub(crate) async fn partition(&self, pk: &str) -> Result<Vec<Item>, LeaseError> {
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", ATTR_PK)
            .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<Item>, _>>()
            .await
            .map_err(|e| lease_error(&self.table, e))
    }

    /// The lease of `shard`, if it has an item (strongly consistent).
    pub async fn get(&self, shard: &ShardKey) -> Result<Option<Lease>, LeaseError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_of(shard)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| lease_error(&self.table, e))?;
        out.item.as_ref().map(lease_from_item).transpose()
    }

    /// An update whose only condition involves ownership: a failed condition
    /// is a lost lease.
    async fn owned_update(
        &self,
        shard: &ShardKey,
        update: Update,
        returns: ReturnValue,
    ) -> Result<Item, LeaseError> {
        match self.update(shard, update, returns).await? {
            Ok(item) => Ok(item),
            Err(Some(old)) => Err(LeaseError::LostLease {
                shard_id: shard.shard_id.clone(),
                owner: lease_from_item(&old)?.owner,
            }),
            Err(None) => Err(self.lost(shard).await),
        }
    }

    /// `Ok(())` if `old` (the item when a condition failed) is still `owner`'s,
    /// else the lost lease.
    async fn check_owner(&self, shard: &ShardKey, owner: &str, old: Option<Item>) -> Result<(), LeaseError> {
        let old = match old {
            Some(item) => Some(lease_from_item(&item)?),
            None => self.get(shard).await?,
        };
        match old {
            Some(lease) if lease.owner.as_deref() == Some(owner) => Ok(()),
            other => Err(LeaseError::LostLease {
                shard_id: shard.shard_id.clone(),
                owner: other.and_then(|l| l.owner),
            }),
        }
    }

    /// The lost lease of `shard`, with its current owner if it can be read.
    async fn lost(&self, shard: &ShardKey) -> LeaseError {
        let owner = match self.get(shard).await {
            Ok(lease) => lease.and_then(|l| l.owner),
            Err(error) => {
                tracing::debug!(error = %error, shard_id = %shard.shard_id, "reading the lost lease failed");
                None
            }
        };
        LeaseError::LostLease {
            shard_id: shard.shard_id.clone(),
            owner,
        }
    }

    /// Sends one conditional update. `Ok(Ok(returned))` when applied,
    /// `Ok(Err(old item))` when the condition failed (`None`: the item does
    /// not exist, or DynamoDB did not return it).
    async fn update(
        &self,
        shard: &ShardKey,
        update: Update,
        returns: ReturnValue,
    ) -> Result<Result<Item, Option<Item>>, LeaseError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_of(shard)))
            .update_expression(update.expression)
            .condition_expression(update.condition)
            .return_values(returns)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (placeholder, name) in update.names {
            request = request.expression_attribute_names(placeholder, name);
        }
        for (placeholder, value) in update.values {
            request = request.expression_attribute_values(placeholder, value);
        }
        match request.send().await {
            Ok(out) => Ok(Ok(out.attributes.unwrap_or_default())),
            Err(SdkError::ServiceError(se)) => match se.into_err() {
                UpdateItemError::ConditionalCheckFailedException(e) => {
                    Ok(Err(e.item.filter(|item| !item.is_empty())))
                }
                other => Err(service_error(&self.table, other, None)),
            },
            Err(err) => Err(lease_error(&self.table, err)),
        }
    }
}

mod error;
mod item;

pub use error::LeaseError;
pub(crate) use error::{ErrorClass, classify, lease_error};
use error::{malformed, rejected, service_error};
use item::{duration_ms, failing_of, key_of, lease_from_item, millis};

#[cfg(test)]
mod tests;
