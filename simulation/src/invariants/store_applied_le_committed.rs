//! No message is visible before commit: a replica's store never applied past its ledger's
//! committed index (what the store applied is what pulls and queries serve).

use super::{NodeView, violation};

pub(super) fn check(nodes: &[NodeView<'_>]) -> Result<(), super::Violation> {
    for node in nodes {
        let Some(store) = node.store else { continue };
        if let Some(applied) = store.last_applied()
            && node.status.committed.is_none_or(|c| applied.index > c)
        {
            return violation(
                "store_applied_le_committed",
                format!(
                    "node {} store applied entry {} of term {} with committed {:?}",
                    node.id, applied.index, applied.term, node.status.committed
                ),
            );
        }
    }
    Ok(())
}
