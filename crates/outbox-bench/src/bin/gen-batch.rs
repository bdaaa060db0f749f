//! `gen-batch --out DIR`: writes the benchmarks' standard Lambda DynamoDB
//! Streams event files into `DIR`; `gen-batch --records N --payload-bytes B
//! [--max-bytes M] --file F` writes one. Prints one line per file: name,
//! records, bytes, mean payload bytes.
#![allow(clippy::print_stdout)] // the listing is this program's output

use std::path::PathBuf;

use clap::Parser;
use outbox_bench::batch::{BatchSpec, generate, standard_batches};

#[derive(Debug, Parser)]
#[command(about = "Writes Lambda DynamoDB Streams event files of outbox inserts")]
struct Args {
    /// Write the standard set into this directory.
    #[arg(long, conflicts_with = "file")]
    out: Option<PathBuf>,
    /// Write one event to this file.
    #[arg(long, requires = "records")]
    file: Option<PathBuf>,
    /// Records in the event.
    #[arg(long)]
    records: Option<usize>,
    /// Payload size in bytes (compact JSON; 0: the smallest order payload).
    #[arg(long, default_value_t = 1024)]
    payload_bytes: usize,
    /// Stop before the event exceeds this many bytes.
    #[arg(long)]
    max_bytes: Option<usize>,
    /// Seed of ids and payloads.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn write(path: &PathBuf, spec: BatchSpec) -> Result<(), Box<dyn std::error::Error>> {
    let batch = generate(spec)?;
    std::fs::write(path, &batch.json)?;
    println!(
        "{}\trecords={}\tbytes={}\tpayload_bytes={}",
        path.display(),
        batch.records,
        batch.json.len(),
        batch.payload_bytes
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(dir) = args.out {
        std::fs::create_dir_all(&dir)?;
        for (name, spec) in standard_batches() {
            write(
                &dir.join(name),
                BatchSpec {
                    seed: args.seed,
                    ..spec
                },
            )?;
        }
        return Ok(());
    }
    let (Some(file), Some(records)) = (args.file, args.records) else {
        return Err("give --out DIR, or --file F with --records N".into());
    };
    write(
        &file,
        BatchSpec {
            records,
            payload_bytes: args.payload_bytes,
            max_bytes: args.max_bytes,
            seed: args.seed,
        },
    )
}
