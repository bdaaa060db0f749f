//! The processor's settings and its report.

use std::time::Duration;

use outbox_core::Backoff;
use outbox_core::host::{HostConfig, instance_owner};

use crate::ProcessorError;

use super::MAX_ITEMS_PER_PAGE;

/// How the processor reads, leases and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessorConfig {
    /// This instance's identity in the leases; unique per running process
    /// ([`new`](Self::new) makes it so).
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
    /// Defaults for an instance named `name` (its owner id is the name with
    /// a per-process part, [`instance_owner`]): 15 s leases, pages of 100,
    /// backoff 100 ms doubling to 1 s, 30 s per page, discovery every 5 s.
    pub fn new(name: &str) -> Self {
        Self {
            owner: instance_owner(name),
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
        if !(1..=MAX_ITEMS_PER_PAGE).contains(&self.max_items_per_page) {
            return invalid(format!(
                "max_items_per_page is {}; it must be 1 to {MAX_ITEMS_PER_PAGE}",
                self.max_items_per_page
            ));
        }
        self.host().validate().or_else(invalid)
    }

    /// The backoff before attempt `attempt` (1-based) of something that
    /// failed or found nothing: `backoff_initial * 2^(attempt-1)`, at most
    /// `backoff_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.backoffs().delay(attempt)
    }

    /// The backoff of every wait.
    pub(crate) fn backoffs(&self) -> Backoff {
        Backoff {
            initial: self.backoff_initial,
            max: self.backoff_max,
        }
    }

    /// The settings the host skeleton reads.
    pub(crate) fn host(&self) -> HostConfig {
        HostConfig {
            owner: self.owner.clone(),
            lease_duration: self.lease_duration,
            backoff_initial: self.backoff_initial,
            backoff_max: self.backoff_max,
            batch_deadline: self.batch_deadline,
            discovery_interval: self.discovery_interval,
        }
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
