//! A range worker: reads its feed range from the lease's continuation,
//! relays each page, and checkpoints the continuation past what is done.

use std::num::NonZeroU32;

use azure_data_cosmos::FeedScope;
use azure_data_cosmos::feed::{ContinuationToken, FeedRange};
use azure_data_cosmos::models::ChangeFeedItem;
use azure_data_cosmos::options::{ChangeFeedOptions, ChangeFeedStartFrom, MaxItemCountHint};
use futures_util::stream::StreamExt;
use outbox_core::host::{Stop, StopSignal, WorkerExit, lease_call};
use outbox_core::{BatchOutcome, Decoded, EventSink, Quarantine, RelayRecord, SkipReason};
use serde_json::Value;
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::{ErrorClass, classify};
use crate::{Lease, ProcessorError};

use super::{CosmosChangeFeedProcessor, refused};

type Exit = WorkerExit<ProcessorError>;

impl<S: EventSink, Q: Quarantine> CosmosChangeFeedProcessor<S, Q> {
    /// Works one leased range until told to stop, the lease is lost, or the run fails.
    pub(super) async fn work(&self, lease: Lease, range: FeedRange, mut stop: StopSignal) -> Exit {
        let (lease, stop) = (&lease, &mut stop);
        let owner = self.config.owner.as_str();
        let page_size = MaxItemCountHint::Limit(
            NonZeroU32::new(self.config.max_items_per_page).unwrap_or(NonZeroU32::MIN),
        );
        // The position everything before which is done (checkpointed).
        let mut checkpoint: Option<String> = lease.continuation.clone();
        let mut stream = None;
        let mut idle = 0u32;
        let mut errors = 0u32;
        let mut failures = 0u32;
        loop {
            match stop.state() {
                Stop::Run => {}
                Stop::Finish => return Exit::Finished,
                Stop::Lost => return Exit::Lost,
            }
            if stream.is_none() {
                let mut options = ChangeFeedOptions::default().with_max_item_count(page_size);
                if let Some(token) = &checkpoint {
                    options = options.with_continuation_token(ContinuationToken::from_string(token.clone()));
                }
                let opened = Box::pin(self.monitored.query_change_feed::<Value>(
                    FeedScope::range(range.clone()),
                    ChangeFeedStartFrom::Beginning,
                    Some(options),
                ))
                .await;
                match opened {
                    Ok(pages) => stream = Some(pages),
                    Err(error) => {
                        if classify(&error) == ErrorClass::Permanent {
                            return Exit::Fatal(refused("opening the change feed", error));
                        }
                        errors += 1;
                        tracing::warn!(attempt = errors, error = %error, "opening the change feed failed; retrying");
                        stop.pause(self.config.backoff(errors)).await;
                        continue;
                    }
                }
            }
            let Some(pages) = stream.as_mut() else {
                continue;
            };
            let page = match pages.next().await {
                Some(Ok(page)) => page,
                Some(Err(error)) => {
                    stream = None;
                    self.count(|r| r.stream_rebuilds += 1);
                    if classify(&error) == ErrorClass::Permanent {
                        return Exit::Fatal(refused("reading the change feed", error));
                    }
                    errors += 1;
                    tracing::warn!(attempt = errors, error = %error, "change-feed read failed; rebuilding the stream from the last checkpoint");
                    stop.pause(self.config.backoff(errors)).await;
                    continue;
                }
                None => {
                    stream = None;
                    self.count(|r| r.stream_rebuilds += 1);
                    tracing::warn!("change-feed stream ended; rebuilding it from the last checkpoint");
                    continue;
                }
            };
            errors = 0;
            if page.items().is_empty() {
                idle += 1;
                stop.pause(self.config.backoff(idle)).await;
                continue;
            }
            idle = 0;
            let next = match pages.to_continuation_token() {
                Ok(token) => token.as_str().to_owned(),
                Err(error) => {
                    tracing::warn!(error = %error, "no continuation after a page; reading it again");
                    stream = None;
                    continue;
                }
            };
            let records = self.decode_page(page.items());
            let span = tracing::info_span!("page", records = records.len());
            let outcome = self
                .relay
                .relay(&records, Some(Instant::now() + self.config.batch_deadline))
                .instrument(span)
                .await;
            self.tally(&outcome);
            match &outcome.first_failure {
                None => {
                    if let Err(exit) = lease_call(stop, self.config.backoffs(), || {
                        self.leases.checkpoint(&lease.id, owner, &next)
                    })
                    .await
                    {
                        return exit;
                    }
                    tracing::debug!(
                        records = records.len(),
                        published = outcome.published,
                        "page done"
                    );
                    checkpoint = Some(next);
                    failures = 0;
                }
                Some(position) => {
                    failures += 1;
                    self.count(|r| r.failed_pages += 1);
                    tracing::warn!(
                        %position,
                        attempt = failures,
                        failed = outcome.failed,
                        deadline_reached = outcome.deadline_reached,
                        "page not fully delivered; not checkpointing, reading again from the last checkpoint"
                    );
                    stream = None;
                    stop.pause(self.config.backoff(failures)).await;
                }
            }
        }
    }

    fn decode_page(&self, items: &[ChangeFeedItem<Value>]) -> Vec<RelayRecord> {
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item.current() {
                Some(document) => self.decoder.decode_change(i, document),
                None => RelayRecord {
                    position: format!("#{i}"),
                    decoded: Decoded::Skip(SkipReason::NotInsert {
                        event_name: "delete".into(),
                    }),
                },
            })
            .collect()
    }

    fn tally(&self, outcome: &BatchOutcome) {
        self.count(|r| {
            r.pages += 1;
            r.records += outcome.records;
            r.published += outcome.published;
            r.skipped += outcome.skipped;
            r.quarantined += outcome.quarantined;
        });
    }
}
