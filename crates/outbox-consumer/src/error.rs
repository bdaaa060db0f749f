//! Errors of the idempotent consumer, and how DynamoDB's answers map to them.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use chrono::{DateTime, Utc};

/// Why an event was not processed (or not recorded).
///
/// The variants say what the caller can do: deliver again later
/// ([`is_retryable`](Self::is_retryable): `InProgress`, `Handler`,
/// `TransactionConflict`, `Throttled`, some `Service` errors), acknowledge the
/// delivery (`Duplicate`: the event's effect is already there), re-read and
/// decide (`ConditionFailed`), or fix the setup or the code (the rest).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// Another delivery of the same event is being processed right now (its
    /// in-progress record has not expired). Retry after `expires_at`: by then
    /// it has completed (and a retry returns its result) or it is taken over.
    #[error("event {id} is being processed by another delivery until {expires_at}")]
    InProgress {
        /// The event id.
        id: String,
        /// When the other delivery's claim expires.
        expires_at: DateTime<Utc>,
    },
    /// Transactional mode: the event id is already recorded, so the event's
    /// effect is already committed and nothing was written now. Acknowledge
    /// the delivery.
    #[error("event {id} was already processed")]
    Duplicate {
        /// The event id.
        id: String,
    },
    /// The handler returned an error. Its in-progress record was removed, so
    /// another delivery runs the handler again.
    #[error("the event handler failed")]
    Handler(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Transactional mode: the condition of one of the caller's own
    /// operations failed (operation `operation`, counting from 0 in the items
    /// given); nothing was written and the event id is not recorded.
    #[error("condition failed on operation #{operation} of the consumer's transaction")]
    ConditionFailed {
        /// Position of the operation among the caller's items.
        operation: usize,
    },
    /// Another transaction touched the same items at the same time.
    #[error("transaction conflict with a concurrent request")]
    TransactionConflict,
    /// Throughput exceeded or request throttled.
    #[error("throttled by DynamoDB")]
    Throttled,
    /// The transaction would hold more actions than DynamoDB allows.
    #[error("transaction has {count} actions with the idempotency record; DynamoDB allows at most {limit}")]
    TooManyActions {
        /// The caller's items plus the idempotency record.
        count: usize,
        /// [`MAX_TRANSACT_ITEMS`](crate::MAX_TRANSACT_ITEMS).
        limit: usize,
    },
    /// An input cannot be used (an empty event id, a request that does not build).
    #[error("invalid input: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// The handler's result cannot be serialised as JSON, so it cannot be
    /// stored. The in-progress record was removed.
    #[error("the handler's result for event {id} cannot be serialised as JSON")]
    ResultNotSerializable {
        /// The event id.
        id: String,
        /// The serialisation error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored result does not deserialise into the type the handler
    /// returns (the handler's result type changed since it was stored).
    #[error("the stored result of event {id} does not match the handler's result type")]
    StoredResult {
        /// The event id.
        id: String,
        /// The deserialisation error.
        #[source]
        source: serde_json::Error,
    },
    /// An item of the idempotency table is not in the documented schema.
    #[error("idempotency record {key} is malformed: {reason}")]
    MalformedRecord {
        /// The record's key (`<scope>#<event id>`).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// DynamoDB refused the request (missing table, validation, access
    /// denied). Not retryable.
    #[error("DynamoDB rejected the request: {code}: {message}")]
    Rejected {
        /// DynamoDB's error code.
        code: String,
        /// DynamoDB's message.
        message: String,
    },
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

impl ConsumerError {
    /// Whether delivering the event again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::InProgress { .. } | Self::Handler(_) | Self::TransactionConflict | Self::Throttled => true,
            Self::Service { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

/// Error codes after which the same request may succeed.
const THROTTLING_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "Throttling",
];
const TRANSIENT_CODES: &[&str] = &["InternalServerError", "ServiceUnavailable", "InternalFailure"];

/// A [`ConsumerError`] from an SDK error of a single-item call.
pub(crate) fn sdk_error<E>(err: SdkError<E, HttpResponse>) -> ConsumerError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let transport = matches!(
        err,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
    );
    match err {
        SdkError::ServiceError(se) => service_error(se.into_err()),
        other => ConsumerError::Service {
            retryable: transport,
            source: Box::new(other),
        },
    }
}

/// A [`ConsumerError`] from a service's answer.
pub(crate) fn service_error<E>(err: E) -> ConsumerError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = err.code().unwrap_or("Unknown");
    if THROTTLING_CODES.contains(&code) {
        ConsumerError::Throttled
    } else if TRANSIENT_CODES.contains(&code) {
        ConsumerError::Service {
            retryable: true,
            source: Box::new(err),
        }
    } else {
        ConsumerError::Rejected {
            code: code.to_owned(),
            message: err.message().unwrap_or_default().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_variants_are_the_ones_a_later_delivery_can_get_past() {
        let retryable = [
            ConsumerError::InProgress {
                id: "e".into(),
                expires_at: DateTime::<Utc>::UNIX_EPOCH,
            },
            ConsumerError::Handler("boom".into()),
            ConsumerError::TransactionConflict,
            ConsumerError::Throttled,
            ConsumerError::Service {
                retryable: true,
                source: "timeout".into(),
            },
        ];
        for e in &retryable {
            assert!(e.is_retryable(), "{e}");
        }
        let final_ = [
            ConsumerError::Duplicate { id: "e".into() },
            ConsumerError::ConditionFailed { operation: 0 },
            ConsumerError::TooManyActions {
                count: 101,
                limit: 100,
            },
            ConsumerError::Invalid { reason: "x".into() },
            ConsumerError::Rejected {
                code: "ResourceNotFoundException".into(),
                message: "no table".into(),
            },
            ConsumerError::Service {
                retryable: false,
                source: "bad".into(),
            },
        ];
        for e in &final_ {
            assert!(!e.is_retryable(), "{e}");
        }
    }

    #[test]
    fn display_does_not_repeat_the_source() {
        let e = ConsumerError::Handler("card declined".into());
        assert_eq!(e.to_string(), "the event handler failed");
        assert_eq!(
            std::error::Error::source(&e).map(ToString::to_string).as_deref(),
            Some("card declined")
        );
    }
}
