//! raftmq's broker: RocketMQ's request processing (PROTOCOL.md §3) over one replica of a
//! replicated store (DESIGN.md §3–5).
//!
//! - [`config`]: the settings of a broker.
//! - `processor`: the requests, one file per family, each request parsing and applying itself.
//! - [`limits`]: every fixed bound, with its reason.
//! - `writer`: sends batched into Raft entries, answered once applied.
//! - `clients`: consumer groups and producers from heartbeats.
//! - [`metrics`]: request counts, bytes, latency histograms, long polls, elections.
//! - [`handover`]: moving leadership on purpose, and holding sends while it moves.
//! - [`schedule`]: delay levels, timer messages and retry back-off: what waits, and the
//!   leader's scheduler that delivers it through the log.
//! - [`sql92`]: SQL92 property selectors: compiled once per subscription, evaluated per message.
//! - [`Broker`]: start, role changes, namesrv registration, shutdown.
//!
//! The leader registers as brokerId 0 once it has applied its whole log, and only then takes
//! writes; followers register with their node id, refuse writes with SERVICE_NOT_AVAILABLE
//! ("not master") and serve pulls of what they have applied.

pub mod clients;
pub mod config;
pub mod handover;
pub mod limits;
pub mod metrics;
mod processor;
pub mod retention;
pub mod schedule;
pub mod sql92;
pub mod transactions;
mod writer;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dledger::{Disk, Ledger, Role};
use protocol::RemotingCommand;
use protocol::body::{
    self, DataVersion, RegisterBrokerBody, TopicConfig, TopicConfigSerializeWrapper, perm,
};
use protocol::code::{request, response};
use protocol::header::{CommandHeader, RegisterBrokerRequestHeader, UnRegisterBrokerRequestHeader};
use protocol::message::RecordView;
use remoting::{Client, Server, Transport};
use store::Store;
use tokio::sync::{Notify, mpsc};

pub use config::BrokerConfig;
pub use handover::{HandoverError, Transferred};
pub use metrics::Metrics;

/// The auto-create template topic.
pub const TBW102: &str = "TBW102";

/// A broker's shared state.
pub(crate) struct Shared<D: Disk, T: Transport> {
    pub config: BrokerConfig,
    pub ledger: Arc<Ledger>,
    /// The replica's role, term and quorum lease as the ledger publishes them.
    pub roles: tokio::sync::watch::Receiver<dledger::RoleState>,
    pub store: Arc<Store<D>>,
    pub clients: Mutex<clients::Clients>,
    /// Leader that has applied its whole log: takes writes, registers as id 0.
    pub serving_writes: AtomicBool,
    pub writer: mpsc::Sender<writer::Write>,
    pub namesrv: Client<T>,
    /// Wakes the registration task at once (role change, new topic).
    pub register_now: Notify,
    /// Offsets committed but not yet applied, so a query right after a commit sees it.
    pub pending_offsets: Mutex<std::collections::BTreeMap<(String, String, i32), i64>>,
    pub offsets_tx: mpsc::Sender<store::entry::OffsetCommit>,
    /// Queue locks of orderly consumers: (group, queue) → (client, when locked).
    pub locks: Mutex<LockTable>,
    /// The broker's random choices, seeded by `config.seed` when set.
    pub rng: Mutex<rand::rngs::StdRng>,
    /// The group's master address as the name servers last answered a registration.
    pub registered_master: Mutex<Option<String>>,
    /// What the broker counts, for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The term in which this replica asked Raft to hand leadership over, and to whom: no
    /// writes are taken in that term (see `handover`).
    pub handover: Mutex<Option<(u64, dledger::NodeId)>>,
    /// `handover`'s term (0: none), read on every send.
    pub handover_term: AtomicU64,
    /// When this replica last stopped taking writes (it stopped leading, lost its quorum, or
    /// began to hand leadership over): for a while after, sends reaching it are held (see
    /// `handover`).
    pub left_leadership_at: Mutex<Option<tokio::time::Instant>>,
    /// The master the name servers listed at the last lookup, and when it was made.
    pub master_lookup: tokio::sync::Mutex<Option<(tokio::time::Instant, Option<String>)>>,
    /// What the scheduler last saw (the next due time, how far behind it is).
    pub scheduler: Mutex<schedule::SchedulerReport>,
    /// What the transaction check service last saw.
    pub transaction_checks: Mutex<transactions::CheckReport>,
    /// The disk is full (see `retention`): sends are refused.
    pub disk_full: AtomicBool,
    /// What the cleaner keeps between runs.
    pub retention: Mutex<retention::RetentionState>,
    /// Wakes the cleaner at once (DELETE_EXPIRED_COMMITLOG).
    pub clean_now: Notify,
    /// SQL92 selectors of subscriptions, compiled once per expression.
    pub selectors: sql92::SelectorCache,
}

/// Queue locks of orderly consumers, held in memory as RocketMQ does (clients renew every 20 s).
pub(crate) type LockTable = std::collections::BTreeMap<
    (String, protocol::body::MessageQueue),
    (String, tokio::time::Instant),
>;

impl<D: Disk, T: Transport> Shared<D, T> {
    /// The broker id to register with: 0 when serving writes, else this node's id.
    fn broker_id(&self) -> i64 {
        if self.serving_writes.load(Ordering::Acquire) {
            0
        } else {
            self.ledger.node_id() as i64
        }
    }

    /// Reads the record of a ConsumeQueue unit or message id from the log and checks it.
    pub(crate) fn read_record(
        &self,
        commit_log_offset: u64,
        size: Option<u32>,
    ) -> Result<Vec<u8>, String> {
        let size = match size {
            Some(size) => size as usize,
            None => {
                let head = self
                    .ledger
                    .read_bytes(commit_log_offset, 4)
                    .map_err(|e| e.to_string())?;
                let size = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
                usize::try_from(size)
                    .ok()
                    .filter(|s| {
                        (84..=limits::PULL_BYTES_MAX.max(self.config.max_message_bytes + 64 * 1024))
                            .contains(s)
                    })
                    .ok_or_else(|| format!("no message starts at offset {commit_log_offset}"))?
            }
        };
        let bytes = self
            .ledger
            .read_bytes(commit_log_offset, size)
            .map_err(|e| e.to_string())?;
        let view = RecordView::parse(&bytes)
            .map_err(|e| format!("message at offset {commit_log_offset}: {e}"))?;
        if view.commit_log_offset != commit_log_offset as i64 || !view.body_crc_ok() {
            return Err(format!(
                "message at offset {commit_log_offset} fails its checks"
            ));
        }
        Ok(Vec::from(bytes))
    }

    /// Proposes a topic configuration and waits until it is applied.
    pub async fn create_topic(&self, config: TopicConfig) -> Result<(), String> {
        let committed = self
            .ledger
            .propose(bytes::Bytes::from(store::entry::topic_config(&config)))
            .await
            .map_err(|e| e.to_string())?;
        self.store.wait_applied(committed.index).await;
        self.register_now.notify_one();
        Ok(())
    }

    async fn register_all(&self) {
        let topics = self.store.topics();
        let term = self.ledger.status().term;
        let body = RegisterBrokerBody {
            filter_server_list: Vec::new(),
            topic_config_serialize_wrapper: TopicConfigSerializeWrapper {
                data_version: DataVersion {
                    counter: topics.len() as i64,
                    state_version: term as i64,
                    timestamp: 0,
                },
                topic_config_table: topics,
            },
        };
        let body = body::to_json(&body);
        let header = RegisterBrokerRequestHeader {
            broker_name: self.config.broker_name.clone(),
            broker_addr: self.config.advertised_addr.to_string(),
            cluster_name: self.config.cluster_name.clone(),
            ha_server_addr: self.config.advertised_addr.to_string(),
            broker_id: self.broker_id(),
            heartbeat_timeout_millis: Some(self.config.namesrv_timeout.as_millis() as i64),
            enable_acting_master: Some(false),
            compressed: Some(false),
            body_crc32: Some((crc32(&body) & 0x7FFF_FFFF) as i32),
        };
        // Every name server at once: one that is down must not hold back the others (a new
        // leader's registration is what moves clients to it).
        let registrations = self.config.namesrv_addrs.iter().map(|addr| {
            let request = RemotingCommand::request(request::REGISTER_BROKER, header.to_ext())
                .with_body(body.clone());
            async move {
                match self
                    .namesrv
                    .request(addr, request, limits::REGISTER_TIMEOUT)
                    .await
                {
                    Ok(answer) if answer.code == response::SUCCESS => {
                        if let Ok(header) =
                            protocol::header::RegisterBrokerResponseHeader::from_ext(&answer.ext_fields)
                            && let Some(master) = header.master_addr.filter(|m| !m.is_empty())
                        {
                            *self.registered_master.lock().expect("master lock") = Some(master);
                        }
                    }
                    Ok(answer) => {
                        tracing::warn!(namesrv = %addr, code = answer.code, remark = ?answer.remark, "registration refused")
                    }
                    Err(err) => {
                        // A connection whose request timed out may be dead for good (its peer
                        // gone without a FIN, or frames lost): dial afresh next time.
                        tracing::warn!(namesrv = %addr, cause = %err, "registration failed");
                        self.namesrv.forget(addr).await;
                    }
                }
            }
        });
        futures_util::future::join_all(registrations).await;
    }

    async fn unregister_all(&self) {
        let header = UnRegisterBrokerRequestHeader {
            broker_name: self.config.broker_name.clone(),
            broker_addr: self.config.advertised_addr.to_string(),
            cluster_name: self.config.cluster_name.clone(),
            broker_id: self.broker_id(),
        };
        for addr in &self.config.namesrv_addrs {
            let request = RemotingCommand::request(request::UNREGISTER_BROKER, header.to_ext());
            let _ = self
                .namesrv
                .request(addr, request, limits::UNREGISTER_TIMEOUT)
                .await;
        }
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    // The namesrv checks `crc32(body) & 0x7FFFFFFF` (IEEE CRC-32, as java.util.zip.CRC32).
    crc32fast::hash(bytes)
}

/// A running broker.
pub struct Broker<D: Disk, T: Transport> {
    shared: Arc<Shared<D, T>>,
    server: Server,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl<D: Disk, T: Transport> Broker<D, T> {
    /// Serves clients on `config.listen` for a replica whose `ledger` applies into `store`.
    ///
    /// # Errors
    /// The bind error.
    pub async fn start(
        transport: &T,
        config: BrokerConfig,
        ledger: Arc<Ledger>,
        store: Arc<Store<D>>,
    ) -> std::io::Result<Self> {
        let listener = transport.bind(&config.listen).await?;
        Self::start_on(transport, listener, config, ledger, store)
    }

    /// Serves clients on `listener`, bound beforehand on `config.listen`: whoever picked a free
    /// port keeps it from the pick to the serving, so nothing else can take it in between.
    ///
    /// # Errors
    /// The OS error reading the listener's address.
    pub fn start_on(
        transport: &T,
        listener: T::Listener,
        config: BrokerConfig,
        ledger: Arc<Ledger>,
        store: Arc<Store<D>>,
    ) -> std::io::Result<Self> {
        let (writer_tx, writer_rx) = mpsc::channel(config.write_queue);
        let (offsets_tx, offsets_rx) = mpsc::channel(config.write_queue);
        let (namesrv, _inbound) = Client::new(transport.clone());
        let shared = Arc::new(Shared {
            config: config.clone(),
            roles: ledger.watch_role(),
            ledger,
            store,
            clients: Mutex::new(clients::Clients::default()),
            serving_writes: AtomicBool::new(false),
            writer: writer_tx,
            namesrv,
            register_now: Notify::new(),
            pending_offsets: Mutex::new(Default::default()),
            offsets_tx,
            locks: Mutex::new(LockTable::new()),
            registered_master: Mutex::new(None),
            rng: Mutex::new(match config.seed {
                Some(seed) => rand::SeedableRng::seed_from_u64(seed),
                None => rand::SeedableRng::from_os_rng(),
            }),
            metrics: Arc::new(Metrics::default()),
            handover: Mutex::new(None),
            handover_term: AtomicU64::new(0),
            left_leadership_at: Mutex::new(None),
            master_lookup: tokio::sync::Mutex::new(None),
            scheduler: Mutex::new(schedule::SchedulerReport::default()),
            transaction_checks: Mutex::new(transactions::CheckReport::default()),
            disk_full: AtomicBool::new(false),
            retention: Mutex::new(retention::RetentionState::default()),
            selectors: sql92::SelectorCache::default(),
            clean_now: Notify::new(),
        });
        let processor = Arc::new(processor::Processor {
            shared: shared.clone(),
        });
        let server = Server::serve::<T, _>(listener, processor)?;
        let tasks = vec![
            tokio::spawn(writer::run(shared.clone(), writer_rx)),
            tokio::spawn(writer::run_offsets(shared.clone(), offsets_rx)),
            tokio::spawn(watch_role(shared.clone())),
            tokio::spawn(register_loop(shared.clone())),
            tokio::spawn(expire_clients(shared.clone())),
            tokio::spawn(count_elections(
                shared.ledger.clone(),
                shared.metrics.clone(),
            )),
            tokio::spawn(handover::note_lost_leadership(shared.clone())),
            tokio::spawn(schedule::run(shared.clone())),
            tokio::spawn(transactions::run(shared.clone())),
            tokio::spawn(retention::run(shared.clone())),
        ];
        tracing::info!(addr = %server.local_addr(), broker = %config.broker_name, "broker serving");
        Ok(Broker {
            shared,
            server,
            tasks,
        })
    }

    /// The address clients dial.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Whether this replica leads and takes writes.
    pub fn serving_writes(&self) -> bool {
        self.shared.serving_writes.load(Ordering::Acquire)
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store<D>> {
        &self.shared.store
    }

    /// What this broker counts (requests, bytes, latency, long polls, elections).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// The broker group's name (`brokerName`).
    pub fn broker_name(&self) -> &str {
        &self.shared.config.broker_name
    }

    /// The address registered with the name servers, which clients dial.
    pub fn advertised_addr(&self) -> SocketAddr {
        self.shared.config.advertised_addr
    }

    /// A read-only handle on this broker for status pages; it can outlive the borrow of the
    /// broker (it shares its state, and reports `serving_writes: false` once it shut down).
    pub fn view(&self) -> BrokerView<D, T> {
        BrokerView {
            shared: self.shared.clone(),
        }
    }

    /// A handle that moves this replica's leadership on purpose; it can outlive the borrow of
    /// the broker.
    pub fn leadership(&self) -> Leadership<D, T> {
        Leadership {
            shared: self.shared.clone(),
        }
    }

    /// Stops serving, unregisters from the name servers, checkpoints the store.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        self.shared.serving_writes.store(false, Ordering::Release);
        self.shared.unregister_all().await;
        self.server.shutdown().await;
        if let Err(err) = self.shared.store.checkpoint() {
            tracing::warn!(cause = %err, "checkpoint at shutdown failed");
        }
    }
}

/// A read-only handle on a running broker: its names, whether it takes writes, its topics and
/// queues, its metrics. Cheap to clone.
pub struct BrokerView<D: Disk, T: Transport> {
    shared: Arc<Shared<D, T>>,
}

impl<D: Disk, T: Transport> Clone for BrokerView<D, T> {
    fn clone(&self) -> Self {
        BrokerView {
            shared: self.shared.clone(),
        }
    }
}

/// One queue's range of queue offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct QueueRange {
    /// The queue.
    pub queue_id: i32,
    /// Lowest queue offset still stored.
    pub min_offset: i64,
    /// Queue offset the next message will get (messages stored = max - min).
    pub max_offset: i64,
}

/// A topic's queues as this replica has applied them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TopicQueues {
    /// Topic name.
    pub topic: String,
    /// Its queues, by queue id.
    pub queues: Vec<QueueRange>,
}

/// Scheduled messages on one replica, for `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ScheduledStatus {
    /// Scheduled messages (and cancel markers) not yet delivered or dropped.
    pub pending: u64,
    /// Due time of the last message delivered (epoch ms), if any.
    pub delivered_through_ms: Option<i64>,
    /// When the next pending message is due (epoch ms): exact on the replica that delivers,
    /// the start of the first second holding one elsewhere.
    pub next_due_ms: Option<i64>,
    /// On the replica that delivers: now − the due time of the oldest due message not yet
    /// delivered (0: none is waiting). `None` elsewhere.
    pub delivery_lag_ms: Option<i64>,
}

/// Transactional messages on one replica, for `/status` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TransactionStatus {
    /// Half messages without an outcome yet.
    pub pending: u64,
    /// Half messages stored.
    pub halves: u64,
    /// Committed.
    pub commits: u64,
    /// Rolled back.
    pub rollbacks: u64,
    /// Given up after `transactionCheckMax` checks (moved to `TRANS_CHECK_MAX_TIME_TOPIC`).
    pub given_up: u64,
    /// CHECK_TRANSACTION_STATE requests this replica sent while leading.
    pub checks_sent: u64,
    /// Check passes this replica ran while leading.
    pub check_passes: u64,
}

/// Retention on one replica, for `/status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RetentionStatus {
    /// The first CommitLog position kept (0 before any cut).
    pub first_position: u64,
    /// The CommitLog's end as applied here: `end_position - first_position` is what the
    /// replica holds, and the end's growth over the retention time is what retention keeps.
    pub end_position: u64,
    /// The last entry the log was purged up to (the snapshot point), if any.
    pub purged_through_index: Option<u64>,
    /// CommitLog segments kept (the active one included).
    pub segments: usize,
    /// The disk's used fraction, as the cleaner last read it.
    pub disk_used_ratio: Option<f64>,
    /// Sends are refused: the disk is full.
    pub disk_full: bool,
    /// Clean runs still armed by DELETE_EXPIRED_COMMITLOG.
    pub manual_runs: u32,
    /// Cuts this replica proposed while leading.
    pub purges_proposed: u64,
}

impl<D: Disk, T: Transport> BrokerView<D, T> {
    /// Retention on this replica.
    pub fn retention(&self) -> RetentionStatus {
        let view = self.shared.store.retention();
        let state = self
            .shared
            .retention
            .lock()
            .expect("retention lock")
            .clone();
        let segments = view
            .bases
            .iter()
            .filter(|b| b.position > view.floor)
            .count()
            + 1;
        RetentionStatus {
            first_position: view.floor,
            end_position: self.shared.store.applied_end(),
            purged_through_index: view.purged_through.map(|l| l.index),
            segments,
            disk_used_ratio: state.used_ratio,
            disk_full: self.shared.disk_full.load(Ordering::Acquire),
            manual_runs: state.manual_runs,
            purges_proposed: state.purges_proposed,
        }
    }

    /// What the broker counts.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Transactional messages on this replica: what the log's outcomes did, and the checks this
    /// replica sent while leading.
    pub fn transactions(&self) -> TransactionStatus {
        let counts = self.shared.store.transaction_counts();
        let report = *self.shared.transaction_checks.lock().expect("check report");
        TransactionStatus {
            pending: counts.pending(),
            halves: counts.halves,
            commits: counts.commits,
            rollbacks: counts.rollbacks,
            given_up: counts.discards,
            checks_sent: self
                .shared
                .metrics
                .transaction_checks_sent
                .load(Ordering::Relaxed),
            check_passes: report.passes,
        }
    }

    /// Scheduled messages on this replica: how many wait, and how far delivery has come.
    pub fn scheduled(&self) -> ScheduledStatus {
        let stats = self.shared.store.timer_stats();
        let delivered_through_ms =
            (stats.progress != store::timer::TimerKey::START).then_some(stats.progress.due_ms);
        let report = *self.shared.scheduler.lock().expect("scheduler report");
        let delivering = self.shared.takes_writes();
        let next_due_ms = if delivering && report.next_due_ms.is_some() {
            report.next_due_ms
        } else if stats.pending == 0 {
            None
        } else {
            let first = store::timer::slot_of(stats.progress.due_ms.max(0));
            self.shared
                .store
                .timer_view(first, first - 1)
                .next_slot
                .map(|slot| slot * store::timer::SLOT_MS)
        };
        ScheduledStatus {
            pending: stats.pending,
            delivered_through_ms,
            next_due_ms,
            delivery_lag_ms: delivering.then_some(report.lag_ms),
        }
    }

    /// Whether this replica leads and takes writes.
    pub fn serving_writes(&self) -> bool {
        self.shared.serving_writes.load(Ordering::Acquire)
    }

    /// Why this replica takes no writes now, or `None` when it takes them: `"not leader"`,
    /// `"leader without quorum"` (it leads, but no quorum answered within the lease),
    /// `"leader applying its log"`, `"handing leadership over"` or `"replica stopped"`.
    pub fn write_refusal(&self) -> Option<&'static str> {
        self.shared.write_refusal()
    }

    /// The group's master address as a name server last answered this broker's registration
    /// (`masterAddr`): how a follower learns the leader's client address.
    pub fn registered_master(&self) -> Option<String> {
        self.shared
            .registered_master
            .lock()
            .expect("master lock")
            .clone()
    }

    /// The broker group's name (`brokerName`).
    pub fn broker_name(&self) -> &str {
        &self.shared.config.broker_name
    }

    /// The cluster's name (`brokerClusterName`).
    pub fn cluster_name(&self) -> &str {
        &self.shared.config.cluster_name
    }

    /// The address registered with the name servers, which clients dial.
    pub fn advertised_addr(&self) -> SocketAddr {
        self.shared.config.advertised_addr
    }

    /// Every topic with each queue's queue offset range, by topic name (a topic's queues are
    /// as many as the larger of its read and write queue counts).
    pub fn topic_queues(&self) -> Vec<TopicQueues> {
        let store = &self.shared.store;
        store
            .topics()
            .into_iter()
            .map(|(topic, config)| {
                let queues = config.read_queue_nums.max(config.write_queue_nums).max(0);
                TopicQueues {
                    queues: (0..queues)
                        .map(|queue_id| QueueRange {
                            queue_id,
                            min_offset: store.min_offset(&topic, queue_id),
                            max_offset: store.max_offset(&topic, queue_id),
                        })
                        .collect(),
                    topic,
                }
            })
            .collect()
    }
}

/// Moves leadership on purpose (see [`handover`]). Cheap to clone.
pub struct Leadership<D: Disk, T: Transport> {
    shared: Arc<Shared<D, T>>,
}

impl<D: Disk, T: Transport> Clone for Leadership<D, T> {
    fn clone(&self) -> Self {
        Leadership {
            shared: self.shared.clone(),
        }
    }
}

impl<D: Disk, T: Transport> Leadership<D, T> {
    /// The replica's ledger.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.shared.ledger
    }

    /// Hands this replica's leadership to `to` (sends are held meanwhile) and waits, up to
    /// `timeout`, until this replica sees `to` lead. With `require_caught_up`, a target more
    /// than [`handover::TRANSFER_LAG_ENTRIES_MAX`] entries behind is refused first.
    ///
    /// # Errors
    /// Why leadership did not move to `to` ([`HandoverError`]).
    pub async fn transfer(
        &self,
        to: dledger::NodeId,
        timeout: Duration,
        require_caught_up: bool,
    ) -> Result<Transferred, HandoverError> {
        self.shared
            .transfer_leadership(to, timeout, require_caught_up)
            .await
    }

    /// Waits up to `timeout` until the name servers list another replica as the group's
    /// master, so that sends held here get an answer that sends clients there. Returns its
    /// address.
    pub async fn await_master_elsewhere(&self, timeout: Duration) -> Option<String> {
        self.shared.await_master_elsewhere(timeout).await
    }
}

/// Counts elections: each term higher than any this replica saw before, from the role watch
/// (a restarted replica's first term counts once). A watch keeps only the latest value, so
/// terms that came and went between two looks are not counted.
async fn count_elections(ledger: Arc<Ledger>, metrics: Arc<Metrics>) {
    let mut roles = ledger.watch_role();
    let mut highest = 0;
    loop {
        let term = roles.borrow_and_update().term;
        if term > highest {
            highest = term;
            metrics.record_election();
        }
        if roles.changed().await.is_err() {
            return;
        }
    }
}

/// Follows the replica's role: a new leader first applies its whole log (and makes sure the
/// template topic exists), then takes writes and registers as id 0; losing leadership, or the
/// quorum lease (check-quorum: no quorum answered within the election timeout's upper bound),
/// stops writes at once and registers as a slave, until a quorum answers again.
async fn watch_role<D: Disk, T: Transport>(shared: Arc<Shared<D, T>>) {
    let mut roles = shared.ledger.watch_role();
    let mut leader = None;
    let mut previous: Option<dledger::RoleState> = None;
    loop {
        let state = roles.borrow_and_update().clone();
        if state.leader != leader {
            // The master the name servers named is stale: learn the new one by registering.
            leader = state.leader;
            *shared.registered_master.lock().expect("master lock") = None;
            shared.register_now.notify_one();
        }
        let lost_quorum = state.role == Role::Leader
            && !state.has_quorum
            && previous
                .as_ref()
                .is_some_and(|p| p.leads_with_quorum() && p.term == state.term);
        if lost_quorum {
            shared.metrics.record_quorum_loss();
        }
        previous = Some(state.clone());
        if state.leads_with_quorum() {
            if !shared.serving_writes.load(Ordering::Acquire) {
                // Everything up to our own blank entry must be applied before offsets continue.
                let last = shared.ledger.status().last_log_index.unwrap_or(0);
                tokio::select! {
                    biased;
                    _ = roles.changed() => continue,
                    _ = shared.store.wait_applied(last) => {}
                }
                if shared.ledger.watch_role().borrow().leads_with_quorum() {
                    if shared.config.auto_create_topic && shared.store.topic(TBW102).is_none() {
                        let template = TopicConfig::new(
                            TBW102,
                            shared.config.default_topic_queues,
                            perm::READ | perm::WRITE | perm::INHERIT,
                        );
                        if let Err(err) = shared.create_topic(template).await {
                            tracing::warn!(cause = %err, "cannot create TBW102");
                        }
                    }
                    shared.serving_writes.store(true, Ordering::Release);
                    tracing::info!(term = state.term, "leader applied its log: taking writes");
                    shared.register_now.notify_one();
                }
            }
        } else if shared.serving_writes.swap(false, Ordering::AcqRel) {
            *shared
                .left_leadership_at
                .lock()
                .expect("left leadership at") = Some(tokio::time::Instant::now());
            if state.role == Role::Leader {
                tracing::warn!(
                    term = state.term,
                    "leader without quorum: refusing writes, registering as a slave"
                );
            } else {
                tracing::info!(role = ?state.role, "lost leadership: refusing writes");
            }
            shared.register_now.notify_one();
        }
        if roles.changed().await.is_err() {
            return;
        }
    }
}

async fn register_loop<D: Disk, T: Transport>(shared: Arc<Shared<D, T>>) {
    loop {
        // A replica waiting to be added to its group (or removed from it) serves nothing.
        if shared.ledger.is_member() {
            shared.register_all().await;
        }
        // A follower whose registration named no master (the leader has not registered yet, or
        // just died) asks again soon: the answer is how it learns the leader's client address.
        let masterless = !shared.serving_writes.load(Ordering::Acquire)
            && shared
                .registered_master
                .lock()
                .expect("master lock")
                .is_none();
        let wait = if masterless {
            shared
                .config
                .register_interval
                .min(limits::MASTERLESS_REGISTER_INTERVAL)
        } else {
            shared.config.register_interval
        };
        tokio::select! {
            biased;
            _ = shared.register_now.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn expire_clients<D: Disk, T: Transport>(shared: Arc<Shared<D, T>>) {
    let mut tick = tokio::time::interval(limits::CLIENT_EXPIRY_SCAN);
    loop {
        tick.tick().await;
        let left = {
            let mut clients = shared.clients.lock().expect("clients");
            let left = clients.expire(tokio::time::Instant::now(), shared.config.client_timeout);
            for group in &left {
                clients.notify_changed(group);
            }
            left
        };
        if !left.is_empty() {
            tracing::info!(?left, "silent consumers dropped");
        }
    }
}
