//! Settings: one struct per component, every field with its unit and default (Java's
//! defaults, PROTOCOL.md §7.1), and a `validate` for the rules between them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use crate::error::ConfigError;
use crate::limits;
use crate::message::check_topic;
use seams::{Clock, SystemClock};

fn check_group(group: &str) -> Result<(), ConfigError> {
    protocol::names::check_group(group).map_err(|_| ConfigError::InvalidGroup {
        group: group.to_string(),
    })
}

fn check_positive(field: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::ZeroDuration { field });
    }
    Ok(())
}

fn check_range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if !(min..=max).contains(&value) {
        return Err(ConfigError::OutOfRange {
            field,
            value,
            min,
            max,
        });
    }
    Ok(())
}

/// What every producer and consumer shares: where the name servers are, who this client is,
/// and the periods of its background work.
#[derive(Clone)]
pub struct ClientConfig {
    /// Name server addresses (`host:port`), tried in turn. Required.
    pub namesrv_addrs: Vec<String>,
    /// This host's address, the first part of the client id and of every `UNIQ_KEY`.
    /// Default 127.0.0.1; set it to the address brokers see when several hosts run clients.
    pub client_ip: IpAddr,
    /// The part of the client id after `ip@`. Default `"<pid>#<nanos>"`, unique per client in
    /// a process (Java's default instance name).
    pub instance_name: Option<String>,
    /// The process id written into `UNIQ_KEY`s (its low 16 bits). Default: this process's.
    pub process_id: u32,
    /// Deadline of every request other than sends and held pulls: routes, heartbeats,
    /// offsets (Java's `mqClientApiTimeout`). Default 3 s.
    pub request_timeout: Duration,
    /// How often cached routes are fetched again (Java's `pollNameServerInterval`).
    /// Default 30 s.
    pub poll_namesrv_interval: Duration,
    /// How often every broker of the cached routes gets a HEART_BEAT (Java's
    /// `heartbeatBrokerInterval`). Default 30 s.
    pub heartbeat_interval: Duration,
    /// Wall-clock time. Default [`SystemClock`].
    pub clock: Arc<dyn Clock>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("namesrv_addrs", &self.namesrv_addrs)
            .field("client_ip", &self.client_ip)
            .field("instance_name", &self.instance_name)
            .field("process_id", &self.process_id)
            .field("request_timeout", &self.request_timeout)
            .field("poll_namesrv_interval", &self.poll_namesrv_interval)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Defaults with these name servers.
    pub fn new<S: Into<String>>(namesrv_addrs: impl IntoIterator<Item = S>) -> Self {
        ClientConfig {
            namesrv_addrs: namesrv_addrs.into_iter().map(Into::into).collect(),
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            instance_name: None,
            process_id: std::process::id(),
            request_timeout: Duration::from_secs(3),
            poll_namesrv_interval: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(30),
            clock: Arc::new(SystemClock),
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// The first setting out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.namesrv_addrs.is_empty() {
            return Err(ConfigError::NoNamesrv);
        }
        check_positive("request_timeout", self.request_timeout)?;
        check_positive("poll_namesrv_interval", self.poll_namesrv_interval)?;
        check_positive("heartbeat_interval", self.heartbeat_interval)?;
        Ok(())
    }
}

/// Settings of a [`crate::Producer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// Producer group. Default `"DEFAULT_PRODUCER"`.
    pub group: String,
    /// Deadline of a whole send, retries included. Default 3 s.
    pub send_timeout: Duration,
    /// Longest one attempt of a send waits for its answer before it is retried on the
    /// route's master as it is then (within `send_timeout`): a broker that stopped answering
    /// (cut off, frozen) costs this, not the whole send. Default 2 s, longer than a raftmq
    /// broker holds a send while its group fails over. An abandoned attempt may still have
    /// been stored, so a retry may store the message twice, as after any timeout.
    pub attempt_timeout: Duration,
    /// Further attempts after a failed one, each on another broker when there is one
    /// (Java's `retryTimesWhenSendFailed`). Default 2; at most
    /// [`limits::SEND_RETRY_TIMES_MAX`].
    pub retry_times: u32,
    /// The template topic whose route is used for a topic without one, so the broker
    /// auto-creates it. Default `"TBW102"`.
    pub default_topic: String,
    /// Queues of an auto-created topic. Default 4.
    pub default_topic_queue_nums: i32,
    /// Largest body, in bytes, before compression. Default 4 MiB.
    pub max_message_bytes: usize,
    /// Bodies larger than this many bytes are sent zlib-compressed. Default 4096.
    pub compress_body_over_bytes: usize,
    /// zlib level, 0..=9. Default 5.
    pub compress_level: u32,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            group: "DEFAULT_PRODUCER".into(),
            send_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(2),
            retry_times: 2,
            default_topic: "TBW102".into(),
            default_topic_queue_nums: 4,
            max_message_bytes: limits::MESSAGE_BYTES_MAX,
            compress_body_over_bytes: limits::COMPRESS_BODY_OVER_BYTES,
            compress_level: 5,
        }
    }
}

impl ProducerConfig {
    /// Defaults with this producer group.
    pub fn new(group: impl Into<String>) -> Self {
        ProducerConfig {
            group: group.into(),
            ..Default::default()
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// The first setting out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_group(&self.group)?;
        check_positive("send_timeout", self.send_timeout)?;
        check_positive("attempt_timeout", self.attempt_timeout)?;
        check_range(
            "retry_times",
            u64::from(self.retry_times),
            0,
            u64::from(limits::SEND_RETRY_TIMES_MAX),
        )?;
        if let Err(reason) = check_topic(&self.default_topic) {
            return Err(ConfigError::InvalidSubscription {
                topic: self.default_topic.clone(),
                reason,
            });
        }
        check_range(
            "default_topic_queue_nums",
            u64::try_from(self.default_topic_queue_nums).unwrap_or(0),
            1,
            1024,
        )?;
        check_range(
            "max_message_bytes",
            self.max_message_bytes as u64,
            1,
            limits::MESSAGE_BYTES_MAX as u64,
        )?;
        check_range("compress_level", u64::from(self.compress_level), 0, 9)?;
        Ok(())
    }
}

/// Settings of a [`crate::PullConsumer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullConsumerConfig {
    /// Consumer group, under which offsets are kept. Required.
    pub group: String,
}

impl PullConsumerConfig {
    /// Settings for this consumer group.
    pub fn new(group: impl Into<String>) -> Self {
        PullConsumerConfig {
            group: group.into(),
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// An invalid group name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_group(&self.group)
    }
}

/// How a consumer group shares messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageModel {
    /// Each queue goes to one member of the group; offsets are kept by the broker.
    #[default]
    Clustering,
    /// Every member gets every message; offsets are kept in the member's memory.
    Broadcasting,
}

impl MessageModel {
    /// The name in heartbeats.
    pub fn name(self) -> &'static str {
        match self {
            MessageModel::Clustering => "CLUSTERING",
            MessageModel::Broadcasting => "BROADCASTING",
        }
    }
}

/// Where a consumer starts on a queue its group has no offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsumeFromWhere {
    /// At the queue's end: only messages sent from now on (Java's default).
    #[default]
    LastOffset,
    /// At the queue's start.
    FirstOffset,
    /// At the first message stored at or after this time (ms since the epoch).
    Timestamp {
        /// The time.
        timestamp_ms: i64,
    },
}

impl ConsumeFromWhere {
    /// The name in heartbeats.
    pub fn name(self) -> &'static str {
        match self {
            ConsumeFromWhere::LastOffset => "CONSUME_FROM_LAST_OFFSET",
            ConsumeFromWhere::FirstOffset => "CONSUME_FROM_FIRST_OFFSET",
            ConsumeFromWhere::Timestamp { .. } => "CONSUME_FROM_TIMESTAMP",
        }
    }
}

/// What a consumer takes from a topic (Java's `MessageSelector`): a TAG expression (`"*"`,
/// `"TagA || TagB"`), or an SQL92 selector over message properties that the broker evaluates
/// (`"region = 'hz' AND price > 100"`; the broker must have `enablePropertyFilter` on). A plain
/// string is a TAG expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageSelector {
    /// A TAG expression.
    Tag(String),
    /// An SQL92 selector.
    Sql92(String),
}

impl MessageSelector {
    /// A TAG expression.
    pub fn by_tag(expression: impl Into<String>) -> MessageSelector {
        MessageSelector::Tag(expression.into())
    }

    /// An SQL92 selector.
    pub fn by_sql(expression: impl Into<String>) -> MessageSelector {
        MessageSelector::Sql92(expression.into())
    }

    /// `TAG` or `SQL92`, as subscriptions and pulls name the type.
    pub fn expression_type(&self) -> &'static str {
        match self {
            MessageSelector::Tag(_) => "TAG",
            MessageSelector::Sql92(_) => "SQL92",
        }
    }

    /// The expression's text.
    pub fn expression(&self) -> &str {
        match self {
            MessageSelector::Tag(e) | MessageSelector::Sql92(e) => e,
        }
    }

    /// What the client checks again on what it pulled: tags exactly (the broker compares
    /// hashes); an SQL92 selector only the broker evaluates, as in Java.
    pub(crate) fn tag_filter(&self) -> protocol::filter::TagFilter {
        match self {
            MessageSelector::Tag(e) => protocol::filter::TagFilter::parse(e),
            MessageSelector::Sql92(_) => protocol::filter::TagFilter::All,
        }
    }
}

impl From<&str> for MessageSelector {
    fn from(expression: &str) -> Self {
        MessageSelector::Tag(expression.to_string())
    }
}

impl From<String> for MessageSelector {
    fn from(expression: String) -> Self {
        MessageSelector::Tag(expression)
    }
}

impl From<&String> for MessageSelector {
    fn from(expression: &String) -> Self {
        MessageSelector::Tag(expression.clone())
    }
}

/// Settings of a [`crate::PushConsumer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConsumerConfig {
    /// Consumer group. Required.
    pub group: String,
    /// Topic → what to take from it (a TAG expression or an SQL92 selector). At least one.
    pub subscriptions: BTreeMap<String, MessageSelector>,
    /// Clustering (default) or broadcasting.
    pub message_model: MessageModel,
    /// Where to start on a queue without an offset. Default [`ConsumeFromWhere::LastOffset`].
    pub consume_from_where: ConsumeFromWhere,
    /// Messages asked for per pull. Default 32; at most
    /// [`limits::PULL_BATCH_MESSAGES_MAX`].
    pub pull_batch_size: u32,
    /// Messages handed to the listener per call. Default 1; at most
    /// [`limits::CONSUME_BATCH_MESSAGES_MAX`].
    pub consume_batch_max: usize,
    /// How long the broker may hold a pull that finds nothing. Default 15 s.
    pub suspend: Duration,
    /// Deadline of a pull call; must exceed `suspend`. Default 30 s.
    pub pull_timeout: Duration,
    /// How often queues are allocated again; a NOTIFY_CONSUMER_IDS_CHANGED from a broker
    /// triggers it at once. Default 20 s.
    pub rebalance_interval: Duration,
    /// How often consumed offsets are committed to the brokers (clustering only). Default 5 s.
    pub persist_offset_interval: Duration,
    /// Wait before pulling a queue again after a failed pull. Default 3 s.
    pub pull_delay_after_error: Duration,
    /// Redeliveries of a message the listener keeps failing before it goes to the dead-letter
    /// queue. Default 16; at most [`limits::RECONSUME_TIMES_MAX`].
    pub max_reconsume_times: u32,
}

impl PushConsumerConfig {
    /// Defaults for this consumer group, with no subscription yet.
    pub fn new(group: impl Into<String>) -> Self {
        PushConsumerConfig {
            group: group.into(),
            subscriptions: BTreeMap::new(),
            message_model: MessageModel::Clustering,
            consume_from_where: ConsumeFromWhere::LastOffset,
            pull_batch_size: 32,
            consume_batch_max: 1,
            suspend: Duration::from_secs(15),
            pull_timeout: Duration::from_secs(30),
            rebalance_interval: Duration::from_secs(20),
            persist_offset_interval: Duration::from_secs(5),
            pull_delay_after_error: Duration::from_secs(3),
            max_reconsume_times: 16,
        }
    }

    /// Adds a subscription to `topic`: a TAG expression (a string) or a [`MessageSelector`].
    #[must_use]
    pub fn subscribe(
        mut self,
        topic: impl Into<String>,
        selector: impl Into<MessageSelector>,
    ) -> Self {
        self.subscriptions.insert(topic.into(), selector.into());
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// The first setting out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_group(&self.group)?;
        let count = self.subscriptions.len();
        if count == 0 || count > limits::SUBSCRIPTIONS_MAX {
            return Err(ConfigError::Subscriptions {
                count,
                max: limits::SUBSCRIPTIONS_MAX,
            });
        }
        for topic in self.subscriptions.keys() {
            check_topic(topic).map_err(|reason| ConfigError::InvalidSubscription {
                topic: topic.clone(),
                reason,
            })?;
        }
        check_range(
            "pull_batch_size",
            u64::from(self.pull_batch_size),
            1,
            u64::from(limits::PULL_BATCH_MESSAGES_MAX),
        )?;
        check_range(
            "consume_batch_max",
            self.consume_batch_max as u64,
            1,
            limits::CONSUME_BATCH_MESSAGES_MAX as u64,
        )?;
        check_positive("rebalance_interval", self.rebalance_interval)?;
        check_positive("persist_offset_interval", self.persist_offset_interval)?;
        check_positive("pull_delay_after_error", self.pull_delay_after_error)?;
        if self.pull_timeout <= self.suspend {
            return Err(ConfigError::PullTimeoutBelowSuspend {
                pull_timeout: self.pull_timeout,
                suspend: self.suspend,
            });
        }
        check_range(
            "max_reconsume_times",
            u64::from(self.max_reconsume_times),
            0,
            u64::from(limits::RECONSUME_TIMES_MAX),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Java's defaults validate; each broken rule is named.
    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        assert_eq!(ClientConfig::new(["127.0.0.1:9876"]).validate(), Ok(()));
        assert_eq!(
            ClientConfig::new(Vec::<String>::new()).validate(),
            Err(ConfigError::NoNamesrv)
        );
        assert_eq!(ProducerConfig::new("pg").validate(), Ok(()));
        assert!(matches!(
            ProducerConfig::new("bad group").validate(),
            Err(ConfigError::InvalidGroup { .. })
        ));
        let mut producer = ProducerConfig::new("pg");
        producer.retry_times = 17;
        assert_eq!(
            producer.validate(),
            Err(ConfigError::OutOfRange {
                field: "retry_times",
                value: 17,
                min: 0,
                max: 16
            })
        );
        let consumer = PushConsumerConfig::new("cg");
        assert_eq!(
            consumer.validate(),
            Err(ConfigError::Subscriptions { count: 0, max: 256 })
        );
        let mut consumer = consumer.subscribe("T", "*");
        assert_eq!(consumer.validate(), Ok(()));
        consumer.pull_timeout = consumer.suspend;
        assert!(matches!(
            consumer.validate(),
            Err(ConfigError::PullTimeoutBelowSuspend { .. })
        ));
        let consumer = PushConsumerConfig::new("cg").subscribe("bad topic", "*");
        assert!(matches!(
            consumer.validate(),
            Err(ConfigError::InvalidSubscription { .. })
        ));
    }
}
