//! Recovery of the CommitLog from damaged files: truncated mid-entry, flipped bytes, a deleted
//! index, a power loss that drops unsynced bytes.

#![allow(clippy::unwrap_used)] // Test helpers: a failed step is the test failing.

use std::fs;
use std::path::{Path, PathBuf};

use dledger::commit_log::NewEntry;
use dledger::record::EntryKind;
use dledger::{CommitLog, CommitLogConfig, Disk, LogId, MemDisk, MmapDisk, StorageError};

const SEGMENT_BYTES: u64 = 8192;

fn config(dir: &Path) -> CommitLogConfig {
    CommitLogConfig {
        dir: dir.to_path_buf(),
        segment_bytes: SEGMENT_BYTES,
        index_units_per_file: 16,
        entry_body_bytes_max: 4096,
        #[cfg(feature = "mutants")]
        skip_recovery_crc: false,
    }
}

fn body(index: u64) -> Vec<u8> {
    format!("entry-{index}-{:>100}", "").into_bytes()
}

/// Appends entries `range` (term 1) without syncing them.
fn append_unsynced<D: Disk>(log: &mut CommitLog<D>, range: std::ops::Range<u64>) {
    let bodies: Vec<(u64, Vec<u8>)> = range.map(|i| (i, body(i))).collect();
    log.append(bodies.iter().map(|(i, b)| NewEntry {
        log_id: LogId { term: 1, index: *i },
        kind: EntryKind::Normal,
        body: b,
    }))
    .unwrap();
    log.check_invariants();
}

/// Appends entries `range` (term 1) and syncs them.
fn fill<D: Disk>(log: &mut CommitLog<D>, range: std::ops::Range<u64>) {
    append_unsynced(log, range);
    log.sync().unwrap();
}

fn open<D: Disk>(
    disk: D,
    dir: &Path,
    committed: Option<u64>,
) -> Result<(CommitLog<D>, dledger::RecoveryReport), StorageError> {
    let opened = CommitLog::open(disk, config(dir), committed, None, None, None);
    if let Ok((log, _)) = &opened {
        log.check_invariants();
    }
    opened
}

fn fresh(dir: &Path, entries: u64) -> CommitLog<MmapDisk> {
    let (mut log, _) = open(MmapDisk, dir, None).unwrap();
    fill(&mut log, 0..entries);
    log
}

fn assert_reads(log: &CommitLog<impl Disk>, range: std::ops::Range<u64>) {
    for i in range {
        let entry = log
            .read(i)
            .unwrap()
            .unwrap_or_else(|| panic!("entry {i} missing"));
        assert_eq!(entry.body, body(i), "entry {i} has other bytes");
    }
}

fn segment_file(log: &CommitLog<impl Disk>, index: u64) -> (PathBuf, u64) {
    let unit = log.locate(index).unwrap();
    (
        log.segment_path(unit.position),
        unit.position % SEGMENT_BYTES,
    )
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

/// A segment file cut in the middle of an uncommitted entry: recovery cuts the log right before
/// that entry, keeps everything earlier, and the log takes new appends there.
#[test]
fn truncated_mid_entry_cuts_the_uncommitted_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log = fresh(dir.path(), 200);
    let (path, offset) = segment_file(&log, 190);
    drop(log);
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(offset + 20).unwrap();
    drop(file);

    let (mut log, report) = open(MmapDisk, dir.path(), Some(150)).unwrap();
    assert_eq!(log.next_index(), 190, "{report:?}");
    assert_eq!(report.cut.as_ref().map(|c| c.0), Some(190));
    assert_reads(&log, 0..190);
    fill(&mut log, 190..195);
    assert_reads(&log, 0..195);
    drop(log);
    let (log, report) = open(MmapDisk, dir.path(), Some(150)).unwrap();
    assert_eq!((log.next_index(), report.cut), (195, None));
}

/// A flipped byte in an uncommitted entry's body: the CRC catches it and recovery cuts there.
#[test]
fn flipped_byte_in_uncommitted_tail_cuts_there() {
    let dir = tempfile::tempdir().unwrap();
    let log = fresh(dir.path(), 200);
    let (path, offset) = segment_file(&log, 170);
    drop(log);
    flip_byte(&path, offset + 60);
    let (log, report) = open(MmapDisk, dir.path(), Some(150)).unwrap();
    assert_eq!(log.next_index(), 170);
    assert!(
        report.cut.unwrap().1.contains("CRC"),
        "the cut names the CRC"
    );
    assert_reads(&log, 0..170);
}

/// A flipped byte inside the committed region near the tail stops recovery with an error that
/// names the segment file and the entry's position.
#[test]
fn flipped_byte_in_committed_region_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = fresh(dir.path(), 200);
    let (path, offset) = segment_file(&log, 120);
    let position = log.locate(120).unwrap().position;
    drop(log);
    flip_byte(&path, offset + 70);
    let err = open(MmapDisk, dir.path(), Some(180))
        .err()
        .expect("recovery must refuse");
    let text = err.to_string();
    assert!(
        matches!(err, StorageError::CorruptCommitted { .. }),
        "{text}"
    );
    assert!(
        text.contains(&path.display().to_string()),
        "error names the file: {text}"
    );
    assert!(
        text.contains(&format!("position {position}")),
        "error names the position: {text}"
    );
}

/// A committed entry damaged while the replica runs (older than the window recovery
/// re-verifies) is caught when it is read from the files: the read fails naming the file and
/// the position, and never returns the bad bytes. An entry still held in memory since it was
/// appended (`RECENT_ENTRIES_MAX`) is answered from there, as written.
#[test]
fn damaged_committed_entry_fails_the_read() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let entries = dledger::limits::RECENT_ENTRIES_MAX as u64 + 200;
    let log = fresh(dir.path(), entries);
    let (path, offset) = segment_file(&log, entries - 1);
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_at(b"\xff", offset + 80).unwrap();
    assert_eq!(
        log.read(entries - 1).unwrap().unwrap().body,
        body(entries - 1)
    );

    let (path, offset) = segment_file(&log, 3);
    let position = log.locate(3).unwrap().position;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_at(&mut byte, offset + 80).unwrap();
    file.write_at(&[byte[0] ^ 0x40], offset + 80).unwrap();
    let err = log.read(3).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, StorageError::Corrupt { index: 3, .. }),
        "{text}"
    );
    assert!(
        text.contains(&path.display().to_string()) && text.contains(&position.to_string()),
        "{text}"
    );
    assert_reads(&log, 4..200);
}

/// Deleting the index folder: recovery rebuilds every unit from the data files.
#[test]
fn deleted_index_is_rebuilt_from_data() {
    let dir = tempfile::tempdir().unwrap();
    drop(fresh(dir.path(), 300));
    fs::remove_dir_all(dir.path().join("index")).unwrap();
    let (log, report) = open(MmapDisk, dir.path(), Some(299)).unwrap();
    assert_eq!(report.indexed, 0);
    assert_eq!(report.rebuilt, 300);
    assert_eq!(log.next_index(), 300);
    assert_reads(&log, 0..300);
}

/// An index that lags the data (its newest file deleted): recovery re-indexes only the tail.
#[test]
fn lagging_index_is_completed_from_data() {
    let dir = tempfile::tempdir().unwrap();
    drop(fresh(dir.path(), 100));
    let index_dir = dir.path().join("index");
    let mut files: Vec<_> = fs::read_dir(&index_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    fs::remove_file(files.last().unwrap()).unwrap();
    let (log, report) = open(MmapDisk, dir.path(), Some(99)).unwrap();
    assert!(report.indexed > 0 && report.rebuilt > 0, "{report:?}");
    assert_eq!(report.indexed + report.rebuilt, 100);
    assert_reads(&log, 0..100);
}

/// A committed index beyond what the files hold (they lost their tail) is refused, never
/// papered over (DLedger#316: committed > ledger end).
#[test]
fn committed_beyond_the_data_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = fresh(dir.path(), 100);
    let (path, offset) = segment_file(&log, 95);
    drop(log);
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(offset).unwrap();
    drop(file);
    let err = open(MmapDisk, dir.path(), Some(99))
        .err()
        .expect("recovery must refuse");
    assert!(
        matches!(
            err,
            StorageError::MissingCommitted { index: 95, .. }
                | StorageError::CorruptCommitted { .. }
        ),
        "{err}"
    );
}

/// A power loss on the in-memory disk drops everything not synced: entries appended but never
/// synced are gone after recovery, synced ones are intact, and stale bytes never come back.
#[test]
fn power_loss_keeps_exactly_the_synced_entries() {
    let disk = MemDisk::new();
    let dir = Path::new("/log");
    let (mut log, _) = open(disk.clone(), dir, None).unwrap();
    fill(&mut log, 0..50);
    append_unsynced(&mut log, 50..80);
    drop(log);
    let disk = disk.crash();
    let (mut log, _) = open(disk.clone(), dir, Some(49)).unwrap();
    assert_eq!(log.next_index(), 50);
    assert_reads(&log, 0..50);
    // New entries of a later term take the freed positions; a second crash after syncing them
    // keeps them and nothing else.
    let newer: Vec<Vec<u8>> = (50..55)
        .map(|i| format!("term2-{i}").into_bytes())
        .collect();
    log.append(newer.iter().enumerate().map(|(i, b)| NewEntry {
        log_id: LogId {
            term: 2,
            index: 50 + i as u64,
        },
        kind: EntryKind::Normal,
        body: b,
    }))
    .unwrap();
    log.sync().unwrap();
    drop(log);
    let disk = disk.crash();
    let (log, report) = open(disk, dir, Some(54)).unwrap();
    assert_eq!((log.next_index(), report.cut), (55, None));
    assert_eq!(log.read(54).unwrap().unwrap().header.term, 2);
}

/// The flusher syncs the index files only now and then (`CommitLog::take_dirty`): a power loss
/// after the data of entries was synced but not their index units keeps every entry, re-indexed
/// from the data; index units that reached the disk without their entries are cut.
#[test]
fn power_loss_with_the_index_behind_the_data_keeps_the_synced_entries() {
    use dledger::SegmentFile;
    let disk = MemDisk::new();
    let dir = Path::new("/log");
    let (mut log, _) = open(disk.clone(), dir, None).unwrap();
    fill(&mut log, 0..20);
    append_unsynced(&mut log, 20..60);
    for range in log.take_dirty(false) {
        range.file.sync_range(range.offset, range.len).unwrap();
    }
    drop(log);
    let disk = disk.crash();
    let (log, report) = open(disk.clone(), dir, Some(59)).unwrap();
    assert_eq!((report.indexed, report.rebuilt), (20, 40), "{report:?}");
    assert_eq!(log.next_index(), 60);
    assert_reads(&log, 0..60);
    drop(log);

    // Now the other way round: index units synced, their entries' data not.
    let (mut log, _) = open(disk.clone(), dir, Some(59)).unwrap();
    append_unsynced(&mut log, 60..70);
    let ranges = log.take_dirty(true);
    assert!(ranges.len() >= 2, "data and index ranges");
    for range in ranges.iter().skip(1) {
        range.file.sync_range(range.offset, range.len).unwrap();
    }
    drop(log);
    let disk = disk.crash();
    let (log, report) = open(disk, dir, Some(59)).unwrap();
    assert_eq!(log.next_index(), 60, "{report:?}");
    assert!(report.cut.is_some(), "{report:?}");
    assert_reads(&log, 0..60);
}

/// Truncation zeroes the removed entries, so after a crash they cannot reappear behind shorter
/// new ones.
#[test]
fn truncated_entries_never_reappear() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = fresh(dir.path(), 40);
    log.truncate_after(Some(29)).unwrap();
    log.check_invariants();
    assert_eq!(log.next_index(), 30);
    assert!(log.read(30).unwrap().is_none());
    // Shorter entries than the removed ones, so old headers would sit at unaligned offsets.
    let short: Vec<Vec<u8>> = (30..32).map(|i| format!("s{i}").into_bytes()).collect();
    log.append(short.iter().enumerate().map(|(i, b)| NewEntry {
        log_id: LogId {
            term: 2,
            index: 30 + i as u64,
        },
        kind: EntryKind::Normal,
        body: b,
    }))
    .unwrap();
    log.sync().unwrap();
    drop(log);
    let (log, report) = open(MmapDisk, dir.path(), None).unwrap();
    assert_eq!((log.next_index(), report.cut), (32, None));
    assert_reads(&log, 0..30);
}

/// A file that does not belong in the log folder stops recovery with its name.
#[test]
fn unexpected_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    drop(fresh(dir.path(), 5));
    let stray = dir.path().join("commitlog").join("notes.txt");
    fs::write(&stray, b"hi").unwrap();
    let err = open(MmapDisk, dir.path(), None)
        .err()
        .expect("recovery must refuse");
    assert!(err.to_string().contains("notes.txt"), "{err}");
}

/// Appends one term-`term` entry `index` with `body`, synced, and returns its position.
fn append_one<D: Disk>(log: &mut CommitLog<D>, term: u64, index: u64, body: &[u8]) -> u64 {
    log.append([NewEntry {
        log_id: LogId { term, index },
        kind: EntryKind::Normal,
        body,
    }])
    .unwrap();
    log.sync().unwrap();
    log.locate(index).unwrap().position
}

/// Fills a log with entries until less than `room` bytes are left in its first segment;
/// returns the next index and where the last entry ends.
fn fill_near_segment_end<D: Disk>(log: &mut CommitLog<D>, room: u64) -> (u64, u64) {
    let mut next = 0;
    while SEGMENT_BYTES - log.write_position() >= room {
        fill(log, next..next + 1);
        next += 1;
    }
    (next, log.write_position())
}

/// An uncommitted entry that rolled into a new segment is truncated; the entry that replaces it
/// is small enough to fit in the first segment and goes right after the last kept entry, where
/// a replica that never had the rolled entry puts it. Positions depend on the entries alone, so
/// the commit-log offsets written into records agree across replicas (simulation seed 210 of
/// the broker layer found them differing).
#[test]
fn truncating_a_rolled_entry_puts_the_next_one_where_every_replica_does() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(MmapDisk, dir.path(), None).unwrap();
    let (next, end) = fill_near_segment_end(&mut log, 400);
    let big = vec![7u8; 1000];
    let rolled = append_one(&mut log, 1, next, &big);
    assert_eq!(
        rolled, SEGMENT_BYTES,
        "the big entry rolled into the second segment"
    );

    log.truncate_after(Some(next - 1)).unwrap();
    log.check_invariants();
    assert_eq!(log.write_position(), end);
    let replaced = append_one(&mut log, 2, next, b"small");
    assert_eq!(
        replaced, end,
        "the replacement fits after the last kept entry"
    );

    let other = tempfile::tempdir().unwrap();
    let (mut never_rolled, _) = open(MmapDisk, other.path(), None).unwrap();
    fill(&mut never_rolled, 0..next);
    assert_eq!(append_one(&mut never_rolled, 2, next, b"small"), replaced);

    drop(log);
    let (log, report) = open(MmapDisk, dir.path(), None).unwrap();
    assert_eq!((log.next_index(), report.cut), (next + 1, None));
    assert_eq!(log.read(next).unwrap().unwrap().body, &b"small"[..]);
    assert_reads(&log, 0..next);
}

/// A crash after a roll's end marker reached the disk but before the entry did: recovery goes
/// on where the last entry ends, not past the marker, so the next entry lands where it would
/// have without the marker.
#[test]
fn an_end_marker_without_its_entry_is_not_part_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(MmapDisk, dir.path(), None).unwrap();
    let (next, end) = fill_near_segment_end(&mut log, 400);
    append_one(&mut log, 1, next, &[7u8; 1000]);
    let second = log.segment_path(SEGMENT_BYTES);
    drop(log);
    // The rolled entry's bytes never made it; its index unit and the end marker did.
    let mut bytes = fs::read(&second).unwrap();
    bytes[..1100].fill(0);
    fs::write(&second, bytes).unwrap();

    let (mut log, report) = open(MmapDisk, dir.path(), None).unwrap();
    assert_eq!(log.next_index(), next);
    assert_eq!(report.cut.map(|(index, _)| index), Some(next));
    assert_eq!(
        log.write_position(),
        end,
        "the log ends where its last entry does"
    );
    assert_eq!(append_one(&mut log, 2, next, b"small"), end);
    drop(log);
    let (log, report) = open(MmapDisk, dir.path(), None).unwrap();
    assert_eq!((log.next_index(), report.cut), (next + 1, None));
    assert_reads(&log, 0..next);
}

/// Synced bytes more than `keep` behind the write position are handed out once, across
/// segment files, in steps of at least `step`; after the page cache drops them, every entry
/// reads back the same from disk.
#[test]
fn cold_ranges_trail_the_write_position_and_read_back_after_a_drop() {
    use dledger::SegmentFile as _;
    let dir = tempfile::tempdir().unwrap();
    let mut log = fresh(dir.path(), 300);
    let (keep, step) = (2 * SEGMENT_BYTES, SEGMENT_BYTES / 2);
    let end = log.write_position();
    assert!(end > 4 * SEGMENT_BYTES, "the entries span several segments");
    let cold = log.take_cold(keep, step);
    let mut at = 0;
    for range in &cold {
        assert_eq!(
            range.file_start + range.offset,
            at,
            "ranges follow one another"
        );
        assert!(range.offset + range.len <= SEGMENT_BYTES, "within one file");
        at += range.len;
        range.file.drop_cache(range.offset, range.len).unwrap();
    }
    assert_eq!(at, end - keep, "everything but the newest `keep` bytes");
    assert!(cold.len() > 1, "across files");
    assert!(log.take_cold(keep, step).is_empty(), "nothing twice");
    fill(&mut log, 300..303);
    assert!(
        log.take_cold(keep, step).is_empty(),
        "less than a step gathered since"
    );
    fill(&mut log, 303..380);
    let more = log.take_cold(keep, step);
    assert_eq!(
        more.first().map(|r| r.file_start + r.offset),
        Some(end - keep),
        "goes on where the last ones stopped"
    );
    assert_reads(&log, 0..380);
}
