//! The decoder on generated Streams API records: any attribute map, any
//! event name, with or without images.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodbstreams::types::AttributeValue as StreamsValue;
use proptest::prelude::*;

use super::*;

const NAMES: [&str; 17] = [
    "extra",
    "pk",
    "sk",
    "outbox",
    "ttl",
    "event_id",
    "source",
    "event_type",
    "aggregate_type",
    "aggregate_id",
    "sequence",
    "occurred_at",
    "payload",
    "trace_parent",
    "metadata",
    "other",
    "",
];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(NAMES.to_vec()).prop_map(str::to_owned),
        1 => ".{0,8}",
    ]
}

fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[0-9]{1,40}",
        "-?[0-9]{1,3}\\.[0-9]{1,4}(e-?[0-9]{1,4})?",
        "[0-9]{300,400}",
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_owned()),
        Just("1e400".to_owned()),
        Just(String::new()),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        Just(String::new()),
        Just("v1".to_owned()),
        Just("01a207d9-2100-71a2-bb4c-5d6e7f801234".to_owned()),
        Just("2026-11-23T10:00:00.000Z".to_owned()),
        Just("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
        Just("{\"a\":[1,2,{\"b\":null}]}".to_owned()),
        "OUTBOX#[0-9]{20}#.{0,4}",
    ]
}

fn bytes() -> impl Strategy<Value = Blob> {
    prop::collection::vec(any::<u8>(), 0..24).prop_map(Blob::new)
}

fn leaf() -> impl Strategy<Value = StreamsValue> {
    prop_oneof![
        text().prop_map(StreamsValue::S),
        number_text().prop_map(StreamsValue::N),
        bytes().prop_map(StreamsValue::B),
        any::<bool>().prop_map(StreamsValue::Bool),
        any::<bool>().prop_map(StreamsValue::Null),
        prop::collection::vec(text(), 0..4).prop_map(StreamsValue::Ss),
        prop::collection::vec(number_text(), 0..4).prop_map(StreamsValue::Ns),
        prop::collection::vec(bytes(), 0..4).prop_map(StreamsValue::Bs),
    ]
}

fn value() -> impl Strategy<Value = StreamsValue> {
    let nested = leaf().prop_recursive(6, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(StreamsValue::L),
            prop::collection::hash_map(name(), inner, 0..5).prop_map(StreamsValue::M),
        ]
    });
    // Deep chains, below and beyond the nesting limit.
    let deep = (1usize..80, leaf(), name()).prop_map(|(levels, leaf, key)| {
        (0..levels).fold(leaf, |inner, i| {
            if i % 3 == 0 {
                StreamsValue::L(vec![inner])
            } else {
                StreamsValue::M(HashMap::from([(key.clone(), inner)]))
            }
        })
    });
    prop_oneof![6 => nested, 1 => deep]
}

fn image() -> impl Strategy<Value = HashMap<String, StreamsValue>> {
    let random = prop::collection::hash_map(name(), value(), 0..16);
    // A valid outbox item with some attributes replaced or removed.
    let mutated = (
        1u64..u64::MAX,
        prop_oneof![
            Just(HashMap::new()),
            prop::collection::hash_map(name(), value(), 1..4)
        ],
        prop_oneof![Just(Vec::new()), prop::collection::vec(name(), 1..3)],
    )
        .prop_map(|(sequence, replaced, removed)| {
            let mut item = streams_item(&valid_event("o-1", sequence));
            item.extend(replaced);
            for name in removed {
                item.remove(&name);
            }
            item
        });
    prop_oneof![1 => random, 2 => mutated]
}

fn record() -> impl Strategy<Value = StreamsRecord> {
    let event_name = prop_oneof![
        4 => Just("INSERT"),
        1 => Just("MODIFY"),
        1 => Just("REMOVE"),
        1 => Just("UNKNOWN_TO_SDK_VERSION"),
        1 => Just(""),
    ];
    let identity = prop_oneof![
        Just(None),
        Just(Some(("Service", "dynamodb.amazonaws.com"))),
        Just(Some(("Service", "other"))),
    ];
    (
        event_name,
        identity,
        prop::option::weighted(0.9, image()),
        prop::option::of(prop::collection::hash_map(name(), value(), 0..4)),
        prop::collection::hash_map(name(), value(), 0..3),
        "[1-9][0-9]{20,39}",
    )
        .prop_map(
            |(event_name, identity, new_image, old_image, keys, sequence_number)| {
                StreamsRecord::builder()
                    .event_id("prop")
                    .event_name(OperationType::from(event_name))
                    .aws_region("eu-west-1")
                    .set_user_identity(identity.map(|(kind, principal)| {
                        Identity::builder().r#type(kind).principal_id(principal).build()
                    }))
                    .dynamodb(
                        StreamRecord::builder()
                            .set_keys(Some(keys))
                            .set_new_image(new_image)
                            .set_old_image(old_image)
                            .sequence_number(sequence_number)
                            .size_bytes(1)
                            .build(),
                    )
                    .build()
            },
        )
}

proptest! {
    #[test]
    fn any_record_decodes_without_panic_and_outbox_inserts_are_never_skipped(record in record()) {
        let decoder = decoder();
        let from_streams = decoder.decode_stream_record(&record);
        let twin = lambda_twin(&record);
        let from_lambda = decoder.decode_lambda_record(&twin);

        let insert = record.event_name() == Some(&OperationType::Insert);
        let image = record.dynamodb().and_then(|c| c.new_image());
        let has_image = image.is_some_and(|i| !i.is_empty());
        let has_marker = image.is_some_and(|i| i.contains_key("outbox"));
        match (&from_streams, &from_lambda) {
            (Ok(s), Ok(l)) => assert_same_decoding(s, l),
            (Err(s), Err(l)) => prop_assert_eq!(s, l),
            _ => prop_assert!(false, "{from_streams:?} vs {from_lambda:?}"),
        }
        if insert && !has_image {
            prop_assert!(
                matches!(&from_streams, Err(StreamError::MissingNewImage { .. })),
                "{:?}",
                from_streams
            );
            return Ok(());
        }
        let decoded = from_streams.unwrap();
        prop_assert_eq!(&decoded.position, record.dynamodb().unwrap().sequence_number().unwrap());
        match (&decoded.decoded, insert, has_marker) {
            (Decoded::Event(_), true, true) => {}
            (Decoded::Poison { reason, raw }, true, true) => {
                prop_assert!(!reason.is_empty());
                // (Not parsed back: deep chains exceed serde_json's default recursion limit.)
                let sequence = format!("\"SequenceNumber\":\"{}\"", decoded.position);
                prop_assert!(raw.contains(&sequence));
            }
            (Decoded::Skip(SkipReason::NotOutbox), true, false) => {}
            (Decoded::Skip(_), false, _) => {}
            (other, _, _) => prop_assert!(false, "insert={insert} marker={has_marker}: {other:?}"),
        }
    }
}
