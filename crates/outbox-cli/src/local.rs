//! Clients for local emulators (DynamoDB Local), with fixed test credentials
//! and region, so that nothing probes the instance-metadata address.

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};

/// Region used for every local client.
pub const LOCAL_REGION: &str = "us-east-1";

fn credentials() -> Credentials {
    Credentials::new("test", "test", None, None, "outbox-local")
}

/// A DynamoDB client for the endpoint (e.g. DynamoDB Local).
pub fn dynamodb_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(LOCAL_REGION))
        .endpoint_url(endpoint)
        .credentials_provider(credentials())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// A DynamoDB Streams client for the endpoint (DynamoDB Local serves Streams
/// on its own endpoint).
pub fn streams_client(endpoint: &str) -> aws_sdk_dynamodbstreams::Client {
    let config = aws_sdk_dynamodbstreams::Config::builder()
        .behavior_version(aws_sdk_dynamodbstreams::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodbstreams::config::Region::new(LOCAL_REGION))
        .endpoint_url(endpoint)
        .credentials_provider(credentials())
        .build();
    aws_sdk_dynamodbstreams::Client::from_conf(config)
}

/// An EventBridge client for the endpoint (e.g. moto server).
pub fn eventbridge_client(endpoint: &str) -> aws_sdk_eventbridge::Client {
    let config = aws_sdk_eventbridge::Config::builder()
        .behavior_version(aws_sdk_eventbridge::config::BehaviorVersion::latest())
        .region(aws_sdk_eventbridge::config::Region::new(LOCAL_REGION))
        .endpoint_url(endpoint)
        .credentials_provider(credentials())
        .build();
    aws_sdk_eventbridge::Client::from_conf(config)
}

/// An SQS client for the endpoint (e.g. moto server).
pub fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new(LOCAL_REGION))
        .endpoint_url(endpoint)
        .credentials_provider(credentials())
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// SDK configuration for local emulators: fixed test credentials and region,
/// for the builders that take an `SdkConfig` (the relay's client wiring).
pub fn sdk_config() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(LOCAL_REGION))
        .credentials_provider(aws_sdk_sqs::config::SharedCredentialsProvider::new(credentials()))
        .build()
}
