//! The bounds of the `raftmq` command's own settings, each with its reason (CONVENTIONS.md §5).

/// Replicas of one group at most: a DLedger group of more than five only adds latency (every
/// commit waits for a majority) and replication traffic.
pub const REPLICAS_MAX: usize = 5;

/// `defaultTopicQueueNums` at most: a topic's queues are directories on every replica
/// (`broker::limits::TOPIC_QUEUES_MAX`).
pub const DEFAULT_TOPIC_QUEUES_MAX: i32 = broker::limits::TOPIC_QUEUES_MAX;

/// `maxMessageSize` at most: a message travels in one frame and one Raft entry, and RocketMQ's
/// clients cap bodies at 4 MiB by default.
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Largest `timerMaxDelaySec`: 400 days. The timer index keeps one slot summary per second that
/// holds messages, so the furthest due time bounds its memory.
pub const TIMER_MAX_DELAY_MAX: std::time::Duration =
    std::time::Duration::from_secs(400 * 24 * 3600);

/// Longest `fileReservedTime`: ten years, in hours. Retention's arithmetic stays far from
/// overflow, and no deployment keeps data longer through this setting.
pub const FILE_RESERVED_HOURS_MAX: u64 = 10 * 366 * 24;

/// Largest `transactionCheckMax`: with the default 30 s between checks, a half message is asked
/// about for at most about 3.5 days, RocketMQ's default retention, before it is given up.
pub const TRANSACTION_CHECK_MAX_MAX: u32 = 10_000;
