//! The push consumer: the client allocates queues among the group's members, long-polls
//! each of its queues and hands the messages to a listener (Java's `DefaultMQPushConsumer`).
//!
//! - **Rebalance** every `rebalance_interval`, and at once when a broker sends
//!   NOTIFY_CONSUMER_IDS_CHANGED or a subscribed topic's route changes. Clustering shares
//!   the sorted subscribe queues among the sorted client ids of the group (average
//!   allocation); broadcasting takes every queue.
//! - **One worker per queue** pulls (FLAG_SUSPEND, the broker holds an empty pull up to
//!   `suspend`) and calls the listener on each batch in queue order, so a queue's messages are
//!   consumed one batch after the other.
//! - **Offsets**: a queue starts at the group's committed offset, or per `consume_from_where`
//!   when there is none. Consumed offsets live in memory; in clustering they are committed to
//!   the brokers every `persist_offset_interval`, piggy-backed on pulls, when a queue moves
//!   to another member, and at shutdown. Broadcasting keeps them in memory only.
//! - **Failures**: a batch the listener answers [`ConsumeStatus::ReconsumeLater`] is sent back
//!   to the broker (CONSUMER_SEND_MSG_BACK) for redelivery through `%RETRY%<group>`, which
//!   clustering consumers subscribe to; broadcasting consumers drop it, as Java's do.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::FutureExt;
use protocol::body::{ConsumerData, HeartbeatData, MessageQueue, SubscriptionData};
use protocol::code::response;
use protocol::filter::TagFilter;
use protocol::message::{StoredMessage, property};
use remoting::{TcpTransport, Transport};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::api::{BoundaryType, PullArgs};
use crate::config::{
    ClientConfig, ConsumeFromWhere, MessageModel, MessageSelector, PushConsumerConfig,
};
use crate::error::ClientError;
use crate::instance::Instance;
use crate::limits;
use crate::message::PullStatus;
use crate::rebalance::allocate_average;
use crate::route::subscribe_queues;

/// RocketMQ's FLOW_CONTROL answer to a pull, which has no named constant in `protocol`.
const FLOW_CONTROL: i32 = 215;

/// A listener's verdict on a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeStatus {
    /// Consumed; the offset moves past the batch.
    Success,
    /// Not consumed: deliver the batch again later.
    ReconsumeLater,
}

/// What a push consumer hands messages to.
///
/// ### To ensure correctness:
/// - Calls for one queue come one after the other, in queue order; calls for different
///   queues run concurrently.
/// - Delivery is at least once: a message may come again after a rebalance, a restart or a
///   lost offset commit, so consuming must be idempotent.
/// - A call that panics counts as [`ConsumeStatus::ReconsumeLater`].
///
/// ```no_run
/// use client::{
///     ClientConfig, ConsumeStatus, MessageListener, MessageQueue, PushConsumer,
///     PushConsumerConfig, StoredMessage,
/// };
///
/// struct Printer;
///
/// impl MessageListener for Printer {
///     async fn consume(&self, queue: &MessageQueue, messages: &[StoredMessage]) -> ConsumeStatus {
///         for message in messages {
///             println!("{}#{} at {}", queue.topic, queue.queue_id, message.queue_offset);
///         }
///         ConsumeStatus::Success
///     }
/// }
///
/// # async fn example() -> Result<(), client::ClientError> {
/// let consumer = PushConsumer::start(
///     remoting::TcpTransport,
///     ClientConfig::new(["127.0.0.1:9876"]),
///     PushConsumerConfig::new("my-group").subscribe("TopicTest", "TagA || TagB"),
///     Printer,
/// )
/// .await?;
/// // ... later:
/// consumer.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub trait MessageListener: Send + Sync + 'static {
    /// Consumes `messages` of `queue` (at most `consume_batch_max`, in queue order). A message
    /// redelivered through the retry topic shows its original topic.
    fn consume(
        &self,
        queue: &MessageQueue,
        messages: &[StoredMessage],
    ) -> impl Future<Output = ConsumeStatus> + Send;
}

/// A listener made of a closure; see [`listener_fn`].
pub struct FnListener<F>(F);

/// Makes a listener of an async closure taking the queue and the batch by value.
pub fn listener_fn<F, Fut>(f: F) -> FnListener<F>
where
    F: Fn(MessageQueue, Vec<StoredMessage>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ConsumeStatus> + Send,
{
    FnListener(f)
}

impl<F, Fut> MessageListener for FnListener<F>
where
    F: Fn(MessageQueue, Vec<StoredMessage>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ConsumeStatus> + Send,
{
    fn consume(
        &self,
        queue: &MessageQueue,
        messages: &[StoredMessage],
    ) -> impl Future<Output = ConsumeStatus> + Send {
        (self.0)(queue.clone(), messages.to_vec())
    }
}

struct Subscription {
    selector: MessageSelector,
    filter: TagFilter,
    sub_version: i64,
}

struct Worker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Inner<L: MessageListener, T: Transport> {
    instance: Arc<Instance<T>>,
    config: PushConsumerConfig,
    listener: L,
    subscriptions: BTreeMap<String, Subscription>,
    /// Consumed offset (the next to consume) per queue this member holds.
    offsets: Mutex<BTreeMap<MessageQueue, i64>>,
    workers: Mutex<BTreeMap<MessageQueue, Worker>>,
}

/// A push consumer. Stop it with [`PushConsumer::shutdown`]; dropping it stops its work
/// without committing offsets or unregistering.
pub struct PushConsumer<L: MessageListener, T: Transport = TcpTransport> {
    inner: Arc<Inner<L, T>>,
    background: Vec<JoinHandle<()>>,
}

impl<L: MessageListener, T: Transport> Drop for PushConsumer<L, T> {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
        let mut workers = self
            .inner
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (_, worker) in std::mem::take(&mut *workers) {
            worker.task.abort();
        }
    }
}

fn heartbeat(
    config: &PushConsumerConfig,
    subscriptions: &BTreeMap<String, Subscription>,
) -> HeartbeatData {
    let subscription_data_set = subscriptions
        .iter()
        .map(|(topic, sub)| {
            let (tags_set, code_set) = match &sub.filter {
                TagFilter::All => (BTreeSet::new(), BTreeSet::new()),
                TagFilter::Tags { tags, codes } => {
                    (tags.clone(), codes.iter().map(|c| *c as i32).collect())
                }
            };
            SubscriptionData {
                class_filter_mode: false,
                code_set,
                expression_type: sub.selector.expression_type().into(),
                sub_string: sub.selector.expression().to_string(),
                sub_version: sub.sub_version,
                tags_set,
                topic: topic.clone(),
            }
        })
        .collect();
    HeartbeatData {
        client_id: String::new(),
        consumer_data_set: vec![ConsumerData {
            consume_from_where: config.consume_from_where.name().into(),
            consume_type: "CONSUME_PASSIVELY".into(),
            group_name: config.group.clone(),
            message_model: config.message_model.name().into(),
            subscription_data_set,
            unit_mode: false,
        }],
        producer_data_set: Vec::new(),
    }
}

fn retry_topic(group: &str) -> String {
    format!("%RETRY%{group}")
}

impl<L: MessageListener, T: Transport> PushConsumer<L, T> {
    /// Starts consuming: fetches the subscribed topics' routes, sends heartbeats, allocates
    /// queues once and starts their workers, then keeps rebalancing and committing offsets in
    /// the background. Clustering consumers also subscribe `%RETRY%<group>`.
    ///
    /// # Errors
    /// [`ClientError::Config`] when a setting does not validate. Unreachable name servers or
    /// brokers are not errors: the consumer keeps trying.
    pub async fn start(
        transport: T,
        client: ClientConfig,
        config: PushConsumerConfig,
        listener: L,
    ) -> Result<Self, ClientError> {
        config.validate()?;
        let now_ms = client.clock.now_ms();
        let mut selectors = config.subscriptions.clone();
        if config.message_model == MessageModel::Clustering {
            selectors.insert(retry_topic(&config.group), "*".into());
        }
        let subscriptions: BTreeMap<String, Subscription> = selectors
            .into_iter()
            .map(|(topic, selector)| {
                let sub = Subscription {
                    filter: selector.tag_filter(),
                    selector,
                    sub_version: now_ms,
                };
                (topic, sub)
            })
            .collect();
        let instance = Instance::start(transport, client, heartbeat(&config, &subscriptions))?;
        for topic in subscriptions.keys() {
            instance.watch(topic);
            if let Err(err) = instance.update_route(topic).await {
                tracing::warn!(topic, cause = %err, "no route yet");
            }
        }
        instance.heartbeat_all().await;
        let inner = Arc::new(Inner {
            instance,
            config,
            listener,
            subscriptions,
            offsets: Mutex::default(),
            workers: Mutex::default(),
        });
        inner.rebalance().await;
        let mut background = vec![tokio::spawn(rebalance_loop(inner.clone()))];
        if inner.config.message_model == MessageModel::Clustering {
            background.push(tokio::spawn(persist_loop(inner.clone())));
        }
        Ok(PushConsumer { inner, background })
    }

    /// This client's id (`ip@instance`), as the brokers list it in the group.
    pub fn client_id(&self) -> &str {
        &self.inner.instance.client_id
    }

    /// The queues this member consumes now.
    pub fn assigned_queues(&self) -> Vec<MessageQueue> {
        let workers = self
            .inner
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        workers.keys().cloned().collect()
    }

    /// The consumed offset (next to consume) of `queue` kept in memory, if this member holds
    /// the queue.
    pub fn consumed_offset(&self, queue: &MessageQueue) -> Option<i64> {
        self.inner
            .offsets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(queue)
            .copied()
    }

    /// Stops consuming: stops the workers (each finishes the batch in hand, or is aborted
    /// after a bounded wait), commits the consumed offsets (clustering) and unregisters from
    /// the brokers.
    pub async fn shutdown(mut self) {
        for task in std::mem::take(&mut self.background) {
            task.abort();
            // An aborted task ends with a cancellation error, which is the point.
            let _ = task.await;
        }
        let workers: Vec<(MessageQueue, Worker)> = {
            let mut workers = self
                .inner
                .workers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            std::mem::take(&mut *workers).into_iter().collect()
        };
        stop_workers(workers).await;
        self.inner.persist_all(false).await;
        self.inner
            .instance
            .shutdown(None, Some(&self.inner.config.group))
            .await;
    }
}

/// Stops workers and waits for them, aborting those still busy after
/// [`limits::QUEUE_DROP_WAIT`].
async fn stop_workers(workers: Vec<(MessageQueue, Worker)>) {
    for (_, worker) in &workers {
        // A worker that ended already has dropped its receiver; nothing to stop then.
        let _ = worker.stop.send(true);
    }
    let deadline = tokio::time::Instant::now() + limits::QUEUE_DROP_WAIT;
    for (queue, worker) in workers {
        let abort = worker.task.abort_handle();
        if tokio::time::timeout_at(deadline, worker.task)
            .await
            .is_err()
        {
            tracing::warn!(topic = %queue.topic, queue_id = queue.queue_id, "worker aborted: the listener did not finish in time");
            abort.abort();
        }
    }
}

async fn rebalance_loop<L: MessageListener, T: Transport>(inner: Arc<Inner<L, T>>) {
    let period = inner.config.rebalance_interval;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = inner.instance.rebalance.notified() => {}
            _ = ticks.tick() => {}
        }
        inner.rebalance().await;
    }
}

async fn persist_loop<L: MessageListener, T: Transport>(inner: Arc<Inner<L, T>>) {
    let period = inner.config.persist_offset_interval;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        inner.persist_all(true).await;
    }
}

impl<L: MessageListener, T: Transport> Inner<L, T> {
    fn clustering(&self) -> bool {
        self.config.message_model == MessageModel::Clustering
    }

    fn set_offset(&self, queue: &MessageQueue, offset: i64) {
        self.offsets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(queue.clone(), offset);
    }

    /// This member's queues of `topic`.
    async fn allocate(self: &Arc<Self>, topic: &str) -> Result<Vec<MessageQueue>, ClientError> {
        let route = self
            .instance
            .route(topic)
            .await?
            .ok_or_else(|| ClientError::NoRoute {
                topic: topic.to_string(),
            })?;
        let queues = subscribe_queues(topic, &route);
        if !self.clustering() {
            return Ok(queues);
        }
        let members = self
            .instance
            .consumer_ids(&self.config.group, &route)
            .await?;
        if !members.contains(&self.instance.client_id) {
            // A broker that has not had our heartbeat (restarted, or a follower that just became
            // leader) would make us drop every queue and later start them again from the last
            // committed offsets, consuming again what came after. Keep the queues, greet it,
            // and rebalance when it knows us (its NOTIFY_CONSUMER_IDS_CHANGED, or the next round).
            self.instance.heartbeat_all().await;
            return Err(ClientError::NotYetAMember {
                group: self.config.group.clone(),
            });
        }
        Ok(allocate_average(
            &self.instance.client_id,
            &members,
            &queues,
        ))
    }

    /// Allocates the queues again: stops the workers of queues that went to another member
    /// (committing their offsets) and starts workers for new ones. A topic whose route or
    /// consumer list cannot be read keeps its queues until the next rebalance.
    async fn rebalance(self: &Arc<Self>) {
        let mut wanted = BTreeSet::new();
        let mut settled = BTreeSet::new();
        for topic in self.subscriptions.keys() {
            match self.allocate(topic).await {
                Ok(queues) => {
                    settled.insert(topic.clone());
                    wanted.extend(queues);
                }
                Err(err) => tracing::debug!(topic, cause = %err, "topic not rebalanced"),
            }
        }
        let dropped: Vec<(MessageQueue, Worker)> = {
            let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
            let gone: Vec<MessageQueue> = workers
                .keys()
                .filter(|q| settled.contains(&q.topic) && !wanted.contains(*q))
                .cloned()
                .collect();
            gone.into_iter()
                .filter_map(|q| workers.remove_entry(&q))
                .collect()
        };
        let dropped_queues: Vec<MessageQueue> = dropped.iter().map(|(q, _)| q.clone()).collect();
        stop_workers(dropped).await;
        for queue in &dropped_queues {
            if self.clustering() {
                let offset = self
                    .offsets
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(queue);
                if let Some(offset) = offset
                    && let Err(err) = self
                        .instance
                        .commit_offset(&self.config.group, queue, offset, false)
                        .await
                {
                    tracing::warn!(topic = %queue.topic, queue_id = queue.queue_id, cause = %err, "offset of a dropped queue not committed");
                }
            }
        }
        let mut added = 0;
        for queue in wanted {
            if self
                .workers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(&queue)
            {
                continue;
            }
            match self.start_offset(&queue).await {
                Ok(offset) => {
                    self.start_worker(queue, offset);
                    added += 1;
                }
                Err(err) => {
                    tracing::warn!(topic = %queue.topic, queue_id = queue.queue_id, cause = %err, "queue not started")
                }
            }
        }
        if added > 0 || !dropped_queues.is_empty() {
            let held = self
                .workers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len();
            tracing::info!(
                group = %self.config.group,
                added,
                dropped = dropped_queues.len(),
                held,
                "rebalanced"
            );
        }
    }

    /// Where a newly held queue starts.
    async fn start_offset(self: &Arc<Self>, queue: &MessageQueue) -> Result<i64, ClientError> {
        if self.clustering() {
            if let Some(offset) = self
                .instance
                .query_offset(&self.config.group, queue)
                .await?
                .filter(|o| *o >= 0)
            {
                return Ok(offset);
            }
        } else if let Some(offset) = self
            .offsets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(queue)
        {
            return Ok(*offset);
        }
        let retry = queue.topic.starts_with("%RETRY%");
        match self.config.consume_from_where {
            ConsumeFromWhere::LastOffset if retry => Ok(0),
            ConsumeFromWhere::LastOffset => self.instance.queue_bound(queue, true).await,
            ConsumeFromWhere::FirstOffset => Ok(0),
            ConsumeFromWhere::Timestamp { .. } if retry => {
                self.instance.queue_bound(queue, true).await
            }
            ConsumeFromWhere::Timestamp { timestamp_ms } => {
                self.instance
                    .search_offset(queue, timestamp_ms, BoundaryType::Lower)
                    .await
            }
        }
    }

    fn start_worker(self: &Arc<Self>, queue: MessageQueue, offset: i64) {
        self.set_offset(&queue, offset);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(self.clone().run_worker(queue.clone(), offset, stopped));
        tracing::debug!(topic = %queue.topic, queue_id = queue.queue_id, queue_offset = offset, "queue started");
        self.workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(queue, Worker { stop, task });
    }

    async fn run_worker(
        self: Arc<Self>,
        queue: MessageQueue,
        mut offset: i64,
        mut stop: watch::Receiver<bool>,
    ) {
        let Some(sub) = self.subscriptions.get(&queue.topic) else {
            return;
        };
        loop {
            if *stop.borrow() {
                return;
            }
            let commit_offset = if self.clustering() {
                self.offsets
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&queue)
                    .copied()
            } else {
                None
            };
            let args = PullArgs {
                group: &self.config.group,
                queue: &queue,
                queue_offset: offset,
                max_messages: self.config.pull_batch_size,
                commit_offset,
                suspend: Some(self.config.suspend),
                expression_type: sub.selector.expression_type(),
                expression: sub.selector.expression(),
                filter: &sub.filter,
                sub_version: sub.sub_version,
                timeout: self.config.pull_timeout,
            };
            let pulled = tokio::select! {
                biased;
                _ = stop.changed() => return,
                pulled = self.instance.pull(&args) => pulled,
            };
            let result = match pulled {
                Ok(result) => result,
                Err(err) => {
                    let busy = matches!(
                        err.refused_code(),
                        Some(response::SYSTEM_BUSY | FLOW_CONTROL)
                    );
                    let delay = if busy {
                        limits::PULL_DELAY_WHEN_BUSY
                    } else {
                        self.config.pull_delay_after_error
                    };
                    tracing::debug!(topic = %queue.topic, queue_id = queue.queue_id, cause = %err, delay_ms = delay.as_millis() as u64, "pull failed");
                    tokio::select! {
                        biased;
                        _ = stop.changed() => return,
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            if result.status == PullStatus::Found
                && !self.consume(&queue, result.messages, &mut stop).await
            {
                return;
            }
            offset = result.next_begin_offset;
            self.set_offset(&queue, offset);
            if result.status == PullStatus::OffsetIllegal {
                tracing::warn!(topic = %queue.topic, queue_id = queue.queue_id, queue_offset = offset, "offset moved by the broker");
                if self.clustering()
                    && let Err(err) = self
                        .instance
                        .commit_offset(&self.config.group, &queue, offset, false)
                        .await
                {
                    tracing::debug!(cause = %err, "corrected offset not committed yet");
                }
            }
        }
    }

    /// Hands `messages` to the listener in batches; false when stopped before the end.
    async fn consume(
        &self,
        queue: &MessageQueue,
        messages: Vec<StoredMessage>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        for batch in messages.chunks(self.config.consume_batch_max) {
            if *stop.borrow() {
                return false;
            }
            let batch: Vec<StoredMessage> = batch.iter().cloned().map(restore_topic).collect();
            let Some(last) = batch.last().map(|m| m.queue_offset) else {
                continue;
            };
            if self.call_listener(queue, &batch).await == ConsumeStatus::ReconsumeLater
                && !self.reconsume(queue, batch, stop).await
            {
                return false;
            }
            self.set_offset(queue, last + 1);
        }
        true
    }

    async fn call_listener(&self, queue: &MessageQueue, batch: &[StoredMessage]) -> ConsumeStatus {
        match AssertUnwindSafe(self.listener.consume(queue, batch))
            .catch_unwind()
            .await
        {
            Ok(status) => status,
            Err(_) => {
                tracing::error!(topic = %queue.topic, queue_id = queue.queue_id, "listener panicked; reconsuming later");
                ConsumeStatus::ReconsumeLater
            }
        }
    }

    /// Sends back a failed batch for redelivery; what cannot be sent back is consumed again
    /// here after a delay, a bounded number of times. False when stopped.
    async fn reconsume(
        &self,
        queue: &MessageQueue,
        mut pending: Vec<StoredMessage>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        if !self.clustering() {
            tracing::warn!(topic = %queue.topic, queue_id = queue.queue_id, messages = pending.len(), "broadcast consumption failed; messages dropped");
            return true;
        }
        for _ in 0..=limits::RECONSUME_TIMES_MAX {
            let mut kept = Vec::new();
            for message in pending {
                if let Err(err) = self
                    .instance
                    .send_back(
                        &self.config.group,
                        &queue.broker_name,
                        &message,
                        self.config.max_reconsume_times,
                    )
                    .await
                {
                    tracing::debug!(cause = %err, queue_offset = message.queue_offset, "send back failed; consuming again locally");
                    kept.push(message);
                }
            }
            if kept.is_empty() {
                return true;
            }
            tokio::select! {
                biased;
                _ = stop.changed() => return false,
                () = tokio::time::sleep(limits::RECONSUME_LOCAL_DELAY) => {}
            }
            if self.call_listener(queue, &kept).await == ConsumeStatus::Success {
                return true;
            }
            pending = kept;
        }
        tracing::error!(topic = %queue.topic, queue_id = queue.queue_id, "messages skipped: neither consumed nor sent back");
        true
    }

    /// Commits every held queue's consumed offset; `oneway` for the periodic commit, waiting
    /// for the answers at shutdown.
    async fn persist_all(&self, oneway: bool) {
        if !self.clustering() {
            return;
        }
        let offsets: Vec<(MessageQueue, i64)> = self
            .offsets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(q, o)| (q.clone(), *o))
            .collect();
        let instance = &self.instance;
        let group = &self.config.group;
        let commits = offsets.iter().map(|(queue, offset)| async move {
            if let Err(err) = instance.commit_offset(group, queue, *offset, oneway).await {
                tracing::debug!(topic = %queue.topic, queue_id = queue.queue_id, cause = %err, "offset commit failed");
            }
        });
        futures_util::future::join_all(commits).await;
    }
}

/// A message redelivered through the retry topic gets its original topic back.
fn restore_topic(mut message: StoredMessage) -> StoredMessage {
    if message.topic.starts_with("%RETRY%")
        && let Some(topic) = message.properties.get(property::RETRY_TOPIC)
    {
        message.topic = topic.to_string();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The heartbeat declares a push consumer with each subscription's tags and their Java
    /// hashes, as brokers filter by them.
    #[test]
    fn heartbeat_declares_subscriptions() {
        let config = PushConsumerConfig::new("g").subscribe("T", "TagA || TagB");
        let subscriptions: BTreeMap<String, Subscription> =
            [("T", "TagA || TagB"), ("%RETRY%g", "*")]
                .into_iter()
                .map(|(topic, expression)| {
                    let sub = Subscription {
                        selector: expression.into(),
                        filter: TagFilter::parse(expression),
                        sub_version: 7,
                    };
                    (topic.to_string(), sub)
                })
                .collect();
        let data = heartbeat(&config, &subscriptions);
        let consumer = &data.consumer_data_set[0];
        assert_eq!(consumer.consume_type, "CONSUME_PASSIVELY");
        assert_eq!(consumer.message_model, "CLUSTERING");
        assert_eq!(consumer.consume_from_where, "CONSUME_FROM_LAST_OFFSET");
        let retry = &consumer.subscription_data_set[0];
        assert_eq!(
            (retry.topic.as_str(), retry.sub_string.as_str()),
            ("%RETRY%g", "*")
        );
        assert!(retry.code_set.is_empty());
        let topic = &consumer.subscription_data_set[1];
        assert_eq!(topic.code_set, [2_598_919, 2_598_920].into());
        assert_eq!(
            topic.tags_set,
            ["TagA".to_string(), "TagB".to_string()].into()
        );
        assert_eq!(
            (topic.expression_type.as_str(), topic.sub_version),
            ("TAG", 7)
        );
    }

    /// A redelivered message shows its original topic.
    #[test]
    fn retry_messages_get_their_topic_back() {
        let mut properties = protocol::message::Properties::default();
        properties.set(property::RETRY_TOPIC, "T");
        let message = StoredMessage {
            topic: "%RETRY%g".into(),
            queue_id: 0,
            flag: 0,
            queue_offset: 0,
            commit_log_offset: 0,
            sys_flag: 0,
            born_timestamp: 0,
            born_host: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            store_timestamp: 0,
            store_host: std::net::SocketAddr::from(([127, 0, 0, 1], 2)),
            reconsume_times: 1,
            prepared_transaction_offset: 0,
            body: bytes::Bytes::new(),
            properties,
        };
        assert_eq!(restore_topic(message).topic, "T");
    }
}
