//! Topics: UPDATE_AND_CREATE_TOPIC (through the log, on the master), and the one-queue topics
//! the broker creates itself (a group's retry and dead-letter topics).

use dledger::Disk;
use protocol::RemotingCommand;
use protocol::body::{TopicConfig, perm};
use protocol::code::response;
use protocol::header::{CommandHeader, CreateTopicRequestHeader};
use remoting::Transport;

use super::{Answer, Processor, Refusal, ok};
use crate::limits::TOPIC_QUEUES_MAX;

/// UPDATE_AND_CREATE_TOPIC: creates a topic or changes its queues and permissions.
pub(super) struct CreateTopic {
    header: CreateTopicRequestHeader,
}

impl CreateTopic {
    pub(super) fn parse(req: &RemotingCommand) -> Result<CreateTopic, Refusal> {
        let header = CreateTopicRequestHeader::from_ext(&req.ext_fields)?;
        protocol::names::check_topic(&header.topic)
            .map_err(|err| Refusal::new(response::INVALID_PARAMETER, err.to_string()))?;
        for (name, value) in [
            ("readQueueNums", header.read_queue_nums),
            ("writeQueueNums", header.write_queue_nums),
        ] {
            if !(1..=TOPIC_QUEUES_MAX).contains(&value) {
                return Err(Refusal::new(
                    response::INVALID_PARAMETER,
                    format!("{name} {value} is outside 1..={TOPIC_QUEUES_MAX}"),
                ));
            }
        }
        if !(0..=15).contains(&header.perm) {
            return Err(Refusal::new(
                response::INVALID_PARAMETER,
                format!("perm {} is not a permission", header.perm),
            ));
        }
        Ok(CreateTopic { header })
    }

    pub(super) async fn apply<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        req: &RemotingCommand,
    ) -> Answer {
        let header = self.header;
        p.require_master()?;
        let mut config = TopicConfig::new(&header.topic, header.write_queue_nums, header.perm);
        config.read_queue_nums = header.read_queue_nums;
        config.order = header.order;
        config.topic_filter_type = header.topic_filter_type.clone();
        config.topic_sys_flag = header.topic_sys_flag.unwrap_or(0);
        p.shared.create_topic(config).await.map_err(|err| {
            Refusal::new(
                response::SYSTEM_ERROR,
                format!("topic {} not created: {err}", header.topic),
            )
        })?;
        Ok(ok(req))
    }
}

impl<D: Disk, T: Transport> Processor<D, T> {
    /// The topic `name` with one queue, created if missing (retry and dead-letter topics).
    pub(super) async fn one_queue_topic(&self, name: &str) -> Result<(), String> {
        if self.shared.store.topic(name).is_some() {
            return Ok(());
        }
        protocol::names::check_topic(name).map_err(|err| err.to_string())?;
        self.shared
            .create_topic(TopicConfig::new(name, 1, perm::READ | perm::WRITE))
            .await
    }
}
