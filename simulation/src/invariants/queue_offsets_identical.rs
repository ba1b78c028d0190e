//! Queue offsets are dense and identical across replicas: each queue starts at offset 0, or
//! at the min offset retention moved it to, and on the offsets two replicas both have holds
//! the same units.

use super::{Checker, NodeView, queues_of, units_from, violation};

pub(super) fn check(checker: &mut Checker, nodes: &[NodeView<'_>]) -> Result<(), super::Violation> {
    for node in nodes {
        let Some(store) = node.store else { continue };
        for (topic, queue_id) in queues_of(store) {
            let min = store.min_offset(&topic, queue_id);
            if min != 0 && store.retention().purged_through.is_none() {
                return violation(
                    "queue_offsets_identical",
                    format!(
                        "node {} queue {topic}:{queue_id} starts at offset {min}, not 0, \
                         and retention cut nothing",
                        node.id
                    ),
                );
            }
            let key = (node.id, node.incarnation, topic.clone(), queue_id);
            let done = checker.units_compared.get(&key).copied().unwrap_or(0);
            let (start, units) = match units_from(store, &topic, queue_id, done) {
                Ok(found) => found,
                Err(err) => {
                    return violation(
                        "queue_offsets_identical",
                        format!(
                            "node {} cannot read queue {topic}:{queue_id}: {err}",
                            node.id
                        ),
                    );
                }
            };
            let max = store.max_offset(&topic, queue_id);
            if start + units.len() as u64 != max as u64 {
                return violation(
                    "queue_offsets_identical",
                    format!(
                        "node {} queue {topic}:{queue_id} has max offset {max} but {} readable units",
                        node.id,
                        start + units.len() as u64
                    ),
                );
            }
            let canonical = checker
                .canonical_units
                .entry((topic.clone(), queue_id))
                .or_default();
            for unit in &units {
                let offset = unit.queue_offset as usize;
                let seen = (unit.commit_log_offset, unit.size, unit.tags_code);
                match canonical.get(offset) {
                    Some(expected) if *expected != seen => {
                        return violation(
                            "queue_offsets_identical",
                            format!(
                                "node {} queue {topic}:{queue_id} offset {offset} holds \
                                 (commit-log offset, size, tags) {seen:?}, another replica {expected:?}",
                                node.id
                            ),
                        );
                    }
                    Some(_) => {}
                    None if offset == canonical.len() => canonical.push(seen),
                    // Past a gap no replica was seen to hold (retention cut it before any
                    // replica's units there were compared): nothing to compare with.
                    None => {}
                }
            }
            checker
                .units_compared
                .insert(key, start + units.len() as u64);
        }
    }
    Ok(())
}
