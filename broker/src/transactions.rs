//! Transactional messages (FEATURES-SPEC.md §4): half messages, their commit or rollback, and
//! the leader's check-back of those left without an answer.
//!
//! - A send with `TRAN_MSG=true` is stored as a half message in `RMQ_SYS_TRANS_HALF_TOPIC`
//!   queue 0 ([`make_half`]), invisible to consumers of its topic, which it keeps in
//!   `REAL_TOPIC`/`REAL_QID`.
//! - END_TRANSACTION (`crate::processor`) writes a commit's message for its real queue
//!   ([`make_committed`]) and the outcome in one `Transactions` entry; a rollback writes only the
//!   outcome. The store applies the first outcome of a half message and ignores any later one
//!   (`store::transactions`), so a retried, late or repeated answer changes nothing.
//! - The check service runs on the replica that takes writes. Every
//!   `transactionCheckInterval` it walks the half log from its first pending message, and for
//!   each one older than its immunity (`CHECK_IMMUNITY_TIME_IN_SECONDS`, else
//!   `transactionTimeOut`) and not checked within the interval, it commits a `Check` outcome
//!   (the count goes up through the log, so a new leader goes on from it) and then sends
//!   CHECK_TRANSACTION_STATE to a producer of the message's group; after `transactionCheckMax`
//!   checks it gives the message up to `TRANS_CHECK_MAX_TIME_TOPIC` instead.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dledger::Disk;
use protocol::RemotingCommand;
use protocol::body::{TopicConfig, perm};
use protocol::code::request;
use protocol::header::{CheckTransactionStateRequestHeader, CommandHeader};
use protocol::message::{
    RecordView, StoredMessage, offset_msg_id, property, sys_flag, system_topic,
};
use remoting::Transport;
use store::transactions::{Action, HalfState, HalfUnit, Outcome};

use crate::Shared;
use crate::limits::{
    TRANSACTION_CHECK_TICK, TRANSACTION_OUTCOMES_PER_ENTRY_MAX, TRANSACTION_SCAN_UNITS_MAX,
};
use crate::writer::NotStored;

/// The check service's settings (broker.conf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionConfig {
    /// `transactionTimeOut`: a half message younger than this is not checked (RocketMQ: 6 s).
    pub timeout: Duration,
    /// `transactionCheckInterval`: time between check passes, and between two checks of one
    /// message (RocketMQ: 30 s).
    pub check_interval: Duration,
    /// `transactionCheckMax`: checks before a message is given up (RocketMQ: 15).
    pub check_max: u32,
    /// `rejectTransactionMessage`: half messages are refused.
    pub reject: bool,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        TransactionConfig {
            timeout: Duration::from_secs(6),
            check_interval: Duration::from_secs(30),
            check_max: 15,
            reject: false,
        }
    }
}

/// Whether a send's properties make it a half message (`TRAN_MSG`, read as Java's
/// `Boolean.parseBoolean`).
pub fn is_half(properties: &protocol::message::Properties) -> bool {
    properties
        .get(property::TRAN_MSG)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Turns a send's record into its half message: topic and queue move to `REAL_TOPIC`/`REAL_QID`,
/// the transaction id is its `UNIQ_KEY`, and the transaction bits of the sys flag are cleared
/// (RocketMQ's `parseHalfMessageInner`).
pub fn make_half(record: &mut StoredMessage, uniq_key: &str) {
    record
        .properties
        .set(property::REAL_TOPIC, record.topic.clone());
    record
        .properties
        .set(property::REAL_QID, record.queue_id.to_string());
    record.properties.set(property::TRANSACTION_ID, uniq_key);
    record.topic = system_topic::TRANS_HALF.to_string();
    record.queue_id = 0;
    record.sys_flag &= !sys_flag::TRANSACTION_MASK;
}

/// The record a commit writes for half message `half` (as read from the CommitLog): its real
/// topic and queue, the commit's transaction bits, and `preparedTransactionOffset` naming the
/// half message; body, body CRC and properties text are the half's bytes as stored (RocketMQ's
/// `endMessageTransaction`), so nothing is parsed or re-encoded but the fixed fields. `None` if
/// the half message lacks its real topic or queue.
pub fn make_committed<'a>(
    half: &RecordView<'a>,
    now_ms: i64,
    store_host: std::net::SocketAddr,
) -> Option<RecordView<'a>> {
    let topic = half.property(property::REAL_TOPIC)?;
    let queue_id: i32 = half.property(property::REAL_QID)?.trim().parse().ok()?;
    Some(RecordView {
        size: 0,
        topic,
        queue_id,
        queue_offset: 0,
        commit_log_offset: 0,
        sys_flag: (half.sys_flag & !sys_flag::TRANSACTION_MASK) | sys_flag::TRANSACTION_COMMIT,
        store_timestamp: now_ms,
        store_host,
        prepared_transaction_offset: half.commit_log_offset,
        ..half.clone()
    })
}

/// Creates the half topic (one queue) if it does not exist yet, through the log; RocketMQ
/// creates it at start, raftmq on first use.
pub(crate) async fn ensure_topic<D: Disk, T: Transport>(
    shared: &Shared<D, T>,
    name: &str,
) -> Result<(), String> {
    if shared.store.topic(name).is_some() {
        return Ok(());
    }
    shared
        .create_topic(TopicConfig::new(name, 1, perm::READ | perm::WRITE))
        .await
        .map_err(|e| format!("cannot create topic {name}: {e}"))
}

/// Proposes `outcomes` (with `records`, each outcome's `record` its place among them) through
/// the writer and waits until they are applied.
pub(crate) async fn write_outcomes<D: Disk, T: Transport>(
    shared: &Shared<D, T>,
    records: Vec<u8>,
    outcomes: Vec<Outcome>,
) -> Result<(), NotStored> {
    let Some(landed) = crate::writer::submit(shared, records, outcomes).await else {
        return Err(NotStored::Failed("the broker is shutting down".into()));
    };
    match landed.await {
        Ok(result) => result.map(|_| ()),
        Err(_) => Err(NotStored::Failed("the writer stopped".into())),
    }
}

/// What the check service last saw, for `/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Passes run while taking writes.
    pub passes: u64,
    /// Half messages found waiting for an answer in the last pass.
    pub waiting: u64,
}

/// The check service: see the module doc.
pub(crate) async fn run<D: Disk, T: Transport>(shared: Arc<Shared<D, T>>) {
    let mut next_pass = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(TRANSACTION_CHECK_TICK.min(shared.config.transactions.check_interval))
            .await;
        if !shared.takes_writes() || tokio::time::Instant::now() < next_pass {
            continue;
        }
        next_pass = tokio::time::Instant::now() + shared.config.transactions.check_interval;
        if let Err(reason) = pass(&shared).await {
            tracing::warn!(%reason, "transaction check pass failed; the next pass tries again");
        }
    }
}

/// One half message the pass decided to check, with the record to send.
struct ToCheck {
    half_offset: u64,
    unit: HalfUnit,
    record: StoredMessage,
}

/// One check pass.
async fn pass<D: Disk, T: Transport>(shared: &Arc<Shared<D, T>>) -> Result<(), String> {
    let config = &shared.config.transactions;
    let now = shared.config.clock.now_ms();
    let (first, end) = shared.store.half_window();
    let timeout_ms = config.timeout.as_millis() as i64;
    let interval_ms = config.check_interval.as_millis() as i64;
    let mut outcomes = Vec::new();
    let mut discard_records = Vec::new();
    let mut to_check = Vec::new();
    let mut waiting = 0;
    let mut at = first;
    let mut scanned = 0;
    'scan: while at < end && scanned < TRANSACTION_SCAN_UNITS_MAX {
        let units = shared
            .store
            .half_units(at, 1024)
            .map_err(|e| e.to_string())?;
        let Some(&(last, _)) = units.last() else {
            break;
        };
        at = last + 1;
        for (half_offset, unit) in units {
            scanned += 1;
            if unit.state != HalfState::Pending {
                continue;
            }
            waiting += 1;
            let immunity_ms = if unit.immunity_secs >= 0 {
                i64::from(unit.immunity_secs) * 1000
            } else {
                timeout_ms
            };
            let age = now - unit.store_ms;
            if age < immunity_ms {
                if unit.immunity_secs < 0 {
                    // Everything after it was stored later: too young as well.
                    break 'scan;
                }
                continue;
            }
            if unit.last_check_ms > 0 && now - unit.last_check_ms < interval_ms {
                continue;
            }
            if outcomes.len() >= TRANSACTION_OUTCOMES_PER_ENTRY_MAX {
                break 'scan;
            }
            let record = shared
                .read_record(unit.commit_log_offset, Some(unit.size))
                .ok()
                .and_then(|r| StoredMessage::decode(&r).ok())
                .map(|(m, _)| m);
            match record {
                Some(record) if unit.checks < config.check_max => {
                    outcomes.push(Outcome {
                        half_offset,
                        action: Action::Check,
                        expected_checks: unit.checks,
                        at_ms: now,
                        record: None,
                    });
                    to_check.push(ToCheck {
                        half_offset,
                        unit,
                        record,
                    });
                }
                record => {
                    // Checked enough times, or its record is gone (purged): given up.
                    let copy = record.map(|half| given_up(shared, half, unit.checks, now));
                    let place = match copy {
                        Some(copy) => {
                            let place = discard_records.len() as u32;
                            discard_records.push(copy);
                            Some(place)
                        }
                        None => None,
                    };
                    outcomes.push(Outcome {
                        half_offset,
                        action: Action::Discard,
                        expected_checks: unit.checks,
                        at_ms: now,
                        record: place,
                    });
                }
            }
        }
    }
    {
        let mut report = shared.transaction_checks.lock().expect("check report");
        report.passes += 1;
        report.waiting = waiting;
    }
    if outcomes.is_empty() {
        return Ok(());
    }
    let mut records = Vec::new();
    if !discard_records.is_empty() {
        ensure_topic(shared, system_topic::TRANS_CHECK_MAX_TIME).await?;
        for copy in &discard_records {
            copy.encode(&mut records).map_err(|e| e.reason)?;
        }
    }
    let discards = outcomes
        .iter()
        .filter(|o| o.action == Action::Discard)
        .count();
    write_outcomes(shared, records, outcomes)
        .await
        .map_err(|e| format!("outcomes not committed: {e:?}"))?;
    if discards > 0 {
        tracing::warn!(
            discards,
            max = config.check_max,
            "half messages given up after too many checks"
        );
    }
    for check in to_check {
        send_check(shared, check);
    }
    Ok(())
}

/// The copy of a half message given up, for `TRANS_CHECK_MAX_TIME_TOPIC` (never delivered).
fn given_up<D: Disk, T: Transport>(
    shared: &Shared<D, T>,
    mut half: StoredMessage,
    checks: u32,
    now_ms: i64,
) -> StoredMessage {
    half.properties
        .set(property::TRANSACTION_CHECK_TIMES, checks.to_string());
    StoredMessage {
        topic: system_topic::TRANS_CHECK_MAX_TIME.to_string(),
        queue_id: 0,
        queue_offset: 0,
        commit_log_offset: 0,
        store_timestamp: now_ms,
        store_host: shared.config.advertised_addr,
        ..half
    }
}

/// Sends CHECK_TRANSACTION_STATE for a half message whose check committed (if the check
/// applied: a commit may have come first) to a producer of its group.
fn send_check<D: Disk, T: Transport>(shared: &Shared<D, T>, check: ToCheck) {
    match shared.store.half_unit(check.half_offset) {
        Ok(Some(unit))
            if unit.state == HalfState::Pending && unit.checks == check.unit.checks + 1 => {}
        _ => return,
    }
    let ToCheck {
        half_offset,
        unit,
        mut record,
    } = check;
    let Some(group) = record.properties.get(property::PGROUP).map(str::to_string) else {
        tracing::warn!(
            half_offset,
            "half message without a producer group: not checked"
        );
        return;
    };
    let uniq = record
        .properties
        .get(property::UNIQ_KEY)
        .map(str::to_string);
    let offset_id = offset_msg_id(record.store_host, record.commit_log_offset);
    let header = CheckTransactionStateRequestHeader {
        topic: Some(record.topic.clone()),
        tran_state_table_offset: half_offset as i64,
        commit_log_offset: unit.commit_log_offset as i64,
        msg_id: uniq.clone(),
        transaction_id: uniq,
        offset_msg_id: Some(offset_id),
        bname: Some(shared.config.broker_name.clone()),
    };
    // The body is the half message as its producer sent it: real topic and queue.
    if let Some(topic) = record.properties.get(property::REAL_TOPIC) {
        record.topic = topic.to_string();
    }
    if let Some(queue_id) = record
        .properties
        .get(property::REAL_QID)
        .and_then(|q| q.trim().parse().ok())
    {
        record.queue_id = queue_id;
    }
    record.properties.set(
        property::TRANSACTION_CHECK_TIMES,
        (unit.checks + 1).to_string(),
    );
    let mut body = Vec::with_capacity(record.encoded_len());
    if let Err(err) = record.encode(&mut body) {
        tracing::warn!(half_offset, reason = %err.reason, "half message cannot be encoded for its check");
        return;
    }
    let peer = shared
        .clients
        .lock()
        .expect("clients")
        .producer_peer(&group);
    #[cfg(feature = "mutants")]
    let peer = peer.filter(|_| !shared.config.mutants.checks_unsent);
    let Some(peer) = peer else {
        tracing::info!(half_offset, %group, "no producer of the group to check: the check counts all the same");
        return;
    };
    let command = RemotingCommand::request(request::CHECK_TRANSACTION_STATE, header.to_ext())
        .with_body(bytes::Bytes::from(body));
    if peer.send_oneway(command) {
        shared
            .metrics
            .transaction_checks_sent
            .fetch_add(1, Ordering::Relaxed);
    } else {
        tracing::debug!(half_offset, %group, peer = %peer.addr, "check not sent: the connection is gone");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;
    use protocol::message::Properties;

    use super::*;

    fn sent() -> StoredMessage {
        let mut properties = Properties::default();
        properties.set(property::TRAN_MSG, "true");
        properties.set(property::PGROUP, "pg");
        properties.set(property::UNIQ_KEY, "U1");
        StoredMessage {
            topic: "T".into(),
            queue_id: 3,
            flag: 7,
            queue_offset: 0,
            commit_log_offset: 0,
            sys_flag: sys_flag::TRANSACTION_PREPARED | sys_flag::MULTI_TAGS,
            born_timestamp: 1,
            born_host: "127.0.0.1:1".parse().unwrap(),
            store_timestamp: 2,
            store_host: "127.0.0.1:2".parse().unwrap(),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: Bytes::from_static(b"order 42"),
            properties,
        }
    }

    #[test]
    fn a_half_message_keeps_its_topic_in_properties_and_a_commit_restores_it() {
        let mut half = sent();
        assert!(is_half(&half.properties));
        make_half(&mut half, "U1");
        assert_eq!(half.topic, system_topic::TRANS_HALF);
        assert_eq!(half.queue_id, 0);
        assert_eq!(
            half.sys_flag,
            sys_flag::MULTI_TAGS,
            "transaction bits cleared"
        );
        assert_eq!(half.properties.get(property::REAL_TOPIC), Some("T"));
        assert_eq!(half.properties.get(property::REAL_QID), Some("3"));
        assert_eq!(half.properties.get(property::TRANSACTION_ID), Some("U1"));
        half.commit_log_offset = 4096;
        let mut half_record = Vec::new();
        half.encode(&mut half_record).unwrap();
        let view = RecordView::parse(&half_record).unwrap();
        let mut committed_record = Vec::new();
        make_committed(&view, 99, "127.0.0.1:3".parse().unwrap())
            .unwrap()
            .encode(&mut committed_record)
            .unwrap();
        let (committed, size) = StoredMessage::decode(&committed_record).unwrap();
        assert_eq!(size, committed_record.len());
        assert!(RecordView::parse(&committed_record).unwrap().body_crc_ok());
        assert_eq!((committed.topic.as_str(), committed.queue_id), ("T", 3));
        assert_eq!(
            committed.sys_flag,
            sys_flag::MULTI_TAGS | sys_flag::TRANSACTION_COMMIT
        );
        assert_eq!(committed.prepared_transaction_offset, 4096);
        assert_eq!(committed.store_timestamp, 99);
        assert_eq!(committed.store_host, "127.0.0.1:3".parse().unwrap());
        assert_eq!(committed.body, half.body);
        assert_eq!(committed.flag, 7);
        assert_eq!(
            (committed.born_timestamp, committed.born_host),
            (half.born_timestamp, half.born_host)
        );
        assert_eq!(
            committed.properties, half.properties,
            "the half's properties as stored, REAL_TOPIC and TRAN_MSG included"
        );
        let mut broken = half.clone();
        broken.properties.remove(property::REAL_QID);
        let mut broken_record = Vec::new();
        broken.encode(&mut broken_record).unwrap();
        let broken_view = RecordView::parse(&broken_record).unwrap();
        assert!(make_committed(&broken_view, 99, "127.0.0.1:3".parse().unwrap()).is_none());
        let mut plain = sent();
        plain.properties.set(property::TRAN_MSG, "false");
        assert!(!is_half(&plain.properties));
    }
}
