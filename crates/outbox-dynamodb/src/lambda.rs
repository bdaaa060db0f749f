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
use std::marker::PhantomData;

use aws_lambda_events::event::dynamodb::{Event as LambdaEvent, EventRecord as LambdaRecord};
use serde::de::{self, Error as _, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_dynamo::AttributeValue as LambdaValue;
use serde_json::value::RawValue;
use smallvec::SmallVec;

use crate::item::{EVENT_ATTRIBUTES, MARKER_VALUE, OutboxFields};
use crate::{DecodeError, Item, OutboxSchema};
use outbox_core::OutboxEvent;

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

impl<'a> Text<'a> {
    /// A string of the event that had no escapes.
    pub(crate) fn borrowed(text: &'a str) -> Self {
        Self(Cow::Borrowed(text))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    fn into_string(self) -> String {
        self.0.into_owned()
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
/// new image is read, in the order the decoder tries them: [`OutboxImage`]
/// (straight into the outbox schema's attributes, the fast path),
/// [`TypedImage`] (every value parsed as DynamoDB JSON in the same pass) or
/// [`ImageView`] (each value kept as text and parsed only when needed, so
/// that a bad value is an error naming its attribute).
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
    /// Read only for the changes that are not inserts (see `string_key`).
    pub(crate) keys: Option<&'a RawValue>,
    #[serde(rename = "NewImage", default)]
    pub(crate) new_image: Option<N>,
    #[serde(rename = "OldImage", default, borrow)]
    pub(crate) old_image: Option<ImageView<'a>>,
}

/// What the decoder asks of a new image, however it was read.
pub(crate) trait NewImage {
    fn is_empty(&self) -> bool;
    fn contains(&self, name: &str) -> bool;
    /// The outbox event this image holds ([`OutboxSchema::decode_item`] on
    /// the schema's attributes), or `None` when the record is to be read
    /// again the general way, which knows better. Asked for last: it may
    /// take the attributes out of the image.
    fn to_event(&mut self, schema: &OutboxSchema) -> Option<Result<OutboxEvent, DecodeError>>;
}

/// The event of an image read as an SDK item (the general readings).
fn item_event(
    item: Result<Item, DecodeError>,
    schema: &OutboxSchema,
) -> Option<Result<OutboxEvent, DecodeError>> {
    Some(item.and_then(|item| schema.decode_item_owned(item)))
}

/// Reads a DynamoDB attribute value (`{"<type>": value}`, one type) with
/// `read`, given the type's name; a value without a type or with two is an
/// error.
fn one_typed<'de, A: MapAccess<'de>, T>(
    mut map: A,
    read: impl FnOnce(&str, &mut A) -> Result<T, A::Error>,
) -> Result<T, A::Error> {
    let Some(tag) = map.next_key::<Text<'de>>()? else {
        return Err(A::Error::custom("an attribute value without a type"));
    };
    let value = read(tag.as_str(), &mut map)?;
    match map.next_key::<de::IgnoredAny>()? {
        None => Ok(value),
        Some(_) => Err(A::Error::custom("an attribute value with two types")),
    }
}

/// A DynamoDB attribute value of one of the types the outbox schema uses,
/// its texts borrowed from the event where they had no escapes. Any other
/// type (or a map that is not of strings) fails the parse.
#[derive(Debug)]
pub(crate) enum SchemaValue<'a> {
    S(Text<'a>),
    N(Text<'a>),
    /// A `NULL` (its value a boolean, as DynamoDB JSON has it).
    Null,
    /// A map of strings (the metadata).
    M(Vec<(Text<'a>, Text<'a>)>),
}

impl<'de: 'a, 'a> Deserialize<'de> for SchemaValue<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = SchemaValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a DynamoDB attribute value of type S, N, NULL or M of S")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                one_typed(map, |tag, map| match tag {
                    "S" => Ok(SchemaValue::S(map.next_value()?)),
                    "N" => Ok(SchemaValue::N(map.next_value()?)),
                    "NULL" => map.next_value::<bool>().map(|_| SchemaValue::Null),
                    "M" => Ok(SchemaValue::M(map.next_value::<StringMap<'de>>()?.0)),
                    other => Err(A::Error::custom(format_args!("type {other} is not read here"))),
                })
            }
        }
        deserializer.deserialize_map(ValueVisitor)
    }
}

/// The inside of an `M` whose values are all `S`.
struct StringMap<'a>(Vec<(Text<'a>, Text<'a>)>);

impl<'de: 'a, 'a> Deserialize<'de> for StringMap<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor;
        impl<'de> Visitor<'de> for MapVisitor {
            type Value = StringMap<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of names to S attribute values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some((name, value)) = map.next_entry::<Text<'de>, SchemaValue<'de>>()? {
                    match value {
                        SchemaValue::S(text) => entries.push((name, text)),
                        _ => return Err(A::Error::custom("a map value that is not an S")),
                    }
                }
                Ok(StringMap(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor)
    }
}

/// An `S` attribute value whose string is kept as its JSON literal.
struct LiteralS<'a>(&'a RawValue);

impl<'de: 'a, 'a> Deserialize<'de> for LiteralS<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LiteralVisitor;
        impl<'de> Visitor<'de> for LiteralVisitor {
            type Value = LiteralS<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an S attribute value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                one_typed(map, |tag, map| {
                    if tag != "S" {
                        return Err(A::Error::custom("not an S"));
                    }
                    let literal: &'de RawValue = map.next_value()?;
                    if !literal.get().starts_with('"') {
                        return Err(A::Error::custom("an S that is not a string"));
                    }
                    Ok(LiteralS(literal))
                })
            }
        }
        deserializer.deserialize_map(LiteralVisitor)
    }
}

/// The place of [`ATTR_PAYLOAD`](crate::ATTR_PAYLOAD) in
/// [`EVENT_ATTRIBUTES`], whose order [`OutboxImage`]'s slots follow
/// (`to_event` takes them apart in it); the payload is kept apart, in
/// [`OutboxImage::payload`], and its slot stays empty.
pub(crate) const PAYLOAD_SLOT: usize = 7;

/// The payload's `S` as the fast readings take it, kept out of the slots:
/// a checked payload is several times the size of the other values, which
/// every slot would then take.
#[derive(Debug)]
pub(crate) enum PayloadValue<'a> {
    /// Its JSON string literal, as serde_json reads it (see
    /// [`Payload::from_json_string`](outbox_core::Payload::from_json_string)).
    Literal(&'a RawValue),
    /// Read and checked by the record's scan ([`crate::scan`]) with
    /// [`Payload::from_json_string_prefix`](outbox_core::Payload::from_json_string_prefix).
    Checked(outbox_core::Payload),
}

/// A new image read in one pass straight into the outbox schema's
/// attributes (the fast path): each of them parsed as [`SchemaValue`], the
/// others (keys, marker, TTL) kept as text. An attribute of the schema of
/// another type fails the parse, and the decoder reads the record again as
/// a [`TypedImage`].
///
/// [`to_event`](NewImage::to_event) makes the event from the slots, moving
/// their texts into it, without building an SDK item, for an outbox item
/// whose marker is `v1` and whose attributes all have their schema's type.
/// For anything else (an attribute missing or mistyped, another marker, a
/// payload that does not unescape) it asks for the record to be read again
/// the general way, whose errors name the attribute.
#[derive(Debug, Default)]
pub(crate) struct OutboxImage<'a> {
    pub(crate) slots: [Option<SchemaValue<'a>>; EVENT_ATTRIBUTES.len()],
    pub(crate) payload: Option<PayloadValue<'a>>,
    /// The other attributes, each value as its JSON text: in place for an
    /// outbox item's usual four (its keys, marker and TTL).
    pub(crate) others: SmallVec<[(Text<'a>, &'a str); 4]>,
}

impl<'a> OutboxImage<'a> {
    fn other(&self, name: &str) -> Option<&'a str> {
        // A name given twice: the last, as in any JSON object read into a map.
        self.others
            .iter()
            .rfind(|(n, _)| n.as_str() == name)
            .map(|(_, v)| *v)
    }

    /// Whether the marker attribute is an `S` of this schema's version.
    fn has_current_marker(&self, schema: &OutboxSchema) -> bool {
        self.other(schema.marker_attribute()).is_some_and(|raw| {
            // As DynamoDB writes it, compared as it is; any other spelling
            // (spaces, escapes) read by serde_json.
            let exact = raw
                .strip_prefix(r#"{"S":""#)
                .and_then(|rest| rest.strip_suffix(r#""}"#));
            exact == Some(MARKER_VALUE)
                || serde_json::from_str::<SchemaValue<'_>>(raw)
                    .is_ok_and(|v| matches!(v, SchemaValue::S(text) if text.as_str() == MARKER_VALUE))
        })
    }
}

impl<'a> NewImage for OutboxImage<'a> {
    fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none) && self.payload.is_none() && self.others.is_empty()
    }

    fn contains(&self, name: &str) -> bool {
        match EVENT_ATTRIBUTES.iter().position(|s| *s == name) {
            Some(PAYLOAD_SLOT) => self.payload.is_some(),
            Some(i) => self.slots[i].is_some(),
            None => self.other(name).is_some(),
        }
    }

    fn to_event(&mut self, schema: &OutboxSchema) -> Option<Result<OutboxEvent, DecodeError>> {
        use SchemaValue::{M, N, Null, S};
        if !self.has_current_marker(schema) {
            return None;
        }
        // Taken whatever comes: when they do not fit, the record is read again.
        let [
            Some(S(id)),
            Some(S(source)),
            Some(S(event_type)),
            Some(S(aggregate_type)),
            Some(S(aggregate_id)),
            Some(N(sequence)),
            Some(S(occurred_at)),
            _payload_slot_kept_empty,
            trace,
            metadata,
        ] = std::mem::take(&mut self.slots)
        else {
            return None;
        };
        let trace_parent = match trace {
            None | Some(Null) => None,
            Some(S(text)) => Some(text.into_string()),
            Some(_) => return None,
        };
        let metadata = match metadata {
            None | Some(Null) => Default::default(),
            Some(M(entries)) => entries
                .into_iter()
                .map(|(k, v)| (k.into_string(), v.into_string()))
                .collect(),
            Some(_) => return None,
        };
        let payload_event = match self.payload.take()? {
            PayloadValue::Checked(payload) => Ok(payload),
            // A payload that is not JSON is the decoder's error to report in
            // its turn; one that does not unescape (a lone surrogate) is for
            // the general reading.
            PayloadValue::Literal(literal) => {
                let payload = outbox_core::Payload::from_json_string(literal.get());
                if payload.is_err() && serde_json::from_str::<String>(literal.get()).is_err() {
                    return None;
                }
                payload
            }
        };
        Some(schema.decode_fields(OutboxFields {
            event_id: id.as_str(),
            source: source.as_str(),
            event_type: event_type.as_str(),
            aggregate_type: aggregate_type.as_str(),
            aggregate_id: aggregate_id.as_str(),
            sequence: sequence.as_str(),
            occurred_at: occurred_at.as_str(),
            payload: payload_event,
            trace_parent,
            metadata,
        }))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for OutboxImage<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Made for `'a` itself: the in-place list of the other attributes
        // does not shorten its lifetime the way a `Vec` would.
        struct OutboxVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for OutboxVisitor<'a> {
            type Value = OutboxImage<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of attribute names to DynamoDB attribute values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut image = OutboxImage::default();
                while let Some(name) = map.next_key::<Text<'de>>()? {
                    match EVENT_ATTRIBUTES.iter().position(|s| *s == name.as_str()) {
                        // A name given twice: the last wins.
                        Some(PAYLOAD_SLOT) => {
                            image.payload = Some(PayloadValue::Literal(map.next_value::<LiteralS<'de>>()?.0));
                        }
                        Some(i) => image.slots[i] = Some(map.next_value()?),
                        None => image
                            .others
                            .push((name, map.next_value::<&'de RawValue>()?.get())),
                    }
                }
                Ok(image)
            }
        }
        deserializer.deserialize_map(OutboxVisitor(PhantomData))
    }
}

/// A new image read in one pass, every value parsed as DynamoDB JSON. A
/// value that is not (or that nests past serde_json's recursion limit) fails
/// the whole record's parse; the decoder then reads the record again with
/// [`ImageView`], which names the attribute, or ignores it when it is not
/// one of the schema's.
///
/// [`to_event`](NewImage::to_event) moves the attributes it reads out of
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

    fn to_event(&mut self, schema: &OutboxSchema) -> Option<Result<OutboxEvent, DecodeError>> {
        item_event(self.take_item(&schema.decoded_attributes()), schema)
    }
}

impl TypedImage {
    /// The attributes `names` as a DynamoDB SDK item, moved out of the image.
    fn take_item(&mut self, names: &[&str]) -> Result<Item, DecodeError> {
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

    fn to_event(&mut self, schema: &OutboxSchema) -> Option<Result<OutboxEvent, DecodeError>> {
        item_event(self.to_item(&schema.decoded_attributes()), schema)
    }
}

impl ImageView<'_> {
    /// The attributes `names` (the others are not read at all); an attribute
    /// whose value is not DynamoDB JSON is an error naming it.
    pub(crate) fn to_item(&self, names: &[&str]) -> Result<Item, DecodeError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::{ATTR_EVENT_ID, ATTR_METADATA, ATTR_PAYLOAD, ATTR_SEQUENCE, ATTR_TRACE_PARENT};

    #[test]
    fn the_slots_are_in_the_order_the_image_takes_them_apart() {
        assert_eq!(EVENT_ATTRIBUTES[0], ATTR_EVENT_ID);
        assert_eq!(EVENT_ATTRIBUTES[5], ATTR_SEQUENCE);
        assert_eq!(EVENT_ATTRIBUTES[PAYLOAD_SLOT], ATTR_PAYLOAD);
        assert_eq!(EVENT_ATTRIBUTES[8], ATTR_TRACE_PARENT);
        assert_eq!(EVENT_ATTRIBUTES[9], ATTR_METADATA);
    }
}
