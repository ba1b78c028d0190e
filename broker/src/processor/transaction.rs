//! END_TRANSACTION (37): a producer commits or rolls back a half message, on its own or in
//! answer to a check (FEATURES-SPEC.md §4.5). The outcome, and for a commit the message for its
//! real topic, go through the log in one entry; the store applies only the first outcome of a
//! half message, so a repeated or late answer changes nothing (`crate::transactions`).

use dledger::Disk;
use protocol::RemotingCommand;
use protocol::code::response;
use protocol::header::{CommandHeader, EndTransactionRequestHeader};
use protocol::message::{RecordView, property, system_topic};
use remoting::Transport;
use store::transactions::{Action, HalfState, Outcome};

use super::send::store_records;
use super::{Answer, Processor, Refusal, ok};
use crate::transactions::make_committed;

/// `commitOrRollback` of a commit.
const COMMIT: i32 = 8;
/// `commitOrRollback` of a rollback.
const ROLLBACK: i32 = 12;

pub(super) struct EndTransaction {
    header: EndTransactionRequestHeader,
}

impl EndTransaction {
    pub(super) fn parse(req: &RemotingCommand) -> Result<EndTransaction, Refusal> {
        Ok(EndTransaction {
            header: EndTransactionRequestHeader::from_ext(&req.ext_fields)?,
        })
    }

    pub(super) async fn apply<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        req: &RemotingCommand,
    ) -> Answer {
        let h = self.header;
        if !p
            .shared
            .serving_writes
            .load(std::sync::atomic::Ordering::Acquire)
        {
            // RocketMQ's slave answer; the leader's check settles the transaction.
            let mut refusal = p.not_master();
            refusal.code = response::SLAVE_NOT_AVAILABLE;
            return Err(refusal);
        }
        let action = match h.commit_or_rollback {
            COMMIT => Action::Commit,
            ROLLBACK => Action::Rollback,
            other => {
                // 0 is "unknown": the producer does not know yet, the check asks again. RocketMQ
                // does nothing and answers nothing, even to a two-way request.
                tracing::info!(
                    group = %h.producer_group,
                    msg_id = %h.msg_id,
                    commit_or_rollback = other,
                    from_check = h.from_transaction_check.unwrap_or(false),
                    "END_TRANSACTION without an outcome: nothing done"
                );
                return Err(Refusal::unanswered());
            }
        };
        let refuse = |remark: String| {
            tracing::warn!(group = %h.producer_group, msg_id = %h.msg_id, %remark, "END_TRANSACTION refused");
            Refusal::new(response::SYSTEM_ERROR, remark)
        };
        let half_record = u64::try_from(h.commit_log_offset)
            .ok()
            .filter(|o| *o < p.shared.store.applied_end())
            .and_then(|o| p.read_record(o, None).ok())
            .unwrap_or_default();
        let Ok(half) = RecordView::parse(&half_record) else {
            return Err(refuse(format!(
                "Find prepared transaction message failed: no message at commit log offset {}",
                h.commit_log_offset
            )));
        };
        if half.topic != system_topic::TRANS_HALF {
            return Err(refuse(format!(
                "the message at commit log offset {} is not a half message (topic {})",
                h.commit_log_offset, half.topic
            )));
        }
        let group = half.property(property::PGROUP).unwrap_or("");
        if group != h.producer_group {
            return Err(refuse(format!(
                "The producer group wrong: the half message belongs to {group:?}, not {:?}",
                h.producer_group
            )));
        }
        // The half log says which half message a queue offset is (a stored record's queue
        // offset field is only filled in when it is read).
        let half_offset = u64::try_from(h.tran_state_table_offset).unwrap_or(u64::MAX);
        let unit = p
            .shared
            .store
            .half_unit(half_offset)
            .map_err(|e| refuse(format!("the half log cannot be read: {e}")))?;
        let Some(unit) = unit.filter(|u| u.commit_log_offset == half.commit_log_offset as u64)
        else {
            return Err(refuse(format!(
                "The transaction state table offset wrong: half message {} is not the one at commit log offset {}",
                h.tran_state_table_offset, h.commit_log_offset
            )));
        };
        let now = p.shared.config.clock.now_ms();
        if !h.from_transaction_check.unwrap_or(false)
            && let Some(secs) = half
                .property(property::CHECK_IMMUNITY_TIME_IN_SECONDS)
                .and_then(|s| s.trim().parse::<i64>().ok())
        {
            let timeout_ms = p.shared.config.transactions.timeout.as_millis() as i64;
            let immunity_ms = secs.saturating_mul(1000).max(timeout_ms);
            if now - half.store_timestamp > immunity_ms {
                return Err(Refusal::new(
                    response::ILLEGAL_OPERATION,
                    format!(
                        "the half message's immunity of {secs} s is over: its check decides the transaction"
                    ),
                ));
            }
        }
        if unit.state != HalfState::Pending {
            // Decided before (a retry, an answer to a check after a commit): nothing changes.
            tracing::debug!(half_offset, state = ?unit.state, ?action, "END_TRANSACTION for a decided half message");
            return Ok(ok(req));
        }
        let mut records = Vec::new();
        if action == Action::Commit {
            let committed = make_committed(&half, now, p.shared.config.advertised_addr)
                .ok_or_else(|| refuse("the half message has no REAL_TOPIC or REAL_QID".into()))?;
            committed.encode(&mut records).map_err(|e| {
                refuse(format!(
                    "the committed message cannot be encoded: {}",
                    e.reason
                ))
            })?;
        }
        let outcome = Outcome {
            half_offset,
            action,
            expected_checks: 0,
            at_ms: now,
            record: (action == Action::Commit).then_some(0),
        };
        #[cfg(feature = "mutants")]
        let without_outcome = p.shared.config.mutants.commit_without_outcome && !records.is_empty();
        #[cfg(not(feature = "mutants"))]
        let without_outcome = false;
        let outcomes = if without_outcome {
            Vec::new()
        } else {
            vec![outcome]
        };
        store_records(p, records, outcomes).await?;
        Ok(ok(req))
    }
}
