//! At most one leader per term.

use super::{Checker, NodeView, violation};
use dledger::Role;

pub(super) fn check(checker: &mut Checker, nodes: &[NodeView<'_>]) -> Result<(), super::Violation> {
    for node in nodes.iter().filter(|n| n.status.role == Role::Leader) {
        let leader = *checker.leaders.entry(node.status.term).or_insert(node.id);
        if leader != node.id {
            return violation(
                "election_safety",
                format!(
                    "term {} has two leaders: {leader} and {}",
                    node.status.term, node.id
                ),
            );
        }
    }
    Ok(())
}
