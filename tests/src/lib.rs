//! Fixtures shared by the end-to-end tests: clients for the local emulators
//! that `scripts/test.sh` starts, and unique resource names so tests can run
//! in parallel against one emulator.
//!
//! The emulators' endpoints come from the AWS SDK's own variables, as
//! `scripts/emulators.sh start` exports them: `AWS_ENDPOINT_URL_DYNAMODB`
//! (DynamoDB Local, which serves Streams too) and
//! `AWS_ENDPOINT_URL_EVENTBRIDGE` (moto, which serves SQS and S3 too). A
//! test that needs one and does not find it fails with a message saying how
//! to start them: emulator tests never skip.

pub mod fault_proxy;

use std::sync::atomic::{AtomicU32, Ordering};

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;

/// Variable holding DynamoDB Local's endpoint.
pub const DYNAMODB_ENDPOINT_VAR: &str = "AWS_ENDPOINT_URL_DYNAMODB";
/// Variable holding moto server's endpoint.
pub const MOTO_ENDPOINT_VAR: &str = "AWS_ENDPOINT_URL_EVENTBRIDGE";
/// Region of every client made here.
pub const REGION: &str = "us-east-1";

fn credentials() -> Credentials {
    Credentials::new("test", "test", None, None, "outbox-tests")
}

/// The AWS configuration the commands load, with the tests' region and
/// credentials: the endpoints come from the `AWS_ENDPOINT_URL_*` variables.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(credentials())
        .load()
        .await
}

/// An SDK configuration whose every client goes to `endpoint`.
pub fn sdk_config_at(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
            credentials(),
        ))
        .build()
}

/// An EventBridge client for `endpoint` (moto, or a test's fault proxy).
pub fn eventbridge_client(endpoint: &str) -> aws_sdk_eventbridge::Client {
    aws_sdk_eventbridge::Client::new(&sdk_config_at(endpoint))
}

/// An SQS client for `endpoint` (moto).
pub fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&sdk_config_at(endpoint))
}

/// An S3 client for `endpoint` (moto).
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::new(&sdk_config_at(endpoint))
}

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

/// A test's size read from the variable `name`, else `default`: CI runs the
/// small default, the full-size figures in docs/RELIABILITY.md set the
/// variable.
pub fn size_from_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A DynamoDB client for DynamoDB Local.
pub fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    dynamodb_client_at(&endpoint(DYNAMODB_ENDPOINT_VAR))
}

/// A DynamoDB client for another endpoint (e.g. an unreachable one, to prove
/// that no call is made).
pub fn dynamodb_client_at(endpoint: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&sdk_config_at(endpoint))
}

/// A DynamoDB Streams client for DynamoDB Local.
pub fn streams_client() -> aws_sdk_dynamodbstreams::Client {
    aws_sdk_dynamodbstreams::Client::new(&sdk_config_at(&endpoint(DYNAMODB_ENDPOINT_VAR)))
}

/// The `outbox` command built beside the test binaries (`scripts/test.sh`
/// builds it first), or a panic that says how to build it.
pub fn outbox_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("outbox"))
        .unwrap_or_default();
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p outbox-cli` first (scripts/test.sh does)",
        bin.display()
    );
    bin
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

/// The README's Rust examples, compiled (and run, unless marked `no_run`)
/// as doctests, so the writer guide's first example builds as written.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;
