//! A directory of fixed-size files named by their 20-digit starting position, RocketMQ's
//! `MappedFileQueue`: the CommitLog's data segments and index files, and the store's
//! ConsumeQueues, are each one. A [`FileSet`] opens and orders them, creates the next one as the
//! set rolls over, keeps the byte range of each file written since its last sync, zeroes and
//! removes files from the tail, and deletes a prefix (retention).
//!
//! Files are named by a key, as a [`Naming`] says. With [`Positions`], the default, the key is
//! the file's starting byte: file `s` holds positions `s..s + file_bytes`, `s` a multiple of
//! `file_bytes`, and the set can cut its tail after a position and delete the files before one.
//! The store's IndexFiles are named by their creation time instead (`store::index_file`). What a
//! position means (a log byte, a unit number times the unit size) is the owner's business; so
//! are the errors, which come back as [`FileSetError`] for the owner to name in its own terms.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk::{Disk, SegmentFile};

/// Bytes zeroed per write when a file's tail is cleared.
const ZERO_CHUNK: u64 = 64 * 1024;

/// How a set names its files after their keys.
pub trait Naming: Send + Sync + 'static {
    /// What a name must be, for the error about one that is not.
    const WHAT: &'static str;
    /// Whether keys are starting positions, multiples of the file size.
    const POSITIONS: bool;
    /// The name of the file with `key`.
    fn name(key: u64) -> String;
    /// The key a name stands for, if it is one of this naming's.
    fn parse(name: &str) -> Option<u64>;
}

/// Files named by their starting position, 20 digits (RocketMQ's CommitLog and ConsumeQueue).
#[derive(Debug, Clone, Copy, Default)]
pub struct Positions;

impl Naming for Positions {
    const WHAT: &'static str = "20-digit position";
    const POSITIONS: bool = true;

    fn name(key: u64) -> String {
        file_name(key)
    }

    fn parse(name: &str) -> Option<u64> {
        parse_file_name(name)
    }
}

/// The name of the file starting at `start`.
pub fn file_name(start: u64) -> String {
    format!("{start:020}")
}

/// The start a file name stands for, if it is 20 digits.
pub fn parse_file_name(name: &str) -> Option<u64> {
    if name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}

/// What a file-set operation was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOp {
    /// Listing the directory.
    List,
    /// Opening or creating a file.
    Open,
    /// Writing (zeroes).
    Write,
    /// Syncing a range.
    Sync,
    /// Removing a file.
    Remove,
}

/// Why a file-set operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FileSetError {
    /// A file in the directory that is not one of the set's.
    #[error("unexpected file {}: {reason}", path.display())]
    Unexpected {
        /// The file.
        path: PathBuf,
        /// Why it does not belong.
        reason: String,
    },
    /// An I/O error; `file_start` names the file, `None` for the directory itself.
    #[error("{op:?} {} failed: {source}", path.display())]
    Io {
        /// The operation.
        op: FileOp,
        /// The file's start, or `None` for the directory.
        file_start: Option<u64>,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// A byte range of one file of a set: dirty bytes for the flusher to sync, or synced ones it
/// drops from the page cache.
pub struct FileRange<F> {
    /// The file.
    pub file: Arc<F>,
    /// The file's start.
    pub file_start: u64,
    /// First byte within the file.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

/// The files of one directory, by key (their starting position, unless `N` says otherwise).
pub struct FileSet<D: Disk, N: Naming = Positions> {
    naming: std::marker::PhantomData<N>,
    disk: D,
    dir: PathBuf,
    file_bytes: u64,
    files: BTreeMap<u64, Arc<D::File>>,
    /// Per file: the byte range written since its last sync.
    dirty: BTreeMap<u64, (u64, u64)>,
}

impl<D: Disk, N: Naming> std::fmt::Debug for FileSet<D, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSet")
            .field("dir", &self.dir)
            .field("file_bytes", &self.file_bytes)
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .field("dirty", &self.dirty)
            .finish()
    }
}

impl<D: Disk, N: Naming> FileSet<D, N> {
    /// Opens every file of `dir` (created if absent), each of `file_bytes` bytes.
    ///
    /// # Errors
    /// A name that is not one of the naming's, or a position that is not a multiple of
    /// `file_bytes`; a file of another size (`InvalidData`); the OS error.
    pub fn open(disk: D, dir: &Path, file_bytes: u64) -> Result<Self, FileSetError> {
        assert!(file_bytes > 0, "a file holds at least one byte");
        let mut set = FileSet {
            naming: std::marker::PhantomData,
            disk,
            dir: dir.to_path_buf(),
            file_bytes,
            files: BTreeMap::new(),
            dirty: BTreeMap::new(),
        };
        let names = set.disk.list(dir).map_err(|source| FileSetError::Io {
            op: FileOp::List,
            file_start: None,
            path: dir.to_path_buf(),
            source,
        })?;
        for name in names {
            let path = dir.join(&name);
            let Some(start) = N::parse(&name) else {
                return Err(FileSetError::Unexpected {
                    path,
                    reason: format!("name is not a {}", N::WHAT),
                });
            };
            if N::POSITIONS && start % file_bytes != 0 {
                return Err(FileSetError::Unexpected {
                    path,
                    reason: format!(
                        "start {start} is not a multiple of the file size {file_bytes}"
                    ),
                });
            }
            let file = set.open_file(start)?;
            set.files.insert(start, file);
        }
        Ok(set)
    }

    fn open_file(&self, start: u64) -> Result<Arc<D::File>, FileSetError> {
        let path = self.path(start);
        self.disk
            .open_segment(&path, self.file_bytes)
            .map_err(|source| FileSetError::Io {
                op: FileOp::Open,
                file_start: Some(start),
                path,
                source,
            })
    }

    fn io_error(&self, op: FileOp, start: u64, source: io::Error) -> FileSetError {
        FileSetError::Io {
            op,
            file_start: Some(start),
            path: self.path(start),
            source,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes per file.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// The path of the file starting at `start`.
    pub fn path(&self, start: u64) -> PathBuf {
        self.dir.join(N::name(start))
    }

    /// The file starting at `start`, if open.
    pub fn get(&self, start: u64) -> Option<&Arc<D::File>> {
        self.files.get(&start)
    }

    /// Whether the file starting at `start` is open.
    pub fn contains(&self, start: u64) -> bool {
        self.files.contains_key(&start)
    }

    /// Every file, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, &Arc<D::File>)> {
        self.files.iter().map(|(start, file)| (*start, file))
    }

    /// The starts of the files from `from` on, in order.
    pub fn starts_from(&self, from: u64) -> Vec<u64> {
        self.files.range(from..).map(|(start, _)| *start).collect()
    }

    /// The first file's start.
    pub fn first_start(&self) -> Option<u64> {
        self.files.keys().next().copied()
    }

    /// The last file's start.
    pub fn last_start(&self) -> Option<u64> {
        self.files.keys().next_back().copied()
    }

    /// Files open.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file is open.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The file starting at `start`, opened (and created, zero-filled) if it is not yet.
    ///
    /// # Errors
    /// The OS error.
    pub fn file_for(&mut self, start: u64) -> Result<Arc<D::File>, FileSetError> {
        debug_assert!(
            !N::POSITIONS || start.is_multiple_of(self.file_bytes),
            "files start at multiples of their size"
        );
        if let Some(file) = self.files.get(&start) {
            return Ok(file.clone());
        }
        let file = self.open_file(start)?;
        self.files.insert(start, file.clone());
        Ok(file)
    }

    /// Adds a file created ahead of time by the caller (a flusher preparing the next one); a
    /// file already open at `start` stays.
    pub fn add_prepared(&mut self, start: u64, file: Arc<D::File>) {
        self.files.entry(start).or_insert(file);
    }

    /// Records bytes `from..to` of the file starting at `start` as written and not yet synced.
    pub fn mark_dirty(&mut self, start: u64, from: u64, to: u64) {
        debug_assert!(
            from <= to && to <= self.file_bytes,
            "{from}..{to} within the file"
        );
        let range = self.dirty.entry(start).or_insert((from, to));
        range.0 = range.0.min(from);
        range.1 = range.1.max(to);
    }

    /// Whether the file starting at `start` has bytes written since its last sync.
    pub fn is_dirty(&self, start: u64) -> bool {
        self.dirty.contains_key(&start)
    }

    /// Takes the ranges written since the last take, forgetting them: the caller syncs them.
    pub fn take_dirty(&mut self) -> Vec<FileRange<D::File>> {
        let mut ranges = Vec::with_capacity(self.dirty.len());
        for (start, (from, to)) in std::mem::take(&mut self.dirty) {
            if let Some(file) = self.files.get(&start) {
                ranges.push(FileRange {
                    file: file.clone(),
                    file_start: start,
                    offset: from,
                    len: to - from,
                });
            }
        }
        ranges
    }

    /// Syncs what was written to the file starting at `start` since its last sync.
    ///
    /// # Errors
    /// The OS error.
    pub fn sync_file(&mut self, start: u64) -> Result<(), FileSetError> {
        let Some((from, to)) = self.dirty.remove(&start) else {
            return Ok(());
        };
        let Some(file) = self.files.get(&start) else {
            return Ok(());
        };
        file.sync_range(from, to - from)
            .map_err(|source| self.io_error(FileOp::Sync, start, source))
    }

    /// Syncs every range written since the last sync.
    ///
    /// # Errors
    /// The OS error of the first sync that fails.
    pub fn sync_dirty(&mut self) -> Result<(), FileSetError> {
        for range in self.take_dirty() {
            range
                .file
                .sync_range(range.offset, range.len)
                .map_err(|source| self.io_error(FileOp::Sync, range.file_start, source))?;
        }
        Ok(())
    }

    /// Zeroes the file starting at `start` from byte `from` of the file to its end: a hole
    /// punched through the file system where it can (durable at once, nothing read), else zeros
    /// written over the non-zero bytes, marked dirty. Returns whether any byte may have changed.
    ///
    /// # Errors
    /// The OS error.
    pub fn zero_from(&mut self, start: u64, from: u64) -> Result<bool, FileSetError> {
        let Some(file) = self.files.get(&start).cloned() else {
            return Ok(false);
        };
        if from >= file.len() {
            return Ok(false);
        }
        let len = file.len();
        match file
            .punch_hole(from, len - from)
            .map_err(|source| self.io_error(FileOp::Write, start, source))?
        {
            Some(true) => {
                // The freed blocks are made durable by the next sync of the file.
                self.mark_dirty(start, from, len);
                return Ok(true);
            }
            Some(false) => return Ok(false),
            None => {}
        }
        let mut buf = vec![0u8; ZERO_CHUNK as usize];
        let mut at = from;
        let mut changed = false;
        while at < file.len() {
            let len = ZERO_CHUNK.min(file.len() - at);
            let chunk = &mut buf[..len as usize];
            file.read_at(at, chunk);
            if chunk.iter().any(|&b| b != 0) {
                chunk.fill(0);
                file.write_at(at, chunk)
                    .map_err(|source| self.io_error(FileOp::Write, start, source))?;
                self.mark_dirty(start, at, at + len);
                changed = true;
            }
            at += len;
        }
        Ok(changed)
    }

    /// Writes zeros over bytes `from..to` of the file starting at `start`, marking them dirty.
    ///
    /// # Errors
    /// The OS error.
    pub fn zero_range(&mut self, start: u64, from: u64, to: u64) -> Result<(), FileSetError> {
        let Some(file) = self.files.get(&start).cloned() else {
            return Ok(());
        };
        let zeros = vec![0u8; ZERO_CHUNK.min(to.saturating_sub(from)) as usize];
        let mut at = from;
        while at < to {
            let len = ZERO_CHUNK.min(to - at);
            file.write_at(at, &zeros[..len as usize])
                .map_err(|source| self.io_error(FileOp::Write, start, source))?;
            at += len;
        }
        self.mark_dirty(start, from, to);
        Ok(())
    }

    /// Removes the file with key `start` (durably), forgetting its dirty range.
    ///
    /// # Errors
    /// The OS error.
    pub fn remove(&mut self, start: u64) -> Result<(), FileSetError> {
        self.files.remove(&start);
        self.dirty.remove(&start);
        let path = self.path(start);
        self.disk
            .remove(&path)
            .map_err(|source| self.io_error(FileOp::Remove, start, source))
    }

    /// Asserts what every set keeps true: files start at multiples of the file size and are
    /// that long, and only open files have dirty ranges, each within its file.
    pub fn check_invariants(&self) {
        for (&start, file) in &self.files {
            assert!(
                !N::POSITIONS || start.is_multiple_of(self.file_bytes),
                "file {start} is aligned"
            );
            assert_eq!(
                file.len(),
                self.file_bytes,
                "file {start} has the set's size"
            );
        }
        for (&start, &(from, to)) in &self.dirty {
            assert!(
                self.files.contains_key(&start),
                "dirty file {start} is open"
            );
            assert!(
                from <= to && to <= self.file_bytes,
                "dirty range {from}..{to} of {start} lies within the file"
            );
        }
    }
}

/// What only a set named by positions can do: find the file of a position, its gaps, and cut at
/// a position.
impl<D: Disk> FileSet<D, Positions> {
    /// The start of the file holding `position`.
    pub fn file_start(&self, position: u64) -> u64 {
        position - position % self.file_bytes
    }

    /// The start of the first file missing between the first and the last, if any (a set that
    /// only grows at its end and shrinks at its ends has none).
    pub fn first_gap(&self) -> Option<u64> {
        let mut expected = None;
        for &start in self.files.keys() {
            if let Some(expected) = expected
                && start != expected
            {
                return Some(expected);
            }
            expected = Some(start + self.file_bytes);
        }
        None
    }

    /// Removes every file that starts after `position`'s file, newest first (a crash in between
    /// never leaves a hole). Returns their starts.
    ///
    /// # Errors
    /// The OS error.
    pub fn remove_after(&mut self, position: u64) -> Result<Vec<u64>, FileSetError> {
        let head = self.file_start(position);
        let later: Vec<u64> = self
            .files
            .range(head + 1..)
            .rev()
            .map(|(s, _)| *s)
            .collect();
        for &start in &later {
            self.remove(start)?;
        }
        Ok(later)
    }

    /// Deletes the prefix: every file whose bytes all lie before `position`, oldest first (a
    /// crash in between never leaves a hole). Returns their starts.
    ///
    /// # Errors
    /// The OS error.
    pub fn remove_before(&mut self, position: u64) -> Result<Vec<u64>, FileSetError> {
        let whole: Vec<u64> = self
            .files
            .keys()
            .copied()
            .take_while(|start| start + self.file_bytes <= position)
            .collect();
        for &start in &whole {
            self.remove(start)?;
        }
        Ok(whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;

    type Set = FileSet<MemDisk>;

    fn dir() -> PathBuf {
        PathBuf::from("/set")
    }

    /// Names are 20-digit starts; a reopened set finds its files in order; a name that is not
    /// a position, or not a multiple of the file size, is refused naming the file.
    #[test]
    fn names_order_and_refusals() {
        assert_eq!(file_name(1024), "00000000000000001024");
        assert_eq!(parse_file_name("00000000000000001024"), Some(1024));
        assert_eq!(parse_file_name("1024"), None);
        assert_eq!(parse_file_name("0000000000000000102x"), None);
        let disk = MemDisk::new();
        let mut set = Set::open(disk.clone(), &dir(), 100).unwrap();
        for start in [200, 0, 100] {
            set.file_for(start).unwrap();
        }
        set.check_invariants();
        let set = Set::open(disk.clone(), &dir(), 100).unwrap();
        assert_eq!(
            set.iter().map(|(s, _)| s).collect::<Vec<_>>(),
            [0, 100, 200]
        );
        assert_eq!((set.first_start(), set.last_start()), (Some(0), Some(200)));
        assert_eq!(set.file_start(250), 200);
        assert_eq!(set.first_gap(), None);
        disk.open_segment(&dir().join("stray.txt"), 1).unwrap();
        let err = Set::open(disk.clone(), &dir(), 100).unwrap_err();
        assert!(err.to_string().contains("stray.txt"), "{err}");
        disk.remove(&dir().join("stray.txt")).unwrap();
        disk.open_segment(&dir().join(file_name(150)), 100).unwrap();
        let err = Set::open(disk, &dir(), 100).unwrap_err();
        assert!(err.to_string().contains("not a multiple"), "{err}");
    }

    /// Dirty ranges grow per file and are taken once; zeroing marks only what it changed; a
    /// synced file is clean.
    #[test]
    fn dirty_ranges_and_zeroing() {
        let mut set = Set::open(MemDisk::new(), &dir(), 100).unwrap();
        let file = set.file_for(0).unwrap();
        file.write_at(10, b"abc").unwrap();
        set.mark_dirty(0, 10, 13);
        set.mark_dirty(0, 40, 50);
        set.check_invariants();
        let taken = set.take_dirty();
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].offset, taken[0].len), (10, 40));
        assert!(set.take_dirty().is_empty());
        assert!(set.zero_from(0, 11).unwrap());
        let mut byte = [0u8; 3];
        file.read_at(10, &mut byte);
        assert_eq!(&byte, b"a\0\0");
        assert!(set.is_dirty(0));
        set.sync_file(0).unwrap();
        assert!(!set.is_dirty(0));
        assert!(!set.zero_from(0, 11).unwrap(), "nothing left to zero");
    }

    /// The tail goes newest first, the prefix oldest first, each only whole files; both survive
    /// a reopen.
    #[test]
    fn removing_the_tail_and_the_prefix() {
        let disk = MemDisk::new();
        let mut set = Set::open(disk.clone(), &dir(), 100).unwrap();
        for start in [0, 100, 200, 300, 400] {
            set.file_for(start).unwrap();
            set.mark_dirty(start, 0, 1);
        }
        assert_eq!(set.remove_after(350).unwrap(), [400]);
        assert_eq!(set.remove_before(250).unwrap(), [0, 100]);
        assert!(
            set.remove_before(250).unwrap().is_empty(),
            "200 still holds 250"
        );
        set.check_invariants();
        let reopened = Set::open(disk, &dir(), 100).unwrap();
        assert_eq!(
            reopened.iter().map(|(s, _)| s).collect::<Vec<_>>(),
            [200, 300]
        );
        assert_eq!(
            set.take_dirty()
                .iter()
                .map(|r| r.file_start)
                .collect::<Vec<_>>(),
            [200, 300]
        );
    }

    /// A naming other than positions: its names only, keys of any value (no alignment), and
    /// files kept in key order.
    #[test]
    fn another_naming_keys_files_by_its_names() {
        struct Letters;
        impl Naming for Letters {
            const WHAT: &'static str = "letter-number";
            const POSITIONS: bool = false;
            fn name(key: u64) -> String {
                format!("k{key}")
            }
            fn parse(name: &str) -> Option<u64> {
                name.strip_prefix('k')?.parse().ok()
            }
        }
        let disk = MemDisk::new();
        let mut set: FileSet<MemDisk, Letters> = FileSet::open(disk.clone(), &dir(), 64).unwrap();
        for key in [17, 3] {
            set.file_for(key).unwrap();
        }
        set.check_invariants();
        let set: FileSet<MemDisk, Letters> = FileSet::open(disk.clone(), &dir(), 64).unwrap();
        assert_eq!(set.iter().map(|(k, _)| k).collect::<Vec<_>>(), [3, 17]);
        assert_eq!(set.path(3), dir().join("k3"));
        disk.open_segment(&dir().join(file_name(0)), 64).unwrap();
        let err = FileSet::<MemDisk, Letters>::open(disk, &dir(), 64).unwrap_err();
        assert!(err.to_string().contains("letter-number"), "{err}");
    }
}
