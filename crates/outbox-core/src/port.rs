//! The ports the relay drives: where events go ([`EventSink`]) and where
//! records that can never be delivered go ([`Quarantine`]).

use std::future::Future;

use crate::OutboxEvent;

/// Whether trying again may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// Throttling, internal failures, 5xx, timeouts: retry with backoff.
    Transient,
    /// The entry itself is refused (invalid, malformed, too large): it will
    /// never succeed and is quarantined.
    Permanent,
}

/// The result of one entry of a [`EventSink::publish`] call, in input order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryResult {
    /// The bus accepted the event.
    Published,
    /// The bus refused this entry (an HTTP 200 can still carry these).
    Failed {
        /// Retry or quarantine.
        class: FailureClass,
        /// The bus's error code, e.g. `ThrottlingException`, `MalformedDetail`.
        code: String,
        /// The bus's message.
        message: String,
    },
}

/// A whole `publish` call failed: no entry of it was accepted.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SinkError {
    /// `Transient` (throttled, 5xx, timeout, connection): the chunk is
    /// retried. `Permanent` (access denied, missing bus, bad configuration):
    /// retrying within this batch cannot help and quarantining would be
    /// wrong (the events are fine), so the records fail and the host retries
    /// the batch later.
    pub class: FailureClass,
    /// An error code.
    pub code: String,
    /// What happened.
    pub message: String,
}

/// What a sink can take in one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Most entries per call.
    pub max_entries: usize,
    /// Most bytes per call, as the sink counts entry sizes.
    pub max_bytes: usize,
}

/// Where events are published (Amazon EventBridge, or a fake in tests).
pub trait EventSink: Send + Sync {
    /// The per-call limits.
    fn limits(&self) -> ChunkLimits;

    /// The size one event counts towards [`ChunkLimits::max_bytes`]. An event
    /// bigger than the limit on its own can never be sent and is quarantined.
    fn entry_size(&self, event: &OutboxEvent) -> usize;

    /// Publishes one chunk (within [`limits`](Self::limits)); the results are
    /// one per event, in order.
    fn publish(
        &self,
        events: &[&OutboxEvent],
    ) -> impl Future<Output = Result<Vec<EntryResult>, SinkError>> + Send;
}

/// A record that can never be delivered, with why and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantinedRecord {
    /// The record's position in its stream (DynamoDB sequence number, ...).
    pub position: String,
    /// Why it is quarantined.
    pub reason: String,
    /// The event, when the record decoded into one.
    pub event: Option<OutboxEvent>,
    /// The full original record, as JSON text, when it did not decode.
    pub raw: Option<String>,
}

/// The quarantine could not take a record.
#[derive(Debug, Clone, thiserror::Error)]
#[error("quarantine failed: {message}")]
pub struct QuarantineError {
    /// What happened.
    pub message: String,
}

/// Where records that can never be delivered are kept, with their full
/// content, so that nothing is dropped (an SQS queue, or a fake in tests).
pub trait Quarantine: Send + Sync {
    /// Stores one record.
    fn quarantine(
        &self,
        record: &QuarantinedRecord,
    ) -> impl Future<Output = Result<(), QuarantineError>> + Send;
}
