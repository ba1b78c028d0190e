//! The timer index: every scheduled message (a delay level in `SCHEDULE_TOPIC_XXXX`, a timer
//! message in `rmq_sys_wheel_timer`) by the time it is due, on disk, and how far delivery has
//! come (FEATURES-SPEC.md §1–2; DESIGN.md "Scheduled delivery").
//!
//! ### What is replicated, what is derived
//! The scheduled records themselves are in the CommitLog, each carrying its due time in
//! `TIMER_OUT_MS` (the leader wrote it when it took the send). Applying such a record appends a
//! [`TimerUnit`] to the timer log, a [`UnitQueue`] of 32-byte units on disk: unit number `seq`
//! of the log is the `seq`-th scheduled record applied, so every replica numbers them alike.
//! Units are ordered for delivery by their [`TimerKey`] `(due_ms, seq)`.
//!
//! Delivery progress is one key: every unit whose key is at or below [`Timers::progress`] has
//! been delivered (or dropped: a cancelled or unreadable message). Only the leader delivers: it
//! writes the delivered messages and the new progress in one entry (`Deliveries`, see
//! [`crate::entry`]), which every replica applies only if its progress is still the one the
//! leader started from, so a stale or repeated entry delivers nothing.
//!
//! Two rules keep "at or below the progress" meaning "delivered":
//! - A unit applied when the progress is already past its due time is due at the progress's
//!   time instead ([`Timers::add`]): with a later `seq` than every unit before it, its key is
//!   above the progress.
//! - A `Deliveries` entry names how many units of the log its leader had seen (`seen`). Units
//!   applied after that (`seq >= seen`) whose key the entry's new progress passes were not in
//!   it; applying the entry queues each again, due at the new progress's time.
//!
//! ### Finding what is due
//! Units are chained per slot of [`SLOT_MS`] of due time: each unit holds the `seq` of the
//! previous unit of its slot (`prev`), and [`Timers`] keeps, per slot that still holds units,
//! its first and last `seq` and count. Memory grows with the number of slots between now and
//! the furthest due time (at most `timerMaxDelaySec` / 1 s), not with the number of pending
//! messages. A restart rebuilds the slots by reading the log from the first unit still pending
//! (`scan_from`, in the store's checkpoint), not the CommitLog.

use std::collections::BTreeMap;
use std::path::Path;

use dledger::Disk;
use serde::{Deserialize, Serialize};

use crate::consume_queue::{QueueUnit, UnitQueue};
use crate::error::StoreError;

/// Width of a slot of due time: the units of one slot are read together when it falls due.
pub const SLOT_MS: i64 = 1000;

/// Units per timer log file: 4 MiB files.
pub const UNITS_PER_FILE: u64 = 128 * 1024;

/// Bytes of a [`TimerUnit`] on disk.
pub const TIMER_UNIT_BYTES: u64 = 32;

/// Bit of [`TimerUnit`]'s flags: the record cancels another (`TIMER_DEL_UNIQKEY`).
const FLAG_CANCEL: u32 = 1;

/// One scheduled record in the timer log.
///
/// Layout, big-endian: `commit_log_offset` (8) | `size` (4) | flags (4) | `due_ms` (8) |
/// `prev` (8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerUnit {
    /// Where the scheduled record sits in the CommitLog.
    pub commit_log_offset: u64,
    /// Bytes of the record.
    pub size: u32,
    /// The record cancels the delivery of another (it is never delivered itself).
    pub cancel: bool,
    /// When the unit may be delivered: its record's due time, or later if it was applied (or
    /// queued again) after the progress had passed that time.
    pub due_ms: i64,
    /// 1 + the `seq` of the previous unit of the same slot; 0 for the slot's first.
    pub prev: u64,
}

impl QueueUnit for TimerUnit {
    const BYTES: u64 = TIMER_UNIT_BYTES;
    const BLANK: Self = TimerUnit {
        commit_log_offset: 0,
        size: i32::MAX as u32,
        cancel: false,
        due_ms: 0,
        prev: 0,
    };

    fn problem(&self) -> Option<&'static str> {
        if self.size == 0 {
            Some("size is 0")
        } else if i32::try_from(self.size).is_err() {
            Some("size exceeds i32::MAX")
        } else if i64::try_from(self.commit_log_offset).is_err() {
            Some("commit_log_offset exceeds i64::MAX")
        } else if self.due_ms < 0 {
            Some("due_ms is negative")
        } else {
            None
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(self.problem().is_none(), "only valid units are encoded");
        out.extend_from_slice(&self.commit_log_offset.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&u32::from(self.cancel).to_be_bytes());
        out.extend_from_slice(&self.due_ms.to_be_bytes());
        out.extend_from_slice(&self.prev.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Result<Option<Self>, &'static str> {
        let bytes: &[u8; TIMER_UNIT_BYTES as usize] =
            bytes.try_into().expect("callers pass unit-sized slices");
        if bytes.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let u64_at = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8"));
        let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4"));
        let unit = TimerUnit {
            commit_log_offset: u64_at(0),
            size: u32_at(8),
            cancel: match u32_at(12) {
                0 => false,
                FLAG_CANCEL => true,
                _ => return Err("unknown flags"),
            },
            due_ms: u64_at(16) as i64,
            prev: u64_at(24),
        };
        match unit.problem() {
            Some(reason) => Err(reason),
            None => Ok(Some(unit)),
        }
    }
}

/// The order of delivery: by due time, then by place in the timer log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimerKey {
    /// When the unit may be delivered ([`TimerUnit::due_ms`]).
    pub due_ms: i64,
    /// The unit's place in the timer log.
    pub seq: u64,
}

impl TimerKey {
    /// Below every unit's key: nothing delivered yet.
    pub const START: TimerKey = TimerKey {
        due_ms: i64::MIN,
        seq: 0,
    };
}

/// The slot holding units due at `due_ms`.
pub fn slot_of(due_ms: i64) -> i64 {
    due_ms.div_euclid(SLOT_MS)
}

/// The units of one slot still held in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    /// `seq` of its first unit (no unit of the slot still pending comes before it).
    first: u64,
    /// `seq` of its last unit: where the chain starts.
    last: u64,
    /// Units appended to it.
    count: u64,
}

/// What a replica's timer state says, for status pages and the leader's scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerStats {
    /// Units not yet delivered or dropped.
    pub pending: u64,
    /// The delivery progress.
    pub progress: TimerKey,
    /// Units in the log: the next unit's `seq`.
    pub seen: u64,
    /// Units the deliveries applied so far covered (delivered or dropped), since the store was
    /// made.
    pub covered: u64,
}

/// A consistent look at the slots from one slot on: the units applied so far, and the slots
/// that hold any, with their last unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerView {
    /// Units in the log when the view was taken: a delivery built from this view says so.
    pub seen: u64,
    /// The progress when the view was taken.
    pub progress: TimerKey,
    /// Slots from the first asked for up to the last asked for, with the `seq` of their last
    /// unit.
    pub slots: Vec<(i64, u64)>,
    /// The first slot after the last asked for that holds units, if any.
    pub next_slot: Option<i64>,
}

/// What the checkpoint keeps of the timer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerCheckpoint {
    /// Units in the log.
    pub seen: u64,
    /// The delivery progress.
    pub progress: TimerKey,
    /// Units pending.
    pub pending: u64,
    /// Units covered by deliveries.
    pub covered: u64,
    /// No pending unit comes before this `seq`: where a restart reads the log from.
    pub scan_from: u64,
}

impl Default for TimerCheckpoint {
    /// Nothing scheduled, nothing delivered.
    fn default() -> Self {
        TimerCheckpoint {
            seen: 0,
            progress: TimerKey::START,
            pending: 0,
            covered: 0,
            scan_from: 0,
        }
    }
}

/// The timer log and what delivery has covered.
pub struct Timers<D: Disk> {
    log: UnitQueue<D, TimerUnit>,
    slots: BTreeMap<i64, Slot>,
    progress: TimerKey,
    pending: u64,
    covered: u64,
}

impl<D: Disk> std::fmt::Debug for Timers<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timers")
            .field("seen", &self.log.queue_offset_max())
            .field("slots", &self.slots.len())
            .field("progress", &self.progress)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl<D: Disk> Timers<D> {
    /// Opens the timer log in `dir` and rebuilds the slots from `checkpoint.scan_from`; a log
    /// longer than the checkpoint says is cut back to it (its entries are applied again).
    /// Answers `false` beside it when the log holds less than the checkpoint counts (a lost
    /// file): the store then clears it and starts over.
    ///
    /// # Errors
    /// Those of [`UnitQueue::open`] and reading the log.
    pub fn open(
        disk: D,
        dir: &Path,
        checkpoint: TimerCheckpoint,
    ) -> Result<(Self, bool), StoreError> {
        let mut log = UnitQueue::open(disk, dir, UNITS_PER_FILE)?;
        if log.queue_offset_max() < checkpoint.seen {
            tracing::warn!(dir = %dir.display(), have = log.queue_offset_max(), want = checkpoint.seen, "timer log shorter than its checkpoint: rebuilding the store from the log");
            let timers = Timers {
                log,
                slots: BTreeMap::new(),
                progress: TimerKey::START,
                pending: 0,
                covered: 0,
            };
            return Ok((timers, false));
        }
        log.truncate_from(checkpoint.seen)?;
        let mut timers = Timers {
            log,
            slots: BTreeMap::new(),
            progress: checkpoint.progress,
            pending: checkpoint.pending,
            covered: checkpoint.covered,
        };
        timers.rebuild_slots(checkpoint.scan_from, checkpoint.seen)?;
        timers.check_invariants();
        Ok((timers, true))
    }

    /// Notes in their slots the units of `from..seen` still pending.
    fn rebuild_slots(&mut self, from: u64, seen: u64) -> Result<(), StoreError> {
        let mut seq = from.max(self.log.queue_offset_min());
        while seq < seen {
            let units = self.log.read(seq, seen - seq)?;
            if units.is_empty() {
                break;
            }
            for unit in &units {
                if (TimerKey {
                    due_ms: unit.due_ms,
                    seq,
                }) > self.progress
                {
                    self.note_in_slot(slot_of(unit.due_ms), seq);
                }
                seq += 1;
            }
        }
        Ok(())
    }

    /// The units `from..to` of the log, for a snapshot.
    ///
    /// # Errors
    /// A file error.
    pub fn units(&self, from: u64, to: u64) -> Result<Vec<TimerUnit>, StoreError> {
        self.log.read_range(from, to)
    }

    /// Replaces everything with a snapshot's timer state: the log starts at
    /// `checkpoint.scan_from` (blanks below), holds `units` up to `checkpoint.seen`, and the
    /// progress and counts are the checkpoint's.
    ///
    /// # Errors
    /// A file error, or units that do not reach `checkpoint.seen`.
    pub fn restore(
        &mut self,
        checkpoint: TimerCheckpoint,
        units: &[TimerUnit],
    ) -> Result<(), StoreError> {
        self.clear()?;
        self.log.start_at(checkpoint.scan_from)?;
        self.log.append_many(checkpoint.scan_from, units)?;
        if self.log.queue_offset_max() != checkpoint.seen {
            return Err(StoreError::Corrupt {
                path: self.log.dir().to_path_buf(),
                file_offset: 0,
                reason: format!(
                    "a snapshot's timer log holds {} units from {}, not up to {}",
                    units.len(),
                    checkpoint.scan_from,
                    checkpoint.seen
                ),
            });
        }
        self.progress = checkpoint.progress;
        self.pending = checkpoint.pending;
        self.covered = checkpoint.covered;
        self.rebuild_slots(checkpoint.scan_from, checkpoint.seen)?;
        self.log.flush()?;
        self.check_invariants();
        Ok(())
    }

    /// Removes the log's files wholly below `seq` (retention: no snapshot needs them).
    ///
    /// # Errors
    /// A file error.
    pub fn purge_before(&mut self, seq: u64) -> Result<u64, StoreError> {
        self.log.purge_before(seq)
    }

    /// The lowest CommitLog offset at or past `floor` of a pending unit: retention keeps the
    /// scheduled records not yet delivered unless the disk forces it (a unit below the floor
    /// lost its record to a forced cut and is dropped when due).
    ///
    /// # Errors
    /// A file error.
    pub fn first_pending_offset(&self, floor: u64) -> Result<Option<u64>, StoreError> {
        let Some(from) = self.slots.values().map(|s| s.first).min() else {
            return Ok(None);
        };
        let seen = self.log.queue_offset_max();
        let mut lowest = None;
        let mut seq = from;
        while seq < seen {
            let units = self.log.read(seq, (seen - seq).min(4096))?;
            if units.is_empty() {
                break;
            }
            for unit in &units {
                let key = TimerKey {
                    due_ms: unit.due_ms,
                    seq,
                };
                if key > self.progress && !unit.cancel && unit.commit_log_offset >= floor {
                    lowest = Some(lowest.map_or(unit.commit_log_offset, |l: u64| {
                        l.min(unit.commit_log_offset)
                    }));
                }
                seq += 1;
            }
        }
        Ok(lowest)
    }

    fn note_in_slot(&mut self, slot: i64, seq: u64) {
        let entry = self.slots.entry(slot).or_insert(Slot {
            first: seq,
            last: seq,
            count: 0,
        });
        entry.last = seq;
        entry.count += 1;
    }

    /// Appends a unit for a scheduled record applied now, due at `due_ms` (or at the
    /// progress's time if that is later; see the module doc). Returns its key.
    ///
    /// # Errors
    /// A unit that cannot be stored (a size of 0, a negative due time) or a file error.
    pub fn add(
        &mut self,
        commit_log_offset: u64,
        size: u32,
        due_ms: i64,
        cancel: bool,
    ) -> Result<TimerKey, StoreError> {
        let due_ms = due_ms.max(self.progress.due_ms).max(0);
        let slot = slot_of(due_ms);
        let seq = self.log.queue_offset_max();
        let prev = self.slots.get(&slot).map_or(0, |s| s.last + 1);
        self.log.append(
            seq,
            TimerUnit {
                commit_log_offset,
                size,
                cancel,
                due_ms,
                prev,
            },
        )?;
        self.note_in_slot(slot, seq);
        self.pending += 1;
        Ok(TimerKey { due_ms, seq })
    }

    /// Applies a delivery: if the progress is `expected`, it becomes `new`, the `covered` units
    /// the leader delivered or dropped leave the pending count, units applied after the leader's
    /// view (`seq >= seen`) that `new` passes are queued again, and slots wholly below the
    /// progress are forgotten. Returns whether it applied (`false`: the entry is stale and
    /// delivers nothing).
    ///
    /// # Errors
    /// A file error reading or appending units.
    pub fn deliver(
        &mut self,
        expected: TimerKey,
        new: TimerKey,
        seen: u64,
        covered: u64,
    ) -> Result<bool, StoreError> {
        if expected != self.progress || new < expected || seen > self.log.queue_offset_max() {
            return Ok(false);
        }
        let end = self.log.queue_offset_max();
        self.progress = new;
        self.pending = self.pending.saturating_sub(covered);
        self.covered += covered;
        let mut seq = seen;
        while seq < end {
            let units = self.log.read(seq, end - seq)?;
            if units.is_empty() {
                break;
            }
            for unit in units {
                if (TimerKey {
                    due_ms: unit.due_ms,
                    seq,
                }) <= new
                {
                    self.pending = self.pending.saturating_sub(1);
                    self.add(unit.commit_log_offset, unit.size, unit.due_ms, unit.cancel)?;
                }
                seq += 1;
            }
        }
        let below = slot_of(new.due_ms);
        while let Some((&slot, _)) = self.slots.first_key_value() {
            if slot >= below {
                break;
            }
            self.slots.pop_first();
        }
        Ok(true)
    }

    /// The slots `from..=to` that hold units, and the first one after `to`.
    pub fn view(&self, from: i64, to: i64) -> TimerView {
        let slots = if from <= to {
            self.slots
                .range(from..=to)
                .map(|(slot, s)| (*slot, s.last))
                .collect()
        } else {
            Vec::new()
        };
        let next_slot = to
            .checked_add(1)
            .and_then(|after| self.slots.range(after.max(from)..).next())
            .map(|(slot, _)| *slot);
        TimerView {
            seen: self.log.queue_offset_max(),
            progress: self.progress,
            slots,
            next_slot,
        }
    }

    /// The units of a slot's chain from `last` back to (not below) `stop_below`, newest first,
    /// with their `seq`.
    ///
    /// # Errors
    /// A file error or a unit that does not decode.
    pub fn walk(&self, last: u64, stop_below: u64) -> Result<Vec<(u64, TimerUnit)>, StoreError> {
        let mut out = Vec::new();
        let mut next = Some(last);
        while let Some(seq) = next.filter(|s| *s >= stop_below) {
            let Some(unit) = self.log.get(seq)? else {
                break;
            };
            out.push((seq, unit));
            next = unit.prev.checked_sub(1);
        }
        Ok(out)
    }

    /// The delivery progress.
    pub fn progress(&self) -> TimerKey {
        self.progress
    }

    /// Counts for status pages.
    pub fn stats(&self) -> TimerStats {
        TimerStats {
            pending: self.pending,
            progress: self.progress,
            seen: self.log.queue_offset_max(),
            covered: self.covered,
        }
    }

    /// What the checkpoint would keep, without flushing (a base: units not yet written are
    /// written by the next checkpoint, before any purge relies on them).
    pub fn checkpoint_view(&self) -> TimerCheckpoint {
        TimerCheckpoint {
            seen: self.log.queue_offset_max(),
            progress: self.progress,
            pending: self.pending,
            covered: self.covered,
            scan_from: self
                .slots
                .values()
                .map(|s| s.first)
                .min()
                .unwrap_or(self.log.queue_offset_max()),
        }
    }

    /// Makes every unit durable and says what the checkpoint keeps.
    ///
    /// # Errors
    /// A file error.
    pub fn flush(&mut self) -> Result<TimerCheckpoint, StoreError> {
        self.log.flush()?;
        Ok(self.checkpoint_view())
    }

    /// Forgets every unit and the progress (the store applies the log again from its start).
    ///
    /// # Errors
    /// A file error.
    pub fn clear(&mut self) -> Result<(), StoreError> {
        self.log.clear()?;
        self.slots.clear();
        self.progress = TimerKey::START;
        self.pending = 0;
        self.covered = 0;
        Ok(())
    }

    /// Asserts what the timer state keeps true: the log is sound, every slot's chain ends
    /// within the log, no slot lies wholly below the progress, and every slot's units are
    /// counted as pending or covered.
    pub fn check_invariants(&self) {
        self.log.check_invariants();
        let seen = self.log.queue_offset_max();
        let floor = slot_of(self.progress.due_ms);
        for (slot, s) in &self.slots {
            assert!(
                s.first <= s.last && s.last < seen,
                "slot {slot}: {s:?} lies within the log of {seen} units"
            );
            assert!(
                *slot >= floor || self.progress == TimerKey::START,
                "slot {slot} is below the progress {:?}",
                self.progress
            );
        }
        assert!(
            self.pending <= seen,
            "{} pending of {seen} units",
            self.pending
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use dledger::MemDisk;

    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/store/timerlog")
    }

    fn open(disk: &MemDisk, checkpoint: TimerCheckpoint) -> Timers<MemDisk> {
        let (timers, complete) = Timers::open(disk.clone(), &dir(), checkpoint).unwrap();
        assert!(complete);
        timers
    }

    /// Every unit with a key in `(after, ..]` and due by `now`, walked from the slots, sorted:
    /// what a leader would deliver.
    fn due(timers: &Timers<MemDisk>, now: i64) -> Vec<TimerKey> {
        let progress = timers.progress();
        let view = timers.view(slot_of(progress.due_ms.max(0)), slot_of(now));
        let mut keys: Vec<TimerKey> = view
            .slots
            .iter()
            .flat_map(|(_, last)| timers.walk(*last, 0).unwrap())
            .map(|(seq, unit)| TimerKey {
                due_ms: unit.due_ms,
                seq,
            })
            .filter(|k| *k > progress && k.due_ms <= now && k.seq < view.seen)
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn units_round_trip_and_bad_bytes_are_named() {
        let unit = TimerUnit {
            commit_log_offset: 77,
            size: 12,
            cancel: true,
            due_ms: 1_700_000_000_123,
            prev: 5,
        };
        let mut bytes = Vec::new();
        unit.encode_into(&mut bytes);
        assert_eq!(bytes.len(), 32);
        assert_eq!(TimerUnit::decode(&bytes), Ok(Some(unit)));
        assert_eq!(TimerUnit::decode(&[0; 32]), Ok(None));
        let mut flags = bytes.clone();
        flags[15] = 7;
        assert_eq!(TimerUnit::decode(&flags), Err("unknown flags"));
        let mut negative = bytes.clone();
        negative[16] = 0x80;
        assert_eq!(TimerUnit::decode(&negative), Err("due_ms is negative"));
    }

    /// Units come out of their slots in due order whatever order they were applied in; a
    /// delivery moves the progress and the pending count; a stale one changes nothing.
    #[test]
    fn units_are_due_in_key_order_and_deliveries_compare_and_set() {
        let disk = MemDisk::new();
        let mut timers = open(&disk, TimerCheckpoint::default());
        for (n, due) in [5_500i64, 1_200, 2_900, 1_100, 5_000]
            .into_iter()
            .enumerate()
        {
            timers.add(100 * n as u64, 10, due, false).unwrap();
        }
        let keys = due(&timers, 3_000);
        assert_eq!(
            keys.iter().map(|k| k.due_ms).collect::<Vec<_>>(),
            [1_100, 1_200, 2_900]
        );
        let seen = timers.stats().seen;
        assert!(timers.deliver(TimerKey::START, keys[1], seen, 2).unwrap());
        assert_eq!(timers.progress(), keys[1]);
        assert_eq!(timers.stats().pending, 3);
        assert!(
            !timers.deliver(TimerKey::START, keys[2], seen, 1).unwrap(),
            "a delivery from an old progress is stale"
        );
        assert_eq!(timers.stats().pending, 3);
        assert_eq!(
            due(&timers, 10_000)
                .iter()
                .map(|k| k.due_ms)
                .collect::<Vec<_>>(),
            [2_900, 5_000, 5_500]
        );
        timers.check_invariants();
    }

    /// A unit applied after the progress passed its due time is due at the progress's time, with
    /// a key above it; a unit the leader did not see when it built a delivery that passes it is
    /// queued again: none is skipped.
    #[test]
    fn late_units_and_units_applied_behind_a_delivery_are_kept() {
        let disk = MemDisk::new();
        let mut timers = open(&disk, TimerCheckpoint::default());
        timers.add(0, 10, 1_000, false).unwrap();
        timers.add(10, 10, 2_000, false).unwrap();
        let keys = due(&timers, 2_500);
        let seen = timers.stats().seen;
        // Applied after the leader's view, due before what the delivery passes.
        let behind = timers.add(20, 10, 1_500, false).unwrap();
        assert!(behind < keys[1]);
        assert!(timers.deliver(TimerKey::START, keys[1], seen, 2).unwrap());
        let again = due(&timers, 2_500);
        assert_eq!(again.len(), 1);
        assert_eq!(
            again[0].due_ms, 2_000,
            "queued again at the progress's time"
        );
        assert!(again[0] > timers.progress());
        let late = timers.add(30, 10, 500, false).unwrap();
        assert!(late > timers.progress());
        assert_eq!(late.due_ms, 2_000);
        assert_eq!(timers.stats().pending, 2);
        timers.check_invariants();
    }

    /// A restart rebuilds the slots from the checkpoint and cuts units written after it.
    #[test]
    fn reopening_rebuilds_the_slots_from_the_checkpoint() {
        let disk = MemDisk::new();
        let mut timers = open(&disk, TimerCheckpoint::default());
        for n in 0..10u64 {
            timers
                .add(n * 10, 10, 1_000 + 700 * n as i64, false)
                .unwrap();
        }
        let keys = due(&timers, 4_000);
        let seen = timers.stats().seen;
        assert!(timers.deliver(TimerKey::START, keys[2], seen, 3).unwrap());
        let checkpoint = timers.flush().unwrap();
        assert_eq!(
            checkpoint.scan_from, 2,
            "units 0..3 are delivered; the slot of the progress (unit 2's) is read whole"
        );
        timers.add(999, 10, 9_999, false).unwrap();
        let before = due(&timers, 8_000);
        timers.flush().unwrap();
        drop(timers);
        let reopened = open(&disk, checkpoint);
        assert_eq!(
            reopened.stats().seen,
            10,
            "the unit after the checkpoint is cut"
        );
        assert_eq!(due(&reopened, 8_000), before);
        assert_eq!(reopened.stats().pending, 7);
        reopened.check_invariants();
        let short = TimerCheckpoint {
            seen: 11,
            ..checkpoint
        };
        assert!(
            !Timers::open(disk.clone(), &dir(), short).unwrap().1,
            "a log shorter than its checkpoint makes the store start over"
        );
    }
}
