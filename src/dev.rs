//! `raftmq dev`: one command, one process: a name server and a broker group on 127.0.0.1.

use std::path::PathBuf;
use std::time::Duration;

use raftmq::cluster::{ClusterSpec, LocalCluster};

/// Flags of `raftmq dev`.
#[derive(clap::Args)]
pub struct DevArgs {
    /// Folder for every replica's data.
    #[arg(long, default_value = "./raftmq-data")]
    data_dir: PathBuf,
    /// Number of replicas (1 to 5).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=5))]
    replicas: u64,
    /// Name server port. 0 picks a free port.
    #[arg(long, default_value_t = 9876)]
    namesrv_port: u16,
    /// Client port of the first replica; the others follow. 0 picks free ports.
    #[arg(long, default_value_t = 10911)]
    broker_port: u16,
    /// Raft port of the first replica; the others follow. 0: the client port + 30000 (40911
    /// after 10911, DLedger's usual port) when the client port is fixed, free ports when it is
    /// 0. A group's Raft addresses are in its log, so a restart on the same data must find the
    /// same ports.
    #[arg(long, default_value_t = 0)]
    raft_port: u16,
    /// HTTP port of the name server (/health, /status, /metrics); replica N serves on this
    /// port + N. 0 picks free ports.
    #[arg(long, default_value_t = 0)]
    http_port: u16,
    /// The delay of each level, as broker.conf's `messageDelayLevel` (e.g. "1s 5s 10s").
    #[arg(long, default_value = broker::schedule::DELAY_LEVELS_DEFAULT, value_parser = broker::schedule::DelayLevels::parse)]
    message_delay_level: broker::schedule::DelayLevels,
}

/// Where `raftmq dev`'s Raft ports start when only the client port is given: 10911 → 40911.
const RAFT_PORT_OFFSET: u16 = 30_000;

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let spec = ClusterSpec {
        replicas: args.replicas,
        namesrv_port: args.namesrv_port,
        broker_port: args.broker_port,
        raft_port: match (args.raft_port, args.broker_port) {
            (0, 0) => 0,
            (0, client) => client.checked_add(RAFT_PORT_OFFSET).unwrap_or(0),
            (raft, _) => raft,
        },
        http_port: Some(args.http_port),
        schedule: broker::schedule::ScheduleConfig {
            levels: args.message_delay_level,
            ..broker::schedule::ScheduleConfig::default()
        },
        ..ClusterSpec::default()
    };
    let cluster = LocalCluster::start(&spec, &args.data_dir).await?;
    let leader = cluster.wait_ready(Duration::from_secs(60)).await?;
    let http_addr =
        |server: Option<&raftmq::http::HttpServer>| server.map(|s| s.local_addr().to_string());
    let ready = serde_json::json!({
        "namesrv": cluster.namesrv.local_addr().to_string(),
        "namesrv_http": http_addr(cluster.namesrv_http.as_ref()),
        "data_dir": args.data_dir,
        "leader": leader,
        "replicas": cluster.replicas.iter().map(|(id, r)| serde_json::json!({
            "node_id": id,
            "broker_addr": r.broker.local_addr().to_string(),
            "raft_addr": r.raft_addr,
            "http": http_addr(cluster.replica_http.get(id)),
        })).collect::<Vec<_>>(),
    });
    println!("READY {ready}");
    crate::signal::shutdown_signal().await;
    eprintln!("shutting down");
    cluster.shutdown().await;
    Ok(())
}
