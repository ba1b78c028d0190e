//! A replica group in this process, on 127.0.0.1: what `dev` and `bench ledger` run.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use dledger::{
    Ledger, LedgerConfig, MmapDisk, NodeId, RaftListener, Role, StateMachine, TcpTransport,
};

/// The replicas, by id.
pub struct LocalGroup {
    pub nodes: BTreeMap<NodeId, Ledger>,
}

impl LocalGroup {
    /// Starts `replicas` replicas with data under `data_dir/node-<id>`. Raft ports are
    /// `first_port + i`, or any free ports when `first_port` is 0.
    pub async fn start(
        replicas: u64,
        data_dir: &Path,
        first_port: u16,
        tune: impl Fn(&mut LedgerConfig),
        mut machine: impl FnMut(NodeId) -> Box<dyn StateMachine>,
    ) -> anyhow::Result<LocalGroup> {
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for id in 1..=replicas {
            let port = if first_port == 0 {
                0
            } else {
                first_port + (id - 1) as u16
            };
            let addr = format!("127.0.0.1:{port}");
            let listener = RaftListener::bind(&TcpTransport, &addr)
                .await
                .with_context(|| format!("binding the Raft port of replica {id}"))?;
            addrs.insert(id, listener.addr().to_string());
            listeners.insert(id, listener);
        }
        let mut nodes = BTreeMap::new();
        for (id, listener) in listeners {
            let mut config =
                LedgerConfig::new(id, addrs.clone(), data_dir.join(format!("node-{id}")));
            tune(&mut config);
            let ledger = Ledger::start(config, MmapDisk, TcpTransport, listener, machine(id), None)
                .await
                .with_context(|| format!("starting replica {id}"))?;
            nodes.insert(id, ledger);
        }
        Ok(LocalGroup { nodes })
    }

    /// Waits until one replica leads and every replica agrees.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<NodeId> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let statuses: Vec<_> = self.nodes.values().map(Ledger::status).collect();
            if let Some(leader) = statuses.iter().find(|s| s.role == Role::Leader)
                && statuses.iter().all(|s| s.leader == Some(leader.node_id))
            {
                return Ok(leader.node_id);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no leader after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops every replica.
    pub async fn shutdown(&self) {
        for node in self.nodes.values() {
            node.shutdown().await;
        }
    }
}
