//! The relay function: configuration, clients, run.

use lambda_runtime::{Error, service_fn};
use outbox_lambda::{Config, build_handler};

// One thread: Lambda hands the function one batch at a time, the relay's CPU
// work runs on one task, and the PutEvents calls in flight are I/O. Worker
// threads would only add wake-ups between them (and memory arenas).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let handler = build_handler(&config, &sdk);
    lambda_runtime::run(service_fn(|event| handler.handle(event))).await
}
