//! Errors of the DynamoDB writer and of the outbox item decoder.

use outbox_core::EnvelopeError;

/// Why a transaction was not committed.
///
/// The variants say what the caller can do: fix the input (`TooManyActions`,
/// `ItemTooLarge`, `TransactionTooLarge`, `DuplicateItem`, `Invalid`,
/// `Rejected`), re-read and retry (`ConditionFailed`), retry as is
/// ([`is_retryable`](Self::is_retryable): `TransactionConflict`, `Throttled`,
/// `InProgress`, some `Service` errors), or stop (`IdempotencyMismatch`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// More actions than one transaction may hold.
    #[error("transaction has {count} actions; DynamoDB allows at most {limit}")]
    TooManyActions {
        /// Actions in the transaction (business operations plus events).
        count: usize,
        /// [`MAX_TRANSACT_ITEMS`](crate::MAX_TRANSACT_ITEMS).
        limit: usize,
    },
    /// One item is over the item size limit.
    #[error(
        "operation #{operation} ({description}) is {size} bytes; DynamoDB items are at most {limit} bytes"
    )]
    ItemTooLarge {
        /// Position of the operation in the transaction.
        operation: usize,
        /// Which operation: kind, table and key.
        description: String,
        /// Its size in bytes.
        size: usize,
        /// [`MAX_ITEM_SIZE_BYTES`](crate::MAX_ITEM_SIZE_BYTES).
        limit: usize,
    },
    /// The items together are over the transaction size limit.
    #[error("transaction items total {size} bytes; DynamoDB allows at most {limit} bytes per transaction")]
    TransactionTooLarge {
        /// Total size in bytes.
        size: usize,
        /// [`MAX_TRANSACTION_SIZE_BYTES`](crate::MAX_TRANSACTION_SIZE_BYTES).
        limit: usize,
    },
    /// An event is bigger than a bus entry may be: it could be committed but
    /// never published.
    #[error("event {event_id} is {size} bytes as a bus entry; the relay can publish at most {limit}")]
    EventTooLarge {
        /// The event id.
        event_id: String,
        /// Its size as a bus entry.
        size: usize,
        /// [`OutboxSchema::max_event_bytes`](crate::OutboxSchema::max_event_bytes).
        limit: usize,
    },
    /// Two operations target the same item, which DynamoDB refuses.
    #[error(
        "operations #{first} and #{second} both target {description}; a transaction may touch an item only once"
    )]
    DuplicateItem {
        /// Position of the first operation.
        first: usize,
        /// Position of the second operation.
        second: usize,
        /// The item: table and key.
        description: String,
    },
    /// The transaction cannot be sent as built (empty, malformed operation,
    /// bad token, missing key attribute).
    #[error("invalid transaction: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// An operation's condition failed: a version conflict, an item that
    /// already exists, or the caller's own condition. Re-read and retry.
    #[error("condition failed on operation #{operation} ({description})")]
    ConditionFailed {
        /// Position of the operation in the transaction.
        operation: usize,
        /// Which operation: kind, table and key.
        description: String,
    },
    /// The outbox already holds an event with this id.
    #[error("outbox event {event_id} already exists (operation #{operation})")]
    DuplicateEvent {
        /// Position of the outbox put in the transaction.
        operation: usize,
        /// The event id.
        event_id: String,
    },
    /// Another transaction touched the same items at the same time. Retryable.
    #[error("transaction conflict with a concurrent request")]
    TransactionConflict,
    /// Throughput exceeded or request throttled. Retryable with backoff.
    #[error("throttled by DynamoDB")]
    Throttled,
    /// A transaction with the same client request token is still running.
    /// Retryable with the same token.
    #[error("a transaction with the same client request token is in progress")]
    InProgress,
    /// The client request token was used for a different request (within
    /// DynamoDB's 10-minute idempotency window). Use a new token.
    #[error("client request token reused with a different request")]
    IdempotencyMismatch,
    /// DynamoDB refused the request as invalid (validation, missing table,
    /// item collection too large). Not retryable.
    #[error("DynamoDB rejected the transaction: {message}")]
    Rejected {
        /// DynamoDB's error code.
        code: String,
        /// DynamoDB's message.
        message: String,
    },
    /// An aggregate's state cannot be stored or read as an item: not a map
    /// of fields, a field named like a key or outbox attribute, or a stored
    /// item that does not fit the type.
    #[error("aggregate {aggregate}: {reason}")]
    State {
        /// `<aggregate type>/<id>`.
        aggregate: String,
        /// What does not fit.
        reason: String,
    },
    /// An event could not be built from a typed value (its payload does not
    /// serialise, or a field is invalid).
    #[error("event cannot be built")]
    Event(#[from] EnvelopeError),
    /// The call failed outside DynamoDB's answer: timeout, connection, 5xx.
    #[error("DynamoDB call failed")]
    Service {
        /// Whether retrying may help.
        retryable: bool,
        /// The SDK error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl WriteError {
    /// Whether sending the same transaction again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::TransactionConflict | Self::Throttled | Self::InProgress => true,
            Self::Service { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

/// Why an item that carries the outbox marker could not be decoded into an
/// event. A record with such an item is poison: it is quarantined, never
/// dropped.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A required attribute is absent.
    #[error("attribute `{name}` is missing")]
    MissingAttribute {
        /// Attribute name.
        name: String,
    },
    /// An attribute has the wrong DynamoDB type.
    #[error("attribute `{name}` has type {found}, expected {expected}")]
    WrongType {
        /// Attribute name.
        name: String,
        /// The type the schema requires.
        expected: &'static str,
        /// The type found.
        found: &'static str,
    },
    /// An attribute has the right type but a value that cannot be used.
    #[error("attribute `{name}` is invalid: {reason}")]
    InvalidValue {
        /// Attribute name.
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
    /// The attributes decode but do not make a valid event.
    #[error("the attributes do not make a valid event: {reason}")]
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
