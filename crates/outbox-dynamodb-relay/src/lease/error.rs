//! Why a lease operation did not happen, and how an SDK error is classified.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// Why a lease operation did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// This owner does not hold the lease (any more): another runner took it
    /// over, or it was released. Stop processing the shard.
    #[error("lease of shard {shard_id} is not held by this runner (owner: {owner:?})")]
    LostLease {
        /// The shard.
        shard_id: String,
        /// Who holds it now, if anyone.
        owner: Option<String>,
    },
    /// Another runner holds an unexpired lease on the shard.
    #[error("shard {shard_id} is leased by {owner} until {expires_at_ms} (epoch ms)")]
    Held {
        /// The shard.
        shard_id: String,
        /// The current owner.
        owner: String,
        /// When its lease expires, epoch milliseconds.
        expires_at_ms: i64,
    },
    /// The shard is finished: there is nothing left to lease.
    #[error("shard {shard_id} is finished")]
    Finished {
        /// The shard.
        shard_id: String,
    },
    /// A sequence number is not a decimal number.
    #[error("sequence number {sequence_number:?} is not a decimal number")]
    InvalidSequenceNumber {
        /// The value given.
        sequence_number: String,
    },
    /// A lease item in the table does not have the expected shape.
    #[error("lease item of shard {shard_id} is malformed: {reason}")]
    Malformed {
        /// The shard (its sort key), or `?`.
        shard_id: String,
        /// What is wrong.
        reason: String,
    },
    /// The lease table does not exist.
    #[error("lease table {table} not found")]
    TableNotFound {
        /// The table name.
        table: String,
    },
    /// The credentials may not use the lease table.
    #[error("access to lease table {table} denied ({code})")]
    AccessDenied {
        /// The table name.
        table: String,
        /// The service's error code.
        code: String,
    },
    /// DynamoDB refused the request (validation, bad table shape).
    #[error("DynamoDB rejected the lease operation on {table}: {code}: {message}")]
    Rejected {
        /// The table name.
        table: String,
        /// The service's error code.
        code: String,
        /// The service's message.
        message: String,
    },
    /// Throttling, a 5xx, a timeout or a connection failure: retry with backoff.
    #[error("lease table call failed")]
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

pub(crate) fn malformed(shard_id: &str, reason: impl Into<String>) -> LeaseError {
    LeaseError::Malformed {
        shard_id: shard_id.to_owned(),
        reason: reason.into(),
    }
}

pub(crate) fn rejected(table: &str, code: &str, message: String) -> LeaseError {
    LeaseError::Rejected {
        table: table.to_owned(),
        code: code.to_owned(),
        message,
    }
}

/// How an SDK error should be handled, for every DynamoDB and DynamoDB
/// Streams call of the runner and the lease store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// Throttling, 5xx, timeouts, connection failures: retry with backoff.
    Transient,
    /// Bad or missing credentials, or no permission.
    AccessDenied,
    /// `ResourceNotFoundException`.
    NotFound,
    /// `ExpiredIteratorException`.
    ExpiredIterator,
    /// `TrimmedDataAccessException`.
    Trimmed,
    /// Anything else: the request is refused as it is.
    Rejected,
}

/// Classifies an error code (and the HTTP status when there was an answer).
pub(crate) fn classify_code(code: Option<&str>, server_error: bool) -> ErrorClass {
    match code.unwrap_or_default() {
        "ThrottlingException"
        | "Throttling"
        | "LimitExceededException"
        | "ProvisionedThroughputExceededException"
        | "RequestLimitExceeded"
        | "InternalServerError"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "RequestTimeout"
        | "RequestTimeoutException" => ErrorClass::Transient,
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "MissingAuthenticationToken"
        | "MissingAuthenticationTokenException"
        | "IncompleteSignatureException"
        | "ExpiredTokenException"
        | "InvalidClientTokenId" => ErrorClass::AccessDenied,
        "ResourceNotFoundException" => ErrorClass::NotFound,
        "ExpiredIteratorException" => ErrorClass::ExpiredIterator,
        "TrimmedDataAccessException" => ErrorClass::Trimmed,
        _ if server_error => ErrorClass::Transient,
        _ => ErrorClass::Rejected,
    }
}

/// Classifies an SDK error of any DynamoDB or DynamoDB Streams operation.
pub(crate) fn classify<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> ErrorClass {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ErrorClass::Transient
        }
        SdkError::ServiceError(se) => classify_code(se.err().code(), se.raw().status().is_server_error()),
        _ => ErrorClass::Rejected,
    }
}

/// A lease error from an SDK error of a lease table call.
pub(crate) fn lease_error<E>(table: &str, err: SdkError<E, HttpResponse>) -> LeaseError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let class = classify(&err);
    match err {
        SdkError::ServiceError(se) => service_error(table, se.into_err(), Some(class)),
        other => LeaseError::Service {
            retryable: class == ErrorClass::Transient,
            source: Box::new(other),
        },
    }
}

/// A lease error from a service's answer. `class` is recomputed from the
/// code when the HTTP status is no longer at hand.
pub(crate) fn service_error<E>(table: &str, err: E, class: Option<ErrorClass>) -> LeaseError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = err.code().unwrap_or("Unknown").to_owned();
    match class.unwrap_or_else(|| classify_code(err.code(), false)) {
        ErrorClass::NotFound => LeaseError::TableNotFound {
            table: table.to_owned(),
        },
        ErrorClass::AccessDenied => LeaseError::AccessDenied {
            table: table.to_owned(),
            code,
        },
        ErrorClass::Transient => LeaseError::Service {
            retryable: true,
            source: Box::new(err),
        },
        _ => {
            let message = err.message().unwrap_or_default().to_owned();
            LeaseError::Rejected {
                table: table.to_owned(),
                code,
                message,
            }
        }
    }
}
