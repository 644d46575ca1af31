//! `syncline`: run nodes (daemon), a complete HA topology (demo), remote administration
//! (admin) and the benchmarks (bench).

mod bench;
mod embedded;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "syncline", version, about = "Syncline: a high-availability transaction synchronizer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure sequencing throughput and latency against a plain-insert baseline.
    Bench(bench::BenchArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => bench::run(args).await,
    }
}
