//! The route registry: brokers by cluster and name, topic queues by broker, and liveness
//! (PROTOCOL.md §3.1, §4). Pure state: time comes in as arguments, so tests and the
//! simulation drive expiry exactly.

use std::collections::{BTreeMap, BTreeSet};

use protocol::body::{
    BrokerData, ClusterInfo, DataVersion, QueueData, RegisterBrokerBody, TopicRouteData,
};
use protocol::header::RegisterBrokerRequestHeader;
use tokio::time::{Duration, Instant};

/// One registered broker address.
#[derive(Debug, Clone)]
struct Live {
    cluster: String,
    broker_name: String,
    broker_id: i64,
    last_update: Instant,
    timeout: Duration,
    data_version: DataVersion,
    /// The connection it registered over; closing it unregisters the broker.
    connection: u64,
}

/// What a registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// Recorded.
    Accepted {
        /// The master's address, for a slave, if a master is registered.
        master_addr: Option<String>,
    },
    /// Ignored: another address holds the id with a newer state version (a stale master
    /// registering after its successor).
    Stale {
        /// The address that holds the id.
        holder: String,
    },
}

/// Brokers, topics and liveness.
#[derive(Debug, Default)]
pub struct Registry {
    clusters: BTreeMap<String, BTreeSet<String>>,
    brokers: BTreeMap<String, BrokerData>,
    topics: BTreeMap<String, BTreeMap<String, QueueData>>,
    live: BTreeMap<String, Live>,
    default_timeout: Duration,
}

impl Registry {
    /// An empty registry; brokers silent for `default_timeout` expire unless they ask for
    /// another timeout when registering.
    pub fn new(default_timeout: Duration) -> Self {
        Registry {
            default_timeout,
            ..Default::default()
        }
    }

    /// Records a registration (or a re-registration: the heartbeat).
    pub fn register(
        &mut self,
        header: &RegisterBrokerRequestHeader,
        body: &RegisterBrokerBody,
        now: Instant,
        connection: u64,
    ) -> Registered {
        let addr = &header.broker_addr;
        let version = body.topic_config_serialize_wrapper.data_version;
        let broker = self
            .brokers
            .entry(header.broker_name.clone())
            .or_insert_with(|| BrokerData {
                broker_addrs: BTreeMap::new(),
                broker_name: header.broker_name.clone(),
                cluster: header.cluster_name.clone(),
                enable_acting_master: false,
                zone_name: None,
            });
        // Another address holding this id with a newer state version wins.
        if let Some(holder) = broker.broker_addrs.get(&header.broker_id)
            && holder != addr
        {
            let holder_version = self
                .live
                .get(holder)
                .map_or(0, |l| l.data_version.state_version);
            if holder_version > version.state_version {
                return Registered::Stale {
                    holder: holder.clone(),
                };
            }
            let displaced = holder.clone();
            self.live.remove(&displaced);
        }
        // The same address under another id (a slave became master, or back): drop the old.
        broker
            .broker_addrs
            .retain(|id, a| a != addr || *id == header.broker_id);
        broker.broker_addrs.insert(header.broker_id, addr.clone());
        broker.cluster = header.cluster_name.clone();
        self.clusters
            .entry(header.cluster_name.clone())
            .or_default()
            .insert(header.broker_name.clone());
        if header.broker_id == 0 {
            for (topic, config) in &body.topic_config_serialize_wrapper.topic_config_table {
                self.topics.entry(topic.clone()).or_default().insert(
                    header.broker_name.clone(),
                    QueueData {
                        broker_name: header.broker_name.clone(),
                        perm: config.perm,
                        read_queue_nums: config.read_queue_nums,
                        topic_sys_flag: config.topic_sys_flag,
                        write_queue_nums: config.write_queue_nums,
                    },
                );
            }
        }
        let timeout = header
            .heartbeat_timeout_millis
            .filter(|ms| *ms > 0)
            .map_or(self.default_timeout, |ms| Duration::from_millis(ms as u64));
        self.live.insert(
            addr.clone(),
            Live {
                cluster: header.cluster_name.clone(),
                broker_name: header.broker_name.clone(),
                broker_id: header.broker_id,
                last_update: now,
                timeout,
                data_version: version,
                connection,
            },
        );
        let master_addr = if header.broker_id == 0 {
            None
        } else {
            self.brokers
                .get(&header.broker_name)
                .and_then(|b| b.broker_addrs.get(&0).cloned())
        };
        Registered::Accepted { master_addr }
    }

    /// Removes `addr` from broker `broker_name`; the broker's topics go with its last address.
    pub fn unregister(&mut self, broker_name: &str, addr: &str) {
        self.live.remove(addr);
        let Some(broker) = self.brokers.get_mut(broker_name) else {
            return;
        };
        broker.broker_addrs.retain(|_, a| a != addr);
        if broker.broker_addrs.is_empty() {
            let cluster = broker.cluster.clone();
            self.brokers.remove(broker_name);
            if let Some(names) = self.clusters.get_mut(&cluster) {
                names.remove(broker_name);
                if names.is_empty() {
                    self.clusters.remove(&cluster);
                }
            }
            self.topics.retain(|_, queues| {
                queues.remove(broker_name);
                !queues.is_empty()
            });
        }
    }

    /// Drops brokers silent past their timeout; returns their addresses.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let expired: Vec<(String, String)> = self
            .live
            .iter()
            .filter(|(_, l)| now.saturating_duration_since(l.last_update) > l.timeout)
            .map(|(addr, l)| (addr.clone(), l.broker_name.clone()))
            .collect();
        for (addr, name) in &expired {
            tracing::info!(%addr, broker = %name, "broker expired");
            self.unregister(name, addr);
        }
        expired.into_iter().map(|(addr, _)| addr).collect()
    }

    /// Drops brokers that registered over `connection`; returns their addresses.
    pub fn connection_closed(&mut self, connection: u64) -> Vec<String> {
        let gone: Vec<(String, String)> = self
            .live
            .iter()
            .filter(|(_, l)| l.connection == connection)
            .map(|(addr, l)| (addr.clone(), l.broker_name.clone()))
            .collect();
        for (addr, name) in &gone {
            tracing::info!(%addr, broker = %name, "broker connection closed");
            self.unregister(name, addr);
        }
        gone.into_iter().map(|(addr, _)| addr).collect()
    }

    /// The route of `topic`, if any broker serves it.
    pub fn route(&self, topic: &str) -> Option<TopicRouteData> {
        let queues = self.topics.get(topic)?;
        let broker_datas: Vec<BrokerData> = queues
            .keys()
            .filter_map(|name| self.brokers.get(name).cloned())
            .collect();
        Some(TopicRouteData {
            broker_datas,
            queue_datas: queues.values().cloned().collect(),
            ..Default::default()
        })
    }

    /// Clusters and their brokers.
    pub fn cluster_info(&self) -> ClusterInfo {
        ClusterInfo {
            broker_addr_table: self.brokers.clone(),
            cluster_addr_table: self.clusters.clone(),
        }
    }

    /// Every topic.
    pub fn topics(&self) -> BTreeSet<String> {
        self.topics.keys().cloned().collect()
    }

    /// Each live broker address with its cluster, name, id and time since its last
    /// registration, for status pages; by cluster, broker name, broker id, then address.
    pub fn brokers(&self, now: Instant) -> Vec<LiveBroker> {
        let mut brokers: Vec<LiveBroker> = self
            .live
            .iter()
            .map(|(addr, l)| LiveBroker {
                cluster: l.cluster.clone(),
                broker_name: l.broker_name.clone(),
                broker_id: l.broker_id,
                addr: addr.clone(),
                heartbeat_age: now.saturating_duration_since(l.last_update),
            })
            .collect();
        brokers.sort_by(|a, b| {
            (&a.cluster, &a.broker_name, a.broker_id, &a.addr).cmp(&(
                &b.cluster,
                &b.broker_name,
                b.broker_id,
                &b.addr,
            ))
        });
        brokers
    }

    /// Every topic with the queues each broker group serves of it, for status pages.
    pub fn topic_queues(&self) -> BTreeMap<String, Vec<QueueData>> {
        self.topics
            .iter()
            .map(|(topic, queues)| (topic.clone(), queues.values().cloned().collect()))
            .collect()
    }
}

/// One live broker address as the registry sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveBroker {
    /// Cluster name.
    pub cluster: String,
    /// Broker group name.
    pub broker_name: String,
    /// 0 for the master, else a slave's id.
    pub broker_id: i64,
    /// The address clients dial.
    pub addr: String,
    /// Time since its last registration (the brokers' heartbeat).
    pub heartbeat_age: Duration,
}

impl LiveBroker {
    /// "master" for broker id 0, "slave" otherwise (RocketMQ's words).
    pub fn role(&self) -> &'static str {
        if self.broker_id == 0 {
            "master"
        } else {
            "slave"
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use protocol::body::TopicConfig;

    use super::*;

    fn header(name: &str, addr: &str, id: i64) -> RegisterBrokerRequestHeader {
        RegisterBrokerRequestHeader {
            broker_name: name.into(),
            broker_addr: addr.into(),
            cluster_name: "DefaultCluster".into(),
            ha_server_addr: addr.into(),
            broker_id: id,
            ..Default::default()
        }
    }

    fn body(topics: &[&str], state_version: i64) -> RegisterBrokerBody {
        let mut body = RegisterBrokerBody::default();
        body.topic_config_serialize_wrapper
            .data_version
            .state_version = state_version;
        for t in topics {
            body.topic_config_serialize_wrapper
                .topic_config_table
                .insert(t.to_string(), TopicConfig::new(t, 4, 6));
        }
        body
    }

    #[test]
    fn master_and_slaves_make_a_route() {
        let now = Instant::now();
        let mut r = Registry::new(Duration::from_secs(120));
        r.register(&header("a", "h:1", 0), &body(&["T"], 1), now, 1);
        let got = r.register(&header("a", "h:2", 1), &body(&["T"], 1), now, 2);
        assert_eq!(
            got,
            Registered::Accepted {
                master_addr: Some("h:1".into())
            }
        );
        let route = r.route("T").unwrap();
        assert_eq!(route.broker_datas[0].broker_addrs.len(), 2);
        assert_eq!(route.queue_datas[0].write_queue_nums, 4);
        assert!(r.route("Other").is_none());
        assert_eq!(
            r.cluster_info().cluster_addr_table["DefaultCluster"].len(),
            1
        );
    }

    #[test]
    fn failover_replaces_the_master_and_drops_the_old_id() {
        let now = Instant::now();
        let mut r = Registry::new(Duration::from_secs(120));
        r.register(&header("a", "h:1", 0), &body(&["T"], 1), now, 1);
        r.register(&header("a", "h:2", 2), &body(&["T"], 1), now, 2);
        // h:2 wins the election of term 2.
        r.register(&header("a", "h:2", 0), &body(&["T"], 2), now, 2);
        let addrs = &r.route("T").unwrap().broker_datas[0].broker_addrs;
        assert_eq!(addrs.get(&0).map(String::as_str), Some("h:2"));
        assert!(!addrs.values().any(|a| a == "h:1"), "{addrs:?}");
        assert_eq!(addrs.len(), 1, "h:2 no longer listed as id 2: {addrs:?}");
        // The old master, late, cannot take id 0 back with an older term.
        let got = r.register(&header("a", "h:1", 0), &body(&["T"], 1), now, 1);
        assert_eq!(
            got,
            Registered::Stale {
                holder: "h:2".into()
            }
        );
    }

    #[test]
    fn silent_and_disconnected_brokers_go() {
        let start = Instant::now();
        let mut r = Registry::new(Duration::from_secs(120));
        r.register(&header("a", "h:1", 0), &body(&["T"], 1), start, 1);
        let mut short = header("b", "h:3", 0);
        short.heartbeat_timeout_millis = Some(1_000);
        r.register(&short, &body(&["T"], 1), start, 3);
        assert!(r.expire(start + Duration::from_secs(1)).is_empty());
        assert_eq!(r.expire(start + Duration::from_millis(1_001)), ["h:3"]);
        assert_eq!(r.route("T").unwrap().broker_datas.len(), 1);
        assert_eq!(r.connection_closed(1), ["h:1"]);
        assert!(r.route("T").is_none(), "topics go with their last broker");
        assert!(r.cluster_info().cluster_addr_table.is_empty());
    }

    #[test]
    fn status_lists_live_brokers_with_roles_and_heartbeat_age() {
        let start = Instant::now();
        let mut r = Registry::new(Duration::from_secs(120));
        r.register(&header("a", "h:2", 2), &body(&["T"], 1), start, 2);
        r.register(&header("a", "h:1", 0), &body(&["T", "U"], 1), start, 1);
        let later = start + Duration::from_millis(1_500);
        r.register(&header("a", "h:2", 2), &body(&["T"], 1), later, 2);
        let brokers = r.brokers(later);
        assert_eq!(brokers.len(), 2);
        assert_eq!(
            (brokers[0].addr.as_str(), brokers[0].role()),
            ("h:1", "master")
        );
        assert_eq!(brokers[0].heartbeat_age, Duration::from_millis(1_500));
        assert_eq!(
            (brokers[1].addr.as_str(), brokers[1].role()),
            ("h:2", "slave")
        );
        assert_eq!(brokers[1].heartbeat_age, Duration::ZERO);
        let topics = r.topic_queues();
        assert_eq!(topics.keys().collect::<Vec<_>>(), ["T", "U"]);
        assert_eq!(topics["T"][0].broker_name, "a");
        assert_eq!(topics["T"][0].write_queue_nums, 4);
    }
}
