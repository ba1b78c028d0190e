//! Helpers for tests and benchmarks of the layers above: a state machine that records what it
//! applied.

use std::sync::{Arc, Mutex};

use crate::state_machine::{ApplyError, StateMachine};
use crate::types::{CommittedEntry, EntryPayload, LogId, Snapshot};

/// One applied entry as recorded: index, term, position, and the data of a data entry.
pub type Record = (u64, u64, u64, Option<Vec<u8>>);

/// A state machine that keeps every applied entry in memory. It persists nothing, so after a
/// restart the whole log is applied again.
#[derive(Clone, Default)]
pub struct RecordingStateMachine {
    records: Arc<Mutex<Vec<Record>>>,
    last: Arc<Mutex<Option<LogId>>>,
    /// Names a snapshot point at every multiple of this index (the log is then purged).
    snapshot_every: Option<u64>,
}

impl RecordingStateMachine {
    /// A new empty one.
    pub fn new() -> Self {
        Self::default()
    }

    /// One that names a snapshot point at every multiple of `every` once the entry after it
    /// applied (so its position is known): the ledger builds a snapshot there and purges its
    /// log up to it, and a replica behind the purge is restored from it.
    pub fn with_snapshot_points(every: u64) -> Self {
        RecordingStateMachine {
            snapshot_every: Some(every.max(1)),
            ..Self::default()
        }
    }

    /// The snapshot point and where the entry after it starts.
    fn point(&self) -> Option<(LogId, u64)> {
        let every = self.snapshot_every?;
        let records = self.records.lock().expect("records lock");
        let last = records.last()?.0;
        let point = last.checked_sub(1)? / every * every;
        if point == 0 {
            return None;
        }
        let at = records.iter().position(|r| r.0 == point)?;
        let next = records.get(at + 1)?;
        Some((
            LogId {
                term: records[at].1,
                index: point,
            },
            next.2,
        ))
    }

    /// Everything applied so far, in order.
    pub fn records(&self) -> Vec<Record> {
        self.records.lock().expect("records lock").clone()
    }

    /// Only the data entries, as (index, data).
    pub fn data(&self) -> Vec<(u64, Vec<u8>)> {
        self.records()
            .into_iter()
            .filter_map(|(index, _, _, data)| data.map(|d| (index, d)))
            .collect()
    }

    /// How many data entries were applied.
    pub fn data_count(&self) -> usize {
        self.records
            .lock()
            .expect("records lock")
            .iter()
            .filter(|r| r.3.is_some())
            .count()
    }
}

impl StateMachine for RecordingStateMachine {
    fn apply(&mut self, entry: &CommittedEntry) -> Result<(), ApplyError> {
        let data = match &entry.payload {
            EntryPayload::Data(bytes) => Some(bytes.to_vec()),
            EntryPayload::Blank | EntryPayload::Membership => None,
        };
        self.records.lock().expect("records lock").push((
            entry.index,
            entry.term,
            entry.position,
            data,
        ));
        *self.last.lock().expect("last lock") = Some(LogId {
            term: entry.term,
            index: entry.index,
        });
        Ok(())
    }

    fn last_applied(&self) -> Option<LogId> {
        None
    }

    fn snapshot_point(&self) -> Option<LogId> {
        self.point().map(|(point, _)| point)
    }

    /// What was applied up to the snapshot point; without snapshot points, everything applied
    /// as of the last entry (a ledger then never purges; openraft's storage suite builds
    /// snapshots directly).
    fn snapshot(&mut self) -> Option<Snapshot> {
        if self.snapshot_every.is_some() {
            let (last, next) = self.point()?;
            let records: Vec<Record> = self
                .records()
                .into_iter()
                .take_while(|r| r.0 <= last.index)
                .collect();
            return Some(Snapshot {
                last,
                next_position: Some(next),
                data: bincode::serialize(&records).expect("records serialize"),
            });
        }
        let last = (*self.last.lock().expect("last lock"))?;
        Some(Snapshot {
            last,
            next_position: None,
            data: bincode::serialize(&self.records()).expect("records serialize"),
        })
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), ApplyError> {
        let records: Vec<Record> =
            bincode::deserialize(&snapshot.data).map_err(|err| ApplyError {
                index: snapshot.last.index,
                reason: format!("undecodable snapshot: {err}"),
            })?;
        *self.records.lock().expect("records lock") = records;
        *self.last.lock().expect("last lock") = Some(snapshot.last);
        Ok(())
    }

    fn discard(&mut self) -> Result<(), ApplyError> {
        self.records.lock().expect("records lock").clear();
        *self.last.lock().expect("last lock") = None;
        Ok(())
    }
}

/// A state machine that only counts what it applied: for benchmarks, where recording every
/// entry would measure the allocator.
#[derive(Clone, Default)]
pub struct CountingStateMachine {
    applied: Arc<std::sync::atomic::AtomicU64>,
}

impl CountingStateMachine {
    /// A new one at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Data entries applied.
    pub fn applied(&self) -> u64 {
        self.applied.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl StateMachine for CountingStateMachine {
    fn apply(&mut self, entry: &CommittedEntry) -> Result<(), ApplyError> {
        if matches!(entry.payload, EntryPayload::Data(_)) {
            self.applied
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    fn last_applied(&self) -> Option<LogId> {
        None
    }

    fn snapshot(&mut self) -> Option<Snapshot> {
        None
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), ApplyError> {
        let data = &snapshot.data;
        let bytes: [u8; 8] = data.as_slice().try_into().map_err(|_| ApplyError {
            index: snapshot.last.index,
            reason: format!("snapshot of {} bytes, expected 8", data.len()),
        })?;
        self.applied.store(
            u64::from_be_bytes(bytes),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }

    fn discard(&mut self) -> Result<(), ApplyError> {
        self.applied.store(0, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}
