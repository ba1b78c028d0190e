//! RAFTMQ_ADD_REPLICA and RAFTMQ_REMOVE_REPLICA (raftmq's own requests, codes 30002 and 30003):
//! change the group's membership through the log. Add: ext `id` (`n3` or a node id), `raftAddr`
//! (host:port), optional `timeoutMillis` (how long the new replica may take to catch up, default
//! 60 s, at most 10 min). Remove: ext `id`; asked of the leader about itself, it hands
//! leadership to another voter first and passes the request to the new leader.

use std::time::Duration;

use dledger::{Disk, MembershipError, NodeId};
use protocol::RemotingCommand;
use protocol::code::response;
use remoting::Transport;

use super::{Answer, Processor, Refusal, ok};
use crate::handover;
use crate::limits::{ADD_REPLICA_WAIT_DEFAULT, ADD_REPLICA_WAIT_MAX, TRANSFER_WAIT_DEFAULT};

fn node_field(req: &RemotingCommand) -> Result<NodeId, Refusal> {
    let Some(text) = req.ext_fields.get("id") else {
        return Err(Refusal::new(
            response::INVALID_PARAMETER,
            "the field id is missing: the replica, a DLedger id (n0, n1, ...) or a node id (1, 2, ...)",
        ));
    };
    handover::parse_node(text).map_err(|reason| Refusal::new(response::INVALID_PARAMETER, reason))
}

fn refusal(err: &MembershipError) -> Refusal {
    let code = match err {
        MembershipError::NotLeader { .. } => response::SERVICE_NOT_AVAILABLE,
        MembershipError::AlreadyMember { .. } | MembershipError::NotMember { .. } => {
            response::INVALID_PARAMETER
        }
        MembershipError::NotCaughtUp { .. } | MembershipError::Refused { .. } => {
            response::SYSTEM_ERROR
        }
    };
    let mut refusal = Refusal::new(code, err.to_string());
    if let MembershipError::NotLeader { leader: Some(l) } = err {
        refusal = refusal.with_ext([("leaderId".to_string(), l.to_string())].into());
    }
    refusal
}

pub(super) struct AddReplica {
    node: NodeId,
    raft_addr: String,
    timeout: Duration,
}

impl AddReplica {
    pub(super) fn parse(req: &RemotingCommand) -> Result<AddReplica, Refusal> {
        let node = node_field(req)?;
        let raft_addr = req
            .ext_fields
            .get("raftAddr")
            .filter(|a| {
                a.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
            })
            .cloned()
            .ok_or_else(|| {
                Refusal::new(
                    response::INVALID_PARAMETER,
                    "the field raftAddr must be the new replica's Raft address, host:port",
                )
            })?;
        let timeout = match req.ext_fields.get("timeoutMillis") {
            None => ADD_REPLICA_WAIT_DEFAULT,
            Some(text) => match text.parse::<u64>().ok().map(Duration::from_millis) {
                Some(t) if !t.is_zero() && t <= ADD_REPLICA_WAIT_MAX => t,
                _ => {
                    return Err(Refusal::new(
                        response::INVALID_PARAMETER,
                        format!(
                            "timeoutMillis {text:?} is not a number of milliseconds from 1 to {}",
                            ADD_REPLICA_WAIT_MAX.as_millis()
                        ),
                    ));
                }
            },
        };
        Ok(AddReplica {
            node,
            raft_addr,
            timeout,
        })
    }

    pub(super) async fn apply<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        req: &RemotingCommand,
    ) -> Answer {
        p.shared
            .ledger
            .add_replica(self.node, &self.raft_addr, self.timeout)
            .await
            .map_err(|err| refusal(&err))?;
        p.shared.register_now.notify_one();
        Ok(ok(req).with_remark(format!(
            "{} at {} added: it caught up and votes",
            handover::describe(self.node),
            self.raft_addr
        )))
    }
}

pub(super) struct RemoveReplica {
    node: NodeId,
}

impl RemoveReplica {
    pub(super) fn parse(req: &RemotingCommand) -> Result<RemoveReplica, Refusal> {
        Ok(RemoveReplica {
            node: node_field(req)?,
        })
    }

    pub(super) async fn apply<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        req: &RemotingCommand,
    ) -> Answer {
        let ledger = &p.shared.ledger;
        if self.node == ledger.node_id() && ledger.status().role == dledger::Role::Leader {
            return self.hand_over_then_remove(p, req).await;
        }
        ledger
            .remove_replica(self.node)
            .await
            .map_err(|err| refusal(&err))?;
        p.shared.register_now.notify_one();
        Ok(ok(req).with_remark(format!("{} removed", handover::describe(self.node))))
    }

    /// The leader removing itself: leadership goes to another voter, then the request goes to
    /// the new leader's broker.
    async fn hand_over_then_remove<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        req: &RemotingCommand,
    ) -> Answer {
        let ledger = &p.shared.ledger;
        let Some(to) = ledger
            .members()
            .voters
            .keys()
            .copied()
            .find(|id| *id != self.node)
        else {
            return Err(refusal(&MembershipError::Refused {
                reason: "the last voter cannot be removed".into(),
            }));
        };
        p.shared
            .transfer_leadership(to, TRANSFER_WAIT_DEFAULT, false)
            .await
            .map_err(|err| {
                Refusal::new(err.response_code(), err.to_string()).with_ext(err.ext())
            })?;
        let Some(master) = p.shared.await_master_elsewhere(TRANSFER_WAIT_DEFAULT).await else {
            return Err(Refusal::new(
                response::SYSTEM_ERROR,
                format!(
                    "leadership went to {} but no name server lists its broker yet: ask it to remove {}",
                    handover::describe(to),
                    handover::describe(self.node)
                ),
            ));
        };
        let forwarded = RemotingCommand::request(req.code, req.ext_fields.clone());
        let answer = p
            .shared
            .namesrv
            .request(&master, forwarded, TRANSFER_WAIT_DEFAULT * 2)
            .await
            .map_err(|err| {
                Refusal::new(
                    response::SYSTEM_ERROR,
                    format!("leadership went to {master}, which did not answer: {err}"),
                )
            })?;
        if answer.code != response::SUCCESS {
            return Err(Refusal::new(answer.code, answer.remark.unwrap_or_default()));
        }
        Ok(ok(req).with_remark(format!(
            "leadership handed to {} ({master}), which removed {}",
            handover::describe(to),
            handover::describe(self.node)
        )))
    }
}
