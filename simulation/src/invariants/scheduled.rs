//! Scheduled delivery: the timer state is the same on every replica that applied the same
//! entries (checked every step), and after healing every acknowledged scheduled message
//! reached every consumer exactly once, no message reached one consumer twice. That none is
//! visible before it is due, consumers check as they pull (`consumed_in_order`).

use std::collections::{BTreeMap, BTreeSet};

use super::{Checker, NodeView, Violation, violation};
use crate::messaging::CLIENT_HOSTS;
use crate::oracle::{Consumed, ScheduledAck};

/// Every step: each store's timer state keeps its invariants, and two replicas that applied up
/// to the same entry hold the same progress, pending count and timer log length.
pub(super) fn check_identical(
    checker: &mut Checker,
    nodes: &[NodeView<'_>],
) -> Result<(), Violation> {
    for node in nodes {
        let Some(store) = node.store else { continue };
        store.check_timer_invariants();
        let Some(applied) = store.last_applied() else {
            continue;
        };
        super::same_after_entry(
            &mut checker.timers_at,
            "timers_identical",
            "timer state",
            applied.index,
            node.id,
            store.timer_stats(),
        )?;
    }
    Ok(())
}

/// Whether `consumer` jumped over part of queue `queue_id` that retention had cut.
pub fn skips_queue(skipped: &[(u64, i32, i64, i64)], consumer: u64, queue_id: i32) -> bool {
    skipped
        .iter()
        .any(|(c, q, _, _)| *c == consumer && *q == queue_id)
}

/// After healing: every consumer received each acknowledged scheduled message once, and no
/// message at two places.
///
/// # Errors
/// The first message lost or received twice.
pub fn delivered_once(
    consumed: &[Consumed],
    scheduled: &[ScheduledAck],
    skipped: &[(u64, i32, i64, i64)],
) -> Result<(), Violation> {
    let mut at: BTreeMap<(u64, u64), BTreeSet<(i32, i64)>> = BTreeMap::new();
    for c in consumed {
        at.entry((c.consumer, c.id))
            .or_default()
            .insert((c.queue_id, c.queue_offset));
    }
    for ((consumer, id), places) in &at {
        if places.len() > 1 {
            return violation(
                "scheduled_delivered_once",
                format!("consumer {consumer:#x} received id {id} at {places:?}"),
            );
        }
    }
    for ack in scheduled {
        for k in 1..=CLIENT_HOSTS {
            let Some(places) = at.get(&(k << 16, ack.id)) else {
                if skips_queue(skipped, k << 16, ack.queue_id) {
                    continue; // Retention may have cut it before this consumer got there.
                }
                return violation(
                    "scheduled_delivered_once",
                    format!(
                        "consumer {:#x} never received scheduled id {} (queue {}, delay {} ms)",
                        k << 16,
                        ack.id,
                        ack.queue_id,
                        ack.delay_ms
                    ),
                );
            };
            if places.iter().any(|(queue, _)| *queue != ack.queue_id) {
                return violation(
                    "scheduled_delivered_once",
                    format!(
                        "scheduled id {} was answered for queue {} but delivered at {places:?}",
                        ack.id, ack.queue_id
                    ),
                );
            }
        }
    }
    Ok(())
}
