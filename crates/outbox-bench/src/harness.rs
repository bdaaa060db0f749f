//! The measuring harness: the production handler in this process
//! ([`measure_handler`]) and the real `outbox-lambda` binary under the
//! loopback Runtime API ([`run_lambda`]), both publishing to an
//! EventBridge-compatible endpoint.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outbox_core::{BatchOutcome, OutboxEvent};
use outbox_dynamodb_relay::LambdaStreamBatch;
use outbox_eventbridge::{EventBridgeSink, SqsQuarantine};
use outbox_lambda::{Config, ConfigError, RelayHandler, build_handler};

use crate::measure::{children_usage, proc_status_kib, self_usage};
use crate::runtime_api::{Invocation, RuntimeApi, RuntimeApiError};

/// The bus name the benchmarks publish to.
pub const BUS: &str = "bench-bus";

/// Why a measurement could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The relay configuration was refused.
    #[error("bad relay configuration")]
    Config(#[from] ConfigError),
    /// The event file is not a DynamoDB Streams event.
    #[error("the event is not a DynamoDB Streams event")]
    Event(#[source] serde_json::Error),
    /// A process or socket could not be started.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The Runtime API got no answer.
    #[error("the Lambda binary did not answer")]
    Runtime(#[from] RuntimeApiError),
    /// The batch was not fully published.
    #[error("only {published} of {expected} events were published ({failed} failed)")]
    Incomplete {
        /// Events expected.
        expected: usize,
        /// Events published.
        published: usize,
        /// Records failed.
        failed: usize,
    },
    /// The function answered with an error or with batch item failures.
    #[error("the function answered {0}")]
    BadAnswer(String),
}

/// The configuration variables of a relay publishing to `endpoint` with
/// `concurrency` PutEvents calls in flight (the quarantine, never used by
/// clean batches, points at the same endpoint; `AWS_ENDPOINT_URL` sends a
/// Lambda process's clients there).
pub fn bench_variables(endpoint: &str, concurrency: usize) -> HashMap<&'static str, String> {
    HashMap::from([
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        (outbox_lambda::ENV_TABLE_NAME, crate::batch::TABLE.to_owned()),
        (outbox_lambda::ENV_EVENT_BUS_NAME, BUS.to_owned()),
        (
            outbox_lambda::ENV_QUARANTINE_QUEUE_URL,
            format!("{endpoint}/123456789012/quarantine"),
        ),
        (outbox_lambda::ENV_MAX_CONCURRENCY, concurrency.to_string()),
    ])
}

/// The production handler ([`build_handler`]) publishing to `endpoint`, with
/// local credentials and the EMF line discarded.
pub fn bench_handler(
    endpoint: &str,
    concurrency: usize,
) -> Result<RelayHandler<EventBridgeSink, SqsQuarantine>, HarnessError> {
    let vars = bench_variables(endpoint, concurrency);
    let config = Config::from_lookup(|k| vars.get(k).cloned())?;
    Ok(build_handler(&config, &sdk_config_at(endpoint)).with_metrics_writer(|_| {}))
}

/// An SDK configuration sending every call to `endpoint`, with fixed
/// credentials and region, so nothing probes the instance-metadata address.
pub fn sdk_config_at(endpoint: &str) -> aws_config::SdkConfig {
    let credentials = aws_credential_types::Credentials::new("test", "test", None, None, "outbox-bench");
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
            credentials,
        ))
        .build()
}

/// A `PutEvents` request body (AWS JSON 1.1) for `events`, as the SDK
/// writes it: what the bench's bare HTTP round trips send.
pub fn put_events_body(events: &[&OutboxEvent], bus: &str) -> Vec<u8> {
    let entries: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            serde_json::json!({
                "Source": e.source(),
                "DetailType": e.event_type(),
                "Detail": e.to_json(),
                "Time": e.occurred_at().timestamp_millis() as f64 / 1000.0,
                "EventBusName": bus,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "Entries": entries })).unwrap_or_default()
}

/// Parses a Lambda DynamoDB Streams event as the runtime does for the
/// handler (the records split, each kept as its text).
pub fn parse_event(json: &[u8]) -> Result<LambdaStreamBatch, HarnessError> {
    serde_json::from_slice(json).map_err(HarnessError::Event)
}

/// One run of the handler over a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HandlerRun {
    /// Wall time of `handle_batch`.
    pub wall: Duration,
    /// CPU time of this process (every thread) during it.
    pub cpu: Duration,
    /// Minor page faults of this process during it (a page given back to
    /// the system by the allocator and touched again; ~2.8 µs each on the
    /// machine of docs/PERFORMANCE.md).
    pub minor_faults: u64,
}

/// Runs `handler` on `event` `iterations` times and returns each run; fails
/// if a run did not publish every record. Each run gets its own copy of the
/// batch (the handler consumes it), made before the clock starts.
pub async fn measure_handler(
    handler: &RelayHandler<EventBridgeSink, SqsQuarantine>,
    event: &LambdaStreamBatch,
    iterations: usize,
) -> Result<Vec<HandlerRun>, HarnessError> {
    let mut runs = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let batch = event.clone();
        let before = self_usage();
        let started = Instant::now();
        let result = handler.handle_batch(batch, None, "outbox-bench").await;
        let wall = started.elapsed();
        let after = self_usage();
        let cpu = after.cpu.saturating_sub(before.cpu);
        let minor_faults = after.minor_faults.saturating_sub(before.minor_faults);
        let (_, outcome) = result.map_err(|e| HarnessError::BadAnswer(e.to_string()))?;
        check_outcome(&outcome, event.len())?;
        runs.push(HandlerRun {
            wall,
            cpu,
            minor_faults,
        });
    }
    Ok(runs)
}

fn check_outcome(outcome: &BatchOutcome, expected: usize) -> Result<(), HarnessError> {
    if outcome.published == expected && outcome.failed == 0 {
        Ok(())
    } else {
        Err(HarnessError::Incomplete {
            expected,
            published: outcome.published,
            failed: outcome.failed,
        })
    }
}

/// One life of the real `outbox-lambda` process.
#[derive(Debug, Clone)]
pub struct LambdaRun {
    /// From spawning the process to its first `GET next` (Lambda's init phase).
    pub init: Duration,
    /// Each invocation, in order.
    pub invocations: Vec<Invocation>,
    /// Peak resident memory (`VmHWM`) once the invocations are done, in KiB.
    pub peak_rss_kib: u64,
    /// CPU time of the whole process life (init and invocations).
    pub cpu: Duration,
    /// Minor page faults of the whole process life.
    pub minor_faults: u64,
}

/// Starts the `outbox-lambda` binary at `binary` under a loopback Runtime
/// API, publishing to `endpoint`, hands it `event` `invocations` times, and
/// measures it. Every answer must be `{"batchItemFailures":[]}`.
pub async fn run_lambda(
    binary: &Path,
    endpoint: &str,
    event: Option<Arc<Vec<u8>>>,
    invocations: usize,
    timeout: Duration,
) -> Result<LambdaRun, HarnessError> {
    let api = RuntimeApi::start().await.map_err(|source| HarnessError::Io {
        what: "starting the Runtime API".into(),
        source,
    })?;
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", api.address())
        .env("AWS_LAMBDA_FUNCTION_NAME", "outbox-bench")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/outbox-bench")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_SESSION_TOKEN", "test")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in bench_variables(endpoint, 4) {
        command.env(k, v);
    }
    let before = children_usage();
    let spawned = Instant::now();
    let mut child = command.spawn().map_err(|source| HarnessError::Io {
        what: format!("starting {}", binary.display()),
        source,
    })?;
    let result = drive(&api, spawned, event, invocations, timeout).await;
    let peak_rss_kib = proc_status_kib(child.id(), "VmHWM").unwrap_or(0);
    // The process waits for its next invocation forever: end it.
    let _ = child.kill();
    let _ = child.wait();
    let after = children_usage();
    let cpu = after.cpu.saturating_sub(before.cpu);
    let minor_faults = after.minor_faults.saturating_sub(before.minor_faults);
    let (init, invocations) = result?;
    Ok(LambdaRun {
        init,
        invocations,
        peak_rss_kib,
        cpu,
        minor_faults,
    })
}

async fn drive(
    api: &RuntimeApi,
    spawned: Instant,
    event: Option<Arc<Vec<u8>>>,
    invocations: usize,
    timeout: Duration,
) -> Result<(Duration, Vec<Invocation>), HarnessError> {
    let ready = api.ready(timeout).await?;
    let init = ready.saturating_duration_since(spawned);
    let mut done = Vec::new();
    if let Some(event) = event {
        for n in 0..invocations {
            let invocation = api.invoke(Arc::clone(&event), timeout).await?;
            let body = String::from_utf8_lossy(&invocation.body).into_owned();
            if !invocation.ok || body != r#"{"batchItemFailures":[]}"# {
                return Err(HarnessError::BadAnswer(body));
            }
            // Idle again: it asked for the next invocation.
            api.next_requests(n as u64 + 2, timeout).await?;
            done.push(invocation);
        }
    }
    Ok((init, done))
}
