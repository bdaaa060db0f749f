//! The DynamoDB Streams record decoder: step 1 of the relay ("Decode") for
//! both DynamoDB hosts, the Lambda function (the event source mapping's
//! DynamoDB Streams event) and the standalone runner (records read with the
//! DynamoDB Streams API, `GetRecords`). Both sources are read by serde into
//! `aws_lambda_events`' record type and go through the same rules and
//! through [`OutboxSchema::decode_item`].

use aws_lambda_events::event::dynamodb::{
    Event as LambdaEvent, EventRecord as LambdaRecord, StreamRecord as LambdaChange, UserIdentity,
};
use aws_sdk_dynamodbstreams::types::{Record as StreamsRecord, StreamViewType};
use chrono::DateTime;
use outbox_core::{Decoded, RelayRecord, SkipReason};
use serde::Deserialize;

use outbox_dynamodb::{Item, OutboxSchema};

use crate::LambdaStreamBatch;

/// The sort key prefix of outbox items (the same as the writer's, see
/// [`OutboxSchema::sort_value`]).
const OUTBOX_SORT_KEY_PREFIX: &str = "OUTBOX#";

/// The user identity DynamoDB puts on the `REMOVE` records of TTL expiry
/// ("Time to Live and DynamoDB Streams": `userIdentity.type` is `Service`,
/// `userIdentity.principalId` is `dynamodb.amazonaws.com`).
const TTL_IDENTITY_TYPE: &str = "Service";
const TTL_IDENTITY_PRINCIPAL: &str = "dynamodb.amazonaws.com";

/// A problem with a whole batch, never with one record: the stream is not
/// configured the way the relay needs it. Per-record problems are
/// [`Decoded::Poison`] or [`Decoded::Skip`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// A record has no `dynamodb.SequenceNumber`: its position cannot be
    /// reported in `batchItemFailures` nor checkpointed.
    #[error("stream record {} has no SequenceNumber", event_id.as_deref().unwrap_or("without eventID"))]
    MissingSequenceNumber {
        /// The record's `eventID`, if it has one.
        event_id: Option<String>,
    },
    /// An `INSERT` without `NewImage`: the stream view type must include new
    /// images (`NEW_IMAGE` or `NEW_AND_OLD_IMAGES`).
    #[error(
        "INSERT record {position} has no NewImage; the stream view type must be NEW_IMAGE or NEW_AND_OLD_IMAGES"
    )]
    MissingNewImage {
        /// The record's sequence number.
        position: String,
    },
}

/// Decodes DynamoDB Streams records (from Lambda or from the Streams API)
/// into [`RelayRecord`]s for the relay, with an [`OutboxSchema`].
///
/// | record | decoded |
/// |---|---|
/// | `INSERT` whose `NewImage` carries the marker | [`Decoded::Event`], or [`Decoded::Poison`] (the reason names the attribute; the raw text is the whole record) |
/// | `INSERT` without the marker | skip: [`SkipReason::NotOutbox`] |
/// | `REMOVE` by TTL (`userIdentity` `Service` / `dynamodb.amazonaws.com`) | skip: [`SkipReason::TtlRemoval`] |
/// | `MODIFY` / `REMOVE` of an outbox item | skip: [`SkipReason::NotInsert`] |
/// | `MODIFY` / `REMOVE` of another item | skip: [`SkipReason::NotOutbox`] |
/// | any other event name (DynamoDB Local's `UNKNOWN_TO_SDK_VERSION` for TTL deletes) | skip: [`SkipReason::UnknownEventName`] |
///
/// A change is "of an outbox item" when its `NewImage` or `OldImage` carries
/// the marker, or when its sort key (in `Keys`) starts with `OUTBOX#`, which
/// also works with a `KEYS_ONLY` stream.
///
/// Every record becomes exactly one [`RelayRecord`] whose position is its
/// `SequenceNumber`; only a configuration problem (a record without
/// `SequenceNumber`, an `INSERT` without `NewImage`) is an [`Err`]
/// ([`StreamError`]), for the whole batch.
///
/// ```no_run
/// use outbox_dynamodb::OutboxSchema;
/// use outbox_dynamodb_relay::DynamoDbStreamDecoder;
///
/// # fn example(event: aws_lambda_events::event::dynamodb::Event) -> Result<(), outbox_dynamodb_relay::StreamError> {
/// let decoder = DynamoDbStreamDecoder::new(OutboxSchema::new("orders"));
/// let records = decoder.decode_lambda_event(&event)?;
/// assert_eq!(records.len(), event.records.len()); // one per stream record, in order
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoDbStreamDecoder {
    schema: OutboxSchema,
}

impl DynamoDbStreamDecoder {
    /// A decoder for outbox items stored with `schema`.
    pub fn new(schema: OutboxSchema) -> Self {
        Self { schema }
    }

    /// The outbox item schema.
    pub fn schema(&self) -> &OutboxSchema {
        &self.schema
    }

    /// Decodes every record of Lambda's DynamoDB Streams event, in order.
    pub fn decode_lambda_batch(&self, batch: LambdaStreamBatch) -> Result<Vec<RelayRecord>, StreamError> {
        self.decode_lambda_each(batch).collect()
    }

    /// Decodes the records of `batch` one at a time, in order, as the
    /// iterator is read: what [`Relay::relay_each`](outbox_core::Relay::relay_each)
    /// takes, so that the first chunks are published while the rest is still
    /// being decoded. Each record's text is freed once it is decoded.
    pub fn decode_lambda_each(
        &self,
        batch: LambdaStreamBatch,
    ) -> impl ExactSizeIterator<Item = Result<RelayRecord, StreamError>> + '_ {
        batch
            .into_records()
            .into_iter()
            .map(|record| self.decode_lambda_json(record.get()))
    }

    /// Decodes one record of Lambda's DynamoDB Streams event from its JSON
    /// text. A record that does not read as a stream record (a field of the
    /// wrong type, an attribute value that is not DynamoDB JSON) is poison
    /// with exactly this text, as long as it has a `SequenceNumber`.
    pub fn decode_lambda_json(&self, record: &str) -> Result<RelayRecord, StreamError> {
        match serde_json::from_str::<LambdaRecord>(record) {
            Ok(parsed) => decode(&self.schema, parsed, Raw::Text(record)),
            Err(error) => unreadable_lambda_record(record, &error),
        }
    }

    /// Decodes every record of an already parsed `aws_lambda_events` event,
    /// in order.
    pub fn decode_lambda_event(&self, event: &LambdaEvent) -> Result<Vec<RelayRecord>, StreamError> {
        event
            .records
            .iter()
            .map(|record| self.decode_lambda_record(record))
            .collect()
    }

    /// Decodes one record of an already parsed `aws_lambda_events` event.
    pub fn decode_lambda_record(&self, record: &LambdaRecord) -> Result<RelayRecord, StreamError> {
        self.decode_owned(record.clone())
    }

    /// Decodes one record read with the DynamoDB Streams API (`GetRecords`),
    /// as the standalone runner does: the record is first put in the shape
    /// Lambda delivers, so both hosts decode (and quarantine) the same way.
    pub fn decode_stream_record(&self, record: &StreamsRecord) -> Result<RelayRecord, StreamError> {
        self.decode_owned(lambda_record(record))
    }

    fn decode_owned(&self, record: LambdaRecord) -> Result<RelayRecord, StreamError> {
        decode(&self.schema, record, Raw::Record)
    }
}

/// Where a poison record's full text comes from.
enum Raw<'a> {
    /// The text the record was parsed from.
    Text(&'a str),
    /// The record, written back as JSON.
    Record,
}

/// Sorts one record: an event, a skip, poison; or a batch error when the
/// record cannot be positioned or the stream has no new images.
fn decode(schema: &OutboxSchema, mut record: LambdaRecord, raw: Raw<'_>) -> Result<RelayRecord, StreamError> {
    let position = match record.change.sequence_number.take() {
        Some(position) if !position.is_empty() => position,
        _ => {
            return Err(StreamError::MissingSequenceNumber {
                event_id: Some(record.event_id).filter(|id| !id.is_empty()),
            });
        }
    };
    let marker = schema.marker_attribute();
    let change = &record.change;
    let decoded = match record.event_name.as_str() {
        "INSERT" if change.new_image.is_empty() => {
            return Err(StreamError::MissingNewImage { position });
        }
        "INSERT" if change.new_image.contains_key(marker) => {
            let item: Item = std::mem::take(&mut record.change.new_image).into();
            let decoded = match raw {
                // The item is not needed again: its strings move into the event.
                Raw::Text(text) => schema.decode_item_owned(item).map_err(|e| (e, text.to_owned())),
                Raw::Record => schema.decode_item(&item).map_err(|e| {
                    record.change.new_image = item.into();
                    record.change.sequence_number = Some(position.clone());
                    (e, serde_json::to_string(&record).unwrap_or_default())
                }),
            };
            match decoded {
                Ok(event) => Decoded::Event(Box::new(event)),
                Err((error, raw)) => Decoded::Poison {
                    reason: error.to_string(),
                    raw,
                },
            }
        }
        "INSERT" => Decoded::Skip(SkipReason::NotOutbox),
        "REMOVE" if removed_by_ttl(record.user_identity.as_ref()) => Decoded::Skip(SkipReason::TtlRemoval),
        event_name @ ("MODIFY" | "REMOVE") => {
            let outbox = change.new_image.contains_key(marker)
                || change.old_image.contains_key(marker)
                || matches!(
                    change.keys.get(schema.sort_key()),
                    Some(serde_dynamo::AttributeValue::S(sk)) if sk.starts_with(OUTBOX_SORT_KEY_PREFIX)
                );
            if outbox {
                Decoded::Skip(SkipReason::NotInsert {
                    event_name: event_name.to_owned(),
                })
            } else {
                Decoded::Skip(SkipReason::NotOutbox)
            }
        }
        event_name => Decoded::Skip(SkipReason::UnknownEventName {
            event_name: event_name.to_owned(),
        }),
    };
    Ok(RelayRecord { position, decoded })
}

fn removed_by_ttl(who: Option<&UserIdentity>) -> bool {
    who.is_some_and(|who| who.type_ == TTL_IDENTITY_TYPE && who.principal_id == TTL_IDENTITY_PRINCIPAL)
}

/// What can still be read of a record that does not read as a stream record.
#[derive(Deserialize)]
struct Position {
    #[serde(rename = "eventID")]
    event_id: Option<String>,
    dynamodb: Option<PositionChange>,
}

#[derive(Deserialize)]
struct PositionChange {
    #[serde(rename = "SequenceNumber")]
    sequence_number: Option<String>,
}

/// A Lambda record that does not read as a DynamoDB Streams record: poison
/// with its text when it has a position, a batch error when it has none.
fn unreadable_lambda_record(text: &str, error: &serde_json::Error) -> Result<RelayRecord, StreamError> {
    let view = serde_json::from_str::<Position>(text).ok();
    let position = view
        .as_ref()
        .and_then(|v| v.dynamodb.as_ref())
        .and_then(|c| c.sequence_number.as_deref())
        .filter(|p| !p.is_empty());
    match position {
        Some(position) => Ok(RelayRecord {
            position: position.to_owned(),
            decoded: Decoded::Poison {
                reason: format!("not a DynamoDB Streams record: {error}"),
                raw: text.to_owned(),
            },
        }),
        None => Err(StreamError::MissingSequenceNumber {
            event_id: view.and_then(|v| v.event_id),
        }),
    }
}

/// A Streams API record as `aws_lambda_events` types it: the images are
/// converted by serde_dynamo, the rest copied.
pub(crate) fn lambda_record(record: &StreamsRecord) -> LambdaRecord {
    let mut out = LambdaRecord::default();
    out.event_id = record.event_id().unwrap_or_default().to_owned();
    out.event_name = record
        .event_name()
        .map(|name| name.as_str().to_owned())
        .unwrap_or_default();
    out.event_version = record.event_version().map(str::to_owned);
    out.event_source = record.event_source().map(str::to_owned);
    out.aws_region = record.aws_region().unwrap_or_default().to_owned();
    out.user_identity = record.user_identity().map(|who| {
        let mut identity = UserIdentity::default();
        identity.type_ = who.r#type().unwrap_or_default().to_owned();
        identity.principal_id = who.principal_id().unwrap_or_default().to_owned();
        identity
    });
    if let Some(change) = record.dynamodb() {
        let mut lambda = LambdaChange::default();
        if let Some(at) = change.approximate_creation_date_time() {
            lambda.approximate_creation_date_time =
                DateTime::from_timestamp(at.secs(), at.subsec_nanos()).unwrap_or_default();
        }
        let image = |image: Option<&std::collections::HashMap<String, _>>| {
            image.cloned().map(serde_dynamo::Item::from).unwrap_or_default()
        };
        lambda.keys = image(change.keys());
        lambda.new_image = image(change.new_image());
        lambda.old_image = image(change.old_image());
        lambda.sequence_number = change.sequence_number().map(str::to_owned);
        lambda.size_bytes = change.size_bytes().unwrap_or_default();
        lambda.stream_view_type = change.stream_view_type().and_then(view_type);
        out.change = lambda;
    }
    out
}

fn view_type(view: &StreamViewType) -> Option<aws_lambda_events::event::dynamodb::StreamViewType> {
    serde_json::from_value(serde_json::Value::from(view.as_str())).ok()
}

#[cfg(test)]
mod tests;
