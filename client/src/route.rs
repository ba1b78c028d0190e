//! What a client reads out of a topic route (PROTOCOL.md §4.1): the queues it may publish to,
//! the queues it may pull from, and broker addresses. Pure functions.

use std::collections::BTreeMap;

use protocol::body::{MessageQueue, TopicRouteData, perm};

/// The master's broker id.
pub(crate) const MASTER_ID: i64 = 0;

/// Publish queues: for each writable queue data whose broker group has a master (id 0),
/// queue ids `0..writeQueueNums`, broker groups sorted by name. An ordered topic's
/// `orderTopicConf` (`"brokerA:4;brokerB:4"`) lists them instead, in its order.
pub(crate) fn publish_queues(topic: &str, route: &TopicRouteData) -> Vec<MessageQueue> {
    if let Some(conf) = route.order_topic_conf.as_deref().filter(|c| !c.is_empty()) {
        return conf
            .split(';')
            .filter_map(|item| item.split_once(':'))
            .filter_map(|(name, n)| Some((name.trim(), n.trim().parse::<i32>().ok()?)))
            .flat_map(|(name, n)| {
                (0..n.max(0)).map(move |queue_id| MessageQueue {
                    broker_name: name.to_string(),
                    queue_id,
                    topic: topic.to_string(),
                })
            })
            .collect();
    }
    let mut datas: Vec<_> = route
        .queue_datas
        .iter()
        .filter(|q| q.perm & perm::WRITE != 0)
        .filter(|q| {
            route
                .broker_datas
                .iter()
                .any(|b| b.broker_name == q.broker_name && b.broker_addrs.contains_key(&MASTER_ID))
        })
        .collect();
    datas.sort_by(|a, b| a.broker_name.cmp(&b.broker_name));
    datas.dedup_by(|a, b| a.broker_name == b.broker_name);
    datas
        .into_iter()
        .flat_map(|q| {
            (0..q.write_queue_nums.max(0)).map(move |queue_id| MessageQueue {
                broker_name: q.broker_name.clone(),
                queue_id,
                topic: topic.to_string(),
            })
        })
        .collect()
}

/// Subscribe queues: for each readable queue data, queue ids `0..readQueueNums`; a master is
/// not needed (followers serve pulls). Sorted, as the average allocation needs.
pub(crate) fn subscribe_queues(topic: &str, route: &TopicRouteData) -> Vec<MessageQueue> {
    let mut queues: Vec<MessageQueue> = route
        .queue_datas
        .iter()
        .filter(|q| q.perm & perm::READ != 0)
        .flat_map(|q| {
            (0..q.read_queue_nums.max(0)).map(move |queue_id| MessageQueue {
                broker_name: q.broker_name.clone(),
                queue_id,
                topic: topic.to_string(),
            })
        })
        .collect();
    queues.sort();
    queues.dedup();
    queues
}

/// The route of the template topic, made to stand for a topic without a route: every queue
/// data gets `min(queue_nums, readQueueNums)` queues, as Java's producer does before the
/// broker auto-creates the topic on the first send.
pub(crate) fn from_template(mut template: TopicRouteData, queue_nums: i32) -> TopicRouteData {
    for data in &mut template.queue_datas {
        let n = queue_nums.min(data.read_queue_nums);
        data.read_queue_nums = n;
        data.write_queue_nums = n;
    }
    template.order_topic_conf = None;
    template
}

/// The address to pull from in a broker group: the wanted id, else (for a slave) the next
/// id, else the first known one, as Java's `findBrokerAddressInSubscribe(name, id, false)`.
pub(crate) fn subscribe_addr(addrs: &BTreeMap<i64, String>, wanted: i64) -> Option<(i64, &str)> {
    let hit = |id: i64| addrs.get(&id).map(|a| (id, a.as_str()));
    hit(wanted)
        .or_else(|| (wanted != MASTER_ID).then(|| hit(wanted + 1)).flatten())
        .or_else(|| addrs.iter().next().map(|(id, a)| (*id, a.as_str())))
}

#[cfg(test)]
mod tests {
    use protocol::body::{BrokerData, QueueData};

    use super::*;

    fn broker(name: &str, ids: &[i64]) -> BrokerData {
        BrokerData {
            broker_addrs: ids.iter().map(|id| (*id, format!("{name}:{id}"))).collect(),
            broker_name: name.into(),
            cluster: "c".into(),
            enable_acting_master: false,
            zone_name: None,
        }
    }

    fn queues(name: &str, perm: i32, read: i32, write: i32) -> QueueData {
        QueueData {
            broker_name: name.into(),
            perm,
            read_queue_nums: read,
            topic_sys_flag: 0,
            write_queue_nums: write,
        }
    }

    fn ids(queues: &[MessageQueue]) -> Vec<(String, i32)> {
        queues
            .iter()
            .map(|q| (q.broker_name.clone(), q.queue_id))
            .collect()
    }

    /// Publishing needs a writable queue on a group with a master; subscribing only a readable
    /// queue.
    #[test]
    fn publish_needs_a_master_and_subscribe_a_readable_queue() {
        let route = TopicRouteData {
            broker_datas: vec![
                broker("b", &[0, 1]),
                broker("a", &[0]),
                broker("c", &[1]),
                broker("d", &[0]),
            ],
            queue_datas: vec![
                queues("b", 6, 2, 2),
                queues("a", 6, 1, 1),
                queues("c", 6, 1, 1),
                queues("d", perm::READ, 1, 1),
            ],
            ..Default::default()
        };
        assert_eq!(
            ids(&publish_queues("T", &route)),
            [("a".into(), 0), ("b".into(), 0), ("b".into(), 1)]
        );
        assert_eq!(
            ids(&subscribe_queues("T", &route)),
            [
                ("a".into(), 0),
                ("b".into(), 0),
                ("b".into(), 1),
                ("c".into(), 0),
                ("d".into(), 0)
            ]
        );
    }

    /// An ordered topic's configuration decides the publish queues.
    #[test]
    fn order_topic_conf_lists_publish_queues() {
        let route = TopicRouteData {
            order_topic_conf: Some("b:2;a:1".into()),
            ..Default::default()
        };
        assert_eq!(
            ids(&publish_queues("T", &route)),
            [("b".into(), 0), ("b".into(), 1), ("a".into(), 0)]
        );
    }

    /// The template's queue counts are capped by the producer's default.
    #[test]
    fn template_route_is_capped() {
        let template = TopicRouteData {
            broker_datas: vec![broker("a", &[0])],
            queue_datas: vec![queues("a", 7, 8, 8)],
            ..Default::default()
        };
        let route = from_template(template, 4);
        assert_eq!(publish_queues("New", &route).len(), 4);
        assert_eq!(publish_queues("New", &route)[0].topic, "New");
    }

    /// Pulls go to the wanted id, a slave's successor, or any replica.
    #[test]
    fn subscribe_address_falls_back() {
        let addrs: BTreeMap<i64, String> = [(1, "s1".to_string()), (2, "s2".to_string())].into();
        assert_eq!(subscribe_addr(&addrs, 2), Some((2, "s2")));
        assert_eq!(subscribe_addr(&addrs, 0), Some((1, "s1")));
        assert_eq!(subscribe_addr(&addrs, 3), Some((1, "s1")));
        assert_eq!(subscribe_addr(&BTreeMap::new(), 0), None);
    }
}
