//! Which runners are alive on a stream, so that each can take its fair
//! share of the shards: every runner announces itself in the lease table,
//! again with each lease renewal, and withdraws when it stops.
//!
//! | attribute | type | value |
//! |---|---|---|
//! | `pk` | S | `<stream ARN>#runners` (apart from the stream's leases) |
//! | `sk` | S | the runner's owner id |
//! | `lease_expires_at` | N | epoch milliseconds; the runner counts until then |

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::lease::{ATTR_EXPIRES, ATTR_PK, ATTR_SK, lease_error};
use crate::{DynamoDbLeaseStore, LeaseError};

/// The partition of a stream's presence items.
fn presence_key(stream_arn: &str) -> String {
    format!("{stream_arn}#runners")
}

impl DynamoDbLeaseStore {
    /// Announces that `owner` runs on `stream_arn` for `duration` from now.
    pub async fn announce(
        &self,
        stream_arn: &str,
        owner: &str,
        duration: Duration,
    ) -> Result<(), LeaseError> {
        let until = self.now_ms() + i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        self.client
            .put_item()
            .table_name(&self.table)
            .item(ATTR_PK, AttributeValue::S(presence_key(stream_arn)))
            .item(ATTR_SK, AttributeValue::S(owner.to_owned()))
            .item(ATTR_EXPIRES, AttributeValue::N(until.to_string()))
            .send()
            .await
            .map_err(|e| lease_error(&self.table, e))?;
        Ok(())
    }

    /// The runners on `stream_arn` whose announcement has not expired, in
    /// owner order (strongly consistent).
    pub async fn runners(&self, stream_arn: &str) -> Result<Vec<String>, LeaseError> {
        let now = self.now_ms();
        let mut runners: Vec<String> = self
            .partition(&presence_key(stream_arn))
            .await?
            .iter()
            .filter_map(|item| {
                let owner = item.get(ATTR_SK).and_then(|v| v.as_s().ok())?;
                let until = item
                    .get(ATTR_EXPIRES)
                    .and_then(|v| v.as_n().ok())?
                    .parse::<i64>()
                    .ok()?;
                (until >= now).then(|| owner.clone())
            })
            .collect();
        runners.sort();
        Ok(runners)
    }

    /// Withdraws `owner`'s announcement on `stream_arn` (a graceful stop).
    pub async fn withdraw(&self, stream_arn: &str, owner: &str) -> Result<(), LeaseError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(ATTR_PK, AttributeValue::S(presence_key(stream_arn)))
            .key(ATTR_SK, AttributeValue::S(owner.to_owned()))
            .send()
            .await
            .map_err(|e| lease_error(&self.table, e))?;
        Ok(())
    }
}
