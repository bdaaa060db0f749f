//! Amazon EventBridge sink and SQS quarantine for **outbox-relay**.
//!
//! - [`EventBridgeSink`] implements [`outbox_core::EventSink`] with
//!   `PutEvents`: one request per chunk (at most [`MAX_PUT_EVENTS_ENTRIES`]
//!   entries and a configurable byte limit, [`DEFAULT_MAX_REQUEST_BYTES`] by
//!   default), every per-entry result read and classified, whole-call failures
//!   turned into [`outbox_core::SinkError`]s with their retry class. The
//!   calls go through the AWS SDK's client, with its configuration
//!   (endpoints, credentials, retries, timeouts, trace header).
//! - [`to_put_events_entry_as`] and [`entry_size_as`] are the pure halves:
//!   the request entry for one event (as `Detail`, the envelope or a
//!   CloudEvents event, per [`BusFormat`]) and its size as EventBridge
//!   counts it; [`to_put_events_entry`] and [`entry_size`] are the
//!   envelope's.
//! - [`SqsQuarantine`] implements [`outbox_core::Quarantine`]: one SQS message
//!   per record that can never be delivered, whose body is a
//!   [`QuarantineMessage`] that redrive tooling reads back with
//!   [`QuarantineMessage::from_body`]. A message too large for the queue
//!   is stored in S3 by an [`S3ClaimCheck`] and the message carries its
//!   [`ClaimCheck`] ([`QuarantineMessage::resolve`] reads it back).
//!
//! ```no_run
//! use outbox_core::{Relay, RelayConfig, RelayRecord};
//! use outbox_eventbridge::{EventBridgeSink, SqsQuarantine};
//!
//! # async fn example(
//! #     eventbridge: aws_sdk_eventbridge::Client,
//! #     sqs: aws_sdk_sqs::Client,
//! #     records: Vec<RelayRecord>,
//! # ) {
//! // `eventbridge` and `sqs` are SDK clients built from the shared AWS configuration.
//! let sink = EventBridgeSink::new(eventbridge, "orders-bus").with_max_request_bytes(256 * 1024);
//! let quarantine = SqsQuarantine::new(sqs, "https://sqs.eu-west-1.amazonaws.com/123456789012/outbox-quarantine")
//!     .with_origin("dynamodb:orders");
//! let relay = Relay::new(sink, quarantine, RelayConfig::default());
//!
//! let outcome = relay.relay(&records, None).await;
//! if let Some(position) = &outcome.first_failure {
//!     eprintln!("resume from {position}");
//! }
//! # }
//! ```

mod claim_check;
mod config;
mod entry;
mod error;
mod format;
mod quarantine;
mod sink;

pub use claim_check::{ClaimCheck, ClaimCheckError, DEFAULT_CLAIM_CHECK_PREFIX, S3ClaimCheck};
pub use config::{
    ENV_BUS_FORMAT, ENV_CLAIM_CHECK_BUCKET, ENV_EVENT_BUS_NAME, ENV_LARGE_EVENTS, ENV_MAX_REQUEST_BYTES,
    ENV_PUT_EVENTS_TIMEOUT_MS, ENV_QUARANTINE_MAX_MESSAGE_BYTES, ENV_QUARANTINE_QUEUE_URL,
    EVENTBRIDGE_VARIABLES, EventBridgeConfig, LargeEvents,
};
pub use entry::{
    DEFAULT_MAX_REQUEST_BYTES, MAX_PUT_EVENTS_ENTRIES, TIME_ENTRY_BYTES, entry_size, entry_size_as,
    request_entry_size, to_put_events_entry, to_put_events_entry_as,
};
pub use error::{QuarantineMessageError, ResolveError};
pub use format::{BusFormat, UnknownBusFormat};
pub use quarantine::{
    ATTRIBUTE_EVENT_ID, ATTRIBUTE_EVENT_TYPE, ATTRIBUTE_REASON, DEFAULT_MAX_MESSAGE_BYTES,
    MAX_REASON_ATTRIBUTE_BYTES, QuarantineMessage, SqsQuarantine,
};
pub use sink::EventBridgeSink;
