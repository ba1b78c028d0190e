//! `raftmq admin ...`: operations on a running cluster, each printing one JSON line.
//!
//! `transfer-leader --broker ADDR --to NODE` asks the replica at ADDR (its client address) to
//! hand its group's leadership to NODE, with raftmq's own request code
//! (`RAFTMQ_TRANSFER_LEADER`). ADDR must be the leader: a follower answers "not the leader"
//! naming the leader (and its address, when the name servers list it), and the command fails
//! with that answer rather than follow it, so it only ever acts on the replica it was given.
//!
//! `add-replica --broker ADDR --id nK --raft-addr H:P` and `remove-replica --broker ADDR --id nK`
//! change a group's membership through the log (raftmq's own codes 30002 and 30003), at the
//! leader; a follower answers "not leader" naming it.
//!
//! `delete-expired --broker ADDR` sends RocketMQ's DELETE_EXPIRED_COMMITLOG (what `mqadmin
//! deleteExpiredCommitLog` sends): the replica's next clean runs delete expired CommitLog
//! segments whatever `deleteWhen` says (the replica serving writes decides the cut).

use std::collections::BTreeMap;
use std::time::Duration;

use broker::handover::{self, describe};
use protocol::RemotingCommand;
use protocol::code::{request, response};

/// Operations on a running cluster.
#[derive(clap::Subcommand)]
pub enum AdminCommand {
    /// Hand a broker group's leadership to another replica; prints one JSON line, exits 1 on
    /// failure.
    TransferLeader(TransferLeaderArgs),
    /// Delete expired CommitLog segments now (DELETE_EXPIRED_COMMITLOG); prints one JSON line,
    /// exits 1 on failure.
    DeleteExpired(DeleteExpiredArgs),
    /// Add a replica to a broker group (a learner until caught up, then a voter); prints one
    /// JSON line, exits 1 on failure.
    AddReplica(AddReplicaArgs),
    /// Remove a replica from a broker group (the leader hands leadership over first); prints
    /// one JSON line, exits 1 on failure.
    RemoveReplica(RemoveReplicaArgs),
}

/// Flags of `raftmq admin add-replica`.
#[derive(clap::Args)]
pub struct AddReplicaArgs {
    /// Client (remoting) address of the group's leader, host:port.
    #[arg(long)]
    broker: String,
    /// The new replica's id: a DLedger id (n3, ...) or a node id (4, ...).
    #[arg(long)]
    id: String,
    /// The new replica's Raft address, host:port (its entry in its own dLegerPeers).
    #[arg(long)]
    raft_addr: String,
    /// The new replica's client address, host:port (informational: it registers itself).
    #[arg(long)]
    broker_addr: Option<String>,
    /// How long it may take to catch up, in milliseconds (1 to 600000).
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    timeout_ms: u64,
}

/// Flags of `raftmq admin remove-replica`.
#[derive(clap::Args)]
pub struct RemoveReplicaArgs {
    /// Client (remoting) address of the group's leader, host:port.
    #[arg(long)]
    broker: String,
    /// The replica to remove: a DLedger id (n0, ...) or a node id (1, ...).
    #[arg(long)]
    id: String,
}

/// Flags of `raftmq admin delete-expired`.
#[derive(clap::Args)]
pub struct DeleteExpiredArgs {
    /// Client (remoting) address of a replica, host:port.
    #[arg(long)]
    broker: String,
}

/// Flags of `raftmq admin transfer-leader`.
#[derive(clap::Args)]
pub struct TransferLeaderArgs {
    /// Client (remoting) address of the group's leader, host:port.
    #[arg(long)]
    broker: String,
    /// The replica to lead: its DLedger id (n0, n1, ...) or its node id (1, 2, ...; nK is node
    /// K+1).
    #[arg(long)]
    to: String,
    /// How long the broker waits for the target to take over, in milliseconds (1 to 30000).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=30_000))]
    timeout_ms: u64,
}

/// Runs an admin command.
///
/// # Errors
/// The operation failed; its JSON line is printed first.
pub async fn run(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::TransferLeader(args) => transfer_leader(args).await,
        AdminCommand::DeleteExpired(args) => delete_expired(args).await,
        AdminCommand::AddReplica(args) => {
            let mut ext = BTreeMap::from([
                ("id".to_string(), args.id.clone()),
                ("raftAddr".to_string(), args.raft_addr.clone()),
                ("timeoutMillis".to_string(), args.timeout_ms.to_string()),
            ]);
            if let Some(addr) = &args.broker_addr {
                ext.insert("brokerAddr".to_string(), addr.clone());
            }
            let wait = Duration::from_millis(args.timeout_ms) + CALL_MARGIN * 2;
            membership(&args.broker, request::RAFTMQ_ADD_REPLICA, ext, wait).await
        }
        AdminCommand::RemoveReplica(args) => {
            let ext = BTreeMap::from([("id".to_string(), args.id.clone())]);
            membership(
                &args.broker,
                request::RAFTMQ_REMOVE_REPLICA,
                ext,
                CALL_MARGIN * 6,
            )
            .await
        }
    }
}

/// Sends a membership request and prints its JSON line.
async fn membership(
    broker: &str,
    code: i32,
    ext: BTreeMap<String, String>,
    wait: Duration,
) -> anyhow::Result<()> {
    let mut line = serde_json::Map::new();
    line.insert("broker".into(), broker.into());
    if let Some(id) = ext.get("id") {
        line.insert("id".into(), id.clone().into());
    }
    let (client, _inbound) = remoting::Client::new(remoting::TcpTransport);
    match client
        .request(broker, RemotingCommand::request(code, ext), wait)
        .await
    {
        Ok(answer) if answer.code == response::SUCCESS => {
            line.insert("ok".into(), true.into());
            line.insert("message".into(), answer.remark.unwrap_or_default().into());
            println!("{}", serde_json::Value::Object(line));
            Ok(())
        }
        Ok(answer) => {
            if let Some(leader) = answer.ext_fields.get("leaderId") {
                line.insert("leader_node_id".into(), leader.clone().into());
            }
            let reason = if answer.code == response::REQUEST_CODE_NOT_SUPPORTED {
                format!(
                    "{broker} is not a raftmq broker, or an older one: {}",
                    answer.remark.unwrap_or_default()
                )
            } else {
                answer.remark.unwrap_or_default()
            };
            fail(line, Some(answer.code), &reason)
        }
        Err(err) => fail(line, None, &format!("no answer from {broker}: {err}")),
    }
}

async fn delete_expired(args: DeleteExpiredArgs) -> anyhow::Result<()> {
    let mut line = serde_json::Map::new();
    line.insert("broker".into(), args.broker.clone().into());
    let request = RemotingCommand::request(request::DELETE_EXPIRED_COMMITLOG, BTreeMap::new());
    let (client, _inbound) = remoting::Client::new(remoting::TcpTransport);
    match client.request(&args.broker, request, CALL_MARGIN).await {
        Ok(answer) if answer.code == response::SUCCESS => {
            line.insert("ok".into(), true.into());
            println!("{}", serde_json::Value::Object(line));
            Ok(())
        }
        Ok(answer) => fail(line, Some(answer.code), &answer.remark.unwrap_or_default()),
        Err(err) => fail(
            line,
            None,
            &format!("no answer from {}: {err}", args.broker),
        ),
    }
}

/// Beyond the broker's own wait: connecting and answering.
const CALL_MARGIN: Duration = Duration::from_secs(3);

async fn transfer_leader(args: TransferLeaderArgs) -> anyhow::Result<()> {
    let mut line = serde_json::Map::new();
    line.insert("broker".into(), args.broker.clone().into());
    let to = match handover::parse_node(&args.to) {
        Ok(to) => to,
        Err(reason) => return fail(line, None, &format!("invalid --to: {reason}")),
    };
    line.insert("to".into(), handover::dledger_id(to).into());
    line.insert("to_node_id".into(), to.into());
    let ext = BTreeMap::from([
        ("to".to_string(), to.to_string()),
        ("timeoutMillis".to_string(), args.timeout_ms.to_string()),
    ]);
    let request = RemotingCommand::request(request::RAFTMQ_TRANSFER_LEADER, ext);
    let (client, _inbound) = remoting::Client::new(remoting::TcpTransport);
    let call = Duration::from_millis(args.timeout_ms) + CALL_MARGIN;
    let answer = match client.request(&args.broker, request, call).await {
        Ok(answer) => answer,
        Err(err) => {
            return fail(
                line,
                None,
                &format!("no answer from {}: {err}", args.broker),
            );
        }
    };
    let remark = answer.remark.clone().unwrap_or_default();
    let number = |key: &str| {
        answer
            .ext_fields
            .get(key)
            .and_then(|v| v.parse::<u64>().ok())
    };
    if answer.code != response::SUCCESS {
        if let Some(leader) = number("leaderId") {
            line.insert("leader".into(), handover::dledger_id(leader).into());
            line.insert("leader_node_id".into(), leader.into());
        }
        if let Some(addr) = answer.ext_fields.get("leaderAddr") {
            line.insert("leader_addr".into(), addr.clone().into());
        }
        let reason = if answer.code == response::REQUEST_CODE_NOT_SUPPORTED {
            format!(
                "{} is not a raftmq broker, or an older one: {remark}",
                args.broker
            )
        } else {
            remark
        };
        return fail(line, Some(answer.code), &reason);
    }
    line.insert("ok".into(), true.into());
    if let Some(from) = number("from") {
        line.insert("from".into(), handover::dledger_id(from).into());
        line.insert("from_node_id".into(), from.into());
    }
    if let Some(term) = number("term") {
        line.insert("term".into(), term.into());
    }
    if let Some(ms) = number("elapsedMillis") {
        line.insert("elapsed_ms".into(), ms.into());
    }
    line.insert("message".into(), remark.into());
    println!("{}", serde_json::Value::Object(line));
    eprintln!("{} leads", describe(to));
    Ok(())
}

/// Prints the failure's JSON line and returns it as the command's error.
fn fail(
    mut line: serde_json::Map<String, serde_json::Value>,
    code: Option<i32>,
    reason: &str,
) -> anyhow::Result<()> {
    line.insert("ok".into(), false.into());
    if let Some(code) = code {
        line.insert("code".into(), code.into());
    }
    line.insert("error".into(), reason.into());
    println!("{}", serde_json::Value::Object(line));
    anyhow::bail!("{reason}")
}
