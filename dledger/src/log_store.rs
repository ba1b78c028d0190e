//! openraft's `RaftLogStorage` over the [`CommitLog`], with group commit.
//!
//! `append` copies entries into the mapped segments and returns. Under `SYNC_FLUSH` the flusher
//! task then makes one sync cover every append that arrived since the last one, and only then
//! fires openraft's `IOFlushed` callbacks, in order: a replica reports an entry as appended (and
//! so counts toward the quorum) only once it is on disk. Under `ASYNC_FLUSH` the callbacks fire
//! at once and the flusher syncs every interval, DLedger's trade-off.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{EntryPayload, OptionalSend};
use tokio::sync::Notify;

use crate::commit_log::{CommitLog, CommitLogConfig, NewEntry, RecoveryReport, StoredEntry};
use crate::config::FlushPolicy;
use crate::disk::{Disk, SegmentFile};
use crate::error::{StorageError, Subject, Verb};
use crate::limits::{
    ENTRY_HEADER_BYTES, FLUSH_QUEUE_MAX, PAGE_CACHE_DROP_STEP_BYTES, PAGE_CACHE_KEEP_BYTES,
    REPLICATION_BATCH_BYTES_MAX, REPLICATION_BATCH_ENTRIES_MAX,
};
use crate::meta;
use crate::raft_types::{OrEntry, OrLogId, OrVote, Payload, TypeConfig, from_log_id, to_log_id};
use crate::record::{EntryKind, IndexUnit};
use crate::room::Room;
use crate::types::LogId;

/// How often the committed log id is persisted. It only saves re-applying work after a restart,
/// so a lag is harmless; persisting it on every commit would cost a sync each time.
const COMMITTED_PERSIST_INTERVAL: Duration = Duration::from_millis(100);

/// Deliberate bugs the simulation switches on to show its checker catches them; compiled only
/// with the `mutants` feature.
#[cfg(feature = "mutants")]
#[derive(Default)]
pub struct Mutants {
    /// Fire `IOFlushed` before the sync.
    pub ack_before_sync: AtomicBool,
    /// Do not persist the vote.
    pub forget_vote: AtomicBool,
    /// Hand appended entries to this function (the state machine) before they commit.
    pub apply_before_commit: Mutex<Option<EarlyApply>>,
    /// Fail the append on a full disk instead of waiting for space.
    pub fail_on_full_disk: AtomicBool,
}

/// The state machine's apply, called by the `apply_before_commit` mutant.
#[cfg(feature = "mutants")]
pub type EarlyApply = Box<dyn Fn(&crate::types::CommittedEntry) + Send + Sync>;

#[cfg(feature = "mutants")]
impl std::fmt::Debug for Mutants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mutants").finish_non_exhaustive()
    }
}

/// State shared by the storage, its readers and the flusher.
pub struct LogShared<D: Disk> {
    pub(crate) log: RwLock<CommitLog<D>>,
    disk: D,
    meta_dir: PathBuf,
    flush: FlushPolicy,
    pending: Mutex<Vec<IOFlushed<TypeConfig>>>,
    wake_flusher: Notify,
    flushed: Notify,
    vote: Mutex<Option<OrVote>>,
    committed: Mutex<Option<OrLogId>>,
    purged: Mutex<Option<OrLogId>>,
    /// Where the log goes on after a purge that leaves it empty: the next position after the
    /// snapshot being installed (persisted in `meta/restart`).
    restart: Mutex<Option<(LogId, u64)>>,
    /// One past the last index known durable.
    flushed_next: AtomicU64,
    stopping: AtomicBool,
    fatal: Mutex<Option<String>>,
    /// The disk's room: appends wait here while it is full.
    pub(crate) room: Room,
    #[cfg(feature = "mutants")]
    pub(crate) mutants: Mutants,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().expect("a holder of this lock panicked")
}

impl<D: Disk> LogShared<D> {
    /// Whether the `forget_vote` mutant is on: never without the `mutants` feature.
    fn forgets_votes(&self) -> bool {
        #[cfg(feature = "mutants")]
        return self.mutants.forget_vote.load(Ordering::Relaxed);
        #[cfg(not(feature = "mutants"))]
        false
    }

    /// Whether the `ack_before_sync` mutant is on: never without the `mutants` feature.
    fn acks_before_sync(&self) -> bool {
        #[cfg(feature = "mutants")]
        return self.mutants.ack_before_sync.load(Ordering::Relaxed);
        #[cfg(not(feature = "mutants"))]
        false
    }

    /// Whether the `fail_on_full_disk` mutant is on: never without the `mutants` feature.
    fn fails_on_full_disk(&self) -> bool {
        #[cfg(feature = "mutants")]
        return self.mutants.fail_on_full_disk.load(Ordering::Relaxed);
        #[cfg(not(feature = "mutants"))]
        false
    }

    /// Switches on the mutants `config` names; `sm` is what `apply_before_commit` applies to.
    #[cfg(feature = "mutants")]
    pub(crate) fn switch_on(
        &self,
        config: &crate::config::Mutants,
        sm: &crate::state_machine::SmAdapter,
    ) {
        self.mutants
            .ack_before_sync
            .store(config.ack_before_sync, Ordering::Relaxed);
        self.mutants
            .forget_vote
            .store(config.forget_vote, Ordering::Relaxed);
        self.mutants
            .fail_on_full_disk
            .store(config.fail_on_full_disk, Ordering::Relaxed);
        if config.apply_before_commit {
            let early = sm.clone();
            *lock(&self.mutants.apply_before_commit) =
                Some(Box::new(move |entry| early.apply_early(entry)));
        }
    }

    /// Opens (recovering) the log in `config.dir`. Blocking.
    ///
    /// # Errors
    /// Storage errors, including a damaged committed region.
    pub fn open(
        disk: D,
        config: CommitLogConfig,
        flush: FlushPolicy,
        hook: Option<Arc<dyn crate::commit_log::AppendHook>>,
    ) -> Result<(Arc<Self>, RecoveryReport), StorageError> {
        let meta_dir = config.dir.join("meta");
        let room = Room::new(config.dir.clone());
        let vote: Option<OrVote> = meta::load(&disk, &meta_dir.join("vote"))?;
        let committed: Option<LogId> = meta::load(&disk, &meta_dir.join("committed"))?;
        let purged: Option<LogId> = meta::load(&disk, &meta_dir.join("purged"))?;
        let restart: Option<(LogId, u64)> = meta::load(&disk, &meta_dir.join("restart"))?;
        let restart_position = restart
            .filter(|(last, _)| Some(*last) == purged)
            .map(|(_, position)| position);
        let (log, report) = CommitLog::open(
            disk.clone(),
            config,
            committed.map(|c| c.index),
            purged,
            restart_position,
            hook,
        )?;
        tracing::info!(
            first_index = log.first_index(),
            next_index = log.next_index(),
            write_position = log.write_position(),
            indexed = report.indexed,
            rebuilt = report.rebuilt,
            cut = ?report.cut,
            "CommitLog recovered"
        );
        let flushed_next = log.next_index();
        Ok((
            Arc::new(LogShared {
                log: RwLock::new(log),
                disk,
                meta_dir,
                flush,
                pending: Mutex::new(Vec::new()),
                wake_flusher: Notify::new(),
                flushed: Notify::new(),
                vote: Mutex::new(vote),
                committed: Mutex::new(committed.map(from_log_id)),
                purged: Mutex::new(purged.map(from_log_id)),
                restart: Mutex::new(restart),
                flushed_next: AtomicU64::new(flushed_next),
                stopping: AtomicBool::new(false),
                fatal: Mutex::new(None),
                room,
                #[cfg(feature = "mutants")]
                mutants: Mutants::default(),
            }),
            report,
        ))
    }

    pub(crate) fn read_log(&self) -> std::sync::RwLockReadGuard<'_, CommitLog<D>> {
        self.log.read().expect("a writer of the log panicked")
    }

    pub(crate) fn write_log(&self) -> std::sync::RwLockWriteGuard<'_, CommitLog<D>> {
        self.log.write().expect("a writer of the log panicked")
    }

    /// Reads entry `index`.
    ///
    /// # Errors
    /// A corrupt entry.
    pub fn read(&self, index: u64) -> Result<Option<StoredEntry>, StorageError> {
        self.read_log().read(index)
    }

    /// Reads the entry starting at `position`.
    ///
    /// # Errors
    /// A corrupt entry.
    pub fn read_at_position(&self, position: u64) -> Result<Option<StoredEntry>, StorageError> {
        self.read_log().read_at_position(position)
    }

    /// Raw bytes of the log, see [`CommitLog::read_bytes`].
    pub fn read_bytes(&self, position: u64, len: usize) -> Option<Vec<u8>> {
        self.read_log().read_bytes(position, len)
    }

    /// Where entry `index` is.
    pub fn locate(&self, index: u64) -> Option<IndexUnit> {
        self.read_log().locate(index)
    }

    /// First readable index.
    pub fn first_index(&self) -> u64 {
        self.read_log().first_index()
    }

    /// The last entry's id, or the last purged id when the log is empty.
    pub fn last(&self) -> Option<LogId> {
        self.read_log().last()
    }

    /// Records, durably, that the entry after `last` starts at `next_position` (a snapshot up to
    /// `last` is being installed). Blocking.
    ///
    /// # Errors
    /// The metadata file cannot be written.
    pub fn restart_at(&self, last: LogId, next_position: u64) -> Result<(), StorageError> {
        meta::store(
            &self.disk,
            &self.meta_dir.join("restart"),
            &(last, next_position),
        )?;
        *lock(&self.restart) = Some((last, next_position));
        Ok(())
    }

    /// The fatal error that stopped the flusher, if any.
    pub fn fatal(&self) -> Option<String> {
        lock(&self.fatal).clone()
    }

    fn vote_path(&self) -> PathBuf {
        self.meta_dir.join("vote")
    }

    /// Runs the flusher until `stop`. Spawn it once per log.
    pub async fn run_flusher(self: Arc<Self>) {
        let mut last_committed_persist = tokio::time::Instant::now();
        let mut persisted_committed: Option<LogId> = None;
        loop {
            match self.flush {
                FlushPolicy::Sync => {
                    tokio::select! {
                        biased;
                        () = self.wake_flusher.notified() => {}
                        () = tokio::time::sleep(COMMITTED_PERSIST_INTERVAL) => {}
                    }
                }
                FlushPolicy::Async { interval } => tokio::time::sleep(interval).await,
            }
            let stopping = self.stopping.load(Ordering::Acquire);
            let periodic =
                stopping || last_committed_persist.elapsed() >= COMMITTED_PERSIST_INTERVAL;
            // The index files only now and then: recovery rebuilds what they lack from the
            // data (`CommitLog::take_dirty`).
            if let Err(err) = self.flush_once(periodic).await {
                tracing::error!(cause = %err, "flush failed; the replica stops");
                *lock(&self.fatal) = Some(err.to_string());
                self.flushed.notify_waiters();
                return;
            }
            if let Err(err) = self.prepare_files().await {
                // Not fatal: the append that needs the file creates it itself.
                tracing::warn!(cause = %err, "creating the next file ahead of time failed");
            }
            if periodic {
                last_committed_persist = tokio::time::Instant::now();
                if let Err(err) = self.persist_committed(&mut persisted_committed).await {
                    tracing::error!(cause = %err, "persisting the committed log id failed");
                    *lock(&self.fatal) = Some(err.to_string());
                    return;
                }
            }
            if stopping {
                return;
            }
        }
    }

    async fn flush_once(&self, index: bool) -> Result<(), StorageError> {
        let callbacks = std::mem::take(&mut *lock(&self.pending));
        let (ranges, cold, next) = {
            let mut log = self.write_log();
            let ranges = log.take_dirty(index);
            // Cold ranges go with a sync, which covers the write position they trail.
            let cold = if ranges.is_empty() {
                Vec::new()
            } else {
                log.take_cold(PAGE_CACHE_KEEP_BYTES, PAGE_CACHE_DROP_STEP_BYTES)
            };
            (ranges, cold, log.next_index())
        };
        if ranges.is_empty() && callbacks.is_empty() {
            return Ok(());
        }
        let dir = self.meta_dir.clone();
        let result = self
            .disk
            .run_blocking(move || {
                for range in ranges {
                    range.file.sync_range(range.offset, range.len)?;
                }
                // Synced above (they lie behind everything this flush covers): only a hint.
                for range in cold {
                    if let Err(err) = range.file.drop_cache(range.offset, range.len) {
                        tracing::debug!(file_start = range.file_start, cause = %err, "page cache not dropped");
                    }
                }
                Ok::<(), io::Error>(())
            })
            .await;
        match result {
            Ok(()) => {
                self.flushed_next.fetch_max(next, Ordering::AcqRel);
                for callback in callbacks {
                    callback.io_completed(Ok(()));
                }
                self.flushed.notify_waiters();
                Ok(())
            }
            Err(err) => {
                for callback in callbacks {
                    callback.io_completed(Err(io::Error::new(err.kind(), err.to_string())));
                }
                Err(StorageError::io(
                    Verb::Flush,
                    Subject::Dir { path: dir },
                    err,
                ))
            }
        }
    }

    async fn prepare_files(&self) -> Result<(), io::Error> {
        let wanted = self.read_log().files_to_prepare();
        for (files, file_start, path, bytes) in wanted {
            let disk = self.disk.clone();
            let file = self
                .disk
                .run_blocking(move || disk.open_segment(&path, bytes))
                .await?;
            self.write_log().add_prepared_file(files, file_start, file);
        }
        Ok(())
    }

    async fn persist_committed(&self, persisted: &mut Option<LogId>) -> Result<(), StorageError> {
        let Some(committed) = *lock(&self.committed) else {
            return Ok(());
        };
        let flushed_next = self.flushed_next.load(Ordering::Acquire);
        // Persist only what this replica has on disk: after a power loss the log must still
        // reach the persisted committed index.
        let candidate = if committed.index < flushed_next {
            Some(to_log_id(&committed))
        } else {
            flushed_next
                .checked_sub(1)
                .and_then(|last| self.locate(last))
                .map(|unit| LogId {
                    term: unit.term,
                    index: unit.index,
                })
        };
        let Some(candidate) = candidate else {
            return Ok(());
        };
        if *persisted == Some(candidate) {
            return Ok(());
        }
        let disk = self.disk.clone();
        let path = self.meta_dir.join("committed");
        self.disk
            .run_blocking(move || meta::store(&disk, &path, &candidate))
            .await?;
        *persisted = Some(candidate);
        Ok(())
    }

    /// Asks the flusher to finish: one last sync and a last persist of the committed id.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake_flusher.notify_one();
    }
}

/// The `RaftLogStorage` handed to openraft; also its log reader.
pub struct LogStore<D: Disk>(pub Arc<LogShared<D>>);

impl<D: Disk> Clone for LogStore<D> {
    fn clone(&self) -> Self {
        LogStore(self.0.clone())
    }
}

fn to_entry(stored: StoredEntry) -> Result<OrEntry, io::Error> {
    let h = stored.header;
    let payload = match h.kind {
        EntryKind::Normal => EntryPayload::Normal(Payload(stored.body)),
        EntryKind::Blank => EntryPayload::Blank,
        EntryKind::Membership => {
            EntryPayload::Membership(bincode::deserialize(&stored.body).map_err(|err| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("membership entry {}: {err}", h.index),
                )
            })?)
        }
    };
    Ok(OrEntry {
        log_id: from_log_id(LogId {
            term: h.term,
            index: h.index,
        }),
        payload,
    })
}

fn range_bounds(range: &impl RangeBounds<u64>, next: u64) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e + 1,
        Bound::Excluded(&e) => e,
        Bound::Unbounded => next,
    };
    (start, end.min(next))
}

impl<D: Disk> LogStore<D> {
    fn read_range(&self, start: u64, end: u64, bytes_max: u64) -> Result<Vec<OrEntry>, io::Error> {
        let log = self.0.read_log();
        let start = start.max(log.first_index());
        let end = end.min(log.next_index());
        let mut entries = Vec::new();
        let mut bytes = 0u64;
        for index in start..end {
            let Some(stored) = log.read(index)? else {
                break;
            };
            bytes += u64::from(stored.header.total_bytes);
            entries.push(to_entry(stored)?);
            if bytes >= bytes_max {
                break;
            }
        }
        Ok(entries)
    }
}

impl<D: Disk> RaftLogReader<TypeConfig> for LogStore<D> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<OrEntry>, io::Error> {
        let next = self.0.read_log().next_index();
        let (start, end) = range_bounds(&range, next);
        self.read_range(start, end, u64::MAX)
    }

    async fn read_vote(&mut self) -> Result<Option<OrVote>, io::Error> {
        Ok(*lock(&self.0.vote))
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<OrEntry>, io::Error> {
        let end = end.min(start.saturating_add(REPLICATION_BATCH_ENTRIES_MAX));
        self.read_range(start, end, REPLICATION_BATCH_BYTES_MAX)
    }
}

impl<D: Disk> RaftLogStorage<TypeConfig> for LogStore<D> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let purged = *lock(&self.0.purged);
        let last = self.0.read_log().last().map(from_log_id);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &OrVote) -> Result<(), io::Error> {
        if !self.0.forgets_votes() {
            let disk = self.0.disk.clone();
            let path = self.0.vote_path();
            let value = *vote;
            self.0
                .disk
                .run_blocking(move || meta::store(&disk, &path, &value))
                .await?;
        }
        *lock(&self.0.vote) = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<OrLogId>) -> Result<(), io::Error> {
        *lock(&self.0.committed) = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<OrLogId>, io::Error> {
        Ok(*lock(&self.0.committed))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = OrEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        if let Some(reason) = self.0.fatal() {
            return Err(io::Error::other(reason));
        }
        let entries: Vec<OrEntry> = entries.into_iter().collect();
        let memberships: Vec<Vec<u8>> = entries
            .iter()
            .filter_map(|e| match &e.payload {
                EntryPayload::Membership(m) => {
                    Some(bincode::serialize(m).expect("memberships serialize"))
                }
                _ => None,
            })
            .collect();
        let new_entries = || {
            let mut membership_bodies = memberships.iter();
            entries.iter().map(move |e| {
                let (kind, body): (EntryKind, &[u8]) = match &e.payload {
                    EntryPayload::Normal(payload) => (EntryKind::Normal, &payload.0),
                    EntryPayload::Blank => (EntryKind::Blank, &[]),
                    EntryPayload::Membership(_) => (
                        EntryKind::Membership,
                        membership_bodies
                            .next()
                            .expect("one body per membership entry"),
                    ),
                };
                NewEntry {
                    log_id: to_log_id(&e.log_id),
                    kind,
                    body,
                }
            })
        };
        let bytes: u64 = new_entries()
            .map(|e| u64::from(ENTRY_HEADER_BYTES) + e.body.len() as u64)
            .sum();
        // A full disk holds this replica still (openraft awaits this call in its core) until
        // space returns: see `room`.
        self.0.room.wait_for(&self.0.disk, bytes, false).await?;
        loop {
            let appended = self.0.write_log().append(new_entries());
            match appended {
                Err(err) if err.is_disk_full() && !self.0.fails_on_full_disk() => {
                    tracing::warn!(cause = %err, "append failed for want of disk space; the log is as it was");
                    self.0.room.wait_for(&self.0.disk, bytes, true).await?;
                }
                Err(err) => {
                    if err.is_disk_full() {
                        self.0.room.stopped_on_full_disk();
                    }
                    tracing::error!(cause = %err, "append failed; the replica stops");
                    *lock(&self.0.fatal) = Some(format!("append failed: {err}"));
                    return Err(err.into());
                }
                Ok(()) => break,
            }
        }
        #[cfg(feature = "mutants")]
        if let Some(apply) = lock(&self.0.mutants.apply_before_commit).as_ref() {
            for e in &entries {
                if let EntryPayload::Normal(payload) = &e.payload {
                    let log_id = to_log_id(&e.log_id);
                    let position = self.0.locate(log_id.index).map_or(0, |u| u.position);
                    apply(&crate::types::CommittedEntry {
                        index: log_id.index,
                        term: log_id.term,
                        position,
                        payload: crate::types::EntryPayload::Data(payload.0.clone()),
                    });
                }
            }
        }
        let ack_now =
            matches!(self.0.flush, FlushPolicy::Async { .. }) || self.0.acks_before_sync();
        if ack_now {
            callback.io_completed(Ok(()));
            if !matches!(self.0.flush, FlushPolicy::Async { .. }) {
                self.0.wake_flusher.notify_one();
            }
            return Ok(());
        }
        loop {
            let flushed = self.0.flushed.notified();
            {
                let mut pending = lock(&self.0.pending);
                if pending.len() < FLUSH_QUEUE_MAX {
                    pending.push(callback);
                    break;
                }
            }
            self.0.wake_flusher.notify_one();
            flushed.await;
        }
        self.0.wake_flusher.notify_one();
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<OrLogId>) -> Result<(), io::Error> {
        let shared = self.0.clone();
        let keep = last_log_id.map(|l| l.index);
        self.0
            .disk
            .run_blocking(move || {
                let mut log = shared.write_log();
                log.truncate_after(keep)?;
                shared
                    .flushed_next
                    .fetch_min(log.next_index(), Ordering::AcqRel);
                Ok::<(), StorageError>(())
            })
            .await?;
        Ok(())
    }

    async fn purge(&mut self, log_id: OrLogId) -> Result<(), io::Error> {
        let shared = self.0.clone();
        let purged = to_log_id(&log_id);
        self.0
            .disk
            .run_blocking(move || {
                meta::store(&shared.disk, &shared.meta_dir.join("purged"), &purged)?;
                let restart = lock(&shared.restart)
                    .filter(|(last, _)| *last == purged)
                    .map(|(_, position)| position);
                shared.write_log().purge(purged, restart)
            })
            .await?;
        *lock(&self.0.purged) = Some(log_id);
        Ok(())
    }
}
