//! Fixtures shared by the end-to-end tests: clients for the local emulators
//! that `scripts/test.sh` starts, and unique resource names so tests can run
//! in parallel against one emulator.
//!
//! The emulators' endpoints come from `OUTBOX_DYNAMODB_ENDPOINT` and
//! `OUTBOX_MOTO_ENDPOINT`. A test that needs one and does not find it fails
//! with a message saying how to start them: emulator tests never skip.

use std::sync::atomic::{AtomicU32, Ordering};

/// Variable holding DynamoDB Local's endpoint (set by `scripts/emulators.sh start`).
pub const DYNAMODB_ENDPOINT_VAR: &str = "OUTBOX_DYNAMODB_ENDPOINT";
/// Variable holding moto server's endpoint (set by `scripts/emulators.sh start`).
pub const MOTO_ENDPOINT_VAR: &str = "OUTBOX_MOTO_ENDPOINT";

/// The endpoint in `var`, or a panic that says how to get one.
pub fn endpoint(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{var} is not set: these tests run against local emulators. Run `./scripts/test.sh`, \
             or `./scripts/emulators.sh start .emulators && . .emulators/env` before `cargo test`."
        ),
    }
}

/// A DynamoDB client for DynamoDB Local.
pub fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    outbox_cli::local::dynamodb_client(&endpoint(DYNAMODB_ENDPOINT_VAR))
}

/// A DynamoDB client for another endpoint (e.g. an unreachable one, to prove
/// that no call is made).
pub fn dynamodb_client_at(endpoint: &str) -> aws_sdk_dynamodb::Client {
    outbox_cli::local::dynamodb_client(endpoint)
}

/// A DynamoDB Streams client for DynamoDB Local.
pub fn streams_client() -> aws_sdk_dynamodbstreams::Client {
    outbox_cli::local::streams_client(&endpoint(DYNAMODB_ENDPOINT_VAR))
}

/// A name no other test in this run uses: `<prefix>-<pid>-<n>-<random>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = uuid::Uuid::now_v7().simple().to_string();
    format!(
        "{prefix}-{}-{n}-{}",
        std::process::id(),
        &random[random.len() - 8..]
    )
}

/// Every record of `table`'s stream on DynamoDB Local.
pub async fn read_stream(table: &str) -> Vec<aws_sdk_dynamodbstreams::types::Record> {
    outbox_cli::bootstrap::read_stream(&dynamodb_client(), &streams_client(), table)
        .await
        .unwrap_or_else(|e| panic!("reading the stream of {table}: {e:?}"))
}
