//! Transactional messages: the transaction state (half messages, commits, rollbacks, checks) is
//! the same on every replica that applied the same entries (checked every step); a consumer
//! never sees a transaction's message before its commit was sent nor after its rollback (checked
//! as it pulls, and again at the end), and a committed half message is visible at one place
//! only, however often its commit was sent. That every committed transaction reaches every
//! consumer after healing (settled by the broker's check when its END_TRANSACTION was never
//! sent or lost) is part of the run's convergence (`transaction_visible_after_commit`, in
//! `run.rs`, over `messaging::first_not_received`).

use std::collections::{BTreeMap, BTreeSet};

use super::{Checker, NodeView, Violation, violation};
use crate::oracle::Consumed;

/// Every step: two replicas that applied up to the same entry count the same transactions.
pub(super) fn check_identical(
    checker: &mut Checker,
    nodes: &[NodeView<'_>],
) -> Result<(), Violation> {
    for node in nodes {
        let Some(store) = node.store else { continue };
        let Some(applied) = store.last_applied() else {
            continue;
        };
        super::same_after_entry(
            &mut checker.transactions_at,
            "transactions_identical",
            "transaction counts",
            applied.index,
            node.id,
            store.transaction_counts(),
        )?;
    }
    Ok(())
}

/// What a consumer saw of a transaction's message when it pulled it: `Err` names the breach.
///
/// # Errors
/// A message of a half message not committed, or rolled back.
pub fn check_pulled(id: u64, committed: &[u64], rolled_back: &[u64]) -> Result<(), String> {
    if rolled_back.contains(&id) {
        return Err(format!("id {id} was rolled back, yet a consumer pulled it"));
    }
    if !committed.contains(&id) {
        return Err(format!(
            "id {id} is a transaction's message a consumer pulled before its commit was sent"
        ));
    }
    Ok(())
}

/// After healing: no rolled-back message was consumed, and each committed one was seen at one
/// place only (by every consumer that got it).
///
/// # Errors
/// The first message consumed after its rollback or visible at two places.
pub fn settled_once(
    consumed: &[Consumed],
    committed: &[u64],
    rolled_back: &[u64],
) -> Result<(), Violation> {
    let rolled_back: BTreeSet<u64> = rolled_back.iter().copied().collect();
    let committed: BTreeSet<u64> = committed.iter().copied().collect();
    let mut places: BTreeMap<u64, BTreeSet<(i32, i64)>> = BTreeMap::new();
    for c in consumed {
        if rolled_back.contains(&c.id) {
            return violation(
                "transaction_never_after_rollback",
                format!(
                    "id {} was rolled back, yet consumer {:#x} pulled it at queue {} offset {}",
                    c.id, c.consumer, c.queue_id, c.queue_offset
                ),
            );
        }
        if committed.contains(&c.id) {
            places
                .entry(c.id)
                .or_default()
                .insert((c.queue_id, c.queue_offset));
        }
    }
    if let Some((id, at)) = places.iter().find(|(_, at)| at.len() > 1) {
        return violation(
            "transaction_visible_once",
            format!("committed id {id} is visible at {at:?}"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumed(id: u64, consumer: u64, queue_offset: i64) -> Consumed {
        Consumed {
            id,
            consumer,
            queue_id: 0,
            queue_offset,
        }
    }

    /// A rolled-back message pulled, a message pulled before its commit, and a committed one at
    /// two places are each named; one committed message seen by two consumers at one place is
    /// fine.
    #[test]
    fn breaches_are_named() {
        assert!(check_pulled(1, &[1], &[]).is_ok());
        assert!(
            check_pulled(2, &[1], &[])
                .unwrap_err()
                .contains("before its commit")
        );
        assert!(
            check_pulled(3, &[], &[3])
                .unwrap_err()
                .contains("rolled back")
        );
        let once = [consumed(1, 1, 0), consumed(1, 2, 0)];
        assert!(settled_once(&once, &[1], &[]).is_ok());
        let twice = [consumed(1, 1, 0), consumed(1, 1, 1)];
        assert_eq!(
            settled_once(&twice, &[1], &[]).unwrap_err().invariant,
            "transaction_visible_once"
        );
        let rolled = [consumed(4, 1, 0)];
        assert_eq!(
            settled_once(&rolled, &[], &[4]).unwrap_err().invariant,
            "transaction_never_after_rollback"
        );
    }
}
