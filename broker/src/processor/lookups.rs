//! Lookups: VIEW_MESSAGE_BY_ID (a message by the commit-log offset in its offset message id) and
//! QUERY_MESSAGE (messages by key or unique key, through the IndexFile). Only applied, so
//! committed, messages are found.

use dledger::Disk;
use protocol::RemotingCommand;
use protocol::code::response;
use protocol::header::{
    CommandHeader, QueryMessageRequestHeader, QueryMessageResponseHeader, ViewMessageRequestHeader,
};
use protocol::message::{RecordView, property};
use remoting::Transport;

use super::{Answer, Processor, Refusal, ok};
use crate::limits::QUERY_MESSAGES_MAX;

/// VIEW_MESSAGE_BY_ID: the record at a commit-log offset.
pub(super) struct ViewMessage {
    header: ViewMessageRequestHeader,
}

impl ViewMessage {
    pub(super) fn parse(req: &RemotingCommand) -> Result<ViewMessage, Refusal> {
        Ok(ViewMessage {
            header: ViewMessageRequestHeader::from_ext(&req.ext_fields)?,
        })
    }

    pub(super) fn apply<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        req: &RemotingCommand,
    ) -> Answer {
        let not_found = || {
            Refusal::new(
                response::SYSTEM_ERROR,
                format!("can not find message by the offset, {}", self.header.offset),
            )
        };
        // Only applied (so committed) messages: a client-given offset may point anywhere.
        let offset = u64::try_from(self.header.offset).map_err(|_| not_found())?;
        if offset >= p.shared.store.applied_end() {
            return Err(not_found());
        }
        match p.read_record(offset, None) {
            Ok(record) => Ok(ok(req).with_body(record)),
            Err(reason) => {
                tracing::debug!(offset, %reason, "view by offset failed");
                Err(not_found())
            }
        }
    }
}

/// QUERY_MESSAGE: a topic's messages with a key (`KEYS`), or with a unique key (`UNIQ_KEY`) when
/// ext field `_UNIQUE_KEY_QUERY` is `true`, stored within a time range.
pub(super) struct QueryMessage {
    header: QueryMessageRequestHeader,
    unique: bool,
}

impl QueryMessage {
    pub(super) fn parse(req: &RemotingCommand) -> Result<QueryMessage, Refusal> {
        Ok(QueryMessage {
            header: QueryMessageRequestHeader::from_ext(&req.ext_fields)?,
            unique: req
                .ext_fields
                .get("_UNIQUE_KEY_QUERY")
                .is_some_and(|v| v == "true"),
        })
    }

    pub(super) fn apply<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        req: &RemotingCommand,
    ) -> Answer {
        let (header, unique) = (self.header, self.unique);
        let max = if unique {
            QUERY_MESSAGES_MAX
        } else {
            usize::try_from(header.max_num)
                .unwrap_or(0)
                .clamp(1, QUERY_MESSAGES_MAX)
        };
        let offsets = p
            .shared
            .store
            .query_key(
                &header.topic,
                &header.key,
                max * 4,
                header.begin_timestamp,
                header.end_timestamp,
            )
            .map_err(|err| {
                Refusal::new(response::SYSTEM_ERROR, format!("index query failed: {err}"))
            })?;
        let mut body = Vec::new();
        let mut found = 0;
        for offset in offsets {
            if found == max {
                break;
            }
            let Ok(record) = p.read_record(offset, None) else {
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
            return Err(Refusal::new(
                response::QUERY_NOT_FOUND,
                format!(
                    "can not find message, maybe time range not correct: key {}",
                    header.key
                ),
            ));
        }
        let (time, phy) = p.shared.store.index_last_update();
        let answer = QueryMessageResponseHeader {
            index_last_update_timestamp: time,
            index_last_update_phyoffset: phy,
        };
        Ok(ok(req).with_ext(answer.to_ext()).with_body(body))
    }
}
