//! Moving leadership on purpose: back to the preferred node once it has caught up
//! (`preferredLeaderId`), and away from a leader that is being stopped, so a rolling restart
//! costs no election timeout.

use std::time::Duration;

use dledger::{Ledger, NodeId, Role};

/// How often the preferred-leader check runs.
pub const PREFERRED_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// The follower to hand leadership to: `preferred` when it is fully caught up, else the
/// follower with the highest matched index (lowest id first on a tie); `None` when this replica
/// does not lead or no follower has matched anything.
pub fn successor(ledger: &Ledger, preferred: Option<NodeId>) -> Option<NodeId> {
    let status = ledger.status();
    if status.role != Role::Leader {
        return None;
    }
    let last = status.last_log_index?;
    if let Some(p) = preferred
        && p != status.node_id
        && status.matched.get(&p).copied().flatten() == Some(last)
    {
        return Some(p);
    }
    status
        .matched
        .iter()
        .filter(|(id, _)| **id != status.node_id)
        .filter_map(|(id, matched)| matched.map(|m| (m, *id)))
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, id)| id)
}

/// Runs forever: whenever this replica leads, `preferred` is another node, and that node has
/// matched the whole log, asks Raft to hand leadership to it.
pub async fn follow_preferred(ledger: std::sync::Arc<Ledger>, preferred: NodeId) {
    loop {
        tokio::time::sleep(PREFERRED_CHECK_INTERVAL).await;
        let status = ledger.status();
        if status.role != Role::Leader || status.node_id == preferred {
            continue;
        }
        let caught_up = status.last_log_index.is_some()
            && status.matched.get(&preferred).copied().flatten() == status.last_log_index;
        if caught_up {
            tracing::info!(to = preferred, "handing leadership to the preferred leader");
            if let Err(err) = ledger.transfer_leadership(preferred).await {
                tracing::warn!(cause = %err, "transfer to the preferred leader failed");
            }
        }
    }
}

/// If this replica leads, hands leadership to the best follower and waits (up to `timeout`)
/// until it no longer leads. Returns the node it handed to, if any.
pub async fn step_down(
    ledger: &Ledger,
    preferred: Option<NodeId>,
    timeout: Duration,
) -> Option<NodeId> {
    let to = successor(ledger, preferred)?;
    tracing::info!(to, "leader stopping: handing leadership over first");
    if let Err(err) = ledger.transfer_leadership(to).await {
        tracing::warn!(cause = %err, "leadership transfer before stopping failed");
        return None;
    }
    let mut roles = ledger.watch_role();
    let left = tokio::time::timeout(timeout, roles.wait_for(|r| r.role != Role::Leader)).await;
    if left.is_err() {
        tracing::warn!(
            to,
            ?timeout,
            "still leading after the transfer; stopping anyway"
        );
    }
    Some(to)
}
