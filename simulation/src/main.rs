//! `cargo run --release -p simulation -- --seed N | --seeds A..B [--mutant NAME]`

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use simulation::config::Layer;
use simulation::config::Mutant;
use simulation::run::{RunOptions, RunReport};

#[derive(Parser)]
#[command(about = "Deterministic fault-injection runs of raftmq replica groups")]
struct Args {
    /// Run one seed in this process and print its report.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Sweep seeds `A..B`, each in its own process so every run replays exactly as
    /// `--seed N` would.
    #[arg(long)]
    seeds: Option<String>,
    /// Put a deliberate bug back into the code under test.
    #[arg(long, value_enum)]
    mutant: Option<Mutant>,
    /// Wall-clock seconds one simulated step may take before the run is reported as hung (a
    /// task spinning without yielding stops simulated time).
    #[arg(long, default_value_t = 30)]
    hang_secs: u64,
    /// The layers under test: the Raft ledger alone, or the messaging stack over it.
    #[arg(long, value_enum, default_value_t = Layer::Ledger)]
    layer: Layer,
}

/// Watches `progress` from a thread of its own; if no step finishes for `limit`, prints the
/// report of a hung run and exits, since the simulation thread will never return.
fn watchdog(
    seed: u64,
    mutant: Option<Mutant>,
    layer: Layer,
    progress: Arc<AtomicU64>,
    limit: Duration,
) {
    std::thread::spawn(move || {
        let mut last = progress.load(Ordering::Relaxed);
        let mut since = Instant::now();
        loop {
            std::thread::park_timeout(Duration::from_millis(200));
            let now = progress.load(Ordering::Relaxed);
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= limit {
                let mut report = simulation::RunReport::panicked(seed, String::new());
                report.steps = now;
                report.violation = Some(format!(
                    "hang: simulated step {} did not finish within {}s of wall-clock time \
                     (a task busy without yielding)",
                    now + 1,
                    limit.as_secs()
                ));
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
                eprintln!(
                    "seed {seed} FAILED: {}",
                    report.violation.unwrap_or_default()
                );
                eprintln!("{}", reproduce(seed, mutant, layer));
                std::process::exit(1);
            }
        }
    });
}

fn reproduce(seed: u64, mutant: Option<Mutant>, layer: Layer) -> String {
    let mutant = mutant
        .map(|m| {
            format!(
                " --mutant {}",
                serde_json::to_value(m)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or("")
            )
        })
        .unwrap_or_default();
    let layer = match layer {
        Layer::Ledger => "",
        Layer::Broker => " --layer broker",
    };
    format!("REPRODUCE WITH: cargo run --release -p simulation -- --seed {seed}{layer}{mutant}")
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let args = Args::parse();
    if let Some(seed) = args.seed {
        let progress = Arc::new(AtomicU64::new(0));
        watchdog(
            seed,
            args.mutant,
            args.layer,
            progress.clone(),
            Duration::from_secs(args.hang_secs),
        );
        let options = RunOptions {
            mutant: args.mutant,
            progress: Some(progress),
            layer: args.layer,
        };
        // A panic inside the code under test (an assertion of ours firing) is a finding too.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            simulation::run_seed(seed, &options)
        }));
        let report = run.unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            simulation::RunReport::panicked(seed, message)
        });
        println!("{}", serde_json::to_string(&report)?);
        if let Some(violation) = &report.violation {
            eprintln!("seed {seed} FAILED: {violation}");
            eprintln!("{}", reproduce(seed, args.mutant, args.layer));
            std::process::exit(1);
        }
        return Ok(());
    }
    let range = args.seeds.as_deref().unwrap_or("0..10");
    let (from, to) = range.split_once("..").context("--seeds takes A..B")?;
    let (from, to): (u64, u64) = (
        from.parse().context("seed range start")?,
        to.parse().context("seed range end")?,
    );
    anyhow::ensure!(from < to, "--seeds {range} is empty");
    let exe = std::env::current_exe()?;
    let mut failures = Vec::new();
    let mut steps = 0u64;
    let mut faults = std::collections::BTreeMap::<String, u64>::new();
    for seed in from..to {
        let mut command = Command::new(&exe);
        command.args([
            "--seed",
            &seed.to_string(),
            "--hang-secs",
            &args.hang_secs.to_string(),
        ]);
        if args.layer != Layer::Ledger {
            command.args([
                "--layer",
                serde_json::to_value(args.layer)?
                    .as_str()
                    .unwrap_or_default(),
            ]);
        }
        if let Some(mutant) = args.mutant {
            command.args([
                "--mutant",
                serde_json::to_value(mutant)?.as_str().unwrap_or_default(),
            ]);
        }
        let output = command
            .output()
            .with_context(|| format!("running seed {seed}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let report: Option<RunReport> = stdout
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok());
        match report {
            Some(report) => {
                steps += report.steps;
                for (kind, n) in &report.faults {
                    *faults.entry(kind.clone()).or_default() += n;
                }
                if let Some(violation) = &report.violation {
                    eprintln!("seed {seed} FAILED: {violation}");
                    eprintln!("{}", reproduce(seed, args.mutant, args.layer));
                    failures.push(seed);
                }
            }
            None => {
                eprintln!(
                    "seed {seed} CRASHED: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                eprintln!("{}", reproduce(seed, args.mutant, args.layer));
                failures.push(seed);
            }
        }
    }
    let summary = serde_json::json!({
        "seeds": to - from,
        "failures": failures.len(),
        "failed_seeds": failures,
        "steps": steps,
        "faults": faults,
    });
    println!("{summary}");
    Ok(())
}
