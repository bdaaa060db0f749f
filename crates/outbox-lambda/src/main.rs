//! The relay function: configuration, clients, run.

use std::process::ExitCode;

use lambda_runtime::service_fn;
use outbox_lambda::{build_handler, config_from_env};

// One thread: Lambda hands the function one batch at a time, the relay's CPU
// work runs on one task, and the PutEvents calls in flight are I/O. Worker
// threads would only add wake-ups between them (and memory arenas).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    lambda_runtime::tracing::init_default_subscriber();
    let config = match config_from_env(&[]) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("outbox-lambda: {error}");
            return ExitCode::FAILURE;
        }
    };
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let handler = build_handler(&config, &sdk);
    match lambda_runtime::run(service_fn(|event| handler.handle(event))).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("outbox-lambda: {error}");
            ExitCode::FAILURE
        }
    }
}
