//! Per-feed-range leases and checkpoints of the change-feed processor, in a
//! Cosmos DB lease container (see [`CosmosLeaseStore`]).

use std::sync::Arc;
use std::time::Duration;

use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::feed::FeedRange;
use azure_data_cosmos::options::{ItemWriteOptions, Precondition};
use azure_data_cosmos::{CosmosError, FeedScope, Query};
use futures_util::TryStreamExt;
use outbox_core::{Clock, SystemClock};
use serde::{Deserialize, Serialize};

use crate::LeaseError;
use crate::error::{ErrorClass, classify, status_of};

/// Value of the `kind` field of every lease document.
pub const LEASE_KIND: &str = "outbox-lease/v1";

/// How often a read-modify-write of one lease is retried when its etag
/// changed in between for a reason that keeps it ours (our own renewal
/// racing our own checkpoint).
const ETAG_RACE_RETRIES: u32 = 5;

/// The lease of one feed range, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Lease {
    /// Document id (and partition key): `<prefix>.<min EPK>-<max EPK>`.
    pub id: String,
    /// Always [`LEASE_KIND`].
    pub kind: String,
    /// The processor name the lease belongs to (several processors can share
    /// one lease container).
    pub prefix: String,
    /// The feed range, in the SDK's string form.
    pub feed_range: String,
    /// Who holds the lease; `None` when released.
    #[serde(default)]
    pub owner: Option<String>,
    /// When the lease expires, epoch milliseconds.
    #[serde(default)]
    pub expires_at_ms: i64,
    /// The change-feed continuation: everything before it was delivered or
    /// quarantined. `None`: start at the beginning of the change feed.
    #[serde(default)]
    pub continuation: Option<String>,
    /// The lease this one was split from, if any.
    #[serde(default)]
    pub parent: Option<String>,
    /// The document's etag, for `IfMatch`.
    #[serde(rename = "_etag", default, skip_serializing)]
    pub etag: Option<String>,
}

impl Lease {
    /// Whether an instance other than `owner` holds this lease at `now_ms`.
    pub fn is_held_by_other(&self, owner: &str, now_ms: i64) -> bool {
        match &self.owner {
            Some(o) => o != owner && self.expires_at_ms >= now_ms,
            None => false,
        }
    }

    /// Whether anyone holds this lease at `now_ms`.
    pub fn is_held(&self, now_ms: i64) -> bool {
        self.owner.is_some() && self.expires_at_ms >= now_ms
    }

    /// The feed range, parsed.
    pub fn range(&self) -> Result<FeedRange, LeaseError> {
        self.feed_range
            .parse()
            .map_err(|e: CosmosError| LeaseError::Malformed {
                id: self.id.clone(),
                reason: format!("feed_range does not parse: {e}"),
            })
    }
}

/// The lease id of `range` under `prefix`: `<prefix>.<min EPK hex>-<max EPK hex>`
/// (hex, so the id never holds a character Cosmos DB ids may not).
pub fn lease_id(prefix: &str, range: &FeedRange) -> String {
    format!(
        "{prefix}.{}-{}",
        range.min_inclusive().to_hex(),
        range.max_exclusive().to_hex()
    )
}

/// Per-feed-range leases and checkpoints of the change-feed processor, in a
/// Cosmos DB container partitioned on `/id`:
///
/// | field | value |
/// |---|---|
/// | `id` | `<prefix>.<min EPK>-<max EPK>` |
/// | `kind` | `outbox-lease/v1` |
/// | `prefix` | the processor name |
/// | `feed_range` | the feed range, in the SDK's string form |
/// | `owner` | the instance holding the lease; `null` when released |
/// | `expires_at_ms` | epoch milliseconds; another instance may take the lease after it |
/// | `continuation` | the change-feed continuation token; `null`: from the beginning |
/// | `parent` | the lease this one was split from |
///
/// Every write is a replace with `IfMatch` on the etag of a document just
/// read and checked (owner, expiry), so no update is lost and no range ever
/// has two owners in the container.
#[derive(Clone)]
pub struct CosmosLeaseStore {
    container: ContainerClient,
    prefix: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for CosmosLeaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosmosLeaseStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What a lease update does to the document read.
type Mutation<'a> = &'a (dyn Fn(&mut Lease) + Send + Sync);

impl CosmosLeaseStore {
    /// Leases in `container` (partitioned on `/id`) for the processor named
    /// `prefix` (letters, digits, `-` and `_`), timed by the system clock.
    pub fn new(container: ContainerClient, prefix: impl Into<String>) -> Result<Self, LeaseError> {
        let prefix = prefix.into();
        if prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(LeaseError::InvalidConfig {
                reason: format!("the lease prefix {prefix:?} must be letters, digits, `-` and `_`"),
            });
        }
        Ok(Self {
            container,
            prefix,
            clock: Arc::new(SystemClock),
        })
    }

    /// Times leases with `clock` (lease expiry is wall-clock time shared by
    /// every instance, in epoch milliseconds).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The processor name.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The current time, epoch milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// Every lease of this processor.
    pub async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        let query = Query::from("SELECT * FROM c WHERE c.kind = @kind AND c.prefix = @prefix")
            .with_parameter("@kind", LEASE_KIND)
            .and_then(|q| q.with_parameter("@prefix", &self.prefix))
            .map_err(lease_error)?;
        let items = Box::pin(
            self.container
                .query_items::<Lease>(query, FeedScope::full_container(), None),
        )
        .await
        .map_err(lease_error)?;
        let mut leases: Vec<Lease> = Box::pin(items.try_collect()).await.map_err(lease_error)?;
        leases.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(leases)
    }

    /// Reads one lease.
    pub async fn read(&self, id: &str) -> Result<Lease, LeaseError> {
        match self.container.read_item(id.to_owned(), id, None).await {
            Ok(response) => response.into_model::<Lease>().map_err(|e| LeaseError::Malformed {
                id: id.to_owned(),
                reason: e.to_string(),
            }),
            Err(e) if e.status().is_not_found() => Err(LeaseError::NotFound { id: id.to_owned() }),
            Err(e) => Err(lease_error(e)),
        }
    }

    /// Creates the lease of `range` (released, with `continuation` and
    /// `parent`) unless it exists. Returns whether it was created.
    pub async fn create_if_absent(
        &self,
        range: &FeedRange,
        continuation: Option<&str>,
        parent: Option<&str>,
    ) -> Result<bool, LeaseError> {
        let lease = Lease {
            id: lease_id(&self.prefix, range),
            kind: LEASE_KIND.into(),
            prefix: self.prefix.clone(),
            feed_range: range.to_string(),
            owner: None,
            expires_at_ms: 0,
            continuation: continuation.map(str::to_owned),
            parent: parent.map(str::to_owned),
            etag: None,
        };
        match self
            .container
            .create_item(lease.id.clone(), &lease.id, &lease, None)
            .await
        {
            Ok(_) => {
                tracing::info!(lease = %lease.id, parent = ?parent, "lease created");
                Ok(true)
            }
            Err(e) if e.status().is_conflict() => Ok(false),
            Err(e) => Err(lease_error(e)),
        }
    }

    /// Takes `lease` (as listed) for `owner` until now + `duration`, if no
    /// one else holds it: released, expired, or already `owner`'s. With
    /// `steal`, an unexpired lease of another owner is taken too (load
    /// balancing). The write is conditional on the etag listed: a lease that
    /// changed since is [`LeaseError::Held`] (someone was faster).
    pub async fn acquire(
        &self,
        lease: &Lease,
        owner: &str,
        duration: Duration,
        steal: bool,
    ) -> Result<Lease, LeaseError> {
        let now = self.now_ms();
        if !steal && lease.is_held_by_other(owner, now) {
            return Err(held(lease));
        }
        let mut next = lease.clone();
        next.owner = Some(owner.to_owned());
        next.expires_at_ms = now.saturating_add(duration_ms(duration));
        match self.replace(&next, lease.etag.as_deref()).await {
            Ok(etag) => {
                next.etag = etag;
                Ok(next)
            }
            Err(ReplaceError::Stale) => match self.read(&lease.id).await {
                Ok(current) => Err(held(&current)),
                Err(e) => Err(e),
            },
            Err(ReplaceError::Gone) => Err(LeaseError::NotFound { id: lease.id.clone() }),
            Err(ReplaceError::Other(e)) => Err(e),
        }
    }

    /// Extends `owner`'s lease `id` to now + `duration`.
    /// [`LeaseError::LostLease`] if `owner` no longer holds it.
    pub async fn renew(&self, id: &str, owner: &str, duration: Duration) -> Result<Lease, LeaseError> {
        let expires = self.now_ms().saturating_add(duration_ms(duration));
        self.update_owned(id, owner, &move |lease: &mut Lease| lease.expires_at_ms = expires)
            .await
    }

    /// Records `continuation` as the position of `owner`'s lease `id`:
    /// everything before it is done.
    pub async fn checkpoint(&self, id: &str, owner: &str, continuation: &str) -> Result<Lease, LeaseError> {
        let continuation = continuation.to_owned();
        self.update_owned(id, owner, &move |lease: &mut Lease| {
            lease.continuation = Some(continuation.clone());
        })
        .await
    }

    /// Gives up `owner`'s lease `id` (keeping its continuation), so another
    /// instance can take it at once.
    pub async fn release(&self, id: &str, owner: &str) -> Result<(), LeaseError> {
        self.update_owned(id, owner, &|lease: &mut Lease| {
            lease.owner = None;
            lease.expires_at_ms = 0;
        })
        .await
        .map(drop)
    }

    /// Replaces `owner`'s lease `parent` by one released lease per child
    /// range, each starting at the parent's continuation (the change feed
    /// accepts a parent's continuation for a child range), then deletes the
    /// parent. Children that exist already are kept as they are. Safe to run
    /// again after a failure half-way.
    pub async fn split(&self, parent: &Lease, owner: &str, children: &[FeedRange]) -> Result<(), LeaseError> {
        let current = self.read(&parent.id).await?;
        if current.owner.as_deref() != Some(owner) {
            return Err(LeaseError::LostLease {
                id: parent.id.clone(),
                owner: current.owner,
            });
        }
        for child in children {
            self.create_if_absent(child, current.continuation.as_deref(), Some(&current.id))
                .await?;
        }
        let options = current
            .etag
            .clone()
            .map(|etag| ItemWriteOptions::default().with_precondition(Precondition::if_match(etag)));
        match self
            .container
            .delete_item(current.id.clone(), &current.id, options)
            .await
        {
            Ok(_) => {
                tracing::info!(lease = %current.id, children = children.len(), "lease split");
                Ok(())
            }
            Err(e) if e.status().is_not_found() => Ok(()),
            Err(e) if e.status().is_precondition_failed() => Err(LeaseError::LostLease {
                id: current.id.clone(),
                owner: None,
            }),
            Err(e) => Err(lease_error(e)),
        }
    }

    /// Read, check that `owner` holds the lease, change it, replace with
    /// `IfMatch`; on an etag race, read again (a concurrent write of our own,
    /// such as a renewal during a checkpoint, keeps the lease ours).
    async fn update_owned(&self, id: &str, owner: &str, mutate: Mutation<'_>) -> Result<Lease, LeaseError> {
        for _ in 0..=ETAG_RACE_RETRIES {
            let current = match self.read(id).await {
                Ok(current) => current,
                Err(LeaseError::NotFound { .. }) => {
                    return Err(LeaseError::LostLease {
                        id: id.to_owned(),
                        owner: None,
                    });
                }
                Err(e) => return Err(e),
            };
            if current.owner.as_deref() != Some(owner) {
                return Err(LeaseError::LostLease {
                    id: id.to_owned(),
                    owner: current.owner,
                });
            }
            let mut next = current.clone();
            mutate(&mut next);
            match self.replace(&next, current.etag.as_deref()).await {
                Ok(etag) => {
                    next.etag = etag;
                    return Ok(next);
                }
                Err(ReplaceError::Stale) => {
                    tracing::debug!(lease = id, "lease changed during an update; reading again");
                }
                Err(ReplaceError::Gone) => {
                    return Err(LeaseError::LostLease {
                        id: id.to_owned(),
                        owner: None,
                    });
                }
                Err(ReplaceError::Other(e)) => return Err(e),
            }
        }
        Err(LeaseError::Service {
            retryable: true,
            source: format!("lease {id} kept changing during {ETAG_RACE_RETRIES} updates").into(),
        })
    }

    /// Replaces a lease, with `IfMatch` on `etag` when given; returns the new etag.
    async fn replace(&self, lease: &Lease, etag: Option<&str>) -> Result<Option<String>, ReplaceError> {
        let options = etag.map(|etag| {
            ItemWriteOptions::default().with_precondition(Precondition::if_match(etag.to_owned()))
        });
        match self
            .container
            .replace_item(lease.id.clone(), &lease.id, lease, options)
            .await
        {
            Ok(response) => Ok(response.headers().etag().map(|e| e.to_string())),
            Err(e) if e.status().is_precondition_failed() => Err(ReplaceError::Stale),
            Err(e) if e.status().is_not_found() => Err(ReplaceError::Gone),
            Err(e) => Err(ReplaceError::Other(lease_error(e))),
        }
    }
}

enum ReplaceError {
    Stale,
    Gone,
    Other(LeaseError),
}

fn held(lease: &Lease) -> LeaseError {
    LeaseError::Held {
        id: lease.id.clone(),
        owner: lease.owner.clone().unwrap_or_default(),
        expires_at_ms: lease.expires_at_ms,
    }
}

fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn lease_error(error: CosmosError) -> LeaseError {
    match classify(&error) {
        ErrorClass::Transient => LeaseError::Service {
            retryable: true,
            source: Box::new(error),
        },
        ErrorClass::Permanent => LeaseError::Rejected {
            status: status_of(&error),
            source: Box::new(error),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(owner: Option<&str>, expires_at_ms: i64) -> Lease {
        Lease {
            id: "p.-FF".into(),
            kind: LEASE_KIND.into(),
            prefix: "p".into(),
            feed_range: FeedRange::full().to_string(),
            owner: owner.map(str::to_owned),
            expires_at_ms,
            continuation: None,
            parent: None,
            etag: Some("\"e\"".into()),
        }
    }

    #[test]
    fn ownership_depends_on_owner_and_expiry() {
        assert!(lease(Some("a"), 100).is_held_by_other("b", 100));
        assert!(!lease(Some("a"), 99).is_held_by_other("b", 100), "expired");
        assert!(!lease(Some("a"), 100).is_held_by_other("a", 100), "ours");
        assert!(!lease(None, 1_000).is_held_by_other("b", 100), "released");
        assert!(lease(Some("a"), 100).is_held(100));
        assert!(!lease(None, 100).is_held(100));
    }

    #[test]
    fn lease_ids_are_hex_ranges_and_the_document_round_trips() {
        let full = FeedRange::full();
        assert_eq!(lease_id("orders", &full), "orders.-FF");
        let l = lease(Some("a"), 5);
        let json = serde_json::to_value(&l).unwrap();
        assert!(json.get("_etag").is_none(), "the etag is never written");
        assert_eq!(json["kind"], LEASE_KIND);
        let mut back: Lease = serde_json::from_value(json).unwrap();
        assert_eq!(back.etag, None);
        back.etag = l.etag.clone();
        assert_eq!(back, l);
        assert_eq!(back.range().unwrap(), full);
        let mut bad = l;
        bad.feed_range = "not base64!".into();
        assert!(matches!(bad.range(), Err(LeaseError::Malformed { .. })));
    }
}
