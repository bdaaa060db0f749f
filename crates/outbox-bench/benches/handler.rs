//! The whole production handler (`build_handler`: decode, relay, PutEvents
//! through the AWS SDK over loopback HTTP) on 100-, 1,000- and 10,000-record
//! batches of 1 KB payloads, against an in-process EventBridge-compatible
//! endpoint that answers after `BENCH_LATENCY_MS` (default 0) milliseconds
//! and counts what it receives. `BENCH_CONCURRENCY` (default 4) sets the
//! PutEvents calls in flight.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // criterion's generated fns; bench setup

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use outbox_bench::batch::{BatchSpec, generate};
use outbox_bench::eventbridge::EventBridgeEndpoint;
use outbox_bench::harness::bench_handler;
use outbox_dynamodb_relay::LambdaStreamBatch;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn whole_handler(c: &mut Criterion) {
    let latency = Duration::from_millis(env_number("BENCH_LATENCY_MS", 0));
    let concurrency = usize::try_from(env_number("BENCH_CONCURRENCY", 4)).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let endpoint = runtime.block_on(EventBridgeEndpoint::start(latency)).unwrap();
    let handler = bench_handler(&endpoint.url(), concurrency).unwrap();
    let mut group = c.benchmark_group(format!(
        "handler_latency_{}ms_concurrency_{concurrency}",
        latency.as_millis()
    ));
    group.sample_size(10);
    for records in [100usize, 1_000, 10_000] {
        let batch = generate(BatchSpec::new(records, 1024)).unwrap();
        let event = LambdaStreamBatch::from_json(&batch.json).unwrap();
        group.throughput(Throughput::Elements(records as u64));
        endpoint.reset();
        group.bench_with_input(BenchmarkId::from_parameter(records), &event, |b, event| {
            b.to_async(&runtime).iter_batched(
                || event.clone(),
                |event| async {
                    let (_, outcome) = handler.handle_batch(event, None, "bench").await.unwrap();
                    assert_eq!(outcome.published, records);
                },
                criterion::BatchSize::LargeInput,
            )
        });
        let stats = endpoint.stats();
        assert_eq!(
            stats.entries % records as u64,
            0,
            "the endpoint received whole batches"
        );
        eprintln!(
            "endpoint received {} PutEvents requests, {} entries, {} bytes",
            stats.requests, stats.entries, stats.bytes
        );
    }
    group.finish();
}

criterion_group!(benches, whole_handler);
criterion_main!(benches);
