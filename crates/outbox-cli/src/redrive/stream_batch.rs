//! The Lambda event source mapping's on-failure messages. They name a
//! batch (its stream, shard and sequence-number range), not its records:
//! the records are read back from the stream while it still holds them.

use std::cmp::Ordering;

use aws_sdk_dynamodbstreams::error::DisplayErrorContext;
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use outbox_core::{Decoded, OutboxEvent};
use outbox_dynamodb_relay::{DynamoDbStreamDecoder, compare_sequence_numbers};
use serde::Deserialize;

/// Most `GetRecords` pages read for one batch without reaching its end: a
/// batch is at most 10,000 records, and an open shard answers empty pages
/// until records arrive.
const MAX_PAGES: usize = 64;

/// The part of an on-failure message of a DynamoDB Streams event source
/// mapping that names the batch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct StreamBatchMessage {
    /// The batch.
    #[serde(rename = "DDBStreamBatchInfo")]
    pub batch: StreamBatch,
}

/// A batch of a DynamoDB stream, as the on-failure message names it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamBatch {
    /// The stream.
    pub stream_arn: String,
    /// The shard.
    pub shard_id: String,
    /// The first record's sequence number.
    pub start_sequence_number: String,
    /// The last record's sequence number.
    pub end_sequence_number: String,
    /// When the first record reached the stream (about).
    #[serde(default)]
    pub approximate_arrival_of_first_record: Option<String>,
    /// When the last record reached the stream (about).
    #[serde(default)]
    pub approximate_arrival_of_last_record: Option<String>,
}

impl StreamBatch {
    /// The batch a message body names, if it is an on-failure message.
    pub fn from_body(body: &str) -> Option<Self> {
        serde_json::from_str::<StreamBatchMessage>(body)
            .ok()
            .map(|m| m.batch)
    }

    /// How to recover the batch's events once the stream no longer holds
    /// them: replaying the table over the batch's arrival times.
    fn replay_hint(&self) -> String {
        match (
            &self.approximate_arrival_of_first_record,
            &self.approximate_arrival_of_last_record,
        ) {
            (Some(first), Some(last)) => format!(
                "republish its events from the table with `outbox replay --from {first} --to {last}` \
                 (widen the window by the time between commit and arrival)"
            ),
            _ => {
                "republish its events from the table with `outbox replay` over the batch's time window".into()
            }
        }
    }
}

/// What the stream still holds of a batch.
#[derive(Debug, Default)]
pub struct BatchRecords {
    /// Its outbox events, in stream order.
    pub events: Vec<OutboxEvent>,
    /// Records that are not outbox inserts.
    pub skipped: usize,
    /// Poison records (the relay quarantined them when it met them).
    pub poison: usize,
}

/// Reads `batch` back from the stream with `streams`, decoding it with
/// `decoder`. `Err`: why it cannot be, and what to do instead.
pub async fn read_batch(
    streams: &aws_sdk_dynamodbstreams::Client,
    decoder: &DynamoDbStreamDecoder,
    batch: &StreamBatch,
) -> Result<BatchRecords, String> {
    let gone = |why: String| format!("{why}; {}", batch.replay_hint());
    let mut iterator = streams
        .get_shard_iterator()
        .stream_arn(&batch.stream_arn)
        .shard_id(&batch.shard_id)
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .sequence_number(&batch.start_sequence_number)
        .send()
        .await
        .map_err(|e| {
            gone(format!(
                "the stream no longer holds the batch ({})",
                DisplayErrorContext(&e)
            ))
        })?
        .shard_iterator;
    let mut records = BatchRecords::default();
    for _ in 0..MAX_PAGES {
        let Some(current) = iterator.take() else { break };
        let page = streams
            .get_records()
            .shard_iterator(current)
            .send()
            .await
            .map_err(|e| gone(format!("reading the batch failed ({})", DisplayErrorContext(&e))))?;
        for record in page.records() {
            let sequence = record
                .dynamodb()
                .and_then(|d| d.sequence_number())
                .unwrap_or_default();
            if compare_sequence_numbers(sequence, &batch.end_sequence_number) == Ordering::Greater {
                return Ok(records);
            }
            match decoder.decode_stream_record(record).map(|r| r.decoded) {
                Ok(Decoded::Event(event)) => records.events.push(*event),
                Ok(Decoded::Skip(_)) => records.skipped += 1,
                Ok(Decoded::Poison { .. }) | Err(_) => records.poison += 1,
            }
            if sequence == batch.end_sequence_number {
                return Ok(records);
            }
        }
        iterator = page.next_shard_iterator;
    }
    Err(gone(format!(
        "the stream did not reach the batch's last record {}",
        batch.end_sequence_number
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_on_failure_message_names_its_batch() {
        let body = r#"{
            "requestContext": {"requestId": "r", "functionArn": "arn:aws:lambda:eu-west-1:1:function:f",
                               "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 11},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": null},
            "version": "1.0", "timestamp": "2026-12-06T05:00:00.000Z",
            "DDBStreamBatchInfo": {
                "shardId": "shardId-0001", "startSequenceNumber": "100", "endSequenceNumber": "900",
                "approximateArrivalOfFirstRecord": "2026-12-06T04:59:00Z",
                "approximateArrivalOfLastRecord": "2026-12-06T04:59:01Z",
                "batchSize": 3, "streamArn": "arn:aws:dynamodb:eu-west-1:1:table/orders/stream/x"
            }
        }"#;
        let batch = StreamBatch::from_body(body).unwrap();
        assert_eq!(
            (
                batch.shard_id.as_str(),
                batch.start_sequence_number.as_str(),
                batch.end_sequence_number.as_str()
            ),
            ("shardId-0001", "100", "900")
        );
        assert!(
            batch
                .replay_hint()
                .contains("--from 2026-12-06T04:59:00Z --to 2026-12-06T04:59:01Z")
        );
        assert_eq!(StreamBatch::from_body(r#"{"reason":"x","position":"1"}"#), None);
    }
}
