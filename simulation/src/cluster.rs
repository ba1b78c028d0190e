//! The replicas as turmoil hosts. Each replica's disk lives outside its host, so crashing the
//! host (turmoil drops every task) and bouncing it later restarts it from what was synced.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dledger::testing::RecordingStateMachine;
use dledger::{DiskFaults, Ledger, LedgerConfig, MemDisk, Mutants, RaftListener};

use crate::config::{Mutant, SIM_SEGMENT_BYTES, SimConfig, salt};
use crate::oracle::Oracle;
use crate::transport::TurmoilTransport;

/// Raft port of every replica.
pub const RAFT_PORT: u16 = 9000;

/// Turmoil host name of replica `id`.
pub fn host_name(id: u64) -> String {
    format!("node-{id}")
}

/// One replica's state as the driver sees it.
pub struct Slot {
    /// Its disk (the handle of its current life).
    pub disk: MemDisk,
    /// The running ledger, while the host runs and started.
    pub ledger: Option<Ledger>,
    /// What its state machine applied in its current life.
    pub machine: RecordingStateMachine,
    /// The message store, in the messaging workload, while the host runs and started.
    pub store: Option<Arc<store::Store<MemDisk>>>,
    /// The broker, in the messaging workload, while the host runs and started.
    pub broker: Option<broker::BrokerView<MemDisk, TurmoilTransport>>,
    /// Lives so far (1 after the first start).
    pub incarnation: u64,
    /// Why the last start failed on something other than an I/O error, if it did.
    pub start_error: Option<String>,
    /// Why the last start failed on an I/O error (an injected disk fault), if it did.
    pub start_io_error: Option<String>,
}

/// The layers under test on each replica host: what its ledger applies into, and what runs over
/// it (proposers of opaque entries, or a broker). The driver passes one in
/// ([`crate::proposers::Proposers`], [`crate::messaging::Messaging`]).
pub trait Workload: Send + Sync + 'static {
    /// Largest entry body the ledger takes.
    fn entry_body_bytes_max(&self) -> u32;

    /// Whether the seed's disk capacity applies (a layer whose store shares the disk runs
    /// without one).
    fn disk_limited(&self) -> bool;

    /// What replica `id` applies into, over its `disk`; `record` keeps what it applied for the
    /// ledger's invariants.
    ///
    /// # Errors
    /// Why it cannot be opened.
    fn open(
        &self,
        id: u64,
        disk: &MemDisk,
        record: RecordingStateMachine,
    ) -> Result<Applier, OpenError>;

    /// Runs on replica `id`'s host once its ledger started, for as long as the host runs.
    fn serve(
        &self,
        cluster: Cluster,
        id: u64,
        incarnation: u64,
        ledger: Ledger,
        store: Option<Arc<store::Store<MemDisk>>>,
    ) -> Pin<Box<dyn Future<Output = turmoil::Result>>>;
}

/// What a replica's ledger applies into.
pub struct Applier {
    /// The state machine.
    pub machine: Box<dyn dledger::StateMachine>,
    /// The hook that sees each entry's position on append, if any.
    pub hook: Option<Arc<dyn dledger::AppendHook>>,
    /// The message store, for a layer that has one.
    pub store: Option<Arc<store::Store<MemDisk>>>,
}

/// Why a workload could not open what a replica applies into.
pub struct OpenError {
    /// What went wrong.
    pub reason: String,
    /// An I/O error (an injected disk fault): the start is retried like a crash.
    pub io: bool,
}

/// State shared by the driver and the hosts.
#[derive(Clone)]
pub struct Cluster {
    /// Replicas by id.
    pub slots: Arc<Mutex<BTreeMap<u64, Slot>>>,
    /// The workload's record.
    pub oracle: Arc<Mutex<Oracle>>,
    /// When set, proposers stop proposing (liveness checks of a quiet cluster).
    pub quiet: Arc<AtomicBool>,
    /// The seed's configuration.
    pub config: Arc<SimConfig>,
    /// A deliberate bug switched on in every replica.
    pub mutant: Option<Mutant>,
    /// The layers under test.
    pub workload: Arc<dyn Workload>,
    /// How full each replica's disk reads, in thousandths (the broker's cleaner reads it).
    pub disk_used_permille: Arc<BTreeMap<u64, Arc<std::sync::atomic::AtomicU64>>>,
}

/// A replica's disk as it reads when no episode fills it, in thousandths.
pub const DISK_USED_NORMAL_PERMILLE: u64 = 500;

impl Cluster {
    /// Slots for every replica, with fresh disks.
    pub fn new(config: SimConfig, mutant: Option<Mutant>, workload: Arc<dyn Workload>) -> Cluster {
        let slots = (1..=config.nodes)
            .map(|id| {
                let faults = DiskFaults {
                    seed: config.seed ^ salt::DISK ^ id,
                    sync_fail: config.sync_fail,
                    sector_survives_crash: config.sector_survives_crash,
                    // Room for `n` segments and as many index files (16 KiB each).
                    // The messaging workload's store shares the disk; it runs without a limit.
                    capacity_bytes: config
                        .disk_segments_max
                        .filter(|_| workload.disk_limited())
                        .map(|n| n * (SIM_SEGMENT_BYTES + 16 * 1024)),
                    latency_max: Duration::from_micros(config.disk_latency_max_us),
                    read_corrupt: config.read_corrupt,
                };
                let slot = Slot {
                    disk: MemDisk::with_faults(faults),
                    ledger: None,
                    machine: RecordingStateMachine::new(),
                    store: None,
                    broker: None,
                    incarnation: 0,
                    start_error: None,
                    start_io_error: None,
                };
                (id, slot)
            })
            .collect();
        let disk_used_permille = (1..=config.nodes)
            .map(|id| {
                let used = std::sync::atomic::AtomicU64::new(DISK_USED_NORMAL_PERMILLE);
                (id, Arc::new(used))
            })
            .collect();
        Cluster {
            disk_used_permille: Arc::new(disk_used_permille),
            slots: Arc::new(Mutex::new(slots)),
            oracle: Arc::new(Mutex::new(Oracle::default())),
            quiet: Arc::new(AtomicBool::new(false)),
            config: Arc::new(config),
            mutant,
            workload,
        }
    }

    fn peers(&self) -> BTreeMap<u64, String> {
        (1..=self.config.nodes)
            .map(|id| (id, format!("{}:{RAFT_PORT}", host_name(id))))
            .collect()
    }

    fn ledger_config(&self, id: u64, incarnation: u64) -> LedgerConfig {
        let c = &self.config;
        let mut config = LedgerConfig::new(
            id,
            self.peers(),
            PathBuf::from(format!("/{}", host_name(id))),
        );
        config.segment_bytes = SIM_SEGMENT_BYTES;
        config.index_units_per_file = 512;
        config.entry_body_bytes_max = self.workload.entry_body_bytes_max();
        config.heartbeat_interval = Duration::from_millis(c.heartbeat_ms);
        config.election_timeout_min = Duration::from_millis(c.election_min_ms);
        config.election_timeout_max = Duration::from_millis(c.election_max_ms);
        config.rpc_timeout = Duration::from_millis(c.rpc_timeout_ms);
        config.seed = Some(c.seed ^ salt::RAFT ^ (id << 32) ^ incarnation);
        config.mutants = Mutants {
            ack_before_sync: self.mutant == Some(Mutant::AckBeforeSync),
            apply_before_commit: self.mutant == Some(Mutant::ApplyBeforeCommit),
            skip_recovery_crc: self.mutant == Some(Mutant::SkipRecoveryCrc),
            forget_vote: self.mutant == Some(Mutant::ForgetVote),
            ignore_quorum_loss: self.mutant == Some(Mutant::IgnoreQuorumLoss),
            fail_on_full_disk: self.mutant == Some(Mutant::FailOnFullDisk),
        };
        config
    }

    fn start_failed(&self, id: u64, err: String, io: bool) {
        let mut slots = self.slots.lock().expect("slots");
        let slot = slots.get_mut(&id).expect("slot");
        // An injected I/O fault at start is the disk failing; anything else (a corrupt or
        // missing committed entry) means the files are not what was synced.
        if io {
            slot.start_io_error = Some(err);
        } else {
            slot.start_error = Some(err);
        }
    }

    /// The body of replica `id`'s host: start the ledger from the slot's disk, then run the
    /// workload over it.
    pub async fn run_host(self, id: u64) -> turmoil::Result {
        let (disk, incarnation) = {
            let mut slots = self.slots.lock().expect("slots");
            let slot = slots.get_mut(&id).expect("slot exists");
            slot.incarnation += 1;
            slot.ledger = None;
            slot.store = None;
            slot.broker = None;
            slot.start_error = None;
            slot.start_io_error = None;
            (slot.disk.clone(), slot.incarnation)
        };
        let corrupted_before = disk.fault_counts().reads_corrupted;
        let sync_failures_before = disk.fault_counts().syncs_failed;
        let listener =
            RaftListener::bind(&TurmoilTransport, &format!("0.0.0.0:{RAFT_PORT}")).await?;
        let machine = RecordingStateMachine::new();
        let config = self.ledger_config(id, incarnation);
        let applier = match self.workload.open(id, &disk, machine.clone()) {
            Ok(applier) => applier,
            Err(err) => {
                // A read that returned corrupted bytes makes intact files look damaged.
                let io = err.io || disk.fault_counts().reads_corrupted > corrupted_before;
                self.start_failed(id, err.reason, io);
                std::future::pending::<()>().await;
                unreachable!("pending never completes");
            }
        };
        let store = applier.store.clone();
        let started = Ledger::start(
            config,
            disk.clone(),
            TurmoilTransport,
            listener,
            applier.machine,
            applier.hook,
        )
        .await;
        let ledger = match started {
            Ok(ledger) => ledger,
            Err(err) => {
                // A read that returned corrupted bytes during recovery makes intact files look
                // damaged, and a sync that failed while the state machine applied the log at
                // start (a checkpoint) fails the start through the state machine: both starts
                // are retried like one that hit an I/O error.
                let counts = disk.fault_counts();
                let corrupted_during_start = counts.reads_corrupted > corrupted_before;
                let sync_failed_during_start = counts.syncs_failed > sync_failures_before;
                let io = corrupted_during_start
                    || sync_failed_during_start
                    || matches!(
                        err,
                        dledger::StartError::Storage(dledger::StorageError::Io { .. })
                    );
                self.start_failed(id, err.to_string(), io);
                std::future::pending::<()>().await;
                unreachable!("pending never completes");
            }
        };
        {
            let mut slots = self.slots.lock().expect("slots");
            let slot = slots.get_mut(&id).expect("slot exists");
            slot.ledger = Some(ledger.clone());
            slot.machine = machine;
            slot.store = store.clone();
        }
        let workload = self.workload.clone();
        workload.serve(self, id, incarnation, ledger, store).await
    }
}
