//! dledger: the Raft-replicated CommitLog of raftmq.
//!
//! A group of replicas elects a leader with openraft and replicates opaque entries in two
//! phases: appended on a replica (uncommitted), then committed once a quorum has them on disk.
//! Committed entries are handed in order to the [`StateMachine`] the layer above supplies.
//!
//! # Layout
//! - [`config`]: one replica's settings and the flush policy.
//! - [`disk`]: the storage seam ([`Disk`], [`SegmentFile`]); mmap in production, an in-memory
//!   disk that loses unsynced bytes on a crash for tests and simulation.
//! - [`file_set`]: a directory of fixed-size files named by their starting position
//!   (RocketMQ's MappedFileQueue), shared by the CommitLog and the store.
//! - [`commit_log`]: segment files named by byte position, the index, recovery.
//! - `log_store`: openraft's log storage over the CommitLog, with the group-commit flusher.
//! - `room`: the log's room on its disk; a full disk holds the replica still until space
//!   returns.
//! - [`state_machine`]: the state-machine trait and its openraft adapter.
//! - `network`: the Raft RPCs over our framed TCP protocol, pipelined, through the network
//!   seam ([`Transport`], from the `seams` crate).
//! - [`node`]: [`Ledger`], a running replica: propose, read, watch, status, transfer.
//! - [`limits`]: every bound, with its reason.
//!
//! No openraft type appears in this crate's public API.

pub mod commit_log;
pub mod config;
pub mod disk;
pub mod error;
pub mod file_set;
pub mod limits;
mod log_store;
mod meta;
mod network;
pub mod node;
mod raft_types;
pub mod record;
mod room;
pub mod state_machine;
pub mod testing;
pub mod types;

#[cfg(test)]
mod storage_suite_test;

pub use commit_log::{AppendHook, CommitLog, CommitLogConfig, RecoveryReport};
#[cfg(feature = "mutants")]
pub use config::Mutants;
pub use config::{FlushPolicy, LedgerConfig};
pub use disk::{Disk, DiskFaults, FaultCounts, MemDisk, MmapDisk, SegmentFile};
pub use error::{
    ConfigError, MembershipError, ProposeError, ReadError, StartError, StorageError, TransferError,
};
pub use node::{Ledger, RaftListener};
pub use seams::{TcpTransport, Transport};
pub use state_machine::{ApplyError, StateMachine};
pub use types::{
    Committed, CommittedEntry, EntryPayload, LogId, Members, NodeId, Role, RoleState, Snapshot,
    Status,
};
