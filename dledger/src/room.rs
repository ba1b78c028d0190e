//! Disk space: a replica whose disk fills stops taking part and goes on by itself when space
//! returns.
//!
//! openraft awaits the log's `append` inside its core task, so an append that waits holds the
//! whole replica still: a leader sends no heartbeats (the others elect a new one), a follower
//! answers no appends and no votes (the others go on as a quorum without it), and nothing is
//! acknowledged that is not on disk. The append waits in two cases:
//! - before it writes, while the disk has less than the reserve available
//!   ([`crate::limits::DISK_RESERVE_BYTES_MAX`]), so the store applying after the log never
//!   meets a full disk itself;
//! - after a write failed with a full disk (`ENOSPC`, `EDQUOT`, or a disk model's limit): the
//!   failed append left the log as it was ([`crate::CommitLog::append`]), so it is tried again.
//!
//! Once the disk has room again the append goes through and the core carries on: a follower
//! catches up from the leader (by snapshot if the leader purged what it lacks); a deposed
//! leader learns the new term and its unacknowledged tail is cut as Raft does.

use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::disk::Disk;
use crate::limits::{
    DISK_RESERVE_BYTES_MAX, DISK_RESERVE_DIVISOR, SPACE_READ_INTERVAL_MS, SPACE_RETRY_INTERVAL_MS,
};

/// The last reading of the disk's room.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    /// Bytes the log may still append before it must read again: what the reading left above
    /// the reserve, less what was appended since.
    budget: u64,
}

/// The log's view of its disk's room, and whether it is waiting for more.
pub(crate) struct Room {
    dir: PathBuf,
    reading: Mutex<Option<Reading>>,
    waiting: AtomicBool,
    /// Times this replica began waiting for space.
    waits: AtomicU64,
    abandoned: AtomicBool,
    abandon: Notify,
    /// An append failed on a full disk and stopped the replica instead of waiting (only the
    /// simulation's `fail_on_full_disk` mutant does that).
    stopped: AtomicBool,
}

/// Whether an I/O error means the disk is full.
pub(crate) fn is_disk_full(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().expect("a holder of this lock panicked")
}

impl Room {
    /// The room of the file system holding `dir`.
    pub(crate) fn new(dir: PathBuf) -> Self {
        Room {
            dir,
            reading: Mutex::new(None),
            waiting: AtomicBool::new(false),
            waits: AtomicU64::new(0),
            abandoned: AtomicBool::new(false),
            abandon: Notify::new(),
            stopped: AtomicBool::new(false),
        }
    }

    /// Whether `bytes` more may be appended now, reading the disk when the last reading is
    /// stale or used up. A disk that cannot tell its room always has room.
    fn has_room<D: Disk>(&self, disk: &D, bytes: u64) -> bool {
        let mut reading = lock(&self.reading);
        let now = Instant::now();
        if let Some(r) = reading.as_mut()
            && now.duration_since(r.at) < Duration::from_millis(SPACE_READ_INTERVAL_MS)
            && r.budget >= bytes
        {
            r.budget -= bytes;
            return true;
        }
        let Some(space) = disk.space(&self.dir) else {
            *reading = Some(Reading {
                at: now,
                budget: u64::MAX,
            });
            return true;
        };
        let reserve = DISK_RESERVE_BYTES_MAX.min(space.total_bytes / DISK_RESERVE_DIVISOR);
        let budget = space.available_bytes.saturating_sub(reserve);
        let room = budget >= bytes;
        *reading = Some(Reading {
            at: now,
            budget: if room { budget - bytes } else { 0 },
        });
        room
    }

    /// Returns once `bytes` may be appended: at once when the disk has room, else after
    /// waiting for it (the replica meanwhile takes no part). `after_full`: a write just failed
    /// for want of space, so wait at least one retry interval whatever the disk reads.
    ///
    /// # Errors
    /// The replica is shutting down ([`Room::abandon`]).
    pub(crate) async fn wait_for<D: Disk>(
        &self,
        disk: &D,
        bytes: u64,
        after_full: bool,
    ) -> io::Result<()> {
        if !after_full && self.has_room(disk, bytes) {
            return Ok(());
        }
        if !self.waiting.swap(true, Ordering::AcqRel) {
            self.waits.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                dir = %self.dir.display(),
                after_full,
                "the log's disk is full: this replica stops taking part until space returns"
            );
        }
        let mut first = after_full;
        loop {
            if !first && self.has_room(disk, bytes) {
                break;
            }
            first = false;
            let abandoned = self.abandon.notified();
            if self.abandoned.load(Ordering::Acquire) {
                self.waiting.store(false, Ordering::Release);
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "stopped while waiting for disk space",
                ));
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(SPACE_RETRY_INTERVAL_MS)) => {}
                () = abandoned => {}
            }
            // The next reading must come from the disk.
            *lock(&self.reading) = None;
        }
        self.waiting.store(false, Ordering::Release);
        tracing::warn!(dir = %self.dir.display(), "the log's disk has room again: this replica goes on");
        Ok(())
    }

    /// Ends every wait with an error and refuses new ones: the replica is shutting down.
    pub(crate) fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        self.abandon.notify_waiters();
    }

    /// Whether an append is waiting for space now.
    pub(crate) fn waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire)
    }

    /// Times this replica began waiting for space since it started.
    pub(crate) fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Records that a full disk stopped the replica.
    pub(crate) fn stopped_on_full_disk(&self) {
        if !self.abandoned.load(Ordering::Acquire) {
            self.stopped.store(true, Ordering::Release);
        }
    }

    /// Whether a full disk stopped the replica instead of holding it until space returned.
    pub(crate) fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{MemDisk, Space};
    use std::path::Path;
    use std::sync::Arc;

    /// A disk whose room a test sets.
    #[derive(Clone)]
    struct Sized {
        inner: MemDisk,
        available: Arc<AtomicU64>,
    }

    impl Disk for Sized {
        type File = <MemDisk as Disk>::File;
        fn open_segment(&self, path: &Path, bytes: u64) -> io::Result<Arc<Self::File>> {
            self.inner.open_segment(path, bytes)
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
        fn space(&self, _dir: &Path) -> Option<Space> {
            let available = self.available.load(Ordering::Relaxed);
            Some(Space {
                total_bytes: 1 << 30,
                used_bytes: (1 << 30) - available,
                available_bytes: available,
            })
        }
        fn run_blocking<T, F>(&self, work: F) -> impl std::future::Future<Output = T> + Send
        where
            T: Send + 'static,
            F: FnOnce() -> T + Send + 'static,
        {
            self.inner.run_blocking(work)
        }
    }

    /// 1 GiB disk: the reserve is 1 GiB / 20 = 51.2 MiB (under the 64 MiB bound).
    const RESERVE: u64 = (1 << 30) / DISK_RESERVE_DIVISOR;

    /// Appends go through while the disk has more than the reserve, count against the last
    /// reading between readings, and wait once the reserve is reached until space returns; a
    /// waiting append is ended by `abandon`.
    #[tokio::test(start_paused = true)]
    async fn appends_wait_at_the_reserve_until_space_returns() {
        let available = Arc::new(AtomicU64::new(RESERVE + 10_000));
        let disk = Sized {
            inner: MemDisk::default(),
            available: available.clone(),
        };
        let room = Arc::new(Room::new(PathBuf::from("/log")));
        room.wait_for(&disk, 6_000, false).await.expect("room");
        // The reading left 4,000 bytes of budget: 5,000 more reads the disk again, which still
        // says 10,000 (nobody wrote), so it goes through too.
        assert!(room.has_room(&disk, 3_000));
        available.store(RESERVE + 1_000, Ordering::Relaxed);
        assert!(!room.has_room(&disk, 5_000), "past the budget: read again");
        assert_eq!(room.waits(), 0);

        let waiter = {
            let (room, disk) = (room.clone(), disk.clone());
            tokio::spawn(async move { room.wait_for(&disk, 5_000, false).await })
        };
        testkit::wait::until("the append to wait", Duration::from_secs(5), || {
            room.waiting()
        })
        .await;
        assert_eq!(room.waits(), 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!waiter.is_finished(), "no room yet");
        available.store(RESERVE + 100_000, Ordering::Relaxed);
        waiter.await.expect("join").expect("room returned");
        assert!(!room.waiting());

        // After a failed write it waits at least one retry interval even if the disk reads fine.
        let started = Instant::now();
        room.wait_for(&disk, 1, true).await.expect("room");
        assert!(started.elapsed() >= Duration::from_millis(SPACE_RETRY_INTERVAL_MS));
        assert_eq!(room.waits(), 2);

        // A full disk is seen once the last reading is stale.
        available.store(0, Ordering::Relaxed);
        assert!(room.has_room(&disk, 1), "the last reading still stands");
        tokio::time::sleep(Duration::from_millis(SPACE_READ_INTERVAL_MS)).await;
        let waiter = {
            let (room, disk) = (room.clone(), disk.clone());
            tokio::spawn(async move { room.wait_for(&disk, 1, false).await })
        };
        testkit::wait::until("the append to wait", Duration::from_secs(5), || {
            room.waiting()
        })
        .await;
        room.abandon();
        let err = waiter.await.expect("join").expect_err("abandoned");
        assert!(is_disk_full(&err), "{err}");
        assert!(!room.waiting());
    }

    /// A disk that cannot tell its room never holds an append.
    #[tokio::test]
    async fn an_unknown_room_never_waits() {
        let room = Room::new(PathBuf::from("/log"));
        assert!(room.has_room(&MemDisk::default(), u64::MAX / 2));
        room.wait_for(&MemDisk::default(), 1 << 40, false)
            .await
            .expect("room");
        assert_eq!(room.waits(), 0);
    }
}
