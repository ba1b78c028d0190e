//! An acknowledged entry is in every later leader's log, at the index it was acknowledged with.

use dledger::Role;

use super::{Checker, NodeView, body_of, violation};
use crate::oracle::{Acked, id_of};

pub(super) fn check(
    checker: &mut Checker,
    nodes: &[NodeView<'_>],
    acked: &[Acked],
) -> Result<(), super::Violation> {
    for node in nodes.iter().filter(|n| n.status.role == Role::Leader) {
        let term = node.status.term;
        let done = checker
            .leader_terms_checked
            .get(&term)
            .copied()
            .unwrap_or(0);
        // A stale leader of an earlier term (cut off, not yet stepped down) may lack entries
        // acknowledged in later terms; leader completeness speaks of later leaders only.
        for ack in acked.iter().skip(done).filter(|a| a.term <= term) {
            let entry = node.ledger.read_any(ack.index).ok().flatten();
            let id = entry.as_ref().and_then(body_of).and_then(|b| id_of(&b));
            if id != Some(ack.id) {
                return violation(
                    "acked_in_later_leader",
                    format!(
                        "leader {} of term {term} lacks acknowledged id {} at index {} (found {id:?})",
                        node.id, ack.id, ack.index
                    ),
                );
            }
        }
        checker.leader_terms_checked.insert(term, acked.len());
    }
    Ok(())
}
