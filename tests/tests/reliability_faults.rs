//! Faults between the relay and the bus: a small TCP proxy in front of moto's
//! EventBridge injects throttling (400), internal errors (500, 503),
//! timeouts (the proxy holds the call past the SDK's attempt timeout, before
//! or after forwarding it), dropped connections (before or after
//! forwarding), and per-entry failures (entries taken out of the request and
//! reported failed in an HTTP 200), in 20 % and in 50 % of the calls. The
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
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use outbox_cli::bootstrap::{LocalStack, create_local_stack, drain_queue};
use outbox_core::{Decoded, OutboxEvent, Relay, RelayRecord, SystemClock};
use outbox_eventbridge::{EventBridgeSink, QuarantineMessage, SqsQuarantine};
use outbox_lambda::Config;
use outbox_tests::{MOTO_ENDPOINT_VAR, dynamodb_client, endpoint, s3_client, unique_name};
use outbox_tests::{eventbridge_client, sqs_client};
use serde_json::{Value, json};

const SOURCE: &str = "com.example.orders";
/// Both clients' attempt timeout; the proxy's timeouts hold a call longer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1_000);
const HOLD: Duration = Duration::from_millis(1_300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fault {
    Throttle,
    Internal500,
    Unavailable503,
    TimeoutBeforeForwarding,
    TimeoutAfterForwarding,
    DropBeforeForwarding,
    DropAfterForwarding,
    EntryFailures,
}

/// The kinds of fault, in the order they take turns.
const FAULT_KINDS: [Fault; 8] = [
    Fault::Throttle,
    Fault::EntryFailures,
    Fault::Internal500,
    Fault::DropBeforeForwarding,
    Fault::TimeoutBeforeForwarding,
    Fault::Unavailable503,
    Fault::DropAfterForwarding,
    Fault::TimeoutAfterForwarding,
];

#[derive(Debug, Default)]
struct ProxyStats {
    calls: usize,
    faults: HashMap<Fault, usize>,
    /// Entries moto received but whose answer the relay never saw (an
    /// injected timeout or drop after forwarding, or moto itself answering
    /// later than the SDK waits).
    ambiguous_entries: usize,
    /// Calls moto answered later than the SDK waits (not injected).
    slow_upstream: usize,
    /// Entries taken out of a request and reported failed.
    failed_entries: usize,
}

struct Proxy {
    url: String,
    stats: Arc<Mutex<ProxyStats>>,
}

/// One HTTP request or response, read whole.
struct Message {
    head: String,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The head with `Content-Length` replaced and `Connection` dropped.
    fn with_body(&self, body: Vec<u8>, extra: &str) -> Vec<u8> {
        let mut out = String::new();
        for (i, line) in self.head.lines().enumerate() {
            let lower = line.to_ascii_lowercase();
            if i > 0
                && (lower.starts_with("content-length:")
                    || lower.starts_with("connection:")
                    || lower.starts_with("transfer-encoding:"))
            {
                continue;
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
        out.push_str(&format!("Content-Length: {}\r\n{extra}\r\n", body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&body);
        bytes
    }
}

/// Reads one message; `None` on a clean end of stream. With
/// `to_eof`, a message without `Content-Length` runs to the end of the stream.
fn read_message(stream: &mut TcpStream, buf: &mut Vec<u8>, to_eof: bool) -> Option<Message> {
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end + 4);
    let mut message = Message {
        head,
        body: Vec::new(),
    };
    assert!(
        message.header("transfer-encoding").is_none(),
        "chunked bodies are not expected here"
    );
    match message
        .header("content-length")
        .map(|v| v.parse::<usize>().unwrap())
    {
        Some(length) => {
            while buf.len() < length {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            message.body = buf.drain(..length).collect();
        }
        None if to_eof => {
            while let Ok(n) = stream.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            message.body = std::mem::take(buf);
        }
        None => {}
    }
    Some(message)
}

/// Sends `request` (with `body`) to moto on a fresh connection (moto closes
/// every connection) and returns its answer.
fn forward(moto: &str, request: &Message, body: Vec<u8>) -> Message {
    let mut upstream = TcpStream::connect(moto).unwrap();
    upstream.set_nodelay(true).unwrap();
    upstream
        .write_all(&request.with_body(body, "Connection: close\r\n"))
        .unwrap();
    let mut buf = Vec::new();
    read_message(&mut upstream, &mut buf, true).expect("moto answered")
}

fn json_response(status: u16, body: &Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "HTTP/1.1 {status} Injected\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn error_response(status: u16, kind: &str) -> Vec<u8> {
    json_response(
        status,
        &json!({ "__type": kind, "message": "injected by the fault proxy" }),
    )
}

impl Proxy {
    /// A proxy to `moto` (host:port) injecting a fault into `rate` of the
    /// PutEvents calls; `seed` draws the entries an `EntryFailures` fault fails.
    fn start(moto: String, rate: f64, seed: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stats = Arc::new(Mutex::new(ProxyStats::default()));
        let rng = Arc::new(Mutex::new(fastrand_like::Rng::new(seed)));
        let shared = Arc::clone(&stats);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (moto, stats, rng) = (moto.clone(), Arc::clone(&shared), Arc::clone(&rng));
                std::thread::spawn(move || serve(stream, &moto, &stats, &rng, rate));
            }
        });
        Self { url, stats }
    }
}

fn serve(
    mut client: TcpStream,
    moto: &str,
    stats: &Mutex<ProxyStats>,
    rng: &Mutex<fastrand_like::Rng>,
    rate: f64,
) {
    client.set_nodelay(true).unwrap();
    let mut buf = Vec::new();
    while let Some(request) = read_message(&mut client, &mut buf, false) {
        let put_events = request.header("x-amz-target") == Some("AWSEvents.PutEvents");
        let entries = if put_events {
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            body["Entries"].as_array().map_or(0, Vec::len)
        } else {
            0
        };
        let fault = if put_events {
            let mut s = stats.lock().unwrap();
            let fault = scheduled(s.calls, rate);
            s.calls += 1;
            if let Some(f) = fault {
                *s.faults.entry(f).or_default() += 1;
                if matches!(f, Fault::TimeoutAfterForwarding | Fault::DropAfterForwarding) {
                    s.ambiguous_entries += entries;
                }
            }
            fault
        } else {
            None
        };
        let started = Instant::now();
        let reply = match fault {
            None => {
                let answer = forward(moto, &request, request.body.clone());
                answer.with_body(answer.body.clone(), "")
            }
            Some(Fault::Throttle) => error_response(400, "ThrottlingException"),
            Some(Fault::Internal500) => error_response(500, "InternalException"),
            Some(Fault::Unavailable503) => error_response(503, "ServiceUnavailable"),
            Some(Fault::TimeoutBeforeForwarding) => {
                std::thread::sleep(HOLD);
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::TimeoutAfterForwarding) => {
                forward(moto, &request, request.body.clone());
                std::thread::sleep(HOLD);
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::DropBeforeForwarding) => {
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::DropAfterForwarding) => {
                forward(moto, &request, request.body.clone());
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::EntryFailures) => {
                let failed = partial(moto, &request, rng, stats);
                json_response(200, &failed)
            }
        };
        if put_events && started.elapsed() + Duration::from_millis(50) >= ATTEMPT_TIMEOUT {
            // The SDK gave up (or is about to) on a call moto did carry out.
            let mut s = stats.lock().unwrap();
            s.slow_upstream += 1;
            s.ambiguous_entries += entries;
        }
        if client.write_all(&reply).is_err() {
            return;
        }
    }
}

/// The fault of the `n`-th PutEvents call (from 0): exactly `rate` of the
/// calls get one, spread evenly, and the kinds take turns in the order of
/// [`FAULT_KINDS`], so that every kind is injected once `rate` of the calls
/// reaches their number.
fn scheduled(n: usize, rate: f64) -> Option<Fault> {
    let before = (n as f64 * rate).floor() as usize;
    let after = ((n + 1) as f64 * rate).floor() as usize;
    (after > before).then(|| FAULT_KINDS[before % FAULT_KINDS.len()])
}

/// Takes some entries out of the request (each with probability 0.4, at
/// least one), forwards the rest to moto, and answers as EventBridge does:
/// an HTTP 200 whose failed entries carry a transient error code.
fn partial(
    moto: &str,
    request: &Message,
    rng: &Mutex<fastrand_like::Rng>,
    stats: &Mutex<ProxyStats>,
) -> Value {
    let mut body: Value = serde_json::from_slice(&request.body).unwrap();
    let entries = body["Entries"].as_array().cloned().unwrap_or_default();
    let mut fail: Vec<bool> = {
        let mut rng = rng.lock().unwrap();
        entries.iter().map(|_| rng.f64() < 0.4).collect()
    };
    if !fail.iter().any(|f| *f) && !fail.is_empty() {
        fail[0] = true;
    }
    let kept: Vec<Value> = entries
        .iter()
        .zip(&fail)
        .filter(|(_, f)| !**f)
        .map(|(e, _)| e.clone())
        .collect();
    let mut moto_results = Vec::new();
    let mut moto_failed = 0;
    if !kept.is_empty() {
        body["Entries"] = Value::Array(kept);
        let answer = forward(moto, request, body.to_string().into_bytes());
        let answer: Value = serde_json::from_slice(&answer.body).unwrap();
        moto_failed = answer["FailedEntryCount"].as_u64().unwrap_or(0);
        moto_results = answer["Entries"].as_array().cloned().unwrap_or_default();
    }
    let mut moto_results = moto_results.into_iter();
    let mut injected = 0;
    let results: Vec<Value> = fail
        .iter()
        .enumerate()
        .map(|(i, failed)| {
            if *failed {
                injected += 1;
                let code = if i % 2 == 0 {
                    "ThrottlingException"
                } else {
                    "InternalFailure"
                };
                json!({ "ErrorCode": code, "ErrorMessage": "injected by the fault proxy" })
            } else {
                moto_results.next().unwrap_or_else(|| json!({}))
            }
        })
        .collect();
    stats.lock().unwrap().failed_entries += injected;
    json!({ "FailedEntryCount": moto_failed + injected as u64, "Entries": results })
}

/// A tiny seeded generator (the tests crate has no random number crate).
mod fastrand_like {
    pub(super) struct Rng(u64);

    impl Rng {
        pub(super) fn new(seed: u64) -> Self {
            Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        pub(super) fn f64(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }
}

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
    let proxy = Proxy::start(moto.trim_start_matches("http://").to_owned(), rate, seed);
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
    let sdk = outbox_tests::sdk_config_at(&proxy.url)
        .into_builder()
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        )
        .build();
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

/// How many events the runner crash test writes, and how many times it
/// kills the runner: `OUTBOX_FAULT_EVENTS` / `OUTBOX_FAULT_CRASHES` (the
/// full-size figures in docs/RELIABILITY.md use 2,000 and 10).
fn crash_test_size() -> (usize, usize) {
    let read = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (read("OUTBOX_FAULT_EVENTS", 400), read("OUTBOX_FAULT_CRASHES", 4))
}

/// The standalone runner, on DynamoDB Local, publishing through the fault
/// proxy (30 % of calls faulted, every kind in turn, entry failures among
/// them) while events are written and the runner is crashed (its task
/// dropped: no checkpoint, no release) and replaced, again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_through_faults_and_crashes_loses_nothing_and_repeats_little() {
    use outbox_dynamodb::{DynamoDbOutboxWriter, OutboxSchema, OutboxTransaction};
    use outbox_dynamodb_relay::{
        DynamoDbLeaseStore, DynamoDbStreamDecoder, DynamoDbStreamRunner, RunnerConfig, create_lease_table,
        stream_arn_for_table,
    };

    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let (count, crashes) = crash_test_size();
    let stack = stack().await;
    let moto = endpoint(MOTO_ENDPOINT_VAR);
    let proxy = Proxy::start(moto.trim_start_matches("http://").to_owned(), 0.30, 30);
    let sdk = outbox_tests::sdk_config_at(&proxy.url)
        .into_builder()
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        )
        .build();
    let leases = unique_name("fault-leases");
    create_lease_table(&dynamodb_client(), &leases).await.unwrap();
    let stream_arn = stream_arn_for_table(&dynamodb_client(), &stack.table)
        .await
        .unwrap();
    let runner = |name: &str| {
        let sink = EventBridgeSink::new(aws_sdk_eventbridge::Client::new(&sdk), &stack.bus.bus);
        let quarantine = SqsQuarantine::new(sqs_client(&moto), &stack.quarantine.url);
        let on_failure = SqsQuarantine::new(sqs_client(&moto), &stack.on_failure.url);
        let mut relay = outbox_core::RelayConfig::default();
        relay.retry.base_delay = Duration::from_millis(5);
        relay.retry.max_delay = Duration::from_millis(80);
        let mut config = RunnerConfig::new(name);
        config.lease_duration = Duration::from_secs(2);
        config.discovery_interval = Duration::from_millis(500);
        config.backoff_initial = Duration::from_millis(20);
        config.backoff_max = Duration::from_millis(500);
        config.batch_limit = 200;
        DynamoDbStreamRunner::new(
            outbox_tests::streams_client(),
            DynamoDbLeaseStore::new(dynamodb_client(), &leases),
            &stream_arn,
            DynamoDbStreamDecoder::new(OutboxSchema::new(&stack.table)),
            Relay::new(sink, quarantine, relay),
            on_failure,
            config,
        )
    };

    // Writers commit the events in rounds while runners come and go.
    let writer = DynamoDbOutboxWriter::new(dynamodb_client(), OutboxSchema::new(&stack.table));
    let rounds = crashes * 4;
    let per_round = count.div_ceil(rounds);
    let producer = tokio::spawn(async move {
        let mut ids = HashSet::new();
        for round in 0..rounds {
            for i in 0..per_round {
                let n = round * per_round + i;
                let event = OutboxEvent::builder(SOURCE, "OrderChanged")
                    .aggregate("Order", format!("o-{}", n % 17))
                    .sequence(n as u64 / 17 + 1)
                    .payload(&json!({ "n": n }))
                    .build(&SystemClock)
                    .unwrap();
                ids.insert(event.id().to_string());
                writer
                    .commit(OutboxTransaction::new().event(event))
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        ids
    });
    let arrivals: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let collect = |arrivals: Arc<Mutex<HashMap<String, usize>>>| {
        let (sqs, url) = (sqs_client(&moto), stack.bus.target.url.clone());
        async move {
            for message in drain_queue(&sqs, &url).await.unwrap() {
                let envelope: Value = serde_json::from_str(&message.body).unwrap();
                let id = envelope["detail"]["id"].as_str().unwrap().to_owned();
                *arrivals.lock().unwrap().entry(id).or_default() += 1;
            }
        }
    };
    let started = Instant::now();
    for crash in 0..crashes {
        let running = tokio::spawn(runner(&format!("crash-{crash}")).run(std::future::pending()));
        // Lives 1 to 2 s after taking the lease over, then dies mid-work.
        let until = Instant::now() + Duration::from_millis(2_000 + (crash as u64 * 397) % 1_000);
        while Instant::now() < until {
            collect(Arc::clone(&arrivals)).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        running.abort();
        let _ = running.await;
    }
    let wanted = producer.await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let last = tokio::spawn(runner("survivor").run(async move {
        let _ = stopped.await;
    }));
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        collect(Arc::clone(&arrivals)).await;
        let done = wanted.iter().all(|id| arrivals.lock().unwrap().contains_key(id));
        if done || Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let delivered_in = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    collect(Arc::clone(&arrivals)).await;
    let _ = stop.send(());
    let report = last.await.unwrap().unwrap();

    let on_failure = drain_queue(&sqs_client(&moto), &stack.on_failure.url)
        .await
        .unwrap();
    let arrivals = arrivals.lock().unwrap().clone();
    let stats = proxy.stats.lock().unwrap();
    let missing = wanted.iter().filter(|id| !arrivals.contains_key(*id)).count();
    let duplicates: usize = arrivals.values().map(|n| n - 1).sum();
    eprintln!(
        "runner crash test: {} events, {crashes} crashes, 30 % of {} calls faulted ({} entries failed in HTTP \
         200s); delivered {} in {:.1} s, missing {missing}, duplicates {duplicates} = {:.1} % ({} entries whose \
         answer was lost, {} from the crashes), {} sent to on-failure; survivor: {report}",
        wanted.len(),
        stats.calls,
        stats.failed_entries,
        arrivals.len(),
        delivered_in.as_secs_f64(),
        duplicates as f64 * 100.0 / wanted.len() as f64,
        stats.ambiguous_entries,
        duplicates.saturating_sub(stats.ambiguous_entries),
        on_failure.len(),
    );
    assert_eq!(missing, 0, "every event arrives at least once");
    assert!(arrivals.keys().all(|id| wanted.contains(id)), "nothing invented");
    assert!(
        on_failure.is_empty(),
        "faults within the retry budget send nothing on"
    );
    // The calls whose answer was lost repeat their entries whatever the
    // relay does; each crash may add what was in flight: 4 calls of 10.
    assert!(
        duplicates <= stats.ambiguous_entries + crashes * 4 * 10,
        "{duplicates} duplicates: {} from lost answers, the rest from {crashes} crashes",
        stats.ambiguous_entries
    );
}
