//! The whole pipeline on the local emulators: writer → DynamoDB Local's
//! stream → the standalone relay → moto's EventBridge → a rule → an SQS queue.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use outbox_cli::bootstrap::{LocalStack, create_local_stack, drain_queue};
use outbox_cli::relay::{RunnerOptions, run_dynamodb};
use outbox_core::{OutboxEvent, SystemClock};
use outbox_dynamodb::{ATTR_SEQUENCE, DynamoDbOutboxWriter, OutboxSchema, OutboxTransaction};
use outbox_dynamodb_relay::RunnerConfig;
use outbox_eventbridge::QuarantineMessage;
use outbox_lambda::Config;
use outbox_tests::{MOTO_ENDPOINT_VAR, dynamodb_client, endpoint, outbox_binary, s3_client, unique_name};
use outbox_tests::{eventbridge_client, sqs_client};
use serde_json::{Value, json};

const SOURCE: &str = "com.example.orders";
/// Records per GetRecords in the crash test: a crash redelivers at most one batch.
const BATCH_LIMIT: usize = 50;

async fn stack(prefix: &str) -> LocalStack {
    let moto = endpoint(MOTO_ENDPOINT_VAR);
    create_local_stack(
        &dynamodb_client(),
        &eventbridge_client(&moto),
        &sqs_client(&moto),
        &s3_client(&moto),
        prefix,
        SOURCE,
    )
    .await
    .expect("local stack")
}

fn relay_env(stack: &LocalStack) -> HashMap<&'static str, String> {
    HashMap::from([
        (outbox_lambda::ENV_TABLE_NAME, stack.table.clone()),
        (outbox_lambda::ENV_EVENT_BUS_NAME, stack.bus.bus.clone()),
        (
            outbox_lambda::ENV_QUARANTINE_QUEUE_URL,
            stack.quarantine.url.clone(),
        ),
    ])
}

fn event(order: usize, sequence: u64) -> OutboxEvent {
    OutboxEvent::builder(SOURCE, "OrderChanged")
        .aggregate("Order", format!("o-{order}"))
        .sequence(sequence)
        .payload(&json!({ "order": order, "sequence": sequence }))
        .build(&SystemClock)
        .unwrap()
}

/// Writes `count` events over `orders` aggregates, one transaction each.
async fn write_events(
    writer: &DynamoDbOutboxWriter,
    count: usize,
    orders: usize,
    first_seq: u64,
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..count {
        let e = event(i % orders, first_seq + (i / orders) as u64);
        ids.push(e.id().to_string());
        writer.commit(OutboxTransaction::new().event(e)).await.unwrap();
    }
    ids
}

/// Drains the target queue into `arrivals` (event id → times seen) until all
/// of `wanted` arrived or `timeout` passed.
async fn collect(
    stack: &LocalStack,
    wanted: &HashSet<String>,
    arrivals: &mut HashMap<String, usize>,
    timeout: Duration,
) {
    let sqs = sqs_client(&endpoint(MOTO_ENDPOINT_VAR));
    let until = Instant::now() + timeout;
    loop {
        for m in drain_queue(&sqs, &stack.bus.target.url).await.unwrap() {
            let envelope: Value = serde_json::from_str(&m.body).unwrap();
            *arrivals
                .entry(envelope["detail"]["id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        if wanted.iter().all(|id| arrivals.contains_key(id)) || Instant::now() > until {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_through_the_bus_and_the_poison_item_is_quarantined_with_its_payload() {
    let stack = stack(&unique_name("e2e")).await;
    let schema = OutboxSchema::new(&stack.table);
    let writer = DynamoDbOutboxWriter::new(dynamodb_client(), schema.clone());
    let ids = write_events(&writer, 60, 7, 1).await;

    let poison = event(99, 1);
    let mut item = schema.to_item(&poison, OutboxSchema::default_partition_value(&poison));
    item.insert(ATTR_SEQUENCE.into(), AttributeValue::S("not a number".into()));
    dynamodb_client()
        .put_item()
        .table_name(&stack.table)
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    let more = write_events(&writer, 5, 5, 100).await;

    let vars = relay_env(&stack);
    let config = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let mut runner = RunnerConfig::new("e2e");
    runner.backoff_initial = Duration::from_millis(20);
    runner.backoff_max = Duration::from_millis(200);
    let options = RunnerOptions {
        lease_table: format!("{}-leases", stack.table),
        create_lease_table: true,
        on_failure_queue_url: stack.on_failure.url.clone(),
        runner,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(async move {
        run_dynamodb(&config, &options, &outbox_tests::sdk_config().await, async move {
            let _ = stopped.await;
        })
        .await
    });

    let wanted: HashSet<String> = ids.into_iter().chain(more).collect();
    let mut arrivals = HashMap::new();
    collect(&stack, &wanted, &mut arrivals, Duration::from_secs(30)).await;
    stop.send(()).unwrap();
    let report = relay.await.unwrap().unwrap();

    let missing: Vec<_> = wanted.iter().filter(|id| !arrivals.contains_key(*id)).collect();
    assert!(missing.is_empty(), "not delivered: {missing:?}");
    assert_eq!(arrivals.len(), wanted.len(), "nothing invented");
    assert_eq!(report.quarantined, 1);

    let sqs = sqs_client(&endpoint(MOTO_ENDPOINT_VAR));
    let quarantined = drain_queue(&sqs, &stack.quarantine.url).await.unwrap();
    assert_eq!(quarantined.len(), 1);
    let message = QuarantineMessage::from_body(&quarantined[0].body).unwrap();
    assert!(message.reason.contains("sequence"), "{}", message.reason);
    let raw = message.raw.unwrap();
    assert!(
        raw.contains(&poison.id().to_string()) && raw.contains("payload"),
        "{raw}"
    );
    assert!(drain_queue(&sqs, &stack.on_failure.url).await.unwrap().is_empty());
}

fn spawn_runner(stack: &LocalStack, owner: &str) -> Child {
    let mut command = Command::new(outbox_binary());
    command
        .args([
            "relay",
            "dynamodb",
            "--create-lease-table",
            "--lease-seconds",
            "2",
        ])
        .args(["--batch-limit", &BATCH_LIMIT.to_string()])
        .env("OUTBOX_LEASE_TABLE", format!("{}-leases", stack.table))
        .env("OUTBOX_ON_FAILURE_QUEUE_URL", &stack.on_failure.url)
        .env("OUTBOX_RUNNER_OWNER", owner)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in relay_env(stack) {
        command.env(k, v);
    }
    command.spawn().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_killed_at_random_points_and_restarted_loses_nothing() {
    let stack = stack(&unique_name("crash")).await;
    let writer = DynamoDbOutboxWriter::new(dynamodb_client(), OutboxSchema::new(&stack.table));
    // Events keep being written while runners are killed and restarted: 400
    // in 40 rounds (~20 s), longer than the four runners' lives and lease
    // takeovers, so that every runner has new events to deliver.
    let producer = tokio::spawn(async move {
        let mut ids = Vec::new();
        for round in 0..40u64 {
            ids.extend(write_events(&writer, 10, 9, 1 + round * 3).await);
            tokio::time::sleep(Duration::from_millis(450)).await;
        }
        ids
    });

    let mut arrivals = HashMap::new();
    let mut kills = 0;
    let mut delivered_per_runner = Vec::new();
    for round in 0..4 {
        // A new owner each time: the dead runner's lease (2 s) must expire and
        // be taken over, then the runner works for a while before it is killed.
        let before = arrivals.len();
        let mut child = spawn_runner(&stack, &format!("crash-{round}"));
        let lifetime = Duration::from_millis(2_600 + pseudo_random_ms(round) % 1_400);
        let until = Instant::now() + lifetime;
        while Instant::now() < until {
            collect(&stack, &HashSet::new(), &mut arrivals, Duration::ZERO).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        child.kill().unwrap(); // SIGKILL: no shutdown, no checkpoint, no release
        child.wait().unwrap();
        kills += 1;
        delivered_per_runner.push(arrivals.len() - before);
    }
    let ids = producer.await.unwrap();
    let wanted: HashSet<String> = ids.into_iter().collect();
    let mut last = spawn_runner(&stack, "crash-final");
    collect(&stack, &wanted, &mut arrivals, Duration::from_secs(45)).await;
    last.kill().unwrap();
    last.wait().unwrap();

    let missing = wanted.iter().filter(|id| !arrivals.contains_key(*id)).count();
    assert!(
        delivered_per_runner.iter().filter(|n| **n > 0).count() >= 3,
        "the killed runners did work before they died: {delivered_per_runner:?}"
    );
    let duplicates: usize = arrivals.values().map(|n| n - 1).sum();
    eprintln!(
        "crash test: {} events, {kills} SIGKILLs, new events delivered per killed runner {delivered_per_runner:?}, \
         {} delivered, {duplicates} duplicates, {missing} missing",
        wanted.len(),
        arrivals.len()
    );
    assert_eq!(missing, 0, "every event arrives at least once");
    assert!(arrivals.keys().all(|id| wanted.contains(id)), "nothing invented");
    assert!(
        duplicates <= kills * BATCH_LIMIT,
        "a crash redelivers at most the batch in flight: {duplicates} duplicates after {kills} crashes"
    );
}

/// A spread of lifetimes without a random number crate: deterministic per round.
fn pseudo_random_ms(round: u64) -> u64 {
    (round * 7919 + 104_729) % 1000
}
