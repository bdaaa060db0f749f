//! Aggregates on the outbox table: one call loads an aggregate with its
//! version, one call saves its new state with its events.
//!
//! The aggregate is an item in its own partition `<type>#<id>` (sort key
//! `STATE`), next to its outbox events; its fields are attributes (through
//! `serde_dynamo`) plus a version. A save is one transaction: a record of
//! the command (sort key `COMMAND#<key>`, expiring with the events), the
//! state on the condition that the version did not move, and the events,
//! numbered from the version and identified by the command. A retried
//! command finds its record and writes nothing.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, Put};
use outbox_core::{Aggregate, Command, Events, OutboxEvent, Saved, Versioned, command_events, version_after};

use crate::WriteError;
use crate::item::{Item, OutboxSchema};
use crate::writer::{DynamoDbOutboxWriter, OutboxTransaction};

/// Sort key value of an aggregate's state item.
pub const STATE_SORT_KEY: &str = "STATE";
/// Sort key prefix of a command's record.
pub const COMMAND_SORT_KEY_PREFIX: &str = "COMMAND#";
/// Default name of the version attribute of a state item.
pub const DEFAULT_VERSION_ATTRIBUTE: &str = "version";
/// `aggregate_type` of events published on their own ([`DynamoDbAggregates::publish`]).
pub const STANDALONE_AGGREGATE_TYPE: &str = "standalone";

/// Loads and saves aggregates, with their events, on the outbox table.
///
/// ```no_run
/// use outbox_dynamodb::{Aggregate, Command, DynamoDbAggregates, Event, OutboxSchema, Saved, Versioned};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
/// struct OrderPlaced { total: u64 }
///
/// #[derive(Serialize, Deserialize)]
/// struct Order { id: String, total: u64 }
///
/// impl Aggregate for Order {
///     const AGGREGATE_TYPE: &'static str = "Order";
///     type Event = OrderPlaced;
///     fn aggregate_id(&self) -> &str { &self.id }
/// }
///
/// # async fn handler(client: aws_sdk_dynamodb::Client, command: Command) -> Result<(), Box<dyn std::error::Error>> {
/// let orders = DynamoDbAggregates::new(client, OutboxSchema::new("orders"), "com.example.orders");
/// let mut order = orders.load::<Order>("o-42").await?
///     .unwrap_or_else(|| Versioned::new(Order { id: "o-42".into(), total: 0 }));
/// order.state.total = 1999;
/// let saved = orders.save(&command, &order, &[OrderPlaced { total: 1999 }]).await?;
/// if saved == Saved::AlreadyApplied {
///     // a retry of a command that committed before: nothing written twice
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DynamoDbAggregates {
    client: Client,
    writer: DynamoDbOutboxWriter,
    source: String,
    version_attribute: String,
}

impl DynamoDbAggregates {
    /// Aggregates stored in `schema`'s table, whose events are published
    /// from `source` (e.g. `com.example.orders`).
    pub fn new(client: Client, schema: OutboxSchema, source: impl Into<String>) -> Self {
        Self {
            writer: DynamoDbOutboxWriter::new(client.clone(), schema),
            client,
            source: source.into(),
            version_attribute: DEFAULT_VERSION_ATTRIBUTE.into(),
        }
    }

    /// Names the version attribute of state items (default `version`).
    #[must_use]
    pub fn with_version_attribute(mut self, name: impl Into<String>) -> Self {
        self.version_attribute = name.into();
        self
    }

    /// The writer underneath, for transactions the aggregate API does not
    /// cover.
    pub fn writer(&self) -> &DynamoDbOutboxWriter {
        &self.writer
    }

    /// The aggregate `id` of type `A` with its version (strongly consistent
    /// read), or `None` if it was never saved.
    pub async fn load<A: Aggregate>(&self, id: &str) -> Result<Option<Versioned<A>>, WriteError> {
        let schema = self.writer.schema();
        let output = self
            .client
            .get_item()
            .table_name(schema.table())
            .key(schema.partition_key(), partition::<A>(id))
            .key(schema.sort_key(), AttributeValue::S(STATE_SORT_KEY.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(read_error)?;
        output
            .item
            .map(|item| self.decode_state::<A>(id, item))
            .transpose()
    }

    /// Saves `aggregate`'s state and `events` in one transaction, if the
    /// stored version is still the one it was loaded at (or, for a new one,
    /// if none is stored). `command` identifies the events, gives their
    /// time, and is recorded: saving the same command again (a retried
    /// request) writes nothing and returns [`Saved::AlreadyApplied`].
    ///
    /// A version that moved meanwhile is [`WriteError::ConditionFailed`]:
    /// load again, apply the command again, save again.
    pub async fn save<A: Aggregate>(
        &self,
        command: &Command,
        aggregate: &Versioned<A>,
        events: &[A::Event],
    ) -> Result<Saved, WriteError> {
        let tx = self.save_transaction(command, aggregate, events)?;
        let version = version_after(aggregate.version(), events.len());
        match self.writer.commit(tx).await {
            Ok(receipt) => Ok(Saved::Committed {
                version,
                event_ids: receipt.event_ids,
            }),
            Err(WriteError::ConditionFailed { operation: 0, .. }) => Ok(Saved::AlreadyApplied),
            Err(e) => Err(e),
        }
    }

    /// Whether `command` was saved on the aggregate `id` of type `A`: a
    /// handler that refuses a command (the order exists, the amount is no
    /// longer due) asks this to tell a retry of a command that succeeded.
    pub async fn is_applied<A: Aggregate>(&self, command: &Command, id: &str) -> Result<bool, WriteError> {
        let schema = self.writer.schema();
        let output = self
            .client
            .get_item()
            .table_name(schema.table())
            .key(schema.partition_key(), partition::<A>(id))
            .key(schema.sort_key(), command_sort_key(command))
            .consistent_read(true)
            .projection_expression("#pk")
            .expression_attribute_names("#pk", schema.partition_key())
            .send()
            .await
            .map_err(read_error)?;
        Ok(output.item.is_some())
    }

    /// Publishes an event that goes with no aggregate change, in its own
    /// transaction. It is **not** atomic with any other write: use
    /// [`save`](Self::save) for an event that announces a change. Its
    /// aggregate is `standalone/<command id>`; a retried command writes
    /// nothing and returns [`Saved::AlreadyApplied`].
    pub async fn publish<E: Events>(&self, command: &Command, event: &E) -> Result<Saved, WriteError> {
        let event = OutboxEvent::typed(self.source.as_str(), event)
            .aggregate(STANDALONE_AGGREGATE_TYPE, command.id())
            .sequence(1)
            .id(command.event_id(0))
            .occurred_at(command.at())
            .build(&outbox_core::SystemClock)?;
        let partition = OutboxSchema::default_partition_value(&event);
        let tx = OutboxTransaction::new()
            .operation(self.command_record(command, partition)?)
            .event(event);
        match self.writer.commit(tx).await {
            Ok(receipt) => Ok(Saved::Committed {
                version: 1,
                event_ids: receipt.event_ids,
            }),
            Err(WriteError::ConditionFailed { operation: 0, .. }) => Ok(Saved::AlreadyApplied),
            Err(e) => Err(e),
        }
    }

    /// The transaction [`save`](Self::save) sends, built without a call:
    /// the command's record, the state, the events.
    pub fn save_transaction<A: Aggregate>(
        &self,
        command: &Command,
        aggregate: &Versioned<A>,
        events: &[A::Event],
    ) -> Result<OutboxTransaction, WriteError> {
        let schema = self.writer.schema();
        let id = aggregate.state.aggregate_id();
        let version = aggregate.version();
        let next = version_after(version, events.len());
        let mut item: Item = serde_dynamo::to_item(&aggregate.state).map_err(|e| state_error::<A>(id, e))?;
        for reserved in [
            schema.partition_key(),
            schema.sort_key(),
            schema.marker_attribute(),
            schema.ttl_attribute(),
            self.version_attribute.as_str(),
        ] {
            if item.contains_key(reserved) {
                return Err(WriteError::State {
                    aggregate: format!("{}/{id}", A::AGGREGATE_TYPE),
                    reason: format!(
                        "field `{reserved}` is an attribute the outbox table uses; rename it (#[serde(rename)])"
                    ),
                });
            }
        }
        item.insert(schema.partition_key().into(), partition::<A>(id));
        item.insert(schema.sort_key().into(), AttributeValue::S(STATE_SORT_KEY.into()));
        item.insert(
            self.version_attribute.clone(),
            AttributeValue::N(next.to_string()),
        );
        let put = Put::builder()
            .table_name(schema.table())
            .set_item(Some(item))
            .expression_attribute_names("#v", &self.version_attribute);
        let put = if aggregate.is_new() {
            put.condition_expression("attribute_not_exists(#v)")
        } else {
            put.condition_expression("#v = :loaded")
                .expression_attribute_values(":loaded", AttributeValue::N(version.to_string()))
        };
        let put = put.build().map_err(|e| WriteError::Invalid {
            reason: e.to_string(),
        })?;
        let mut tx = OutboxTransaction::new()
            .operation(self.command_record(command, partition::<A>(id))?)
            .put(put);
        for event in command_events(&self.source, aggregate, command, events)? {
            tx = tx.event(event);
        }
        Ok(tx)
    }

    /// The put that records `command` in `partition`, refused if it is
    /// recorded already.
    fn command_record(
        &self,
        command: &Command,
        partition: AttributeValue,
    ) -> Result<aws_sdk_dynamodb::types::TransactWriteItem, WriteError> {
        let schema = self.writer.schema();
        let expires = (command.at() + schema.retention()).timestamp();
        let item = Item::from([
            (schema.partition_key().to_owned(), partition),
            (schema.sort_key().to_owned(), command_sort_key(command)),
            (
                "command_id".to_owned(),
                AttributeValue::S(command.id().to_owned()),
            ),
            (
                schema.ttl_attribute().to_owned(),
                AttributeValue::N(expires.to_string()),
            ),
        ]);
        crate::writer::put_if_absent(schema.table(), item, schema.partition_key())
    }

    fn decode_state<A: Aggregate>(&self, id: &str, mut item: Item) -> Result<Versioned<A>, WriteError> {
        let schema = self.writer.schema();
        let version = match item.remove(&self.version_attribute) {
            Some(AttributeValue::N(n)) => n.parse::<u64>().ok(),
            _ => None,
        }
        .ok_or_else(|| WriteError::State {
            aggregate: format!("{}/{id}", A::AGGREGATE_TYPE),
            reason: format!(
                "the stored item has no numeric `{}` attribute",
                self.version_attribute
            ),
        })?;
        item.remove(schema.partition_key());
        item.remove(schema.sort_key());
        let state = serde_dynamo::from_item(item).map_err(|e| state_error::<A>(id, e))?;
        Ok(Versioned::loaded(state, version, None))
    }
}

fn command_sort_key(command: &Command) -> AttributeValue {
    AttributeValue::S(format!("{COMMAND_SORT_KEY_PREFIX}{}", command.key()))
}

fn partition<A: Aggregate>(id: &str) -> AttributeValue {
    AttributeValue::S(format!("{}#{id}", A::AGGREGATE_TYPE))
}

fn state_error<A: Aggregate>(id: &str, e: serde_dynamo::Error) -> WriteError {
    WriteError::State {
        aggregate: format!("{}/{id}", A::AGGREGATE_TYPE),
        reason: e.to_string(),
    }
}

fn read_error<
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
>(
    err: SdkError<E, R>,
) -> WriteError {
    let retryable = matches!(
        err,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
    );
    match err.code() {
        Some("ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded") => {
            WriteError::Throttled
        }
        Some("InternalServerError" | "ServiceUnavailable") => WriteError::Service {
            retryable: true,
            source: Box::new(err),
        },
        Some(code) => WriteError::Rejected {
            code: code.to_owned(),
            message: err.message().unwrap_or_default().to_owned(),
        },
        None => WriteError::Service {
            retryable,
            source: Box::new(err),
        },
    }
}

#[cfg(test)]
mod tests;
