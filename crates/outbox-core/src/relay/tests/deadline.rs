//! The relay against time: batch deadlines, stalled calls, bus outages.

use super::*;

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

/// A call that stalls past the deadline (a slow bus, an attempt timeout
/// longer than the batch has left) does not hold the batch: it is given up
/// a margin before the deadline, its entries fail, the rest is reported.
#[tokio::test(start_paused = true)]
async fn a_call_stalled_past_the_deadline_is_given_up_in_time() {
    // The first call (entries 1-10) stalls for a minute; the others answer.
    let sink = FlakySink::new(|_, _| Fault::Accept).with_calls([Fault::Stall(Duration::from_secs(60))]);
    let relay = Relay::new(sink, RecordingQuarantine::default(), config());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(5);
    let records = events(25);
    let outcome = relay.relay(&records, Some(deadline)).await;
    assert!(outcome.deadline_reached);
    assert!(
        Instant::now() <= deadline - config().deadline_margin,
        "ended {:?} after the start, the margin before the deadline kept",
        Instant::now() - start
    );
    assert_eq!((outcome.published, outcome.failed), (15, 10));
    assert_eq!(
        outcome.first_failure.as_deref(),
        Some(records[0].position.as_str())
    );
}

/// Lambda's side of a bus outage: each invocation spends the relay's retries
/// (the defaults: 6, full jitter from 50 ms doubling to 5 s) and reports the
/// first record; the event source mapping invokes again from it. A
/// five-minute outage takes a few hundred of the templates' 10,000 retry
/// attempts (`MaximumRetryAttempts`), and every event is delivered within a
/// minute of the bus coming back.
#[tokio::test(start_paused = true)]
async fn a_five_minute_outage_takes_a_small_part_of_lambdas_retry_attempts() {
    let outage = Duration::from_secs(300);
    let back = Instant::now() + outage;
    let sink = FlakySink::new(move |_, _| {
        if Instant::now() < back {
            Fault::Entry(FailureClass::Transient, "InternalFailure")
        } else {
            Fault::Accept
        }
    });
    let relay = Relay::new(sink, RecordingQuarantine::default(), RelayConfig::default());
    let records = events(100);
    let (mut invocations, mut from) = (0u32, 0);
    loop {
        invocations += 1;
        let deadline = Instant::now() + Duration::from_secs(60);
        let outcome = relay.relay(&records[from..], Some(deadline)).await;
        let Some(failed) = outcome.first_failure else {
            break;
        };
        from = records.iter().position(|r| r.position == failed).unwrap();
        assert!(invocations < 10_000, "the outage outlasted Lambda's retries");
    }
    let after_outage = Instant::now().saturating_duration_since(back);
    eprintln!(
        "a {} s outage: {invocations} invocations; all delivered {after_outage:?} after it",
        outage.as_secs()
    );
    let mut delivered = ids(&relay.sink().accepted());
    delivered.sort();
    assert_eq!(
        delivered,
        (1..=100).map(|n| event(n).id()).collect::<Vec<_>>(),
        "each once"
    );
    assert!(relay.quarantine().records().is_empty());
    assert!(invocations <= 1_000, "{invocations} invocations");
    assert!(after_outage <= Duration::from_secs(60), "{after_outage:?}");
}
