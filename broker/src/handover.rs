//! Moving leadership on purpose: an admin's RAFTMQ_TRANSFER_LEADER request, a leader that is
//! being stopped, a replica named by `preferredLeaderId` that has caught up. And holding sends
//! while leadership moves, so that a client's retry finds the new master instead of failing.
//!
//! A transfer runs in three steps. The leader stops taking writes (sends are held, see below)
//! and waits, briefly, until the target has matched its whole log: openraft's target only
//! starts its election if its log is at least the leader's at the moment the request arrives,
//! and a leader under load always has entries in flight. Then it asks Raft to transfer (from
//! here on openraft refuses proposals and sends no heartbeats), and repeats the request while
//! it still leads and the target has caught up, until the target leads or the time is up.
//!
//! Sends reaching a replica while leadership moves (a leader handing over or still applying its
//! log, or a replica that led less than [`HOLD_AFTER_LEADING`] ago) are held up to
//! [`SEND_HOLD_MAX`]: until this replica takes writes (the send goes on), or until the name
//! servers list another replica as the master (the send is refused as "not master", naming it,
//! and the client's route refresh then finds that master). Refused at once, a client's retries
//! would all land in the moment between the old master refusing and the new one registering,
//! and fail. A replica that has not led lately refuses at once, as before: clients only reach
//! it with a stale route, and holding there would only slow them down.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dledger::{Disk, NodeId, Role, Status};
use protocol::RemotingCommand;
use protocol::body::{self, ClusterInfo};
use protocol::code::{request, response};
use remoting::Transport;
use tokio::time::Instant;

use crate::Shared;

/// A follower further behind the leader than this many entries is catching up (a restarted
/// replica), not a target: transferring to it would leave the group without a leader that takes
/// writes until it has copied the difference. A healthy follower trails by the entries in
/// flight: the broker's writer keeps at most 64 proposals outstanding, plus consumer offsets
/// and topic changes, so twice that is room enough.
pub const TRANSFER_LAG_ENTRIES_MAX: u64 = 128;

/// Longest a leader, with sends held, waits for the target to match its whole log before it
/// asks Raft to transfer anyway. Replicating what is in flight takes milliseconds.
const DRAIN_MAX: Duration = Duration::from_millis(500);

/// How often a transfer under way looks at the replica's state.
const TRANSFER_POLL: Duration = Duration::from_millis(5);

/// How often a leader asks Raft again while its caught-up target has not taken over (a target
/// that is down would otherwise be asked every poll until the deadline).
const TRANSFER_REPEAT: Duration = Duration::from_millis(50);

/// Longest a send is held at a replica that does not take writes. A normal handover takes tens
/// of milliseconds and an election a few hundred; RocketMQ clients give a whole send 3 s,
/// retries included, so a held send must leave them time to retry elsewhere.
pub const SEND_HOLD_MAX: Duration = Duration::from_secs(1);

/// For this long after a replica stopped leading (or began handing over), sends reaching it are
/// held: clients keep sending to the master of their cached route until a send fails, and the
/// new master may take a while to be listed after an election.
pub const HOLD_AFTER_LEADING: Duration = Duration::from_secs(10);

/// How often a held send looks again.
const SEND_HOLD_POLL: Duration = Duration::from_millis(10);

/// Held sends share one name-server lookup of the master for this long.
const MASTER_LOOKUP_TTL: Duration = Duration::from_millis(20);

/// Deadline of one name-server lookup of the master.
const MASTER_LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

const _: () = assert!(MASTER_LOOKUP_TTL.as_millis() < SEND_HOLD_MAX.as_millis());

/// DLedger's name of raftmq node `node`: `n0` is node 1.
pub fn dledger_id(node: NodeId) -> String {
    format!("n{}", node.saturating_sub(1))
}

/// `node 2 (n1)`.
pub fn describe(node: NodeId) -> String {
    format!("node {node} ({})", dledger_id(node))
}

/// Parses a target node: a DLedger id `nK` (node K + 1) or a raftmq node id `N` (1 or more).
///
/// # Errors
/// Anything else, with what was expected.
pub fn parse_node(text: &str) -> Result<NodeId, String> {
    let digits_only = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let text = text.trim();
    if let Some(k) = text.strip_prefix('n') {
        if digits_only(k)
            && let Some(node) = k.parse::<NodeId>().ok().and_then(|k| k.checked_add(1))
        {
            return Ok(node);
        }
    } else if digits_only(text)
        && let Ok(node) = text.parse::<NodeId>()
    {
        if node == 0 {
            return Err(
                "node ids start at 1 (n0 is node 1): give n0, n1, ... or 1, 2, ...".to_string(),
            );
        }
        return Ok(node);
    }
    Err(format!(
        "{text:?} is not a node: give a DLedger id (n0, n1, ...) or a node id (1, 2, ...)"
    ))
}

/// A transfer that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transferred {
    /// The replica that led (this one).
    pub from: NodeId,
    /// The replica that leads now.
    pub to: NodeId,
    /// Its term.
    pub term: u64,
    /// From the request to this replica seeing the target lead.
    pub elapsed: Duration,
}

/// Why leadership did not move to the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoverError {
    /// This replica does not lead.
    NotLeader {
        /// This replica.
        node: NodeId,
        /// Its role.
        role: Role,
        /// Its term.
        term: u64,
        /// The leader it knows.
        leader: Option<NodeId>,
        /// The master's client address as the name servers list it, when they agree.
        leader_addr: Option<String>,
    },
    /// The target is not a voter of the group.
    UnknownTarget {
        /// The asked-for node.
        target: NodeId,
        /// The group's voters.
        members: Vec<NodeId>,
    },
    /// The target is this replica, the leader already.
    AlreadyLeads {
        /// The target.
        target: NodeId,
        /// The current term.
        term: u64,
    },
    /// The target trails the leader by more than [`TRANSFER_LAG_ENTRIES_MAX`] entries, or has
    /// not matched anything (it is down, or just started).
    NotCaughtUp {
        /// The target.
        target: NodeId,
        /// Its matched index.
        matched: Option<u64>,
        /// The leader's last index.
        last: u64,
    },
    /// Another transfer is under way in this term.
    InProgress {
        /// Its target.
        to: NodeId,
    },
    /// Another replica than the target won the election that followed.
    Elsewhere {
        /// The target.
        to: NodeId,
        /// Who leads now.
        leader: NodeId,
    },
    /// The target did not take over in time.
    TimedOut {
        /// The target.
        to: NodeId,
        /// How long was waited.
        after: Duration,
        /// The leader this replica knows now.
        leader: Option<NodeId>,
    },
    /// The replica stopped.
    Stopped {
        /// Why.
        reason: String,
    },
}

fn members_text(members: &[NodeId]) -> String {
    members
        .iter()
        .map(|m| describe(*m))
        .collect::<Vec<_>>()
        .join(", ")
}

fn leader_text(leader: Option<NodeId>, addr: Option<&str>) -> String {
    match (leader, addr) {
        (Some(l), Some(a)) => format!("{} at {a}", describe(l)),
        (Some(l), None) => describe(l),
        (None, _) => "unknown (an election may be under way)".to_string(),
    }
}

impl fmt::Display for HandoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandoverError::NotLeader {
                node,
                role,
                term,
                leader,
                leader_addr,
            } => write!(
                f,
                "not the leader: {} is {role:?} in term {term}; the leader is {}",
                describe(*node),
                leader_text(*leader, leader_addr.as_deref())
            ),
            HandoverError::UnknownTarget { target, members } => write!(
                f,
                "unknown target: {} is not a member of the group (members: {})",
                describe(*target),
                members_text(members)
            ),
            HandoverError::AlreadyLeads { target, term } => write!(
                f,
                "{} already leads (term {term}): nothing to transfer",
                describe(*target)
            ),
            HandoverError::NotCaughtUp {
                target,
                matched,
                last,
            } => match matched {
                Some(m) => write!(
                    f,
                    "target not caught up: {} has matched index {m} of the leader's {last} \
                     (more than {TRANSFER_LAG_ENTRIES_MAX} behind); try again once it caught up",
                    describe(*target)
                ),
                None => write!(
                    f,
                    "target not caught up: {} has not matched any entry yet (down, or just \
                     started); try again once it caught up",
                    describe(*target)
                ),
            },
            HandoverError::InProgress { to } => {
                write!(f, "a transfer to {} is already under way", describe(*to))
            }
            HandoverError::Elsewhere { to, leader } => write!(
                f,
                "leadership moved to {} instead of {}",
                describe(*leader),
                describe(*to)
            ),
            HandoverError::TimedOut { to, after, leader } => write!(
                f,
                "timeout: {} did not take over within {} ms; the leader is {}",
                describe(*to),
                after.as_millis(),
                leader_text(*leader, None)
            ),
            HandoverError::Stopped { reason } => write!(f, "the replica stopped: {reason}"),
        }
    }
}

impl std::error::Error for HandoverError {}

impl HandoverError {
    /// The RocketMQ response code this failure is answered with.
    pub fn response_code(&self) -> i32 {
        match self {
            HandoverError::NotLeader { .. } => response::SERVICE_NOT_AVAILABLE,
            HandoverError::UnknownTarget { .. } | HandoverError::AlreadyLeads { .. } => {
                response::INVALID_PARAMETER
            }
            HandoverError::NotCaughtUp { .. } | HandoverError::InProgress { .. } => {
                response::SYSTEM_BUSY
            }
            HandoverError::Elsewhere { .. }
            | HandoverError::TimedOut { .. }
            | HandoverError::Stopped { .. } => response::SYSTEM_ERROR,
        }
    }

    /// The leader this failure names, if any.
    pub fn leader(&self) -> Option<NodeId> {
        match self {
            HandoverError::NotLeader { leader, .. } | HandoverError::TimedOut { leader, .. } => {
                *leader
            }
            HandoverError::Elsewhere { leader, .. } => Some(*leader),
            _ => None,
        }
    }

    /// The leader's client address, when known.
    pub fn leader_addr(&self) -> Option<&str> {
        match self {
            HandoverError::NotLeader { leader_addr, .. } => leader_addr.as_deref(),
            _ => None,
        }
    }

    /// Extension fields of the answer: `leaderId`, `leaderAddr` when known.
    pub fn ext(&self) -> BTreeMap<String, String> {
        let mut ext = BTreeMap::new();
        if let Some(leader) = self.leader() {
            ext.insert("leaderId".to_string(), leader.to_string());
        }
        if let Some(addr) = self.leader_addr() {
            ext.insert("leaderAddr".to_string(), addr.to_string());
        }
        ext
    }
}

/// A leader's claim to hand over in `term`: sends are held while it stands. Dropped before Raft
/// was asked (an error, or the request's task cancelled because its connection closed), it
/// releases the claim, so that a leader never keeps holding sends for a transfer nobody asked
/// Raft for.
struct Claim<'a, D: Disk, T: Transport> {
    shared: &'a Shared<D, T>,
    term: u64,
    asked: bool,
}

impl<D: Disk, T: Transport> Drop for Claim<'_, D, T> {
    fn drop(&mut self) {
        if !self.asked {
            self.shared.release_handover(self.term);
        }
    }
}

/// What a held send found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Held {
    /// This replica takes writes: go on.
    TakesWrites,
    /// The name servers list this master.
    MasterElsewhere(String),
    /// Neither within [`SEND_HOLD_MAX`].
    TimedOut,
}

fn now_since(started: Instant) -> Duration {
    Instant::now().saturating_duration_since(started)
}

/// Whether `to` has matched the leader's whole log.
fn matched_all(status: &Status, to: NodeId) -> bool {
    status.last_log_index.is_some()
        && status.matched.get(&to).copied().flatten() == status.last_log_index
}

impl<D: Disk, T: Transport> Shared<D, T> {
    /// Whether sends may go to the writer: a leader holding its quorum lease that applied its
    /// log and is not handing leadership over. Reads the role as the ledger publishes it, so a
    /// lost quorum counts at once, before the role watch of `lib.rs` clears `serving_writes`.
    pub(crate) fn takes_writes(&self) -> bool {
        if !self.serving_writes.load(Ordering::Acquire) {
            return false;
        }
        let state = self.roles.borrow();
        let handover = self.handover_term.load(Ordering::Acquire);
        state.leads_with_quorum() && (handover == 0 || handover != state.term)
    }

    /// Returns once this replica no longer leads with its quorum lease in `term`: it lost its
    /// quorum, its leadership, or stopped.
    pub(crate) async fn writes_stopped(&self, term: u64) {
        let mut roles = self.roles.clone();
        loop {
            {
                let state = roles.borrow_and_update();
                if !state.leads_with_quorum() || state.term != term {
                    return;
                }
            }
            if roles.changed().await.is_err() {
                return;
            }
        }
    }

    /// Why this replica takes no writes now, or `None` when it takes them (see
    /// [`crate::BrokerView::write_refusal`]).
    pub(crate) fn write_refusal(&self) -> Option<&'static str> {
        let state = self.roles.borrow().clone();
        match state.role {
            Role::Shutdown => Some("replica stopped"),
            Role::Leader if !state.has_quorum => Some("leader without quorum"),
            Role::Leader if !self.serving_writes.load(Ordering::Acquire) => {
                Some("leader applying its log")
            }
            Role::Leader if !self.takes_writes() => Some("handing leadership over"),
            Role::Leader => None,
            Role::Follower | Role::Candidate | Role::Learner => Some("not leader"),
        }
    }

    /// Whether leadership is moving here: this replica leads but does not take writes (it applies
    /// its log, hands over, or lost its quorum), or it led less than [`HOLD_AFTER_LEADING`] ago.
    pub(crate) fn leadership_moving(&self) -> bool {
        if self.ledger.watch_role().borrow().role == Role::Leader {
            return true;
        }
        let left = *self.left_leadership_at.lock().expect("left leadership at");
        left.is_some_and(|at| at.elapsed() < HOLD_AFTER_LEADING)
    }

    /// Hands leadership to `to` and waits, up to `timeout`, until this replica sees it lead.
    /// With `require_caught_up`, a target more than [`TRANSFER_LAG_ENTRIES_MAX`] entries behind
    /// is refused before anything changes.
    pub(crate) async fn transfer_leadership(
        &self,
        to: NodeId,
        timeout: Duration,
        require_caught_up: bool,
    ) -> Result<Transferred, HandoverError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let term = self.check_transfer(to, require_caught_up).await?;
        let mut claim = self.claim_handover(term, to)?;
        tracing::info!(to, term, "handing leadership over: sends held");
        self.drain_to(to, term, deadline).await;
        let asked = self.ledger.transfer_leadership(to).await;
        // Asked, Raft refuses writes for the rest of the term: the claim stays. Not asked, this
        // replica takes writes again (the claim's drop releases it).
        claim.asked = asked.is_ok();
        drop(claim);
        if let Err(err) = asked {
            return Err(match err {
                dledger::TransferError::NotLeader { .. } => {
                    self.not_leader(&self.ledger.status()).await
                }
                dledger::TransferError::UnknownTarget { target } => HandoverError::UnknownTarget {
                    target,
                    members: self.ledger.voters().into_iter().collect(),
                },
                dledger::TransferError::Stopped { reason } => HandoverError::Stopped { reason },
            });
        }
        let result = self.await_successor(to, term, started, deadline).await;
        match &result {
            Ok(done) => {
                tracing::info!(
                    to,
                    term = done.term,
                    elapsed_ms = done.elapsed.as_millis() as u64,
                    "leadership handed over"
                );
            }
            Err(err) => tracing::warn!(to, cause = %err, "leadership transfer failed"),
        }
        result
    }

    /// Whether a transfer to `to` may start: this replica leads, `to` is another voter, and
    /// (with `require_caught_up`) close enough. Returns the term.
    async fn check_transfer(
        &self,
        to: NodeId,
        require_caught_up: bool,
    ) -> Result<u64, HandoverError> {
        let members: Vec<NodeId> = self.ledger.voters().into_iter().collect();
        if !members.contains(&to) {
            return Err(HandoverError::UnknownTarget {
                target: to,
                members,
            });
        }
        let status = self.ledger.status();
        if status.role != Role::Leader {
            return Err(self.not_leader(&status).await);
        }
        if to == status.node_id {
            return Err(HandoverError::AlreadyLeads {
                target: to,
                term: status.term,
            });
        }
        let last = status.last_log_index.unwrap_or(0);
        let matched = status.matched.get(&to).copied().flatten();
        if require_caught_up
            && matched.is_none_or(|m| last.saturating_sub(m) > TRANSFER_LAG_ENTRIES_MAX)
        {
            return Err(HandoverError::NotCaughtUp {
                target: to,
                matched,
                last,
            });
        }
        Ok(status.term)
    }

    async fn not_leader(&self, status: &Status) -> HandoverError {
        let leader_addr = match status.leader {
            Some(_) => self.namesrv_master().await,
            None => None,
        };
        HandoverError::NotLeader {
            node: status.node_id,
            role: status.role,
            term: status.term,
            leader: status.leader,
            leader_addr,
        }
    }

    fn claim_handover(&self, term: u64, to: NodeId) -> Result<Claim<'_, D, T>, HandoverError> {
        let mut claim = self.handover.lock().expect("handover claim");
        if let Some((claimed_term, other)) = *claim
            && claimed_term == term
        {
            return Err(HandoverError::InProgress { to: other });
        }
        *claim = Some((term, to));
        self.handover_term.store(term, Ordering::Release);
        *self.left_leadership_at.lock().expect("left leadership at") = Some(Instant::now());
        Ok(Claim {
            shared: self,
            term,
            asked: false,
        })
    }

    fn release_handover(&self, term: u64) {
        let mut claim = self.handover.lock().expect("handover claim");
        if claim.is_some_and(|(t, _)| t == term) {
            *claim = None;
            self.handover_term.store(0, Ordering::Release);
        }
    }

    /// Waits (up to [`DRAIN_MAX`]) until `to` matched the whole log, the writes in flight
    /// replicated; new sends are held meanwhile.
    async fn drain_to(&self, to: NodeId, term: u64, deadline: Instant) {
        let until = (Instant::now() + DRAIN_MAX).min(deadline);
        loop {
            let status = self.ledger.status();
            if status.role != Role::Leader || status.term != term || matched_all(&status, to) {
                return;
            }
            if Instant::now() >= until {
                tracing::debug!(
                    to,
                    "target still behind after the drain; transferring anyway"
                );
                return;
            }
            tokio::time::sleep(TRANSFER_POLL).await;
        }
    }

    /// After Raft was asked: waits until this replica sees `to` lead, asking again while this
    /// replica still leads and `to` has caught up (openraft's target ignores a request that
    /// arrived before its log did).
    async fn await_successor(
        &self,
        to: NodeId,
        term: u64,
        started: Instant,
        deadline: Instant,
    ) -> Result<Transferred, HandoverError> {
        let me = self.ledger.node_id();
        let mut roles = self.ledger.watch_role();
        let mut asked = Instant::now();
        loop {
            let state = roles.borrow_and_update().clone();
            let moved = state.role != Role::Leader || state.term != term;
            if moved {
                match state.leader {
                    Some(leader) if leader == to => {
                        return Ok(Transferred {
                            from: me,
                            to,
                            term: state.term,
                            elapsed: now_since(started),
                        });
                    }
                    Some(leader) if leader != me || state.term != term => {
                        return Err(HandoverError::Elsewhere { to, leader });
                    }
                    _ => {}
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(HandoverError::TimedOut {
                    to,
                    after: now - started,
                    leader: state.leader,
                });
            }
            if !moved && now >= asked + TRANSFER_REPEAT && matched_all(&self.ledger.status(), to) {
                // Asking again is harmless: the same request, the same last log id.
                asked = now;
                if let Err(err) = self.ledger.transfer_leadership(to).await {
                    tracing::debug!(cause = %err, "repeated transfer request failed");
                }
            }
            tokio::select! {
                biased;
                changed = roles.changed() => if changed.is_err() {
                    return Err(HandoverError::Stopped { reason: "the ledger stopped".to_string() });
                },
                _ = tokio::time::sleep(TRANSFER_POLL) => {}
            }
        }
    }

    /// Holds a send at a replica that does not take writes: see the module's documentation.
    pub(crate) async fn hold_send(&self) -> Held {
        self.hold_send_until(Instant::now() + SEND_HOLD_MAX).await
    }

    /// Sends that waited in the writer's queue while this replica stopped taking writes: held
    /// only for what is left of [`SEND_HOLD_MAX`] since it stopped, so that queued sends do not
    /// each wait a whole hold in turn.
    pub(crate) async fn hold_queued_send(&self) -> Held {
        let stopped = *self.left_leadership_at.lock().expect("left leadership at");
        let deadline = stopped.map_or_else(Instant::now, |at| at + SEND_HOLD_MAX);
        self.hold_send_until(deadline.max(Instant::now())).await
    }

    async fn hold_send_until(&self, deadline: Instant) -> Held {
        let ours = self.config.advertised_addr.to_string();
        loop {
            if self.takes_writes() {
                return Held::TakesWrites;
            }
            let lookup = tokio::time::timeout_at(deadline, self.namesrv_master()).await;
            if let Ok(Some(master)) = lookup
                && master != ours
            {
                return Held::MasterElsewhere(master);
            }
            if Instant::now() >= deadline {
                return Held::TimedOut;
            }
            tokio::time::sleep(SEND_HOLD_POLL).await;
        }
    }

    /// Waits up to `timeout` until the name servers list another replica than this one as the
    /// group's master; returns its address.
    pub(crate) async fn await_master_elsewhere(&self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let ours = self.config.advertised_addr.to_string();
        loop {
            let lookup = tokio::time::timeout_at(deadline, self.namesrv_master()).await;
            if let Ok(Some(master)) = lookup
                && master != ours
            {
                return Some(master);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(SEND_HOLD_POLL).await;
        }
    }

    /// The group's master address as the name servers list it: `None` when none is listed or
    /// the name servers that answered disagree. Shared by callers for [`MASTER_LOOKUP_TTL`].
    pub(crate) async fn namesrv_master(&self) -> Option<String> {
        let mut cached = self.master_lookup.lock().await;
        if let Some((at, master)) = &*cached
            && at.elapsed() < MASTER_LOOKUP_TTL
        {
            return master.clone();
        }
        let master = self.look_up_master().await;
        *cached = Some((Instant::now(), master.clone()));
        master
    }

    async fn look_up_master(&self) -> Option<String> {
        let lookups = self.config.namesrv_addrs.iter().map(|addr| async move {
            let request =
                RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO, BTreeMap::new());
            match self
                .namesrv
                .request(addr, request, MASTER_LOOKUP_TIMEOUT)
                .await
            {
                Ok(answer) if answer.code == response::SUCCESS => {
                    let info: ClusterInfo = body::parse(&answer.body, "cluster info").ok()?;
                    Some(
                        info.broker_addr_table
                            .get(&self.config.broker_name)
                            .and_then(|b| b.broker_addrs.get(&0).cloned()),
                    )
                }
                _ => None,
            }
        });
        let answered: Vec<Option<String>> = futures_util::future::join_all(lookups)
            .await
            .into_iter()
            .flatten()
            .collect();
        // A client may ask any name server: they must all list the same master.
        let first = answered.first()?.clone()?;
        answered
            .iter()
            .all(|m| m.as_deref() == Some(first.as_str()))
            .then_some(first)
    }
}

/// Records when this replica stops leading, for [`Shared::leadership_moving`] (a leader that
/// loses its quorum is recorded by the role watch of `lib.rs`).
pub(crate) async fn note_lost_leadership<D: Disk, T: Transport>(
    shared: std::sync::Arc<Shared<D, T>>,
) {
    let mut roles = shared.ledger.watch_role();
    let mut led = roles.borrow_and_update().role == Role::Leader;
    while roles.changed().await.is_ok() {
        let leads = roles.borrow_and_update().role == Role::Leader;
        if led && !leads {
            *shared
                .left_leadership_at
                .lock()
                .expect("left leadership at") = Some(Instant::now());
        }
        led = leads;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nK` is node K + 1, a bare number is the node id; anything else is refused with what
    /// was expected.
    #[test]
    fn targets_parse() {
        assert_eq!(parse_node("n0"), Ok(1));
        assert_eq!(parse_node("n2"), Ok(3));
        assert_eq!(parse_node(" n1 "), Ok(2));
        assert_eq!(parse_node("3"), Ok(3));
        for bad in [
            "", "n", "x1", "n-1", "-1", "1.5", "n1x", "node1", "N1", "n 1",
        ] {
            let err = parse_node(bad).unwrap_err();
            assert!(err.contains("is not a node"), "{bad:?}: {err}");
        }
        assert!(parse_node("0").unwrap_err().contains("start at 1"));
        assert!(parse_node("n18446744073709551615").is_err());
        assert_eq!(dledger_id(1), "n0");
        assert_eq!(describe(3), "node 3 (n2)");
    }

    /// Every failure says what happened, in words an operator can act on, with a response code
    /// a RocketMQ client understands.
    #[test]
    fn failures_are_explained() {
        let not_leader = HandoverError::NotLeader {
            node: 2,
            role: Role::Follower,
            term: 7,
            leader: Some(1),
            leader_addr: Some("127.0.0.1:10911".into()),
        };
        assert_eq!(
            not_leader.to_string(),
            "not the leader: node 2 (n1) is Follower in term 7; the leader is node 1 (n0) at 127.0.0.1:10911"
        );
        assert_eq!(not_leader.response_code(), response::SERVICE_NOT_AVAILABLE);
        assert_eq!(
            not_leader.ext().get("leaderId").map(String::as_str),
            Some("1")
        );
        assert_eq!(
            not_leader.ext().get("leaderAddr").map(String::as_str),
            Some("127.0.0.1:10911")
        );
        let unknown = HandoverError::UnknownTarget {
            target: 9,
            members: vec![1, 2, 3],
        };
        assert_eq!(
            unknown.to_string(),
            "unknown target: node 9 (n8) is not a member of the group (members: node 1 (n0), node 2 (n1), node 3 (n2))"
        );
        assert_eq!(unknown.response_code(), response::INVALID_PARAMETER);
        let behind = HandoverError::NotCaughtUp {
            target: 3,
            matched: None,
            last: 40,
        };
        assert!(behind.to_string().starts_with("target not caught up"));
        assert_eq!(behind.response_code(), response::SYSTEM_BUSY);
        let timeout = HandoverError::TimedOut {
            to: 2,
            after: Duration::from_secs(5),
            leader: None,
        };
        assert!(
            timeout
                .to_string()
                .starts_with("timeout: node 2 (n1) did not take over within 5000 ms")
        );
        assert!(timeout.ext().is_empty());
    }
}
