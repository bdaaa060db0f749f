//! Errors of this crate. The ports' own errors ([`outbox_core::SinkError`],
//! [`outbox_core::QuarantineError`]) are what the sink and the quarantine
//! return; this module holds what the crate adds.

/// A text that is not a [`QuarantineMessage`](crate::QuarantineMessage) body.
#[derive(Debug, thiserror::Error)]
#[error("not a quarantine message body (line {line}, column {column})")]
pub struct QuarantineMessageError {
    line: usize,
    column: usize,
    #[source]
    source: serde_json::Error,
}

impl QuarantineMessageError {
    pub(crate) fn new(source: serde_json::Error) -> Self {
        Self {
            line: source.line(),
            column: source.column(),
            source,
        }
    }

    /// The line (1-based) where the body stopped making sense.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The column (1-based) where the body stopped making sense.
    pub fn column(&self) -> usize {
        self.column
    }
}

/// A quarantine message whose whole text could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The object its claim-check names could not be read.
    #[error("the claim-checked message could not be read")]
    Fetch(#[from] crate::ClaimCheckError),
    /// The stored text is not a quarantine message.
    #[error("the claim-checked object is not a quarantine message")]
    Body(#[from] QuarantineMessageError),
}
