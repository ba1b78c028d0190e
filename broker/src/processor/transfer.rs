//! RAFTMQ_TRANSFER_LEADER (raftmq's own request, code 30001): hands leadership to ext field `to`
//! (`n1` or a node id) and answers once this replica sees it lead, or why not (`handover`). Ext
//! `timeoutMillis` bounds the wait (default 5 s, at most 30 s).

use std::time::Duration;

use dledger::{Disk, NodeId};
use protocol::RemotingCommand;
use protocol::code::response;
use remoting::Transport;

use super::{Answer, Processor, Refusal, ok};
use crate::handover;
use crate::limits::{TRANSFER_WAIT_DEFAULT, TRANSFER_WAIT_MAX};

pub(super) struct TransferLeader {
    to: NodeId,
    timeout: Duration,
}

impl TransferLeader {
    pub(super) fn parse(req: &RemotingCommand) -> Result<TransferLeader, Refusal> {
        let Some(text) = req.ext_fields.get("to") else {
            return Err(Refusal::new(
                response::INVALID_PARAMETER,
                "the field to is missing: the target node, a DLedger id (n0, n1, ...) or a node id (1, 2, ...)",
            ));
        };
        let to = handover::parse_node(text)
            .map_err(|reason| Refusal::new(response::INVALID_PARAMETER, reason))?;
        let timeout = match req.ext_fields.get("timeoutMillis") {
            None => TRANSFER_WAIT_DEFAULT,
            Some(text) => match text.parse::<u64>().ok().map(Duration::from_millis) {
                Some(t) if !t.is_zero() && t <= TRANSFER_WAIT_MAX => t,
                _ => {
                    return Err(Refusal::new(
                        response::INVALID_PARAMETER,
                        format!(
                            "timeoutMillis {text:?} is not a number of milliseconds from 1 to {}",
                            TRANSFER_WAIT_MAX.as_millis()
                        ),
                    ));
                }
            },
        };
        Ok(TransferLeader { to, timeout })
    }

    pub(super) async fn apply<D: Disk, T: Transport>(
        self,
        p: &Processor<D, T>,
        req: &RemotingCommand,
    ) -> Answer {
        let done = p
            .shared
            .transfer_leadership(self.to, self.timeout, true)
            .await
            .map_err(|err| {
                Refusal::new(err.response_code(), err.to_string()).with_ext(err.ext())
            })?;
        let ext = [
            ("from", done.from.to_string()),
            ("leaderId", done.to.to_string()),
            ("term", done.term.to_string()),
            ("elapsedMillis", done.elapsed.as_millis().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Ok(ok(req)
            .with_remark(format!(
                "leadership moved from {} to {} (term {}) in {} ms",
                handover::describe(done.from),
                handover::describe(done.to),
                done.term,
                done.elapsed.as_millis()
            ))
            .with_ext(ext))
    }
}
