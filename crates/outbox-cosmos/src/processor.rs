//! The change-feed processor: the relay over a container's change feed,
//! one worker per leased feed range (see [`CosmosChangeFeedProcessor`]).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use azure_data_cosmos::CosmosError;
use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::feed::FeedRange;
use azure_data_cosmos::options::ReadFeedRangesOptions;
use futures_util::stream::{FuturesUnordered, StreamExt};
use outbox_core::{EventSink, Quarantine, Relay};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::{ErrorClass, classify, status_of};
use crate::{CosmosChangeDecoder, CosmosLeaseStore, Lease, LeaseError, ProcessorError};

/// The most documents one change-feed page may be asked for here.
pub const MAX_ITEMS_PER_PAGE: u32 = 1000;

/// How often a lease call that failed transiently is retried inside a
/// worker before the range is let go (the next discovery takes it up again).
const LEASE_CALL_RETRIES: u32 = 5;

/// What the coordinator tells a range worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Run,
    /// Finish the page in hand (checkpointed), then end.
    Finish,
    /// The lease is someone else's now: end at once.
    Lost,
}

/// Why a range worker ended.
#[derive(Debug)]
enum Exit {
    /// Told to finish: the page in hand is checkpointed; the lease is still ours.
    Finished,
    /// The lease is someone else's now.
    Lost,
    /// The lease container kept failing: release and take it up later.
    Interrupted,
    /// The run must stop.
    Fatal(ProcessorError),
}

/// A range being worked on.
struct Held {
    stop: watch::Sender<Stop>,
    /// Until when the lease is surely ours (measured from before the last
    /// successful acquire or renewal).
    valid_until: Instant,
    /// Child ranges to split the lease into once its worker has finished.
    split_into: Option<Vec<FeedRange>>,
}

type WorkerFuture<'a> = Pin<Box<dyn Future<Output = (String, Exit)> + Send + 'a>>;

/// A discovery round that could not finish.
enum DiscoveryError {
    Transient(String),
    Fatal(ProcessorError),
}

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
        let renew_every = self.config.lease_duration / 3;
        let mut shutdown = std::pin::pin!(shutdown);
        let mut held: HashMap<String, Held> = HashMap::new();
        let mut workers: FuturesUnordered<WorkerFuture<'_>> = FuturesUnordered::new();
        let mut next_discovery = Instant::now();
        let mut next_renewal = Instant::now() + renew_every;
        let mut discovery_failures = 0u32;
        let mut failure: Option<ProcessorError> = None;
        tracing::info!(prefix = %self.leases.prefix(), owner = %self.config.owner, "change-feed processor started");

        loop {
            if Instant::now() >= next_discovery {
                match self.discover(&mut held, &mut workers).await {
                    Ok(()) => {
                        discovery_failures = 0;
                        next_discovery = Instant::now() + self.config.discovery_interval;
                    }
                    Err(DiscoveryError::Fatal(error)) => {
                        failure = Some(error);
                        break;
                    }
                    Err(DiscoveryError::Transient(reason)) => {
                        discovery_failures += 1;
                        tracing::warn!(attempt = discovery_failures, error = %reason, "discovery failed; retrying");
                        let delay = self
                            .config
                            .backoff(discovery_failures)
                            .min(self.config.discovery_interval);
                        next_discovery = Instant::now() + delay;
                    }
                }
            }
            if Instant::now() >= next_renewal {
                if let Err(error) = self.renew_all(&mut held).await {
                    failure = Some(error);
                    break;
                }
                next_renewal = Instant::now() + renew_every;
            }
            tokio::select! {
                biased;
                () = &mut shutdown => {
                    tracing::info!(ranges = held.len(), "shutdown requested");
                    break;
                }
                Some((id, exit)) = workers.next(), if !workers.is_empty() => {
                    if let Some(error) = self.worker_ended(&mut held, id, exit).await {
                        failure = Some(error);
                        break;
                    }
                    next_discovery = next_discovery.min(Instant::now() + self.config.backoff_initial);
                }
                () = tokio::time::sleep_until(next_discovery.min(next_renewal)) => {}
            }
        }

        // Let every worker finish its page in hand, keeping the leases alive meanwhile.
        for range in held.values_mut() {
            range.split_into = None;
            range.stop.send_if_modified(|stop| {
                let running = *stop == Stop::Run;
                if running {
                    *stop = Stop::Finish;
                }
                running
            });
        }
        while !workers.is_empty() {
            tokio::select! {
                Some((id, exit)) = workers.next() => {
                    if let Some(error) = self.worker_ended(&mut held, id, exit).await {
                        failure.get_or_insert(error);
                    }
                }
                () = tokio::time::sleep_until(next_renewal) => {
                    if let Err(error) = self.renew_all(&mut held).await {
                        tracing::error!(error = %error, "renewing leases failed during shutdown");
                    }
                    next_renewal = Instant::now() + renew_every;
                }
            }
        }
        let report = self.report();
        match failure {
            Some(error) => {
                tracing::error!(error = %error, "change-feed processor failed");
                Err(error)
            }
            None => {
                tracing::info!(?report, "change-feed processor stopped");
                Ok(report)
            }
        }
    }

    /// Lists feed ranges and leases: creates leases for uncovered ranges,
    /// splits leases of split ranges, and takes this instance's share.
    async fn discover<'a>(
        &'a self,
        held: &mut HashMap<String, Held>,
        workers: &mut FuturesUnordered<WorkerFuture<'a>>,
    ) -> Result<(), DiscoveryError> {
        let ranges = self
            .monitored
            .read_feed_ranges(Some(ReadFeedRangesOptions::default().with_force_refresh(true)))
            .await
            .map_err(|e| monitored_error("reading feed ranges", e))?;
        let mut leases = self.leases.list().await.map_err(lease_discovery_error)?;

        // Ranges no lease overlaps: the first run, or ranges that appeared.
        let mut created = false;
        for range in &ranges {
            let covered = leases
                .iter()
                .filter_map(|l| l.range().ok())
                .any(|r| r.overlaps(range));
            if !covered {
                created |= self
                    .leases
                    .create_if_absent(range, None, None)
                    .await
                    .map_err(lease_discovery_error)?;
            }
        }
        if created {
            leases = self.leases.list().await.map_err(lease_discovery_error)?;
        }

        // Leases whose range was split.
        let owner = self.config.owner.as_str();
        let mut split_any = false;
        let mut splitting: HashSet<String> = HashSet::new();
        for lease in &leases {
            let Some(children) = split_children(lease, &ranges) else {
                continue;
            };
            splitting.insert(lease.id.clone());
            if let Some(range) = held.get_mut(&lease.id) {
                if range.split_into.is_none() {
                    tracing::info!(lease = %lease.id, children = children.len(), "range split; finishing the parent");
                    range.split_into = Some(children);
                    range.stop.send_if_modified(|stop| {
                        let running = *stop == Stop::Run;
                        if running {
                            *stop = Stop::Finish;
                        }
                        running
                    });
                }
                continue;
            }
            if lease.is_held_by_other(owner, self.leases.now_ms()) {
                continue;
            }
            match self
                .leases
                .acquire(lease, owner, self.config.lease_duration, false)
                .await
            {
                Ok(acquired) => match self.leases.split(&acquired, owner, &children).await {
                    Ok(()) => {
                        self.count(|r| r.splits += 1);
                        split_any = true;
                    }
                    Err(error) => {
                        tracing::warn!(lease = %lease.id, error = %error, "splitting the lease failed; retrying later");
                        let _ = self.leases.release(&lease.id, owner).await;
                    }
                },
                Err(LeaseError::Held { .. } | LeaseError::NotFound { .. }) => {}
                Err(error) if error.is_retryable() => {
                    return Err(DiscoveryError::Transient(error.to_string()));
                }
                Err(error) => return Err(DiscoveryError::Fatal(ProcessorError::Lease(error))),
            }
        }
        if split_any {
            leases = self.leases.list().await.map_err(lease_discovery_error)?;
        }

        // This instance's share.
        let now = self.leases.now_ms();
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
        let mut mine = held.len();
        for lease in &candidates {
            if mine >= target {
                break;
            }
            if held.contains_key(&lease.id) || lease.is_held_by_other(owner, now) {
                continue;
            }
            if self.take(lease, false, held, workers).await? {
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
                self.take(lease, true, held, workers).await?;
            }
        }
        Ok(())
    }

    /// Acquires `lease` and starts its worker. `Ok(false)`: someone was faster.
    async fn take<'a>(
        &'a self,
        lease: &Lease,
        steal: bool,
        held: &mut HashMap<String, Held>,
        workers: &mut FuturesUnordered<WorkerFuture<'a>>,
    ) -> Result<bool, DiscoveryError> {
        let range = match lease.range() {
            Ok(range) => range,
            Err(error) => {
                tracing::warn!(lease = %lease.id, error = %error, "skipping a malformed lease");
                return Ok(false);
            }
        };
        let started = Instant::now();
        match self
            .leases
            .acquire(lease, &self.config.owner, self.config.lease_duration, steal)
            .await
        {
            Ok(acquired) => {
                tracing::info!(lease = %acquired.id, continuation = acquired.continuation.is_some(), "lease acquired");
                self.count(|r| r.leases_acquired += 1);
                let (stop, stopped) = watch::channel(Stop::Run);
                held.insert(
                    acquired.id.clone(),
                    Held {
                        stop,
                        valid_until: started + self.config.lease_duration,
                        split_into: None,
                    },
                );
                let span = tracing::info_span!("range", lease = %acquired.id);
                workers.push(Box::pin(self.work(acquired, range, stopped).instrument(span)));
                Ok(true)
            }
            Err(LeaseError::Held { owner, .. }) => {
                tracing::debug!(lease = %lease.id, %owner, "lease taken by another instance");
                Ok(false)
            }
            Err(LeaseError::NotFound { .. }) => Ok(false),
            Err(error) if error.is_retryable() => Err(DiscoveryError::Transient(error.to_string())),
            Err(error) => Err(DiscoveryError::Fatal(ProcessorError::Lease(error))),
        }
    }

    /// Renews every lease held; a lost one, or one that could not be renewed
    /// in time, stops its worker.
    async fn renew_all(&self, held: &mut HashMap<String, Held>) -> Result<(), ProcessorError> {
        for (id, range) in held.iter_mut() {
            if *range.stop.borrow() == Stop::Lost {
                continue;
            }
            let started = Instant::now();
            match self
                .leases
                .renew(id, &self.config.owner, self.config.lease_duration)
                .await
            {
                Ok(_) => range.valid_until = started + self.config.lease_duration,
                Err(LeaseError::LostLease { owner, .. }) => {
                    tracing::warn!(lease = %id, new_owner = ?owner, "lease lost; stopping the range");
                    range.stop.send_replace(Stop::Lost);
                }
                Err(error) if error.is_retryable() => {
                    let expiring = Instant::now() + self.config.lease_duration / 3 >= range.valid_until;
                    tracing::warn!(lease = %id, expiring, error = %error, "lease renewal failed");
                    if expiring {
                        range.stop.send_replace(Stop::Lost);
                    }
                }
                Err(error) => return Err(ProcessorError::Lease(error)),
            }
        }
        Ok(())
    }

    /// Handles a worker's end: splits or releases the lease when it is still
    /// ours. Returns the run's error, if it is one.
    async fn worker_ended(
        &self,
        held: &mut HashMap<String, Held>,
        id: String,
        exit: Exit,
    ) -> Option<ProcessorError> {
        let split_into = held.remove(&id).and_then(|h| h.split_into);
        let owner = self.config.owner.as_str();
        let (release, error) = match exit {
            Exit::Lost => (false, None),
            Exit::Finished => {
                if let Some(children) = split_into {
                    match self.leases.read(&id).await {
                        Ok(lease) => match self.leases.split(&lease, owner, &children).await {
                            Ok(()) => {
                                self.count(|r| r.splits += 1);
                                return None;
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
                (true, None)
            }
            Exit::Interrupted => (true, None),
            Exit::Fatal(error) => (true, Some(error)),
        };
        if release {
            match self.leases.release(&id, owner).await {
                Ok(()) => tracing::info!(lease = %id, "lease released"),
                Err(error) => {
                    tracing::warn!(lease = %id, error = %error, "releasing the lease failed; it will expire")
                }
            }
        }
        error
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

fn monitored_error(operation: &'static str, error: CosmosError) -> DiscoveryError {
    match classify(&error) {
        ErrorClass::Transient => DiscoveryError::Transient(error.to_string()),
        ErrorClass::Permanent => DiscoveryError::Fatal(refused(operation, error)),
    }
}

fn lease_discovery_error(error: LeaseError) -> DiscoveryError {
    if error.is_retryable() {
        DiscoveryError::Transient(error.to_string())
    } else {
        DiscoveryError::Fatal(ProcessorError::Lease(error))
    }
}

mod config;
mod worker;

pub use config::{ProcessorConfig, ProcessorReport};

#[cfg(test)]
mod tests;
