//! A whole raftmq cluster in this process on 127.0.0.1: one name server and one broker group
//! whose replicas each run a ledger, a store and a broker. What `raftmq dev` runs, and what
//! the integration tests start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use broker::BrokerConfig;
use dledger::{NodeId, RaftListener, Role};
use namesrv::{Namesrv, NamesrvConfig};

use crate::replica::ReplicaSpec;

/// Ports and names of a local cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Replicas of the broker group (1 to 5).
    pub replicas: u64,
    /// Name server port (0: any free port).
    pub namesrv_port: u16,
    /// Client port of the first replica; the others follow (0: any free ports).
    pub broker_port: u16,
    /// Raft port of the first replica; the others follow (0: any free ports).
    pub raft_port: u16,
    /// Broker group name.
    pub broker_name: String,
    /// Longest message body a broker takes.
    pub max_message_bytes: usize,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            replicas: 3,
            namesrv_port: 0,
            broker_port: 0,
            raft_port: 0,
            broker_name: "broker-a".into(),
            max_message_bytes: 4 * 1024 * 1024,
        }
    }
}

pub use crate::replica::Replica;

/// The running cluster.
pub struct LocalCluster {
    /// The name server.
    pub namesrv: Namesrv,
    /// Replicas by node id.
    pub replicas: BTreeMap<NodeId, Replica>,
}

fn port_of(first: u16, id: u64) -> u16 {
    if first == 0 {
        0
    } else {
        first + (id - 1) as u16
    }
}

impl LocalCluster {
    /// Starts everything, data under `data_dir/node-<id>`.
    pub async fn start(spec: &ClusterSpec, data_dir: &Path) -> anyhow::Result<LocalCluster> {
        let namesrv = Namesrv::start(
            &remoting::TcpTransport,
            NamesrvConfig {
                listen: format!("127.0.0.1:{}", spec.namesrv_port),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("name server cannot listen on port {}", spec.namesrv_port))?;
        let namesrv_addr = namesrv.local_addr().to_string();
        let mut listeners = BTreeMap::new();
        let mut raft_addrs = BTreeMap::new();
        for id in 1..=spec.replicas {
            let addr = format!("127.0.0.1:{}", port_of(spec.raft_port, id));
            let listener = RaftListener::bind(&dledger::TcpTransport, &addr)
                .await
                .with_context(|| format!("binding the Raft port of replica {id}"))?;
            raft_addrs.insert(id, listener.addr().to_string());
            listeners.insert(id, listener);
        }
        // Client ports are bound before the ledgers start so a taken port fails fast.
        let mut client_addrs = BTreeMap::new();
        for id in 1..=spec.replicas {
            let probe = std::net::TcpListener::bind(("127.0.0.1", port_of(spec.broker_port, id)))
                .with_context(|| format!("broker port of replica {id} is taken"))?;
            client_addrs.insert(id, probe.local_addr()?);
        }
        let mut replicas = BTreeMap::new();
        for (id, listener) in listeners {
            let advertised: SocketAddr = client_addrs[&id];
            let mut broker_config = BrokerConfig::new(
                &spec.broker_name,
                &advertised.to_string(),
                advertised,
                vec![namesrv_addr.clone()],
            );
            broker_config.max_message_bytes = spec.max_message_bytes;
            let replica_spec = ReplicaSpec::new(
                id,
                raft_addrs.clone(),
                data_dir.join(format!("node-{id}")),
                broker_config,
            );
            replicas.insert(id, Replica::start(replica_spec, listener).await?);
        }
        Ok(LocalCluster { namesrv, replicas })
    }

    /// Waits until a leader takes writes and the name server lists it as master.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<NodeId> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let leader = self
                .replicas
                .iter()
                .find(|(_, r)| r.ledger.status().role == Role::Leader && r.broker.serving_writes());
            if let Some((id, replica)) = leader {
                let addr = replica.broker.local_addr().to_string();
                let registered = self
                    .namesrv
                    .registry()
                    .lock()
                    .map(|r| {
                        r.cluster_info()
                            .broker_addr_table
                            .values()
                            .any(|b| b.broker_addrs.get(&0) == Some(&addr))
                    })
                    .unwrap_or(false);
                if registered {
                    return Ok(*id);
                }
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no registered leader after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops every broker, replica and the name server.
    pub async fn shutdown(self) {
        for (_, replica) in self.replicas {
            replica.shutdown().await;
        }
        self.namesrv.shutdown().await;
    }
}
