//! Transactional sends (Java's `TransactionMQProducer`): a half message is stored invisible,
//! the local transaction runs, then the producer commits or rolls it back with END_TRANSACTION;
//! when the answer is unknown or lost, the broker asks a producer of the group
//! (CHECK_TRANSACTION_STATE) and the [`TransactionChecker`] answers.

use std::sync::Arc;

use protocol::code::request;
use protocol::header::{CheckTransactionStateRequestHeader, EndTransactionRequestHeader};
use protocol::message::{StoredMessage, decode_offset_msg_id, property};
use protocol::{CommandHeader, RemotingCommand};
use remoting::Transport;

use crate::error::ClientError;
use crate::instance::Instance;
use crate::message::{Message, SendResult, SendStatus};
use crate::producer::Producer;

/// What became of a local transaction (Java's `LocalTransactionState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalTransactionState {
    /// Commit: the message becomes visible.
    Commit,
    /// Roll back: the message is never delivered.
    Rollback,
    /// Not known yet: the broker will ask again.
    Unknown,
}

impl LocalTransactionState {
    /// END_TRANSACTION's `commitOrRollback`: 8, 12, or 0.
    pub fn code(self) -> i32 {
        match self {
            LocalTransactionState::Commit => 8,
            LocalTransactionState::Rollback => 12,
            LocalTransactionState::Unknown => 0,
        }
    }
}

/// Answers the broker's checks: what became of the transaction of a half message (the message
/// as sent: its real topic and queue, its properties). Java's
/// `TransactionListener.checkLocalTransaction`.
pub type TransactionChecker = Arc<dyn Fn(&StoredMessage) -> LocalTransactionState + Send + Sync>;

/// A transactional send's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionSendResult {
    /// The half message's send.
    pub send: SendResult,
    /// What the local transaction answered (and the producer told the broker).
    pub state: LocalTransactionState,
}

impl<T: Transport> Producer<T> {
    /// Sends `message` as a half message, runs `local` with the send's result, then tells the
    /// broker its answer (oneway, as Java does). A half message not stored `SEND_OK` is rolled
    /// back without running `local`. If the answer is [`LocalTransactionState::Unknown`] or
    /// is lost, the broker asks this producer group's checker later.
    ///
    /// # Errors
    /// Those of [`Producer::send`] for the half message; a delayed message (transactions cannot
    /// be delayed). Telling the broker the answer is not an error when it fails: the check
    /// settles it.
    pub async fn send_in_transaction<F, Fut>(
        &self,
        mut message: Message,
        local: F,
    ) -> Result<TransactionSendResult, ClientError>
    where
        F: FnOnce(&SendResult) -> Fut,
        Fut: std::future::Future<Output = LocalTransactionState>,
    {
        if message.is_scheduled() {
            return Err(ClientError::InvalidMessage {
                topic: message.topic,
                reason: "a transactional message cannot be delayed",
            });
        }
        message.properties.set(property::TRAN_MSG, "true");
        message
            .properties
            .set(property::PGROUP, self.group().to_string());
        let send = self.send_half(message).await?;
        let state = if send.status == SendStatus::SendOk {
            local(&send).await
        } else {
            LocalTransactionState::Rollback
        };
        if let Err(err) = self.end_transaction(&send, state).await {
            tracing::warn!(msg_id = %send.msg_id, ?state, cause = %err, "END_TRANSACTION not sent: the broker's check will settle it");
        }
        Ok(TransactionSendResult { send, state })
    }

    /// END_TRANSACTION for a half message's send, to its broker group's master.
    async fn end_transaction(
        &self,
        send: &SendResult,
        state: LocalTransactionState,
    ) -> Result<(), ClientError> {
        let instance = self.instance();
        let addr = instance
            .master_addr(&send.queue.broker_name)
            .ok_or_else(|| ClientError::NoBrokerAddress {
                broker_name: send.queue.broker_name.clone(),
            })?;
        let (_, commit_log_offset) =
            decode_offset_msg_id(&send.offset_msg_id).map_err(|_| ClientError::InvalidMessage {
                topic: send.queue.topic.clone(),
                reason: "the half message's offset id does not decode",
            })?;
        let header = EndTransactionRequestHeader {
            topic: Some(send.queue.topic.clone()),
            producer_group: self.group().to_string(),
            tran_state_table_offset: send.queue_offset,
            commit_log_offset,
            commit_or_rollback: state.code(),
            from_transaction_check: Some(false),
            msg_id: send.msg_id.clone(),
            transaction_id: Some(send.msg_id.clone()),
            bname: Some(send.queue.broker_name.clone()),
        };
        let request = RemotingCommand::request(request::END_TRANSACTION, header.to_ext());
        instance.oneway(&addr, request).await
    }
}

/// Answers a CHECK_TRANSACTION_STATE from the broker at `addr` with `checker`'s verdict, on the
/// same connection (Java's `processTransactionState`).
pub(crate) async fn answer_check<T: Transport>(
    instance: Arc<Instance<T>>,
    checker: TransactionChecker,
    group: String,
    addr: String,
    command: RemotingCommand,
) {
    let header = match CheckTransactionStateRequestHeader::from_ext(&command.ext_fields) {
        Ok(header) => header,
        Err(err) => {
            tracing::warn!(broker = %addr, cause = %err, "bad CHECK_TRANSACTION_STATE header: ignored");
            return;
        }
    };
    let message = match StoredMessage::decode(&command.body) {
        Ok((message, _)) => message,
        Err(err) => {
            tracing::warn!(broker = %addr, cause = %err, "bad CHECK_TRANSACTION_STATE body: ignored");
            return;
        }
    };
    if message.properties.get(property::PGROUP) != Some(group.as_str()) {
        tracing::warn!(broker = %addr, group, "check for another producer group: ignored");
        return;
    }
    let state = checker(&message);
    let msg_id = message
        .properties
        .get(property::UNIQ_KEY)
        .map(str::to_string)
        .or(header.msg_id)
        .unwrap_or_default();
    let answer = EndTransactionRequestHeader {
        topic: header.topic,
        producer_group: group,
        tran_state_table_offset: header.tran_state_table_offset,
        commit_log_offset: header.commit_log_offset,
        commit_or_rollback: state.code(),
        from_transaction_check: Some(true),
        msg_id,
        transaction_id: header.transaction_id,
        bname: header.bname,
    };
    let request = RemotingCommand::request(request::END_TRANSACTION, answer.to_ext());
    if let Err(err) = instance.oneway(&addr, request).await {
        tracing::debug!(broker = %addr, cause = %err, "check answer not sent");
    }
}
