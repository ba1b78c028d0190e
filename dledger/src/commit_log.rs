//! The CommitLog on segment files: entries appended at growing byte positions, an index of
//! fixed-size units for O(1) lookup by Raft index, and recovery that verifies the tail.
//!
//! Files (all named by their 20-digit starting byte position, as RocketMQ names CommitLog files):
//! - `commitlog/<pos>`: data segments of `segment_bytes` each. An entry never spans two segments;
//!   when it does not fit, the rest of the segment gets a `SEGMENT_END_MAGIC` marker and the entry
//!   starts the next segment.
//! - `index/<pos>`: index files of `index_units_per_file` units; unit `i` sits at byte `i * 32`.
//!
//! This type does no syncing of its own on the hot path: `append` only copies bytes into the
//! files and records which ranges are dirty; the flusher takes them with `take_dirty`. The last
//! entries appended stay in memory too ([`crate::limits::RECENT_ENTRIES_MAX`]) and answer reads. Rare paths
//! (recovery, truncation, purge) sync before they return, because a crash in the middle of them
//! must never leave stale entries that look valid.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk::{Disk, SegmentFile};
use crate::error::{StorageError, Subject, Verb};
pub use crate::file_set::FileRange;
use crate::file_set::{FileOp, FileSet, FileSetError};
use crate::limits::{
    ENTRY_HEADER_BYTES, INDEX_UNIT_BYTES, PAGE_CACHE_KEEP_BYTES, RECENT_BYTES_MAX,
    RECENT_ENTRIES_MAX, RECOVERY_VERIFY_BYTES,
};
use crate::record::{
    EntryHeader, EntryKind, HeaderProblem, IndexUnit, SEGMENT_END_MAGIC, decode_header,
};
use crate::types::LogId;

/// Sizes of the files of one log.
#[derive(Debug, Clone)]
pub struct CommitLogConfig {
    /// Folder holding `commitlog/` and `index/`.
    pub dir: PathBuf,
    /// Bytes per data segment.
    pub segment_bytes: u64,
    /// Units per index file.
    pub index_units_per_file: u64,
    /// Largest entry body accepted.
    pub entry_body_bytes_max: u32,
    /// A deliberate bug for the simulation's checker tests: skip CRC checks during recovery.
    #[cfg(feature = "mutants")]
    #[doc(hidden)]
    pub skip_recovery_crc: bool,
}

/// Rewrites an entry's body when it is appended, on every replica, knowing its position (the
/// way DLedger's `AppendHook` lets RocketMQ write commit-log offsets into stored messages).
///
/// ### Correctness obligations
/// The rewrite must depend only on the body and the position, so every replica writes the same
/// bytes, and it must not change the body's length.
pub trait AppendHook: Send + Sync + 'static {
    /// Rewrites `body`, which will start at `body_position` in the CommitLog.
    fn on_append(&self, body_position: u64, body: &mut [u8]);
}

/// One entry to append.
pub struct NewEntry<'a> {
    /// Its id.
    pub log_id: LogId,
    /// What it carries.
    pub kind: EntryKind,
    /// Its body.
    pub body: &'a [u8],
}

/// An entry read back from the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The verified header.
    pub header: EntryHeader,
    /// The verified body.
    pub body: bytes::Bytes,
}

/// A batch laid out in memory before it is written.
struct Plan {
    /// Bytes per file touched, in order: (file start, offset in file, bytes).
    chunks: Vec<Chunk>,
    units: Vec<IndexUnit>,
    /// Each entry's header, chunk and body start in that chunk.
    entries: Vec<(EntryHeader, usize, usize)>,
    /// Position after the batch.
    end: u64,
}

struct Chunk {
    file_start: u64,
    offset: u64,
    bytes: Vec<u8>,
}

impl Plan {
    /// The buffer that continues at `offset` of the file at `file_start`.
    fn bytes_at(&mut self, file_start: u64, offset: u64) -> &mut Vec<u8> {
        let continues = self.chunks.last().is_some_and(|c| {
            c.file_start == file_start && c.offset + c.bytes.len() as u64 == offset
        });
        if !continues {
            self.chunks.push(Chunk {
                file_start,
                offset,
                bytes: Vec::new(),
            });
        }
        &mut self.chunks.last_mut().expect("pushed above").bytes
    }
}

/// The log over its files.
pub struct CommitLog<D: Disk> {
    config: CommitLogConfig,
    /// The data segments.
    segments: FileSet<D>,
    /// The index files.
    index: FileSet<D>,
    /// First index that can be read; entries below were purged.
    first_index: u64,
    /// One past the last entry.
    next_index: u64,
    /// Term of the last entry (or of the last purged one when the log is empty).
    last_term: u64,
    /// The last purged id.
    purged: Option<LogId>,
    /// Where the next entry goes.
    write_position: u64,
    /// Positions below this were handed to the flusher to drop from the page cache.
    cold_until: u64,
    hook: Option<Arc<dyn AppendHook>>,
    /// Whether reads verify body CRCs (always, but for the `skip_recovery_crc` mutant).
    check_crc: bool,
    /// The last entries appended, contiguous; see [`RECENT_ENTRIES_MAX`].
    recent: VecDeque<StoredEntry>,
    recent_bytes: u64,
}

/// Which of the log's file sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files {
    /// The data segments (`commitlog/`).
    Segments,
    /// The index files (`index/`).
    Index,
}

impl Files {
    fn subject(self, file_start: u64) -> Subject {
        match self {
            Files::Segments => Subject::Segment { file_start },
            Files::Index => Subject::IndexFile { file_start },
        }
    }

    /// The log's error for a failed operation on this file set.
    fn error(self, err: FileSetError) -> StorageError {
        match err {
            FileSetError::Unexpected { path, reason } => {
                StorageError::UnexpectedFile { path, reason }
            }
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
                    Some(start) => self.subject(start),
                    None => Subject::Dir { path },
                };
                StorageError::io(verb, subject, source)
            }
        }
    }
}

/// What recovery found, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Index units found valid in the index files.
    pub indexed: u64,
    /// Entries re-indexed from the data files.
    pub rebuilt: u64,
    /// First index cut from the tail, if any, and why.
    pub cut: Option<(u64, String)>,
}

/// Whether reads of `config`'s log check body CRCs: always, but for the `skip_recovery_crc`
/// mutant.
fn crc_checked(config: &CommitLogConfig) -> bool {
    #[cfg(feature = "mutants")]
    if config.skip_recovery_crc {
        return false;
    }
    let _ = config;
    true
}

impl<D: Disk> CommitLog<D> {
    /// Opens the log in `config.dir`, verifying and repairing its tail.
    ///
    /// `committed` is the last index known committed (persisted); `purged` the last purged id;
    /// `restart` where the entry after `purged` starts, when a snapshot install recorded it (an
    /// empty log goes on there). Blocking: call from a blocking context.
    ///
    /// # Errors
    /// I/O errors; a corrupt or missing entry at or below `committed`; unexpected files.
    pub fn open(
        disk: D,
        config: CommitLogConfig,
        committed: Option<u64>,
        purged: Option<LogId>,
        restart: Option<u64>,
        hook: Option<Arc<dyn AppendHook>>,
    ) -> Result<(Self, RecoveryReport), StorageError> {
        let segments = FileSet::open(
            disk.clone(),
            &config.dir.join("commitlog"),
            config.segment_bytes,
        )
        .map_err(|err| Files::Segments.error(err))?;
        let index_bytes = config.index_units_per_file * u64::from(INDEX_UNIT_BYTES);
        let index = FileSet::open(disk.clone(), &config.dir.join("index"), index_bytes)
            .map_err(|err| Files::Index.error(err))?;
        let first_index = purged.map_or(0, |p| p.index + 1);
        let mut log = CommitLog {
            segments,
            index,
            first_index,
            next_index: first_index,
            last_term: purged.map_or(0, |p| p.term),
            purged,
            write_position: 0,
            cold_until: 0,
            hook,
            check_crc: crc_checked(&config),
            config,
            recent: VecDeque::new(),
            recent_bytes: 0,
        };
        let report = log.recover(committed)?;
        if let Some(position) = restart
            && log.is_empty()
            && log.write_position <= position
        {
            log.write_position = position;
        }
        log.check_crc = true;
        log.sync_all_dirty()?;
        log.cold_until = log.write_position.saturating_sub(PAGE_CACHE_KEEP_BYTES);
        Ok((log, report))
    }

    fn index_file_bytes(&self) -> u64 {
        self.index.file_bytes()
    }

    /// Asserts what the log keeps true between calls: its file sets are sound; indexes run from
    /// `first_index` to `next_index` with the purged id just below; the last indexed entry ends
    /// at or before the write position, inside the segments that exist; and the entries kept in
    /// memory are the newest ones, contiguous, with their byte count right. Cheap enough for
    /// every step of the simulation: it reads one index unit.
    pub fn check_invariants(&self) {
        self.segments.check_invariants();
        self.index.check_invariants();
        assert!(
            self.first_index <= self.next_index,
            "first index {} <= next index {}",
            self.first_index,
            self.next_index
        );
        if let Some(purged) = self.purged {
            assert_eq!(
                purged.index + 1,
                self.first_index,
                "entries start after the purged id"
            );
        }
        if self.next_index > self.first_index {
            let last = self
                .read_unit(self.next_index - 1)
                .expect("the last entry is indexed");
            assert_eq!(
                last.index,
                self.next_index - 1,
                "the last unit names its index"
            );
            assert_eq!(last.term, self.last_term, "the last unit has the last term");
            let end = last.position + u64::from(last.total_bytes);
            assert!(
                end <= self.write_position,
                "the last entry ends at {end}, within the write position {}",
                self.write_position
            );
            assert!(
                self.segments.contains(self.segment_start(last.position)),
                "the last entry's segment exists"
            );
        }
        let mut expected = self.recent.front().map(|e| e.header.index);
        let mut bytes = 0;
        for entry in &self.recent {
            assert_eq!(
                Some(entry.header.index),
                expected,
                "kept entries are contiguous"
            );
            expected = Some(entry.header.index + 1);
            bytes += entry.body.len() as u64;
        }
        assert_eq!(bytes, self.recent_bytes, "kept bytes are counted");
        if let (Some(front), Some(back)) = (self.recent.front(), self.recent.back()) {
            assert!(
                front.header.index >= self.first_index,
                "no purged entry is kept"
            );
            assert_eq!(
                back.header.index + 1,
                self.next_index,
                "the newest entries are kept"
            );
        }
    }

    /// Path of the data segment holding `position`.
    pub fn segment_path(&self, position: u64) -> PathBuf {
        self.segments.path(self.segment_start(position))
    }

    fn segment_start(&self, position: u64) -> u64 {
        position - position % self.config.segment_bytes
    }

    fn read_unit(&self, index: u64) -> Option<IndexUnit> {
        let byte = index.checked_mul(u64::from(INDEX_UNIT_BYTES))?;
        let file_start = byte - byte % self.index_file_bytes();
        let file = self.index.get(file_start)?;
        let mut buf = [0u8; INDEX_UNIT_BYTES as usize];
        file.read_at(byte - file_start, &mut buf);
        IndexUnit::decode(&buf)
    }

    /// Reads and checks the entry at `position`, without knowing what it should be.
    fn read_at(&self, position: u64) -> Result<StoredEntry, HeaderProblem> {
        let start = self.segment_start(position);
        let Some(file) = self.segments.get(start) else {
            return Err(HeaderProblem::Zero);
        };
        let offset = position - start;
        if offset + u64::from(ENTRY_HEADER_BYTES) > file.len() {
            return Err(HeaderProblem::SegmentEnd);
        }
        let mut header_bytes = [0u8; ENTRY_HEADER_BYTES as usize];
        file.read_at(offset, &mut header_bytes);
        let header = decode_header(&header_bytes, self.config.entry_body_bytes_max)?;
        if header.position != position {
            return Err(HeaderProblem::Invalid(format!(
                "header says position {}, found at {position}",
                header.position
            )));
        }
        if offset + u64::from(header.total_bytes) > file.len() {
            return Err(HeaderProblem::Invalid(format!(
                "entry of {} bytes passes the end of its segment",
                header.total_bytes
            )));
        }
        let mut body = vec![0u8; header.body_bytes() as usize];
        file.read_at(offset + u64::from(ENTRY_HEADER_BYTES), &mut body);
        let crc = crc32c::crc32c(&body);
        if self.check_crc && crc != header.body_crc {
            return Err(HeaderProblem::Invalid(format!(
                "body CRC mismatch: stored {:#010x}, computed {crc:#010x}",
                header.body_crc
            )));
        }
        Ok(StoredEntry {
            header,
            body: body.into(),
        })
    }

    fn recover(&mut self, committed: Option<u64>) -> Result<RecoveryReport, StorageError> {
        let mut report = RecoveryReport::default();
        // Phase 1: walk the index while its units are valid and consistent.
        let mut next = self.first_index;
        let mut prev: Option<IndexUnit> = None;
        while let Some(unit) = self.read_unit(next) {
            let consistent = unit.index == next
                && unit.total_bytes >= ENTRY_HEADER_BYTES
                && self.segments.contains(self.segment_start(unit.position))
                && prev.is_none_or(|p| {
                    unit.term >= p.term && unit.position >= p.position + u64::from(p.total_bytes)
                });
            if !consistent {
                break;
            }
            prev = Some(unit);
            next += 1;
        }
        report.indexed = next - self.first_index;

        // Phase 2: verify against the data every indexed entry that is not known committed, and
        // the last committed one, which bounds what must be intact.
        let verify_from = match committed {
            Some(c) if c >= self.first_index && c < next => self.verify_window_start(c),
            Some(c) => c.max(self.first_index),
            None => self.first_index,
        };
        let mut valid_next = next;
        for index in verify_from..next {
            let unit = self.reread_unit(index)?;
            let check = |log: &Self| {
                log.read_at(unit.position).and_then(|entry| {
                    let h = entry.header;
                    if h.index != unit.index
                        || h.term != unit.term
                        || h.total_bytes != unit.total_bytes
                    {
                        Err(HeaderProblem::Invalid(format!(
                            "entry {}/{} of {} bytes does not match its index unit {}/{} of {} bytes",
                            h.term, h.index, h.total_bytes, unit.term, unit.index, unit.total_bytes
                        )))
                    } else {
                        Ok(())
                    }
                })
            };
            // A read that returned damaged bytes once (a transient fault between the disk and
            // memory) must not pass for a torn write: the entry may be synced and acknowledged,
            // so cutting it would lose what a quorum counted on. Only damage that reads the same
            // twice is cut.
            let checked = check(self).or_else(|_| check(self));
            if let Err(problem) = checked {
                if committed.is_some_and(|c| index <= c) {
                    return Err(self.corrupt_committed(unit.position, &problem, committed));
                }
                report.cut = Some((index, format!("{problem:?}")));
                valid_next = index;
                break;
            }
        }

        // Phase 3: continue from the last valid entry through the data files, re-indexing.
        let (mut position, mut last_term) = if valid_next > self.first_index {
            let unit = self.reread_unit(valid_next - 1)?;
            (unit.position + u64::from(unit.total_bytes), unit.term)
        } else {
            (self.segments.first_start().unwrap_or(0), self.last_term)
        };
        let mut next = valid_next;
        // Where the last entry found ends: the log goes on there. A segment end marker with no
        // entry after it (a crash between the two writes of a roll) is not part of the log; the
        // next entry may fit before it, as it does on the replicas that never wrote the marker.
        let mut end = position;
        let stop = loop {
            match self.read_at(position) {
                Ok(entry) => {
                    let h = entry.header;
                    if h.index < self.first_index {
                        // Purged, but still in the first segment.
                        position += u64::from(h.total_bytes);
                        end = position;
                        continue;
                    }
                    let starts_log = next == self.first_index
                        && h.index > next
                        && committed.is_none_or(|c| c < self.first_index);
                    if starts_log {
                        // The log began past its purged point (see `append_one`).
                        self.first_index = h.index;
                        next = h.index;
                    }
                    if h.index != next || h.term < last_term {
                        break Some(HeaderProblem::Invalid(format!(
                            "entry {}/{} where {next} (term >= {last_term}) was expected",
                            h.term, h.index
                        )));
                    }
                    self.write_unit(IndexUnit {
                        index: h.index,
                        term: h.term,
                        position,
                        total_bytes: h.total_bytes,
                    })?;
                    report.rebuilt += 1;
                    next += 1;
                    last_term = h.term;
                    position += u64::from(h.total_bytes);
                    end = position;
                }
                Err(HeaderProblem::SegmentEnd) => {
                    position = self.segment_start(position) + self.config.segment_bytes;
                }
                Err(HeaderProblem::Zero) if self.next_segment_continues(position, next) => {
                    position = self.segment_start(position) + self.config.segment_bytes;
                }
                Err(HeaderProblem::Zero) => break None,
                Err(problem) => match self.read_at(position) {
                    // Damaged once, whole when read again: a transient read fault (see phase 2).
                    Ok(_) => continue,
                    Err(_) => break Some(problem),
                },
            }
        };
        if let Some(c) = committed.filter(|&c| next <= c) {
            return Err(match stop {
                Some(problem) => self.corrupt_committed(position, &problem, committed),
                None => StorageError::MissingCommitted {
                    index: next.max(self.first_index),
                    last: next.checked_sub(1).filter(|&l| l >= self.first_index),
                },
            })
            .inspect_err(|_| tracing::error!(committed = c, "committed region damaged"));
        }
        if let Some(problem) = stop
            && report.cut.is_none()
        {
            report.cut = Some((next, format!("{problem:?}")));
        }
        self.next_index = next;
        if next > self.first_index {
            self.last_term = last_term;
        }
        self.write_position = end;
        self.cut_tail(end, next)?;
        Ok(report)
    }

    /// First index whose entry lies within `RECOVERY_VERIFY_BYTES` before committed entry `c`:
    /// recovery re-verifies that much of the committed region, so damage near the tail stops the
    /// replica at start rather than at the first read. Older entries are verified when read.
    fn verify_window_start(&self, c: u64) -> u64 {
        let Some(end) = self.read_unit(c) else {
            return c;
        };
        let floor = end.position.saturating_sub(RECOVERY_VERIFY_BYTES);
        let (mut low, mut high) = (self.first_index, c);
        while low < high {
            let mid = low + (high - low) / 2;
            match self.read_unit(mid) {
                Some(unit) if unit.position < floor => low = mid + 1,
                _ => high = mid,
            }
        }
        low
    }

    /// Reads a unit that phase 1 of recovery found valid. Failing now means the disk returned
    /// other bytes for the same place: that is an error, not a bug of ours.
    fn reread_unit(&self, index: u64) -> Result<IndexUnit, StorageError> {
        self.read_unit(index).ok_or_else(|| StorageError::Corrupt {
            index,
            path: self.index.dir().to_path_buf(),
            position: index * u64::from(INDEX_UNIT_BYTES),
            reason: "index unit read differently during recovery".into(),
        })
    }

    /// Whether the segment after the one holding `position` starts with entry `next` (or a
    /// purged one): a zeroed end marker must not hide a later, intact segment.
    fn next_segment_continues(&self, position: u64, next: u64) -> bool {
        let following = self.segment_start(position) + self.config.segment_bytes;
        match self.read_at(following) {
            Ok(entry) => entry.header.index == next || entry.header.index < self.first_index,
            Err(_) => false,
        }
    }

    fn corrupt_committed(
        &self,
        position: u64,
        problem: &HeaderProblem,
        committed: Option<u64>,
    ) -> StorageError {
        StorageError::CorruptCommitted {
            path: self.segment_path(position),
            position,
            file_offset: position % self.config.segment_bytes,
            reason: match problem {
                HeaderProblem::Zero => "entry is missing (zero bytes)".into(),
                HeaderProblem::SegmentEnd => "unexpected segment end".into(),
                HeaderProblem::Invalid(reason) => reason.clone(),
            },
            committed: committed.unwrap_or(0),
        }
    }

    /// Zeroes everything after the log's end: data from `position`, index units from `next`,
    /// and removes later files, so stale bytes can never pass for entries later.
    fn cut_tail(&mut self, position: u64, next: u64) -> Result<(), StorageError> {
        let segment_start = self.segment_start(position);
        self.segments
            .zero_from(segment_start, position - segment_start)
            .map_err(|err| Files::Segments.error(err))?;
        self.segments
            .remove_after(position)
            .map_err(|err| Files::Segments.error(err))?;
        let byte = next * u64::from(INDEX_UNIT_BYTES);
        let index_start = self.index.file_start(byte);
        self.index
            .zero_from(index_start, byte - index_start)
            .map_err(|err| Files::Index.error(err))?;
        self.index
            .remove_after(byte)
            .map_err(|err| Files::Index.error(err))?;
        Ok(())
    }

    /// The file of `files` starting at `file_start`, created if it is not there yet.
    fn file_for(&mut self, files: Files, file_start: u64) -> Result<Arc<D::File>, StorageError> {
        let set = match files {
            Files::Segments => &mut self.segments,
            Files::Index => &mut self.index,
        };
        let created = !set.contains(file_start);
        let file = set.file_for(file_start).map_err(|err| files.error(err))?;
        if created && files == Files::Segments {
            tracing::info!(file_start, "CommitLog segment created");
        }
        Ok(file)
    }

    fn write_unit(&mut self, unit: IndexUnit) -> Result<(), StorageError> {
        self.write_units(&[unit])
    }

    /// Keeps the entries just written (bodies as laid out, hook applied) for later reads.
    fn remember(&mut self, chunks: Vec<Chunk>, entries: &[(EntryHeader, usize, usize)]) {
        if let (Some(last), Some((first, _, _))) = (self.recent.back(), entries.first())
            && last.header.index + 1 != first.index
        {
            // Not a continuation (an empty log restarted past a purge): start over.
            self.recent.clear();
            self.recent_bytes = 0;
        }
        let chunks: Vec<bytes::Bytes> = chunks.into_iter().map(|c| c.bytes.into()).collect();
        for &(header, chunk, body_at) in entries {
            let body = chunks[chunk].slice(body_at..body_at + header.body_bytes() as usize);
            self.recent_bytes += body.len() as u64;
            self.recent.push_back(StoredEntry { header, body });
        }
        while self.recent.len() > RECENT_ENTRIES_MAX || self.recent_bytes > RECENT_BYTES_MAX {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some(entry) = self.recent.pop_front() {
            self.recent_bytes -= entry.body.len() as u64;
        }
    }

    fn forget_newest(&mut self) {
        if let Some(entry) = self.recent.pop_back() {
            self.recent_bytes -= entry.body.len() as u64;
        }
    }

    /// Appends entries. They are readable on return and durable once the flusher has synced the
    /// ranges from `take_dirty`. The whole batch is laid out in memory first and written with one
    /// write per file touched; if a write fails, the log is left as it was before the call.
    ///
    /// # Errors
    /// An entry body over the bound; an I/O error (a full disk among them).
    ///
    /// # Panics
    /// If an entry does not directly follow the log (a caller bug: openraft never leaves holes).
    pub fn append<'a>(
        &mut self,
        entries: impl IntoIterator<Item = NewEntry<'a>>,
    ) -> Result<(), StorageError> {
        let plan = self.plan(entries)?;
        for chunk in &plan.chunks {
            let file = self.file_for(Files::Segments, chunk.file_start)?;
            file.write_at(chunk.offset, &chunk.bytes)
                .map_err(|source| {
                    StorageError::io(
                        Verb::Write,
                        Subject::Segment {
                            file_start: chunk.file_start,
                        },
                        source,
                    )
                })?;
        }
        self.write_units(&plan.units)?;
        for chunk in &plan.chunks {
            let end = chunk.offset + chunk.bytes.len() as u64;
            self.segments
                .mark_dirty(chunk.file_start, chunk.offset, end);
        }
        self.remember(plan.chunks, &plan.entries);
        if let Some(first) = plan.units.first()
            && self.is_empty()
            && first.index > self.next_index
        {
            self.first_index = first.index;
        }
        if let Some(last) = plan.units.last() {
            self.next_index = last.index + 1;
            self.last_term = last.term;
        }
        self.write_position = plan.end;
        Ok(())
    }

    /// Lays a batch out: the bytes of each file touched, and the index units.
    fn plan<'a>(
        &self,
        entries: impl IntoIterator<Item = NewEntry<'a>>,
    ) -> Result<Plan, StorageError> {
        let segment_bytes = self.config.segment_bytes;
        let body_max = u64::from(self.config.entry_body_bytes_max);
        let mut plan = Plan {
            chunks: Vec::new(),
            units: Vec::new(),
            entries: Vec::new(),
            end: self.write_position,
        };
        let mut next = self.next_index;
        let mut last_term = self.last_term;
        for entry in entries {
            let body_bytes = entry.body.len() as u64;
            if body_bytes > body_max {
                return Err(StorageError::EntryTooLarge {
                    size: body_bytes,
                    max: body_max,
                });
            }
            if plan.units.is_empty() && self.is_empty() && entry.log_id.index > next {
                // An empty log may start anywhere past what was purged (openraft's storage suite
                // starts logs at 1; a snapshot restarts one at its end).
                next = entry.log_id.index;
            }
            assert_eq!(
                entry.log_id.index, next,
                "entries must follow the log without a hole"
            );
            assert!(
                entry.log_id.term >= last_term,
                "terms must not decrease along the log"
            );
            let total = u64::from(ENTRY_HEADER_BYTES) + body_bytes;
            let mut position = plan.end;
            let left = segment_bytes - position % segment_bytes;
            if total > left {
                if left >= 4 {
                    plan.bytes_at(self.segment_start(position), position % segment_bytes)
                        .extend_from_slice(&SEGMENT_END_MAGIC.to_be_bytes());
                }
                position += left;
            }
            let buf = plan.bytes_at(self.segment_start(position), position % segment_bytes);
            let header_at = buf.len();
            buf.resize(header_at + ENTRY_HEADER_BYTES as usize, 0);
            buf.extend_from_slice(entry.body);
            let body = &mut buf[header_at + ENTRY_HEADER_BYTES as usize..];
            if let (Some(hook), EntryKind::Normal) = (&self.hook, entry.kind) {
                hook.on_append(position + u64::from(ENTRY_HEADER_BYTES), body);
            }
            let header = EntryHeader {
                total_bytes: u32::try_from(total).expect("bounded by entry_body_bytes_max"),
                index: entry.log_id.index,
                term: entry.log_id.term,
                position,
                kind: entry.kind,
                body_crc: crc32c::crc32c(body),
            };
            let header_bytes: &mut [u8; ENTRY_HEADER_BYTES as usize] = (&mut buf
                [header_at..header_at + ENTRY_HEADER_BYTES as usize])
                .try_into()
                .expect("header-sized slice");
            header.encode(header_bytes);
            plan.entries.push((
                header,
                plan.chunks.len() - 1,
                header_at + ENTRY_HEADER_BYTES as usize,
            ));
            plan.units.push(IndexUnit {
                index: header.index,
                term: header.term,
                position,
                total_bytes: header.total_bytes,
            });
            next += 1;
            last_term = header.term;
            plan.end = position + total;
        }
        Ok(plan)
    }

    /// Writes index units, one write per run of units in the same index file.
    fn write_units(&mut self, units: &[IndexUnit]) -> Result<(), StorageError> {
        let unit_bytes = u64::from(INDEX_UNIT_BYTES);
        let file_bytes = self.index_file_bytes();
        let mut at = 0;
        while at < units.len() {
            let byte = units[at].index * unit_bytes;
            let file_start = byte - byte % file_bytes;
            let room = ((file_start + file_bytes - byte) / unit_bytes) as usize;
            let run = &units[at..units.len().min(at + room)];
            let mut bytes = Vec::with_capacity(run.len() * INDEX_UNIT_BYTES as usize);
            for unit in run {
                bytes.extend_from_slice(&unit.encode());
            }
            let file = self.file_for(Files::Index, file_start)?;
            let offset = byte - file_start;
            file.write_at(offset, &bytes).map_err(|source| {
                StorageError::io(Verb::Write, Subject::IndexFile { file_start }, source)
            })?;
            self.index
                .mark_dirty(file_start, offset, offset + bytes.len() as u64);
            at += run.len();
        }
        Ok(())
    }

    /// Files the log will need soon (the next data segment once the current one is half full,
    /// the next index file likewise), so the flusher can create them ahead of time instead of an
    /// append stalling on file creation: `(which, file_start, path, size)`.
    pub fn files_to_prepare(&self) -> Vec<(Files, u64, PathBuf, u64)> {
        let mut wanted = Vec::new();
        let index_byte = self.next_index * u64::from(INDEX_UNIT_BYTES);
        for (files, set, at) in [
            (Files::Segments, &self.segments, self.write_position),
            (Files::Index, &self.index, index_byte),
        ] {
            let bytes = set.file_bytes();
            if at % bytes > bytes / 2 {
                let next = set.file_start(at) + bytes;
                if !set.contains(next) {
                    wanted.push((files, next, set.path(next), bytes));
                }
            }
        }
        wanted
    }

    /// Adds a file created ahead of time by the caller (see `files_to_prepare`).
    pub fn add_prepared_file(&mut self, files: Files, file_start: u64, file: Arc<D::File>) {
        match files {
            Files::Segments => self.segments.add_prepared(file_start, file),
            Files::Index => self.index.add_prepared(file_start, file),
        }
    }

    /// Whether no entry can be read.
    pub fn is_empty(&self) -> bool {
        self.next_index == self.first_index
    }

    /// The last entry's id, or the last purged id when the log is empty.
    pub fn last(&self) -> Option<LogId> {
        if self.next_index == 0 {
            None
        } else {
            Some(LogId {
                term: self.last_term,
                index: self.next_index - 1,
            })
        }
    }

    /// First readable index.
    pub fn first_index(&self) -> u64 {
        self.first_index
    }

    /// One past the last entry.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Where the next entry will be written.
    pub fn write_position(&self) -> u64 {
        self.write_position
    }

    /// Location of entry `index`: its position and total size.
    pub fn locate(&self, index: u64) -> Option<IndexUnit> {
        if index < self.first_index || index >= self.next_index {
            return None;
        }
        self.read_unit(index)
    }

    /// Reads entry `index`, verifying its CRCs. `None` if it is not in the log.
    ///
    /// # Errors
    /// `Corrupt` if the bytes on disk fail a check.
    pub fn read(&self, index: u64) -> Result<Option<StoredEntry>, StorageError> {
        if index < self.first_index || index >= self.next_index {
            return Ok(None);
        }
        if let Some(first) = self.recent.front()
            && let Some(entry) = index
                .checked_sub(first.header.index)
                .and_then(|i| self.recent.get(i as usize))
        {
            return Ok(Some(entry.clone()));
        }
        let Some(unit) = self.read_unit(index) else {
            return Err(StorageError::Corrupt {
                index,
                path: self.index.dir().to_path_buf(),
                position: index * u64::from(INDEX_UNIT_BYTES),
                reason: "index unit fails its CRC".into(),
            });
        };
        let entry = self
            .read_at(unit.position)
            .map_err(|problem| StorageError::Corrupt {
                index,
                path: self.segment_path(unit.position),
                position: unit.position,
                reason: format!("{problem:?}"),
            })?;
        let h = entry.header;
        // Structure is checked after the checksum passed: these are invariants of our own writes.
        assert_eq!(
            h.index, index,
            "entry at the indexed position must carry the index"
        );
        assert_eq!(h.term, unit.term, "entry term must match its index unit");
        Ok(Some(entry))
    }

    /// Copies `len` raw bytes at global `position`, within one entry's body: the layer above
    /// reads one record of a committed entry without decoding the whole entry. `None` if the
    /// range is not entirely written or crosses a segment end. No CRC is checked here: the
    /// caller checks the record's own checksum.
    pub fn read_bytes(&self, position: u64, len: usize) -> Option<Vec<u8>> {
        let end = position.checked_add(len as u64)?;
        if end > self.write_position {
            return None;
        }
        let start = self.segment_start(position);
        let file = self.segments.get(start)?;
        let offset = position - start;
        if offset + len as u64 > file.len() {
            return None;
        }
        let mut buf = vec![0u8; len];
        file.read_at(offset, &mut buf);
        Some(buf)
    }

    /// Reads the entry that starts at `position`, verifying its CRCs. `None` if no entry of the
    /// log starts there.
    ///
    /// # Errors
    /// `Corrupt` if an entry starts there but fails its checks.
    pub fn read_at_position(&self, position: u64) -> Result<Option<StoredEntry>, StorageError> {
        if position >= self.write_position {
            return Ok(None);
        }
        match self.read_at(position) {
            Ok(entry) if entry.header.index >= self.first_index => {
                let unit = self.read_unit(entry.header.index);
                if unit.is_some_and(|u| u.position == position) {
                    Ok(Some(entry))
                } else {
                    Ok(None)
                }
            }
            Ok(_) | Err(HeaderProblem::Zero | HeaderProblem::SegmentEnd) => Ok(None),
            Err(HeaderProblem::Invalid(_)) => Ok(None),
        }
    }

    /// Removes every entry after `last_kept` (all of them for `None`), zeroing their bytes and
    /// syncing before it returns. Blocking.
    ///
    /// # Errors
    /// I/O errors.
    ///
    /// # Panics
    /// If asked to cut purged entries (a caller bug).
    pub fn truncate_after(&mut self, last_kept: Option<u64>) -> Result<(), StorageError> {
        let new_next = last_kept.map_or(0, |i| i + 1);
        if new_next >= self.next_index {
            return Ok(());
        }
        assert!(
            new_next >= self.first_index,
            "cannot truncate purged entries"
        );
        let unit = self
            .read_unit(new_next)
            .ok_or_else(|| StorageError::Corrupt {
                index: new_next,
                path: self.index.dir().to_path_buf(),
                position: new_next * u64::from(INDEX_UNIT_BYTES),
                reason: "index unit fails its CRC".into(),
            })?;
        // The log goes on where the last kept entry ends, not where the first removed one
        // started: that one may have rolled into a new segment, and the entry that replaces it
        // (smaller, or the same) must land where every other replica puts it, right after the
        // last kept entry when it fits. Positions are a function of the entries alone.
        let kept = (new_next > self.first_index)
            .then(|| self.read_unit(new_next - 1))
            .flatten();
        let cut = kept.map_or(unit.position, |k| {
            (k.position + u64::from(k.total_bytes)).min(unit.position)
        });
        self.last_term = if new_next > self.first_index {
            kept.map_or(self.last_term, |u| u.term)
        } else {
            self.last_term_before_first()
        };
        while self
            .recent
            .back()
            .is_some_and(|e| e.header.index >= new_next)
        {
            self.forget_newest();
        }
        self.cut_tail_from(cut, new_next)?;
        self.next_index = new_next;
        self.write_position = cut;
        tracing::info!(from_index = new_next, position = cut, "log truncated");
        self.sync_all_dirty()
    }

    fn last_term_before_first(&self) -> u64 {
        self.purged.map_or(0, |p| p.term)
    }

    fn cut_tail_from(&mut self, position: u64, next: u64) -> Result<(), StorageError> {
        // The bytes between `position` and the old end were written by us; zero them up to the
        // old end in this segment, and drop later files.
        let segment_start = self.segment_start(position);
        let old_end = self.write_position;
        let from = position - segment_start;
        let zeroed = if self.segment_start(old_end.saturating_sub(1)) == segment_start {
            self.segments
                .zero_range(segment_start, from, old_end - segment_start)
        } else {
            // The log went on in later segments: this one ends in an end marker somewhere.
            self.segments.zero_from(segment_start, from).map(|_| ())
        };
        zeroed.map_err(|err| Files::Segments.error(err))?;
        self.segments
            .remove_after(position)
            .map_err(|err| Files::Segments.error(err))?;
        let unit_bytes = u64::from(INDEX_UNIT_BYTES);
        let index_bytes = self.index.file_bytes();
        let (from_byte, to_byte) = (next * unit_bytes, self.next_index * unit_bytes);
        let mut file_start = self.index.file_start(from_byte);
        while file_start < to_byte {
            if self.index.contains(file_start) {
                let from = from_byte.max(file_start) - file_start;
                let to = to_byte.min(file_start + index_bytes) - file_start;
                self.index
                    .zero_range(file_start, from, to)
                    .map_err(|err| Files::Index.error(err))?;
            }
            file_start += index_bytes;
        }
        self.index
            .remove_after(from_byte)
            .map_err(|err| Files::Index.error(err))?;
        Ok(())
    }

    /// Marks every entry up to `upto` as purged and deletes files that hold nothing else. The
    /// caller persists the purged id first. When the log holds nothing after `upto`, the next
    /// entry goes at `restart` (where the replica that sent the snapshot up to `upto` has it),
    /// if given. Blocking.
    ///
    /// # Errors
    /// I/O errors removing files.
    pub fn purge(&mut self, upto: LogId, restart: Option<u64>) -> Result<(), StorageError> {
        if upto.index < self.first_index {
            return Ok(());
        }
        let keep_position = if upto.index + 1 < self.next_index {
            self.read_unit(upto.index + 1).map(|u| u.position)
        } else {
            None
        };
        self.first_index = upto.index + 1;
        self.purged = Some(upto);
        while self
            .recent
            .front()
            .is_some_and(|e| e.header.index <= upto.index)
        {
            self.forget_oldest();
        }
        let mut restarted = false;
        if self.next_index <= self.first_index {
            self.next_index = self.first_index;
            self.last_term = upto.term;
            if let Some(position) = restart
                && position != self.write_position
            {
                // The log goes on where the snapshot's sender has it. Bytes of a diverged log
                // past that point must not follow it.
                let start = self.segment_start(position);
                self.segments
                    .zero_from(start, position - start)
                    .map_err(|err| Files::Segments.error(err))?;
                self.segments
                    .remove_after(position)
                    .map_err(|err| Files::Segments.error(err))?;
                self.write_position = position;
                restarted = true;
                tracing::info!(
                    next_index = self.next_index,
                    position,
                    "log restarts after a snapshot"
                );
            }
        }
        let keep_from = self.segment_start(keep_position.unwrap_or(self.write_position));
        self.segments
            .remove_before(keep_from)
            .map_err(|err| Files::Segments.error(err))?;
        if restarted {
            self.sync_all_dirty()?;
        }
        let byte = self.first_index * u64::from(INDEX_UNIT_BYTES);
        self.index
            .remove_before(self.index.file_start(byte))
            .map_err(|err| Files::Index.error(err))?;
        Ok(())
    }

    /// Takes the ranges written since the last call for the flusher to sync: the data files,
    /// and the index files too when `index` is set (data first).
    ///
    /// The index may lag the data on disk: recovery re-indexes every entry it finds in the data
    /// past the last valid index unit (phase 3 of `recover`) and checks every indexed entry that
    /// is not known committed against the data, so an index unit lost in a crash or written
    /// without its entry costs a re-read, never an entry. Syncing it on every flush doubled the
    /// syncs of a busy log.
    pub fn take_dirty(&mut self, index: bool) -> Vec<FileRange<D::File>> {
        let mut ranges = self.segments.take_dirty();
        if index {
            ranges.extend(self.index.take_dirty());
        }
        ranges
    }

    /// Segment ranges at least `keep` bytes behind the write position and not handed out
    /// before, once `step` bytes of them gathered (the flusher passes
    /// [`PAGE_CACHE_KEEP_BYTES`] and [`crate::limits::PAGE_CACHE_DROP_STEP_BYTES`]). The flusher drops them
    /// from the page cache after syncing what [`Self::take_dirty`] gave it, which covers
    /// everything up to the write position.
    pub fn take_cold(&mut self, keep: u64, step: u64) -> Vec<FileRange<D::File>> {
        let target = self.write_position.saturating_sub(keep);
        // A log cut back (a conflicting tail, a snapshot) writes again below the old mark.
        self.cold_until = self.cold_until.min(target);
        if target < self.cold_until.saturating_add(step) {
            return Vec::new();
        }
        let mut ranges = Vec::new();
        let mut at = self.cold_until;
        while at < target {
            let file_start = self.segment_start(at);
            let end = (file_start + self.config.segment_bytes).min(target);
            if let Some(file) = self.segments.get(file_start) {
                ranges.push(FileRange {
                    file: file.clone(),
                    file_start,
                    offset: at - file_start,
                    len: end - at,
                });
            }
            at = end;
        }
        self.cold_until = target;
        ranges
    }

    /// Syncs every range written since the last sync. Blocking.
    ///
    /// # Errors
    /// The I/O error of the failed sync.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.sync_all_dirty()
    }

    fn sync_all_dirty(&mut self) -> Result<(), StorageError> {
        self.segments
            .sync_dirty()
            .map_err(|err| Files::Segments.error(err))?;
        self.index
            .sync_dirty()
            .map_err(|err| Files::Index.error(err))
    }

    /// The folder holding the data segments.
    pub fn data_dir(&self) -> &Path {
        self.segments.dir()
    }

    /// The folder holding the index files.
    pub fn index_dir(&self) -> &Path {
        self.index.dir()
    }
}
