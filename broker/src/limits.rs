//! Every bound of the broker, each with the reason for its value (CONVENTIONS.md §5). The
//! settings a deployment changes live in [`crate::config`]; these are the fixed ones.

use std::time::Duration;

/// Most messages in one pull answer.
pub const PULL_MESSAGES_MAX: usize = 32;

/// Most bytes in one pull answer (RocketMQ: 256 KiB from memory).
pub const PULL_BYTES_MAX: usize = 256 * 1024;

/// Most messages in one QUERY_MESSAGE answer.
pub const QUERY_MESSAGES_MAX: usize = 32;

/// Longest a send waits to be stored: committed on a quorum and applied. Far past any commit
/// of a healthy group; a group that cannot commit refuses sends long before (check-quorum).
pub const SEND_STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a queue lock of an orderly consumer lasts without renewal (RocketMQ: 60 s;
/// clients renew every 20 s).
pub const QUEUE_LOCK_TTL: Duration = Duration::from_secs(60);

/// Most queues a topic may have: each is a ConsumeQueue directory on every replica.
pub const TOPIC_QUEUES_MAX: i32 = 1024;

/// How long a RAFTMQ_TRANSFER_LEADER request waits for the target to take over, unless it says.
pub const TRANSFER_WAIT_DEFAULT: Duration = Duration::from_secs(5);

/// The longest wait a RAFTMQ_TRANSFER_LEADER request may ask for: sends are held that long.
pub const TRANSFER_WAIT_MAX: Duration = Duration::from_secs(30);

/// Raft entries proposed and not yet answered, at most. Sends arriving while all are in flight
/// wait and go out together in the next entry. Measured through `raftmq dev` with 256 senders
/// (BENCHMARKS.md): 64 gave ~3 records per entry, 16 gives ~9 and 8 ~17, at the same
/// throughput within noise and the same latency; fewer, larger entries cost less per message.
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 16;

/// Consumer offset commits gathered into one entry at most: one entry stays far below the
/// entry size limit (a commit is ~100 bytes).
pub const OFFSET_COMMITS_PER_ENTRY_MAX: usize = 4096;

/// Longest wait for an entry of consumer offsets to commit before the batch is given up (the
/// consumers commit again at their next interval).
pub const OFFSET_COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Deadline of one registration with a name server (RocketMQ's `registerBrokerTimeoutMills`
/// is 24 s; a new leader's registration is what moves clients, so a dead name server must not
/// hold it up).
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(3);

/// Deadline of one unregistration at shutdown.
pub const UNREGISTER_TIMEOUT: Duration = Duration::from_secs(1);

/// How soon a follower registers again when its last registration named no master: the answer
/// is how it learns the leader's client address.
pub const MASTERLESS_REGISTER_INTERVAL: Duration = Duration::from_secs(1);

/// How often silent consumers are looked for (their timeout is `client_timeout`).
pub const CLIENT_EXPIRY_SCAN: Duration = Duration::from_secs(10);

/// Most delay levels `messageDelayLevel` may list: level `n` waits in queue `n - 1` of
/// `SCHEDULE_TOPIC_XXXX`, and a topic has at most [`TOPIC_QUEUES_MAX`] queues.
pub const DELAY_LEVELS_MAX: usize = TOPIC_QUEUES_MAX as usize;

/// Most scheduled messages delivered in one entry (also bounded by `batch_bytes_max`): large
/// enough that 40,000 falling due in a second take ~20 entries, small enough that an entry's
/// records are read and encoded in a few milliseconds.
pub const DELIVERY_RECORDS_MAX: usize = 2048;

/// Longest the scheduler waits for a deliveries entry to commit before it looks again (a
/// replica that lost its quorum stops taking writes long before).
pub const DELIVERY_COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest the scheduler sleeps while nothing is due: a message sent now and due sooner than
/// what the scheduler waits for is found this late at most, and a replica that starts taking
/// writes starts delivering this soon.
pub const SCHEDULER_TICK: Duration = Duration::from_millis(50);

/// How long an added replica may take to catch up before it is taken out again, unless the
/// request says: a fresh replica copies the retained log (or a snapshot and the log after it).
pub const ADD_REPLICA_WAIT_DEFAULT: Duration = Duration::from_secs(60);

/// The longest catch-up an add-replica request may allow.
pub const ADD_REPLICA_WAIT_MAX: Duration = Duration::from_secs(600);

/// How often the transaction check service looks whether a pass is due (passes themselves come
/// every `transactionCheckInterval`): a replica that starts taking writes checks this soon.
pub const TRANSACTION_CHECK_TICK: Duration = Duration::from_millis(200);

/// Most outcomes (checks and discards) one check pass writes: one entry's worth, so a pass over
/// a large backlog of unanswered half messages is a bounded piece of work; the next pass goes on.
pub const TRANSACTION_OUTCOMES_PER_ENTRY_MAX: usize = 1024;

/// Most half units one check pass reads (about 3.5 MiB of the half log): a pass behind one old
/// pending message does not walk millions of resolved ones at once.
pub const TRANSACTION_SCAN_UNITS_MAX: u64 = 65_536;

/// Longest SQL92 selector compiled: long `IN` lists fit; a selector is compiled once per
/// subscription version, and the tree's size bounds each message's evaluation.
pub const SQL92_EXPRESSION_BYTES_MAX: usize = 16 * 1024;

/// Deepest nesting of parentheses and unary operators in a selector: the parser recurses once
/// per level, so a hostile `((((…` cannot exhaust a worker's stack.
pub const SQL92_DEPTH_MAX: usize = 64;

/// Most operators and operands in one selector: evaluation recurses along the tree (a chain of
/// ANDs is as deep as it is long), so this bounds its stack and its time per message.
pub const SQL92_NODES_MAX: usize = 1024;

/// Compiled SQL92 selectors kept by expression text: far more than the distinct subscriptions
/// of a broker's consumer groups; a client inventing expressions only makes the cache start over.
pub const SQL92_SELECTORS_CACHED_MAX: usize = 4096;
