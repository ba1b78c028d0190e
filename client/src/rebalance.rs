//! Queue allocation among the members of a consumer group.
//!
//! Every member computes its own share from the same inputs (the sorted client ids the broker
//! returns and the sorted queues of the route), so the shares never overlap while the members
//! agree on the inputs.

use protocol::body::MessageQueue;

/// RocketMQ's `AllocateMessageQueueAveragely`: the queues in contiguous runs, the first
/// `queues % members` members getting one more. A member not in `members` gets nothing.
/// Both lists must be sorted the same way on every member.
pub fn allocate_average(
    me: &str,
    members: &[String],
    queues: &[MessageQueue],
) -> Vec<MessageQueue> {
    let Some(index) = members.iter().position(|m| m == me) else {
        return Vec::new();
    };
    if queues.is_empty() {
        return Vec::new();
    }
    let (n, m) = (queues.len(), members.len());
    let rest = n % m;
    let average = if n <= m {
        1
    } else if rest > 0 && index < rest {
        n / m + 1
    } else {
        n / m
    };
    let start = if rest > 0 && index < rest {
        index * average
    } else {
        index * average + rest
    };
    let range = average.min(n.saturating_sub(start));
    (0..range)
        .map(|i| queues[(start + i) % n].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn queues(n: i32) -> Vec<MessageQueue> {
        (0..n)
            .map(|queue_id| MessageQueue {
                broker_name: "b".into(),
                queue_id,
                topic: "T".into(),
            })
            .collect()
    }

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    fn ids(queues: &[MessageQueue]) -> Vec<i32> {
        queues.iter().map(|q| q.queue_id).collect()
    }

    /// The shares match Java's for the usual shapes.
    #[test]
    fn shares_match_java() {
        let (q, m) = (queues(4), members(2));
        assert_eq!(ids(&allocate_average("c0", &m, &q)), [0, 1]);
        assert_eq!(ids(&allocate_average("c1", &m, &q)), [2, 3]);
        let (q, m) = (queues(5), members(3));
        assert_eq!(ids(&allocate_average("c0", &m, &q)), [0, 1]);
        assert_eq!(ids(&allocate_average("c1", &m, &q)), [2, 3]);
        assert_eq!(ids(&allocate_average("c2", &m, &q)), [4]);
        let (q, m) = (queues(2), members(3));
        assert_eq!(ids(&allocate_average("c2", &m, &q)), Vec::<i32>::new());
        assert!(allocate_average("stranger", &m, &q).is_empty());
    }

    /// For every shape up to 12 queues and 6 members, the shares cover every queue exactly
    /// once.
    #[test]
    fn shares_partition_the_queues() {
        for n in 0..12 {
            for m in 1..6 {
                let (q, ms) = (queues(n), members(m));
                let mut seen = BTreeSet::new();
                let mut total = 0;
                for me in &ms {
                    for queue in allocate_average(me, &ms, &q) {
                        total += 1;
                        seen.insert(queue.queue_id);
                    }
                }
                assert_eq!(total, n as usize, "{n} queues, {m} members: no queue twice");
                assert_eq!(
                    seen.len(),
                    n as usize,
                    "{n} queues, {m} members: all covered"
                );
            }
        }
    }
}
