//! The `outbox` command: a wiring diagram over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use outbox_cli::demo::{self, DemoOptions};
use outbox_cli::invoke::invoke;
use outbox_cli::redrive::RedriveArgs;
use outbox_cli::relay::{RunnerOptions, run_dynamodb, shutdown_signal};
use outbox_cli::replay::ReplayArgs;
use outbox_dynamodb_relay::RunnerConfig;
use outbox_lambda::build_handler;

/// outbox-relay's command line.
#[derive(Debug, Parser)]
#[command(name = "outbox", version, about, after_help = ENDPOINTS_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The `OUTBOX_*` variables the command reads beside the relay's own (its
/// flags' defaults, and what `outbox bootstrap` exports).
const COMMAND_VARIABLES: &[&str] = &[
    "OUTBOX_LEASE_TABLE",
    "OUTBOX_ON_FAILURE_QUEUE_URL",
    "OUTBOX_RUNNER_OWNER",
    "OUTBOX_BATCH_DEADLINE_SECONDS",
    "OUTBOX_RETRY_BUDGET_SECONDS",
    "OUTBOX_TARGET_QUEUE_URL",
    "OUTBOX_COSMOS_CONTAINER",
    "OUTBOX_COSMOS_DATABASE",
    "OUTBOX_COSMOS_LEASE_CONTAINER",
    "OUTBOX_COSMOS_MARKER_FIELD",
    "OUTBOX_COSMOS_PROCESSOR_NAME",
];

/// Where every command finds the AWS services.
const ENDPOINTS_HELP: &str = "AWS configuration (region, credentials, endpoints) comes from the standard \
AWS SDK settings: AWS_REGION, AWS_PROFILE, credentials, and for local emulators AWS_ENDPOINT_URL or \
AWS_ENDPOINT_URL_<SERVICE> (DYNAMODB, DYNAMODB_STREAMS, EVENTBRIDGE, SQS).";

#[derive(Debug, Subcommand)]
enum Command {
    /// The end-to-end demo on local emulators: writer → stream → relay → EventBridge → SQS.
    #[command(after_help = ENDPOINTS_HELP)]
    Demo {
        /// Orders to place.
        #[arg(long, default_value_t = 20)]
        orders: u32,
    },
    /// Creates a relay's local resources (outbox table, bus, rule, target,
    /// quarantine and on-failure queues) and prints them as `export` lines:
    /// `eval "$(outbox bootstrap)"` configures a shell for the other commands.
    #[command(after_help = ENDPOINTS_HELP)]
    Bootstrap {
        /// Prefix of every resource name.
        #[arg(long, default_value = "outbox-local")]
        prefix: String,
        /// Event source the bus rule forwards to the target queue.
        #[arg(long, default_value = "com.example.orders")]
        source: String,
    },
    /// Runs a relay outside Lambda.
    #[command(subcommand)]
    Relay(RelayCommand),
    /// Runs the Lambda handler on a DynamoDB Streams event file and prints its
    /// JSON response (configuration from the same OUTBOX_* variables as the function).
    #[command(after_help = ENDPOINTS_HELP)]
    Invoke {
        /// The Lambda event (JSON), e.g. tests/fixtures/dynamodb-mixed-batch.json.
        #[arg(long)]
        event: PathBuf,
        /// Exit with status 3 when the response reports any record in
        /// batchItemFailures (the response is printed either way).
        #[arg(long)]
        fail_on_batch_failure: bool,
    },
    /// Lists the quarantine queue and republishes its events to the bus (--dry-run: only lists).
    ///
    /// Shows each message (event id, type, source position, reason) and republishes the
    /// quarantined events (all, or each --event-id) with PutEvents, deleting each message
    /// only after the bus accepted its event; what fails stays in the queue. Raw-only
    /// (poison) records are listed and left in the queue: they need fixing first.
    #[command(after_help = ENDPOINTS_HELP)]
    Redrive(RedriveArgs),
    /// Prints an event type's schema as EventBridge's schema registry takes it
    /// (OpenAPI 3: the delivered event, the envelope in `detail`, the payload).
    ///
    /// For producers that describe a payload with a JSON Schema file. A Rust producer
    /// with typed events gets the same documents from
    /// `outbox_core::schema::registry_schemas::<YourEvents>(source)`.
    Schema(outbox_cli::schema::SchemaArgs),
    /// Republishes a table's outbox events for an aggregate or a time range (--dry-run: only lists).
    ///
    /// An aggregate (--aggregate-type, --aggregate-id) is a Query of its partition, in
    /// sequence order; a time range (--from, --to, on occurred_at) is a Scan, in time
    /// order; both together combine. Only items still in the table can be replayed: items
    /// already removed by the table's TTL (default: 7 days after occurred_at) are gone,
    /// and items past their TTL but not yet removed are left out.
    #[command(after_help = ENDPOINTS_HELP)]
    Replay(ReplayArgs),
}

#[derive(Debug, Subcommand)]
enum RelayCommand {
    /// Tails the stream of OUTBOX_TABLE_NAME and publishes its outbox events to
    /// OUTBOX_EVENT_BUS_NAME, with leases and checkpoints per shard, until SIGINT/SIGTERM.
    /// Reads the same OUTBOX_* variables as the Lambda function.
    #[command(after_help = ENDPOINTS_HELP)]
    Dynamodb {
        /// Table holding one lease and checkpoint per shard.
        #[arg(long, env = "OUTBOX_LEASE_TABLE")]
        lease_table: String,
        /// Create the lease table if it does not exist.
        #[arg(long)]
        create_lease_table: bool,
        /// SQS queue for records whose retries are exhausted.
        #[arg(long, env = "OUTBOX_ON_FAILURE_QUEUE_URL")]
        on_failure_queue_url: String,
        /// This runner's name in the leases (default: the host name); the
        /// process id and a random part are added, so no two processes share
        /// an owner id.
        #[arg(long, env = "OUTBOX_RUNNER_OWNER")]
        owner: Option<String>,
        /// Lease duration in seconds.
        #[arg(long, default_value_t = 10)]
        lease_seconds: u64,
        /// Most records per GetRecords call (1 to 1000); each shard halves
        /// its limit after a batch that reached its deadline and doubles it
        /// back once batches are quick again.
        #[arg(long, default_value_t = 1000)]
        batch_limit: i32,
        /// How long a record may keep failing, in seconds from its first
        /// failure, before it goes to the on-failure queue (long enough by
        /// default to ride out a bus outage of several minutes).
        #[arg(long, env = "OUTBOX_RETRY_BUDGET_SECONDS", default_value_t = 900,
              value_parser = clap::value_parser!(u64).range(1..=604_800))]
        retry_budget_seconds: u64,
        /// Longest time one batch may take, retries included, in seconds; the
        /// relay stops retrying a margin (OUTBOX_DEADLINE_MARGIN_MS) before it.
        #[arg(long, env = "OUTBOX_BATCH_DEADLINE_SECONDS", default_value_t = 30,
              value_parser = clap::value_parser!(u64).range(3..=3600))]
        batch_deadline_seconds: u64,
    },
    /// Reads a Cosmos DB container's change feed and publishes its outbox documents to
    /// the EventBridge bus, with one lease per feed range in a lease container shared by
    /// every instance with the same --processor-name, until SIGINT/SIGTERM.
    Cosmos(Box<outbox_cli::cosmos::CosmosArgs>),
}

#[tokio::main]
async fn main() -> ExitCode {
    // The relay's own progress at `info`, everyone else's warnings; RUST_LOG overrides.
    let default_filter = "warn,outbox=info,outbox_cli=info,outbox_core=info,outbox_dynamodb_relay=info,\
                          outbox_cosmos=info,outbox_eventbridge=info";
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none(),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Demo { orders } => {
            let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            demo::run(&sdk, &DemoOptions { orders }, &mut std::io::stdout())
                .await
                .map(drop)
                .map_err(Into::into)
        }
        Command::Bootstrap { prefix, source } => run_bootstrap(&prefix, &source).await,
        Command::Invoke {
            event,
            fail_on_batch_failure,
        } => match run_invoke(&event).await {
            Ok(failed) if failed > 0 && fail_on_batch_failure => {
                eprintln!("error: {failed} record(s) reported in batchItemFailures");
                return ExitCode::from(3);
            }
            Ok(_) => Ok(()),
            Err(error) => Err(error),
        },
        Command::Redrive(args) => outbox_cli::redrive::run(&args, &mut std::io::stdout())
            .await
            .map(drop)
            .map_err(Into::into),
        Command::Schema(args) => outbox_cli::schema::run(&args, &mut std::io::stdout())
            .map(drop)
            .map_err(Into::into),
        Command::Replay(args) => outbox_cli::replay::run(&args, &mut std::io::stdout())
            .await
            .map(drop)
            .map_err(Into::into),
        Command::Relay(RelayCommand::Cosmos(args)) => outbox_cli::cosmos::run(&args, host_name)
            .await
            .map_err(Into::into),
        Command::Relay(RelayCommand::Dynamodb {
            lease_table,
            create_lease_table,
            on_failure_queue_url,
            owner,
            lease_seconds,
            batch_limit,
            retry_budget_seconds,
            batch_deadline_seconds,
        }) => {
            let mut runner = RunnerConfig::new(&owner.unwrap_or_else(host_name));
            runner.lease_duration = std::time::Duration::from_secs(lease_seconds);
            // Free and expired shards are looked for once per lease duration, so a
            // dead runner's shards are taken over within two lease durations.
            runner.discovery_interval = runner.lease_duration;
            runner.retry_budget = std::time::Duration::from_secs(retry_budget_seconds);
            runner.batch_limit = batch_limit;
            runner.batch_deadline = std::time::Duration::from_secs(batch_deadline_seconds);
            let options = RunnerOptions {
                lease_table,
                create_lease_table,
                on_failure_queue_url,
                runner,
            };
            run_relay(&options).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report(err.as_ref());
            ExitCode::FAILURE
        }
    }
}

type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// Runs the handler on the event file and prints its response; returns how
/// many records the response reports as failed.
async fn run_invoke(path: &PathBuf) -> Result<usize, AnyError> {
    let json = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let config = outbox_lambda::config_from_env(COMMAND_VARIABLES)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let handler = build_handler(&config, &sdk).with_metrics_writer(|line| eprintln!("{line}"));
    let response = invoke(&handler, &json).await?;
    let mut out = std::io::stdout().lock();
    std::io::Write::write_all(&mut out, response.as_bytes())?;
    std::io::Write::write_all(&mut out, b"\n")?;
    let failed = serde_json::from_str::<serde_json::Value>(&response)
        .ok()
        .and_then(|v| v["batchItemFailures"].as_array().map(Vec::len))
        .unwrap_or_default();
    Ok(failed)
}

async fn run_bootstrap(prefix: &str, source: &str) -> Result<(), AnyError> {
    use outbox_cli::bootstrap;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let stack = bootstrap::create_local_stack(
        &aws_sdk_dynamodb::Client::new(&sdk),
        &aws_sdk_eventbridge::Client::new(&sdk),
        &aws_sdk_sqs::Client::new(&sdk),
        &aws_sdk_s3::Client::new(&sdk),
        prefix,
        source,
    )
    .await?;
    let lines = stack.env_lines(&bootstrap::aws_location_variables());
    std::io::Write::write_all(&mut std::io::stdout().lock(), lines.as_bytes())?;
    Ok(())
}

async fn run_relay(options: &RunnerOptions) -> Result<(), AnyError> {
    let config = outbox_lambda::config_from_env(COMMAND_VARIABLES)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let report = run_dynamodb(&config, options, &sdk, shutdown_signal()).await?;
    eprintln!("relay stopped: {report}");
    Ok(())
}

fn host_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    host.trim().to_owned()
}

/// Prints an error and its whole chain of causes.
fn report(err: &(dyn std::error::Error + 'static)) {
    eprintln!("error: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}
