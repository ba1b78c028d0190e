//! Test harness: a replica group on 127.0.0.1 with real TCP and real mmap files in temp dirs,
//! plus a transport that can cut links.

#![allow(clippy::unwrap_used)] // Test helpers: a failed step is the test failing.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use testkit::wait::{until, until_async};

use dledger::testing::RecordingStateMachine;
use dledger::{
    Ledger, LedgerConfig, MmapDisk, NodeId, RaftListener, Role, TcpTransport, Transport,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest wait for any condition in these tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// Which links are cut: a pair (a, b) cuts both directions between a and b.
#[derive(Clone, Default)]
pub struct Links {
    cut: Arc<Mutex<BTreeSet<(NodeId, NodeId)>>>,
    pub addrs: Arc<Mutex<BTreeMap<String, NodeId>>>,
}

impl Links {
    pub fn isolate(&self, node: NodeId, others: impl IntoIterator<Item = NodeId>) {
        let mut cut = self.cut.lock().unwrap();
        for other in others {
            cut.insert((node, other));
            cut.insert((other, node));
        }
    }

    pub fn heal(&self) {
        self.cut.lock().unwrap().clear();
    }

    fn is_cut(&self, from: NodeId, to_addr: &str) -> bool {
        let Some(to) = self.addrs.lock().unwrap().get(to_addr).copied() else {
            return false;
        };
        self.cut.lock().unwrap().contains(&(from, to))
    }
}

/// TCP that refuses to connect, and breaks open streams, across a cut link.
#[derive(Clone)]
pub struct CuttableTransport {
    pub node: NodeId,
    pub links: Links,
}

pub struct CuttableStream {
    inner: tokio::net::TcpStream,
    from: NodeId,
    to_addr: String,
    links: Links,
}

fn broken() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "link cut")
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.links.is_cut(self.from, &self.to_addr) {
            return Poll::Ready(Err(broken()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.links.is_cut(self.from, &self.to_addr) {
            return Poll::Ready(Err(broken()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Transport for CuttableTransport {
    type Stream = CuttableStream;
    type Listener = tokio::net::TcpListener;

    async fn bind(&self, addr: &str) -> io::Result<Self::Listener> {
        TcpTransport.bind(addr).await
    }

    fn local_addr(listener: &Self::Listener) -> io::Result<std::net::SocketAddr> {
        TcpTransport::local_addr(listener)
    }

    async fn accept(listener: &Self::Listener) -> io::Result<(Self::Stream, std::net::SocketAddr)> {
        // Inbound streams are never cut here: the dialling side cuts both directions.
        let (inner, peer) = TcpTransport::accept(listener).await?;
        let stream = CuttableStream {
            inner,
            from: u64::MAX,
            to_addr: String::new(),
            links: Links::default(),
        };
        Ok((stream, peer))
    }

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        if self.links.is_cut(self.node, addr) {
            return Err(broken());
        }
        let inner = TcpTransport.connect(addr).await?;
        Ok(CuttableStream {
            inner,
            from: self.node,
            to_addr: addr.to_string(),
            links: self.links.clone(),
        })
    }
}

/// A group of replicas in this process.
pub struct Group {
    pub dirs: BTreeMap<NodeId, tempfile::TempDir>,
    pub peers: BTreeMap<NodeId, String>,
    pub nodes: BTreeMap<NodeId, Ledger>,
    pub machines: BTreeMap<NodeId, RecordingStateMachine>,
    pub links: Links,
    pub tune: fn(&mut LedgerConfig),
    /// Makes each replica's state machine (at start and restart).
    pub machine: fn() -> RecordingStateMachine,
}

pub fn fast_config(config: &mut LedgerConfig) {
    config.segment_bytes = 256 * 1024;
    config.index_units_per_file = 1024;
    config.entry_body_bytes_max = 64 * 1024;
    config.heartbeat_interval = Duration::from_millis(50);
    config.election_timeout_min = Duration::from_millis(300);
    config.election_timeout_max = Duration::from_millis(500);
    config.rpc_timeout = Duration::from_millis(200);
}

impl Group {
    /// Starts `n` replicas on 127.0.0.1 with free ports.
    pub async fn start(n: u64, tune: fn(&mut LedgerConfig)) -> Group {
        Self::start_with(n, tune, RecordingStateMachine::new).await
    }

    /// As [`Group::start`], each replica's state machine made by `machine`.
    pub async fn start_with(
        n: u64,
        tune: fn(&mut LedgerConfig),
        machine: fn() -> RecordingStateMachine,
    ) -> Group {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let links = Links::default();
        let mut listeners = BTreeMap::new();
        let mut peers = BTreeMap::new();
        for id in 1..=n {
            let transport = CuttableTransport {
                node: id,
                links: links.clone(),
            };
            let listener = RaftListener::bind(&transport, "127.0.0.1:0").await.unwrap();
            peers.insert(id, listener.addr().to_string());
            links
                .addrs
                .lock()
                .unwrap()
                .insert(listener.addr().to_string(), id);
            listeners.insert(id, listener);
        }
        let mut group = Group {
            dirs: (1..=n)
                .map(|id| (id, tempfile::tempdir().unwrap()))
                .collect(),
            peers,
            nodes: BTreeMap::new(),
            machines: BTreeMap::new(),
            links,
            tune,
            machine,
        };
        for (id, listener) in listeners {
            group.start_node(id, listener).await;
        }
        group
    }

    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.dirs[&id].path().to_path_buf()
    }

    async fn start_node(&mut self, id: NodeId, listener: RaftListener<CuttableTransport>) {
        let mut config = LedgerConfig::new(id, self.peers.clone(), self.data_dir(id));
        (self.tune)(&mut config);
        let machine = (self.machine)();
        let transport = CuttableTransport {
            node: id,
            links: self.links.clone(),
        };
        let ledger = Ledger::start(
            config,
            MmapDisk,
            transport,
            listener,
            Box::new(machine.clone()),
            None,
        )
        .await
        .unwrap();
        self.nodes.insert(id, ledger);
        self.machines.insert(id, machine);
    }

    /// Tries to start replica `id` again from its folder; returns the start error, if any.
    pub async fn try_restart(&mut self, id: NodeId) -> Result<(), dledger::StartError> {
        let transport = CuttableTransport {
            node: id,
            links: self.links.clone(),
        };
        let addr = self.peers[&id].clone();
        let listener = wait_bind(&transport, &addr).await;
        let mut config = LedgerConfig::new(id, self.peers.clone(), self.data_dir(id));
        (self.tune)(&mut config);
        let machine = (self.machine)();
        let ledger = Ledger::start(
            config,
            MmapDisk,
            transport,
            listener,
            Box::new(machine.clone()),
            None,
        )
        .await?;
        self.nodes.insert(id, ledger);
        self.machines.insert(id, machine);
        Ok(())
    }

    /// Starts (again) replica `id` from whatever is in its folder, on its old address.
    pub async fn restart(&mut self, id: NodeId) {
        let transport = CuttableTransport {
            node: id,
            links: self.links.clone(),
        };
        let addr = self.peers[&id].clone();
        let listener = wait_bind(&transport, &addr).await;
        self.start_node(id, listener).await;
    }

    /// Stops replica `id`.
    pub async fn stop(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await;
        }
    }

    /// The one leader all running replicas agree on, once they do.
    pub async fn leader(&self) -> NodeId {
        until("a leader all replicas agree on", WAIT, || {
            self.agreed_leader().ok_or_else(|| self.roles())
        })
        .await
    }

    /// Each running replica's role, term and known leader, for failure messages.
    pub fn roles(&self) -> Vec<(NodeId, Role, u64, Option<NodeId>)> {
        self.nodes
            .values()
            .map(Ledger::status)
            .map(|s| (s.node_id, s.role, s.term, s.leader))
            .collect()
    }

    pub fn agreed_leader(&self) -> Option<NodeId> {
        let statuses: Vec<_> = self.nodes.values().map(Ledger::status).collect();
        let leader = statuses.iter().find(|s| s.role == Role::Leader)?;
        let agreed = statuses
            .iter()
            .all(|s| s.leader == Some(leader.node_id) && s.term == leader.term);
        agreed.then_some(leader.node_id)
    }

    /// Waits until every running replica applied at least `index`.
    pub async fn wait_applied(&self, index: u64) {
        until(&format!("every replica applied {index}"), WAIT, || {
            let applied: Vec<Option<u64>> =
                self.nodes.values().map(|n| n.status().applied).collect();
            if applied.iter().all(|a| a.is_some_and(|a| a >= index)) {
                Ok(())
            } else {
                Err(applied)
            }
        })
        .await;
    }
}

/// Binds `addr` again once the port is free (a stopped replica's listener may linger).
pub async fn wait_bind<T: dledger::Transport>(transport: &T, addr: &str) -> RaftListener<T> {
    until_async(&format!("{addr} free to bind"), WAIT, || {
        RaftListener::bind(transport, addr)
    })
    .await
}

/// Proposes `count` entries with `concurrency` tasks through `leader`, each body `prefix-i`.
pub async fn propose_many(
    leader: &Ledger,
    prefix: &str,
    count: usize,
    concurrency: usize,
) -> Vec<dledger::Committed> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let leader = leader.clone();
        let next = next.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return done;
                }
                // Padded so that entries fill segments at a realistic pace.
                let body = bytes::Bytes::from(format!("{prefix}-{i}-{:>200}", ""));
                done.push(leader.propose(body).await.expect("proposal commits"));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_by_key(|c| c.index);
    all
}
