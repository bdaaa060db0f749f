//! Errors of the Cosmos writer, the outbox document decoder, the lease store
//! and the change-feed processor.

use std::time::Duration;

use azure_data_cosmos::CosmosError;
use outbox_core::EnvelopeError;

/// Why an outbox batch was not committed.
///
/// The variants say what the caller can do: fix the input
/// (`TooManyOperations`, `TooLarge`, `Invalid`, `Rejected`), read the
/// aggregate again and retry (`Conflict`, `PreconditionFailed`, `NotFound`:
/// [`needs_fresh_read`](Self::needs_fresh_read)), or retry as is
/// ([`is_retryable`](Self::is_retryable): `Throttled`, some `Service` errors).
/// When Cosmos DB rolled the batch back, the error names the operation that
/// failed (its index in the batch and what it was) and its status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// More operations than one transactional batch may hold.
    #[error("batch has {count} operations; Cosmos DB allows at most {limit}")]
    TooManyOperations {
        /// Operations in the batch (aggregate operations plus events).
        count: usize,
        /// [`MAX_BATCH_OPERATIONS`](crate::MAX_BATCH_OPERATIONS).
        limit: usize,
    },
    /// The request body is over the batch size limit.
    #[error("batch request is {size} bytes; Cosmos DB allows at most {limit} bytes")]
    TooLarge {
        /// The request body's size in bytes.
        size: usize,
        /// [`MAX_BATCH_REQUEST_BYTES`](crate::MAX_BATCH_REQUEST_BYTES).
        limit: usize,
    },
    /// The batch cannot be sent as built (empty, a document without an `id`
    /// or with another partition key, a sequence Cosmos DB cannot store exactly).
    #[error("invalid batch: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// An operation conflicts with an existing document (a create of an id
    /// that exists, including an outbox event written before). Read and retry.
    #[error(
        "batch rolled back: operation #{operation} ({description}) conflicts with an existing document (409)"
    )]
    Conflict {
        /// Index of the failing operation in the batch.
        operation: usize,
        /// Which operation: kind and document id.
        description: String,
    },
    /// An operation's `IfMatch` etag is stale: the document changed since it
    /// was read. Read it again and retry.
    #[error("batch rolled back: operation #{operation} ({description}) failed its precondition (412)")]
    PreconditionFailed {
        /// Index of the failing operation in the batch.
        operation: usize,
        /// Which operation: kind and document id.
        description: String,
    },
    /// An operation targets a document that does not exist (replace, delete,
    /// check). Read and retry.
    #[error("batch rolled back: operation #{operation} ({description}) found no document (404)")]
    NotFound {
        /// Index of the failing operation in the batch.
        operation: usize,
        /// Which operation: kind and document id.
        description: String,
    },
    /// Cosmos DB refused an operation, or the whole request, for a reason
    /// that retrying cannot fix (bad request, too large, forbidden).
    #[error("{}", rejected_message(*operation, description, *status, *sub_status))]
    Rejected {
        /// Index of the failing operation, when one operation failed.
        operation: Option<usize>,
        /// Which operation, or what the service said.
        description: String,
        /// The HTTP status.
        status: u16,
        /// The Cosmos DB sub-status, if any.
        sub_status: Option<u32>,
    },
    /// An aggregate's state cannot be stored or read as a document: not a
    /// JSON object, a field named like one the container uses, or a stored
    /// document that does not fit the type.
    #[error("aggregate {aggregate}: {reason}")]
    State {
        /// `<aggregate type>/<id>`.
        aggregate: String,
        /// What does not fit.
        reason: String,
    },
    /// An event could not be built from a typed value.
    #[error("event cannot be built")]
    Event(#[from] EnvelopeError),
    /// Request rate too large (429), after the SDK's own retries. Retry after
    /// `retry_after` (the server's hint, when it gave one).
    #[error("throttled by Cosmos DB (429)")]
    Throttled {
        /// How long the server asked to wait.
        retry_after: Option<Duration>,
    },
    /// The call failed outside a per-operation answer: timeout, connection,
    /// 5xx, an unreadable response.
    #[error("Cosmos DB call failed")]
    Service {
        /// Whether retrying may help.
        retryable: bool,
        /// The SDK error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn rejected_message(
    operation: Option<usize>,
    description: &str,
    status: u16,
    sub_status: Option<u32>,
) -> String {
    let status = match sub_status {
        Some(sub) => format!("{status}/{sub}"),
        None => status.to_string(),
    };
    match operation {
        Some(operation) => {
            format!("batch rolled back: operation #{operation} ({description}) refused with status {status}")
        }
        None => format!("batch refused with status {status}: {description}"),
    }
}

impl WriteError {
    /// Whether sending the same batch again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Throttled { .. } => true,
            Self::Service { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// Whether the caller should read the aggregate again, rebuild the batch
    /// and retry (optimistic concurrency lost a race).
    pub fn needs_fresh_read(&self) -> bool {
        matches!(
            self,
            Self::Conflict { .. } | Self::PreconditionFailed { .. } | Self::NotFound { .. }
        )
    }

    /// The index of the operation that made Cosmos DB roll the batch back, if one did.
    pub fn failed_operation(&self) -> Option<usize> {
        match self {
            Self::Conflict { operation, .. }
            | Self::PreconditionFailed { operation, .. }
            | Self::NotFound { operation, .. } => Some(*operation),
            Self::Rejected { operation, .. } => *operation,
            _ => None,
        }
    }
}

/// Why a document that carries the outbox marker could not be decoded into
/// an event. A change with such a document is poison: it is quarantined
/// with the full document, never dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A required field is absent (or `null`).
    #[error("field `{name}` is missing")]
    MissingField {
        /// Field name.
        name: String,
    },
    /// A field has the wrong JSON type.
    #[error("field `{name}` is {found}, expected {expected}")]
    WrongType {
        /// Field name.
        name: String,
        /// The JSON type the schema requires.
        expected: &'static str,
        /// The JSON type found.
        found: &'static str,
    },
    /// A field has the right type but a value that cannot be used.
    #[error("field `{name}` is invalid: {reason}")]
    InvalidValue {
        /// Field name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The marker names a schema version this build does not know.
    #[error("outbox schema version {found:?} is not supported (expected \"v1\")")]
    UnsupportedVersion {
        /// The marker's value.
        found: String,
    },
    /// The fields decode but do not make a valid event.
    #[error("the fields do not make a valid event: {reason}")]
    Envelope {
        /// The envelope's validation error, as text (it names the field).
        reason: String,
    },
}

impl From<EnvelopeError> for DecodeError {
    fn from(e: EnvelopeError) -> Self {
        Self::Envelope {
            reason: e.to_string(),
        }
    }
}

/// Why a lease operation did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// This owner does not hold the lease (any more): another instance took
    /// it over, or it was released or split. Stop processing the range.
    #[error("lease {id} is not held by this instance (owner: {owner:?})")]
    LostLease {
        /// The lease id.
        id: String,
        /// Who holds it now, if anyone.
        owner: Option<String>,
    },
    /// Another instance holds an unexpired lease.
    #[error("lease {id} is held by {owner} until {expires_at_ms} (epoch ms)")]
    Held {
        /// The lease id.
        id: String,
        /// The current owner.
        owner: String,
        /// When its lease expires, epoch milliseconds.
        expires_at_ms: i64,
    },
    /// The lease document does not exist (any more).
    #[error("lease {id} not found")]
    NotFound {
        /// The lease id.
        id: String,
    },
    /// A lease document does not have the expected shape.
    #[error("lease document {id} is malformed: {reason}")]
    Malformed {
        /// The document id, or `?`.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// The configuration cannot work (a prefix with characters Cosmos DB ids
    /// may not hold).
    #[error("invalid lease store configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// Cosmos DB refused the call for a reason that retrying cannot fix
    /// (missing container, access denied, bad request).
    #[error("lease container call refused with status {status}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The SDK error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Throttling, a 5xx, a timeout or a connection failure: retry with backoff.
    #[error("lease container call failed")]
    Service {
        /// Whether retrying may help.
        retryable: bool,
        /// The SDK error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl LeaseError {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Service { retryable: true, .. })
    }
}

impl outbox_core::host::LeaseFault for LeaseError {
    fn is_lost(&self) -> bool {
        matches!(self, Self::LostLease { .. })
    }

    fn is_retryable(&self) -> bool {
        LeaseError::is_retryable(self)
    }
}

/// Why the change-feed processor stopped with an error. Transient errors
/// (throttling, 5xx, timeouts) never end a run: they are retried with backoff.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessorError {
    /// A [`ProcessorConfig`](crate::ProcessorConfig) value is unusable.
    #[error("invalid processor configuration: {reason}")]
    InvalidConfig {
        /// Which value, and why.
        reason: String,
    },
    /// The monitored container refused a call for a reason that retrying
    /// cannot fix (missing container, access denied, a continuation it does
    /// not accept).
    #[error("{operation} on the monitored container was refused with status {status}")]
    Refused {
        /// What was being done.
        operation: &'static str,
        /// The HTTP status.
        status: u16,
        /// The SDK error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The lease store failed in a way retrying cannot fix.
    #[error("the lease store failed")]
    Lease(#[from] LeaseError),
}

/// How an SDK error is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// 408, 429, 449, 5xx, transport failures: retry with backoff.
    Transient,
    /// 400, 401, 403, a clean 404, 413, ...: retrying cannot help.
    Permanent,
}

/// Classifies an SDK error by its status.
pub(crate) fn classify(error: &CosmosError) -> ErrorClass {
    let status = error.status();
    let code = u16::from(status.status_code());
    if status.is_transient() || code >= 500 || status.is_gone() || status.is_read_session_not_available() {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    }
}

/// The HTTP status of an SDK error.
pub(crate) fn status_of(error: &CosmosError) -> u16 {
    u16::from(error.status().status_code())
}

/// The server's `x-ms-retry-after-ms`, when the error carries a response.
pub(crate) fn retry_after_of(error: &CosmosError) -> Option<Duration> {
    error
        .response()
        .and_then(|r| r.headers().retry_after_ms)
        .map(Duration::from_millis)
}
