//! The event payload: one JSON value, kept as its validated JSON text.

use std::fmt;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::EnvelopeError;

/// Deepest nesting of arrays and objects a payload may have.
///
/// The `PutEvents` API reference (Amazon EventBridge API Reference,
/// "PutEvents") says EventBridge "will only process nested JSON up to 1000
/// levels deep"; SDK references generated from older service models say
/// 1100, so the lower figure is used. The envelope (the `Detail`) puts the
/// payload one level down, so a payload may use the other 999. A deeper
/// payload could never be published: the writer refuses it and the relay
/// quarantines it.
pub const MAX_PAYLOAD_DEPTH: usize = 999;

/// An event's data: one JSON value (any value, `null` included), kept as its
/// JSON text ([`RawValue`]), validated once when it is made.
///
/// The relay never needs the payload's structure: it copies it from the
/// outbox item (or document) into the envelope. Keeping the text means it is
/// lossless (numbers keep every digit, `12345678901234567890123`, `1.10`;
/// key order is the producer's) and adds no nesting limit of its own, where
/// a `serde_json::Value` stops at 128 levels. [`to_value`](Self::to_value)
/// and [`deserialize`](Self::deserialize) give the structure to those who
/// want it.
///
/// Two payloads are equal when their texts are, or when both parse to equal
/// JSON values (so `{"a": 1}` equals `{"a":1}`).
#[derive(Clone)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// Takes JSON text, after checking that it is exactly one JSON value
    /// (surrounding whitespace is allowed and kept) nested at most
    /// [`MAX_PAYLOAD_DEPTH`] deep.
    pub fn from_json(text: impl Into<String>) -> Result<Self, EnvelopeError> {
        let raw = RawValue::from_string(text.into()).map_err(EnvelopeError::Payload)?;
        Self::checked(raw)
    }

    /// The compact JSON text of `value`; an error only when it is nested
    /// deeper than [`MAX_PAYLOAD_DEPTH`].
    pub fn from_value(value: &Value) -> Result<Self, EnvelopeError> {
        Self::serialize(value)
    }

    /// The compact JSON text of anything serde can serialise; an error when
    /// it is not JSON (a map with non-string keys, a failing `Serialize`) or
    /// is nested deeper than [`MAX_PAYLOAD_DEPTH`].
    pub fn serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self, EnvelopeError> {
        let raw = serde_json::value::to_raw_value(value).map_err(EnvelopeError::Payload)?;
        Self::checked(raw)
    }

    fn checked(raw: Box<RawValue>) -> Result<Self, EnvelopeError> {
        // Each level takes two bytes (`[` and `]`): shorter text cannot be too deep.
        if raw.get().len() > 2 * MAX_PAYLOAD_DEPTH {
            let depth = nesting_depth(raw.get());
            if depth > MAX_PAYLOAD_DEPTH {
                return Err(EnvelopeError::Invalid {
                    field: "payload".into(),
                    reason: format!(
                        "nested {depth} levels deep; EventBridge processes JSON up to 1000 levels, \
                         so a payload may be at most {MAX_PAYLOAD_DEPTH} deep inside the envelope"
                    ),
                });
            }
        }
        Ok(Self(raw))
    }

    /// `null`.
    pub fn null() -> Self {
        Self(RawValue::NULL.to_owned())
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The length of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.0.get().len()
    }

    /// Whether the JSON text is empty: never, a payload is one JSON value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the payload is the JSON `null`.
    pub fn is_null(&self) -> bool {
        self.as_str().trim() == "null"
    }

    /// The payload parsed into a JSON value tree. Fails only when the value
    /// is nested deeper than `serde_json`'s recursion limit (128 levels).
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(self.as_str())
    }

    /// The payload parsed into `T`.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.as_str())
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
            || matches!((self.to_value(), other.to_value()), (Ok(a), Ok(b)) if a == b)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Payload").field(&self.as_str()).finish()
    }
}

impl fmt::Display for Payload {
    /// The JSON text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Written as the JSON value it holds, not as a string.
impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Self::checked(raw).map_err(D::Error::custom)
    }
}

/// The deepest nesting of arrays and objects in valid JSON text: one pass
/// over the bytes, skipping strings. serde_json reads a `RawValue` of any
/// depth but does not report it.
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut in_string = false;
    let mut escaped = false;
    for &b in text.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A payload inside a JSON object, as in the envelope.
    #[derive(Serialize, Deserialize)]
    struct Wrapper {
        payload: Payload,
    }

    #[test]
    fn text_is_kept_exactly_numbers_and_key_order_included() {
        let text = r#"{"z":12345678901234567890123,"a":1.10,"m":[true,null]}"#;
        let payload = Payload::from_json(text).unwrap();
        assert_eq!(payload.as_str(), text);
        assert_eq!(serde_json::to_string(&payload).unwrap(), text);
        let wrapped = serde_json::to_string(&Wrapper { payload }).unwrap();
        assert_eq!(wrapped, format!(r#"{{"payload":{text}}}"#));
        let back: Wrapper = serde_json::from_str(&wrapped).unwrap();
        assert_eq!(back.payload.as_str(), text);
    }

    #[test]
    fn anything_but_one_json_value_is_refused() {
        for bad in ["", "{", "nul", "{} {}", "[1,]", "\"\u{1}\"", "{\"a\":1,}"] {
            assert!(Payload::from_json(bad).is_err(), "{bad:?}");
        }
        assert!(Payload::from_json(" [1] ").is_ok());
    }

    #[test]
    fn null_is_a_payload() {
        let payload: Payload = serde_json::from_str("null").unwrap();
        assert!(payload.is_null());
        assert_eq!(payload, Payload::null());
        assert_eq!(payload.to_value().unwrap(), Value::Null);
    }

    #[test]
    fn equal_values_are_equal_payloads_whatever_their_spacing() {
        let a = Payload::from_json(r#"{"a": 1, "b": [2]}"#).unwrap();
        let b = Payload::from_value(&json!({"b": [2], "a": 1})).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, Payload::from_value(&json!({"a": 2, "b": [2]})).unwrap());
    }

    #[test]
    fn nesting_depth_skips_strings() {
        assert_eq!(nesting_depth("1"), 0);
        assert_eq!(nesting_depth(r#"{"a":[1,{"b":[]}],"c":{}}"#), 4);
        assert_eq!(nesting_depth(r#"["[[[[\"{{", {"k\\":"]]"}]"#), 2);
    }

    #[test]
    fn depth_up_to_the_bus_limit_is_accepted_and_deeper_is_refused() {
        let nested = |d: usize| format!("{}0{}", "[".repeat(d), "]".repeat(d));
        assert!(Payload::from_json(nested(MAX_PAYLOAD_DEPTH)).is_ok());
        let err = Payload::from_json(nested(MAX_PAYLOAD_DEPTH + 1)).unwrap_err();
        assert!(err.to_string().contains("payload"), "{err}");
        assert!(format!("{err:?}").contains("1000 levels deep"), "{err:?}");
        let err = serde_json::from_str::<Payload>(&nested(5000)).unwrap_err();
        assert!(err.to_string().contains("999"), "{err}");
    }

    #[test]
    fn any_accepted_depth_is_kept_and_read_back_as_text() {
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_PAYLOAD_DEPTH),
            "]".repeat(MAX_PAYLOAD_DEPTH)
        );
        let payload = Payload::from_json(deep.clone()).unwrap();
        let wrapped = serde_json::to_string(&Wrapper { payload }).unwrap();
        let back: Wrapper = serde_json::from_str(&wrapped).unwrap();
        assert_eq!(back.payload.as_str(), deep);
        assert!(back.payload.to_value().is_err(), "a Value tree has a depth limit");
    }

    #[test]
    fn typed_access() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Order {
            total: u32,
        }
        let payload = Payload::serialize(&Order { total: 7 }).unwrap();
        assert_eq!(payload.as_str(), r#"{"total":7}"#);
        assert_eq!(payload.deserialize::<Order>().unwrap(), Order { total: 7 });
    }
}
