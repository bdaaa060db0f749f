//! The DynamoDB half of **outbox-relay**'s relay:
//!
//! - [`DynamoDbStreamDecoder`]: DynamoDB Streams records (Lambda's event,
//!   [`LambdaStreamBatch`], or `GetRecords`) into the relay's records,
//!   through the outbox item schema of `outbox-dynamodb`;
//! - [`DynamoDbStreamRunner`]: the standalone relay, tailing a table's
//!   stream with a lease and a checkpoint per shard ([`DynamoDbLeaseStore`]).
//!
//! ```no_run
//! use outbox_dynamodb::OutboxSchema;
//! use outbox_dynamodb_relay::{DynamoDbStreamDecoder, LambdaStreamBatch};
//!
//! # fn example(batch: LambdaStreamBatch) -> Result<(), outbox_dynamodb_relay::StreamError> {
//! let decoder = DynamoDbStreamDecoder::new(OutboxSchema::new("orders"));
//! for record in decoder.decode_lambda_batch(batch)? {
//!     println!("{}: {:?}", record.position, record.decoded);
//! }
//! # Ok(())
//! # }
//! ```

mod balance;
mod lambda;
mod lease;
mod presence;
mod runner;
mod stream;

pub use lambda::LambdaStreamBatch;
pub use lease::compare_sequence_numbers;
pub use lease::{DynamoDbLeaseStore, Failing, Lease, LeaseError, ShardKey, create_lease_table};
pub use runner::{
    DynamoDbStreamRunner, MAX_GET_RECORDS_LIMIT, RunnerConfig, RunnerError, RunnerReport,
    stream_arn_for_table,
};
pub use stream::{DynamoDbStreamDecoder, StreamError};
