//! Errors of the replicated log, kept apart by who must act: the caller (request errors) or the
//! operator (fatal storage errors).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// What the storage was doing when an I/O error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Opening or creating a file.
    Open,
    /// Reading a file.
    Read,
    /// Writing a file.
    Write,
    /// Making written bytes durable.
    Flush,
    /// Removing a file.
    Remove,
    /// Listing a directory.
    List,
}

/// The file or record an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A CommitLog data segment, by its starting byte position.
    Segment {
        /// Starting byte position of the segment (its file name).
        file_start: u64,
    },
    /// An index file, by its starting byte position.
    IndexFile {
        /// Starting byte position of the index file (its file name).
        file_start: u64,
    },
    /// A metadata file (vote, committed, purged, membership).
    Meta {
        /// The file's path.
        path: PathBuf,
    },
    /// A directory.
    Dir {
        /// The directory's path.
        path: PathBuf,
    },
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Segment { file_start } => write!(f, "CommitLog({file_start:020})"),
            Subject::IndexFile { file_start } => write!(f, "Index({file_start:020})"),
            Subject::Meta { path } => write!(f, "Meta({})", path.display()),
            Subject::Dir { path } => write!(f, "Dir({})", path.display()),
        }
    }
}

/// An error of the log storage. Every variant but `Io` on a transient read means the replica
/// must stop: its files are not what it wrote.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An operating-system I/O error.
    #[error("when {verb:?} {subject}: {source}")]
    Io {
        /// What was being done.
        verb: Verb,
        /// To what.
        subject: Subject,
        /// The OS error.
        source: io::Error,
    },
    /// A record inside the committed region failed its checksum or structure check.
    #[error(
        "corrupt committed entry in {path} at position {position} (file offset {file_offset}): \
         {reason}; committed index is {committed}, refusing to start"
    )]
    CorruptCommitted {
        /// The segment file.
        path: PathBuf,
        /// Global byte position of the entry.
        position: u64,
        /// Offset of the entry within the file.
        file_offset: u64,
        /// What check failed.
        reason: String,
        /// The persisted committed index.
        committed: u64,
    },
    /// A committed entry is missing from the log (the files end before it).
    #[error("committed entry {index} is missing: the log ends at {last:?}; refusing to start")]
    MissingCommitted {
        /// The first missing index.
        index: u64,
        /// The last index found.
        last: Option<u64>,
    },
    /// A record read back at run time failed its checksum or structure check.
    #[error("corrupt entry {index} in {path} at position {position}: {reason}")]
    Corrupt {
        /// The Raft index that was read.
        index: u64,
        /// The segment file.
        path: PathBuf,
        /// Global byte position of the entry.
        position: u64,
        /// What check failed.
        reason: String,
    },
    /// A metadata file failed its checksum or could not be decoded.
    #[error("corrupt metadata file {path}: {reason}")]
    CorruptMeta {
        /// The file.
        path: PathBuf,
        /// What check failed.
        reason: String,
    },
    /// A file whose name or size does not belong in a log directory.
    #[error("unexpected file {path}: {reason}")]
    UnexpectedFile {
        /// The file.
        path: PathBuf,
        /// Why it does not fit.
        reason: String,
    },
    /// An entry larger than the configured maximum was appended.
    #[error("entry body too large: {size} bytes, max {max}")]
    EntryTooLarge {
        /// Body size.
        size: u64,
        /// The bound.
        max: u64,
    },
}

impl StorageError {
    /// Whether this is a write that failed for want of disk space (`ENOSPC`, `EDQUOT`).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StorageError::Io { source, .. } if crate::room::is_disk_full(source))
    }

    pub(crate) fn io(verb: Verb, subject: Subject, source: io::Error) -> Self {
        StorageError::Io {
            verb,
            subject,
            source,
        }
    }
}

impl From<StorageError> for io::Error {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull => {
                io::Error::new(io::ErrorKind::StorageFull, source.to_string())
            }
            other => io::Error::other(other),
        }
    }
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The election timeout range is empty or too short for the heartbeat.
    #[error(
        "election timeout must satisfy heartbeat ({heartbeat_ms} ms) < min ({min_ms} ms) < max \
         ({max_ms} ms)"
    )]
    ElectionTimeout {
        /// Lower bound.
        min_ms: u64,
        /// Upper bound.
        max_ms: u64,
        /// Heartbeat interval.
        heartbeat_ms: u64,
    },
    /// Segments too small to hold the largest entry.
    #[error(
        "segment size {segment_bytes} bytes is below the minimum {min} (largest entry + header)"
    )]
    SegmentTooSmall {
        /// The configured size.
        segment_bytes: u64,
        /// The minimum.
        min: u64,
    },
    /// The entry size bound is zero or above the hard limit.
    #[error("entry_body_bytes_max {value} must be in 1..={max}")]
    EntryBodyBytesMax {
        /// The configured value.
        value: u32,
        /// The hard limit.
        max: u32,
    },
    /// Index files of zero units.
    #[error("index_units_per_file must be at least 1")]
    IndexUnitsPerFile,
    /// This node is not among the peers.
    #[error("node {node_id} is not in the peer list {peers:?}")]
    SelfNotInPeers {
        /// This node.
        node_id: u64,
        /// The peers.
        peers: Vec<u64>,
    },
    /// A flush interval of zero in async mode.
    #[error("ASYNC_FLUSH needs a flush interval above 0 ms")]
    AsyncFlushInterval,
    /// An RPC timeout not below the election timeout.
    #[error("rpc timeout {rpc_ms} ms must be above 0 and below election_timeout_min {min_ms} ms")]
    RpcTimeout {
        /// The RPC timeout.
        rpc_ms: u64,
        /// The election timeout lower bound.
        min_ms: u64,
    },
}

/// Why a proposal was not committed.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// This replica is not the leader; `leader` is the one it knows of.
    #[error("not leader; leader is {leader:?} at {leader_addr:?}")]
    NotLeader {
        /// The known leader.
        leader: Option<u64>,
        /// Its Raft address.
        leader_addr: Option<String>,
    },
    /// The body exceeds the entry bound.
    #[error("entry body too large: {size} bytes, max {max}")]
    TooLarge {
        /// Body size.
        size: usize,
        /// The bound.
        max: u32,
    },
    /// The replica stopped (shut down, or a fatal storage error).
    #[error("replica stopped: {reason}")]
    Stopped {
        /// Why.
        reason: String,
    },
}

/// Why a read of the committed log failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The index is not committed yet, or past the end of the log.
    #[error("index {index} is not committed (committed: {committed:?})")]
    NotCommitted {
        /// The index asked for.
        index: u64,
        /// The committed index.
        committed: Option<u64>,
    },
    /// The index was purged.
    #[error("index {index} is purged (first present index {first})")]
    Purged {
        /// The index asked for.
        index: u64,
        /// The first index still present.
        first: u64,
    },
    /// No entry starts at that byte position.
    #[error("no entry starts at position {position}")]
    NoEntryAtPosition {
        /// The position asked for.
        position: u64,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a leadership transfer could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// This replica is not the leader.
    #[error("not leader; leader is {leader:?}")]
    NotLeader {
        /// The known leader.
        leader: Option<u64>,
    },
    /// The target is not a voter of the group.
    #[error("node {target} is not a member of the group")]
    UnknownTarget {
        /// The asked-for node.
        target: u64,
    },
    /// The replica stopped.
    #[error("replica stopped: {reason}")]
    Stopped {
        /// Why.
        reason: String,
    },
}

/// Why the group's membership could not change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// This replica is not the leader.
    #[error("not leader; leader is {leader:?}")]
    NotLeader {
        /// The known leader.
        leader: Option<u64>,
    },
    /// The node to add is already a member (voter or learner).
    #[error("node {node} is already a member of the group")]
    AlreadyMember {
        /// The node.
        node: u64,
    },
    /// The node to remove is not a member.
    #[error("node {node} is not a member of the group")]
    NotMember {
        /// The node.
        node: u64,
    },
    /// The new replica did not catch up in time (unreachable, or too slow): it was taken out
    /// again, and the membership is as before.
    #[error("node {node} at {addr} did not catch up within {waited_ms} ms: not added")]
    NotCaughtUp {
        /// The node.
        node: u64,
        /// Its Raft address.
        addr: String,
        /// How long the leader waited.
        waited_ms: u64,
    },
    /// Removing the last voters, or the change failed in Raft.
    #[error("membership change refused: {reason}")]
    Refused {
        /// Why.
        reason: String,
    },
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Storage could not be opened or recovered.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The Raft listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The OS error.
        source: io::Error,
    },
    /// openraft refused to start.
    #[error("raft failed to start: {reason}")]
    Raft {
        /// Why.
        reason: String,
    },
}
