//! Committed entries are identical on every replica that has them: each replica's committed
//! prefix is compared with the committed log assembled from all replicas.

use super::{Checker, NodeView, body_of, violation};

pub(super) fn check(checker: &mut Checker, nodes: &[NodeView<'_>]) -> Result<(), super::Violation> {
    for node in nodes {
        let Some(committed) = node.status.committed else {
            continue;
        };
        let key = (node.id, node.incarnation);
        let from = checker.checked_committed.get(&key).map_or(0, |c| c + 1);
        for index in from..=committed {
            let entry = match node.ledger.read_any(index) {
                Ok(Some(entry)) => entry,
                // Purged entries are not compared.
                Ok(None) => continue,
                Err(err) => {
                    return violation(
                        "committed_identical",
                        format!(
                            "node {} cannot read its committed entry {index}: {err}",
                            node.id
                        ),
                    );
                }
            };
            let seen = (entry.term, body_of(&entry));
            match checker.canonical.get(&index) {
                Some(canonical) if *canonical != seen => {
                    let first_difference = match (&seen.1, &canonical.1) {
                        (Some(a), Some(b)) => a
                            .iter()
                            .zip(b)
                            .position(|(x, y)| x != y)
                            .map(|at| {
                                format!(
                                    " (first at body byte {at}: {:#04x} here, {:#04x} committed; entry at log position {})",
                                    a[at], b[at], entry.position
                                )
                            })
                            .unwrap_or_default(),
                        _ => String::new(),
                    };
                    return violation(
                        "committed_identical",
                        format!(
                            "node {} has entry {index} (term {}, {} body bytes) but the committed log has (term {}, {} body bytes) there{}",
                            node.id,
                            seen.0,
                            seen.1.as_ref().map_or(0, Vec::len),
                            canonical.0,
                            canonical.1.as_ref().map_or(0, Vec::len),
                            if seen.0 == canonical.0 {
                                ": same term, different body"
                            } else {
                                ""
                            },
                        ) + &first_difference,
                    );
                }
                Some(_) => {}
                None => {
                    checker.canonical.insert(index, seen);
                }
            }
        }
        checker.checked_committed.insert(key, committed);
    }
    Ok(())
}
