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

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk::{Disk, SegmentFile};
use crate::error::{StorageError, Subject, Verb};
use crate::limits::{
    ENTRY_HEADER_BYTES, INDEX_UNIT_BYTES, RECENT_BYTES_MAX, RECENT_ENTRIES_MAX,
    RECOVERY_VERIFY_BYTES,
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

/// Zeroing works in chunks of this many bytes, so no buffer grows with the range.
const ZERO_CHUNK: u64 = 64 * 1024;

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

/// A dirty byte range of one file, for the flusher.
pub struct DirtyRange<F> {
    /// The file.
    pub file: Arc<F>,
    /// First dirty byte.
    pub offset: u64,
    /// Dirty bytes.
    pub len: u64,
}

/// The log over its files.
pub struct CommitLog<D: Disk> {
    disk: D,
    config: CommitLogConfig,
    data_dir: PathBuf,
    index_dir: PathBuf,
    segments: BTreeMap<u64, Arc<D::File>>,
    index_files: BTreeMap<u64, Arc<D::File>>,
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
    dirty_data: BTreeMap<u64, (u64, u64)>,
    dirty_index: BTreeMap<u64, (u64, u64)>,
    hook: Option<Arc<dyn AppendHook>>,
    /// Whether reads verify body CRCs (always, but for the `skip_recovery_crc` mutant).
    check_crc: bool,
    /// The last entries appended, contiguous; see [`RECENT_ENTRIES_MAX`].
    recent: VecDeque<StoredEntry>,
    recent_bytes: u64,
}

fn file_name(start: u64) -> String {
    format!("{start:020}")
}

fn parse_file_name(name: &str) -> Option<u64> {
    if name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}

fn extend(dirty: &mut BTreeMap<u64, (u64, u64)>, file_start: u64, from: u64, to: u64) {
    let range = dirty.entry(file_start).or_insert((from, to));
    range.0 = range.0.min(from);
    range.1 = range.1.max(to);
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
    /// `committed` is the last index known committed (persisted); `purged` the last purged id.
    /// Blocking: call from a blocking context.
    ///
    /// # Errors
    /// I/O errors; a corrupt or missing entry at or below `committed`; unexpected files.
    pub fn open(
        disk: D,
        config: CommitLogConfig,
        committed: Option<u64>,
        purged: Option<LogId>,
        hook: Option<Arc<dyn AppendHook>>,
    ) -> Result<(Self, RecoveryReport), StorageError> {
        let data_dir = config.dir.join("commitlog");
        let index_dir = config.dir.join("index");
        let first_index = purged.map_or(0, |p| p.index + 1);
        let mut log = CommitLog {
            disk,
            data_dir,
            index_dir,
            segments: BTreeMap::new(),
            index_files: BTreeMap::new(),
            first_index,
            next_index: first_index,
            last_term: purged.map_or(0, |p| p.term),
            purged,
            write_position: 0,
            dirty_data: BTreeMap::new(),
            dirty_index: BTreeMap::new(),
            hook,
            check_crc: crc_checked(&config),
            config,
            recent: VecDeque::new(),
            recent_bytes: 0,
        };
        log.segments = log.open_dir(true)?;
        log.index_files = log.open_dir(false)?;
        let report = log.recover(committed)?;
        log.check_crc = true;
        log.sync_all_dirty()?;
        Ok((log, report))
    }

    fn index_file_bytes(&self) -> u64 {
        self.config.index_units_per_file * u64::from(INDEX_UNIT_BYTES)
    }

    fn open_dir(&self, data: bool) -> Result<BTreeMap<u64, Arc<D::File>>, StorageError> {
        let (dir, bytes) = if data {
            (&self.data_dir, self.config.segment_bytes)
        } else {
            (&self.index_dir, self.index_file_bytes())
        };
        let names = self.disk.list(dir).map_err(|source| {
            StorageError::io(Verb::List, Subject::Dir { path: dir.clone() }, source)
        })?;
        let mut files = BTreeMap::new();
        for name in names {
            let path = dir.join(&name);
            let Some(start) = parse_file_name(&name) else {
                return Err(StorageError::UnexpectedFile {
                    path,
                    reason: "name is not a 20-digit byte position".into(),
                });
            };
            if start % bytes != 0 {
                return Err(StorageError::UnexpectedFile {
                    path,
                    reason: format!("start {start} is not a multiple of the file size {bytes}"),
                });
            }
            let file = self.disk.open_segment(&path, bytes).map_err(|source| {
                let subject = self.subject(data, start);
                StorageError::io(Verb::Open, subject, source)
            })?;
            files.insert(start, file);
        }
        Ok(files)
    }

    fn subject(&self, data: bool, file_start: u64) -> Subject {
        if data {
            Subject::Segment { file_start }
        } else {
            Subject::IndexFile { file_start }
        }
    }

    /// Path of the data segment holding `position`.
    pub fn segment_path(&self, position: u64) -> PathBuf {
        self.data_dir.join(file_name(self.segment_start(position)))
    }

    fn segment_start(&self, position: u64) -> u64 {
        position - position % self.config.segment_bytes
    }

    fn read_unit(&self, index: u64) -> Option<IndexUnit> {
        let byte = index.checked_mul(u64::from(INDEX_UNIT_BYTES))?;
        let file_start = byte - byte % self.index_file_bytes();
        let file = self.index_files.get(&file_start)?;
        let mut buf = [0u8; INDEX_UNIT_BYTES as usize];
        file.read_at(byte - file_start, &mut buf);
        IndexUnit::decode(&buf)
    }

    /// Reads and checks the entry at `position`, without knowing what it should be.
    fn read_at(&self, position: u64) -> Result<StoredEntry, HeaderProblem> {
        let start = self.segment_start(position);
        let Some(file) = self.segments.get(&start) else {
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
                && self
                    .segments
                    .contains_key(&self.segment_start(unit.position))
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
            let checked = self.read_at(unit.position).and_then(|entry| {
                let h = entry.header;
                if h.index != unit.index || h.term != unit.term || h.total_bytes != unit.total_bytes
                {
                    Err(HeaderProblem::Invalid(format!(
                        "entry {}/{} of {} bytes does not match its index unit {}/{} of {} bytes",
                        h.term, h.index, h.total_bytes, unit.term, unit.index, unit.total_bytes
                    )))
                } else {
                    Ok(())
                }
            });
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
            (
                self.segments.keys().next().copied().unwrap_or(0),
                self.last_term,
            )
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
                Err(problem) => break Some(problem),
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
            path: self.index_dir.clone(),
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
        if let Some(file) = self.segments.get(&segment_start).cloned() {
            self.zero_nonzero(&file, position - segment_start, true, segment_start)?;
        }
        let later: Vec<u64> = self
            .segments
            .range(segment_start + 1..)
            .map(|(s, _)| *s)
            .collect();
        for start in later {
            self.remove_file(true, start)?;
        }
        let index_bytes = self.index_file_bytes();
        let byte = next * u64::from(INDEX_UNIT_BYTES);
        let index_start = byte - byte % index_bytes;
        if let Some(file) = self.index_files.get(&index_start).cloned() {
            self.zero_nonzero(&file, byte - index_start, false, index_start)?;
        }
        let later: Vec<u64> = self
            .index_files
            .range(index_start + 1..)
            .map(|(s, _)| *s)
            .collect();
        for start in later {
            self.remove_file(false, start)?;
        }
        Ok(())
    }

    /// Zeroes the non-zero chunks of `file` from `from` to its end, marking them dirty.
    fn zero_nonzero(
        &mut self,
        file: &Arc<D::File>,
        from: u64,
        data: bool,
        file_start: u64,
    ) -> Result<(), StorageError> {
        let mut buf = vec![0u8; ZERO_CHUNK as usize];
        let mut at = from;
        while at < file.len() {
            let len = ZERO_CHUNK.min(file.len() - at);
            file.read_at(at, &mut buf[..len as usize]);
            if buf[..len as usize].iter().any(|&b| b != 0) {
                self.zero_range(file, at, at + len, data, file_start)?;
            }
            at += len;
        }
        Ok(())
    }

    /// Writes zeros over `from..to` of `file`, marking them dirty.
    fn zero_range(
        &mut self,
        file: &Arc<D::File>,
        from: u64,
        to: u64,
        data: bool,
        file_start: u64,
    ) -> Result<(), StorageError> {
        let zeros = vec![0u8; ZERO_CHUNK.min(to.saturating_sub(from)) as usize];
        let mut at = from;
        while at < to {
            let len = ZERO_CHUNK.min(to - at);
            file.write_at(at, &zeros[..len as usize])
                .map_err(|source| {
                    StorageError::io(Verb::Write, self.subject(data, file_start), source)
                })?;
            at += len;
        }
        let dirty = if data {
            &mut self.dirty_data
        } else {
            &mut self.dirty_index
        };
        extend(dirty, file_start, from, to);
        Ok(())
    }

    fn remove_file(&mut self, data: bool, start: u64) -> Result<(), StorageError> {
        let (files, dir, dirty) = if data {
            (&mut self.segments, &self.data_dir, &mut self.dirty_data)
        } else {
            (
                &mut self.index_files,
                &self.index_dir,
                &mut self.dirty_index,
            )
        };
        files.remove(&start);
        dirty.remove(&start);
        let path = dir.join(file_name(start));
        let subject = if data {
            Subject::Segment { file_start: start }
        } else {
            Subject::IndexFile { file_start: start }
        };
        self.disk
            .remove(&path)
            .map_err(|source| StorageError::io(Verb::Remove, subject, source))
    }

    fn file_for(&mut self, data: bool, file_start: u64) -> Result<Arc<D::File>, StorageError> {
        let existing = if data {
            self.segments.get(&file_start)
        } else {
            self.index_files.get(&file_start)
        };
        if let Some(file) = existing {
            return Ok(file.clone());
        }
        let (dir, bytes) = if data {
            (&self.data_dir, self.config.segment_bytes)
        } else {
            (&self.index_dir, self.index_file_bytes())
        };
        let path = dir.join(file_name(file_start));
        let file = self.disk.open_segment(&path, bytes).map_err(|source| {
            StorageError::io(Verb::Open, self.subject(data, file_start), source)
        })?;
        if data {
            tracing::info!(file_start, "CommitLog segment created");
            self.segments.insert(file_start, file.clone());
        } else {
            self.index_files.insert(file_start, file.clone());
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
            let file = self.file_for(true, chunk.file_start)?;
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
            extend(&mut self.dirty_data, chunk.file_start, chunk.offset, end);
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
            let file = self.file_for(false, file_start)?;
            let offset = byte - file_start;
            file.write_at(offset, &bytes).map_err(|source| {
                StorageError::io(Verb::Write, Subject::IndexFile { file_start }, source)
            })?;
            extend(
                &mut self.dirty_index,
                file_start,
                offset,
                offset + bytes.len() as u64,
            );
            at += run.len();
        }
        Ok(())
    }

    /// Files the log will need soon (the next data segment once the current one is half full,
    /// the next index file likewise), so the flusher can create them ahead of time instead of an
    /// append stalling on file creation: `(is_data, file_start, path, size)`.
    pub fn files_to_prepare(&self) -> Vec<(bool, u64, PathBuf, u64)> {
        let mut wanted = Vec::new();
        let segment_bytes = self.config.segment_bytes;
        if self.write_position % segment_bytes > segment_bytes / 2 {
            let next = self.segment_start(self.write_position) + segment_bytes;
            if !self.segments.contains_key(&next) {
                wanted.push((
                    true,
                    next,
                    self.data_dir.join(file_name(next)),
                    segment_bytes,
                ));
            }
        }
        let index_bytes = self.index_file_bytes();
        let byte = self.next_index * u64::from(INDEX_UNIT_BYTES);
        if byte % index_bytes > index_bytes / 2 {
            let next = byte - byte % index_bytes + index_bytes;
            if !self.index_files.contains_key(&next) {
                wanted.push((
                    false,
                    next,
                    self.index_dir.join(file_name(next)),
                    index_bytes,
                ));
            }
        }
        wanted
    }

    /// Adds a file created ahead of time by the caller (see `files_to_prepare`).
    pub fn add_prepared_file(&mut self, data: bool, file_start: u64, file: Arc<D::File>) {
        let files = if data {
            &mut self.segments
        } else {
            &mut self.index_files
        };
        files.entry(file_start).or_insert(file);
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
                path: self.index_dir.clone(),
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
        let file = self.segments.get(&start)?;
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
                path: self.index_dir.clone(),
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
        if let Some(file) = self.segments.get(&segment_start).cloned() {
            let from = position - segment_start;
            if self.segment_start(old_end.saturating_sub(1)) == segment_start {
                self.zero_range(&file, from, old_end - segment_start, true, segment_start)?;
            } else {
                // The log went on in later segments: this one ends in an end marker somewhere.
                self.zero_nonzero(&file, from, true, segment_start)?;
            }
        }
        let later: Vec<u64> = self
            .segments
            .range(segment_start + 1..)
            .map(|(s, _)| *s)
            .collect();
        for start in later {
            self.remove_file(true, start)?;
        }
        let unit_bytes = u64::from(INDEX_UNIT_BYTES);
        let index_bytes = self.index_file_bytes();
        let (from_byte, to_byte) = (next * unit_bytes, self.next_index * unit_bytes);
        let files: Vec<(u64, Arc<D::File>)> = self
            .index_files
            .range(from_byte - from_byte % index_bytes..to_byte)
            .map(|(s, f)| (*s, f.clone()))
            .collect();
        for (file_start, file) in files {
            let from = from_byte.max(file_start) - file_start;
            let to = to_byte.min(file_start + index_bytes) - file_start;
            self.zero_range(&file, from, to, false, file_start)?;
        }
        let byte = next * unit_bytes;
        let index_start = byte - byte % index_bytes;
        let later: Vec<u64> = self
            .index_files
            .range(index_start + 1..)
            .map(|(s, _)| *s)
            .collect();
        for start in later {
            self.remove_file(false, start)?;
        }
        Ok(())
    }

    /// Marks every entry up to `upto` as purged and deletes files that hold nothing else. The
    /// caller persists the purged id first. Blocking.
    ///
    /// # Errors
    /// I/O errors removing files.
    pub fn purge(&mut self, upto: LogId) -> Result<(), StorageError> {
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
        if self.next_index < self.first_index {
            self.next_index = self.first_index;
            self.last_term = upto.term;
        }
        let keep_from = self.segment_start(keep_position.unwrap_or(self.write_position));
        let doomed: Vec<u64> = self.segments.range(..keep_from).map(|(s, _)| *s).collect();
        for start in doomed {
            self.remove_file(true, start)?;
        }
        let byte = self.first_index * u64::from(INDEX_UNIT_BYTES);
        let keep_index = byte - byte % self.index_file_bytes();
        let doomed: Vec<u64> = self
            .index_files
            .range(..keep_index)
            .map(|(s, _)| *s)
            .collect();
        for start in doomed {
            self.remove_file(false, start)?;
        }
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
    pub fn take_dirty(&mut self, index: bool) -> Vec<DirtyRange<D::File>> {
        let mut ranges = Vec::new();
        let mut take = |dirty: &mut BTreeMap<u64, (u64, u64)>,
                        files: &BTreeMap<u64, Arc<D::File>>| {
            for (start, (from, to)) in std::mem::take(dirty) {
                if let Some(file) = files.get(&start) {
                    ranges.push(DirtyRange {
                        file: file.clone(),
                        offset: from,
                        len: to - from,
                    });
                }
            }
        };
        take(&mut self.dirty_data, &self.segments);
        if index {
            take(&mut self.dirty_index, &self.index_files);
        }
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
        for range in self.take_dirty(true) {
            range
                .file
                .sync_range(range.offset, range.len)
                .map_err(|source| {
                    StorageError::io(
                        Verb::Flush,
                        Subject::Dir {
                            path: self.config.dir.clone(),
                        },
                        source,
                    )
                })?;
        }
        Ok(())
    }

    /// The folder holding the data segments.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The folder holding the index files.
    pub fn index_dir(&self) -> &Path {
        &self.index_dir
    }
}
