//! Everything one seed decides. Each subsystem draws from its own salted stream, so adding a
//! draw in one does not shift the others.

use std::ops::Range;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Salts of the per-subsystem RNG streams.
pub mod salt {
    /// Cluster shape and timeouts.
    pub const CONFIG: u64 = 0x0c0f_1600_0000_0001;
    /// The fault schedule.
    pub const FAULTS: u64 = 0xfa17_0000_0000_0002;
    /// The workload of node `i` adds `i`.
    pub const WORKLOAD: u64 = 0x3012_0000_0000_0003;
    /// Disk faults of node `i` add `i`.
    pub const DISK: u64 = 0xd15c_0000_0000_0004;
    /// openraft's RNG of node `i` adds `i`.
    pub const RAFT: u64 = 0x4af7_0000_0000_0005;
    /// The broker's RNG of node `i` adds `i`.
    pub const BROKER: u64 = 0xb40c_0000_0000_0006;
    /// The producers of the messaging workload.
    pub const PRODUCERS: u64 = 0x9d0c_0000_0000_0007;
    /// Faults between replicas and the hosts outside the group (messaging workload).
    pub const EDGE_FAULTS: u64 = 0xed6e_0000_0000_0008;
    /// The consumers of the messaging workload.
    pub const CONSUMERS: u64 = 0xc0c0_0000_0000_0009;
    /// Isolations of one replica from all the others.
    pub const ISOLATIONS: u64 = 0x150a_0000_0000_000a;
    /// Episodes of a replica's disk reading full (messaging workload).
    pub const FULL_DISKS: u64 = 0xf011_0000_0000_000b;
}

/// Which layers a run puts under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    /// Raft groups alone: proposers on each replica propose opaque entries.
    #[default]
    Ledger,
    /// The messaging stack on every replica (ledger, store, broker), a name server, and
    /// producers on client hosts sending through the remoting protocol.
    Broker,
}

/// Deliberate bugs put back into the code under test, to show the checker catches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mutant {
    /// Report appended entries flushed before they are synced.
    AckBeforeSync,
    /// Do not persist the vote.
    ForgetVote,
    /// Hand entries to the state machine when appended, before they commit.
    ApplyBeforeCommit,
    /// Skip the CRC checks of recovery.
    SkipRecoveryCrc,
    /// Let a leader that no quorum answered go on claiming writes (check-quorum off).
    IgnoreQuorumLoss,
    /// Deliver scheduled messages half a second before they are due.
    DeliverEarly,
    /// Let retention cut segments that have not expired.
    PurgeUnexpired,
    /// Store a send on a full disk, then refuse it.
    StoreRefusedSends,
    /// Stop a replica whose disk filled instead of waiting for space.
    FailOnFullDisk,
    /// Commit a transaction without recording its outcome, so a repeated commit stores it
    /// again.
    CommitWithoutOutcome,
    /// Count transaction checks without sending them, so a transaction whose producer never
    /// answered stays unsettled.
    ChecksUnsent,
}

/// An RNG for one subsystem of one seed.
pub fn rng(seed: u64, salt: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ salt)
}

/// What a seed decides.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// The seed.
    pub seed: u64,
    /// Replicas: 3 or 5.
    pub nodes: u64,
    /// Raft heartbeat.
    pub heartbeat_ms: u64,
    /// Election timeout range.
    pub election_min_ms: u64,
    /// Election timeout range.
    pub election_max_ms: u64,
    /// Raft RPC deadline.
    pub rpc_timeout_ms: u64,
    /// Steps (1 ms each) with faults.
    pub fault_steps: u64,
    /// Most steps allowed after healing to converge.
    pub liveness_steps: u64,
    /// Per-step odds of starting a fault.
    pub fault_odds: f64,
    /// Downtime of a short crash, in steps.
    pub short_outage: Range<u64>,
    /// Downtime of a long crash (forces catch-up), in steps.
    pub long_outage: Range<u64>,
    /// Chance a disk sync fails.
    pub sync_fail: f64,
    /// Chance an unsynced sector survives a crash.
    pub sector_survives_crash: f64,
    /// Disk capacity in segment files, if limited.
    pub disk_segments_max: Option<u64>,
    /// Chance one disk read returns a flipped bit.
    pub read_corrupt: f64,
    /// Most time one sync takes, in microseconds.
    pub disk_latency_max_us: u64,
    /// Concurrent proposers per replica.
    pub clients_per_node: u64,
    /// Pause between one proposer's proposals.
    pub propose_pause_ms: Range<u64>,
    /// Per-step odds of cutting one replica off from every other (a leader losing its quorum).
    pub isolation_odds: f64,
    /// Retention of the messaging workload (`fileReservedTime`), if the seed turns it on: the
    /// leader cuts segments this long after their last message, every hour of the day.
    pub retention_ms: Option<u64>,
    /// Per-step odds that a replica's disk reads full for a while (messaging workload): its
    /// broker refuses sends while it leads, and takes them again once the disk reads free.
    pub full_disk_odds: f64,
}

/// Segment size in the simulation: small, so runs roll over files.
pub const SIM_SEGMENT_BYTES: u64 = 64 * 1024;

impl SimConfig {
    /// Draws the configuration of `seed`.
    pub fn from_seed(seed: u64) -> SimConfig {
        let mut r = rng(seed, salt::CONFIG);
        let heartbeat_ms = r.random_range(20..=60);
        let election_min_ms = heartbeat_ms * r.random_range(4..=8);
        let election_max_ms = election_min_ms + r.random_range(100..=300);
        SimConfig {
            seed,
            nodes: if r.random_bool(0.7) { 3 } else { 5 },
            heartbeat_ms,
            election_min_ms,
            election_max_ms,
            rpc_timeout_ms: (election_min_ms * 2 / 3).max(heartbeat_ms + 10),
            fault_steps: r.random_range(3_000..=6_000),
            liveness_steps: 30_000,
            fault_odds: r.random_range(0.002..0.01),
            short_outage: 50..600,
            long_outage: 1_500..3_000,
            sync_fail: if r.random_bool(0.3) {
                r.random_range(0.0005..0.005)
            } else {
                0.0
            },
            sector_survives_crash: r.random_range(0.0..0.9),
            disk_segments_max: if r.random_bool(0.2) {
                Some(r.random_range(1..=2))
            } else {
                None
            },
            read_corrupt: if r.random_bool(0.3) {
                r.random_range(0.000_01..0.000_2)
            } else {
                0.0
            },
            disk_latency_max_us: r.random_range(500..=8_000),
            clients_per_node: r.random_range(1..=6),
            propose_pause_ms: 1..r.random_range(5..=40),
            // Drawn last: the draws above stay what they were before it existed.
            isolation_odds: r.random_range(0.0002..0.0008),
            // Drawn after it, for the same reason.
            retention_ms: r.random_bool(0.5).then(|| r.random_range(400..=1_500)),
            full_disk_odds: r.random_range(0.0004..0.0012),
        }
    }
}
