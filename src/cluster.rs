//! A whole raftmq cluster in this process on 127.0.0.1: one name server and one broker group
//! whose replicas each run a ledger, a store and a broker, each process with its HTTP status
//! server. What `raftmq dev` runs, and what the integration tests start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use broker::BrokerConfig;
use dledger::{NodeId, RaftListener, Role};
use namesrv::{Namesrv, NamesrvConfig};

use crate::http::{HttpServer, ReplicaHandles};
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
    /// HTTP port of the name server; replica *i* serves on this port + *i* (0: any free
    /// ports; `None`: no HTTP).
    pub http_port: Option<u16>,
    /// Delay levels and timer messages.
    pub schedule: broker::schedule::ScheduleConfig,
    /// Transaction checks.
    pub transactions: broker::transactions::TransactionConfig,
    /// `enablePropertyFilter`: SQL92 subscriptions are served.
    pub enable_property_filter: bool,
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
            http_port: Some(0),
            schedule: broker::schedule::ScheduleConfig::default(),
            transactions: broker::transactions::TransactionConfig::default(),
            enable_property_filter: true,
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
    /// The name server's HTTP server, unless `http_port` was `None`.
    pub namesrv_http: Option<HttpServer>,
    /// Each replica's HTTP server by node id (empty if `http_port` was `None`).
    pub replica_http: BTreeMap<NodeId, HttpServer>,
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
        // Client ports are bound before the ledgers start so a taken port fails fast, and held
        // until the brokers serve on them so no other socket takes a port picked free.
        let mut client_listeners = BTreeMap::new();
        for id in 1..=spec.replicas {
            let addr = format!("127.0.0.1:{}", port_of(spec.broker_port, id));
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("broker port of replica {id} is taken"))?;
            client_listeners.insert(id, listener);
        }
        let mut replicas = BTreeMap::new();
        for (id, listener) in listeners {
            let clients = client_listeners
                .remove(&id)
                .with_context(|| format!("no client listener for replica {id}"))?;
            let advertised: SocketAddr = clients.local_addr()?;
            let mut broker_config = BrokerConfig::new(
                &spec.broker_name,
                &advertised.to_string(),
                advertised,
                vec![namesrv_addr.clone()],
            );
            broker_config.max_message_bytes = spec.max_message_bytes;
            broker_config.schedule = spec.schedule.clone();
            broker_config.transactions = spec.transactions.clone();
            broker_config.enable_property_filter = spec.enable_property_filter;
            let replica_spec = ReplicaSpec::new(
                id,
                raft_addrs.clone(),
                data_dir.join(format!("node-{id}")),
                broker_config,
            );
            replicas.insert(id, Replica::start(replica_spec, listener, clients).await?);
        }
        let mut namesrv_http = None;
        let mut replica_http = BTreeMap::new();
        if let Some(http_port) = spec.http_port {
            namesrv_http = Some(
                crate::http::serve_namesrv(&format!("127.0.0.1:{http_port}"), &namesrv).await?,
            );
            let broker_addrs: BTreeMap<NodeId, String> = replicas
                .iter()
                .map(|(id, replica)| (*id, replica.broker.advertised_addr().to_string()))
                .collect();
            for (id, replica) in &replicas {
                let port = if http_port == 0 {
                    0
                } else {
                    u16::try_from(*id)
                        .ok()
                        .and_then(|id| http_port.checked_add(id))
                        .with_context(|| {
                            format!("HTTP port {http_port} + {id} is past the last port")
                        })?
                };
                let handles = ReplicaHandles::from(replica).with_broker_addrs(broker_addrs.clone());
                let server =
                    crate::http::serve_replica(&format!("127.0.0.1:{port}"), handles).await?;
                replica_http.insert(*id, server);
            }
        }
        Ok(LocalCluster {
            namesrv,
            replicas,
            namesrv_http,
            replica_http,
        })
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

    /// Stops the HTTP servers, then every broker, replica and the name server.
    pub async fn shutdown(self) {
        for (_, server) in self.replica_http {
            server.shutdown().await;
        }
        if let Some(server) = self.namesrv_http {
            server.shutdown().await;
        }
        for (_, replica) in self.replicas {
            replica.shutdown().await;
        }
        self.namesrv.shutdown().await;
    }
}
