//! RocketMQ's IndexFile: find messages by key and store time.
//!
//! Layout of one file (RocketMQ's, big-endian):
//! - a 40-byte header: `beginTimestamp` i64, `endTimestamp` i64, `beginPhyOffset` i64,
//!   `endPhyOffset` i64, `hashSlotCount` i32, `indexCount` i32;
//! - `hash_slots` slots of 4 bytes, each the number of the newest entry whose key hash falls in
//!   it (0: none);
//! - `entries_max` entries of 20 bytes: `keyHash` i32, `phyOffset` i64, `timeDiff` i32 (seconds
//!   since `beginTimestamp`), `prevIndex` i32 (the entry before it in the same slot, 0: none).
//!   Entry 0 is never used, so that 0 can mean "none"; `indexCount` is the next entry's number.
//!
//! A key's hash is the absolute value of Java's `String.hashCode` (0 for `i32::MIN`, as
//! `Math.abs` leaves it negative); the store indexes `topic#key` for the message's `UNIQ_KEY` and
//! each space-separated value of its `KEYS` ([`index_key`]). Files are named by their creation
//! time as RocketMQ names them, `yyyyMMddHHmmssSSS` (UTC here), taken from the store timestamp of
//! the first key put into them: time comes only from the entries, never from a clock.
//!
//! Durability: `put` buffers the entry and the slot change in memory, and writes them back to the
//! file in batches (at [`INDEX_PENDING_PUTS_MAX`] pending puts, and in `flush`); queries read the
//! buffers first. Only `flush` writes the header, after the entries and slots are written back
//! and synced, and then syncs it. So a header on disk only ever counts synced
//! entries, and recovery trusts it: entries past `indexCount` are ignored, and slots that point
//! at them (written back by the OS before a crash) are rebuilt from the entries the header
//! counts. A full file is flushed before the next file is created.
//!
//! Time resolution is one second, as in RocketMQ: an entry's time is read back as the start of
//! its second, and a query returns an entry if that second overlaps the asked range (clipped to
//! the file's exact end time). A store timestamp earlier than the file's first reads back as the
//! first. Hashes collide too, so callers re-check the key and time of each message they read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dledger::file_set::{FileOp, FileSet, FileSetError, Naming};
use dledger::{Disk, SegmentFile};

use crate::error::{StoreError, Subject, Verb};

/// Java's `String.hashCode` over UTF-16 units (wrapping `i32`), which RocketMQ uses for key
/// hashes and tag codes. Shared with `protocol`, so there is one implementation.
pub use protocol::message::java_string_hash;

/// Bytes of the header at the start of every file.
pub const INDEX_HEADER_BYTES: u32 = 40;
const _: () = assert!(INDEX_HEADER_BYTES == 4 * 8 + 2 * 4);

/// Bytes of one hash slot.
pub const HASH_SLOT_BYTES: u32 = 4;

/// Bytes of one entry: key hash (4) + commit-log offset (8) + time difference (4) + previous
/// entry (4).
pub const INDEX_ENTRY_BYTES: u32 = 20;
const _: () = assert!(INDEX_ENTRY_BYTES == 4 + 8 + 4 + 4);

/// Default hash slots per file. RocketMQ's `maxHashSlotNum` default is ten times this
/// (5,000,000); ours keeps files at 42 MB.
pub const HASH_SLOTS_DEFAULT: u32 = 500_000;

/// Default entries per file, four per slot as in RocketMQ (whose `maxIndexNum` is 20,000,000).
pub const INDEX_ENTRIES_MAX_DEFAULT: u32 = 2_000_000;

/// Largest file the settings may ask for: RocketMQ's own defaults make 420 MB files.
pub const INDEX_FILE_BYTES_MAX: u64 = 1024 * 1024 * 1024;
const _: () = assert!(
    INDEX_HEADER_BYTES as u64
        + HASH_SLOTS_DEFAULT as u64 * HASH_SLOT_BYTES as u64
        + INDEX_ENTRIES_MAX_DEFAULT as u64 * INDEX_ENTRY_BYTES as u64
        <= INDEX_FILE_BYTES_MAX
);

/// Most commit-log offsets one query returns, whatever the caller asks: RocketMQ's
/// `maxMsgsNumBatch` default.
pub const QUERY_RESULTS_MAX: usize = 64;

/// The latest store timestamp a file name can carry: 9999-12-31T23:59:59.999Z.
pub const TIMESTAMP_MS_MAX: u64 = 253_402_300_799_999;

/// Separator of the values of the `KEYS` property (RocketMQ's `MessageConst.KEY_SEPARATOR`).
pub const KEY_SEPARATOR: char = ' ';

const HEADER_BYTES: u64 = INDEX_HEADER_BYTES as u64;
const SLOT_BYTES: u64 = HASH_SLOT_BYTES as u64;
const ENTRY_BYTES: u64 = INDEX_ENTRY_BYTES as u64;

/// Puts the newest IndexFile buffers before writing them to its file (entries as one write,
/// changed slots in runs, see [`IndexService`]); `flush` writes what is pending too. Writing
/// each put at once cost two writes per key, most of the apply path's syscalls (a message has one
/// or two keys, and one ConsumeQueue unit). At the default 500,000 slots, 4,096
/// changed slots lie about 500 bytes apart, so their runs join into nearly one write of the
/// slot table and a further doubling saves almost nothing, while the buffer stays small: 80 KiB
/// of entries and 16 KiB of slot numbers. Pending puts are no less durable than written ones:
/// neither is counted by the header before `flush`, and a crash loses both to log replay.
pub const INDEX_PENDING_PUTS_MAX: u32 = 4096;

/// Bytes of unchanged slots a write-back rewrites to join two runs of changed slots into one
/// write: copying one more 4 KiB page costs about what one more `pwrite` call does.
const SLOT_RUN_GAP_BYTES_MAX: u64 = 4096;

/// Sizes of the index files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexConfig {
    /// Hash slots per file (RocketMQ's `maxHashSlotNum`). Default [`HASH_SLOTS_DEFAULT`].
    pub hash_slots: u32,
    /// Entries per file, counting the unused entry 0, so a file holds one fewer keys
    /// (RocketMQ's `maxIndexNum`). Default [`INDEX_ENTRIES_MAX_DEFAULT`].
    pub entries_max: u32,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            hash_slots: HASH_SLOTS_DEFAULT,
            entries_max: INDEX_ENTRIES_MAX_DEFAULT,
        }
    }
}

impl IndexConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`StoreError::InvalidConfig`] for no slots, fewer than 2 entries (entry 0 is unused), more
    /// than `i32::MAX` of either, or files over [`INDEX_FILE_BYTES_MAX`].
    pub fn validate(&self) -> Result<(), StoreError> {
        let invalid = |name, value: u32, reason| StoreError::InvalidConfig {
            name,
            value: u64::from(value),
            reason,
        };
        if !(1..=i32::MAX as u32).contains(&self.hash_slots) {
            return Err(invalid(
                "hash_slots",
                self.hash_slots,
                "must be in 1..=i32::MAX",
            ));
        }
        if !(2..=i32::MAX as u32).contains(&self.entries_max) {
            return Err(invalid(
                "entries_max",
                self.entries_max,
                "must be in 2..=i32::MAX",
            ));
        }
        if self.file_bytes() > INDEX_FILE_BYTES_MAX {
            return Err(StoreError::InvalidConfig {
                name: "hash_slots and entries_max",
                value: self.file_bytes(),
                reason: "files would pass INDEX_FILE_BYTES_MAX (1 GiB)",
            });
        }
        Ok(())
    }

    /// Bytes of one file: header, slots and entries.
    pub fn file_bytes(&self) -> u64 {
        HEADER_BYTES
            + u64::from(self.hash_slots) * SLOT_BYTES
            + u64::from(self.entries_max) * ENTRY_BYTES
    }

    fn slot_at(&self, slot: u32) -> u64 {
        HEADER_BYTES + u64::from(slot) * SLOT_BYTES
    }

    fn entry_at(&self, number: u32) -> u64 {
        self.slot_at(self.hash_slots) + u64::from(number) * ENTRY_BYTES
    }
}

/// The key RocketMQ indexes for a message key of a topic: `topic#key`.
pub fn index_key(topic: &str, key: &str) -> String {
    format!("{topic}#{key}")
}

/// The hash a key is indexed under: `Math.abs(key.hashCode())`, or 0 where that stays negative.
pub fn key_hash(key: &str) -> i32 {
    java_string_hash(key).checked_abs().unwrap_or(0)
}

/// The file name for a creation time: `yyyyMMddHHmmssSSS` in UTC (RocketMQ's
/// `UtilAll.timeMillisToHumanString`, which uses local time).
///
/// # Panics
/// If `timestamp_ms` is past [`TIMESTAMP_MS_MAX`] (callers check).
pub fn timestamp_file_name(timestamp_ms: u64) -> String {
    assert!(
        timestamp_ms <= TIMESTAMP_MS_MAX,
        "file names hold years up to 9999"
    );
    let days = (timestamp_ms / 86_400_000) as i64;
    let in_day = timestamp_ms % 86_400_000;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}{:03}",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// IndexFiles are named by their creation time ([`timestamp_file_name`]), not by a position:
/// their file set ([`FileSet`]) keys them by that time.
#[derive(Debug, Clone, Copy, Default)]
pub struct CreationTimes;

impl Naming for CreationTimes {
    const WHAT: &'static str = "yyyyMMddHHmmssSSS timestamp";
    const POSITIONS: bool = false;

    fn name(key: u64) -> String {
        timestamp_file_name(key)
    }

    fn parse(name: &str) -> Option<u64> {
        parse_timestamp_file_name(name)
    }
}

/// The store's error for a failed operation on the IndexFiles.
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
                Some(_) => Subject::IndexFile { path },
                None => Subject::Dir { path },
            };
            StoreError::io(verb, subject, source)
        }
    }
}

/// The creation time a file name stands for, if it is one [`timestamp_file_name`] makes.
fn parse_timestamp_file_name(name: &str) -> Option<u64> {
    if name.len() != 17 || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |range: std::ops::Range<usize>| name[range].parse::<u64>().ok();
    let (year, month, day) = (field(0..4)?, field(4..6)?, field(6..8)?);
    let (hour, minute, second, ms) = (
        field(8..10)?,
        field(10..12)?,
        field(12..14)?,
        field(14..17)?,
    );
    if year < 1970 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = u64::try_from(days_from_civil(year as i64, month as i64, day as i64)).ok()?;
    let timestamp_ms = days * 86_400_000 + hour * 3_600_000 + minute * 60_000 + second * 1000 + ms;
    // Rejects dates such as February 30 that the arithmetic above would roll over.
    (timestamp_file_name(timestamp_ms) == name).then_some(timestamp_ms)
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The header, as validated from disk or kept in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct IndexHeader {
    begin_timestamp_ms: u64,
    /// The latest store timestamp put (RocketMQ: the last one; the same while time only grows).
    end_timestamp_ms: u64,
    begin_commit_log_offset: u64,
    end_commit_log_offset: u64,
    hash_slot_count: u32,
    /// The next entry's number; entries `1..index_count` exist.
    index_count: u32,
}

impl IndexHeader {
    fn has_entries(&self) -> bool {
        self.index_count > 1
    }

    fn encode(&self) -> [u8; HEADER_BYTES as usize] {
        let mut bytes = [0u8; HEADER_BYTES as usize];
        let longs = [
            self.begin_timestamp_ms,
            self.end_timestamp_ms,
            self.begin_commit_log_offset,
            self.end_commit_log_offset,
        ];
        for (i, value) in longs.into_iter().enumerate() {
            let value = i64::try_from(value).expect("header values are checked on put");
            bytes[i * 8..i * 8 + 8].copy_from_slice(&value.to_be_bytes());
        }
        let hash_slot_count = i32::try_from(self.hash_slot_count).expect("at most hash_slots");
        let index_count = i32::try_from(self.index_count).expect("at most entries_max");
        bytes[32..36].copy_from_slice(&hash_slot_count.to_be_bytes());
        bytes[36..40].copy_from_slice(&index_count.to_be_bytes());
        bytes
    }

    /// Decodes and checks a header; the error names the field's byte.
    fn decode(
        bytes: &[u8; HEADER_BYTES as usize],
        config: &IndexConfig,
    ) -> Result<Self, (u64, String)> {
        let long = |at: usize| i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let int = |at: usize| i32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let non_negative = |at: usize, name: &str| {
            u64::try_from(long(at))
                .map_err(|_| (at as u64, format!("negative {name} {}", long(at))))
        };
        let begin_timestamp_ms = non_negative(0, "beginTimestamp")?;
        let end_timestamp_ms = non_negative(8, "endTimestamp")?;
        let begin_commit_log_offset = non_negative(16, "beginPhyOffset")?;
        let end_commit_log_offset = non_negative(24, "endPhyOffset")?;
        let hash_slot_count = u32::try_from(int(32))
            .ok()
            .filter(|&count| count <= config.hash_slots)
            .ok_or_else(|| {
                let reason = format!("hashSlotCount {} not in 0..={}", int(32), config.hash_slots);
                (32, reason)
            })?;
        let index_count = u32::try_from(int(36))
            .ok()
            .filter(|&count| count <= config.entries_max)
            .ok_or_else(|| {
                let reason = format!("indexCount {} not in 0..={}", int(36), config.entries_max);
                (36, reason)
            })?;
        let header = IndexHeader {
            begin_timestamp_ms,
            end_timestamp_ms,
            begin_commit_log_offset,
            end_commit_log_offset,
            hash_slot_count,
            // A file never flushed has a zero header: RocketMQ reads that as 1 too.
            index_count: index_count.max(1),
        };
        if header.has_entries() {
            if end_timestamp_ms < begin_timestamp_ms {
                let reason = format!(
                    "endTimestamp {end_timestamp_ms} before beginTimestamp {begin_timestamp_ms}"
                );
                return Err((8, reason));
            }
            if end_commit_log_offset < begin_commit_log_offset {
                let reason = format!(
                    "endPhyOffset {end_commit_log_offset} before beginPhyOffset {begin_commit_log_offset}"
                );
                return Err((24, reason));
            }
        }
        Ok(header)
    }
}

/// One entry, checked.
#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    key_hash: i32,
    commit_log_offset: u64,
    time_diff_s: u32,
    prev: u32,
}

impl IndexEntry {
    fn encode(&self) -> [u8; ENTRY_BYTES as usize] {
        let mut bytes = [0u8; ENTRY_BYTES as usize];
        let offset = i64::try_from(self.commit_log_offset).expect("checked on put");
        let time_diff = i32::try_from(self.time_diff_s).expect("clamped on put");
        let prev = i32::try_from(self.prev).expect("below entries_max");
        bytes[0..4].copy_from_slice(&self.key_hash.to_be_bytes());
        bytes[4..12].copy_from_slice(&offset.to_be_bytes());
        bytes[12..16].copy_from_slice(&time_diff.to_be_bytes());
        bytes[16..20].copy_from_slice(&prev.to_be_bytes());
        bytes
    }

    /// Decodes entry `number` and checks it can be followed: a hash that lands in `slot` (when
    /// known), and a previous entry before it, so every walk ends.
    fn decode(
        bytes: &[u8],
        number: u32,
        config: &IndexConfig,
        slot: Option<u32>,
    ) -> Result<Self, String> {
        let int = |at: usize| i32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let key_hash = int(0);
        let offset = i64::from_be_bytes(bytes[4..12].try_into().expect("8 bytes"));
        let hash = u32::try_from(key_hash).map_err(|_| format!("negative key hash {key_hash}"))?;
        if let Some(slot) = slot
            && hash % config.hash_slots != slot
        {
            return Err(format!(
                "key hash {key_hash} does not belong in slot {slot}"
            ));
        }
        let commit_log_offset =
            u64::try_from(offset).map_err(|_| format!("negative commit-log offset {offset}"))?;
        let time_diff_s =
            u32::try_from(int(12)).map_err(|_| format!("negative time difference {}", int(12)))?;
        let prev = u32::try_from(int(16))
            .ok()
            .filter(|&prev| prev < number)
            .ok_or_else(|| format!("previous entry {} is not before entry {number}", int(16)))?;
        Ok(IndexEntry {
            key_hash,
            commit_log_offset,
            time_diff_s,
            prev,
        })
    }
}

/// One index file.
///
/// Puts are buffered (write-back): new entries, which are contiguous, wait in `pending_entries`,
/// and changed slots are changed in `slot_table`, the newest file's slots held in memory, and
/// listed in `pending_slots`. [`IndexFile::write_back`] writes them with a few large writes;
/// reads look at the buffers first, so a put is readable on return. Durability is unchanged:
/// only `flush` writes the header, after writing back and syncing what it counts.
struct IndexFile<F> {
    path: PathBuf,
    created_ms: u64,
    file: Arc<F>,
    config: IndexConfig,
    /// Authoritative; written to disk by `flush` only.
    header: IndexHeader,
    /// Unsynced bytes of slots and entries, as one range.
    dirty: Option<(u64, u64)>,
    /// Whether `header` is newer than the one on disk.
    header_dirty: bool,
    /// Every slot of the file, big-endian as on disk, newer than the file where listed in
    /// `pending_slots`. Only the newest file, the one puts go to, holds it; older files are
    /// full and flushed, and read their slots from disk.
    slot_table: Option<Vec<u8>>,
    /// The first entry not written to the file yet: entries `pending_first..index_count` are
    /// in `pending_entries`.
    pending_first: u32,
    /// Entries `pending_first..index_count`, encoded, back to back.
    pending_entries: Vec<u8>,
    /// Slots changed in `slot_table` since the last write-back (repeats allowed).
    pending_slots: Vec<u32>,
}

impl<F: SegmentFile> IndexFile<F> {
    fn corrupt(&self, file_offset: u64, reason: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            file_offset,
            reason,
        }
    }

    fn io(&self, verb: Verb, source: std::io::Error) -> StoreError {
        let path = self.path.clone();
        StoreError::io(verb, Subject::IndexFile { path }, source)
    }

    fn is_full(&self) -> bool {
        self.header.index_count >= self.config.entries_max
    }

    fn slot_of(&self, key_hash: i32) -> u32 {
        u32::try_from(key_hash).expect("key hashes are not negative") % self.config.hash_slots
    }

    /// Puts made since the last write-back.
    fn pending_puts(&self) -> u32 {
        let entries = self.pending_entries.len() as u64 / ENTRY_BYTES;
        u32::try_from(entries).expect("pending entries are below entries_max")
    }

    /// The newest entry of `slot`, or 0.
    fn read_slot(&self, slot: u32) -> Result<u32, StoreError> {
        let at = self.config.slot_at(slot);
        let mut bytes = [0u8; SLOT_BYTES as usize];
        match &self.slot_table {
            Some(table) => {
                let from = (at - HEADER_BYTES) as usize;
                bytes.copy_from_slice(&table[from..from + SLOT_BYTES as usize]);
            }
            None => self.file.read_at(at, &mut bytes),
        }
        let value = i32::from_be_bytes(bytes);
        u32::try_from(value)
            .ok()
            .filter(|&value| value < self.header.index_count)
            .ok_or_else(|| {
                let count = self.header.index_count;
                self.corrupt(
                    at,
                    format!("slot {slot} points at entry {value}, past the last ({count} counted)"),
                )
            })
    }

    fn read_entry(&self, number: u32, slot: Option<u32>) -> Result<IndexEntry, StoreError> {
        assert!(
            number < self.header.index_count,
            "entry {number} is read only if counted ({})",
            self.header.index_count
        );
        let at = self.config.entry_at(number);
        let mut bytes = [0u8; ENTRY_BYTES as usize];
        if number >= self.pending_first {
            let from = ((number - self.pending_first) as u64 * ENTRY_BYTES) as usize;
            bytes.copy_from_slice(&self.pending_entries[from..from + ENTRY_BYTES as usize]);
        } else {
            self.file.read_at(at, &mut bytes);
        }
        IndexEntry::decode(&bytes, number, &self.config, slot)
            .map_err(|reason| self.corrupt(at, reason))
    }

    fn mark_dirty(&mut self, at: u64, end: u64) {
        self.dirty = Some(
            self.dirty
                .map_or((at, end), |(from, to)| (from.min(at), to.max(end))),
        );
    }

    /// Buffers a put; [`Self::write_back`] writes it to the file.
    fn put(
        &mut self,
        key_hash: i32,
        commit_log_offset: u64,
        timestamp_ms: u64,
    ) -> Result<(), StoreError> {
        assert!(
            !self.is_full(),
            "callers roll to a new file before this one is full"
        );
        let slot = self.slot_of(key_hash);
        let prev = self.read_slot(slot)?;
        let number = self.header.index_count;
        if !self.header.has_entries() {
            self.header.begin_timestamp_ms = timestamp_ms;
            self.header.begin_commit_log_offset = commit_log_offset;
        }
        let time_diff_s = timestamp_ms.saturating_sub(self.header.begin_timestamp_ms) / 1000;
        let entry = IndexEntry {
            key_hash,
            commit_log_offset,
            time_diff_s: u32::try_from(time_diff_s.min(i32::MAX as u64)).expect("clamped"),
            prev,
        };
        self.pending_entries.extend_from_slice(&entry.encode());
        let number_bytes = i32::try_from(number)
            .expect("below entries_max")
            .to_be_bytes();
        let table = self
            .slot_table
            .as_mut()
            .expect("the newest file, which puts go to, holds its slots in memory");
        let from = (u64::from(slot) * SLOT_BYTES) as usize;
        table[from..from + SLOT_BYTES as usize].copy_from_slice(&number_bytes);
        self.pending_slots.push(slot);
        if prev == 0 {
            self.header.hash_slot_count += 1;
        }
        self.header.index_count += 1;
        self.header.end_commit_log_offset = commit_log_offset;
        self.header.end_timestamp_ms = self.header.end_timestamp_ms.max(timestamp_ms);
        self.header_dirty = true;
        assert_eq!(
            u64::from(self.pending_first) + u64::from(self.pending_puts()),
            u64::from(self.header.index_count),
            "pending entries end at the header's count"
        );
        Ok(())
    }

    /// Writes the pending entries (one write) and changed slots (one write per run of slots
    /// less than [`SLOT_RUN_GAP_BYTES_MAX`] apart, unchanged slots between them included) to the
    /// file. Not durable until [`Self::flush`] syncs them. On an error, what was not written
    /// stays pending.
    fn write_back(&mut self) -> Result<(), StoreError> {
        if !self.pending_entries.is_empty() {
            let at = self.config.entry_at(self.pending_first);
            let end = at + self.pending_entries.len() as u64;
            self.file
                .write_at(at, &self.pending_entries)
                .map_err(|source| self.io(Verb::Write, source))?;
            self.mark_dirty(at, end);
            self.pending_first = self.header.index_count;
            self.pending_entries.clear();
        }
        if self.pending_slots.is_empty() {
            return Ok(());
        }
        self.pending_slots.sort_unstable();
        self.pending_slots.dedup();
        let mut next = 0;
        while next < self.pending_slots.len() {
            let first = self.pending_slots[next];
            let mut end = first + 1;
            next += 1;
            while let Some(&slot) = self.pending_slots.get(next)
                && u64::from(slot - end) * SLOT_BYTES <= SLOT_RUN_GAP_BYTES_MAX
            {
                end = slot + 1;
                next += 1;
            }
            self.write_slots(first..end)?;
        }
        self.pending_slots.clear();
        Ok(())
    }

    /// Writes `slots` from the slot table to the file, with one write.
    fn write_slots(&mut self, slots: std::ops::Range<u32>) -> Result<(), StoreError> {
        let table = self
            .slot_table
            .as_deref()
            .expect("pending slots are changes to the slot table");
        let from = (u64::from(slots.start) * SLOT_BYTES) as usize;
        let to = (u64::from(slots.end) * SLOT_BYTES) as usize;
        let at = self.config.slot_at(slots.start);
        self.file
            .write_at(at, &table[from..to])
            .map_err(|source| self.io(Verb::Write, source))?;
        self.mark_dirty(at, at + (to - from) as u64);
        Ok(())
    }

    fn time_overlaps(&self, begin_ms: u64, end_ms: u64) -> bool {
        self.header.has_entries()
            && self.header.begin_timestamp_ms <= end_ms
            && self.header.end_timestamp_ms >= begin_ms
    }

    /// Adds to `found` (newest first, each offset once) the entries of `key_hash` whose second
    /// overlaps `begin_ms..=end_ms`, until `found` holds `max`.
    fn select(
        &self,
        key_hash: i32,
        (begin_ms, end_ms): (u64, u64),
        max: usize,
        found: &mut Vec<u64>,
        seen: &mut BTreeSet<u64>,
    ) -> Result<(), StoreError> {
        let slot = self.slot_of(key_hash);
        let mut number = self.read_slot(slot)?;
        while number != 0 && found.len() < max {
            let entry = self.read_entry(number, Some(slot))?;
            let second_ms = self.header.begin_timestamp_ms + u64::from(entry.time_diff_s) * 1000;
            let last_ms = (second_ms + 999).min(self.header.end_timestamp_ms);
            let in_time = second_ms <= end_ms && last_ms >= begin_ms;
            if entry.key_hash == key_hash && in_time && seen.insert(entry.commit_log_offset) {
                found.push(entry.commit_log_offset);
            }
            number = entry.prev;
        }
        Ok(())
    }

    /// Writes back what is pending, syncs slots and entries, then writes and syncs the header
    /// that counts them.
    fn flush(&mut self) -> Result<(), StoreError> {
        self.write_back()?;
        if let Some((from, to)) = self.dirty {
            self.file
                .sync_range(from, to - from)
                .map_err(|source| self.io(Verb::Flush, source))?;
            self.dirty = None;
        }
        if self.header_dirty {
            let bytes = self.header.encode();
            self.file
                .write_at(0, &bytes)
                .map_err(|source| self.io(Verb::Write, source))?;
            self.file
                .sync_range(0, HEADER_BYTES)
                .map_err(|source| self.io(Verb::Flush, source))?;
            self.header_dirty = false;
        }
        Ok(())
    }

    /// Readies the file for puts: reads its slots into the slot table, and rebuilds those that
    /// point past the last counted entry (the OS wrote them back before a crash, but the header
    /// that would count their entries was never synced). Returns how many were rebuilt.
    fn load_slots(&mut self) -> Result<usize, StoreError> {
        assert!(self.slot_table.is_none(), "slots are loaded once");
        let count = self.header.index_count;
        let mut table = vec![0u8; (u64::from(self.config.hash_slots) * SLOT_BYTES) as usize];
        self.file.read_at(HEADER_BYTES, &mut table);
        let mut bad = BTreeSet::new();
        for (slot, raw) in (0u32..).zip(table.chunks_exact(SLOT_BYTES as usize)) {
            let value = i32::from_be_bytes(raw.try_into().expect("4 bytes"));
            if u32::try_from(value).map_or(true, |value| value >= count) {
                bad.insert(slot);
            }
        }
        self.slot_table = Some(table);
        if bad.is_empty() {
            return Ok(0);
        }
        let mut newest: BTreeMap<u32, u32> = BTreeMap::new();
        for number in 1..count {
            let entry = self.read_entry(number, None)?;
            let slot = self.slot_of(entry.key_hash);
            if bad.contains(&slot) {
                newest.insert(slot, number);
            }
        }
        let table = self.slot_table.as_mut().expect("loaded above");
        for &slot in &bad {
            let value = newest.get(&slot).copied().unwrap_or(0);
            let bytes = i32::try_from(value)
                .expect("below entries_max")
                .to_be_bytes();
            let from = (u64::from(slot) * SLOT_BYTES) as usize;
            table[from..from + SLOT_BYTES as usize].copy_from_slice(&bytes);
        }
        self.pending_slots.extend(&bad);
        self.flush()?;
        tracing::warn!(path = %self.path.display(), slots = bad.len(), "IndexFile slots pointed past the last entry; rebuilt");
        Ok(bad.len())
    }
}

/// The index over every IndexFile of one directory: put keys as messages are applied, query them
/// newest first.
///
/// Puts are buffered in memory and written to the newest file with a few large writes, when
/// [`INDEX_PENDING_PUTS_MAX`] are pending and on [`Self::flush`]; the newest file's slots are
/// held in memory for that, `hash_slots` × 4 bytes (2 MB by default).
///
/// Every method is blocking (file creation, reads, syncs): call from a blocking context.
pub struct IndexService<D: Disk> {
    /// The directory's files, by creation time.
    set: FileSet<D, CreationTimes>,
    config: IndexConfig,
    /// Files by creation time, the oldest first.
    files: BTreeMap<u64, IndexFile<D::File>>,
    /// Pending puts that make the newest file write back: [`INDEX_PENDING_PUTS_MAX`], less in
    /// tests.
    pending_puts_max: u32,
    /// Reused to build `topic#key`, so indexing a key allocates nothing.
    key_scratch: String,
}

impl<D: Disk> std::fmt::Debug for IndexService<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexService")
            .field("dir", &self.set.dir())
            .field("config", &self.config)
            .field("files", &self.files.len())
            .finish_non_exhaustive()
    }
}

impl<D: Disk> IndexService<D> {
    /// Opens the index in `dir`: checks every file's name, size and header, and repairs the
    /// slots of the newest file (see the module doc).
    ///
    /// # Errors
    /// [`StoreError::InvalidConfig`]; [`StoreError::UnexpectedFile`] for a name that is not a
    /// timestamp; [`StoreError::Io`] (kind `InvalidData` for a file of the wrong size);
    /// [`StoreError::Corrupt`], naming the file and byte, for a header field out of range or, in
    /// the newest file, an entry that cannot be followed.
    pub fn open(disk: D, dir: &Path, config: IndexConfig) -> Result<Self, StoreError> {
        config.validate()?;
        let set: FileSet<D, CreationTimes> =
            FileSet::open(disk, dir, config.file_bytes()).map_err(file_set_error)?;
        let mut files = BTreeMap::new();
        for (created_ms, file) in set.iter() {
            let file = index_file(set.path(created_ms), created_ms, file.clone(), config)?;
            files.insert(created_ms, file);
        }
        if let Some(newest) = files.values_mut().last() {
            newest.load_slots()?;
        }
        Ok(IndexService {
            set,
            config,
            files,
            pending_puts_max: INDEX_PENDING_PUTS_MAX,
            key_scratch: String::new(),
        })
    }

    /// Lowers the write-back bound, so small tests exercise it.
    #[cfg(test)]
    fn with_pending_puts_max(mut self, pending_puts_max: u32) -> Self {
        assert!(
            pending_puts_max >= 1,
            "at least one put is pending before a write-back"
        );
        self.pending_puts_max = pending_puts_max;
        self
    }

    /// Indexes `key` for the message at `commit_log_offset`, stored at `store_timestamp_ms`.
    /// Returns `false`, indexing nothing, for a message before the last one indexed: a replay
    /// after a restart (messages are indexed in commit-log order). Readable on return (from
    /// memory until written back); durable after the next [`Self::flush`]. Rolls to a new file
    /// when the newest is full, flushing it.
    ///
    /// # Errors
    /// [`StoreError::OutOfRange`] for an offset past `i64::MAX` or a timestamp past
    /// [`TIMESTAMP_MS_MAX`]; [`StoreError::Io`]; [`StoreError::Corrupt`] if the key's slot
    /// points past the last entry.
    pub fn put(
        &mut self,
        key: &str,
        commit_log_offset: u64,
        store_timestamp_ms: u64,
    ) -> Result<bool, StoreError> {
        self.put_hashed(key_hash(key), commit_log_offset, store_timestamp_ms)
    }

    fn put_hashed(
        &mut self,
        key_hash: i32,
        commit_log_offset: u64,
        store_timestamp_ms: u64,
    ) -> Result<bool, StoreError> {
        if i64::try_from(commit_log_offset).is_err() {
            return Err(StoreError::OutOfRange {
                field: "commit_log_offset",
                value: commit_log_offset,
                max: i64::MAX as u64,
            });
        }
        if store_timestamp_ms > TIMESTAMP_MS_MAX {
            return Err(StoreError::OutOfRange {
                field: "store_timestamp_ms",
                value: store_timestamp_ms,
                max: TIMESTAMP_MS_MAX,
            });
        }
        if commit_log_offset < self.last_update_commit_log_offset() {
            return Ok(false);
        }
        let pending_puts_max = self.pending_puts_max;
        let file = self.writable_file(store_timestamp_ms)?;
        file.put(key_hash, commit_log_offset, store_timestamp_ms)?;
        if file.pending_puts() >= pending_puts_max {
            file.write_back()?;
        }
        Ok(true)
    }

    /// Indexes a message as RocketMQ does: `topic#uniq_key`, then `topic#key` for each
    /// space-separated value of `keys` (the `KEYS` property). Returns how many keys were put.
    ///
    /// # Errors
    /// Those of [`Self::put`].
    pub fn put_message(
        &mut self,
        topic: &str,
        uniq_key: Option<&str>,
        keys: Option<&str>,
        commit_log_offset: u64,
        store_timestamp_ms: u64,
    ) -> Result<u32, StoreError> {
        let all = uniq_key
            .into_iter()
            .chain(keys.into_iter().flat_map(|keys| keys.split(KEY_SEPARATOR)))
            .filter(|key| !key.is_empty());
        let mut put = 0;
        // Taken out so that `put_hashed` can borrow `self`; an error leaves an empty scratch.
        let mut scratch = std::mem::take(&mut self.key_scratch);
        for key in all {
            scratch.clear();
            scratch.push_str(topic);
            scratch.push('#');
            scratch.push_str(key);
            debug_assert_eq!(scratch, index_key(topic, key));
            if self.put_hashed(key_hash(&scratch), commit_log_offset, store_timestamp_ms)? {
                put += 1;
            }
        }
        self.key_scratch = scratch;
        Ok(put)
    }

    fn writable_file(&mut self, timestamp_ms: u64) -> Result<&mut IndexFile<D::File>, StoreError> {
        let newest_is_full = self.files.values().last().is_none_or(IndexFile::is_full);
        if newest_is_full {
            let mut created_ms = timestamp_ms;
            if let Some(newest) = self.files.values_mut().last() {
                newest.flush()?;
                // A full file takes no more puts: its slots are read from disk from now on.
                newest.slot_table = None;
                newest.pending_entries = Vec::new();
                newest.pending_slots = Vec::new();
                // Names must grow even if store timestamps go back (another leader's clock).
                created_ms = created_ms.max(newest.created_ms + 1);
            }
            if created_ms > TIMESTAMP_MS_MAX {
                return Err(StoreError::OutOfRange {
                    field: "IndexFile creation timestamp",
                    value: created_ms,
                    max: TIMESTAMP_MS_MAX,
                });
            }
            let created = self.set.file_for(created_ms).map_err(file_set_error)?;
            let path = self.set.path(created_ms);
            let mut file = index_file(path, created_ms, created, self.config)?;
            file.load_slots()?;
            tracing::info!(path = %file.path.display(), "IndexFile created");
            self.files.insert(created_ms, file);
        }
        Ok(self
            .files
            .values_mut()
            .last()
            .expect("a file was created above"))
    }

    /// Commit-log offsets of messages indexed under `key` with a store time in
    /// `begin_ms..=end_ms` (to the second, see the module doc), newest first, each once, at most
    /// `max` and [`QUERY_RESULTS_MAX`]. Keys whose hashes collide are returned too: callers
    /// re-check the key of each message.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`], naming the file and byte, for a slot or entry that cannot be
    /// followed.
    pub fn query(
        &self,
        key: &str,
        max: usize,
        begin_ms: u64,
        end_ms: u64,
    ) -> Result<Vec<u64>, StoreError> {
        let max = max.min(QUERY_RESULTS_MAX);
        let mut found = Vec::new();
        let mut seen = BTreeSet::new();
        if begin_ms > end_ms {
            return Ok(found);
        }
        let key_hash = key_hash(key);
        for file in self.files.values().rev() {
            if found.len() >= max {
                break;
            }
            if file.time_overlaps(begin_ms, end_ms) {
                file.select(key_hash, (begin_ms, end_ms), max, &mut found, &mut seen)?;
            }
        }
        Ok(found)
    }

    /// Makes every put durable.
    ///
    /// # Errors
    /// [`StoreError::Io`]. A failed sync is not retried: stop the replica.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        for file in self.files.values_mut() {
            file.flush()?;
        }
        Ok(())
    }

    fn newest_header(&self) -> Option<&IndexHeader> {
        self.files
            .values()
            .rev()
            .map(|file| &file.header)
            .find(|header| header.has_entries())
    }

    /// The latest store timestamp indexed (0 before any), for the QUERY_MESSAGE response's
    /// `indexLastUpdateTimestamp`.
    pub fn last_update_timestamp_ms(&self) -> u64 {
        self.newest_header()
            .map_or(0, |header| header.end_timestamp_ms)
    }

    /// The commit-log offset of the last message indexed (0 before any), for the QUERY_MESSAGE
    /// response's `indexLastUpdatePhyoffset`.
    pub fn last_update_commit_log_offset(&self) -> u64 {
        self.newest_header()
            .map_or(0, |header| header.end_commit_log_offset)
    }

    /// Number of index files.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Removes every file, newest first, each durably: the index is then empty, as if never
    /// written. For a store that forgets what it applied and indexes the log again.
    ///
    /// # Errors
    /// [`StoreError::Io`] if a file cannot be removed; the newer files are gone.
    pub fn clear(&mut self) -> Result<(), StoreError> {
        while let Some(&created_ms) = self.files.keys().next_back() {
            self.remove_file(created_ms)?;
        }
        Ok(())
    }

    /// Removes the file created at `created_ms`, durably.
    fn remove_file(&mut self, created_ms: u64) -> Result<(), StoreError> {
        let path = self.set.path(created_ms);
        self.set.remove(created_ms).map_err(file_set_error)?;
        self.files.remove(&created_ms);
        tracing::info!(path = %path.display(), "IndexFile removed");
        Ok(())
    }

    /// Removes the oldest files whose messages all lie below `commit_log_offset` (the CommitLog
    /// under them was purged), never the newest file. Returns how many were removed.
    ///
    /// # Errors
    /// [`StoreError::Io`] if a file cannot be removed; those before it are gone.
    pub fn purge_before(&mut self, commit_log_offset: u64) -> Result<usize, StoreError> {
        let mut removed = 0;
        while self.files.len() > 1
            && let Some((&created_ms, oldest)) = self.files.first_key_value()
        {
            if oldest.header.has_entries()
                && oldest.header.end_commit_log_offset >= commit_log_offset
            {
                break;
            }
            self.remove_file(created_ms)?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// An IndexFile over its open `file`: its header read and checked.
fn index_file<F: SegmentFile>(
    path: PathBuf,
    created_ms: u64,
    file: Arc<F>,
    config: IndexConfig,
) -> Result<IndexFile<F>, StoreError> {
    let mut bytes = [0u8; HEADER_BYTES as usize];
    file.read_at(0, &mut bytes);
    let header = IndexHeader::decode(&bytes, &config).map_err(|(file_offset, reason)| {
        StoreError::Corrupt {
            path: path.clone(),
            file_offset,
            reason,
        }
    })?;
    Ok(IndexFile {
        path,
        created_ms,
        file,
        config,
        header,
        dirty: None,
        header_dirty: false,
        slot_table: None,
        pending_first: header.index_count,
        pending_entries: Vec::new(),
        pending_slots: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consume_queue::counting_disk::CountingDisk;
    use dledger::{DiskFaults, MemDisk, MmapDisk};

    /// Three keys per file, four slots: rollover and slot sharing happen in small tests.
    const TINY: IndexConfig = IndexConfig {
        hash_slots: 4,
        entries_max: 4,
    };

    /// 2023-11-14T22:13:20Z.
    const T0: u64 = 1_700_000_000_000;

    fn dir() -> PathBuf {
        PathBuf::from("/store/index")
    }

    fn open(disk: &MemDisk, config: IndexConfig) -> IndexService<MemDisk> {
        IndexService::open(disk.clone(), &dir(), config).unwrap()
    }

    fn all(index: &IndexService<MemDisk>, key: &str) -> Vec<u64> {
        all_of(index, key)
    }

    fn all_of<D: Disk>(index: &IndexService<D>, key: &str) -> Vec<u64> {
        index.query(key, usize::MAX, 0, u64::MAX).unwrap()
    }

    /// Java's `String.hashCode` values, computed by a JVM; the key hash is its absolute value,
    /// and 0 where Java's `Math.abs` stays negative.
    #[test]
    fn key_hashes_match_java() {
        assert_eq!(java_string_hash("TagA"), 2_598_919);
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("Aa"), java_string_hash("BB"));
        // U+1F600 is the surrogate pair D83D DE00 in UTF-16.
        assert_eq!(java_string_hash("\u{1F600}"), 1_772_899);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(key_hash("polygenelubricants"), 0);
        assert_eq!(key_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("TopicTest#OrderID188"), -1_231_271_670);
        assert_eq!(key_hash("TopicTest#OrderID188"), 1_231_271_670);
        assert_eq!(index_key("TopicTest", "OrderID188"), "TopicTest#OrderID188");
    }

    /// File names are RocketMQ's `yyyyMMddHHmmssSSS`, here in UTC, and parse back; names that are
    /// not real times are refused.
    #[test]
    fn file_names_are_timestamps() {
        assert_eq!(timestamp_file_name(0), "19700101000000000");
        assert_eq!(timestamp_file_name(T0 + 7), "20231114221320007");
        assert_eq!(timestamp_file_name(951_782_400_000), "20000229000000000");
        assert_eq!(timestamp_file_name(TIMESTAMP_MS_MAX), "99991231235959999");
        for ms in [0, T0 + 7, 951_782_400_000, TIMESTAMP_MS_MAX] {
            assert_eq!(
                parse_timestamp_file_name(&timestamp_file_name(ms)),
                Some(ms)
            );
        }
        for bad in [
            "20230230000000000",
            "2023111422132000",
            "20231314221320000",
            "1969123123595999x",
        ] {
            assert_eq!(parse_timestamp_file_name(bad), None, "{bad}");
        }
    }

    /// Queries find a key's messages newest first, only within the time range; the header numbers
    /// for QUERY_MESSAGE follow the puts.
    #[test]
    fn query_by_key_and_time_range() {
        let disk = MemDisk::new();
        let mut index = open(
            &disk,
            IndexConfig {
                hash_slots: 16,
                entries_max: 64,
            },
        );
        assert_eq!(
            (
                index.last_update_timestamp_ms(),
                index.last_update_commit_log_offset()
            ),
            (0, 0)
        );
        assert!(index.put("T#a", 100, T0).unwrap());
        assert!(index.put("T#b", 200, T0 + 1_000).unwrap());
        assert!(index.put("T#a", 300, T0 + 5_000).unwrap());
        assert!(index.put("T#a", 400, T0 + 9_000).unwrap());
        assert_eq!(all(&index, "T#a"), vec![400, 300, 100]);
        assert_eq!(all(&index, "T#b"), vec![200]);
        assert_eq!(all(&index, "T#c"), Vec::<u64>::new());
        assert_eq!(index.query("T#a", 2, 0, u64::MAX).unwrap(), vec![400, 300]);
        assert_eq!(
            index.query("T#a", 10, T0 + 1_000, T0 + 8_000).unwrap(),
            vec![300]
        );
        assert_eq!(
            index.query("T#a", 10, T0 + 5_000, T0 + 5_000).unwrap(),
            vec![300]
        );
        assert_eq!(index.query("T#a", 10, T0, T0).unwrap(), vec![100]);
        assert_eq!(
            index.query("T#a", 10, T0 + 10_000, u64::MAX).unwrap(),
            Vec::<u64>::new()
        );
        assert_eq!(
            index.query("T#a", 10, T0 + 8_000, T0 + 1_000).unwrap(),
            Vec::<u64>::new()
        );
        assert_eq!(index.last_update_timestamp_ms(), T0 + 9_000);
        assert_eq!(index.last_update_commit_log_offset(), 400);
    }

    /// The time stored is whole seconds since the file's first entry: an entry is returned when
    /// its second overlaps the range, never missed for lying inside it.
    #[test]
    fn time_matching_has_one_second_resolution() {
        let disk = MemDisk::new();
        let mut index = open(
            &disk,
            IndexConfig {
                hash_slots: 16,
                entries_max: 64,
            },
        );
        index.put("k", 10, T0).unwrap();
        index.put("k", 20, T0 + 2_500).unwrap();
        index.put("k", 30, T0 + 4_000).unwrap();
        assert_eq!(
            index.query("k", 10, T0 + 2_400, T0 + 2_600).unwrap(),
            vec![20]
        );
        assert_eq!(
            index.query("k", 10, T0 + 2_000, T0 + 2_100).unwrap(),
            vec![20],
            "same second"
        );
        assert_eq!(
            index.query("k", 10, T0 + 3_000, T0 + 3_999).unwrap(),
            Vec::<u64>::new()
        );
        assert_eq!(
            index.query("k", 10, T0 + 4_001, u64::MAX).unwrap(),
            Vec::<u64>::new(),
            "past the file's end"
        );
    }

    /// Keys whose hashes collide come back for either key (callers re-check), while keys that
    /// only share a slot are told apart by their stored hash.
    #[test]
    fn collisions_are_returned_and_shared_slots_filtered() {
        let disk = MemDisk::new();
        let mut index = open(
            &disk,
            IndexConfig {
                hash_slots: 1,
                entries_max: 64,
            },
        );
        index.put("Aa", 1, T0).unwrap();
        index.put("BB", 2, T0).unwrap();
        index.put("hello", 3, T0).unwrap();
        index.put("Aa", 4, T0).unwrap();
        assert_eq!(all(&index, "Aa"), vec![4, 2, 1]);
        assert_eq!(all(&index, "BB"), vec![4, 2, 1]);
        assert_eq!(all(&index, "hello"), vec![3]);
    }

    /// A full file is flushed and a new one created; queries read every file, newest first, and
    /// names keep growing even when store timestamps go back.
    #[test]
    fn rolls_to_a_new_file_when_full() {
        let disk = MemDisk::new();
        let mut index = open(&disk, TINY);
        for n in 0..8u64 {
            let key = if n % 2 == 0 { "even" } else { "odd" };
            let ts = if n == 6 { T0 - 60_000 } else { T0 + n * 1_000 };
            index.put(key, n * 10, ts).unwrap();
        }
        assert_eq!(index.file_count(), 3);
        assert_eq!(all(&index, "even"), vec![60, 40, 20, 0]);
        assert_eq!(all(&index, "odd"), vec![70, 50, 30, 10]);
        let names = disk.list(&dir()).unwrap();
        assert_eq!(
            names,
            vec![
                "20231114221320000",
                "20231114221323000",
                "20231114221323001"
            ]
        );
        let disk = disk.crash();
        let index = open(&disk, TINY);
        assert_eq!(
            all(&index, "even"),
            vec![40, 20, 0],
            "full files were flushed at the roll"
        );
    }

    /// Reopening gives the same answers and header numbers, and puts continue where they were.
    #[test]
    fn reopen_recovers_the_same_index() {
        let disk = MemDisk::new();
        let mut index = open(&disk, TINY);
        for n in 0..5u64 {
            index
                .put(&format!("k{}", n % 2), n, T0 + n * 1_000)
                .unwrap();
        }
        index.flush().unwrap();
        drop(index);
        let mut index = open(&disk, TINY);
        assert_eq!(all(&index, "k0"), vec![4, 2, 0]);
        assert_eq!(all(&index, "k1"), vec![3, 1]);
        assert_eq!(index.last_update_commit_log_offset(), 4);
        assert_eq!(index.last_update_timestamp_ms(), T0 + 4_000);
        index.put("k1", 5, T0 + 5_000).unwrap();
        assert_eq!(all(&index, "k1"), vec![5, 3, 1]);
    }

    /// A crash keeps what was flushed and loses the rest; the header never counts a lost entry.
    #[test]
    fn crash_keeps_flushed_entries_only() {
        let disk = MemDisk::new();
        let mut index = open(
            &disk,
            IndexConfig {
                hash_slots: 8,
                entries_max: 64,
            },
        );
        index.put("k", 1, T0).unwrap();
        index.put("j", 2, T0 + 1_000).unwrap();
        index.flush().unwrap();
        index.put("k", 3, T0 + 2_000).unwrap();
        let disk = disk.crash();
        let mut index = open(
            &disk,
            IndexConfig {
                hash_slots: 8,
                entries_max: 64,
            },
        );
        assert_eq!(all(&index, "k"), vec![1]);
        assert_eq!(index.last_update_commit_log_offset(), 2);
        assert!(
            index.put("k", 3, T0 + 2_000).unwrap(),
            "the replay puts it again"
        );
        assert_eq!(all(&index, "k"), vec![3, 1]);
    }

    /// When the OS wrote a slot back before a crash but the header counting its entry was never
    /// synced, recovery rebuilds the slot from the counted entries, so older entries of the
    /// slot stay reachable. Every put is written back at once here, as a write-back just before
    /// the crash would leave it.
    #[test]
    fn recovery_repairs_slots_pointing_past_the_last_entry() {
        let disk = MemDisk::with_faults(DiskFaults {
            seed: 1,
            sync_fail: 0.0,
            sector_survives_crash: 1.0,
            capacity_bytes: None,
            latency_max: std::time::Duration::ZERO,
            read_corrupt: 0.0,
        });
        let config = IndexConfig {
            hash_slots: 8,
            entries_max: 64,
        };
        let mut index = open(&disk, config).with_pending_puts_max(1);
        index.put("k", 100, T0).unwrap();
        index.flush().unwrap();
        index.put("k", 200, T0 + 1_000).unwrap();
        index.put("other", 300, T0 + 1_000).unwrap();
        let disk = disk.crash();
        assert!(
            disk.fault_counts().sectors_torn > 0,
            "the unsynced slots survived"
        );
        let mut index = open(&disk, config);
        assert_eq!(all(&index, "k"), vec![100]);
        assert_eq!(all(&index, "other"), Vec::<u64>::new());
        index.put("k", 200, T0 + 1_000).unwrap();
        assert_eq!(all(&index, "k"), vec![200, 100]);
    }

    /// Puts wait in memory: none is written before the write-back bound or a flush, yet queries
    /// and the header numbers see them at once. The flush then costs one write for the entries,
    /// one for the slots (a small table is one run) and one for the header.
    #[test]
    fn buffered_puts_are_visible_to_query_before_any_write() {
        let disk = CountingDisk::new(MemDisk::new());
        let config = IndexConfig {
            hash_slots: 16,
            entries_max: 64,
        };
        let mut index = IndexService::open(disk.clone(), &dir(), config).unwrap();
        for n in 1..=10u64 {
            index
                .put(&format!("k{}", n % 3), n, T0 + n * 1_000)
                .unwrap();
        }
        assert_eq!(
            disk.writes(),
            0,
            "nothing written before the bound or a flush"
        );
        assert_eq!(
            index.query("k1", 64, 0, u64::MAX).unwrap(),
            vec![10, 7, 4, 1]
        );
        assert_eq!(
            index.query("k2", 64, T0 + 5_000, T0 + 8_000).unwrap(),
            vec![8, 5]
        );
        assert_eq!(index.last_update_commit_log_offset(), 10);
        assert_eq!(index.last_update_timestamp_ms(), T0 + 10_000);
        index.flush().unwrap();
        assert_eq!(disk.writes(), 3, "entries, slots, header");
        index.flush().unwrap();
        assert_eq!(disk.writes(), 3, "nothing left to write");
        let index = IndexService::open(disk.inner().crash(), &dir(), config).unwrap();
        assert_eq!(all_of(&index, "k1"), vec![10, 7, 4, 1]);
    }

    /// At the bound, the pending puts are written back without a flush: one write for the
    /// entries and one per run of nearby slots, where slots farther apart than
    /// `SLOT_RUN_GAP_BYTES_MAX` go in separate writes. Queries then read them from the file.
    #[test]
    fn write_back_at_the_bound_joins_near_slots_and_splits_far_ones() {
        let config = IndexConfig {
            hash_slots: 4096,
            entries_max: 64,
        };
        let slot = |key: &str| key_hash(key) as u32 % config.hash_slots;
        let keys: Vec<String> = (0..10_000).map(|n| format!("key-{n}")).collect();
        let low = keys.iter().find(|k| slot(k) < 100).unwrap();
        let near = keys
            .iter()
            .find(|k| (slot(low) + 1..slot(low) + 1000).contains(&slot(k)))
            .unwrap();
        let far = keys.iter().find(|k| slot(k) > slot(near) + 1100).unwrap();

        let disk = CountingDisk::new(MemDisk::new());
        let mut index = IndexService::open(disk.clone(), &dir(), config)
            .unwrap()
            .with_pending_puts_max(3);
        index.put(low, 1, T0).unwrap();
        index.put(near, 2, T0).unwrap();
        assert_eq!(disk.writes(), 0);
        index.put(far, 3, T0).unwrap();
        assert_eq!(disk.writes(), 1 + 2, "entries, then two runs of slots");
        for (key, offset) in [(low, 1), (near, 2), (far, 3)] {
            assert_eq!(all_of(&index, key), vec![offset], "{key}");
        }
        index.put(low, 4, T0).unwrap();
        assert_eq!(
            all_of(&index, low),
            vec![4, 1],
            "one put pending, one written"
        );
        assert_eq!(disk.writes(), 3);
    }

    /// Puts after the last flush are lost by a crash whether they were still in memory or
    /// written back but not synced (the header never counted them), and a replay of the log puts
    /// them again; a replay of a flushed put is skipped.
    #[test]
    fn unflushed_puts_are_lost_by_a_crash_and_redone_by_replay() {
        let config = IndexConfig {
            hash_slots: 8,
            entries_max: 64,
        };
        for pending_max in [1, INDEX_PENDING_PUTS_MAX] {
            let disk = MemDisk::new();
            let mut index = open(&disk, config).with_pending_puts_max(pending_max);
            index.put("k", 50, T0).unwrap();
            index.put("k", 100, T0).unwrap();
            index.flush().unwrap();
            index.put("k", 200, T0 + 1_000).unwrap();
            index.put("j", 300, T0 + 2_000).unwrap();
            assert_eq!(all(&index, "k"), vec![200, 100, 50], "{pending_max}");
            drop(index);

            let disk = disk.crash();
            let mut index = open(&disk, config).with_pending_puts_max(pending_max);
            assert_eq!(all(&index, "k"), vec![100, 50], "{pending_max}");
            assert_eq!(all(&index, "j"), Vec::<u64>::new(), "{pending_max}");
            assert_eq!(index.last_update_commit_log_offset(), 100);
            assert!(
                !index.put("k", 50, T0).unwrap(),
                "a flushed put is not redone"
            );
            assert!(index.put("k", 200, T0 + 1_000).unwrap());
            assert!(index.put("j", 300, T0 + 2_000).unwrap());
            index.flush().unwrap();
            let index = open(&disk.crash(), config);
            assert_eq!(all(&index, "k"), vec![200, 100, 50], "{pending_max}");
            assert_eq!(all(&index, "j"), vec![300], "{pending_max}");
        }
    }

    /// A replay of messages already indexed is skipped, and a key put twice for one message
    /// comes back once.
    #[test]
    fn replayed_puts_are_skipped_and_duplicates_removed() {
        let disk = MemDisk::new();
        let mut index = open(
            &disk,
            IndexConfig {
                hash_slots: 8,
                entries_max: 64,
            },
        );
        assert!(index.put("k", 100, T0).unwrap());
        assert!(index.put("k", 200, T0).unwrap());
        assert!(index.put("k", 200, T0).unwrap());
        assert!(!index.put("k", 100, T0).unwrap());
        assert_eq!(all(&index, "k"), vec![200, 100]);
    }

    /// A message is indexed under `topic#UNIQ_KEY` and `topic#key` for each of its KEYS.
    #[test]
    fn put_message_indexes_uniq_key_and_each_key() {
        let disk = MemDisk::new();
        let mut index = open(
            &disk,
            IndexConfig {
                hash_slots: 8,
                entries_max: 64,
            },
        );
        let put = index
            .put_message(
                "TopicA",
                Some("7F00000100002A9F"),
                Some("order-1  order-2"),
                48,
                T0,
            )
            .unwrap();
        assert_eq!(put, 3);
        assert_eq!(index.put_message("TopicA", None, None, 96, T0).unwrap(), 0);
        for key in ["7F00000100002A9F", "order-1", "order-2"] {
            assert_eq!(all(&index, &index_key("TopicA", key)), vec![48], "{key}");
        }
        assert_eq!(all(&index, "order-1"), Vec::<u64>::new());
        assert_eq!(
            all(&index, &index_key("TopicB", "order-1")),
            Vec::<u64>::new()
        );
    }

    /// A damaged header is refused, naming the file and the field's byte; nothing is changed.
    #[test]
    fn corrupt_header_is_rejected_with_file_and_offset() {
        let disk = MemDisk::new();
        let mut index = open(&disk, TINY);
        index.put("k", 1, T0).unwrap();
        index.flush().unwrap();
        let path = dir().join(timestamp_file_name(T0));
        let cases: [(usize, &[u8], &str); 3] = [
            (36, &[0, 0, 0, 9], "at byte 36: indexCount 9 not in 0..=4"),
            (0, &[0x80], "at byte 0: negative beginTimestamp"),
            (
                32,
                &[0xFF, 0xFF, 0xFF, 0xFF],
                "at byte 32: hashSlotCount -1",
            ),
        ];
        for (at, bytes, expected) in cases {
            let mut saved = vec![0u8; bytes.len()];
            let file = disk.open_segment(&path, TINY.file_bytes()).unwrap();
            file.read_at(at as u64, &mut saved);
            assert!(disk.edit(&path, |file| {
                file[at..at + bytes.len()].copy_from_slice(bytes)
            }));
            let err = IndexService::open(disk.clone(), &dir(), TINY).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("/store/index/20231114221320000"), "{text}");
            assert!(text.contains(expected), "{text}");
            assert!(err.is_fatal());
            assert!(disk.edit(&path, |file| {
                file[at..at + bytes.len()].copy_from_slice(&saved)
            }));
        }
        assert_eq!(all(&open(&disk, TINY), "k"), vec![1]);
    }

    /// A file of another size, or a name that is not a timestamp, is refused with its path.
    #[test]
    fn wrong_size_and_bad_names_are_rejected() {
        let disk = MemDisk::new();
        disk.open_segment(&dir().join("20231114221320000"), TINY.file_bytes() + 1)
            .unwrap();
        let err = IndexService::open(disk, &dir(), TINY)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("IndexFile(/store/index/20231114221320000)"),
            "{err}"
        );
        assert!(err.contains("expected 136"), "{err}");

        let disk = MemDisk::new();
        disk.open_segment(&dir().join("index.tmp"), 8).unwrap();
        let err = IndexService::open(disk, &dir(), TINY).unwrap_err();
        assert!(matches!(err, StoreError::UnexpectedFile { .. }), "{err}");

        let err = IndexService::open(
            MemDisk::new(),
            &dir(),
            IndexConfig {
                hash_slots: 0,
                entries_max: 4,
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::InvalidConfig {
                    name: "hash_slots",
                    ..
                }
            ),
            "{err}"
        );
    }

    /// An entry that cannot be followed (a previous entry not before it) fails the query with the
    /// file and the entry's byte, rather than looping or panicking. The entries are flushed
    /// first, so the damage is read from the file.
    #[test]
    fn query_rejects_a_chain_that_does_not_go_back() {
        let disk = MemDisk::new();
        let config = IndexConfig {
            hash_slots: 8,
            entries_max: 64,
        };
        let mut index = open(&disk, config);
        index.put("k", 1, T0).unwrap();
        index.put("k", 2, T0).unwrap();
        index.flush().unwrap();
        let entry_2 = config.entry_at(2);
        let path = dir().join(timestamp_file_name(T0));
        assert!(disk.edit(&path, |file| {
            let at = entry_2 as usize + 16;
            file[at..at + 4].copy_from_slice(&2i32.to_be_bytes());
        }));
        let err = index.query("k", 10, 0, u64::MAX).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "at byte {entry_2}: previous entry 2 is not before entry 2"
            )),
            "{err}"
        );
        assert!(index.put("k", 3, T0).is_ok(), "puts do not follow chains");
    }

    /// Purging removes the oldest files whose messages are all below the offset, never the newest.
    #[test]
    fn purge_before_removes_old_files() {
        let disk = MemDisk::new();
        let mut index = open(&disk, TINY);
        for n in 0..7u64 {
            index.put("k", n, T0 + n).unwrap();
        }
        assert_eq!(index.file_count(), 3);
        assert_eq!(index.purge_before(2).unwrap(), 0);
        assert_eq!(index.purge_before(3).unwrap(), 1);
        assert_eq!(all(&index, "k"), vec![6, 5, 4, 3]);
        assert_eq!(index.purge_before(100).unwrap(), 1);
        assert_eq!(index.file_count(), 1);
        assert_eq!(disk.list(&dir()).unwrap().len(), 1);
    }

    /// The production disk: puts across files, flush, reopen from the real files.
    #[test]
    fn mmap_disk_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("index");
        let mut index = IndexService::open(MmapDisk, &dir, TINY).unwrap();
        for n in 0..7u64 {
            index
                .put_message("%RETRY%g", None, Some("a b"), n * 100, T0 + n * 1_000)
                .unwrap();
        }
        index.flush().unwrap();
        drop(index);
        let index = IndexService::open(MmapDisk, &dir, TINY).unwrap();
        assert_eq!(index.file_count(), 5);
        let found = index
            .query(&index_key("%RETRY%g", "b"), 3, 0, u64::MAX)
            .unwrap();
        assert_eq!(found, vec![600, 500, 400]);
        let found = index
            .query(&index_key("%RETRY%g", "a"), 64, T0 + 2_000, T0 + 3_000)
            .unwrap();
        assert_eq!(found, vec![300, 200]);
        let len = std::fs::metadata(dir.join(timestamp_file_name(T0)))
            .unwrap()
            .len();
        assert_eq!(len, TINY.file_bytes());
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Put(u8),
            Flush,
            Reopen,
            Crash,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => (0u8..6).prop_map(Op::Put),
                1 => Just(Op::Flush),
                1 => Just(Op::Reopen),
                1 => Just(Op::Crash),
            ]
        }

        proptest! {
            /// Random puts of a few keys (sharing slots), flushes, reopens and crashes against a
            /// list of (key, offset): every key's query returns its offsets newest first, and a
            /// crash or a reopen without flush loses exactly the puts after the last flush or roll
            /// (the header only counts synced entries). Puts are written back every
            /// `pending_max` puts, and a crash keeps each unsynced sector with even odds, so
            /// recovery meets entries and slots of uncounted puts.
            #[test]
            fn index_matches_a_list_model(
                ops in proptest::collection::vec(op(), 1..60),
                pending_max in 1u32..5,
                seed in any::<u64>(),
            ) {
                let config = IndexConfig { hash_slots: 3, entries_max: 5 };
                let mut disk = MemDisk::with_faults(DiskFaults {
                    seed,
                    sync_fail: 0.0,
                    sector_survives_crash: 0.5,
                    capacity_bytes: None,
                    latency_max: std::time::Duration::ZERO,
                    read_corrupt: 0.0,
                });
                let open = |disk: &MemDisk| {
                    IndexService::open(disk.clone(), &dir(), config)
                        .unwrap()
                        .with_pending_puts_max(pending_max)
                };
                let mut index = open(&disk);
                let mut puts: Vec<(String, u64)> = Vec::new();
                let mut durable = 0usize;
                let mut in_newest = 0u32;
                let mut offset = 0u64;
                for op in ops {
                    match op {
                        Op::Put(k) => {
                            if in_newest == config.entries_max - 1 || index.file_count() == 0 {
                                durable = puts.len();
                                in_newest = 0;
                            }
                            offset += 1 + u64::from(k);
                            let key = format!("k{k}");
                            prop_assert!(index.put(&key, offset, T0 + offset * 300).unwrap());
                            puts.push((key, offset));
                            in_newest += 1;
                        }
                        Op::Flush => {
                            index.flush().unwrap();
                            durable = puts.len();
                        }
                        Op::Reopen | Op::Crash => {
                            if matches!(op, Op::Crash) {
                                disk = disk.crash();
                            }
                            index = open(&disk);
                            let lost = puts.len() - durable;
                            puts.truncate(durable);
                            in_newest -= u32::try_from(lost).unwrap();
                            offset = puts.last().map_or(0, |p| p.1);
                        }
                    }
                    for k in 0..6 {
                        let key = format!("k{k}");
                        let mut expected: Vec<u64> = puts.iter().filter(|p| p.0 == key).map(|p| p.1).collect();
                        expected.reverse();
                        expected.truncate(QUERY_RESULTS_MAX);
                        prop_assert_eq!(index.query(&key, usize::MAX, 0, u64::MAX).unwrap(), expected);
                    }
                    prop_assert_eq!(index.last_update_commit_log_offset(), puts.last().map_or(0, |p| p.1));
                }
            }
        }
    }
}
