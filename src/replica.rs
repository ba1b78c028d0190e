//! One replica of a broker group: its ledger (Raft over the CommitLog), its message store and
//! its broker, started together. What `raftmq broker` runs once, and `raftmq dev` once per
//! replica.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use broker::{Broker, BrokerConfig};
use dledger::{FlushPolicy, Ledger, LedgerConfig, MmapDisk, NodeId, RaftListener};
use store::{Store, StoreConfig, StoreMachine};

/// What a replica needs to start.
#[derive(Debug, Clone)]
pub struct ReplicaSpec {
    /// The Raft settings: node id, peers' Raft addresses, data folder, timeouts, flush policy.
    pub ledger: LedgerConfig,
    /// The broker settings: names, client address, name servers.
    pub broker: BrokerConfig,
    /// Folder of the message store (ConsumeQueues, IndexFiles, checkpoint).
    pub store_dir: PathBuf,
}

impl ReplicaSpec {
    /// The usual layout: the ledger's files in `dir`, the store's in `dir/store`.
    pub fn new(
        node_id: NodeId,
        raft_peers: BTreeMap<NodeId, String>,
        dir: PathBuf,
        broker: BrokerConfig,
    ) -> Self {
        ReplicaSpec {
            store_dir: dir.join("store"),
            ledger: LedgerConfig::new(node_id, raft_peers, dir),
            broker,
        }
    }
}

/// A running replica.
pub struct Replica {
    /// The Raft replica.
    pub ledger: Arc<Ledger>,
    /// Its broker.
    pub broker: Broker<MmapDisk, remoting::TcpTransport>,
    /// Raft address.
    pub raft_addr: String,
    /// The ledger's flush policy (for status pages).
    pub flush: FlushPolicy,
}

impl Replica {
    /// Opens the store, starts the ledger on `listener` and the broker on `clients` (both bound
    /// beforehand, so a taken port fails before anything starts and a port picked free stays
    /// ours).
    ///
    /// # Errors
    /// Store or log files that cannot be opened or recovered.
    pub async fn start(
        spec: ReplicaSpec,
        listener: RaftListener<dledger::TcpTransport>,
        clients: tokio::net::TcpListener,
    ) -> anyhow::Result<Replica> {
        let id = spec.ledger.node_id;
        let flush = spec.ledger.flush;
        let raft_addr = listener.addr().to_string();
        let started = std::time::Instant::now();
        let mut store_config = StoreConfig::new(spec.store_dir.clone());
        store_config.segment_bytes = spec.ledger.segment_bytes;
        let store = Store::open(MmapDisk, store_config).with_context(|| {
            format!(
                "opening the store of replica {id} in {}",
                spec.store_dir.display()
            )
        })?;
        let store_opened = started.elapsed();
        let ledger = Ledger::start(
            spec.ledger,
            MmapDisk,
            dledger::TcpTransport,
            listener,
            Box::new(StoreMachine::new(store.clone())),
            Some(Arc::new(store::entry::OffsetHook)),
        )
        .await
        .with_context(|| format!("starting replica {id}"))?;
        let ledger = Arc::new(ledger);
        let ledger_started = started.elapsed();
        let advertised: SocketAddr = spec.broker.advertised_addr;
        let listen = spec.broker.listen.clone();
        let broker = Broker::start_on(
            &remoting::TcpTransport,
            clients,
            spec.broker,
            ledger.clone(),
            store,
        )
        .with_context(|| {
            format!("broker of replica {id} cannot listen on {listen} (advertised {advertised})")
        })?;
        // Where a (re)start spends its time: BENCHMARKS.md, "Restart time".
        tracing::info!(
            node_id = id,
            store_open_ms = store_opened.as_millis(),
            ledger_start_ms = (ledger_started - store_opened).as_millis(),
            broker_start_ms = (started.elapsed() - ledger_started).as_millis(),
            "replica started"
        );
        Ok(Replica {
            ledger,
            broker,
            raft_addr,
            flush,
        })
    }

    /// Stops the broker (unregistering it, checkpointing the store), then the ledger.
    pub async fn shutdown(self) {
        self.broker.shutdown().await;
        self.ledger.shutdown().await;
    }
}
