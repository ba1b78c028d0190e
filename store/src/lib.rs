//! The message store over dledger: the ConsumeQueues and the IndexFile built from the committed
//! log.
//!
//! # Layout
//! - [`consume_queue`]: RocketMQ's ConsumeQueue, one per (topic, queue id), and the set of them.
//! - [`index_file`]: RocketMQ's IndexFile, to query messages by key and time.
//! - [`timer`]: scheduled messages by due time (delay levels, timer messages), and delivery
//!   progress.
//! - [`transactions`]: half messages and their outcomes (commit, rollback, checks, discard).
//! - [`error`]: the store's error type.
//!
//! Every byte goes through dledger's storage seam ([`dledger::Disk`]), so the simulation can run
//! the store on a disk model that loses unsynced bytes on a crash.

pub mod consume_queue;
pub mod entry;
pub mod error;
pub mod index_file;
pub mod store;
pub mod timer;
pub mod transactions;

pub use store::{BaseMark, Placement, QueueItem, RetentionView, Store, StoreConfig, StoreMachine};
