//! After healing: every acknowledged message is consumable at the queue and offset it was
//! acknowledged with, carrying its id, unless retention cut its queue past it, and each
//! producer's acknowledgements on one queue come in queue-offset order.

use std::collections::BTreeMap;

use dledger::{Ledger, MemDisk};
use protocol::message::StoredMessage;
use store::Store;

use super::{Violation, violation};
use crate::messaging::TOPIC;
use crate::oracle::{Consumed, SendAck, id_of};

/// Checks replica `id`'s `store` and `ledger` for every acknowledged send.
///
/// # Errors
/// The first acknowledged message missing, moved or out of order.
pub fn check(
    id: u64,
    ledger: &Ledger,
    store: &Store<MemDisk>,
    sends: &[SendAck],
) -> Result<(), Violation> {
    let mut last: BTreeMap<(u64, i32), i64> = BTreeMap::new();
    let mut slots: BTreeMap<(i32, i64), u64> = BTreeMap::new();
    for ack in sends {
        if let Some(before) = last.insert((ack.producer, ack.queue_id), ack.queue_offset)
            && before >= ack.queue_offset
        {
            return violation(
                "acked_consumable",
                format!(
                    "producer {:#x} was acknowledged queue {} offset {before}, then offset {} (id {})",
                    ack.producer, ack.queue_id, ack.queue_offset, ack.id
                ),
            );
        }
        if let Some(other) = slots.insert((ack.queue_id, ack.queue_offset), ack.id) {
            return violation(
                "acked_consumable",
                format!(
                    "ids {other} and {} were both acknowledged at queue {} offset {}",
                    ack.id, ack.queue_id, ack.queue_offset
                ),
            );
        }
        if ack.queue_offset < store.min_offset(TOPIC, ack.queue_id) {
            // Retention cut it (`retention_only_expired` checks it was old enough).
            continue;
        }
        let found = read_id(ledger, store, ack.queue_id, ack.queue_offset);
        if found != Ok(Some(ack.id)) {
            return violation(
                "acked_consumable",
                format!(
                    "node {id} has {found:?} at queue {} offset {} where id {} was acknowledged",
                    ack.queue_id, ack.queue_offset, ack.id
                ),
            );
        }
    }
    Ok(())
}

/// Checks that what consumers pulled is what replica `id` holds at each queue offset once the
/// cluster healed: a consumer never saw a message that was not committed (a later leader would
/// have put another one there), and two consumers never saw different messages at one offset.
///
/// # Errors
/// The first message pulled that the replica does not hold there.
pub fn check_consumed(
    id: u64,
    ledger: &Ledger,
    store: &Store<MemDisk>,
    consumed: &[Consumed],
) -> Result<(), Violation> {
    let mut slots: BTreeMap<(i32, i64), &Consumed> = BTreeMap::new();
    for c in consumed {
        if let Some(other) = slots.insert((c.queue_id, c.queue_offset), c)
            && other.id != c.id
        {
            return violation(
                "consumed_committed",
                format!(
                    "consumers {:#x} and {:#x} pulled ids {} and {} at queue {} offset {}",
                    other.consumer, c.consumer, other.id, c.id, c.queue_id, c.queue_offset
                ),
            );
        }
    }
    for ((queue_id, queue_offset), c) in slots {
        if queue_offset < store.min_offset(TOPIC, queue_id) {
            continue; // Cut by retention since.
        }
        let found = read_id(ledger, store, queue_id, queue_offset);
        if found != Ok(Some(c.id)) {
            return violation(
                "consumed_committed",
                format!(
                    "consumer {:#x} pulled id {} at queue {queue_id} offset {queue_offset}; node {id} has {found:?} there",
                    c.consumer, c.id
                ),
            );
        }
    }
    Ok(())
}

/// The id of the message at a queue offset, as a consumer would get it.
fn read_id(
    ledger: &Ledger,
    store: &Store<MemDisk>,
    queue_id: i32,
    queue_offset: i64,
) -> Result<Option<u64>, String> {
    let units = store
        .read_queue(TOPIC, queue_id, queue_offset, 1)
        .map_err(|e| format!("queue unreadable: {e}"))?;
    let Some(unit) = units.first() else {
        return Err("no unit".into());
    };
    let bytes = ledger
        .read_bytes(unit.commit_log_offset, unit.size as usize)
        .map_err(|e| format!("record unreadable: {e}"))?;
    let (message, _) = StoredMessage::decode(&bytes).map_err(|e| format!("undecodable: {e}"))?;
    if message.topic != TOPIC || message.queue_id != queue_id {
        return Err(format!(
            "record of {}:{} in queue {TOPIC}:{queue_id}",
            message.topic, message.queue_id
        ));
    }
    Ok(id_of(&message.body))
}

/// After healing: no message a broker refused because its disk was full was stored (consumers
/// pulled every queue to its end, so one stored would have been pulled).
///
/// # Errors
/// The first refused message a consumer pulled.
pub fn refused_not_stored(consumed: &[Consumed], refused: &[u64]) -> Result<(), Violation> {
    let refused: std::collections::BTreeSet<u64> = refused.iter().copied().collect();
    if let Some(c) = consumed.iter().find(|c| refused.contains(&c.id)) {
        return violation(
            "refused_not_stored",
            format!(
                "id {} was refused for a full disk, yet consumer {:#x} pulled it at queue {} offset {}",
                c.id, c.consumer, c.queue_id, c.queue_offset
            ),
        );
    }
    Ok(())
}
