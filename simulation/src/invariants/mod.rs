//! Properties checked after every step, one per file. Each returns the first violation it finds.

mod acked_in_later_leader;
mod applied_le_committed;
mod applied_only_committed;
mod committed_identical;
mod committed_monotonic;
mod election_safety;

use std::collections::BTreeMap;

use dledger::testing::Record;
use dledger::{Ledger, Status};

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
}

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

    /// Entries known committed.
    pub fn canonical_len(&self) -> usize {
        self.canonical.len()
    }
}

/// The body of a data entry, `None` for blank and membership entries.
fn body_of(entry: &dledger::CommittedEntry) -> Option<Vec<u8>> {
    match &entry.payload {
        dledger::EntryPayload::Data(data) => Some(data.to_vec()),
        _ => None,
    }
}
