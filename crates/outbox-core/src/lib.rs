//! Cloud-agnostic core of **outbox-relay**.
//!
//! This crate has no cloud SDK in it. It holds what the DynamoDB and Cosmos DB
//! halves share:
//!
//! - [`OutboxEvent`], the event envelope written next to the aggregate and later
//!   published to the bus, with its JSON form and its CloudEvents 1.0 mapping;
//!   its builder captures the trace context it is built in (see below);
//! - typed events ([`Event`], [`Events`]) and aggregates ([`Aggregate`],
//!   [`Versioned`]) with the [`Command`] that makes a retried request write
//!   the same events, and the events' registry schemas ([`schema`]);
//! - [`Clock`], so that time (and the time-ordered event ids) can be fixed in tests;
//! - the relay algorithm ([`Relay`]) over two ports, [`EventSink`] and
//!   [`Quarantine`], with its chunking, retry policy and outcome; fakes of
//!   the ports are in the `fakes` module behind the `test-util` feature;
//! - the [`host`] skeleton of the standalone relays: leased partitions, one
//!   worker each, discovery, renewal, balancing and a graceful stop.
//!
//! ```no_run
//! use outbox_core::{OutboxEvent, SystemClock};
//! use serde_json::json;
//!
//! # fn main() -> Result<(), outbox_core::EnvelopeError> {
//! let event = OutboxEvent::builder("com.example.orders", "OrderPlaced")
//!     .aggregate("Order", "o-42")
//!     .sequence(1)
//!     .payload(&json!({ "total": 1999, "currency": "EUR" }))
//!     .metadata("tenant", "acme")
//!     .build(&SystemClock)?;
//! println!("{}", event.to_json());
//! # Ok(())
//! # }
//! ```
//!
//! ## Trace context
//!
//! An event carries the W3C trace context of the code that wrote it
//! ([`TraceParent`]), so that consumers continue the producer's trace across
//! the bus. [`OutboxEventBuilder::trace_parent`] sets it; without it,
//! [`OutboxEventBuilder::build`] captures it, first match wins:
//!
//! 1. with the `opentelemetry` feature (off by default), the current
//!    `tracing` span's OpenTelemetry context, as `tracing-opentelemetry`
//!    tracks it (else OpenTelemetry's current context), when it is a valid
//!    span context;
//! 2. in AWS Lambda, the invocation's X-Ray trace header, which the Rust
//!    runtime puts in `_X_AMZN_TRACE_ID` (converted by
//!    [`TraceParent::from_xray_header`]).
//!
//! [`OutboxEventBuilder::no_trace_capture`] builds without capturing.

mod aggregate;
mod chunk;
mod claim_check;
mod clock;
mod cloudevents;
mod command;
pub mod config;
mod delivered;
mod envelope;
mod error;
#[cfg(any(test, feature = "test-util"))]
pub mod fakes;
pub mod host;
mod payload;
mod port;
mod relay;
mod retry;
pub mod schema;
mod share;
mod typed;

pub use aggregate::{Aggregate, Saved, Versioned, command_events, version_after};
pub use chunk::chunk_ranges;
pub use claim_check::{CLAIM_CHECK_METADATA_KEY, CLAIM_CHECK_STORE, ClaimCheck};
pub use clock::{Clock, FixedClock, SystemClock};
pub use command::{Command, MAX_COMMAND_ID_LEN};
pub use config::{ConfigError, Env};
pub use delivered::DEFAULT_DELIVERED_MEMORY;
pub use envelope::{MAX_METADATA_KEY_LEN, OutboxEvent, OutboxEventBuilder, OutboxEventParts, TraceParent};
pub use error::{EnvelopeError, error_chain};
pub use payload::{MAX_PAYLOAD_DEPTH, Payload};
pub use port::{
    ChunkLimits, EntryResult, EventSink, FailureClass, Quarantine, QuarantineError, QuarantinedRecord,
    SinkError,
};
pub use relay::{BatchOutcome, Decoded, Relay, RelayConfig, RelayRecord, SkipReason};
pub use retry::{Backoff, RetryPolicy};
pub use share::fair_share;
pub use typed::{Event, Events, TypedEventError};

/// `#[derive(Event)]`: a struct as one event type, an enum as a set of them.
pub use outbox_derive::Event;
/// The JSON Schema generator the typed events' schemas come from.
pub use schemars;
