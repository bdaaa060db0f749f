//! The Lambda handler: a DynamoDB Streams batch in, `batchItemFailures` out.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::LambdaEvent;
use outbox_core::{BatchOutcome, EventSink, Quarantine, Relay};
use outbox_dynamodb_relay::{DynamoDbStreamDecoder, LambdaStreamBatch, StreamError};
use tokio::time::Instant;
use tracing::Instrument;

use crate::metrics::emf_line;

/// A whole invocation failed: Lambda retries the batch (or bisects it) and,
/// past the mapping's limits, sends it to the on-failure destination.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// The stream does not carry what the relay needs (e.g. no new images).
    #[error("the stream records cannot be relayed")]
    Stream(#[from] StreamError),
}

impl From<HandlerError> for lambda_runtime::Diagnostic {
    /// `NonRetryable.<cause>`: the batch fails as a whole and retrying the
    /// same records cannot succeed until the configuration is fixed. The
    /// message carries the whole chain of causes.
    fn from(error: HandlerError) -> Self {
        let kind = match &error {
            HandlerError::Stream(StreamError::MissingNewImage { .. }) => "NonRetryable.MissingNewImage",
            HandlerError::Stream(_) => "NonRetryable.MalformedStreamRecord",
        };
        Self {
            error_type: kind.to_owned(),
            error_message: outbox_core::error_chain(&error),
        }
    }
}

type MetricsWriter = Arc<dyn Fn(&str) + Send + Sync>;

/// Relays DynamoDB Streams batches: decode the records as the relay reads
/// them (the first chunks are published while the rest is decoded), and
/// report the first record neither delivered nor quarantined.
pub struct RelayHandler<S, Q> {
    decoder: DynamoDbStreamDecoder,
    relay: Relay<S, Q>,
    namespace: String,
    metrics: MetricsWriter,
}

impl<S, Q> std::fmt::Debug for RelayHandler<S, Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayHandler")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// Writes one EMF line to standard output, where Lambda's log capture takes it.
fn stdout_metrics(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A metrics line that cannot be written is not worth failing a batch for.
    let _ = writeln!(out, "{line}");
}

impl<S: EventSink, Q: Quarantine> RelayHandler<S, Q> {
    /// A handler over `decoder` and `relay`, writing EMF metrics in
    /// `namespace` to standard output.
    pub fn new(decoder: DynamoDbStreamDecoder, relay: Relay<S, Q>, namespace: impl Into<String>) -> Self {
        Self {
            decoder,
            relay,
            namespace: namespace.into(),
            metrics: Arc::new(stdout_metrics),
        }
    }

    /// Sends EMF lines to `writer` instead of standard output.
    #[must_use]
    pub fn with_metrics_writer(mut self, writer: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.metrics = Arc::new(writer);
        self
    }

    /// The relay.
    pub fn relay(&self) -> &Relay<S, Q> {
        &self.relay
    }

    /// The Lambda entry point. The deadline comes from the context (none
    /// when it is 0, as in `Context::default()`).
    pub async fn handle(
        &self,
        event: LambdaEvent<LambdaStreamBatch>,
    ) -> Result<DynamoDbEventResponse, HandlerError> {
        let deadline = deadline_from_epoch_ms(event.context.deadline);
        let span = tracing::info_span!(
            "batch",
            request_id = %event.context.request_id,
            records = event.payload.len()
        );
        let function = event.context.env_config.function_name.clone();
        self.handle_batch(event.payload, deadline, &function)
            .instrument(span)
            .await
            .map(|(response, _)| response)
    }

    /// Relays one batch and returns the response and what happened. The
    /// batch is consumed: each record's text is freed once it is decoded.
    /// A batch that cannot be relayed at all (a record without a
    /// `SequenceNumber`, an insert without a new image) is an error, and the
    /// chunks completed before that record may have been published.
    pub async fn handle_batch(
        &self,
        batch: LambdaStreamBatch,
        deadline: Option<Instant>,
        function_name: &str,
    ) -> Result<(DynamoDbEventResponse, BatchOutcome), HandlerError> {
        let records = self.decoder.decode_lambda_each(batch);
        let outcome = self.relay.relay_each(records, deadline).await?;
        tracing::info!(
            records = outcome.records,
            published = outcome.published,
            skipped = outcome.skipped,
            quarantined = outcome.quarantined,
            failed = outcome.failed,
            retried = outcome.retried,
            deadline_reached = outcome.deadline_reached,
            first_failure = outcome.first_failure.as_deref().unwrap_or(""),
            "batch relayed"
        );
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or_default();
        (self.metrics)(&emf_line(&outcome, &self.namespace, function_name, now_ms));
        Ok((response_for(&outcome), outcome))
    }
}

/// The response Lambda expects: the first record neither delivered nor
/// quarantined, or no failure. Lambda resumes from the lowest reported
/// sequence number, so reporting only the first failure is exact.
pub fn response_for(outcome: &BatchOutcome) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    if let Some(position) = &outcome.first_failure {
        let mut failure = DynamoDbBatchItemFailure::default();
        failure.item_identifier = Some(position.clone());
        response.batch_item_failures.push(failure);
    }
    response
}

/// Epoch milliseconds below this (September 2001) are not a time: a local
/// runtime emulator may send the function's timeout there instead.
const EARLIEST_EPOCH_MS: u64 = 1_000_000_000_000;

/// The invocation deadline as an `Instant`, from Lambda's epoch
/// milliseconds: `None` for 0 (no deadline, as in `Context::default()`), for
/// a value that is not an epoch time (some local emulators send the timeout
/// itself, e.g. 600000) and for a deadline too far ahead for the monotonic
/// clock to represent.
pub fn deadline_from_epoch_ms(deadline_ms: u64) -> Option<Instant> {
    if deadline_ms < EARLIEST_EPOCH_MS {
        if deadline_ms != 0 {
            tracing::warn!(
                deadline_ms,
                "the invocation deadline is not an epoch time; relaying without one"
            );
        }
        return None;
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let remaining = u128::from(deadline_ms).saturating_sub(now_ms);
    Instant::now().checked_add(Duration::from_millis(
        u64::try_from(remaining).unwrap_or(u64::MAX),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_too_far_ahead_is_no_deadline() {
        // Far ahead: no panic, whether the monotonic clock can hold it
        // (Linux: about 5.8e8 years) or not (then no deadline).
        if let Some(far) = deadline_from_epoch_ms(u64::MAX) {
            assert!(far > Instant::now() + Duration::from_secs(100 * 365 * 86_400));
        }
        assert_eq!(deadline_from_epoch_ms(0), None);
        assert_eq!(deadline_from_epoch_ms(600_000), None, "a timeout, not a time");
        let soon = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() + 60_000;
        let deadline = deadline_from_epoch_ms(u64::try_from(soon).unwrap()).unwrap();
        let left = deadline - Instant::now();
        assert!(
            left > Duration::from_secs(55) && left <= Duration::from_secs(60),
            "{left:?}"
        );
    }
    use std::sync::Mutex;

    use aws_lambda_events::event::dynamodb::Event;
    use lambda_runtime::Context;
    use outbox_core::fakes::{Fault, FlakySink, RecordingQuarantine, RecordingSink};
    use outbox_core::{FailureClass, RelayConfig, RetryPolicy};
    use outbox_dynamodb::OutboxSchema;

    fn fixture(name: &str) -> Event {
        let path = format!("{}/../../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    /// The fixture's bytes as the runtime hands them to the handler.
    fn batch_file(name: &str) -> LambdaStreamBatch {
        let path = format!("{}/../../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        LambdaStreamBatch::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn config() -> RelayConfig {
        RelayConfig {
            retry: RetryPolicy {
                max_retries: 2,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(20),
            },
            ..RelayConfig::default()
        }
    }

    fn handler<S: EventSink, Q: Quarantine>(
        sink: S,
        quarantine: Q,
    ) -> (RelayHandler<S, Q>, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink_lines = Arc::clone(&lines);
        let handler = RelayHandler::new(
            DynamoDbStreamDecoder::new(OutboxSchema::new("orders")),
            Relay::new(sink, quarantine, config()),
            "OutboxRelay",
        )
        .with_metrics_writer(move |line| sink_lines.lock().unwrap().push(line.to_owned()));
        (handler, lines)
    }

    fn failures(response: &DynamoDbEventResponse) -> Vec<Option<String>> {
        response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_batch_reports_no_failure_and_one_metrics_line() {
        let (handler, lines) = handler(RecordingSink::default(), RecordingQuarantine::default());
        let event = fixture("dynamodb-insert.json");
        let n = event.records.len();
        let response = handler
            .handle(LambdaEvent::new(
                LambdaStreamBatch::from_event(&event),
                Context::default(),
            ))
            .await
            .unwrap();
        assert!(failures(&response).is_empty());
        assert_eq!(handler.relay().sink().published().len(), n);
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1);
        let emf: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(emf["EventsPublished"], n);
    }

    #[tokio::test(start_paused = true)]
    async fn every_fixture_is_handled_without_a_failure() {
        for name in [
            "dynamodb-insert.json",
            "dynamodb-modify.json",
            "dynamodb-ttl-remove.json",
            "dynamodb-foreign-item.json",
            "dynamodb-malformed-outbox-item.json",
            "dynamodb-unknown-event-name.json",
            "dynamodb-mixed-batch.json",
        ] {
            let event = fixture(name);
            let (twin, _) = handler(RecordingSink::default(), RecordingQuarantine::default());
            let (handler, _) = handler(RecordingSink::default(), RecordingQuarantine::default());
            let (response, outcome) = handler.handle_batch(batch_file(name), None, "f").await.unwrap();
            assert!(failures(&response).is_empty(), "{name}");
            assert_eq!(
                outcome.published + outcome.skipped + outcome.quarantined,
                event.records.len(),
                "{name}: every record is accounted for"
            );
            // The parsed event, written back as JSON, is handled the same way.
            let (_, twin_outcome) = twin
                .handle_batch(LambdaStreamBatch::from_event(&event), None, "f")
                .await
                .unwrap();
            assert_eq!(twin_outcome.published, outcome.published, "{name}");
            assert_eq!(twin_outcome.skipped, outcome.skipped, "{name}");
            assert_eq!(twin_outcome.quarantined, outcome.quarantined, "{name}");
            assert_eq!(
                twin.relay().sink().published(),
                handler.relay().sink().published(),
                "{name}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_mixed_batch_publishes_skips_and_quarantines_as_documented() {
        let (handler, _) = handler(RecordingSink::default(), RecordingQuarantine::default());
        let (_, outcome) = handler
            .handle_batch(batch_file("dynamodb-mixed-batch.json"), None, "f")
            .await
            .unwrap();
        assert!(outcome.published >= 2);
        assert_eq!(outcome.quarantined, 1);
        assert!(outcome.skipped >= 4);
        let quarantined = handler.relay().quarantine().records();
        assert!(
            quarantined[0].reason.contains("sequence"),
            "{}",
            quarantined[0].reason
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_that_keeps_failing_is_the_reported_sequence_number() {
        let event = fixture("dynamodb-insert.json");
        let stuck_position = event.records[1].change.sequence_number.clone();
        let decoder = DynamoDbStreamDecoder::new(OutboxSchema::new("orders"));
        let stuck_id = match decoder.decode_lambda_record(&event.records[1]).unwrap().decoded {
            outbox_core::Decoded::Event(e) => e.id(),
            other => panic!("{other:?}"),
        };
        let sink = FlakySink::new(move |e, _| {
            if e.id() == stuck_id {
                Fault::Entry(FailureClass::Transient, "ThrottlingException")
            } else {
                Fault::Accept
            }
        });
        let (handler, _) = handler(sink, RecordingQuarantine::default());
        let response = handler
            .handle(LambdaEvent::new(
                LambdaStreamBatch::from_event(&event),
                Context::default(),
            ))
            .await
            .unwrap();
        assert_eq!(failures(&response), vec![stuck_position]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_quarantine_reports_the_poison_record() {
        let event = fixture("dynamodb-mixed-batch.json");
        let decoder = DynamoDbStreamDecoder::new(OutboxSchema::new("orders"));
        let poison = event
            .records
            .iter()
            .map(|r| decoder.decode_lambda_record(r).unwrap())
            .find(|r| matches!(r.decoded, outbox_core::Decoded::Poison { .. }))
            .unwrap()
            .position;
        let (handler, _) = handler(RecordingSink::default(), RecordingQuarantine::failing());
        let response = handler
            .handle(LambdaEvent::new(
                LambdaStreamBatch::from_event(&event),
                Context::default(),
            ))
            .await
            .unwrap();
        assert_eq!(failures(&response), vec![Some(poison)]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_context_deadline_bounds_the_retries() {
        let sink = FlakySink::new(|_, _| Fault::Entry(FailureClass::Transient, "ThrottlingException"));
        let (handler, _) = handler(sink, RecordingQuarantine::default());
        let event = fixture("dynamodb-insert.json");
        let first = event.records[0].change.sequence_number.clone();
        let deadline = deadline_from_epoch_ms(
            u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap() + 2_010,
        );
        let (response, outcome) = handler
            .handle_batch(LambdaStreamBatch::from_event(&event), deadline, "f")
            .await
            .unwrap();
        assert!(outcome.deadline_reached || outcome.retried > 0);
        assert_eq!(failures(&response), vec![first]);
    }

    #[tokio::test]
    async fn a_stream_without_new_images_fails_the_invocation() {
        let mut event = fixture("dynamodb-insert.json");
        event.records[0].change.new_image = Default::default();
        let (handler, _) = handler(RecordingSink::default(), RecordingQuarantine::default());
        let err = handler
            .handle(LambdaEvent::new(
                LambdaStreamBatch::from_event(&event),
                Context::default(),
            ))
            .await
            .unwrap_err();
        assert!(matches!(err, HandlerError::Stream(_)), "{err}");
    }

    #[test]
    fn the_response_serialises_as_lambda_expects() {
        let mut outcome = BatchOutcome::default();
        assert_eq!(
            serde_json::to_string(&response_for(&outcome)).unwrap(),
            r#"{"batchItemFailures":[]}"#
        );
        outcome.first_failure = Some("000000000000000000042".into());
        assert_eq!(
            serde_json::to_string(&response_for(&outcome)).unwrap(),
            r#"{"batchItemFailures":[{"itemIdentifier":"000000000000000000042"}]}"#
        );
    }

    #[test]
    fn errors_become_non_retryable_diagnostics_with_their_cause() {
        let diagnostic =
            lambda_runtime::Diagnostic::from(HandlerError::Stream(StreamError::MissingNewImage {
                position: "42".into(),
            }));
        assert_eq!(diagnostic.error_type, "NonRetryable.MissingNewImage");
        assert!(
            diagnostic.error_message.contains("42"),
            "{}",
            diagnostic.error_message
        );
    }

    #[test]
    fn a_zero_deadline_is_no_deadline_and_a_past_one_is_past() {
        assert!(deadline_from_epoch_ms(0).is_none());
        let past = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() - 1_000;
        assert!(deadline_from_epoch_ms(u64::try_from(past).unwrap()).is_some_and(|d| d <= Instant::now()));
    }
}
