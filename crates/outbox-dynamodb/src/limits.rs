//! DynamoDB service limits that the writer checks before any call, and the
//! item-size arithmetic they need.

use aws_sdk_dynamodb::types::AttributeValue;

/// Most actions in one `TransactWriteItems` call (DynamoDB quotas, "Transactions":
/// up to 100 unique items per transaction; it was 25 before 2022).
pub const MAX_TRANSACT_ITEMS: usize = 100;

/// Largest item, attribute names and values included (DynamoDB quotas: 400 KB).
pub const MAX_ITEM_SIZE_BYTES: usize = 400 * 1024;

/// Largest aggregate size of the items in one transaction (DynamoDB quotas: 4 MB).
pub const MAX_TRANSACTION_SIZE_BYTES: usize = 4 * 1024 * 1024;

/// Longest `ClientRequestToken` (TransactWriteItems API reference: 1 to 36 characters).
pub const MAX_CLIENT_REQUEST_TOKEN_LEN: usize = 36;

/// The size `event` counts as an Amazon EventBridge `PutEvents` entry once
/// the relay publishes it, as AWS documents it ("Calculating PutEvents event
/// entry size"): 14 bytes for `Time`, plus the UTF-8 bytes of `Source`,
/// `DetailType` and `Detail` (the envelope's JSON). The writer refuses an
/// event that could never be published before it is committed.
pub fn published_size(event: &outbox_core::OutboxEvent) -> usize {
    14 + event.source().len() + event.event_type().len() + event.json_len()
}

/// The size DynamoDB counts for an item: for each attribute, the UTF-8 length
/// of its name plus the size of its value, as the developer guide's "Item
/// sizes and formats" describes (numbers: one byte per two significant
/// digits plus one; maps and lists: three bytes plus one per element).
pub fn item_size<'a>(attributes: impl IntoIterator<Item = (&'a String, &'a AttributeValue)>) -> usize {
    attributes
        .into_iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

fn number_size(n: &str) -> usize {
    let mantissa = n.split(['e', 'E']).next().unwrap_or(n);
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    let first = digits.iter().position(|d| *d != b'0');
    let last = digits.iter().rposition(|d| *d != b'0');
    let significant = match (first, last) {
        (Some(f), Some(l)) => l - f + 1,
        _ => 1,
    };
    significant.div_ceil(2) + 1
}

pub(crate) fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|x| value_size(x) + 1).sum::<usize>(),
        AttributeValue::M(m) => 3 + m.iter().map(|(k, x)| k.len() + value_size(x) + 1).sum::<usize>(),
        // A value type added to the SDK after this was written: count nothing
        // rather than guess; DynamoDB itself still enforces its limits.
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn sizes_follow_the_documented_rules() {
        let s = |v: &str| AttributeValue::S(v.into());
        let n = |v: &str| AttributeValue::N(v.into());
        assert_eq!(value_size(&s("héllo")), 6);
        assert_eq!(value_size(&n("12345")), 4);
        assert_eq!(value_size(&n("-0.00120")), 2);
        assert_eq!(value_size(&n("0")), 2);
        assert_eq!(value_size(&n("1E+10")), 2);
        assert_eq!(value_size(&AttributeValue::Bool(true)), 1);
        assert_eq!(
            value_size(&AttributeValue::L(vec![s("ab"), n("1")])),
            3 + (2 + 1) + (2 + 1)
        );
        let m = HashMap::from([("k".to_string(), s("abc"))]);
        assert_eq!(value_size(&AttributeValue::M(m.clone())), 3 + 1 + 3 + 1);
        assert_eq!(item_size(&m), 4);
    }
}
