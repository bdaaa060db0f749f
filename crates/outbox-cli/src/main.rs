//! The `outbox` command.

use clap::{Parser, Subcommand};
use outbox_cli::demo::{self, DemoOptions};

/// outbox-relay's command line.
#[derive(Debug, Parser)]
#[command(name = "outbox", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Commits orders and their events on DynamoDB Local and shows the table and its stream.
    Demo {
        /// DynamoDB endpoint (DynamoDB Local).
        #[arg(long, env = "OUTBOX_DYNAMODB_ENDPOINT")]
        dynamodb_endpoint: String,
        /// Orders to place.
        #[arg(long, default_value_t = 5)]
        orders: u32,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo {
            dynamodb_endpoint,
            orders,
        } => {
            let options = DemoOptions {
                dynamodb_endpoint,
                orders,
            };
            demo::run(&options, &mut std::io::stdout()).await.map(drop)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            let mut message = format!("error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                message.push_str(&format!("\n  caused by: {s}"));
                source = s.source();
            }
            tracing::error!(error = %err, "outbox failed");
            eprintln!("{message}");
            std::process::ExitCode::FAILURE
        }
    }
}
