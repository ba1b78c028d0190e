//! RocketMQ's ConsumeQueue: for each (topic, `queue_id`), the dense sequence of fixed-size units
//! that say where the queue's messages sit in the CommitLog.
//!
//! Layout (RocketMQ's): unit `i` of a queue is the 20 bytes at byte `i * 20` of the logical queue,
//! big-endian `commit_log_offset` (i64), `size` (i32) and `tags_code` (i64). The logical queue is
//! cut into files of `units_per_file` units, each named by its 20-digit starting byte offset, in
//! `<root>/<topic>/<queue_id>/`. Files are zero-filled when created, so an all-zero unit is one
//! never written: it ends the queue.
//!
//! Durability: `append` only keeps a unit in memory, readable at once; the units are written to
//! their file [`WRITE_BACK_UNITS`] at a time (or at `flush`), and `flush` syncs the dirty ranges.
//! Units not yet flushed may be lost in a crash, written or not: the store re-applies the log
//! from its last checkpoint, which flushes first. Rare paths sync on their own, so that recovery
//! only ever has to look at the last file: moving into a new file first syncs the previous one; truncation, and opening
//! (which may cut a torn tail), sync before they return. Opening also syncs the last file's units,
//! which the process before may have written but not synced: what recovery found stays found.
//!
//! Recovery scans the last file forward from its start (and earlier files while the later ones
//! are empty): the first all-zero unit ends the queue, and everything after it is zeroed, so stale
//! bytes can never pass for units once the queue grows over them. A non-zero unit that is invalid
//! (size not above 0, or a negative offset) followed by a zero unit is a write torn by a crash,
//! and is cut the same way; followed by a written unit, it is corruption, and opening fails naming
//! the file and byte. Units below the end are checked again on every read.
//!
//! The directory listing of `<root>` is not part of the storage seam ([`Disk::list`] lists files
//! only), so [`ConsumeQueueSet`] keeps the list of queues in a metadata file, written atomically
//! before a new queue's first file is created. The set opens (and so recovers) every queue when it
//! opens, as RocketMQ does at start: reads then need only `&self`, and a queue that exists can
//! never pass for an empty one because nobody opened it yet.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dledger::file_set::{FileOp, FileSet, FileSetError};
use dledger::{Disk, SegmentFile};

use crate::error::{StoreError, Subject, Verb};

/// `commit_log_offset` (8) + `size` (4) + `tags_code` (8), as in RocketMQ's
/// `CQ_STORE_UNIT_SIZE`.
pub const CONSUME_QUEUE_UNIT_BYTES: u32 = 20;
const _: () = assert!(CONSUME_QUEUE_UNIT_BYTES == 8 + 4 + 8);

/// RocketMQ's default `mappedFileSizeConsumeQueue`: 300,000 units, 6,000,000 bytes per file.
pub const UNITS_PER_FILE_DEFAULT: u64 = 300_000;

/// Largest `units_per_file` accepted: 640 MiB files. Recovery reads the whole last file of every
/// queue, so files much larger than RocketMQ's would make starts slow.
pub const UNITS_PER_FILE_MAX: u64 = 32 * 1024 * 1024;
const _: () = assert!(UNITS_PER_FILE_DEFAULT <= UNITS_PER_FILE_MAX);

/// Most units one [`ConsumeQueue::read`] returns, whatever the caller asks. RocketMQ's pull scans
/// at most `maxFilterMessageCount` (16,000) units to find matches for a tag filter.
pub const READ_UNITS_MAX: u64 = 16_000;

/// Name of the file listing the queues under a [`ConsumeQueueSet`]'s root. It holds a `.`, which
/// no topic name may, so it can never clash with a topic's directory.
pub const MANIFEST_FILE_NAME: &str = "consume_queues.meta";

/// Largest manifest accepted. 100,000 topics of 16 queues take about 50 MiB.
pub const MANIFEST_BYTES_MAX: usize = 128 * 1024 * 1024;

const MANIFEST_FIRST_LINE: &str = "raftmq consume queues v1";
const MANIFEST_CRC_PREFIX: &str = "crc32c ";

const UNIT_BYTES: u64 = CONSUME_QUEUE_UNIT_BYTES as u64;

/// Units read or written at a time during recovery and write-back (64 KiB less 16 of
/// ConsumeQueue units), so no buffer grows with a file.
const SCAN_CHUNK_UNITS: u64 = 3276;

/// Appended units kept in memory before they are written to their file together. Writing each
/// entry's few units of a queue as they came cost one `pwrite` per entry, queue and replica, the
/// most numerous syscall of a produce benchmark.
pub const WRITE_BACK_UNITS: usize = 256;

/// One ConsumeQueue unit: where a message sits in the CommitLog, and its tag's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumeQueueUnit {
    /// Byte position of the stored message record in the CommitLog. At most `i64::MAX`.
    pub commit_log_offset: u64,
    /// Bytes of the stored message record. In `1..=i32::MAX`.
    pub size: u32,
    /// Java `String.hashCode` of the message's tags (0 without tags), or, in RocketMQ's delay
    /// topic, the time the message is due.
    pub tags_code: i64,
}

/// A fixed-size unit a [`ConsumeQueue`] holds: RocketMQ's ConsumeQueue unit, or the timer
/// index's ([`crate::timer::TimerUnit`]). All zeros is never a valid unit: it ends a queue.
pub trait QueueUnit: Copy + std::fmt::Debug + Send + Sync + 'static {
    /// Bytes of one unit on disk.
    const BYTES: u64;
    /// A valid unit that stands for none: what fills a queue's first file below where a
    /// restored queue starts (RocketMQ's `fillPreBlank`). Never read: it is below the floor.
    const BLANK: Self;
    /// Why this unit cannot be stored, if it cannot: it would read back as invalid (or as zero).
    fn problem(&self) -> Option<&'static str>;
    /// Appends the unit's [`Self::BYTES`] bytes to `out`.
    fn encode_into(&self, out: &mut Vec<u8>);
    /// The unit in `bytes` ([`Self::BYTES`] long): `Ok(None)` for all zeros (never written),
    /// `Err` for bytes no valid unit encodes to.
    fn decode(bytes: &[u8]) -> Result<Option<Self>, &'static str>;
}

impl QueueUnit for ConsumeQueueUnit {
    const BYTES: u64 = UNIT_BYTES;
    /// RocketMQ's blank unit: offset 0, size `i32::MAX`, no tags.
    const BLANK: Self = ConsumeQueueUnit {
        commit_log_offset: 0,
        size: i32::MAX as u32,
        tags_code: 0,
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
        out.extend_from_slice(&self.tags_code.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Result<Option<Self>, &'static str> {
        let bytes: &[u8; UNIT_BYTES as usize] =
            bytes.try_into().expect("callers pass unit-sized slices");
        if bytes.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let commit_log_offset = i64::from_be_bytes(bytes[0..8].try_into().expect("8 bytes"));
        let size = i32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let tags_code = i64::from_be_bytes(bytes[12..20].try_into().expect("8 bytes"));
        let commit_log_offset =
            u64::try_from(commit_log_offset).map_err(|_| "negative commit_log_offset")?;
        let size = match u32::try_from(size) {
            Ok(0) | Err(_) => return Err("size is not above 0"),
            Ok(size) => size,
        };
        Ok(Some(ConsumeQueueUnit {
            commit_log_offset,
            size,
            tags_code,
        }))
    }
}

/// Checks a topic name against RocketMQ's rule ([`protocol::names`]). Such a name is also a
/// safe directory name (no `/`, no `.`, so never `..`).
///
/// # Errors
/// [`StoreError::InvalidTopic`] saying which part of the rule the name breaks.
pub fn validate_topic(topic: &str) -> Result<(), StoreError> {
    protocol::names::check_topic(topic).map_err(|err| StoreError::InvalidTopic {
        topic: topic.to_owned(),
        reason: err.to_string(),
    })
}

fn validate_queue_id(queue_id: i32) -> Result<(), StoreError> {
    if queue_id < 0 {
        return Err(StoreError::InvalidQueueId { queue_id });
    }
    Ok(())
}

fn validate_units_per_file(units_per_file: u64) -> Result<(), StoreError> {
    if !(1..=UNITS_PER_FILE_MAX).contains(&units_per_file) {
        return Err(StoreError::InvalidConfig {
            name: "units_per_file",
            value: units_per_file,
            reason: "must be in 1..=UNITS_PER_FILE_MAX (33554432)",
        });
    }
    Ok(())
}

/// The directory of one queue: `<root>/<topic>/<queue_id>/`, as RocketMQ lays it out.
pub fn queue_dir(root: &Path, topic: &str, queue_id: i32) -> PathBuf {
    root.join(topic).join(queue_id.to_string())
}

/// The store's error for a failed operation on a queue's files.
fn file_set_error(err: FileSetError) -> StoreError {
    match err {
        FileSetError::Unexpected { path, reason } => StoreError::UnexpectedFile { path, reason },
        FileSetError::Io {
            op,
            file_start,
            path,
            source,
        } => {
            let verb = match op {
                FileOp::List => Verb::List,
                FileOp::Open => Verb::Open,
                FileOp::Write => Verb::Write,
                FileOp::Sync => Verb::Flush,
                FileOp::Remove => Verb::Remove,
            };
            let subject = match file_start {
                Some(_) => Subject::ConsumeQueueFile { path },
                None => Subject::Dir { path },
            };
            StoreError::io(verb, subject, source)
        }
    }
}

/// One ConsumeQueue over its files: a dense sequence of fixed-size units (RocketMQ's
/// [`ConsumeQueueUnit`]s, or the timer index's), cut into files.
///
/// Every method is blocking (file creation, reads, syncs): call from a blocking context.
pub struct UnitQueue<D: Disk, U: QueueUnit> {
    dir: PathBuf,
    units_per_file: u64,
    /// Files by starting byte offset; contiguous.
    files: FileSet<D>,
    /// The next queue offset to be appended.
    queue_offset_max: u64,
    /// Units appended but not yet written to their file: those from `written_max` on.
    pending: Vec<U>,
    /// The next queue offset to be written to a file.
    written_max: u64,
}

/// RocketMQ's ConsumeQueue: a [`UnitQueue`] of [`ConsumeQueueUnit`]s.
pub type ConsumeQueue<D> = UnitQueue<D, ConsumeQueueUnit>;

impl<D: Disk, U: QueueUnit> std::fmt::Debug for UnitQueue<D, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumeQueue")
            .field("dir", &self.dir)
            .field("units_per_file", &self.units_per_file)
            .field("queue_offset_min", &self.queue_offset_min())
            .field("queue_offset_max", &self.queue_offset_max)
            .finish_non_exhaustive()
    }
}

impl<D: Disk, U: QueueUnit> UnitQueue<D, U> {
    /// Opens the queue in `dir` (creating nothing until the first append), recovering its end as
    /// the module doc describes. Zeroes a torn tail and syncs that before returning.
    ///
    /// # Errors
    /// [`StoreError::InvalidConfig`] for `units_per_file` outside `1..=UNITS_PER_FILE_MAX`;
    /// [`StoreError::UnexpectedFile`] for a name that is not a 20-digit multiple of the file
    /// size; [`StoreError::MissingFile`] for a hole between files; [`StoreError::Io`] (kind
    /// `InvalidData` for a file of the wrong size); [`StoreError::Corrupt`] for an invalid unit
    /// followed by valid ones.
    pub fn open(disk: D, dir: &Path, units_per_file: u64) -> Result<Self, StoreError> {
        validate_units_per_file(units_per_file)?;
        let files = FileSet::open(disk, dir, units_per_file * U::BYTES).map_err(file_set_error)?;
        if let Some(missing) = files.first_gap() {
            return Err(StoreError::MissingFile {
                path: files.path(missing),
            });
        }
        let mut queue = UnitQueue {
            dir: dir.to_path_buf(),
            units_per_file,
            files,
            queue_offset_max: 0,
            pending: Vec::new(),
            written_max: 0,
        };
        queue.recover()?;
        queue.check_invariants();
        Ok(queue)
    }

    fn file_bytes(&self) -> u64 {
        self.units_per_file * U::BYTES
    }

    fn path(&self, file_start: u64) -> PathBuf {
        self.files.path(file_start)
    }

    fn subject(&self, file_start: u64) -> Subject {
        Subject::ConsumeQueueFile {
            path: self.path(file_start),
        }
    }

    fn recover(&mut self) -> Result<(), StoreError> {
        let mut end = self.files.first_start().map_or(0, |start| start / U::BYTES);
        for (file_start, file) in self.files.iter().rev() {
            let units = self.scan(file_start, file)?;
            if units > 0 {
                end = file_start / U::BYTES + units;
                break;
            }
        }
        // Units the previous process wrote but never synced may still be in the page cache: sync
        // the last file holding units too, so that what recovery found stays found.
        if end > 0
            && let Some(first) = self.files.first_start()
            && end > first / U::BYTES
        {
            let last_byte = (end - 1) * U::BYTES;
            let file_start = self.files.file_start(last_byte);
            self.files
                .mark_dirty(file_start, 0, last_byte - file_start + U::BYTES);
        }
        self.cut_tail(end)?;
        self.queue_offset_max = end;
        self.written_max = end;
        Ok(())
    }

    /// Units at the start of a file before the first all-zero one, or the torn one at the tail.
    fn scan(&self, file_start: u64, file: &Arc<D::File>) -> Result<u64, StoreError> {
        let mut buf = vec![0u8; (SCAN_CHUNK_UNITS * U::BYTES) as usize];
        let mut at = 0;
        while at < self.file_bytes() {
            let len = (SCAN_CHUNK_UNITS * U::BYTES).min(self.file_bytes() - at);
            let chunk = &mut buf[..len as usize];
            file.read_at(at, chunk);
            for (i, raw) in chunk.chunks_exact(U::BYTES as usize).enumerate() {
                let unit_at = at + i as u64 * U::BYTES;
                match U::decode(raw) {
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(unit_at / U::BYTES),
                    Err(reason) => {
                        return self.torn_or_corrupt(file_start, file, unit_at, reason);
                    }
                }
            }
            at += len;
        }
        Ok(self.units_per_file)
    }

    /// An invalid unit at `unit_at`: the torn tail of a crash if the next unit is zero (or there
    /// is none), else corruption. A write torn at a 512-byte sector boundary damages at most the
    /// unit across the boundary; the next unit lies wholly in the lost sector.
    fn torn_or_corrupt(
        &self,
        file_start: u64,
        file: &Arc<D::File>,
        unit_at: u64,
        reason: &'static str,
    ) -> Result<u64, StoreError> {
        let path = self.path(file_start);
        let next_at = unit_at + U::BYTES;
        if next_at < file.len() {
            let mut next = vec![0u8; U::BYTES as usize];
            file.read_at(next_at, &mut next);
            if next.iter().any(|&b| b != 0) {
                return Err(StoreError::Corrupt {
                    path,
                    file_offset: unit_at,
                    reason: format!("invalid unit ({reason}) followed by a written unit"),
                });
            }
        }
        tracing::warn!(path = %path.display(), file_offset = unit_at, reason, "ConsumeQueue tail unit torn; cutting it");
        Ok(unit_at / U::BYTES)
    }

    /// Makes `end` the queue's end on disk: removes later files (newest first, so a crash in
    /// between never leaves a hole), zeroes the rest of the file holding `end`, and syncs.
    fn cut_tail(&mut self, end: u64) -> Result<(), StoreError> {
        let byte = end * U::BYTES;
        for file_start in self.files.remove_after(byte).map_err(file_set_error)? {
            tracing::info!(dir = %self.dir.display(), file_start, "ConsumeQueue file removed");
        }
        let head = self.files.file_start(byte);
        self.files
            .zero_from(head, byte - head)
            .map_err(file_set_error)?;
        self.flush()
    }

    fn remove_file(&mut self, file_start: u64) -> Result<(), StoreError> {
        self.files.remove(file_start).map_err(file_set_error)?;
        tracing::info!(dir = %self.dir.display(), file_start, "ConsumeQueue file removed");
        Ok(())
    }

    /// The file starting at `file_start`, created if it is the next one. Before the queue moves
    /// into a new file, the previous one is synced, so recovery only needs the last file.
    fn file_for(&mut self, file_start: u64) -> Result<Arc<D::File>, StoreError> {
        if let Some(file) = self.files.get(file_start) {
            return Ok(file.clone());
        }
        if let Some(last) = self.files.last_start() {
            assert_eq!(
                last + self.file_bytes(),
                file_start,
                "a queue grows into the file after its last"
            );
            self.files.sync_file(last).map_err(file_set_error)?;
        }
        let file = self.files.file_for(file_start).map_err(file_set_error)?;
        tracing::info!(dir = %self.dir.display(), file_start, "ConsumeQueue file created");
        Ok(file)
    }

    /// The queue's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The first queue offset still held (the start of the first file; 0 for a queue never
    /// written).
    pub fn queue_offset_min(&self) -> u64 {
        self.files
            .first_start()
            .map_or(self.written_max, |start| start / U::BYTES)
    }

    /// The next queue offset to be written: one past the last unit.
    pub fn queue_offset_max(&self) -> u64 {
        self.queue_offset_max
    }

    /// Appends the unit for `queue_offset`, which must be [`Self::queue_offset_max`]. The unit is
    /// readable on return and durable after the next [`Self::flush`]. See
    /// [`Self::append_many`] for errors.
    ///
    /// # Errors
    /// Those of [`Self::append_many`].
    pub fn append(&mut self, queue_offset: u64, unit: U) -> Result<(), StoreError> {
        self.append_many(queue_offset, &[unit])
    }

    /// Appends `units` at `first_queue_offset` and after; `first_queue_offset` must be
    /// [`Self::queue_offset_max`]. The units are kept in memory, readable on return, and written
    /// to their files once [`WRITE_BACK_UNITS`] are waiting (one write per file touched and per
    /// ~64 KiB of units; moving into a new file syncs the previous one) or at the
    /// next [`Self::flush`], after which they are durable. Every unit is checked first: a gap or
    /// an invalid unit appends nothing. An I/O error writing the waiting units back is returned
    /// with the units appended and still in memory (a failed write may leave bytes past the
    /// written end, which the next write-back overwrites); the store stops on it.
    ///
    /// # Errors
    /// [`StoreError::QueueOffsetGap`] for any other offset; [`StoreError::InvalidUnit`], naming
    /// the unit's queue offset, for a unit of size 0 or an offset or size past the on-disk field;
    /// [`StoreError::OutOfRange`] for a queue offset whose byte position overflows;
    /// [`StoreError::Io`] if, writing the waiting units back, a file cannot be created, synced
    /// (when moving into a new file) or written.
    pub fn append_many(&mut self, first_queue_offset: u64, units: &[U]) -> Result<(), StoreError> {
        if first_queue_offset != self.queue_offset_max {
            return Err(StoreError::QueueOffsetGap {
                dir: self.dir.clone(),
                queue_offset: first_queue_offset,
                expected: self.queue_offset_max,
            });
        }
        if let Some(after_first) = (units.len() as u64).checked_sub(1) {
            let last = first_queue_offset.saturating_add(after_first);
            first_queue_offset
                .checked_add(after_first)
                .and_then(|last| last.checked_mul(U::BYTES))
                .filter(|byte| byte.checked_add(self.file_bytes()).is_some())
                .ok_or(StoreError::OutOfRange {
                    field: "queue_offset",
                    value: last,
                    max: (u64::MAX - self.file_bytes()) / U::BYTES,
                })?;
        }
        for (queue_offset, unit) in (first_queue_offset..).zip(units) {
            if let Some(reason) = unit.problem() {
                return Err(StoreError::InvalidUnit {
                    queue_offset,
                    reason,
                });
            }
        }
        self.pending.extend_from_slice(units);
        self.queue_offset_max += units.len() as u64;
        if self.pending.len() >= WRITE_BACK_UNITS {
            self.write_back()?;
        }
        self.debug_check_invariants();
        Ok(())
    }

    /// Replaces the unit at `queue_offset` (within `queue_offset_min..queue_offset_max`) in
    /// place: in memory if it is not written yet, else in its file (durable after the next
    /// [`Self::flush`]). For units that hold state which changes, such as a half message's
    /// outcome ([`crate::transactions`]); a ConsumeQueue's units never change.
    ///
    /// # Errors
    /// [`StoreError::OutOfRange`] outside the queue; [`StoreError::InvalidUnit`] for a unit that
    /// cannot be stored; [`StoreError::Io`] if the file cannot be written.
    pub fn replace(&mut self, queue_offset: u64, unit: U) -> Result<(), StoreError> {
        if queue_offset < self.queue_offset_min() || queue_offset >= self.queue_offset_max {
            return Err(StoreError::OutOfRange {
                field: "queue_offset",
                value: queue_offset,
                max: self.queue_offset_max.saturating_sub(1),
            });
        }
        if let Some(reason) = unit.problem() {
            return Err(StoreError::InvalidUnit {
                queue_offset,
                reason,
            });
        }
        if queue_offset >= self.written_max {
            self.pending[(queue_offset - self.written_max) as usize] = unit;
            return Ok(());
        }
        let byte = queue_offset * U::BYTES;
        let file_start = byte - byte % self.file_bytes();
        let file = self
            .files
            .get(file_start)
            .expect("files cover queue_offset_min..written_max")
            .clone();
        let mut buf = Vec::with_capacity(U::BYTES as usize);
        unit.encode_into(&mut buf);
        let offset = byte - file_start;
        file.write_at(offset, &buf)
            .map_err(|source| StoreError::io(Verb::Write, self.subject(file_start), source))?;
        self.files.mark_dirty(file_start, offset, offset + U::BYTES);
        Ok(())
    }

    /// The unit at `queue_offset`, or `None` outside `queue_offset_min..queue_offset_max`.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`], naming the file and byte, if the unit reads as zero or invalid.
    pub fn get(&self, queue_offset: u64) -> Result<Option<U>, StoreError> {
        Ok(self.read(queue_offset, 1)?.into_iter().next())
    }

    /// Up to `max` units from `from` on (and at most [`READ_UNITS_MAX`]), across files; empty if
    /// `from` is outside `queue_offset_min..queue_offset_max`.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`], naming the file and byte, for a unit that reads as zero or
    /// invalid.
    pub fn read(&self, from: u64, max: u64) -> Result<Vec<U>, StoreError> {
        if from < self.queue_offset_min() || from >= self.queue_offset_max {
            return Ok(Vec::new());
        }
        let count = max.min(READ_UNITS_MAX).min(self.queue_offset_max - from);
        let mut units = Vec::with_capacity(count as usize);
        let mut next = from;
        let mut buf = Vec::new();
        // From the files up to `written_max`, from memory after it.
        let from_files = count.min(self.written_max.saturating_sub(from));
        while (units.len() as u64) < from_files {
            let byte = next * U::BYTES;
            let file_start = byte - byte % self.file_bytes();
            let file = self
                .files
                .get(file_start)
                .expect("files cover queue_offset_min..queue_offset_max");
            let in_file = (file_start + self.file_bytes() - byte) / U::BYTES;
            let run = in_file.min(from_files - units.len() as u64);
            buf.resize((run * U::BYTES) as usize, 0);
            file.read_at(byte - file_start, &mut buf);
            for (i, raw) in buf.chunks_exact(U::BYTES as usize).enumerate() {
                let file_offset = byte - file_start + i as u64 * U::BYTES;
                let reason = match U::decode(raw) {
                    Ok(Some(unit)) => {
                        units.push(unit);
                        continue;
                    }
                    Ok(None) => "unit is zero below the queue's end",
                    Err(reason) => reason,
                };
                return Err(StoreError::Corrupt {
                    path: self.path(file_start),
                    file_offset,
                    reason: reason.into(),
                });
            }
            next += run;
        }
        if (units.len() as u64) < count {
            let start = (next - self.written_max) as usize;
            let end = start + (count - units.len() as u64) as usize;
            units.extend_from_slice(&self.pending[start..end]);
        }
        Ok(units)
    }

    /// Every unit of `from..to` (fewer if the queue ends first), in as many reads as it takes.
    ///
    /// # Errors
    /// Those of [`Self::read`].
    pub fn read_range(&self, from: u64, to: u64) -> Result<Vec<U>, StoreError> {
        let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
        while from + (out.len() as u64) < to {
            let at = from + out.len() as u64;
            let units = self.read(at, to - at)?;
            if units.is_empty() {
                break;
            }
            out.extend(units);
        }
        Ok(out)
    }

    /// Removes the units at `queue_offset` and after, when recovery finds the queue ahead of
    /// what the store's checkpoint covers. Zeroes them, removes the files past the one holding
    /// `queue_offset`, and syncs before it returns. A no-op at or past the end.
    ///
    /// # Errors
    /// [`StoreError::TruncateBelowMin`] below [`Self::queue_offset_min`]; [`StoreError::Io`].
    pub fn truncate_from(&mut self, queue_offset: u64) -> Result<(), StoreError> {
        if queue_offset >= self.queue_offset_max {
            return Ok(());
        }
        let queue_offset_min = self.queue_offset_min();
        if queue_offset < queue_offset_min {
            return Err(StoreError::TruncateBelowMin {
                dir: self.dir.clone(),
                queue_offset,
                queue_offset_min,
            });
        }
        tracing::info!(dir = %self.dir.display(), queue_offset, queue_offset_max = self.queue_offset_max, "ConsumeQueue truncated");
        if queue_offset >= self.written_max {
            // Only units still in memory go.
            self.pending
                .truncate((queue_offset - self.written_max) as usize);
        } else {
            self.pending.clear();
            self.cut_tail(queue_offset)?;
            self.written_max = queue_offset;
        }
        self.queue_offset_max = queue_offset;
        self.debug_check_invariants();
        Ok(())
    }

    /// Removes every unit and every file, those below [`Self::queue_offset_min`] too (which
    /// [`Self::truncate_from`] refuses to cut): the queue is then as if never written, and the next
    /// append is at queue offset 0. For a store that rebuilds itself by applying the log again.
    /// Files are removed newest first, each durably, so a crash part-way leaves a shorter queue,
    /// never a hole.
    ///
    /// # Errors
    /// [`StoreError::Io`] if a file cannot be removed; the files after it are gone, and the
    /// queue ends where the failed file started.
    pub fn clear(&mut self) -> Result<(), StoreError> {
        tracing::info!(
            dir = %self.dir.display(),
            queue_offset_min = self.queue_offset_min(),
            queue_offset_max = self.queue_offset_max,
            "ConsumeQueue cleared"
        );
        self.pending.clear();
        self.queue_offset_max = self.written_max;
        while let Some(file_start) = self.files.last_start() {
            self.queue_offset_max = if self.files.len() == 1 {
                0
            } else {
                self.queue_offset_max.min(file_start / U::BYTES)
            };
            self.written_max = self.queue_offset_max;
            self.remove_file(file_start)?;
        }
        self.queue_offset_max = 0;
        self.written_max = 0;
        self.debug_check_invariants();
        Ok(())
    }

    /// Makes an empty queue start at `queue_offset`: the units before it in its file are
    /// [`QueueUnit::BLANK`]s, written and synced, so a restart finds the queue's end there. For a
    /// store restored from a snapshot, whose queues go on where the sender's do.
    ///
    /// # Errors
    /// [`StoreError::Io`].
    ///
    /// # Panics
    /// If the queue holds anything (a caller bug: clear it first).
    pub fn start_at(&mut self, queue_offset: u64) -> Result<(), StoreError> {
        assert!(
            self.files.is_empty() && self.queue_offset_max == 0,
            "only an empty queue starts anywhere"
        );
        if queue_offset == 0 {
            return Ok(());
        }
        let byte = queue_offset * U::BYTES;
        let file_start = byte - byte % self.file_bytes();
        let file = self.files.file_for(file_start).map_err(file_set_error)?;
        let mut buf = Vec::new();
        let mut at = file_start;
        while at < byte {
            let run = ((byte - at) / U::BYTES).min(SCAN_CHUNK_UNITS);
            buf.clear();
            for _ in 0..run {
                U::BLANK.encode_into(&mut buf);
            }
            file.write_at(at - file_start, &buf)
                .map_err(|source| StoreError::io(Verb::Write, self.subject(file_start), source))?;
            self.files.mark_dirty(
                file_start,
                at - file_start,
                at - file_start + buf.len() as u64,
            );
            at += buf.len() as u64;
        }
        self.written_max = queue_offset;
        self.queue_offset_max = queue_offset;
        self.flush()?;
        self.debug_check_invariants();
        Ok(())
    }

    /// Removes the files whose units are all below `queue_offset` (RocketMQ deletes a
    /// ConsumeQueue file once the CommitLog under it is gone), never the last file. Returns how
    /// many files were removed.
    ///
    /// # Errors
    /// [`StoreError::Io`] if a file cannot be removed; those before it are gone.
    pub fn purge_before(&mut self, queue_offset: u64) -> Result<u64, StoreError> {
        // Units in memory go to their files first, which must then not be removed under them.
        self.write_back()?;
        let mut removed = 0;
        while self.files.len() > 1
            && let Some(file_start) = self.files.first_start()
        {
            let file_end = file_start / U::BYTES + self.units_per_file;
            if file_end > queue_offset.min(self.queue_offset_max) {
                break;
            }
            self.remove_file(file_start)?;
            removed += 1;
        }
        self.debug_check_invariants();
        Ok(removed)
    }

    /// Writes the units kept in memory to their files: one write per file touched (and per
    /// [`SCAN_CHUNK_UNITS`] units). Moving into a new file syncs the previous one. On an error
    /// the units not written stay in memory.
    fn write_back(&mut self) -> Result<(), StoreError> {
        let units_per_chunk = SCAN_CHUNK_UNITS as usize;
        let mut buf =
            Vec::with_capacity(self.pending.len().min(units_per_chunk) * U::BYTES as usize);
        while !self.pending.is_empty() {
            let byte = self.written_max * U::BYTES;
            let file_start = byte - byte % self.file_bytes();
            let in_file = (file_start + self.file_bytes() - byte) / U::BYTES;
            let run = self
                .pending
                .len()
                .min(units_per_chunk)
                .min(in_file as usize);
            buf.clear();
            for unit in &self.pending[..run] {
                unit.encode_into(&mut buf);
            }
            let file = self.file_for(file_start)?;
            let offset = byte - file_start;
            file.write_at(offset, &buf)
                .map_err(|source| StoreError::io(Verb::Write, self.subject(file_start), source))?;
            self.files
                .mark_dirty(file_start, offset, offset + buf.len() as u64);
            self.written_max += run as u64;
            self.pending.drain(..run);
        }
        Ok(())
    }

    /// Makes every appended unit durable: writes the units kept in memory, then syncs the dirty
    /// ranges in file order.
    ///
    /// # Errors
    /// [`StoreError::Io`] with [`Verb::Write`] or [`Verb::Flush`]. A failed sync is not retried:
    /// stop the replica.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.write_back()?;
        self.files.sync_dirty().map_err(file_set_error)
    }

    /// [`Self::check_invariants`] in debug builds: the append path runs it on every call.
    fn debug_check_invariants(&self) {
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
    }

    /// Asserts what the queue keeps true: its files are a sound, contiguous set, the units in
    /// memory follow the written ones, and the written end lies within the files.
    pub fn check_invariants(&self) {
        self.files.check_invariants();
        assert_eq!(
            self.files.first_gap(),
            None,
            "ConsumeQueue files are contiguous"
        );
        assert_eq!(
            self.written_max + self.pending.len() as u64,
            self.queue_offset_max,
            "units in memory follow the written ones"
        );
        if let (Some(first), Some(last)) = (self.files.first_start(), self.files.last_start()) {
            assert!(
                self.written_max >= first / U::BYTES,
                "written end {} is not before the first file {first}",
                self.written_max
            );
            assert!(
                self.written_max <= last / U::BYTES + self.units_per_file,
                "written end {} is within the last file {last}",
                self.written_max
            );
        } else {
            assert_eq!(
                self.written_max, 0,
                "a queue without files has written nothing"
            );
        }
    }
}

/// Every ConsumeQueue under one root, by topic and queue id.
///
/// The queues that exist are listed in `<root>/consume_queues.meta` (see the module doc). Every
/// method is blocking.
pub struct ConsumeQueueSet<D: Disk> {
    disk: D,
    root: PathBuf,
    units_per_file: u64,
    /// Every queue, open.
    queues: BTreeMap<String, BTreeMap<i32, ConsumeQueue<D>>>,
}

impl<D: Disk> std::fmt::Debug for ConsumeQueueSet<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumeQueueSet")
            .field("root", &self.root)
            .field("units_per_file", &self.units_per_file)
            .field("queues", &self.queues().count())
            .finish_non_exhaustive()
    }
}

impl<D: Disk> ConsumeQueueSet<D> {
    /// Opens the set under `root`: reads its list of queues and opens (recovers) each of them.
    /// Recovery reads the last file of every queue.
    ///
    /// # Errors
    /// [`StoreError::InvalidConfig`] for a bad `units_per_file`; [`StoreError::Io`] reading the
    /// manifest; [`StoreError::Corrupt`] for a manifest that fails its checksum or lists a name
    /// that is not a valid topic or queue id; those of [`ConsumeQueue::open`], for the first
    /// queue that fails.
    pub fn open(disk: D, root: &Path, units_per_file: u64) -> Result<Self, StoreError> {
        validate_units_per_file(units_per_file)?;
        let path = root.join(MANIFEST_FILE_NAME);
        let bytes = disk.read_meta(&path).map_err(|source| {
            let subject = Subject::Meta { path: path.clone() };
            StoreError::io(Verb::Read, subject, source)
        })?;
        let listed = match bytes {
            Some(bytes) => decode_manifest(&path, &bytes)?,
            None => Vec::new(),
        };
        let mut queues: BTreeMap<String, BTreeMap<i32, ConsumeQueue<D>>> = BTreeMap::new();
        for (topic, queue_id) in listed {
            let dir = queue_dir(root, &topic, queue_id);
            let queue = ConsumeQueue::open(disk.clone(), &dir, units_per_file)?;
            queues.entry(topic).or_default().insert(queue_id, queue);
        }
        Ok(ConsumeQueueSet {
            disk,
            root: root.to_path_buf(),
            units_per_file,
            queues,
        })
    }

    /// Every queue, in (topic, queue id) order.
    pub fn queues(&self) -> impl Iterator<Item = (&str, i32)> {
        self.queues
            .iter()
            .flat_map(|(topic, ids)| ids.keys().map(move |&id| (topic.as_str(), id)))
    }

    /// The queue, if it exists.
    pub fn get(&self, topic: &str, queue_id: i32) -> Option<&ConsumeQueue<D>> {
        self.queues.get(topic)?.get(&queue_id)
    }

    /// The queue, if it exists, to append to or truncate.
    pub fn get_mut(&mut self, topic: &str, queue_id: i32) -> Option<&mut ConsumeQueue<D>> {
        self.queues.get_mut(topic)?.get_mut(&queue_id)
    }

    /// The queue, created if it does not exist. A new queue is added to the manifest (durably)
    /// before any of its files is created, so a restart always finds it.
    ///
    /// # Errors
    /// [`StoreError::InvalidTopic`], [`StoreError::InvalidQueueId`]; [`StoreError::OutOfRange`]
    /// if the manifest would pass [`MANIFEST_BYTES_MAX`]; [`StoreError::Io`] writing it; those of
    /// [`ConsumeQueue::open`].
    pub fn get_or_create(
        &mut self,
        topic: &str,
        queue_id: i32,
    ) -> Result<&mut ConsumeQueue<D>, StoreError> {
        if self.get(topic, queue_id).is_none() {
            validate_topic(topic)?;
            validate_queue_id(queue_id)?;
            let mut listed: Vec<(&str, i32)> = self.queues().collect();
            listed.push((topic, queue_id));
            listed.sort_unstable();
            let bytes = encode_manifest(&listed);
            if bytes.len() > MANIFEST_BYTES_MAX {
                return Err(StoreError::OutOfRange {
                    field: "ConsumeQueue manifest bytes",
                    value: bytes.len() as u64,
                    max: MANIFEST_BYTES_MAX as u64,
                });
            }
            let path = self.root.join(MANIFEST_FILE_NAME);
            self.disk.write_meta(&path, &bytes).map_err(|source| {
                StoreError::io(Verb::Write, Subject::Meta { path: path.clone() }, source)
            })?;
            let dir = queue_dir(&self.root, topic, queue_id);
            let queue = ConsumeQueue::open(self.disk.clone(), &dir, self.units_per_file)?;
            let queues = self.queues.entry(topic.to_owned()).or_default();
            queues.insert(queue_id, queue);
            tracing::info!(topic, queue_id, "ConsumeQueue created");
        }
        Ok(self
            .get_mut(topic, queue_id)
            .expect("the queue exists or was created above"))
    }

    /// Flushes every queue, in (topic, queue id) order.
    ///
    /// # Errors
    /// The first [`ConsumeQueue::flush`] error.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        for queue in self.queues.values_mut().flat_map(BTreeMap::values_mut) {
            queue.flush()?;
        }
        Ok(())
    }
}

fn encode_manifest(queues: &[(&str, i32)]) -> Vec<u8> {
    let mut text = format!("{MANIFEST_FIRST_LINE}\n");
    for (topic, queue_id) in queues {
        writeln!(text, "{topic} {queue_id}").expect("writing to a String cannot fail");
    }
    let crc = crc32c::crc32c(text.as_bytes());
    writeln!(text, "{MANIFEST_CRC_PREFIX}{crc:08x}").expect("writing to a String cannot fail");
    text.into_bytes()
}

fn decode_manifest(path: &Path, bytes: &[u8]) -> Result<Vec<(String, i32)>, StoreError> {
    let corrupt = |file_offset: usize, reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        file_offset: file_offset as u64,
        reason,
    };
    if bytes.len() > MANIFEST_BYTES_MAX {
        return Err(corrupt(
            0,
            format!("{} bytes, more than {MANIFEST_BYTES_MAX}", bytes.len()),
        ));
    }
    let text =
        std::str::from_utf8(bytes).map_err(|err| corrupt(err.valid_up_to(), "not UTF-8".into()))?;
    let body_end = text
        .trim_end_matches('\n')
        .rfind('\n')
        .map_or(0, |at| at + 1);
    let (body, trailer) = text.split_at(body_end);
    let stored = trailer
        .trim_end_matches('\n')
        .strip_prefix(MANIFEST_CRC_PREFIX)
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| corrupt(body_end, "no checksum line".into()))?;
    let computed = crc32c::crc32c(body.as_bytes());
    if stored != computed {
        return Err(corrupt(
            body_end,
            format!("checksum mismatch: stored {stored:08x}, computed {computed:08x}"),
        ));
    }
    let mut listed = BTreeSet::new();
    let mut at = 0;
    for (number, line) in body.lines().enumerate() {
        let line_at = at;
        at += line.len() + 1;
        if number == 0 {
            if line != MANIFEST_FIRST_LINE {
                return Err(corrupt(line_at, format!("first line is {line:?}")));
            }
            continue;
        }
        let parsed = line.split_once(' ').and_then(|(topic, id)| {
            let id: i32 = id.parse().ok()?;
            validate_topic(topic).ok()?;
            validate_queue_id(id).ok()?;
            Some((topic, id))
        });
        let Some((topic, id)) = parsed else {
            return Err(corrupt(
                line_at,
                format!("line {line:?} is not `<topic> <queue id>`"),
            ));
        };
        listed.insert((topic.to_owned(), id));
    }
    Ok(listed.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consume_queue::counting_disk::CountingDisk;
    use dledger::file_set::file_name;
    use dledger::{MemDisk, MmapDisk};

    fn unit(n: u64) -> ConsumeQueueUnit {
        ConsumeQueueUnit {
            commit_log_offset: n * 100,
            size: 100 + n as u32,
            tags_code: n as i64 - 3,
        }
    }

    fn dir() -> PathBuf {
        PathBuf::from("/store/consumequeue/TopicA/0")
    }

    /// Appends units up to `to`, each written to its file at once (not synced).
    fn fill<D: Disk>(queue: &mut ConsumeQueue<D>, to: u64) {
        for n in queue.queue_offset_max()..to {
            queue.append(n, unit(n)).unwrap();
            queue.write_back().unwrap();
        }
    }

    fn all<D: Disk>(queue: &ConsumeQueue<D>) -> Vec<ConsumeQueueUnit> {
        queue.read(queue.queue_offset_min(), u64::MAX).unwrap()
    }

    fn expected(range: std::ops::Range<u64>) -> Vec<ConsumeQueueUnit> {
        range.map(unit).collect()
    }

    /// Units round-trip through the 20-byte big-endian layout; an all-zero unit is "none", and
    /// bytes no valid unit encodes to are rejected.
    #[test]
    fn units_encode_big_endian_and_reject_invalid_bytes() {
        let u = ConsumeQueueUnit {
            commit_log_offset: 0x0102_0304_0506_0708,
            size: 0x0A0B_0C0D,
            tags_code: -2,
        };
        let mut encoded = Vec::new();
        u.encode_into(&mut encoded);
        let bytes: [u8; 20] = encoded.try_into().unwrap();
        assert_eq!(
            &bytes[..12],
            &[1, 2, 3, 4, 5, 6, 7, 8, 0x0A, 0x0B, 0x0C, 0x0D]
        );
        assert_eq!(
            &bytes[12..],
            &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE]
        );
        assert_eq!(ConsumeQueueUnit::decode(&bytes), Ok(Some(u)));
        assert_eq!(ConsumeQueueUnit::decode(&[0; 20]), Ok(None));
        let mut zero_size = bytes;
        zero_size[8..12].fill(0);
        assert!(ConsumeQueueUnit::decode(&zero_size).is_err());
        let mut negative = bytes;
        negative[0] = 0x80;
        assert!(ConsumeQueueUnit::decode(&negative).is_err());
    }

    /// Appends cross two file boundaries; reads return the units whichever files they span, and
    /// the files are named by their 20-digit starting byte offset.
    #[test]
    fn append_and_read_across_file_rollover() {
        let disk = MemDisk::new();
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 4).unwrap();
        assert_eq!((queue.queue_offset_min(), queue.queue_offset_max()), (0, 0));
        assert_eq!(queue.get(0).unwrap(), None);
        fill(&mut queue, 10);
        assert_eq!(queue.queue_offset_max(), 10);
        assert_eq!(all(&queue), expected(0..10));
        assert_eq!(queue.read(3, 6).unwrap(), expected(3..9));
        assert_eq!(queue.read(8, 100).unwrap(), expected(8..10));
        assert_eq!(queue.read(10, 5).unwrap(), vec![]);
        assert_eq!(queue.get(7).unwrap(), Some(unit(7)));
        assert_eq!(queue.get(10).unwrap(), None);
        let names: Vec<String> = disk.list(&dir()).unwrap();
        assert_eq!(
            names,
            vec![
                "00000000000000000000",
                "00000000000000000080",
                "00000000000000000160"
            ]
        );
    }

    /// Closing and opening again (no crash: the bytes are still there) gives the same queue, and
    /// appends continue densely.
    #[test]
    fn reopen_recovers_the_same_state() {
        let disk = MemDisk::new();
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 4).unwrap();
        fill(&mut queue, 9);
        drop(queue);
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 4).unwrap();
        assert_eq!(queue.queue_offset_max(), 9);
        assert_eq!(all(&queue), expected(0..9));
        fill(&mut queue, 12);
        queue.flush().unwrap();
        let queue = ConsumeQueue::open(disk, &dir(), 4).unwrap();
        assert_eq!(all(&queue), expected(0..12));
    }

    /// A crash loses the units not flushed and keeps the flushed ones. Units written back
    /// without a flush (a full buffer) are durable up to the last file they moved into: moving
    /// into a new file synced the previous one.
    #[test]
    fn crash_keeps_synced_units_and_loses_the_rest() {
        let disk = MemDisk::new();
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 4).unwrap();
        fill(&mut queue, 6);
        queue.flush().unwrap();
        fill(&mut queue, 7);
        let disk = disk.crash();
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 4).unwrap();
        assert_eq!(all(&queue), expected(0..6));

        let end = 6 + WRITE_BACK_UNITS as u64;
        fill(&mut queue, end);
        let disk = disk.crash();
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 4).unwrap();
        let last_file_start = (end - 1) / 4 * 4;
        assert_eq!(
            queue.queue_offset_max(),
            last_file_start,
            "each roll synced the file before"
        );
        assert_eq!(all(&queue), expected(0..last_file_start));
        fill(&mut queue, last_file_start + 2);
        queue.flush().unwrap();
        let queue = ConsumeQueue::open(disk.crash(), &dir(), 4).unwrap();
        assert_eq!(all(&queue), expected(0..last_file_start + 2));
    }

    /// Offsets are dense: an append anywhere but at the end is rejected and changes nothing.
    #[test]
    fn append_rejects_a_gap_or_a_repeat() {
        let mut queue = ConsumeQueue::open(MemDisk::new(), &dir(), 4).unwrap();
        let err = queue.append(1, unit(1)).unwrap_err();
        assert!(matches!(
            err,
            StoreError::QueueOffsetGap {
                queue_offset: 1,
                expected: 0,
                ..
            }
        ));
        assert!(!err.is_fatal());
        fill(&mut queue, 3);
        assert!(queue.append(2, unit(2)).is_err());
        assert!(queue.append(4, unit(4)).is_err());
        assert_eq!(all(&queue), expected(0..3));
    }

    /// Units that would read back as invalid are refused before anything is written.
    #[test]
    fn append_rejects_invalid_units() {
        let mut queue = ConsumeQueue::open(MemDisk::new(), &dir(), 4).unwrap();
        let bad = [
            ConsumeQueueUnit { size: 0, ..unit(0) },
            ConsumeQueueUnit {
                size: 1 << 31,
                ..unit(0)
            },
            ConsumeQueueUnit {
                commit_log_offset: 1 << 63,
                ..unit(0)
            },
        ];
        for unit in bad {
            let err = queue.append(0, unit).unwrap_err();
            assert!(
                matches!(
                    err,
                    StoreError::InvalidUnit {
                        queue_offset: 0,
                        ..
                    }
                ),
                "{err}"
            );
        }
        assert_eq!(queue.queue_offset_max(), 0);
    }

    /// Appended units wait in memory, readable, and are written together: at `flush` (one write
    /// per file touched; moving into a new file synced the previous one) or once
    /// [`WRITE_BACK_UNITS`] are waiting. The bytes are those of units written one at a time. A
    /// crash loses the units never flushed, and nothing else.
    #[test]
    fn units_are_written_back_together() {
        let disk = CountingDisk::new(MemDisk::new());
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 4).unwrap();
        queue.append_many(0, &expected(0..2)).unwrap();
        queue.append_many(2, &expected(2..11)).unwrap();
        queue.append_many(11, &[]).unwrap();
        assert_eq!(disk.writes(), 0, "nothing written before a flush");
        assert_eq!(all(&queue), expected(0..11));
        queue.flush().unwrap();
        assert_eq!(disk.writes(), 3, "one write per file touched");
        assert_eq!(all(&queue), expected(0..11));

        let one_by_one = MemDisk::new();
        let mut single = ConsumeQueue::open(one_by_one.clone(), &dir(), 4).unwrap();
        for n in 0..11 {
            single.append(n, unit(n)).unwrap();
            single.flush().unwrap();
        }
        for name in [
            "00000000000000000000",
            "00000000000000000080",
            "00000000000000000160",
        ] {
            let read = |disk: &MemDisk| {
                let file = disk.open_segment(&dir().join(name), 80).unwrap();
                let mut bytes = vec![0u8; 80];
                file.read_at(0, &mut bytes);
                bytes
            };
            assert_eq!(read(disk.inner()), read(&one_by_one), "{name}");
        }
        queue.append_many(11, &expected(11..13)).unwrap();
        let crashed = ConsumeQueue::open(disk.inner().crash(), &dir(), 4).unwrap();
        assert_eq!(
            all(&crashed),
            expected(0..11),
            "flushed units kept, units never written lost"
        );

        let many = WRITE_BACK_UNITS as u64;
        let disk = CountingDisk::new(MemDisk::new());
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 4 * many).unwrap();
        queue.append_many(0, &expected(0..many - 1)).unwrap();
        assert_eq!(disk.writes(), 0);
        queue.append(many - 1, unit(many - 1)).unwrap();
        assert_eq!(disk.writes(), 1, "a full buffer is written at once");
        queue.append(many, unit(many)).unwrap();
        assert_eq!(disk.writes(), 1);
        assert_eq!(all(&queue), expected(0..many + 1));
    }

    /// `append_many` checks the whole batch first: a gap, or one invalid unit anywhere in it,
    /// fails naming the unit's queue offset, and nothing is written or created.
    #[test]
    fn append_many_rejects_a_gap_or_an_invalid_unit_writing_nothing() {
        let disk = CountingDisk::new(MemDisk::new());
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 4).unwrap();
        let err = queue.append_many(1, &expected(1..3)).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::QueueOffsetGap {
                    queue_offset: 1,
                    expected: 0,
                    ..
                }
            ),
            "{err}"
        );
        let mut batch = expected(0..6);
        batch[5].size = 0;
        let err = queue.append_many(0, &batch).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::InvalidUnit {
                    queue_offset: 5,
                    reason: "size is 0"
                }
            ),
            "{err}"
        );
        assert_eq!(queue.queue_offset_max(), 0);
        assert_eq!(disk.writes(), 0);
        assert!(disk.list(&dir()).unwrap().is_empty(), "no file was created");
    }

    /// A queue whose first files were purged cannot be truncated to 0, but `clear` empties it:
    /// every file goes, durably, and the queue starts again at offset 0.
    #[test]
    fn clear_empties_a_queue_with_purged_files() {
        let disk = MemDisk::new();
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 4).unwrap();
        fill(&mut queue, 10);
        assert_eq!(queue.purge_before(8).unwrap(), 2);
        let err = queue.truncate_from(0).unwrap_err();
        assert!(matches!(err, StoreError::TruncateBelowMin { .. }), "{err}");
        queue.clear().unwrap();
        assert_eq!((queue.queue_offset_min(), queue.queue_offset_max()), (0, 0));
        assert_eq!(queue.get(8).unwrap(), None);
        assert!(disk.list(&dir()).unwrap().is_empty());
        let reopened = ConsumeQueue::open(disk.crash(), &dir(), 4).unwrap();
        assert_eq!(
            (reopened.queue_offset_min(), reopened.queue_offset_max()),
            (0, 0),
            "the removals were durable"
        );
        let disk = MemDisk::new();
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 4).unwrap();
        fill(&mut queue, 6);
        queue.clear().unwrap();
        queue.clear().unwrap();
        fill(&mut queue, 3);
        queue.flush().unwrap();
        let queue = ConsumeQueue::open(disk.crash(), &dir(), 4).unwrap();
        assert_eq!(all(&queue), expected(0..3));
    }

    /// Truncation removes the units from an offset on, across files, durably; the queue then
    /// continues from there. Below the first held offset it is refused.
    #[test]
    fn truncate_from_removes_the_tail_durably() {
        let disk = MemDisk::new();
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 4).unwrap();
        fill(&mut queue, 10);
        queue.truncate_from(12).unwrap();
        assert_eq!(queue.queue_offset_max(), 10);
        queue.truncate_from(5).unwrap();
        assert_eq!(queue.queue_offset_max(), 5);
        assert_eq!(queue.get(5).unwrap(), None);
        assert_eq!(disk.list(&dir()).unwrap().len(), 2);
        let disk = disk.crash();
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 4).unwrap();
        assert_eq!(all(&queue), expected(0..5), "the truncation was synced");
        fill(&mut queue, 9);
        queue.truncate_from(8).unwrap();
        assert_eq!(all(&queue), expected(0..8));
        assert_eq!(disk.list(&dir()).unwrap().len(), 3, "file 2 is kept, empty");
        assert_eq!(queue.purge_before(4).unwrap(), 1);
        let err = queue.truncate_from(2).unwrap_err();
        assert!(matches!(
            err,
            StoreError::TruncateBelowMin {
                queue_offset: 2,
                queue_offset_min: 4,
                ..
            }
        ));
    }

    /// Purging removes whole files below the offset, never the last file, and survives reopening.
    #[test]
    fn purge_before_removes_whole_files_only() {
        let disk = MemDisk::new();
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 4).unwrap();
        fill(&mut queue, 10);
        assert_eq!(queue.purge_before(3).unwrap(), 0);
        assert_eq!(queue.purge_before(9).unwrap(), 2);
        assert_eq!(queue.queue_offset_min(), 8);
        assert_eq!(queue.get(7).unwrap(), None);
        assert_eq!(all(&queue), expected(8..10));
        assert_eq!(queue.purge_before(100).unwrap(), 0, "the last file stays");
        let queue = ConsumeQueue::open(disk, &dir(), 4).unwrap();
        assert_eq!(
            (queue.queue_offset_min(), queue.queue_offset_max()),
            (8, 10)
        );
    }

    /// A torn last unit (non-zero but invalid, only zeros after it) is cut at recovery.
    #[test]
    fn recovery_cuts_a_torn_tail_unit() {
        let disk = MemDisk::new();
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 4).unwrap();
        fill(&mut queue, 7);
        queue.flush().unwrap();
        let path = dir().join(file_name(80));
        assert!(disk.edit(&path, |bytes| bytes[2 * 20 + 8..2 * 20 + 20].fill(0)));
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 4).unwrap();
        assert_eq!(all(&queue), expected(0..6));
        fill(&mut queue, 8);
        assert_eq!(all(&queue), expected(0..8));
    }

    /// Stale units after a hole in the last file are zeroed at recovery, so they cannot come
    /// back as units once the queue grows over the hole.
    #[test]
    fn recovery_zeroes_units_after_a_hole() {
        let disk = MemDisk::new();
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 8).unwrap();
        fill(&mut queue, 6);
        queue.flush().unwrap();
        let path = dir().join(file_name(0));
        assert!(disk.edit(&path, |bytes| bytes[3 * 20..4 * 20].fill(0)));
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 8).unwrap();
        assert_eq!(queue.queue_offset_max(), 3);
        queue.append(3, unit(3)).unwrap();
        queue.flush().unwrap();
        let queue = ConsumeQueue::open(disk.crash(), &dir(), 8).unwrap();
        assert_eq!(all(&queue), expected(0..4));
    }

    /// An invalid unit with valid units after it is corruption, not a torn tail: opening fails
    /// naming the file and the byte, and leaves the file as it was.
    #[test]
    fn recovery_rejects_an_invalid_unit_before_valid_ones() {
        let disk = MemDisk::new();
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 4).unwrap();
        fill(&mut queue, 7);
        queue.flush().unwrap();
        let path = dir().join(file_name(80));
        assert!(disk.edit(&path, |bytes| bytes[20] = 0x80));
        let err = ConsumeQueue::open(disk.clone(), &dir(), 4).unwrap_err();
        assert!(err.is_fatal());
        let text = err.to_string();
        assert!(text.contains("00000000000000000080"), "{text}");
        assert!(text.contains("at byte 20"), "{text}");
        assert!(disk.edit(&path, |bytes| bytes[20] = 0));
        let queue = ConsumeQueue::open(disk, &dir(), 4).unwrap();
        assert_eq!(all(&queue), expected(0..7), "nothing was cut");
    }

    /// A unit below the end that reads as zero or invalid (a unit pointing nowhere) is an error
    /// naming the file and byte, not a panic and not a silent skip.
    #[test]
    fn read_rejects_a_unit_pointing_nowhere() {
        let disk = MemDisk::new();
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 4).unwrap();
        fill(&mut queue, 6);
        let path = dir().join(file_name(0));
        assert!(disk.edit(&path, |bytes| {
            bytes[20..40].fill(0);
            bytes[2 * 20 + 8..2 * 20 + 12].fill(0);
        }));
        let err = queue.get(1).unwrap_err().to_string();
        assert!(err.contains("00000000000000000000 at byte 20"), "{err}");
        let err = queue.read(2, 3).unwrap_err().to_string();
        assert!(err.contains("at byte 40: size is not above 0"), "{err}");
        assert_eq!(queue.get(0).unwrap(), Some(unit(0)));
        assert_eq!(queue.read(3, 3).unwrap(), expected(3..6));
    }

    /// Files that do not belong are refused with their path: a wrong size, a name that is not an
    /// offset, a start that is not a multiple of the file size, and a hole between files.
    #[test]
    fn open_rejects_files_that_do_not_belong() {
        let disk = MemDisk::new();
        disk.open_segment(&dir().join(file_name(0)), 60).unwrap();
        let err = ConsumeQueue::open(disk.clone(), &dir(), 4)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ConsumeQueue(/store/consumequeue/TopicA/0/00000000000000000000)"),
            "{err}"
        );
        assert!(err.contains("expected 80"), "{err}");

        let disk = MemDisk::new();
        disk.open_segment(&dir().join("junk"), 80).unwrap();
        let err = ConsumeQueue::open(disk, &dir(), 4).unwrap_err();
        assert!(matches!(err, StoreError::UnexpectedFile { .. }), "{err}");

        let disk = MemDisk::new();
        disk.open_segment(&dir().join(file_name(40)), 80).unwrap();
        let err = ConsumeQueue::open(disk, &dir(), 4).unwrap_err();
        assert!(err.to_string().contains("not a multiple"), "{err}");

        let disk = MemDisk::new();
        let mut queue = ConsumeQueue::open(disk.clone(), &dir(), 4).unwrap();
        fill(&mut queue, 10);
        queue.flush().unwrap();
        disk.remove(&dir().join(file_name(80))).unwrap();
        let err = ConsumeQueue::open(disk, &dir(), 4).unwrap_err();
        assert!(matches!(err, StoreError::MissingFile { .. }), "{err}");
        assert!(err.to_string().contains("00000000000000000080"), "{err}");
        let err = ConsumeQueue::open(MemDisk::new(), &dir(), 0).unwrap_err();
        assert!(matches!(err, StoreError::InvalidConfig { .. }), "{err}");
    }

    /// The production disk: append across files, flush, reopen from the real files.
    #[test]
    fn mmap_disk_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = queue_dir(tmp.path(), "%RETRY%group", 3);
        let mut queue = ConsumeQueue::open(MmapDisk, &dir, 4).unwrap();
        fill(&mut queue, 11);
        queue.flush().unwrap();
        drop(queue);
        let mut queue = ConsumeQueue::open(MmapDisk, &dir, 4).unwrap();
        assert_eq!(all(&queue), expected(0..11));
        queue.truncate_from(6).unwrap();
        drop(queue);
        let queue = ConsumeQueue::open(MmapDisk, &dir, 4).unwrap();
        assert_eq!(all(&queue), expected(0..6));
        let len = std::fs::metadata(dir.join(file_name(80))).unwrap().len();
        assert_eq!(len, 80);
    }

    /// The store applies protocol's name rule (tested there) and says which part a name breaks:
    /// a name that could leave the queue's directory never passes.
    #[test]
    fn topic_names_follow_rocketmq_rule() {
        validate_topic("%RETRY%group").unwrap();
        for bad in ["a/b", ".."] {
            match validate_topic(bad) {
                Err(StoreError::InvalidTopic { topic, reason }) => {
                    assert_eq!(topic, bad);
                    assert!(reason.contains("allowed"), "{reason}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    /// The set lists its queues after a restart (a crash even) with their recovered state, and
    /// creates new ones on first use; names RocketMQ would refuse are refused.
    #[test]
    fn set_lists_and_recovers_queues_after_restart() {
        let disk = MemDisk::new();
        let root = PathBuf::from("/store/consumequeue");
        let mut set = ConsumeQueueSet::open(disk.clone(), &root, 4).unwrap();
        assert!(set.get("TopicA", 0).is_none());
        for (topic, id, count) in [("TopicA", 3, 5), ("%RETRY%g", 0, 2), ("TopicA", 1, 0)] {
            let queue = set.get_or_create(topic, id).unwrap();
            fill(queue, count);
        }
        set.flush().unwrap();
        let err = set.get_or_create("bad/topic", 0).unwrap_err();
        assert!(matches!(err, StoreError::InvalidTopic { .. }), "{err}");
        let err = set.get_or_create("TopicA", -1).unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidQueueId { queue_id: -1 }),
            "{err}"
        );
        drop(set);

        let mut set = ConsumeQueueSet::open(disk.crash(), &root, 4).unwrap();
        let listed: Vec<(&str, i32)> = set.queues().collect();
        assert_eq!(listed, vec![("%RETRY%g", 0), ("TopicA", 1), ("TopicA", 3)]);
        assert_eq!(all(set.get("TopicA", 3).unwrap()), expected(0..5));
        assert_eq!(set.get("TopicA", 1).unwrap().queue_offset_max(), 0);
        assert!(set.get("TopicA", 2).is_none());
        let queue = set.get_mut("%RETRY%g", 0).unwrap();
        assert_eq!(queue.dir(), root.join("%RETRY%g").join("0"));
        fill(queue, 3);
        assert_eq!(all(set.get("%RETRY%g", 0).unwrap()), expected(0..3));
    }

    /// A damaged manifest is refused with its path, never read as fewer queues.
    #[test]
    fn set_rejects_a_corrupt_manifest() {
        let disk = MemDisk::new();
        let root = PathBuf::from("/cq");
        let mut set = ConsumeQueueSet::open(disk.clone(), &root, 4).unwrap();
        set.get_or_create("TopicA", 0).unwrap();
        let path = root.join(MANIFEST_FILE_NAME);
        let mut bytes = disk.read_meta(&path).unwrap().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with("raftmq consume queues v1\nTopicA 0\ncrc32c "),
            "{text}"
        );
        bytes[25] = b'X';
        disk.write_meta(&path, &bytes).unwrap();
        let err = ConsumeQueueSet::open(disk.clone(), &root, 4).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("consume_queues.meta") && text.contains("checksum"),
            "{text}"
        );
        disk.write_meta(&path, b"").unwrap();
        assert!(ConsumeQueueSet::open(disk, &root, 4).is_err());
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Append(u8),
            AppendMany(u8),
            Clear,
            Flush,
            Reopen,
            Crash,
            Truncate(u8),
            Purge(u8),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => (1u8..6).prop_map(Op::Append),
                3 => (0u8..10).prop_map(Op::AppendMany),
                1 => Just(Op::Clear),
                1 => Just(Op::Flush),
                1 => Just(Op::Reopen),
                1 => Just(Op::Crash),
                1 => any::<u8>().prop_map(Op::Truncate),
                1 => any::<u8>().prop_map(Op::Purge),
            ]
        }

        proptest! {
            /// Random appends (one by one and in batches), clears, flushes, reopens, crashes,
            /// truncations and purges against a model:
            /// the units held (a `Vec` from the first file's start), the first and last file, how
            /// many units were written to files and how many are durable. Units wait in memory
            /// until a flush, a purge or [`WRITE_BACK_UNITS`] of them; moving into a new file,
            /// opening and truncating written units sync, as documented, so the model tracks that
            /// too.
            #[test]
            fn queue_matches_a_vec_model(ops in proptest::collection::vec(op(), 1..80), upf in 1u64..5) {
                let mut disk = MemDisk::new();
                let mut queue = ConsumeQueue::open(disk.clone(), &dir(), upf).unwrap();
                let mut first_file = 0u64;
                let mut last_file: Option<u64> = None;
                let mut units: Vec<ConsumeQueueUnit> = Vec::new();
                let mut written = 0u64;
                let mut durable = 0u64;
                // Writing units `written..end` to their files.
                let write_back = |written: &mut u64, end: u64, last_file: &mut Option<u64>, durable: &mut u64| {
                    for offset in *written..end {
                        let file = offset / upf;
                        if last_file.is_some_and(|last| last < file) {
                            *durable = offset;
                        }
                        *last_file = Some(last_file.map_or(file, |last| last.max(file)));
                    }
                    *written = end;
                };
                for op in ops {
                    let min = first_file * upf;
                    let end = min + units.len() as u64;
                    match op {
                        Op::Append(n) => {
                            for offset in end..end + u64::from(n) {
                                queue.append(offset, unit(offset)).unwrap();
                                units.push(unit(offset));
                                if offset + 1 - written >= WRITE_BACK_UNITS as u64 {
                                    write_back(&mut written, offset + 1, &mut last_file, &mut durable);
                                }
                            }
                        }
                        Op::AppendMany(n) => {
                            let batch = expected(end..end + u64::from(n));
                            queue.append_many(end, &batch).unwrap();
                            units.extend(batch);
                            let new_end = end + u64::from(n);
                            if new_end - written >= WRITE_BACK_UNITS as u64 {
                                write_back(&mut written, new_end, &mut last_file, &mut durable);
                            }
                        }
                        Op::Clear => {
                            queue.clear().unwrap();
                            units.clear();
                            first_file = 0;
                            last_file = None;
                            written = 0;
                            durable = 0;
                        }
                        Op::Flush => {
                            queue.flush().unwrap();
                            write_back(&mut written, end, &mut last_file, &mut durable);
                            durable = end;
                        }
                        Op::Reopen => {
                            queue = ConsumeQueue::open(disk.clone(), &dir(), upf).unwrap();
                            units.truncate((written - min) as usize);
                            durable = written;
                        }
                        Op::Crash => {
                            disk = disk.crash();
                            queue = ConsumeQueue::open(disk.clone(), &dir(), upf).unwrap();
                            units.truncate((durable - min) as usize);
                            written = durable;
                            last_file = last_file.map(|last| last.min(durable / upf));
                        }
                        Op::Truncate(k) => {
                            let at = min + u64::from(k) % (units.len() as u64 + 2);
                            queue.truncate_from(at).unwrap();
                            if at < end {
                                units.truncate((at - min) as usize);
                                if at < written {
                                    last_file = Some(at / upf);
                                    written = at;
                                    durable = at;
                                }
                            }
                        }
                        Op::Purge(k) => {
                            let at = u64::from(k) % (end + 2);
                            queue.purge_before(at).unwrap();
                            write_back(&mut written, end, &mut last_file, &mut durable);
                            while last_file.is_some_and(|last| first_file < last)
                                && (first_file + 1) * upf <= at.min(end)
                            {
                                first_file += 1;
                                units.drain(..upf as usize);
                            }
                        }
                    }
                    let min = first_file * upf;
                    prop_assert_eq!(queue.queue_offset_min(), min);
                    prop_assert_eq!(queue.queue_offset_max(), min + units.len() as u64);
                    prop_assert_eq!(&queue.read(min, u64::MAX).unwrap(), &units);
                }
            }
        }
    }
}

/// A disk that counts segment writes, so tests can check how many syscalls a path costs.
#[cfg(test)]
pub(crate) mod counting_disk {
    use std::io;
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use dledger::{Disk, MemDisk, SegmentFile};

    /// A [`MemDisk`] whose files count their `write_at` calls.
    #[derive(Debug, Clone)]
    pub(crate) struct CountingDisk {
        inner: MemDisk,
        writes: Arc<AtomicU64>,
    }

    impl CountingDisk {
        pub(crate) fn new(inner: MemDisk) -> Self {
            CountingDisk {
                inner,
                writes: Arc::default(),
            }
        }

        /// The disk underneath, to crash or edit it.
        pub(crate) fn inner(&self) -> &MemDisk {
            &self.inner
        }

        /// Segment writes so far, by every file of this disk.
        pub(crate) fn writes(&self) -> u64 {
            self.writes.load(Ordering::Relaxed)
        }
    }

    pub(crate) struct CountingFile {
        inner: Arc<<MemDisk as Disk>::File>,
        writes: Arc<AtomicU64>,
    }

    impl SegmentFile for CountingFile {
        fn len(&self) -> u64 {
            self.inner.len()
        }

        fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.inner.write_at(offset, bytes)
        }

        fn read_at(&self, offset: u64, buf: &mut [u8]) {
            self.inner.read_at(offset, buf);
        }

        fn sync_range(&self, offset: u64, len: u64) -> io::Result<()> {
            self.inner.sync_range(offset, len)
        }
    }

    impl Disk for CountingDisk {
        type File = CountingFile;

        fn open_segment(&self, path: &Path, bytes: u64) -> io::Result<Arc<CountingFile>> {
            Ok(Arc::new(CountingFile {
                inner: self.inner.open_segment(path, bytes)?,
                writes: self.writes.clone(),
            }))
        }

        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            self.inner.list(dir)
        }

        fn remove(&self, path: &Path) -> io::Result<()> {
            self.inner.remove(path)
        }

        fn read_meta(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
            self.inner.read_meta(path)
        }

        fn write_meta(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
            self.inner.write_meta(path, bytes)
        }

        fn run_blocking<T, F>(&self, work: F) -> impl Future<Output = T> + Send
        where
            T: Send + 'static,
            F: FnOnce() -> T + Send + 'static,
        {
            self.inner.run_blocking(work)
        }
    }
}
