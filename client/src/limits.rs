//! Every bound of the client, each with the reason for its value (CONVENTIONS.md §5).

use std::time::Duration;

/// Most retries of one send (`retry_times`); Java has no cap, but a send has one deadline and
/// more attempts than brokers only repeats failures.
pub const SEND_RETRY_TIMES_MAX: u32 = 16;

/// RocketMQ's default `maxMessageSize`: the broker refuses larger bodies anyway.
pub const MESSAGE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Largest body a pulled message may inflate to. A compressed body is at most
/// [`MESSAGE_BYTES_MAX`]; this caps what a hostile or corrupt one can cost.
pub const INFLATED_BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Messages per batch send, as the broker must hold the whole batch in one frame.
pub const BATCH_MESSAGES_MAX: usize = 4096;

/// Java's cap of `pullBatchSize` (`DefaultMQPushConsumer.checkConfig`, 1..=1024).
pub const PULL_BATCH_MESSAGES_MAX: u32 = 1024;

/// Java's cap of `consumeMessageBatchMaxSize` (1..=1024).
pub const CONSUME_BATCH_MESSAGES_MAX: usize = 1024;

/// Java's cap of `maxReconsumeTimes` handed to the broker with a sent-back message.
pub const RECONSUME_TIMES_MAX: u32 = 16;

/// Topics one push consumer subscribes to. Each costs a route poll and a rebalance per
/// interval; a consumer with more is misconfigured.
pub const SUBSCRIPTIONS_MAX: usize = 256;

/// Topic routes cached by one client. Every cached route is polled every interval; a client
/// sending to more topics than this is better served by several clients.
pub const ROUTES_CACHED_MAX: usize = 4096;

/// How long a rebalance waits for the workers of dropped queues to finish the message in
/// hand before aborting them (the new owner then redelivers that message).
pub const QUEUE_DROP_WAIT: Duration = Duration::from_secs(3);

/// Java's `PULL_TIME_DELAY_MILLS_WHEN_BROKER_FLOW_CONTROL`: pull again soon after a
/// FLOW_CONTROL or SYSTEM_BUSY answer.
pub const PULL_DELAY_WHEN_BUSY: Duration = Duration::from_millis(20);

/// Delay before re-consuming messages locally when sending them back failed (Java's
/// `submitConsumeRequestLater` waits 5 s; we retry sooner but as many times at most as
/// [`RECONSUME_TIMES_MAX`]).
pub const RECONSUME_LOCAL_DELAY: Duration = Duration::from_secs(1);

/// Java's `compressMsgBodyOverHowmuch`.
pub const COMPRESS_BODY_OVER_BYTES: usize = 4 * 1024;

/// Margin of a blocking pull's call timeout over its suspend time, so the broker's answer at
/// the end of the hold arrives before the client gives up (Java: 30 s call for a 15 s hold;
/// the push consumer's call timeout is a setting).
pub const PULL_CALL_MARGIN: Duration = Duration::from_secs(5);

const _: () = assert!(COMPRESS_BODY_OVER_BYTES < MESSAGE_BYTES_MAX);
const _: () = assert!(MESSAGE_BYTES_MAX < INFLATED_BODY_BYTES_MAX);
const _: () = assert!(MESSAGE_BYTES_MAX < protocol::FRAME_MAX_BYTES);

/// First pause before sending again to a group that is failing over (its broker gone, or
/// answering "not master", or no master in the route) once `retry_times` is spent; doubled up
/// to [`FAILOVER_RETRY_PAUSE_MAX`] until the send timeout. A failover takes about 0.6 s.
pub const FAILOVER_RETRY_PAUSE_MIN: Duration = Duration::from_millis(20);

/// Longest pause between sends to a group that is failing over.
pub const FAILOVER_RETRY_PAUSE_MAX: Duration = Duration::from_millis(200);
