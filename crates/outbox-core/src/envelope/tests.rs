//! The envelope's unit tests.

use super::*;
use crate::{FixedClock, MAX_PAYLOAD_DEPTH};
use chrono::TimeZone;
use serde_json::json;

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
    /// The counted length is the written one, whatever the texts.
    #[test]
    fn json_len_is_the_length_of_to_json(
        texts in proptest::collection::vec(proptest::prelude::any::<String>(), 3),
        metadata in proptest::collection::btree_map("[a-z0-9]{1,20}", proptest::prelude::any::<String>(), 0..3),
        sequence in proptest::prelude::any::<u64>(),
        trace in proptest::prelude::any::<bool>(),
    ) {
        let mut parts = builder().build(&clock()).unwrap().into_parts();
        parts.event_type = format!("t{}", texts[0]);
        parts.aggregate_id = format!("i{}", texts[1]);
        parts.sequence = sequence;
        parts.trace_parent = trace.then(|| TP.to_owned());
        parts.metadata = metadata.into_iter().filter(|(k, _)| validate_metadata_key(k).is_ok()).collect();
        parts.payload = Payload::serialize(&json!({ "t": texts[2] })).unwrap();
        let event = OutboxEvent::try_from(parts).unwrap();
        proptest::prop_assert_eq!(event.json_len(), event.to_json().len());
        let cloudevent = event.to_cloudevent_json();
        proptest::prop_assert_eq!(event.cloudevent_json_len(), cloudevent.len());
        let parsed: Value = serde_json::from_str(&cloudevent).unwrap();
        proptest::prop_assert_eq!(&OutboxEvent::from_cloudevent(&parsed).unwrap(), &event);
    }
}

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn clock() -> FixedClock {
    FixedClock::new(
        Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap() + chrono::Duration::nanoseconds(123_456_789),
    )
}

fn builder() -> OutboxEventBuilder {
    OutboxEvent::builder("com.example.orders", "OrderPlaced")
        .aggregate("Order", "o-1")
        .sequence(3)
        .payload(&json!({"total": 1999, "lines": [{"sku": "A", "qty": 2}]}))
}

#[test]
fn builds_with_clock_time_truncated_to_millis_and_a_v7_id() {
    let event = builder().build(&clock()).unwrap();
    assert_eq!(
        event.occurred_at(),
        Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap() + chrono::Duration::milliseconds(123)
    );
    assert_eq!(event.id().get_version_num(), 7);
    // The id's time is the clock's, or later: one process-wide context keeps
    // ids monotonic even if an earlier id was made with a later time.
    let (secs, _) = event.id().get_timestamp().unwrap().to_unix();
    assert!(secs >= 1_795_428_000, "{secs}");
    assert_eq!(event.sequence(), 3);
    assert_eq!(event.aggregate_type(), "Order");
    assert!(event.trace_parent().is_none());
}

#[test]
fn ids_are_unique_and_time_ordered_even_within_a_millisecond() {
    let c = clock();
    let a = builder().build(&c).unwrap();
    let b = builder().build(&c).unwrap();
    c.advance(chrono::Duration::milliseconds(1));
    let d = builder().build(&c).unwrap();
    assert!(
        a.id() < b.id() && b.id() < d.id(),
        "{} {} {}",
        a.id(),
        b.id(),
        d.id()
    );
}

#[test]
fn json_round_trip_keeps_every_field() {
    let event = builder()
        .trace_parent(TP)
        .metadata("tenant", "acme")
        .metadata("correlationid", "c-9")
        .build(&clock())
        .unwrap();
    let text = event.to_json();
    assert_eq!(OutboxEvent::from_json(&text).unwrap(), event);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["occurred_at"], "2026-11-23T10:00:00.123Z");
    assert_eq!(v["event_type"], "OrderPlaced");
    assert_eq!(v["trace_parent"], TP);
    assert_eq!(v["metadata"]["tenant"], "acme");
    assert_eq!(v["payload"]["lines"][0]["qty"], 2);
}

#[test]
fn optional_fields_are_left_out_of_json() {
    let v: Value = serde_json::from_str(&builder().build(&clock()).unwrap().to_json()).unwrap();
    assert!(v.get("trace_parent").is_none());
    assert!(v.get("metadata").is_none());
}

#[test]
fn every_empty_name_is_refused_by_name() {
    let cases: [(OutboxEventBuilder, &str); 4] = [
        (OutboxEvent::builder(" ", "T").aggregate("A", "1"), "source"),
        (OutboxEvent::builder("s", "").aggregate("A", "1"), "event_type"),
        (
            OutboxEvent::builder("s", "T").aggregate("", "1"),
            "aggregate_type",
        ),
        (
            OutboxEvent::builder("s", "T").aggregate("A", "\t"),
            "aggregate_id",
        ),
    ];
    for (b, field) in cases {
        let err = b
            .sequence(1)
            .payload_value(json!({}))
            .build(&clock())
            .unwrap_err();
        assert!(
            matches!(err, EnvelopeError::Empty { field: f } if f == field),
            "{field}: {err}"
        );
        assert!(err.to_string().contains(field));
    }
}

#[test]
fn missing_parts_are_named() {
    let c = clock();
    let no_agg = OutboxEvent::builder("s", "T")
        .sequence(1)
        .payload_value(json!(1))
        .build(&c)
        .unwrap_err();
    assert!(matches!(
        no_agg,
        EnvelopeError::Missing {
            field: "aggregate_type"
        }
    ));
    let no_seq = OutboxEvent::builder("s", "T")
        .aggregate("A", "1")
        .payload_value(json!(1))
        .build(&c)
        .unwrap_err();
    assert!(matches!(no_seq, EnvelopeError::Missing { field: "sequence" }));
    let no_payload = OutboxEvent::builder("s", "T")
        .aggregate("A", "1")
        .sequence(1)
        .build(&c)
        .unwrap_err();
    assert!(matches!(no_payload, EnvelopeError::Missing { field: "payload" }));
}

#[test]
fn aggregate_type_with_a_slash_is_refused() {
    let err = builder()
        .aggregate("Order/Line", "1")
        .build(&clock())
        .unwrap_err();
    assert!(err.to_string().contains("aggregate_type"), "{err}");
}

#[test]
fn invalid_traceparents_are_refused() {
    for bad in [
        "",
        "garbage",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ] {
        let err = builder().trace_parent(bad).build(&clock()).unwrap_err();
        assert!(
            matches!(err, EnvelopeError::InvalidTraceParent { .. }),
            "{bad:?} gave {err}"
        );
    }
}

#[test]
fn traceparent_maps_to_an_xray_header() {
    let tp = TraceParent::parse(TP).unwrap();
    assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(tp.parent_id(), "00f067aa0ba902b7");
    assert!(tp.sampled());
    assert_eq!(
        tp.to_xray_header(),
        "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"
    );
    let unsampled = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
    assert!(unsampled.to_xray_header().ends_with("Sampled=0"));
}

#[test]
fn a_payload_that_cannot_be_json_is_an_error() {
    let mut map = std::collections::HashMap::new();
    map.insert((1, 2), "tuple keys are not JSON object keys");
    let err = builder().payload(&map).build(&clock()).unwrap_err();
    assert!(matches!(err, EnvelopeError::Payload(_)));
    assert!(err.to_string().contains("payload"));
}

#[test]
fn bad_metadata_keys_are_refused() {
    for key in [
        "",
        "Tenant",
        "correlation_id",
        "averyveryverylongkeyname",
        "subject",
        "id",
    ] {
        let err = builder().metadata(key, "v").build(&clock()).unwrap_err();
        assert!(
            matches!(err, EnvelopeError::Invalid { ref field, .. } if field == &format!("metadata.{key}")),
            "{key:?}: {err}"
        );
    }
}

#[test]
fn parsing_names_missing_and_malformed_fields() {
    let good: Value = serde_json::from_str(&builder().build(&clock()).unwrap().to_json()).unwrap();
    for field in [
        "id",
        "source",
        "event_type",
        "aggregate_type",
        "aggregate_id",
        "sequence",
        "occurred_at",
        "payload",
    ] {
        let mut v = good.clone();
        v.as_object_mut().unwrap().remove(field);
        let err = OutboxEvent::from_json(&v.to_string()).unwrap_err();
        assert!(
            err.to_string().contains(field) || matches!(err, EnvelopeError::Json(_)),
            "{field}: {err}"
        );
        assert!(
            matches!(err, EnvelopeError::Missing { field: f } if f == field),
            "{field}: {err}"
        );
    }
    let mut v = good.clone();
    v["occurred_at"] = "yesterday".into();
    assert!(
        OutboxEvent::from_json(&v.to_string())
            .unwrap_err()
            .to_string()
            .contains("occurred_at")
    );
    let mut v = good.clone();
    v["sequence"] = json!(-1);
    assert!(matches!(
        OutboxEvent::from_json(&v.to_string()).unwrap_err(),
        EnvelopeError::Json(_)
    ));
    let mut v = good;
    v["surprise"] = json!(true);
    assert!(matches!(
        OutboxEvent::from_json(&v.to_string()).unwrap_err(),
        EnvelopeError::Json(_)
    ));
    assert!(matches!(
        OutboxEvent::from_json("not json").unwrap_err(),
        EnvelopeError::Json(_)
    ));
}

#[test]
fn a_null_payload_round_trips_and_a_missing_one_is_named() {
    let event = builder().payload_value(Value::Null).build(&clock()).unwrap();
    let text = event.to_json();
    assert!(text.contains(r#""payload":null"#), "{text}");
    let back = OutboxEvent::from_json(&text).unwrap();
    assert!(back.payload().is_null());
    assert_eq!(back, event);
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v.as_object_mut().unwrap().remove("payload");
    assert!(matches!(
        OutboxEvent::from_json(&v.to_string()).unwrap_err(),
        EnvelopeError::Missing { field: "payload" }
    ));
}

#[test]
fn payloads_of_any_depth_round_trip_through_the_envelope() {
    // serde_json's Value parser stops at 128 levels; the envelope keeps
    // the payload as text, so the envelope around it adds no limit.
    for depth in [126, 127, 128, 129, MAX_PAYLOAD_DEPTH] {
        let text = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let event = builder().payload_json(text.clone()).build(&clock()).unwrap();
        let back = OutboxEvent::from_json(&event.to_json()).unwrap();
        assert_eq!(back.payload().as_str(), text, "depth {depth}");
        assert_eq!(back.json_len(), event.json_len());
    }
}

#[test]
fn payload_text_is_kept_as_given() {
    let text = r#"{"big":123456789012345678901234567890,"price":1.10}"#;
    let event = builder().payload_json(text).build(&clock()).unwrap();
    assert_eq!(event.payload_json(), text);
    assert!(event.to_json().contains(text));
    let err = builder().payload_json("{oops").build(&clock()).unwrap_err();
    assert!(matches!(err, EnvelopeError::Payload(_)), "{err}");
    let too_deep = format!(
        "{}{}",
        "[".repeat(MAX_PAYLOAD_DEPTH + 1),
        "]".repeat(MAX_PAYLOAD_DEPTH + 1)
    );
    let err = builder().payload_json(too_deep).build(&clock()).unwrap_err();
    assert!(
        matches!(err, EnvelopeError::Invalid { ref field, .. } if field == "payload"),
        "{err}"
    );
}

#[test]
fn parts_round_trip() {
    let event = builder()
        .trace_parent(TP)
        .metadata("tenant", "t")
        .build(&clock())
        .unwrap();
    assert_eq!(OutboxEvent::try_from(event.clone().into_parts()).unwrap(), event);
}

proptest::proptest! {
    #[test]
    fn any_valid_event_round_trips_through_json_and_cloudevents(
        source in "[a-z]{1,8}(\\.[a-z]{1,8}){0,3}",
        event_type in "[A-Za-z]{1,20}",
        aggregate_type in "[A-Za-z]{1,12}",
        aggregate_id in "[^\\s][^\\u{0}]{0,30}",
        sequence in proptest::num::u64::ANY,
        millis in 0i64..4_102_444_800_000,
        text in ".{0,40}",
        number in proptest::num::f64::NORMAL,
        meta in proptest::collection::btree_map("[a-z0-9]{1,20}", ".{0,10}", 0..4),
    ) {
        let mut b = OutboxEvent::builder(source, event_type)
            .aggregate(aggregate_type, aggregate_id)
            .sequence(sequence)
            .occurred_at(DateTime::from_timestamp_millis(millis).unwrap())
            .payload(&json!({"text": text, "n": number}));
        for (k, v) in meta.into_iter().filter(|(k, _)| !RESERVED_ATTRIBUTES.contains(&k.as_str())) {
            b = b.metadata(k, v);
        }
        let event = b.build(&clock()).unwrap();
        proptest::prop_assert_eq!(&OutboxEvent::from_json(&event.to_json()).unwrap(), &event);
        proptest::prop_assert_eq!(&OutboxEvent::from_cloudevent(&event.to_cloudevent().unwrap()).unwrap(), &event);
    }
}
