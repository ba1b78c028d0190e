//! Within one life of a replica the committed index never goes backwards, and it never passes
//! the replica's last log index.

use super::{Checker, NodeView, violation};

pub(super) fn check(checker: &mut Checker, nodes: &[NodeView<'_>]) -> Result<(), super::Violation> {
    for node in nodes {
        let Some(committed) = node.status.committed else {
            continue;
        };
        let last_log = node.status.last_log_index.unwrap_or(0);
        if committed > last_log {
            return violation(
                "committed_monotonic",
                format!(
                    "node {} committed {committed} past its last log index {last_log}",
                    node.id
                ),
            );
        }
        let key = (node.id, node.incarnation);
        let before = checker.last_committed.insert(key, committed);
        if let Some(before) = before.filter(|&b| committed < b) {
            return violation(
                "committed_monotonic",
                format!(
                    "node {} committed index went back from {before} to {committed}",
                    node.id
                ),
            );
        }
    }
    Ok(())
}
