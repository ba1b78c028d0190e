//! The producer: synchronous, asynchronous, oneway, batch and ordered sends (Java's
//! `DefaultMQProducer`).
//!
//! A send picks a queue round-robin among the topic's publish queues, sends SEND_MESSAGE_V2
//! to that broker group's master and, on a failure another broker may not have, tries again
//! on a queue of another broker group, all within one deadline. A failure that a new route
//! may fix (not master, no permission, connection lost) refreshes the topic's route at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use protocol::body::{HeartbeatData, MessageQueue, ProducerData};
use protocol::code::{request, response};
use protocol::header::{SendMessageRequestHeader, SendMessageResponseHeader};
use protocol::message::{
    BatchItem, PROPERTIES_MAX_BYTES, Properties, encode_batch, java_string_hash, property,
};
use protocol::{CommandHeader, RemotingCommand};
use remoting::{TcpTransport, Transport};
use tokio::time::Instant;

use crate::config::{ClientConfig, ProducerConfig};
use crate::error::ClientError;
use crate::instance::{Instance, refused};
use crate::limits;
use crate::message::{COMPRESSED_ZLIB, Message, SendResult, SendStatus, check_topic, deflate};
use crate::route::publish_queues;

/// Response codes after which Java's producer tries another broker (`retryResponseCodes`):
/// 204 NO_BUYER_ID, 205 NOT_IN_CURRENT_UNIT, 1500 GO_AWAY have no named constant here.
const RETRY_ELSEWHERE_CODES: [i32; 4] = [response::SYSTEM_BUSY, 204, 205, 1500];

/// Response codes that may mean the route is stale (this broker is no longer master, lost
/// its permission, or does not have the topic); the route is fetched again at once.
const STALE_ROUTE_CODES: [i32; 4] = [
    response::SERVICE_NOT_AVAILABLE,
    response::NO_PERMISSION,
    response::SYSTEM_ERROR,
    response::TOPIC_NOT_EXIST,
];

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterFailure {
    /// Give up: another broker would refuse the same message.
    Fail,
    /// Try another broker.
    Retry,
    /// Fetch the route again, then try another broker.
    RefreshAndRetry,
}

/// Whether a failed attempt means the broker's group is failing over (the broker is gone, does
/// not answer, or answers "not master" — raftmq's followers and cut-off leaders answer
/// SERVICE_NOT_AVAILABLE), so sending again after a pause can succeed once a new leader is
/// registered.
fn failing_over(err: &ClientError) -> bool {
    // A broker whose disk is full answers SERVICE_NOT_AVAILABLE too, with RocketMQ's remark;
    // it is not failing over, and waiting out the send timeout would only hide its answer.
    if let ClientError::Refused { remark, .. } = err
        && remark.contains(DISK_FULL_REMARK)
    {
        return false;
    }
    matches!(
        err,
        ClientError::Remoting(
            remoting::ClientError::Connect { .. }
                | remoting::ClientError::Closed { .. }
                | remoting::ClientError::Timeout { .. }
        ) | ClientError::NoBrokerAddress { .. }
            | ClientError::Refused {
                code: response::SERVICE_NOT_AVAILABLE,
                ..
            }
    )
}

/// What RocketMQ's brokers write in the remark of a send refused for a full disk.
const DISK_FULL_REMARK: &str = "disk is full";

fn after_failure(err: &ClientError) -> AfterFailure {
    match err {
        ClientError::Remoting(remoting::ClientError::Encode(_)) => AfterFailure::Fail,
        ClientError::Remoting(_) | ClientError::NoBrokerAddress { .. } => {
            AfterFailure::RefreshAndRetry
        }
        ClientError::Refused { code, .. } if STALE_ROUTE_CODES.contains(code) => {
            AfterFailure::RefreshAndRetry
        }
        ClientError::Refused { code, .. } if RETRY_ELSEWHERE_CODES.contains(code) => {
            AfterFailure::Retry
        }
        _ => AfterFailure::Fail,
    }
}

/// Java's `selectOneMessageQueue`: the next queue round-robin from `start`, skipping queues
/// of `avoid` (the broker group that just failed) while another group has one.
fn select_queue(queues: &[MessageQueue], start: usize, avoid: Option<&str>) -> usize {
    assert!(!queues.is_empty(), "a queue is selected among at least one");
    if let Some(avoid) = avoid {
        for i in 0..queues.len() {
            let at = start.wrapping_add(i) % queues.len();
            if queues[at].broker_name != avoid {
                return at;
            }
        }
    }
    start % queues.len()
}

/// Java's `SelectMessageQueueByHash`: `|hash(key) % n|`.
fn queue_by_hash(key: &str, queues: usize) -> usize {
    let n = i32::try_from(queues).unwrap_or(i32::MAX).max(1);
    (java_string_hash(key) % n).unsigned_abs() as usize
}

/// A send ready to go out, but for its queue.
struct Prepared {
    topic: String,
    code: i32,
    header: SendMessageRequestHeader,
    body: Bytes,
    /// The `UNIQ_KEY`s, comma-joined for a batch.
    msg_id: String,
}

struct Inner<T: Transport> {
    instance: Arc<Instance<T>>,
    config: ProducerConfig,
    next_queue: AtomicUsize,
}

/// A producer. Cloning it is cheap and shares its connections and routes.
pub struct Producer<T: Transport = TcpTransport> {
    inner: Arc<Inner<T>>,
}

impl<T: Transport> Clone for Producer<T> {
    fn clone(&self) -> Self {
        Producer {
            inner: self.inner.clone(),
        }
    }
}

/// An asynchronous send under way; resolves to the send's result.
#[must_use = "a send handle does nothing unless awaited; drop it to ignore the result"]
pub struct SendHandle {
    task: tokio::task::JoinHandle<Result<SendResult, ClientError>>,
}

impl Future for SendHandle {
    type Output = Result<SendResult, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.task)
            .poll(cx)
            .map(|joined| joined.map_err(|source| ClientError::Task { source })?)
    }
}

impl<T: Transport> Producer<T> {
    /// Starts a producer. Routes are fetched on the first send to each topic.
    ///
    /// # Errors
    /// [`ClientError::Config`] when a setting does not validate.
    pub async fn start(
        transport: T,
        client: ClientConfig,
        config: ProducerConfig,
    ) -> Result<Self, ClientError> {
        config.validate()?;
        let heartbeat = HeartbeatData {
            client_id: String::new(),
            consumer_data_set: Vec::new(),
            producer_data_set: vec![ProducerData {
                group_name: config.group.clone(),
            }],
        };
        let instance = Instance::start(transport, client, heartbeat)?;
        let next_queue =
            AtomicUsize::new(java_string_hash(&instance.client_id).unsigned_abs() as usize);
        Ok(Producer {
            inner: Arc::new(Inner {
                instance,
                config,
                next_queue,
            }),
        })
    }

    /// Starts a transactional producer (Java's `TransactionMQProducer`): a producer whose
    /// group's half messages the brokers may ask about, answered by `checker`.
    ///
    /// # Errors
    /// Those of [`Producer::start`].
    pub async fn start_transactional(
        transport: T,
        client: ClientConfig,
        config: ProducerConfig,
        checker: crate::transaction::TransactionChecker,
    ) -> Result<Self, ClientError> {
        let group = config.group.clone();
        let producer = Producer::start(transport, client, config).await?;
        producer
            .inner
            .instance
            .set_transaction_checker(group, checker);
        Ok(producer)
    }

    /// The producer group.
    pub fn group(&self) -> &str {
        &self.inner.config.group
    }

    pub(crate) fn instance(&self) -> &Arc<Instance<T>> {
        &self.inner.instance
    }

    /// Sends a half message (the caller set `TRAN_MSG` and `PGROUP`) as [`Producer::send`],
    /// with the prepared transaction type in its sys flag.
    pub(crate) async fn send_half(&self, message: Message) -> Result<SendResult, ClientError> {
        let mut prepared = self.prepare(message)?;
        prepared.header.sys_flag |= protocol::message::sys_flag::TRANSACTION_PREPARED;
        self.send_with_retries(&prepared).await
    }

    /// This client's id (`ip@instance`).
    pub fn client_id(&self) -> &str {
        &self.inner.instance.client_id
    }

    /// The queues `topic` is published on (the auto-create template's, capped, for a topic
    /// the brokers do not have yet).
    ///
    /// # Errors
    /// [`ClientError::NoRoute`], or no name server answered.
    pub async fn publish_queues(&self, topic: &str) -> Result<Vec<MessageQueue>, ClientError> {
        let route = self.publish_route(topic).await?;
        Ok(publish_queues(topic, &route))
    }

    /// Sends `message` and waits until the broker stored it, retrying up to `retry_times`
    /// times on other brokers within `send_timeout`. A broker that is gone or answers "not
    /// master" (its group is failing over), or a topic with no master at all, is retried past
    /// `retry_times` with short pauses and a fresh route until `send_timeout`: a send outlives
    /// a failover. As in RocketMQ, a retried send may store the message twice.
    ///
    /// # Errors
    /// An invalid message; [`ClientError::NoRoute`]; [`ClientError::SendTimeout`] when the
    /// deadline passed; [`ClientError::SendFailed`] when every attempt failed; or the
    /// broker's refusal when retrying cannot help ([`ClientError::Refused`], e.g.
    /// MESSAGE_ILLEGAL).
    pub async fn send(&self, message: Message) -> Result<SendResult, ClientError> {
        let prepared = self.prepare(message)?;
        self.send_with_retries(&prepared).await
    }

    /// Starts sending `message` on its own task (as [`Producer::send`]) and returns at once.
    /// Must be called inside a tokio runtime.
    pub fn send_async(&self, message: Message) -> SendHandle {
        let this = self.clone();
        SendHandle {
            task: tokio::spawn(async move { this.send(message).await }),
        }
    }

    /// Sends `message` on its own task and calls `callback` with the result, as Java's
    /// `send(msg, SendCallback)`. Must be called inside a tokio runtime.
    pub fn send_with_callback<F>(&self, message: Message, callback: F)
    where
        F: FnOnce(Result<SendResult, ClientError>) + Send + 'static,
    {
        let this = self.clone();
        tokio::spawn(async move { callback(this.send(message).await) });
    }

    /// Sends `message` without waiting for an answer: one attempt, no retry. Returns once the
    /// request is handed to the connection.
    ///
    /// # Errors
    /// An invalid message, no route, or the connection failing.
    pub async fn send_oneway(&self, message: Message) -> Result<(), ClientError> {
        let prepared = self.prepare(message)?;
        let route = self.publish_route(&prepared.topic).await?;
        let queues = publish_queues(&prepared.topic, &route);
        if queues.is_empty() {
            return Err(ClientError::NoWritableQueue {
                topic: prepared.topic,
            });
        }
        let start = self.inner.next_queue.fetch_add(1, Ordering::Relaxed);
        let queue = &queues[select_queue(&queues, start, None)];
        let (addr, request) = self.request_for(&prepared, queue)?;
        self.inner.instance.oneway(&addr, request).await
    }

    /// Sends `messages` as one SEND_BATCH_MESSAGE: they land together, in order, in one
    /// queue. All must share the topic and the `WAIT` setting, have no delay level, and not
    /// go to a retry topic. Retried as [`Producer::send`].
    ///
    /// # Errors
    /// [`ClientError::InvalidBatch`], and those of [`Producer::send`].
    pub async fn send_batch(&self, messages: Vec<Message>) -> Result<SendResult, ClientError> {
        let prepared = self.prepare_batch(messages)?;
        self.send_with_retries(&prepared).await
    }

    /// Sends `message` to `queue`: one attempt, no retry on another queue (the caller chose
    /// this one, for ordering).
    ///
    /// # Errors
    /// Those of [`Producer::send`], but a failed attempt is returned as it is.
    pub async fn send_to_queue(
        &self,
        message: Message,
        queue: &MessageQueue,
    ) -> Result<SendResult, ClientError> {
        let prepared = self.prepare(message)?;
        if queue.topic != prepared.topic {
            return Err(ClientError::InvalidMessage {
                topic: prepared.topic,
                reason: "the queue belongs to another topic",
            });
        }
        // The broker table comes from the routes: make sure this topic's is known.
        self.publish_route(&prepared.topic).await?;
        self.send_once_refreshing(&prepared, queue, self.inner.config.send_timeout)
            .await
    }

    /// Sends `message` to the queue `select` picks among the topic's publish queues (Java's
    /// `MessageQueueSelector`); one attempt.
    ///
    /// # Errors
    /// [`ClientError::QueueIndexOutOfRange`] for a bad pick, and those of
    /// [`Producer::send_to_queue`].
    pub async fn send_with_selector<F>(
        &self,
        message: Message,
        select: F,
    ) -> Result<SendResult, ClientError>
    where
        F: FnOnce(&[MessageQueue], &Message) -> usize,
    {
        let queues = self.publish_queues(&message.topic).await?;
        if queues.is_empty() {
            return Err(ClientError::NoWritableQueue {
                topic: message.topic,
            });
        }
        let index = select(&queues, &message);
        let Some(queue) = queues.get(index) else {
            return Err(ClientError::QueueIndexOutOfRange {
                index,
                queues: queues.len(),
            });
        };
        self.send_to_queue(message, queue).await
    }

    /// Sends `message` to the queue `sharding_key` hashes to, so messages with one key stay
    /// in order (Java's `SelectMessageQueueByHash`).
    ///
    /// # Errors
    /// Those of [`Producer::send_to_queue`].
    pub async fn send_ordered(
        &self,
        message: Message,
        sharding_key: &str,
    ) -> Result<SendResult, ClientError> {
        self.send_with_selector(message, |queues, _| {
            queue_by_hash(sharding_key, queues.len())
        })
        .await
    }

    /// Unregisters from the brokers and stops the background work. Other clones of this
    /// producer can no longer refresh routes.
    pub async fn shutdown(self) {
        let group = self.inner.config.group.clone();
        self.inner.instance.shutdown(Some(&group), None).await;
    }

    async fn publish_route(
        &self,
        topic: &str,
    ) -> Result<protocol::body::TopicRouteData, ClientError> {
        let config = &self.inner.config;
        self.inner
            .instance
            .publish_route(
                topic,
                &config.default_topic,
                config.default_topic_queue_nums,
            )
            .await
    }

    fn check(&self, message: &Message) -> Result<(), ClientError> {
        let config = &self.inner.config;
        check_topic(&message.topic).map_err(|reason| ClientError::InvalidTopic {
            topic: message.topic.clone(),
            reason,
        })?;
        let invalid = |reason| ClientError::InvalidMessage {
            topic: message.topic.clone(),
            reason,
        };
        if message.topic == config.default_topic {
            return Err(invalid("the topic is the auto-create template"));
        }
        if message.body.is_empty() {
            return Err(invalid("the body is empty"));
        }
        if message.body.len() > config.max_message_bytes {
            return Err(ClientError::MessageTooLarge {
                bytes: message.body.len(),
                max: config.max_message_bytes,
            });
        }
        Ok(())
    }

    fn header(
        &self,
        topic: &str,
        properties: &Properties,
    ) -> Result<SendMessageRequestHeader, ClientError> {
        let config = &self.inner.config;
        let properties = properties.encode();
        if properties.len() > PROPERTIES_MAX_BYTES {
            return Err(ClientError::InvalidMessage {
                topic: topic.to_string(),
                reason: "the properties are over 32767 bytes",
            });
        }
        Ok(SendMessageRequestHeader {
            producer_group: config.group.clone(),
            topic: topic.to_string(),
            default_topic: config.default_topic.clone(),
            default_topic_queue_nums: config.default_topic_queue_nums,
            queue_id: -1,
            sys_flag: 0,
            born_timestamp: self.inner.instance.config.clock.now_ms(),
            flag: 0,
            properties: Some(properties),
            reconsume_times: Some(0),
            unit_mode: Some(false),
            max_reconsume_times: None,
            batch: Some(false),
            broker_name: None,
        })
    }

    fn prepare(&self, mut message: Message) -> Result<Prepared, ClientError> {
        self.check(&message)?;
        if message.uniq_key().is_none() {
            let id = self.inner.instance.next_uniq_id();
            message.properties.set(property::UNIQ_KEY, id);
        }
        let mut header = self.header(&message.topic, &message.properties)?;
        header.flag = message.flag;
        let config = &self.inner.config;
        let mut body = message.body;
        if body.len() > config.compress_body_over_bytes {
            match deflate(&body, config.compress_level) {
                Ok(compressed) => {
                    body = Bytes::from(compressed);
                    header.sys_flag |= COMPRESSED_ZLIB;
                }
                Err(err) => tracing::debug!(cause = %err, "body sent uncompressed"),
            }
        }
        Ok(Prepared {
            msg_id: message
                .properties
                .get(property::UNIQ_KEY)
                .unwrap_or_default()
                .to_string(),
            topic: message.topic,
            code: request::SEND_MESSAGE_V2,
            header,
            body,
        })
    }

    fn prepare_batch(&self, messages: Vec<Message>) -> Result<Prepared, ClientError> {
        let invalid = |reason| ClientError::InvalidBatch { reason };
        let Some(first) = messages.first() else {
            return Err(invalid("the batch is empty"));
        };
        if messages.len() > limits::BATCH_MESSAGES_MAX {
            return Err(invalid("the batch has more than 4096 messages"));
        }
        let topic = first.topic.clone();
        let wait = first.properties.get(property::WAIT).map(str::to_string);
        if topic.starts_with("%RETRY%") {
            return Err(invalid("a batch cannot go to a retry topic"));
        }
        let mut items = Vec::with_capacity(messages.len());
        let mut ids = Vec::with_capacity(messages.len());
        for mut message in messages {
            self.check(&message)?;
            if message.topic != topic {
                return Err(invalid("the messages have different topics"));
            }
            if message.is_scheduled() {
                return Err(invalid(
                    "a batch message has a delay level or a delivery time",
                ));
            }
            if message.properties.get(property::WAIT).map(str::to_string) != wait {
                return Err(invalid("the messages differ in WAIT"));
            }
            if message.uniq_key().is_none() {
                let id = self.inner.instance.next_uniq_id();
                message.properties.set(property::UNIQ_KEY, id);
            }
            ids.push(message.uniq_key().unwrap_or_default().to_string());
            items.push(BatchItem {
                flag: message.flag,
                body: message.body,
                properties: message.properties,
            });
        }
        let body = encode_batch(&items);
        let max = self.inner.config.max_message_bytes;
        if body.len() > max {
            return Err(ClientError::MessageTooLarge {
                bytes: body.len(),
                max,
            });
        }
        let mut properties = Properties::default();
        if let Some(wait) = wait {
            properties.set(property::WAIT, wait);
        }
        properties.set(property::UNIQ_KEY, self.inner.instance.next_uniq_id());
        let mut header = self.header(&topic, &properties)?;
        header.batch = Some(true);
        Ok(Prepared {
            topic,
            code: request::SEND_BATCH_MESSAGE,
            header,
            body: Bytes::from(body),
            msg_id: ids.join(","),
        })
    }

    fn request_for(
        &self,
        prepared: &Prepared,
        queue: &MessageQueue,
    ) -> Result<(String, RemotingCommand), ClientError> {
        let addr = self
            .inner
            .instance
            .master_addr(&queue.broker_name)
            .ok_or_else(|| ClientError::NoBrokerAddress {
                broker_name: queue.broker_name.clone(),
            })?;
        let mut header = prepared.header.clone();
        header.queue_id = queue.queue_id;
        header.broker_name = Some(queue.broker_name.clone());
        let request = RemotingCommand::request(prepared.code, header.to_v2())
            .with_body(prepared.body.clone());
        Ok((addr, request))
    }

    /// One attempt on `queue`.
    async fn send_once(
        &self,
        prepared: &Prepared,
        queue: &MessageQueue,
        timeout: Duration,
    ) -> Result<SendResult, ClientError> {
        let (addr, request) = self.request_for(prepared, queue)?;
        tracing::debug!(topic = %prepared.topic, broker = %addr, queue_id = queue.queue_id, bytes = prepared.body.len(), "send");
        let answer = self.inner.instance.call(&addr, request, timeout).await?;
        let Some(status) = SendStatus::from_code(answer.code) else {
            return Err(refused(&addr, prepared.code, &answer));
        };
        let header = SendMessageResponseHeader::from_ext(&answer.ext_fields).map_err(|source| {
            ClientError::Header {
                addr: addr.clone(),
                request_code: prepared.code,
                source,
            }
        })?;
        Ok(SendResult {
            status,
            msg_id: prepared.msg_id.clone(),
            offset_msg_id: header.msg_id,
            queue: MessageQueue {
                broker_name: queue.broker_name.clone(),
                queue_id: header.queue_id,
                topic: prepared.topic.clone(),
            },
            queue_offset: header.queue_offset,
        })
    }

    /// One attempt on `queue`; refreshes the route when the failure says it is stale.
    async fn send_once_refreshing(
        &self,
        prepared: &Prepared,
        queue: &MessageQueue,
        timeout: Duration,
    ) -> Result<SendResult, ClientError> {
        let deadline = Instant::now() + timeout;
        let result =
            match tokio::time::timeout(timeout, self.send_once(prepared, queue, timeout)).await {
                Ok(result) => result,
                Err(_) => {
                    return Err(ClientError::SendTimeout {
                        topic: prepared.topic.clone(),
                        after: timeout,
                        attempts: 1,
                    });
                }
            };
        if let Err(err) = &result
            && after_failure(err) == AfterFailure::RefreshAndRetry
        {
            let left = deadline.saturating_duration_since(Instant::now());
            // The refresh only helps later sends; running out of time here changes nothing.
            let _ = tokio::time::timeout(left, self.inner.instance.refresh_route(&prepared.topic))
                .await;
        }
        result
    }

    async fn send_with_retries(&self, prepared: &Prepared) -> Result<SendResult, ClientError> {
        let config = &self.inner.config;
        let deadline = Instant::now() + config.send_timeout;
        let timed_out = |attempts| ClientError::SendTimeout {
            topic: prepared.topic.clone(),
            after: config.send_timeout,
            attempts,
        };
        let mut retries_left = config.retry_times;
        let mut pause = limits::FAILOVER_RETRY_PAUSE_MIN;
        let mut avoid: Option<String> = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out(attempt - 1));
            }
            let route = tokio::time::timeout(left, self.publish_route(&prepared.topic))
                .await
                .map_err(|_| timed_out(attempt - 1))??;
            let queues = publish_queues(&prepared.topic, &route);
            let failure = if queues.is_empty() {
                // No group has a master: one is being elected (the name server dropped the old
                // one when its connection closed). Wait for the new one within the deadline.
                AfterFailure::RefreshAndRetry
            } else {
                let start = self.inner.next_queue.fetch_add(1, Ordering::Relaxed);
                let queue = &queues[select_queue(&queues, start, avoid.as_deref())];
                let left = deadline.saturating_duration_since(Instant::now());
                let attempt_left = left.min(config.attempt_timeout);
                let err =
                    match tokio::time::timeout(left, self.send_once(prepared, queue, attempt_left))
                        .await
                    {
                        Ok(Ok(result)) => return Ok(result),
                        Ok(Err(err)) => err,
                        Err(_) => return Err(timed_out(attempt)),
                    };
                let next = after_failure(&err);
                tracing::debug!(topic = %prepared.topic, broker = %queue.broker_name, attempt, cause = %err, ?next, "send attempt failed");
                if next == AfterFailure::Fail {
                    return Err(err);
                }
                if retries_left == 0 && !failing_over(&err) {
                    return Err(ClientError::SendFailed {
                        topic: prepared.topic.clone(),
                        attempts: attempt,
                        last: Box::new(err),
                    });
                }
                avoid = Some(queue.broker_name.clone());
                next
            };
            if failure == AfterFailure::RefreshAndRetry {
                // The broker is gone or no longer leads: its group is failing over. Retry at
                // once on another group while `retry_times` lasts (as Java does), then keep
                // retrying with short pauses until the deadline, so a send outlives a failover
                // shorter than `send_timeout`.
                if retries_left == 0 {
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(pause.min(left)).await;
                    pause = (pause * 2).min(limits::FAILOVER_RETRY_PAUSE_MAX);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                // Out of time: the loop's check reports the timeout.
                let _ =
                    tokio::time::timeout(left, self.inner.instance.refresh_route(&prepared.topic))
                        .await;
            }
            retries_left = retries_left.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SERVICE_NOT_AVAILABLE for a full disk is not a failover: the send fails with the
    /// broker's answer once the retries are used, instead of waiting out its timeout.
    #[test]
    fn a_full_disk_is_not_a_failover() {
        let refused = |remark: &str| ClientError::Refused {
            addr: "b:1".into(),
            request_code: 310,
            code: response::SERVICE_NOT_AVAILABLE,
            remark: remark.into(),
        };
        assert!(failing_over(&refused(
            "not master: broker b replica 2 is Follower"
        )));
        assert!(!failing_over(&refused(
            "service not available now. the broker's disk is full [CL:  0.95 CQ:  0.95 INDEX:  0.95]"
        )));
    }

    fn queues(spec: &[(&str, i32)]) -> Vec<MessageQueue> {
        spec.iter()
            .map(|(name, queue_id)| MessageQueue {
                broker_name: (*name).into(),
                queue_id: *queue_id,
                topic: "T".into(),
            })
            .collect()
    }

    /// Round-robin without a failure; after one, the failed group's queues are skipped while
    /// another group has some.
    #[test]
    fn selection_avoids_the_broker_that_just_failed() {
        let qs = queues(&[("a", 0), ("a", 1), ("b", 0), ("b", 1)]);
        assert_eq!(select_queue(&qs, 5, None), 1);
        assert_eq!(select_queue(&qs, 0, Some("a")), 2);
        assert_eq!(select_queue(&qs, 3, Some("b")), 0);
        let only_a = queues(&[("a", 0), ("a", 1)]);
        assert_eq!(select_queue(&only_a, 1, Some("a")), 1);
        assert_eq!(select_queue(&qs, usize::MAX, Some("b")), 0);
    }

    /// Hash selection matches Java's `|hashCode % n|`.
    #[test]
    fn hash_selection_matches_java() {
        assert_eq!(queue_by_hash("TagA", 4), 2_598_919 % 4);
        // "polygenelubricants".hashCode() is i32::MIN: the remainder is 0 for any power of 2.
        assert_eq!(queue_by_hash("polygenelubricants", 8), 0);
        assert_eq!(queue_by_hash("polygenelubricants", 3), 2);
        for key in ["a", "order-17", "Ω"] {
            assert!(queue_by_hash(key, 5) < 5);
        }
    }

    /// Connection failures and stale-route answers refresh the route; busy brokers are
    /// skipped; other refusals end the send.
    #[test]
    fn failures_are_classified() {
        let refused = |code| ClientError::Refused {
            addr: "b:1".into(),
            request_code: request::SEND_MESSAGE_V2,
            code,
            remark: String::new(),
        };
        let closed = ClientError::Remoting(remoting::ClientError::Closed { addr: "b:1".into() });
        assert_eq!(after_failure(&closed), AfterFailure::RefreshAndRetry);
        for code in STALE_ROUTE_CODES {
            assert_eq!(after_failure(&refused(code)), AfterFailure::RefreshAndRetry);
        }
        assert_eq!(
            after_failure(&refused(response::SYSTEM_BUSY)),
            AfterFailure::Retry
        );
        assert_eq!(
            after_failure(&refused(response::MESSAGE_ILLEGAL)),
            AfterFailure::Fail
        );
    }
}
