//! Properties checked after every step, one per file. Each returns the first violation it finds.

mod acked_consumable;
mod acked_in_later_leader;
mod applied_le_committed;
mod applied_only_committed;
mod committed_identical;
mod committed_monotonic;
mod consume_queue_within_committed;
mod election_safety;
mod no_writes_without_quorum;
mod queue_offsets_identical;
mod retention;
mod scheduled;
mod store_applied_le_committed;
mod transactions;

pub use acked_consumable::check as acked_consumable;
pub use acked_consumable::check_consumed as consumed_committed;
pub use acked_consumable::refused_not_stored;
pub use no_writes_without_quorum::NOTICE_MARGIN_MS;
pub use scheduled::delivered_once as scheduled_delivered_once;
pub use scheduled::skips_queue;
pub use transactions::{
    check_pulled as transaction_pulled, settled_once as transactions_settled_once,
};

use std::collections::BTreeMap;

use dledger::testing::Record;
use dledger::{Ledger, MemDisk, Status};
use store::Store;

use crate::oracle::Acked;

/// A broken property: which, and the values that break it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The invariant's name.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

fn violation(invariant: &'static str, detail: String) -> Result<(), Violation> {
    Err(Violation { invariant, detail })
}

/// One running replica as seen at a step.
pub struct NodeView<'a> {
    /// Its id.
    pub id: u64,
    /// Its life number.
    pub incarnation: u64,
    /// Its status.
    pub status: Status,
    /// Its ledger, to read its log.
    pub ledger: &'a Ledger,
    /// What its state machine applied this life.
    pub applied: Vec<Record>,
    /// Its message store (messaging workload).
    pub store: Option<&'a Store<MemDisk>>,
    /// Whether it reports taking writes: its broker's `serving_writes` (messaging workload),
    /// or its ledger leading with its quorum lease (ledger workload).
    pub serving_writes: bool,
}

/// One ConsumeQueue unit as compared across replicas: commit-log offset, size, tags hash.
type Unit = (u64, u32, i64);

/// What the checker remembers between steps.
#[derive(Default)]
pub struct Checker {
    /// term -> the replica that led it.
    leaders: BTreeMap<u64, u64>,
    /// The committed log as far as any replica committed it: index -> (term, body).
    canonical: BTreeMap<u64, (u64, Option<Vec<u8>>)>,
    /// Per replica life: committed index checked against the canonical log.
    checked_committed: BTreeMap<(u64, u64), u64>,
    /// Per replica life: last committed index seen.
    last_committed: BTreeMap<(u64, u64), u64>,
    /// Per replica life: applied records already checked.
    checked_applied: BTreeMap<(u64, u64), usize>,
    /// Leader terms whose log was checked for every acknowledged entry.
    leader_terms_checked: BTreeMap<u64, usize>,
    /// Per replica life and queue: units checked against the committed log's end.
    units_within_committed: BTreeMap<(u64, u64, String, i32), u64>,
    /// Per queue: the units as far as any replica has them.
    canonical_units: BTreeMap<(String, i32), Vec<Unit>>,
    /// Per replica life and queue: units compared with the canonical ones.
    units_compared: BTreeMap<(u64, u64, String, i32), u64>,
    /// The timer state some replica held right after each applied entry.
    timers_at: HeldAfter<store::timer::TimerStats>,
    /// The retention view some replica held right after each applied entry.
    retention_at: HeldAfter<store::RetentionView>,
    /// The transaction counts some replica held right after each applied entry.
    transactions_at: HeldAfter<store::transactions::TransactionCounts>,
    /// Each replica life's min offset of each queue, as last checked.
    mins_seen: BTreeMap<(u64, u64, i32), i64>,
}

impl Checker {
    /// Checks every invariant over the replicas running now.
    ///
    /// # Errors
    /// The first violation found.
    pub fn check(&mut self, nodes: &[NodeView<'_>], acked: &[Acked]) -> Result<(), Violation> {
        election_safety::check(self, nodes)?;
        committed_monotonic::check(self, nodes)?;
        committed_identical::check(self, nodes)?;
        applied_le_committed::check(nodes)?;
        applied_only_committed::check(self, nodes)?;
        acked_in_later_leader::check(self, nodes, acked)?;
        Ok(())
    }

    /// Checks the invariants of the messaging layers over the replicas running now.
    ///
    /// # Errors
    /// The first violation found.
    pub fn check_messaging(&mut self, nodes: &[NodeView<'_>]) -> Result<(), Violation> {
        store_applied_le_committed::check(nodes)?;
        consume_queue_within_committed::check(self, nodes)?;
        queue_offsets_identical::check(self, nodes)?;
        scheduled::check_identical(self, nodes)?;
        retention::check_identical(self, nodes)?;
        transactions::check_identical(self, nodes)?;
        Ok(())
    }

    /// Checks that retention cut no message younger than `reserved_ms` (sim time `now_ms`).
    ///
    /// # Errors
    /// The first message cut too young.
    pub fn check_retention(
        &mut self,
        nodes: &[NodeView<'_>],
        sends: &[crate::oracle::SendAck],
        reserved_ms: u64,
        now_ms: i64,
    ) -> Result<(), Violation> {
        retention::check_only_expired(self, nodes, sends, reserved_ms, now_ms)
    }

    /// Checks that no replica cut off from a quorum for longer than the lease (`lease_ms`, plus
    /// a margin) reports taking writes. `cut_since` maps each replica that cannot reach a
    /// quorum now to the step since which it could not.
    ///
    /// # Errors
    /// The first violation found.
    pub fn check_quorum(
        &self,
        nodes: &[NodeView<'_>],
        cut_since: &BTreeMap<u64, u64>,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<(), Violation> {
        no_writes_without_quorum::check(nodes, cut_since, now_ms, lease_ms)
    }

    /// Entries known committed.
    pub fn canonical_len(&self) -> usize {
        self.canonical.len()
    }
}

/// What replicas hold right after applying an entry, by entry index: the first replica seen
/// there, and what it held.
pub(super) type HeldAfter<T> = BTreeMap<u64, (u64, T)>;

/// Records what `node` holds right after applying entry `index`, or compares it with what the
/// first replica seen there held: replicas that applied the same entries must hold the same.
fn same_after_entry<T: PartialEq + std::fmt::Debug>(
    held: &mut HeldAfter<T>,
    invariant: &'static str,
    what: &str,
    index: u64,
    node: u64,
    value: T,
) -> Result<(), Violation> {
    match held.get(&index) {
        Some((first, seen)) if *seen != value => violation(
            invariant,
            format!(
                "after entry {index} node {node} holds {what} {value:?}, node {first} {seen:?}"
            ),
        ),
        Some(_) => Ok(()),
        None => {
            held.insert(index, (node, value));
            Ok(())
        }
    }
}

/// The body of a data entry, `None` for blank and membership entries.
fn body_of(entry: &dledger::CommittedEntry) -> Option<Vec<u8>> {
    match &entry.payload {
        dledger::EntryPayload::Data(data) => Some(data.to_vec()),
        _ => None,
    }
}

/// Every (topic, queue id) a store knows, in order.
fn queues_of(store: &Store<MemDisk>) -> Vec<(String, i32)> {
    store
        .topics()
        .into_values()
        .flat_map(|t| {
            let queues = t.read_queue_nums.max(t.write_queue_nums).max(0);
            (0..queues).map(move |q| (t.topic_name.clone(), q))
        })
        .collect()
}

/// Units of a queue from `from` (or its min offset, if retention cut past `from`) on, as far
/// as the store has them, and the offset they start at.
fn units_from(
    store: &Store<MemDisk>,
    topic: &str,
    queue_id: i32,
    from: u64,
) -> Result<(u64, Vec<store::QueueItem>), store::error::StoreError> {
    let from = from.max(store.min_offset(topic, queue_id) as u64);
    let mut out = Vec::new();
    loop {
        let next = from + out.len() as u64;
        let batch = store.read_queue(topic, queue_id, next as i64, 1024)?;
        if batch.is_empty() {
            return Ok((from, out));
        }
        out.extend(batch);
    }
}
