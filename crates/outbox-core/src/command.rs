//! Commands: what makes a retried request write the same events.
//!
//! A Lambda invocation that fails after its transaction committed is retried
//! with the same input, and a handler that builds its events afresh would
//! write them again under new ids. A [`Command`] carries the request's own
//! id and time (e.g. API Gateway's request id and `requestTimeEpoch`, or an
//! idempotency key chosen by the client), and everything written for it is
//! derived from them: the event ids, their time, and the key under which the
//! command is recorded, so the writers can tell a retry from a new command.

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use crate::EnvelopeError;

/// Longest command id accepted: it is recorded in a key attribute, which
/// DynamoDB and Cosmos DB both allow to be far longer.
pub const MAX_COMMAND_ID_LEN: usize = 256;

/// Namespace of the name-based UUIDs derived from command ids.
const COMMAND_NAMESPACE: Uuid = Uuid::from_u128(0x6f75_7462_6f78_4d2d_8c6f_6d6d_616e_6400);

/// A request that changes an aggregate, identified so that its retries can
/// be recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    id: String,
    at: DateTime<Utc>,
    key: Uuid,
}

impl Command {
    /// A command with the caller's id (the same on every retry of the
    /// request) and the time the request was made (also the same on every
    /// retry; kept to the millisecond, as event times are).
    pub fn new(id: impl Into<String>, at: DateTime<Utc>) -> Result<Self, EnvelopeError> {
        let id = id.into();
        if id.trim().is_empty() {
            return Err(EnvelopeError::Empty { field: "command_id" });
        }
        if id.len() > MAX_COMMAND_ID_LEN {
            return Err(EnvelopeError::Invalid {
                field: "command_id".into(),
                reason: format!(
                    "{} bytes long; at most {MAX_COMMAND_ID_LEN} (hash a longer key first)",
                    id.len()
                ),
            });
        }
        let key = Uuid::new_v5(&COMMAND_NAMESPACE, id.as_bytes());
        Ok(Self {
            id,
            at: at.trunc_subsecs(3),
            key,
        })
    }

    /// The caller's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When the request was made: the `occurred_at` of its events.
    pub fn at(&self) -> DateTime<Utc> {
        self.at
    }

    /// A fixed-length key derived from the id (a name-based UUID), under
    /// which the command is recorded; usable as a `ClientRequestToken`.
    pub fn key(&self) -> Uuid {
        self.key
    }

    /// The id of the command's `index`-th event: a UUIDv7 whose time is the
    /// command's and whose other bits are derived from the command id, so
    /// the same command always gets the same ids, still ordered by time
    /// across commands.
    pub fn event_id(&self, index: usize) -> Uuid {
        let name = format!("{}#{index}", self.id);
        let digest = Uuid::new_v5(&COMMAND_NAMESPACE, name.as_bytes());
        let mut bits = [0u8; 10];
        bits.copy_from_slice(&digest.as_bytes()[..10]);
        let millis = u64::try_from(self.at.timestamp_millis()).unwrap_or(0);
        uuid::Builder::from_unix_timestamp_millis(millis, &bits).into_uuid()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at() -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_767_225_600_123).unwrap()
    }

    #[test]
    fn the_same_command_gets_the_same_event_ids_and_time() {
        let a = Command::new("req-1", at()).unwrap();
        let b = Command::new("req-1", at()).unwrap();
        assert_eq!(a.event_id(0), b.event_id(0));
        assert_eq!(a.event_id(1), b.event_id(1));
        assert_ne!(a.event_id(0), a.event_id(1));
        assert_eq!(a.key(), b.key());
        assert_eq!(a.at(), at());
    }

    #[test]
    fn event_ids_are_v7_carrying_the_command_time() {
        let c = Command::new("req-1", at()).unwrap();
        let id = c.event_id(3);
        assert_eq!(id.get_version_num(), 7);
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        assert_eq!(secs * 1000 + u64::from(nanos) / 1_000_000, 1_767_225_600_123);
        let other = Command::new("req-2", at()).unwrap();
        assert_ne!(other.event_id(3), id);
        assert_ne!(other.key(), c.key());
    }

    #[test]
    fn an_empty_or_oversized_id_is_refused_with_its_limit() {
        assert!(matches!(
            Command::new(" ", at()),
            Err(EnvelopeError::Empty { field: "command_id" })
        ));
        let err = Command::new("x".repeat(MAX_COMMAND_ID_LEN + 1), at()).unwrap_err();
        assert!(err.to_string().contains("at most 256"), "{err}");
    }
}
