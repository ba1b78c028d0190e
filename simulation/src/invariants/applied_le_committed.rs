//! A replica never applies past its committed index.

use super::{NodeView, violation};

pub(super) fn check(nodes: &[NodeView<'_>]) -> Result<(), super::Violation> {
    for node in nodes {
        if let Some(applied) = node.status.applied
            && node.status.committed.is_none_or(|c| applied > c)
        {
            return violation(
                "applied_le_committed",
                format!(
                    "node {} applied {applied} with committed {:?}",
                    node.id, node.status.committed
                ),
            );
        }
    }
    Ok(())
}
