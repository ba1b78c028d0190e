//! `raftmq bench ...`: load generators that print progress and end with one JSON line.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use dledger::testing::CountingStateMachine;
use dledger::{FlushPolicy, ProposeError};
use hdrhistogram::Histogram;

use crate::local_group::LocalGroup;

/// Benchmarks.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// A replica group in this process on loopback with real disks: propose and commit entries.
    Ledger(LedgerArgs),
    /// Sync sends through the RocketMQ protocol to a cluster a name server knows.
    Produce(crate::bench_mq::ProduceArgs),
    /// Pulls every queue of a topic from its start through the RocketMQ protocol.
    Consume(crate::bench_mq::ConsumeArgs),
    /// Timer messages due over a window: how late they arrive, none early, none twice.
    Schedule(crate::bench_schedule::ScheduleArgs),
}

/// Flags of `raftmq bench ledger`.
#[derive(clap::Args)]
pub struct LedgerArgs {
    /// Replicas in the group.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=5))]
    replicas: u64,
    /// Bytes of each entry's body.
    #[arg(long, default_value_t = 1024)]
    payload_bytes: usize,
    /// Concurrent clients, each with one proposal in flight.
    #[arg(long, default_value_t = 1024)]
    clients: usize,
    /// Length of the measured run.
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    /// Unmeasured run before it.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Total proposals per second across all clients; unlimited when absent. Use it to measure
    /// latency at a given load.
    #[arg(long)]
    rate: Option<u64>,
    /// SYNC_FLUSH (ack after a quorum synced) or ASYNC_FLUSH (ack from page cache).
    #[arg(long, value_enum, default_value_t = Flush::Sync)]
    flush: Flush,
    /// Where the replicas keep their files; a fresh temporary folder when absent.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Flush {
    Sync,
    Async,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ledger(args) => ledger(args).await,
        BenchCommand::Produce(args) => crate::bench_mq::produce(args).await,
        BenchCommand::Consume(args) => crate::bench_mq::consume(args).await,
        BenchCommand::Schedule(args) => crate::bench_schedule::schedule(args).await,
    }
}

struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    committed: AtomicU64,
    failed: AtomicU64,
}

async fn ledger(args: LedgerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    let temp;
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new().prefix("raftmq-bench-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let flush = match args.flush {
        Flush::Sync => FlushPolicy::Sync,
        Flush::Async => FlushPolicy::Async {
            interval: Duration::from_millis(10),
        },
    };
    let group = LocalGroup::start(
        args.replicas,
        &data_dir,
        0,
        |c| c.flush = flush,
        |_| Box::new(CountingStateMachine::new()),
    )
    .await?;
    let leader_id = group.wait_leader(Duration::from_secs(30)).await?;
    let leader = group.nodes[&leader_id].clone();
    eprintln!(
        "bench ledger: {} replicas, {} clients, {} B entries, flush {:?}, data in {}",
        args.replicas,
        args.clients,
        args.payload_bytes,
        flush,
        data_dir.display()
    );

    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        committed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let payload = bytes::Bytes::from(vec![0x5a; args.payload_bytes]);
    let interval = args
        .rate
        .map(|rate| Duration::from_secs_f64(args.clients as f64 / rate.max(1) as f64));
    let mut clients = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let leader = leader.clone();
        let shared = shared.clone();
        let payload = payload.clone();
        clients.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            // Spread paced clients over one interval so they do not send in lockstep.
            let mut next = interval
                .map(|i_| tokio::time::Instant::now() + i_.mul_f64(i as f64 / 1024.0 % 1.0));
            while !shared.stop.load(Ordering::Relaxed) {
                if let (Some(at), Some(step)) = (next.as_mut(), interval) {
                    tokio::time::sleep_until(*at).await;
                    *at += step;
                }
                let started = Instant::now();
                match leader.propose(payload.clone()).await {
                    Ok(_) => {
                        if shared.measuring.load(Ordering::Relaxed) {
                            let micros = started.elapsed().as_micros() as u64;
                            histogram.saturating_record(micros.max(1));
                            shared.committed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(ProposeError::TooLarge { .. }) => return histogram,
                    Err(_) => {
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            histogram
        }));
    }

    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;
    shared.measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut last = 0;
    for second in 1..=args.duration_secs {
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            started + Duration::from_secs(second),
        ))
        .await;
        let now = shared.committed.load(Ordering::Relaxed);
        eprintln!(
            "[{second:>3}/{}s] {:>9} entries/s",
            args.duration_secs,
            now - last
        );
        last = now;
    }
    let elapsed = started.elapsed();
    shared.measuring.store(false, Ordering::Relaxed);
    shared.stop.store(true, Ordering::Relaxed);
    let committed = shared.committed.load(Ordering::Relaxed);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for client in clients {
        histogram.add(client.await.context("client task")?)?;
    }
    group.shutdown().await;

    let secs = elapsed.as_secs_f64();
    let summary = serde_json::json!({
        "replicas": args.replicas,
        "clients": args.clients,
        "payload_bytes": args.payload_bytes,
        "flush": match args.flush { Flush::Sync => "SYNC_FLUSH", Flush::Async => "ASYNC_FLUSH" },
        "rate_limit": args.rate,
        "entries": committed,
        "failed": shared.failed.load(Ordering::Relaxed),
        "entries_per_sec": (committed as f64 / secs).round(),
        "mib_per_sec": ((committed as f64 * args.payload_bytes as f64 / secs / (1024.0 * 1024.0)) * 100.0).round() / 100.0,
        "p50_us": histogram.value_at_quantile(0.50),
        "p99_us": histogram.value_at_quantile(0.99),
        "p999_us": histogram.value_at_quantile(0.999),
    });
    println!("{summary}");
    Ok(())
}
