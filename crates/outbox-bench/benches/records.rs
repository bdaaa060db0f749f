//! Per-record costs on realistic records (1 KB and 16 KB outbox payloads):
//! parsing Lambda's event JSON, decoding the stream records into events,
//! the envelope JSON, an event's entry size and the PutEvents request body
//! (which carries the envelope), decode, size and body together, the
//! payload's check while still escaped (against serde_json's scan of the
//! same string, and its unescaping and validation), and chunking a
//! 10,000-event batch.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // criterion's generated fns; bench setup

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use outbox_bench::batch::{BatchSpec, TABLE, generate};
use outbox_core::{ChunkLimits, Decoded, OutboxEvent, chunk_ranges};
use outbox_dynamodb::OutboxSchema;
use outbox_dynamodb_relay::{DynamoDbStreamDecoder, LambdaStreamBatch};
use outbox_eventbridge::{
    DEFAULT_MAX_REQUEST_BYTES, MAX_PUT_EVENTS_ENTRIES, entry_size, to_put_events_entry,
};

const RECORDS: usize = 100;

fn events_of(decoder: &DynamoDbStreamDecoder, event: &LambdaStreamBatch) -> Vec<OutboxEvent> {
    decoder
        .decode_lambda_batch(event.clone())
        .unwrap()
        .into_iter()
        .map(|r| match r.decoded {
            Decoded::Event(e) => *e,
            other => panic!("not an event: {other:?}"),
        })
        .collect()
}

fn per_record(c: &mut Criterion) {
    for (label, payload) in [("1KB", 1024), ("16KB", 16 * 1024)] {
        let batch = generate(BatchSpec::new(RECORDS, payload)).unwrap();
        let event = LambdaStreamBatch::from_json(&batch.json).unwrap();
        let decoder = DynamoDbStreamDecoder::new(OutboxSchema::new(TABLE));
        let events = events_of(&decoder, &event);
        let mut group = c.benchmark_group(format!("record_{label}"));
        group.throughput(Throughput::Elements(RECORDS as u64));
        group.bench_function("parse_event_json", |b| {
            b.iter(|| LambdaStreamBatch::from_json(black_box(&batch.json)).unwrap())
        });
        group.bench_function("decode", |b| {
            b.iter_batched(
                || event.clone(),
                |event| decoder.decode_lambda_batch(event).unwrap(),
                criterion::BatchSize::SmallInput,
            )
        });
        group.bench_function("envelope_json", |b| {
            b.iter(|| {
                for e in &events {
                    black_box(e.to_json());
                }
            })
        });
        group.bench_function("size_and_entries", |b| {
            let refs: Vec<&OutboxEvent> = events.iter().collect();
            b.iter(|| {
                for e in &events {
                    black_box(entry_size(e));
                }
                for chunk in refs.chunks(MAX_PUT_EVENTS_ENTRIES) {
                    for e in chunk {
                        black_box(to_put_events_entry(e, "bench-bus"));
                    }
                }
            })
        });
        group.bench_function("decode_size_entries", |b| {
            b.iter_batched(
                || event.clone(),
                |event| {
                    let events: Vec<Box<OutboxEvent>> = decoder
                        .decode_lambda_batch(event)
                        .unwrap()
                        .into_iter()
                        .filter_map(|record| match record.decoded {
                            Decoded::Event(e) => Some(e),
                            _ => None,
                        })
                        .collect();
                    let refs: Vec<&OutboxEvent> = events.iter().map(|e| &**e).collect();
                    for e in &refs {
                        black_box(entry_size(e));
                    }
                    for e in &refs {
                        black_box(to_put_events_entry(e, "bench-bus"));
                    }
                },
                criterion::BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

/// The payload as the stream delivers it, a JSON string literal, read two
/// ways: only scanned to its end by serde_json, as the record's parse skips
/// it (a floor for any reading); unescaped and validated by serde_json (the
/// relay's reading).
fn payload(c: &mut Criterion) {
    for (label, size) in [("1KB", 1024), ("16KB", 16 * 1024)] {
        let mut rng = fastrand::Rng::with_seed(7);
        let text = outbox_bench::batch::payload(size, 1, &mut rng).to_string();
        let literal = serde_json::to_string(&text).unwrap();
        let mut group = c.benchmark_group(format!("payload_{label}"));
        group.throughput(Throughput::Bytes(literal.len() as u64));
        group.bench_function("serde_scan_only", |b| {
            b.iter(|| serde_json::from_str::<&serde_json::value::RawValue>(black_box(&literal)).unwrap())
        });
        group.bench_function("serde_unescape_and_validate", |b| {
            b.iter(|| {
                let text: String = serde_json::from_str(black_box(&literal)).unwrap();
                serde_json::value::RawValue::from_string(text).unwrap()
            })
        });
        group.finish();
    }
}

fn chunking(c: &mut Criterion) {
    let sizes: Vec<usize> = (0..10_000).map(|i| 600 + (i * 7919) % 20_000).collect();
    let limits = ChunkLimits {
        max_entries: MAX_PUT_EVENTS_ENTRIES,
        max_bytes: DEFAULT_MAX_REQUEST_BYTES,
    };
    let mut group = c.benchmark_group("chunking");
    group.throughput(Throughput::Elements(sizes.len() as u64));
    group.bench_function("chunk_ranges_10000", |b| {
        b.iter(|| chunk_ranges(black_box(&sizes), limits))
    });
    group.finish();
}

criterion_group!(benches, per_record, payload, chunking);
criterion_main!(benches);
