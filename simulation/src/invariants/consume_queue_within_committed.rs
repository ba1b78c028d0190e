//! No ConsumeQueue unit points past the committed log: every unit's record lies before the end
//! of the last entry the replica's store applied.

use super::{Checker, NodeView, queues_of, units_from, violation};

pub(super) fn check(checker: &mut Checker, nodes: &[NodeView<'_>]) -> Result<(), super::Violation> {
    for node in nodes {
        let Some(store) = node.store else { continue };
        let applied_end = store.applied_end();
        for (topic, queue_id) in queues_of(store) {
            let key = (node.id, node.incarnation, topic.clone(), queue_id);
            let done = checker
                .units_within_committed
                .get(&key)
                .copied()
                .unwrap_or(0);
            let (start, units) = match units_from(store, &topic, queue_id, done) {
                Ok(found) => found,
                Err(err) => {
                    return violation(
                        "consume_queue_within_committed",
                        format!(
                            "node {} cannot read queue {topic}:{queue_id}: {err}",
                            node.id
                        ),
                    );
                }
            };
            for unit in &units {
                let end = unit.commit_log_offset + u64::from(unit.size);
                if unit.commit_log_offset >= applied_end || end > applied_end {
                    return violation(
                        "consume_queue_within_committed",
                        format!(
                            "node {} queue {topic}:{queue_id} offset {} points at commit-log \
                             bytes {}..{end}, past the applied end {applied_end}",
                            node.id, unit.queue_offset, unit.commit_log_offset
                        ),
                    );
                }
            }
            checker
                .units_within_committed
                .insert(key, start + units.len() as u64);
        }
    }
    Ok(())
}
