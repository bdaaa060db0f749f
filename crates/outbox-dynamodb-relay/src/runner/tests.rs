//! The stream runner's unit tests.

use std::time::Duration;

use outbox_core::{Decoded, OutboxEvent, RelayRecord, SkipReason, SystemClock};

use super::*;
use crate::Failing;

fn skip(position: &str) -> RelayRecord {
    RelayRecord {
        position: position.into(),
        decoded: Decoded::Skip(SkipReason::NotOutbox),
    }
}

#[test]
fn a_done_batch_checkpoints_its_last_record() {
    let records = [skip("1"), skip("2"), skip("3")];
    assert_eq!(
        plan_batch(&records, None),
        Some(BatchPlan::Done {
            checkpoint: "3".into()
        })
    );
    assert_eq!(plan_batch(&[], None), None);
}

#[test]
fn a_failed_batch_checkpoints_the_record_before_the_failure() {
    let records = [skip("1"), skip("2"), skip("3")];
    assert_eq!(
        plan_batch(&records, Some("2")),
        Some(BatchPlan::Failed {
            checkpoint: Some("1".into()),
            failed: 1
        })
    );
    assert_eq!(
        plan_batch(&records, Some("1")),
        Some(BatchPlan::Failed {
            checkpoint: None,
            failed: 0
        })
    );
    assert_eq!(
        plan_batch(&records, Some("9")),
        Some(BatchPlan::Failed {
            checkpoint: None,
            failed: 0
        })
    );
}

#[test]
fn an_exhausted_record_carries_its_event_and_the_attempts() {
    let event = OutboxEvent::builder("com.example", "Happened")
        .aggregate("A", "1")
        .sequence(1)
        .payload(&serde_json::json!({ "n": 1 }))
        .build(&SystemClock)
        .unwrap();
    let record = RelayRecord {
        position: "42".into(),
        decoded: Decoded::Event(Box::new(event.clone())),
    };
    let failing = |attempts| Failing {
        attempts,
        since_ms: 0,
    };
    let q = exhausted_record(&record, failing(6), Duration::from_secs(900), false);
    assert_eq!(q.position, "42");
    assert_eq!(q.event, Some(event));
    assert_eq!(q.raw, None);
    assert_eq!(
        q.reason,
        "retries exhausted after 6 attempts over 900 s: the sink did not accept the event"
    );
    assert!(
        exhausted_record(&record, failing(2), Duration::ZERO, true)
            .reason
            .contains("deadline")
    );

    let poison = RelayRecord {
        position: "43".into(),
        decoded: Decoded::Poison {
            reason: "bad".into(),
            raw: "{}".into(),
        },
    };
    let q = exhausted_record(&poison, failing(3), Duration::from_secs(1), false);
    assert_eq!((q.event, q.raw.as_deref()), (None, Some("{}")));
    assert!(
        q.reason
            .starts_with("retries exhausted after 3 attempts over 1 s: "),
        "{}",
        q.reason
    );
}

#[test]
fn backoff_doubles_up_to_the_maximum() {
    let config = RunnerConfig::new("me");
    assert_eq!(config.backoff(1), Duration::from_millis(100));
    assert_eq!(config.backoff(2), Duration::from_millis(200));
    assert_eq!(config.backoff(5), Duration::from_millis(1600));
    assert_eq!(config.backoff(6), Duration::from_secs(2));
    assert_eq!(config.backoff(u32::MAX), Duration::from_secs(2));
    assert_eq!(config.backoff(0), Duration::from_millis(100));
}

#[test]
fn config_is_validated() {
    assert!(RunnerConfig::new("me").validate().is_ok());
    let mut config = RunnerConfig::new("me");
    config.batch_limit = MAX_GET_RECORDS_LIMIT + 1;
    assert!(
        matches!(config.validate(), Err(RunnerError::InvalidConfig { reason }) if reason.contains("batch_limit"))
    );
    config.batch_limit = MAX_GET_RECORDS_LIMIT;
    assert!(config.validate().is_ok());
    config.batch_limit = 0;
    assert!(config.validate().is_err());
    let mut config = RunnerConfig::new("me");
    config.owner = String::new();
    assert!(config.validate().is_err());
    config.owner = "me".into();
    config.backoff_max = Duration::from_millis(1);
    assert!(config.validate().is_err());
}

#[test]
fn the_batch_limit_halves_at_the_deadline_and_grows_back_when_batches_are_quick() {
    let deadline = Duration::from_secs(30);
    let (quick, slow) = (Duration::from_secs(2), Duration::from_secs(20));
    // A batch that reached its deadline halves the limit, down to one request.
    assert_eq!(next_limit(1000, 1000, 1000, deadline, deadline, true), 500);
    assert_eq!(next_limit(15, 1000, 15, deadline, deadline, true), 10);
    assert_eq!(next_limit(10, 1000, 3, deadline, deadline, true), 10);
    // Never above what was configured, even when that is below one request.
    assert_eq!(next_limit(4, 4, 4, deadline, deadline, true), 4);
    // A full, quick batch doubles it back, up to the configured limit.
    assert_eq!(next_limit(250, 1000, 250, quick, deadline, false), 500);
    assert_eq!(next_limit(500, 800, 500, quick, deadline, false), 800);
    // A batch that was not full, or took over half the deadline, keeps it.
    assert_eq!(next_limit(250, 1000, 100, quick, deadline, false), 250);
    assert_eq!(next_limit(250, 1000, 250, slow, deadline, false), 250);
    assert_eq!(next_limit(1000, 1000, 1000, quick, deadline, false), 1000);
}
