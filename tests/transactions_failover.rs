//! Transactions across a killed leader, with real processes: a name server and three
//! `raftmq broker -c broker.conf` processes. Transactional producers run continuously, each
//! transaction's fate (commit or rollback, told at once or only when the broker checks) fixed by
//! its key. A batch of transactions is held between the half message and the commit while the
//! leader is killed with `kill -9`; the new leader's check-back settles them. In the end every
//! replica holds, in the same places, each half message whose fate is commit exactly once in the
//! real topic, no rolled-back one, and nothing is left pending.

#[path = "support/procs.rs"]
mod procs;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use client::{
    ClientConfig, LocalTransactionState, Message, Producer, ProducerConfig, StoredMessage,
    TransactionChecker,
};
use procs::{
    Proc, http_json, read_messages_from, registered, start_broker, start_namesrv, wait_registered,
    write_confs,
};
use protocol::message::{property, system_topic};
use remoting::TcpTransport;
use testkit::wait::until_async;

const TOPIC: &str = "TxFailoverTopic";
const BROKER_NAME: &str = "broker-tx";
const GROUP: &str = "tx-failover-pg";
/// Transactions in flight at once.
const SENDERS: usize = 8;
/// Transactions acknowledged before the leader is killed, and again after.
const BEFORE_KILL: usize = 400;
const AFTER_KILL: usize = 400;

/// Checks begin 1 s after a half message is stored, every 300 ms; many checks are allowed so
/// none is given up while the group fails over.
const CONF: &str =
    "transactionTimeOut=1000\ntransactionCheckInterval=300\ntransactionCheckMax=100\n";

/// What the producer says of transaction `i`: at once (commit, rollback) or "unknown" first,
/// then the checker's verdict.
fn told_at_once(i: usize) -> LocalTransactionState {
    match i % 4 {
        0 => LocalTransactionState::Commit,
        1 => LocalTransactionState::Rollback,
        _ => LocalTransactionState::Unknown,
    }
}

/// Whether transaction `i` commits in the end (told at once for `i % 4 == 0`, at the check for
/// `i % 4 == 2`).
fn commits(i: usize) -> bool {
    i.is_multiple_of(2)
}

fn index_of(key: &str) -> usize {
    key.strip_prefix("tx-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a test key, not {key:?}"))
}

fn key_of(message: &StoredMessage) -> String {
    message
        .properties
        .get(property::KEYS)
        .expect("test messages carry a key")
        .to_string()
}

/// Every queue of `topic` on `broker`, read to its end.
async fn read_topic(
    client: &remoting::Client<TcpTransport>,
    node: &procs::Node,
    topic: &str,
) -> Vec<StoredMessage> {
    let status = http_json(&node.http_addr, "/status").await.expect("status");
    let queues = status["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .find(|t| t["topic"] == topic)
        .and_then(|t| t["queues"].as_array())
        .map_or(0, |q| q.len() as i32);
    let mut all = Vec::new();
    for queue_id in 0..queues {
        all.extend(read_messages_from(client, &node.broker_addr, topic, queue_id, 0, true).await);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_survive_a_killed_leader_between_half_and_commit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_namesrv_proc, namesrv) = start_namesrv();
    let nodes = write_confs(dir.path(), &namesrv, BROKER_NAME, 3, CONF);
    let mut procs: Vec<Proc> = nodes.iter().map(start_broker).collect();
    let (client, _inbound) = remoting::Client::new(TcpTransport);
    wait_registered(
        &client,
        &namesrv,
        BROKER_NAME,
        "a master",
        Duration::from_secs(60),
        |t| t.contains_key(&0),
    )
    .await;

    let checker: TransactionChecker = Arc::new(|message: &StoredMessage| {
        if commits(index_of(&key_of(message))) {
            LocalTransactionState::Commit
        } else {
            LocalTransactionState::Rollback
        }
    });
    let mut client_config = ClientConfig::new([namesrv.as_str()]);
    client_config.poll_namesrv_interval = Duration::from_millis(500);
    let producer = Arc::new(
        Producer::start_transactional(
            TcpTransport,
            client_config,
            ProducerConfig::new(GROUP),
            checker,
        )
        .await
        .expect("transactional producer starts"),
    );

    // Senders run transactions until told to stop. While `hold` is set, a local transaction
    // waits (its half message stored, no answer sent) until `hold` is cleared.
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let held = Arc::new(AtomicUsize::new(0));
    let hold = Arc::new(AtomicBool::new(false));
    let released = Arc::new(tokio::sync::Notify::new());
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let (producer, next, acked, held, hold, released, stop) = (
            producer.clone(),
            next.clone(),
            acked.clone(),
            held.clone(),
            hold.clone(),
            released.clone(),
            stop.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut done: Vec<usize> = Vec::new();
            let mut failed = 0usize;
            while !stop.load(Ordering::Acquire) {
                let i = next.fetch_add(1, Ordering::AcqRel);
                let message = Message::new(TOPIC, vec![b't'; 512]).with_keys([format!("tx-{i}")]);
                let (hold, held, released) = (hold.clone(), held.clone(), released.clone());
                let local = move |_: &client::SendResult| async move {
                    if hold.load(Ordering::Acquire) {
                        let wake = released.notified();
                        held.fetch_add(1, Ordering::AcqRel);
                        if hold.load(Ordering::Acquire) {
                            wake.await;
                        }
                    }
                    told_at_once(i)
                };
                match producer.send_in_transaction(message, local).await {
                    Ok(_) => {
                        done.push(i);
                        acked.fetch_add(1, Ordering::AcqRel);
                    }
                    // A send that failed over too long is not acknowledged: nothing to check.
                    Err(_) => failed += 1,
                }
            }
            (done, failed)
        }));
    }

    until_async(
        "transactions before the kill",
        Duration::from_secs(60),
        || async {
            let n = acked.load(Ordering::Acquire);
            if n >= BEFORE_KILL { Ok(()) } else { Err(n) }
        },
    )
    .await;

    // Hold every sender between its half message and its answer, then kill the leader.
    hold.store(true, Ordering::Release);
    until_async(
        "every sender held between half and commit",
        Duration::from_secs(30),
        || async {
            let n = held.load(Ordering::Acquire);
            if n >= SENDERS { Ok(()) } else { Err(n) }
        },
    )
    .await;
    let table = registered(&client, &namesrv, BROKER_NAME).await;
    let master = table.get(&0).cloned().expect("a master");
    let leader = nodes
        .iter()
        .position(|n| n.broker_addr == master)
        .expect("the leader");
    procs[leader].kill9();
    wait_registered(
        &client,
        &namesrv,
        BROKER_NAME,
        "a new master",
        Duration::from_secs(30),
        |t| t.get(&0).is_some_and(|m| *m != master),
    )
    .await;
    let new_master = registered(&client, &namesrv, BROKER_NAME)
        .await
        .get(&0)
        .cloned()
        .expect("a new master");
    hold.store(false, Ordering::Release);
    released.notify_waiters();
    let acked_at_kill = acked.load(Ordering::Acquire);

    until_async(
        "transactions after the kill",
        Duration::from_secs(60),
        || async {
            let n = acked.load(Ordering::Acquire);
            if n >= acked_at_kill + AFTER_KILL {
                Ok(())
            } else {
                Err(n)
            }
        },
    )
    .await;
    stop.store(true, Ordering::Release);
    let mut acknowledged: BTreeSet<usize> = BTreeSet::new();
    let mut failed = 0;
    for sender in senders {
        let (done, f) = sender.await.expect("sender");
        acknowledged.extend(done);
        failed += f;
    }
    procs[leader] = start_broker(&nodes[leader]);

    // Every replica settles every half message: nothing pending, each counted once.
    let mut statuses = Vec::new();
    for node in &nodes {
        let t = until_async(
            "every half message settled",
            Duration::from_secs(60),
            || async {
                let status = http_json(&node.http_addr, "/status").await;
                let t = status.map(|s| s["transactions"].clone());
                match t {
                    Some(t) if t["pending"] == 0 && t["halves"].as_u64() > Some(0) => Ok(t),
                    other => Err(other),
                }
            },
        )
        .await;
        statuses.push(t);
    }
    assert!(
        statuses.windows(2).all(|w| w[0]["halves"] == w[1]["halves"]
            && w[0]["commits"] == w[1]["commits"]
            && w[0]["rollbacks"] == w[1]["rollbacks"]),
        "every replica counts the same outcomes: {statuses:?}"
    );
    let t = &statuses[0];
    assert_eq!(
        t["given_up"], 0,
        "no transaction given up while the producer lived: {t}"
    );
    assert_eq!(
        t["halves"].as_u64(),
        Some(t["commits"].as_u64().unwrap_or(0) + t["rollbacks"].as_u64().unwrap_or(0)),
        "each half message has one outcome: {t}"
    );

    let new_leader = nodes
        .iter()
        .position(|n| n.broker_addr == new_master)
        .expect("the new leader");
    assert!(
        statuses[new_leader]["checks_sent"].as_u64() > Some(0),
        "the new leader checked the transactions left unknown: {}",
        statuses[new_leader]
    );

    // Each replica: every half message whose fate is commit is in the real topic exactly once
    // (by the half's place in the CommitLog), no rolled-back one ever, all in the same places.
    let mut layouts = Vec::new();
    for node in &nodes {
        let halves = read_topic(&client, node, system_topic::TRANS_HALF).await;
        let mut half_offsets: BTreeMap<i64, usize> = BTreeMap::new();
        for half in &halves {
            half_offsets.insert(half.commit_log_offset, index_of(&key_of(half)));
        }
        assert_eq!(half_offsets.len(), halves.len());
        let visible = read_topic(&client, node, TOPIC).await;
        let mut by_half: BTreeMap<i64, (String, i32, i64)> = BTreeMap::new();
        for m in &visible {
            let key = key_of(m);
            let i = index_of(&key);
            assert!(
                commits(i),
                "{}: {key} was rolled back but is visible",
                node.broker_addr
            );
            assert_eq!(
                half_offsets.get(&m.prepared_transaction_offset),
                Some(&i),
                "{}: {key} comes from a half message with its key",
                node.broker_addr
            );
            let place = (key.clone(), m.queue_id, m.queue_offset);
            if let Some(first) = by_half.insert(m.prepared_transaction_offset, place.clone()) {
                panic!(
                    "{}: half message at {} visible twice: {first:?} and {place:?}",
                    node.broker_addr, m.prepared_transaction_offset
                );
            }
        }
        for (offset, i) in &half_offsets {
            assert_eq!(
                by_half.contains_key(offset),
                commits(*i),
                "{}: half message tx-{i} at {offset} is visible exactly when it commits",
                node.broker_addr
            );
        }
        let visible_keys: BTreeSet<usize> = by_half.values().map(|(k, _, _)| index_of(k)).collect();
        for i in acknowledged.iter().filter(|i| commits(**i)) {
            assert!(
                visible_keys.contains(i),
                "{}: acknowledged committed tx-{i} is visible",
                node.broker_addr
            );
        }
        layouts.push(by_half);
    }
    assert!(
        layouts.windows(2).all(|w| w[0] == w[1]),
        "every replica holds the committed messages in the same places"
    );
    eprintln!(
        "{} transactions acknowledged ({failed} sends failed over), {} half messages, {} committed, {} rolled back",
        acknowledged.len(),
        t["halves"],
        t["commits"],
        t["rollbacks"]
    );
}
