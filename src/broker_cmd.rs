//! `raftmq broker -c FILE`: one replica of a broker group, as deployed: its ledger, store and
//! broker, configured by RocketMQ's `broker.conf` (DLedger mode) or the same keys in TOML.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use dledger::RaftListener;
use raftmq::broker_conf;
use raftmq::http;
use raftmq::leadership;
use raftmq::replica::Replica;

/// Flags of `raftmq broker`.
#[derive(clap::Args)]
pub struct BrokerArgs {
    /// broker.conf (Java properties) or a `.toml` file with the same keys.
    #[arg(short = 'c', long = "config")]
    config: PathBuf,
}

/// How long a stopping leader waits for its successor to take over and be listed as the master
/// by the name servers. Sends are held meanwhile; clients give a send 3 s.
const STEP_DOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// Serves until SIGINT or SIGTERM; a leader hands leadership over before it stops.
pub async fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let conf = broker_conf::load(&args.config)
        .with_context(|| format!("configuration {}", args.config.display()))?;
    for key in &conf.unknown_keys {
        tracing::warn!(key = %key, file = %args.config.display(), "unknown key ignored");
    }
    for key in &conf.ignored_keys {
        tracing::warn!(key = %key, file = %args.config.display(), "key accepted but has no effect in raftmq");
    }
    let node_id = conf.spec.ledger.node_id;
    let raft_addr = conf.spec.ledger.peers[&node_id].clone();
    let listener = RaftListener::bind(&dledger::TcpTransport, &raft_addr)
        .await
        .with_context(|| format!("cannot listen for Raft on {raft_addr} ({})", conf.self_id))?;
    let client_addr = conf.spec.broker.listen.clone();
    let clients = tokio::net::TcpListener::bind(&client_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen for clients on {client_addr} ({})",
                conf.self_id
            )
        })?;
    let replica = Replica::start(conf.spec.clone(), listener, clients).await?;
    let http = match &conf.http_listen {
        Some(addr) => Some(
            http::serve_replica(addr, &replica)
                .await
                .with_context(|| format!("cannot serve HTTP on {addr} (httpListenAddr)"))?,
        ),
        None => None,
    };
    let preferred = conf
        .preferred_leader
        .map(|p| tokio::spawn(leadership::follow_preferred(replica.broker.leadership(), p)));
    let ready = serde_json::json!({
        "node_id": node_id,
        "self_id": conf.self_id,
        "broker_name": conf.spec.broker.broker_name,
        "broker_addr": replica.broker.local_addr().to_string(),
        "raft_addr": replica.raft_addr,
        "http": http.as_ref().map(|h| h.local_addr().to_string()),
    });
    println!("READY {ready}");
    crate::signal::shutdown_signal().await;
    if let Some(task) = preferred {
        task.abort();
    }
    stop(replica, conf.preferred_leader).await;
    if let Some(http) = http {
        http.shutdown().await;
    }
    Ok(())
}

/// Hands leadership over if this replica leads, then stops the broker and the ledger.
async fn stop(replica: Replica, preferred: Option<dledger::NodeId>) {
    let handle = replica.broker.leadership();
    if let Some(to) = leadership::step_down(&handle, preferred, STEP_DOWN_TIMEOUT).await {
        eprintln!("handed leadership to {}", broker::handover::describe(to));
    }
    replica.shutdown().await;
}
