//! The host skeleton of the standalone relays: a set of leased partitions
//! (DynamoDB Streams shards, Cosmos DB feed ranges), one worker per
//! partition held, with discovery, lease renewal, load balancing and a
//! graceful stop.
//!
//! A database plugs in by implementing [`Partitions`]; [`run`] does the rest.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{Backoff, error_chain};

/// How often a running host logs its counts at `info`.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// How often a lease call that failed transiently is retried inside a
/// worker before the partition is let go (a later discovery takes it up).
const LEASE_CALL_RETRIES: u32 = 5;

/// The settings every host shares, whatever the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// This process's identity in the leases; unique per running process
    /// (see [`instance_owner`]).
    pub owner: String,
    /// How long a lease lasts without renewal (renewed every third of it).
    pub lease_duration: Duration,
    /// First backoff after an empty poll, a failed batch or a transient error.
    pub backoff_initial: Duration,
    /// The backoff doubles up to this.
    pub backoff_max: Duration,
    /// How long the relay may spend on one batch, retries included.
    pub batch_deadline: Duration,
    /// How often partitions and leases are listed again.
    pub discovery_interval: Duration,
}

impl HostConfig {
    /// Checks the values and names the first one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.owner.trim().is_empty() {
            return Err("owner is empty".into());
        }
        if self.lease_duration < Duration::from_millis(30) {
            return Err(format!("lease_duration {:?} is too short", self.lease_duration));
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return Err(format!(
                "backoff must be positive and backoff_max ({:?}) at least backoff_initial ({:?})",
                self.backoff_max, self.backoff_initial
            ));
        }
        if self.batch_deadline.is_zero() || self.discovery_interval.is_zero() {
            return Err("batch_deadline and discovery_interval must be positive".into());
        }
        Ok(())
    }

    /// The backoff of every wait: `backoff_initial` doubling to `backoff_max`.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            initial: self.backoff_initial,
            max: self.backoff_max,
        }
    }
}

/// A lease owner id for this process: `name`, then the process id and a
/// random part, so that two processes never share an id, even when a
/// deployment gives every replica one name (two owners with one id would
/// both work the same partition).
pub fn instance_owner(name: &str) -> String {
    let random = uuid::Uuid::now_v7().simple().to_string();
    format!("{name}#{}-{}", std::process::id(), &random[random.len() - 8..])
}

/// What the host tells a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Keep working.
    Run,
    /// Finish the batch in hand (checkpointed), then end; the lease is
    /// still ours and is released (shutdown, hand-over, split).
    Finish,
    /// The lease is someone else's now: end at once.
    Lost,
}

/// A worker's view of what the host tells it.
#[derive(Debug)]
pub struct StopSignal(watch::Receiver<Stop>);

impl StopSignal {
    /// What the host says now.
    pub fn state(&self) -> Stop {
        *self.0.borrow()
    }

    /// Sleeps for `delay`, or less if the host says something new.
    pub async fn pause(&mut self, delay: Duration) {
        if *self.0.borrow_and_update() != Stop::Run {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = self.0.changed() => {}
        }
    }
}

/// Why a worker ended.
#[derive(Debug)]
pub enum WorkerExit<E> {
    /// The partition is complete (a closed shard read to its end): there is
    /// no lease left to release.
    Done,
    /// Told to finish: the batch in hand is checkpointed; release the lease.
    Finished,
    /// The lease is someone else's now.
    Lost,
    /// The lease store kept failing: release the lease and take the
    /// partition up again later.
    Interrupted,
    /// The run must stop.
    Fatal(E),
}

/// How a host reads a lease store's errors.
pub trait LeaseFault: std::error::Error {
    /// The lease is someone else's now.
    fn is_lost(&self) -> bool;
    /// The same call may succeed later.
    fn is_retryable(&self) -> bool;
}

/// A lease acquired during discovery, for a new worker.
#[derive(Debug)]
pub struct Acquired<L> {
    /// The partition's id.
    pub id: String,
    /// What its worker starts from.
    pub lease: L,
    /// When the acquiring call was made: the lease is surely ours until
    /// one lease duration after it.
    pub at: Instant,
}

/// What a discovery round decided.
#[derive(Debug)]
pub struct Plan<L> {
    /// Leases taken: a worker starts for each.
    pub acquired: Vec<Acquired<L>>,
    /// Running partitions to finish at their next batch boundary (handed
    /// over to balance the load, or split).
    pub finish: Vec<String>,
}

impl<L> Default for Plan<L> {
    fn default() -> Self {
        Self {
            acquired: Vec::new(),
            finish: Vec::new(),
        }
    }
}

/// A discovery round that could not finish.
#[derive(Debug)]
pub enum RoundError<E> {
    /// Retried after a backoff.
    Transient(String),
    /// The run stops.
    Fatal(E),
}

/// The partitions this process holds, as a discovery round sees them.
#[derive(Debug, Clone, Copy)]
pub struct Holdings<'a>(&'a HashMap<String, Slot>);

impl Holdings<'_> {
    /// Whether a worker is on `id` (running or finishing).
    pub fn holds(&self, id: &str) -> bool {
        self.0.contains_key(id)
    }

    /// The partitions whose workers are told to run.
    pub fn running(&self) -> HashSet<String> {
        self.0
            .iter()
            .filter(|(_, slot)| *slot.stop.borrow() == Stop::Run)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// A database's side of a host: its partitions, its lease store and its
/// worker.
pub trait Partitions: Sync {
    /// What a worker starts from (the lease with its checkpoint).
    type Lease: Send;
    /// The lease store's error.
    type LeaseError: LeaseFault + Send + Sync + 'static;
    /// The run's error.
    type Error: std::error::Error + From<Self::LeaseError> + Send + Sync + 'static;

    /// What a partition is called in logs ("shard", "range").
    const NAME: &'static str;

    /// Lists partitions and leases, acquires this process's share and says
    /// which running partitions to finish.
    fn discover(
        &self,
        held: Holdings<'_>,
    ) -> impl Future<Output = Result<Plan<Self::Lease>, RoundError<Self::Error>>> + Send;

    /// Extends the lease on `id` by one lease duration.
    fn renew(&self, id: &str) -> impl Future<Output = Result<(), Self::LeaseError>> + Send;

    /// Lets the lease on `id` go, after its worker finished (or whatever
    /// the database does then, e.g. split it). Failures are logged: an
    /// unreleased lease expires.
    fn release(&self, id: &str) -> impl Future<Output = ()> + Send;

    /// Works one partition until it is done, the lease is lost, or `stop`
    /// says finish.
    fn work(
        &self,
        lease: Self::Lease,
        stop: StopSignal,
    ) -> impl Future<Output = WorkerExit<Self::Error>> + Send;

    /// Tells the other processes that this one is alive (at the start and
    /// with every renewal).
    fn announce(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Tells the other processes that this one is leaving.
    fn withdraw(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Logs the run's counts; called every 30 s.
    fn progress(&self, held: usize);
}

/// A partition being worked on.
#[derive(Debug)]
struct Slot {
    stop: watch::Sender<Stop>,
    /// Until when the lease is surely ours (measured from before the last
    /// successful acquire or renewal).
    valid_until: Instant,
}

type Worker<'a, E> = Pin<Box<dyn Future<Output = (String, WorkerExit<E>)> + Send + 'a>>;

/// Runs `partitions` until `shutdown` completes: discovers and acquires
/// partitions every `discovery_interval` (and soon after a worker ends),
/// renews the leases every third of `lease_duration`, and stops a worker
/// whose lease is lost or could not be renewed in time. At shutdown every
/// worker finishes its batch in hand, the leases are released, and the
/// process withdraws. An `Err` is a problem no retry can fix; the leases
/// are released then too.
pub async fn run<P: Partitions>(
    partitions: &P,
    config: &HostConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), P::Error> {
    let backoff = config.backoff();
    let renew_every = config.lease_duration / 3;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut held: HashMap<String, Slot> = HashMap::new();
    let mut workers: FuturesUnordered<Worker<'_, P::Error>> = FuturesUnordered::new();
    let mut next_discovery = Instant::now();
    let mut next_renewal = Instant::now() + renew_every;
    let mut next_progress = Instant::now() + PROGRESS_EVERY;
    let mut discovery_failures = 0u32;
    let mut failure: Option<P::Error> = None;
    partitions.announce().await;

    loop {
        if Instant::now() >= next_discovery {
            match partitions.discover(Holdings(&held)).await {
                Ok(plan) => {
                    discovery_failures = 0;
                    next_discovery = Instant::now() + config.discovery_interval;
                    start(partitions, config, plan, &mut held, &mut workers);
                }
                Err(RoundError::Fatal(error)) => {
                    failure = Some(error);
                    break;
                }
                Err(RoundError::Transient(reason)) => {
                    discovery_failures += 1;
                    tracing::warn!(attempt = discovery_failures, error = %reason, "discovery failed; retrying");
                    next_discovery =
                        Instant::now() + backoff.delay(discovery_failures).min(config.discovery_interval);
                }
            }
        }
        if Instant::now() >= next_renewal {
            if let Err(error) = renew_all(partitions, config, &mut held).await {
                failure = Some(error);
                break;
            }
            next_renewal = Instant::now() + renew_every;
        }
        if Instant::now() >= next_progress {
            partitions.progress(held.len());
            next_progress = Instant::now() + PROGRESS_EVERY;
        }
        tokio::select! {
            biased;
            () = &mut shutdown => {
                tracing::info!(held = held.len(), "shutdown requested");
                break;
            }
            Some((id, exit)) = workers.next(), if !workers.is_empty() => {
                if let Some(error) = ended(partitions, &mut held, id, exit).await {
                    failure = Some(error);
                    break;
                }
                next_discovery = next_discovery.min(Instant::now() + config.backoff_initial);
            }
            () = tokio::time::sleep_until(next_discovery.min(next_renewal).min(next_progress)) => {}
        }
    }

    // Let every worker finish its batch in hand, keeping the leases alive meanwhile.
    for slot in held.values() {
        finish(slot);
    }
    while !workers.is_empty() {
        tokio::select! {
            Some((id, exit)) = workers.next() => {
                if let Some(error) = ended(partitions, &mut held, id, exit).await {
                    failure.get_or_insert(error);
                }
            }
            () = tokio::time::sleep_until(next_renewal) => {
                if let Err(error) = renew_all(partitions, config, &mut held).await {
                    tracing::error!(error = %error_chain(&error), "renewing leases failed during shutdown");
                }
                next_renewal = Instant::now() + renew_every;
            }
        }
    }
    partitions.withdraw().await;
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Applies a discovery round's plan: finishes what it hands over, starts a
/// worker for each lease acquired.
fn start<'a, P: Partitions>(
    partitions: &'a P,
    config: &HostConfig,
    plan: Plan<P::Lease>,
    held: &mut HashMap<String, Slot>,
    workers: &mut FuturesUnordered<Worker<'a, P::Error>>,
) {
    for id in &plan.finish {
        if let Some(slot) = held.get(id) {
            finish(slot);
        }
    }
    for acquired in plan.acquired {
        let (stop, signal) = watch::channel(Stop::Run);
        held.insert(
            acquired.id.clone(),
            Slot {
                stop,
                valid_until: acquired.at + config.lease_duration,
            },
        );
        let id = acquired.id;
        workers.push(Box::pin(async move {
            let exit = partitions.work(acquired.lease, StopSignal(signal)).await;
            (id, exit)
        }));
    }
}

/// Tells a running worker to finish.
fn finish(slot: &Slot) {
    slot.stop.send_if_modified(|stop| {
        let running = *stop == Stop::Run;
        if running {
            *stop = Stop::Finish;
        }
        running
    });
}

/// Renews every lease held; a lost one, or one that could not be renewed
/// in time, stops its worker.
async fn renew_all<P: Partitions>(
    partitions: &P,
    config: &HostConfig,
    held: &mut HashMap<String, Slot>,
) -> Result<(), P::Error> {
    partitions.announce().await;
    for (id, slot) in held.iter_mut() {
        if *slot.stop.borrow() == Stop::Lost {
            continue;
        }
        let started = Instant::now();
        match partitions.renew(id).await {
            Ok(()) => slot.valid_until = started + config.lease_duration,
            Err(error) if error.is_lost() => {
                tracing::warn!(%id, error = %error_chain(&error), "lease lost; stopping the {}", P::NAME);
                slot.stop.send_replace(Stop::Lost);
            }
            Err(error) if error.is_retryable() => {
                // Stop before the lease can expire, so that no other process
                // works the partition while this one still does.
                let expiring = Instant::now() + config.lease_duration / 3 >= slot.valid_until;
                tracing::warn!(%id, expiring, error = %error_chain(&error), "lease renewal failed");
                if expiring {
                    slot.stop.send_replace(Stop::Lost);
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// Handles a worker's end: releases the lease when it is still ours and the
/// partition is not done. Returns the run's error, if it is one.
async fn ended<P: Partitions>(
    partitions: &P,
    held: &mut HashMap<String, Slot>,
    id: String,
    exit: WorkerExit<P::Error>,
) -> Option<P::Error> {
    held.remove(&id);
    tracing::debug!(%id, ?exit, "{} worker ended", P::NAME);
    let (release, error) = match exit {
        WorkerExit::Done | WorkerExit::Lost => (false, None),
        WorkerExit::Finished | WorkerExit::Interrupted => (true, None),
        WorkerExit::Fatal(error) => (true, Some(error)),
    };
    if release {
        partitions.release(&id).await;
    }
    error
}

/// Calls the lease store from a worker, retrying transient failures a few
/// times with `backoff` (not cut short by a finish: the batch in hand is to
/// be checkpointed). `Err` says how the worker must end.
pub async fn lease_call<T, L, E, Fut>(
    stop: &StopSignal,
    backoff: Backoff,
    mut call: impl FnMut() -> Fut,
) -> Result<T, WorkerExit<E>>
where
    L: LeaseFault,
    E: From<L>,
    Fut: Future<Output = Result<T, L>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_lost() => {
                tracing::warn!(error = %error_chain(&error), "lease lost; stopping");
                return Err(WorkerExit::Lost);
            }
            Err(error) if error.is_retryable() && attempt < LEASE_CALL_RETRIES => {
                attempt += 1;
                tracing::warn!(attempt, error = %error_chain(&error), "lease call failed; retrying");
                tokio::time::sleep(backoff.delay(attempt)).await;
                if stop.state() == Stop::Lost {
                    return Err(WorkerExit::Lost);
                }
            }
            Err(error) if error.is_retryable() => {
                tracing::warn!(error = %error_chain(&error), "lease calls keep failing; letting the partition go");
                return Err(WorkerExit::Interrupted);
            }
            Err(error) => return Err(WorkerExit::Fatal(error.into())),
        }
    }
}

#[cfg(test)]
mod tests;
