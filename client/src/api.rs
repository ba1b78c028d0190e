//! Typed broker requests shared by the consumers: pull, offsets, consumer lists, sending a
//! message back for redelivery.

use std::sync::Arc;
use std::time::Duration;

use protocol::body::{self, ConsumerListBody, MessageQueue, TopicRouteData};
use protocol::code::{request, response};
use protocol::filter::TagFilter;
use protocol::header::{
    ConsumerGroupHeader, ConsumerSendMsgBackRequestHeader, OffsetResponseHeader,
    PullMessageRequestHeader, PullMessageResponseHeader, QueryConsumerOffsetRequestHeader,
    QueueRequestHeader, SearchOffsetRequestHeader, UpdateConsumerOffsetRequestHeader, pull_flag,
};
use protocol::message::{StoredMessage, offset_msg_id, property};
use protocol::{CommandHeader, RemotingCommand};
use remoting::Transport;

use crate::error::ClientError;
use crate::instance::{Instance, refused};
use crate::message::{PullResult, PullStatus, inflate_in_place};
use crate::route::MASTER_ID;

/// Which message SEARCH_OFFSET_BY_TIMESTAMP picks among those stored at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BoundaryType {
    /// The first (Java's default).
    #[default]
    Lower,
    /// The last.
    Upper,
}

impl BoundaryType {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            BoundaryType::Lower => "LOWER",
            BoundaryType::Upper => "UPPER",
        }
    }
}

/// One pull's parameters.
pub(crate) struct PullArgs<'a> {
    pub group: &'a str,
    pub queue: &'a MessageQueue,
    pub queue_offset: i64,
    pub max_messages: u32,
    /// The consumed offset to piggy-back (sent only to a master, and only when positive).
    pub commit_offset: Option<i64>,
    /// How long the broker may hold the pull when nothing is there.
    pub suspend: Option<Duration>,
    /// `TAG` or `SQL92`.
    pub expression_type: &'a str,
    pub expression: &'a str,
    pub filter: &'a TagFilter,
    pub sub_version: i64,
    pub timeout: Duration,
}

fn header_error(
    addr: &str,
    request_code: i32,
) -> impl FnOnce(protocol::HeaderError) -> ClientError {
    let addr = addr.to_string();
    move |source| ClientError::Header {
        addr,
        request_code,
        source,
    }
}

impl<T: Transport> Instance<T> {
    /// The address for a queue's offset requests, fetching the route if the broker group is
    /// not known yet.
    async fn queue_addr(self: &Arc<Self>, queue: &MessageQueue) -> Result<String, ClientError> {
        if let Some(addr) = self.offset_addr(&queue.broker_name) {
            return Ok(addr);
        }
        self.update_route(&queue.topic).await?;
        self.offset_addr(&queue.broker_name)
            .ok_or_else(|| ClientError::NoBrokerAddress {
                broker_name: queue.broker_name.clone(),
            })
    }

    /// Calls `addr` and reads the `offset` of a SUCCESS answer.
    async fn offset_call(&self, addr: &str, request: RemotingCommand) -> Result<i64, ClientError> {
        let code = request.code;
        let answer = self
            .call(addr, request, self.config.request_timeout)
            .await?;
        if answer.code != response::SUCCESS {
            return Err(refused(addr, code, &answer));
        }
        let header =
            OffsetResponseHeader::from_ext(&answer.ext_fields).map_err(header_error(addr, code))?;
        Ok(header.offset)
    }

    /// The group's committed offset of `queue`; `None` when the broker has none
    /// (QUERY_NOT_FOUND).
    pub(crate) async fn query_offset(
        self: &Arc<Self>,
        group: &str,
        queue: &MessageQueue,
    ) -> Result<Option<i64>, ClientError> {
        let addr = self.queue_addr(queue).await?;
        let header = QueryConsumerOffsetRequestHeader {
            consumer_group: group.to_string(),
            topic: queue.topic.clone(),
            queue_id: queue.queue_id,
            set_zero_if_not_found: None,
        };
        let request = RemotingCommand::request(request::QUERY_CONSUMER_OFFSET, header.to_ext());
        match self.offset_call(&addr, request).await {
            Ok(offset) => Ok(Some(offset)),
            Err(err) if err.refused_code() == Some(response::QUERY_NOT_FOUND) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Commits the group's offset of `queue`, waiting for the answer unless `oneway`.
    pub(crate) async fn commit_offset(
        self: &Arc<Self>,
        group: &str,
        queue: &MessageQueue,
        offset: i64,
        oneway: bool,
    ) -> Result<(), ClientError> {
        let addr = self.queue_addr(queue).await?;
        let header = UpdateConsumerOffsetRequestHeader {
            consumer_group: group.to_string(),
            topic: queue.topic.clone(),
            queue_id: queue.queue_id,
            commit_offset: offset,
        };
        let request = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET, header.to_ext());
        if oneway {
            return self.oneway(&addr, request).await;
        }
        let answer = self
            .call(&addr, request, self.config.request_timeout)
            .await?;
        if answer.code != response::SUCCESS {
            return Err(refused(&addr, request::UPDATE_CONSUMER_OFFSET, &answer));
        }
        Ok(())
    }

    /// GET_MAX_OFFSET (`max`) or GET_MIN_OFFSET of `queue`.
    pub(crate) async fn queue_bound(
        self: &Arc<Self>,
        queue: &MessageQueue,
        max: bool,
    ) -> Result<i64, ClientError> {
        let addr = self.queue_addr(queue).await?;
        let header = QueueRequestHeader {
            topic: queue.topic.clone(),
            queue_id: queue.queue_id,
        };
        let code = if max {
            request::GET_MAX_OFFSET
        } else {
            request::GET_MIN_OFFSET
        };
        let request = RemotingCommand::request(code, header.to_ext());
        self.offset_call(&addr, request).await
    }

    /// SEARCH_OFFSET_BY_TIMESTAMP of `queue`.
    pub(crate) async fn search_offset(
        self: &Arc<Self>,
        queue: &MessageQueue,
        timestamp_ms: i64,
        boundary: BoundaryType,
    ) -> Result<i64, ClientError> {
        let addr = self.queue_addr(queue).await?;
        let header = SearchOffsetRequestHeader {
            topic: queue.topic.clone(),
            queue_id: queue.queue_id,
            timestamp: timestamp_ms,
            boundary_type: Some(boundary.name().to_string()),
        };
        let request =
            RemotingCommand::request(request::SEARCH_OFFSET_BY_TIMESTAMP, header.to_ext());
        self.offset_call(&addr, request).await
    }

    /// The sorted client ids of `group`, asked of a broker of `route`.
    pub(crate) async fn consumer_ids(
        &self,
        group: &str,
        route: &TopicRouteData,
    ) -> Result<Vec<String>, ClientError> {
        let Some(addr) = self.any_broker_addr(route) else {
            return Err(ClientError::NoBrokerAddress {
                broker_name: String::new(),
            });
        };
        let header = ConsumerGroupHeader {
            consumer_group: group.to_string(),
        };
        let request =
            RemotingCommand::request(request::GET_CONSUMER_LIST_BY_GROUP, header.to_ext());
        let answer = self
            .call(&addr, request, self.config.request_timeout)
            .await?;
        if answer.code != response::SUCCESS {
            return Err(refused(&addr, request::GET_CONSUMER_LIST_BY_GROUP, &answer));
        }
        let list: ConsumerListBody =
            body::parse(&answer.body, "consumer list").map_err(|source| ClientError::Body {
                addr: addr.clone(),
                source,
            })?;
        let mut ids = list.consumer_id_list;
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// CONSUMER_SEND_MSG_BACK: the broker redelivers `message` through the group's retry
    /// topic after a delay it picks, or dead-letters it after `max_reconsume_times`.
    pub(crate) async fn send_back(
        self: &Arc<Self>,
        group: &str,
        broker_name: &str,
        message: &StoredMessage,
        max_reconsume_times: u32,
    ) -> Result<(), ClientError> {
        let addr = match self.master_addr(broker_name) {
            Some(addr) => addr,
            None => message.store_host.to_string(),
        };
        let origin_msg_id = message.properties.get(property::UNIQ_KEY).map_or_else(
            || offset_msg_id(message.store_host, message.commit_log_offset),
            str::to_string,
        );
        let header = ConsumerSendMsgBackRequestHeader {
            offset: message.commit_log_offset,
            group: group.to_string(),
            delay_level: 0,
            origin_msg_id: Some(origin_msg_id),
            origin_topic: Some(message.topic.clone()),
            max_reconsume_times: Some(max_reconsume_times as i32),
        };
        let request = RemotingCommand::request(request::CONSUMER_SEND_MSG_BACK, header.to_ext());
        let answer = self
            .call(&addr, request, self.config.request_timeout)
            .await?;
        if answer.code != response::SUCCESS {
            return Err(refused(&addr, request::CONSUMER_SEND_MSG_BACK, &answer));
        }
        Ok(())
    }

    /// Pulls messages of one queue. The request carries its subscription (FLAG_SUBSCRIPTION),
    /// so the broker filters even before it has this client's heartbeat.
    pub(crate) async fn pull(
        self: &Arc<Self>,
        args: &PullArgs<'_>,
    ) -> Result<PullResult, ClientError> {
        let queue = args.queue;
        let (broker_id, addr) = match self.pull_addr(queue) {
            Some(found) => found,
            None => {
                self.update_route(&queue.topic).await?;
                self.pull_addr(queue)
                    .ok_or_else(|| ClientError::NoBrokerAddress {
                        broker_name: queue.broker_name.clone(),
                    })?
            }
        };
        let mut sys_flag = pull_flag::SUBSCRIPTION;
        if args.suspend.is_some() {
            sys_flag |= pull_flag::SUSPEND;
        }
        let commit = args
            .commit_offset
            .filter(|offset| *offset > 0 && broker_id == MASTER_ID);
        if commit.is_some() {
            sys_flag |= pull_flag::COMMIT_OFFSET;
        }
        let suspend_ms = args
            .suspend
            .map_or(0, |s| i64::try_from(s.as_millis()).unwrap_or(i64::MAX));
        let header = PullMessageRequestHeader {
            consumer_group: args.group.to_string(),
            topic: queue.topic.clone(),
            queue_id: queue.queue_id,
            queue_offset: args.queue_offset,
            max_msg_nums: args.max_messages as i32,
            sys_flag,
            commit_offset: commit.unwrap_or(0),
            suspend_timeout_millis: suspend_ms,
            subscription: Some(args.expression.to_string()),
            sub_version: args.sub_version,
            expression_type: Some(args.expression_type.into()),
            max_msg_bytes: None,
        };
        let request = RemotingCommand::request(request::PULL_MESSAGE, header.to_ext());
        let answer = self.call(&addr, request, args.timeout).await?;
        let status = match answer.code {
            response::SUCCESS => PullStatus::Found,
            response::PULL_NOT_FOUND => PullStatus::NoNewMsg,
            response::PULL_RETRY_IMMEDIATELY => PullStatus::NoMatchedMsg,
            response::PULL_OFFSET_MOVED => PullStatus::OffsetIllegal,
            _ => return Err(refused(&addr, request::PULL_MESSAGE, &answer)),
        };
        let header = PullMessageResponseHeader::from_ext(&answer.ext_fields)
            .map_err(header_error(&addr, request::PULL_MESSAGE))?;
        self.set_pull_from(queue, header.suggest_which_broker_id);
        let messages = if status == PullStatus::Found {
            let records =
                StoredMessage::decode_all(&answer.body).map_err(|source| ClientError::Records {
                    addr: addr.clone(),
                    source,
                })?;
            post_process(records, args.filter, &header)
        } else {
            Vec::new()
        };
        Ok(PullResult {
            status,
            next_begin_offset: header.next_begin_offset,
            min_offset: header.min_offset,
            max_offset: header.max_offset,
            messages,
        })
    }
}

/// Java's `processPullResult`: the exact tag re-filter (the broker compares only hashes),
/// inflated bodies, and the queue's bounds as properties.
fn post_process(
    records: Vec<StoredMessage>,
    filter: &TagFilter,
    header: &PullMessageResponseHeader,
) -> Vec<StoredMessage> {
    records
        .into_iter()
        .filter(|m| filter.matches_tag(m.properties.get(property::TAGS)))
        .map(|mut m| {
            if let Err(reason) = inflate_in_place(&mut m) {
                tracing::warn!(
                    topic = %m.topic,
                    queue_id = m.queue_id,
                    queue_offset = m.queue_offset,
                    reason,
                    "body left compressed"
                );
            }
            m.properties
                .set("MIN_OFFSET", header.min_offset.to_string());
            m.properties
                .set("MAX_OFFSET", header.max_offset.to_string());
            m
        })
        .collect()
}
