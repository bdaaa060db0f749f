//! `outbox redrive`: lists the relay's quarantine queue (or an on-failure
//! queue) and republishes the events to the bus, deleting each message only
//! once the bus accepted its events. It reads the relay's own messages and
//! the Lambda event source mapping's on-failure messages, whose batch is
//! read back from the stream.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use aws_sdk_sqs::error::DisplayErrorContext;
use outbox_core::{EntryResult, EventSink, OutboxEvent, chunk_ranges};
use outbox_dynamodb_relay::DynamoDbStreamDecoder;
use outbox_eventbridge::{BusFormat, EventBridgeSink, QuarantineMessage};

mod stream_batch;

pub use stream_batch::{BatchRecords, StreamBatch, read_batch};

/// Where [`redrive`] reads: the queue, the claim-check bucket, and the
/// stream behind an event source mapping's on-failure messages.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// The queue's SQS client.
    pub sqs: &'a aws_sdk_sqs::Client,
    /// Reads claim-checked messages.
    pub s3: &'a aws_sdk_s3::Client,
    /// Reads back the batches of on-failure messages.
    pub streams: &'a aws_sdk_dynamodbstreams::Client,
    /// Decodes those batches' records.
    pub decoder: &'a DynamoDbStreamDecoder,
}

/// Most messages one `ReceiveMessage` returns (the SQS API reference: 1 to 10).
pub const MAX_RECEIVE_MESSAGES: i32 = 10;
/// Longest long-poll wait of one `ReceiveMessage`, in seconds (SQS: 0 to 20).
pub const MAX_WAIT_SECONDS: i32 = 20;
/// Longest visibility timeout SQS takes, in seconds (12 hours).
pub const MAX_VISIBILITY_TIMEOUT_SECONDS: i32 = 12 * 3600;

/// `outbox redrive`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RedriveArgs {
    /// URL of the quarantine queue (the relay's OUTBOX_QUARANTINE_QUEUE_URL).
    #[arg(long, env = "OUTBOX_QUARANTINE_QUEUE_URL")]
    pub queue_url: String,
    /// Event bus to republish to, name or ARN (required unless --dry-run).
    #[arg(long, env = "OUTBOX_EVENT_BUS_NAME", required_unless_present = "dry_run")]
    pub bus: Option<String>,
    /// Form of each entry's Detail: the outbox envelope, or a CloudEvents 1.0
    /// event (as the relay publishes, so consumers see one form).
    #[arg(long, env = "OUTBOX_BUS_FORMAT", default_value_t = BusFormat::Envelope)]
    pub bus_format: BusFormat,
    /// Republish only this event id (repeatable). Default: every event in the queue.
    #[arg(long = "event-id", value_name = "ID")]
    pub event_ids: Vec<String>,
    /// Only list what is in the queue: publish nothing, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds the received messages stay hidden from other readers while this
    /// command runs. What is not deleted is made visible again at the end; if
    /// the command dies, it reappears after this.
    #[arg(long, default_value_t = 120, value_parser = visibility_range())]
    pub visibility_timeout: i32,
    /// Long-poll seconds of each receive; the listing ends at the first empty receive.
    #[arg(long, default_value_t = 1, value_parser = wait_range())]
    pub wait_seconds: i32,
}

fn visibility_range() -> clap::builder::RangedI64ValueParser<i32> {
    clap::value_parser!(i32).range(1..=i64::from(MAX_VISIBILITY_TIMEOUT_SECONDS))
}

fn wait_range() -> clap::builder::RangedI64ValueParser<i32> {
    clap::value_parser!(i32).range(0..=i64::from(MAX_WAIT_SECONDS))
}

/// What [`redrive`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveOptions {
    /// The quarantine queue.
    pub queue_url: String,
    /// Event ids to republish; empty: all.
    pub event_ids: Vec<String>,
    /// Only list.
    pub dry_run: bool,
    /// Visibility timeout of the receives, in seconds.
    pub visibility_timeout: i32,
    /// Long-poll wait of each receive, in seconds.
    pub wait_seconds: i32,
}

impl RedriveOptions {
    /// Options for `queue_url`: every event, not a dry run, a 120 s
    /// visibility timeout, 1 s long polls.
    pub fn new(queue_url: impl Into<String>) -> Self {
        Self {
            queue_url: queue_url.into(),
            event_ids: Vec::new(),
            dry_run: false,
            visibility_timeout: 120,
            wait_seconds: 1,
        }
    }
}

/// What [`redrive`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedriveReport {
    /// Messages in the queue (as received during this run).
    pub listed: usize,
    /// Events the bus accepted whose message was deleted.
    pub republished: usize,
    /// Messages whose events the bus accepted but which could not be
    /// deleted (they will be redriven again: consumers de-duplicate on the
    /// event id).
    pub not_deleted: usize,
    /// Event source mapping on-failure messages read back from the stream.
    pub batches: usize,
    /// Selected events the bus did not accept: left in the queue.
    pub failed: usize,
    /// Events not selected by `--event-id`: left in the queue.
    pub not_selected: usize,
    /// Poison records (only the raw record, no event): left in the queue.
    pub raw_only: usize,
    /// Messages that are not quarantine messages, or whose event does not
    /// validate: left in the queue.
    pub unreadable: usize,
    /// Selected event ids that are not in the queue.
    pub not_found: Vec<String>,
}

/// Why the redrive stopped, or did not republish everything it should have.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedriveError {
    /// The quarantine queue could not be read.
    #[error("receiving from the quarantine queue {queue_url} failed")]
    Receive {
        /// The queue.
        queue_url: String,
        /// The SDK error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The listing could not be written.
    #[error("writing the listing failed")]
    Output(#[from] std::io::Error),
    /// Some selected events were not republished (they are still in the
    /// queue), or some selected ids were not found.
    #[error("{failed} selected event(s) not republished and {not_found} not found in the queue")]
    Incomplete {
        /// Events the bus did not accept.
        failed: usize,
        /// Selected ids not in the queue.
        not_found: usize,
    },
}

/// One received message.
struct Received {
    message_id: String,
    receipt_handle: String,
    content: Content,
}

/// What a message holds.
enum Content {
    /// A quarantined event.
    Event(Box<QuarantineMessage>, Box<OutboxEvent>),
    /// An event source mapping's failed batch, read back from the stream.
    StreamBatch(Box<StreamBatch>, BatchRecords),
    /// A poison record: only the raw record.
    RawOnly(Box<QuarantineMessage>),
    /// Not a quarantine message, or an event that does not validate.
    Unreadable(String),
}

fn sdk_source<E: std::error::Error + Send + Sync + 'static>(
    e: E,
) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}

/// Receives every message of the queue (each hidden for the visibility
/// timeout), until a receive returns nothing new.
async fn receive_all(sources: &Sources<'_>, options: &RedriveOptions) -> Result<Vec<Received>, RedriveError> {
    let sqs = sources.sqs;
    let mut received: Vec<Received> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    loop {
        let page = sqs
            .receive_message()
            .queue_url(&options.queue_url)
            .max_number_of_messages(MAX_RECEIVE_MESSAGES)
            .visibility_timeout(options.visibility_timeout)
            .wait_time_seconds(options.wait_seconds)
            .send()
            .await
            .map_err(|e| RedriveError::Receive {
                queue_url: options.queue_url.clone(),
                source: sdk_source(e),
            })?;
        let mut new = 0;
        for m in page.messages() {
            let message_id = m.message_id().unwrap_or_default().to_owned();
            let receipt_handle = m.receipt_handle().unwrap_or_default().to_owned();
            if let Some(&i) = index.get(&message_id) {
                // Seen before (its visibility timeout passed): keep the newest handle.
                received[i].receipt_handle = receipt_handle;
                continue;
            }
            new += 1;
            index.insert(message_id.clone(), received.len());
            received.push(Received {
                message_id,
                receipt_handle,
                content: read(sources, m.body().unwrap_or_default()).await,
            });
        }
        if new == 0 {
            return Ok(received);
        }
    }
}

/// What a message body holds: a quarantine message (its claim-checked
/// object read from S3), or an on-failure message (its batch read back from
/// the stream).
async fn read(sources: &Sources<'_>, body: &str) -> Content {
    let message = match QuarantineMessage::from_body(body) {
        Ok(m) => m,
        Err(e) => {
            let Some(batch) = StreamBatch::from_body(body) else {
                return Content::Unreadable(format!("neither a quarantine nor an on-failure message: {e}"));
            };
            return match read_batch(sources.streams, sources.decoder, &batch).await {
                Ok(records) => Content::StreamBatch(Box::new(batch), records),
                Err(why) => Content::Unreadable(format!(
                    "on-failure batch {}..{} of shard {}: {why}",
                    batch.start_sequence_number, batch.end_sequence_number, batch.shard_id
                )),
            };
        }
    };
    let message = match message.resolve(sources.s3).await {
        Ok(m) => m,
        Err(e) => return Content::Unreadable(outbox_core::error_chain(&e)),
    };
    match message.outbox_event() {
        Some(Ok(event)) => Content::Event(Box::new(message), Box::new(event)),
        Some(Err(e)) => Content::Unreadable(format!("its event does not validate: {e}")),
        None => Content::RawOnly(Box::new(message)),
    }
}

/// One line per message: event id, type, position, reason.
fn list(received: &[Received], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<36}  {:<24}  {:<24}  REASON",
        "EVENT ID", "EVENT TYPE", "POSITION"
    )?;
    for r in received {
        match &r.content {
            Content::Event(m, e) => writeln!(
                out,
                "{:<36}  {:<24}  {:<24}  {}",
                e.id(),
                e.event_type(),
                m.position,
                m.reason
            )?,
            Content::StreamBatch(batch, records) => {
                writeln!(
                    out,
                    "{:<36}  {:<24}  {:<24}  [on-failure batch of shard {}, {} event(s) read back from the stream, \
                     {} skipped, {} poison]",
                    "-",
                    "-",
                    format!("{}..{}", batch.start_sequence_number, batch.end_sequence_number),
                    batch.shard_id,
                    records.events.len(),
                    records.skipped,
                    records.poison
                )?;
                for e in &records.events {
                    writeln!(
                        out,
                        "{:<36}  {:<24}  {:<24}  in the batch above",
                        e.id(),
                        e.event_type(),
                        ""
                    )?;
                }
            }
            Content::RawOnly(m) => writeln!(
                out,
                "{:<36}  {:<24}  {:<24}  {}  [raw record only: fix it and republish its event; left in the queue]",
                "-", "-", m.position, m.reason
            )?,
            Content::Unreadable(why) => writeln!(
                out,
                "{:<36}  {:<24}  {:<24}  [message {}: {why}; left in the queue]",
                "-", "-", "-", r.message_id
            )?,
        }
    }
    Ok(())
}

/// Lists the quarantine queue on `out` (a message whose record is stored by
/// claim-check is read whole from S3 with `s3`) and, unless `options.dry_run`,
/// republishes the selected events (`options.event_ids`, or all) through
/// `sink`, in the queue's order, in chunks the sink takes, reading every
/// per-entry result. A message is deleted only after the bus accepted its
/// event. What is left (raw-only records, unselected or failed events,
/// unreadable messages) is made visible again at the end.
pub async fn redrive<S: EventSink>(
    sources: &Sources<'_>,
    sink: &S,
    options: &RedriveOptions,
    out: &mut dyn Write,
) -> Result<RedriveReport, RedriveError> {
    let sqs = sources.sqs;
    let received = receive_all(sources, options).await?;
    let mut report = RedriveReport {
        listed: received.len(),
        ..RedriveReport::default()
    };
    writeln!(out, "queue {}: {} message(s)", options.queue_url, received.len())?;
    list(&received, out)?;

    let wanted: HashSet<&str> = options.event_ids.iter().map(String::as_str).collect();
    let mut selected: Vec<(&Received, &OutboxEvent)> = Vec::new();
    // The events each deletable message still waits for: a message is
    // deleted once the bus accepted all of them, and only if all were selected.
    let mut outstanding: HashMap<&str, usize> = HashMap::new();
    let mut seen_ids = HashSet::new();
    for r in &received {
        let events: Vec<&OutboxEvent> = match &r.content {
            Content::Event(_, event) => vec![&**event],
            Content::StreamBatch(_, records) => {
                report.batches += 1;
                records.events.iter().collect()
            }
            Content::RawOnly(_) => {
                report.raw_only += 1;
                continue;
            }
            Content::Unreadable(_) => {
                report.unreadable += 1;
                continue;
            }
        };
        let mut count = 0;
        let mut whole = true;
        for event in events {
            let id = event.id().to_string();
            if wanted.is_empty() || wanted.contains(id.as_str()) {
                selected.push((r, event));
                count += 1;
            } else {
                report.not_selected += 1;
                whole = false;
            }
            seen_ids.insert(id);
        }
        if whole {
            outstanding.insert(r.message_id.as_str(), count);
        }
    }
    report.not_found = options
        .event_ids
        .iter()
        .filter(|id| !seen_ids.contains(id.as_str()))
        .cloned()
        .collect();
    for id in &report.not_found {
        writeln!(out, "not found in the queue: {id}")?;
    }

    let mut deleted: HashSet<&str> = HashSet::new();
    if options.dry_run {
        writeln!(
            out,
            "dry run: {} event(s) would be republished; nothing published, nothing deleted",
            selected.len()
        )?;
    } else {
        let limits = sink.limits();
        let sizes: Vec<usize> = selected.iter().map(|(_, e)| sink.entry_size(e)).collect();
        let mut progress = crate::progress::Progress::new("redrive: republished", Some(selected.len()));
        let mut done: Vec<&Received> = received
            .iter()
            .filter(|r| outstanding.get(r.message_id.as_str()) == Some(&0))
            .collect();
        for range in chunk_ranges(&sizes, limits) {
            progress.tick(range.start);
            let chunk = &selected[range.clone()];
            let results = if sizes[range.start] > limits.max_bytes {
                vec![Err(format!(
                    "{} bytes, more than one request takes ({})",
                    sizes[range.start], limits.max_bytes
                ))]
            } else {
                let events: Vec<&OutboxEvent> = chunk.iter().map(|(_, e)| *e).collect();
                match sink.publish(&events).await {
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
            for (i, (r, event)) in chunk.iter().enumerate() {
                match results.get(i).cloned().unwrap_or_else(|| Err("no result".into())) {
                    Ok(()) => {
                        report.republished += 1;
                        writeln!(out, "republished {} ({})", event.id(), event.event_type())?;
                        if let Some(left) = outstanding.get_mut(r.message_id.as_str()) {
                            *left -= 1;
                            if *left == 0 {
                                done.push(r);
                            }
                        }
                    }
                    Err(why) => {
                        report.failed += 1;
                        outstanding.remove(r.message_id.as_str());
                        writeln!(
                            out,
                            "not republished {}: {why}; its message stays in the queue",
                            event.id()
                        )?;
                    }
                }
            }
            for r in done.drain(..) {
                if delete(sqs, &options.queue_url, r, &mut report, out).await? {
                    deleted.insert(r.message_id.as_str());
                }
            }
        }
        // Messages with nothing to republish (a batch of skips) when no chunk ran.
        for r in done {
            if delete(sqs, &options.queue_url, r, &mut report, out).await? {
                deleted.insert(r.message_id.as_str());
            }
        }
    }

    // Make what stays visible again now, so the next run (or a dry run
    // followed by a real one) sees it at once.
    for r in received
        .iter()
        .filter(|r| !deleted.contains(r.message_id.as_str()))
    {
        if let Err(e) = sqs
            .change_message_visibility()
            .queue_url(&options.queue_url)
            .receipt_handle(&r.receipt_handle)
            .visibility_timeout(0)
            .send()
            .await
        {
            tracing::warn!(
                message_id = %r.message_id,
                error = %DisplayErrorContext(&e),
                "could not make the message visible again"
            );
        }
    }

    writeln!(
        out,
        "redrive: {} listed, {} republished, {} failed, {} not selected, {} raw-only and {} unreadable left in the queue{}",
        report.listed,
        report.republished,
        report.failed,
        report.not_selected,
        report.raw_only,
        report.unreadable,
        if report.raw_only > 0 {
            " (raw-only records need fixing first: correct the item, or rebuild its event, then publish it)"
        } else {
            ""
        }
    )?;
    Ok(report)
}

/// Deletes the message of `r`, whose events the bus accepted; a failure is
/// counted and said on `out` (the message will be redriven again).
async fn delete(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    r: &Received,
    report: &mut RedriveReport,
    out: &mut dyn Write,
) -> std::io::Result<bool> {
    let gone = sqs
        .delete_message()
        .queue_url(queue_url)
        .receipt_handle(&r.receipt_handle)
        .send()
        .await;
    match gone {
        Ok(_) => Ok(true),
        Err(e) => {
            report.not_deleted += 1;
            tracing::warn!(message_id = %r.message_id, error = %DisplayErrorContext(&e), "DeleteMessage failed");
            writeln!(
                out,
                "message {} was republished but not deleted ({}); it will be redriven again",
                r.message_id,
                DisplayErrorContext(&e)
            )?;
            Ok(false)
        }
    }
}

/// `outbox redrive`: the AWS configuration from the environment, the
/// clients, [`redrive`], and an error if a selected event was not
/// republished or not found.
pub async fn run(args: &RedriveArgs, out: &mut dyn Write) -> Result<RedriveReport, RedriveError> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let options = RedriveOptions {
        queue_url: args.queue_url.clone(),
        event_ids: args.event_ids.clone(),
        dry_run: args.dry_run,
        visibility_timeout: args.visibility_timeout,
        wait_seconds: args.wait_seconds,
    };
    let sink = EventBridgeSink::new(
        aws_sdk_eventbridge::Client::new(&sdk),
        args.bus.clone().unwrap_or_default(),
    )
    .with_bus_format(args.bus_format);
    let env = outbox_core::Env::process();
    let table = env.text(outbox_lambda::ENV_TABLE_NAME).unwrap_or_default();
    let decoder = DynamoDbStreamDecoder::new(outbox_lambda::schema_from_env(&env, &table));
    let sources = Sources {
        sqs: &aws_sdk_sqs::Client::new(&sdk),
        s3: &aws_sdk_s3::Client::new(&sdk),
        streams: &aws_sdk_dynamodbstreams::Client::new(&sdk),
        decoder: &decoder,
    };
    let report = redrive(&sources, &sink, &options, out).await?;
    if report.failed > 0 || !report.not_found.is_empty() {
        return Err(RedriveError::Incomplete {
            failed: report.failed,
            not_found: report.not_found.len(),
        });
    }
    Ok(report)
}
