//! Offsets: a consumer group's committed offsets (QUERY_CONSUMER_OFFSET, UPDATE_CONSUMER_OFFSET;
//! commits go through the log in batches, `crate::writer::run_offsets`), a queue's ends
//! (GET_MAX_OFFSET, GET_MIN_OFFSET), the offset of a time (SEARCH_OFFSET_BY_TIMESTAMP) and the
//! store time of a queue's first message (GET_EARLIEST_MSG_STORETIME).

use dledger::Disk;
use protocol::RemotingCommand;
use protocol::code::response;
use protocol::header::{
    CommandHeader, OffsetResponseHeader, QueryConsumerOffsetRequestHeader, QueueRequestHeader,
    SearchOffsetRequestHeader, TimestampResponseHeader, UpdateConsumerOffsetRequestHeader,
};
use protocol::message::RecordView;
use remoting::Transport;
use store::entry::OffsetCommit;

use super::{Answer, Processor, Refusal, ok};

/// QUERY_CONSUMER_OFFSET: the group's offset of a queue, committed or still on its way.
pub(super) struct QueryOffset {
    header: QueryConsumerOffsetRequestHeader,
}

impl QueryOffset {
    pub(super) fn parse(req: &RemotingCommand) -> Result<QueryOffset, Refusal> {
        Ok(QueryOffset {
            header: QueryConsumerOffsetRequestHeader::from_ext(&req.ext_fields)?,
        })
    }

    pub(super) fn apply<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        req: &RemotingCommand,
    ) -> Answer {
        let header = self.header;
        let key = (
            header.consumer_group.clone(),
            header.topic.clone(),
            header.queue_id,
        );
        let offset = p
            .shared
            .pending_offsets
            .lock()
            .expect("pending offsets")
            .get(&key)
            .copied()
            .or_else(|| p.shared.store.consumer_offset(&key.0, &key.1, key.2));
        let offset = match offset {
            Some(o) => o,
            // A new group on a queue that still has its first message starts from it, as
            // RocketMQ does for a queue whose message 0 is in memory.
            None if header.set_zero_if_not_found != Some(false)
                && p.shared.store.min_offset(&header.topic, header.queue_id) <= 0 =>
            {
                0
            }
            None => {
                return Err(Refusal::new(
                    response::QUERY_NOT_FOUND,
                    "Not found, V3_0_6_SNAPSHOT maybe this group consumer boot first",
                ));
            }
        };
        Ok(ok(req).with_ext(OffsetResponseHeader { offset }.to_ext()))
    }
}

/// UPDATE_CONSUMER_OFFSET: a group commits its offset of a queue (on the master only).
pub(super) struct UpdateOffset {
    header: UpdateConsumerOffsetRequestHeader,
}

impl UpdateOffset {
    pub(super) fn parse(req: &RemotingCommand) -> Result<UpdateOffset, Refusal> {
        Ok(UpdateOffset {
            header: UpdateConsumerOffsetRequestHeader::from_ext(&req.ext_fields)?,
        })
    }

    pub(super) async fn apply<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        req: &RemotingCommand,
    ) -> Answer {
        let header = self.header;
        p.require_master()?;
        if header.commit_offset < 0 {
            return Err(Refusal::new(
                response::INVALID_PARAMETER,
                format!("negative offset {}", header.commit_offset),
            ));
        }
        p.commit_offset(
            &header.consumer_group,
            &header.topic,
            header.queue_id,
            header.commit_offset,
        )
        .await;
        Ok(ok(req))
    }
}

/// GET_MAX_OFFSET (`max`: the offset the next message gets) and GET_MIN_OFFSET (the lowest
/// offset stored).
pub(super) struct QueueEnd {
    header: QueueRequestHeader,
    max: bool,
}

impl QueueEnd {
    pub(super) fn parse(req: &RemotingCommand, max: bool) -> Result<QueueEnd, Refusal> {
        Ok(QueueEnd {
            header: QueueRequestHeader::from_ext(&req.ext_fields)?,
            max,
        })
    }

    pub(super) fn apply<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        req: &RemotingCommand,
    ) -> Answer {
        let (topic, queue_id) = (&self.header.topic, self.header.queue_id);
        let offset = if self.max {
            p.shared.store.max_offset(topic, queue_id)
        } else {
            p.shared.store.min_offset(topic, queue_id)
        };
        Ok(ok(req).with_ext(OffsetResponseHeader { offset }.to_ext()))
    }
}

/// SEARCH_OFFSET_BY_TIMESTAMP: the first offset stored at or after a time (`lower`), or the last
/// stored at or before it (`upper`).
pub(super) struct SearchOffset {
    header: SearchOffsetRequestHeader,
}

impl SearchOffset {
    pub(super) fn parse(req: &RemotingCommand) -> Result<SearchOffset, Refusal> {
        Ok(SearchOffset {
            header: SearchOffsetRequestHeader::from_ext(&req.ext_fields)?,
        })
    }

    pub(super) fn apply<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        req: &RemotingCommand,
    ) -> Answer {
        let header = self.header;
        let upper = header
            .boundary_type
            .as_deref()
            .is_some_and(|b| b.eq_ignore_ascii_case("upper"));
        let (mut low, mut high) = (
            p.shared.store.min_offset(&header.topic, header.queue_id),
            p.shared.store.max_offset(&header.topic, header.queue_id),
        );
        // First offset whose store time is >= the target (lower), or > it (upper) minus one.
        while low < high {
            let mid = low + (high - low) / 2;
            let Some(time) = store_time(p, &header.topic, header.queue_id, mid) else {
                return Err(Refusal::new(
                    response::SYSTEM_ERROR,
                    format!("cannot read offset {mid}"),
                ));
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
        let min = p.shared.store.min_offset(&header.topic, header.queue_id);
        let offset = if upper { (low - 1).max(min) } else { low };
        Ok(ok(req).with_ext(OffsetResponseHeader { offset }.to_ext()))
    }
}

/// GET_EARLIEST_MSG_STORETIME: when the queue's first stored message was stored.
pub(super) struct EarliestTime {
    header: QueueRequestHeader,
}

impl EarliestTime {
    pub(super) fn parse(req: &RemotingCommand) -> Result<EarliestTime, Refusal> {
        Ok(EarliestTime {
            header: QueueRequestHeader::from_ext(&req.ext_fields)?,
        })
    }

    pub(super) fn apply<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        req: &RemotingCommand,
    ) -> Answer {
        let (topic, queue_id) = (&self.header.topic, self.header.queue_id);
        let min = p.shared.store.min_offset(topic, queue_id);
        match store_time(p, topic, queue_id, min) {
            Some(timestamp) => Ok(ok(req).with_ext(TimestampResponseHeader { timestamp }.to_ext())),
            None => Err(Refusal::new(
                response::SYSTEM_ERROR,
                format!("no message in {topic} queue {queue_id}"),
            )),
        }
    }
}

/// When the message at `offset` of a queue was stored.
fn store_time<D: Disk, T: Transport>(
    p: &Processor<D, T>,
    topic: &str,
    queue_id: i32,
    offset: i64,
) -> Option<i64> {
    let unit = p
        .shared
        .store
        .read_queue(topic, queue_id, offset, 1)
        .ok()?
        .into_iter()
        .next()?;
    let record = p
        .read_record(unit.commit_log_offset, Some(unit.size))
        .ok()?;
    RecordView::parse(&record).ok().map(|v| v.store_timestamp)
}

impl<D: Disk, T: Transport> Processor<D, T> {
    /// Queues a consumer offset commit; a query sees it at once, the log within the batching
    /// interval.
    pub(super) async fn commit_offset(&self, group: &str, topic: &str, queue_id: i32, offset: i64) {
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
}
