//! Aggregates in a Cosmos DB container: one call loads an aggregate with
//! its version and etag, one call saves its new state with its events.
//!
//! The aggregate is a document with the aggregate's id as `id`, in its own
//! logical partition `<type>#<id>`, next to its outbox documents; its fields
//! are the state's (through serde) plus a `version` that numbers its events.
//! A save is one transactional batch: a record of the command (a create of
//! `command-<key>`, expiring with the events), the state (a create, or a
//! replace `IfMatch` the etag it was loaded with), and the events. A retried
//! command finds its record and writes nothing.

use azure_data_cosmos::clients::ContainerClient;
use outbox_core::{Aggregate, Command, Saved, Versioned, command_events, version_after};
use serde_json::{Map, Value};

use crate::WriteError;
use crate::document::{CosmosOutboxSchema, FIELD_ID, FIELD_TTL};
use crate::writer::{BatchOperation, CosmosOutboxWriter, OutboxBatch};

/// Name of the version field of an aggregate document.
pub const VERSION_FIELD: &str = "version";
/// Id prefix of a command's record.
pub const COMMAND_ID_PREFIX: &str = "command-";

/// Fields Cosmos DB adds to every document.
const SYSTEM_FIELDS: [&str; 5] = ["_rid", "_self", "_etag", "_attachments", "_ts"];

/// Loads and saves aggregates, with their events, in the container the
/// writer writes to. The same [`Aggregate`] types as the DynamoDB writer's;
/// the condition is the etag instead of the version.
#[derive(Clone)]
pub struct CosmosAggregates {
    writer: CosmosOutboxWriter,
    container: ContainerClient,
    source: String,
}

impl std::fmt::Debug for CosmosAggregates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosmosAggregates")
            .field("writer", &self.writer)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl CosmosAggregates {
    /// Aggregates in `container` (partitioned on `schema`'s partition key),
    /// whose events are published from `source`.
    pub fn new(container: ContainerClient, schema: CosmosOutboxSchema, source: impl Into<String>) -> Self {
        Self {
            writer: CosmosOutboxWriter::new(container.clone(), schema),
            container,
            source: source.into(),
        }
    }

    /// The writer underneath, for batches the aggregate API does not cover.
    pub fn writer(&self) -> &CosmosOutboxWriter {
        &self.writer
    }

    /// The aggregate `id` of type `A` with its version and etag, or `None`
    /// if it was never saved.
    pub async fn load<A: Aggregate>(&self, id: &str) -> Result<Option<Versioned<A>>, WriteError> {
        let response = match self.container.read_item(partition::<A>(id), id, None).await {
            Ok(response) => response,
            Err(e) if e.status().is_not_found() => return Ok(None),
            Err(e) => return Err(crate::writer::request_error(e, 0)),
        };
        let header_etag = response.headers().etag().map(ToString::to_string);
        let document: Value = response
            .into_model()
            .map_err(|e| state_error::<A>(id, e.to_string()))?;
        self.decode_state(id, document, header_etag).map(Some)
    }

    /// Saves `aggregate`'s state and `events` in one batch, if the stored
    /// document still has the etag it was loaded with (or, for a new one, if
    /// none is stored). `command` identifies the events, gives their time
    /// and is recorded: saving it again writes nothing and returns
    /// [`Saved::AlreadyApplied`].
    ///
    /// A document that changed meanwhile is an error for which
    /// [`WriteError::needs_fresh_read`] holds: load again, apply the command
    /// again, save again.
    pub async fn save<A: Aggregate>(
        &self,
        command: &Command,
        aggregate: &Versioned<A>,
        events: &[A::Event],
    ) -> Result<Saved, WriteError> {
        let batch = self.save_batch(command, aggregate, events)?;
        match self.writer.commit(batch).await {
            Ok(receipt) => Ok(Saved::Committed {
                version: version_after(aggregate.version(), events.len()),
                event_ids: receipt.event_ids,
            }),
            Err(WriteError::Conflict { operation: 0, .. }) => Ok(Saved::AlreadyApplied),
            Err(e) => Err(e),
        }
    }

    /// The batch [`save`](Self::save) sends, built without a call: the
    /// command's record, the state, the events.
    pub fn save_batch<A: Aggregate>(
        &self,
        command: &Command,
        aggregate: &Versioned<A>,
        events: &[A::Event],
    ) -> Result<OutboxBatch, WriteError> {
        let schema = self.writer.schema();
        let id = aggregate.state.aggregate_id();
        let pk = partition::<A>(id);
        let Value::Object(mut document) =
            serde_json::to_value(&aggregate.state).map_err(|e| state_error::<A>(id, e.to_string()))?
        else {
            return Err(state_error::<A>(
                id,
                "the state must serialise to a JSON object".into(),
            ));
        };
        for reserved in [
            schema.partition_key(),
            schema.marker_field(),
            VERSION_FIELD,
            FIELD_TTL,
        ]
        .into_iter()
        .chain(SYSTEM_FIELDS)
        {
            if document.contains_key(reserved) {
                return Err(state_error::<A>(
                    id,
                    format!("field `{reserved}` is a field the container uses; rename it (#[serde(rename)])"),
                ));
            }
        }
        match document.get(FIELD_ID) {
            None => {}
            Some(Value::String(own)) if own == id => {}
            Some(other) => {
                return Err(state_error::<A>(
                    id,
                    format!("field `id` is {other}, but the document's id is the aggregate id {id:?}"),
                ));
            }
        }
        document.insert(FIELD_ID.into(), id.into());
        document.insert(schema.partition_key().into(), pk.clone().into());
        document.insert(
            VERSION_FIELD.into(),
            version_after(aggregate.version(), events.len()).into(),
        );
        let state = match aggregate.etag() {
            None if aggregate.is_new() => BatchOperation::create(Value::Object(document)),
            None => {
                return Err(state_error::<A>(
                    id,
                    "a stored aggregate without its etag: load it with CosmosAggregates::load".into(),
                ));
            }
            Some(etag) => BatchOperation::replace_if_match(id, Value::Object(document), etag),
        };
        let mut batch = OutboxBatch::new(pk.clone())
            .operation(BatchOperation::create(command_record(schema, command, &pk)))
            .operation(state);
        for event in command_events(&self.source, aggregate, command, events)? {
            batch = batch.event(event);
        }
        Ok(batch)
    }

    fn decode_state<A: Aggregate>(
        &self,
        id: &str,
        document: Value,
        header_etag: Option<String>,
    ) -> Result<Versioned<A>, WriteError> {
        let Value::Object(mut document) = document else {
            return Err(state_error::<A>(
                id,
                "the stored document is not a JSON object".into(),
            ));
        };
        let etag = match document.get("_etag") {
            Some(Value::String(etag)) => Some(etag.clone()),
            _ => header_etag,
        };
        let version = document
            .remove(VERSION_FIELD)
            .and_then(|v| v.as_u64())
            .ok_or_else(|| {
                state_error::<A>(
                    id,
                    format!("the stored document has no numeric `{VERSION_FIELD}`"),
                )
            })?;
        strip(&mut document, self.writer.schema());
        let state = serde_json::from_value(Value::Object(document))
            .map_err(|e| state_error::<A>(id, e.to_string()))?;
        Ok(Versioned::loaded(state, version, etag))
    }
}

/// The partition key value of an aggregate: `<type>#<id>`, as its events'.
fn partition<A: Aggregate>(id: &str) -> String {
    format!("{}#{id}", A::AGGREGATE_TYPE)
}

/// The document recording `command`: created once, expiring with the events.
fn command_record(schema: &CosmosOutboxSchema, command: &Command, pk: &str) -> Value {
    let mut record = Map::new();
    record.insert(
        FIELD_ID.into(),
        format!("{COMMAND_ID_PREFIX}{}", command.key()).into(),
    );
    record.insert(schema.partition_key().into(), pk.into());
    record.insert("command_id".into(), command.id().into());
    record.insert(FIELD_TTL.into(), schema.ttl_seconds().into());
    Value::Object(record)
}

/// Removes what the container added to the state's fields.
fn strip(document: &mut Map<String, Value>, schema: &CosmosOutboxSchema) {
    document.remove(schema.partition_key());
    for field in SYSTEM_FIELDS {
        document.remove(field);
    }
}

fn state_error<A: Aggregate>(id: &str, reason: String) -> WriteError {
    WriteError::State {
        aggregate: format!("{}/{id}", A::AGGREGATE_TYPE),
        reason,
    }
}
