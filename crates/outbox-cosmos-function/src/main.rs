//! The Azure Functions custom handler: a wiring diagram over the library.

use std::process::ExitCode;
use std::sync::Arc;

use outbox_cosmos_function::{FunctionConfig, build_handler, serve, shutdown_signal};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none(),
        )
        .with_writer(std::io::stderr)
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "custom handler failed");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = FunctionConfig::from_env()?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let handler = Arc::new(build_handler(&config, &sdk));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
    serve(listener, handler, shutdown_signal()).await?;
    Ok(())
}
