//! Benchmarks of **outbox-relay** (not published; see `docs/PERFORMANCE.md`).
//!
//! - [`eventbridge::EventBridgeEndpoint`]: a loopback EventBridge-compatible
//!   endpoint that answers `PutEvents` after a configurable latency, every
//!   entry successful, and counts what it received;
//! - [`runtime_api::RuntimeApi`]: a loopback Lambda Runtime API that runs the
//!   real `outbox-lambda` binary and times its init and its invocations;
//! - [`batch`]: Lambda DynamoDB Streams events of N outbox records with
//!   payloads of a chosen size;
//! - [`harness`]: the production handler measured in-process (wall time, CPU
//!   via `getrusage`) and the real binary measured from outside (init time,
//!   peak RSS);
//! - [`measure`]: `getrusage` and `/proc` readings, medians.
//!
//! The binaries `eventbridge-endpoint`, `gen-batch` and `bench-handler` wrap
//! these for `scripts/bench.sh`; `cargo bench -p outbox-bench` runs the
//! criterion benchmarks.
//!
//! ```no_run
//! use std::time::Duration;
//! use outbox_bench::{batch, eventbridge::EventBridgeEndpoint, harness};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let endpoint = EventBridgeEndpoint::start(Duration::from_millis(20)).await?;
//! let handler = harness::bench_handler(&endpoint.url(), 4)?;
//! let event = harness::parse_event(batch::generate(batch::BatchSpec::new(1_000, 1024))?.json.as_bytes())?;
//! let runs = harness::measure_handler(&handler, &event, 5).await?;
//! eprintln!("{runs:?}, {} entries received", endpoint.stats().entries);
//! # Ok(())
//! # }
//! ```

pub mod batch;
pub mod eventbridge;
pub mod harness;
pub mod http;
pub mod measure;
pub mod runtime_api;
