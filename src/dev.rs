//! `raftmq dev`: one command, one process, a whole replica group on 127.0.0.1.

use std::path::PathBuf;
use std::time::Duration;

use dledger::testing::CountingStateMachine;

use crate::local_group::LocalGroup;

/// Flags of `raftmq dev`.
#[derive(clap::Args)]
pub struct DevArgs {
    /// Folder for every replica's data.
    #[arg(long, default_value = "./raftmq-data")]
    data_dir: PathBuf,
    /// Number of replicas (1 to 5).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=5))]
    replicas: u64,
    /// Raft port of the first replica; the others follow. 0 picks free ports.
    #[arg(long, default_value_t = 0)]
    raft_port: u16,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let group = LocalGroup::start(
        args.replicas,
        &args.data_dir,
        args.raft_port,
        |_| {},
        |_| Box::new(CountingStateMachine::new()),
    )
    .await?;
    let leader = group.wait_leader(Duration::from_secs(30)).await?;
    let ready = serde_json::json!({
        "data_dir": args.data_dir,
        "leader": leader,
        "replicas": group.addrs.iter().map(|(id, addr)| serde_json::json!({"node_id": id, "raft_addr": addr})).collect::<Vec<_>>(),
    });
    println!("READY {ready}");
    tokio::signal::ctrl_c().await?;
    eprintln!("shutting down");
    group.shutdown().await;
    Ok(())
}
