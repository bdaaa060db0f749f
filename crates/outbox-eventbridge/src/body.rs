//! The `PutEvents` request body, written directly from outbox events.
//!
//! The SDK's serialiser needs [`PutEventsRequestEntry`](aws_sdk_eventbridge::types::PutEventsRequestEntry)
//! values (a copy of every field of every event) and escapes each string one
//! byte at a time; with a `Detail` of escaped JSON that was a third of the
//! cost of a `PutEvents` call. This module writes the same AWS JSON 1.1
//! document in one pass (the envelope is serialised straight into its
//! escaped `Detail` string), and
//! [`EventBridgeSink`](crate::EventBridgeSink) hands it to the SDK just before
//! signing, so the SDK still signs, sends, retries, times out and reads the
//! response. The tests check that the document is the SDK's own, field for
//! field.

use aws_sdk_eventbridge::primitives::{DateTime, DateTimeFormat};
use outbox_core::OutboxEvent;
use outbox_core::json::{escape_into, write_u64};

/// Why a request body could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the PutEvents request: {0}")]
pub struct RequestBodyError(String);

/// The `PutEvents` body for `events` on the bus `bus`: one entry per event,
/// with the fields of [`to_put_events_entry`](crate::to_put_events_entry) in
/// the order the SDK writes them (`Time` as epoch seconds, `Source`,
/// `DetailType`, `Detail`, `EventBusName`, `TraceHeader`). This is the body
/// [`EventBridgeSink`](crate::EventBridgeSink) sends.
pub fn put_events_body(events: &[&OutboxEvent], bus: &str) -> Result<Vec<u8>, RequestBodyError> {
    // An entry is mostly its payload, escaped once more (copied as it came
    // when it came escaped); the rest of the envelope and the other fields
    // take a few hundred bytes, their texts twice (once escaped).
    let estimate: usize = events
        .iter()
        .map(|e| {
            let payload = e.payload();
            let payload = payload.escaped().map_or(payload.len() * 9 / 8, str::len);
            let texts =
                e.source().len() + e.event_type().len() + e.aggregate_type().len() + e.aggregate_id().len();
            payload + 2 * texts + 512 + bus.len()
        })
        .sum();
    let mut out = Vec::with_capacity(estimate + 16);
    out.extend_from_slice(b"{\"Entries\":[");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"Time\":");
        let millis = event.occurred_at().timestamp_millis();
        if !write_epoch_seconds(&mut out, millis) {
            let time = DateTime::from_millis(millis)
                .fmt(DateTimeFormat::EpochSeconds)
                .map_err(|e| RequestBodyError(format!("event {}: Time: {e}", event.id())))?;
            out.extend_from_slice(time.as_bytes());
        }
        field(&mut out, "Source", event.source());
        field(&mut out, "DetailType", event.event_type());
        // The envelope is written straight into the escaped string: no
        // intermediate copy of its text, and a payload the stream delivered
        // escaped is copied as it came.
        out.extend_from_slice(b",\"Detail\":\"");
        event.write_json_escaped(&mut out);
        out.push(b'"');
        field(&mut out, "EventBusName", bus);
        if let Some(trace) = event.trace_parent() {
            field(&mut out, "TraceHeader", &trace.to_xray_header());
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// Appends a time at or after 1970 given in milliseconds as the SDK writes
/// it in epoch seconds (`1796173200`, `1796173200.5`, `1796173200.007`), and
/// returns `true`; `false`, with nothing written, for an earlier time, which
/// the SDK writes.
fn write_epoch_seconds(out: &mut Vec<u8>, millis: i64) -> bool {
    let Ok(millis) = u64::try_from(millis) else {
        return false;
    };
    out.extend_from_slice(write_u64(millis / 1000, &mut [0; 20]).as_bytes());
    let fraction = millis % 1000;
    if fraction != 0 {
        let decimals = [
            b'.',
            b'0' + (fraction / 100) as u8,
            b'0' + (fraction / 10 % 10) as u8,
            b'0' + (fraction % 10) as u8,
        ];
        // The SDK drops the fraction's trailing zeros.
        let len = if fraction % 100 == 0 {
            2
        } else if fraction % 10 == 0 {
            3
        } else {
            4
        };
        out.extend_from_slice(&decimals[..len]);
    }
    true
}

/// Appends `,"name":"value"` with `value` escaped as a JSON string.
fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":\"");
    escape_into(out, value.as_bytes());
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use aws_sdk_eventbridge::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_eventbridge::{Client, Config};
    use chrono::{TimeZone, Utc};
    use outbox_core::{FixedClock, Payload};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use crate::to_put_events_entry;

    fn event(n: u32, payload: &Value, trace: bool) -> OutboxEvent {
        let clock = FixedClock::new(
            Utc.with_ymd_and_hms(2026, 12, 2, 1, 0, 0).unwrap()
                + chrono::Duration::milliseconds(i64::from(n) * 7),
        );
        let mut builder = OutboxEvent::builder("shop.orders", "OrderPlaced")
            .aggregate("Order", format!("o-{n}"))
            .sequence(u64::from(n))
            .payload(payload);
        if trace {
            builder = builder.trace_parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        }
        builder.build(&clock).unwrap()
    }

    /// The body the SDK's own serialiser writes for these events, taken
    /// just before signing; the call is then stopped, nothing is sent.
    fn sdk_body(events: &[&OutboxEvent], bus: &str) -> Vec<u8> {
        let config = Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .credentials_provider(Credentials::new("AKID", "secret", None, None, "test"))
            .build();
        let client = Client::from_conf(config);
        let entries = events.iter().map(|e| to_put_events_entry(e, bus)).collect();
        let captured = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&captured);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = runtime.block_on(
            client
                .put_events()
                .set_entries(Some(entries))
                .customize()
                .map_request(move |request| {
                    *sink.lock().unwrap() = request.body().bytes().map(<[u8]>::to_vec);
                    Err::<aws_sdk_eventbridge::config::http::HttpRequest, _>(std::io::Error::other(
                        "captured",
                    ))
                })
                .send(),
        );
        assert!(result.is_err(), "the call is stopped before it is sent");
        captured
            .lock()
            .unwrap()
            .take()
            .expect("the SDK serialised a body")
    }

    fn parse(body: &[u8]) -> Value {
        serde_json::from_slice(body).unwrap()
    }

    #[test]
    fn it_is_the_document_the_sdk_writes() {
        let payload = json!({
            "orderId": "o-1", "lines": [{"sku": "A-1", "qty": 2}], "note": "quote \" backslash \\ tab \t nl \n ü € 😀 \u{1} \u{7f} </script>"
        });
        let a = event(1, &payload, false);
        let b = event(2, &json!({"n": 1.5e300, "big": 12345678901234567890u64}), true);
        let events = [&a, &b];
        let ours = put_events_body(&events, "orders-bus").unwrap();
        let sdk = sdk_body(&events, "orders-bus");
        assert_eq!(parse(&ours), parse(&sdk));
        assert_eq!(
            parse(&ours)["Entries"][1]["TraceHeader"],
            json!(b.trace_parent().unwrap().to_xray_header())
        );
        assert_eq!(parse(&ours)["Entries"][0]["Detail"], json!(a.to_json()));
    }

    #[test]
    fn time_is_written_as_the_sdk_writes_it() {
        // Whole seconds and milliseconds: the SDK writes `1796173200` and
        // `1796173200.007`, and so must the body.
        let events = [event(0, &json!({}), false), event(1, &json!({}), false)];
        let refs: Vec<&OutboxEvent> = events.iter().collect();
        let ours = String::from_utf8(put_events_body(&refs, "b").unwrap()).unwrap();
        let sdk = String::from_utf8(sdk_body(&refs, "b")).unwrap();
        assert!(ours.contains(r#""Time":1796173200,"#), "{ours}");
        assert!(ours.contains(r#""Time":1796173200.007,"#), "{ours}");
        assert!(sdk.contains(r#""Time":1796173200.007"#), "{sdk}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// The body's `Time` is the SDK's epoch seconds for any time in
        /// milliseconds, before 1970 (written by the SDK) or after.
        #[test]
        fn epoch_seconds_are_the_sdks(
            millis in prop_oneof![-100_000_000_000_000i64..300_000_000_000_000, 0i64..10_000, Just(i64::MAX / 1000 * 1000)]
        ) {
            let sdk = DateTime::from_millis(millis).fmt(DateTimeFormat::EpochSeconds).unwrap();
            let mut ours = Vec::new();
            if write_epoch_seconds(&mut ours, millis) {
                prop_assert_eq!(String::from_utf8(ours).unwrap(), sdk);
            } else {
                prop_assert!(millis < 0);
                prop_assert!(ours.is_empty());
            }
        }
    }

    /// `e` with its payload read from the JSON string `literal`, as the
    /// stream decoder reads it.
    fn with_literal_payload(e: &OutboxEvent, literal: &str) -> OutboxEvent {
        let mut parts = e.clone().into_parts();
        parts.payload = Payload::from_json_string(literal).unwrap();
        OutboxEvent::try_from(parts).unwrap()
    }

    #[test]
    fn a_payload_kept_escaped_is_copied_into_the_detail_and_reads_back_the_same() {
        // `\u0041` is `A` and `\/` is `/`: the body keeps the stream's
        // escapes, which only a copy would.
        let literal = r#""{\"k\":\"\u0041\/\\\"\u00e9\ud83d\ude00\",\"n\":[1,2.50]}""#;
        let plain = event(1, &json!({}), true);
        let kept = with_literal_payload(&plain, literal);
        let ours = put_events_body(&[&kept, &plain], "bus").unwrap();
        let text = String::from_utf8(ours.clone()).unwrap();
        let escaped = kept.payload().escaped().unwrap();
        assert!(text.contains(escaped), "{text}");
        assert_eq!(parse(&ours), parse(&sdk_body(&[&kept, &plain], "bus")));
        assert_eq!(parse(&ours)["Entries"][0]["Detail"], json!(kept.to_json()));
        assert_eq!(
            OutboxEvent::from_json(parse(&ours)["Entries"][0]["Detail"].as_str().unwrap()).unwrap(),
            kept
        );
    }

    #[test]
    fn an_empty_chunk_has_no_entries() {
        assert_eq!(parse(&put_events_body(&[], "b").unwrap()), json!({"Entries": []}));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_text_in_the_payload_and_the_bus_matches_the_sdk(
            text in any::<String>(), bus in "[a-zA-Z0-9._\\-/:\"\\\\]{1,40}", trace in any::<bool>()
        ) {
            let e = event(3, &json!({ "text": text }), trace);
            let ours = put_events_body(&[&e], &bus).unwrap();
            let sdk = sdk_body(&[&e], &bus);
            prop_assert_eq!(parse(&ours), parse(&sdk));
        }

        #[test]
        fn any_payload_kept_escaped_matches_the_sdk(text in any::<String>(), ascii in any::<bool>()) {
            // The literal as serde_json writes it, or with every non-ASCII
            // character as a `\u` escape (surrogate pairs included).
            let payload = serde_json::to_string(&json!({ "text": text })).unwrap();
            let mut literal = serde_json::to_string(&payload).unwrap();
            if ascii {
                literal = literal
                    .chars()
                    .map(|c| if c.is_ascii() { c.to_string() } else {
                        c.encode_utf16(&mut [0; 2]).iter().map(|u| format!("\\u{u:04x}")).collect()
                    })
                    .collect();
            }
            let e = with_literal_payload(&event(4, &json!(null), false), &literal);
            prop_assert_eq!(e.payload().as_str(), payload.as_str());
            let ours = put_events_body(&[&e], "bus").unwrap();
            prop_assert_eq!(parse(&ours), parse(&sdk_body(&[&e], "bus")));
        }
    }
}
