//! Request processing: one function per request code (PROTOCOL.md §3). Every refusal carries a
//! response code a RocketMQ client understands and a remark that says what was wrong.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dledger::Disk;
use protocol::RemotingCommand;
use protocol::body::{
    self, ConsumerListBody, HeartbeatData, LockBatchRequestBody, LockBatchResponseBody,
    TopicConfig, perm,
};
use protocol::code::{request, response};
use protocol::filter::TagFilter;
use protocol::header::{
    CommandHeader, ConsumerGroupHeader, ConsumerSendMsgBackRequestHeader, CreateTopicRequestHeader,
    OffsetResponseHeader, PullMessageRequestHeader, PullMessageResponseHeader,
    QueryConsumerOffsetRequestHeader, QueryMessageRequestHeader, QueryMessageResponseHeader,
    QueueRequestHeader, SearchOffsetRequestHeader, SendMessageRequestHeader,
    SendMessageResponseHeader, TimestampResponseHeader, UnregisterClientRequestHeader,
    UpdateConsumerOffsetRequestHeader, ViewMessageRequestHeader, pull_flag,
};
use protocol::message::{
    self, BatchItem, Properties, QUEUE_OFFSET_AT, RecordView, StoredMessage, decode_batch,
    offset_msg_id, property,
};
use remoting::{Handler, Peer, Transport};
use store::entry::OffsetCommit;
use tokio::sync::oneshot;

use crate::handover::{self, Held};
use crate::metrics;
use crate::writer::{Landed, NotStored, Write};
use crate::{Shared, TBW102};

/// Most messages in one pull answer.
const PULL_MESSAGES_MAX: usize = 32;
/// Most bytes in one pull answer (RocketMQ: 256 KiB from memory).
const PULL_BYTES_MAX: usize = 256 * 1024;
/// Most messages in one QUERY_MESSAGE answer.
const QUERY_MESSAGES_MAX: usize = 32;
/// Longest wait for a send to be stored.
const SEND_STORE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a queue lock of an orderly consumer lasts without renewal (RocketMQ: 60 s).
const QUEUE_LOCK_TTL: Duration = Duration::from_secs(60);
/// Most queues a topic may have.
const TOPIC_QUEUES_MAX: i32 = 1024;
/// How long a RAFTMQ_TRANSFER_LEADER request waits for the target to take over, unless it says.
const TRANSFER_WAIT_DEFAULT: Duration = Duration::from_secs(5);
/// The longest wait a RAFTMQ_TRANSFER_LEADER request may ask for: sends are held that long.
const TRANSFER_WAIT_MAX: Duration = Duration::from_secs(30);

pub(crate) struct Processor<D: Disk, T: Transport> {
    pub shared: Arc<Shared<D, T>>,
}

fn refuse(req: &RemotingCommand, code: i32, remark: impl Into<String>) -> RemotingCommand {
    RemotingCommand::response_to(req, code).with_remark(remark)
}

fn ok(req: &RemotingCommand) -> RemotingCommand {
    RemotingCommand::response_to(req, response::SUCCESS)
}

/// RocketMQ's topic name rule.
pub(crate) fn check_topic_name(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("the topic name is empty".into());
    }
    if topic.len() > message::TOPIC_MAX_BYTES {
        return Err(format!(
            "the topic name is {} bytes, longer than {}",
            topic.len(),
            message::TOPIC_MAX_BYTES
        ));
    }
    if let Some(bad) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '%' | '-' | '_' | '|')))
    {
        return Err(format!(
            "the topic name {topic:?} contains {bad:?}; allowed: [%|a-zA-Z0-9_-]"
        ));
    }
    Ok(())
}

static UNIQ_COUNTER: AtomicU16 = AtomicU16::new(0);

/// Inflates a zlib-compressed batch body, refusing more than `limit` bytes of output.
fn inflate(body: &[u8], sys_flag: i32, limit: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let kind = (sys_flag & 0x700) >> 8;
    if kind != 0 && kind != 3 {
        return Err(format!(
            "compression type {kind} is not supported; use zlib"
        ));
    }
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("the compressed batch does not inflate: {e}"))?;
    if out.len() > limit {
        return Err(format!("the batch inflates to more than {limit} bytes"));
    }
    Ok(out)
}

impl<D: Disk, T: Transport> Handler for Processor<D, T> {
    async fn handle(&self, peer: &Arc<Peer>, req: RemotingCommand) -> Option<RemotingCommand> {
        let received = tokio::time::Instant::now();
        let bytes_in = metrics::frame_bytes(&req);
        let answer = match req.code {
            request::SEND_MESSAGE | request::SEND_MESSAGE_V2 | request::SEND_BATCH_MESSAGE => {
                self.send(peer, &req).await
            }
            request::PULL_MESSAGE | request::LITE_PULL_MESSAGE => self.pull(&req).await,
            request::QUERY_CONSUMER_OFFSET => self.query_offset(&req),
            request::UPDATE_CONSUMER_OFFSET => self.update_offset(&req).await,
            request::GET_MAX_OFFSET => self.queue_offset(&req, true),
            request::GET_MIN_OFFSET => self.queue_offset(&req, false),
            request::SEARCH_OFFSET_BY_TIMESTAMP => self.search_offset(&req),
            request::GET_EARLIEST_MSG_STORETIME => self.earliest_time(&req),
            request::HEART_BEAT => self.heartbeat(peer, &req).await,
            request::UNREGISTER_CLIENT => self.unregister_client(&req),
            request::GET_CONSUMER_LIST_BY_GROUP => self.consumer_list(&req),
            request::UPDATE_AND_CREATE_TOPIC => self.create_topic(&req).await,
            request::CHECK_CLIENT_CONFIG => self.check_client_config(&req),
            request::VIEW_MESSAGE_BY_ID => self.view_message(&req),
            request::QUERY_MESSAGE => self.query_message(&req),
            request::CONSUMER_SEND_MSG_BACK => self.send_back(&req).await,
            request::LOCK_BATCH_MQ => self.lock_queues(&req, true),
            request::UNLOCK_BATCH_MQ => self.lock_queues(&req, false),
            request::RAFTMQ_TRANSFER_LEADER => self.transfer_leader(&req).await,
            code => refuse(
                &req,
                response::REQUEST_CODE_NOT_SUPPORTED,
                format!(" request type {code} not supported"),
            ),
        };
        let metrics = &self.shared.metrics;
        metrics.record_request(
            req.code,
            answer.code,
            bytes_in,
            metrics::frame_bytes(&answer),
        );
        match req.code {
            request::SEND_MESSAGE | request::SEND_MESSAGE_V2 | request::SEND_BATCH_MESSAGE => {
                metrics.send_latency.observe(received.elapsed());
            }
            request::PULL_MESSAGE | request::LITE_PULL_MESSAGE => {
                metrics.pull_latency.observe(received.elapsed());
            }
            _ => {}
        }
        Some(answer)
    }

    fn closed(&self, peer: &Peer) {
        let mut clients = self.shared.clients.lock().expect("clients");
        for group in clients.connection_closed(peer.id) {
            clients.notify_changed(&group);
        }
    }
}

impl<D: Disk, T: Transport> Processor<D, T> {
    fn not_master(&self, req: &RemotingCommand) -> RemotingCommand {
        let status = self.shared.ledger.status();
        let state = if status.role == dledger::Role::Leader && !status.has_quorum {
            format!(
                "leads term {} without a quorum (none answered for {})",
                status.term,
                status
                    .quorum_acked_ms_ago
                    .map_or("its whole term".to_string(), |ms| format!("{ms} ms")),
            )
        } else {
            format!("is {:?} in term {}", status.role, status.term)
        };
        refuse(
            req,
            response::SERVICE_NOT_AVAILABLE,
            format!(
                "not master: broker {} replica {} {state}, leader is {}",
                self.shared.config.broker_name,
                status.node_id,
                status
                    .leader
                    .map_or("unknown".to_string(), |l| format!("replica {l}")),
            ),
        )
    }

    /// `not_master`, naming the master the name servers list after a held send.
    fn not_master_after(&self, req: &RemotingCommand, held: &Held) -> RemotingCommand {
        let mut answer = self.not_master(req);
        let listed = match held {
            Held::MasterElsewhere(addr) => format!("; the name servers list {addr} as master"),
            _ => format!(
                "; no other master was listed within {} ms",
                handover::SEND_HOLD_MAX.as_millis()
            ),
        };
        answer.remark = Some(format!("{}{listed}", answer.remark.unwrap_or_default()));
        answer
    }

    /// RAFTMQ_TRANSFER_LEADER (raftmq's own): hands leadership to ext field `to` (`n1` or a
    /// node id) and answers once this replica sees it lead, or why not. Ext `timeoutMillis`
    /// bounds the wait (default 5 s, at most 30 s).
    async fn transfer_leader(&self, req: &RemotingCommand) -> RemotingCommand {
        let Some(text) = req.ext_fields.get("to") else {
            return refuse(
                req,
                response::INVALID_PARAMETER,
                "the field to is missing: the target node, a DLedger id (n0, n1, ...) or a node id (1, 2, ...)",
            );
        };
        let to = match handover::parse_node(text) {
            Ok(to) => to,
            Err(reason) => return refuse(req, response::INVALID_PARAMETER, reason),
        };
        let timeout = match req.ext_fields.get("timeoutMillis") {
            None => TRANSFER_WAIT_DEFAULT,
            Some(text) => match text.parse::<u64>().ok().map(Duration::from_millis) {
                Some(t) if !t.is_zero() && t <= TRANSFER_WAIT_MAX => t,
                _ => {
                    return refuse(
                        req,
                        response::INVALID_PARAMETER,
                        format!(
                            "timeoutMillis {text:?} is not a number of milliseconds from 1 to {}",
                            TRANSFER_WAIT_MAX.as_millis()
                        ),
                    );
                }
            },
        };
        match self.shared.transfer_leadership(to, timeout, true).await {
            Ok(done) => {
                let ext = [
                    ("from", done.from.to_string()),
                    ("leaderId", done.to.to_string()),
                    ("term", done.term.to_string()),
                    ("elapsedMillis", done.elapsed.as_millis().to_string()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                ok(req)
                    .with_remark(format!(
                        "leadership moved from {} to {} (term {}) in {} ms",
                        handover::describe(done.from),
                        handover::describe(done.to),
                        done.term,
                        done.elapsed.as_millis()
                    ))
                    .with_ext(ext)
            }
            Err(err) => refuse(req, err.response_code(), err.to_string()).with_ext(err.ext()),
        }
    }

    /// The topic's configuration, auto-creating it from its template if allowed.
    async fn topic_for_send(
        &self,
        header: &SendMessageRequestHeader,
    ) -> Result<TopicConfig, (i32, String)> {
        if let Some(config) = self.shared.store.topic(&header.topic) {
            return Ok(config);
        }
        let retry = header.topic.starts_with("%RETRY%") || header.topic.starts_with("%DLQ%");
        let queues = if retry {
            1
        } else {
            if !self.shared.config.auto_create_topic {
                return Err((
                    response::TOPIC_NOT_EXIST,
                    format!("topic[{}] not exist, apply first please!", header.topic),
                ));
            }
            let template_name = if header.default_topic.is_empty() {
                TBW102
            } else {
                &header.default_topic
            };
            let Some(template) = self
                .shared
                .store
                .topic(template_name)
                .filter(|t| t.perm & perm::INHERIT != 0)
            else {
                return Err((
                    response::TOPIC_NOT_EXIST,
                    format!(
                        "topic[{}] not exist and the default topic {template_name} cannot create topics",
                        header.topic
                    ),
                ));
            };
            header
                .default_topic_queue_nums
                .clamp(1, template.write_queue_nums.max(1))
        };
        let config = TopicConfig::new(&header.topic, queues, perm::READ | perm::WRITE);
        self.shared
            .create_topic(config.clone())
            .await
            .map_err(|e| {
                (
                    response::SYSTEM_ERROR,
                    format!("cannot create topic {}: {e}", header.topic),
                )
            })?;
        tracing::info!(topic = %header.topic, queues, "topic auto-created");
        Ok(self.shared.store.topic(&header.topic).unwrap_or(config))
    }

    fn uniq_key(&self) -> String {
        let ip = self.shared.config.advertised_addr.ip();
        let counter = UNIQ_COUNTER.fetch_add(1, Ordering::Relaxed);
        let ms = (self.shared.config.clock)();
        message::uniq_id(
            ip,
            std::process::id() as u16,
            self.shared.config.advertised_addr.port().into(),
            (ms % (31 * 24 * 3600 * 1000)) as i32,
            counter,
        )
    }

    fn record(
        &self,
        peer: &Peer,
        header: &SendMessageRequestHeader,
        queue_id: i32,
        item: BatchItem,
        sys_flag: i32,
    ) -> Result<(Vec<u8>, String), String> {
        let mut properties = item.properties;
        let uniq = match properties.get(property::UNIQ_KEY) {
            Some(u) => u.to_string(),
            None => {
                let u = self.uniq_key();
                properties.set(property::UNIQ_KEY, u.clone());
                u
            }
        };
        properties.set(property::CLUSTER, self.shared.config.cluster_name.clone());
        let record = StoredMessage {
            topic: header.topic.clone(),
            queue_id,
            flag: item.flag,
            queue_offset: 0,
            physical_offset: 0,
            sys_flag,
            born_timestamp: header.born_timestamp,
            born_host: peer.addr,
            store_timestamp: (self.shared.config.clock)(),
            store_host: self.shared.config.advertised_addr,
            reconsume_times: header.reconsume_times.unwrap_or(0),
            prepared_transaction_offset: 0,
            body: item.body,
            properties,
        };
        let mut out = Vec::with_capacity(record.encoded_len());
        record.encode(&mut out).map_err(|e| e.reason)?;
        Ok((out, uniq))
    }

    async fn send(&self, peer: &Peer, req: &RemotingCommand) -> RemotingCommand {
        let header = match req.code {
            request::SEND_MESSAGE => SendMessageRequestHeader::from_ext(&req.ext_fields),
            _ => SendMessageRequestHeader::from_v2(&req.ext_fields),
        };
        let header = match header {
            Ok(h) => h,
            Err(err) => return refuse(req, response::INVALID_PARAMETER, err.to_string()),
        };
        if !self.shared.takes_writes() {
            if !self.shared.leadership_moving() {
                return self.not_master(req);
            }
            match self.shared.hold_send().await {
                Held::TakesWrites => {}
                held => return self.not_master_after(req, &held),
            }
        }
        if let Err(reason) = check_topic_name(&header.topic) {
            return refuse(req, response::MESSAGE_ILLEGAL, reason);
        }
        let limit = self.shared.config.max_message_bytes;
        if req.body.len() > limit {
            return refuse(
                req,
                response::MESSAGE_ILLEGAL,
                format!(
                    "the message body size {} is over the limit {limit}",
                    req.body.len()
                ),
            );
        }
        // The C++ client sends batches as code 10 with `batch`, and compresses a large batch
        // as one zlib stream.
        let is_batch = req.code == request::SEND_BATCH_MESSAGE || header.batch == Some(true);
        let mut sys_flag = header.sys_flag;
        let items = if is_batch {
            if header.topic.starts_with("%RETRY%") {
                return refuse(
                    req,
                    response::MESSAGE_ILLEGAL,
                    "batch messages cannot be sent to a retry topic",
                );
            }
            let raw = if sys_flag & message::sys_flag::COMPRESSED != 0 {
                match inflate(&req.body, sys_flag, limit) {
                    Ok(raw) => {
                        sys_flag &= !message::sys_flag::COMPRESSED;
                        Bytes::from(raw)
                    }
                    Err(reason) => return refuse(req, response::MESSAGE_ILLEGAL, reason),
                }
            } else {
                req.body.clone()
            };
            match decode_batch(&raw) {
                Ok(items) if !items.is_empty() => items,
                Ok(_) => return refuse(req, response::MESSAGE_ILLEGAL, "the batch is empty"),
                Err(err) => {
                    return refuse(
                        req,
                        response::MESSAGE_ILLEGAL,
                        format!("bad batch body: {err}"),
                    );
                }
            }
        } else {
            let properties = Properties::parse(header.properties.as_deref().unwrap_or(""));
            vec![BatchItem {
                flag: header.flag,
                body: req.body.clone(),
                properties,
            }]
        };
        let topic = match self.topic_for_send(&header).await {
            Ok(t) => t,
            Err((code, remark)) => return refuse(req, code, remark),
        };
        if topic.perm & perm::WRITE == 0 {
            return refuse(
                req,
                response::NO_PERMISSION,
                format!("the topic[{}] sending message is forbidden", header.topic),
            );
        }
        let queues = topic.write_queue_nums.max(topic.read_queue_nums);
        let queue_id = if header.queue_id < 0 {
            use rand::Rng as _;
            let queues = topic.write_queue_nums.max(1);
            self.shared.rng.lock().expect("rng").random_range(0..queues)
        } else if header.queue_id >= queues {
            return refuse(
                req,
                response::INVALID_PARAMETER,
                format!(
                    "queueId[{}] is illegal, topic:[{}] topicSysFlag:[{}] queueNums:[{queues}]",
                    header.queue_id, header.topic, topic.topic_sys_flag
                ),
            );
        } else {
            header.queue_id
        };
        let mut records = Vec::new();
        let mut uniq_keys = Vec::new();
        for item in items {
            match self.record(peer, &header, queue_id, item, sys_flag) {
                Ok((bytes, uniq)) => {
                    records.extend_from_slice(&bytes);
                    uniq_keys.push(uniq);
                }
                Err(reason) => return refuse(req, response::MESSAGE_ILLEGAL, reason),
            }
        }
        let landed = match self.store_records(req, records).await {
            Ok(landed) => landed,
            Err(answer) => return answer,
        };
        let store_host = self.shared.config.advertised_addr;
        let msg_id = landed
            .iter()
            .map(|l| offset_msg_id(store_host, l.physical_offset as i64))
            .collect::<Vec<_>>()
            .join(",");
        let answer = SendMessageResponseHeader {
            msg_id,
            queue_id: landed[0].queue_id,
            queue_offset: landed[0].queue_offset,
            transaction_id: (uniq_keys.len() == 1).then(|| uniq_keys[0].clone()),
            batch_uniq_id: None,
        };
        let mut ext = answer.to_ext();
        ext.insert("MSG_REGION".into(), "DefaultRegion".into());
        ext.insert("TRACE_ON".into(), "true".into());
        ok(req).with_ext(ext)
    }

    /// Hands encoded records to the writer and waits until they are committed and applied.
    async fn store_records(
        &self,
        req: &RemotingCommand,
        records: Vec<u8>,
    ) -> Result<Vec<Landed>, RemotingCommand> {
        let (reply, landed) = oneshot::channel();
        if self
            .shared
            .writer
            .send(Write { records, reply })
            .await
            .is_err()
        {
            return Err(refuse(
                req,
                response::SERVICE_NOT_AVAILABLE,
                "the broker is shutting down",
            ));
        }
        match tokio::time::timeout(SEND_STORE_TIMEOUT, landed).await {
            Ok(Ok(Ok(landed))) if !landed.is_empty() => Ok(landed),
            Ok(Ok(Ok(_))) => Err(refuse(
                req,
                response::SYSTEM_ERROR,
                "stored, but its placement was lost",
            )),
            Ok(Ok(Err(NotStored::NotMaster(held)))) => Err(self.not_master_after(req, &held)),
            Ok(Ok(Err(NotStored::Failed(reason)))) => {
                if !self.shared.takes_writes() && self.shared.leadership_moving() {
                    // Leadership is moving: answer once the client can find the new master.
                    let held = self.shared.hold_send().await;
                    if held != Held::TakesWrites {
                        return Err(self.not_master_after(req, &held));
                    }
                }
                if self.shared.serving_writes.load(Ordering::Acquire) {
                    return Err(refuse(
                        req,
                        response::SYSTEM_ERROR,
                        format!("not stored: {reason}"),
                    ));
                }
                Err(self.not_master(req))
            }
            Ok(Err(_)) => Err(refuse(req, response::SYSTEM_ERROR, "the writer stopped")),
            Err(_) => Err(refuse(
                req,
                response::SYSTEM_BUSY,
                "[TIMEOUT]not stored within 10 s",
            )),
        }
    }

    /// The topic `name` with one queue, created if missing (retry and dead-letter topics).
    async fn one_queue_topic(&self, name: &str) -> Result<(), String> {
        if self.shared.store.topic(name).is_some() {
            return Ok(());
        }
        check_topic_name(name)?;
        self.shared
            .create_topic(TopicConfig::new(name, 1, perm::READ | perm::WRITE))
            .await
    }

    /// CONSUMER_SEND_MSG_BACK: a message its consumer failed goes to the group's retry topic,
    /// or to its dead-letter topic after `maxReconsumeTimes` (16) attempts. Redelivery is
    /// immediate: delay levels are not scheduled yet.
    async fn send_back(&self, req: &RemotingCommand) -> RemotingCommand {
        let header = match ConsumerSendMsgBackRequestHeader::from_ext(&req.ext_fields) {
            Ok(h) => h,
            Err(err) => return refuse(req, response::INVALID_PARAMETER, err.to_string()),
        };
        if !self.shared.serving_writes.load(Ordering::Acquire) {
            return self.not_master(req);
        }
        let found = u64::try_from(header.offset)
            .ok()
            .filter(|o| *o < self.shared.store.applied_end())
            .and_then(|o| self.read_record(o, None).ok())
            .and_then(|r| StoredMessage::decode(&r).ok());
        let Some((original, _)) = found else {
            return refuse(
                req,
                response::SYSTEM_ERROR,
                format!("look message by offset failed, {}", header.offset),
            );
        };
        let max = header.max_reconsume_times.unwrap_or(16);
        let dead = header.delay_level < 0 || original.reconsume_times >= max;
        let topic = if dead {
            format!("%DLQ%{}", header.group)
        } else {
            format!("%RETRY%{}", header.group)
        };
        if let Err(reason) = self.one_queue_topic(&topic).await {
            return refuse(
                req,
                response::SYSTEM_ERROR,
                format!("cannot create {topic}: {reason}"),
            );
        }
        let mut properties = original.properties.clone();
        if properties.get(property::RETRY_TOPIC).is_none() {
            properties.set(property::RETRY_TOPIC, original.topic.clone());
        }
        if properties.get("ORIGIN_MESSAGE_ID").is_none() {
            let origin = header
                .origin_msg_id
                .clone()
                .unwrap_or_else(|| offset_msg_id(original.store_host, original.physical_offset));
            properties.set("ORIGIN_MESSAGE_ID", origin);
        }
        let again = StoredMessage {
            topic,
            queue_id: 0,
            queue_offset: 0,
            physical_offset: 0,
            store_timestamp: (self.shared.config.clock)(),
            store_host: self.shared.config.advertised_addr,
            reconsume_times: original.reconsume_times + 1,
            properties,
            ..original
        };
        let mut records = Vec::with_capacity(again.encoded_len());
        if let Err(err) = again.encode(&mut records) {
            return refuse(req, response::SYSTEM_ERROR, err.reason);
        }
        match self.store_records(req, records).await {
            Ok(_) => ok(req),
            Err(answer) => answer,
        }
    }

    /// LOCK_BATCH_MQ: an orderly consumer locks queues; a lock is granted when free, expired
    /// (60 s) or already held by the same client.
    fn lock_queues(&self, req: &RemotingCommand, lock: bool) -> RemotingCommand {
        let body: LockBatchRequestBody = match body::parse(&req.body, "lock batch") {
            Ok(b) => b,
            Err(err) => return refuse(req, response::SYSTEM_ERROR, err.to_string()),
        };
        let now = tokio::time::Instant::now();
        let mut locks = self.shared.locks.lock().expect("locks");
        let mut granted = std::collections::BTreeSet::new();
        for mq in body.mq_set {
            let key = (body.consumer_group.clone(), mq.clone());
            if lock {
                let free = locks.get(&key).is_none_or(|(holder, at)| {
                    *holder == body.client_id || now.saturating_duration_since(*at) > QUEUE_LOCK_TTL
                });
                if free {
                    locks.insert(key, (body.client_id.clone(), now));
                    granted.insert(mq);
                }
            } else if locks
                .get(&key)
                .is_some_and(|(holder, _)| *holder == body.client_id)
            {
                locks.remove(&key);
            }
        }
        if !lock {
            return ok(req);
        }
        ok(req).with_body(body::to_json(&LockBatchResponseBody {
            lock_ok_mq_set: granted,
        }))
    }

    /// Reads the record of a ConsumeQueue unit or message id from the log and checks it.
    fn read_record(&self, physical_offset: u64, size: Option<u32>) -> Result<Vec<u8>, String> {
        let size = match size {
            Some(size) => size as usize,
            None => {
                let head = self
                    .shared
                    .ledger
                    .read_bytes(physical_offset, 4)
                    .map_err(|e| e.to_string())?;
                let size = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
                usize::try_from(size)
                    .ok()
                    .filter(|s| {
                        (84..=PULL_BYTES_MAX.max(self.shared.config.max_message_bytes + 64 * 1024))
                            .contains(s)
                    })
                    .ok_or_else(|| format!("no message starts at offset {physical_offset}"))?
            }
        };
        let bytes = self
            .shared
            .ledger
            .read_bytes(physical_offset, size)
            .map_err(|e| e.to_string())?;
        let view = RecordView::parse(&bytes)
            .map_err(|e| format!("message at offset {physical_offset}: {e}"))?;
        if view.physical_offset != physical_offset as i64 || !view.body_crc_ok(&bytes) {
            return Err(format!(
                "message at offset {physical_offset} fails its checks"
            ));
        }
        Ok(Vec::from(bytes))
    }

    fn pull_answer(
        &self,
        req: &RemotingCommand,
        code: i32,
        status: &str,
        next: i64,
        min: i64,
        max: i64,
    ) -> RemotingCommand {
        let header = PullMessageResponseHeader {
            suggest_which_broker_id: 0,
            next_begin_offset: next,
            min_offset: min,
            max_offset: max,
        };
        refuse(req, code, status).with_ext(header.to_ext())
    }

    async fn pull(&self, req: &RemotingCommand) -> RemotingCommand {
        let header = match PullMessageRequestHeader::from_ext(&req.ext_fields) {
            Ok(h) => h,
            Err(err) => return refuse(req, response::INVALID_PARAMETER, err.to_string()),
        };
        let Some(topic) = self.shared.store.topic(&header.topic) else {
            return refuse(
                req,
                response::TOPIC_NOT_EXIST,
                format!("topic[{}] not exist, apply first please!", header.topic),
            );
        };
        if topic.perm & perm::READ == 0 {
            return refuse(
                req,
                response::NO_PERMISSION,
                format!("the topic[{}] pulling message is forbidden", header.topic),
            );
        }
        if header.queue_id < 0 || header.queue_id >= topic.read_queue_nums {
            return refuse(
                req,
                response::INVALID_PARAMETER,
                format!(
                    "queueId[{}] is illegal, topic:[{}] topicConfig.readQueueNums:[{}]",
                    header.queue_id, header.topic, topic.read_queue_nums
                ),
            );
        }
        let (kind, expression) = if header.sys_flag & pull_flag::SUBSCRIPTION != 0 {
            (
                header
                    .expression_type
                    .clone()
                    .unwrap_or_else(|| "TAG".into()),
                header.subscription.clone().unwrap_or_default(),
            )
        } else {
            self.shared
                .clients
                .lock()
                .expect("clients")
                .subscription(&header.consumer_group, &header.topic)
                .unwrap_or_else(|| ("TAG".into(), "*".into()))
        };
        if !kind.eq_ignore_ascii_case("TAG") {
            return refuse(
                req,
                response::SUBSCRIPTION_PARSE_FAILED,
                format!("expression type {kind} is not supported; use TAG"),
            );
        }
        let filter = TagFilter::parse(&expression);
        if header.sys_flag & pull_flag::COMMIT_OFFSET != 0
            && self.shared.serving_writes.load(Ordering::Acquire)
        {
            self.commit_offset(
                &header.consumer_group,
                &header.topic,
                header.queue_id,
                header.commit_offset,
            )
            .await;
        }
        let hold = header.sys_flag & pull_flag::SUSPEND != 0 && header.suspend_timeout_millis > 0;
        let wait = Duration::from_millis(header.suspend_timeout_millis.max(0) as u64)
            .min(self.shared.config.long_poll_max);
        let arrivals = self.shared.store.arrivals(&header.topic, header.queue_id);
        let notified = arrivals.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let first = self.pull_once(req, &header, &filter);
        if !(hold && first.code == response::PULL_NOT_FOUND) {
            return first;
        }
        // Held until a message arrives on this queue or the suspend time ends.
        let _hold = self.shared.metrics.hold_long_poll();
        let _ = tokio::time::timeout(wait, notified).await;
        self.pull_once(req, &header, &filter)
    }

    fn pull_once(
        &self,
        req: &RemotingCommand,
        header: &PullMessageRequestHeader,
        filter: &TagFilter,
    ) -> RemotingCommand {
        let store = &self.shared.store;
        let (topic, queue_id, offset) = (&header.topic, header.queue_id, header.queue_offset);
        let min = store.min_offset(topic, queue_id);
        let max = store.max_offset(topic, queue_id);
        if max == 0 {
            if offset == 0 {
                return self.pull_answer(
                    req,
                    response::PULL_NOT_FOUND,
                    "NO_MESSAGE_IN_QUEUE",
                    0,
                    min,
                    max,
                );
            }
            return self.pull_answer(
                req,
                response::PULL_OFFSET_MOVED,
                "NO_MESSAGE_IN_QUEUE",
                0,
                min,
                max,
            );
        }
        if offset < min {
            return self.pull_answer(
                req,
                response::PULL_OFFSET_MOVED,
                "OFFSET_TOO_SMALL",
                min,
                min,
                max,
            );
        }
        if offset == max {
            return self.pull_answer(
                req,
                response::PULL_NOT_FOUND,
                "OFFSET_OVERFLOW_ONE",
                offset,
                min,
                max,
            );
        }
        if offset > max {
            return self.pull_answer(
                req,
                response::PULL_OFFSET_MOVED,
                "OFFSET_OVERFLOW_BADLY",
                max,
                min,
                max,
            );
        }
        let want = usize::try_from(header.max_msg_nums)
            .unwrap_or(0)
            .clamp(1, PULL_MESSAGES_MAX);
        let byte_cap = header
            .max_msg_bytes
            .and_then(|b| usize::try_from(b).ok())
            .filter(|b| *b > 0)
            .unwrap_or(PULL_BYTES_MAX)
            .min(PULL_BYTES_MAX);
        // Scan more units than wanted so filtered-out ones do not cost a round trip each.
        let units = match store.read_queue(topic, queue_id, offset, want * 8) {
            Ok(units) => units,
            Err(err) => {
                return refuse(
                    req,
                    response::SYSTEM_ERROR,
                    format!("cannot read the consume queue: {err}"),
                );
            }
        };
        let mut body = Vec::new();
        let mut found = 0;
        let mut next = offset;
        for unit in units {
            if found == want || (found > 0 && body.len() + unit.size as usize > byte_cap) {
                break;
            }
            next = unit.queue_offset + 1;
            if !filter.matches_code(unit.tags_code) {
                continue;
            }
            let mut record = match self.read_record(unit.physical_offset, Some(unit.size)) {
                Ok(r) => r,
                Err(reason) => return refuse(req, response::SYSTEM_ERROR, reason),
            };
            if let TagFilter::Tags { .. } = filter {
                let tag = RecordView::parse(&record)
                    .ok()
                    .and_then(|v| v.properties().get(property::TAGS).map(str::to_string));
                if !filter.matches_tag(tag.as_deref()) {
                    continue;
                }
            }
            record[QUEUE_OFFSET_AT..QUEUE_OFFSET_AT + 8]
                .copy_from_slice(&unit.queue_offset.to_be_bytes());
            body.extend_from_slice(&record);
            found += 1;
        }
        if found == 0 {
            return self.pull_answer(
                req,
                response::PULL_RETRY_IMMEDIATELY,
                "NO_MATCHED_MESSAGE",
                next,
                min,
                max,
            );
        }
        self.pull_answer(req, response::SUCCESS, "FOUND", next, min, max)
            .with_body(Bytes::from(body))
    }

    async fn commit_offset(&self, group: &str, topic: &str, queue_id: i32, offset: i64) {
        self.shared
            .pending_offsets
            .lock()
            .expect("pending offsets")
            .insert((group.to_string(), topic.to_string(), queue_id), offset);
        let commit = OffsetCommit {
            group: group.to_string(),
            topic: topic.to_string(),
            queue_id,
            offset,
        };
        let _ = self.shared.offsets_tx.send(commit).await;
    }

    fn query_offset(&self, req: &RemotingCommand) -> RemotingCommand {
        let header = match QueryConsumerOffsetRequestHeader::from_ext(&req.ext_fields) {
            Ok(h) => h,
            Err(err) => return refuse(req, response::INVALID_PARAMETER, err.to_string()),
        };
        let key = (
            header.consumer_group.clone(),
            header.topic.clone(),
            header.queue_id,
        );
        let offset = self
            .shared
            .pending_offsets
            .lock()
            .expect("pending offsets")
            .get(&key)
            .copied()
            .or_else(|| self.shared.store.consumer_offset(&key.0, &key.1, key.2));
        let offset = match offset {
            Some(o) => o,
            // A new group on a queue that still has its first message starts from it, as
            // RocketMQ does for a queue whose message 0 is in memory.
            None if header.set_zero_if_not_found != Some(false)
                && self.shared.store.min_offset(&header.topic, header.queue_id) <= 0 =>
            {
                0
            }
            None => {
                return refuse(
                    req,
                    response::QUERY_NOT_FOUND,
                    "Not found, V3_0_6_SNAPSHOT maybe this group consumer boot first",
                );
            }
        };
        ok(req).with_ext(OffsetResponseHeader { offset }.to_ext())
    }

    async fn update_offset(&self, req: &RemotingCommand) -> RemotingCommand {
        let header = match UpdateConsumerOffsetRequestHeader::from_ext(&req.ext_fields) {
            Ok(h) => h,
            Err(err) => return refuse(req, response::INVALID_PARAMETER, err.to_string()),
        };
        if !self.shared.serving_writes.load(Ordering::Acquire) {
            return self.not_master(req);
        }
        if header.commit_offset < 0 {
            return refuse(
                req,
                response::INVALID_PARAMETER,
                format!("negative offset {}", header.commit_offset),
            );
        }
        self.commit_offset(
            &header.consumer_group,
            &header.topic,
            header.queue_id,
            header.commit_offset,
        )
        .await;
        ok(req)
    }

    fn queue_offset(&self, req: &RemotingCommand, max: bool) -> RemotingCommand {
        let header = match QueueRequestHeader::from_ext(&req.ext_fields) {
            Ok(h) => h,
            Err(err) => return refuse(req, response::INVALID_PARAMETER, err.to_string()),
        };
        let offset = if max {
            self.shared.store.max_offset(&header.topic, header.queue_id)
        } else {
            self.shared.store.min_offset(&header.topic, header.queue_id)
        };
        ok(req).with_ext(OffsetResponseHeader { offset }.to_ext())
    }

    fn store_time(&self, topic: &str, queue_id: i32, offset: i64) -> Option<i64> {
        let unit = self
            .shared
            .store
            .read_queue(topic, queue_id, offset, 1)
            .ok()?
            .into_iter()
            .next()?;
        let record = self
            .read_record(unit.physical_offset, Some(unit.size))
            .ok()?;
        RecordView::parse(&record).ok().map(|v| v.store_timestamp)
    }

    fn search_offset(&self, req: &RemotingCommand) -> RemotingCommand {
        let header = match SearchOffsetRequestHeader::from_ext(&req.ext_fields) {
            Ok(h) => h,
            Err(err) => return refuse(req, response::INVALID_PARAMETER, err.to_string()),
        };
        let upper = header
            .boundary_type
            .as_deref()
            .is_some_and(|b| b.eq_ignore_ascii_case("upper"));
        let (mut low, mut high) = (
            self.shared.store.min_offset(&header.topic, header.queue_id),
            self.shared.store.max_offset(&header.topic, header.queue_id),
        );
        // First offset whose store time is >= the target (lower), or > it (upper) minus one.
        while low < high {
            let mid = low + (high - low) / 2;
            let Some(time) = self.store_time(&header.topic, header.queue_id, mid) else {
                return refuse(
                    req,
                    response::SYSTEM_ERROR,
                    format!("cannot read offset {mid}"),
                );
            };
            let before = if upper {
                time <= header.timestamp
            } else {
                time < header.timestamp
            };
            if before {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        let min = self.shared.store.min_offset(&header.topic, header.queue_id);
        let offset = if upper { (low - 1).max(min) } else { low };
        ok(req).with_ext(OffsetResponseHeader { offset }.to_ext())
    }

    fn earliest_time(&self, req: &RemotingCommand) -> RemotingCommand {
        let header = match QueueRequestHeader::from_ext(&req.ext_fields) {
            Ok(h) => h,
            Err(err) => return refuse(req, response::INVALID_PARAMETER, err.to_string()),
        };
        let min = self.shared.store.min_offset(&header.topic, header.queue_id);
        match self.store_time(&header.topic, header.queue_id, min) {
            Some(timestamp) => ok(req).with_ext(TimestampResponseHeader { timestamp }.to_ext()),
            None => refuse(
                req,
                response::SYSTEM_ERROR,
                format!("no message in {} queue {}", header.topic, header.queue_id),
            ),
        }
    }

    async fn heartbeat(&self, peer: &Arc<Peer>, req: &RemotingCommand) -> RemotingCommand {
        let data: HeartbeatData = match body::parse(&req.body, "heartbeat") {
            Ok(d) => d,
            Err(err) => return refuse(req, response::SYSTEM_ERROR, err.to_string()),
        };
        let changed = {
            let mut clients = self.shared.clients.lock().expect("clients");
            let changed = clients.heartbeat(peer, &data, tokio::time::Instant::now());
            for group in &changed {
                clients.notify_changed(group);
            }
            changed
        };
        if self.shared.serving_writes.load(Ordering::Acquire) {
            // Each consumer group gets its retry topic before the heartbeat is answered, as
            // RocketMQ does, so the consumer's first rebalance already finds it.
            for consumer in &data.consumer_data_set {
                let retry = format!("%RETRY%{}", consumer.group_name);
                if let Err(reason) = self.one_queue_topic(&retry).await {
                    tracing::debug!(topic = %retry, %reason, "retry topic not created");
                }
            }
        }
        if !changed.is_empty() {
            tracing::debug!(client = %data.client_id, ?changed, "consumer groups changed");
        }
        ok(req)
    }

    fn unregister_client(&self, req: &RemotingCommand) -> RemotingCommand {
        let header = match UnregisterClientRequestHeader::from_ext(&req.ext_fields) {
            Ok(h) => h,
            Err(err) => return refuse(req, response::INVALID_PARAMETER, err.to_string()),
        };
        let mut clients = self.shared.clients.lock().expect("clients");
        for group in clients.unregister(&header.client_id) {
            clients.notify_changed(&group);
        }
        ok(req)
    }

    fn consumer_list(&self, req: &RemotingCommand) -> RemotingCommand {
        let header = match ConsumerGroupHeader::from_ext(&req.ext_fields) {
            Ok(h) => h,
            Err(err) => return refuse(req, response::INVALID_PARAMETER, err.to_string()),
        };
        let ids = self
            .shared
            .clients
            .lock()
            .expect("clients")
            .consumer_ids(&header.consumer_group);
        if ids.is_empty() {
            return refuse(
                req,
                response::SYSTEM_ERROR,
                format!("no consumer for this group, {}", header.consumer_group),
            );
        }
        ok(req).with_body(body::to_json(&ConsumerListBody {
            consumer_id_list: ids,
        }))
    }

    async fn create_topic(&self, req: &RemotingCommand) -> RemotingCommand {
        let header = match CreateTopicRequestHeader::from_ext(&req.ext_fields) {
            Ok(h) => h,
            Err(err) => return refuse(req, response::INVALID_PARAMETER, err.to_string()),
        };
        if let Err(reason) = check_topic_name(&header.topic) {
            return refuse(req, response::INVALID_PARAMETER, reason);
        }
        for (name, value) in [
            ("readQueueNums", header.read_queue_nums),
            ("writeQueueNums", header.write_queue_nums),
        ] {
            if !(1..=TOPIC_QUEUES_MAX).contains(&value) {
                return refuse(
                    req,
                    response::INVALID_PARAMETER,
                    format!("{name} {value} is outside 1..={TOPIC_QUEUES_MAX}"),
                );
            }
        }
        if !(0..=15).contains(&header.perm) {
            return refuse(
                req,
                response::INVALID_PARAMETER,
                format!("perm {} is not a permission", header.perm),
            );
        }
        if !self.shared.serving_writes.load(Ordering::Acquire) {
            return self.not_master(req);
        }
        let mut config = TopicConfig::new(&header.topic, header.write_queue_nums, header.perm);
        config.read_queue_nums = header.read_queue_nums;
        config.order = header.order;
        config.topic_filter_type = header.topic_filter_type.clone();
        config.topic_sys_flag = header.topic_sys_flag.unwrap_or(0);
        match self.shared.create_topic(config).await {
            Ok(()) => ok(req),
            Err(err) => refuse(
                req,
                response::SYSTEM_ERROR,
                format!("topic {} not created: {err}", header.topic),
            ),
        }
    }

    fn check_client_config(&self, req: &RemotingCommand) -> RemotingCommand {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Check {
            subscription_data: Option<protocol::body::SubscriptionData>,
        }
        let check: Check = match body::parse(&req.body, "check client config") {
            Ok(c) => c,
            Err(err) => return refuse(req, response::SYSTEM_ERROR, err.to_string()),
        };
        match check.subscription_data {
            Some(s) if !s.expression_type.eq_ignore_ascii_case("TAG") => refuse(
                req,
                response::SYSTEM_ERROR,
                format!(
                    "The broker does not support consumer to filter message by {}",
                    s.expression_type
                ),
            ),
            _ => ok(req),
        }
    }

    fn view_message(&self, req: &RemotingCommand) -> RemotingCommand {
        let header = match ViewMessageRequestHeader::from_ext(&req.ext_fields) {
            Ok(h) => h,
            Err(err) => return refuse(req, response::INVALID_PARAMETER, err.to_string()),
        };
        let not_found = || {
            refuse(
                req,
                response::SYSTEM_ERROR,
                format!("can not find message by the offset, {}", header.offset),
            )
        };
        // Only applied (so committed) messages: a client-given offset may point anywhere.
        let Ok(offset) = u64::try_from(header.offset) else {
            return not_found();
        };
        if offset >= self.shared.store.applied_end() {
            return not_found();
        }
        match self.read_record(offset, None) {
            Ok(record) => ok(req).with_body(record),
            Err(reason) => {
                tracing::debug!(offset, %reason, "view by offset failed");
                not_found()
            }
        }
    }

    fn query_message(&self, req: &RemotingCommand) -> RemotingCommand {
        let header = match QueryMessageRequestHeader::from_ext(&req.ext_fields) {
            Ok(h) => h,
            Err(err) => return refuse(req, response::INVALID_PARAMETER, err.to_string()),
        };
        let unique = req
            .ext_fields
            .get("_UNIQUE_KEY_QUERY")
            .is_some_and(|v| v == "true");
        let max = if unique {
            QUERY_MESSAGES_MAX
        } else {
            usize::try_from(header.max_num)
                .unwrap_or(0)
                .clamp(1, QUERY_MESSAGES_MAX)
        };
        let offsets = match self.shared.store.query_key(
            &header.topic,
            &header.key,
            max * 4,
            header.begin_timestamp,
            header.end_timestamp,
        ) {
            Ok(o) => o,
            Err(err) => {
                return refuse(
                    req,
                    response::SYSTEM_ERROR,
                    format!("index query failed: {err}"),
                );
            }
        };
        let mut body = Vec::new();
        let mut found = 0;
        for offset in offsets {
            if found == max {
                break;
            }
            let Ok(record) = self.read_record(offset, None) else {
                continue;
            };
            let Ok(view) = RecordView::parse(&record) else {
                continue;
            };
            let properties = view.properties();
            let matches = view.topic == header.topic
                && if unique {
                    properties.get(property::UNIQ_KEY) == Some(header.key.as_str())
                } else {
                    properties.keys().any(|k| k == header.key)
                };
            if matches {
                body.extend_from_slice(&record);
                found += 1;
            }
        }
        if found == 0 {
            return refuse(
                req,
                response::QUERY_NOT_FOUND,
                format!(
                    "can not find message, maybe time range not correct: key {}",
                    header.key
                ),
            );
        }
        let (time, phy) = self.shared.store.index_last_update();
        let answer = QueryMessageResponseHeader {
            index_last_update_timestamp: time,
            index_last_update_phyoffset: phy,
        };
        ok(req).with_ext(answer.to_ext()).with_body(body)
    }
}
