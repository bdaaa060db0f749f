//! A batch as the relay keeps it while relaying it: one slot per record,
//! the chunks of events for the calls, what the calls left to do, and how
//! far the done prefix has been reported.

use std::ops::Deref;
use std::sync::{Mutex, PoisonError};

use crate::{ChunkLimits, EntryResult, FailureClass, QuarantinedRecord, SinkError};

/// Where a record of the batch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    Pending,
    Delivered,
    /// Delivered by this relay in an earlier attempt of the batch.
    AlreadyDelivered,
    Quarantined,
    Skipped,
    Failed,
}

/// What calls' results left to do: the slots to retry (in batch order), the
/// records to quarantine, and a whole-call permanent error if one happened.
#[derive(Default)]
pub(super) struct Settled {
    pub(super) retry: Vec<usize>,
    pub(super) permanent: Vec<(usize, QuarantinedRecord)>,
    pub(super) fatal: Option<SinkError>,
}

/// How far the batch's done prefix has been reported.
pub(super) struct Progress<'p> {
    pub(super) report: Option<&'p (dyn Fn(&str) + Send + Sync)>,
    /// The length of the prefix reported so far.
    pub(super) done: usize,
}

impl Progress<'_> {
    /// Reports the done prefix of `slots` if it grew.
    pub(super) fn advance<H, T: Deref<Target = str>>(&mut self, slots: &[Slot<H, T>]) {
        let Some(report) = self.report else { return };
        let start = self.done;
        while let Some(slot) = slots.get(self.done)
            && matches!(
                slot.status,
                Status::Delivered | Status::AlreadyDelivered | Status::Quarantined | Status::Skipped
            )
        {
            self.done += 1;
        }
        if self.done > start {
            report(&slots[self.done - 1].position);
        }
    }
}

/// The slots, when nothing else holds them: no locking.
pub(super) fn own<H, T>(slots: &mut Mutex<Vec<Slot<H, T>>>) -> &mut Vec<Slot<H, T>> {
    slots.get_mut().unwrap_or_else(PoisonError::into_inner)
}

/// A record as the relay keeps it while relaying its batch.
pub(super) struct Slot<H, T> {
    pub(super) position: T,
    pub(super) status: Status,
    /// Its event's entry size, computed once and reused by every attempt.
    pub(super) size: usize,
    /// Its event while it waits for a call; the call that publishes it takes
    /// it, and gives it back when the event is to be retried.
    pub(super) event: Option<H>,
}

/// A chunk of events for one call, with the slots they belong to.
pub(super) struct Chunk<H> {
    pub(super) indices: Vec<usize>,
    pub(super) events: Vec<H>,
}

impl<H> Chunk<H> {
    /// An empty chunk with room for a full one of `limits` (its vectors
    /// would otherwise grow three times on the way to ten entries).
    pub(super) fn for_limits(limits: ChunkLimits) -> Self {
        // A sink's limit is not an allocation size.
        let room = limits.max_entries.min(64);
        Self {
            indices: Vec::with_capacity(room),
            events: Vec::with_capacity(room),
        }
    }

    pub(super) fn push(&mut self, index: usize, event: H) {
        self.indices.push(index);
        self.events.push(event);
    }
}

/// A chunk after its call, with the call's result.
pub(super) struct Sent<H> {
    pub(super) chunk: Chunk<H>,
    pub(super) result: Result<Vec<EntryResult>, SinkError>,
    /// The call was not made, or given up, for the batch deadline.
    pub(super) deadline_reached: bool,
}

/// The failure of a call not made, or given up, for the batch deadline.
pub(super) fn deadline_passed() -> SinkError {
    SinkError {
        class: FailureClass::Transient,
        code: "BatchDeadline".into(),
        message:
            "the batch deadline passed before the call ended; whether the sink took its entries is unknown"
                .into(),
    }
}
