//! CloudWatch embedded metric format (EMF): one JSON log line per batch that
//! CloudWatch turns into metrics, with no API call from the function.

use outbox_core::BatchOutcome;
use serde_json::{Value, json};

/// EMF takes at most 100 values per metric in one line.
pub const MAX_EMF_VALUES: usize = 100;

/// The EMF line for one batch: counts of published, skipped, quarantined,
/// failed and retried records, the batch size, and the age of each published
/// event at publication (commit to bus, in milliseconds; up to
/// [`MAX_EMF_VALUES`] values, plus their maximum).
pub fn emf_line(outcome: &BatchOutcome, namespace: &str, function_name: &str, timestamp_ms: i64) -> String {
    let ages: Vec<i64> = outcome
        .publish_ages_ms
        .iter()
        .copied()
        .take(MAX_EMF_VALUES)
        .collect();
    let max_age = outcome.publish_ages_ms.iter().copied().max();
    let count = |name: &str| json!({ "Name": name, "Unit": "Count" });
    let ms = |name: &str| json!({ "Name": name, "Unit": "Milliseconds" });
    let mut metrics = vec![
        count("BatchSize"),
        count("EventsPublished"),
        count("RecordsSkipped"),
        count("RecordsQuarantined"),
        count("RecordsFailed"),
        count("EntriesRetried"),
    ];
    let mut line = json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [],
        },
        "FunctionName": function_name,
        "BatchSize": outcome.records,
        "EventsPublished": outcome.published,
        "RecordsSkipped": outcome.skipped,
        "RecordsQuarantined": outcome.quarantined,
        "RecordsFailed": outcome.failed,
        "EntriesRetried": outcome.retried,
    });
    if let (Some(max), Value::Object(map)) = (max_age, &mut line) {
        metrics.push(ms("EventAge"));
        metrics.push(ms("MaxEventAge"));
        map.insert("EventAge".into(), json!(ages));
        map.insert("MaxEventAge".into(), json!(max));
    }
    line["_aws"]["CloudWatchMetrics"] = json!([{
        "Namespace": namespace,
        "Dimensions": [["FunctionName"]],
        "Metrics": metrics,
    }]);
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_declares_every_metric_it_carries() {
        let mut outcome = BatchOutcome::default();
        outcome.records = 5;
        outcome.published = 3;
        outcome.skipped = 1;
        outcome.quarantined = 1;
        outcome.publish_ages_ms = vec![12, 40, 7];
        let line: Value =
            serde_json::from_str(&emf_line(&outcome, "OutboxRelay", "relay-fn", 1_700_000_000_000)).unwrap();
        assert_eq!(line["_aws"]["Timestamp"], 1_700_000_000_000i64);
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "OutboxRelay");
        assert_eq!(directive["Dimensions"], json!([["FunctionName"]]));
        for metric in directive["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(line.get(name).is_some(), "metric {name} has no value");
        }
        assert_eq!(line["FunctionName"], "relay-fn");
        assert_eq!(line["EventsPublished"], 3);
        assert_eq!(line["RecordsQuarantined"], 1);
        assert_eq!(line["EventAge"], json!([12, 40, 7]));
        assert_eq!(line["MaxEventAge"], 40);
    }

    #[test]
    fn ages_are_capped_at_the_emf_value_limit_and_absent_when_nothing_was_published() {
        let mut outcome = BatchOutcome::default();
        outcome.publish_ages_ms = (0..250).collect();
        let line: Value = serde_json::from_str(&emf_line(&outcome, "N", "f", 0)).unwrap();
        assert_eq!(line["EventAge"].as_array().unwrap().len(), MAX_EMF_VALUES);
        assert_eq!(line["MaxEventAge"], 249);
        let empty: Value = serde_json::from_str(&emf_line(&BatchOutcome::default(), "N", "f", 0)).unwrap();
        assert!(empty.get("EventAge").is_none());
        assert_eq!(
            empty["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .len(),
            6
        );
    }
}
