//! Faults between the relay and the bus, under the Lambda host: the fault
//! proxy (`outbox_tests::fault_proxy`) in front of moto's EventBridge
//! injects every kind of fault in turn, in 20 % and in 50 % of the calls. The
//! production sink publishes through it with the SDK's client (its retries
//! disabled, so every fault reaches the relay); the test plays the Lambda
//! host, re-sending the batch from the reported failure until none is
//! reported.
//!
//! Every event id must arrive at the bus's target queue at least once,
//! nothing else may arrive, the poison records must be in the quarantine, and
//! duplicates are bounded by the entries whose PutEvents reached moto but
//! whose answer was lost (timeout or drop after forwarding), plus 1 %: the
//! events delivered after a reported failure and resent with it (Lambda
//! resends a batch from the reported record) are not published again by the
//! same execution environment, which remembers what it delivered.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outbox_cli::bootstrap::{LocalStack, create_local_stack, drain_queue};
use outbox_core::{Decoded, OutboxEvent, Relay, RelayRecord, SystemClock};
use outbox_eventbridge::{EventBridgeSink, QuarantineMessage, SqsQuarantine};
use outbox_lambda::Config;
use outbox_tests::fault_proxy::{ATTEMPT_TIMEOUT, FAULT_KINDS, Proxy};
use outbox_tests::{MOTO_ENDPOINT_VAR, dynamodb_client, endpoint, s3_client, unique_name};
use outbox_tests::{eventbridge_client, sqs_client};
use serde_json::{Value, json};

const SOURCE: &str = "com.example.orders";

async fn stack() -> LocalStack {
    let moto = endpoint(MOTO_ENDPOINT_VAR);
    create_local_stack(
        &dynamodb_client(),
        &eventbridge_client(&moto),
        &sqs_client(&moto),
        &s3_client(&moto),
        &unique_name("faults"),
        SOURCE,
    )
    .await
    .expect("local stack")
}

fn records(count: usize, poison_every: usize) -> (Vec<RelayRecord>, HashSet<String>, usize) {
    let mut ids = HashSet::new();
    let mut poison = 0;
    let records = (0..count)
        .map(|i| {
            let position = format!("{:021}", 500_000_000_000_000_000_000u128 + i as u128 * 10);
            if i % poison_every == poison_every - 1 {
                poison += 1;
                return RelayRecord {
                    position,
                    decoded: Decoded::Poison {
                        reason: "attribute `sequence` has type S, expected N".into(),
                        raw: json!({ "record": i }).to_string(),
                    },
                };
            }
            let event = OutboxEvent::builder(SOURCE, "OrderChanged")
                .aggregate("Order", format!("o-{}", i % 13))
                .sequence(i as u64 / 13 + 1)
                .payload(&json!({ "n": i, "pad": "x".repeat(200) }))
                .build(&SystemClock)
                .unwrap();
            ids.insert(event.id().to_string());
            RelayRecord {
                position,
                decoded: Decoded::Event(Box::new(event)),
            }
        })
        .collect();
    (records, ids, poison)
}

/// One fault test at a time: moto carries every call a proxy forwards, even
/// those whose answer the relay gave up on, so two tests at once (each with
/// its retries) can slow it until every call times out and the retries
/// snowball.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Relays `count` records through a proxy injecting faults into `rate` of
/// the calls, with `max_retries` relay retries per invocation, and checks
/// and prints what arrived.
async fn relay_through_faults(rate: f64, seed: u64, count: usize, max_retries: u32) {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let stack = stack().await;
    let moto = endpoint(MOTO_ENDPOINT_VAR);
    let proxy = Proxy::start(
        moto.trim_start_matches("http://").to_owned(),
        rate,
        seed,
        &FAULT_KINDS,
    );
    let vars = HashMap::from([
        (outbox_lambda::ENV_TABLE_NAME, stack.table.clone()),
        (outbox_lambda::ENV_EVENT_BUS_NAME, stack.bus.bus.clone()),
        (
            outbox_lambda::ENV_QUARANTINE_QUEUE_URL,
            stack.quarantine.url.clone(),
        ),
        (outbox_lambda::ENV_MAX_RETRIES, max_retries.to_string()),
        (outbox_lambda::ENV_RETRY_BASE_MS, "5".to_owned()),
        (outbox_lambda::ENV_RETRY_MAX_MS, "80".to_owned()),
        (
            outbox_lambda::ENV_PUT_EVENTS_TIMEOUT_MS,
            ATTEMPT_TIMEOUT.as_millis().to_string(),
        ),
    ]);
    let config = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let sdk = proxy.sdk_config();
    let sink = EventBridgeSink::new(
        aws_sdk_eventbridge::Client::new(&sdk),
        &config.eventbridge.event_bus_name,
    );
    let quarantine = SqsQuarantine::new(sqs_client(&moto), &config.eventbridge.quarantine_queue_url);
    let relay = Relay::new(sink, quarantine, config.relay.clone());

    let (records, wanted, poison) = records(count, 25);
    let poison_positions: HashSet<&str> = records
        .iter()
        .filter(|r| matches!(r.decoded, Decoded::Poison { .. }))
        .map(|r| r.position.as_str())
        .collect();
    // Drain the target queue while relaying: moto slows down as a queue fills.
    let arrivals: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (stop_draining, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let drainer = {
        let (sqs, url, arrivals) = (
            sqs_client(&moto),
            stack.bus.target.url.clone(),
            Arc::clone(&arrivals),
        );
        tokio::spawn(async move {
            loop {
                for message in drain_queue(&sqs, &url).await.unwrap() {
                    let envelope: Value = serde_json::from_str(&message.body).unwrap();
                    let id = envelope["detail"]["id"].as_str().unwrap().to_owned();
                    *arrivals.lock().unwrap().entry(id).or_default() += 1;
                }
                if stopped.try_recv().is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let started = Instant::now();
    let mut from = 0;
    let mut invocations = 0;
    let mut retried = 0;
    let mut reported_failures = 0;
    let mut resent = 0;
    loop {
        invocations += 1;
        assert!(invocations <= 30, "the batch never completed");
        let outcome = relay.relay(&records[from..], None).await;
        retried += outcome.retried;
        // Events delivered by an earlier invocation and read again: skipped.
        resent += outcome.already_delivered;
        match outcome.first_failure {
            None => break,
            Some(position) => {
                // What Lambda does with `batchItemFailures`: resend from there.
                reported_failures += 1;
                from = records.iter().position(|r| r.position == position).unwrap();
            }
        }
    }
    let relayed_in = started.elapsed();

    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until && !wanted.iter().all(|id| arrivals.lock().unwrap().contains_key(id)) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A last round for late duplicates, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_draining.send(()).unwrap();
    drainer.await.unwrap();
    let arrivals = arrivals.lock().unwrap().clone();
    let sqs = sqs_client(&moto);
    let quarantined: Vec<QuarantineMessage> = drain_queue(&sqs, &stack.quarantine.url)
        .await
        .unwrap()
        .iter()
        .map(|m| QuarantineMessage::from_body(&m.body).unwrap())
        .collect();

    let stats = proxy.stats.lock().unwrap();
    let missing = wanted.iter().filter(|id| !arrivals.contains_key(*id)).count();
    let duplicates: usize = arrivals.values().map(|n| n - 1).sum();
    let one_percent = wanted.len().div_ceil(100);
    let injected: usize = stats.faults.values().sum();
    let mut by_kind: Vec<_> = stats.faults.iter().map(|(k, v)| format!("{k:?}={v}")).collect();
    by_kind.sort();
    eprintln!(
        "fault test at {:.0}% of calls: {} events + {poison} poison records in {:.1} s; {} PutEvents calls, \
         {injected} faults injected ({}), {} entries failed in HTTP 200s, {retried} entry retries, \
         {invocations} invocations ({reported_failures} with a reported failure, {resent} delivered events read \
         again after one), {} calls answered by moto after the SDK's timeout; delivered {}, missing {missing}, \
         duplicates {duplicates} (bound {}: {} entries whose answer was lost + 1 %), quarantined {}",
        rate * 100.0,
        wanted.len(),
        relayed_in.as_secs_f64(),
        stats.calls,
        by_kind.join(" "),
        stats.failed_entries,
        stats.slow_upstream,
        arrivals.len(),
        stats.ambiguous_entries + one_percent,
        stats.ambiguous_entries,
        quarantined.len(),
    );
    assert_eq!(
        stats.faults.len(),
        FAULT_KINDS.len(),
        "every kind of fault was injected: {by_kind:?}"
    );
    assert_eq!(missing, 0, "every event arrives at least once");
    assert!(arrivals.keys().all(|id| wanted.contains(id)), "nothing invented");
    assert!(
        duplicates <= stats.ambiguous_entries + one_percent,
        "only a call whose answer was lost may duplicate: {duplicates} > {} + {one_percent}",
        stats.ambiguous_entries
    );
    // A poison record resent after a reported failure is quarantined again:
    // each is there at least once, and nothing else is.
    let quarantined_positions: HashSet<&str> = quarantined.iter().map(|q| q.position.as_str()).collect();
    assert_eq!(
        quarantined_positions, poison_positions,
        "the poison records, and nothing else, are quarantined"
    );
    assert!(
        quarantined
            .iter()
            .all(|q| q.reason.contains("sequence") && q.raw.is_some())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_faults_in_a_fifth_of_the_calls_every_event_arrives_and_duplicates_are_bounded() {
    relay_through_faults(0.20, 20, 400, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_faults_in_half_of_the_calls_every_event_arrives_and_duplicates_are_bounded() {
    // Three retries only: some records exhaust them, are reported, and come
    // back in the next invocation, as Lambda resends from the reported record.
    relay_through_faults(0.50, 50, 150, 3).await;
}
