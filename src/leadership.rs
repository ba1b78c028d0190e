//! Moving leadership on purpose: back to the preferred node once it has caught up
//! (`preferredLeaderId`), and away from a leader that is being stopped, so a rolling restart
//! costs no election timeout.

use std::time::{Duration, Instant};

use broker::Leadership;
use broker::handover::TRANSFER_LAG_ENTRIES_MAX;
use dledger::{Disk, Ledger, NodeId, Role};
use remoting::Transport;

/// How often the preferred-leader check runs.
pub const PREFERRED_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// How long a move to the preferred leader may take before it counts as failed.
pub const PREFERRED_TRANSFER_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause after a failed move to the preferred leader.
pub const PREFERRED_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The follower to hand leadership to: `preferred` when it trails by at most
/// [`TRANSFER_LAG_ENTRIES_MAX`] entries (under load no follower has matched the very last
/// entry at any given moment; the transfer waits for that), else the follower with the highest
/// matched index (lowest id first on a tie); `None` when this replica does not lead or no
/// follower has matched anything.
pub fn successor(ledger: &Ledger, preferred: Option<NodeId>) -> Option<NodeId> {
    let status = ledger.status();
    if status.role != Role::Leader {
        return None;
    }
    let last = status.last_log_index?;
    if let Some(p) = preferred
        && p != status.node_id
        && status
            .matched
            .get(&p)
            .copied()
            .flatten()
            .is_some_and(|m| last.saturating_sub(m) <= TRANSFER_LAG_ENTRIES_MAX)
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

/// Runs forever: whenever this replica leads, `preferred` is another node, and that node trails
/// by at most [`broker::handover::TRANSFER_LAG_ENTRIES_MAX`] entries, hands leadership to it
/// (sends are held meanwhile, see [`broker::handover`]). After a failed transfer it waits
/// [`PREFERRED_RETRY_AFTER`] before trying again, so a preferred node that cannot take over
/// does not cost the group a pause every half second.
pub async fn follow_preferred<D: Disk, T: Transport>(
    leadership: Leadership<D, T>,
    preferred: NodeId,
) {
    loop {
        tokio::time::sleep(PREFERRED_CHECK_INTERVAL).await;
        let status = leadership.ledger().status();
        if status.role != Role::Leader || status.node_id == preferred {
            continue;
        }
        let Some(last) = status.last_log_index else {
            continue;
        };
        let close = status
            .matched
            .get(&preferred)
            .copied()
            .flatten()
            .is_some_and(|m| last.saturating_sub(m) <= TRANSFER_LAG_ENTRIES_MAX);
        if !close {
            continue;
        }
        tracing::info!(to = preferred, "handing leadership to the preferred leader");
        if let Err(err) = leadership
            .transfer(preferred, PREFERRED_TRANSFER_TIMEOUT, true)
            .await
        {
            tracing::warn!(cause = %err, to = preferred, "transfer to the preferred leader failed");
            tokio::time::sleep(PREFERRED_RETRY_AFTER).await;
        }
    }
}

/// If this replica leads, hands leadership to the best follower ([`successor`]) and waits, up
/// to `timeout` in all, until another replica leads and the name servers list it as the
/// master, so that sends held here are answered with a route to it before this replica stops
/// serving. Returns the node it handed to, if any.
pub async fn step_down<D: Disk, T: Transport>(
    leadership: &Leadership<D, T>,
    preferred: Option<NodeId>,
    timeout: Duration,
) -> Option<NodeId> {
    let started = Instant::now();
    let to = successor(leadership.ledger(), preferred)?;
    tracing::info!(to, "leader stopping: handing leadership over first");
    // The successor may trail (it is the best there is): transfer anyway, rather than leave
    // the group to notice the leader's absence after an election timeout. The broker logs the
    // outcome.
    let handed = leadership.transfer(to, timeout, false).await.is_ok();
    if leadership.ledger().status().role == Role::Leader {
        return None;
    }
    // Even when another replica than `to` won, sends held here wait for it to be listed.
    let left = timeout.saturating_sub(started.elapsed());
    if leadership.await_master_elsewhere(left).await.is_none() {
        tracing::warn!(
            ?timeout,
            "the name servers list no new master yet; stopping anyway"
        );
    }
    handed.then_some(to)
}
