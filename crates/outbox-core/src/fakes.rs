//! Fakes of the ports, for tests of the relay and of its hosts
//! (feature `test-util`).

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::{
    ChunkLimits, EntryResult, EventSink, FailureClass, OutboxEvent, Quarantine, QuarantineError,
    QuarantinedRecord, SinkError,
};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Size of an event as the fakes count it: its envelope JSON.
fn json_size(event: &OutboxEvent) -> usize {
    event.to_json().len()
}

/// A sink that accepts everything and remembers each call.
#[derive(Debug)]
pub struct RecordingSink {
    limits: ChunkLimits,
    calls: Mutex<Vec<Vec<OutboxEvent>>>,
}

impl Default for RecordingSink {
    fn default() -> Self {
        Self::new(ChunkLimits {
            max_entries: 10,
            max_bytes: 256 * 1024,
        })
    }
}

impl RecordingSink {
    /// A sink with the given limits.
    pub fn new(limits: ChunkLimits) -> Self {
        Self {
            limits,
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Every call, in order, with its events.
    pub fn calls(&self) -> Vec<Vec<OutboxEvent>> {
        lock(&self.calls).clone()
    }

    /// Every event published, in call order.
    pub fn published(&self) -> Vec<OutboxEvent> {
        lock(&self.calls).iter().flatten().cloned().collect()
    }
}

impl EventSink for RecordingSink {
    fn limits(&self) -> ChunkLimits {
        self.limits
    }

    fn entry_size(&self, event: &OutboxEvent) -> usize {
        json_size(event)
    }

    async fn publish(&self, events: &[&OutboxEvent]) -> Result<Vec<EntryResult>, SinkError> {
        lock(&self.calls).push(events.iter().map(|e| (*e).clone()).collect());
        Ok(vec![EntryResult::Published; events.len()])
    }
}

/// What a [`FlakySink`] does with one entry or one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Accept the entry.
    Accept,
    /// Fail the entry with this class and code.
    Entry(FailureClass, &'static str),
    /// Fail the whole call with this class and code.
    Call(FailureClass, &'static str),
    /// Answer the call only after this long (then per the rule); a scripted
    /// call fault only.
    Stall(std::time::Duration),
}

type Rule = Box<dyn Fn(&OutboxEvent, u32) -> Fault + Send + Sync>;

/// A sink whose answer per entry is decided by a rule over the event and the
/// number of times that event was offered before (0 on the first offer).
/// What it accepted is recorded.
pub struct FlakySink {
    limits: ChunkLimits,
    rule: Rule,
    offers: Mutex<std::collections::HashMap<uuid::Uuid, u32>>,
    accepted: Mutex<Vec<OutboxEvent>>,
    calls: Mutex<usize>,
    scripted_calls: Mutex<VecDeque<Fault>>,
}

impl std::fmt::Debug for FlakySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlakySink")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl FlakySink {
    /// A sink answering each entry with `rule(event, previous_offers)`.
    pub fn new(rule: impl Fn(&OutboxEvent, u32) -> Fault + Send + Sync + 'static) -> Self {
        Self {
            limits: ChunkLimits {
                max_entries: 10,
                max_bytes: 256 * 1024,
            },
            rule: Box::new(rule),
            offers: Mutex::new(Default::default()),
            accepted: Mutex::new(Vec::new()),
            calls: Mutex::new(0),
            scripted_calls: Mutex::new(VecDeque::new()),
        }
    }

    /// Uses `limits` instead of 10 entries / 256 KiB.
    #[must_use]
    pub fn with_limits(mut self, limits: ChunkLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The next calls answer with these call-level faults first (an
    /// `Accept` lets the rule decide for that call).
    #[must_use]
    pub fn with_calls(self, faults: impl IntoIterator<Item = Fault>) -> Self {
        lock(&self.scripted_calls).extend(faults);
        self
    }

    /// Events accepted, in order of acceptance.
    pub fn accepted(&self) -> Vec<OutboxEvent> {
        lock(&self.accepted).clone()
    }

    /// Calls made.
    pub fn calls(&self) -> usize {
        *lock(&self.calls)
    }
}

impl EventSink for FlakySink {
    fn limits(&self) -> ChunkLimits {
        self.limits
    }

    fn entry_size(&self, event: &OutboxEvent) -> usize {
        json_size(event)
    }

    async fn publish(&self, events: &[&OutboxEvent]) -> Result<Vec<EntryResult>, SinkError> {
        *lock(&self.calls) += 1;
        let scripted = lock(&self.scripted_calls).pop_front();
        match scripted {
            Some(Fault::Call(class, code)) => {
                return Err(SinkError {
                    class,
                    code: code.into(),
                    message: "scripted call failure".into(),
                });
            }
            Some(Fault::Stall(delay)) => tokio::time::sleep(delay).await,
            _ => {}
        }
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            let previous = {
                let mut offers = lock(&self.offers);
                let n = offers.entry(event.id()).or_insert(0);
                *n += 1;
                *n - 1
            };
            match (self.rule)(event, previous) {
                Fault::Accept => {
                    lock(&self.accepted).push((*event).clone());
                    results.push(EntryResult::Published);
                }
                Fault::Entry(class, code) => results.push(EntryResult::Failed {
                    class,
                    code: code.into(),
                    message: "scripted entry failure".into(),
                }),
                Fault::Call(class, code) => {
                    return Err(SinkError {
                        class,
                        code: code.into(),
                        message: "scripted call failure".into(),
                    });
                }
                Fault::Stall(_) => results.push(EntryResult::Failed {
                    class: FailureClass::Transient,
                    code: "Stall".into(),
                    message: "a stall is a call fault".into(),
                }),
            }
        }
        Ok(results)
    }
}

/// A quarantine that keeps what it is given, and can be told to fail.
#[derive(Debug, Default)]
pub struct RecordingQuarantine {
    records: Mutex<Vec<QuarantinedRecord>>,
    failing: std::sync::atomic::AtomicBool,
}

impl RecordingQuarantine {
    /// A quarantine that refuses everything.
    pub fn failing() -> Self {
        let q = Self::default();
        q.failing.store(true, std::sync::atomic::Ordering::Relaxed);
        q
    }

    /// What was quarantined, in order.
    pub fn records(&self) -> Vec<QuarantinedRecord> {
        lock(&self.records).clone()
    }
}

impl Quarantine for RecordingQuarantine {
    async fn quarantine(&self, record: &QuarantinedRecord) -> Result<(), QuarantineError> {
        if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(QuarantineError {
                message: "scripted quarantine failure".into(),
            });
        }
        lock(&self.records).push(record.clone());
        Ok(())
    }
}
