//! The pure half of the sink: PutEvents limits, request entries built from
//! outbox events, their sizes as EventBridge counts them, and what each
//! per-entry error code means.

use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use outbox_core::{FailureClass, OutboxEvent};

use crate::BusFormat;

/// Most entries in one `PutEvents` request.
///
/// The EventBridge API reference for `PutEvents` documents `Entries` as an
/// array of 1 to 10 items.
pub const MAX_PUT_EVENTS_ENTRIES: usize = 10;

/// Default byte limit of one `PutEvents` request, counted as in
/// [`entry_size`].
///
/// The EventBridge documentation ("Calculating PutEvents event entry size",
/// and the `PutEvents` quotas) gives 256 KB as the size limit of a request's
/// entries; newer SDK documentation mentions 1 MB. The limit is therefore
/// configuration ([`EventBridgeSink::with_max_request_bytes`](crate::EventBridgeSink::with_max_request_bytes)),
/// with the conservative documented value as default.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 256 * 1024;

/// Bytes the `Time` field of an entry counts, per "Calculating PutEvents
/// event entry size" in the EventBridge user guide: an entry that has a
/// `Time` counts 14 bytes for it, plus the UTF-8 bytes of `Source`,
/// `DetailType`, `Detail` and each `Resources` entry.
pub const TIME_ENTRY_BYTES: usize = 14;

/// Builds the `PutEvents` entry for `event` on the bus `bus` (name or ARN),
/// its `Detail` the whole envelope ([`OutboxEvent::to_json`]): the entry of
/// [`to_put_events_entry_as`] in [`BusFormat::Envelope`].
pub fn to_put_events_entry(event: &OutboxEvent, bus: &str) -> PutEventsRequestEntry {
    to_put_events_entry_as(event, bus, BusFormat::Envelope)
}

/// Builds the `PutEvents` entry for `event` on the bus `bus` (name or ARN)
/// with its `Detail` in `format`.
///
/// `Source` is the event's source, `DetailType` its type, `Detail` the event
/// in `format` ([`BusFormat::detail`]), `Time` its `occurred_at`, and
/// `TraceHeader` its W3C trace context as an X-Ray header, when it has one.
pub fn to_put_events_entry_as(event: &OutboxEvent, bus: &str, format: BusFormat) -> PutEventsRequestEntry {
    PutEventsRequestEntry::builder()
        .source(event.source())
        .detail_type(event.event_type())
        .detail(format.detail(event))
        .time(DateTime::from_millis(event.occurred_at().timestamp_millis()))
        .set_trace_header(event.trace_parent().map(|t| t.to_xray_header()))
        .event_bus_name(bus)
        .build()
}

/// The size `event`'s envelope entry ([`to_put_events_entry`]) counts
/// towards a request's byte limit: [`entry_size_as`] in
/// [`BusFormat::Envelope`].
pub fn entry_size(event: &OutboxEvent) -> usize {
    entry_size_as(event, BusFormat::Envelope)
}

/// The size `event`'s entry in `format` ([`to_put_events_entry_as`]) counts
/// towards a request's byte limit, exactly as EventBridge documents it
/// ("Calculating PutEvents event entry size"): [`TIME_ENTRY_BYTES`] for
/// `Time`, plus the UTF-8 bytes of `Source`, `DetailType` and `Detail` (the
/// entry has no `Resources`). The `Detail` is counted without being written.
pub fn entry_size_as(event: &OutboxEvent, format: BusFormat) -> usize {
    TIME_ENTRY_BYTES + event.source().len() + event.event_type().len() + format.detail_len(event)
}

/// The size of any `PutEvents` request entry, as EventBridge documents it:
/// [`TIME_ENTRY_BYTES`] when it has a `Time`, plus the UTF-8 bytes of
/// `Source`, `DetailType`, `Detail` and each `Resources` entry. For an entry
/// from [`to_put_events_entry_as`] this equals [`entry_size_as`] of its
/// event in the same format.
pub fn request_entry_size(entry: &PutEventsRequestEntry) -> usize {
    let time = if entry.time().is_some() {
        TIME_ENTRY_BYTES
    } else {
        0
    };
    time + entry.source().map_or(0, str::len)
        + entry.detail_type().map_or(0, str::len)
        + entry.detail().map_or(0, str::len)
        + entry.resources().iter().map(String::len).sum::<usize>()
}

/// Per-entry error codes after which the same entry may succeed: the
/// `PutEventsResultEntry` reference lists `InternalFailure` and
/// `ThrottlingException` as retryable; the others are their common spellings.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "InternalFailure",
    "InternalException",
    "ServiceUnavailable",
];

/// Per-entry error codes that the same entry can never get past: the
/// non-retryable codes of the `PutEventsResultEntry` reference, and
/// `ValidationException`.
const PERMANENT_CODES: &[&str] = &[
    "InvalidArgument",
    "MalformedDetail",
    "ValidationException",
    "NotAuthorizedForSourceException",
    "NotAuthorizedForDetailTypeException",
    "AccessDeniedException",
    "InvalidAccountIdException",
    "RedactionFailure",
];

/// Whether a code or message says that the entry is too large.
fn says_too_large(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    [
        "too large",
        "toolarge",
        "too big",
        "too long",
        "exceeds the maximum size",
        "size limit",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// What a per-entry error code means for that entry.
///
/// Throttling and internal failures are [`FailureClass::Transient`]; invalid,
/// malformed, unauthorised or too large entries are
/// [`FailureClass::Permanent`] (quarantined). A code this build does not know
/// is `Transient`: the relay retries it a bounded number of times and then
/// leaves the record to the host's failure path (the batch is retried and,
/// in the end, the on-failure destination keeps it), which loses nothing,
/// whereas guessing `Permanent` would quarantine events that a later attempt
/// might deliver.
pub(crate) fn classify_entry_error(code: &str, message: &str) -> FailureClass {
    if TRANSIENT_CODES.contains(&code) {
        FailureClass::Transient
    } else if PERMANENT_CODES.contains(&code) || says_too_large(code) || says_too_large(message) {
        FailureClass::Permanent
    } else {
        FailureClass::Transient
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use outbox_core::{ChunkLimits, FixedClock, chunk_ranges};
    use serde_json::json;

    fn event_with(source: &str, event_type: &str, payload: serde_json::Value) -> OutboxEvent {
        OutboxEvent::builder(source, event_type)
            .aggregate("Order", "o-42")
            .sequence(3)
            .payload(&payload)
            .occurred_at(
                Utc.with_ymd_and_hms(2025, 3, 1, 12, 30, 45).unwrap() + chrono::Duration::milliseconds(123),
            )
            .build(&FixedClock::new(
                Utc.with_ymd_and_hms(2025, 3, 1, 12, 30, 45).unwrap(),
            ))
            .unwrap()
    }

    fn event() -> OutboxEvent {
        event_with(
            "com.example.orders",
            "OrderPlaced",
            json!({ "total": 1999, "note": "café" }),
        )
    }

    #[test]
    fn entry_carries_the_envelope_and_its_routing_fields() {
        let event = event();
        let entry = to_put_events_entry(&event, "orders-bus");
        assert_eq!(entry.source(), Some("com.example.orders"));
        assert_eq!(entry.detail_type(), Some("OrderPlaced"));
        assert_eq!(entry.event_bus_name(), Some("orders-bus"));
        let detail = entry.detail().unwrap();
        assert_eq!(detail, event.to_json());
        assert_eq!(OutboxEvent::from_json(detail).unwrap(), event);
        let time = entry.time().unwrap();
        assert_eq!(time.secs(), event.occurred_at().timestamp());
        assert_eq!(time.subsec_nanos(), 123_000_000);
        assert_eq!(entry.trace_header(), None);
        assert!(entry.resources().is_empty());
    }

    #[test]
    fn a_cloudevents_entry_carries_the_cloudevent_and_the_same_routing_fields() {
        let event = event();
        let envelope = to_put_events_entry(&event, "orders-bus");
        let entry = to_put_events_entry_as(&event, "orders-bus", BusFormat::CloudEvents);
        let detail: serde_json::Value = serde_json::from_str(entry.detail().unwrap()).unwrap();
        assert_eq!(detail["specversion"], "1.0");
        assert_eq!(detail["subject"], "Order/o-42");
        assert_eq!(detail["sequence"], "3");
        assert_eq!(detail["data"], json!({ "total": 1999, "note": "café" }));
        assert_eq!(detail, event.to_cloudevent().unwrap());
        assert_eq!(OutboxEvent::from_cloudevent(&detail).unwrap(), event);
        assert_eq!(
            (
                entry.source(),
                entry.detail_type(),
                entry.time(),
                entry.event_bus_name()
            ),
            (
                envelope.source(),
                envelope.detail_type(),
                envelope.time(),
                envelope.event_bus_name()
            )
        );
        assert_eq!(
            to_put_events_entry_as(&event, "orders-bus", BusFormat::Envelope),
            envelope
        );
    }

    #[test]
    fn a_claim_check_travels_as_a_cloudevents_extension() {
        let event = event();
        let check = outbox_core::ClaimCheck::new("claims", "outbox/events/e.json", 300_000);
        let claimed = event.claimed(&check).unwrap();
        let entry = to_put_events_entry_as(&claimed, "bus", BusFormat::CloudEvents);
        let detail: serde_json::Value = serde_json::from_str(entry.detail().unwrap()).unwrap();
        assert_eq!(detail[outbox_core::CLAIM_CHECK_METADATA_KEY], "s3");
        let back = OutboxEvent::from_cloudevent(&detail).unwrap();
        assert_eq!(back.claim_check(), Some(check));
        assert_eq!(back, claimed);
        assert_eq!(
            entry_size_as(&claimed, BusFormat::CloudEvents),
            request_entry_size(&entry)
        );
    }

    #[test]
    fn trace_context_becomes_an_xray_trace_header() {
        let event = OutboxEvent::builder("com.example.orders", "OrderPlaced")
            .aggregate("Order", "o-1")
            .sequence(1)
            .payload(&json!({}))
            .trace_parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .build(&FixedClock::new(
                Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
            ))
            .unwrap();
        let entry = to_put_events_entry(&event, "arn:aws:events:eu-west-1:123456789012:event-bus/b");
        assert_eq!(
            entry.trace_header(),
            Some("Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1")
        );
        assert_eq!(
            entry.event_bus_name(),
            Some("arn:aws:events:eu-west-1:123456789012:event-bus/b")
        );
    }

    #[test]
    fn size_is_time_plus_utf8_bytes_of_source_detail_type_and_detail() {
        let event = event();
        let detail = event.to_json();
        assert!(
            detail.contains("café"),
            "multi-byte text is counted in bytes, not chars"
        );
        let expected = 14 + "com.example.orders".len() + "OrderPlaced".len() + detail.len();
        assert_eq!(entry_size(&event), expected);
        assert_eq!(
            entry_size(&event),
            request_entry_size(&to_put_events_entry(&event, "bus"))
        );
        assert_ne!(detail.len(), detail.chars().count());

        let cloudevent = event.to_cloudevent_json();
        assert_eq!(
            entry_size_as(&event, BusFormat::CloudEvents),
            14 + "com.example.orders".len() + "OrderPlaced".len() + cloudevent.len()
        );
        assert_ne!(
            cloudevent.len(),
            detail.len(),
            "each format is counted as it is written"
        );
    }

    #[test]
    fn size_of_any_entry_counts_resources_and_only_a_present_time() {
        let builder = PutEventsRequestEntry::builder()
            .source("s")
            .detail_type("dt")
            .detail("{}")
            .resources("arn:1")
            .resources("arn:22");
        assert_eq!(request_entry_size(&builder.clone().build()), 1 + 2 + 2 + 5 + 6);
        let timed = builder.time(DateTime::from_secs(0)).build();
        assert_eq!(request_entry_size(&timed), 14 + 1 + 2 + 2 + 5 + 6);
    }

    /// Events whose entry sizes in `format` add up to exactly `total`.
    fn events_totalling(total: usize, format: BusFormat) -> Vec<OutboxEvent> {
        let a = event_with("s", "A", json!({ "pad": "" }));
        let base = entry_size_as(&a, format);
        let b_base = entry_size_as(&event_with("s", "B", json!({ "pad": "" })), format);
        let pad = total - base - b_base;
        let b = event_with("s", "B", json!({ "pad": "x".repeat(pad) }));
        assert_eq!(entry_size_as(&a, format) + entry_size_as(&b, format), total);
        vec![a, b]
    }

    #[test]
    fn a_chunk_at_exactly_the_byte_limit_is_kept_whole_and_one_byte_more_is_split() {
        let limits = ChunkLimits {
            max_entries: MAX_PUT_EVENTS_ENTRIES,
            max_bytes: DEFAULT_MAX_REQUEST_BYTES,
        };
        for format in BusFormat::ALL {
            let sizes = |events: Vec<OutboxEvent>| -> Vec<usize> {
                events
                    .iter()
                    .map(|e| request_entry_size(&to_put_events_entry_as(e, "bus", format)))
                    .collect()
            };
            let at_limit = sizes(events_totalling(DEFAULT_MAX_REQUEST_BYTES, format));
            assert_eq!(at_limit.iter().sum::<usize>(), 256 * 1024, "{format}");
            assert_eq!(chunk_ranges(&at_limit, limits), vec![0..2], "{format}");

            let over = sizes(events_totalling(DEFAULT_MAX_REQUEST_BYTES + 1, format));
            assert_eq!(chunk_ranges(&over, limits), vec![0..1, 1..2], "{format}");
        }
    }

    #[test]
    fn eleven_small_entries_make_two_requests() {
        let limits = ChunkLimits {
            max_entries: MAX_PUT_EVENTS_ENTRIES,
            max_bytes: DEFAULT_MAX_REQUEST_BYTES,
        };
        let sizes = vec![entry_size(&event()); 11];
        assert_eq!(chunk_ranges(&sizes, limits), vec![0..10, 10..11]);
    }

    proptest::proptest! {
        #[test]
        fn size_matches_the_documented_formula_for_any_text(
            source in "[a-z]{1,10}(\\.[a-z]{1,10}){0,3}",
            event_type in "[A-Z][A-Za-z]{0,20}",
            text in "\\PC{0,200}",
        ) {
            let built = OutboxEvent::builder(source.clone(), event_type.clone())
                .aggregate("A", "a-1")
                .sequence(1)
                .payload(&json!({ "text": text }))
                .build(&FixedClock::new(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()));
            proptest::prop_assume!(built.is_ok());
            let event = built.unwrap();
            for format in BusFormat::ALL {
                let entry = to_put_events_entry_as(&event, "bus", format);
                proptest::prop_assert_eq!(entry_size_as(&event, format), request_entry_size(&entry));
                proptest::prop_assert_eq!(
                    entry_size_as(&event, format),
                    14 + source.len() + event_type.len() + entry.detail().unwrap().len()
                );
            }
        }
    }

    #[test]
    fn documented_limits() {
        assert_eq!(MAX_PUT_EVENTS_ENTRIES, 10);
        assert_eq!(DEFAULT_MAX_REQUEST_BYTES, 262_144);
        assert_eq!(TIME_ENTRY_BYTES, 14);
    }

    #[test]
    fn entry_error_codes_are_classified() {
        use FailureClass::{Permanent, Transient};
        for code in [
            "ThrottlingException",
            "InternalFailure",
            "InternalException",
            "ServiceUnavailable",
        ] {
            assert_eq!(classify_entry_error(code, "x"), Transient, "{code}");
        }
        for code in [
            "InvalidArgument",
            "MalformedDetail",
            "ValidationException",
            "NotAuthorizedForSourceException",
            "NotAuthorizedForDetailTypeException",
            "AccessDeniedException",
            "EntryTooLarge",
        ] {
            assert_eq!(classify_entry_error(code, "x"), Permanent, "{code}");
        }
        assert_eq!(
            classify_entry_error("SomethingNew", "Event entry is too large"),
            Permanent
        );
        assert_eq!(classify_entry_error("SomethingNew", "try again later"), Transient);
        assert_eq!(
            classify_entry_error("ThrottlingException", "request too large a rate"),
            Transient
        );
    }
}
