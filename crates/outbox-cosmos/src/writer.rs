//! The outbox writer: the caller's aggregate operations and its outbox
//! documents in one transactional batch on one logical partition, checked
//! against Cosmos DB's limits before any call.

use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::models::{TransactionalBatchOperationResult, TransactionalBatchResponse};
use azure_data_cosmos::options::{
    BatchDeleteOptions, BatchReadOptions, BatchReplaceOptions, BatchUpsertOptions, Precondition,
};
use azure_data_cosmos::{CosmosError, TransactionalBatch};
use outbox_core::OutboxEvent;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::document::{FIELD_ID, MAX_SEQUENCE};
use crate::error::{ErrorClass, classify, retry_after_of, status_of};
use crate::{CosmosOutboxSchema, MAX_BATCH_OPERATIONS, MAX_BATCH_REQUEST_BYTES, WriteError};

/// One of the caller's operations in an outbox batch. Documents are JSON
/// objects with a string `id` and the batch's partition key value.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BatchOperation {
    /// Create a document; fails (409) if the id exists.
    Create {
        /// The document.
        document: Value,
    },
    /// Replace a document, optionally only if its etag is still `if_match`
    /// (optimistic concurrency; 412 otherwise).
    Replace {
        /// The document id.
        id: String,
        /// The new document.
        document: Value,
        /// The etag read with the document.
        if_match: Option<String>,
    },
    /// Create or replace a document, optionally only if its etag is still `if_match`.
    Upsert {
        /// The document.
        document: Value,
        /// The etag read with the document.
        if_match: Option<String>,
    },
    /// Delete a document, optionally only if its etag is still `if_match`.
    Delete {
        /// The document id.
        id: String,
        /// The etag read with the document.
        if_match: Option<String>,
    },
    /// Read a document only to require that its etag is still `if_match`: a
    /// condition check on a document the batch does not change.
    Check {
        /// The document id.
        id: String,
        /// The etag the document must still have.
        if_match: String,
    },
}

impl BatchOperation {
    /// Creates `document`.
    pub fn create(document: Value) -> Self {
        Self::Create { document }
    }

    /// Replaces document `id` with `document`, whatever its etag.
    pub fn replace(id: impl Into<String>, document: Value) -> Self {
        Self::Replace {
            id: id.into(),
            document,
            if_match: None,
        }
    }

    /// Replaces document `id` with `document` if its etag is still `etag`.
    pub fn replace_if_match(id: impl Into<String>, document: Value, etag: impl Into<String>) -> Self {
        Self::Replace {
            id: id.into(),
            document,
            if_match: Some(etag.into()),
        }
    }

    /// Creates or replaces `document`.
    pub fn upsert(document: Value) -> Self {
        Self::Upsert {
            document,
            if_match: None,
        }
    }

    /// Replaces `document` if its etag is still `etag`.
    pub fn upsert_if_match(document: Value, etag: impl Into<String>) -> Self {
        Self::Upsert {
            document,
            if_match: Some(etag.into()),
        }
    }

    /// Deletes document `id`.
    pub fn delete(id: impl Into<String>) -> Self {
        Self::Delete {
            id: id.into(),
            if_match: None,
        }
    }

    /// Deletes document `id` if its etag is still `etag`.
    pub fn delete_if_match(id: impl Into<String>, etag: impl Into<String>) -> Self {
        Self::Delete {
            id: id.into(),
            if_match: Some(etag.into()),
        }
    }

    /// Requires document `id` to still have etag `etag`.
    pub fn check_if_match(id: impl Into<String>, etag: impl Into<String>) -> Self {
        Self::Check {
            id: id.into(),
            if_match: etag.into(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Create { .. } => "create",
            Self::Replace { .. } => "replace",
            Self::Upsert { .. } => "upsert",
            Self::Delete { .. } => "delete",
            Self::Check { .. } => "check",
        }
    }

    fn document(&self) -> Option<&Value> {
        match self {
            Self::Create { document } | Self::Replace { document, .. } | Self::Upsert { document, .. } => {
                Some(document)
            }
            Self::Delete { .. } | Self::Check { .. } => None,
        }
    }

    fn if_match(&self) -> Option<&str> {
        match self {
            Self::Replace { if_match, .. }
            | Self::Upsert { if_match, .. }
            | Self::Delete { if_match, .. } => if_match.as_deref(),
            Self::Check { if_match, .. } => Some(if_match),
            Self::Create { .. } => None,
        }
    }

    /// The operation as the SDK serialises it into the batch request body
    /// (`operationType`, `id`, `resourceBody`, `ifMatch`), to measure it.
    fn wire_form(&self, id: &str) -> Value {
        let mut op = Map::new();
        let operation_type = match self {
            Self::Create { .. } => "Create",
            Self::Replace { .. } => "Replace",
            Self::Upsert { .. } => "Upsert",
            Self::Delete { .. } => "Delete",
            Self::Check { .. } => "Read",
        };
        op.insert("operationType".into(), json!(operation_type));
        if matches!(
            self,
            Self::Replace { .. } | Self::Delete { .. } | Self::Check { .. }
        ) {
            op.insert("id".into(), json!(id));
        }
        if let Some(document) = self.document() {
            op.insert("resourceBody".into(), document.clone());
        }
        if let Some(etag) = self.if_match() {
            op.insert("ifMatch".into(), json!(etag));
        }
        Value::Object(op)
    }
}

/// What one batch commits: the caller's operations on one logical partition
/// (with their own preconditions) and the outbox events they produce, which
/// are written as outbox documents in the same partition, after the
/// operations.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct OutboxBatch {
    partition_key: String,
    operations: Vec<BatchOperation>,
    events: Vec<OutboxEvent>,
}

impl OutboxBatch {
    /// An empty batch on the logical partition `partition_key` (the
    /// aggregate's partition key value).
    pub fn new(partition_key: impl Into<String>) -> Self {
        Self {
            partition_key: partition_key.into(),
            operations: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Adds an aggregate operation.
    pub fn operation(mut self, operation: BatchOperation) -> Self {
        self.operations.push(operation);
        self
    }

    /// Adds an outbox event.
    pub fn event(mut self, event: OutboxEvent) -> Self {
        self.events.push(event);
        self
    }

    /// The logical partition.
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }

    /// The aggregate operations.
    pub fn operations(&self) -> &[BatchOperation] {
        &self.operations
    }

    /// The events.
    pub fn events(&self) -> &[OutboxEvent] {
        &self.events
    }
}

/// A batch ready to send: the SDK request, what each operation is (for
/// errors), and the request body's size.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PreparedBatch {
    /// The SDK request.
    pub batch: TransactionalBatch,
    /// One description per operation, in order: kind and document id
    /// (`replace Order o-1`, `outbox event 0190...`).
    pub descriptions: Vec<String>,
    /// The request body's size in bytes, as the SDK serialises it.
    pub request_bytes: usize,
}

/// What a successful commit wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitReceipt {
    /// The ids of the outbox events, in the order they were added.
    pub event_ids: Vec<Uuid>,
    /// Operations sent (aggregate operations plus events).
    pub operations: usize,
    /// The new etag of each operation's document, in order (`None` for
    /// deletes and when the service did not return one): the next `IfMatch`.
    pub etags: Vec<Option<String>>,
}

/// Builds the transactional batch for `batch` without sending it: its
/// aggregate operations in order, then one `Create` per event (so an event
/// id is never overwritten). Checks, before any call: at least one
/// operation, at most [`MAX_BATCH_OPERATIONS`], a request body of at most
/// [`MAX_BATCH_REQUEST_BYTES`], every document an object with a string `id`
/// and the batch's partition key value, every sequence at most
/// [`MAX_SEQUENCE`](crate::MAX_SEQUENCE).
pub fn build_batch(schema: &CosmosOutboxSchema, batch: &OutboxBatch) -> Result<PreparedBatch, WriteError> {
    let count = batch.operations.len() + batch.events.len();
    if count == 0 {
        return Err(WriteError::Invalid {
            reason: "the batch has no operations and no events".into(),
        });
    }
    if count > MAX_BATCH_OPERATIONS {
        return Err(WriteError::TooManyOperations {
            count,
            limit: MAX_BATCH_OPERATIONS,
        });
    }
    let mut operations: Vec<BatchOperation> = Vec::with_capacity(count);
    let mut descriptions = Vec::with_capacity(count);
    let mut wire = Vec::with_capacity(count);
    for (i, op) in batch.operations.iter().enumerate() {
        let id = check_operation(i, op, schema, &batch.partition_key)?;
        descriptions.push(format!("{} {id}", op.kind()));
        wire.push(op.wire_form(&id));
        operations.push(op.clone());
    }
    for event in &batch.events {
        let i = operations.len();
        if event.sequence() > MAX_SEQUENCE {
            return Err(WriteError::Invalid {
                reason: format!(
                    "operation #{i} (outbox event {}): sequence {} is above {MAX_SEQUENCE}, the largest number Cosmos DB stores exactly",
                    event.id(),
                    event.sequence()
                ),
            });
        }
        let op = BatchOperation::create(schema.to_document(event, &batch.partition_key));
        descriptions.push(format!("outbox event {}", event.id()));
        wire.push(op.wire_form(""));
        operations.push(op);
    }
    let request_bytes = serde_json::to_vec(&wire).map(|v| v.len()).unwrap_or(usize::MAX);
    if request_bytes > MAX_BATCH_REQUEST_BYTES {
        return Err(WriteError::TooLarge {
            size: request_bytes,
            limit: MAX_BATCH_REQUEST_BYTES,
        });
    }
    let mut sdk = TransactionalBatch::new(batch.partition_key.clone());
    for (i, op) in operations.into_iter().enumerate() {
        sdk = add_to_sdk_batch(sdk, op).map_err(|e| WriteError::Invalid {
            reason: format!("operation #{i} ({}) cannot be serialised: {e}", descriptions[i]),
        })?;
    }
    Ok(PreparedBatch {
        batch: sdk,
        descriptions,
        request_bytes,
    })
}

/// Checks one aggregate operation and returns the id it targets.
fn check_operation(
    index: usize,
    op: &BatchOperation,
    schema: &CosmosOutboxSchema,
    partition_key: &str,
) -> Result<String, WriteError> {
    let invalid = |what: String| {
        Err(WriteError::Invalid {
            reason: format!("operation #{index} ({}): {what}", op.kind()),
        })
    };
    let Some(document) = op.document() else {
        return match op {
            BatchOperation::Delete { id, .. } | BatchOperation::Check { id, .. } if !id.is_empty() => {
                Ok(id.clone())
            }
            _ => invalid("the document id is empty".into()),
        };
    };
    let Some(object) = document.as_object() else {
        return invalid("the document is not a JSON object".into());
    };
    let id = match object.get(FIELD_ID) {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        _ => return invalid("the document has no string `id`".into()),
    };
    if let BatchOperation::Replace { id: target, .. } = op
        && *target != id
    {
        return invalid(format!("replaces {target:?} with a document whose id is {id:?}"));
    }
    match object.get(schema.partition_key()) {
        Some(Value::String(pk)) if pk == partition_key => Ok(id),
        other => invalid(format!(
            "document {id:?} has `{}` = {}, but the batch is on partition {partition_key:?}; \
             a transactional batch covers one logical partition",
            schema.partition_key(),
            other.map_or_else(|| "nothing".to_owned(), Value::to_string)
        )),
    }
}

fn add_to_sdk_batch(
    batch: TransactionalBatch,
    op: BatchOperation,
) -> Result<TransactionalBatch, CosmosError> {
    let precondition = |etag: String| Precondition::if_match(etag);
    Ok(match op {
        BatchOperation::Create { document } => batch.create_item(document)?,
        BatchOperation::Replace {
            id,
            document,
            if_match,
        } => {
            let options = if_match.map(|e| BatchReplaceOptions::default().with_precondition(precondition(e)));
            batch.replace_item(id, document, options)?
        }
        BatchOperation::Upsert { document, if_match } => {
            let options = if_match.map(|e| BatchUpsertOptions::default().with_precondition(precondition(e)));
            batch.upsert_item(document, options)?
        }
        BatchOperation::Delete { id, if_match } => {
            let options = if_match.map(|e| BatchDeleteOptions::default().with_precondition(precondition(e)));
            batch.delete_item(id, options)
        }
        BatchOperation::Check { id, if_match } => batch.read_item(
            id,
            Some(BatchReadOptions::default().with_precondition(precondition(if_match))),
        ),
    })
}

/// Commits outbox batches with one transactional batch call each.
#[derive(Clone)]
pub struct CosmosOutboxWriter {
    container: ContainerClient,
    schema: CosmosOutboxSchema,
}

impl std::fmt::Debug for CosmosOutboxWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosmosOutboxWriter")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl CosmosOutboxWriter {
    /// A writer to `container` (the aggregates' container, partitioned on
    /// `schema`'s partition key) that stores events as `schema` describes.
    pub fn new(container: ContainerClient, schema: CosmosOutboxSchema) -> Self {
        Self { container, schema }
    }

    /// The schema events are written with.
    pub fn schema(&self) -> &CosmosOutboxSchema {
        &self.schema
    }

    /// Builds the request for `batch` without sending it (see [`build_batch`]).
    pub fn build(&self, batch: &OutboxBatch) -> Result<PreparedBatch, WriteError> {
        build_batch(&self.schema, batch)
    }

    /// Commits `batch` atomically: every operation and every event, or
    /// nothing. A batch Cosmos DB rolled back is an error naming the
    /// operation that failed and its status.
    pub async fn commit(&self, batch: OutboxBatch) -> Result<CommitReceipt, WriteError> {
        let prepared = self.build(&batch)?;
        let event_ids: Vec<Uuid> = batch.events.iter().map(OutboxEvent::id).collect();
        let operations = prepared.descriptions.len();
        let response = self
            .container
            .execute_transactional_batch(prepared.batch, None)
            .await
            .map_err(|e| request_error(e, prepared.request_bytes))?;
        let results = response.into_model().map_err(|e| WriteError::Service {
            retryable: false,
            source: Box::new(e),
        })?;
        match interpret_results(&results, &prepared.descriptions) {
            Ok(etags) => {
                tracing::debug!(operations, events = event_ids.len(), "outbox batch committed");
                Ok(CommitReceipt {
                    event_ids,
                    operations,
                    etags,
                })
            }
            Err(error) => {
                tracing::debug!(error = %error, retryable = error.is_retryable(), "outbox batch rolled back");
                Err(error)
            }
        }
    }
}

/// Reads the per-operation results of a batch response: all successful →
/// the etags; otherwise the operation that failed (the one whose status is
/// not 424 Failed Dependency) as a typed error.
pub fn interpret_batch_results(
    results: &TransactionalBatchResponse,
    descriptions: &[String],
) -> Result<Vec<Option<String>>, WriteError> {
    interpret_results(results, descriptions)
}

fn interpret_results(
    results: &TransactionalBatchResponse,
    descriptions: &[String],
) -> Result<Vec<Option<String>>, WriteError> {
    let results = results.results();
    if results.len() != descriptions.len() {
        return Err(WriteError::Service {
            retryable: false,
            source: format!(
                "the batch response has {} results for {} operations",
                results.len(),
                descriptions.len()
            )
            .into(),
        });
    }
    if results.iter().all(TransactionalBatchOperationResult::is_success) {
        return Ok(results.iter().map(|r| r.etag().map(str::to_owned)).collect());
    }
    let failed = results
        .iter()
        .position(|r| !r.is_success() && r.status_code() != 424)
        .or_else(|| results.iter().position(|r| !r.is_success()))
        .unwrap_or(0);
    let result = &results[failed];
    Err(operation_error(failed, &descriptions[failed], result))
}

fn operation_error(
    operation: usize,
    description: &str,
    result: &TransactionalBatchOperationResult,
) -> WriteError {
    let description = description.to_owned();
    match result.status_code() {
        409 => WriteError::Conflict {
            operation,
            description,
        },
        412 => WriteError::PreconditionFailed {
            operation,
            description,
        },
        404 => WriteError::NotFound {
            operation,
            description,
        },
        429 => WriteError::Throttled {
            retry_after: result.retry_after(),
        },
        413 => WriteError::TooLarge {
            size: 0,
            limit: MAX_BATCH_REQUEST_BYTES,
        },
        status if status == 408 || status == 449 || status >= 500 => WriteError::Service {
            retryable: true,
            source: format!("operation #{operation} ({description}) failed with status {status}").into(),
        },
        status => WriteError::Rejected {
            operation: Some(operation),
            description,
            status,
            sub_status: result.substatus_code(),
        },
    }
}

/// A whole-request failure.
pub(crate) fn request_error(error: CosmosError, request_bytes: usize) -> WriteError {
    let status = status_of(&error);
    match status {
        429 => WriteError::Throttled {
            retry_after: retry_after_of(&error),
        },
        413 => WriteError::TooLarge {
            size: request_bytes,
            limit: MAX_BATCH_REQUEST_BYTES,
        },
        _ => match classify(&error) {
            ErrorClass::Transient => WriteError::Service {
                retryable: true,
                source: Box::new(error),
            },
            ErrorClass::Permanent => WriteError::Rejected {
                operation: None,
                description: error.to_string(),
                status,
                sub_status: error.status().sub_status().map(|s| u32::from(s.value())),
            },
        },
    }
}

#[cfg(test)]
mod tests;
