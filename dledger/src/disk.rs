//! The storage seam: every byte the log writes or reads goes through [`Disk`] and
//! [`SegmentFile`], so the simulation can plug in a disk model that loses unsynced bytes on a
//! crash. Production uses [`MmapDisk`]; tests and the simulation use [`MemDisk`].

use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::io;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use memmap2::MmapOptions;

/// A fixed-size file the log writes into by position.
///
/// ### Correctness obligations
/// - `write_at` returns once the bytes are readable by `read_at`; they are durable only after
///   `sync_range` over them returns `Ok`.
/// - Callers never write and read overlapping ranges at the same time (the log serializes them
///   under its lock), and never address bytes past `len`.
pub trait SegmentFile: Send + Sync + 'static {
    /// The file's size in bytes.
    fn len(&self) -> u64;
    /// Whether the file has zero bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies `bytes` into the file at `offset`.
    ///
    /// # Errors
    /// The OS error (a full disk among them). Bytes of a failed write may be partly there.
    ///
    /// # Panics
    /// If the range passes the end of the file (a caller bug).
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Copies bytes at `offset` into `buf`.
    ///
    /// # Panics
    /// If the range passes the end of the file (a caller bug).
    fn read_at(&self, offset: u64, buf: &mut [u8]);
    /// Makes the bytes in `offset..offset + len` durable.
    ///
    /// # Errors
    /// The OS error. A failed sync is never retried: the caller stops the replica.
    fn sync_range(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Makes `offset..offset + len` read as zeros by freeing its blocks (a hole), without
    /// reading it: the tail of a 1 GiB segment is cut at every start. Durable once `sync_range`
    /// covers it. `None` where the file cannot do that (the caller then writes zeros itself);
    /// else whether any byte may have changed (`false`: the range held no data).
    ///
    /// # Errors
    /// The OS error.
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<Option<bool>> {
        let _ = (offset, len);
        Ok(None)
    }
    /// Lets the OS drop the whole pages of `offset..offset + len` from memory (this process's
    /// mapping and the page cache); later reads fetch them from disk again. For synced bytes
    /// that are never written again: a hint, nothing else changes. Does nothing by default.
    ///
    /// # Errors
    /// The OS error.
    fn drop_cache(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
}

/// The file system as the log sees it.
///
/// ### Correctness obligations
/// - `open_segment` returns a file of exactly the asked size, zero-filled where never written,
///   and its directory entry is durable before it returns.
/// - `write_meta` is atomic and durable: after a crash the file holds either the old or the new
///   content, never a mix.
pub trait Disk: Clone + Send + Sync + 'static {
    /// The file type of this disk.
    type File: SegmentFile;

    /// Opens `path`, creating it with `bytes` zero bytes if absent.
    ///
    /// # Errors
    /// The OS error, or `InvalidData` if an existing file has another size.
    fn open_segment(&self, path: &Path, bytes: u64) -> io::Result<Arc<Self::File>>;
    /// File names in `dir` (creating `dir` if absent), sorted.
    ///
    /// # Errors
    /// The OS error.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Removes a file; removing an absent file is not an error. Durable on return.
    ///
    /// # Errors
    /// The OS error.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Reads a whole small file, or `None` if it does not exist.
    ///
    /// # Errors
    /// The OS error.
    fn read_meta(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;
    /// Replaces a small file atomically and durably (write a temporary, sync, rename, sync dir).
    ///
    /// # Errors
    /// The OS error.
    fn write_meta(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// How much room the file system holding `dir` has, `None` where that is unknown (a disk
    /// model whose limit is in its file creations). The log stops appending while this shows
    /// less than its reserve ([`crate::limits::DISK_RESERVE_BYTES_MAX`]).
    fn space(&self, dir: &Path) -> Option<Space> {
        let _ = dir;
        None
    }
    /// Runs blocking disk work (syncs, file creation) off the async worker threads. The
    /// production disk uses a blocking thread; a simulated disk runs it inline so that runs stay
    /// deterministic.
    fn run_blocking<T, F>(&self, work: F) -> impl Future<Output = T> + Send
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static;
}

/// The room of a file system, read with `statvfs(3)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Its size.
    pub total_bytes: u64,
    /// Bytes in use.
    pub used_bytes: u64,
    /// Bytes this process may still take (`f_bavail`: without the blocks reserved for root).
    pub available_bytes: u64,
}

impl Space {
    /// Used / (used + available), as RocketMQ's `getDiskPartitionSpaceUsedPercent` computes it.
    pub fn used_ratio(&self) -> Option<f64> {
        let room = self.used_bytes + self.available_bytes;
        (room > 0).then(|| self.used_bytes as f64 / room as f64)
    }
}

/// The room of the file system holding `path`, `None` if `statvfs` fails (no such path).
pub fn partition_space(path: &Path) -> Option<Space> {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string and `stat` is writable memory of the right
    // type; statvfs fills it in full when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialized `stat`.
    let stat = unsafe { stat.assume_init() };
    let block = stat.f_frsize;
    let total_bytes = stat.f_blocks * block;
    let free = stat.f_bfree * block;
    Some(Space {
        total_bytes,
        used_bytes: total_bytes.saturating_sub(free),
        available_bytes: stat.f_bavail * block,
    })
}

/// Production disk: segment files mapped with `mmap` for reads; appends go through `pwrite` and
/// syncs through `fdatasync`.
///
/// Writing through the mapping was measured and rejected: every first touch of a page faults,
/// and every sync write-protects the dirtied pages again, which costs a TLB shootdown on every
/// other core (26% of the CPU of a 3-replica group under load, and 40% more in read-ahead
/// zero-filling of the sparse file). `pwrite` into the same page cache has neither cost, and
/// reads through the mapping see those bytes at once (Linux has one page cache for both).
#[derive(Debug, Clone, Default)]
pub struct MmapDisk;

/// A segment file: a read-only mapping for reads, the file itself for writes and syncs.
///
/// The mapping stays valid while the file exists at its full size. No other process may truncate
/// the file while it is mapped: reading a page past the end of a truncated file raises `SIGBUS`.
pub struct MmapFile {
    map: memmap2::Mmap,
    len: u64,
    file: fs::File,
}

impl SegmentFile for MmapFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let end = offset
            .checked_add(bytes.len() as u64)
            .expect("write range overflows u64");
        assert!(
            end <= self.len,
            "write {offset}..{end} past the end of a {} byte file",
            self.len
        );
        self.file.write_all_at(bytes, offset)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) {
        let end = offset
            .checked_add(buf.len() as u64)
            .expect("read range overflows u64");
        assert!(
            end <= self.len,
            "read {offset}..{end} past the end of a {} byte file",
            self.len
        );
        buf.copy_from_slice(&self.map[offset as usize..end as usize]);
    }

    fn sync_range(&self, _offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        // fdatasync covers every dirty page of the file; the log syncs one range per file.
        self.file.sync_data()
    }

    fn drop_cache(&self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: sysconf reads a constant of the system.
        let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let start = offset.div_ceil(page) * page;
        let end = (offset.saturating_add(len) / page * page).min(self.len);
        if end <= start {
            return Ok(());
        }
        // SAFETY: MADV_DONTNEED on this shared, read-only file mapping only drops the process's
        // page table entries for the range; the next read maps the file's bytes again, and they
        // are the same bytes (the range is synced and never written again), so no reference into
        // the mapping sees a change.
        unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                start as usize,
                (end - start) as usize,
            )?;
        }
        let (Ok(at), Ok(bytes)) = (
            libc::off_t::try_from(start),
            libc::off_t::try_from(end - start),
        ) else {
            return Ok(());
        };
        // SAFETY: posix_fadvise on a file descriptor we own; it touches no memory of ours.
        let rc = unsafe {
            libc::posix_fadvise(self.file.as_raw_fd(), at, bytes, libc::POSIX_FADV_DONTNEED)
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(())
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<Option<bool>> {
        use std::os::fd::AsRawFd as _;
        let end = offset.checked_add(len).expect("hole range overflows u64");
        assert!(
            end <= self.len,
            "hole {offset}..{end} past the end of a {} byte file",
            self.len
        );
        let (Ok(at), Ok(end)) = (libc::off_t::try_from(offset), libc::off_t::try_from(end)) else {
            return Ok(None);
        };
        let fd = self.file.as_raw_fd();
        // Where the range's first data is: a range that is all hole needs nothing (and no
        // metadata change to sync, which matters for a store of many queues).
        // SAFETY: lseek on a file descriptor we own.
        let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if data < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENXIO) => Ok(Some(false)),
                Some(libc::EINVAL | libc::EOPNOTSUPP) => Ok(None),
                _ => Err(err),
            };
        }
        if data >= end {
            return Ok(Some(false));
        }
        // SAFETY: fallocate on a file descriptor we own; it reads and writes no memory of ours.
        let rc = unsafe {
            libc::fallocate(
                fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                data,
                end - data,
            )
        };
        if rc != 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EOPNOTSUPP | libc::ENOSYS) => Ok(None),
                _ => Err(err),
            };
        }
        Ok(Some(true))
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

impl Disk for MmapDisk {
    type File = MmapFile;

    fn space(&self, dir: &Path) -> Option<Space> {
        partition_space(dir)
    }

    fn open_segment(&self, path: &Path, bytes: u64) -> io::Result<Arc<MmapFile>> {
        let existed = path.exists();
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        if !existed || len == 0 {
            file.set_len(bytes)?;
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
        } else if len < bytes {
            // A file cut short (by a crash while it grew, or by hand) is a torn tail: give it its
            // size back, zero-filled, and let recovery judge what is left.
            tracing::warn!(path = %path.display(), len, bytes, "segment file shorter than its size; extending");
            file.set_len(bytes)?;
            file.sync_all()?;
        } else if len > bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("file has {len} bytes, more than the configured {bytes}"),
            ));
        }
        // SAFETY: the file stays open and at `bytes` bytes for the mapping's life (we never
        // shrink a mapped file; other processes must not either, see `MmapFile`).
        let map = unsafe { MmapOptions::new().len(bytes as usize).map(&file)? };
        Ok(Arc::new(MmapFile {
            map,
            len: bytes,
            file,
        }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        fs::create_dir_all(dir)?;
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err),
        }
        match path.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }

    fn read_meta(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn write_meta(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let tmp = path.with_extension("tmp");
        {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    }

    async fn run_blocking<T, F>(&self, work: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        match tokio::task::spawn_blocking(work).await {
            Ok(value) => value,
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }
}

/// An in-memory disk that keeps what was synced apart from what was only written, so a test can
/// crash it and see exactly what a power loss would leave.
///
/// A crash starts a new epoch: handles from before it (held by the "dead" process) fail every
/// operation, as a machine that lost power does no more I/O.
#[derive(Debug, Clone, Default)]
pub struct MemDisk {
    inner: Arc<Mutex<MemDiskState>>,
    epoch: u64,
    faults: Arc<Mutex<Option<FaultState>>>,
}

/// Odds of the faults a [`MemDisk`] injects, all drawn from one seeded RNG.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskFaults {
    /// Seed of the fault RNG.
    pub seed: u64,
    /// Chance that one sync fails (the replica then stops, as on a real fsync error).
    pub sync_fail: f64,
    /// At a crash, the chance that each unsynced 512-byte sector reached the disk anyway:
    /// writes tear at sector boundaries.
    pub sector_survives_crash: f64,
    /// Bytes of segment files the disk holds; creating a file past it fails with `StorageFull`.
    pub capacity_bytes: Option<u64>,
    /// Most (virtual) time a sync or other blocking disk work takes; each takes a seeded random
    /// share of it, so a crash can land between a write and its sync.
    pub latency_max: std::time::Duration,
    /// Chance that one read returns a flipped bit (the bytes on disk stay intact).
    pub read_corrupt: f64,
}

#[derive(Debug)]
struct FaultState {
    odds: DiskFaults,
    rng: rand::rngs::StdRng,
    syncs_failed: u64,
    sectors_torn: u64,
    full_refusals: u64,
    reads_corrupted: u64,
    /// Faults are off while set (a checker reading the disk from outside).
    paused: bool,
}

/// What a [`MemDisk`]'s fault injection did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Syncs that failed.
    pub syncs_failed: u64,
    /// Unsynced sectors that survived a crash (torn writes).
    pub sectors_torn: u64,
    /// File creations refused for lack of space.
    pub full_refusals: u64,
    /// Reads that returned a flipped bit.
    pub reads_corrupted: u64,
}

#[derive(Debug, Default)]
struct MemDiskState {
    files: BTreeMap<PathBuf, Arc<MemFile>>,
    metas: BTreeMap<PathBuf, Vec<u8>>,
    epoch: u64,
}

/// A file of [`MemDisk`].
#[derive(Debug)]
pub struct MemFile {
    len: u64,
    bytes: Mutex<MemFileBytes>,
    faults: Arc<Mutex<Option<FaultState>>>,
}

#[derive(Debug)]
struct MemFileBytes {
    current: Vec<u8>,
    durable: Vec<u8>,
}

impl SegmentFile for MemFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut file = self.bytes.lock().expect("mem file lock poisoned");
        let start = offset as usize;
        file.current[start..start + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) {
        let file = self.bytes.lock().expect("mem file lock poisoned");
        let start = offset as usize;
        buf.copy_from_slice(&file.current[start..start + buf.len()]);
        drop(file);
        if let Some(faults) = self.faults.lock().expect("fault lock poisoned").as_mut()
            && !faults.paused
            && !buf.is_empty()
        {
            use rand::Rng;
            if faults.rng.random_bool(faults.odds.read_corrupt) {
                let bit = faults.rng.random_range(0..buf.len() * 8);
                buf[bit / 8] ^= 1 << (bit % 8);
                faults.reads_corrupted += 1;
            }
        }
    }

    fn sync_range(&self, offset: u64, len: u64) -> io::Result<()> {
        if let Some(faults) = self.faults.lock().expect("fault lock poisoned").as_mut() {
            use rand::Rng;
            if !faults.paused && faults.rng.random_bool(faults.odds.sync_fail) {
                faults.syncs_failed += 1;
                return Err(io::Error::other("injected sync failure"));
            }
        }
        let mut file = self.bytes.lock().expect("mem file lock poisoned");
        let MemFileBytes { current, durable } = &mut *file;
        let range = offset as usize..(offset + len) as usize;
        durable[range.clone()].copy_from_slice(&current[range]);
        Ok(())
    }
}

impl MemDisk {
    /// A new empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new empty disk that injects faults with the given odds.
    pub fn with_faults(odds: DiskFaults) -> Self {
        use rand::SeedableRng;
        let state = FaultState {
            odds,
            rng: rand::rngs::StdRng::seed_from_u64(odds.seed),
            syncs_failed: 0,
            sectors_torn: 0,
            full_refusals: 0,
            reads_corrupted: 0,
            paused: false,
        };
        MemDisk {
            faults: Arc::new(Mutex::new(Some(state))),
            ..Self::default()
        }
    }

    /// Stops injecting faults (the liveness phase of a simulation).
    pub fn heal(&self) {
        if let Some(faults) = self.faults.lock().expect("fault lock poisoned").as_mut() {
            faults.odds.sync_fail = 0.0;
            faults.odds.sector_survives_crash = 0.0;
            faults.odds.capacity_bytes = None;
            faults.odds.read_corrupt = 0.0;
        }
    }

    /// Turns fault injection off (`true`) or back on, without changing the odds: a checker
    /// reading replicas' logs from outside must see what is on disk.
    pub fn pause_faults(&self, paused: bool) {
        if let Some(faults) = self.faults.lock().expect("fault lock poisoned").as_mut() {
            faults.paused = paused;
        }
    }

    /// What the fault injection did so far.
    pub fn fault_counts(&self) -> FaultCounts {
        match self.faults.lock().expect("fault lock poisoned").as_ref() {
            Some(f) => FaultCounts {
                syncs_failed: f.syncs_failed,
                sectors_torn: f.sectors_torn,
                full_refusals: f.full_refusals,
                reads_corrupted: f.reads_corrupted,
            },
            None => FaultCounts::default(),
        }
    }

    /// Simulates a power loss: every byte not synced is gone. Returns the handle for the machine
    /// that starts again; this handle and its clones (the dead process's) fail from now on.
    #[must_use = "the old handle is dead; use the returned one"]
    pub fn crash(&self) -> MemDisk {
        let mut state = self.inner.lock().expect("mem disk lock poisoned");
        state.epoch += 1;
        let files = std::mem::take(&mut state.files);
        let mut faults = self.faults.lock().expect("fault lock poisoned");
        for (path, file) in files {
            let bytes = file.bytes.lock().expect("mem file lock poisoned");
            let mut survived = bytes.durable.clone();
            if let Some(faults) = faults.as_mut() {
                tear_sectors(faults, &bytes.current, &mut survived);
            }
            let fresh = MemFile {
                len: file.len,
                bytes: Mutex::new(MemFileBytes {
                    current: survived.clone(),
                    durable: survived,
                }),
                faults: self.faults.clone(),
            };
            state.files.insert(path, Arc::new(fresh));
        }
        MemDisk {
            inner: self.inner.clone(),
            epoch: state.epoch,
            faults: self.faults.clone(),
        }
    }

    fn state(&self) -> io::Result<std::sync::MutexGuard<'_, MemDiskState>> {
        let state = self.inner.lock().expect("mem disk lock poisoned");
        if state.epoch != self.epoch {
            return Err(io::Error::other("disk handle from before a crash"));
        }
        Ok(state)
    }

    /// Applies `edit` to the durable and current bytes of a file, as a test's stand-in for
    /// corrupting or truncating a file on disk. Returns `false` if there is no such file.
    pub fn edit(&self, path: &Path, edit: impl Fn(&mut Vec<u8>)) -> bool {
        let state = self.inner.lock().expect("mem disk lock poisoned");
        let Some(file) = state.files.get(path) else {
            return false;
        };
        let mut bytes = file.bytes.lock().expect("mem file lock poisoned");
        edit(&mut bytes.current);
        edit(&mut bytes.durable);
        true
    }

    /// Paths of every segment file, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        let state = self.inner.lock().expect("mem disk lock poisoned");
        state.files.keys().cloned().collect()
    }
}

/// At a crash, lets each unsynced 512-byte sector reach the disk with the configured odds.
fn tear_sectors(faults: &mut FaultState, current: &[u8], durable: &mut [u8]) {
    use rand::Rng;
    const SECTOR: usize = 512;
    if faults.odds.sector_survives_crash <= 0.0 {
        return;
    }
    for (at, sector) in current.chunks(SECTOR).enumerate() {
        let range = at * SECTOR..at * SECTOR + sector.len();
        if durable[range.clone()] != *sector
            && faults.rng.random_bool(faults.odds.sector_survives_crash)
        {
            durable[range].copy_from_slice(sector);
            faults.sectors_torn += 1;
        }
    }
}

impl Disk for MemDisk {
    type File = MemFile;

    fn open_segment(&self, path: &Path, bytes: u64) -> io::Result<Arc<MemFile>> {
        let mut state = self.state()?;
        if let Some(file) = state.files.get(path) {
            if file.len != bytes {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("file has {} bytes, expected {bytes}", file.len),
                ));
            }
            return Ok(file.clone());
        }
        if let Some(faults) = self.faults.lock().expect("fault lock poisoned").as_mut()
            && let Some(capacity) = faults.odds.capacity_bytes
        {
            let used: u64 = state.files.values().map(|f| f.len).sum();
            if used + bytes > capacity {
                faults.full_refusals += 1;
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "injected disk full",
                ));
            }
        }
        let file = Arc::new(MemFile {
            len: bytes,
            bytes: Mutex::new(MemFileBytes {
                current: vec![0; bytes as usize],
                durable: vec![0; bytes as usize],
            }),
            faults: self.faults.clone(),
        });
        state.files.insert(path.to_path_buf(), file.clone());
        Ok(file)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.state()?;
        let names = state
            .files
            .keys()
            .chain(state.metas.keys())
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| {
                path.file_name()
                    .map(|name| name.to_string_lossy().into_owned())
            });
        let mut names: Vec<String> = names.collect();
        names.sort();
        Ok(names)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state()?;
        state.files.remove(path);
        state.metas.remove(path);
        Ok(())
    }

    fn read_meta(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let state = self.state()?;
        Ok(state.metas.get(path).cloned())
    }

    fn write_meta(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.state()?;
        state.metas.insert(path.to_path_buf(), bytes.to_vec());
        Ok(())
    }

    async fn run_blocking<T, F>(&self, work: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let latency = self
            .faults
            .lock()
            .expect("fault lock poisoned")
            .as_mut()
            .map(|faults| {
                use rand::Rng;
                let max = faults.odds.latency_max.as_micros() as u64;
                std::time::Duration::from_micros(if max == 0 {
                    0
                } else {
                    faults.rng.random_range(0..=max)
                })
            });
        if let Some(latency) = latency.filter(|l| !l.is_zero()) {
            tokio::time::sleep(latency).await;
        }
        work()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hole punched in a real file reads as zeros and leaves what is before it; a range that
    /// holds no data reports nothing changed; a file set cutting a tail through it agrees.
    #[test]
    fn a_punched_hole_reads_as_zeros_and_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("00000000000000000000");
        let bytes = 1 << 20;
        let file = MmapDisk.open_segment(&path, bytes).expect("open");
        file.write_at(0, &[7; 10_000]).expect("write");
        file.write_at(600_000, &[9; 5_000]).expect("write");
        assert_eq!(
            file.punch_hole(4_321, bytes - 4_321).expect("punch"),
            Some(true)
        );
        let mut buf = vec![1u8; bytes as usize];
        file.read_at(0, &mut buf);
        assert!(buf[..4_321].iter().all(|&b| b == 7));
        assert!(buf[4_321..].iter().all(|&b| b == 0));
        // The block holding the cut stays allocated (its head is data); past it nothing is.
        assert_eq!(
            file.punch_hole(8_192, bytes - 8_192).expect("punch"),
            Some(false),
            "nothing left there"
        );
        file.sync_range(0, bytes).expect("sync");
        drop(file);
        let again = MmapDisk.open_segment(&path, bytes).expect("reopen");
        let mut head = [0u8; 4_322];
        again.read_at(0, &mut head);
        assert!(head[..4_321].iter().all(|&b| b == 7) && head[4_321] == 0);
    }

    fn faults(sync_fail: f64, survive: f64, capacity: Option<u64>) -> DiskFaults {
        DiskFaults {
            seed: 7,
            sync_fail,
            sector_survives_crash: survive,
            capacity_bytes: capacity,
            latency_max: std::time::Duration::ZERO,
            read_corrupt: 0.0,
        }
    }

    /// Unsynced bytes vanish at a crash; synced ones stay; the old handle is dead afterwards.
    #[test]
    fn crash_keeps_only_synced_bytes() {
        let disk = MemDisk::new();
        let file = disk.open_segment(Path::new("/d/a"), 4096).unwrap();
        file.write_at(0, b"synced").unwrap();
        file.sync_range(0, 6).unwrap();
        file.write_at(1024, b"lost").unwrap();
        let after = disk.crash();
        let file = after.open_segment(Path::new("/d/a"), 4096).unwrap();
        let mut buf = [0u8; 6];
        file.read_at(0, &mut buf);
        assert_eq!(&buf, b"synced");
        let mut buf = [0u8; 4];
        file.read_at(1024, &mut buf);
        assert_eq!(buf, [0; 4]);
        assert!(
            disk.read_meta(Path::new("/d/m")).is_err(),
            "the pre-crash handle is dead"
        );
    }

    /// With certain survival every unsynced sector reaches the disk; the counts say so.
    #[test]
    fn torn_writes_persist_unsynced_sectors() {
        let disk = MemDisk::with_faults(faults(0.0, 1.0, None));
        let file = disk.open_segment(Path::new("/d/a"), 4096).unwrap();
        file.write_at(0, &[1u8; 1024]).unwrap();
        let after = disk.crash();
        let file = after.open_segment(Path::new("/d/a"), 4096).unwrap();
        let mut buf = [0u8; 1024];
        file.read_at(0, &mut buf);
        assert_eq!(buf, [1u8; 1024]);
        assert_eq!(after.fault_counts().sectors_torn, 2);
    }

    /// Injected sync failures and a full disk surface as errors, and `heal` ends them.
    #[test]
    fn sync_failures_and_full_disk_are_errors_until_healed() {
        let disk = MemDisk::with_faults(faults(1.0, 0.0, Some(4096)));
        let file = disk.open_segment(Path::new("/d/a"), 4096).unwrap();
        assert!(file.sync_range(0, 1).is_err());
        let full = disk.open_segment(Path::new("/d/b"), 4096).unwrap_err();
        assert_eq!(full.kind(), io::ErrorKind::StorageFull);
        assert_eq!(
            disk.fault_counts(),
            FaultCounts {
                syncs_failed: 1,
                sectors_torn: 0,
                full_refusals: 1,
                reads_corrupted: 0,
            }
        );
        disk.heal();
        assert!(file.sync_range(0, 1).is_ok());
        assert!(disk.open_segment(Path::new("/d/b"), 4096).is_ok());
    }
}
