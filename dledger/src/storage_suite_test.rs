//! openraft's own storage conformance suite, run against our log storage on both disks.

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};

use crate::commit_log::CommitLogConfig;
use crate::config::FlushPolicy;
use crate::disk::{Disk, MemDisk, MmapDisk};
use crate::log_store::{LogShared, LogStore};
use crate::raft_types::{OrStoredMembership, Runtime, TypeConfig};
use crate::state_machine::{Locate, SmAdapter};
use crate::testing::RecordingStateMachine;

struct Builder<D: Disk> {
    make_disk: fn() -> (D, Option<tempfile::TempDir>),
}

impl<D: Disk> StoreBuilder<TypeConfig, LogStore<D>, SmAdapter, Option<tempfile::TempDir>>
    for Builder<D>
{
    async fn build(
        &self,
    ) -> Result<(Option<tempfile::TempDir>, LogStore<D>, SmAdapter), StorageError<TypeConfig>> {
        let (disk, dir) = (self.make_disk)();
        let root = dir
            .as_ref()
            .map_or_else(|| "/mem".into(), |d| d.path().to_path_buf());
        let config = CommitLogConfig {
            dir: root.clone(),
            segment_bytes: 8192,
            index_units_per_file: 4,
            entry_body_bytes_max: 4096,
            #[cfg(feature = "mutants")]
            skip_recovery_crc: false,
        };
        let (shared, _) = LogShared::open(disk.clone(), config, FlushPolicy::Sync, None)
            .expect("a fresh log opens");
        tokio::spawn(shared.clone().run_flusher());
        let saver_disk = disk.clone();
        // The suite applies entries to the state machine that it never appended to the log; a
        // running replica only applies logged entries, so only here may a position be unknown.
        let locate = Arc::new(SuiteLocate(shared.clone()));
        let sm = SmAdapter::new(
            Box::new(RecordingStateMachine::new()),
            OrStoredMembership::default(),
            locate,
            root.join("meta").join("membership"),
            Arc::new(move |path, m| {
                crate::meta::store(&saver_disk, path, m)?;
                Ok(())
            }),
        );
        Ok((dir, LogStore(shared), sm))
    }
}

struct SuiteLocate<D: Disk>(Arc<LogShared<D>>);

impl<D: Disk> Locate for SuiteLocate<D> {
    fn position(&self, index: u64) -> Option<u64> {
        Some(self.0.locate(index).map_or(0, |unit| unit.position))
    }

    fn restart_at(&self, last: crate::types::LogId, next_position: u64) -> std::io::Result<()> {
        self.0
            .restart_at(last, next_position)
            .map_err(std::io::Error::other)
    }
}

fn mem_disk() -> (MemDisk, Option<tempfile::TempDir>) {
    (MemDisk::new(), None)
}

fn mmap_disk() -> (MmapDisk, Option<tempfile::TempDir>) {
    (MmapDisk, Some(tempfile::tempdir().expect("temp dir")))
}

/// Our log storage over the in-memory disk passes every test of openraft's storage suite
/// (tiny segments and index files, so rollover happens inside the suite's tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_suite_passes_on_mem_disk() {
    Runtime::scope(
        1,
        Suite::test_all(Builder {
            make_disk: mem_disk,
        }),
    )
    .await
    .expect("suite passes");
}

/// The same suite over real mmap segment files in a temp dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_suite_passes_on_mmap_disk() {
    Runtime::scope(
        2,
        Suite::test_all(Builder {
            make_disk: mmap_disk,
        }),
    )
    .await
    .expect("suite passes");
}
