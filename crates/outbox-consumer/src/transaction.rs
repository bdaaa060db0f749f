//! The transactional mode's pure halves: the consumer's items with the
//! idempotency record appended, and what a cancelled transaction means.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{CancellationReason, TransactWriteItem};

use crate::error::{sdk_error, service_error};
use crate::{ConsumerError, MAX_TRANSACT_ITEMS};

/// `items` with `marker` appended, and the marker's position. Refuses more
/// than [`MAX_TRANSACT_ITEMS`] actions in all.
pub(crate) fn with_marker(
    mut items: Vec<TransactWriteItem>,
    marker: TransactWriteItem,
) -> Result<(Vec<TransactWriteItem>, usize), ConsumerError> {
    let count = items.len() + 1;
    if count > MAX_TRANSACT_ITEMS {
        return Err(ConsumerError::TooManyActions {
            count,
            limit: MAX_TRANSACT_ITEMS,
        });
    }
    let index = items.len();
    items.push(marker);
    Ok((items, index))
}

/// What the cancellation reasons (one code per action, in order; `None` for
/// an action that did not fail) mean for a transaction whose idempotency
/// record is at `marker_index`. The marker's failed condition wins: when the
/// event was already processed, the caller's own failures follow from that.
pub(crate) fn from_reason_codes(
    codes: &[Option<&str>],
    id: &str,
    marker_index: usize,
) -> Option<ConsumerError> {
    let code = |i: usize| codes.get(i).copied().flatten().unwrap_or("None");
    let find = |wanted: &[&str]| (0..codes.len()).find(|&i| wanted.contains(&code(i)));
    if code(marker_index) == "ConditionalCheckFailed" {
        return Some(ConsumerError::Duplicate { id: id.to_owned() });
    }
    if let Some(operation) = find(&["ConditionalCheckFailed"]) {
        return Some(ConsumerError::ConditionFailed { operation });
    }
    if find(&["TransactionConflict"]).is_some() {
        return Some(ConsumerError::TransactionConflict);
    }
    if find(&["ProvisionedThroughputExceeded", "ThrottlingError"]).is_some() {
        return Some(ConsumerError::Throttled);
    }
    find(&["ValidationError", "ItemCollectionSizeLimitExceeded"]).map(|i| ConsumerError::Rejected {
        code: code(i).to_owned(),
        message: format!("operation #{i} of the consumer's transaction was refused"),
    })
}

/// A [`ConsumerError`] from a failed `TransactWriteItems`.
pub(crate) fn classify(
    err: SdkError<TransactWriteItemsError, HttpResponse>,
    id: &str,
    marker_index: usize,
) -> ConsumerError {
    let service = match err {
        SdkError::ServiceError(se) => se.into_err(),
        other => return sdk_error(other),
    };
    if let TransactWriteItemsError::TransactionCanceledException(cancel) = &service {
        let codes: Vec<Option<&str>> = cancel
            .cancellation_reasons()
            .iter()
            .map(CancellationReason::code)
            .collect();
        if let Some(err) = from_reason_codes(&codes, id, marker_index) {
            return err;
        }
    }
    service_error(service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::ConditionCheck;

    fn item() -> TransactWriteItem {
        TransactWriteItem::builder()
            .condition_check(
                ConditionCheck::builder()
                    .table_name("t")
                    .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("k".into()))
                    .condition_expression("attribute_exists(pk)")
                    .build()
                    .unwrap(),
            )
            .build()
    }

    #[test]
    fn the_marker_goes_last_and_counts_towards_the_limit() {
        let (items, index) = with_marker(vec![item(), item()], item()).unwrap();
        assert_eq!((items.len(), index), (3, 2));

        let at_limit = vec![item(); MAX_TRANSACT_ITEMS - 1];
        assert_eq!(with_marker(at_limit, item()).unwrap().0.len(), MAX_TRANSACT_ITEMS);
        let over = vec![item(); MAX_TRANSACT_ITEMS];
        assert!(matches!(
            with_marker(over, item()),
            Err(ConsumerError::TooManyActions {
                count: 101,
                limit: 100
            })
        ));
    }

    #[test]
    fn a_failed_marker_is_a_duplicate_even_when_the_callers_condition_failed_too() {
        let codes = [
            Some("ConditionalCheckFailed"),
            Some("None"),
            Some("ConditionalCheckFailed"),
        ];
        assert!(matches!(
            from_reason_codes(&codes, "e-1", 2),
            Some(ConsumerError::Duplicate { id }) if id == "e-1"
        ));
    }

    #[test]
    fn a_failed_caller_condition_names_the_operation() {
        let codes = [Some("None"), Some("ConditionalCheckFailed"), Some("None")];
        assert!(matches!(
            from_reason_codes(&codes, "e-1", 2),
            Some(ConsumerError::ConditionFailed { operation: 1 })
        ));
    }

    #[test]
    fn conflicts_and_throttling_are_retryable() {
        let conflict = from_reason_codes(&[None, Some("TransactionConflict")], "e", 1).unwrap();
        assert!(matches!(conflict, ConsumerError::TransactionConflict) && conflict.is_retryable());
        let throttled = from_reason_codes(&[Some("ThrottlingError"), None], "e", 1).unwrap();
        assert!(matches!(throttled, ConsumerError::Throttled) && throttled.is_retryable());
        let refused = from_reason_codes(&[Some("ValidationError"), None], "e", 1).unwrap();
        assert!(matches!(refused, ConsumerError::Rejected { .. }) && !refused.is_retryable());
        assert!(from_reason_codes(&[None, None], "e", 1).is_none());
    }
}
