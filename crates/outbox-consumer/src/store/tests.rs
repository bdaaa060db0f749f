//! The idempotency store's unit tests.

use super::*;
use chrono::TimeZone;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn store() -> IdempotencyStore {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .build();
    IdempotencyStore::new(Client::from_conf(config), "idempotency", "billing")
        .with_in_progress_expiry(Duration::from_secs(30))
        .with_completed_ttl(Duration::from_secs(3600))
}

#[test]
fn keys_are_scoped_and_an_empty_id_is_refused() {
    assert_eq!(store().key("e-1").unwrap(), "billing#e-1");
    assert!(matches!(store().key(" "), Err(ConsumerError::Invalid { .. })));
}

#[test]
fn a_claim_expires_after_the_in_progress_expiry_and_is_kept_for_the_ttl() {
    let (item, expires_at) = store().in_progress_item("billing#e-1", t0());
    assert_eq!(expires_at, t0() + TimeDelta::seconds(30));
    let record = IdempotencyRecord::from_item(&item).unwrap();
    assert_eq!(record.status, RecordStatus::InProgress);
    assert_eq!(record.expires_at, Some(expires_at));
    assert_eq!(record.ttl, Some(t0().timestamp() + 3600));
    assert_eq!(record.result, None);
}

#[test]
fn record_states_follow_the_claim_condition() {
    let s = store();
    let (item, expires_at) = s.in_progress_item("billing#e-1", t0());
    let claim = IdempotencyRecord::from_item(&item).unwrap();
    assert_eq!(claim.state_at(t0()), RecordState::InProgress(expires_at));
    assert_eq!(
        claim.state_at(expires_at - TimeDelta::milliseconds(1)),
        RecordState::InProgress(expires_at)
    );
    assert_eq!(claim.state_at(expires_at), RecordState::Absent);

    let done = IdempotencyRecord::from_item(&s.completed_item("billing#e-1", t0(), Some("42"))).unwrap();
    assert_eq!(done.result.as_deref(), Some("42"));
    assert_eq!(
        done.state_at(t0() + TimeDelta::seconds(3600)),
        RecordState::Completed
    );
    assert_eq!(
        done.state_at(t0() + TimeDelta::seconds(3601)),
        RecordState::Absent
    );
}

#[test]
fn malformed_records_name_what_is_wrong() {
    let mut item = store().completed_item("billing#e-1", t0(), None);
    item.insert(ATTR_STATUS.into(), AttributeValue::S("DONE".into()));
    let err = IdempotencyRecord::from_item(&item).unwrap_err();
    assert!(err.to_string().contains("DONE"), "{err}");

    let mut item = store().in_progress_item("billing#e-1", t0()).0;
    item.remove(ATTR_EXPIRES_AT);
    let err = IdempotencyRecord::from_item(&item).unwrap_err();
    assert!(err.to_string().contains(ATTR_EXPIRES_AT), "{err}");
}

#[test]
fn the_marker_is_a_completed_record_put_only_if_absent() {
    let marker = store().transaction_marker("e-1").unwrap();
    let put = marker.put().unwrap();
    assert_eq!(put.table_name(), "idempotency");
    assert_eq!(put.condition_expression(), Some("attribute_not_exists(#pk)"));
    let record = IdempotencyRecord::from_item(put.item()).unwrap();
    assert_eq!(record.key, "billing#e-1");
    assert_eq!(record.status, RecordStatus::Completed);
    assert!(record.ttl.is_some());
}
