//! The relay algorithm's unit tests.

use std::convert::Infallible;

use super::*;
use crate::fakes::{Fault, FlakySink, RecordingQuarantine, RecordingSink};
use crate::{ChunkLimits, FixedClock, SinkError};
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
async fn the_done_prefix_is_reported_as_it_grows_and_stops_at_the_first_failure() {
    let records = events(35);
    let stuck = match &records[22].decoded {
        Decoded::Event(event) => event.id(),
        _ => unreachable!(),
    };
    let sink = FlakySink::new(move |e, _| {
        if e.id() == stuck {
            Fault::Entry(FailureClass::Transient, "ThrottlingException")
        } else {
            Fault::Accept
        }
    });
    let relay = Relay::new(sink, RecordingQuarantine::default(), config());
    let reported = std::sync::Mutex::new(Vec::<String>::new());
    let done = |position: &str| reported.lock().unwrap().push(position.to_owned());
    let outcome = relay.relay_with_progress(&records, None, &done).await;
    assert_eq!(
        outcome.first_failure.as_deref(),
        Some(records[22].position.as_str())
    );
    let reported = reported.into_inner().unwrap();
    let indices: Vec<usize> = reported
        .iter()
        .map(|p| records.iter().position(|r| &r.position == p).unwrap())
        .collect();
    assert!(
        !indices.is_empty() && indices.windows(2).all(|w| w[0] < w[1]),
        "{indices:?}"
    );
    assert_eq!(indices.last(), Some(&21), "up to the record before the failure");

    let relay = Relay::new(RecordingSink::default(), RecordingQuarantine::default(), config());
    let last = std::sync::Mutex::new(None::<String>);
    let done = |position: &str| *last.lock().unwrap() = Some(position.to_owned());
    relay.relay_with_progress(&records, None, &done).await;
    assert_eq!(
        last.into_inner().unwrap().as_deref(),
        Some(records[34].position.as_str())
    );
}

#[tokio::test]
async fn a_batch_read_again_does_not_publish_what_this_relay_delivered() {
    let records = events(12);
    let relay = Relay::new(RecordingSink::default(), RecordingQuarantine::default(), config());
    relay.relay(&records, None).await;
    let again = relay.relay(&records, None).await;
    assert_eq!(
        (again.published, again.already_delivered, again.failed),
        (0, 12, 0)
    );
    assert_eq!(again.first_failure, None);
    assert_eq!(relay.sink().published().len(), 12);

    let forgetful = Relay::new(RecordingSink::default(), RecordingQuarantine::default(), config())
        .with_delivered_memory(0);
    forgetful.relay(&records, None).await;
    forgetful.relay(&records, None).await;
    assert_eq!(forgetful.sink().published().len(), 24);
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

/// A sink that notes, at each call, how many records the relay had read.
struct CountingSink {
    inner: RecordingSink,
    read: Arc<std::sync::atomic::AtomicUsize>,
    read_at_call: std::sync::Mutex<Vec<usize>>,
}

impl EventSink for CountingSink {
    fn limits(&self) -> ChunkLimits {
        self.inner.limits()
    }
    fn entry_size(&self, event: &OutboxEvent) -> usize {
        self.inner.entry_size(event)
    }
    async fn publish(&self, events: &[&OutboxEvent]) -> Result<Vec<EntryResult>, SinkError> {
        let read = self.read.load(std::sync::atomic::Ordering::SeqCst);
        self.read_at_call.lock().unwrap().push(read);
        // A call takes time, as over a network.
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.inner.publish(events).await
    }
}

/// A mixed batch: events, skips, poison, an oversize event.
fn mixed(n: u64) -> Vec<RelayRecord> {
    (1..=n)
        .map(|i| match i % 7 {
            3 => record(i, Decoded::Skip(SkipReason::NotOutbox)),
            5 => record(
                i,
                Decoded::Poison {
                    reason: format!("bad {i}"),
                    raw: format!("{{\"n\":{i}}}"),
                },
            ),
            _ if i == 20 => record(
                i,
                Decoded::Event(Box::new(
                    OutboxEvent::builder("test", "Happened")
                        .aggregate("Thing", "big")
                        .sequence(i)
                        .payload(&json!({ "blob": "x".repeat(5_000) }))
                        .build(&FixedClock::new(
                            Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap(),
                        ))
                        .unwrap(),
                )),
            ),
            _ => record(i, Decoded::Event(Box::new(event(i)))),
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn relaying_records_as_they_come_is_relaying_the_batch() {
    let limits = ChunkLimits {
        max_entries: 10,
        max_bytes: 2_000,
    };
    let records = mixed(60);
    // One clock for both, so that the events' ages are the same.
    let clock = Arc::new(FixedClock::new(
        Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 1).unwrap(),
    ));
    let batch = Relay::new(
        RecordingSink::new(limits),
        RecordingQuarantine::default(),
        config(),
    )
    .with_clock(clock.clone());
    let each = Relay::new(
        RecordingSink::new(limits),
        RecordingQuarantine::default(),
        config(),
    )
    .with_clock(clock);

    let expected = batch.relay(&records, None).await;
    let outcome = each
        .relay_each(records.clone().into_iter().map(Ok::<_, Infallible>), None)
        .await
        .unwrap();

    assert_eq!(
        (
            outcome.records,
            outcome.published,
            outcome.skipped,
            outcome.quarantined,
            outcome.failed
        ),
        (60, 42, 9, 9, 0)
    );
    assert_eq!(outcome, expected);
    assert_eq!(
        each.sink().calls(),
        batch.sink().calls(),
        "the same chunks, in the same order"
    );
    assert_eq!(each.quarantine().records(), batch.quarantine().records());
}

#[tokio::test(start_paused = true)]
async fn the_first_calls_go_out_before_the_batch_is_read() {
    let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sink = CountingSink {
        inner: RecordingSink::default(),
        read: Arc::clone(&read),
        read_at_call: std::sync::Mutex::new(Vec::new()),
    };
    let relay = Relay::new(sink, RecordingQuarantine::default(), config());
    let source = events(100).into_iter().map(|r| {
        read.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok::<_, Infallible>(r)
    });

    let outcome = relay.relay_each(source, None).await.unwrap();

    assert_eq!((outcome.published, outcome.failed), (100, 0));
    let read_at_call = relay.sink().read_at_call.lock().unwrap().clone();
    assert_eq!(read_at_call.len(), 10);
    // Three calls in flight: the first three chunks (and the record that
    // shows the third is complete) are read before they start; while
    // they are out, the next three are read ahead, and they start when
    // the first three end (together, here).
    assert_eq!(read_at_call, [31, 31, 31, 61, 61, 61, 91, 91, 91, 100]);
    assert_eq!(ids(&relay.sink().inner.published()), ids_of(&events(100)));
}

fn ids_of(records: &[RelayRecord]) -> Vec<uuid::Uuid> {
    records
        .iter()
        .filter_map(|r| match &r.decoded {
            Decoded::Event(e) => Some(e.id()),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn an_error_from_the_records_stops_the_reading_and_is_returned() {
    let relay = Relay::new(RecordingSink::default(), RecordingQuarantine::default(), config());
    let mut records: Vec<Result<RelayRecord, String>> = mixed(25).into_iter().map(Ok).collect();
    records.insert(22, Err("record 23 has no sequence number".to_owned()));
    let read = std::sync::atomic::AtomicUsize::new(0);
    let source = records.into_iter().inspect(|_| {
        read.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });

    let error = relay.relay_each(source, None).await.unwrap_err();

    assert_eq!(error, "record 23 has no sequence number");
    assert_eq!(
        read.load(std::sync::atomic::Ordering::SeqCst),
        23,
        "nothing is read after the error"
    );
    // The chunk completed before it was sent; the five events read after
    // that are not, and nothing is quarantined: the host fails the batch.
    assert_eq!(
        relay.sink().calls().iter().map(Vec::len).collect::<Vec<_>>(),
        vec![10]
    );
    assert!(relay.quarantine().records().is_empty());
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

mod deadline;
