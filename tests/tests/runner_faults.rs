//! The standalone runner between DynamoDB Local's stream and moto's
//! EventBridge, with the fault proxy (`outbox_tests::fault_proxy`) in front
//! of the bus: through faults and crashes, and through a bus that stalls,
//! it loses nothing, invents nothing, sends nothing to the on-failure queue
//! and repeats little.
//!
//! Duplicates are bounded by the entries whose `PutEvents` reached moto but
//! whose answer was lost (a timeout or a drop after forwarding, or a call
//! given up at the batch deadline): those repeat whatever the relay does.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outbox_cli::bootstrap::{LocalStack, create_local_stack, drain_queue};
use outbox_core::{OutboxEvent, Relay, RelayConfig, SystemClock};
use outbox_dynamodb::{DynamoDbOutboxWriter, OutboxSchema, OutboxTransaction};
use outbox_dynamodb_relay::{
    DynamoDbLeaseStore, DynamoDbStreamDecoder, DynamoDbStreamRunner, RunnerConfig, RunnerReport,
    create_lease_table, stream_arn_for_table,
};
use outbox_eventbridge::{EventBridgeSink, SqsQuarantine};
use outbox_tests::fault_proxy::{FAULT_KINDS, Fault, Proxy};
use outbox_tests::{MOTO_ENDPOINT_VAR, dynamodb_client, endpoint, s3_client, size_from_env, unique_name};
use outbox_tests::{eventbridge_client, sqs_client};
use serde_json::{Value, json};
use tokio::sync::oneshot;

const SOURCE: &str = "com.example.orders";

/// One test at a time: moto carries every call the proxy forwards, even
/// those given up, and two fault tests at once can slow it until every call
/// times out.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type Runner = DynamoDbStreamRunner<EventBridgeSink, SqsQuarantine, SqsQuarantine>;
type Arrivals = Arc<Mutex<HashMap<String, usize>>>;

/// A table with its stream, a bus with its target queue, the quarantine and
/// on-failure queues and a lease table, the bus behind a fault proxy.
struct Rig {
    stack: LocalStack,
    moto: String,
    proxy: Proxy,
    leases: String,
    stream_arn: String,
}

impl Rig {
    /// A rig whose proxy faults `rate` of the calls with `kinds`, in turn.
    async fn new(rate: f64, kinds: &'static [Fault]) -> Self {
        let moto = endpoint(MOTO_ENDPOINT_VAR);
        let stack = create_local_stack(
            &dynamodb_client(),
            &eventbridge_client(&moto),
            &sqs_client(&moto),
            &s3_client(&moto),
            &unique_name("runner-faults"),
            SOURCE,
        )
        .await
        .expect("local stack");
        let proxy = Proxy::start(moto.trim_start_matches("http://").to_owned(), rate, 30, kinds);
        let leases = unique_name("fault-leases");
        create_lease_table(&dynamodb_client(), &leases).await.unwrap();
        let stream_arn = stream_arn_for_table(&dynamodb_client(), &stack.table)
            .await
            .unwrap();
        Self {
            stack,
            moto,
            proxy,
            leases,
            stream_arn,
        }
    }

    /// A runner publishing through the proxy.
    fn runner(&self, config: RunnerConfig, relay: RelayConfig) -> Runner {
        let sdk = self.proxy.sdk_config();
        DynamoDbStreamRunner::new(
            outbox_tests::streams_client(),
            DynamoDbLeaseStore::new(dynamodb_client(), &self.leases),
            &self.stream_arn,
            DynamoDbStreamDecoder::new(OutboxSchema::new(&self.stack.table)),
            Relay::new(
                EventBridgeSink::new(aws_sdk_eventbridge::Client::new(&sdk), &self.stack.bus.bus),
                SqsQuarantine::new(sqs_client(&self.moto), &self.stack.quarantine.url),
                relay,
            ),
            SqsQuarantine::new(sqs_client(&self.moto), &self.stack.on_failure.url),
            config,
        )
    }

    fn writer(&self) -> DynamoDbOutboxWriter {
        DynamoDbOutboxWriter::new(dynamodb_client(), OutboxSchema::new(&self.stack.table))
    }

    /// Counts what reached the bus's target queue since the last call.
    async fn collect(&self, arrivals: &Arrivals) {
        let url = &self.stack.bus.target.url;
        for message in drain_queue(&sqs_client(&self.moto), url).await.unwrap() {
            let envelope: Value = serde_json::from_str(&message.body).unwrap();
            let id = envelope["detail"]["id"].as_str().unwrap().to_owned();
            *arrivals.lock().unwrap().entry(id).or_default() += 1;
        }
    }

    /// Collects until every id of `wanted` has arrived (or `within` passed),
    /// then once more a moment later; returns when the last one arrived.
    async fn collect_all(&self, arrivals: &Arrivals, wanted: &HashSet<String>, within: Duration) -> Instant {
        let until = Instant::now() + within;
        loop {
            self.collect(arrivals).await;
            let done = wanted.iter().all(|id| arrivals.lock().unwrap().contains_key(id));
            if done || Instant::now() > until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let last = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.collect(arrivals).await;
        last
    }

    async fn sent_to_on_failure(&self) -> usize {
        drain_queue(&sqs_client(&self.moto), &self.stack.on_failure.url)
            .await
            .unwrap()
            .len()
    }
}

/// The `n`-th event of a test, on one of 17 aggregates.
fn event(n: usize) -> OutboxEvent {
    OutboxEvent::builder(SOURCE, "OrderChanged")
        .aggregate("Order", format!("o-{}", n % 17))
        .sequence(n as u64 / 17 + 1)
        .payload(&json!({ "n": n }))
        .build(&SystemClock)
        .unwrap()
}

/// Short leases, quick rediscovery and short backoffs, so that a test sees
/// many take-overs and retries in a few seconds.
fn runner_config(name: &str) -> RunnerConfig {
    let mut config = RunnerConfig::new(name);
    config.lease_duration = Duration::from_secs(2);
    config.discovery_interval = Duration::from_millis(500);
    config.backoff_initial = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(500);
    config
}

fn relay_config() -> RelayConfig {
    let mut relay = RelayConfig::default();
    relay.retry.base_delay = Duration::from_millis(5);
    relay.retry.max_delay = Duration::from_millis(80);
    relay
}

/// Runs `runner` until `stop` is sent.
fn spawn(runner: Runner) -> (oneshot::Sender<()>, tokio::task::JoinHandle<RunnerReport>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        runner
            .run(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    (stop, task)
}

/// The standalone runner, publishing through the fault proxy (30 % of calls
/// faulted, every kind in turn, entry failures among them) while events are
/// written and the runner is crashed (its task dropped: no checkpoint, no
/// release) and replaced, again and again. `OUTBOX_FAULT_EVENTS` and
/// `OUTBOX_FAULT_CRASHES` set the size (CI: 400 and 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_through_faults_and_crashes_loses_nothing_and_repeats_little() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let (count, crashes) = (
        size_from_env("OUTBOX_FAULT_EVENTS", 400),
        size_from_env("OUTBOX_FAULT_CRASHES", 4),
    );
    let rig = Rig::new(0.30, &FAULT_KINDS).await;
    let runner = |name: &str| {
        let mut config = runner_config(name);
        config.batch_limit = 200;
        rig.runner(config, relay_config())
    };

    // Writers commit the events in rounds while runners come and go.
    let writer = rig.writer();
    let rounds = crashes * 4;
    let per_round = count.div_ceil(rounds);
    let producer = tokio::spawn(async move {
        let mut ids = HashSet::new();
        for round in 0..rounds {
            for i in 0..per_round {
                let event = event(round * per_round + i);
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
    let arrivals = Arrivals::default();
    let started = Instant::now();
    for crash in 0..crashes {
        let running = tokio::spawn(runner(&format!("crash-{crash}")).run(std::future::pending()));
        // Lives 1 to 2 s after taking the lease over, then dies mid-work.
        let until = Instant::now() + Duration::from_millis(2_000 + (crash as u64 * 397) % 1_000);
        while Instant::now() < until {
            rig.collect(&arrivals).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        running.abort();
        let _ = running.await;
    }
    let wanted = producer.await.unwrap();
    let (stop, survivor) = spawn(runner("survivor"));
    let delivered_at = rig.collect_all(&arrivals, &wanted, Duration::from_secs(90)).await;
    let _ = stop.send(());
    let report = survivor.await.unwrap();

    let on_failure = rig.sent_to_on_failure().await;
    let arrivals = arrivals.lock().unwrap().clone();
    let stats = rig.proxy.stats.lock().unwrap();
    let missing = wanted.iter().filter(|id| !arrivals.contains_key(*id)).count();
    let duplicates: usize = arrivals.values().map(|n| n - 1).sum();
    eprintln!(
        "runner crash test: {} events, {crashes} crashes, 30 % of {} calls faulted ({} entries failed in HTTP \
         200s); delivered {} in {:.1} s, missing {missing}, duplicates {duplicates} = {:.1} % ({} entries whose \
         answer was lost, {} from the crashes), {on_failure} sent to on-failure; survivor: {report}",
        wanted.len(),
        stats.calls,
        stats.failed_entries,
        arrivals.len(),
        (delivered_at - started).as_secs_f64(),
        duplicates as f64 * 100.0 / wanted.len() as f64,
        stats.ambiguous_entries,
        duplicates.saturating_sub(stats.ambiguous_entries),
    );
    assert_eq!(missing, 0, "every event arrives at least once");
    assert!(arrivals.keys().all(|id| wanted.contains(id)), "nothing invented");
    assert_eq!(on_failure, 0, "faults within the retry budget send nothing on");
    // The calls whose answer was lost repeat their entries whatever the
    // relay does; each crash may add what was in flight: 4 calls of 10.
    assert!(
        duplicates <= stats.ambiguous_entries + crashes * 4 * 10,
        "{duplicates} duplicates: {} from lost answers, the rest from {crashes} crashes",
        stats.ambiguous_entries
    );
}

/// The batch deadline of the slow-bus test, and the margin before it at
/// which the relay gives up its calls. The stall is scaled to a tenth (1.3 s
/// against the client's 1 s timeout for 12 s against 10 s); the deadline to
/// a fifth of the default (30 s), because moto answers a call in 0.1 to
/// 0.5 s where EventBridge takes a few tens of milliseconds.
const SLOW_BUS_DEADLINE: Duration = Duration::from_secs(6);
const SLOW_BUS_MARGIN: Duration = Duration::from_millis(400);

/// Stalls only: held past the client's timeout, before or after forwarding.
const STALLS: [Fault; 2] = [Fault::TimeoutBeforeForwarding, Fault::TimeoutAfterForwarding];

/// What one slow-bus run delivered.
struct Delivery {
    wanted: HashSet<String>,
    arrivals: HashMap<String, usize>,
    took: Duration,
    report: RunnerReport,
    calls: usize,
    stalls: usize,
    ambiguous_entries: usize,
    on_failure: usize,
}

/// Writes `count` events, then starts one runner with the default batch
/// limit (1,000) and the scaled deadline, and waits for every event.
async fn deliver_through_stalls(rate: f64, count: usize) -> Delivery {
    let rig = Rig::new(rate, &STALLS).await;
    let writer = rig.writer();
    let mut wanted = HashSet::new();
    for n in 0..count {
        let event = event(n);
        wanted.insert(event.id().to_string());
        writer
            .commit(OutboxTransaction::new().event(event))
            .await
            .unwrap();
    }
    let mut config = runner_config("slow-bus");
    config.batch_deadline = SLOW_BUS_DEADLINE;
    let mut relay = relay_config();
    relay.deadline_margin = SLOW_BUS_MARGIN;
    // Two calls in flight, not four: moto answers one at a time and, with
    // four queued, passes the client's 1 s timeout without any fault.
    relay.max_concurrency = 2;
    let arrivals = Arrivals::default();
    let started = Instant::now();
    let (stop, running) = spawn(rig.runner(config, relay));
    let delivered_at = rig
        .collect_all(&arrivals, &wanted, Duration::from_secs(180))
        .await;
    let _ = stop.send(());
    let report = running.await.unwrap();
    let on_failure = rig.sent_to_on_failure().await;
    let arrivals = arrivals.lock().unwrap().clone();
    let stats = rig.proxy.stats.lock().unwrap();
    Delivery {
        wanted,
        arrivals,
        took: delivered_at - started,
        report,
        calls: stats.calls,
        stalls: stats.faults.values().sum(),
        ambiguous_entries: stats.ambiguous_entries,
        on_failure,
    }
}

/// A bus that stalls 30 % of the calls past the client's attempt timeout,
/// and a backlog larger than a batch can publish by its deadline: every
/// batch ends by its deadline (the runner then halves its batch size),
/// nothing is lost, and the duplicates are the entries of the stalled calls
/// that moto carried out, plus at most 1 %. The same events through a bus
/// without faults give the time to compare with. `OUTBOX_STALL_EVENTS` sets
/// the size (CI: 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_bus_never_keeps_a_batch_past_its_deadline_and_loses_nothing() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let count = size_from_env("OUTBOX_STALL_EVENTS", 500);
    let clean = deliver_through_stalls(0.0, count).await;
    let slow = deliver_through_stalls(0.30, count).await;

    let missing = slow
        .wanted
        .iter()
        .filter(|id| !slow.arrivals.contains_key(*id))
        .count();
    let duplicates: usize = slow.arrivals.values().map(|n| n - 1).sum();
    let bound = slow.ambiguous_entries + count.div_ceil(100);
    eprintln!(
        "slow bus test: {count} events; without faults delivered in {:.1} s ({} calls, {} duplicates; {}); with \
         30 % of calls stalled ({} of {} calls) delivered {} in {:.1} s ({:.1}x), missing {missing}, duplicates \
         {duplicates} (bound {bound}: {} entries of stalled calls moto carried out + 1 %), {} sent to on-failure; {}",
        clean.took.as_secs_f64(),
        clean.calls,
        clean.arrivals.values().map(|n| n - 1).sum::<usize>(),
        clean.report,
        slow.stalls,
        slow.calls,
        slow.arrivals.len(),
        slow.took.as_secs_f64(),
        slow.took.as_secs_f64() / clean.took.as_secs_f64(),
        slow.ambiguous_entries,
        slow.on_failure,
        slow.report,
    );
    assert_eq!(clean.arrivals.len(), count, "without faults every event arrives");
    assert_eq!(missing, 0, "every event arrives at least once");
    assert!(
        slow.arrivals.keys().all(|id| slow.wanted.contains(id)),
        "nothing invented"
    );
    assert_eq!(
        slow.on_failure, 0,
        "stalls within the retry budget send nothing on"
    );
    assert!(
        slow.report.longest_batch <= SLOW_BUS_DEADLINE,
        "a batch outlived its deadline: {}",
        slow.report
    );
    assert!(duplicates <= bound, "{duplicates} duplicates, bound {bound}");
}
