//! The relay function: configuration, clients, run.

use lambda_runtime::{Error, service_fn};
use outbox_lambda::{Config, build_handler};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let handler = build_handler(&config, &sdk);
    lambda_runtime::run(service_fn(|event| handler.handle(event))).await
}
