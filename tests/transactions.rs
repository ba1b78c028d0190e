//! Transactional messages through a real in-process cluster (name server + 3 replicas over TCP)
//! with our client: commits are visible once, rollbacks never, unknown answers are settled by
//! the leader's check-back (through another producer of the group when the first is gone),
//! messages nobody answers for are given up after `transactionCheckMax` checks, and bad
//! END_TRANSACTION requests are refused as RocketMQ refuses them while the broker keeps serving.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use broker::transactions::TransactionConfig;
use client::{
    ClientConfig, LocalTransactionState, Message, Producer, ProducerConfig, PullConsumer,
    PullConsumerConfig, PullStatus, StoredMessage, TransactionChecker,
};
use protocol::RemotingCommand;
use protocol::code::{request, response};
use protocol::header::{CommandHeader, EndTransactionRequestHeader};
use protocol::message::{decode_offset_msg_id, property, sys_flag, system_topic};
use raftmq::cluster::{ClusterSpec, LocalCluster};
use remoting::{Connection, TcpTransport};
use testkit::wait;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Checks start 1 s after a half message is stored, every 300 ms, three at most.
async fn cluster(dir: &std::path::Path) -> LocalCluster {
    let spec = ClusterSpec {
        transactions: TransactionConfig {
            timeout: Duration::from_secs(1),
            check_interval: Duration::from_millis(300),
            check_max: 3,
            reject: false,
        },
        ..ClusterSpec::default()
    };
    let cluster = LocalCluster::start(&spec, dir).await.unwrap();
    cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
    cluster
}

fn namesrv(cluster: &LocalCluster) -> ClientConfig {
    let addr = cluster.namesrv.local_addr().to_string();
    ClientConfig::new([addr.as_str()])
}

/// A checker answering by body: `check-commit` commits, `check-rollback` rolls back, anything
/// else is still unknown.
fn by_body() -> TransactionChecker {
    Arc::new(|message: &StoredMessage| match &message.body[..] {
        b"check-commit" => LocalTransactionState::Commit,
        b"check-rollback" => LocalTransactionState::Rollback,
        _ => LocalTransactionState::Unknown,
    })
}

async fn transactional(cluster: &LocalCluster, checker: TransactionChecker) -> Producer {
    Producer::start_transactional(
        TcpTransport,
        namesrv(cluster),
        ProducerConfig::new("tx-pg"),
        checker,
    )
    .await
    .unwrap()
}

/// Waits until every replica's `/status` says `field` of `transactions` is `want`.
async fn every_replica_counts(cluster: &LocalCluster, field: &str, want: u64) {
    for replica in cluster.replicas.values() {
        let handles = raftmq::http::ReplicaHandles::from(replica);
        wait::until(
            &format!("transactions.{field} = {want}"),
            Duration::from_secs(30),
            || {
                let status = raftmq::http::replica_status(&handles);
                let t = status["transactions"].clone();
                if t[field] == want { Ok(()) } else { Err(t) }
            },
        )
        .await;
    }
}

/// Every message of `topic`'s queues, read from the first offset to the end.
async fn everything_in(cluster: &LocalCluster, topic: &str) -> Vec<StoredMessage> {
    let consumer = PullConsumer::start(
        TcpTransport,
        namesrv(cluster),
        PullConsumerConfig::new("tx-reader"),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let queues = wait::until_async(
        &format!("a route for {topic}"),
        Duration::from_secs(30),
        || consumer.fetch_subscribe_queues(topic),
    )
    .await;
    for queue in queues {
        let mut offset = 0;
        loop {
            let pulled = consumer
                .pull(&queue, "*", offset, 32, TIMEOUT)
                .await
                .unwrap();
            if pulled.status != PullStatus::Found {
                break;
            }
            offset = pulled.next_begin_offset;
            out.extend(pulled.messages);
        }
    }
    consumer.shutdown().await;
    out
}

fn bodies(messages: &[StoredMessage]) -> BTreeSet<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

/// Commit and rollback answered at once, and both answered by the check after an unknown: the
/// committed ones are in their topic once each, with RocketMQ's properties and sys flag, the
/// rolled-back ones never; every replica counts the same, and a second commit of a decided half
/// message changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_visible_once_and_rollbacks_never() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path()).await;
    let producer = transactional(&cluster, by_body()).await;
    let mut sends = Vec::new();
    for (body, local) in [
        ("commit", LocalTransactionState::Commit),
        ("rollback", LocalTransactionState::Rollback),
        ("check-commit", LocalTransactionState::Unknown),
        ("check-rollback", LocalTransactionState::Unknown),
    ] {
        let result = producer
            .send_in_transaction(Message::new("TxTopic", body), |_| async move { local })
            .await
            .unwrap();
        assert_eq!(result.state, local);
        sends.push(result);
    }
    every_replica_counts(&cluster, "halves", 4).await;
    every_replica_counts(&cluster, "pending", 0).await;
    every_replica_counts(&cluster, "commits", 2).await;
    every_replica_counts(&cluster, "rollbacks", 2).await;
    let seen = everything_in(&cluster, "TxTopic").await;
    assert_eq!(seen.len(), 2, "{:?}", bodies(&seen));
    assert_eq!(
        bodies(&seen),
        ["check-commit", "commit"].map(String::from).into()
    );
    for message in &seen {
        assert_eq!(
            message.sys_flag & sys_flag::TRANSACTION_MASK,
            sys_flag::TRANSACTION_COMMIT
        );
        assert_eq!(message.properties.get(property::TRAN_MSG), Some("true"));
        assert_eq!(message.properties.get(property::PGROUP), Some("tx-pg"));
        assert!(message.prepared_transaction_offset > 0);
    }
    // The same commit again, as a retry or a late answer would send it: nothing changes.
    let leader = cluster
        .replicas
        .values()
        .find(|r| r.broker.serving_writes())
        .unwrap();
    let conn = Connection::connect(&TcpTransport, &leader.broker.local_addr().to_string())
        .await
        .unwrap()
        .0;
    let answer = conn
        .request(end_transaction(&sends[0].send, "tx-pg", 8), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(answer.code, response::SUCCESS, "{answer:?}");
    every_replica_counts(&cluster, "commits", 2).await;
    assert_eq!(everything_in(&cluster, "TxTopic").await.len(), 2);
    let metrics = raftmq::http::replica_metrics_text(&raftmq::http::ReplicaHandles::from(leader));
    assert!(
        metrics.contains("\nraftmq_transaction_commits_total 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nraftmq_transactions_pending 0\n"),
        "{metrics}"
    );
    producer.shutdown().await;
    cluster.shutdown().await;
}

fn end_transaction(send: &client::SendResult, group: &str, code: i32) -> RemotingCommand {
    let (_, commit_log_offset) = decode_offset_msg_id(&send.offset_msg_id).unwrap();
    let header = EndTransactionRequestHeader {
        topic: Some(send.queue.topic.clone()),
        producer_group: group.into(),
        tran_state_table_offset: send.queue_offset,
        commit_log_offset,
        commit_or_rollback: code,
        from_transaction_check: Some(false),
        msg_id: send.msg_id.clone(),
        transaction_id: Some(send.msg_id.clone()),
        bname: None,
    };
    RemotingCommand::request(request::END_TRANSACTION, header.to_ext())
}

/// A producer that goes away without answering: the check reaches another producer of the
/// group, which commits. A half message whose producers never know is given up after three
/// checks, to `TRANS_CHECK_MAX_TIME_TOPIC`, and never delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_reach_another_producer_and_give_up_after_the_most() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path()).await;
    let gone = transactional(&cluster, by_body()).await;
    for body in ["check-commit", "nobody-knows"] {
        gone.send_in_transaction(Message::new("TxGone", body), |_| async {
            LocalTransactionState::Unknown
        })
        .await
        .unwrap();
    }
    gone.shutdown().await;
    let other = transactional(&cluster, by_body()).await;
    // Heartbeats make it known to the broker as a producer of the group.
    other.publish_queues("TxGone").await.unwrap();
    every_replica_counts(&cluster, "commits", 1).await;
    every_replica_counts(&cluster, "given_up", 1).await;
    every_replica_counts(&cluster, "pending", 0).await;
    let seen = everything_in(&cluster, "TxGone").await;
    assert_eq!(bodies(&seen), ["check-commit".to_string()].into());
    let given_up = everything_in(&cluster, system_topic::TRANS_CHECK_MAX_TIME).await;
    assert_eq!(bodies(&given_up), ["nobody-knows".to_string()].into());
    assert_eq!(
        given_up[0]
            .properties
            .get(property::TRANSACTION_CHECK_TIMES),
        Some("3")
    );
    let leader = cluster
        .replicas
        .values()
        .find(|r| r.broker.serving_writes())
        .unwrap();
    let status = raftmq::http::replica_status(&raftmq::http::ReplicaHandles::from(leader));
    assert!(
        status["transactions"]["checks_sent"].as_u64().unwrap() >= 1,
        "{status}"
    );
    other.shutdown().await;
    cluster.shutdown().await;
}

/// END_TRANSACTION for an unknown offset, from the wrong group, for a message that is not half,
/// with a wrong queue offset, or to a follower is refused naming what was wrong; one without an
/// outcome is not answered at all. Sends to the transactions' own topics are refused. The broker
/// keeps serving: the half message is still committed afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_end_transactions_are_refused_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path()).await;
    // A checker that never knows, so only this test's requests decide.
    let never: TransactionChecker = Arc::new(|_: &StoredMessage| LocalTransactionState::Unknown);
    let producer = transactional(&cluster, never).await;
    // Immune to checks for ten minutes: only this test's requests decide.
    let half = producer
        .send_in_transaction(
            Message::new("TxBad", "half")
                .with_property(property::CHECK_IMMUNITY_TIME_IN_SECONDS, "600"),
            |_| async { LocalTransactionState::Unknown },
        )
        .await
        .unwrap()
        .send;
    let plain = producer.send(Message::new("TxBad", "plain")).await.unwrap();
    let (leader_id, leader) = cluster
        .replicas
        .iter()
        .find(|(_, r)| r.broker.serving_writes())
        .unwrap();
    let conn = Connection::connect(&TcpTransport, &leader.broker.local_addr().to_string())
        .await
        .unwrap()
        .0;
    let refused = |answer: RemotingCommand, code: i32, remark: &str| {
        assert_eq!(answer.code, code, "{answer:?}");
        let text = answer.remark.unwrap_or_default();
        assert!(text.contains(remark), "{text:?} does not say {remark:?}");
    };
    let mut unknown_offset = end_transaction(&half, "tx-pg", 8);
    unknown_offset
        .ext_fields
        .insert("commitLogOffset".into(), "999999999999".into());
    refused(
        conn.request(unknown_offset, TIMEOUT).await.unwrap(),
        response::SYSTEM_ERROR,
        "prepared transaction message",
    );
    refused(
        conn.request(end_transaction(&half, "other-pg", 8), TIMEOUT)
            .await
            .unwrap(),
        response::SYSTEM_ERROR,
        "producer group wrong",
    );
    refused(
        conn.request(end_transaction(&plain, "tx-pg", 8), TIMEOUT)
            .await
            .unwrap(),
        response::SYSTEM_ERROR,
        "not a half message",
    );
    let mut wrong_queue_offset = end_transaction(&half, "tx-pg", 8);
    wrong_queue_offset
        .ext_fields
        .insert("tranStateTableOffset".into(), "77".into());
    refused(
        conn.request(wrong_queue_offset, TIMEOUT).await.unwrap(),
        response::SYSTEM_ERROR,
        "state table offset wrong",
    );
    let mut not_a_number = end_transaction(&half, "tx-pg", 8);
    not_a_number
        .ext_fields
        .insert("commitOrRollback".into(), "yes".into());
    refused(
        conn.request(not_a_number, TIMEOUT).await.unwrap(),
        response::INVALID_PARAMETER,
        "commitOrRollback",
    );
    // Without an outcome (5 is neither commit nor rollback): no answer, as RocketMQ.
    let silent = conn
        .request(
            end_transaction(&half, "tx-pg", 5),
            Duration::from_millis(500),
        )
        .await;
    assert!(silent.is_err(), "answered: {silent:?}");
    let follower = cluster
        .replicas
        .iter()
        .find(|(id, _)| *id != leader_id)
        .unwrap()
        .1;
    let to_follower = Connection::connect(&TcpTransport, &follower.broker.local_addr().to_string())
        .await
        .unwrap()
        .0;
    refused(
        to_follower
            .request(end_transaction(&half, "tx-pg", 8), TIMEOUT)
            .await
            .unwrap(),
        response::SLAVE_NOT_AVAILABLE,
        "not master",
    );
    let to_half_topic = producer
        .send(Message::new(system_topic::TRANS_HALF, "sneaky"))
        .await
        .unwrap_err();
    assert!(
        to_half_topic.to_string().contains("forbidden"),
        "{to_half_topic}"
    );
    every_replica_counts(&cluster, "pending", 1).await;
    // Still serving: the half message commits now.
    let answer = conn
        .request(end_transaction(&half, "tx-pg", 8), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(answer.code, response::SUCCESS, "{answer:?}");
    every_replica_counts(&cluster, "commits", 1).await;
    assert_eq!(
        bodies(&everything_in(&cluster, "TxBad").await),
        ["half", "plain"].map(String::from).into()
    );
    producer.shutdown().await;
    cluster.shutdown().await;
}
