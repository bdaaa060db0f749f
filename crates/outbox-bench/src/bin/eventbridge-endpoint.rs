//! `eventbridge-endpoint [--latency-ms L] [--port P]`: a loopback
//! EventBridge-compatible endpoint in its own process (so that its CPU is not
//! counted in the measured process). Prints its URL on the first line of
//! standard output, then serves until it is killed. `GET /stats` returns the
//! requests, entries and bytes it received; `POST /reset` zeroes them.
#![allow(clippy::print_stdout)] // the URL line is this program's output

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use outbox_bench::eventbridge::EventBridgeEndpoint;

#[derive(Debug, Parser)]
#[command(about = "A loopback EventBridge PutEvents endpoint with a fixed latency")]
struct Args {
    /// Milliseconds before each PutEvents answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let endpoint = EventBridgeEndpoint::start_on(
        SocketAddr::from(([127, 0, 0, 1], args.port)),
        Duration::from_millis(args.latency_ms),
    )
    .await?;
    println!("{}", endpoint.url());
    std::io::stdout().flush()?;
    std::future::pending::<()>().await;
    Ok(())
}
