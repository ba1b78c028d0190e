//! Nothing is applied that was not committed: every entry a state machine applied is the
//! committed entry at that index.

use super::{Checker, NodeView, violation};

pub(super) fn check(checker: &mut Checker, nodes: &[NodeView<'_>]) -> Result<(), super::Violation> {
    for node in nodes {
        let key = (node.id, node.incarnation);
        let done = checker.checked_applied.get(&key).copied().unwrap_or(0);
        for (index, term, _position, data) in node.applied.iter().skip(done) {
            match checker.canonical.get(index) {
                Some((c_term, c_data)) if c_term == term && c_data == data => {}
                Some((c_term, _)) => {
                    return violation(
                        "applied_only_committed",
                        format!(
                            "node {} applied entry {index} of term {term}, the committed one has term {c_term}",
                            node.id
                        ),
                    );
                }
                None => {
                    return violation(
                        "applied_only_committed",
                        format!(
                            "node {} applied entry {index} that no replica reports committed",
                            node.id
                        ),
                    );
                }
            }
        }
        checker.checked_applied.insert(key, node.applied.len());
    }
    Ok(())
}
