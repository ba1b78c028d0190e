//! Retention: every replica that applied the same entries cut the same prefix (checked every
//! step), and no replica's queue lost a message younger than the retention period (checked
//! every step, as min offsets move). After healing, every acknowledged message at or past its
//! queue's min offset is consumable (`acked_consumable`).

use super::{Checker, NodeView, Violation, violation};
use crate::messaging::{QUEUES, TOPIC};
use crate::oracle::SendAck;

/// Every step: two replicas that applied up to the same entry hold the same retention view,
/// once each applied the entry that set its floor (a replica restored from a snapshot has the
/// floor before it replays that entry).
pub(super) fn check_identical(
    checker: &mut Checker,
    nodes: &[NodeView<'_>],
) -> Result<(), Violation> {
    for node in nodes {
        let Some(store) = node.store else { continue };
        let Some(applied) = store.last_applied() else {
            continue;
        };
        let view = store.retention();
        if view.purged_through.is_some() && view.floor_entry.is_none() {
            continue;
        }
        super::same_after_entry(
            &mut checker.retention_at,
            "retention_identical",
            "retention",
            applied.index,
            node.id,
            view,
        )?;
    }
    Ok(())
}

/// Every step: when a queue's min offset moves up on a replica, every acknowledged message it
/// passes was sent at least `reserved_ms` ago (it was stored no earlier, and its segment was
/// last written no earlier than that).
pub(super) fn check_only_expired(
    checker: &mut Checker,
    nodes: &[NodeView<'_>],
    sends: &[SendAck],
    reserved_ms: u64,
    now_ms: i64,
) -> Result<(), Violation> {
    for node in nodes {
        let Some(store) = node.store else { continue };
        for queue_id in 0..QUEUES {
            let min = store.min_offset(TOPIC, queue_id);
            let key = (node.id, node.incarnation, queue_id);
            let last = checker.mins_seen.get(&key).copied().unwrap_or(0);
            if min <= last {
                continue;
            }
            for ack in sends
                .iter()
                .filter(|a| a.queue_id == queue_id && (last..min).contains(&a.queue_offset))
            {
                if ack.sent_ms.saturating_add(reserved_ms as i64) > now_ms {
                    return violation(
                        "retention_only_expired",
                        format!(
                            "node {} cut queue {queue_id} to offset {min} at {now_ms}, past id {} \
                             at offset {} sent at {} (retention {reserved_ms} ms)",
                            node.id, ack.id, ack.queue_offset, ack.sent_ms
                        ),
                    );
                }
            }
            checker.mins_seen.insert(key, min);
        }
    }
    Ok(())
}
