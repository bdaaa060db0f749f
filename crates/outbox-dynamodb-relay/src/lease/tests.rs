//! The lease store's unit tests.

use std::cmp::Ordering;

use super::error::classify_code;
use super::*;

#[test]
fn sequence_numbers_compare_as_numbers() {
    assert_eq!(compare_sequence_numbers("9", "10"), Ordering::Less);
    assert_eq!(
        compare_sequence_numbers("000000000000000000009", "10"),
        Ordering::Less
    );
    assert_eq!(
        compare_sequence_numbers("000000000000000000100", "000000000000000000099"),
        Ordering::Greater
    );
    assert_eq!(compare_sequence_numbers("007", "7"), Ordering::Equal);
    assert_eq!(compare_sequence_numbers("0", "000"), Ordering::Equal);
    let aws_a = "4421584500000000017450439091";
    let aws_b = "100000000000000000000000000000000001";
    assert_eq!(compare_sequence_numbers(aws_a, aws_b), Ordering::Less);
    assert_eq!(compare_sequence_numbers(aws_b, aws_a), Ordering::Greater);
}

#[test]
fn a_non_number_sorts_after_numbers() {
    assert_eq!(compare_sequence_numbers("12", "x"), Ordering::Less);
    assert_eq!(compare_sequence_numbers("", "1"), Ordering::Greater);
    assert_eq!(compare_sequence_numbers("a", "b"), Ordering::Less);
}

#[test]
fn order_keys_sort_like_the_numbers() {
    let numbers = [
        "0",
        "000000000000000000001",
        "9",
        "10",
        "000000000000000000099",
        "100",
        "4421584500000000017450439091",
        "100000000000000000000000000000000001",
    ];
    let keys: Vec<String> = numbers.iter().map(|n| sequence_order_key(n).unwrap()).collect();
    for (i, a) in numbers.iter().enumerate() {
        for (j, b) in numbers.iter().enumerate() {
            assert_eq!(
                keys[i].cmp(&keys[j]),
                compare_sequence_numbers(a, b),
                "{a} vs {b}"
            );
        }
    }
    assert_eq!(sequence_order_key("000000000000000000042").unwrap(), "00002:42");
    assert!(matches!(
        sequence_order_key("12a"),
        Err(LeaseError::InvalidSequenceNumber { .. })
    ));
    assert!(matches!(
        sequence_order_key(""),
        Err(LeaseError::InvalidSequenceNumber { .. })
    ));
}

fn item(pairs: &[(&str, AttributeValue)]) -> Item {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

#[test]
fn a_lease_item_decodes_with_defaults() {
    let lease = lease_from_item(&item(&[
        ("pk", AttributeValue::S("arn:s".into())),
        ("sk", AttributeValue::S("shard-1".into())),
    ]))
    .unwrap();
    assert_eq!(lease.stream_arn, "arn:s");
    assert_eq!(lease.shard_id, "shard-1");
    assert_eq!(lease.owner, None);
    assert_eq!(lease.expires_at_ms, 0);
    assert!(!lease.finished);
    assert_eq!(lease.failures, 0);

    let lease = lease_from_item(&item(&[
        ("pk", AttributeValue::S("arn:s".into())),
        ("sk", AttributeValue::S("shard-2".into())),
        ("owner", AttributeValue::S("a".into())),
        ("lease_expires_at", AttributeValue::N("1700".into())),
        ("checkpoint", AttributeValue::S("000000000000000000005".into())),
        ("finished", AttributeValue::Bool(true)),
        ("parent", AttributeValue::S("shard-1".into())),
        ("failures", AttributeValue::N("3".into())),
        (
            "failing_position",
            AttributeValue::S("000000000000000000006".into()),
        ),
    ]))
    .unwrap();
    assert_eq!(lease.owner.as_deref(), Some("a"));
    assert_eq!(lease.expires_at_ms, 1700);
    assert_eq!(lease.checkpoint.as_deref(), Some("000000000000000000005"));
    assert!(lease.finished);
    assert_eq!(lease.parent.as_deref(), Some("shard-1"));
    assert_eq!(lease.failures, 3);
    assert_eq!(lease.failing_position.as_deref(), Some("000000000000000000006"));
}

#[test]
fn a_malformed_lease_item_names_the_attribute() {
    let err = lease_from_item(&item(&[
        ("pk", AttributeValue::S("arn:s".into())),
        ("sk", AttributeValue::S("shard-1".into())),
        ("lease_expires_at", AttributeValue::S("soon".into())),
    ]))
    .unwrap_err();
    match err {
        LeaseError::Malformed { shard_id, reason } => {
            assert_eq!(shard_id, "shard-1");
            assert!(reason.contains("lease_expires_at"), "{reason}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    assert!(matches!(
        lease_from_item(&item(&[("pk", AttributeValue::S("arn:s".into()))])),
        Err(LeaseError::Malformed { .. })
    ));
}

#[test]
fn held_by_other_needs_another_unexpired_owner() {
    let mut lease = lease_from_item(&item(&[
        ("pk", AttributeValue::S("arn:s".into())),
        ("sk", AttributeValue::S("shard-1".into())),
    ]))
    .unwrap();
    assert!(!lease.is_held_by_other("me", 100));
    lease.owner = Some("other".into());
    lease.expires_at_ms = 100;
    assert!(lease.is_held_by_other("me", 100));
    assert!(!lease.is_held_by_other("me", 101));
    assert!(!lease.is_held_by_other("other", 50));
}

#[test]
fn error_codes_are_classified() {
    assert_eq!(
        classify_code(Some("ThrottlingException"), false),
        ErrorClass::Transient
    );
    assert_eq!(
        classify_code(Some("LimitExceededException"), false),
        ErrorClass::Transient
    );
    assert_eq!(
        classify_code(Some("InternalServerError"), true),
        ErrorClass::Transient
    );
    assert_eq!(classify_code(Some("Weird"), true), ErrorClass::Transient);
    assert_eq!(
        classify_code(Some("AccessDeniedException"), false),
        ErrorClass::AccessDenied
    );
    assert_eq!(
        classify_code(Some("UnrecognizedClientException"), false),
        ErrorClass::AccessDenied
    );
    assert_eq!(
        classify_code(Some("ResourceNotFoundException"), false),
        ErrorClass::NotFound
    );
    assert_eq!(
        classify_code(Some("ExpiredIteratorException"), false),
        ErrorClass::ExpiredIterator
    );
    assert_eq!(
        classify_code(Some("TrimmedDataAccessException"), false),
        ErrorClass::Trimmed
    );
    assert_eq!(
        classify_code(Some("ValidationException"), false),
        ErrorClass::Rejected
    );
    assert_eq!(classify_code(None, false), ErrorClass::Rejected);
}
