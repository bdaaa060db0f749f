//! The event payload: one JSON value, kept as its validated JSON text.

use std::fmt;

use std::sync::OnceLock;

use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::EnvelopeError;
use crate::json::{self, unescape};

/// Deepest nesting of arrays and objects a payload may have.
///
/// The `PutEvents` API reference says EventBridge "will only process nested
/// JSON up to 1000 levels deep"; the envelope (the `Detail`) puts the payload
/// one level down, so a payload may use the other 999. A deeper payload could
/// never be published: the writer refuses it and the relay quarantines it.
pub const MAX_PAYLOAD_DEPTH: usize = 999;

/// An event's data: one JSON value (any value, `null` included), kept as its
/// JSON text, validated once when it is made.
///
/// The relay never needs the payload's structure: it copies it from the
/// outbox item (or document) into the envelope. Keeping the text instead of
/// a `serde_json::Value` tree means it is never parsed into a tree nor
/// serialised again on the way, and it is lossless: numbers keep every digit
/// (`12345678901234567890123`, `1.10`), and key order is the producer's.
/// It also adds no nesting limit of its own: every payload the bus accepts
/// ([`MAX_PAYLOAD_DEPTH`]) is parsed back from the envelope, where a
/// `serde_json::Value` stops at 128 levels. [`to_value`](Self::to_value)
/// and [`deserialize`](Self::deserialize) give the structure to those who
/// want it.
///
/// Two payloads are equal when their texts are, or when both parse to equal
/// JSON values (so `{"a": 1}` equals `{"a":1}`).
///
/// `Serialize` and `Deserialize` are for JSON (`serde_json`): the payload is
/// written as the JSON value it holds, not as a string.
///
/// A payload read from a JSON string ([`from_json_string`](Self::from_json_string):
/// the DynamoDB item stores it as an `S`, which the stream delivers as a
/// JSON string) keeps that string's escaped contents instead, checked
/// without being unescaped, so that writing it into another JSON string
/// (the `Detail`) is a copy, not an unescaping and a second escaping
/// ([`escaped`](Self::escaped)). Its text is made the first time it is
/// asked for.
#[derive(Clone)]
pub struct Payload {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    /// Validated JSON text.
    Text(Box<RawValue>),
    /// The inside of a JSON string whose value is the payload's text, read
    /// from the stream: checked by [`json::validate_escaped`], the text made
    /// from it on first use.
    Escaped {
        escaped: Box<str>,
        /// The length of the text.
        len: usize,
        text: OnceLock<Unescaped>,
    },
}

/// The text of an escaped payload: valid JSON, unless the escaped text's
/// check ([`json::validate_escaped`]) accepted what serde_json refuses, which
/// its tests say it does not; [`Payload`]'s `Serialize` then fails rather
/// than write it.
#[derive(Clone)]
enum Unescaped {
    Json(Box<RawValue>),
    NotJson(Box<str>, String),
}

impl Payload {
    /// Takes JSON text, after checking that it is exactly one JSON value
    /// (surrounding whitespace is allowed and kept) nested at most
    /// [`MAX_PAYLOAD_DEPTH`] deep.
    pub fn from_json(text: impl Into<String>) -> Result<Self, EnvelopeError> {
        let raw = RawValue::from_string(text.into()).map_err(EnvelopeError::Payload)?;
        Self::checked(raw)
    }

    /// Takes a JSON string literal (quotes included, e.g. `"{\"a\":1}"`)
    /// whose value is the payload's JSON text, checked as
    /// [`from_json`](Self::from_json) checks it, and keeps the literal's
    /// escaped contents ([`escaped`](Self::escaped)). An error when the
    /// literal is not one JSON string, or its value is not a payload.
    pub fn from_json_string(literal: &str) -> Result<Self, EnvelopeError> {
        let contents = literal
            .trim_matches(JSON_WHITESPACE)
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'));
        let Some(contents) = contents else {
            return Self::from_string_value(literal);
        };
        // One pass over the escaped text; when it says no, the text is made
        // and read again, by serde_json, whose errors say what is wrong.
        match json::validate_escaped(contents, MAX_PAYLOAD_DEPTH) {
            Some(len) => Ok(Self::escaped_unchecked(contents, len)),
            None => Self::from_string_value(literal),
        }
    }

    /// Reads the JSON string literal that starts `text` (its opening quote
    /// the first byte; the text may go on past its closing quote), as
    /// [`from_json_string`](Self::from_json_string) reads a literal, in one
    /// pass: the payload and the literal's length, quotes included. `None`
    /// when `text` does not start with a string whose value is a payload
    /// (or whose value has whitespace around it, which is kept by neither
    /// reading): [`from_json_string`](Self::from_json_string) on the whole
    /// literal says why. For a reader that takes the payload out of a larger
    /// JSON text without scanning it twice.
    pub fn from_json_string_prefix(text: &str) -> Option<(Self, usize)> {
        let (len, end) = json::validate_escaped_prefix(text, MAX_PAYLOAD_DEPTH)?;
        let contents = text.get(1..1 + end)?;
        Some((Self::escaped_unchecked(contents, len), end + 2))
    }

    /// The payload whose text is the value of the JSON string `literal`,
    /// read by serde_json (or its error): for a literal the one-pass check
    /// refused, whose error serde_json names.
    fn from_string_value(literal: &str) -> Result<Self, EnvelopeError> {
        let text: String = serde_json::from_str(literal).map_err(EnvelopeError::Payload)?;
        Self::from_json(text)
    }

    /// A payload of the escaped text `contents`, whose text is `len` bytes
    /// long, already checked; its text is made when asked for.
    fn escaped_unchecked(contents: &str, len: usize) -> Self {
        Self {
            repr: Repr::Escaped {
                escaped: Box::from(contents),
                len,
                text: OnceLock::new(),
            },
        }
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
        if raw.get().len() <= 2 * MAX_PAYLOAD_DEPTH {
            return Ok(Self::from_raw(raw));
        }
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
        Ok(Self::from_raw(raw))
    }

    fn from_raw(text: Box<RawValue>) -> Self {
        Self {
            repr: Repr::Text(text),
        }
    }

    /// `null`.
    pub fn null() -> Self {
        Self::from_raw(RawValue::NULL.to_owned())
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        match self.text() {
            Ok(raw) => raw.get(),
            Err((text, _)) => text,
        }
    }

    /// The JSON text, made from the escaped text on first use; or, should
    /// the escaped text's check have let through what serde_json refuses,
    /// the text and serde_json's reason.
    fn text(&self) -> Result<&RawValue, (&str, &str)> {
        let (escaped, unescaped) = match &self.repr {
            Repr::Text(raw) => return Ok(raw),
            Repr::Escaped { escaped, text, .. } => (escaped, text),
        };
        let made = unescaped.get_or_init(|| {
            // The escaped text was checked: it unescapes, to valid JSON.
            let text = || unescape(escaped).unwrap_or_else(|| escaped.to_string());
            match RawValue::from_string(text()) {
                Ok(raw) => Unescaped::Json(raw),
                // Made again only on this path, which the check's tests say
                // is never taken.
                Err(e) => Unescaped::NotJson(text().into_boxed_str(), e.to_string()),
            }
        });
        match made {
            Unescaped::Json(raw) => Ok(raw),
            Unescaped::NotJson(text, reason) => Err((text, reason)),
        }
    }

    /// The length of the JSON text in bytes, without making it.
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Text(raw) => raw.get().len(),
            Repr::Escaped { len, .. } => *len,
        }
    }

    /// Whether the JSON text is empty: never, a payload is one JSON value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The JSON text escaped as the inside of a JSON string, as it was read
    /// ([`from_json_string`](Self::from_json_string)); `None` for a payload
    /// made otherwise. The escaping is the writer's (any valid JSON escape,
    /// `\u0041` for `A` included): it reads back as [`as_str`](Self::as_str).
    pub fn escaped(&self) -> Option<&str> {
        match &self.repr {
            Repr::Text(_) => None,
            Repr::Escaped { escaped, .. } => Some(escaped),
        }
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

    /// An escaped payload whose text is `escaped`, unchecked: for the test
    /// of a check that let through what serde_json refuses.
    #[cfg(test)]
    fn escaped_for_test(escaped: &str) -> Self {
        Self::escaped_unchecked(escaped, escaped.len())
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

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.text() {
            Ok(raw) => raw.serialize(serializer),
            Err((_, reason)) => Err(S::Error::custom(format_args!(
                "the payload is not JSON: {reason}"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Self::checked(raw).map_err(D::Error::custom)
    }
}

/// The characters JSON allows around a value.
const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// The deepest nesting of arrays and objects in valid JSON text: one pass
/// over the bytes, skipping strings.
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
    fn a_payload_read_from_a_json_string_keeps_its_escaped_text() {
        let literal = r#" "{\"a\":\"\u0041\/\u00e9\ud83d\ude00\\\"\"}" "#;
        let payload = Payload::from_json_string(literal).unwrap();
        assert_eq!(payload.as_str(), r#"{"a":"A/é😀\""}"#);
        let escaped = payload.escaped().unwrap();
        assert_eq!(escaped, r#"{\"a\":\"\u0041\/\u00e9\ud83d\ude00\\\"\"}"#);
        // The escaped text, made a JSON string again, reads back as the payload.
        let back: String = serde_json::from_str(&format!("\"{escaped}\"")).unwrap();
        assert_eq!(back, payload.as_str());
        assert_eq!(payload, Payload::from_json(payload.as_str()).unwrap());
        assert_eq!(Payload::from_json("{}").unwrap().escaped(), None);
    }

    #[test]
    fn a_payload_is_read_from_the_start_of_a_longer_text() {
        let literal = r#""[1, \"\u00e9\"]""#;
        let (payload, len) = Payload::from_json_string_prefix(&format!("{literal}}},\"x\":2}}")).unwrap();
        assert_eq!(len, literal.len());
        assert_eq!(payload, Payload::from_json_string(literal).unwrap());
        assert_eq!(payload.escaped(), Some(r#"[1, \"\u00e9\"]"#));
        assert_eq!(payload.as_str(), r#"[1, "é"]"#);
        // Not a payload, or not a string at the start: the caller reads it
        // the slow way, whose error says why.
        for bad in [r#""{""#, r#""[1] ""#, r#" "1""#, "1", r#""\ud800""#, r#""1"#] {
            assert!(Payload::from_json_string_prefix(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn an_escaped_payload_is_made_text_only_when_asked_for() {
        let payload = Payload::from_json_string(r#""[1, \"\u00e9\"]""#).unwrap();
        assert!(matches!(&payload.repr, Repr::Escaped { text, .. } if text.get().is_none()));
        assert_eq!(payload.len(), r#"[1, "é"]"#.len());
        assert_eq!(payload.escaped(), Some(r#"[1, \"\u00e9\"]"#));
        assert_eq!(payload.as_str(), r#"[1, "é"]"#);
        assert!(matches!(&payload.repr, Repr::Escaped { text, .. } if text.get().is_some()));
        assert_eq!(serde_json::to_string(&payload).unwrap(), r#"[1, "é"]"#);
    }

    #[test]
    fn an_escaped_text_that_is_not_json_is_never_written_as_json() {
        // Not made by `from_json_string`, whose check refuses it: what would
        // happen, should that check ever let through what serde_json refuses.
        let payload = Payload::escaped_for_test("{");
        assert_eq!(payload.as_str(), "{");
        let err = serde_json::to_string(&Wrapper { payload }).unwrap_err();
        assert!(err.to_string().contains("the payload is not JSON"), "{err}");
    }

    #[test]
    fn a_json_string_that_is_not_a_payload_is_refused() {
        for bad in [
            r#"{"a":1}"#,                                          // not a string
            r#""{\"a\":}""#,                                       // a string, but not JSON inside
            r#""\ud800""#,                                         // a lone surrogate
            r#""[1]" "x""#,                                        // two values
            "\u{c}\"1\"",                                          // a form feed is not JSON whitespace
            r#""1\""#,                                             // the closing quote escaped
            &format!("\"{}\"", "[".repeat(MAX_PAYLOAD_DEPTH + 1)), // too deep (and unclosed)
        ] {
            assert!(Payload::from_json_string(bad).is_err(), "{bad}");
        }
        let nested = format!(
            "{}{}",
            "[".repeat(MAX_PAYLOAD_DEPTH + 1),
            "]".repeat(MAX_PAYLOAD_DEPTH + 1)
        );
        let err = Payload::from_json_string(&format!("\"{nested}\"")).unwrap_err();
        assert!(format!("{err:?}").contains("1000 levels deep"), "{err:?}");
    }

    #[test]
    fn unescaping_edges_are_serde_jsons() {
        let edges = [
            r"\ud800\udc00",
            r"\udbff\udfff",
            r"\ud800\udbff",
            r"\ud800\ue000",
            r"\ud800\ud7ff",
            r"\udbff",
            r"\udc00",
            r"\udfff\ud800",
            r"\ud7ff",
            r"\ue000",
            r"\uffff",
            r"\u0000",
            r"\ud800\u",
            r"\ud800\",
            r"\ud800x",
            r"\uDBFF\uDFFF",
            r"\u00E9",
            r"\",
            r"a\",
            "\u{7f}",
        ];
        for contents in edges {
            let serde = serde_json::from_str::<String>(&format!("\"{contents}\"")).ok();
            assert_eq!(unescape(contents), serde, "{contents:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The unescaping is serde_json's, on escape-heavy contents (the
        /// pieces JSON strings are made of, and broken ones) and on any text.
        #[test]
        fn unescaping_reads_a_string_as_serde_json_does(
            pieces in proptest::collection::vec(proptest::prop_oneof![
                4 => proptest::string::string_regex("[a-z/é😀]{0,3}").unwrap(),
                4 => proptest::string::string_regex("\\\\[\"\\\\/bfnrtu]").unwrap(),
                2 => proptest::string::string_regex("\\\\u[0-9a-fA-FdD]{4}").unwrap(),
                2 => proptest::string::string_regex("\\\\u[dD][89abAB][0-9a-f]{2}(\\\\u[dD][c-fC-F0-9][0-9a-f]{2})?").unwrap(),
                1 => proptest::string::string_regex("[\"\\\\\u{1}\u{1f}]|\\\\[xu]|\\\\u[0-9a-g]{0,3}").unwrap(),
            ], 0..12),
            any_text in proptest::prelude::any::<String>(),
        ) {
            for contents in [pieces.concat(), any_text] {
                let serde = serde_json::from_str::<String>(&format!("\"{contents}\"")).ok();
                proptest::prop_assert_eq!(unescape(&contents), serde, "{:?}", contents);
            }
        }
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
