//! Transactional messages (FEATURES-SPEC.md §4): every half message and what became of it, on
//! disk, and the outcomes the leader writes through the log.
//!
//! ### What is replicated, what is derived
//! A half message is an ordinary record in `RMQ_SYS_TRANS_HALF_TOPIC` queue 0, so applying it
//! gives it a half queue offset `h` like any record. Beside the half ConsumeQueue the store keeps
//! the half log, a [`UnitQueue`] of [`HalfUnit`]s in which unit `h` is half message `h`: where its
//! record is, when it was stored, its immunity, and its state (pending, committed, rolled back,
//! discarded) with the checks sent for it. Memory holds counters and one scan position; the
//! pending half messages themselves are only on disk, however many there are.
//!
//! Everything that changes a half message is an [`Outcome`] in a `Transactions` entry, decided by
//! the leader: a commit (with the committed record in the same entry), a rollback, a check (the
//! leader is about to ask the producer), or a discard after too many checks (with its copy for
//! `TRANS_CHECK_MAX_TIME_TOPIC`). Applying an outcome changes a pending unit only, so a second
//! commit, a commit after a rollback or a check after a commit changes nothing, and the record
//! an outcome carries is dispatched to its queue only when the outcome applied: a committed
//! transaction is visible exactly once, a rolled-back one never.
//!
//! ### Replaying after a restart or a snapshot
//! A unit remembers the outcome that last changed it (`changed_by`, the entry, and
//! `changed_slot`, its place among the entry's outcomes). A restart applies again the
//! entries after its checkpoint over half units that may already hold their effects (units are
//! changed in place), and a snapshot carries the half units as they were when it was sent. So an
//! outcome counts as applied when the unit is pending (and, for a check, has the checks the
//! outcome expected), or when the unit says this very outcome changed it last: it applied
//! before, and its record must be dispatched again. A unit changed by a later outcome was not
//! changed by this one (once resolved, a unit never changes again). The half log is cut back to the checkpoint's length at start, as the
//! ConsumeQueues are, so half messages applied after it are added again.

use std::path::Path;

use dledger::Disk;
use serde::{Deserialize, Serialize};

use crate::consume_queue::{QueueUnit, UnitQueue};
use crate::error::StoreError;

/// Half units per file of the half log: 6 MiB files.
pub const UNITS_PER_FILE: u64 = 128 * 1024;

/// Bytes of a [`HalfUnit`] on disk: 64, so a unit never straddles a 512-byte sector and its
/// in-place rewrite (an outcome) reaches the disk whole or not at all. At 56 bytes a crash could
/// leave a unit half old, half new (the simulation's torn sectors did: a committed unit read back
/// as pending with the commit's `changed_by`, and the commit was applied and counted twice). The
/// last 4 bytes are a CRC32C of the rest, so a unit torn all the same is found, not believed.
pub const HALF_UNIT_BYTES: u64 = 64;
const _: () = assert!(512 % HALF_UNIT_BYTES == 0);

/// Bytes of an [`Outcome`] in an entry.
pub const OUTCOME_BYTES: usize = 32;

/// Units the first-pending position moves over per outcome applied: a long run of resolved units
/// behind one old pending one is walked a piece at a time, never in one apply.
const FIRST_PENDING_STEP_MAX: u64 = 4096;

/// Units read at first when the first-pending position moves (doubling up to
/// [`FIRST_PENDING_STEP_MAX`]): the next pending unit is usually a few units on, behind the
/// outcomes of the transactions still in flight, so reading the whole step each time cost more
/// than the rest of applying the outcome.
const FIRST_PENDING_READ_FIRST: u64 = 16;

/// What became of a half message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum HalfState {
    /// No outcome yet: the leader checks it once it is old enough.
    Pending = 1,
    /// Committed: its record was written to its real topic and queue.
    Committed = 2,
    /// Rolled back: nothing visible was written.
    RolledBack = 3,
    /// Given up after `transactionCheckMax` checks (or its record was purged before an outcome).
    Discarded = 4,
}

impl HalfState {
    fn from_u8(byte: u8) -> Option<HalfState> {
        Some(match byte {
            1 => HalfState::Pending,
            2 => HalfState::Committed,
            3 => HalfState::RolledBack,
            4 => HalfState::Discarded,
            _ => return None,
        })
    }
}

/// One half message in the half log.
///
/// Layout, big-endian: `commit_log_offset` (8) | `size` (4) | state (1) | zeros (3) | `checks`
/// (4) | `immunity_secs` (4) | `store_ms` (8) | `changed_by` (8) | `changed_slot` (4) | zeros
/// (4) | `last_check_ms` (8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HalfUnit {
    /// Where the half record sits in the CommitLog.
    pub commit_log_offset: u64,
    /// Bytes of the half record.
    pub size: u32,
    /// What became of it.
    pub state: HalfState,
    /// Checks the leader sent for it (`TRANSACTION_CHECK_TIMES`).
    pub checks: u32,
    /// `CHECK_IMMUNITY_TIME_IN_SECONDS` of the message, if it set a valid one (else -1): no check
    /// before that many seconds.
    pub immunity_secs: i32,
    /// When the leader stored the half message.
    pub store_ms: i64,
    /// The entry that last changed the unit (the one that added it, at first).
    pub changed_by: u64,
    /// Which outcome of that entry changed it (0 when it was added).
    pub changed_slot: u32,
    /// When the last check was decided (the leader's clock, from the entry); 0 before any.
    pub last_check_ms: i64,
}

impl QueueUnit for HalfUnit {
    const BYTES: u64 = HALF_UNIT_BYTES;
    const BLANK: Self = HalfUnit {
        commit_log_offset: 0,
        size: i32::MAX as u32,
        state: HalfState::Discarded,
        checks: 0,
        immunity_secs: -1,
        store_ms: 0,
        changed_by: 0,
        changed_slot: 0,
        last_check_ms: 0,
    };

    fn problem(&self) -> Option<&'static str> {
        if self.size == 0 {
            Some("size is 0")
        } else if i32::try_from(self.size).is_err() {
            Some("size exceeds i32::MAX")
        } else if i64::try_from(self.commit_log_offset).is_err() {
            Some("commit_log_offset exceeds i64::MAX")
        } else {
            None
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(self.problem().is_none(), "only valid units are encoded");
        out.extend_from_slice(&self.commit_log_offset.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&[self.state as u8, 0, 0, 0]);
        out.extend_from_slice(&self.checks.to_be_bytes());
        out.extend_from_slice(&self.immunity_secs.to_be_bytes());
        out.extend_from_slice(&self.store_ms.to_be_bytes());
        out.extend_from_slice(&self.changed_by.to_be_bytes());
        out.extend_from_slice(&self.changed_slot.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&self.last_check_ms.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        let start = out.len() - (HALF_UNIT_BYTES as usize - 4);
        let crc = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Result<Option<Self>, &'static str> {
        let bytes: &[u8; HALF_UNIT_BYTES as usize] =
            bytes.try_into().expect("callers pass unit-sized slices");
        if bytes.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let u64_at = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8"));
        let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4"));
        if u32_at(60) != crc32c::crc32c(&bytes[..60]) {
            return Err("checksum mismatch (a torn or damaged unit)");
        }
        if bytes[13..16] != [0, 0, 0] || bytes[44..48] != [0, 0, 0, 0] || bytes[56..60] != [0; 4] {
            return Err("reserved bytes are not zero");
        }
        let unit = HalfUnit {
            commit_log_offset: u64_at(0),
            size: u32_at(8),
            state: HalfState::from_u8(bytes[12]).ok_or("unknown state")?,
            checks: u32_at(16),
            immunity_secs: u32_at(20) as i32,
            store_ms: u64_at(24) as i64,
            changed_by: u64_at(32),
            changed_slot: u32_at(40),
            last_check_ms: u64_at(48) as i64,
        };
        match unit.problem() {
            Some(reason) => Err(reason),
            None => Ok(Some(unit)),
        }
    }
}

/// What an [`Outcome`] does to its half message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Action {
    /// END_TRANSACTION commit: the outcome's record is the message for its real topic.
    Commit = 1,
    /// END_TRANSACTION rollback: no record.
    Rollback = 2,
    /// Given up after too many checks: the record, if any, is the copy for
    /// `TRANS_CHECK_MAX_TIME_TOPIC` (none when the half record itself was purged).
    Discard = 3,
    /// The leader checks the producer: the check count goes from `expected_checks` to one more.
    Check = 4,
}

impl Action {
    fn from_u8(byte: u8) -> Option<Action> {
        Some(match byte {
            1 => Action::Commit,
            2 => Action::Rollback,
            3 => Action::Discard,
            4 => Action::Check,
            _ => return None,
        })
    }
}

/// One change to one half message, decided by the leader.
///
/// Layout in an entry, big-endian: `half_offset` (8) | `at_ms` (8) | `expected_checks` (4) |
/// `record` (4, -1 for none) | action (1) | zeros (7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The half message: its offset in the half queue.
    pub half_offset: u64,
    /// What happens to it.
    pub action: Action,
    /// For a check: the checks the leader saw (the outcome applies only on that count).
    pub expected_checks: u32,
    /// The leader's clock when it decided.
    pub at_ms: i64,
    /// The record of the entry this outcome carries (its place among the entry's records), if
    /// any: dispatched only if the outcome applies.
    pub record: Option<u32>,
}

impl Outcome {
    /// Appends the outcome's [`OUTCOME_BYTES`] bytes.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.half_offset.to_be_bytes());
        out.extend_from_slice(&self.at_ms.to_be_bytes());
        out.extend_from_slice(&self.expected_checks.to_be_bytes());
        let record = self.record.map_or(-1, |r| {
            i32::try_from(r).expect("records of one entry fit i32")
        });
        out.extend_from_slice(&record.to_be_bytes());
        out.extend_from_slice(&[self.action as u8, 0, 0, 0, 0, 0, 0, 0]);
    }

    /// Reads one outcome from [`OUTCOME_BYTES`] bytes.
    ///
    /// # Errors
    /// What is wrong with them.
    pub fn decode(bytes: &[u8]) -> Result<Outcome, String> {
        let bytes: &[u8; OUTCOME_BYTES] = bytes
            .try_into()
            .map_err(|_| format!("an outcome of {} bytes", bytes.len()))?;
        let u64_at = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8"));
        let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4"));
        let action =
            Action::from_u8(bytes[24]).ok_or_else(|| format!("unknown action {}", bytes[24]))?;
        let record = match u32_at(20) as i32 {
            -1 => None,
            r if r >= 0 => Some(r as u32),
            r => return Err(format!("record {r}")),
        };
        Ok(Outcome {
            half_offset: u64_at(0),
            at_ms: u64_at(8) as i64,
            expected_checks: u32_at(16),
            record,
            action,
        })
    }
}

/// Counts of what the applied entries did, kept with the checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionCounts {
    /// Half messages stored.
    pub halves: u64,
    /// Committed.
    pub commits: u64,
    /// Rolled back.
    pub rollbacks: u64,
    /// Given up.
    pub discards: u64,
}

impl TransactionCounts {
    /// Half messages without an outcome.
    pub fn pending(&self) -> u64 {
        self.halves
            .saturating_sub(self.commits + self.rollbacks + self.discards)
    }
}

/// What the checkpoint (and a snapshot's base) keeps of the transaction state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionCheckpoint {
    /// Units in the half log.
    pub length: u64,
    /// No pending half message comes before this offset.
    pub first_pending: u64,
    /// The counts.
    pub counts: TransactionCounts,
}

/// The half log and what the outcomes did.
pub struct Transactions<D: Disk> {
    log: UnitQueue<D, HalfUnit>,
    first_pending: u64,
    counts: TransactionCounts,
}

impl<D: Disk> std::fmt::Debug for Transactions<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transactions")
            .field("length", &self.log.queue_offset_max())
            .field("first_pending", &self.first_pending)
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl<D: Disk> Transactions<D> {
    /// Opens the half log in `dir`; a log longer than the checkpoint says is cut back to it (its
    /// entries are applied again). Answers `false` beside it when the log holds less than the
    /// checkpoint counts (a lost file): the store then clears it and starts over.
    ///
    /// # Errors
    /// Those of [`UnitQueue::open`].
    pub fn open(
        disk: D,
        dir: &Path,
        checkpoint: TransactionCheckpoint,
    ) -> Result<(Self, bool), StoreError> {
        let mut log = UnitQueue::open(disk, dir, UNITS_PER_FILE)?;
        if log.queue_offset_max() < checkpoint.length {
            tracing::warn!(dir = %dir.display(), have = log.queue_offset_max(), want = checkpoint.length, "half log shorter than its checkpoint: rebuilding the store from the log");
            let transactions = Transactions {
                log,
                first_pending: 0,
                counts: TransactionCounts::default(),
            };
            return Ok((transactions, false));
        }
        log.truncate_from(checkpoint.length)?;
        let transactions = Transactions {
            log,
            first_pending: checkpoint.first_pending,
            counts: checkpoint.counts,
        };
        transactions.check_invariants();
        Ok((transactions, true))
    }

    /// Adds half message `half_offset` (the queue offset its record got in the half queue, which
    /// must be the log's next unit), stored by entry `index`.
    ///
    /// # Errors
    /// [`StoreError::QueueOffsetGap`] if the half queue and the half log disagree; a file error.
    pub fn add(
        &mut self,
        half_offset: u64,
        index: u64,
        commit_log_offset: u64,
        size: u32,
        store_ms: i64,
        immunity_secs: Option<i32>,
    ) -> Result<(), StoreError> {
        let unit = HalfUnit {
            commit_log_offset,
            size,
            state: HalfState::Pending,
            checks: 0,
            immunity_secs: immunity_secs.unwrap_or(-1),
            store_ms,
            changed_by: index,
            changed_slot: 0,
            last_check_ms: 0,
        };
        self.log.append(half_offset, unit)?;
        self.counts.halves += 1;
        Ok(())
    }

    /// Applies `outcome`, the `slot`-th outcome of entry `index`; answers whether it applied (its
    /// record, if any, is then dispatched). See the module doc for the rule. An outcome for a
    /// half message this replica does not hold (below the purged floor, or never stored) does
    /// not apply.
    ///
    /// # Errors
    /// A file error or a corrupt unit.
    pub fn apply(&mut self, outcome: &Outcome, index: u64, slot: u32) -> Result<bool, StoreError> {
        let Some(mut unit) = self.log.get(outcome.half_offset)? else {
            return Ok(false);
        };
        let changed = (unit.changed_by, unit.changed_slot);
        if changed == (index, slot) {
            // Applied before this restart (or before the snapshot was taken): the state holds
            // it; only the record goes out again.
            self.count(outcome.action);
            return Ok(true);
        }
        if changed > (index, slot) || unit.state != HalfState::Pending {
            return Ok(false);
        }
        match outcome.action {
            Action::Check => {
                if unit.checks != outcome.expected_checks {
                    return Ok(false);
                }
                unit.checks += 1;
                unit.last_check_ms = outcome.at_ms;
            }
            Action::Commit => unit.state = HalfState::Committed,
            Action::Rollback => unit.state = HalfState::RolledBack,
            Action::Discard => unit.state = HalfState::Discarded,
        }
        unit.changed_by = index;
        unit.changed_slot = slot;
        self.log.replace(outcome.half_offset, unit)?;
        self.count(outcome.action);
        if outcome.half_offset == self.first_pending {
            self.advance_first_pending()?;
        }
        Ok(true)
    }

    fn count(&mut self, action: Action) {
        match action {
            Action::Commit => self.counts.commits += 1,
            Action::Rollback => self.counts.rollbacks += 1,
            Action::Discard => self.counts.discards += 1,
            Action::Check => {}
        }
    }

    /// Moves the first-pending position over resolved units, at most
    /// [`FIRST_PENDING_STEP_MAX`] of them.
    fn advance_first_pending(&mut self) -> Result<(), StoreError> {
        self.first_pending = self.first_pending.max(self.log.queue_offset_min());
        let end = self.log.queue_offset_max();
        let stop = end.min(self.first_pending + FIRST_PENDING_STEP_MAX);
        let mut chunk = FIRST_PENDING_READ_FIRST;
        while self.first_pending < stop {
            let units = self
                .log
                .read(self.first_pending, chunk.min(stop - self.first_pending))?;
            if units.is_empty() {
                break;
            }
            chunk = (chunk * 2).min(FIRST_PENDING_STEP_MAX);
            for unit in units {
                if unit.state == HalfState::Pending {
                    return Ok(());
                }
                self.first_pending += 1;
            }
        }
        Ok(())
    }

    /// The half unit at `half_offset`, if held.
    ///
    /// # Errors
    /// A file error or a corrupt unit.
    pub fn get(&self, half_offset: u64) -> Result<Option<HalfUnit>, StoreError> {
        self.log.get(half_offset)
    }

    /// Up to `max` units from `from` (at least the first held), with their half offsets: the
    /// leader's check scan reads the log this way.
    ///
    /// # Errors
    /// A file error or a corrupt unit.
    pub fn read(&self, from: u64, max: u64) -> Result<Vec<(u64, HalfUnit)>, StoreError> {
        let from = from.max(self.log.queue_offset_min());
        Ok((from..).zip(self.log.read(from, max)?).collect())
    }

    /// No pending half message comes before this offset.
    pub fn first_pending(&self) -> u64 {
        self.first_pending.max(self.log.queue_offset_min())
    }

    /// The next half offset: units in the log.
    pub fn length(&self) -> u64 {
        self.log.queue_offset_max()
    }

    /// The counts.
    pub fn counts(&self) -> TransactionCounts {
        self.counts
    }

    /// The units `from..to`, for a snapshot.
    ///
    /// # Errors
    /// A file error.
    pub fn units(&self, from: u64, to: u64) -> Result<Vec<HalfUnit>, StoreError> {
        self.log.read_range(from, to)
    }

    /// Where a snapshot's half units start: the first unit held, or the first pending one, if
    /// later (the units before it are resolved and need not travel).
    pub fn snapshot_from(checkpoint: &TransactionCheckpoint) -> u64 {
        checkpoint.first_pending.min(checkpoint.length)
    }

    /// Replaces everything with a snapshot's: the log starts at `from` (blanks below, which no
    /// outcome changes), holds `units` up to `checkpoint.length`, and the counts are the
    /// checkpoint's.
    ///
    /// # Errors
    /// A file error, or units that do not reach `checkpoint.length`.
    pub fn restore(
        &mut self,
        checkpoint: TransactionCheckpoint,
        from: u64,
        units: &[HalfUnit],
    ) -> Result<(), StoreError> {
        self.clear()?;
        self.log.start_at(from)?;
        self.log.append_many(from, units)?;
        if self.log.queue_offset_max() != checkpoint.length {
            return Err(StoreError::Corrupt {
                path: self.log.dir().to_path_buf(),
                file_offset: 0,
                reason: format!(
                    "a snapshot's half log holds {} units from {from}, not up to {}",
                    units.len(),
                    checkpoint.length
                ),
            });
        }
        self.first_pending = checkpoint.first_pending.max(from);
        self.counts = checkpoint.counts;
        self.log.flush()?;
        self.check_invariants();
        Ok(())
    }

    /// Removes the log's files wholly below `half_offset` (retention cut the half queue there).
    ///
    /// # Errors
    /// A file error.
    pub fn purge_before(&mut self, half_offset: u64) -> Result<u64, StoreError> {
        self.log.purge_before(half_offset)
    }

    /// What the checkpoint would keep, without flushing.
    pub fn checkpoint_view(&self) -> TransactionCheckpoint {
        TransactionCheckpoint {
            length: self.log.queue_offset_max(),
            first_pending: self.first_pending(),
            counts: self.counts,
        }
    }

    /// Makes every unit durable and says what the checkpoint keeps.
    ///
    /// # Errors
    /// A file error.
    pub fn flush(&mut self) -> Result<TransactionCheckpoint, StoreError> {
        self.log.flush()?;
        Ok(self.checkpoint_view())
    }

    /// Forgets every unit (the store applies the log again from its start).
    ///
    /// # Errors
    /// A file error.
    pub fn clear(&mut self) -> Result<(), StoreError> {
        self.log.clear()?;
        self.first_pending = 0;
        self.counts = TransactionCounts::default();
        Ok(())
    }

    /// Asserts what the transaction state keeps true: the log is sound, the first-pending
    /// position lies within it, and no more half messages are resolved than were stored.
    pub fn check_invariants(&self) {
        self.log.check_invariants();
        assert!(
            self.first_pending() <= self.log.queue_offset_max().max(self.first_pending),
            "first pending {} lies within the half log of {}",
            self.first_pending,
            self.log.queue_offset_max()
        );
        let c = self.counts;
        assert!(
            c.commits + c.rollbacks + c.discards <= c.halves,
            "more outcomes than half messages: {c:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use dledger::MemDisk;

    use super::*;

    fn open(disk: &MemDisk, checkpoint: TransactionCheckpoint) -> Transactions<MemDisk> {
        let (t, complete) =
            Transactions::open(disk.clone(), Path::new("/t/half"), checkpoint).unwrap();
        assert!(complete);
        t
    }

    fn outcome(half_offset: u64, action: Action, expected_checks: u32) -> Outcome {
        Outcome {
            half_offset,
            action,
            expected_checks,
            at_ms: 500,
            record: (action == Action::Commit).then_some(0),
        }
    }

    #[test]
    fn units_and_outcomes_round_trip() {
        let unit = HalfUnit {
            commit_log_offset: 77,
            size: 300,
            state: HalfState::Committed,
            checks: 3,
            immunity_secs: -1,
            store_ms: 1_700_000_000_000,
            changed_by: 42,
            changed_slot: 3,
            last_check_ms: 9,
        };
        let mut bytes = Vec::new();
        unit.encode_into(&mut bytes);
        assert_eq!(bytes.len() as u64, HALF_UNIT_BYTES);
        assert_eq!(HalfUnit::decode(&bytes).unwrap(), Some(unit));
        bytes[12] = 9;
        assert!(
            HalfUnit::decode(&bytes).unwrap_err().contains("checksum"),
            "a changed byte fails the unit's checksum"
        );
        let crc = crc32c::crc32c(&bytes[..60]);
        bytes[60..].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(HalfUnit::decode(&bytes).unwrap_err(), "unknown state");
        // A unit torn between an older and a newer write is refused, not believed.
        let mut newer = unit;
        newer.state = HalfState::Pending;
        newer.changed_by = 43;
        let (mut old, mut new) = (Vec::new(), Vec::new());
        unit.encode_into(&mut old);
        newer.encode_into(&mut new);
        let mut torn = old.clone();
        torn[32..].copy_from_slice(&new[32..]);
        assert!(HalfUnit::decode(&torn).is_err());
        for action in [
            Action::Commit,
            Action::Rollback,
            Action::Discard,
            Action::Check,
        ] {
            let o = outcome(5, action, 2);
            let mut bytes = Vec::new();
            o.encode_into(&mut bytes);
            assert_eq!(bytes.len(), OUTCOME_BYTES);
            assert_eq!(Outcome::decode(&bytes).unwrap(), o);
        }
        let mut bytes = Vec::new();
        outcome(5, Action::Check, 0).encode_into(&mut bytes);
        bytes[24] = 0;
        assert!(Outcome::decode(&bytes).unwrap_err().contains("action 0"));
        assert!(
            Outcome::decode(&bytes[..5])
                .unwrap_err()
                .contains("5 bytes")
        );
    }

    #[test]
    fn the_first_outcome_wins_and_checks_count_once() {
        let disk = MemDisk::new();
        let mut t = open(&disk, TransactionCheckpoint::default());
        for h in 0..3 {
            t.add(h, 10 + h, 1000 * h, 100, 5, None).unwrap();
        }
        assert!(t.apply(&outcome(1, Action::Check, 0), 20, 0).unwrap());
        assert!(
            !t.apply(&outcome(1, Action::Check, 0), 21, 0).unwrap(),
            "a check on a stale count"
        );
        assert_eq!(t.get(1).unwrap().unwrap().checks, 1);
        assert!(t.apply(&outcome(1, Action::Commit, 0), 22, 0).unwrap());
        assert!(!t.apply(&outcome(1, Action::Commit, 0), 23, 0).unwrap());
        assert!(!t.apply(&outcome(1, Action::Rollback, 0), 24, 0).unwrap());
        assert!(!t.apply(&outcome(1, Action::Check, 1), 25, 0).unwrap());
        assert!(t.apply(&outcome(0, Action::Rollback, 0), 26, 0).unwrap());
        assert!(
            !t.apply(&outcome(9, Action::Commit, 0), 27, 0).unwrap(),
            "unknown half"
        );
        // Two commits of one half in one entry: the first applies, only it on a replay.
        assert!(t.apply(&outcome(2, Action::Commit, 0), 28, 0).unwrap());
        assert!(!t.apply(&outcome(2, Action::Commit, 0), 28, 1).unwrap());
        assert_eq!(t.first_pending(), 3, "all three are resolved");
        let c = t.counts();
        assert_eq!(
            (c.halves, c.commits, c.rollbacks, c.pending()),
            (3, 2, 1, 0)
        );
        t.check_invariants();
    }

    /// The first-pending position walks over a long run of resolved units (read a few at first,
    /// then more) and stops at the next pending one.
    #[test]
    fn the_first_pending_position_walks_over_resolved_units() {
        let disk = MemDisk::new();
        let mut t = open(&disk, TransactionCheckpoint::default());
        for h in 0..300 {
            t.add(h, 10 + h, 1000 + h, 100, 5, None).unwrap();
        }
        for h in (1..300).filter(|h| *h != 250) {
            assert!(t.apply(&outcome(h, Action::Commit, 0), 20 + h, 0).unwrap());
        }
        assert_eq!(t.first_pending(), 0, "half 0 is still pending");
        assert!(t.apply(&outcome(0, Action::Rollback, 0), 400, 0).unwrap());
        assert_eq!(
            t.first_pending(),
            250,
            "over 249 resolved units to the pending one"
        );
        assert!(t.apply(&outcome(250, Action::Commit, 0), 401, 0).unwrap());
        assert_eq!(t.first_pending(), 300, "to the end");
        t.check_invariants();
    }

    #[test]
    fn a_replay_after_a_restart_applies_each_entry_as_it_first_did() {
        let disk = MemDisk::new();
        let mut t = open(&disk, TransactionCheckpoint::default());
        t.add(0, 10, 0, 100, 5, None).unwrap();
        t.add(1, 11, 100, 100, 5, Some(30)).unwrap();
        let checkpoint = t.flush().unwrap();
        // After the checkpoint: a check and a commit of 0, a rollback of 1, a new half.
        assert!(t.apply(&outcome(0, Action::Check, 0), 12, 0).unwrap());
        assert!(t.apply(&outcome(0, Action::Commit, 0), 13, 0).unwrap());
        assert!(t.apply(&outcome(1, Action::Rollback, 0), 14, 0).unwrap());
        t.add(2, 15, 200, 100, 6, None).unwrap();
        t.flush().unwrap();
        drop(t);
        // The restart finds the units changed and applies 12..=15 again.
        let mut again = open(&disk, checkpoint);
        assert_eq!(again.length(), 2, "cut back to the checkpoint");
        assert!(
            !again.apply(&outcome(0, Action::Check, 0), 12, 0).unwrap(),
            "a later entry changed it: the check stays as it was"
        );
        assert!(
            again.apply(&outcome(0, Action::Commit, 0), 13, 0).unwrap(),
            "the commit applied: its record goes out again"
        );
        assert!(
            again
                .apply(&outcome(1, Action::Rollback, 0), 14, 0)
                .unwrap()
        );
        again.add(2, 15, 200, 100, 6, None).unwrap();
        assert!(
            !again.apply(&outcome(0, Action::Commit, 0), 16, 0).unwrap(),
            "a second commit in a later entry"
        );
        let c = again.counts();
        assert_eq!(
            (c.halves, c.commits, c.rollbacks, c.pending()),
            (3, 1, 1, 1)
        );
        assert_eq!(again.get(1).unwrap().unwrap().immunity_secs, 30);
        again.check_invariants();
    }

    #[test]
    fn a_snapshot_restores_the_units_from_the_first_pending() {
        let disk = MemDisk::new();
        let mut t = open(&disk, TransactionCheckpoint::default());
        for h in 0..4 {
            t.add(h, 10 + h, 100 * h, 100, 5, None).unwrap();
        }
        assert!(t.apply(&outcome(0, Action::Rollback, 0), 20, 0).unwrap());
        let checkpoint = t.checkpoint_view();
        let from = Transactions::<MemDisk>::snapshot_from(&checkpoint);
        assert_eq!(from, 1);
        let units = t.units(from, checkpoint.length).unwrap();
        let other = MemDisk::new();
        let mut restored = open(&other, TransactionCheckpoint::default());
        restored.restore(checkpoint, from, &units).unwrap();
        assert_eq!(restored.length(), 4);
        assert_eq!(restored.first_pending(), 1);
        assert_eq!(restored.counts(), t.counts());
        assert!(
            restored
                .apply(&outcome(2, Action::Commit, 0), 21, 0)
                .unwrap()
        );
        assert!(
            restored
                .restore(checkpoint, from, &units[..1])
                .unwrap_err()
                .to_string()
                .contains("not up to 4")
        );
    }
}
