//! HTTP on every process (DESIGN.md §9): `GET /health`, `GET /status` (JSON) and `GET /metrics`
//! (Prometheus text), for a replica ([`serve_replica`]) and for a name server
//! ([`serve_namesrv`]). Read-only: every handler reads the replica's or registry's state as it
//! is at that moment and never waits on the request path.
//!
//! Any other path answers 404, another method on these paths 405 (axum's router), and a
//! request that is not HTTP gets 400 from hyper with its connection closed; the server goes on.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use broker::BrokerView;
use broker::metrics::{write_counter, write_gauge};
use dledger::{FlushPolicy, Ledger, MmapDisk, NodeId, Role, Status};
use namesrv::{Namesrv, Registry};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::replica::Replica;

/// How long [`HttpServer::shutdown`] lets open connections finish before it stops them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Prometheus' text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running HTTP server.
pub struct HttpServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    async fn start(addr: &str, router: Router) -> anyhow::Result<HttpServer> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("HTTP cannot listen on {addr}"))?;
        let addr = listener
            .local_addr()
            .context("the HTTP listener has no local address")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    // A dropped sender stops the server too.
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(%addr, "HTTP serving");
        Ok(HttpServer { addr, stop, task })
    }

    /// The bound address (the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in progress finish (at most 5 s), then returns.
    pub async fn shutdown(self) {
        // The server may have ended already (its task returned an error): nothing to stop.
        let _ = self.stop.send(());
        let mut task = self.task;
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => {
                tracing::warn!(addr = %self.addr, cause = %err, "HTTP server failed")
            }
            Ok(Err(err)) => tracing::warn!(addr = %self.addr, cause = %err, "HTTP server task"),
            Err(_) => {
                tracing::warn!(addr = %self.addr, "HTTP connections still open after {SHUTDOWN_GRACE:?}: closing them");
                task.abort();
            }
        }
    }
}

/// What the HTTP server of a replica reads: its ledger and broker, its flush policy, and the
/// client addresses of its peers' brokers where known (to name the leader's).
#[derive(Clone)]
pub struct ReplicaHandles {
    /// The Raft replica.
    pub ledger: Arc<Ledger>,
    /// Its broker.
    pub broker: BrokerView<MmapDisk, remoting::TcpTransport>,
    /// Its flush policy.
    pub flush: FlushPolicy,
    /// Broker client addresses of the group's replicas by node id (this one's is always known).
    pub broker_addrs: BTreeMap<NodeId, String>,
}

impl ReplicaHandles {
    /// Adds the broker client addresses of other replicas, so `/status` can name the leader's.
    pub fn with_broker_addrs(mut self, addrs: BTreeMap<NodeId, String>) -> Self {
        let own = self.ledger.node_id();
        for (id, addr) in addrs {
            self.broker_addrs.entry(id).or_insert(addr);
        }
        debug_assert!(self.broker_addrs.contains_key(&own));
        self
    }
}

impl From<&Replica> for ReplicaHandles {
    fn from(replica: &Replica) -> Self {
        let broker = replica.broker.view();
        let mut broker_addrs = BTreeMap::new();
        broker_addrs.insert(
            replica.ledger.node_id(),
            broker.advertised_addr().to_string(),
        );
        ReplicaHandles {
            ledger: replica.ledger.clone(),
            broker,
            flush: replica.flush,
            broker_addrs,
        }
    }
}

/// Serves `/health`, `/status` and `/metrics` of a replica on `addr` (`host:port`, port 0 for
/// any free one). Call it as `serve_replica(addr, &replica)`, or with [`ReplicaHandles`] that
/// know the peers' broker addresses.
///
/// # Errors
/// The bind error.
pub async fn serve_replica(
    addr: &str,
    replica: impl Into<ReplicaHandles>,
) -> anyhow::Result<HttpServer> {
    let handles = Arc::new(replica.into());
    let router = Router::new()
        .route("/health", get(replica_health))
        .route("/status", get(replica_status_json))
        .route("/metrics", get(replica_metrics))
        .with_state(handles);
    HttpServer::start(addr, router).await
}

/// Serves `/health`, `/status` and `/metrics` of a name server on `addr`.
///
/// # Errors
/// The bind error.
pub async fn serve_namesrv(addr: &str, namesrv: &Namesrv) -> anyhow::Result<HttpServer> {
    let router = Router::new()
        .route("/health", get(namesrv_health))
        .route("/status", get(namesrv_status_json))
        .route("/metrics", get(namesrv_metrics))
        .with_state(namesrv.registry());
    HttpServer::start(addr, router).await
}

/// Why a replica is not serving, or `None` when it is: a stopped replica (shut down, or stopped
/// by a fatal storage error), no known leader, a leader that no quorum answered within the
/// lease (it refuses writes until one does: check-quorum), or a leader still applying its log
/// before it takes writes. A follower that knows its leader serves (pulls of what it applied).
pub fn unavailable_reason(status: &Status, serving_writes: bool) -> Option<&'static str> {
    if status.role == Role::Shutdown {
        Some("replica stopped")
    } else if status.leader.is_none() {
        Some("no leader")
    } else if status.role == Role::Leader && !status.has_quorum {
        Some("leader without quorum")
    } else if status.role == Role::Leader && !serving_writes {
        Some("leader applying its log")
    } else {
        None
    }
}

async fn replica_health(State(handles): State<Arc<ReplicaHandles>>) -> Response {
    if let Some(failure) = handles.ledger.fatal() {
        return health(Some(&format!("storage failed: {failure}")));
    }
    if handles.ledger.waiting_for_space() {
        return health(Some(
            "the log's disk is full: waiting for space (the replica goes on once there is room)",
        ));
    }
    let status = handles.ledger.status();
    health(unavailable_reason(&status, handles.broker.serving_writes()))
}

fn health(unavailable: Option<&str>) -> Response {
    match unavailable {
        None => (StatusCode::OK, axum::Json(json!({ "status": "ok" }))).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "unavailable", "reason": reason })),
        )
            .into_response(),
    }
}

/// The `/status` document of a replica (README.md, "HTTP: health, status, metrics").
pub fn replica_status(handles: &ReplicaHandles) -> Value {
    let status = handles.ledger.status();
    let last_log_index = status.last_log_index;
    let followers: Option<Vec<Value>> = (status.role == Role::Leader).then(|| {
        status
            .matched
            .iter()
            .map(|(id, matched)| {
                let last = last_log_index.unwrap_or(0);
                let lag = match matched {
                    Some(matched) => last.saturating_sub(*matched),
                    None => last_log_index.map_or(0, |l| l + 1),
                };
                json!({ "node_id": id, "matched": matched, "lag": lag })
            })
            .collect()
    });
    // Known for every replica in `raftmq dev`; a lone `raftmq broker` follower knows the
    // master address the name servers answered its registration with.
    let leader_addr = status.leader.and_then(|leader| {
        handles
            .broker_addrs
            .get(&leader)
            .cloned()
            .or_else(|| handles.broker.registered_master())
    });
    let leader_raft_addr = status
        .leader
        .and_then(|leader| handles.ledger.peer_addr(leader));
    let flush = match handles.flush {
        FlushPolicy::Sync => "sync",
        FlushPolicy::Async { .. } => "async",
    };
    json!({
        "node_id": status.node_id,
        "role": status.role,
        "term": status.term,
        "leader_id": status.leader,
        "leader_addr": leader_addr,
        "leader_raft_addr": leader_raft_addr,
        "raft_addr": handles.ledger.peer_addr(status.node_id),
        "last_log_index": last_log_index,
        "committed": status.committed,
        "applied": status.applied,
        "followers": followers,
        "flush": flush,
        "broker_name": handles.broker.broker_name(),
        "broker_addr": handles.broker.advertised_addr().to_string(),
        "serving_writes": handles.broker.serving_writes(),
        "write_refusal": handles.broker.write_refusal(),
        "has_quorum": status.has_quorum,
        // The log's disk is full: the replica takes no part until space returns.
        "waiting_for_space": handles.ledger.waiting_for_space(),
        "quorum_acked_ms_ago": status.quorum_acked_ms_ago,
        "scheduled": handles.broker.scheduled(),
        "transactions": handles.broker.transactions(),
        "retention": handles.broker.retention(),
        // The group's membership as the log has it (broker.conf's dLegerPeers only starts it).
        "members": handles.ledger.members(),
        "member": handles.ledger.is_member(),
        "topics": handles.broker.topic_queues(),
    })
}

async fn replica_status_json(State(handles): State<Arc<ReplicaHandles>>) -> Response {
    axum::Json(replica_status(&handles)).into_response()
}

/// The `/metrics` text of a replica: the broker's families, then the Raft gauges.
pub fn replica_metrics_text(handles: &ReplicaHandles) -> String {
    let mut out = String::with_capacity(8 * 1024);
    handles.broker.metrics().render(&mut out);
    let transactions = handles.broker.transactions();
    write_gauge(
        &mut out,
        "raftmq_transactions_pending",
        "Half messages without a commit or rollback yet.",
        transactions.pending,
    );
    for (name, help, value) in [
        (
            "raftmq_transaction_half_messages_total",
            "Half messages stored.",
            transactions.halves,
        ),
        (
            "raftmq_transaction_commits_total",
            "Transactions committed.",
            transactions.commits,
        ),
        (
            "raftmq_transaction_rollbacks_total",
            "Transactions rolled back.",
            transactions.rollbacks,
        ),
        (
            "raftmq_transaction_given_up_total",
            "Half messages given up after transactionCheckMax checks.",
            transactions.given_up,
        ),
        (
            "raftmq_transaction_checks_sent_total",
            "CHECK_TRANSACTION_STATE requests this replica sent while leading.",
            transactions.checks_sent,
        ),
    ] {
        write_counter(&mut out, name, help, value);
    }
    let status = handles.ledger.status();
    write_gauge(
        &mut out,
        "raftmq_raft_term",
        "Current Raft term of this replica.",
        status.term,
    );
    write_gauge(
        &mut out,
        "raftmq_raft_commit_index",
        "Highest log index this replica knows committed (0 before any).",
        status.committed.unwrap_or(0),
    );
    write_gauge(
        &mut out,
        "raftmq_raft_applied_index",
        "Highest log index applied to the message store (0 before any).",
        status.applied.unwrap_or(0),
    );
    write_gauge(
        &mut out,
        "raftmq_raft_last_log_index",
        "Last log index in this replica's log (0 when empty).",
        status.last_log_index.unwrap_or(0),
    );
    write_gauge(
        &mut out,
        "raftmq_raft_is_leader",
        "1 when this replica is the Raft leader, else 0.",
        u64::from(status.role == Role::Leader),
    );
    write_gauge(
        &mut out,
        "raftmq_serving_writes",
        "1 when this replica's broker takes writes (a leader that applied its log), else 0.",
        u64::from(handles.broker.serving_writes()),
    );
    write_gauge(
        &mut out,
        "raftmq_leader_without_quorum",
        "1 when this replica leads but no quorum answered it within the lease (it refuses writes), else 0.",
        u64::from(status.role == Role::Leader && !status.has_quorum),
    );
    write_gauge(
        &mut out,
        "raftmq_log_waiting_for_space",
        "1 while the log's disk is full and this replica waits for space (it takes no part meanwhile), else 0.",
        u64::from(handles.ledger.waiting_for_space()),
    );
    write_counter(
        &mut out,
        "raftmq_log_space_waits_total",
        "Times this replica began waiting for disk space since it started.",
        handles.ledger.space_waits(),
    );
    write_gauge(
        &mut out,
        "raftmq_scheduled_pending",
        "Scheduled messages (delay levels, timers, retries) on this replica not yet delivered.",
        handles.broker.scheduled().pending,
    );
    if status.role == Role::Leader {
        let last = status.last_log_index.unwrap_or(0);
        let _ = writeln!(
            out,
            "# HELP raftmq_raft_follower_lag Log entries a follower lacks, as its leader sees it."
        );
        let _ = writeln!(out, "# TYPE raftmq_raft_follower_lag gauge");
        for (id, matched) in &status.matched {
            let lag = match matched {
                Some(matched) => last.saturating_sub(*matched),
                None => status.last_log_index.map_or(0, |l| l + 1),
            };
            let _ = writeln!(out, "raftmq_raft_follower_lag{{node_id=\"{id}\"}} {lag}");
        }
    }
    out
}

async fn replica_metrics(State(handles): State<Arc<ReplicaHandles>>) -> Response {
    metrics_response(replica_metrics_text(&handles))
}

fn metrics_response(text: String) -> Response {
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response()
}

async fn namesrv_health() -> Response {
    health(None)
}

/// The `/status` document of a name server (README.md, "HTTP: health, status, metrics").
pub fn namesrv_status(registry: &Mutex<Registry>) -> Value {
    let (brokers, topics) = {
        let registry = registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (
            registry.brokers(tokio::time::Instant::now()),
            registry.topic_queues(),
        )
    };
    let brokers: Vec<Value> = brokers
        .iter()
        .map(|b| {
            json!({
                "cluster": b.cluster,
                "broker_name": b.broker_name,
                "broker_id": b.broker_id,
                "role": b.role(),
                "addr": b.addr,
                "heartbeat_age_ms": u64::try_from(b.heartbeat_age.as_millis()).unwrap_or(u64::MAX),
            })
        })
        .collect();
    let topics: Vec<Value> = topics
        .into_iter()
        .map(|(topic, queues)| {
            json!({
                "topic": topic,
                "brokers": queues.iter().map(|q| json!({
                    "broker_name": q.broker_name,
                    "read_queue_nums": q.read_queue_nums,
                    "write_queue_nums": q.write_queue_nums,
                    "perm": q.perm,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "brokers": brokers, "topics": topics })
}

async fn namesrv_status_json(State(registry): State<Arc<Mutex<Registry>>>) -> Response {
    axum::Json(namesrv_status(&registry)).into_response()
}

/// The `/metrics` text of a name server.
pub fn namesrv_metrics_text(registry: &Mutex<Registry>) -> String {
    let (brokers, topics, clusters) = {
        let registry = registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (
            registry.brokers(tokio::time::Instant::now()).len(),
            registry.topics().len(),
            registry.cluster_info().cluster_addr_table.len(),
        )
    };
    let mut out = String::new();
    write_gauge(
        &mut out,
        "raftmq_namesrv_brokers",
        "Live broker addresses registered with this name server.",
        brokers as u64,
    );
    write_gauge(
        &mut out,
        "raftmq_namesrv_topics",
        "Topics some registered broker serves.",
        topics as u64,
    );
    write_gauge(
        &mut out,
        "raftmq_namesrv_clusters",
        "Clusters with a registered broker.",
        clusters as u64,
    );
    out
}

async fn namesrv_metrics(State(registry): State<Arc<Mutex<Registry>>>) -> Response {
    metrics_response(namesrv_metrics_text(&registry))
}
