//! Queue offsets are dense and identical across replicas: each queue starts at offset 0 (no
//! retention yet) and, on the offsets two replicas both have, holds the same units.

use super::{Checker, NodeView, queues_of, units_from, violation};

pub(super) fn check(checker: &mut Checker, nodes: &[NodeView<'_>]) -> Result<(), super::Violation> {
    for node in nodes {
        let Some(store) = node.store else { continue };
        for (topic, queue_id) in queues_of(store) {
            let min = store.min_offset(&topic, queue_id);
            if min != 0 {
                return violation(
                    "queue_offsets_identical",
                    format!(
                        "node {} queue {topic}:{queue_id} starts at offset {min}, not 0",
                        node.id
                    ),
                );
            }
            let key = (node.id, node.incarnation, topic.clone(), queue_id);
            let done = checker.units_compared.get(&key).copied().unwrap_or(0);
            let units = match units_from(store, &topic, queue_id, done) {
                Ok(units) => units,
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
            if done + units.len() as u64 != max as u64 {
                return violation(
                    "queue_offsets_identical",
                    format!(
                        "node {} queue {topic}:{queue_id} has max offset {max} but {} readable units",
                        node.id,
                        done + units.len() as u64
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
                    None => unreachable!("units are read in order from what was compared"),
                }
            }
            checker
                .units_compared
                .insert(key, done + units.len() as u64);
        }
    }
    Ok(())
}
