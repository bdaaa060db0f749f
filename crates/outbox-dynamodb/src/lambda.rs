//! Lambda's DynamoDB Streams event, read without materialising it.
//!
//! The event source mapping hands the function up to 6 MB of JSON. Parsing
//! all of it into `aws_lambda_events` structures (a `HashMap` per image, a
//! `String` per attribute name and value) costs about three bytes of heap per
//! byte of JSON and most of the decoder's time. [`LambdaStreamBatch`] keeps
//! each record as its JSON text instead; the decoder reads from that text
//! only what it needs, through borrowed views, one record at a time, freeing
//! each once decoded, so the event is never held as a tree of values. A
//! record that cannot be read becomes a poison record carrying exactly the
//! bytes Lambda sent, instead of failing the whole invocation in the
//! runtime's parser.

use std::borrow::Cow;
use std::fmt;

use aws_lambda_events::event::dynamodb::{Event as LambdaEvent, EventRecord as LambdaRecord};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_dynamo::AttributeValue as LambdaValue;
use serde_json::value::RawValue;

use crate::{DecodeError, Item};

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

/// A string of the event, borrowed from the text unless it had escapes.
#[derive(Debug)]
pub(crate) struct Text<'a>(Cow<'a, str>);

impl Text<'_> {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// One record of the event: the fields the decoder reads; the others
/// (`eventSourceARN`, `awsRegion`, ...) are skipped unread. `N` is how the
/// new image is read: [`TypedImage`] (every value parsed in the same pass,
/// the fast path) or [`ImageView`] (each value kept as text and parsed only
/// when needed, so that a bad value is an error naming its attribute).
#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "N: Deserialize<'de>"))]
pub(crate) struct RecordView<'a, N> {
    #[serde(rename = "eventID", default, borrow)]
    pub(crate) event_id: Option<Text<'a>>,
    #[serde(rename = "eventName", default, borrow)]
    pub(crate) event_name: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) dynamodb: Option<ChangeView<'a, N>>,
    #[serde(rename = "userIdentity", default, borrow)]
    pub(crate) user_identity: Option<IdentityView<'a>>,
}

/// The record's `dynamodb` object.
#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "N: Deserialize<'de>"))]
pub(crate) struct ChangeView<'a, N> {
    #[serde(rename = "SequenceNumber", default, borrow)]
    pub(crate) sequence_number: Option<Text<'a>>,
    #[serde(rename = "Keys", default, borrow)]
    pub(crate) keys: Option<ImageView<'a>>,
    #[serde(rename = "NewImage", default)]
    pub(crate) new_image: Option<N>,
    #[serde(rename = "OldImage", default, borrow)]
    pub(crate) old_image: Option<ImageView<'a>>,
}

/// What the decoder asks of a new image, however it was read.
pub(crate) trait NewImage {
    fn is_empty(&self) -> bool;
    fn contains(&self, name: &str) -> bool;
    /// The attributes `names` as a DynamoDB SDK item, taken out of the
    /// image where that saves a copy (the decoder asks for them last).
    fn to_item(&mut self, names: &[&str]) -> Result<Item, DecodeError>;
}

/// A new image read in one pass, every value parsed as DynamoDB JSON. A
/// value that is not (or that nests past serde_json's recursion limit) fails
/// the whole record's parse; the decoder then reads the record again with
/// [`ImageView`], which names the attribute, or ignores it when it is not
/// one of the schema's.
///
/// [`to_item`](NewImage::to_item) moves the attributes it returns out of
/// the image: no copy of the payload's text.
#[derive(Debug, Default)]
pub(crate) struct TypedImage(Vec<(String, LambdaValue)>);

impl NewImage for TypedImage {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    fn to_item(&mut self, names: &[&str]) -> Result<Item, DecodeError> {
        let mut item = Item::with_capacity(names.len());
        for (name, value) in self.0.iter_mut().filter(|(n, _)| names.contains(&n.as_str())) {
            // A name given twice: the last wins, as in any JSON object read into a map.
            let value = std::mem::replace(value, LambdaValue::Null(true));
            item.insert(std::mem::take(name), crate::stream::lambda_to_value(value));
        }
        Ok(item)
    }
}

impl<'de> Deserialize<'de> for TypedImage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TypedVisitor;
        impl<'de> Visitor<'de> for TypedVisitor {
            type Value = TypedImage;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of attribute names to DynamoDB attribute values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut attributes = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(entry) = map.next_entry::<String, LambdaValue>()? {
                    attributes.push(entry);
                }
                Ok(TypedImage(attributes))
            }
        }
        deserializer.deserialize_map(TypedVisitor)
    }
}

/// The record's `userIdentity` (set on TTL deletions).
#[derive(Debug, Deserialize)]
pub(crate) struct IdentityView<'a> {
    #[serde(rename = "type", default, borrow)]
    pub(crate) type_: Option<Text<'a>>,
    #[serde(rename = "principalId", default, borrow)]
    pub(crate) principal_id: Option<Text<'a>>,
}

/// Just the position of a record, for one that does not read as a record.
#[derive(Debug, Deserialize)]
pub(crate) struct PositionView<'a> {
    #[serde(rename = "eventID", default, borrow)]
    pub(crate) event_id: Option<RawText<'a>>,
    #[serde(default, borrow)]
    pub(crate) dynamodb: Option<PositionChangeView<'a>>,
}

/// The `dynamodb` object of [`PositionView`].
#[derive(Debug, Deserialize)]
pub(crate) struct PositionChangeView<'a> {
    #[serde(rename = "SequenceNumber", default, borrow)]
    pub(crate) sequence_number: Option<RawText<'a>>,
}

/// Any JSON value, as a string when it is one.
#[derive(Debug)]
pub(crate) struct RawText<'a>(Option<Text<'a>>);

impl RawText<'_> {
    pub(crate) fn as_str(&self) -> Option<&str> {
        self.0.as_ref().map(Text::as_str)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawText<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&'a RawValue>::deserialize(deserializer)?;
        Ok(Self(serde_json::from_str::<Text<'a>>(raw.get()).ok()))
    }
}

/// An image (`Keys`, `NewImage`, `OldImage`): its attributes in order, each
/// value kept as its DynamoDB JSON text until it is read.
#[derive(Debug, Default)]
pub(crate) struct ImageView<'a>(Vec<(Text<'a>, &'a RawValue)>);

impl<'a> ImageView<'a> {
    pub(crate) fn get(&self, name: &str) -> Option<&'a RawValue> {
        // A name given twice: the last, as in any JSON object read into a map.
        self.0.iter().rfind(|(n, _)| n.as_str() == name).map(|(_, v)| *v)
    }

    /// The string value of `name`, if it is an `S`.
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        match serde_json::from_str::<LambdaValue>(self.get(name)?.get()).ok()? {
            LambdaValue::S(s) => Some(s),
            _ => None,
        }
    }
}

impl NewImage for ImageView<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The attributes `names` (the others are not read at all); an attribute
    /// whose value is not DynamoDB JSON is an error naming it.
    fn to_item(&mut self, names: &[&str]) -> Result<Item, DecodeError> {
        let mut item = Item::with_capacity(names.len());
        for (name, value) in self.0.iter().filter(|(n, _)| names.contains(&n.as_str())) {
            let value =
                serde_json::from_str::<LambdaValue>(value.get()).map_err(|e| DecodeError::InvalidValue {
                    name: name.as_str().to_owned(),
                    reason: format!("not a DynamoDB attribute value: {e}"),
                })?;
            item.insert(name.as_str().to_owned(), crate::stream::lambda_to_value(value));
        }
        Ok(item)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ImageView<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ImageVisitor;
        impl<'de> Visitor<'de> for ImageVisitor {
            type Value = ImageView<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of attribute names to DynamoDB attribute values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut attributes = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((name, value)) = map.next_entry::<Text<'de>, &'de RawValue>()? {
                    attributes.push((name, value));
                }
                Ok(ImageView(attributes))
            }
        }
        deserializer.deserialize_map(ImageVisitor)
    }
}
