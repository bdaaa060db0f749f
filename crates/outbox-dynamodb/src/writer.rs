//! The outbox writer: the caller's operations and its outbox events in one
//! `TransactWriteItems`, checked against DynamoDB's limits before any call.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, ConditionCheck, Delete, Put, TransactWriteItem, Update,
};
use outbox_core::OutboxEvent;
use uuid::Uuid;

use crate::WriteError;
use crate::item::{Item, OutboxSchema};
use crate::limits::{
    MAX_CLIENT_REQUEST_TOKEN_LEN, MAX_ITEM_SIZE_BYTES, MAX_TRANSACT_ITEMS, MAX_TRANSACTION_SIZE_BYTES,
    item_size, value_size,
};

/// What one transaction commits: the caller's own operations (with their own
/// conditions) and the outbox events they produce, plus an optional
/// `ClientRequestToken` that makes a retry of the same request idempotent.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct OutboxTransaction {
    operations: Vec<TransactWriteItem>,
    events: Vec<(OutboxEvent, Option<AttributeValue>)>,
    client_request_token: Option<String>,
}

impl OutboxTransaction {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a business operation (put, update, delete or condition check).
    pub fn operation(mut self, operation: TransactWriteItem) -> Self {
        self.operations.push(operation);
        self
    }

    /// Adds a put.
    pub fn put(self, put: Put) -> Self {
        self.operation(TransactWriteItem::builder().put(put).build())
    }

    /// Adds an update.
    pub fn update(self, update: Update) -> Self {
        self.operation(TransactWriteItem::builder().update(update).build())
    }

    /// Adds a delete.
    pub fn delete(self, delete: Delete) -> Self {
        self.operation(TransactWriteItem::builder().delete(delete).build())
    }

    /// Adds a condition check.
    pub fn condition_check(self, check: ConditionCheck) -> Self {
        self.operation(TransactWriteItem::builder().condition_check(check).build())
    }

    /// Adds an outbox event, stored in the aggregate's default partition
    /// ([`OutboxSchema::default_partition_value`]).
    pub fn event(mut self, event: OutboxEvent) -> Self {
        self.events.push((event, None));
        self
    }

    /// Adds an outbox event stored under the given partition key value (the
    /// aggregate's own key, when it is not `<aggregate_type>#<aggregate_id>`).
    pub fn event_in_partition(mut self, partition: AttributeValue, event: OutboxEvent) -> Self {
        self.events.push((event, Some(partition)));
        self
    }

    /// The `ClientRequestToken`: sending the same request with the same token
    /// again within 10 minutes succeeds without writing twice.
    pub fn client_request_token(mut self, token: impl Into<String>) -> Self {
        self.client_request_token = Some(token.into());
        self
    }

    /// The business operations.
    pub fn operations(&self) -> &[TransactWriteItem] {
        &self.operations
    }

    /// The events.
    pub fn events(&self) -> impl Iterator<Item = &OutboxEvent> {
        self.events.iter().map(|(e, _)| e)
    }
}

/// What a successful commit wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitReceipt {
    /// The ids of the outbox events, in the order they were added.
    pub event_ids: Vec<Uuid>,
    /// Actions sent (business operations plus events).
    pub actions: usize,
}

/// The key attribute names of a table, for spotting two operations on one item.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyNames {
    partition: String,
    sort: Option<String>,
}

/// Commits outbox transactions with one `TransactWriteItems` call each.
///
/// Every business put is checked for its key (to refuse two operations on one
/// item before DynamoDB does): tables other than the outbox's are assumed to
/// use the outbox schema's key names unless [`with_table_key`](Self::with_table_key)
/// says otherwise.
#[derive(Debug, Clone)]
pub struct DynamoDbOutboxWriter {
    client: Client,
    schema: OutboxSchema,
    keys: HashMap<String, KeyNames>,
}

impl DynamoDbOutboxWriter {
    /// A writer that stores events as `schema` describes.
    pub fn new(client: Client, schema: OutboxSchema) -> Self {
        Self {
            client,
            schema,
            keys: HashMap::new(),
        }
    }

    /// Names the key attributes of a table that business operations write to.
    #[must_use]
    pub fn with_table_key(
        mut self,
        table: impl Into<String>,
        partition: impl Into<String>,
        sort: Option<&str>,
    ) -> Self {
        self.keys.insert(
            table.into(),
            KeyNames {
                partition: partition.into(),
                sort: sort.map(str::to_owned),
            },
        );
        self
    }

    /// The schema events are written with.
    pub fn schema(&self) -> &OutboxSchema {
        &self.schema
    }

    /// Builds the `TransactItems` for `tx` without sending them, with every
    /// limit checked (see [`build_transact_items`]).
    pub fn build(&self, tx: &OutboxTransaction) -> Result<Vec<TransactWriteItem>, WriteError> {
        build_with_keys(&self.schema, &self.keys, tx)
    }

    /// Commits `tx` atomically: every operation and every event, or nothing.
    pub async fn commit(&self, tx: OutboxTransaction) -> Result<CommitReceipt, WriteError> {
        let items = self.build(&tx)?;
        let actions = items.len();
        let descriptions: Vec<String> = items
            .iter()
            .enumerate()
            .map(|(i, op)| describe(i, op, &self.key_names_fn()))
            .collect();
        let first_event = tx.operations.len();
        let event_ids: Vec<Uuid> = tx.events().map(OutboxEvent::id).collect();
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .set_client_request_token(tx.client_request_token.clone())
            .send()
            .await;
        match result {
            Ok(_) => {
                tracing::debug!(actions, events = event_ids.len(), "outbox transaction committed");
                Ok(CommitReceipt { event_ids, actions })
            }
            Err(err) => {
                let err = classify(err, &descriptions, first_event, &event_ids);
                tracing::debug!(error = %err, retryable = err.is_retryable(), "outbox transaction failed");
                Err(err)
            }
        }
    }

    fn key_names_fn(&self) -> impl Fn(&str) -> KeyNames + '_ {
        |table| key_names(&self.schema, &self.keys, table)
    }
}

/// Builds the `TransactItems` for `tx`: its business operations in order,
/// then one conditional `Put` per event (`attribute_not_exists` on the
/// partition key, so an event id is never overwritten). Checks, before any
/// call: at least one action, at most [`MAX_TRANSACT_ITEMS`], each item at most
/// [`MAX_ITEM_SIZE_BYTES`], all items at most [`MAX_TRANSACTION_SIZE_BYTES`],
/// no item touched twice, a token of at most [`MAX_CLIENT_REQUEST_TOKEN_LEN`]
/// characters. Business tables are assumed to share the schema's key names.
pub fn build_transact_items(
    schema: &OutboxSchema,
    tx: &OutboxTransaction,
) -> Result<Vec<TransactWriteItem>, WriteError> {
    build_with_keys(schema, &HashMap::new(), tx)
}

fn key_names(schema: &OutboxSchema, keys: &HashMap<String, KeyNames>, table: &str) -> KeyNames {
    keys.get(table).cloned().unwrap_or_else(|| KeyNames {
        partition: schema.partition_key().to_owned(),
        sort: Some(schema.sort_key().to_owned()),
    })
}

fn build_with_keys(
    schema: &OutboxSchema,
    keys: &HashMap<String, KeyNames>,
    tx: &OutboxTransaction,
) -> Result<Vec<TransactWriteItem>, WriteError> {
    if let Some(token) = &tx.client_request_token {
        let len = token.chars().count();
        if len == 0 || len > MAX_CLIENT_REQUEST_TOKEN_LEN {
            return Err(WriteError::Invalid {
                reason: format!(
                    "client request token must be 1 to {MAX_CLIENT_REQUEST_TOKEN_LEN} characters, got {len}"
                ),
            });
        }
    }
    let count = tx.operations.len() + tx.events.len();
    if count == 0 {
        return Err(WriteError::Invalid {
            reason: "the transaction has no operations and no events".into(),
        });
    }
    if count > MAX_TRANSACT_ITEMS {
        return Err(WriteError::TooManyActions {
            count,
            limit: MAX_TRANSACT_ITEMS,
        });
    }
    if let Some(limit) = schema.max_event_bytes() {
        for (event, _) in &tx.events {
            let size = crate::limits::published_size(event);
            if size > limit {
                return Err(WriteError::EventTooLarge {
                    event_id: event.id().to_string(),
                    size,
                    limit,
                });
            }
        }
    }
    let mut items = tx.operations.clone();
    for (event, partition) in &tx.events {
        let partition = partition
            .clone()
            .unwrap_or_else(|| OutboxSchema::default_partition_value(event));
        let put = Put::builder()
            .table_name(schema.table())
            .set_item(Some(schema.to_item(event, partition)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", schema.partition_key())
            .build()
            .map_err(|e| WriteError::Invalid {
                reason: format!("outbox put for event {}: {e}", event.id()),
            })?;
        items.push(TransactWriteItem::builder().put(put).build());
    }

    let names = |table: &str| key_names(schema, keys, table);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut total = 0usize;
    for (i, op) in items.iter().enumerate() {
        let target = target(i, op, &names)?;
        let size = op_size(op);
        if size > MAX_ITEM_SIZE_BYTES {
            return Err(WriteError::ItemTooLarge {
                operation: i,
                description: describe(i, op, &names),
                size,
                limit: MAX_ITEM_SIZE_BYTES,
            });
        }
        total += size;
        if let Some(first) = seen.insert(target.identity.clone(), i) {
            return Err(WriteError::DuplicateItem {
                first,
                second: i,
                description: target.identity,
            });
        }
    }
    if total > MAX_TRANSACTION_SIZE_BYTES {
        return Err(WriteError::TransactionTooLarge {
            size: total,
            limit: MAX_TRANSACTION_SIZE_BYTES,
        });
    }
    Ok(items)
}

/// The item an operation targets.
struct Target {
    /// `table {key: value, ...}`, keys sorted: equal for equal items.
    identity: String,
}

fn render_value(v: &AttributeValue) -> String {
    match v {
        AttributeValue::S(s) => format!("{s:?}"),
        AttributeValue::N(n) => n.clone(),
        AttributeValue::B(b) => format!("<{} bytes>", b.as_ref().len()),
        other => format!("{other:?}"),
    }
}

fn render_key(table: &str, key: &BTreeMap<&str, &AttributeValue>) -> String {
    let mut out = format!("`{table}` {{");
    for (n, (k, v)) in key.iter().enumerate() {
        let sep = if n == 0 { "" } else { ", " };
        let _ = write!(out, "{sep}{k}: {}", render_value(v));
    }
    out.push('}');
    out
}

fn parts(op: &TransactWriteItem) -> Option<(&'static str, &str, Option<&Item>, Option<&Item>)> {
    if let Some(p) = op.put() {
        Some(("put", p.table_name(), None, Some(p.item())))
    } else if let Some(u) = op.update() {
        Some(("update", u.table_name(), Some(u.key()), None))
    } else if let Some(d) = op.delete() {
        Some(("delete", d.table_name(), Some(d.key()), None))
    } else {
        op.condition_check()
            .map(|c| ("condition check", c.table_name(), Some(c.key()), None))
    }
}

fn target(
    index: usize,
    op: &TransactWriteItem,
    names: &impl Fn(&str) -> KeyNames,
) -> Result<Target, WriteError> {
    let Some((kind, table, key, item)) = parts(op) else {
        return Err(WriteError::Invalid {
            reason: format!("operation #{index} is empty: set a put, update, delete or condition check"),
        });
    };
    let key: BTreeMap<&str, &AttributeValue> = match (key, item) {
        (Some(key), _) => key.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        (None, Some(item)) => {
            let KeyNames { partition, sort } = names(table);
            let mut key = BTreeMap::new();
            for name in std::iter::once(&partition).chain(sort.as_ref()) {
                let Some((k, v)) = item.get_key_value(name) else {
                    return Err(WriteError::Invalid {
                        reason: format!(
                            "operation #{index} ({kind} on `{table}`) has no key attribute `{name}`; \
                             name the table's key with `with_table_key`"
                        ),
                    });
                };
                key.insert(k.as_str(), v);
            }
            key
        }
        (None, None) => BTreeMap::new(),
    };
    Ok(Target {
        identity: render_key(table, &key),
    })
}

fn describe(index: usize, op: &TransactWriteItem, names: &impl Fn(&str) -> KeyNames) -> String {
    match (parts(op), target(index, op, names)) {
        (Some((kind, _, _, _)), Ok(t)) => format!("{kind} on {}", t.identity),
        (Some((kind, table, _, _)), Err(_)) => format!("{kind} on `{table}`"),
        (None, _) => "empty operation".into(),
    }
}

/// The bytes an operation counts towards the item and transaction limits.
fn op_size(op: &TransactWriteItem) -> usize {
    if let Some(p) = op.put() {
        item_size(p.item())
    } else if let Some(u) = op.update() {
        item_size(u.key())
            + u.expression_attribute_values()
                .map_or(0, |vals| vals.values().map(value_size).sum())
    } else if let Some(d) = op.delete() {
        item_size(d.key())
    } else if let Some(c) = op.condition_check() {
        item_size(c.key())
    } else {
        0
    }
}

fn classify(
    err: SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
    descriptions: &[String],
    first_event: usize,
    event_ids: &[Uuid],
) -> WriteError {
    let retryable_transport = matches!(
        err,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
    );
    let service = match err {
        SdkError::ServiceError(se) => se.into_err(),
        other => {
            return WriteError::Service {
                retryable: retryable_transport,
                source: Box::new(other),
            };
        }
    };
    if let TransactWriteItemsError::TransactionCanceledException(cancel) = &service
        && let Some(err) = from_reasons(
            cancel.cancellation_reasons(),
            descriptions,
            first_event,
            event_ids,
        )
    {
        return err;
    }
    let code = service.code().unwrap_or("Unknown").to_owned();
    let message = service.message().unwrap_or_default().to_owned();
    match code.as_str() {
        "IdempotentParameterMismatchException" | "IdempotentParameterMismatch" => {
            WriteError::IdempotencyMismatch
        }
        "TransactionInProgressException" => WriteError::InProgress,
        "ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded" => {
            WriteError::Throttled
        }
        "InternalServerError" | "ServiceUnavailable" | "InternalFailure" => WriteError::Service {
            retryable: true,
            source: Box::new(service),
        },
        _ => WriteError::Rejected { code, message },
    }
}

fn from_reasons(
    reasons: &[CancellationReason],
    descriptions: &[String],
    first_event: usize,
    event_ids: &[Uuid],
) -> Option<WriteError> {
    let code_at = |i: usize| {
        reasons
            .get(i)
            .and_then(CancellationReason::code)
            .unwrap_or("None")
    };
    let description = |i: usize| {
        descriptions
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("operation #{i}"))
    };
    let find = |codes: &[&str]| (0..reasons.len()).find(|&i| codes.contains(&code_at(i)));
    if let Some(i) = find(&["ConditionalCheckFailed"]) {
        return Some(match i.checked_sub(first_event).and_then(|e| event_ids.get(e)) {
            Some(id) => WriteError::DuplicateEvent {
                operation: i,
                event_id: id.to_string(),
            },
            None => WriteError::ConditionFailed {
                operation: i,
                description: description(i),
            },
        });
    }
    if let Some(i) = find(&["ValidationError", "ItemCollectionSizeLimitExceeded"]) {
        let message = reasons
            .get(i)
            .and_then(CancellationReason::message)
            .unwrap_or_default();
        return Some(WriteError::Rejected {
            code: code_at(i).to_owned(),
            message: format!("operation #{i} ({}): {message}", description(i)),
        });
    }
    if find(&["TransactionConflict"]).is_some() {
        return Some(WriteError::TransactionConflict);
    }
    if find(&["ProvisionedThroughputExceeded", "ThrottlingError"]).is_some() {
        return Some(WriteError::Throttled);
    }
    None
}

/// A put of `item` into `table` that succeeds only if no item with the same
/// key exists yet (`attribute_not_exists` on `partition_key`): "create".
pub fn put_if_absent(table: &str, item: Item, partition_key: &str) -> Result<TransactWriteItem, WriteError> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(#pk)")
        .expression_attribute_names("#pk", partition_key)
        .build()
        .map_err(|e| WriteError::Invalid {
            reason: e.to_string(),
        })?;
    Ok(TransactWriteItem::builder().put(put).build())
}

/// A put of `item` into `table` with optimistic concurrency on
/// `version_attribute`: with `expected = Some(v)` it succeeds only if the
/// stored item is at version `v`, and writes version `v + 1`; with `None` it
/// succeeds only if the item has no version yet (a create) and writes
/// version 1. The new version is what the events of this change carry as
/// their `sequence`.
pub fn put_versioned(
    table: &str,
    mut item: Item,
    version_attribute: &str,
    expected: Option<u64>,
) -> Result<TransactWriteItem, WriteError> {
    let next = match expected {
        Some(v) => v.checked_add(1).ok_or_else(|| WriteError::Invalid {
            reason: format!("version {v} cannot be incremented"),
        })?,
        None => 1,
    };
    item.insert(version_attribute.to_owned(), AttributeValue::N(next.to_string()));
    let mut put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .expression_attribute_names("#v", version_attribute);
    put = match expected {
        Some(v) => put
            .condition_expression("#v = :expected")
            .expression_attribute_values(":expected", AttributeValue::N(v.to_string())),
        None => put.condition_expression("attribute_not_exists(#v)"),
    };
    let put = put.build().map_err(|e| WriteError::Invalid {
        reason: e.to_string(),
    })?;
    Ok(TransactWriteItem::builder().put(put).build())
}

#[cfg(test)]
mod tests;
