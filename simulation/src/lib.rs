//! Deterministic simulation of raftmq replica groups: whole clusters in one process under
//! turmoil's simulated network and clock, over a disk model that loses unsynced bytes, driven by
//! one `u64` seed that reproduces every run bit for bit.
//!
//! # Layout
//! - [`config`]: everything a seed decides (cluster size, timeouts, fault odds, workload).
//! - [`transport`]: the seams (network and wall clock) over turmoil.
//! - [`cluster`]: the replicas as turmoil hosts, with their disks kept outside the hosts so a
//!   crash keeps what was synced.
//! - [`proposers`]: the ledger workload (`--layer ledger`): proposers of opaque entries.
//! - [`messaging`]: the messaging workload (`--layer broker`): brokers, a name server and
//!   producers over the remoting protocol.
//! - [`links`]: the driver's copy of which links between replicas deliver.
//! - [`oracle`]: the workload's record of acknowledged entries.
//! - [`invariants`]: one file per property checked after every step.
//! - [`run`]: one seed from start to verdict: fault phase, then healing and liveness.

#[cfg(not(tokio_unstable))]
compile_error!("the simulation needs `--cfg tokio_unstable` (set in .cargo/config.toml)");

pub mod cluster;
pub mod config;
pub mod invariants;
pub mod links;
pub mod messaging;
pub mod oracle;
pub mod proposers;
pub mod run;
pub mod transport;

pub use config::SimConfig;
pub use run::{RunReport, run_seed};
