//! The order service's Lambda: wiring only (the handler is in the library).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use order_service::{ENV_TABLE_NAME, Orders, SOURCE, handle};
use outbox_dynamodb::{DynamoDbAggregates, OutboxSchema};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt().json().without_time().init();
    let table = std::env::var(ENV_TABLE_NAME).map_err(|_| format!("{ENV_TABLE_NAME} is not set"))?;
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let orders: Orders = DynamoDbAggregates::new(
        aws_sdk_dynamodb::Client::new(&config),
        OutboxSchema::new(table),
        SOURCE,
    );
    let orders = &orders;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        Ok::<_, Error>(handle(orders, event.payload).await)
    }))
    .await
}
