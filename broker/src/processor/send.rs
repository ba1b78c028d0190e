//! Sends: SEND_MESSAGE, SEND_MESSAGE_V2 and SEND_BATCH_MESSAGE store a producer's messages;
//! CONSUMER_SEND_MSG_BACK stores a message its consumer failed in the group's retry or
//! dead-letter topic, after a back-off. Both go through the writer (`crate::writer`) and answer
//! once the entry is committed and applied. A message with a delay level or a timer property
//! waits in a scheduled topic until it is due (`crate::schedule`); one with `TRAN_MSG=true` is
//! stored as a half message until its producer commits or rolls it back (`crate::transactions`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use bytes::Bytes;
use dledger::Disk;
use protocol::RemotingCommand;
use protocol::body::{TopicConfig, perm};
use protocol::code::{request, response};
use protocol::header::{
    CommandHeader, ConsumerSendMsgBackRequestHeader, SendMessageRequestHeader,
    SendMessageResponseHeader,
};
use protocol::message::{
    self, BatchItem, Properties, StoredMessage, decode_batch, offset_msg_id, property, system_topic,
};
use remoting::{Peer, Transport};
use store::transactions::Outcome;

use super::{Answer, Processor, Refusal, ok};
use crate::TBW102;
use crate::handover::Held;
use crate::limits::SEND_STORE_TIMEOUT;
use crate::schedule::{self, When};
use crate::transactions;
use crate::writer::{Landed, NotStored};

static UNIQ_COUNTER: AtomicU16 = AtomicU16::new(0);

/// SEND_MESSAGE (code 10: JSON header, or the C++ client's batches with `batch`),
/// SEND_MESSAGE_V2 (310: single-letter header) and SEND_BATCH_MESSAGE (320).
pub(super) struct Send {
    header: SendMessageRequestHeader,
}

impl Send {
    pub(super) fn parse(req: &RemotingCommand) -> Result<Send, Refusal> {
        let header = match req.code {
            request::SEND_MESSAGE => SendMessageRequestHeader::from_ext(&req.ext_fields)?,
            _ => SendMessageRequestHeader::from_v2(&req.ext_fields)?,
        };
        Ok(Send { header })
    }

    pub(super) async fn apply<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        peer: &Arc<Peer>,
        req: &RemotingCommand,
    ) -> Answer {
        let header = self.header;
        if !p.shared.takes_writes() {
            if !p.shared.leadership_moving() {
                return Err(p.not_master());
            }
            match p.shared.hold_send().await {
                Held::TakesWrites => {}
                held => return Err(p.not_master_after(&held)),
            }
        }
        #[cfg(feature = "mutants")]
        let store_then_refuse = p.shared.config.mutants.store_refused_sends
            && p.shared
                .disk_full
                .load(std::sync::atomic::Ordering::Acquire);
        #[cfg(not(feature = "mutants"))]
        let store_then_refuse = false;
        if !store_then_refuse {
            p.require_disk_space(response::SERVICE_NOT_AVAILABLE)?;
        }
        protocol::names::check_topic(&header.topic)
            .map_err(|err| Refusal::new(response::MESSAGE_ILLEGAL, err.to_string()))?;
        if system_topic::is_scheduled(&header.topic) {
            return Err(Refusal::new(
                response::NO_PERMISSION,
                format!(
                    "sending message to topic[{}] is forbidden: scheduled messages wait there",
                    header.topic
                ),
            ));
        }
        if system_topic::is_transactional(&header.topic) {
            return Err(Refusal::new(
                response::NO_PERMISSION,
                format!(
                    "sending message to topic[{}] is forbidden: transactions keep their half messages there",
                    header.topic
                ),
            ));
        }
        let limit = p.shared.config.max_message_bytes;
        if req.body.len() > limit {
            return Err(Refusal::new(
                response::MESSAGE_ILLEGAL,
                format!(
                    "the message body size {} is over the limit {limit}",
                    req.body.len()
                ),
            ));
        }
        // The C++ client sends batches as code 10 with `batch`, and compresses a large batch
        // as one zlib stream.
        let is_batch = req.code == request::SEND_BATCH_MESSAGE || header.batch == Some(true);
        let mut sys_flag = header.sys_flag;
        let items = if is_batch {
            if header.topic.starts_with("%RETRY%") {
                return Err(Refusal::new(
                    response::MESSAGE_ILLEGAL,
                    "batch messages cannot be sent to a retry topic",
                ));
            }
            let raw = if sys_flag & message::sys_flag::COMPRESSED != 0 {
                let raw = inflate(&req.body, sys_flag, limit)
                    .map_err(|reason| Refusal::new(response::MESSAGE_ILLEGAL, reason))?;
                sys_flag &= !message::sys_flag::COMPRESSED;
                Bytes::from(raw)
            } else {
                req.body.clone()
            };
            match decode_batch(&raw) {
                Ok(items) if !items.is_empty() => items,
                Ok(_) => {
                    return Err(Refusal::new(
                        response::MESSAGE_ILLEGAL,
                        "the batch is empty",
                    ));
                }
                Err(err) => {
                    return Err(Refusal::new(
                        response::MESSAGE_ILLEGAL,
                        format!("bad batch body: {err}"),
                    ));
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
        let now_ms = p.shared.config.clock.now_ms();
        let mut whens = Vec::with_capacity(items.len());
        for item in &items {
            let when = schedule::when(&item.properties, now_ms, &p.shared.config.schedule)
                .map_err(|refused| Refusal::new(refused.code, refused.remark))?;
            if is_batch && when != When::Now {
                return Err(Refusal::new(
                    response::MESSAGE_ILLEGAL,
                    "batch messages cannot be delayed or timed: send them one by one",
                ));
            }
            whens.push(when);
        }
        let scheduled = whens.iter().any(|w| *w != When::Now);
        let half = items
            .iter()
            .any(|item| transactions::is_half(&item.properties));
        if half {
            if p.shared.config.transactions.reject {
                return Err(Refusal::new(
                    response::NO_PERMISSION,
                    format!(
                        "the broker[{}] sending transaction message is forbidden",
                        p.shared.config.broker_name
                    ),
                ));
            }
            if is_batch {
                return Err(Refusal::new(
                    response::MESSAGE_ILLEGAL,
                    "batch messages cannot be transactional: send half messages one by one",
                ));
            }
            if scheduled {
                return Err(Refusal::new(
                    response::MESSAGE_ILLEGAL,
                    "a transactional message cannot be delayed or timed",
                ));
            }
        }
        let topic = topic_for_send(p, &header).await?;
        if topic.perm & perm::WRITE == 0 {
            return Err(Refusal::new(
                response::NO_PERMISSION,
                format!("the topic[{}] sending message is forbidden", header.topic),
            ));
        }
        let queues = topic.write_queue_nums.max(topic.read_queue_nums);
        let queue_id = if header.queue_id < 0 {
            use rand::Rng as _;
            let queues = topic.write_queue_nums.max(1);
            p.shared.rng.lock().expect("rng").random_range(0..queues)
        } else if header.queue_id >= queues {
            return Err(Refusal::new(
                response::INVALID_PARAMETER,
                format!(
                    "queueId[{}] is illegal, topic:[{}] topicSysFlag:[{}] queueNums:[{queues}]",
                    header.queue_id, header.topic, topic.topic_sys_flag
                ),
            ));
        } else {
            header.queue_id
        };
        if let Some(when) = whens.iter().find(|w| **w != When::Now) {
            system_topic_for(p, *when).await?;
        }
        if half {
            transactions::ensure_topic(&p.shared, system_topic::TRANS_HALF)
                .await
                .map_err(|reason| Refusal::new(response::SYSTEM_ERROR, reason))?;
        }
        let mut records = Vec::new();
        let mut uniq_keys = Vec::new();
        for (item, when) in items.into_iter().zip(whens) {
            let (bytes, uniq) = record(p, peer, &header, queue_id, item, sys_flag, when, half)
                .map_err(|reason| Refusal::new(response::MESSAGE_ILLEGAL, reason))?;
            records.extend_from_slice(&bytes);
            uniq_keys.push(uniq);
        }
        let landed = store_records(p, records, Vec::new()).await?;
        if store_then_refuse {
            // A deliberate bug for the simulation: stored, then refused for a full disk.
            p.require_disk_space(response::SERVICE_NOT_AVAILABLE)?;
        }
        let store_host = p.shared.config.advertised_addr;
        let msg_id = landed
            .iter()
            .map(|l| offset_msg_id(store_host, l.commit_log_offset as i64))
            .collect::<Vec<_>>()
            .join(",");
        // A scheduled message is answered with the queue it will be delivered to, and its
        // offset in the queue where it waits (RocketMQ's answer); a half message likewise, with
        // its offset in the half queue, which END_TRANSACTION names.
        let answer = SendMessageResponseHeader {
            msg_id,
            queue_id: if scheduled || half {
                queue_id
            } else {
                landed[0].queue_id
            },
            queue_offset: landed[0].queue_offset,
            transaction_id: (uniq_keys.len() == 1).then(|| uniq_keys[0].clone()),
            batch_uniq_id: None,
        };
        let mut ext = answer.to_ext();
        ext.insert("MSG_REGION".into(), "DefaultRegion".into());
        ext.insert("TRACE_ON".into(), "true".into());
        Ok(ok(req).with_ext(ext))
    }
}

/// CONSUMER_SEND_MSG_BACK: a message its consumer failed goes to the group's retry topic after
/// a back-off (the request's delay level, or level 3 + the times it was consumed again: 10 s,
/// 30 s, 1 min, …), or to its dead-letter topic after `maxReconsumeTimes` (16) attempts or for
/// a negative delay level (FEATURES-SPEC.md §3).
pub(super) struct SendBack {
    header: ConsumerSendMsgBackRequestHeader,
}

impl SendBack {
    pub(super) fn parse(req: &RemotingCommand) -> Result<SendBack, Refusal> {
        Ok(SendBack {
            header: ConsumerSendMsgBackRequestHeader::from_ext(&req.ext_fields)?,
        })
    }

    pub(super) async fn apply<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        req: &RemotingCommand,
    ) -> Answer {
        let header = self.header;
        p.require_master()?;
        // RocketMQ answers a send-back on a full disk with SYSTEM_ERROR, remark
        // SERVICE_NOT_AVAILABLE; the consumer retries it locally.
        p.require_disk_space(response::SYSTEM_ERROR)
            .map_err(|_| Refusal::new(response::SYSTEM_ERROR, "SERVICE_NOT_AVAILABLE"))?;
        let found = u64::try_from(header.offset)
            .ok()
            .filter(|o| *o < p.shared.store.applied_end())
            .and_then(|o| p.read_record(o, None).ok())
            .and_then(|r| StoredMessage::decode(&r).ok());
        let Some((original, _)) = found else {
            return Err(Refusal::new(
                response::SYSTEM_ERROR,
                format!("look message by offset failed, {}", header.offset),
            ));
        };
        let max = header.max_reconsume_times.unwrap_or(16);
        let dead = header.delay_level < 0 || original.reconsume_times >= max;
        let topic = if dead {
            format!("%DLQ%{}", header.group)
        } else {
            format!("%RETRY%{}", header.group)
        };
        p.one_queue_topic(&topic).await.map_err(|reason| {
            Refusal::new(
                response::SYSTEM_ERROR,
                format!("cannot create {topic}: {reason}"),
            )
        })?;
        let mut properties = original.properties.clone();
        if properties.get(property::RETRY_TOPIC).is_none() {
            properties.set(property::RETRY_TOPIC, original.topic.clone());
        }
        if properties.get(property::ORIGIN_MESSAGE_ID).is_none() {
            let origin = header
                .origin_msg_id
                .clone()
                .unwrap_or_else(|| offset_msg_id(original.store_host, original.commit_log_offset));
            properties.set(property::ORIGIN_MESSAGE_ID, origin);
        }
        // The copy the consumer failed may itself have waited at a level: the level of this
        // retry is decided below.
        properties.remove(property::DELAY);
        let now_ms = p.shared.config.clock.now_ms();
        let when = if dead {
            When::Now
        } else {
            let levels = &p.shared.config.schedule.levels;
            let asked = if header.delay_level > 0 {
                header.delay_level
            } else {
                original.reconsume_times.saturating_add(3)
            };
            let level = levels.clamp(asked);
            When::Level {
                level,
                due_ms: now_ms + levels.delay_ms(level),
            }
        };
        system_topic_for(p, when).await?;
        let mut again = StoredMessage {
            topic,
            queue_id: 0,
            queue_offset: 0,
            commit_log_offset: 0,
            store_timestamp: now_ms,
            store_host: p.shared.config.advertised_addr,
            reconsume_times: original.reconsume_times + 1,
            properties,
            ..original
        };
        schedule::make_wait(&mut again, when);
        let mut records = Vec::with_capacity(again.encoded_len());
        again
            .encode(&mut records)
            .map_err(|err| Refusal::new(response::SYSTEM_ERROR, err.reason))?;
        store_records(p, records, Vec::new()).await?;
        Ok(ok(req))
    }
}

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

/// The topic's configuration, auto-creating it from its template if allowed.
async fn topic_for_send<D: Disk, T: Transport>(
    p: &Processor<D, T>,
    header: &SendMessageRequestHeader,
) -> Result<TopicConfig, Refusal> {
    if let Some(config) = p.shared.store.topic(&header.topic) {
        return Ok(config);
    }
    let retry = header.topic.starts_with("%RETRY%") || header.topic.starts_with("%DLQ%");
    let queues = if retry {
        1
    } else {
        if !p.shared.config.auto_create_topic {
            return Err(Refusal::new(
                response::TOPIC_NOT_EXIST,
                format!("topic[{}] not exist, apply first please!", header.topic),
            ));
        }
        let template_name = if header.default_topic.is_empty() {
            TBW102
        } else {
            &header.default_topic
        };
        let Some(template) = p
            .shared
            .store
            .topic(template_name)
            .filter(|t| t.perm & perm::INHERIT != 0)
        else {
            return Err(Refusal::new(
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
    p.shared.create_topic(config.clone()).await.map_err(|e| {
        Refusal::new(
            response::SYSTEM_ERROR,
            format!("cannot create topic {}: {e}", header.topic),
        )
    })?;
    tracing::info!(topic = %header.topic, queues, "topic auto-created");
    Ok(p.shared.store.topic(&header.topic).unwrap_or(config))
}

/// Creates the topic where messages scheduled as `when` wait, if it does not exist yet
/// (RocketMQ creates both at start; raftmq on first use, through the log).
async fn system_topic_for<D: Disk, T: Transport>(
    p: &Processor<D, T>,
    when: When,
) -> Result<(), Refusal> {
    let (name, queues) = match when {
        When::Now => return Ok(()),
        When::Level { .. } => (
            system_topic::SCHEDULE,
            system_topic::SCHEDULE_QUEUES.max(p.shared.config.schedule.levels.max_level()),
        ),
        When::Timer { .. } => (system_topic::TIMER, 1),
    };
    if p.shared
        .store
        .topic(name)
        .is_some_and(|t| t.write_queue_nums >= queues)
    {
        return Ok(());
    }
    p.shared
        .create_topic(TopicConfig::new(name, queues, perm::READ | perm::WRITE))
        .await
        .map_err(|e| {
            Refusal::new(
                response::SYSTEM_ERROR,
                format!("cannot create topic {name}: {e}"),
            )
        })
}

/// A message id RocketMQ's way (`UNIQ_KEY`) for a message that came without one.
fn uniq_key<D: Disk, T: Transport>(p: &Processor<D, T>) -> String {
    let ip = p.shared.config.advertised_addr.ip();
    let counter = UNIQ_COUNTER.fetch_add(1, Ordering::Relaxed);
    let ms = p.shared.config.clock.now_ms();
    message::uniq_id(
        ip,
        std::process::id() as u16,
        p.shared.config.advertised_addr.port().into(),
        (ms % (31 * 24 * 3600 * 1000)) as i32,
        counter,
    )
}

/// One message of a send, encoded as a stored record (offsets filled in when it lands), and its
/// `UNIQ_KEY`; as a half message when `half`.
#[allow(clippy::too_many_arguments)]
fn record<D: Disk, T: Transport>(
    p: &Processor<D, T>,
    peer: &Peer,
    header: &SendMessageRequestHeader,
    queue_id: i32,
    item: BatchItem,
    sys_flag: i32,
    when: When,
    half: bool,
) -> Result<(Vec<u8>, String), String> {
    let mut properties = item.properties;
    let uniq = match properties.get(property::UNIQ_KEY) {
        Some(u) => u.to_string(),
        None => {
            let u = uniq_key(p);
            properties.set(property::UNIQ_KEY, u.clone());
            u
        }
    };
    properties.set(property::CLUSTER, p.shared.config.cluster_name.clone());
    let mut record = StoredMessage {
        topic: header.topic.clone(),
        queue_id,
        flag: item.flag,
        queue_offset: 0,
        commit_log_offset: 0,
        sys_flag,
        born_timestamp: header.born_timestamp,
        born_host: peer.addr,
        store_timestamp: p.shared.config.clock.now_ms(),
        store_host: p.shared.config.advertised_addr,
        reconsume_times: header.reconsume_times.unwrap_or(0),
        prepared_transaction_offset: 0,
        body: item.body,
        properties,
    };
    schedule::make_wait(&mut record, when);
    if half {
        transactions::make_half(&mut record, &uniq);
    }
    let mut out = Vec::with_capacity(record.encoded_len());
    record.encode(&mut out).map_err(|e| e.reason)?;
    Ok((out, uniq))
}

/// Hands encoded records (and outcomes of half messages) to the writer and waits until they
/// are committed and applied.
pub(super) async fn store_records<D: Disk, T: Transport>(
    p: &Processor<D, T>,
    records: Vec<u8>,
    outcomes: Vec<Outcome>,
) -> Result<Vec<Landed>, Refusal> {
    let has_records = !records.is_empty();
    let Some(landed) = crate::writer::submit(&p.shared, records, outcomes).await else {
        return Err(Refusal::new(
            response::SERVICE_NOT_AVAILABLE,
            "the broker is shutting down",
        ));
    };
    match tokio::time::timeout(SEND_STORE_TIMEOUT, landed).await {
        Ok(Ok(Ok(landed))) if !landed.is_empty() || !has_records => Ok(landed),
        Ok(Ok(Ok(_))) => Err(Refusal::new(
            response::SYSTEM_ERROR,
            "stored, but its placement was lost",
        )),
        Ok(Ok(Err(NotStored::NotMaster(held)))) => Err(p.not_master_after(&held)),
        Ok(Ok(Err(NotStored::Failed(reason)))) => {
            if !p.shared.takes_writes() && p.shared.leadership_moving() {
                // Leadership is moving: answer once the client can find the new master.
                let held = p.shared.hold_send().await;
                if held != Held::TakesWrites {
                    return Err(p.not_master_after(&held));
                }
            }
            if p.shared.serving_writes.load(Ordering::Acquire) {
                return Err(Refusal::new(
                    response::SYSTEM_ERROR,
                    format!("not stored: {reason}"),
                ));
            }
            Err(p.not_master())
        }
        Ok(Err(_)) => Err(Refusal::new(response::SYSTEM_ERROR, "the writer stopped")),
        Err(_) => Err(Refusal::new(
            response::SYSTEM_BUSY,
            format!(
                "[TIMEOUT]not stored within {} s",
                SEND_STORE_TIMEOUT.as_secs()
            ),
        )),
    }
}
