//! The local resources: an outbox table with a stream and TTL, made the way
//! the deployment templates make it.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, StreamSpecification,
    StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use outbox_dynamodb::OutboxSchema;

/// Why a local resource could not be made or read.
#[derive(Debug, thiserror::Error)]
#[error("{action} failed")]
pub struct BootstrapError {
    action: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

fn failed<E: std::error::Error + Send + Sync + 'static>(
    action: impl Into<String>,
) -> impl FnOnce(E) -> BootstrapError {
    let action = action.into();
    move |e| BootstrapError {
        action,
        source: Box::new(e),
    }
}

/// Creates `table` for the default [`OutboxSchema`]: string `pk` and `sk`,
/// on-demand, a `NEW_IMAGE` stream (what the relay decodes), and TTL on `ttl`.
pub async fn create_outbox_table(client: &Client, table: &str) -> Result<(), BootstrapError> {
    let schema = OutboxSchema::new(table);
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
    };
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute(schema.partition_key()).map_err(failed("attribute definition"))?)
        .attribute_definitions(attribute(schema.sort_key()).map_err(failed("attribute definition"))?)
        .key_schema(key(schema.partition_key(), KeyType::Hash).map_err(failed("key schema"))?)
        .key_schema(key(schema.sort_key(), KeyType::Range).map_err(failed("key schema"))?)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()
                .map_err(failed("stream specification"))?,
        )
        .send()
        .await
        .map_err(failed(format!("CreateTable {table}")))?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(schema.ttl_attribute())
                .build()
                .map_err(failed("TTL specification"))?,
        )
        .send()
        .await
        .map_err(failed(format!("UpdateTimeToLive {table}")))?;
    Ok(())
}

/// Every record of every shard of `table`'s stream, from the trim horizon,
/// shard by shard, each shard in sequence order. For inspection (the demo,
/// tests), not for relaying.
pub async fn read_stream(
    client: &Client,
    streams: &aws_sdk_dynamodbstreams::Client,
    table: &str,
) -> Result<Vec<Record>, BootstrapError> {
    let described = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(failed(format!("DescribeTable {table}")))?;
    let Some(arn) = described
        .table()
        .and_then(|t| t.latest_stream_arn())
        .map(str::to_owned)
    else {
        return Err(BootstrapError {
            action: format!("finding the stream of {table}"),
            source: "the table has no stream".into(),
        });
    };
    let stream = streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .map_err(failed("DescribeStream"))?;
    let shards = stream
        .stream_description()
        .map(|d| d.shards().to_vec())
        .unwrap_or_default();
    let mut records = Vec::new();
    for shard in shards {
        let mut iterator = streams
            .get_shard_iterator()
            .stream_arn(&arn)
            .shard_id(shard.shard_id().unwrap_or_default())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .map_err(failed("GetShardIterator"))?
            .shard_iterator;
        // An open shard always hands back a next iterator: stop at the first empty page.
        while let Some(it) = iterator {
            let page = streams
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .map_err(failed("GetRecords"))?;
            if page.records().is_empty() {
                break;
            }
            records.extend(page.records().iter().cloned());
            iterator = page.next_shard_iterator;
        }
    }
    Ok(records)
}
