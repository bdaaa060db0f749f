//! Reading a batch's records one at a time into the slots and chunks the
//! relay publishes.

use std::convert::Infallible;
use std::ops::Deref;
use std::sync::{Mutex, PoisonError};

use crate::chunk::Chunker;
use crate::delivered::Delivered;
use crate::{Decoded, EventSink, OutboxEvent, QuarantinedRecord, RelayRecord};

use super::{Chunk, Slot, Status};

/// What the relay reads of a record, borrowed from the caller's batch or
/// owned when the records are read one by one.
pub(super) trait SourceRecord {
    /// How the record's event is held.
    type Event: Deref<Target = OutboxEvent> + Send + Sync;
    /// How its texts (position, poison reason and content) are held.
    type Text: Deref<Target = str> + Send + Sync;
    /// Its position and its content; a skip is logged here.
    fn into_parts(self) -> (Self::Text, Part<Self::Event, Self::Text>);
}

/// A record's content, as the relay sorts it.
pub(super) enum Part<H, T> {
    Event(H),
    Skip,
    Poison { reason: T, raw: T },
}

impl<'a> SourceRecord for &'a RelayRecord {
    type Event = &'a OutboxEvent;
    type Text = &'a str;
    fn into_parts(self) -> (&'a str, Part<&'a OutboxEvent, &'a str>) {
        let part = match &self.decoded {
            Decoded::Event(event) => Part::Event(&**event),
            Decoded::Skip(reason) => {
                tracing::debug!(position = %self.position, ?reason, "skipped");
                Part::Skip
            }
            Decoded::Poison { reason, raw } => Part::Poison {
                reason: reason.as_str(),
                raw: raw.as_str(),
            },
        };
        (self.position.as_str(), part)
    }
}

impl SourceRecord for RelayRecord {
    type Event = Box<OutboxEvent>;
    type Text = String;
    fn into_parts(self) -> (String, Part<Box<OutboxEvent>, String>) {
        let part = match self.decoded {
            Decoded::Event(event) => Part::Event(event),
            Decoded::Skip(reason) => {
                tracing::debug!(position = %self.position, ?reason, "skipped");
                Part::Skip
            }
            Decoded::Poison { reason, raw } => Part::Poison { reason, raw },
        };
        (self.position, part)
    }
}

/// The records of a batch the caller keeps, as a source that cannot fail.
pub(super) struct Borrowed<'a>(pub(super) std::slice::Iter<'a, RelayRecord>);

impl<'a> Iterator for Borrowed<'a> {
    type Item = Result<&'a RelayRecord, Infallible>;
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(Ok)
    }
}

/// Reads the batch one record at a time and cuts it into chunks as it goes
/// (as [`chunk_ranges`] would cut the whole batch), sorting out what is not
/// to be published on the way.
pub(super) struct Reader<'r, I, S, R: SourceRecord, E> {
    pub(super) source: I,
    pub(super) sink: &'r S,
    pub(super) slots: &'r Mutex<Vec<Slot<R::Event, R::Text>>>,
    pub(super) to_quarantine: &'r mut Vec<(usize, QuarantinedRecord)>,
    /// The error that stopped the reading.
    pub(super) stopped: &'r mut Option<E>,
    pub(super) chunker: Chunker,
    /// The next chunk, started by the record that did not fit in the last.
    pub(super) carry: Option<Chunk<R::Event>>,
    /// What this relay delivered lately: not published again.
    pub(super) delivered: &'r Delivered,
}

impl<I, S, R, E> Iterator for Reader<'_, I, S, R, E>
where
    I: Iterator<Item = Result<R, E>>,
    S: EventSink,
    R: SourceRecord,
{
    type Item = Chunk<R::Event>;

    /// The next complete chunk, reading records until one shows that it is
    /// complete (or the batch ends).
    fn next(&mut self) -> Option<Chunk<R::Event>> {
        let mut chunk = self
            .carry
            .take()
            .unwrap_or_else(|| Chunk::for_limits(self.sink.limits()));
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        while self.stopped.is_none() {
            let record = match self.source.next() {
                None => break,
                Some(Ok(record)) => record,
                Some(Err(error)) => {
                    *self.stopped = Some(error);
                    return None;
                }
            };
            let index = slots.len();
            let (position, part) = record.into_parts();
            let mut slot = Slot {
                position,
                status: Status::Pending,
                size: 0,
                event: None,
            };
            match part {
                Part::Skip => slot.status = Status::Skipped,
                Part::Poison { reason, raw } => self.to_quarantine.push((
                    index,
                    QuarantinedRecord {
                        position: (*slot.position).to_owned(),
                        reason: format!("poison record: {}", &*reason),
                        event: None,
                        raw: Some((*raw).to_owned()),
                    },
                )),
                Part::Event(event) if self.delivered.contains(&event.id()) => {
                    tracing::debug!(event_id = %event.id(), position = %&*slot.position, "delivered before; not published again");
                    slot.status = Status::AlreadyDelivered;
                }
                Part::Event(event) => {
                    let size = self.sink.entry_size(&event);
                    let max_bytes = self.sink.limits().max_bytes;
                    if size > max_bytes {
                        self.to_quarantine.push((
                            index,
                            QuarantinedRecord {
                                position: (*slot.position).to_owned(),
                                reason: format!(
                                    "event is {size} bytes as a bus entry; a request takes at most {max_bytes} bytes"
                                ),
                                event: Some((*event).clone()),
                                raw: None,
                            },
                        ));
                    } else {
                        slot.size = size;
                        slots.push(slot);
                        if self.chunker.push(size) {
                            let mut next = Chunk::for_limits(self.sink.limits());
                            next.push(index, event);
                            self.carry = Some(next);
                            return Some(chunk);
                        }
                        chunk.push(index, event);
                        continue;
                    }
                }
            }
            slots.push(slot);
        }
        (!chunk.indices.is_empty()).then_some(chunk)
    }
}
