//! Lambda's DynamoDB Streams event, its records kept as JSON text until
//! each is decoded.
//!
//! The event source mapping hands the function up to 6 MB of JSON. Parsed
//! all at once into `aws_lambda_events` structures (a `HashMap` per image, a
//! `String` per attribute name and value), it takes about three times that
//! in heap. [`LambdaStreamBatch`] keeps each record as its JSON text
//! ([`RawValue`]); the decoder parses one record at a time and frees it once
//! decoded. A record that cannot be read becomes a poison record carrying
//! exactly the bytes Lambda sent, instead of failing the whole invocation in
//! the runtime's parser.

use aws_lambda_events::event::dynamodb::{Event as LambdaEvent, EventRecord as LambdaRecord};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Lambda's DynamoDB Streams event (`{"Records": [...]}`), each record kept
/// as its JSON text until [`DynamoDbStreamDecoder::decode_lambda_batch`]
/// decodes it. It is the Lambda handler's input type: the runtime's parse
/// only splits the records.
///
/// [`DynamoDbStreamDecoder::decode_lambda_batch`]: crate::DynamoDbStreamDecoder::decode_lambda_batch
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct LambdaStreamBatch {
    #[serde(rename = "Records")]
    records: Vec<Box<RawValue>>,
}

impl LambdaStreamBatch {
    /// Parses an event from JSON text. Only the outer shape is checked here
    /// (an object whose `Records` is an array of JSON values); what is in
    /// each record is the decoder's business.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The same batch from an already parsed `aws_lambda_events` event.
    pub fn from_event(event: &LambdaEvent) -> Self {
        Self {
            records: event.records.iter().map(record_text).collect(),
        }
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the batch has no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Each record's JSON text, in order.
    pub fn records(&self) -> impl ExactSizeIterator<Item = &str> {
        self.records.iter().map(|r| r.get())
    }

    pub(crate) fn into_records(self) -> Vec<Box<RawValue>> {
        self.records
    }
}

/// One `aws_lambda_events` record as JSON text.
pub(crate) fn record_text(record: &LambdaRecord) -> Box<RawValue> {
    serde_json::value::to_raw_value(record).unwrap_or_else(|e| {
        // Not expected: the record was parsed from JSON. Keep what identifies it.
        let fallback = serde_json::json!({
            "eventID": record.event_id,
            "eventName": record.event_name,
            "dynamodb": { "SequenceNumber": record.change.sequence_number },
            "unserializable": e.to_string(),
        });
        serde_json::value::to_raw_value(&fallback).unwrap_or_else(|_| RawValue::NULL.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_kept_as_their_text() {
        let batch = LambdaStreamBatch::from_json(r#"{"Records": [{"a": 1}, [2], "x"]}"#).unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(
            batch.records().collect::<Vec<_>>(),
            [r#"{"a": 1}"#, "[2]", r#""x""#]
        );
        assert!(LambdaStreamBatch::from_json(r#"{"Records": {}}"#).is_err());
    }
}
