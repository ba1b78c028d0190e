//! A running replica: the API the layers above use.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, ForwardReason, RaftError};
use openraft::{Config, Instant as _, ServerState, SnapshotPolicy};
use tokio::sync::watch;

use crate::commit_log::{AppendHook, CommitLogConfig, RecoveryReport};
use crate::config::LedgerConfig;
use crate::disk::Disk;
use crate::error::{
    MembershipError, ProposeError, ReadError, StartError, StorageError, TransferError,
};
use crate::log_store::{LogShared, LogStore};
use crate::meta;
use crate::network::client::NetworkFactory;
use crate::network::server::{Raft, serve};
use crate::raft_types::{OrStoredMembership, Payload, PeerNode, Runtime};
use crate::record::EntryKind;
use crate::state_machine::{Locate, MembershipSaver, SmAdapter, StateMachine};
use crate::types::{Committed, CommittedEntry, EntryPayload, NodeId, Role, RoleState, Status};
use seams::Transport;

/// Read access to the log and the switches of the test mutants, without the disk type.
trait LogAccess: Send + Sync + 'static {
    fn read(&self, index: u64) -> Result<Option<crate::commit_log::StoredEntry>, StorageError>;
    fn read_at_position(
        &self,
        position: u64,
    ) -> Result<Option<crate::commit_log::StoredEntry>, StorageError>;
    fn read_bytes(&self, position: u64, len: usize) -> Option<Vec<u8>>;
    fn fatal(&self) -> Option<String>;
    fn room(&self) -> &crate::room::Room;
    fn first_index(&self) -> u64;
    fn stop(&self);
    fn check_invariants(&self);
}

impl<D: Disk> LogAccess for LogShared<D> {
    fn read(&self, index: u64) -> Result<Option<crate::commit_log::StoredEntry>, StorageError> {
        LogShared::read(self, index)
    }

    fn read_at_position(
        &self,
        position: u64,
    ) -> Result<Option<crate::commit_log::StoredEntry>, StorageError> {
        LogShared::read_at_position(self, position)
    }

    fn read_bytes(&self, position: u64, len: usize) -> Option<Vec<u8>> {
        LogShared::read_bytes(self, position, len)
    }

    fn fatal(&self) -> Option<String> {
        LogShared::fatal(self)
    }

    fn room(&self) -> &crate::room::Room {
        &self.room
    }

    fn first_index(&self) -> u64 {
        LogShared::first_index(self)
    }

    fn stop(&self) {
        LogShared::stop(self);
    }

    fn check_invariants(&self) {
        self.read_log().check_invariants();
    }
}

impl<D: Disk> Locate for LogShared<D> {
    fn position(&self, index: u64) -> Option<u64> {
        self.locate(index).map(|unit| unit.position)
    }

    fn restart_at(&self, last: crate::types::LogId, next_position: u64) -> std::io::Result<()> {
        LogShared::restart_at(self, last, next_position).map_err(std::io::Error::other)
    }
}

/// A bound Raft listener, made before the group's addresses are known to everyone.
pub struct RaftListener<T: Transport> {
    listener: T::Listener,
    addr: String,
}

impl<T: Transport> RaftListener<T> {
    /// Binds `addr` (port 0 picks a free port).
    ///
    /// # Errors
    /// `Listen` if the address cannot be bound.
    pub async fn bind(transport: &T, addr: &str) -> Result<Self, StartError> {
        let listener = transport
            .bind(addr)
            .await
            .map_err(|source| StartError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        let addr = T::local_addr(&listener)
            .map_err(|source| StartError::Listen {
                addr: addr.to_string(),
                source,
            })?
            .to_string();
        Ok(RaftListener { listener, addr })
    }

    /// The bound address.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

/// One replica of a group: a Raft node over its CommitLog.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<LedgerInner>,
}

struct LedgerInner {
    node_id: NodeId,
    raft: Raft,
    log: Arc<dyn LogAccess>,
    peers: BTreeMap<NodeId, String>,
    seed: u64,
    role: watch::Receiver<RoleState>,
    shutdown: watch::Sender<bool>,
    recovery: RecoveryReport,
    /// The quorum lease: openraft's leader takes proposals only while a quorum acknowledged a
    /// request sent less than this long ago (its `leader_lease`, the election timeout's upper
    /// bound).
    lease: Duration,
    flusher: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    server: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Builds a snapshot at each new snapshot point (see [`spawn_snapshots`]).
    snapshots: tokio::task::JoinHandle<()>,
}

/// How often a leader waiting for its lease retries a proposal.
const LEASE_POLL: Duration = Duration::from_millis(5);

fn openraft_config(config: &LedgerConfig) -> Result<Arc<Config>, StartError> {
    let ms = |d: Duration| d.as_millis() as u64;
    let raft_config = Config {
        cluster_name: "raftmq".into(),
        heartbeat_interval: ms(config.heartbeat_interval),
        election_timeout_min: ms(config.election_timeout_min),
        election_timeout_max: ms(config.election_timeout_max),
        max_payload_entries: crate::limits::REPLICATION_BATCH_ENTRIES_MAX,
        // Snapshots are built when the state machine moves its snapshot point (a retention
        // purge applied on every replica), never by openraft's entry count; the log is then
        // purged right up to the snapshot, since the state machine needs nothing before it.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        enable_pre_vote: Some(true),
        // A replica whose disk was wiped rejoins empty and is caught up from the log.
        allow_log_reversion: Some(true),
        // A leader acknowledges entries that a quorum of *followers* synced before its own sync
        // finished, so a crashed leader can come back missing committed entries. Restored as
        // leader in its old term it would write different entries at those indexes in the same
        // term (found by the simulation; regression seed 1 in simulation/tests/sweep.rs): it
        // must stand for election again.
        enable_leader_restore: Some(false),
        // A leader that lost its quorum goes quiet for this long, then probes for as long, in
        // turn: a group whose followers still receive a cut-off leader's heartbeats (it can send
        // but not hear) then elects a leader that can commit. The least openraft allows: one
        // lease and one election timeout.
        quorum_loss_probe_interval: Some(2 * ms(config.election_timeout_max)),
        ..Default::default()
    };
    let raft_config = raft_config.validate().map_err(|err| StartError::Raft {
        reason: err.to_string(),
    })?;
    Ok(Arc::new(raft_config))
}

fn load_membership<D: Disk>(
    disk: &D,
    path: &std::path::Path,
    applied: Option<crate::types::LogId>,
) -> Result<OrStoredMembership, StorageError> {
    let history: Vec<OrStoredMembership> = meta::load(disk, path)?.unwrap_or_default();
    let Some(applied) = applied else {
        return Ok(OrStoredMembership::default());
    };
    Ok(history
        .into_iter()
        .rev()
        .find(|m| m.log_id().is_some_and(|id| id.index <= applied.index))
        .unwrap_or_default())
}

/// How many past memberships the membership file keeps: enough to find the one in effect at the
/// state machine's checkpoint, which lags at most one change behind.
const MEMBERSHIP_HISTORY: usize = 4;

fn membership_saver<D: Disk>(disk: D) -> MembershipSaver {
    Arc::new(move |path, membership| {
        let mut history: Vec<OrStoredMembership> = meta::load(&disk, path)?.unwrap_or_default();
        history.retain(|m| m.log_id() < membership.log_id());
        history.push(membership.clone());
        let skip = history.len().saturating_sub(MEMBERSHIP_HISTORY);
        let history: Vec<_> = history.into_iter().skip(skip).collect();
        meta::store(&disk, path, &history)?;
        Ok(())
    })
}

impl Ledger {
    /// Opens the replica's files (recovering them), starts Raft and the network, and joins the
    /// group. The group forms once a quorum of the configured peers runs.
    ///
    /// # Errors
    /// Invalid configuration, storage that cannot be recovered, Raft start failures.
    pub async fn start<D: Disk, T: Transport>(
        config: LedgerConfig,
        disk: D,
        transport: T,
        listener: RaftListener<T>,
        state_machine: Box<dyn StateMachine>,
        hook: Option<Arc<dyn AppendHook>>,
    ) -> Result<Ledger, StartError> {
        config.validate()?;
        let seed = config.seed.unwrap_or_else(rand::random);
        Runtime::scope(
            seed,
            Self::start_scoped(config, disk, transport, listener, state_machine, hook, seed),
        )
        .await
    }

    async fn start_scoped<D: Disk, T: Transport>(
        config: LedgerConfig,
        disk: D,
        transport: T,
        listener: RaftListener<T>,
        state_machine: Box<dyn StateMachine>,
        hook: Option<Arc<dyn AppendHook>>,
        seed: u64,
    ) -> Result<Ledger, StartError> {
        let log_config = CommitLogConfig {
            dir: config.data_dir.clone(),
            segment_bytes: config.segment_bytes,
            index_units_per_file: config.index_units_per_file,
            entry_body_bytes_max: config.entry_body_bytes_max,
            #[cfg(feature = "mutants")]
            skip_recovery_crc: config.mutants.skip_recovery_crc,
        };
        let flush = config.flush;
        let open_disk = disk.clone();
        let (shared, recovery) = disk
            .run_blocking(move || LogShared::open(open_disk, log_config, flush, hook))
            .await?;
        let flusher = tokio::spawn(Runtime::scope(seed, shared.clone().run_flusher()));
        let mut state_machine = state_machine;
        discard_state_past_the_log(&shared, state_machine.as_mut())?;

        let membership_path = config.data_dir.join("meta").join("membership");
        let membership = load_membership(&disk, &membership_path, state_machine.last_applied())?;
        let sm = SmAdapter::new(
            state_machine,
            membership,
            shared.clone(),
            membership_path,
            membership_saver(disk.clone()),
        );
        #[cfg(feature = "mutants")]
        shared.switch_on(&config.mutants, &sm);
        let snapshot_points = sm.snapshot_points();
        let raft = Raft::new(
            config.node_id,
            openraft_config(&config)?,
            NetworkFactory::new(transport.clone(), config.rpc_timeout),
            LogStore(shared.clone()),
            sm,
        )
        .await
        .map_err(|err| StartError::Raft {
            reason: err.to_string(),
        })?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let server = tokio::spawn(Runtime::scope(
            seed,
            serve::<T>(listener.listener, raft.clone(), shutdown_rx, seed),
        ));

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|err| StartError::Raft {
                reason: err.to_string(),
            })?;
        // A new replica (one a running group does not count among its members) waits to be
        // added; a member that lost its log starts as before, with the starting membership
        // (identical on every replica, refused once a log exists).
        let mut joining = false;
        if !initialized {
            for (id, addr) in &config.peers {
                if *id == config.node_id {
                    continue;
                }
                let answer =
                    crate::network::client::probe(&transport, addr, config.rpc_timeout).await;
                if let Some(Some(members)) = answer
                    && !members.contains(&config.node_id)
                {
                    joining = true;
                    tracing::info!(
                        peer = id,
                        ?members,
                        "not a member of the running group: waiting to be added"
                    );
                    break;
                }
            }
        }
        if !initialized && !joining {
            let members: BTreeMap<NodeId, PeerNode> = config
                .peers
                .iter()
                .map(|(id, addr)| (*id, PeerNode { addr: addr.clone() }))
                .collect();
            // Every replica initializes with the same membership; openraft accepts the identical
            // first entry from each and refuses it once a log exists.
            if let Err(err) = raft.initialize(members).await {
                tracing::debug!(cause = %err, "initialize refused");
            }
        }

        let lease = config.election_timeout_max;
        #[cfg(feature = "mutants")]
        let ignore_quorum_loss = config.mutants.ignore_quorum_loss;
        #[cfg(not(feature = "mutants"))]
        let ignore_quorum_loss = false;
        let role = spawn_role_watch(&raft, seed, lease, ignore_quorum_loss);
        let snapshots = spawn_snapshots(&raft, seed, snapshot_points);
        tracing::info!(node_id = config.node_id, seed, "replica started");
        Ok(Ledger {
            inner: Arc::new(LedgerInner {
                node_id: config.node_id,
                raft,
                log: shared,
                peers: config.peers,
                seed,
                role,
                shutdown,
                recovery,
                lease,
                flusher: std::sync::Mutex::new(Some(flusher)),
                server: std::sync::Mutex::new(Some(server)),
                snapshots,
            }),
        })
    }

    fn scope<F: std::future::Future>(
        &self,
        fut: F,
    ) -> impl std::future::Future<Output = F::Output> {
        Runtime::scope(self.inner.seed, fut)
    }

    /// This replica's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// What recovery found when this replica started.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// Proposes `data` as one entry. Returns once the entry is committed (on a quorum, synced
    /// under `SYNC_FLUSH`) and applied on this replica.
    ///
    /// # Errors
    /// `NotLeader` (with the leader this replica knows), `TooLarge`, `Stopped`.
    pub async fn propose(&self, data: bytes::Bytes) -> Result<Committed, ProposeError> {
        // A leader accepts writes only while its quorum lease is valid: a new leader gets it with
        // its first quorum acknowledgement, a moment after winning. Wait that out (bounded by one
        // election timeout) instead of bouncing the client.
        let deadline = tokio::time::Instant::now() + self.inner.lease;
        loop {
            let result = self
                .scope(self.inner.raft.client_write(Payload(data.clone())))
                .await;
            match result {
                Ok(response) => {
                    return Ok(Committed {
                        index: response.log_id.index,
                        term: response.log_id.leader_id.term,
                        position: response.data.position,
                    });
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                    let lease_pending = forward.reason == ForwardReason::LeaseExpired
                        && self.status().role == Role::Leader
                        && tokio::time::Instant::now() < deadline;
                    if lease_pending {
                        tokio::time::sleep(LEASE_POLL).await;
                        continue;
                    }
                    return Err(ProposeError::NotLeader {
                        leader: forward.leader_id,
                        leader_addr: forward.leader_node.map(|n| n.addr),
                    });
                }
                Err(err) => {
                    return Err(ProposeError::Stopped {
                        reason: self.stop_reason(err.to_string()),
                    });
                }
            }
        }
    }

    /// Asserts the invariants of this replica's CommitLog (see
    /// [`crate::CommitLog::check_invariants`]); tests and the simulation call it.
    pub fn check_invariants(&self) {
        self.inner.log.check_invariants();
    }

    /// The storage failure that stopped this replica (a failed sync or write), if any: it
    /// then takes no more entries and must be restarted once the disk is fixed.
    pub fn fatal(&self) -> Option<String> {
        self.inner.log.fatal()
    }

    /// Whether this replica is waiting for disk space: its log's disk is full (or within the
    /// reserve the store needs), so it takes no part until space returns, then goes on by itself.
    pub fn waiting_for_space(&self) -> bool {
        self.inner.log.room().waiting()
    }

    /// Whether a full disk stopped this replica (a bug: it must wait for space instead; the
    /// simulation checks this).
    pub fn stopped_on_full_disk(&self) -> bool {
        self.inner.log.room().stopped()
    }

    /// Times this replica began waiting for disk space since it started.
    pub fn space_waits(&self) -> u64 {
        self.inner.log.room().waits()
    }

    fn stop_reason(&self, fallback: String) -> String {
        self.inner.log.fatal().unwrap_or(fallback)
    }

    /// Reads committed entry `index` from this replica's log.
    ///
    /// # Errors
    /// `NotCommitted` past this replica's committed index, `Purged`, storage errors.
    pub fn read(&self, index: u64) -> Result<CommittedEntry, ReadError> {
        let committed = self.committed_index();
        if committed.is_none_or(|c| index > c) {
            return Err(ReadError::NotCommitted { index, committed });
        }
        match self.inner.log.read(index)? {
            Some(stored) => Ok(to_committed(stored)),
            None => Err(ReadError::Purged {
                index,
                first: self.inner.log.first_index(),
            }),
        }
    }

    /// Reads entry `index` of this replica's log whether committed or not, for checkers and
    /// tools that compare logs. Layers above read committed entries with [`Ledger::read`].
    ///
    /// # Errors
    /// Storage errors.
    pub fn read_any(&self, index: u64) -> Result<Option<CommittedEntry>, ReadError> {
        Ok(self.inner.log.read(index)?.map(to_committed))
    }

    /// Reads the committed entry that starts at byte `position`.
    ///
    /// # Errors
    /// `NoEntryAtPosition`, `NotCommitted`, storage errors.
    pub fn read_at_position(&self, position: u64) -> Result<CommittedEntry, ReadError> {
        let stored = self
            .inner
            .log
            .read_at_position(position)?
            .ok_or(ReadError::NoEntryAtPosition { position })?;
        let committed = self.committed_index();
        if committed.is_none_or(|c| stored.header.index > c) {
            return Err(ReadError::NotCommitted {
                index: stored.header.index,
                committed,
            });
        }
        Ok(to_committed(stored))
    }

    /// Copies `len` bytes at global `position` of the log, all inside one entry's body. For the
    /// layer above to read one record of an entry it has applied: nothing checks here that the
    /// bytes are committed, and no CRC is verified (the record carries its own).
    ///
    /// # Errors
    /// [`ReadError::NoEntryAtPosition`] if the range is not written or crosses a segment.
    pub fn read_bytes(&self, position: u64, len: usize) -> Result<bytes::Bytes, ReadError> {
        self.inner
            .log
            .read_bytes(position, len)
            .map(bytes::Bytes::from)
            .ok_or(ReadError::NoEntryAtPosition { position })
    }

    fn committed_index(&self) -> Option<u64> {
        self.inner
            .raft
            .metrics()
            .borrow_watched()
            .local_committed
            .map(|c| c.index)
    }

    /// Watches this replica's role, term and known leader.
    pub fn watch_role(&self) -> watch::Receiver<RoleState> {
        self.inner.role.clone()
    }

    /// The replica's current state.
    pub fn status(&self) -> Status {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        let acked_age = metrics.last_quorum_acked.as_ref().map(|at| at.elapsed());
        let matched = metrics
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != self.inner.node_id)
                    .map(|(id, log_id)| (*id, log_id.as_ref().map(|l| l.index)))
                    .collect()
            })
            .unwrap_or_default();
        Status {
            node_id: metrics.id,
            role: role_of(metrics.state),
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_log_index: metrics.last_log_index,
            committed: metrics.local_committed.map(|c| c.index),
            applied: metrics.last_applied.map(|c| c.index),
            purged: metrics.purged.map(|c| c.index),
            matched,
            // As the role watch last saw it (it runs on the runtime's clock, and wakes when the
            // lease runs out): the same answer the layers above act on.
            has_quorum: self.inner.role.borrow().has_quorum,
            quorum_acked_ms_ago: acked_age
                .map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// The Raft address of a member (as the log's membership has it), or of a starting peer.
    pub fn peer_addr(&self, node: NodeId) -> Option<String> {
        let members = self.members();
        members
            .voters
            .get(&node)
            .or_else(|| members.learners.get(&node))
            .cloned()
            .or_else(|| self.inner.peers.get(&node).cloned())
    }

    /// Asks the leader (this replica) to hand leadership to `to`. Returns once the request is
    /// sent; watch the role to see it happen.
    ///
    /// # Errors
    /// `NotLeader`, `UnknownTarget`, `Stopped`.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), TransferError> {
        if !self.members().voters.contains_key(&to) {
            return Err(TransferError::UnknownTarget { target: to });
        }
        let status = self.status();
        if status.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader: status.leader,
            });
        }
        self.scope(self.inner.raft.trigger().transfer_leader(to))
            .await
            .map_err(|err| TransferError::Stopped {
                reason: err.to_string(),
            })
    }

    /// Starts an election on this replica now (tests and tools).
    ///
    /// # Errors
    /// `Stopped`.
    pub async fn trigger_election(&self) -> Result<(), TransferError> {
        self.scope(self.inner.raft.trigger().elect(true))
            .await
            .map_err(|err| TransferError::Stopped {
                reason: err.to_string(),
            })
    }

    /// Voters of the group.
    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.inner.raft.voter_ids().collect()
    }

    /// The group's members as this replica's log has them: `dLegerPeers` is only the starting
    /// membership, the log's wins after that.
    pub fn members(&self) -> crate::types::Members {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut members = crate::types::Members::default();
        for (id, node) in membership.nodes() {
            if voters.contains(id) {
                members.voters.insert(*id, node.addr.clone());
            } else {
                members.learners.insert(*id, node.addr.clone());
            }
        }
        members
    }

    /// Whether this replica is in the group's membership (voter or learner). A replica started
    /// to join an existing group is not, until the leader adds it.
    pub fn is_member(&self) -> bool {
        let members = self.members();
        members.voters.contains_key(&self.inner.node_id)
            || members.learners.contains_key(&self.inner.node_id)
    }

    fn require_leader(&self) -> Result<(), MembershipError> {
        let status = self.status();
        if status.role == Role::Leader {
            Ok(())
        } else {
            Err(MembershipError::NotLeader {
                leader: status.leader,
            })
        }
    }

    /// Adds replica `node` at Raft address `addr`: as a learner first, then, once it caught up
    /// with this leader's log (within `timeout`), as a voter. A replica that does not catch up
    /// in time is taken out again and the membership is as before.
    ///
    /// # Errors
    /// `NotLeader`, `AlreadyMember`, `NotCaughtUp`, `Refused`.
    pub async fn add_replica(
        &self,
        node: NodeId,
        addr: &str,
        timeout: Duration,
    ) -> Result<(), MembershipError> {
        self.require_leader()?;
        let members = self.members();
        if members.voters.contains_key(&node) || members.learners.contains_key(&node) {
            return Err(MembershipError::AlreadyMember { node });
        }
        let refused = |err: &dyn std::fmt::Display| MembershipError::Refused {
            reason: err.to_string(),
        };
        let raft = &self.inner.raft;
        let peer = PeerNode {
            addr: addr.to_string(),
        };
        self.scope(raft.add_learner(node, peer, false))
            .await
            .map_err(|e| refused(&e))?;
        let target = self.status().last_log_index;
        let caught_up = async {
            let mut metrics = raft.metrics();
            loop {
                let matched = metrics
                    .borrow_watched()
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&node).cloned())
                    .flatten()
                    .map(|l| l.index);
                if matched >= target {
                    return true;
                }
                if metrics.changed().await.is_err() {
                    return false;
                }
            }
        };
        let waited = tokio::time::Instant::now();
        if !matches!(tokio::time::timeout(timeout, caught_up).await, Ok(true)) {
            let removal = openraft::ChangeMembers::RemoveNodes(BTreeSet::from([node]));
            if let Err(err) = self.scope(raft.change_membership(removal, false)).await {
                tracing::warn!(node, cause = %err, "taking out a learner that did not catch up");
            }
            return Err(MembershipError::NotCaughtUp {
                node,
                addr: addr.to_string(),
                waited_ms: waited.elapsed().as_millis() as u64,
            });
        }
        let promote = openraft::ChangeMembers::AddVoterIds(BTreeSet::from([node]));
        self.scope(raft.change_membership(promote, false))
            .await
            .map_err(|e| refused(&e))?;
        tracing::info!(node, addr, "replica added");
        Ok(())
    }

    /// Removes replica `node` (voter or learner) from the group. The leader removes others; to
    /// remove itself it hands leadership over first (the caller's part).
    ///
    /// # Errors
    /// `NotLeader`, `NotMember`, `Refused` (the leader itself, or the last voter).
    pub async fn remove_replica(&self, node: NodeId) -> Result<(), MembershipError> {
        self.require_leader()?;
        let members = self.members();
        let change = if members.voters.contains_key(&node) {
            if node == self.inner.node_id {
                return Err(MembershipError::Refused {
                    reason: format!("node {node} leads: hand leadership over first"),
                });
            }
            if members.voters.len() == 1 {
                return Err(MembershipError::Refused {
                    reason: "the last voter cannot be removed".into(),
                });
            }
            openraft::ChangeMembers::RemoveVoters(BTreeSet::from([node]))
        } else if members.learners.contains_key(&node) {
            openraft::ChangeMembers::RemoveNodes(BTreeSet::from([node]))
        } else {
            return Err(MembershipError::NotMember { node });
        };
        self.scope(self.inner.raft.change_membership(change, false))
            .await
            .map_err(|e| MembershipError::Refused {
                reason: e.to_string(),
            })?;
        tracing::info!(node, "replica removed");
        Ok(())
    }

    /// Stops Raft, the network and the flusher (after a last sync).
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true); // No receiver left means the server already ended.
        self.inner.snapshots.abort();
        // An append waiting for space holds openraft's core, which would never see the shutdown.
        self.inner.log.room().abandon();
        if let Err(err) = self.scope(self.inner.raft.shutdown()).await {
            tracing::warn!(cause = %err, "raft shutdown");
        }
        self.inner.log.stop();
        // Wait for the last sync and for the listener to close, so the files and the port are
        // free when this returns.
        let tasks = [&self.inner.flusher, &self.inner.server]
            .map(|task| task.lock().expect("task handle lock").take());
        for task in tasks.into_iter().flatten() {
            if let Err(err) = task.await {
                tracing::warn!(cause = %err, "task ended abnormally");
            }
        }
    }
}

fn to_committed(stored: crate::commit_log::StoredEntry) -> CommittedEntry {
    let h = stored.header;
    let payload = match h.kind {
        EntryKind::Normal => EntryPayload::Data(stored.body),
        EntryKind::Blank => EntryPayload::Blank,
        EntryKind::Membership => EntryPayload::Membership,
    };
    CommittedEntry {
        index: h.index,
        term: h.term,
        position: h.position,
        payload,
    }
}

fn role_of(state: ServerState) -> Role {
    match state {
        ServerState::Leader => Role::Leader,
        ServerState::Follower => Role::Follower,
        ServerState::Candidate => Role::Candidate,
        ServerState::Learner => Role::Learner,
        ServerState::Shutdown => Role::Shutdown,
    }
}

/// How long the snapshot task waits for openraft to report a snapshot it asked for before it
/// asks again (a request made while another snapshot was building is dropped).
const SNAPSHOT_RETRY: Duration = Duration::from_secs(1);

/// Builds a snapshot whenever the state machine names a new snapshot point; openraft then purges
/// the log up to it (`max_in_snapshot_log_to_keep` is 0). Every replica does this when it
/// applies the entry that moved the point, so every replica purges the same prefix.
fn spawn_snapshots(
    raft: &Raft,
    seed: u64,
    mut points: watch::Receiver<Option<crate::types::LogId>>,
) -> tokio::task::JoinHandle<()> {
    let raft = raft.clone();
    tokio::spawn(Runtime::scope(seed, async move {
        loop {
            let point = *points.borrow_and_update();
            if let Some(point) = point {
                let target = crate::raft_types::from_log_id(point);
                let mut metrics = raft.metrics();
                let built = |m: &openraft::RaftMetrics<crate::raft_types::TypeConfig>| {
                    m.snapshot.as_ref() >= Some(&target)
                };
                while !built(&metrics.borrow_watched()) {
                    if raft.trigger().snapshot().await.is_err() {
                        return; // Raft stopped.
                    }
                    let deadline = tokio::time::Instant::now() + SNAPSHOT_RETRY;
                    loop {
                        tokio::select! {
                            biased;
                            changed = metrics.changed() => if changed.is_err() {
                                return; // Raft stopped.
                            },
                            () = tokio::time::sleep_until(deadline) => {
                                tracing::info!(?point, "snapshot not built yet: asking again");
                                break;
                            }
                        }
                        if built(&metrics.borrow_watched()) {
                            break;
                        }
                    }
                }
            }
            if points.changed().await.is_err() {
                return;
            }
        }
    }))
}

/// A leader's quorum lease, as openraft's metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QuorumLease {
    /// The replica leads and a quorum acknowledged a request sent within the lease.
    holds: bool,
    /// While it holds on a group of more than one voter: how long until it runs out.
    left: Option<Duration>,
}

fn quorum_lease(
    m: &openraft::RaftMetrics<crate::raft_types::TypeConfig>,
    lease: Duration,
    ignore_loss: bool,
) -> QuorumLease {
    if m.state != ServerState::Leader {
        return QuorumLease {
            holds: false,
            left: None,
        };
    }
    // Looked at on every metrics change: read the voter sets in place (`voter_ids` collects).
    let alone = m
        .membership_config
        .membership()
        .get_joint_config()
        .iter()
        .all(|voters| voters.len() == 1 && voters.contains(&m.id));
    if alone {
        return QuorumLease {
            holds: true,
            left: None,
        };
    }
    let left = m
        .last_quorum_acked
        .as_ref()
        .and_then(|at| lease.checked_sub(at.elapsed()))
        .filter(|left| !left.is_zero());
    QuorumLease {
        holds: left.is_some() || ignore_loss,
        left,
    }
}

/// Publishes the replica's role, term, leader and quorum lease whenever one of them changes.
/// openraft's metrics change on every acknowledgement, but nothing changes when the
/// acknowledgements stop: a timer wakes the watch when the lease would run out.
fn spawn_role_watch(
    raft: &Raft,
    seed: u64,
    lease: Duration,
    ignore_quorum_loss: bool,
) -> watch::Receiver<RoleState> {
    let mut metrics = raft.metrics();
    let current = move |m: &openraft::RaftMetrics<crate::raft_types::TypeConfig>| {
        let quorum = quorum_lease(m, lease, ignore_quorum_loss);
        let state = RoleState {
            role: role_of(m.state),
            term: m.current_term,
            leader: m.current_leader,
            has_quorum: quorum.holds,
        };
        (state, quorum.left)
    };
    let (initial, _) = current(&metrics.borrow_watched());
    let (tx, rx) = watch::channel(initial);
    tokio::spawn(Runtime::scope(seed, async move {
        let mut runs_out: Option<tokio::time::Instant> = None;
        // The term in which this replica, leading, lost its quorum (for the log).
        let mut lost_in: Option<u64> = None;
        loop {
            let expiry = async {
                match runs_out {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                changed = metrics.changed() => if changed.is_err() {
                    tx.send_modify(|r| {
                        r.role = Role::Shutdown;
                        r.has_quorum = false;
                    });
                    return;
                },
                () = expiry => {}
            }
            let (next, left) = current(&metrics.borrow_watched());
            // A moment past the end, so the look after waking sees the lease gone.
            runs_out = left.map(|left| tokio::time::Instant::now() + left + LEASE_END_SLACK);
            let previous = tx.borrow().clone();
            if previous.leads_with_quorum() && next.role == Role::Leader && !next.has_quorum {
                tracing::warn!(
                    term = next.term,
                    lease_ms = lease.as_millis() as u64,
                    "leader without quorum: no quorum answered within the lease"
                );
                lost_in = Some(next.term);
            } else if next.leads_with_quorum() && lost_in == Some(next.term) {
                tracing::info!(term = next.term, "leader heard from a quorum again");
                lost_in = None;
            }
            tx.send_if_modified(|r| {
                if *r == next {
                    false
                } else {
                    *r = next;
                    true
                }
            });
        }
    }));
    rx
}

/// How long after a lease's computed end the role watch looks again.
const LEASE_END_SLACK: Duration = Duration::from_millis(1);

/// Makes the state machine forget what it applied if that reaches past the recovered log, or
/// names an entry the log holds with another term: the state was built from entries this
/// replica had not synced, which a power loss took.
fn discard_state_past_the_log<D: Disk>(
    log: &LogShared<D>,
    state_machine: &mut dyn StateMachine,
) -> Result<(), StartError> {
    let Some(applied) = state_machine.last_applied() else {
        return Ok(());
    };
    let last = log.last();
    let held = last.is_some_and(|last| applied.index <= last.index)
        && log
            .locate(applied.index)
            .is_none_or(|unit| unit.term == applied.term);
    if held {
        return Ok(());
    }
    tracing::warn!(
        applied = ?applied,
        log_last = ?last,
        "the state machine applied entries the log lost: rebuilding it from the log"
    );
    state_machine.discard().map_err(|err| StartError::Raft {
        reason: format!("discarding the state past the log: {err}"),
    })?;
    assert_eq!(
        state_machine.last_applied(),
        state_machine.snapshot_point(),
        "a discarded state machine is back at its snapshot point"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::commit_log::NewEntry;
    use crate::config::FlushPolicy;
    use crate::disk::MemDisk;
    use crate::state_machine::ApplyError;
    use crate::types::LogId;

    /// A state machine that claims `applied` and counts discards.
    struct Claims {
        applied: Option<LogId>,
        discards: usize,
    }

    impl StateMachine for Claims {
        fn apply(&mut self, _: &CommittedEntry) -> Result<(), ApplyError> {
            Ok(())
        }
        fn last_applied(&self) -> Option<LogId> {
            self.applied
        }
        fn snapshot(&mut self) -> Option<crate::types::Snapshot> {
            None
        }
        fn restore(&mut self, _: &crate::types::Snapshot) -> Result<(), ApplyError> {
            Ok(())
        }
        fn discard(&mut self) -> Result<(), ApplyError> {
            self.applied = None;
            self.discards += 1;
            Ok(())
        }
    }

    /// A log holding entries 1..=5 of term 2.
    fn log() -> Arc<LogShared<MemDisk>> {
        let config = CommitLogConfig {
            dir: PathBuf::from("/ledger"),
            segment_bytes: 1 << 16,
            index_units_per_file: 64,
            entry_body_bytes_max: 1024,
            #[cfg(feature = "mutants")]
            skip_recovery_crc: false,
        };
        let (shared, _) = LogShared::open(MemDisk::new(), config, FlushPolicy::Sync, None).unwrap();
        shared
            .write_log()
            .append((1..=5).map(|index| NewEntry {
                log_id: LogId { term: 2, index },
                kind: EntryKind::Normal,
                body: b"x",
            }))
            .unwrap();
        shared
    }

    /// What the log holds is kept; a state past the log's end, or at an index the log holds
    /// with another term, is discarded (the broker simulation found a store that had applied
    /// entries a power cut took from its log, with the next entries written over their place).
    #[test]
    fn state_past_the_recovered_log_is_discarded() {
        let log = log();
        for (applied, discarded) in [
            (None, false),
            (Some(LogId { term: 2, index: 5 }), false),
            (Some(LogId { term: 2, index: 3 }), false),
            (Some(LogId { term: 2, index: 6 }), true),
            (Some(LogId { term: 1, index: 4 }), true),
        ] {
            let mut machine = Claims {
                applied,
                discards: 0,
            };
            discard_state_past_the_log(&log, &mut machine).unwrap();
            assert_eq!(machine.discards, usize::from(discarded), "{applied:?}");
            assert_eq!(machine.applied, if discarded { None } else { applied });
        }
    }
}
