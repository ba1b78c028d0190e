//! The client's errors: one enum for every public call, and one for configuration.

use std::time::Duration;

/// A configuration value is out of range or two values disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No name server address is configured.
    #[error("no name server address configured")]
    NoNamesrv,
    /// A group name is empty or has characters RocketMQ refuses.
    #[error("invalid group name {group:?}: use 1 to 255 of [A-Za-z0-9%|_-]")]
    InvalidGroup {
        /// The name.
        group: String,
    },
    /// A duration that must be positive is zero.
    #[error("{field} must be longer than zero")]
    ZeroDuration {
        /// The setting.
        field: &'static str,
    },
    /// A count is outside its range.
    #[error("{field} is {value}, must be within {min}..={max}")]
    OutOfRange {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A push consumer's pull call would give up before the broker answers a held pull.
    #[error("pull timeout {pull_timeout:?} must exceed the suspend time {suspend:?}")]
    PullTimeoutBelowSuspend {
        /// The call timeout.
        pull_timeout: Duration,
        /// The broker's hold.
        suspend: Duration,
    },
    /// A push consumer subscribes to nothing, or to too many topics.
    #[error("a push consumer needs 1 to {max} subscriptions, has {count}")]
    Subscriptions {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A subscribed topic name is invalid.
    #[error("invalid topic {topic:?} in a subscription: {reason}")]
    InvalidSubscription {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
}

/// A client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The configuration does not validate.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A topic name is invalid.
    #[error("invalid topic {topic:?}: {reason}")]
    InvalidTopic {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// A message is malformed (empty body, reserved topic…).
    #[error("invalid message for topic {topic:?}: {reason}")]
    InvalidMessage {
        /// Its topic.
        topic: String,
        /// Why.
        reason: &'static str,
    },
    /// A message body is over the limit.
    #[error("message body of {bytes} bytes is over the limit of {max} bytes")]
    MessageTooLarge {
        /// The body's size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A batch breaks a rule: mixed topics, delay levels, retry topics, too many messages.
    #[error("invalid batch: {reason}")]
    InvalidBatch {
        /// Why.
        reason: &'static str,
    },
    /// No name server knows the topic (nor, for a producer, the auto-create template).
    #[error("no route for topic {topic} on any name server")]
    NoRoute {
        /// The topic.
        topic: String,
    },
    /// The broker asked for a group's members does not list this client yet (it restarted, or
    /// became leader, since this client's last heartbeat): rebalancing waits for it.
    #[error("broker does not list this client in consumer group {group} yet")]
    NotYetAMember {
        /// The consumer group.
        group: String,
    },
    /// The topic's route has no writable queue on a broker with a master.
    #[error("topic {topic} has no writable queue with a master")]
    NoWritableQueue {
        /// The topic.
        topic: String,
    },
    /// The route names no usable address for a broker group.
    #[error("no address for broker {broker_name}")]
    NoBrokerAddress {
        /// The broker group.
        broker_name: String,
    },
    /// A queue selector picked an index outside the queue list.
    #[error("queue selector picked index {index} of {queues} queues")]
    QueueIndexOutOfRange {
        /// The index picked.
        index: usize,
        /// The queues offered.
        queues: usize,
    },
    /// Talking to a server failed: connect, closed connection, timeout.
    #[error(transparent)]
    Remoting(#[from] remoting::ClientError),
    /// A server answered with an error code.
    #[error("{addr} refused request {request_code} with code {code}: {remark}")]
    Refused {
        /// The server.
        addr: String,
        /// The request's code.
        request_code: i32,
        /// The response code.
        code: i32,
        /// The server's remark.
        remark: String,
    },
    /// An answer's header is missing a field or does not parse.
    #[error("bad answer from {addr} to request {request_code}: {source}")]
    Header {
        /// The server.
        addr: String,
        /// The request's code.
        request_code: i32,
        /// What is wrong.
        source: protocol::HeaderError,
    },
    /// An answer's JSON body does not parse.
    #[error("bad answer from {addr}: {source}")]
    Body {
        /// The server.
        addr: String,
        /// What is wrong.
        source: protocol::body::BodyError,
    },
    /// A pulled message record is malformed.
    #[error("bad message records from {addr}: {source}")]
    Records {
        /// The server.
        addr: String,
        /// What is wrong.
        source: protocol::message::MessageError,
    },
    /// A send used up its time before an attempt succeeded.
    #[error("send to topic {topic} timed out after {after:?} and {attempts} attempts")]
    SendTimeout {
        /// The topic.
        topic: String,
        /// The send timeout.
        after: Duration,
        /// Attempts made.
        attempts: u32,
    },
    /// Every attempt of a send failed.
    #[error("send to topic {topic} failed {attempts} times, last: {last}")]
    SendFailed {
        /// The topic.
        topic: String,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: Box<ClientError>,
    },
    /// The task running an asynchronous send ended without an answer (it panicked or its
    /// runtime shut down).
    #[error("send task ended without an answer: {source}")]
    Task {
        /// Why.
        source: tokio::task::JoinError,
    },
}

impl ClientError {
    /// The response code, if a server refused the request.
    pub fn refused_code(&self) -> Option<i32> {
        match self {
            ClientError::Refused { code, .. } => Some(*code),
            ClientError::SendFailed { last, .. } => last.refused_code(),
            _ => None,
        }
    }
}
