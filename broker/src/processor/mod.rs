//! Request processing (PROTOCOL.md §3), one file per family of requests after mini-redis's
//! `src/cmd/`: each request is a type that parses its own header or body (`parse`) and applies
//! itself to the replica (`apply`). Handlers answer `Result<RemotingCommand, Refusal>` and refuse
//! with `?`; every refusal carries a response code a RocketMQ client understands and a remark
//! that says what was wrong. [`Processor::dispatch`] is the table of request codes.
//!
//! - [`send`]: SEND_MESSAGE, SEND_MESSAGE_V2, SEND_BATCH_MESSAGE, CONSUMER_SEND_MSG_BACK.
//! - [`pull`]: PULL_MESSAGE, LITE_PULL_MESSAGE, with long polling.
//! - [`offsets`]: consumer offsets, queue offsets, search by time.
//! - [`clients`]: heartbeats, consumer lists, unregistering, orderly consumers' queue locks,
//!   checking a client's subscription.
//! - [`topics`]: creating topics.
//! - [`transaction`]: END_TRANSACTION (commit or rollback of a half message).
//! - [`lookups`]: a message by its offset id or by key.
//! - [`transfer`]: RAFTMQ_TRANSFER_LEADER, raftmq's own.
//! - [`members`]: RAFTMQ_ADD_REPLICA, RAFTMQ_REMOVE_REPLICA, raftmq's own.
//! - DELETE_EXPIRED_COMMITLOG arms the cleaner (`crate::retention`) here.

mod clients;
mod filter;
mod lookups;
mod members;
mod offsets;
mod pull;
mod send;
mod topics;
mod transaction;
mod transfer;

use std::collections::BTreeMap;
use std::sync::Arc;

use dledger::Disk;
use protocol::RemotingCommand;
use protocol::code::{request, response};
use remoting::{Handler, Peer, Transport};

use crate::handover::{self, Held};
use crate::{Shared, metrics};

pub(crate) struct Processor<D: Disk, T: Transport> {
    pub shared: Arc<Shared<D, T>>,
}

/// Why a request is refused: the response code and the remark the client reports, and the ext
/// fields some refusals carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    code: i32,
    remark: String,
    ext: BTreeMap<String, String>,
}

impl Refusal {
    pub(crate) fn new(code: i32, remark: impl Into<String>) -> Refusal {
        Refusal {
            code,
            remark: remark.into(),
            ext: BTreeMap::new(),
        }
    }

    /// No answer at all, even to a two-way request (RocketMQ's END_TRANSACTION without an
    /// outcome).
    pub(crate) fn unanswered() -> Refusal {
        Refusal::new(UNANSWERED, "")
    }

    pub(crate) fn with_ext(mut self, ext: BTreeMap<String, String>) -> Refusal {
        self.ext = ext;
        self
    }

    /// The answer to `req`.
    fn answer(self, req: &RemotingCommand) -> RemotingCommand {
        let answer = RemotingCommand::response_to(req, self.code).with_remark(self.remark);
        if self.ext.is_empty() {
            answer
        } else {
            answer.with_ext(self.ext)
        }
    }
}

/// The code of [`Refusal::unanswered`]: never sent.
const UNANSWERED: i32 = i32::MIN;

/// A header that does not parse: RocketMQ answers INVALID_PARAMETER.
impl From<protocol::header::HeaderError> for Refusal {
    fn from(err: protocol::header::HeaderError) -> Refusal {
        Refusal::new(response::INVALID_PARAMETER, err.to_string())
    }
}

/// A JSON body that does not parse: RocketMQ answers SYSTEM_ERROR.
impl From<protocol::body::BodyError> for Refusal {
    fn from(err: protocol::body::BodyError) -> Refusal {
        Refusal::new(response::SYSTEM_ERROR, err.to_string())
    }
}

/// What a handler answers.
pub(crate) type Answer = Result<RemotingCommand, Refusal>;

/// SUCCESS in answer to `req`.
fn ok(req: &RemotingCommand) -> RemotingCommand {
    RemotingCommand::response_to(req, response::SUCCESS)
}

impl<D: Disk, T: Transport> Handler for Processor<D, T> {
    async fn handle(&self, peer: &Arc<Peer>, req: RemotingCommand) -> Option<RemotingCommand> {
        let received = tokio::time::Instant::now();
        let bytes_in = metrics::frame_bytes(&req);
        let answer = match self.dispatch(peer, &req).await {
            Ok(answer) => answer,
            Err(refusal) if refusal.code == UNANSWERED => return None,
            Err(refusal) => refusal.answer(&req),
        };
        let metrics = &self.shared.metrics;
        metrics.record_request(
            req.code,
            answer.code,
            bytes_in,
            metrics::frame_bytes(&answer),
        );
        match req.code {
            request::SEND_MESSAGE | request::SEND_MESSAGE_V2 | request::SEND_BATCH_MESSAGE => {
                metrics.send_latency.observe(received.elapsed());
            }
            request::PULL_MESSAGE | request::LITE_PULL_MESSAGE => {
                metrics.pull_latency.observe(received.elapsed());
            }
            _ => {}
        }
        Some(answer)
    }

    fn closed(&self, peer: &Peer) {
        let mut clients = self.shared.clients.lock().expect("clients");
        for group in clients.connection_closed(peer.id) {
            clients.notify_changed(&group);
        }
    }
}

impl<D: Disk, T: Transport> Processor<D, T> {
    /// The table of request codes.
    async fn dispatch(&self, peer: &Arc<Peer>, req: &RemotingCommand) -> Answer {
        match req.code {
            request::SEND_MESSAGE | request::SEND_MESSAGE_V2 | request::SEND_BATCH_MESSAGE => {
                send::Send::parse(req)?.apply(self, peer, req).await
            }
            request::CONSUMER_SEND_MSG_BACK => send::SendBack::parse(req)?.apply(self, req).await,
            request::END_TRANSACTION => {
                transaction::EndTransaction::parse(req)?
                    .apply(self, req)
                    .await
            }
            request::PULL_MESSAGE | request::LITE_PULL_MESSAGE => {
                pull::Pull::parse(req)?.apply(self, req).await
            }
            request::QUERY_CONSUMER_OFFSET => offsets::QueryOffset::parse(req)?.apply(self, req),
            request::UPDATE_CONSUMER_OFFSET => {
                offsets::UpdateOffset::parse(req)?.apply(self, req).await
            }
            request::GET_MAX_OFFSET => offsets::QueueEnd::parse(req, true)?.apply(self, req),
            request::GET_MIN_OFFSET => offsets::QueueEnd::parse(req, false)?.apply(self, req),
            request::SEARCH_OFFSET_BY_TIMESTAMP => {
                offsets::SearchOffset::parse(req)?.apply(self, req)
            }
            request::GET_EARLIEST_MSG_STORETIME => {
                offsets::EarliestTime::parse(req)?.apply(self, req)
            }
            request::HEART_BEAT => clients::Heartbeat::parse(req)?.apply(self, peer, req).await,
            request::UNREGISTER_CLIENT => clients::Unregister::parse(req)?.apply(self, req),
            request::GET_CONSUMER_LIST_BY_GROUP => {
                clients::ConsumerList::parse(req)?.apply(self, req)
            }
            request::LOCK_BATCH_MQ => clients::LockQueues::parse(req, true)?.apply(self, req),
            request::UNLOCK_BATCH_MQ => clients::LockQueues::parse(req, false)?.apply(self, req),
            request::CHECK_CLIENT_CONFIG => clients::CheckConfig::parse(req)?.apply(self, req),
            request::UPDATE_AND_CREATE_TOPIC => {
                topics::CreateTopic::parse(req)?.apply(self, req).await
            }
            request::VIEW_MESSAGE_BY_ID => lookups::ViewMessage::parse(req)?.apply(self, req),
            request::QUERY_MESSAGE => lookups::QueryMessage::parse(req)?.apply(self, req),
            request::DELETE_EXPIRED_COMMITLOG => {
                // RocketMQ answers at once and arms the next clean runs.
                self.shared
                    .retention
                    .lock()
                    .expect("retention lock")
                    .manual_runs = crate::retention::MANUAL_RUNS;
                self.shared.clean_now.notify_one();
                Ok(ok(req))
            }
            request::RAFTMQ_ADD_REPLICA => members::AddReplica::parse(req)?.apply(self, req).await,
            request::RAFTMQ_REMOVE_REPLICA => {
                members::RemoveReplica::parse(req)?.apply(self, req).await
            }
            request::RAFTMQ_TRANSFER_LEADER => {
                transfer::TransferLeader::parse(req)?.apply(self, req).await
            }
            code => Err(Refusal::new(
                response::REQUEST_CODE_NOT_SUPPORTED,
                format!(" request type {code} not supported"),
            )),
        }
    }

    /// SERVICE_NOT_AVAILABLE "not master", with this replica's role and the leader it knows.
    fn not_master(&self) -> Refusal {
        let status = self.shared.ledger.status();
        let state = if status.role == dledger::Role::Leader && !status.has_quorum {
            format!(
                "leads term {} without a quorum (none answered for {})",
                status.term,
                status
                    .quorum_acked_ms_ago
                    .map_or("its whole term".to_string(), |ms| format!("{ms} ms")),
            )
        } else {
            format!("is {:?} in term {}", status.role, status.term)
        };
        Refusal::new(
            response::SERVICE_NOT_AVAILABLE,
            format!(
                "not master: broker {} replica {} {state}, leader is {}",
                self.shared.config.broker_name,
                status.node_id,
                status
                    .leader
                    .map_or("unknown".to_string(), |l| format!("replica {l}")),
            ),
        )
    }

    /// `not_master`, naming the master the name servers list after a held send.
    fn not_master_after(&self, held: &Held) -> Refusal {
        let mut refusal = self.not_master();
        let listed = match held {
            Held::MasterElsewhere(addr) => format!("; the name servers list {addr} as master"),
            _ => format!(
                "; no other master was listed within {} ms",
                handover::SEND_HOLD_MAX.as_millis()
            ),
        };
        refusal.remark.push_str(&listed);
        refusal
    }

    /// Refuses as not master unless this replica leads and applied its log (writes other than
    /// sends: offsets, topics, messages sent back).
    fn require_master(&self) -> Result<(), Refusal> {
        if self
            .shared
            .serving_writes
            .load(std::sync::atomic::Ordering::Acquire)
        {
            Ok(())
        } else {
            Err(self.not_master())
        }
    }

    /// Refuses with `code` and RocketMQ's full-disk remark while the disk is full.
    fn require_disk_space(&self, code: i32) -> Result<(), Refusal> {
        if !self
            .shared
            .disk_full
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Ok(());
        }
        self.shared
            .metrics
            .disk_full_refusals
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let used = self
            .shared
            .retention
            .lock()
            .expect("retention lock")
            .used_ratio
            .unwrap_or(1.0);
        Err(Refusal::new(code, crate::retention::disk_full_remark(used)))
    }

    /// Reads the record of a ConsumeQueue unit or message id from the log and checks it.
    fn read_record(&self, commit_log_offset: u64, size: Option<u32>) -> Result<Vec<u8>, String> {
        self.shared.read_record(commit_log_offset, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::header::{CommandHeader, PullMessageRequestHeader};

    /// A header that does not parse refuses with INVALID_PARAMETER naming the field, a body that
    /// does not parse with SYSTEM_ERROR; the answer keeps the request's opaque and a refusal's
    /// ext fields.
    #[test]
    fn refusals_answer_as_rocketmq_does() {
        let req = RemotingCommand::request(request::PULL_MESSAGE, BTreeMap::new());
        let refusal: Refusal = PullMessageRequestHeader::from_ext(&req.ext_fields)
            .unwrap_err()
            .into();
        let answer = refusal.answer(&req);
        assert_eq!(answer.code, response::INVALID_PARAMETER);
        assert_eq!(answer.opaque, req.opaque);
        assert!(
            answer
                .remark
                .as_deref()
                .unwrap_or("")
                .contains("consumerGroup"),
            "{answer:?}"
        );
        let refusal: Refusal = protocol::body::parse::<protocol::body::HeartbeatData>(b"{", "x")
            .unwrap_err()
            .into();
        assert_eq!(refusal.answer(&req).code, response::SYSTEM_ERROR);
        let ext: BTreeMap<String, String> = [("leaderId".to_string(), "2".to_string())].into();
        let answer = Refusal::new(response::SYSTEM_BUSY, "busy")
            .with_ext(ext.clone())
            .answer(&req);
        assert_eq!(answer.ext_fields.get("leaderId"), Some(&"2".to_string()));
        assert_eq!(answer.remark.as_deref(), Some("busy"));
    }
}
