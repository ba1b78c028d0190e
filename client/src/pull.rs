//! The pull consumer: the application picks queues and offsets and pulls itself (Java's
//! `DefaultMQPullConsumer`); offsets can be kept by the broker under the consumer group.

use std::sync::Arc;
use std::time::Duration;

use protocol::body::{ConsumerData, HeartbeatData, MessageQueue};
use remoting::{TcpTransport, Transport};

use crate::api::{BoundaryType, PullArgs};
use crate::config::{
    ClientConfig, ConsumeFromWhere, MessageModel, MessageSelector, PullConsumerConfig,
};
use crate::error::ClientError;
use crate::instance::Instance;
use crate::limits;
use crate::message::PullResult;
use crate::route::subscribe_queues;

/// A pull consumer.
pub struct PullConsumer<T: Transport = TcpTransport> {
    instance: Arc<Instance<T>>,
    config: PullConsumerConfig,
}

impl<T: Transport> PullConsumer<T> {
    /// Starts a pull consumer of `config.group`.
    ///
    /// # Errors
    /// [`ClientError::Config`] when a setting does not validate.
    pub async fn start(
        transport: T,
        client: ClientConfig,
        config: PullConsumerConfig,
    ) -> Result<Self, ClientError> {
        config.validate()?;
        let heartbeat = HeartbeatData {
            client_id: String::new(),
            consumer_data_set: vec![ConsumerData {
                consume_from_where: ConsumeFromWhere::LastOffset.name().into(),
                consume_type: "CONSUME_ACTIVELY".into(),
                group_name: config.group.clone(),
                message_model: MessageModel::Clustering.name().into(),
                subscription_data_set: Vec::new(),
                unit_mode: false,
            }],
            producer_data_set: Vec::new(),
        };
        let instance = Instance::start(transport, client, heartbeat)?;
        Ok(PullConsumer { instance, config })
    }

    /// This client's id (`ip@instance`).
    pub fn client_id(&self) -> &str {
        &self.instance.client_id
    }

    /// The readable queues of `topic`, from a fresh route.
    ///
    /// # Errors
    /// [`ClientError::NoRoute`] when no name server knows the topic, or none answered.
    pub async fn fetch_subscribe_queues(
        &self,
        topic: &str,
    ) -> Result<Vec<MessageQueue>, ClientError> {
        let Some(route) = self.instance.update_route(topic).await? else {
            return Err(ClientError::NoRoute {
                topic: topic.to_string(),
            });
        };
        Ok(subscribe_queues(topic, &route))
    }

    /// Pulls up to `max_messages` (capped to 1..=1024) messages of `queue` from
    /// `queue_offset` that `selector` takes (a TAG expression as a string, or a
    /// [`crate::MessageSelector`]), without waiting for new ones.
    ///
    /// # Errors
    /// The connection failing or timing out after `timeout`; [`ClientError::Refused`] for
    /// answers other than found / not found / retry / offset moved; malformed records.
    pub async fn pull(
        &self,
        queue: &MessageQueue,
        selector: impl Into<MessageSelector>,
        queue_offset: i64,
        max_messages: u32,
        timeout: Duration,
    ) -> Result<PullResult, ClientError> {
        self.pull_kernel(
            queue,
            &selector.into(),
            queue_offset,
            max_messages,
            None,
            timeout,
        )
        .await
    }

    /// As [`PullConsumer::pull`], but the broker holds the pull up to `suspend` until a
    /// message arrives (long polling). The call waits `suspend` plus a margin.
    ///
    /// # Errors
    /// Those of [`PullConsumer::pull`].
    pub async fn pull_block_if_not_found(
        &self,
        queue: &MessageQueue,
        selector: impl Into<MessageSelector>,
        queue_offset: i64,
        max_messages: u32,
        suspend: Duration,
    ) -> Result<PullResult, ClientError> {
        let timeout = suspend + limits::PULL_CALL_MARGIN;
        self.pull_kernel(
            queue,
            &selector.into(),
            queue_offset,
            max_messages,
            Some(suspend),
            timeout,
        )
        .await
    }

    async fn pull_kernel(
        &self,
        queue: &MessageQueue,
        selector: &MessageSelector,
        queue_offset: i64,
        max_messages: u32,
        suspend: Option<Duration>,
        timeout: Duration,
    ) -> Result<PullResult, ClientError> {
        let filter = selector.tag_filter();
        let args = PullArgs {
            group: &self.config.group,
            queue,
            queue_offset,
            max_messages: max_messages.clamp(1, limits::PULL_BATCH_MESSAGES_MAX),
            commit_offset: None,
            suspend,
            expression_type: selector.expression_type(),
            expression: selector.expression(),
            filter: &filter,
            sub_version: self.instance.config.clock.now_ms(),
            timeout,
        };
        self.instance.pull(&args).await
    }

    /// The group's committed offset of `queue`, `None` if it has none.
    ///
    /// # Errors
    /// The broker failing or refusing.
    pub async fn query_offset(&self, queue: &MessageQueue) -> Result<Option<i64>, ClientError> {
        self.instance.query_offset(&self.config.group, queue).await
    }

    /// Commits the group's offset of `queue` (the next offset to consume) and waits for the
    /// broker's answer.
    ///
    /// # Errors
    /// The broker failing or refusing.
    pub async fn commit_offset(
        &self,
        queue: &MessageQueue,
        queue_offset: i64,
    ) -> Result<(), ClientError> {
        self.instance
            .commit_offset(&self.config.group, queue, queue_offset, false)
            .await
    }

    /// The next offset to be written in `queue` (GET_MAX_OFFSET).
    ///
    /// # Errors
    /// The broker failing or refusing.
    pub async fn max_offset(&self, queue: &MessageQueue) -> Result<i64, ClientError> {
        self.instance.queue_bound(queue, true).await
    }

    /// The first offset still stored in `queue` (GET_MIN_OFFSET).
    ///
    /// # Errors
    /// The broker failing or refusing.
    pub async fn min_offset(&self, queue: &MessageQueue) -> Result<i64, ClientError> {
        self.instance.queue_bound(queue, false).await
    }

    /// The offset of the message of `queue` stored at `timestamp_ms`
    /// (SEARCH_OFFSET_BY_TIMESTAMP).
    ///
    /// # Errors
    /// The broker failing or refusing.
    pub async fn search_offset(
        &self,
        queue: &MessageQueue,
        timestamp_ms: i64,
        boundary: BoundaryType,
    ) -> Result<i64, ClientError> {
        self.instance
            .search_offset(queue, timestamp_ms, boundary)
            .await
    }

    /// Sends a heartbeat to every broker of the routes fetched so far; returns how many
    /// accepted it. (One also goes out every `heartbeat_interval`.)
    pub async fn heartbeat(&self) -> usize {
        self.instance.heartbeat_all().await
    }

    /// Unregisters from the brokers and stops the background work.
    pub async fn shutdown(self) {
        self.instance.shutdown(None, Some(&self.config.group)).await;
    }
}
