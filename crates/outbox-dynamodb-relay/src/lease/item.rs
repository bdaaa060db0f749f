//! A lease as an item of the lease table, and back.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use outbox_dynamodb::Item;

use super::{
    ATTR_CHECKPOINT, ATTR_EXPIRES, ATTR_FAILING_POSITION, ATTR_FAILING_SINCE, ATTR_FAILURES, ATTR_FINISHED,
    ATTR_OWNER, ATTR_PARENT, ATTR_PK, ATTR_SK, Failing, malformed,
};
use crate::{Lease, LeaseError, ShardKey};

pub(super) fn key_of(shard: &ShardKey) -> Item {
    HashMap::from([
        (ATTR_PK.to_owned(), AttributeValue::S(shard.stream_arn.clone())),
        (ATTR_SK.to_owned(), AttributeValue::S(shard.shard_id.clone())),
    ])
}

pub(super) fn millis(ms: i64) -> AttributeValue {
    AttributeValue::N(ms.to_string())
}

pub(super) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The failure count and its start in an item just updated.
pub(super) fn failing_of(shard: &ShardKey, item: &Item) -> Result<Failing, LeaseError> {
    let number = |name: &str| match item.get(name) {
        Some(AttributeValue::N(n)) => n
            .parse::<i64>()
            .map_err(|_| malformed(&shard.shard_id, format!("{name} is not an integer"))),
        _ => Err(malformed(&shard.shard_id, format!("{name} missing after update"))),
    };
    Ok(Failing {
        attempts: u32::try_from(number(ATTR_FAILURES)?)
            .map_err(|_| malformed(&shard.shard_id, "failures is out of range"))?,
        since_ms: number(ATTR_FAILING_SINCE)?,
    })
}

/// A lease from its item.
pub(super) fn lease_from_item(item: &Item) -> Result<Lease, LeaseError> {
    let string = |name: &str| -> Result<Option<String>, String> {
        match item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{name} is not a string")),
        }
    };
    let shard_id = string(ATTR_SK).ok().flatten().unwrap_or_else(|| "?".to_owned());
    let fail = |reason: String| malformed(&shard_id, reason);
    let number = |name: &str| -> Result<Option<i64>, String> {
        match item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(n)) => n
                .parse()
                .map(Some)
                .map_err(|_| format!("{name} is not an integer")),
            Some(_) => Err(format!("{name} is not a number")),
        }
    };
    let stream_arn = string(ATTR_PK)
        .map_err(fail)?
        .ok_or_else(|| fail("pk is missing".into()))?;
    if shard_id == "?" {
        return Err(fail("sk is missing".into()));
    }
    let finished = match item.get(ATTR_FINISHED) {
        None | Some(AttributeValue::Null(_)) => false,
        Some(AttributeValue::Bool(b)) => *b,
        Some(_) => return Err(fail("finished is not a boolean".into())),
    };
    let failures = number(ATTR_FAILURES).map_err(fail)?.unwrap_or(0);
    Ok(Lease {
        stream_arn,
        owner: string(ATTR_OWNER).map_err(fail)?,
        expires_at_ms: number(ATTR_EXPIRES).map_err(fail)?.unwrap_or(0),
        checkpoint: string(ATTR_CHECKPOINT).map_err(fail)?,
        finished,
        parent: string(ATTR_PARENT).map_err(fail)?,
        failures: u32::try_from(failures).map_err(|_| fail("failures is out of range".into()))?,
        failing_position: string(ATTR_FAILING_POSITION).map_err(fail)?,
        failing_since_ms: number(ATTR_FAILING_SINCE).map_err(fail)?,
        shard_id,
    })
}
