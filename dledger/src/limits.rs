//! Every bound of the replicated log, in one place, each with the reason for its value.

/// Largest body one log entry may carry. RocketMQ's default `maxMessageSize` is 4 MiB and a
/// batch entry holds many messages, so an entry gets some room above one message.
pub const ENTRY_BODY_BYTES_MAX: u32 = 8 * 1024 * 1024;

/// Bytes of the fixed header in front of every entry in a segment file. The body starts at
/// this offset, as in DLedger (`BODY_OFFSET = 48`), so a RocketMQ message's commit-log offset is
/// the entry position plus this.
pub const ENTRY_HEADER_BYTES: u32 = 48;

/// Bytes of one unit in the index files: index, term, position, size, CRC.
pub const INDEX_UNIT_BYTES: u32 = 32;
const _: () = assert!(INDEX_UNIT_BYTES == 8 + 8 + 8 + 4 + 4);

/// Smallest segment accepted by the configuration: room for the largest entry, so no entry
/// ever spans two files.
pub const SEGMENT_BYTES_MIN: u64 = 4096;

/// Default segment size, RocketMQ's CommitLog file size.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;

/// Default number of index units per index file (32 B each: 160 MiB files, as DLedger).
pub const INDEX_UNITS_PER_FILE_DEFAULT: u64 = 5 * 1024 * 1024;

/// Largest Raft RPC frame accepted from a peer. Checked against the length prefix before the
/// read buffer grows. One AppendEntries carries at most `REPLICATION_BATCH_BYTES_MAX` of entries
/// past its first, and the first may be the largest entry.
pub const RAFT_FRAME_BYTES_MAX: u32 = 64 * 1024 * 1024;

/// How many bytes of entries one AppendEntries request carries beyond its first entry. Bounds the
/// frame size; big enough that 1 KiB entries go hundreds to a request.
pub const REPLICATION_BATCH_BYTES_MAX: u64 = 2 * 1024 * 1024;
const _: () = assert!(
    (ENTRY_BODY_BYTES_MAX as u64) + REPLICATION_BATCH_BYTES_MAX + 65536
        < RAFT_FRAME_BYTES_MAX as u64
);

/// Entries per AppendEntries request, an upper bound beside the byte bound.
pub const REPLICATION_BATCH_ENTRIES_MAX: u64 = 1024;

/// AppendEntries requests in flight on one replication stream before the sender waits for
/// responses. openraft's receiver buffers 64 (`PIPELINE_BUFFER_SIZE`); a few more keeps its
/// buffer full while responses travel back.
pub const STREAM_IN_FLIGHT_MAX: usize = 96;

/// Callbacks waiting for the flusher. openraft submits at most `max_append_entries` per append
/// and waits for flushes before it runs far ahead, so this is only a guard.
pub const FLUSH_QUEUE_MAX: usize = 65536;

/// Inbound Raft connections served at once. A 5-replica group needs a handful per peer.
pub const RAFT_CONNECTIONS_MAX: usize = 256;

/// Longest wait between two dial attempts to an unreachable peer.
pub const DIAL_BACKOFF_MAX_MS: u64 = 1000;

/// First wait after a failed dial.
pub const DIAL_BACKOFF_MIN_MS: u64 = 10;

/// Size of a persisted metadata file (vote, committed, purged, membership) we accept.
pub const META_FILE_BYTES_MAX: usize = 1024 * 1024;

/// Bytes of the committed region, counted back from the committed entry, whose checksums
/// recovery verifies at start. Damage there stops the replica before it serves; older entries are
/// verified on every read instead, so a start never reads the whole log.
pub const RECOVERY_VERIFY_BYTES: u64 = 64 * 1024 * 1024;

/// Entries a log keeps in memory after appending them, to answer reads (replication to
/// followers, apply) without copying them back out of its files and checking their CRCs again:
/// under load every entry is read about five times across a group, ~3% of its CPU. Damage to
/// the files under an entry held here is caught when it is read from the files, after it left.
/// At most this many…
pub const RECENT_ENTRIES_MAX: usize = 1024;

/// …and this many body bytes per log.
pub const RECENT_BYTES_MAX: u64 = 32 * 1024 * 1024;

/// Bytes of snapshot data per RPC frame: a snapshot goes to a replica in parts this size, so no
/// frame nears `RAFT_FRAME_BYTES_MAX` however large the store's state grows.
pub const SNAPSHOT_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Largest snapshot a replica accepts, checked against the size the first part announces
/// before any buffer grows: the store's snapshot holds topics, offsets, queue lengths and the
/// pending timer units (32 bytes each), far below this.
pub const SNAPSHOT_BYTES_MAX: u64 = 2 * 1024 * 1024 * 1024;

const _: () = assert!((SNAPSHOT_CHUNK_BYTES as u64) + 65536 < RAFT_FRAME_BYTES_MAX as u64);

/// Room the log leaves free on its disk: it stops appending (its replica stops taking part)
/// while less than this is available, so the message store, which writes its queues, indexes
/// and checkpoints after the log, never meets a full disk halfway through applying an entry.
/// The store writes a few per cent of what the log does. At most this…
pub const DISK_RESERVE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// …and at most the disk's size divided by this (a small disk keeps a small reserve).
pub const DISK_RESERVE_DIVISOR: u64 = 20;

/// How stale the log's reading of its disk's room may get. Between readings it counts what it
/// appended against what the last reading left above the reserve, and reads again sooner when
/// that runs out.
pub const SPACE_READ_INTERVAL_MS: u64 = 100;

/// How often a replica waiting for disk space looks again.
pub const SPACE_RETRY_INTERVAL_MS: u64 = 200;

/// CommitLog bytes behind the newest synced position that stay in the page cache: the apply,
/// followers a few seconds behind and tail consumers read them from memory. Older bytes are
/// dropped once synced (`SegmentFile::drop_cache`), so the page cache does not grow with the
/// log: a cache full of cold log crowds out what readers need, and on the project's VM every
/// page-cache page written into memory not used for a while costs 3-4x (BENCHMARKS.md, issue
/// 14 item 7). A reader further behind reads from disk, as it would once the log outgrew RAM.
pub const PAGE_CACHE_KEEP_BYTES: u64 = 256 * 1024 * 1024;

/// Bytes gathered behind [`PAGE_CACHE_KEEP_BYTES`] before they are dropped in one go: a few
/// calls per second at full speed, not one per flush.
pub const PAGE_CACHE_DROP_STEP_BYTES: u64 = 16 * 1024 * 1024;
