//! `syncline`: run nodes (daemon), a complete HA topology (demo), remote administration
//! (admin) and the benchmarks (bench).

mod admin;
mod admin_tokens;
mod admin_topology;
mod bench;
mod bench_cpu;
mod bench_mediator;
mod bench_participant;
mod certs;
mod daemon;
mod demo;
mod embedded;
mod grpc_errors;
mod ledger;
mod procs;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "syncline", version, about = "Syncline: a high-availability transaction synchronizer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the nodes of a configuration until SIGTERM or SIGINT.
    Daemon(daemon::DaemonArgs),
    /// Run a complete HA topology on a throwaway PostgreSQL, kill a node, show the outcome.
    Demo(demo::DemoArgs),
    /// Administer running nodes remotely.
    Admin(admin::AdminArgs),
    /// Measure sequencing throughput and latency against a plain-insert baseline, and
    /// failover pauses (sequencer kill -9, mediator takeover).
    Bench(bench::BenchArgs),
    /// Use a participant's ledger API: parties, submissions, contracts, updates, completions.
    Ledger(ledger::LedgerArgs),
    /// Write a development CA and certificates signed by it (for nodes and operators).
    Certs(certs::CertsArgs),
}

/// Faster than glibc's malloc for the many small, cross-thread allocations of gRPC and the
/// database client (see the bench).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Daemon(args) => daemon::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Admin(args) => admin::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Certs(args) => certs::run(args),
        // Prints its own errors (one line, or JSON), with their own exit codes.
        Command::Ledger(args) => return ledger::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The chain of causes, for people. Not `{e:?}`: that appends a backtrace whenever
            // RUST_BACKTRACE is set, which helps nobody with a configuration mistake; panics
            // still print theirs.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
