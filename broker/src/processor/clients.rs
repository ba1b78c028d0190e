//! Clients: HEART_BEAT (producer and consumer groups, subscriptions), UNREGISTER_CLIENT,
//! GET_CONSUMER_LIST_BY_GROUP (what a consumer rebalances over), LOCK_BATCH_MQ and
//! UNLOCK_BATCH_MQ (orderly consumers' queue locks, in memory as RocketMQ keeps them), and
//! CHECK_CLIENT_CONFIG (whether a subscription's expression type is served).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use dledger::Disk;
use protocol::RemotingCommand;
use protocol::body::{
    self, ConsumerListBody, HeartbeatData, LockBatchRequestBody, LockBatchResponseBody,
};
use protocol::code::response;
use protocol::header::{CommandHeader, ConsumerGroupHeader, UnregisterClientRequestHeader};
use remoting::{Peer, Transport};

use super::filter::MessageFilter;
use super::{Answer, Processor, Refusal, ok};
use crate::limits::QUEUE_LOCK_TTL;

/// HEART_BEAT: a client's producer and consumer groups, with their subscriptions.
pub(super) struct Heartbeat {
    data: HeartbeatData,
}

impl Heartbeat {
    pub(super) fn parse(req: &RemotingCommand) -> Result<Heartbeat, Refusal> {
        Ok(Heartbeat {
            data: body::parse(&req.body, "heartbeat")?,
        })
    }

    pub(super) async fn apply<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        peer: &Arc<Peer>,
        req: &RemotingCommand,
    ) -> Answer {
        let data = self.data;
        let changed = {
            let mut clients = p.shared.clients.lock().expect("clients");
            let changed = clients.heartbeat(peer, &data, tokio::time::Instant::now());
            for group in &changed {
                clients.notify_changed(group);
            }
            changed
        };
        if p.shared.serving_writes.load(Ordering::Acquire) {
            // Each consumer group gets its retry topic before the heartbeat is answered, as
            // RocketMQ does, so the consumer's first rebalance already finds it.
            for consumer in &data.consumer_data_set {
                let retry = format!("%RETRY%{}", consumer.group_name);
                if let Err(reason) = p.one_queue_topic(&retry).await {
                    tracing::debug!(topic = %retry, %reason, "retry topic not created");
                }
            }
        }
        if !changed.is_empty() {
            tracing::debug!(client = %data.client_id, ?changed, "consumer groups changed");
        }
        // The subscriptions are registered as they came; one whose SQL92 does not compile is
        // answered SUBSCRIPTION_PARSE_FAILED (its pulls will be too).
        for consumer in &data.consumer_data_set {
            for s in &consumer.subscription_data_set {
                if s.expression_type.eq_ignore_ascii_case("SQL92")
                    && p.shared.config.enable_property_filter
                {
                    MessageFilter::new(
                        &s.expression_type,
                        &s.sub_string,
                        true,
                        &p.shared.selectors,
                    )
                    .map_err(|mut refusal| {
                        refusal.remark = format!(
                            "group {} topic {}: {}",
                            consumer.group_name, s.topic, refusal.remark
                        );
                        refusal
                    })?;
                }
            }
        }
        Ok(ok(req))
    }
}

/// UNREGISTER_CLIENT: a client leaves its groups.
pub(super) struct Unregister {
    header: UnregisterClientRequestHeader,
}

impl Unregister {
    pub(super) fn parse(req: &RemotingCommand) -> Result<Unregister, Refusal> {
        Ok(Unregister {
            header: UnregisterClientRequestHeader::from_ext(&req.ext_fields)?,
        })
    }

    pub(super) fn apply<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        req: &RemotingCommand,
    ) -> Answer {
        let mut clients = p.shared.clients.lock().expect("clients");
        for group in clients.unregister(&self.header.client_id) {
            clients.notify_changed(&group);
        }
        Ok(ok(req))
    }
}

/// GET_CONSUMER_LIST_BY_GROUP: the client ids of a consumer group.
pub(super) struct ConsumerList {
    header: ConsumerGroupHeader,
}

impl ConsumerList {
    pub(super) fn parse(req: &RemotingCommand) -> Result<ConsumerList, Refusal> {
        Ok(ConsumerList {
            header: ConsumerGroupHeader::from_ext(&req.ext_fields)?,
        })
    }

    pub(super) fn apply<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        req: &RemotingCommand,
    ) -> Answer {
        let group = &self.header.consumer_group;
        let ids = p
            .shared
            .clients
            .lock()
            .expect("clients")
            .consumer_ids(group);
        if ids.is_empty() {
            return Err(Refusal::new(
                response::SYSTEM_ERROR,
                format!("no consumer for this group, {group}"),
            ));
        }
        Ok(ok(req).with_body(body::to_json(&ConsumerListBody {
            consumer_id_list: ids,
        })))
    }
}

/// LOCK_BATCH_MQ (`lock`) and UNLOCK_BATCH_MQ: an orderly consumer locks queues; a lock is
/// granted when free, expired (60 s) or already held by the same client.
pub(super) struct LockQueues {
    body: LockBatchRequestBody,
    lock: bool,
}

impl LockQueues {
    pub(super) fn parse(req: &RemotingCommand, lock: bool) -> Result<LockQueues, Refusal> {
        Ok(LockQueues {
            body: body::parse(&req.body, "lock batch")?,
            lock,
        })
    }

    pub(super) fn apply<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        req: &RemotingCommand,
    ) -> Answer {
        let body = self.body;
        let now = tokio::time::Instant::now();
        let mut locks = p.shared.locks.lock().expect("locks");
        let mut granted = std::collections::BTreeSet::new();
        for mq in body.mq_set {
            let key = (body.consumer_group.clone(), mq.clone());
            if self.lock {
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
        if !self.lock {
            return Ok(ok(req));
        }
        Ok(ok(req).with_body(body::to_json(&LockBatchResponseBody {
            lock_ok_mq_set: granted,
        })))
    }
}

/// CHECK_CLIENT_CONFIG: a consumer asks whether its subscription can be served.
pub(super) struct CheckConfig {
    subscription: Option<protocol::body::SubscriptionData>,
}

impl CheckConfig {
    pub(super) fn parse(req: &RemotingCommand) -> Result<CheckConfig, Refusal> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Check {
            subscription_data: Option<protocol::body::SubscriptionData>,
        }
        let check: Check = body::parse(&req.body, "check client config")?;
        Ok(CheckConfig {
            subscription: check.subscription_data,
        })
    }

    /// TAG subscriptions pass; SQL92 ones pass when they compile and the broker filters by
    /// properties (RocketMQ's `checkClientConfig`).
    pub(super) fn apply<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        req: &RemotingCommand,
    ) -> Answer {
        if let Some(s) = self.subscription {
            MessageFilter::new(
                &s.expression_type,
                &s.sub_string,
                p.shared.config.enable_property_filter,
                &p.shared.selectors,
            )?;
        }
        Ok(ok(req))
    }
}
