//! PULL_MESSAGE and LITE_PULL_MESSAGE: the messages of one queue from an offset, as this replica
//! applied them (a follower serves what it has), filtered by tag or SQL92 selector; with nothing
//! there, a pull that asks to be suspended is held until a message its filter takes arrives on
//! its queue or its suspend time ends.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use dledger::Disk;
use protocol::RemotingCommand;
use protocol::body::perm;
use protocol::code::response;
use protocol::header::{
    CommandHeader, PullMessageRequestHeader, PullMessageResponseHeader, pull_flag,
};
use protocol::message::QUEUE_OFFSET_AT;
use remoting::Transport;

use super::filter::MessageFilter;
use super::{Answer, Processor, Refusal};
pub(super) use crate::limits::{PULL_BYTES_MAX, PULL_MESSAGES_MAX};

pub(super) struct Pull {
    header: PullMessageRequestHeader,
}

/// A pull's answer without messages: its code and status remark, and where to go on.
fn pull_answer(
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
    RemotingCommand::response_to(req, code)
        .with_remark(status)
        .with_ext(header.to_ext())
}

impl Pull {
    pub(super) fn parse(req: &RemotingCommand) -> Result<Pull, Refusal> {
        Ok(Pull {
            header: PullMessageRequestHeader::from_ext(&req.ext_fields)?,
        })
    }

    pub(super) async fn apply<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        req: &RemotingCommand,
    ) -> Answer {
        let header = self.header;
        let Some(topic) = p.shared.store.topic(&header.topic) else {
            return Err(Refusal::new(
                response::TOPIC_NOT_EXIST,
                format!("topic[{}] not exist, apply first please!", header.topic),
            ));
        };
        if topic.perm & perm::READ == 0 {
            return Err(Refusal::new(
                response::NO_PERMISSION,
                format!("the topic[{}] pulling message is forbidden", header.topic),
            ));
        }
        if header.queue_id < 0 || header.queue_id >= topic.read_queue_nums {
            return Err(Refusal::new(
                response::INVALID_PARAMETER,
                format!(
                    "queueId[{}] is illegal, topic:[{}] topicConfig.readQueueNums:[{}]",
                    header.queue_id, header.topic, topic.read_queue_nums
                ),
            ));
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
            p.shared
                .clients
                .lock()
                .expect("clients")
                .subscription(&header.consumer_group, &header.topic)
                .unwrap_or_else(|| ("TAG".into(), "*".into()))
        };
        let filter = MessageFilter::new(
            &kind,
            &expression,
            p.shared.config.enable_property_filter,
            &p.shared.selectors,
        )?;
        if header.sys_flag & pull_flag::COMMIT_OFFSET != 0
            && p.shared.serving_writes.load(Ordering::Acquire)
        {
            p.commit_offset(
                &header.consumer_group,
                &header.topic,
                header.queue_id,
                header.commit_offset,
            )
            .await;
        }
        let hold = header.sys_flag & pull_flag::SUSPEND != 0 && header.suspend_timeout_millis > 0;
        let wait = Duration::from_millis(header.suspend_timeout_millis.max(0) as u64)
            .min(p.shared.config.long_poll_max);
        let arrivals = p.shared.store.arrivals(&header.topic, header.queue_id);
        let deadline = tokio::time::Instant::now() + wait;
        let mut header = header;
        let mut held = None;
        loop {
            let notified = arrivals.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (answer, next) = pull_once(p, req, &header, &filter)?;
            // Held until a message the filter takes arrives on this queue or the suspend time
            // ends: arrivals it does not take move the offset on and wait again.
            let nothing = answer.code == response::PULL_NOT_FOUND
                || (answer.code == response::PULL_RETRY_IMMEDIATELY && held.is_some());
            if !(hold && nothing) || tokio::time::Instant::now() >= deadline {
                return Ok(answer);
            }
            held.get_or_insert_with(|| p.shared.metrics.hold_long_poll());
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                header.queue_offset = next;
                let (answer, _) = pull_once(p, req, &header, &filter)?;
                return Ok(answer);
            }
            header.queue_offset = next;
        }
    }
}

/// One look at the queue: the answer (the messages found, or where the offset stands) and the
/// offset a next look starts from.
fn pull_once<D: Disk, T: Transport>(
    p: &Processor<D, T>,
    req: &RemotingCommand,
    header: &PullMessageRequestHeader,
    filter: &MessageFilter,
) -> Result<(RemotingCommand, i64), Refusal> {
    let store = &p.shared.store;
    let (topic, queue_id, offset) = (&header.topic, header.queue_id, header.queue_offset);
    let min = store.min_offset(topic, queue_id);
    let max = store.max_offset(topic, queue_id);
    let answer = |code, status, next| {
        Ok((
            pull_answer(req, code, status, next, min, max),
            next.max(offset),
        ))
    };
    if max == 0 {
        if offset == 0 {
            return answer(response::PULL_NOT_FOUND, "NO_MESSAGE_IN_QUEUE", 0);
        }
        return answer(response::PULL_OFFSET_MOVED, "NO_MESSAGE_IN_QUEUE", 0);
    }
    if offset < min {
        return answer(response::PULL_OFFSET_MOVED, "OFFSET_TOO_SMALL", min);
    }
    if offset == max {
        return answer(response::PULL_NOT_FOUND, "OFFSET_OVERFLOW_ONE", offset);
    }
    if offset > max {
        return answer(response::PULL_OFFSET_MOVED, "OFFSET_OVERFLOW_BADLY", max);
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
    let units = store
        .read_queue(topic, queue_id, offset, want * 8)
        .map_err(|err| {
            Refusal::new(
                response::SYSTEM_ERROR,
                format!("cannot read the consume queue: {err}"),
            )
        })?;
    let mut body = Vec::new();
    let mut found = 0;
    let mut next = offset;
    for unit in units {
        if found == want || (found > 0 && body.len() + unit.size as usize > byte_cap) {
            break;
        }
        next = unit.queue_offset + 1;
        if !filter.may_match(unit.tags_code) {
            continue;
        }
        let mut record = p
            .read_record(unit.commit_log_offset, Some(unit.size))
            .map_err(|reason| Refusal::new(response::SYSTEM_ERROR, reason))?;
        if !filter.matches_record(&record) {
            continue;
        }
        record[QUEUE_OFFSET_AT..QUEUE_OFFSET_AT + 8]
            .copy_from_slice(&unit.queue_offset.to_be_bytes());
        body.extend_from_slice(&record);
        found += 1;
    }
    if found == 0 {
        return answer(response::PULL_RETRY_IMMEDIATELY, "NO_MATCHED_MESSAGE", next);
    }
    Ok((
        pull_answer(req, response::SUCCESS, "FOUND", next, min, max).with_body(Bytes::from(body)),
        next,
    ))
}
