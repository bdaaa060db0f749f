//! The change-feed processor's unit tests.

use std::time::Duration;

use super::*;
use crate::LEASE_KIND;

fn range(min: &str, max: &str) -> FeedRange {
    use azure_data_cosmos::models::EffectivePartitionKey;
    FeedRange::new(
        EffectivePartitionKey::try_from(min).unwrap(),
        EffectivePartitionKey::try_from(max).unwrap(),
    )
    .unwrap()
}

fn lease_of(r: &FeedRange) -> Lease {
    serde_json::from_value(serde_json::json!({
        "id": "x", "kind": LEASE_KIND, "prefix": "p", "feed_range": r.to_string(),
    }))
    .unwrap()
}

#[test]
fn a_split_range_is_replaced_by_children_that_cover_it() {
    let parent = range("", "FF");
    let left = range("", "7F");
    let right = range("7F", "FF");
    assert_eq!(range("", "FF"), FeedRange::full());
    assert_eq!(
        split_children(&lease_of(&parent), &[right.clone(), left.clone()]),
        Some(vec![left.clone(), right.clone()])
    );
    assert_eq!(
        split_children(&lease_of(&parent), std::slice::from_ref(&parent)),
        None,
        "not split"
    );
    assert_eq!(
        split_children(&lease_of(&left), std::slice::from_ref(&parent)),
        None,
        "merged: the lease keeps its sub-range"
    );
    assert_eq!(
        split_children(&lease_of(&parent), &[left, range("80", "FF")]),
        None,
        "children that leave a gap are not a split (yet)"
    );
}

#[test]
fn config_is_validated_and_backoff_doubles_to_the_cap() {
    let config = ProcessorConfig::new("me");
    assert!(config.validate().is_ok());
    assert_eq!(config.backoff(1), Duration::from_millis(100));
    assert_eq!(config.backoff(3), Duration::from_millis(400));
    assert_eq!(config.backoff(30), Duration::from_secs(1));
    let mut bad = config.clone();
    bad.max_items_per_page = 0;
    assert!(
        matches!(bad.validate(), Err(ProcessorError::InvalidConfig { reason }) if reason.contains("max_items_per_page"))
    );
    let mut bad = config.clone();
    bad.owner = " ".into();
    assert!(bad.validate().is_err());
    let mut bad = config;
    bad.backoff_max = Duration::from_millis(1);
    assert!(bad.validate().is_err());
}
