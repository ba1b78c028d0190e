//! Configuration of one replica.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::ConfigError;
use crate::limits::{
    ENTRY_BODY_BYTES_MAX, ENTRY_HEADER_BYTES, INDEX_UNITS_PER_FILE_DEFAULT, SEGMENT_BYTES_DEFAULT,
    SEGMENT_BYTES_MIN,
};
use crate::types::NodeId;

/// When an appended entry counts as stored on this replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// `SYNC_FLUSH` (default): an entry counts only once synced to disk. An acknowledged entry
    /// survives the power loss of every replica at once.
    Sync,
    /// `ASYNC_FLUSH`: an entry counts once it is in the page cache; the disk is synced every
    /// `interval`, as DLedger does. It survives any minority of replicas crashing (their page
    /// cache survives a process crash), but a power loss of a quorum within `interval` of an
    /// acknowledgement can lose that acknowledged entry.
    Async {
        /// Time between syncs.
        interval: Duration,
    },
}

/// Everything one replica needs to run.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// This replica's id; must be a key of `peers`.
    pub node_id: NodeId,
    /// Every voter of the group, with its Raft address (`host:port`), this replica included.
    pub peers: BTreeMap<NodeId, String>,
    /// Folder of this replica's files.
    pub data_dir: PathBuf,
    /// Bytes per CommitLog segment file. Default 1 GiB.
    pub segment_bytes: u64,
    /// Index units (32 B) per index file. Default 5 Mi.
    pub index_units_per_file: u64,
    /// Largest entry body. Default `ENTRY_BODY_BYTES_MAX`.
    pub entry_body_bytes_max: u32,
    /// Flush policy. Default `Sync`.
    pub flush: FlushPolicy,
    /// Leader heartbeat period. Default 50 ms.
    ///
    /// The defaults aim at failover within a second: openraft starts an election only after the
    /// leader lease (`election_timeout_max`) *and* a random election timeout have passed since
    /// the last heartbeat, so a leader's death is noticed 450–600 ms after its last heartbeat
    /// with these values (900–1,200 ms with 300–600 ms, measured: tests/failover.rs).
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomized election timeout. Default 150 ms.
    pub election_timeout_min: Duration,
    /// Upper bound of the randomized election timeout, and the leader lease. Default 300 ms.
    pub election_timeout_max: Duration,
    /// Deadline of each Raft RPC; below `election_timeout_min`. Default 120 ms.
    pub rpc_timeout: Duration,
    /// Seed of openraft's RNG (election jitter); `None` draws one from the OS. Set it only in
    /// simulations and tests that replay.
    pub seed: Option<u64>,
    /// Deliberate bugs for the simulation's tests that show its checker catches them. All off
    /// by default; compiled only with the `mutants` feature, which the simulation turns on.
    #[cfg(feature = "mutants")]
    #[doc(hidden)]
    pub mutants: Mutants,
}

/// Deliberate bugs, each switched on by the simulation to show that a sweep catches it.
#[cfg(feature = "mutants")]
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mutants {
    /// Report appended entries flushed before they are synced.
    pub ack_before_sync: bool,
    /// Hand entries to the state machine when they are appended, before they commit.
    pub apply_before_commit: bool,
    /// Skip the CRC checks while recovering the log at start.
    pub skip_recovery_crc: bool,
    /// Do not persist the vote.
    pub forget_vote: bool,
    /// Report a leader as holding its quorum lease whether or not a quorum answered it
    /// lately (check-quorum off): a cut-off leader goes on claiming writes.
    pub ignore_quorum_loss: bool,
    /// Stop the replica on a full disk instead of waiting for space (it never comes back).
    pub fail_on_full_disk: bool,
}

impl LedgerConfig {
    /// A configuration with defaults for everything but the identity and the folder.
    pub fn new(node_id: NodeId, peers: BTreeMap<NodeId, String>, data_dir: PathBuf) -> Self {
        LedgerConfig {
            node_id,
            peers,
            data_dir,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            index_units_per_file: INDEX_UNITS_PER_FILE_DEFAULT,
            entry_body_bytes_max: ENTRY_BODY_BYTES_MAX,
            flush: FlushPolicy::Sync,
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            rpc_timeout: Duration::from_millis(120),
            seed: None,
            #[cfg(feature = "mutants")]
            mutants: Mutants::default(),
        }
    }

    /// Checks the rules between fields.
    ///
    /// # Errors
    /// The first rule broken.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.peers.contains_key(&self.node_id) {
            return Err(ConfigError::SelfNotInPeers {
                node_id: self.node_id,
                peers: self.peers.keys().copied().collect(),
            });
        }
        let heartbeat_ms = self.heartbeat_interval.as_millis() as u64;
        let min_ms = self.election_timeout_min.as_millis() as u64;
        let max_ms = self.election_timeout_max.as_millis() as u64;
        if heartbeat_ms == 0 || heartbeat_ms >= min_ms || min_ms >= max_ms {
            return Err(ConfigError::ElectionTimeout {
                min_ms,
                max_ms,
                heartbeat_ms,
            });
        }
        let rpc_ms = self.rpc_timeout.as_millis() as u64;
        if rpc_ms == 0 || rpc_ms >= min_ms {
            return Err(ConfigError::RpcTimeout { rpc_ms, min_ms });
        }
        if self.entry_body_bytes_max == 0 || self.entry_body_bytes_max > ENTRY_BODY_BYTES_MAX {
            return Err(ConfigError::EntryBodyBytesMax {
                value: self.entry_body_bytes_max,
                max: ENTRY_BODY_BYTES_MAX,
            });
        }
        let min = SEGMENT_BYTES_MIN
            .max(u64::from(self.entry_body_bytes_max) + u64::from(ENTRY_HEADER_BYTES) + 4);
        if self.segment_bytes < min {
            return Err(ConfigError::SegmentTooSmall {
                segment_bytes: self.segment_bytes,
                min,
            });
        }
        if self.index_units_per_file == 0 {
            return Err(ConfigError::IndexUnitsPerFile);
        }
        if let FlushPolicy::Async { interval } = self.flush
            && interval.is_zero()
        {
            return Err(ConfigError::AsyncFlushInterval);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LedgerConfig {
        let peers = BTreeMap::from([(1, "127.0.0.1:1".to_string())]);
        LedgerConfig::new(1, peers, PathBuf::from("/tmp/x"))
    }

    /// The defaults validate.
    #[test]
    fn defaults_are_valid() {
        assert_eq!(config().validate(), Ok(()));
    }

    /// Each cross-field rule is reported with its values.
    #[test]
    fn validate_rejects_each_broken_rule() {
        let mut c = config();
        c.node_id = 9;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::SelfNotInPeers { node_id: 9, .. })
        ));

        let mut c = config();
        c.election_timeout_max = c.election_timeout_min;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ElectionTimeout { .. })
        ));

        let mut c = config();
        c.segment_bytes = 1024;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::SegmentTooSmall { .. })
        ));

        let mut c = config();
        c.entry_body_bytes_max = 0;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::EntryBodyBytesMax { .. })
        ));

        let mut c = config();
        c.rpc_timeout = c.election_timeout_min;
        assert!(matches!(c.validate(), Err(ConfigError::RpcTimeout { .. })));

        let mut c = config();
        c.flush = FlushPolicy::Async {
            interval: Duration::ZERO,
        };
        assert_eq!(c.validate(), Err(ConfigError::AsyncFlushInterval));

        let mut c = config();
        c.index_units_per_file = 0;
        assert_eq!(c.validate(), Err(ConfigError::IndexUnitsPerFile));
    }
}
