//! The change-feed processor: the relay over a container's change feed,
//! one worker per leased feed range (see [`CosmosChangeFeedProcessor`]).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;

use azure_data_cosmos::CosmosError;
use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::feed::FeedRange;
use azure_data_cosmos::options::ReadFeedRangesOptions;
use outbox_core::host::{self, Acquired, Holdings, Partitions, Plan, RoundError, StopSignal, WorkerExit};
use outbox_core::{EventSink, Quarantine, Relay};
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::{ErrorClass, classify, status_of};
use crate::{CosmosChangeDecoder, CosmosLeaseStore, Lease, LeaseError, ProcessorError};

/// The most documents one change-feed page may be asked for here.
pub const MAX_ITEMS_PER_PAGE: u32 = 1000;

/// The change-feed processor: the relay over a container's change feed,
/// outside Azure Functions (a container on Azure Container Apps, a VM, a
/// laptop).
///
/// - **Feed ranges and leases**: one lease document per feed range in a
///   [`CosmosLeaseStore`], created for every range no lease covers; listed
///   again every [`ProcessorConfig::discovery_interval`]. Leases are shared
///   fairly between the instances that run with the same lease prefix:
///   free and expired leases are taken first, then, while an instance holds
///   fewer than its share, one lease per round is taken over from the
///   instance holding the most. Leases are renewed every third of
///   [`ProcessorConfig::lease_duration`]; a lease lost is dropped at once.
/// - **Reading**: latest-version change feed of the lease's feed range,
///   from its continuation (or the beginning), in pages of at most
///   [`ProcessorConfig::max_items_per_page`] documents. Empty pages back off
///   up to [`ProcessorConfig::backoff_max`]. After any error, the stream
///   (which yields nothing more after an error) is rebuilt from the last
///   checkpointed continuation.
/// - **Relaying**: each page is decoded with the [`CosmosChangeDecoder`]
///   (non-outbox documents skipped, malformed outbox documents poison) and
///   relayed with the shared [`Relay`]. The continuation moves past a page
///   only when every document of it was delivered or quarantined; otherwise
///   nothing is checkpointed and the page is read again from the last
///   checkpoint after a backoff, for as long as it takes (at-least-once:
///   the events of it that were delivered are delivered again).
/// - **Splits**: a leased range that is now covered by several feed ranges
///   is split: its worker finishes its page, then one lease per child range
///   is created with the parent's continuation, and the parent is deleted.
///   A range merged into a bigger one keeps its lease (the SDK reads the
///   sub-range).
/// - **Shutdown**: when the `shutdown` future completes, each range finishes
///   the page in hand and checkpoints it, leases are released, and the run
///   returns a [`ProcessorReport`].
///
/// ```no_run
/// use outbox_core::{Relay, RelayConfig};
/// use outbox_cosmos::{
///     CosmosChangeDecoder, CosmosChangeFeedProcessor, CosmosLeaseStore, CosmosOutboxSchema, ProcessorConfig,
/// };
///
/// # async fn example<S: outbox_core::EventSink, Q: outbox_core::Quarantine>(
/// #     orders: azure_data_cosmos::clients::ContainerClient,
/// #     leases: azure_data_cosmos::clients::ContainerClient,
/// #     sink: S, quarantine: Q,
/// #     shutdown: impl std::future::Future<Output = ()> + Send,
/// # ) -> Result<(), Box<dyn std::error::Error>> {
/// // `shutdown` completes on SIGTERM, say.
/// let processor = CosmosChangeFeedProcessor::new(
///     orders,
///     CosmosLeaseStore::new(leases, "orders-relay")?,
///     CosmosChangeDecoder::new(CosmosOutboxSchema::new("/pk")),
///     Relay::new(sink, quarantine, RelayConfig::default()),
///     ProcessorConfig::new("relay-1"),
/// );
/// let report = processor.run(shutdown).await?;
/// tracing::info!(published = report.published, "relay stopped");
/// # Ok(())
/// # }
/// ```
pub struct CosmosChangeFeedProcessor<S, Q> {
    monitored: ContainerClient,
    leases: CosmosLeaseStore,
    decoder: CosmosChangeDecoder,
    relay: Relay<S, Q>,
    config: ProcessorConfig,
    report: Mutex<ProcessorReport>,
}

impl<S, Q> std::fmt::Debug for CosmosChangeFeedProcessor<S, Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosmosChangeFeedProcessor")
            .field("leases", &self.leases)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: EventSink, Q: Quarantine> CosmosChangeFeedProcessor<S, Q> {
    /// A processor for the change feed of `monitored`, keeping its leases in
    /// `leases`, decoding with `decoder` and relaying with `relay`.
    pub fn new(
        monitored: ContainerClient,
        leases: CosmosLeaseStore,
        decoder: CosmosChangeDecoder,
        relay: Relay<S, Q>,
        config: ProcessorConfig,
    ) -> Self {
        Self {
            monitored,
            leases,
            decoder,
            relay,
            config,
            report: Mutex::new(ProcessorReport::default()),
        }
    }

    /// The relay.
    pub fn relay(&self) -> &Relay<S, Q> {
        &self.relay
    }

    /// What the run did so far.
    pub fn report(&self) -> ProcessorReport {
        self.report.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn count(&self, f: impl FnOnce(&mut ProcessorReport)) {
        f(&mut self.report.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Runs until `shutdown` completes, then finishes the pages in hand,
    /// releases the leases and reports. An `Err` is a problem no retry can
    /// fix (configuration, missing container, access); the leases are
    /// released then too.
    pub async fn run(
        &self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<ProcessorReport, ProcessorError> {
        self.config.validate()?;
        tracing::info!(prefix = %self.leases.prefix(), owner = %self.config.owner, "change-feed processor started");
        let ranges = Ranges {
            processor: self,
            splits: Mutex::new(HashMap::new()),
        };
        let result = host::run(&ranges, &self.config.host(), shutdown).await;
        let report = self.report();
        match result {
            Ok(()) => {
                tracing::info!(?report, "change-feed processor stopped");
                Ok(report)
            }
            Err(error) => {
                tracing::error!(error = %error, "change-feed processor failed");
                Err(error)
            }
        }
    }
}

/// The processor's feed ranges, as the host skeleton drives them.
struct Ranges<'a, S, Q> {
    processor: &'a CosmosChangeFeedProcessor<S, Q>,
    /// Leases whose range was split, with their children: split instead of
    /// released once their worker has finished.
    splits: Mutex<HashMap<String, Vec<FeedRange>>>,
}

impl<S: EventSink, Q: Quarantine> Partitions for Ranges<'_, S, Q> {
    type Lease = (Lease, FeedRange);
    type LeaseError = LeaseError;
    type Error = ProcessorError;

    const NAME: &'static str = "range";

    /// Lists feed ranges and leases: creates leases for uncovered ranges,
    /// splits leases of split ranges, and takes this instance's share.
    async fn discover(&self, held: Holdings<'_>) -> Result<Plan<Self::Lease>, RoundError<ProcessorError>> {
        let processor = self.processor;
        let ranges = processor
            .monitored
            .read_feed_ranges(Some(ReadFeedRangesOptions::default().with_force_refresh(true)))
            .await
            .map_err(|e| monitored_error("reading feed ranges", e))?;
        let mut leases = processor.leases.list().await.map_err(lease_round_error)?;

        // Ranges no lease overlaps: the first run, or ranges that appeared.
        let mut created = false;
        for range in &ranges {
            let covered = leases
                .iter()
                .filter_map(|l| l.range().ok())
                .any(|r| r.overlaps(range));
            if !covered {
                created |= processor
                    .leases
                    .create_if_absent(range, None, None)
                    .await
                    .map_err(lease_round_error)?;
            }
        }
        if created {
            leases = processor.leases.list().await.map_err(lease_round_error)?;
        }

        // Leases whose range was split.
        let owner = processor.config.owner.as_str();
        let running = held.running();
        let mut plan = Plan::default();
        let mut split_any = false;
        let mut splitting: HashSet<String> = HashSet::new();
        for lease in &leases {
            let Some(children) = split_children(lease, &ranges) else {
                continue;
            };
            splitting.insert(lease.id.clone());
            if held.holds(&lease.id) {
                if running.contains(&lease.id) {
                    tracing::info!(lease = %lease.id, children = children.len(), "range split; finishing the parent");
                    self.splits
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(lease.id.clone(), children);
                    plan.finish.push(lease.id.clone());
                }
                continue;
            }
            if lease.is_held_by_other(owner, processor.leases.now_ms()) {
                continue;
            }
            match processor
                .leases
                .acquire(lease, owner, processor.config.lease_duration, false)
                .await
            {
                Ok(acquired) => match processor.leases.split(&acquired, owner, &children).await {
                    Ok(()) => {
                        processor.count(|r| r.splits += 1);
                        split_any = true;
                    }
                    Err(error) => {
                        tracing::warn!(lease = %lease.id, error = %error, "splitting the lease failed; retrying later");
                        let _ = processor.leases.release(&lease.id, owner).await;
                    }
                },
                Err(LeaseError::Held { .. } | LeaseError::NotFound { .. }) => {}
                Err(error) => return Err(lease_round_error(error)),
            }
        }
        if split_any {
            leases = processor.leases.list().await.map_err(lease_round_error)?;
        }

        // This instance's share.
        let now = processor.leases.now_ms();
        let candidates: Vec<&Lease> = leases
            .iter()
            .filter(|l| !splitting.contains(&l.id) && split_children(l, &ranges).is_none())
            .collect();
        let mut others: HashMap<&str, Vec<&Lease>> = HashMap::new();
        for lease in &candidates {
            if lease.is_held_by_other(owner, now)
                && let Some(o) = lease.owner.as_deref()
            {
                others.entry(o).or_default().push(lease);
            }
        }
        let target = outbox_core::fair_share(candidates.len(), others.len() + 1);
        let mut mine = running.len();
        for lease in &candidates {
            if mine >= target {
                break;
            }
            if held.holds(&lease.id) || lease.is_held_by_other(owner, now) {
                continue;
            }
            if let Some(acquired) = self.take(lease, false).await? {
                plan.acquired.push(acquired);
                mine += 1;
            }
        }
        if mine < target {
            let busiest = others
                .iter()
                .filter(|(_, leases)| leases.len() > target)
                .max_by_key(|(o, leases)| (leases.len(), *o));
            if let Some((victim, leases)) = busiest
                && let Some(lease) = leases.last()
            {
                tracing::info!(lease = %lease.id, from = %victim, target, "taking over a lease to balance the load");
                plan.acquired.extend(self.take(lease, true).await?);
            }
        }
        Ok(plan)
    }

    async fn renew(&self, id: &str) -> Result<(), LeaseError> {
        let processor = self.processor;
        processor
            .leases
            .renew(id, &processor.config.owner, processor.config.lease_duration)
            .await
            .map(drop)
    }

    /// Splits the lease when its range was split, else releases it.
    async fn release(&self, id: &str) {
        let processor = self.processor;
        let owner = processor.config.owner.as_str();
        let split_into = self.splits.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        if let Some(children) = split_into {
            match processor.leases.read(id).await {
                Ok(lease) => match processor.leases.split(&lease, owner, &children).await {
                    Ok(()) => {
                        processor.count(|r| r.splits += 1);
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(lease = %id, error = %error, "splitting the lease failed; retrying later")
                    }
                },
                Err(error) => {
                    tracing::warn!(lease = %id, error = %error, "reading the lease to split failed")
                }
            }
        }
        match processor.leases.release(id, owner).await {
            Ok(()) => tracing::info!(lease = %id, "lease released"),
            Err(error) => {
                tracing::warn!(lease = %id, error = %error, "releasing the lease failed; it will expire")
            }
        }
    }

    async fn work(&self, (lease, range): Self::Lease, stop: StopSignal) -> WorkerExit<ProcessorError> {
        let span = tracing::info_span!("range", lease = %lease.id);
        self.processor.work(lease, range, stop).instrument(span).await
    }

    fn progress(&self, held: usize) {
        let report = self.processor.report();
        tracing::info!(
            ranges = held,
            pages = report.pages,
            published = report.published,
            skipped = report.skipped,
            quarantined = report.quarantined,
            failed_pages = report.failed_pages,
            "progress"
        );
    }
}

impl<S: EventSink, Q: Quarantine> Ranges<'_, S, Q> {
    /// Acquires `lease` for a new worker. `None`: someone was faster.
    async fn take(
        &self,
        lease: &Lease,
        steal: bool,
    ) -> Result<Option<Acquired<(Lease, FeedRange)>>, RoundError<ProcessorError>> {
        let processor = self.processor;
        let range = match lease.range() {
            Ok(range) => range,
            Err(error) => {
                tracing::warn!(lease = %lease.id, error = %error, "skipping a malformed lease");
                return Ok(None);
            }
        };
        let at = Instant::now();
        match processor
            .leases
            .acquire(
                lease,
                &processor.config.owner,
                processor.config.lease_duration,
                steal,
            )
            .await
        {
            Ok(acquired) => {
                tracing::info!(lease = %acquired.id, continuation = acquired.continuation.is_some(), "lease acquired");
                processor.count(|r| r.leases_acquired += 1);
                Ok(Some(Acquired {
                    id: acquired.id.clone(),
                    lease: (acquired, range),
                    at,
                }))
            }
            Err(LeaseError::Held { owner, .. }) => {
                tracing::debug!(lease = %lease.id, %owner, "lease taken by another instance");
                Ok(None)
            }
            Err(LeaseError::NotFound { .. }) => Ok(None),
            Err(error) => Err(lease_round_error(error)),
        }
    }
}

/// The child ranges of a lease whose range was split: the current ranges
/// inside it, when there are several and they cover it exactly. `None` for
/// a lease whose range exists as it is, or was merged into a bigger one.
fn split_children(lease: &Lease, ranges: &[FeedRange]) -> Option<Vec<FeedRange>> {
    let parent = lease.range().ok()?;
    if ranges.contains(&parent) {
        return None;
    }
    let mut children: Vec<FeedRange> = ranges
        .iter()
        .filter(|r| r.is_subset_of(&parent))
        .cloned()
        .collect();
    if children.len() < 2 {
        return None;
    }
    children.sort_by(|a, b| a.min_inclusive().cmp(b.min_inclusive()));
    let contiguous = children
        .windows(2)
        .all(|w| w[0].max_exclusive() == w[1].min_inclusive());
    let covers = children.first().map(FeedRange::min_inclusive) == Some(parent.min_inclusive())
        && children.last().map(FeedRange::max_exclusive) == Some(parent.max_exclusive());
    (contiguous && covers).then_some(children)
}

fn refused(operation: &'static str, error: CosmosError) -> ProcessorError {
    ProcessorError::Refused {
        operation,
        status: status_of(&error),
        source: Box::new(error),
    }
}

fn monitored_error(operation: &'static str, error: CosmosError) -> RoundError<ProcessorError> {
    match classify(&error) {
        ErrorClass::Transient => RoundError::Transient(error.to_string()),
        ErrorClass::Permanent => RoundError::Fatal(refused(operation, error)),
    }
}

fn lease_round_error(error: LeaseError) -> RoundError<ProcessorError> {
    if error.is_retryable() {
        RoundError::Transient(error.to_string())
    } else {
        RoundError::Fatal(ProcessorError::Lease(error))
    }
}

mod config;
mod worker;

pub use config::{ProcessorConfig, ProcessorReport};

#[cfg(test)]
mod tests;
