//! `bench-handler`: measures the relay and prints one JSON line per
//! measurement.
//!
//! - `bench-handler handler --event F --endpoint URL [--concurrency C]
//!   [--iterations N] [--latency-ms L]`: the production handler in this
//!   process (the endpoint runs in another, so its CPU is not counted):
//!   wall time and CPU per batch (`getrusage`, every thread), CPU per record,
//!   minor page faults per batch,
//!   the time to parse the event JSON, the resident memory after reading,
//!   parsing and decoding the event, and with `--latency-ms` the bound
//!   `ceil(records / 10 / C) × L` and the ratio to it; also the endpoint's
//!   own round trip for one 10-event request through a bare HTTP client (no
//!   SDK), the bound it sets (`ceil(records / 10 / C)` round trips) and the
//!   ratio to that. One warm-up run (it opens the connections) is reported
//!   apart. Then the decoder alone and
//!   the PutEvents calls alone (one at a time), each as CPU per record.
//! - `bench-handler lambda --binary B --endpoint URL [--event F]
//!   [--invocations N] [--starts S]`: the real `outbox-lambda` binary under a
//!   loopback Runtime API: init time (spawn to first `next`) over `S`
//!   starts, then one process handed the event `N` times: wall time per
//!   invocation, peak RSS (`VmHWM`), and the process's CPU time and minor
//!   page faults; the binary's size.
#![allow(clippy::print_stdout)] // the JSON lines are this program's output

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use outbox_bench::batch::TABLE;
use outbox_bench::eventbridge::bare_round_trips;
use outbox_bench::harness::{bench_handler, measure_handler, parse_event, run_lambda};
use outbox_bench::measure::{median, ms, proc_status_kib, range, self_usage};
use outbox_core::{Decoded, EventSink, OutboxEvent};
use outbox_dynamodb::OutboxSchema;
use outbox_dynamodb_relay::DynamoDbStreamDecoder;
use outbox_eventbridge::MAX_PUT_EVENTS_ENTRIES;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "Measures the outbox relay's handler and Lambda binary")]
struct Args {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// The production handler in this process.
    Handler {
        /// The Lambda event file.
        #[arg(long)]
        event: PathBuf,
        /// The EventBridge endpoint URL.
        #[arg(long)]
        endpoint: String,
        /// PutEvents calls in flight (OUTBOX_MAX_CONCURRENCY).
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Measured runs after the warm-up.
        #[arg(long, default_value_t = 10)]
        iterations: usize,
        /// The endpoint's latency, to report the latency bound.
        #[arg(long)]
        latency_ms: Option<f64>,
    },
    /// The real Lambda binary under a loopback Runtime API.
    Lambda {
        /// The `outbox-lambda` binary.
        #[arg(long)]
        binary: PathBuf,
        /// The EventBridge endpoint URL.
        #[arg(long)]
        endpoint: String,
        /// The Lambda event file (none: init only).
        #[arg(long)]
        event: Option<PathBuf>,
        /// Invocations of one process with the event.
        #[arg(long, default_value_t = 3)]
        invocations: usize,
        /// Processes started to time the init.
        #[arg(long, default_value_t = 10)]
        starts: usize,
    },
}

fn name_of(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

async fn handler_mode(
    event_path: PathBuf,
    endpoint: String,
    concurrency: usize,
    iterations: usize,
    latency_ms: Option<f64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let rss = || proc_status_kib(std::process::id(), "VmRSS").unwrap_or(0) as f64 / 1024.0;
    let rss_start = rss();
    let text = std::fs::read(&event_path)?;
    let rss_read = rss();
    // The first parse, then the records decoded from it: the memory each
    // takes on top of the previous (the runtime frees the text before the
    // handler runs, and the decoder frees each record's text once decoded).
    let event = parse_event(&text)?;
    let rss_parsed = rss();
    let decoder = DynamoDbStreamDecoder::new(OutboxSchema::new(TABLE));
    let decoded = decoder.decode_lambda_batch(event)?;
    let rss_decoded = rss();
    drop(decoded);
    // The decoder alone (its share of the handler's CPU), median of 5.
    let mut decode_cpu = Vec::new();
    for _ in 0..5 {
        let batch = parse_event(&text)?;
        let cpu = self_usage().cpu;
        let decoded = decoder.decode_lambda_batch(batch)?;
        decode_cpu.push(ms(self_usage().cpu.saturating_sub(cpu)));
        drop(decoded);
    }
    let mut parse_cpu = Vec::new();
    let mut parse_wall = Vec::new();
    let mut parsed = None;
    for _ in 0..3 {
        let cpu = self_usage().cpu;
        let started = Instant::now();
        let event = parse_event(&text)?;
        parse_wall.push(ms(started.elapsed()));
        parse_cpu.push(ms(self_usage().cpu.saturating_sub(cpu)));
        parsed = Some(event);
    }
    let Some(event) = parsed else {
        return Err("no event parsed".into());
    };
    let records = event.len();
    // The decoded events, for the two measurements without the handler.
    let events: Vec<OutboxEvent> = decoder
        .decode_lambda_batch(event.clone())?
        .into_iter()
        .filter_map(|r| match r.decoded {
            Decoded::Event(e) => Some(*e),
            _ => None,
        })
        .collect();
    // The endpoint's own round trip for a request of this batch's first
    // chunk, through a bare HTTP client: the floor of every call.
    let first_refs: Vec<&OutboxEvent> = events.iter().take(MAX_PUT_EVENTS_ENTRIES).collect();
    let body = outbox_bench::harness::put_events_body(&first_refs, "bench-bus");
    let bare = bare_round_trips(&endpoint, &body, 20).await?;
    let bare_ms: Vec<f64> = bare.iter().map(|d| ms(*d)).collect();
    let handler = bench_handler(&endpoint, concurrency)?;
    let warm_up = measure_handler(&handler, &event, 1).await?;
    let runs = measure_handler(&handler, &event, iterations).await?;
    // The PutEvents calls alone (the request body, the client's call), 10
    // events a call, one call at a time: the sink's share of the handler's
    // CPU.
    let mut sink_cpu = Vec::new();
    for _ in 0..5 {
        let cpu = self_usage().cpu;
        for chunk in events.chunks(MAX_PUT_EVENTS_ENTRIES) {
            let refs: Vec<&OutboxEvent> = chunk.iter().collect();
            handler.relay().sink().publish(&refs).await?;
        }
        sink_cpu.push(ms(self_usage().cpu.saturating_sub(cpu)));
    }
    let walls: Vec<f64> = runs.iter().map(|r| ms(r.wall)).collect();
    let cpus: Vec<f64> = runs.iter().map(|r| ms(r.cpu)).collect();
    let faults: Vec<f64> = runs.iter().map(|r| r.minor_faults as f64).collect();
    let per_record = |v: f64| v * 1e3 / records.max(1) as f64;
    let (wall_min, wall_max) = range(&walls);
    let (cpu_min, cpu_max) = range(&cpus);
    let calls = records.div_ceil(10);
    let rounds = calls.div_ceil(concurrency.max(1)) as f64;
    let bound = latency_ms.map(|l| rounds * l);
    let measured_bound = rounds * median(&bare_ms);
    let line = json!({
        "mode": "handler",
        "event": name_of(&event_path),
        "event_bytes": text.len(),
        "records": records,
        "concurrency": concurrency,
        "latency_ms": latency_ms,
        "iterations": iterations,
        "warm_up_wall_ms": warm_up.first().map(|r| ms(r.wall)),
        "wall_ms_median": median(&walls),
        "wall_ms_min": wall_min,
        "wall_ms_max": wall_max,
        "cpu_ms_median": median(&cpus),
        "cpu_ms_min": cpu_min,
        "cpu_ms_max": cpu_max,
        "cpu_us_per_record_median": per_record(median(&cpus)),
        "minor_faults_median": median(&faults),
        "parse_cpu_us_per_record_median": per_record(median(&parse_cpu)),
        "decode_cpu_us_per_record_median": per_record(median(&decode_cpu)),
        "put_events_cpu_us_per_record_median": per_record(median(&sink_cpu)),
        "parse_and_handler_cpu_us_per_record_median": per_record(median(&parse_cpu) + median(&cpus)),
        "parse_wall_ms_median": median(&parse_wall),
        "rss_mib": {
            "start": rss_start,
            "event_text_read": rss_read,
            "event_parsed": rss_parsed,
            "records_decoded": rss_decoded,
        },
        "bound_ms": bound,
        "wall_over_bound": bound.map(|b| median(&walls) / b),
        "bare_round_trip_ms_median": median(&bare_ms),
        "bare_bound_ms": measured_bound,
        "wall_over_bare_bound": median(&walls) / measured_bound,
    });
    println!("{line}");
    Ok(())
}

async fn lambda_mode(
    binary: PathBuf,
    endpoint: String,
    event_path: Option<PathBuf>,
    invocations: usize,
    starts: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let timeout = Duration::from_secs(120);
    let mut inits = Vec::new();
    let mut idle_rss = Vec::new();
    for _ in 0..starts {
        let run = run_lambda(&binary, &endpoint, None, 0, timeout).await?;
        inits.push(ms(run.init));
        idle_rss.push(run.peak_rss_kib as f64 / 1024.0);
    }
    let (init_min, init_max) = range(&inits);
    let mut line = json!({
        "mode": "lambda",
        "binary": binary.display().to_string(),
        "binary_bytes": std::fs::metadata(&binary)?.len(),
        "starts": starts,
        "init_ms_median": median(&inits),
        "init_ms_min": init_min,
        "init_ms_max": init_max,
        "idle_peak_rss_mib_median": median(&idle_rss),
    });
    if let Some(path) = event_path {
        let text = std::fs::read(&path)?;
        let records = parse_event(&text)?.len();
        let run = run_lambda(
            &binary,
            &endpoint,
            Some(Arc::new(text.clone())),
            invocations,
            timeout,
        )
        .await?;
        let walls: Vec<f64> = run.invocations.iter().map(|i| ms(i.wall)).collect();
        line["event"] = json!(name_of(&path));
        line["event_bytes"] = json!(text.len());
        line["records"] = json!(records);
        line["invocations"] = json!(invocations);
        line["invocation_wall_ms"] = json!(walls);
        line["peak_rss_mib"] = json!(run.peak_rss_kib as f64 / 1024.0);
        line["process_cpu_ms"] = json!(ms(run.cpu));
        line["process_minor_faults"] = json!(run.minor_faults);
        line["run_init_ms"] = json!(ms(run.init));
    }
    println!("{line}");
    Ok(())
}

// The runtime `outbox-lambda` runs on (see its `main`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Args::parse().command {
        Mode::Handler {
            event,
            endpoint,
            concurrency,
            iterations,
            latency_ms,
        } => handler_mode(event, endpoint, concurrency, iterations, latency_ms).await,
        Mode::Lambda {
            binary,
            endpoint,
            event,
            invocations,
            starts,
        } => lambda_mode(binary, endpoint, event, invocations, starts).await,
    }
}
