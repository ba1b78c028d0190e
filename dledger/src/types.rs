//! Plain types of dledger's public API. No openraft type appears here, so an openraft upgrade
//! stays inside this crate.

use serde::{Deserialize, Serialize};

/// A node of a replica group.
pub type NodeId = u64;

/// The identity of a log entry: its term and index, in openraft's sense of the words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogId {
    /// The term of the leader that proposed the entry.
    pub term: u64,
    /// The Raft index.
    pub index: u64,
}

/// The state machine's state at a point of the log, which the log may be purged up to: what a
/// replica that is new, wiped, or behind the purged prefix installs before the retained log
/// replicates to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The last entry whose effects it holds; the log after it is what the replica receives next.
    pub last: LogId,
    /// Where the entry after `last` starts in the CommitLog: a replica restored from the
    /// snapshot writes that entry there, so positions stay identical on every replica. `None`
    /// only from test state machines that do not track positions (the log then goes on where
    /// it ends).
    pub next_position: Option<u64>,
    /// The state, serialized by the state machine.
    pub data: Vec<u8>,
}

/// The group's members as the log has them (the latest membership entry, committed or not).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Members {
    /// Voters and their Raft addresses.
    pub voters: std::collections::BTreeMap<NodeId, String>,
    /// Learners (replicas catching up before they vote) and their Raft addresses.
    pub learners: std::collections::BTreeMap<NodeId, String>,
}

/// Where a committed proposal landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Raft index of the entry.
    pub index: u64,
    /// Term of the entry.
    pub term: u64,
    /// Global byte position of the entry in the CommitLog. The body starts
    /// `ENTRY_HEADER_BYTES` after it.
    pub position: u64,
}

/// A committed entry handed to the state machine, or read back by index or position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedEntry {
    /// Raft index.
    pub index: u64,
    /// Term.
    pub term: u64,
    /// Global byte position in the CommitLog.
    pub position: u64,
    /// What the entry carries.
    pub payload: EntryPayload,
}

/// The content of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryPayload {
    /// Bytes proposed by the layer above.
    Data(bytes::Bytes),
    /// A leader's no-op, written on election.
    Blank,
    /// A change of the group's members.
    Membership,
}

/// The role of a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Accepts proposals and replicates them.
    Leader,
    /// Follows a leader.
    Follower,
    /// Running an election.
    Candidate,
    /// Receives the log but does not vote.
    Learner,
    /// Stopped.
    Shutdown,
}

/// Who leads, as one replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleState {
    /// This replica's role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// The known leader.
    pub leader: Option<NodeId>,
    /// On a leader: a quorum of voters (itself included) answered it within the lease (the
    /// election timeout's upper bound), so it may take writes. A leader without it takes none
    /// until a quorum answers again (check-quorum). Always true for a group of one; false on
    /// every other role.
    pub has_quorum: bool,
}

impl RoleState {
    /// A leader holding its quorum lease: the one replica of the group that may take writes.
    pub fn leads_with_quorum(&self) -> bool {
        self.role == Role::Leader && self.has_quorum
    }
}

/// A snapshot of one replica's state, for status pages and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// This replica.
    pub node_id: NodeId,
    /// Its role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// The known leader.
    pub leader: Option<NodeId>,
    /// Last log index, if any.
    pub last_log_index: Option<u64>,
    /// Committed index, if any.
    pub committed: Option<u64>,
    /// Applied index, if any.
    pub applied: Option<u64>,
    /// Purged index, if any.
    pub purged: Option<u64>,
    /// On a leader: each follower's matched index (`None` until it matched anything).
    pub matched: std::collections::BTreeMap<NodeId, Option<u64>>,
    /// On a leader: whether it holds its quorum lease (see [`RoleState::has_quorum`]).
    pub has_quorum: bool,
    /// On a leader of more than one voter: milliseconds since the sending of the last request
    /// a quorum acknowledged (`None` before the first, and on other roles).
    pub quorum_acked_ms_ago: Option<u64>,
}
