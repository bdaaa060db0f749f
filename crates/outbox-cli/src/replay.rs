//! `outbox replay`: republishes outbox events still in a table, for an
//! aggregate or a time range, to recover a consumer.

use std::collections::HashMap;
use std::io::Write;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use outbox_core::{EntryResult, EventSink, OutboxEvent, chunk_ranges};
use outbox_dynamodb::{ATTR_OCCURRED_AT, Item, OutboxSchema};
use outbox_eventbridge::{BusFormat, EventBridgeSink};

/// Sort key prefix of outbox items (`OUTBOX#<sequence, 20 digits>#<id>`).
const SORT_KEY_PREFIX: &str = "OUTBOX#";

/// `outbox replay`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The table holding the outbox items.
    #[arg(long, env = "OUTBOX_TABLE_NAME")]
    pub table: String,
    /// Event bus to republish to, name or ARN (required unless --dry-run).
    #[arg(long, env = "OUTBOX_EVENT_BUS_NAME", required_unless_present = "dry_run")]
    pub bus: Option<String>,
    /// Form of each entry's Detail: the outbox envelope, or a CloudEvents 1.0
    /// event (as the relay publishes, so consumers see one form).
    #[arg(long, env = "OUTBOX_BUS_FORMAT", default_value_t = BusFormat::Envelope)]
    pub bus_format: BusFormat,
    /// Replay one aggregate's events (with --aggregate-id): a Query of its
    /// partition `<type>#<id>`, in sequence order.
    #[arg(long, requires = "aggregate_id")]
    pub aggregate_type: Option<String>,
    /// The aggregate's id (with --aggregate-type).
    #[arg(long, requires = "aggregate_type")]
    pub aggregate_id: Option<String>,
    /// Only events that occurred at or after this time (RFC 3339, e.g. 2026-03-01T12:00:00Z).
    #[arg(long, value_parser = parse_time)]
    pub from: Option<DateTime<Utc>>,
    /// Only events that occurred before this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub to: Option<DateTime<Utc>>,
    /// Only this event (repeatable): e.g. a poison item once it is fixed,
    /// whose corrected item the relay does not publish (it is a MODIFY).
    #[arg(long = "event-id", value_name = "ID")]
    pub event_ids: Vec<String>,
    /// Only list the events: publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Partition key attribute of the outbox items.
    #[arg(long, env = "OUTBOX_PARTITION_KEY", default_value = "pk")]
    pub partition_key: String,
    /// Sort key attribute of the outbox items.
    #[arg(long, env = "OUTBOX_SORT_KEY", default_value = "sk")]
    pub sort_key: String,
    /// Marker attribute of the outbox items.
    #[arg(long, env = "OUTBOX_MARKER_ATTRIBUTE", default_value = "outbox")]
    pub marker_attribute: String,
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 time ({e})"))
}

/// Which events [`replay`] republishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaySelection {
    /// One aggregate's events, in sequence order (a Query of its partition).
    Aggregate {
        /// The aggregate type, e.g. `Order`.
        aggregate_type: String,
        /// The aggregate id.
        aggregate_id: String,
    },
    /// Every outbox item of the table (a Scan), in `occurred_at` order.
    Table,
}

/// What [`replay`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOptions {
    /// The table and its attribute names.
    pub schema: OutboxSchema,
    /// An aggregate or the whole table.
    pub selection: ReplaySelection,
    /// Only events with `occurred_at >= from`.
    pub from: Option<DateTime<Utc>>,
    /// Only events with `occurred_at < to`.
    pub to: Option<DateTime<Utc>>,
    /// Items whose TTL is before this are left out (DynamoDB deletes expired
    /// items some time after their TTL).
    pub now: DateTime<Utc>,
    /// Only these event ids; empty: every event selected.
    pub event_ids: Vec<String>,
    /// Only list.
    pub dry_run: bool,
}

/// What [`replay`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Events found.
    pub found: usize,
    /// Events the bus accepted.
    pub published: usize,
    /// Events the bus did not accept.
    pub failed: usize,
    /// Items with the marker that do not decode (left out).
    pub undecodable: usize,
}

/// Why the replay stopped, or did not republish everything.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// Neither an aggregate nor a time range was given.
    #[error("say what to replay: --aggregate-type and --aggregate-id, and/or --from / --to")]
    NothingSelected,
    /// `--from` is not before `--to`.
    #[error("--from ({from}) must be before --to ({to})")]
    EmptyRange {
        /// The start.
        from: String,
        /// The end.
        to: String,
    },
    /// The table could not be read.
    #[error("reading the outbox items of {table} failed")]
    Read {
        /// The table.
        table: String,
        /// The SDK error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The listing could not be written.
    #[error("writing the listing failed")]
    Output(#[from] std::io::Error),
    /// Some events were not republished.
    #[error("{failed} of {found} event(s) were not republished")]
    Incomplete {
        /// Events the bus did not accept.
        failed: usize,
        /// Events found.
        found: usize,
    },
}

fn time_text(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The filter of the read: outbox items (the marker), within their TTL, in
/// the time range. `occurred_at` is stored as RFC 3339 UTC with
/// milliseconds, so text order is time order.
pub fn filter_expression(
    options: &ReplayOptions,
) -> (String, HashMap<String, String>, HashMap<String, AttributeValue>) {
    let mut names = HashMap::from([
        ("#marker".to_owned(), options.schema.marker_attribute().to_owned()),
        ("#ttl".to_owned(), options.schema.ttl_attribute().to_owned()),
    ]);
    let mut values = HashMap::from([(
        ":now".to_owned(),
        AttributeValue::N(options.now.timestamp().to_string()),
    )]);
    let mut clauses = vec![
        "attribute_exists(#marker)".to_owned(),
        "(attribute_not_exists(#ttl) OR #ttl >= :now)".to_owned(),
    ];
    if options.from.is_some() || options.to.is_some() {
        names.insert("#occurred_at".into(), ATTR_OCCURRED_AT.into());
    }
    if let Some(from) = &options.from {
        values.insert(":from".into(), AttributeValue::S(time_text(from)));
        clauses.push("#occurred_at >= :from".into());
    }
    if let Some(to) = &options.to {
        values.insert(":to".into(), AttributeValue::S(time_text(to)));
        clauses.push("#occurred_at < :to".into());
    }
    (clauses.join(" AND "), names, values)
}

/// Reads the selected outbox items, every page.
async fn read_items(
    dynamodb: &aws_sdk_dynamodb::Client,
    options: &ReplayOptions,
) -> Result<Vec<Item>, ReplayError> {
    let schema = &options.schema;
    let read_error = |e: Box<dyn std::error::Error + Send + Sync>| ReplayError::Read {
        table: schema.table().to_owned(),
        source: e,
    };
    let (filter, mut names, mut values) = filter_expression(options);
    let mut items = Vec::new();
    let mut start: Option<Item> = None;
    match &options.selection {
        ReplaySelection::Aggregate {
            aggregate_type,
            aggregate_id,
        } => {
            names.insert("#pk".into(), schema.partition_key().into());
            names.insert("#sk".into(), schema.sort_key().into());
            values.insert(
                ":pk".into(),
                AttributeValue::S(format!("{aggregate_type}#{aggregate_id}")),
            );
            values.insert(":prefix".into(), AttributeValue::S(SORT_KEY_PREFIX.into()));
            loop {
                let page = dynamodb
                    .query()
                    .table_name(schema.table())
                    .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                    .filter_expression(&filter)
                    .set_expression_attribute_names(Some(names.clone()))
                    .set_expression_attribute_values(Some(values.clone()))
                    .set_exclusive_start_key(start.take())
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| read_error(Box::new(e)))?;
                items.extend(page.items().iter().cloned());
                match page.last_evaluated_key() {
                    Some(key) if !key.is_empty() => start = Some(key.clone()),
                    _ => return Ok(items),
                }
            }
        }
        ReplaySelection::Table => loop {
            let page = dynamodb
                .scan()
                .table_name(schema.table())
                .filter_expression(&filter)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .set_exclusive_start_key(start.take())
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| read_error(Box::new(e)))?;
            items.extend(page.items().iter().cloned());
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(items),
            }
        },
    }
}

/// Lists the selected outbox events of `options.schema`'s table on `out`
/// and, unless `options.dry_run`, republishes them through `sink` in order
/// (an aggregate's in sequence order; a table's by `occurred_at`, then
/// sequence), chunk after chunk, reading every per-entry result.
pub async fn replay<S: EventSink>(
    dynamodb: &aws_sdk_dynamodb::Client,
    sink: &S,
    options: &ReplayOptions,
    out: &mut dyn Write,
) -> Result<ReplayReport, ReplayError> {
    if let (Some(from), Some(to)) = (&options.from, &options.to)
        && from >= to
    {
        return Err(ReplayError::EmptyRange {
            from: time_text(from),
            to: time_text(to),
        });
    }
    let items = read_items(dynamodb, options).await?;
    let mut report = ReplayReport::default();
    let mut events: Vec<OutboxEvent> = Vec::with_capacity(items.len());
    for item in &items {
        match options.schema.decode_item(item) {
            Ok(event) => events.push(event),
            Err(e) => {
                report.undecodable += 1;
                let key = |name: &str| match item.get(name) {
                    Some(AttributeValue::S(s)) => s.clone(),
                    _ => "?".into(),
                };
                writeln!(
                    out,
                    "skipped undecodable item {}={} {}={}: {e}",
                    options.schema.partition_key(),
                    key(options.schema.partition_key()),
                    options.schema.sort_key(),
                    key(options.schema.sort_key())
                )?;
            }
        }
    }
    if !options.event_ids.is_empty() {
        events.retain(|e| options.event_ids.iter().any(|id| *id == e.id().to_string()));
    }
    if options.selection == ReplaySelection::Table {
        events.sort_by(|a, b| {
            (a.occurred_at(), a.sequence(), a.id()).cmp(&(b.occurred_at(), b.sequence(), b.id()))
        });
    }
    report.found = events.len();
    writeln!(
        out,
        "{:<24}  {:<36}  {:<32}  {:>8}  EVENT TYPE",
        "OCCURRED AT", "EVENT ID", "AGGREGATE", "SEQUENCE"
    )?;
    for e in &events {
        writeln!(
            out,
            "{:<24}  {:<36}  {:<32}  {:>8}  {}",
            time_text(&e.occurred_at()),
            e.id(),
            format!("{}#{}", e.aggregate_type(), e.aggregate_id()),
            e.sequence(),
            e.event_type()
        )?;
    }
    if options.dry_run {
        writeln!(
            out,
            "dry run: {} event(s) found in {}; nothing published",
            report.found,
            options.schema.table()
        )?;
        return Ok(report);
    }
    let limits = sink.limits();
    let sizes: Vec<usize> = events.iter().map(|e| sink.entry_size(e)).collect();
    let mut progress = crate::progress::Progress::new("replay: republished", Some(events.len()));
    for range in chunk_ranges(&sizes, limits) {
        progress.tick(report.published + report.failed);
        let chunk: Vec<&OutboxEvent> = events[range.clone()].iter().collect();
        let results: Vec<Result<(), String>> = if sizes[range.start] > limits.max_bytes {
            vec![Err(format!(
                "{} bytes, more than one request takes ({})",
                sizes[range.start], limits.max_bytes
            ))]
        } else {
            match sink.publish(&chunk).await {
                Ok(results) => results
                    .into_iter()
                    .map(|r| match r {
                        EntryResult::Published => Ok(()),
                        EntryResult::Failed { code, message, .. } => Err(format!("{code}: {message}")),
                    })
                    .collect(),
                Err(e) => vec![Err(e.to_string()); chunk.len()],
            }
        };
        for (i, event) in chunk.iter().enumerate() {
            match results.get(i).cloned().unwrap_or_else(|| Err("no result".into())) {
                Ok(()) => report.published += 1,
                Err(why) => {
                    report.failed += 1;
                    writeln!(out, "not republished {}: {why}", event.id())?;
                }
            }
        }
    }
    writeln!(
        out,
        "replay: {} event(s) found in {}, {} republished, {} failed, {} undecodable item(s) skipped",
        report.found,
        options.schema.table(),
        report.published,
        report.failed,
        report.undecodable
    )?;
    Ok(report)
}

impl ReplayArgs {
    /// The options these arguments say, at `now`.
    pub fn options(&self, now: DateTime<Utc>) -> Result<ReplayOptions, ReplayError> {
        let selection = match (&self.aggregate_type, &self.aggregate_id) {
            (Some(t), Some(id)) => ReplaySelection::Aggregate {
                aggregate_type: t.clone(),
                aggregate_id: id.clone(),
            },
            _ if self.from.is_some() || self.to.is_some() => ReplaySelection::Table,
            _ => return Err(ReplayError::NothingSelected),
        };
        Ok(ReplayOptions {
            schema: OutboxSchema::new(&self.table)
                .with_partition_key(&self.partition_key)
                .with_sort_key(&self.sort_key)
                .with_marker_attribute(&self.marker_attribute),
            selection,
            from: self.from,
            to: self.to,
            now,
            event_ids: self.event_ids.clone(),
            dry_run: self.dry_run,
        })
    }
}

/// `outbox replay`: the AWS configuration from the environment, the
/// clients, [`replay`], and an error if some event was not republished.
pub async fn run(args: &ReplayArgs, out: &mut dyn Write) -> Result<ReplayReport, ReplayError> {
    let options = args.options(Utc::now())?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let sink = EventBridgeSink::new(
        aws_sdk_eventbridge::Client::new(&sdk),
        args.bus.clone().unwrap_or_default(),
    )
    .with_bus_format(args.bus_format);
    let report = replay(&dynamodb, &sink, &options, out).await?;
    if report.failed > 0 {
        return Err(ReplayError::Incomplete {
            failed: report.failed,
            found: report.found,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn options(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> ReplayOptions {
        ReplayOptions {
            schema: OutboxSchema::new("orders"),
            selection: ReplaySelection::Table,
            from,
            to,
            now: Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
            event_ids: Vec::new(),
            dry_run: true,
        }
    }

    #[test]
    fn the_filter_keeps_outbox_items_within_their_ttl_and_the_range() {
        let from = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
        let (filter, names, values) = filter_expression(&options(Some(from), None));
        assert_eq!(
            filter,
            "attribute_exists(#marker) AND (attribute_not_exists(#ttl) OR #ttl >= :now) AND #occurred_at >= :from"
        );
        assert_eq!(names["#marker"], "outbox");
        assert_eq!(names["#occurred_at"], "occurred_at");
        assert_eq!(
            values[":from"],
            AttributeValue::S("2026-02-01T00:00:00.000Z".into())
        );
        assert_eq!(values[":now"], AttributeValue::N("1772323200".into()));
        assert!(!values.contains_key(":to"));

        let (filter, names, _) = filter_expression(&options(None, None));
        assert!(!filter.contains("occurred_at") && !names.contains_key("#occurred_at"));
    }

    #[test]
    fn arguments_must_select_something() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: ReplayArgs,
        }
        let now = Utc::now();
        let parse = |extra: &[&str]| {
            Cli::try_parse_from(["replay", "--table", "t", "--bus", "b"].iter().chain(extra)).map(|c| c.args)
        };
        assert!(matches!(
            parse(&[]).unwrap().options(now),
            Err(ReplayError::NothingSelected)
        ));
        assert!(
            parse(&["--aggregate-type", "Order"]).is_err(),
            "an aggregate type needs an id"
        );
        assert!(parse(&["--from", "yesterday"]).is_err());
        let o = parse(&["--aggregate-type", "Order", "--aggregate-id", "o-1"])
            .unwrap()
            .options(now)
            .unwrap();
        assert_eq!(
            o.selection,
            ReplaySelection::Aggregate {
                aggregate_type: "Order".into(),
                aggregate_id: "o-1".into()
            }
        );
        let o = parse(&["--from", "2026-03-01T12:00:00+01:00"])
            .unwrap()
            .options(now)
            .unwrap();
        assert_eq!(
            (o.selection, o.from),
            (
                ReplaySelection::Table,
                Some(Utc.with_ymd_and_hms(2026, 3, 1, 11, 0, 0).unwrap())
            )
        );
    }
}
