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

/// An SQS queue: its URL and ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// The queue URL (for SendMessage / ReceiveMessage).
    pub url: String,
    /// The queue ARN (for EventBridge targets).
    pub arn: String,
}

/// Creates (or finds) an SQS queue.
pub async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> Result<Queue, BootstrapError> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let created = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .map_err(failed(format!("CreateQueue {name}")))?;
    let url = created.queue_url().unwrap_or_default().to_owned();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(failed(format!("GetQueueAttributes {name}")))?;
    let arn = attributes
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_default();
    Ok(Queue { url, arn })
}

/// The bus side of the local stack: a bus, a rule on it that sends events of
/// `source` to an SQS queue (where the demo and the tests observe what the
/// bus delivered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalBus {
    /// The bus name.
    pub bus: String,
    /// The queue the rule delivers to.
    pub target: Queue,
}

/// Creates a bus and a rule matching `source` that targets a new queue.
pub async fn create_bus_with_queue_target(
    eventbridge: &aws_sdk_eventbridge::Client,
    sqs: &aws_sdk_sqs::Client,
    bus: &str,
    source: &str,
) -> Result<LocalBus, BootstrapError> {
    eventbridge
        .create_event_bus()
        .name(bus)
        .send()
        .await
        .map_err(failed(format!("CreateEventBus {bus}")))?;
    let target = create_queue(sqs, &format!("{bus}-target")).await?;
    let rule = format!("{bus}-to-queue");
    let pattern = serde_json::json!({ "source": [source] }).to_string();
    eventbridge
        .put_rule()
        .name(&rule)
        .event_bus_name(bus)
        .event_pattern(pattern)
        .send()
        .await
        .map_err(failed(format!("PutRule {rule}")))?;
    eventbridge
        .put_targets()
        .rule(&rule)
        .event_bus_name(bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(&target.arn)
                .build()
                .map_err(failed("target"))?,
        )
        .send()
        .await
        .map_err(failed(format!("PutTargets {rule}")))?;
    Ok(LocalBus {
        bus: bus.to_owned(),
        target,
    })
}

/// One message taken from a queue, with its body and when SQS received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The body.
    pub body: String,
    /// SQS's `SentTimestamp`, epoch milliseconds.
    pub sent_at_ms: i64,
}

/// Takes (receives and deletes) what is in a queue, until a receive comes
/// back empty.
pub async fn drain_queue(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> Result<Vec<ReceivedMessage>, BootstrapError> {
    use aws_sdk_sqs::types::MessageSystemAttributeName;
    let mut out = Vec::new();
    loop {
        let page = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(failed("ReceiveMessage"))?;
        let messages = page.messages();
        if messages.is_empty() {
            return Ok(out);
        }
        for m in messages {
            let sent_at_ms = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                .and_then(|t| t.parse().ok())
                .unwrap_or_default();
            out.push(ReceivedMessage {
                body: m.body().unwrap_or_default().to_owned(),
                sent_at_ms,
            });
            if let Some(handle) = m.receipt_handle() {
                sqs.delete_message()
                    .queue_url(url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .map_err(failed("DeleteMessage"))?;
            }
        }
    }
}

/// Everything the relay needs locally, as made by [`create_local_stack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalStack {
    /// The outbox table (stream on, TTL on).
    pub table: String,
    /// The bus and the queue its rule delivers to.
    pub bus: LocalBus,
    /// Where the relay quarantines records.
    pub quarantine: Queue,
    /// Where the standalone runner sends records that exhausted their retries.
    pub on_failure: Queue,
    /// The S3 bucket where quarantine messages too large for their queue
    /// are stored (claim-checks).
    pub claim_checks: String,
}

impl LocalStack {
    /// The stack as shell `export` lines, so that `eval "$(outbox bootstrap)"`
    /// configures a shell: the variables the relay reads, plus
    /// `OUTBOX_TARGET_QUEUE_URL` and `OUTBOX_ON_FAILURE_QUEUE_URL`, and
    /// `aws` (the AWS variables the stack was made with: region and
    /// endpoints) so that later commands reach the same services.
    pub fn env_lines(&self, aws: &[(&str, String)]) -> String {
        let stack = [
            ("OUTBOX_TABLE_NAME", self.table.as_str()),
            ("OUTBOX_EVENT_BUS_NAME", self.bus.bus.as_str()),
            ("OUTBOX_QUARANTINE_QUEUE_URL", self.quarantine.url.as_str()),
            ("OUTBOX_ON_FAILURE_QUEUE_URL", self.on_failure.url.as_str()),
            ("OUTBOX_TARGET_QUEUE_URL", self.bus.target.url.as_str()),
            ("OUTBOX_CLAIM_CHECK_BUCKET", self.claim_checks.as_str()),
        ];
        aws.iter()
            .map(|(name, value)| (*name, value.as_str()))
            .chain(stack)
            .map(|(name, value)| format!("export {name}={}\n", shell_quote(value)))
            .collect()
    }
}

/// `value` in single quotes, for a POSIX shell.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The AWS variables that say where the services are (region, endpoints,
/// profile), as set in this process: what `outbox bootstrap` passes on.
pub fn aws_location_variables() -> Vec<(&'static str, String)> {
    const NAMES: [&str; 8] = [
        "AWS_REGION",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_DYNAMODB_STREAMS",
        "AWS_ENDPOINT_URL_EVENTBRIDGE",
        "AWS_ENDPOINT_URL_SQS",
        "AWS_ENDPOINT_URL_S3",
    ];
    NAMES
        .into_iter()
        .filter_map(|name| std::env::var(name).ok().map(|value| (name, value)))
        .collect()
}

/// Creates the local resources of one relay, all named after `prefix`: the
/// outbox table, a bus with a rule sending events of `source` to a target
/// queue, the quarantine queue, the on-failure queue and the claim-check
/// bucket.
pub async fn create_local_stack(
    dynamodb: &Client,
    eventbridge: &aws_sdk_eventbridge::Client,
    sqs: &aws_sdk_sqs::Client,
    s3: &aws_sdk_s3::Client,
    prefix: &str,
    source: &str,
) -> Result<LocalStack, BootstrapError> {
    let table = format!("{prefix}-outbox");
    create_outbox_table(dynamodb, &table).await?;
    let bus = create_bus_with_queue_target(eventbridge, sqs, &format!("{prefix}-bus"), source).await?;
    let quarantine = create_queue(sqs, &format!("{prefix}-quarantine")).await?;
    let on_failure = create_queue(sqs, &format!("{prefix}-on-failure")).await?;
    let claim_checks = create_bucket(s3, &format!("{prefix}-claim-checks")).await?;
    Ok(LocalStack {
        table,
        bus,
        quarantine,
        on_failure,
        claim_checks,
    })
}

/// Creates an S3 bucket named after `name` (lower-cased and cut to the 63
/// characters S3 allows) in the client's region, or finds it is already
/// this account's; returns its name.
pub async fn create_bucket(s3: &aws_sdk_s3::Client, name: &str) -> Result<String, BootstrapError> {
    use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
    let mut bucket: String = name.to_lowercase().chars().take(63).collect();
    while bucket.ends_with('-') {
        bucket.pop();
    }
    let mut request = s3.create_bucket().bucket(&bucket);
    // us-east-1 is the one region that takes no location constraint.
    if let Some(region) = s3.config().region().map(|r| r.as_ref().to_owned())
        && region != "us-east-1"
    {
        request = request.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region.as_str()))
                .build(),
        );
    }
    match request.send().await {
        Ok(_) => Ok(bucket),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_bucket_already_owned_by_you()) =>
        {
            Ok(bucket)
        }
        Err(err) => Err(failed(format!("CreateBucket {bucket}"))(err)),
    }
}
