//! Errors of the envelope.

/// Why an [`OutboxEvent`](crate::OutboxEvent) could not be built or parsed.
///
/// Every variant names the field at fault, so a caller can fix the input
/// without reading the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// A required text field is empty (or only whitespace).
    #[error("field `{field}` must not be empty")]
    Empty {
        /// The field's name.
        field: &'static str,
    },
    /// A required field is absent.
    #[error("field `{field}` is missing")]
    Missing {
        /// The field's name.
        field: &'static str,
    },
    /// A field has a value that it cannot have.
    #[error("field `{field}` is invalid: {reason}")]
    Invalid {
        /// The field's name.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The `trace_parent` is not a W3C `traceparent` header value.
    #[error("field `trace_parent` is not a W3C traceparent (`00-<32 hex>-<16 hex>-<2 hex>`): {value:?}")]
    InvalidTraceParent {
        /// The value that was given.
        value: String,
    },
    /// The payload could not be turned into JSON, or the text given as the
    /// payload is not one JSON value.
    #[error("field `payload` is not JSON")]
    Payload(#[source] serde_json::Error),
    /// The JSON text is not an envelope.
    #[error("not an outbox event envelope")]
    Json(#[source] serde_json::Error),
}

/// An error and its chain of causes as one line, `error: cause: cause`
/// (`Display` of an error here says only its own part): for Lambda
/// diagnostics, quarantine reasons and logs.
pub fn error_chain(error: &(dyn std::error::Error + '_)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
