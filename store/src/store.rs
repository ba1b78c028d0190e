//! The message store: what applying committed entries builds, and how the broker reads it.
//!
//! Every replica applies the same committed entries in the same order, so its ConsumeQueues,
//! IndexFile, topic table and consumer offsets are a pure function of the committed log.
//! Queue offsets are assigned here, at apply time, densely per queue: the leader's broker
//! predicts them when it encodes records, and the answer it sends a producer is the one this
//! apply produced.
//!
//! ### Restart
//! A checkpoint (topics, consumer offsets, each queue's length, the last applied entry) is
//! written after the ConsumeQueues and IndexFile are synced. On start, queues longer than the
//! checkpoint are cut back to it and entries after it are applied again; a queue shorter than
//! the checkpoint says (a lost file) makes the store start from nothing and re-apply the whole
//! log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use dledger::{ApplyError, CommittedEntry, Disk, EntryPayload, LogId};
use protocol::body::TopicConfig;
use protocol::message::{RecordView, property, tags_code};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::consume_queue::{ConsumeQueueSet, ConsumeQueueUnit};
use crate::entry::{self, OffsetCommit, StoreEntry};
use crate::error::StoreError;
use crate::index_file::{IndexConfig, IndexService, index_key};

/// Settings of a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory of the ConsumeQueues, IndexFiles and checkpoint.
    pub root: PathBuf,
    /// Units per ConsumeQueue file (RocketMQ: 300,000).
    pub cq_units_per_file: u64,
    /// IndexFile sizing.
    pub index: IndexConfig,
    /// Entries applied between checkpoints.
    pub checkpoint_every: u64,
    /// Apply results kept for the broker to collect (oldest dropped first).
    pub results_kept: usize,
}

impl StoreConfig {
    /// Defaults under `root`.
    pub fn new(root: PathBuf) -> Self {
        StoreConfig {
            root,
            cq_units_per_file: 300_000,
            index: IndexConfig::default(),
            checkpoint_every: 10_000,
            results_kept: 100_000,
        }
    }
}

/// One queue's length in a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct QueueLength {
    topic: String,
    queue_id: i32,
    next: u64,
}

/// What survives a restart without re-applying.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Checkpoint {
    applied: Option<LogId>,
    topics: Vec<TopicConfig>,
    offsets: Vec<OffsetCommit>,
    queues: Vec<QueueLength>,
    #[serde(default)]
    applied_end: u64,
}

struct State<D: Disk> {
    topics: BTreeMap<String, TopicConfig>,
    offsets: BTreeMap<(String, String, i32), i64>,
    queues: ConsumeQueueSet<D>,
    index: IndexService<D>,
    applied: Option<LogId>,
    since_checkpoint: u64,
}

/// Where the messages of one applied entry went, in record order: (queue id, queue offset).
pub type Placement = Vec<(i32, i64)>;

/// A unit read from a ConsumeQueue, with its queue offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueItem {
    /// Offset in the queue.
    pub queue_offset: i64,
    /// Commit-log offset of the record.
    pub physical_offset: u64,
    /// Record size.
    pub size: u32,
    /// Tags hash.
    pub tags_code: i64,
}

/// The store of one replica.
pub struct Store<D: Disk> {
    disk: D,
    config: StoreConfig,
    state: RwLock<State<D>>,
    applied: watch::Sender<Option<u64>>,
    results: Mutex<BTreeMap<u64, Placement>>,
    arrivals: Mutex<BTreeMap<(String, i32), Arc<Notify>>>,
    /// End of the last applied entry in the log: bytes before it are committed.
    applied_end: AtomicU64,
}

fn checkpoint_path(root: &Path) -> PathBuf {
    root.join("checkpoint")
}

fn apply_error(index: u64, reason: impl std::fmt::Display) -> ApplyError {
    ApplyError {
        index,
        reason: reason.to_string(),
    }
}

impl<D: Disk> Store<D> {
    /// Opens the store under `config.root`, recovering from its checkpoint.
    ///
    /// # Errors
    /// Files that cannot be read or are corrupt.
    pub fn open(disk: D, config: StoreConfig) -> Result<Arc<Self>, StoreError> {
        let checkpoint: Checkpoint = match disk.read_meta(&checkpoint_path(&config.root)) {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: checkpoint_path(&config.root),
                file_offset: 0,
                reason: e.to_string(),
            })?,
            Ok(None) => Checkpoint::default(),
            Err(source) => {
                return Err(StoreError::Io {
                    verb: crate::error::Verb::Read,
                    subject: crate::error::Subject::Meta {
                        path: checkpoint_path(&config.root),
                    },
                    source,
                });
            }
        };
        let mut queues = ConsumeQueueSet::open(
            disk.clone(),
            &config.root.join("consumequeue"),
            config.cq_units_per_file,
        )?;
        let index = IndexService::open(disk.clone(), &config.root.join("index"), config.index)?;
        // Queues must hold exactly what the checkpoint says: cut what was written after it,
        // and start over if anything it counts is missing.
        let lengths: BTreeMap<(String, i32), u64> = checkpoint
            .queues
            .iter()
            .map(|q| ((q.topic.clone(), q.queue_id), q.next))
            .collect();
        let checkpoint_end = checkpoint.applied_end;
        let mut complete = true;
        let existing: Vec<(String, i32)> =
            queues.queues().map(|(t, q)| (t.to_string(), q)).collect();
        for (topic, queue_id) in &existing {
            let want = lengths
                .get(&(topic.clone(), *queue_id))
                .copied()
                .unwrap_or(0);
            let Some(queue) = queues.get_mut(topic, *queue_id) else {
                continue;
            };
            let have = queue.queue_offset_max();
            if have < want {
                tracing::warn!(%topic, queue_id, have, want, "consume queue shorter than its checkpoint: rebuilding the store from the log");
                complete = false;
            } else if have > want {
                queue.truncate_from(want)?;
            }
        }
        for ((topic, queue_id), want) in &lengths {
            if *want > 0 && queues.get(topic, *queue_id).is_none() {
                complete = false;
            }
        }
        let mut state = State {
            topics: BTreeMap::new(),
            offsets: BTreeMap::new(),
            queues,
            index,
            applied: None,
            since_checkpoint: 0,
        };
        if complete {
            state.applied = checkpoint.applied;
            state.topics = checkpoint
                .topics
                .into_iter()
                .map(|t| (t.topic_name.clone(), t))
                .collect();
            state.offsets = checkpoint
                .offsets
                .into_iter()
                .map(|o| ((o.group, o.topic, o.queue_id), o.offset))
                .collect();
        } else {
            for (topic, queue_id) in &existing {
                if let Some(queue) = state.queues.get_mut(topic, *queue_id) {
                    queue.truncate_from(0)?;
                }
            }
        }
        let applied_index = state.applied.map(|a| a.index);
        let applied_end = if complete { checkpoint_end } else { 0 };
        Ok(Arc::new(Store {
            disk,
            config,
            state: RwLock::new(state),
            applied: watch::channel(applied_index).0,
            results: Mutex::new(BTreeMap::new()),
            arrivals: Mutex::new(BTreeMap::new()),
            applied_end: AtomicU64::new(applied_end),
        }))
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State<D>> {
        self.state.read().expect("a store writer panicked")
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State<D>> {
        self.state.write().expect("a store writer panicked")
    }

    /// Applies one committed entry.
    ///
    /// # Errors
    /// An entry that is not a store entry, a record that does not decode, a queue offset that
    /// is not dense, a file error: all stop the replica.
    pub fn apply(&self, entry: &CommittedEntry) -> Result<(), ApplyError> {
        let index = entry.index;
        let mut touched = BTreeSet::new();
        let mut state = self.write_state();
        if let EntryPayload::Data(body) = &entry.payload {
            match entry::decode(body).map_err(|e| apply_error(index, e))? {
                StoreEntry::Messages { records } => {
                    let body_position =
                        entry.position + u64::from(dledger::limits::ENTRY_HEADER_BYTES);
                    let mut placement = Placement::new();
                    for (start, size) in entry::record_spans(records) {
                        let view = RecordView::parse(&records[start..start + size])
                            .map_err(|e| apply_error(index, e))?;
                        let properties = view.properties();
                        let queue = state
                            .queues
                            .get_or_create(view.topic, view.queue_id)
                            .map_err(|e| apply_error(index, e))?;
                        let queue_offset = queue.queue_offset_max();
                        let physical = body_position + (entry::ENTRY_HEADER_BYTES + start) as u64;
                        queue
                            .append(
                                queue_offset,
                                ConsumeQueueUnit {
                                    commit_log_offset: physical,
                                    size: size as u32,
                                    tags_code: tags_code(properties.get(property::TAGS)),
                                },
                            )
                            .map_err(|e| apply_error(index, e))?;
                        state
                            .index
                            .put_message(
                                view.topic,
                                properties.get(property::UNIQ_KEY),
                                properties.get(property::KEYS),
                                physical,
                                view.store_timestamp.max(0) as u64,
                            )
                            .map_err(|e| apply_error(index, e))?;
                        placement.push((view.queue_id, queue_offset as i64));
                        touched.insert((view.topic.to_string(), view.queue_id));
                    }
                    let mut results = self.results.lock().expect("results");
                    results.insert(index, placement);
                    while results.len() > self.config.results_kept {
                        results.pop_first();
                    }
                }
                StoreEntry::TopicConfig(config) => {
                    state.topics.insert(config.topic_name.clone(), config);
                }
                StoreEntry::Offsets(commits) => {
                    for c in commits {
                        state
                            .offsets
                            .insert((c.group, c.topic, c.queue_id), c.offset);
                    }
                }
            }
        }
        state.applied = Some(LogId {
            term: entry.term,
            index,
        });
        let body_len = match &entry.payload {
            EntryPayload::Data(body) => body.len() as u64,
            _ => 0,
        };
        self.applied_end.fetch_max(
            entry.position + u64::from(dledger::limits::ENTRY_HEADER_BYTES) + body_len,
            Ordering::AcqRel,
        );
        state.since_checkpoint += 1;
        if state.since_checkpoint >= self.config.checkpoint_every {
            self.checkpoint_locked(&mut state)
                .map_err(|e| apply_error(index, e))?;
        }
        drop(state);
        self.applied.send_replace(Some(index));
        if !touched.is_empty() {
            let arrivals = self.arrivals.lock().expect("arrivals");
            for key in &touched {
                if let Some(notify) = arrivals.get(key) {
                    notify.notify_waiters();
                }
            }
        }
        Ok(())
    }

    fn checkpoint_locked(&self, state: &mut State<D>) -> Result<(), StoreError> {
        state.queues.flush()?;
        state.index.flush()?;
        let queues: Vec<QueueLength> = state
            .queues
            .queues()
            .map(|(topic, queue_id)| QueueLength {
                topic: topic.to_string(),
                queue_id,
                next: state
                    .queues
                    .get(topic, queue_id)
                    .map_or(0, |q| q.queue_offset_max()),
            })
            .collect();
        let checkpoint = Checkpoint {
            applied: state.applied,
            topics: state.topics.values().cloned().collect(),
            offsets: state
                .offsets
                .iter()
                .map(|((group, topic, queue_id), offset)| OffsetCommit {
                    group: group.clone(),
                    topic: topic.clone(),
                    queue_id: *queue_id,
                    offset: *offset,
                })
                .collect(),
            applied_end: self.applied_end.load(Ordering::Acquire),
            queues,
        };
        let bytes = serde_json::to_vec(&checkpoint).unwrap_or_default();
        let path = checkpoint_path(&self.config.root);
        self.disk
            .write_meta(&path, &bytes)
            .map_err(|source| StoreError::Io {
                verb: crate::error::Verb::Write,
                subject: crate::error::Subject::Meta { path },
                source,
            })?;
        state.since_checkpoint = 0;
        Ok(())
    }

    /// Syncs everything and writes a checkpoint (on shutdown, and in tests).
    ///
    /// # Errors
    /// A file error.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let mut state = self.write_state();
        self.checkpoint_locked(&mut state)
    }

    /// End of the last applied entry in the log: every byte before it is committed.
    pub fn applied_end(&self) -> u64 {
        self.applied_end.load(Ordering::Acquire)
    }

    /// The last applied entry.
    pub fn last_applied(&self) -> Option<LogId> {
        self.read_state().applied
    }

    /// Waits until entry `index` is applied.
    pub async fn wait_applied(&self, index: u64) {
        let mut rx = self.applied.subscribe();
        let _ = rx.wait_for(|a| a.is_some_and(|a| a >= index)).await;
    }

    /// Takes where entry `index`'s messages went, once it is applied.
    pub fn take_placement(&self, index: u64) -> Option<Placement> {
        self.results.lock().expect("results").remove(&index)
    }

    /// A handle woken when messages arrive on a queue (long polling).
    pub fn arrivals(&self, topic: &str, queue_id: i32) -> Arc<Notify> {
        self.arrivals
            .lock()
            .expect("arrivals")
            .entry((topic.to_string(), queue_id))
            .or_default()
            .clone()
    }

    /// A topic's configuration.
    pub fn topic(&self, name: &str) -> Option<TopicConfig> {
        self.read_state().topics.get(name).cloned()
    }

    /// Every topic.
    pub fn topics(&self) -> BTreeMap<String, TopicConfig> {
        self.read_state().topics.clone()
    }

    /// Runs `f` on a queue, if it exists.
    fn with_queue<R>(
        &self,
        topic: &str,
        queue_id: i32,
        f: impl FnOnce(&crate::consume_queue::ConsumeQueue<D>) -> Result<R, StoreError>,
    ) -> Result<Option<R>, StoreError> {
        let state = self.read_state();
        match state.queues.get(topic, queue_id) {
            Some(queue) => f(queue).map(Some),
            None => Ok(None),
        }
    }

    /// Next offset to be written in a queue (0 for an unknown queue or one that cannot be
    /// opened, which is logged).
    pub fn max_offset(&self, topic: &str, queue_id: i32) -> i64 {
        self.with_queue(topic, queue_id, |q| Ok(q.queue_offset_max() as i64))
            .unwrap_or_else(|err| {
                tracing::error!(topic, queue_id, cause = %err, "consume queue unreadable");
                None
            })
            .unwrap_or(0)
    }

    /// First offset still stored in a queue.
    pub fn min_offset(&self, topic: &str, queue_id: i32) -> i64 {
        self.with_queue(topic, queue_id, |q| Ok(q.queue_offset_min() as i64))
            .unwrap_or_else(|err| {
                tracing::error!(topic, queue_id, cause = %err, "consume queue unreadable");
                None
            })
            .unwrap_or(0)
    }

    /// Up to `max` units of a queue from `from`.
    ///
    /// # Errors
    /// A file error or a corrupt unit.
    pub fn read_queue(
        &self,
        topic: &str,
        queue_id: i32,
        from: i64,
        max: usize,
    ) -> Result<Vec<QueueItem>, StoreError> {
        let Ok(from) = u64::try_from(from) else {
            return Ok(Vec::new());
        };
        let units = self
            .with_queue(topic, queue_id, |q| q.read(from, max as u64))?
            .unwrap_or_default();
        Ok(units
            .into_iter()
            .enumerate()
            .map(|(i, unit)| QueueItem {
                queue_offset: from as i64 + i as i64,
                physical_offset: unit.commit_log_offset,
                size: unit.size,
                tags_code: unit.tags_code,
            })
            .collect())
    }

    /// A group's committed offset of a queue.
    pub fn consumer_offset(&self, group: &str, topic: &str, queue_id: i32) -> Option<i64> {
        self.read_state()
            .offsets
            .get(&(group.to_string(), topic.to_string(), queue_id))
            .copied()
    }

    /// Every committed offset, for status pages.
    pub fn consumer_offsets(&self) -> BTreeMap<(String, String, i32), i64> {
        self.read_state().offsets.clone()
    }

    /// Commit-log offsets of messages indexed under `topic#key`, newest first.
    ///
    /// # Errors
    /// A file error.
    pub fn query_key(
        &self,
        topic: &str,
        key: &str,
        max: usize,
        begin_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<u64>, StoreError> {
        self.read_state().index.query(
            &index_key(topic, key),
            max,
            begin_ms.max(0) as u64,
            end_ms.max(0) as u64,
        )
    }

    /// Time and commit-log offset of the index's last update.
    pub fn index_last_update(&self) -> (i64, i64) {
        let state = self.read_state();
        (
            state.index.last_update_timestamp_ms() as i64,
            state.index.last_update_commit_log_offset() as i64,
        )
    }
}

/// The store as dledger's state machine.
pub struct StoreMachine<D: Disk> {
    store: Arc<Store<D>>,
}

impl<D: Disk> StoreMachine<D> {
    /// Wraps `store`.
    pub fn new(store: Arc<Store<D>>) -> Self {
        StoreMachine { store }
    }
}

impl<D: Disk> dledger::StateMachine for StoreMachine<D> {
    fn apply(&mut self, entry: &CommittedEntry) -> Result<(), ApplyError> {
        self.store.apply(entry)
    }

    fn last_applied(&self) -> Option<LogId> {
        self.store.last_applied()
    }

    fn snapshot(&mut self) -> Vec<u8> {
        // Snapshots are never taken (dledger's policy): retention purges the log instead, and a
        // replica that lost its files catches up from the log. The topic table and offsets are
        // what a snapshot could carry.
        let state = self.store.read_state();
        serde_json::to_vec(&(state.applied, state.topics.values().collect::<Vec<_>>()))
            .unwrap_or_default()
    }

    fn restore(&mut self, last: Option<LogId>, data: &[u8]) -> Result<(), ApplyError> {
        let index = last.map_or(0, |l| l.index);
        let _ = data;
        Err(apply_error(
            index,
            "installing a snapshot is not supported: the message store is rebuilt from the log",
        ))
    }
}
