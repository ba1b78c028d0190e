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
//! written after the ConsumeQueues and IndexFile are synced, every `checkpoint_every` entries
//! or `checkpoint_interval` of applying, whichever comes first. On start, queues longer than the
//! checkpoint are cut back to it and entries after it are applied again; a queue shorter than
//! the checkpoint says (a lost file) makes the store start from nothing and re-apply the whole
//! log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use dledger::{ApplyError, CommittedEntry, Disk, EntryPayload, LogId};
use protocol::body::TopicConfig;
use protocol::message::{RecordView, property, system_topic, tags_code};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::consume_queue::{ConsumeQueue, ConsumeQueueSet, ConsumeQueueUnit, QueueUnit};
use crate::entry::{self, OffsetCommit, StoreEntry};
use crate::error::StoreError;
use crate::index_file::{IndexConfig, IndexService, index_key};
use crate::timer::{TimerCheckpoint, TimerKey, TimerStats, TimerUnit, TimerView, Timers};
use crate::transactions::{HalfUnit, TransactionCheckpoint, TransactionCounts, Transactions};

/// Settings of a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory of the ConsumeQueues, IndexFiles and checkpoint.
    pub root: PathBuf,
    /// Units per ConsumeQueue file (RocketMQ: 300,000).
    pub cq_units_per_file: u64,
    /// IndexFile sizing.
    pub index: IndexConfig,
    /// Entries applied between checkpoints at most.
    pub checkpoint_every: u64,
    /// Time between checkpoints at most (while entries apply): a restart applies again what
    /// arrived since the last one, so this bounds its work by time as `checkpoint_every` does
    /// by count.
    pub checkpoint_interval: std::time::Duration,
    /// Bytes of a CommitLog segment (the ledger's `segment_bytes`): an entry at a multiple of it
    /// starts a segment, and the store records a base there.
    pub segment_bytes: u64,
    /// Apply results kept for the broker to collect (oldest dropped first). The leader's broker
    /// takes each as soon as its entry applies, with a few proposals in flight; followers never
    /// take theirs, so this bounds their memory.
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
            checkpoint_interval: std::time::Duration::from_secs(1),
            segment_bytes: 1 << 30,
            results_kept: 4096,
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

/// A segment start and what retention needs of the state just before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseMark {
    /// Where the segment starts.
    pub position: u64,
    /// The last entry before it: the snapshot point a purge up to it gives.
    pub last: LogId,
    /// The newest store timestamp of a message before it: when the segments before it were
    /// last written.
    pub newest_store_ms: u64,
}

/// The state just before a segment start, as a replica restored to it starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Base {
    mark: BaseMark,
    topics: Vec<TopicConfig>,
    offsets: Vec<OffsetCommit>,
    queues: Vec<QueueLength>,
    timers: TimerCheckpoint,
    #[serde(default)]
    transactions: TransactionCheckpoint,
}

/// What retention looks at, for the leader's cleaner and status pages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionView {
    /// The first position kept (0 before any purge).
    pub floor: u64,
    /// The snapshot point, if the log was purged.
    pub purged_through: Option<LogId>,
    /// Every segment start past the floor, oldest first.
    pub bases: Vec<BaseMark>,
    /// Newest store timestamp applied.
    pub newest_store_ms: u64,
    /// The entry that set the floor, once this replica applied it (a replica restored from a
    /// snapshot knows the floor before it replays that entry).
    pub floor_entry: Option<u64>,
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
    #[serde(default)]
    timers: TimerCheckpoint,
    #[serde(default)]
    bases: Vec<BaseMark>,
    /// Retention's floor: the base it purged up to.
    #[serde(default)]
    floor: Option<BaseMark>,
    #[serde(default)]
    queue_floors: Vec<QueueLength>,
    #[serde(default)]
    newest_store_ms: u64,
    #[serde(default)]
    transactions: TransactionCheckpoint,
}

struct State<D: Disk> {
    topics: BTreeMap<String, TopicConfig>,
    offsets: BTreeMap<(String, String, i32), i64>,
    queues: ConsumeQueueSet<D>,
    index: IndexService<D>,
    timers: Timers<D>,
    transactions: Transactions<D>,
    applied: Option<LogId>,
    since_checkpoint: u64,
    /// When the last checkpoint was written (tokio's clock: the simulation's in a run).
    checkpointed_at: tokio::time::Instant,
    /// Segment starts past the floor, with the state before them (see "Retention").
    bases: BTreeMap<u64, BaseMark>,
    /// The base retention purged up to.
    floor: Option<BaseMark>,
    /// Each queue's first readable offset where retention moved it past its first file.
    queue_floors: BTreeMap<(String, i32), u64>,
    newest_store_ms: u64,
    /// The Purge entry that set the floor, once applied here (not persisted: for status and
    /// the simulation's comparisons).
    floor_entry: Option<u64>,
}

/// Where the messages of one applied entry went, in record order: (queue id, queue offset).
pub type Placement = Vec<(i32, i64)>;

/// A unit read from a ConsumeQueue, with its queue offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueItem {
    /// Offset in the queue.
    pub queue_offset: i64,
    /// Commit-log offset of the record.
    pub commit_log_offset: u64,
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

fn base_path(root: &Path, position: u64) -> PathBuf {
    root.join("bases").join(format!("{position:020}"))
}

fn meta_error(verb: crate::error::Verb, path: PathBuf, source: std::io::Error) -> StoreError {
    StoreError::Io {
        verb,
        subject: crate::error::Subject::Meta { path },
        source,
    }
}

/// The snapshot's bytes: the base as JSON (with its length first, 4 bytes big-endian), then the
/// timer units from the base's `scan_from` to its `seen`, as the timer log holds them, then the
/// half units from the base's first pending one to its length, as the half log holds them now.
fn seal_snapshot(base: &Base, units: &[TimerUnit], halves: &[HalfUnit]) -> Vec<u8> {
    let json = serde_json::to_vec(base).expect("bases serialize");
    let mut out = Vec::with_capacity(
        4 + json.len()
            + units.len() * TimerUnit::BYTES as usize
            + halves.len() * HalfUnit::BYTES as usize,
    );
    out.extend_from_slice(
        &u32::try_from(json.len())
            .expect("a base under 4 GiB")
            .to_be_bytes(),
    );
    out.extend_from_slice(&json);
    for unit in units {
        unit.encode_into(&mut out);
    }
    for unit in halves {
        unit.encode_into(&mut out);
    }
    out
}

/// A snapshot's parts: its base, the timer units and the half units.
type SnapshotParts = (Base, Vec<TimerUnit>, Vec<HalfUnit>);

fn unseal_snapshot(index: u64, data: &[u8]) -> Result<SnapshotParts, ApplyError> {
    use crate::consume_queue::QueueUnit as _;
    let bad = |reason: String| apply_error(index, format!("undecodable snapshot: {reason}"));
    let len = data
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or_else(|| bad("shorter than its header".into()))?;
    let json = data
        .get(4..4 + len)
        .ok_or_else(|| bad("shorter than its base".into()))?;
    let base: Base = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
    let rest = &data[4 + len..];
    let timer_bytes = base
        .timers
        .seen
        .checked_sub(base.timers.scan_from)
        .and_then(|n| n.checked_mul(TimerUnit::BYTES))
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n <= rest.len())
        .ok_or_else(|| bad(format!("{} bytes cannot hold its timer units", rest.len())))?;
    let (timer_raw, half_raw) = rest.split_at(timer_bytes);
    let units = units_of::<TimerUnit>(timer_raw, "timer").map_err(bad)?;
    let halves = units_of::<HalfUnit>(half_raw, "half").map_err(bad)?;
    Ok((base, units, halves))
}

/// The units packed back to back in `raw`.
fn units_of<U: QueueUnit>(raw: &[u8], what: &str) -> Result<Vec<U>, String> {
    if !raw.len().is_multiple_of(U::BYTES as usize) {
        return Err(format!("{} bytes of {what} units", raw.len()));
    }
    raw.chunks_exact(U::BYTES as usize)
        .map(|raw| match U::decode(raw) {
            Ok(Some(unit)) => Ok(unit),
            Ok(None) => Err(format!("a zero {what} unit")),
            Err(reason) => Err(format!("{what} unit: {reason}")),
        })
        .collect()
}

fn apply_error(index: u64, reason: impl std::fmt::Display) -> ApplyError {
    ApplyError {
        index,
        reason: reason.to_string(),
    }
}

/// The properties applying a message reads, borrowed from its properties text.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct IndexedProperties<'a> {
    tags: Option<&'a str>,
    uniq_key: Option<&'a str>,
    keys: Option<&'a str>,
    /// `TIMER_OUT_MS`: the due time of a scheduled record.
    timer_out_ms: Option<&'a str>,
    /// `TIMER_DEL_UNIQKEY` is present: the record cancels another.
    timer_del: bool,
    /// `CHECK_IMMUNITY_TIME_IN_SECONDS`: no check of a half message before then.
    check_immunity: Option<&'a str>,
}

impl<'a> IndexedProperties<'a> {
    /// Finds `TAGS`, `UNIQ_KEY` and `KEYS` as [`protocol::message::Properties::parse`] reads
    /// them (pieces with an empty name or value are skipped, and the last piece of a name wins),
    /// without building the map of every property.
    fn parse(text: &'a str) -> Self {
        let mut found = IndexedProperties::default();
        for piece in text.split('\u{2}') {
            let Some((name, value)) = piece.split_once('\u{1}') else {
                continue;
            };
            if value.is_empty() {
                continue;
            }
            match name {
                property::TAGS => found.tags = Some(value),
                property::UNIQ_KEY => found.uniq_key = Some(value),
                property::KEYS => found.keys = Some(value),
                property::TIMER_OUT_MS => found.timer_out_ms = Some(value),
                property::TIMER_DEL_UNIQKEY => found.timer_del = true,
                property::CHECK_IMMUNITY_TIME_IN_SECONDS => found.check_immunity = Some(value),
                _ => {}
            }
        }
        found
    }
}

/// One message record of an entry, as applying it needs it.
struct ParsedRecord<'a> {
    topic: &'a str,
    queue_id: i32,
    unit: ConsumeQueueUnit,
    properties: IndexedProperties<'a>,
    store_timestamp_ms: u64,
    /// When a scheduled record is due (a record of a scheduled topic with `TIMER_OUT_MS`).
    due_ms: Option<i64>,
    /// The record is dispatched (not tied to an outcome that did not apply).
    dispatched: bool,
    /// Which [`QueueBatch`] the unit goes to, and its place in that batch.
    batch: usize,
    rank: u64,
}

/// The units of one entry for one queue, in record order.
struct QueueBatch<'a> {
    topic: &'a str,
    queue_id: i32,
    units: Vec<ConsumeQueueUnit>,
    /// The queue offset of the first unit, once appended.
    first_queue_offset: u64,
}

/// Applies the records of a messages or deliveries entry (`records` start `records_at` bytes into
/// the entry body): parses every record first, appends each queue's
/// units with one [`ConsumeQueue::append_many`] (kept in memory and written back in runs of
/// [`crate::consume_queue::WRITE_BACK_UNITS`]), then indexes the keys in record order. Returns where each record went, in record
/// order; queue offsets are dense per queue in record order, as the leader predicted them.
/// The records whose place is in `skip` (outcomes that did not apply) go nowhere: their
/// placement has queue offset -1. A half message is added to the half log.
fn apply_messages<'a, D: Disk>(
    state: &mut State<D>,
    index: u64,
    body_position: u64,
    records_at: usize,
    records: &'a [u8],
    skip: &BTreeSet<usize>,
    touched: &mut BTreeSet<(String, i32)>,
) -> Result<Placement, ApplyError> {
    let spans = entry::record_spans(records);
    let mut parsed: Vec<ParsedRecord<'a>> = Vec::with_capacity(spans.len());
    let mut batches: Vec<QueueBatch<'a>> = Vec::new();
    let mut batch_of: BTreeMap<(&'a str, i32), usize> = BTreeMap::new();
    for (place, (start, size)) in spans.into_iter().enumerate() {
        let view =
            RecordView::parse(&records[start..start + size]).map_err(|e| apply_error(index, e))?;
        let properties = IndexedProperties::parse(view.properties_text);
        let unit = ConsumeQueueUnit {
            commit_log_offset: body_position + (records_at + start) as u64,
            size: u32::try_from(size).expect("record_spans takes sizes from an i32"),
            tags_code: 0,
        };
        if skip.contains(&place) {
            parsed.push(ParsedRecord {
                topic: view.topic,
                queue_id: view.queue_id,
                unit,
                properties,
                store_timestamp_ms: 0,
                due_ms: None,
                dispatched: false,
                batch: 0,
                rank: 0,
            });
            continue;
        }
        let batch = *batch_of
            .entry((view.topic, view.queue_id))
            .or_insert_with(|| {
                batches.push(QueueBatch {
                    topic: view.topic,
                    queue_id: view.queue_id,
                    units: Vec::new(),
                    first_queue_offset: 0,
                });
                batches.len() - 1
            });
        // A scheduled record's queue holds its due time where others hold the tag's hash, as
        // RocketMQ's delay queues do.
        let due_ms = if system_topic::is_scheduled(view.topic) {
            properties
                .timer_out_ms
                .and_then(|due| due.parse::<i64>().ok())
                .filter(|due| *due >= 0)
        } else {
            None
        };
        let unit = ConsumeQueueUnit {
            tags_code: due_ms.unwrap_or_else(|| tags_code(properties.tags)),
            ..unit
        };
        let units = &mut batches[batch].units;
        parsed.push(ParsedRecord {
            topic: view.topic,
            queue_id: view.queue_id,
            unit,
            properties,
            store_timestamp_ms: view.store_timestamp.max(0) as u64,
            due_ms,
            dispatched: true,
            batch,
            rank: units.len() as u64,
        });
        units.push(unit);
    }
    for batch in &mut batches {
        let queue = state
            .queues
            .get_or_create(batch.topic, batch.queue_id)
            .map_err(|e| apply_error(index, e))?;
        batch.first_queue_offset = queue.queue_offset_max();
        queue
            .append_many(batch.first_queue_offset, &batch.units)
            .map_err(|e| apply_error(index, e))?;
        touched.insert((batch.topic.to_string(), batch.queue_id));
    }
    let mut placement = Placement::with_capacity(parsed.len());
    for record in &parsed {
        if !record.dispatched {
            placement.push((record.queue_id, -1));
            continue;
        }
        state.newest_store_ms = state.newest_store_ms.max(record.store_timestamp_ms);
        state
            .index
            .put_message(
                record.topic,
                record.properties.uniq_key,
                record.properties.keys,
                record.unit.commit_log_offset,
                record.store_timestamp_ms,
            )
            .map_err(|e| apply_error(index, e))?;
        let queue_offset = batches[record.batch].first_queue_offset + record.rank;
        placement.push((record.queue_id, queue_offset as i64));
        if record.topic == system_topic::TRANS_HALF {
            let immunity_secs = record
                .properties
                .check_immunity
                .and_then(|s| s.trim().parse::<i32>().ok())
                .filter(|secs| *secs >= 0);
            state
                .transactions
                .add(
                    queue_offset,
                    index,
                    record.unit.commit_log_offset,
                    record.unit.size,
                    record.store_timestamp_ms as i64,
                    immunity_secs,
                )
                .map_err(|e| apply_error(index, e))?;
        }
        if let Some(due_ms) = record.due_ms {
            state
                .timers
                .add(
                    record.unit.commit_log_offset,
                    record.unit.size,
                    due_ms,
                    record.properties.timer_del,
                )
                .map_err(|e| apply_error(index, e))?;
        }
    }
    Ok(placement)
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
        let (timers, timers_complete) = Timers::open(
            disk.clone(),
            &config.root.join("timerlog"),
            checkpoint.timers,
        )?;
        let (transactions, transactions_complete) = Transactions::open(
            disk.clone(),
            &config.root.join("halflog"),
            checkpoint.transactions,
        )?;
        // Queues must hold exactly what the checkpoint says: cut what was written after it,
        // and start over if anything it counts is missing.
        let lengths: BTreeMap<(String, i32), u64> = checkpoint
            .queues
            .iter()
            .map(|q| ((q.topic.clone(), q.queue_id), q.next))
            .collect();
        let checkpoint_end = checkpoint.applied_end;
        let mut complete = timers_complete && transactions_complete;
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
            timers,
            transactions,
            applied: None,
            since_checkpoint: 0,
            checkpointed_at: tokio::time::Instant::now(),
            bases: BTreeMap::new(),
            floor: None,
            queue_floors: BTreeMap::new(),
            newest_store_ms: 0,
            floor_entry: None,
        };
        if complete {
            state.applied = checkpoint.applied;
            state.bases = checkpoint.bases.iter().map(|b| (b.position, *b)).collect();
            state.floor = checkpoint.floor;
            state.queue_floors = checkpoint
                .queue_floors
                .iter()
                .map(|q| ((q.topic.clone(), q.queue_id), q.next))
                .collect();
            state.newest_store_ms = checkpoint.newest_store_ms;
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
        } else if checkpoint.floor.is_none() {
            // `clear`, not `truncate_from(0)`: a queue whose first files were purged holds
            // nothing below its first file, and the rebuild starts every queue from offset 0.
            for (topic, queue_id) in &existing {
                if let Some(queue) = state.queues.get_mut(topic, *queue_id) {
                    queue.clear()?;
                }
            }
            state.timers.clear()?;
            state.transactions.clear()?;
        }
        let restore_floor = (!complete).then_some(checkpoint.floor).flatten();
        let applied_index = state.applied.map(|a| a.index);
        let applied_end = if complete { checkpoint_end } else { 0 };
        let store = Arc::new(Store {
            disk,
            config,
            state: RwLock::new(state),
            applied: watch::channel(applied_index).0,
            results: Mutex::new(BTreeMap::new()),
            arrivals: Mutex::new(BTreeMap::new()),
            applied_end: AtomicU64::new(applied_end),
        });
        if let Some(floor) = restore_floor {
            // The log before the floor is gone: a rebuild starts from the floor's base.
            let snapshot = store.snapshot_at(floor).map_err(|e| StoreError::Corrupt {
                path: base_path(&store.config.root, floor.position),
                file_offset: 0,
                reason: e.to_string(),
            })?;
            store.restore(&snapshot).map_err(|e| StoreError::Corrupt {
                path: base_path(&store.config.root, floor.position),
                file_offset: 0,
                reason: e.to_string(),
            })?;
        }
        Ok(store)
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
        if entry.position > 0
            && entry.position.is_multiple_of(self.config.segment_bytes)
            && !state.bases.contains_key(&entry.position)
            && let Some(last) = state.applied
        {
            self.record_base(&mut state, entry.position, last)
                .map_err(|e| apply_error(index, e))?;
        }
        let mut purged = false;
        if let EntryPayload::Data(body) = &entry.payload {
            match entry::decode(body).map_err(|e| apply_error(index, e))? {
                StoreEntry::Messages { records } => {
                    let body_position =
                        entry.position + u64::from(dledger::limits::ENTRY_HEADER_BYTES);
                    let placement = apply_messages(
                        &mut state,
                        index,
                        body_position,
                        entry::ENTRY_HEADER_BYTES,
                        records,
                        &BTreeSet::new(),
                        &mut touched,
                    )?;
                    self.keep_placement(index, placement);
                }
                StoreEntry::Transactions { outcomes, records } => {
                    let mut skip = BTreeSet::new();
                    for (slot, outcome) in outcomes.iter().enumerate() {
                        let applied = state
                            .transactions
                            .apply(outcome, index, slot as u32)
                            .map_err(|e| apply_error(index, e))?;
                        if !applied {
                            tracing::debug!(
                                index,
                                ?outcome,
                                "outcome of a half message that is resolved or unknown: nothing changes"
                            );
                            if let Some(record) = outcome.record {
                                skip.insert(record as usize);
                            }
                        }
                    }
                    let body_position =
                        entry.position + u64::from(dledger::limits::ENTRY_HEADER_BYTES);
                    let records_at = entry::records_at(body).ok_or_else(|| {
                        apply_error(index, "a transactions entry without records")
                    })?;
                    let placement = apply_messages(
                        &mut state,
                        index,
                        body_position,
                        records_at,
                        records,
                        &skip,
                        &mut touched,
                    )?;
                    self.keep_placement(index, placement);
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
                StoreEntry::Deliveries { header, records } => {
                    let applies = state
                        .timers
                        .deliver(header.expected, header.new, header.seen, header.covered)
                        .map_err(|e| apply_error(index, e))?;
                    if applies {
                        let body_position =
                            entry.position + u64::from(dledger::limits::ENTRY_HEADER_BYTES);
                        apply_messages(
                            &mut state,
                            index,
                            body_position,
                            entry::ENTRY_HEADER_BYTES + entry::DELIVERY_HEADER_BYTES,
                            records,
                            &BTreeSet::new(),
                            &mut touched,
                        )?;
                    } else {
                        tracing::debug!(index, ?header, progress = ?state.timers.progress(), "stale deliveries entry: nothing delivered");
                    }
                }
                StoreEntry::Purge { first_position } => {
                    purged = self
                        .purge_locked(&mut state, first_position)
                        .map_err(|e| apply_error(index, e))?;
                    if state.floor.is_some_and(|f| f.position == first_position) {
                        state.floor_entry = Some(index);
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
        // After a purge the checkpoint is written at once: dledger purges the log up to the
        // floor next, and a restart must not need an entry before it.
        if purged
            || state.since_checkpoint >= self.config.checkpoint_every
            || state.checkpointed_at.elapsed() >= self.config.checkpoint_interval
        {
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

    /// Keeps where entry `index`'s records went, for the broker to take.
    fn keep_placement(&self, index: u64, placement: Placement) {
        let mut results = self.results.lock().expect("results");
        results.insert(index, placement);
        while results.len() > self.config.results_kept {
            results.pop_first();
        }
    }

    fn checkpoint_locked(&self, state: &mut State<D>) -> Result<(), StoreError> {
        state.queues.flush()?;
        state.index.flush()?;
        let timers = state.timers.flush()?;
        let transactions = state.transactions.flush()?;
        let queues = queue_lengths(state);
        let checkpoint = Checkpoint {
            applied: state.applied,
            topics: state.topics.values().cloned().collect(),
            offsets: offset_commits(state),
            applied_end: self.applied_end.load(Ordering::Acquire),
            queues,
            timers,
            bases: state.bases.values().copied().collect(),
            floor: state.floor,
            queue_floors: state
                .queue_floors
                .iter()
                .map(|((topic, queue_id), next)| QueueLength {
                    topic: topic.clone(),
                    queue_id: *queue_id,
                    next: *next,
                })
                .collect(),
            newest_store_ms: state.newest_store_ms,
            transactions,
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
        state.checkpointed_at = tokio::time::Instant::now();
        Ok(())
    }

    /// Forgets everything applied, durably: every queue and index file is removed, topics and
    /// offsets are dropped, and an empty checkpoint is written, so the store is as if new and
    /// the log is applied again from its start. For [`dledger::StateMachine::discard`].
    ///
    /// # Errors
    /// A file error; the store must not be used after one.
    pub fn discard(&self) -> Result<(), StoreError> {
        let floor = self.read_state().floor;
        if let Some(floor) = floor {
            // The log before the floor is gone: back to the floor's base, not to nothing.
            let snapshot = self.snapshot_at(floor)?;
            return self.restore(&snapshot).map_err(|e| StoreError::Corrupt {
                path: base_path(&self.config.root, floor.position),
                file_offset: 0,
                reason: e.to_string(),
            });
        }
        let mut state = self.write_state();
        let queues: Vec<(String, i32)> = state
            .queues
            .queues()
            .map(|(topic, queue_id)| (topic.to_string(), queue_id))
            .collect();
        for (topic, queue_id) in &queues {
            if let Some(queue) = state.queues.get_mut(topic, *queue_id) {
                queue.clear()?;
            }
        }
        state.index.clear()?;
        state.timers.clear()?;
        state.transactions.clear()?;
        state.topics.clear();
        state.offsets.clear();
        state.bases.clear();
        state.queue_floors.clear();
        state.newest_store_ms = 0;
        state.applied = None;
        self.applied_end.store(0, Ordering::Release);
        self.results.lock().expect("results").clear();
        self.checkpoint_locked(&mut state)?;
        drop(state);
        self.applied.send_replace(None);
        tracing::warn!(root = %self.config.root.display(), "store discarded: the log is applied again");
        Ok(())
    }

    /// The state as it is now, as a base for the segment starting at `position`.
    fn base_now(&self, state: &State<D>, mark: BaseMark) -> Result<Base, StoreError> {
        Ok(Base {
            mark,
            topics: state.topics.values().cloned().collect(),
            offsets: offset_commits(state),
            queues: queue_lengths(state),
            timers: state.timers.checkpoint_view(),
            transactions: state.transactions.checkpoint_view(),
        })
    }

    /// Writes the base of the segment starting at `position` (the state before its first
    /// entry; `last` is the entry before it).
    fn record_base(
        &self,
        state: &mut State<D>,
        position: u64,
        last: LogId,
    ) -> Result<(), StoreError> {
        let mark = BaseMark {
            position,
            last,
            newest_store_ms: state.newest_store_ms,
        };
        let base = self.base_now(state, mark)?;
        self.write_base(&base)?;
        state.bases.insert(position, mark);
        Ok(())
    }

    fn write_base(&self, base: &Base) -> Result<(), StoreError> {
        let path = base_path(&self.config.root, base.mark.position);
        let bytes = serde_json::to_vec(base).expect("bases serialize");
        self.disk
            .write_meta(&path, &bytes)
            .map_err(|source| meta_error(crate::error::Verb::Write, path, source))
    }

    fn read_base(&self, position: u64) -> Result<Base, StoreError> {
        let path = base_path(&self.config.root, position);
        let bytes = self
            .disk
            .read_meta(&path)
            .map_err(|source| meta_error(crate::error::Verb::Read, path.clone(), source))?
            .ok_or_else(|| StoreError::MissingFile { path: path.clone() })?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path,
            file_offset: 0,
            reason: e.to_string(),
        })
    }

    /// Applies retention's cut at `first_position`: see the module doc. Returns whether it
    /// moved the floor (a cut at or below the floor, or at no segment start, changes nothing).
    fn purge_locked(&self, state: &mut State<D>, first_position: u64) -> Result<bool, StoreError> {
        if state.floor.is_some_and(|f| f.position >= first_position) {
            // At or below the floor: applied before, or below a snapshot this replica was
            // restored from.
            return Ok(false);
        }
        let Some(mark) = state.bases.get(&first_position).copied() else {
            tracing::warn!(first_position, "purge at no segment start: ignored");
            return Ok(false);
        };
        let base = self.read_base(first_position)?;
        let queues: Vec<(String, i32)> = state
            .queues
            .queues()
            .map(|(topic, queue_id)| (topic.to_string(), queue_id))
            .collect();
        for (topic, queue_id) in queues {
            let Some(queue) = state.queues.get_mut(&topic, queue_id) else {
                continue;
            };
            let key = (topic, queue_id);
            let from = queue
                .queue_offset_min()
                .max(state.queue_floors.get(&key).copied().unwrap_or(0));
            let min = first_unit_at_or_after(queue, from, first_position)?;
            queue.purge_before(min)?;
            state.queue_floors.insert(key, min);
        }
        state.index.purge_before(first_position)?;
        state.timers.purge_before(base.timers.scan_from)?;
        let half_floor = state
            .queue_floors
            .get(&(system_topic::TRANS_HALF.to_string(), 0))
            .copied()
            .unwrap_or(0);
        state.transactions.purge_before(half_floor)?;
        let gone: Vec<u64> = state
            .bases
            .range(..first_position)
            .map(|(p, _)| *p)
            .collect();
        for position in gone {
            state.bases.remove(&position);
            let path = base_path(&self.config.root, position);
            if let Err(err) = self.disk.remove(&path)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                return Err(meta_error(crate::error::Verb::Remove, path, err));
            }
        }
        state.floor = Some(mark);
        tracing::info!(first_position, last = ?mark.last, "retention: CommitLog cut");
        Ok(true)
    }

    /// The snapshot at `floor` (its base, and the timer units pending at it).
    fn snapshot_at(&self, floor: BaseMark) -> Result<dledger::Snapshot, StoreError> {
        let base = self.read_base(floor.position)?;
        let state = self.read_state();
        let units = state
            .timers
            .units(base.timers.scan_from, base.timers.seen)?;
        let halves_from = Transactions::<D>::snapshot_from(&base.transactions);
        let halves = state
            .transactions
            .units(halves_from, base.transactions.length)?;
        drop(state);
        Ok(dledger::Snapshot {
            last: floor.last,
            next_position: Some(floor.position),
            data: seal_snapshot(&base, &units, &halves),
        })
    }

    /// The snapshot at the floor, `None` before any purge.
    ///
    /// # Errors
    /// The floor's base cannot be read.
    pub fn snapshot(&self) -> Result<Option<dledger::Snapshot>, StoreError> {
        let floor = self.read_state().floor;
        floor.map(|f| self.snapshot_at(f)).transpose()
    }

    /// The floor's entry: what the log may be purged up to.
    pub fn snapshot_point(&self) -> Option<LogId> {
        self.read_state().floor.map(|f| f.last)
    }

    /// Replaces the whole state with a snapshot's, durably: queues start where its base says
    /// (empty), the index is empty, topics, offsets and timers are the base's.
    ///
    /// # Errors
    /// An undecodable snapshot or a file error; the store must not be used after one.
    pub fn restore(&self, snapshot: &dledger::Snapshot) -> Result<(), ApplyError> {
        let index = snapshot.last.index;
        let (base, units, halves) = unseal_snapshot(index, &snapshot.data)?;
        if base.mark.last != snapshot.last || snapshot.next_position != Some(base.mark.position) {
            return Err(apply_error(
                index,
                format!(
                    "snapshot at {:?} (next position {:?}) carries the base of {:?}",
                    snapshot.last, snapshot.next_position, base.mark
                ),
            ));
        }
        let fail = |e: StoreError| apply_error(index, e);
        let mut state = self.write_state();
        let existing: Vec<(String, i32)> = state
            .queues
            .queues()
            .map(|(topic, queue_id)| (topic.to_string(), queue_id))
            .collect();
        for (topic, queue_id) in &existing {
            if let Some(queue) = state.queues.get_mut(topic, *queue_id) {
                queue.clear().map_err(fail)?;
            }
        }
        state.index.clear().map_err(fail)?;
        state.queue_floors.clear();
        for q in &base.queues {
            let queue = state
                .queues
                .get_or_create(&q.topic, q.queue_id)
                .map_err(fail)?;
            queue.start_at(q.next).map_err(fail)?;
            state
                .queue_floors
                .insert((q.topic.clone(), q.queue_id), q.next);
        }
        state.timers.restore(base.timers, &units).map_err(fail)?;
        let halves_from = Transactions::<D>::snapshot_from(&base.transactions);
        state
            .transactions
            .restore(base.transactions, halves_from, &halves)
            .map_err(fail)?;
        state.topics = base
            .topics
            .iter()
            .map(|t| (t.topic_name.clone(), t.clone()))
            .collect();
        state.offsets = base
            .offsets
            .iter()
            .map(|o| ((o.group.clone(), o.topic.clone(), o.queue_id), o.offset))
            .collect();
        self.write_base(&base).map_err(fail)?;
        state.bases = BTreeMap::from([(base.mark.position, base.mark)]);
        state.floor = Some(base.mark);
        state.floor_entry = None;
        state.newest_store_ms = base.mark.newest_store_ms;
        state.applied = Some(base.mark.last);
        self.applied_end
            .store(base.mark.position, Ordering::Release);
        self.results.lock().expect("results").clear();
        self.checkpoint_locked(&mut state).map_err(fail)?;
        drop(state);
        self.applied.send_replace(Some(index));
        tracing::info!(last = ?base.mark.last, position = base.mark.position, "store restored from a snapshot");
        Ok(())
    }

    /// What retention looks at.
    pub fn retention(&self) -> RetentionView {
        let state = self.read_state();
        RetentionView {
            floor: state.floor.map_or(0, |f| f.position),
            purged_through: state.floor.map(|f| f.last),
            bases: state.bases.values().copied().collect(),
            newest_store_ms: state.newest_store_ms,
            floor_entry: state.floor_entry,
        }
    }

    /// The lowest CommitLog offset of a scheduled record not yet delivered.
    ///
    /// # Errors
    /// A file error.
    pub fn first_pending_timer_offset(&self) -> Result<Option<u64>, StoreError> {
        let state = self.read_state();
        let floor = state.floor.map_or(0, |f| f.position);
        state.timers.first_pending_offset(floor)
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
        f: impl FnOnce(&ConsumeQueue<D>) -> Result<R, StoreError>,
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
        let floor = self
            .read_state()
            .queue_floors
            .get(&(topic.to_string(), queue_id))
            .copied()
            .unwrap_or(0);
        self.with_queue(topic, queue_id, |q| {
            Ok(q.queue_offset_min().max(floor).min(q.queue_offset_max()) as i64)
        })
        .unwrap_or_else(|err| {
            tracing::error!(topic, queue_id, cause = %err, "consume queue unreadable");
            None
        })
        .unwrap_or(0)
    }

    /// Up to `max` units of a queue from `from`; none below the queue's min offset.
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
        if (from as i64) < self.min_offset(topic, queue_id) {
            // Below the min: retention cut it (a restored queue holds blanks there).
            return Ok(Vec::new());
        }
        let units = self
            .with_queue(topic, queue_id, |q| q.read(from, max as u64))?
            .unwrap_or_default();
        Ok(units
            .into_iter()
            .enumerate()
            .map(|(i, unit)| QueueItem {
                queue_offset: from as i64 + i as i64,
                commit_log_offset: unit.commit_log_offset,
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
        let state = self.read_state();
        let floor = state.floor.map_or(0, |f| f.position);
        let mut found = state.index.query(
            &index_key(topic, key),
            max,
            begin_ms.max(0) as u64,
            end_ms.max(0) as u64,
        )?;
        found.retain(|offset| *offset >= floor);
        Ok(found)
    }

    /// The timer's delivery progress.
    pub fn timer_progress(&self) -> TimerKey {
        self.read_state().timers.progress()
    }

    /// The timer's counts, for status pages.
    pub fn timer_stats(&self) -> TimerStats {
        self.read_state().timers.stats()
    }

    /// A consistent look at the timer slots `from..=to` (see [`Timers::view`]).
    pub fn timer_view(&self, from: i64, to: i64) -> TimerView {
        self.read_state().timers.view(from, to)
    }

    /// A timer slot's units from `last` back to `stop_below` (see [`Timers::walk`]).
    ///
    /// # Errors
    /// A file error.
    pub fn timer_walk(
        &self,
        last: u64,
        stop_below: u64,
    ) -> Result<Vec<(u64, TimerUnit)>, StoreError> {
        self.read_state().timers.walk(last, stop_below)
    }

    /// What the applied entries did with transactions.
    pub fn transaction_counts(&self) -> TransactionCounts {
        self.read_state().transactions.counts()
    }

    /// Half message `half_offset`, if this replica holds it.
    ///
    /// # Errors
    /// A file error or a corrupt unit.
    pub fn half_unit(&self, half_offset: u64) -> Result<Option<HalfUnit>, StoreError> {
        self.read_state().transactions.get(half_offset)
    }

    /// Up to `max` half units from `from` (or the first held, if later), with their offsets.
    ///
    /// # Errors
    /// A file error or a corrupt unit.
    pub fn half_units(&self, from: u64, max: u64) -> Result<Vec<(u64, HalfUnit)>, StoreError> {
        self.read_state().transactions.read(from, max)
    }

    /// No pending half message comes before this offset; the half log's length.
    pub fn half_window(&self) -> (u64, u64) {
        let state = self.read_state();
        (
            state.transactions.first_pending(),
            state.transactions.length(),
        )
    }

    /// Asserts the invariants of the timer and transaction state (tests and the simulation).
    pub fn check_timer_invariants(&self) {
        self.read_state().timers.check_invariants();
        self.read_state().transactions.check_invariants();
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

/// Every queue's length (its next offset), for a checkpoint or a base.
fn queue_lengths<D: Disk>(state: &State<D>) -> Vec<QueueLength> {
    state
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
        .collect()
}

/// Every committed consumer offset, for a checkpoint or a base.
fn offset_commits<D: Disk>(state: &State<D>) -> Vec<OffsetCommit> {
    state
        .offsets
        .iter()
        .map(|((group, topic, queue_id), offset)| OffsetCommit {
            group: group.clone(),
            topic: topic.clone(),
            queue_id: *queue_id,
            offset: *offset,
        })
        .collect()
}

/// The first queue offset at or after `from` whose unit lies at or past `position` (the queue's
/// end if none does): units of a queue lie in CommitLog order, so a binary search finds it.
fn first_unit_at_or_after<D: Disk>(
    queue: &ConsumeQueue<D>,
    from: u64,
    position: u64,
) -> Result<u64, StoreError> {
    let (mut lo, mut hi) = (from, queue.queue_offset_max());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match queue.get(mid)? {
            Some(unit) if unit.commit_log_offset >= position => hi = mid,
            _ => lo = mid + 1,
        }
    }
    Ok(lo)
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

    fn snapshot_point(&self) -> Option<LogId> {
        self.store.snapshot_point()
    }

    fn snapshot(&mut self) -> Option<dledger::Snapshot> {
        self.store.snapshot().unwrap_or_else(|err| {
            tracing::error!(cause = %err, "the snapshot at the floor cannot be read");
            None
        })
    }

    fn restore(&mut self, snapshot: &dledger::Snapshot) -> Result<(), ApplyError> {
        self.store.restore(snapshot)
    }

    fn discard(&mut self) -> Result<(), ApplyError> {
        self.store.discard().map_err(|e| apply_error(0, e))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use bytes::Bytes;
    use dledger::{MemDisk, SegmentFile as _};
    use protocol::message::{Properties, StoredMessage, java_string_hash};

    use super::*;
    use crate::consume_queue::counting_disk::CountingDisk;

    /// 2023-11-14T22:13:20Z.
    const T0: i64 = 1_700_000_000_000;

    fn config() -> StoreConfig {
        let mut config = StoreConfig::new(PathBuf::from("/store"));
        config.cq_units_per_file = 4;
        config.index = IndexConfig {
            hash_slots: 64,
            entries_max: 1024,
        };
        config
    }

    /// A record for `queue_id` of `topic`, tagged `tags`, with `UNIQ_KEY` `uniq-<n>` and the
    /// space-separated `keys`.
    fn record(topic: &str, queue_id: i32, n: u64, tags: &str, keys: &str) -> Vec<u8> {
        let mut properties = Properties::default();
        properties.set(property::TAGS, tags);
        properties.set(property::UNIQ_KEY, format!("uniq-{n}"));
        if !keys.is_empty() {
            properties.set(property::KEYS, keys);
        }
        let message = StoredMessage {
            topic: topic.into(),
            queue_id,
            flag: 0,
            queue_offset: 0,
            commit_log_offset: 0,
            sys_flag: 0,
            born_timestamp: T0,
            born_host: "127.0.0.1:1".parse().unwrap(),
            store_timestamp: T0 + n as i64,
            store_host: "127.0.0.1:2".parse().unwrap(),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: Bytes::from(format!("body {n}")),
            properties,
        };
        let mut out = Vec::new();
        message.encode(&mut out).unwrap();
        out
    }

    /// A messages entry at `position` holding `records`.
    fn messages_entry(index: u64, position: u64, records: &[Vec<u8>]) -> CommittedEntry {
        CommittedEntry {
            index,
            term: 1,
            position,
            payload: EntryPayload::Data(Bytes::from(entry::messages(&records.concat()))),
        }
    }

    /// Commit-log offsets of the records of an entry at `position`, in record order.
    fn offsets_of(position: u64, records: &[Vec<u8>]) -> Vec<u64> {
        let body = position + u64::from(dledger::limits::ENTRY_HEADER_BYTES);
        let mut at = (body + entry::ENTRY_HEADER_BYTES as u64, Vec::new());
        for record in records {
            at.1.push(at.0);
            at.0 += record.len() as u64;
        }
        at.1
    }

    /// Records of one entry spread over queues in no order get dense queue offsets per queue in
    /// record order, continuing across entries; the placement lists them in record order; each
    /// unit points at its record with its tags' hash; and every key is queryable at once. Neither
    /// the ConsumeQueues nor the index write anything before their bounds.
    #[test]
    fn apply_places_records_per_queue_in_record_order() {
        let disk = CountingDisk::new(MemDisk::new());
        let store = Store::open(disk.clone(), config()).unwrap();
        let layout = [("A", 0), ("A", 1), ("A", 0), ("B", 0), ("A", 1), ("A", 0)];
        let records: Vec<Vec<u8>> = (0u64..)
            .zip(layout)
            .map(|(n, (topic, queue_id))| record(topic, queue_id, n, "TagA", &format!("k{n} all")))
            .collect();
        store.apply(&messages_entry(1, 0, &records)).unwrap();
        assert_eq!(
            store.take_placement(1).unwrap(),
            vec![(0, 0), (1, 0), (0, 1), (0, 0), (1, 1), (0, 2)]
        );
        assert_eq!(
            disk.writes(),
            0,
            "ConsumeQueue units and the index wait in memory"
        );
        let offsets = offsets_of(0, &records);
        let items = store.read_queue("A", 0, 0, 10).unwrap();
        let expected: Vec<QueueItem> = [0usize, 2, 5]
            .into_iter()
            .zip(0..)
            .map(|(r, queue_offset)| QueueItem {
                queue_offset,
                commit_log_offset: offsets[r],
                size: records[r].len() as u32,
                tags_code: i64::from(java_string_hash("TagA")),
            })
            .collect();
        assert_eq!(items, expected);
        assert_eq!(store.max_offset("B", 0), 1);
        assert_eq!(
            store.query_key("A", "k2", 10, 0, i64::MAX).unwrap(),
            vec![offsets[2]]
        );
        assert_eq!(
            store.query_key("A", "uniq-4", 10, 0, i64::MAX).unwrap(),
            vec![offsets[4]]
        );
        assert_eq!(
            store.query_key("A", "all", 10, 0, i64::MAX).unwrap(),
            [5, 4, 2, 1, 0].map(|r| offsets[r]).to_vec()
        );
        assert_eq!(
            store.query_key("B", "all", 10, 0, i64::MAX).unwrap(),
            vec![offsets[3]]
        );

        let position = 10_000;
        let more = vec![record("A", 1, 6, "", ""), record("A", 0, 7, "", "")];
        store.apply(&messages_entry(2, position, &more)).unwrap();
        assert_eq!(store.take_placement(2).unwrap(), vec![(1, 2), (0, 3)]);
        let item = store.read_queue("A", 0, 3, 1).unwrap();
        assert_eq!(item[0].commit_log_offset, offsets_of(position, &more)[1]);
        assert_eq!(item[0].tags_code, 0, "no tags");
    }

    /// A checkpoint is written once `checkpoint_interval` passed since the last, however few
    /// entries applied (the count bound alone is far off): a restart applies again at most
    /// that interval's entries.
    #[tokio::test(start_paused = true)]
    async fn a_checkpoint_follows_the_interval_as_well_as_the_count() {
        let disk = MemDisk::new();
        let store = Store::open(disk.clone(), config()).unwrap();
        let interval = config().checkpoint_interval;
        let checkpointed = || -> Option<u64> {
            let bytes = disk.read_meta(&checkpoint_path(&config().root)).unwrap()?;
            let checkpoint: Checkpoint = serde_json::from_slice(&bytes).unwrap();
            checkpoint.applied.map(|a| a.index)
        };
        store
            .apply(&messages_entry(1, 0, &[record("A", 0, 0, "t", "")]))
            .unwrap();
        tokio::time::advance(interval / 2).await;
        store
            .apply(&messages_entry(2, 1_000, &[record("A", 0, 1, "t", "")]))
            .unwrap();
        assert_eq!(checkpointed(), None, "half the interval: no checkpoint yet");
        tokio::time::advance(interval).await;
        store
            .apply(&messages_entry(3, 2_000, &[record("A", 0, 2, "t", "")]))
            .unwrap();
        assert_eq!(checkpointed(), Some(3));
        drop(store);
        let reopened = Store::open(disk.crash(), config()).unwrap();
        assert_eq!(reopened.last_applied().map(|l| l.index), Some(3));
        assert_eq!(reopened.max_offset("A", 0), 3);
    }

    /// A checkpoint syncs the index's buffered puts: after a crash the keys are still there.
    #[test]
    fn checkpoint_makes_buffered_index_puts_durable() {
        let disk = MemDisk::new();
        let store = Store::open(disk.clone(), config()).unwrap();
        let records = vec![record("A", 0, 0, "t", "k"), record("A", 0, 1, "t", "k")];
        store.apply(&messages_entry(1, 0, &records)).unwrap();
        store.checkpoint().unwrap();
        drop(store);
        let store = Store::open(disk.crash(), config()).unwrap();
        let offsets = offsets_of(0, &records);
        assert_eq!(
            store.query_key("A", "k", 10, 0, i64::MAX).unwrap(),
            vec![offsets[1], offsets[0]]
        );
        assert_eq!(store.last_applied().map(|a| a.index), Some(1));
    }

    /// A queue shorter than the checkpoint makes the store rebuild from the log, emptying every
    /// queue, including one whose first files were purged (which `truncate_from(0)` refuses):
    /// the store opens empty and applying the log again places each record as the first time.
    #[test]
    fn rebuild_clears_a_queue_whose_first_files_were_purged() {
        let disk = MemDisk::new();
        let store = Store::open(disk.clone(), config()).unwrap();
        let mut records: Vec<Vec<u8>> = (0..10).map(|n| record("A", 0, n, "t", "")).collect();
        records.extend((10..12).map(|n| record("A", 1, n, "t", "")));
        let entry = messages_entry(1, 0, &records);
        store.apply(&entry).unwrap();
        let placement = store.take_placement(1).unwrap();
        store.checkpoint().unwrap();
        drop(store);

        let queue_0 = config().root.join("consumequeue").join("A").join("0");
        let mut queue = ConsumeQueue::open(disk.clone(), &queue_0, 4).unwrap();
        assert_eq!(queue.purge_before(8).unwrap(), 2);
        drop(queue);
        let queue_1 = config().root.join("consumequeue").join("A").join("1");
        disk.remove(&queue_1.join("00000000000000000000")).unwrap();

        let store = Store::open(disk.clone(), config()).unwrap();
        assert_eq!(store.last_applied(), None, "the store starts over");
        for queue_id in [0, 1] {
            assert_eq!(store.min_offset("A", queue_id), 0);
            assert_eq!(store.max_offset("A", queue_id), 0);
        }
        store.apply(&entry).unwrap();
        assert_eq!(store.take_placement(1).unwrap(), placement);
        assert_eq!(store.read_queue("A", 0, 0, 100).unwrap().len(), 10);
        let file = disk
            .open_segment(&queue_0.join("00000000000000000000"), 80)
            .unwrap();
        assert_eq!(file.len(), 80, "the queue's first file is back");
    }

    /// `discard` forgets every queue, key, topic and offset, durably: the store reopens empty
    /// and applying the log again places each record as the first time.
    #[test]
    fn discard_forgets_everything_applied_durably() {
        let disk = MemDisk::new();
        let store = Store::open(disk.clone(), config()).unwrap();
        let records: Vec<Vec<u8>> = (0..6)
            .map(|n| record("A", (n % 2) as i32, n, "t", "k"))
            .collect();
        let entry = messages_entry(1, 0, &records);
        store.apply(&entry).unwrap();
        let placement = store.take_placement(1).unwrap();
        store.checkpoint().unwrap();

        store.discard().unwrap();
        let empty = |store: &Store<MemDisk>| {
            assert_eq!(store.last_applied(), None);
            assert_eq!(store.applied_end(), 0);
            assert_eq!(store.max_offset("A", 0), 0);
            assert!(
                store
                    .query_key("A", "k", 10, 0, i64::MAX)
                    .unwrap()
                    .is_empty()
            );
        };
        empty(&store);
        drop(store);
        let store = Store::open(disk.crash(), config()).unwrap();
        empty(&store);

        store.apply(&entry).unwrap();
        assert_eq!(store.take_placement(1).unwrap(), placement);
        assert_eq!(store.read_queue("A", 1, 0, 10).unwrap().len(), 3);
        assert_eq!(store.query_key("A", "k", 10, 0, i64::MAX).unwrap().len(), 6);
    }

    /// A data entry of any store payload at `position`.
    fn data_entry(index: u64, position: u64, body: Vec<u8>) -> CommittedEntry {
        CommittedEntry {
            index,
            term: 1,
            position,
            payload: EntryPayload::Data(Bytes::from(body)),
        }
    }

    /// Segments of 10,000 bytes: entries 1–3 in the first, 4–5 in the second, 6 and the purge
    /// (7) in the third. Entry 3 commits an offset.
    fn retention_log() -> Vec<CommittedEntry> {
        let r = |n: u64, queue_id: i32| record("A", queue_id, n, "t", &format!("k{n}"));
        vec![
            messages_entry(1, 0, &[r(0, 0), r(1, 0), r(2, 0)]),
            messages_entry(2, 1_000, &[r(3, 0), r(4, 1)]),
            data_entry(
                3,
                2_000,
                entry::offsets(&[OffsetCommit {
                    group: "g".into(),
                    topic: "A".into(),
                    queue_id: 0,
                    offset: 2,
                }]),
            ),
            messages_entry(4, 10_000, &[r(5, 0), r(6, 0)]),
            messages_entry(5, 11_000, &[r(7, 1)]),
            messages_entry(6, 20_000, &[r(8, 0)]),
            data_entry(7, 21_000, entry::purge(10_000)),
        ]
    }

    fn retention_config() -> StoreConfig {
        let mut config = config();
        config.segment_bytes = 10_000;
        config
    }

    /// What a replica serves of queue `queue_id` of `A`: its bounds and units.
    fn served(store: &Store<MemDisk>, queue_id: i32) -> (i64, i64, Vec<QueueItem>) {
        let min = store.min_offset("A", queue_id);
        let max = store.max_offset("A", queue_id);
        (min, max, store.read_queue("A", queue_id, min, 100).unwrap())
    }

    /// A purge at a segment start moves every queue's min offset to its first unit in a kept
    /// segment, hides the keys of purged messages, and names the entry before the segment as
    /// the snapshot point. A store restored from the snapshot and given the entries after that
    /// point serves what the purged store serves; after a crash it is back at the snapshot
    /// (durably restored) and serves the same once the entries are applied again.
    #[test]
    fn a_store_restored_from_the_snapshot_serves_what_the_purged_one_does() {
        let log = retention_log();
        let disk = MemDisk::new();
        let store = Store::open(disk.clone(), retention_config()).unwrap();
        for entry in &log[..6] {
            store.apply(entry).unwrap();
        }
        assert_eq!(store.snapshot_point(), None);
        assert_eq!(
            store.snapshot().unwrap(),
            None,
            "no snapshot before a purge"
        );
        assert_eq!(
            store
                .retention()
                .bases
                .iter()
                .map(|b| b.position)
                .collect::<Vec<_>>(),
            vec![10_000, 20_000]
        );
        assert_eq!(store.min_offset("A", 0), 0);
        store.apply(&log[6]).unwrap();
        let point = LogId { term: 1, index: 3 };
        assert_eq!(store.snapshot_point(), Some(point));
        assert_eq!(store.retention().floor, 10_000);
        assert_eq!(
            served(&store, 0).0,
            4,
            "four units of queue 0 lay before 10,000"
        );
        assert_eq!(served(&store, 0).1, 7);
        assert_eq!(served(&store, 1).0, 1);
        assert!(
            served(&store, 0)
                .2
                .iter()
                .all(|u| u.commit_log_offset >= 10_000)
        );
        assert!(
            store
                .query_key("A", "k0", 10, 0, i64::MAX)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.query_key("A", "k5", 10, 0, i64::MAX).unwrap().len(),
            1
        );
        assert_eq!(store.consumer_offset("g", "A", 0), Some(2));

        let snapshot = store.snapshot().unwrap().expect("a snapshot at the floor");
        assert_eq!(snapshot.last, point);
        assert_eq!(snapshot.next_position, Some(10_000));

        let other_disk = MemDisk::new();
        let restored = Store::open(other_disk.clone(), retention_config()).unwrap();
        restored.restore(&snapshot).unwrap();
        assert_eq!(restored.last_applied(), Some(point));
        assert_eq!(restored.consumer_offset("g", "A", 0), Some(2));
        assert_eq!(restored.max_offset("A", 0), 4);
        for entry in &log[3..] {
            restored.apply(entry).unwrap();
        }
        for queue_id in [0, 1] {
            assert_eq!(served(&restored, queue_id), served(&store, queue_id));
        }
        assert_eq!(restored.snapshot_point(), Some(point));
        assert_eq!(restored.retention(), store.retention());
        restored.check_timer_invariants();
        drop(restored);
        let reopened = Store::open(other_disk.crash(), retention_config()).unwrap();
        assert_eq!(
            reopened.last_applied(),
            Some(point),
            "the restore was durable"
        );
        for entry in &log[3..] {
            reopened.apply(entry).unwrap();
        }
        for queue_id in [0, 1] {
            assert_eq!(served(&reopened, queue_id), served(&store, queue_id));
        }
        assert_eq!(reopened.snapshot_point(), Some(point));
        assert_eq!(
            reopened.snapshot().unwrap().unwrap().data,
            snapshot.data,
            "the restored store gives the same snapshot"
        );
    }

    /// Discarding a purged store goes back to the floor, not to nothing: the log before it is
    /// gone, and applying the entries after the floor again serves the same queues.
    #[test]
    fn discard_after_a_purge_goes_back_to_the_floor() {
        let log = retention_log();
        let store = Store::open(MemDisk::new(), retention_config()).unwrap();
        for entry in &log {
            store.apply(entry).unwrap();
        }
        let before = (served(&store, 0), served(&store, 1));
        store.discard().unwrap();
        assert_eq!(store.last_applied(), Some(LogId { term: 1, index: 3 }));
        assert_eq!(store.max_offset("A", 0), 4);
        for entry in &log[3..] {
            store.apply(entry).unwrap();
        }
        assert_eq!((served(&store, 0), served(&store, 1)), before);
    }

    /// A purge naming no segment start, or one at or below the floor, changes nothing; a
    /// snapshot that does not decode, or whose base is not at its point, is refused naming why,
    /// and the store keeps serving.
    #[test]
    fn bad_purges_and_snapshots_change_nothing() {
        let log = retention_log();
        let store = Store::open(MemDisk::new(), retention_config()).unwrap();
        for entry in &log[..6] {
            store.apply(entry).unwrap();
        }
        store
            .apply(&data_entry(7, 21_000, entry::purge(10_500)))
            .unwrap();
        assert_eq!(store.snapshot_point(), None, "10,500 starts no segment");
        store
            .apply(&data_entry(8, 21_100, entry::purge(20_000)))
            .unwrap();
        let floor = store.retention().floor;
        assert_eq!(floor, 20_000);
        store
            .apply(&data_entry(9, 21_200, entry::purge(10_000)))
            .unwrap();
        assert_eq!(store.retention().floor, floor, "a floor never moves back");
        let served_before = served(&store, 0);

        let good = store.snapshot().unwrap().unwrap();
        let other = Store::open(MemDisk::new(), retention_config()).unwrap();
        let mut truncated = good.clone();
        truncated.data.truncate(3);
        let err = other.restore(&truncated).unwrap_err();
        assert!(err.reason.contains("undecodable snapshot"), "{err}");
        let mut elsewhere = good.clone();
        elsewhere.next_position = Some(10_000);
        let err = other.restore(&elsewhere).unwrap_err();
        assert!(err.reason.contains("carries the base"), "{err}");
        other.restore(&good).unwrap();
        assert_eq!(served(&store, 0), served_before);
        assert_eq!(
            other.max_offset("A", 0),
            served_before.0,
            "restored to the floor: its queue ends where the purged store's starts"
        );
    }

    /// A half message goes to the half queue and log; a commit's record reaches its real queue
    /// once, however often the commit comes, and a rollback's never; after a crash the replayed
    /// entries place the committed record exactly where the first apply did.
    #[test]
    fn transactions_commit_once_and_replay_alike() {
        use crate::transactions::{Action, HalfState, Outcome};
        let disk = MemDisk::new();
        let store = Store::open(disk.clone(), config()).unwrap();
        let halves = vec![
            record(system_topic::TRANS_HALF, 0, 0, "t", ""),
            record(system_topic::TRANS_HALF, 0, 1, "t", ""),
        ];
        store.apply(&messages_entry(1, 0, &halves)).unwrap();
        store.checkpoint().unwrap();
        assert_eq!(store.half_window(), (0, 2));
        let commit = |half_offset| Outcome {
            half_offset,
            action: Action::Commit,
            expected_checks: 0,
            at_ms: T0,
            record: Some(0),
        };
        let rollback = Outcome {
            half_offset: 1,
            action: Action::Rollback,
            expected_checks: 0,
            at_ms: T0,
            record: None,
        };
        let mut position = 10_000;
        let mut log = Vec::new();
        for (index, outcomes) in [
            (2, vec![commit(0)]),
            (3, vec![commit(0), rollback]),
            (4, vec![commit(1)]),
        ] {
            let committed = record("Real", 1, 9, "t", "");
            let body = entry::transactions(&outcomes, &committed);
            log.push(data_entry(index, position, body));
            position += 10_000;
        }
        for e in &log {
            store.apply(e).unwrap();
        }
        let placed = store.take_placement(3).unwrap();
        assert_eq!(placed, vec![(1, -1)], "the second commit went nowhere");
        assert_eq!(store.max_offset("Real", 1), 1, "committed once");
        assert_eq!(
            store.half_unit(0).unwrap().unwrap().state,
            HalfState::Committed
        );
        assert_eq!(
            store.half_unit(1).unwrap().unwrap().state,
            HalfState::RolledBack
        );
        let counts = store.transaction_counts();
        assert_eq!(
            (
                counts.halves,
                counts.commits,
                counts.rollbacks,
                counts.pending()
            ),
            (2, 1, 1, 0)
        );
        assert_eq!(store.half_window(), (2, 2));
        let before = store.read_queue("Real", 1, 0, 10).unwrap();
        store.check_timer_invariants();
        // A crash after the checkpoint of entry 1: the half units hold the outcomes already,
        // and entries 2–4 apply again.
        drop(store);
        let store = Store::open(disk.crash(), config()).unwrap();
        assert_eq!(store.last_applied().map(|a| a.index), Some(1));
        for e in &log {
            store.apply(e).unwrap();
        }
        assert_eq!(store.read_queue("Real", 1, 0, 10).unwrap(), before);
        assert_eq!(store.transaction_counts(), counts);
        store.check_timer_invariants();
    }

    /// The borrowed reading finds the three names wherever they are, takes the last of a
    /// repeated name, and skips a piece with an empty value, as Java's parser does.
    #[test]
    fn indexed_properties_read_tags_uniq_key_and_keys() {
        let text = "TAGS\u{1}a\u{2}KEYS\u{1}k1 k2\u{2}UNIQ_KEY\u{1}u\u{1}v\u{2}TAGS\u{1}b\u{2}KEYS\u{1}\u{2}TIMER_OUT_MS\u{1}12\u{2}TIMER_DEL_UNIQKEY\u{1}T+u\u{2}CHECK_IMMUNITY_TIME_IN_SECONDS\u{1}30";
        assert_eq!(
            IndexedProperties::parse(text),
            IndexedProperties {
                tags: Some("b"),
                uniq_key: Some("u\u{1}v"),
                keys: Some("k1 k2"),
                timer_out_ms: Some("12"),
                timer_del: true,
                check_immunity: Some("30"),
            }
        );
        assert_eq!(IndexedProperties::parse(""), IndexedProperties::default());
    }

    proptest::proptest! {
        /// The borrowed reading of TAGS, UNIQ_KEY and KEYS agrees with `Properties::parse` on
        /// any text made of those names, other names, values and both separators.
        #[test]
        fn indexed_properties_agree_with_properties_parse(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "TAGS", "KEYS", "UNIQ_KEY", "TAG", "x", "", "a b", "\u{1}", "\u{2}", "é",
                ]),
                0..16,
            )
        ) {
            let text = pieces.concat();
            let full = Properties::parse(&text);
            let found = IndexedProperties::parse(&text);
            proptest::prop_assert_eq!(found.tags, full.get(property::TAGS));
            proptest::prop_assert_eq!(found.uniq_key, full.get(property::UNIQ_KEY));
            proptest::prop_assert_eq!(found.keys, full.get(property::KEYS));
        }
    }
}
