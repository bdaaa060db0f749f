//! The change-feed processor: the relay over a container's change feed,
//! one worker per leased feed range (see [`CosmosChangeFeedProcessor`]).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::feed::{ContinuationToken, FeedRange};
use azure_data_cosmos::models::ChangeFeedItem;
use azure_data_cosmos::options::{
    ChangeFeedOptions, ChangeFeedStartFrom, MaxItemCountHint, ReadFeedRangesOptions,
};
use azure_data_cosmos::{CosmosError, FeedScope};
use futures_util::stream::{FuturesUnordered, StreamExt};
use outbox_core::{BatchOutcome, Decoded, EventSink, Quarantine, Relay, RelayRecord, SkipReason};
use serde_json::Value;
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

/// How the processor reads, leases and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessorConfig {
    /// This instance's identity in the leases; unique per running process.
    pub owner: String,
    /// How long a lease lasts without renewal (renewed every third of it).
    /// A stopped instance's ranges are taken over within about this long.
    pub lease_duration: Duration,
    /// Most documents per change-feed page, 1 to [`MAX_ITEMS_PER_PAGE`]: a
    /// page is the unit that is relayed and checkpointed.
    pub max_items_per_page: u32,
    /// First backoff after an empty poll, a failed batch or a transient error.
    pub backoff_initial: Duration,
    /// The backoff doubles up to this (the longest pause between polls of an idle range).
    pub backoff_max: Duration,
    /// How long the relay may spend on one page, retries included.
    pub batch_deadline: Duration,
    /// How often feed ranges and leases are listed again (new ranges,
    /// splits, free or expired leases, load balancing).
    pub discovery_interval: Duration,
}

impl ProcessorConfig {
    /// Defaults for `owner`: 15 s leases, pages of 100, backoff 100 ms
    /// doubling to 1 s, 30 s per page, discovery every 5 s.
    pub fn new(owner: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            lease_duration: Duration::from_secs(15),
            max_items_per_page: 100,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            batch_deadline: Duration::from_secs(30),
            discovery_interval: Duration::from_secs(5),
        }
    }

    /// Checks the values, naming the first that is wrong.
    pub fn validate(&self) -> Result<(), ProcessorError> {
        let invalid = |reason: String| Err(ProcessorError::InvalidConfig { reason });
        if self.owner.trim().is_empty() {
            return invalid("owner is empty".into());
        }
        if !(1..=MAX_ITEMS_PER_PAGE).contains(&self.max_items_per_page) {
            return invalid(format!(
                "max_items_per_page is {}; it must be 1 to {MAX_ITEMS_PER_PAGE}",
                self.max_items_per_page
            ));
        }
        if self.lease_duration < Duration::from_millis(30) {
            return invalid(format!("lease_duration {:?} is too short", self.lease_duration));
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return invalid(format!(
                "backoff must be positive and backoff_max ({:?}) at least backoff_initial ({:?})",
                self.backoff_max, self.backoff_initial
            ));
        }
        if self.batch_deadline.is_zero() || self.discovery_interval.is_zero() {
            return invalid("batch_deadline and discovery_interval must be positive".into());
        }
        Ok(())
    }

    /// The backoff before attempt `attempt` (1-based) of something that
    /// failed or found nothing: `backoff_initial * 2^(attempt-1)`, at most
    /// `backoff_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        outbox_core::Backoff {
            initial: self.backoff_initial,
            max: self.backoff_max,
        }
        .delay(attempt)
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessorReport {
    /// Non-empty pages relayed (a page read again counts again).
    pub pages: usize,
    /// Changed documents in those pages.
    pub records: usize,
    /// Events the sink accepted.
    pub published: usize,
    /// Documents skipped (not outbox documents).
    pub skipped: usize,
    /// Documents quarantined by the relay (poison, oversize, refused).
    pub quarantined: usize,
    /// Pages with a document neither delivered nor quarantined: not
    /// checkpointed, read again from the last checkpoint.
    pub failed_pages: usize,
    /// Change-feed streams rebuilt from the last continuation after an error.
    pub stream_rebuilds: usize,
    /// Leases this instance acquired (including take-overs).
    pub leases_acquired: usize,
    /// Leases split into their child ranges' leases.
    pub splits: usize,
}

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

    /// Works one leased range until told to stop, the lease is lost, or the run fails.
    async fn work(&self, lease: Lease, range: FeedRange, mut stop: watch::Receiver<Stop>) -> (String, Exit) {
        let exit = self.work_range(&lease, range, &mut stop).await;
        tracing::debug!(?exit, "range worker ended");
        (lease.id, exit)
    }

    async fn work_range(&self, lease: &Lease, range: FeedRange, stop: &mut watch::Receiver<Stop>) -> Exit {
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
            match *stop.borrow() {
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
                        pause(self.config.backoff(errors), stop).await;
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
                    pause(self.config.backoff(errors), stop).await;
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
                pause(self.config.backoff(idle), stop).await;
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
                    if let Err(exit) = self
                        .lease_call(stop, || self.leases.checkpoint(&lease.id, owner, &next))
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
                    pause(self.config.backoff(failures), stop).await;
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

    /// Runs a lease call, retrying transient failures a few times. `Err`:
    /// how the worker must end.
    async fn lease_call<T, F, Fut>(&self, stop: &mut watch::Receiver<Stop>, call: F) -> Result<T, Exit>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, LeaseError>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(LeaseError::LostLease { id, owner }) => {
                    tracing::warn!(lease = %id, new_owner = ?owner, "lease lost; stopping the range");
                    return Err(Exit::Lost);
                }
                Err(error) if error.is_retryable() && attempt < LEASE_CALL_RETRIES => {
                    attempt += 1;
                    tracing::warn!(attempt, error = %error, "lease call failed; retrying");
                    pause(self.config.backoff(attempt), stop).await;
                    if *stop.borrow() == Stop::Lost {
                        return Err(Exit::Lost);
                    }
                }
                Err(error) if error.is_retryable() => {
                    tracing::warn!(error = %error, "lease calls keep failing; letting the range go");
                    return Err(Exit::Interrupted);
                }
                Err(error) => return Err(Exit::Fatal(ProcessorError::Lease(error))),
            }
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

/// Sleeps `delay`, or less if the worker is told to stop.
async fn pause(delay: Duration, stop: &mut watch::Receiver<Stop>) {
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        _ = stop.changed() => {}
    }
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

#[cfg(test)]
mod tests;
