//! The relay algorithm, shared by every host (Lambda, the standalone stream
//! runner, the Cosmos change-feed processor): decode → skip / quarantine /
//! publish in chunks with bounded concurrency → retry transient failures
//! with backoff until the deadline → report the first record that is
//! neither delivered nor quarantined.

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::poll_immediate;
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::time::Instant;

use crate::chunk::{Chunker, chunk_ranges};
use crate::delivered::Delivered;
use crate::{
    Clock, DEFAULT_DELIVERED_MEMORY, EntryResult, EventSink, FailureClass, OutboxEvent, Quarantine,
    QuarantinedRecord, RetryPolicy, SystemClock,
};

/// Why a record is skipped. Skips never fail a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// The item is not an outbox item (no marker).
    NotOutbox,
    /// A change of an outbox item other than its insert (MODIFY, REMOVE).
    NotInsert {
        /// The record's event name.
        event_name: String,
    },
    /// The item was removed by TTL expiry.
    TtlRemoval,
    /// An event name this build does not know.
    UnknownEventName {
        /// The record's event name.
        event_name: String,
    },
}

/// What a source record turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// An outbox event to publish.
    Event(Box<OutboxEvent>),
    /// A record to skip.
    Skip(SkipReason),
    /// An outbox item that cannot be decoded: it goes to the quarantine with
    /// its full content.
    Poison {
        /// What is wrong, naming the field.
        reason: String,
        /// The full original record, as JSON text.
        raw: String,
    },
}

/// One record of an ordered batch from one shard or feed range.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayRecord {
    /// Its position in the stream (DynamoDB `SequenceNumber`, ...).
    pub position: String,
    /// What it decoded to.
    pub decoded: Decoded,
}

/// How the relay publishes and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Most sink calls in flight at once.
    pub max_concurrency: usize,
    /// No retry is started if its backoff would end later than this margin
    /// before the deadline: the host still needs time to report.
    pub deadline_margin: Duration,
}

impl Default for RelayConfig {
    /// Default retries, 4 calls in flight, a 2-second margin.
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            max_concurrency: 4,
            deadline_margin: Duration::from_secs(2),
        }
    }
}

/// What happened to a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchOutcome {
    /// Records in the batch.
    pub records: usize,
    /// Events the sink accepted.
    pub published: usize,
    /// Records skipped.
    pub skipped: usize,
    /// Events not published again because this relay delivered them lately
    /// (a batch read again after an earlier failure).
    pub already_delivered: usize,
    /// Records quarantined (poison, oversize, permanently refused).
    pub quarantined: usize,
    /// Records neither delivered nor quarantined.
    pub failed: usize,
    /// Entry retries made.
    pub retried: usize,
    /// Whether retrying stopped because of the deadline.
    pub deadline_reached: bool,
    /// The position of the first record (in batch order) that is neither
    /// delivered nor quarantined: where the host must resume. `None` when the
    /// whole batch is done.
    pub first_failure: Option<String>,
    /// For each published event, milliseconds from `occurred_at` to its publication.
    pub publish_ages_ms: Vec<i64>,
}

/// The relay: a sink, a quarantine, a configuration and a clock.
#[derive(Clone)]
pub struct Relay<S, Q> {
    sink: S,
    quarantine: Q,
    config: RelayConfig,
    clock: Arc<dyn Clock>,
    delivered: Arc<Delivered>,
}

impl<S: std::fmt::Debug, Q: std::fmt::Debug> std::fmt::Debug for Relay<S, Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("sink", &self.sink)
            .field("quarantine", &self.quarantine)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: EventSink, Q: Quarantine> Relay<S, Q> {
    /// A relay publishing to `sink` and quarantining to `quarantine`.
    pub fn new(sink: S, quarantine: Q, config: RelayConfig) -> Self {
        Self {
            sink,
            quarantine,
            config,
            clock: Arc::new(SystemClock),
            delivered: Arc::new(Delivered::new(DEFAULT_DELIVERED_MEMORY)),
        }
    }

    /// Remembers the ids of the last `capacity` events delivered (default
    /// [`DEFAULT_DELIVERED_MEMORY`]; 0: none), so that a batch read again
    /// after an earlier failure does not publish them again.
    #[must_use]
    pub fn with_delivered_memory(mut self, capacity: usize) -> Self {
        self.delivered = Arc::new(Delivered::new(capacity));
        self
    }

    /// Uses `clock` for event ages.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The quarantine.
    pub fn quarantine(&self) -> &Q {
        &self.quarantine
    }

    /// The configuration.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Relays one ordered batch. Never fails as a whole: per-record failures
    /// are in the outcome. With a `deadline`, no retry starts that could not
    /// finish `deadline_margin` before it.
    pub fn relay<'a>(
        &'a self,
        records: &'a [RelayRecord],
        deadline: Option<Instant>,
    ) -> impl Future<Output = BatchOutcome> + Send + 'a {
        // The future of `run` itself, not one wrapping it: futures over the
        // SDK's are deep, and every level counts towards the compiler's
        // recursion limit in the host's binary.
        self.run(Borrowed(records.iter()), deadline, |outcome| match outcome {
            Ok(outcome) => outcome,
            Err(never) => match never {},
        })
    }

    /// Relays one ordered batch as [`relay`](Self::relay) does, calling
    /// `done` with the position of the last record of the batch's done
    /// prefix (delivered, quarantined or skipped, with every record before
    /// it) each time that prefix grows, while the batch is still being
    /// relayed: a host can checkpoint as it goes, so that a crash repeats
    /// only what was in flight.
    pub fn relay_with_progress<'a>(
        &'a self,
        records: &'a [RelayRecord],
        deadline: Option<Instant>,
        done: &'a (dyn Fn(&str) + Send + Sync),
    ) -> impl Future<Output = BatchOutcome> + Send + 'a {
        self.run_reporting(
            Borrowed(records.iter()),
            deadline,
            Some(done),
            |outcome| match outcome {
                Ok(outcome) => outcome,
                Err(never) => match never {},
            },
        )
    }

    /// Relays one ordered batch whose records come from `records` as they
    /// are decoded: the relay reads only as many as the next chunk needs, so
    /// the first calls are in flight while the rest of the batch is still
    /// being decoded, and each chunk goes out as soon as it is complete.
    /// Otherwise as [`relay`](Self::relay).
    ///
    /// An error from `records` (a batch that cannot be relayed at all)
    /// stops the reading: the calls already made finish, nothing is retried
    /// or quarantined, and the error is returned. The events of those calls
    /// may have been published: the host's retry of the batch publishes them
    /// again, at least once.
    pub fn relay_each<'a, E: Send + 'a, I>(
        &'a self,
        records: I,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<BatchOutcome, E>> + Send + 'a
    where
        I: IntoIterator<Item = Result<RelayRecord, E>>,
        I::IntoIter: Send + 'a,
    {
        self.run(records.into_iter(), deadline, std::convert::identity)
    }

    /// The relay algorithm; `finish` turns its result into what the caller
    /// returns.
    fn run<'a, R: SourceRecord + Send + 'a, E: Send + 'a, O: 'a>(
        &'a self,
        source: impl Iterator<Item = Result<R, E>> + Send + 'a,
        deadline: Option<Instant>,
        finish: impl FnOnce(Result<BatchOutcome, E>) -> O + Send + 'a,
    ) -> impl Future<Output = O> + Send + 'a {
        self.run_reporting(source, deadline, None, finish)
    }

    /// [`run`](Self::run), reporting the done prefix to `done`.
    async fn run_reporting<R: SourceRecord + Send, E: Send, O>(
        &self,
        source: impl Iterator<Item = Result<R, E>> + Send,
        deadline: Option<Instant>,
        done: Option<&(dyn Fn(&str) + Send + Sync)>,
        finish: impl FnOnce(Result<BatchOutcome, E>) -> O + Send,
    ) -> O {
        let mut progress = Progress {
            report: done,
            done: 0,
        };
        // The reader adds slots between calls, the results of the calls
        // update them: never at the same time (one task), hence a lock that
        // is never contended, and never held across an await.
        let mut slots: Mutex<Vec<Slot<R::Event, R::Text>>> = Mutex::new(Vec::new());
        let mut to_quarantine = Vec::new();
        let mut stopped = None;
        let mut outcome = BatchOutcome::default();
        let mut reader: Reader<'_, _, _, R, _> = Reader {
            source: source.fuse(),
            sink: &self.sink,
            slots: &slots,
            to_quarantine: &mut to_quarantine,
            stopped: &mut stopped,
            chunker: Chunker::new(self.sink.limits()),
            carry: None,
            delivered: &self.delivered,
        };
        // Behind a trait object, the reader's type (with the source's) is not
        // part of this future's: that keeps the future `Send` for any source.
        let chunks: &mut (dyn Iterator<Item = Chunk<R::Event>> + Send) = &mut reader;
        let mut settled = self
            .publish_each(chunks, &slots, &mut outcome, deadline, &mut progress)
            .await;
        if let Some(error) = stopped {
            return finish(Err(error));
        }
        outcome.records = own(&mut slots).len();
        self.quarantine_all(own(&mut slots), to_quarantine).await;
        progress.advance(own(&mut slots));

        let mut retry = 0u32;
        let pending = loop {
            let Settled {
                retry: pending,
                permanent,
                fatal,
            } = settled;
            self.quarantine_all(own(&mut slots), permanent).await;
            progress.advance(own(&mut slots));
            if pending.is_empty() {
                break pending;
            }
            if let Some(error) = fatal {
                tracing::error!(error = %error, failed = pending.len(), "sink refused the call; not retrying");
                break pending;
            }
            retry += 1;
            if retry > self.config.retry.max_retries {
                tracing::warn!(failed = pending.len(), retries = retry - 1, "retries exhausted");
                break pending;
            }
            let delay = self.config.retry.delay(retry, fastrand::f64());
            if let Some(deadline) = deadline
                && Instant::now() + delay + self.config.deadline_margin > deadline
            {
                tracing::warn!(failed = pending.len(), "deadline reached; not retrying");
                outcome.deadline_reached = true;
                break pending;
            }
            tracing::debug!(
                retry,
                delay_ms = delay.as_millis() as u64,
                entries = pending.len(),
                "retrying"
            );
            tokio::time::sleep(delay).await;
            outcome.retried += pending.len();
            let mut chunks = self.retry_chunks(own(&mut slots), &pending).into_iter();
            settled = self
                .publish_each(&mut chunks, &slots, &mut outcome, deadline, &mut progress)
                .await;
        };
        let slots = own(&mut slots);
        for i in pending {
            slots[i].status = Status::Failed;
        }

        for slot in slots.iter() {
            match slot.status {
                Status::Delivered => outcome.published += 1,
                Status::Quarantined => outcome.quarantined += 1,
                Status::Skipped => outcome.skipped += 1,
                Status::AlreadyDelivered => outcome.already_delivered += 1,
                Status::Failed | Status::Pending => {
                    outcome.failed += 1;
                    if outcome.first_failure.is_none() {
                        outcome.first_failure = Some((*slot.position).to_owned());
                    }
                }
            }
        }
        finish(Ok(outcome))
    }

    /// Publishes `chunks`, at most `max_concurrency` calls in flight, in
    /// order, and settles each call's results as it ends (a delivered event
    /// is dropped there). While the calls are out, it reads ahead up to one
    /// round of chunks (`max_concurrency`), one at a time, letting the
    /// calls progress in between: the next calls start as soon as slots
    /// free, without waiting for their records to be decoded. Returns what
    /// to retry, what to quarantine and a whole-call permanent error if one
    /// happened. No call outlives `deadline` less the margin (see
    /// [`publish_chunk`](Self::publish_chunk)).
    async fn publish_each<H, T>(
        &self,
        chunks: &mut (dyn Iterator<Item = Chunk<H>> + Send),
        slots: &Mutex<Vec<Slot<H, T>>>,
        outcome: &mut BatchOutcome,
        deadline: Option<Instant>,
        progress: &mut Progress<'_>,
    ) -> Settled
    where
        H: Deref<Target = OutboxEvent> + Send + Sync,
        T: Deref<Target = str>,
    {
        let max = self.config.max_concurrency.max(1);
        let mut calls = FuturesOrdered::new();
        let mut ahead = VecDeque::with_capacity(max);
        let mut more = true;
        let mut settled = Settled::default();
        loop {
            while calls.len() < max {
                let chunk = match ahead.pop_front() {
                    Some(chunk) => Some(chunk),
                    None if more => chunks.next(),
                    None => None,
                };
                let Some(chunk) = chunk else {
                    more = false;
                    break;
                };
                calls.push_back(self.publish_chunk(chunk, deadline));
            }
            let sent = loop {
                // A call that has ended comes first.
                if let Some(next) = poll_immediate(calls.next()).await {
                    break next;
                }
                if more && ahead.len() < max {
                    match chunks.next() {
                        Some(chunk) => ahead.push_back(chunk),
                        None => more = false,
                    }
                    // Lets the connections send and read before the next chunk.
                    tokio::task::yield_now().await;
                } else {
                    break calls.next().await;
                }
            };
            // No call in flight and none to start: every chunk is settled.
            let Some(sent) = sent else { break };
            outcome.deadline_reached |= sent.deadline_reached;
            let mut slots = slots.lock().unwrap_or_else(PoisonError::into_inner);
            let call = self.settle(sent, &mut slots, outcome);
            progress.advance(&slots);
            settled.retry.extend(call.retry);
            settled.permanent.extend(call.permanent);
            settled.fatal = settled.fatal.or(call.fatal);
        }
        settled.retry.sort_unstable();
        settled
    }

    /// One call for `chunk`, given up at `deadline` less the margin: the
    /// batch then ends in time, and the call's entries count as failed
    /// (whether the sink took them is unknown, so they may arrive twice).
    /// Past that time no call starts.
    async fn publish_chunk<H: Deref<Target = OutboxEvent> + Sync>(
        &self,
        chunk: Chunk<H>,
        deadline: Option<Instant>,
    ) -> Sent<H> {
        let (result, deadline_reached) = {
            let events: Vec<&OutboxEvent> = chunk.events.iter().map(|e| &**e).collect();
            let call = self.sink.publish(&events);
            match deadline.and_then(|d| d.checked_sub(self.config.deadline_margin)) {
                None => (call.await, false),
                Some(cutoff) if Instant::now() >= cutoff => (Err(deadline_passed()), true),
                Some(cutoff) => match tokio::time::timeout_at(cutoff, call).await {
                    Ok(result) => (result, false),
                    Err(_) => {
                        tracing::warn!(
                            entries = events.len(),
                            "batch deadline reached during a call; giving it up"
                        );
                        (Err(deadline_passed()), true)
                    }
                },
            }
        };
        Sent {
            chunk,
            result,
            deadline_reached,
        }
    }

    /// The chunks of a retry of `pending`, their events taken from `slots`.
    fn retry_chunks<H, T>(&self, slots: &mut [Slot<H, T>], pending: &[usize]) -> Vec<Chunk<H>> {
        let sizes: Vec<usize> = pending.iter().map(|&i| slots[i].size).collect();
        chunk_ranges(&sizes, self.sink.limits())
            .into_iter()
            .map(|range| {
                let mut chunk = Chunk::for_limits(self.sink.limits());
                for &i in &pending[range] {
                    if let Some(event) = slots[i].event.take() {
                        chunk.push(i, event);
                    }
                }
                chunk
            })
            .collect()
    }

    /// Reads the results of one call: marks what was delivered, puts back
    /// the events to retry, and returns what to retry, what to quarantine,
    /// and a whole-call permanent error if one happened.
    fn settle<H: Deref<Target = OutboxEvent>, T: Deref<Target = str>>(
        &self,
        Sent { chunk, result, .. }: Sent<H>,
        slots: &mut [Slot<H, T>],
        outcome: &mut BatchOutcome,
    ) -> Settled {
        let mut retry = Vec::new();
        let mut permanent = Vec::new();
        let entries = match result {
            Ok(entries) => entries,
            Err(error) => {
                tracing::debug!(error = %error, entries = chunk.indices.len(), "call failed");
                for (i, event) in chunk.indices.into_iter().zip(chunk.events) {
                    slots[i].event = Some(event);
                    retry.push(i);
                }
                let fatal = (error.class == FailureClass::Permanent).then_some(error);
                return Settled {
                    retry,
                    permanent,
                    fatal,
                };
            }
        };
        let now = self.clock.now();
        for (k, (i, event)) in chunk.indices.into_iter().zip(chunk.events).enumerate() {
            let slot = &mut slots[i];
            match entries.get(k) {
                Some(EntryResult::Published) => {
                    slot.status = Status::Delivered;
                    self.delivered.insert(event.id());
                    outcome
                        .publish_ages_ms
                        .push((now - event.occurred_at()).num_milliseconds());
                    tracing::debug!(event_id = %event.id(), position = %&*slot.position, "published");
                }
                Some(EntryResult::Failed {
                    class: FailureClass::Permanent,
                    code,
                    message,
                }) => permanent.push((
                    i,
                    QuarantinedRecord {
                        position: (*slot.position).to_owned(),
                        reason: format!("refused by the bus: {code}: {message}"),
                        event: Some((*event).clone()),
                        raw: None,
                    },
                )),
                Some(EntryResult::Failed { code, .. }) => {
                    tracing::debug!(position = %&*slot.position, %code, "transient entry failure");
                    slot.event = Some(event);
                    retry.push(i);
                }
                None => {
                    tracing::warn!(position = %&*slot.position, "sink returned no result for entry");
                    slot.event = Some(event);
                    retry.push(i);
                }
            }
        }
        Settled {
            retry,
            permanent,
            fatal: None,
        }
    }

    async fn quarantine_all<H, T>(&self, slots: &mut [Slot<H, T>], items: Vec<(usize, QuarantinedRecord)>) {
        for (i, record) in items {
            match self.quarantine.quarantine(&record).await {
                Ok(()) => {
                    tracing::warn!(position = %record.position, reason = %record.reason, "quarantined");
                    slots[i].status = Status::Quarantined;
                }
                Err(error) => {
                    tracing::error!(position = %record.position, error = %error, "quarantine failed; record fails");
                    slots[i].status = Status::Failed;
                }
            }
        }
    }
}

mod batch;
mod reader;

use batch::{Chunk, Progress, Sent, Settled, Slot, Status, deadline_passed, own};
use reader::{Borrowed, Reader, SourceRecord};

#[cfg(test)]
mod tests;
