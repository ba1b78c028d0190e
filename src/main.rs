//! The `raftmq` command: thin wrappers that parse flags, set up logging and call the crates.

mod admin;
mod bench;
mod bench_mq;
mod bench_schedule;
mod broker_cmd;
mod dev;
mod local_group;
mod namesrv;
mod signal;

use clap::{Parser, Subcommand};

/// glibc's malloc cost a fifth of the CPU of a loaded broker (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "raftmq",
    version,
    about = "A RocketMQ-compatible broker with a Raft-replicated CommitLog"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole replica group in one process on 127.0.0.1, until Ctrl-C.
    Dev(dev::DevArgs),
    /// Run a name server.
    Namesrv(namesrv::NamesrvArgs),
    /// Run one replica of a broker group from RocketMQ's broker.conf (DLedger mode) or TOML.
    Broker(broker_cmd::BrokerArgs),
    /// Drive load and print throughput and latency.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Operate a running cluster (leadership transfer).
    #[command(subcommand)]
    Admin(admin::AdminCommand),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => dev::run(args).await,
            Command::Namesrv(args) => namesrv::run(args).await,
            Command::Broker(args) => broker_cmd::run(args).await,
            Command::Bench(command) => bench::run(command).await,
            Command::Admin(command) => admin::run(command).await,
        }
    })
}
