//! Aggregates: the state a command changes, with the version that orders
//! its events. The DynamoDB and Cosmos DB writers load and save them; what
//! they share (the trait, the versioned value, how a save numbers and
//! identifies its events) is here.

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::{Command, EnvelopeError, Events, OutboxEvent};

/// A type whose values are stored as one item (DynamoDB) or document
/// (Cosmos DB) and change through commands that emit events.
///
/// ```
/// use outbox_core::{Aggregate, Event};
///
/// #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
/// struct OrderPlaced { total: u64 }
/// impl Event for OrderPlaced { const EVENT_TYPE: &'static str = "OrderPlaced"; }
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Order { id: String, total: u64 }
///
/// impl Aggregate for Order {
///     const AGGREGATE_TYPE: &'static str = "Order";
///     type Event = OrderPlaced;
///     fn aggregate_id(&self) -> &str { &self.id }
/// }
/// ```
pub trait Aggregate: Serialize + DeserializeOwned {
    /// The aggregate's type name (no `/` in it): the events'
    /// `aggregate_type`, and the first part of the default partition key
    /// `<type>#<id>`.
    const AGGREGATE_TYPE: &'static str;

    /// The events a change of this aggregate emits: one [`Event`](crate::Event)
    /// type or an enum of them.
    type Event: Events;

    /// This aggregate's id.
    fn aggregate_id(&self) -> &str;
}

/// An aggregate's state with the version it was loaded at (0 for one not
/// stored yet), and for Cosmos DB its etag. Change `state`, then save it:
/// the save is refused if someone else saved a newer version meanwhile.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<A> {
    /// The state, to be changed by the command.
    pub state: A,
    version: u64,
    etag: Option<String>,
}

impl<A> Versioned<A> {
    /// A new aggregate, not stored yet: saving it fails if one with the
    /// same id exists.
    pub fn new(state: A) -> Self {
        Self {
            state,
            version: 0,
            etag: None,
        }
    }

    /// A stored aggregate as a writer loaded it.
    pub fn loaded(state: A, version: u64, etag: Option<String>) -> Self {
        Self { state, version, etag }
    }

    /// The version it was loaded at; 0 if it is new.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether it is not stored yet.
    pub fn is_new(&self) -> bool {
        self.version == 0
    }

    /// The etag it was loaded with (Cosmos DB).
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// The state alone.
    pub fn into_state(self) -> A {
        self.state
    }
}

/// What a save did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Saved {
    /// The state and its events were committed together.
    Committed {
        /// The aggregate's version now.
        version: u64,
        /// The ids of the events written, in order.
        event_ids: Vec<Uuid>,
    },
    /// This command had already been committed (a retried request): nothing
    /// was written.
    AlreadyApplied,
}

impl Saved {
    /// The ids of the events written (none if the command was already applied).
    pub fn event_ids(&self) -> &[Uuid] {
        match self {
            Self::Committed { event_ids, .. } => event_ids,
            Self::AlreadyApplied => &[],
        }
    }
}

/// The version an aggregate has after a save of `events` events: one more
/// per event, so that each event's sequence is its own version, and one more
/// for a save without events.
pub fn version_after(version: u64, events: usize) -> u64 {
    version + u64::try_from(events.max(1)).unwrap_or(u64::MAX)
}

/// The envelopes of one save: `source`, the aggregate's type and id,
/// sequences from the loaded version on, and ids and time from `command`.
pub fn command_events<A: Aggregate>(
    source: &str,
    aggregate: &Versioned<A>,
    command: &Command,
    events: &[A::Event],
) -> Result<Vec<OutboxEvent>, EnvelopeError> {
    events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            OutboxEvent::typed(source, event)
                .aggregate(A::AGGREGATE_TYPE, aggregate.state.aggregate_id())
                .sequence(version_after(aggregate.version, i + 1))
                .id(command.event_id(i))
                .occurred_at(command.at())
                .build(&crate::SystemClock)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use schemars::JsonSchema;
    use serde::Deserialize;

    use super::*;
    use crate::Event;

    #[derive(Debug, Serialize, Deserialize, JsonSchema)]
    struct Placed {
        total: u64,
    }
    impl Event for Placed {
        const EVENT_TYPE: &'static str = "OrderPlaced";
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Order {
        id: String,
    }
    impl Aggregate for Order {
        const AGGREGATE_TYPE: &'static str = "Order";
        type Event = Placed;
        fn aggregate_id(&self) -> &str {
            &self.id
        }
    }

    #[test]
    fn a_save_numbers_its_events_from_the_loaded_version_and_takes_ids_from_the_command() {
        let order = Versioned::loaded(Order { id: "o-1".into() }, 4, None);
        let at = Utc.timestamp_millis_opt(1_767_225_600_000).unwrap();
        let command = Command::new("req-9", at).unwrap();
        let events = [Placed { total: 1 }, Placed { total: 2 }];
        let built = command_events("com.example.orders", &order, &command, &events).unwrap();
        let seqs: Vec<u64> = built.iter().map(OutboxEvent::sequence).collect();
        assert_eq!(seqs, [5, 6]);
        assert_eq!(version_after(4, events.len()), 6);
        assert_eq!(built[1].id(), command.event_id(1));
        assert!(
            built
                .iter()
                .all(|e| e.occurred_at() == at && e.aggregate_id() == "o-1")
        );
        let again = command_events("com.example.orders", &order, &command, &events).unwrap();
        assert_eq!(built, again);
    }

    #[test]
    fn a_save_without_events_still_moves_the_version() {
        assert_eq!(version_after(0, 0), 1);
        assert!(Versioned::new(Order { id: "o".into() }).is_new());
    }
}
