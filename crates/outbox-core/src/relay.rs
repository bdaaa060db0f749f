//! The relay algorithm, shared by every host (Lambda, the standalone stream
//! runner, the Cosmos change-feed processor): decode → skip / quarantine /
//! publish in chunks with bounded concurrency → retry transient failures
//! with backoff until the deadline → report the first record that is
//! neither delivered nor quarantined.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use tokio::time::Instant;

use crate::chunk::chunk_ranges;
use crate::{
    Clock, EntryResult, EventSink, FailureClass, OutboxEvent, Quarantine, QuarantinedRecord, RetryPolicy,
    SinkError, SystemClock,
};

/// Why a record is skipped. Skips never fail a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// The item is not an outbox item (no marker).
    NotOutbox,
    /// A change of an outbox item other than its insert (MODIFY, REMOVE).
    NotInsert {
        /// The record's event name.
        event_name: String,
    },
    /// The item was removed by TTL expiry.
    TtlRemoval,
    /// An event name this build does not know.
    UnknownEventName {
        /// The record's event name.
        event_name: String,
    },
}

/// What a source record turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// An outbox event to publish.
    Event(Box<OutboxEvent>),
    /// A record to skip.
    Skip(SkipReason),
    /// An outbox item that cannot be decoded: it goes to the quarantine with
    /// its full content.
    Poison {
        /// What is wrong, naming the field.
        reason: String,
        /// The full original record, as JSON text.
        raw: String,
    },
}

/// One record of an ordered batch from one shard or feed range.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayRecord {
    /// Its position in the stream (DynamoDB `SequenceNumber`, ...).
    pub position: String,
    /// What it decoded to.
    pub decoded: Decoded,
}

/// How the relay publishes and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Most sink calls in flight at once.
    pub max_concurrency: usize,
    /// No retry is started if its backoff would end later than this margin
    /// before the deadline: the host still needs time to report.
    pub deadline_margin: Duration,
}

impl Default for RelayConfig {
    /// Default retries, 4 calls in flight, a 2-second margin.
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            max_concurrency: 4,
            deadline_margin: Duration::from_secs(2),
        }
    }
}

/// What happened to a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchOutcome {
    /// Records in the batch.
    pub records: usize,
    /// Events the sink accepted.
    pub published: usize,
    /// Records skipped.
    pub skipped: usize,
    /// Records quarantined (poison, oversize, permanently refused).
    pub quarantined: usize,
    /// Records neither delivered nor quarantined.
    pub failed: usize,
    /// Entry retries made.
    pub retried: usize,
    /// Whether retrying stopped because of the deadline.
    pub deadline_reached: bool,
    /// The position of the first record (in batch order) that is neither
    /// delivered nor quarantined: where the host must resume. `None` when the
    /// whole batch is done.
    pub first_failure: Option<String>,
    /// For each published event, milliseconds from `occurred_at` to its publication.
    pub publish_ages_ms: Vec<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Delivered,
    Quarantined,
    Skipped,
    Failed,
}

/// The relay: a sink, a quarantine, a configuration and a clock.
#[derive(Clone)]
pub struct Relay<S, Q> {
    sink: S,
    quarantine: Q,
    config: RelayConfig,
    clock: Arc<dyn Clock>,
}

impl<S: std::fmt::Debug, Q: std::fmt::Debug> std::fmt::Debug for Relay<S, Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("sink", &self.sink)
            .field("quarantine", &self.quarantine)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: EventSink, Q: Quarantine> Relay<S, Q> {
    /// A relay publishing to `sink` and quarantining to `quarantine`.
    pub fn new(sink: S, quarantine: Q, config: RelayConfig) -> Self {
        Self {
            sink,
            quarantine,
            config,
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` for event ages.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The quarantine.
    pub fn quarantine(&self) -> &Q {
        &self.quarantine
    }

    /// The configuration.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Relays one ordered batch. Never fails as a whole: per-record failures
    /// are in the outcome. With a `deadline`, no retry starts that could not
    /// finish `deadline_margin` before it.
    pub async fn relay(&self, records: &[RelayRecord], deadline: Option<Instant>) -> BatchOutcome {
        let mut status = vec![Status::Pending; records.len()];
        let mut outcome = BatchOutcome {
            records: records.len(),
            ..BatchOutcome::default()
        };
        let limits = self.sink.limits();
        let mut pending = Vec::new();
        // Each event's entry size, computed once (it serialises the event) and
        // reused by every publishing attempt.
        let mut sizes = vec![0; records.len()];
        let mut to_quarantine = Vec::new();
        for (i, record) in records.iter().enumerate() {
            match &record.decoded {
                Decoded::Skip(reason) => {
                    tracing::debug!(position = %record.position, ?reason, "skipped");
                    status[i] = Status::Skipped;
                }
                Decoded::Poison { reason, raw } => to_quarantine.push((
                    i,
                    QuarantinedRecord {
                        position: record.position.clone(),
                        reason: format!("poison record: {reason}"),
                        event: None,
                        raw: Some(raw.clone()),
                    },
                )),
                Decoded::Event(event) => {
                    let size = self.sink.entry_size(event);
                    if size > limits.max_bytes {
                        to_quarantine.push((
                            i,
                            QuarantinedRecord {
                                position: record.position.clone(),
                                reason: format!(
                                    "event is {size} bytes as a bus entry; a request takes at most {} bytes",
                                    limits.max_bytes
                                ),
                                event: Some((**event).clone()),
                                raw: None,
                            },
                        ));
                    } else {
                        sizes[i] = size;
                        pending.push(i);
                    }
                }
            }
        }
        self.quarantine_all(&mut status, to_quarantine).await;

        let mut retry = 0u32;
        loop {
            if pending.is_empty() {
                break;
            }
            let (next, permanent, fatal) = self
                .attempt(records, &sizes, &pending, &mut status, &mut outcome)
                .await;
            self.quarantine_all(&mut status, permanent).await;
            pending = next;
            if pending.is_empty() {
                break;
            }
            if let Some(error) = fatal {
                tracing::error!(error = %error, failed = pending.len(), "sink refused the call; not retrying");
                break;
            }
            retry += 1;
            if retry > self.config.retry.max_retries {
                tracing::warn!(failed = pending.len(), retries = retry - 1, "retries exhausted");
                break;
            }
            let delay = self.config.retry.delay(retry, fastrand::f64());
            if let Some(deadline) = deadline
                && Instant::now() + delay + self.config.deadline_margin > deadline
            {
                tracing::warn!(failed = pending.len(), "deadline reached; not retrying");
                outcome.deadline_reached = true;
                break;
            }
            tracing::debug!(
                retry,
                delay_ms = delay.as_millis() as u64,
                entries = pending.len(),
                "retrying"
            );
            tokio::time::sleep(delay).await;
            outcome.retried += pending.len();
        }
        for i in pending {
            status[i] = Status::Failed;
        }

        for (i, s) in status.iter().enumerate() {
            match s {
                Status::Delivered => outcome.published += 1,
                Status::Quarantined => outcome.quarantined += 1,
                Status::Skipped => outcome.skipped += 1,
                Status::Failed | Status::Pending => {
                    outcome.failed += 1;
                    if outcome.first_failure.is_none() {
                        outcome.first_failure = Some(records[i].position.clone());
                    }
                }
            }
        }
        outcome
    }

    /// One publishing pass over `pending`: returns what to retry, what to
    /// quarantine, and a whole-call permanent error if one happened.
    async fn attempt(
        &self,
        records: &[RelayRecord],
        sizes: &[usize],
        pending: &[usize],
        status: &mut [Status],
        outcome: &mut BatchOutcome,
    ) -> (Vec<usize>, Vec<(usize, QuarantinedRecord)>, Option<SinkError>) {
        let events: Vec<&OutboxEvent> = pending
            .iter()
            .filter_map(|&i| match &records[i].decoded {
                Decoded::Event(e) => Some(&**e),
                _ => None,
            })
            .collect();
        let sizes: Vec<usize> = pending.iter().map(|&i| sizes[i]).collect();
        let ranges = chunk_ranges(&sizes, self.sink.limits());
        let results: Vec<_> = stream::iter(ranges.into_iter().map(|range| {
            let chunk = &events[range.clone()];
            async move { (range, self.sink.publish(chunk).await) }
        }))
        .buffered(self.config.max_concurrency.max(1))
        .collect()
        .await;

        let mut retry = Vec::new();
        let mut permanent = Vec::new();
        let mut fatal = None;
        let now = self.clock.now();
        for (range, result) in results {
            let indices = &pending[range.clone()];
            match result {
                Ok(entries) => {
                    for (k, &i) in indices.iter().enumerate() {
                        match entries.get(k) {
                            Some(EntryResult::Published) => {
                                status[i] = Status::Delivered;
                                let event = events[range.start + k];
                                outcome
                                    .publish_ages_ms
                                    .push((now - event.occurred_at()).num_milliseconds());
                                tracing::debug!(event_id = %event.id(), position = %records[i].position, "published");
                            }
                            Some(EntryResult::Failed {
                                class: FailureClass::Permanent,
                                code,
                                message,
                            }) => permanent.push((
                                i,
                                QuarantinedRecord {
                                    position: records[i].position.clone(),
                                    reason: format!("refused by the bus: {code}: {message}"),
                                    event: Some(events[range.start + k].clone()),
                                    raw: None,
                                },
                            )),
                            Some(EntryResult::Failed { code, .. }) => {
                                tracing::debug!(position = %records[i].position, %code, "transient entry failure");
                                retry.push(i);
                            }
                            None => {
                                tracing::warn!(position = %records[i].position, "sink returned no result for entry");
                                retry.push(i);
                            }
                        }
                    }
                }
                Err(error) => {
                    if error.class == FailureClass::Permanent {
                        fatal = Some(error.clone());
                    } else {
                        tracing::debug!(error = %error, entries = indices.len(), "transient call failure");
                    }
                    retry.extend_from_slice(indices);
                }
            }
        }
        retry.sort_unstable();
        (retry, permanent, fatal)
    }

    async fn quarantine_all(&self, status: &mut [Status], items: Vec<(usize, QuarantinedRecord)>) {
        for (i, record) in items {
            match self.quarantine.quarantine(&record).await {
                Ok(()) => {
                    tracing::warn!(position = %record.position, reason = %record.reason, "quarantined");
                    status[i] = Status::Quarantined;
                }
                Err(error) => {
                    tracing::error!(position = %record.position, error = %error, "quarantine failed; record fails");
                    status[i] = Status::Failed;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{Fault, FlakySink, RecordingQuarantine, RecordingSink};
    use crate::{ChunkLimits, FixedClock};
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    fn event(n: u64) -> OutboxEvent {
        let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap());
        OutboxEvent::builder("test", "Happened")
            .aggregate("Thing", format!("t-{}", n % 3))
            .id(uuid::Uuid::from_u128(u128::from(n)))
            .sequence(n)
            .payload(&json!({ "n": n }))
            .build(&clock)
            .unwrap()
    }

    fn record(n: u64, decoded: Decoded) -> RelayRecord {
        RelayRecord {
            position: format!("{:021}", n * 100),
            decoded,
        }
    }

    fn events(n: u64) -> Vec<RelayRecord> {
        (1..=n)
            .map(|i| record(i, Decoded::Event(Box::new(event(i)))))
            .collect()
    }

    fn config() -> RelayConfig {
        RelayConfig {
            retry: RetryPolicy {
                max_retries: 3,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(100),
            },
            max_concurrency: 3,
            deadline_margin: Duration::from_millis(500),
        }
    }

    fn ids(events: &[OutboxEvent]) -> Vec<uuid::Uuid> {
        events.iter().map(OutboxEvent::id).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn publishes_everything_in_chunks_of_ten_in_order() {
        let relay = Relay::new(RecordingSink::default(), RecordingQuarantine::default(), config());
        let records = events(23);
        let outcome = relay.relay(&records, None).await;
        assert_eq!((outcome.records, outcome.published, outcome.failed), (23, 23, 0));
        assert_eq!(outcome.first_failure, None);
        let calls = relay.sink().calls();
        assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), vec![10, 10, 3]);
        let expected: Vec<_> = (1..=23).map(|n| event(n).id()).collect();
        assert_eq!(
            ids(&relay.sink().published()),
            expected,
            "buffered publishing keeps batch order"
        );
        assert_eq!(outcome.publish_ages_ms.len(), 23);
    }

    #[tokio::test(start_paused = true)]
    async fn the_byte_limit_splits_chunks() {
        let size = event(1).to_json().len();
        let sink = RecordingSink::new(ChunkLimits {
            max_entries: 10,
            max_bytes: size * 3 + 2,
        });
        let relay = Relay::new(sink, RecordingQuarantine::default(), config());
        let outcome = relay.relay(&events(7), None).await;
        assert_eq!(outcome.published, 7);
        assert_eq!(
            relay.sink().calls().iter().map(Vec::len).collect::<Vec<_>>(),
            vec![3, 3, 1]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn skips_never_fail_and_poison_is_quarantined_with_its_raw_record() {
        let records = vec![
            record(1, Decoded::Skip(SkipReason::NotOutbox)),
            record(2, Decoded::Event(Box::new(event(2)))),
            record(
                3,
                Decoded::Poison {
                    reason: "attribute `sequence` has type S, expected N".into(),
                    raw: r#"{"eventID":"x","payload":"{\"n\":3}"}"#.into(),
                },
            ),
            record(4, Decoded::Skip(SkipReason::TtlRemoval)),
            record(5, Decoded::Event(Box::new(event(5)))),
        ];
        let relay = Relay::new(RecordingSink::default(), RecordingQuarantine::default(), config());
        let outcome = relay.relay(&records, None).await;
        assert_eq!(
            (
                outcome.published,
                outcome.skipped,
                outcome.quarantined,
                outcome.failed
            ),
            (2, 2, 1, 0)
        );
        assert_eq!(outcome.first_failure, None);
        let q = relay.quarantine().records();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].position, records[2].position);
        assert!(q[0].reason.contains("sequence"));
        assert!(q[0].raw.as_deref().unwrap().contains(r#"\"n\":3"#));
    }

    #[tokio::test(start_paused = true)]
    async fn per_entry_failures_inside_a_successful_call_are_retried_until_they_pass() {
        let flaky_id = event(4).id();
        let sink = FlakySink::new(move |e, offered| {
            if e.id() == flaky_id && offered < 2 {
                Fault::Entry(FailureClass::Transient, "ThrottlingException")
            } else {
                Fault::Accept
            }
        });
        let relay = Relay::new(sink, RecordingQuarantine::default(), config());
        let outcome = relay.relay(&events(12), None).await;
        assert_eq!((outcome.published, outcome.failed, outcome.retried), (12, 0, 2));
        assert_eq!(
            relay.sink().calls(),
            2 + 2,
            "two chunks, then one retry call per retry"
        );
        let accepted = relay.sink().accepted();
        assert_eq!(accepted.len(), 12, "each event accepted exactly once");
    }

    #[tokio::test(start_paused = true)]
    async fn whole_call_throttling_then_success_loses_nothing() {
        let sink = FlakySink::new(|_, _| Fault::Accept).with_calls([
            Fault::Call(FailureClass::Transient, "ThrottlingException"),
            Fault::Call(FailureClass::Transient, "InternalException"),
        ]);
        let relay = Relay::new(sink, RecordingQuarantine::default(), config());
        let outcome = relay.relay(&events(5), None).await;
        assert_eq!((outcome.published, outcome.failed), (5, 0));
        assert_eq!(outcome.retried, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_entry_failures_go_to_the_quarantine_with_the_event() {
        let bad = event(2).id();
        let sink = FlakySink::new(move |e, _| {
            if e.id() == bad {
                Fault::Entry(FailureClass::Permanent, "MalformedDetail")
            } else {
                Fault::Accept
            }
        });
        let relay = Relay::new(sink, RecordingQuarantine::default(), config());
        let outcome = relay.relay(&events(3), None).await;
        assert_eq!(
            (outcome.published, outcome.quarantined, outcome.failed),
            (2, 1, 0)
        );
        let q = relay.quarantine().records();
        assert_eq!(q[0].event.as_ref().map(OutboxEvent::id), Some(bad));
        assert!(q[0].reason.contains("MalformedDetail"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_quarantine_makes_the_record_the_first_failure() {
        let records = vec![
            record(1, Decoded::Event(Box::new(event(1)))),
            record(
                2,
                Decoded::Poison {
                    reason: "bad".into(),
                    raw: "{}".into(),
                },
            ),
            record(3, Decoded::Event(Box::new(event(3)))),
        ];
        let relay = Relay::new(RecordingSink::default(), RecordingQuarantine::failing(), config());
        let outcome = relay.relay(&records, None).await;
        assert_eq!(
            (outcome.published, outcome.quarantined, outcome.failed),
            (2, 0, 1)
        );
        assert_eq!(
            outcome.first_failure.as_deref(),
            Some(records[1].position.as_str())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn exhausted_retries_report_the_first_undelivered_record() {
        let stuck = [event(3).id(), event(6).id()];
        let sink = FlakySink::new(move |e, _| {
            if stuck.contains(&e.id()) {
                Fault::Entry(FailureClass::Transient, "InternalFailure")
            } else {
                Fault::Accept
            }
        });
        let relay = Relay::new(sink, RecordingQuarantine::default(), config());
        let records = events(8);
        let outcome = relay.relay(&records, None).await;
        assert_eq!((outcome.published, outcome.failed), (6, 2));
        assert_eq!(
            outcome.first_failure.as_deref(),
            Some(records[2].position.as_str())
        );
        assert_eq!(outcome.retried, 2 * 3, "max_retries retries of both entries");
        assert!(!outcome.deadline_reached);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_stops_retrying_before_it_is_too_late() {
        let sink = FlakySink::new(|_, _| Fault::Entry(FailureClass::Transient, "ThrottlingException"));
        let mut cfg = config();
        cfg.retry.max_retries = 1000;
        let relay = Relay::new(sink, RecordingQuarantine::default(), cfg);
        let start = Instant::now();
        let deadline = start + Duration::from_secs(3);
        let records = events(2);
        let outcome = relay.relay(&records, Some(deadline)).await;
        assert!(outcome.deadline_reached);
        assert_eq!(outcome.failed, 2);
        assert_eq!(
            outcome.first_failure.as_deref(),
            Some(records[0].position.as_str())
        );
        assert!(
            Instant::now() + Duration::from_millis(500) <= deadline,
            "the margin is kept"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_call_failure_fails_the_records_without_quarantining_them() {
        let sink = FlakySink::new(|_, _| Fault::Call(FailureClass::Permanent, "AccessDeniedException"));
        let relay = Relay::new(sink, RecordingQuarantine::default(), config());
        let records = events(3);
        let outcome = relay.relay(&records, None).await;
        assert_eq!((outcome.failed, outcome.quarantined, outcome.retried), (3, 0, 0));
        assert_eq!(
            outcome.first_failure.as_deref(),
            Some(records[0].position.as_str())
        );
        assert!(
            relay.quarantine().records().is_empty(),
            "good events are not quarantined for a bad configuration"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_too_big_for_any_request_is_quarantined_without_a_call() {
        let sink = RecordingSink::new(ChunkLimits {
            max_entries: 10,
            max_bytes: 100,
        });
        let relay = Relay::new(sink, RecordingQuarantine::default(), config());
        let outcome = relay.relay(&events(1), None).await;
        assert_eq!((outcome.quarantined, outcome.failed), (1, 0));
        assert!(relay.sink().calls().is_empty());
        assert!(
            relay.quarantine().records()[0]
                .reason
                .contains("at most 100 bytes")
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn with_random_transient_faults_every_event_is_accounted_for(
            n in 0u64..60,
            fail_mask in proptest::collection::vec(0u32..4, 60),
        ) {
            let mask = fail_mask.clone();
            let sink = FlakySink::new(move |e, offered| {
                let k = usize::try_from(e.sequence()).unwrap_or(0) % mask.len();
                if offered < mask[k] { Fault::Entry(FailureClass::Transient, "ThrottlingException") } else { Fault::Accept }
            });
            let relay = Relay::new(sink, RecordingQuarantine::default(), config());
            let records = events(n);
            let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            let outcome = runtime.block_on(relay.relay(&records, None));
            proptest::prop_assert_eq!(outcome.published + outcome.failed, records.len());
            // max_retries is 3, so an event that fails 3 times still passes on its 4th offer
            proptest::prop_assert_eq!(outcome.failed, 0);
            let mut accepted = ids(&relay.sink().accepted());
            accepted.sort();
            let mut expected: Vec<_> = records.iter().filter_map(|r| match &r.decoded { Decoded::Event(e) => Some(e.id()), _ => None }).collect();
            expected.sort();
            proptest::prop_assert_eq!(accepted, expected, "each event accepted exactly once");
        }
    }
}
