//! Producers and consumers known from their heartbeats: group membership for rebalancing
//! (GET_CONSUMER_LIST_BY_GROUP), NOTIFY_CONSUMER_IDS_CHANGED when a group changes, and the
//! connections of a producer group that the leader asks about a transaction
//! (CHECK_TRANSACTION_STATE).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use protocol::RemotingCommand;
use protocol::body::{ConsumerData, HeartbeatData};
use protocol::code::request;
use protocol::header::{CommandHeader, ConsumerGroupHeader};
use remoting::Peer;
use tokio::time::{Duration, Instant};

struct Member {
    peer: Arc<Peer>,
    last_seen: Instant,
    data: ConsumerData,
}

/// A producer of a group: its connection and last heartbeat.
struct Producer {
    peer: Arc<Peer>,
    last_seen: Instant,
}

/// Consumer groups and producer groups by client.
#[derive(Default)]
pub struct Clients {
    consumers: BTreeMap<String, BTreeMap<String, Member>>,
    producers: BTreeMap<String, BTreeMap<String, Producer>>,
    /// Turns taken by [`Clients::producer_peer`], so checks go round the group's producers.
    producer_turns: u64,
}

impl Clients {
    /// Records a heartbeat from `peer`; returns the consumer groups whose membership or
    /// subscriptions changed.
    pub fn heartbeat(
        &mut self,
        peer: &Arc<Peer>,
        data: &HeartbeatData,
        now: Instant,
    ) -> Vec<String> {
        let mut changed = Vec::new();
        for consumer in &data.consumer_data_set {
            let group = self
                .consumers
                .entry(consumer.group_name.clone())
                .or_default();
            let differs = group.get(&data.client_id).is_none_or(|m| {
                m.data.subscription_data_set != consumer.subscription_data_set
                    || m.peer.id != peer.id
            });
            let new_member = !group.contains_key(&data.client_id);
            group.insert(
                data.client_id.clone(),
                Member {
                    peer: peer.clone(),
                    last_seen: now,
                    data: consumer.clone(),
                },
            );
            if new_member || differs {
                changed.push(consumer.group_name.clone());
            }
        }
        for producer in &data.producer_data_set {
            self.producers
                .entry(producer.group_name.clone())
                .or_default()
                .insert(
                    data.client_id.clone(),
                    Producer {
                        peer: peer.clone(),
                        last_seen: now,
                    },
                );
        }
        changed
    }

    /// Removes a client from its groups; returns the consumer groups it left.
    pub fn unregister(&mut self, client_id: &str) -> Vec<String> {
        let mut left = Vec::new();
        for (group, members) in &mut self.consumers {
            if members.remove(client_id).is_some() {
                left.push(group.clone());
            }
        }
        self.consumers.retain(|_, m| !m.is_empty());
        for members in self.producers.values_mut() {
            members.remove(client_id);
        }
        self.producers.retain(|_, m| !m.is_empty());
        left
    }

    /// Removes the clients of a closed connection; returns the consumer groups they left.
    pub fn connection_closed(&mut self, peer_id: u64) -> Vec<String> {
        for members in self.producers.values_mut() {
            members.retain(|_, p| p.peer.id != peer_id);
        }
        self.producers.retain(|_, m| !m.is_empty());
        let gone: BTreeSet<String> = self
            .consumers
            .values()
            .flat_map(|m| {
                m.iter()
                    .filter(|(_, m)| m.peer.id == peer_id)
                    .map(|(c, _)| c.clone())
            })
            .collect();
        let mut left = Vec::new();
        for client in gone {
            left.extend(self.unregister(&client));
        }
        left.sort();
        left.dedup();
        left
    }

    /// Drops clients silent longer than `timeout`; returns the consumer groups they left.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<String> {
        for members in self.producers.values_mut() {
            members.retain(|_, p| now.saturating_duration_since(p.last_seen) <= timeout);
        }
        self.producers.retain(|_, m| !m.is_empty());
        let silent: BTreeSet<String> = self
            .consumers
            .values()
            .flat_map(|m| {
                m.iter()
                    .filter(|(_, m)| now.saturating_duration_since(m.last_seen) > timeout)
                    .map(|(c, _)| c.clone())
            })
            .collect();
        let mut left = Vec::new();
        for client in silent {
            left.extend(self.unregister(&client));
        }
        left.sort();
        left.dedup();
        left
    }

    /// Client ids of a consumer group, sorted.
    pub fn consumer_ids(&self, group: &str) -> Vec<String> {
        self.consumers
            .get(group)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Tells every member of `group` to rebalance (not for broadcasting groups, where each
    /// member reads every queue anyway).
    pub fn notify_changed(&self, group: &str) {
        let Some(members) = self.consumers.get(group) else {
            return;
        };
        for member in members.values() {
            if member.data.message_model == "BROADCASTING" {
                continue;
            }
            let header = ConsumerGroupHeader {
                consumer_group: group.to_string(),
            };
            let notice =
                RemotingCommand::request(request::NOTIFY_CONSUMER_IDS_CHANGED, header.to_ext());
            if !member.peer.send_oneway(notice) {
                tracing::debug!(group, peer = %member.peer.addr, "could not notify consumer");
            }
        }
    }

    /// The subscription expression of `group` for `topic`, from its heartbeats.
    pub fn subscription(&self, group: &str, topic: &str) -> Option<(String, String)> {
        self.consumers.get(group)?.values().find_map(|m| {
            m.data
                .subscription_data_set
                .iter()
                .find(|s| s.topic == topic)
                .map(|s| (s.expression_type.clone(), s.sub_string.clone()))
        })
    }

    /// A connection of producer group `group`, taking its producers in turn (RocketMQ's
    /// `getAvailableChannel`); `None` when no producer of the group sent a heartbeat lately.
    pub fn producer_peer(&mut self, group: &str) -> Option<Arc<Peer>> {
        let members = self.producers.get(group)?;
        let turn = self.producer_turns as usize % members.len().max(1);
        self.producer_turns = self.producer_turns.wrapping_add(1);
        members.values().nth(turn).map(|p| p.peer.clone())
    }

    /// Consumer groups and their sizes, for status pages.
    pub fn groups(&self) -> BTreeMap<String, usize> {
        self.consumers
            .iter()
            .map(|(g, m)| (g.clone(), m.len()))
            .collect()
    }
}
