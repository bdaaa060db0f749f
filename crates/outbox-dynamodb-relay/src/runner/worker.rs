//! A shard worker: reads its shard from the checkpoint, relays each batch,
//! checkpoints what is done, and retries or sends to the on-failure queue
//! what is not.

use std::time::Duration;

use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use aws_smithy_types::error::display::DisplayErrorContext;
use outbox_core::host::{Stop, StopSignal, WorkerExit, lease_call};
use outbox_core::{BatchOutcome, Decoded, EventSink, Quarantine, QuarantinedRecord, RelayRecord};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::{DynamoDbStreamRunner, ReadError, Start, read_error};
use crate::{Failing, Lease, RunnerError, ShardKey};

type Exit = WorkerExit<RunnerError>;

/// The shortest time between two checkpoints within a batch: each is a
/// lease-table write.
const MID_BATCH_CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// The smallest adapted batch: one `PutEvents` request.
const MIN_ADAPTED_LIMIT: i32 = 10;

/// The `GetRecords` limit for the next batch, after one of `records` read
/// with `limit` that took `elapsed` of its `deadline`.
///
/// Halved after a batch that reached its deadline, so that under a slow bus
/// a batch ends inside it with little given up at the end (given-up calls are
/// the ones that may arrive twice); doubled back towards `configured` after
/// a full batch that took less than half of it.
pub(super) fn next_limit(
    limit: i32,
    configured: i32,
    records: usize,
    elapsed: Duration,
    deadline: Duration,
    deadline_reached: bool,
) -> i32 {
    if deadline_reached {
        (limit / 2).max(MIN_ADAPTED_LIMIT).min(configured)
    } else if usize::try_from(limit).is_ok_and(|limit| records >= limit) && elapsed < deadline / 2 {
        limit.saturating_mul(2).min(configured)
    } else {
        limit
    }
}

/// What to checkpoint after a relayed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum BatchPlan {
    /// Every record is done: checkpoint the last.
    Done { checkpoint: String },
    /// The record at index `failed` is not done: checkpoint the one before
    /// it (if any) and read again from it.
    Failed {
        checkpoint: Option<String>,
        failed: usize,
    },
}

/// The plan for a non-empty batch and its outcome's `first_failure`. A
/// failure position that is not in the batch (which the relay never reports)
/// retries the whole batch.
pub(super) fn plan_batch(records: &[RelayRecord], first_failure: Option<&str>) -> Option<BatchPlan> {
    let last = records.last()?;
    Some(match first_failure {
        None => BatchPlan::Done {
            checkpoint: last.position.clone(),
        },
        Some(position) => {
            let failed = records.iter().position(|r| r.position == position).unwrap_or(0);
            BatchPlan::Failed {
                checkpoint: failed.checked_sub(1).map(|i| records[i].position.clone()),
                failed,
            }
        }
    })
}

/// What goes to the on-failure destination for a record whose retries are
/// exhausted.
pub(super) fn exhausted_record(
    record: &RelayRecord,
    failing: Failing,
    failing_for: Duration,
    deadline_reached: bool,
) -> QuarantinedRecord {
    let (event, raw, why) = match &record.decoded {
        Decoded::Event(event) => (
            Some((**event).clone()),
            None,
            if deadline_reached {
                "the batch deadline passed before the sink accepted the event"
            } else {
                "the sink did not accept the event"
            },
        ),
        Decoded::Poison { raw, .. } => (
            None,
            Some(raw.clone()),
            "the quarantine did not accept the poison record",
        ),
        Decoded::Skip(_) => (None, None, "the record was not done"),
    };
    QuarantinedRecord {
        position: record.position.clone(),
        reason: format!(
            "retries exhausted after {} attempts over {} s: {why}",
            failing.attempts,
            failing_for.as_secs()
        ),
        event,
        raw,
    }
}

impl<S: EventSink, Q: Quarantine, F: Quarantine> DynamoDbStreamRunner<S, Q, F> {
    /// Works one shard until it is finished, its lease is lost, or the run stops.
    pub(super) async fn work(&self, lease: Lease, mut stop: StopSignal) -> Exit {
        let stop = &mut stop;
        let lease = &lease;
        let key = ShardKey::new(&self.stream_arn, &lease.shard_id);
        let owner = self.config.owner.as_str();
        let mut start = lease.checkpoint.clone().map_or(Start::TrimHorizon, Start::After);
        let mut iterator: Option<String> = None;
        let mut idle = 0u32;
        let mut errors = 0u32;
        let mut limit = self.config.batch_limit;
        loop {
            match stop.state() {
                Stop::Run => {}
                Stop::Finish => return Exit::Finished,
                Stop::Lost => return Exit::Lost,
            }
            let current = match iterator.take() {
                Some(current) => current,
                None => match self.shard_iterator(&key.shard_id, &start).await {
                    Ok(Some(current)) => current,
                    Ok(None) => {
                        tracing::info!(start = ?start, "no iterator for the shard: it is closed and read");
                        return self.finish(&key, stop).await;
                    }
                    Err(ReadError::Trimmed) if start != Start::TrimHorizon => {
                        tracing::warn!(
                            shard_id = %key.shard_id,
                            start = ?start,
                            "records after the checkpoint were trimmed before they were read; restarting at TRIM_HORIZON"
                        );
                        start = Start::TrimHorizon;
                        continue;
                    }
                    Err(ReadError::Gone) => {
                        tracing::warn!(shard_id = %key.shard_id, "shard no longer in the stream; finishing it");
                        return self.finish(&key, stop).await;
                    }
                    Err(ReadError::Fatal(error)) => return Exit::Fatal(error),
                    Err(other) => {
                        errors += 1;
                        self.transient("GetShardIterator", errors, other, stop).await;
                        continue;
                    }
                },
            };
            let page = match self
                .streams
                .get_records()
                .shard_iterator(&current)
                .limit(limit)
                .send()
                .await
            {
                Ok(page) => page,
                Err(err) => match read_error("GetRecords", err) {
                    ReadError::Expired => {
                        tracing::debug!(start = ?start, "shard iterator expired; getting a new one");
                        continue;
                    }
                    ReadError::Trimmed => {
                        tracing::warn!(
                            shard_id = %key.shard_id,
                            start = ?start,
                            "records were trimmed before they were read; restarting at TRIM_HORIZON"
                        );
                        start = Start::TrimHorizon;
                        continue;
                    }
                    ReadError::Gone => {
                        tracing::warn!(shard_id = %key.shard_id, "shard no longer in the stream; finishing it");
                        return self.finish(&key, stop).await;
                    }
                    ReadError::Fatal(error) => return Exit::Fatal(error),
                    other @ ReadError::Transient(_) => {
                        errors += 1;
                        iterator = Some(current);
                        self.transient("GetRecords", errors, other, stop).await;
                        continue;
                    }
                },
            };
            errors = 0;
            let next = page.next_shard_iterator;
            let records = page.records.unwrap_or_default();
            if records.is_empty() {
                match next {
                    None => return self.finish(&key, stop).await,
                    Some(next) => {
                        iterator = Some(next);
                        idle += 1;
                        stop.pause(self.config.backoff(idle)).await;
                        continue;
                    }
                }
            }
            idle = 0;
            let decoded = match records
                .iter()
                .map(|record| self.decoder.decode_stream_record(record))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(decoded) => decoded,
                Err(error) => return Exit::Fatal(RunnerError::Decode(error)),
            };
            let span = tracing::info_span!("batch", records = decoded.len());
            let started = Instant::now();
            let outcome = self.relay_checkpointing(&key, &decoded).instrument(span).await;
            let elapsed = started.elapsed();
            self.count(&outcome, elapsed);
            let adapted = next_limit(
                limit,
                self.config.batch_limit,
                decoded.len(),
                elapsed,
                self.config.batch_deadline,
                outcome.deadline_reached,
            );
            if adapted != limit {
                tracing::info!(
                    from = limit,
                    to = adapted,
                    elapsed_ms = elapsed.as_millis(),
                    deadline_reached = outcome.deadline_reached,
                    "batch limit adapted"
                );
                limit = adapted;
            }
            let Some(plan) = plan_batch(&decoded, outcome.first_failure.as_deref()) else {
                continue;
            };
            match plan {
                BatchPlan::Done { checkpoint } => {
                    if let Err(exit) = lease_call(stop, self.config.backoffs(), || {
                        self.leases.checkpoint(&key, owner, &checkpoint)
                    })
                    .await
                    {
                        return exit;
                    }
                    tracing::info!(%checkpoint, records = decoded.len(), published = outcome.published, "checkpoint");
                    start = Start::After(checkpoint);
                    match next {
                        Some(next) => iterator = Some(next),
                        None => return self.finish(&key, stop).await,
                    }
                }
                BatchPlan::Failed { checkpoint, failed } => {
                    if let Some(checkpoint) = checkpoint
                        && let Err(exit) = lease_call(stop, self.config.backoffs(), || {
                            self.leases.checkpoint(&key, owner, &checkpoint)
                        })
                        .await
                    {
                        return exit;
                    }
                    let record = &decoded[failed];
                    let position = record.position.as_str();
                    let failing = match lease_call(stop, self.config.backoffs(), || {
                        self.leases.record_failure(&key, owner, position)
                    })
                    .await
                    {
                        Ok(failing) => failing,
                        Err(exit) => return exit,
                    };
                    let attempts = failing.attempts;
                    let failing_for = Duration::from_millis(
                        u64::try_from(self.leases.now_ms().saturating_sub(failing.since_ms)).unwrap_or(0),
                    );
                    if failing_for >= self.config.retry_budget {
                        let exhausted =
                            exhausted_record(record, failing, failing_for, outcome.deadline_reached);
                        match self.on_failure.quarantine(&exhausted).await {
                            Ok(()) => {
                                tracing::warn!(%position, attempts, reason = %exhausted.reason, "sent to the on-failure destination");
                                self.report
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .sent_to_on_failure += 1;
                                if let Err(exit) = lease_call(stop, self.config.backoffs(), || {
                                    self.leases.checkpoint(&key, owner, position)
                                })
                                .await
                                {
                                    return exit;
                                }
                                start = Start::After(position.to_owned());
                            }
                            Err(error) => {
                                tracing::error!(%position, attempts, error = %error, "on-failure destination refused the record; retrying");
                                start = Start::At(position.to_owned());
                                stop.pause(self.config.backoff(attempts)).await;
                            }
                        }
                    } else {
                        tracing::warn!(
                            %position,
                            attempts,
                            failing_for_s = failing_for.as_secs(),
                            failed = outcome.failed,
                            deadline_reached = outcome.deadline_reached,
                            "batch failed; reading again from the failed record"
                        );
                        start = Start::At(position.to_owned());
                        stop.pause(self.config.backoff(attempts)).await;
                    }
                }
            }
        }
    }

    /// Relays one batch, checkpointing its done prefix as it grows (at most
    /// every [`MID_BATCH_CHECKPOINT_EVERY`]), so that a crash repeats only
    /// what was in flight. Failed checkpoints here are only logged: the
    /// batch's final checkpoint is the one that must succeed.
    async fn relay_checkpointing(&self, key: &ShardKey, decoded: &[RelayRecord]) -> BatchOutcome {
        let (done_tx, mut done_rx) = watch::channel(None::<String>);
        let report = move |position: &str| {
            done_tx.send_replace(Some(position.to_owned()));
        };
        let relaying = self.relay.relay_with_progress(
            decoded,
            Some(Instant::now() + self.config.batch_deadline),
            &report,
        );
        let checkpointing = async {
            while done_rx.changed().await.is_ok() {
                let Some(position) = done_rx.borrow_and_update().clone() else {
                    continue;
                };
                if let Err(error) = self.leases.checkpoint(key, &self.config.owner, &position).await {
                    tracing::debug!(error = %DisplayErrorContext(&error), "checkpoint within the batch failed");
                }
                tokio::time::sleep(MID_BATCH_CHECKPOINT_EVERY).await;
            }
            // The sender lives as long as the batch: this is not reached first.
            std::future::pending::<std::convert::Infallible>().await
        };
        tokio::select! {
            outcome = relaying => outcome,
            never = checkpointing => match never {},
        }
    }

    /// A new iterator for `shard_id` at `start`.
    async fn shard_iterator(&self, shard_id: &str, start: &Start) -> Result<Option<String>, ReadError> {
        let (kind, sequence_number) = match start {
            Start::TrimHorizon => (ShardIteratorType::TrimHorizon, None),
            Start::After(s) => (ShardIteratorType::AfterSequenceNumber, Some(s.clone())),
            Start::At(s) => (ShardIteratorType::AtSequenceNumber, Some(s.clone())),
        };
        self.streams
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard_id)
            .shard_iterator_type(kind)
            .set_sequence_number(sequence_number)
            .send()
            .await
            .map(|out| out.shard_iterator)
            .map_err(|err| read_error("GetShardIterator", err))
    }

    /// Logs a transient read failure and backs off.
    async fn transient(
        &self,
        operation: &'static str,
        attempt: u32,
        error: ReadError,
        stop: &mut StopSignal,
    ) {
        let reason = match error {
            ReadError::Transient(reason) => reason,
            ReadError::Trimmed => "TRIM_HORIZON is trimmed".to_owned(),
            ReadError::Expired => "the iterator expired at once".to_owned(),
            _ => "unexpected answer".to_owned(),
        };
        tracing::warn!(operation, attempt, error = %reason, "stream read failed; retrying");
        stop.pause(self.config.backoff(attempt)).await;
    }

    /// Marks the shard finished.
    async fn finish(&self, key: &ShardKey, stop: &StopSignal) -> Exit {
        match lease_call(stop, self.config.backoffs(), || {
            self.leases.finish(key, &self.config.owner)
        })
        .await
        {
            Ok(()) => {
                tracing::info!(shard_id = %key.shard_id, "shard finished");
                self.report
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .shards_finished += 1;
                Exit::Done
            }
            Err(exit) => exit,
        }
    }

    fn count(&self, outcome: &BatchOutcome, elapsed: Duration) {
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        report.batches += 1;
        report.longest_batch = report.longest_batch.max(elapsed);
        report.records += outcome.records;
        report.published += outcome.published;
        report.skipped += outcome.skipped;
        report.already_delivered += outcome.already_delivered;
        report.quarantined += outcome.quarantined;
        if outcome.first_failure.is_some() {
            report.failed_batches += 1;
        }
    }
}
