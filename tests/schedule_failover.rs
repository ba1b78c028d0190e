//! Scheduled delivery across failures, with real processes: a name server and three
//! `raftmq broker -c broker.conf` processes. Thousands of timer messages are sent due a few
//! seconds later; a follower is killed, its data wiped and restarted (it catches up from the
//! log, schedule included); then the leader is killed with `kill -9` while the messages fall
//! due, and restarted. In the end every replica holds each acknowledged scheduled message
//! exactly once in its real topic, stored no earlier than due, in the same places; a push
//! consumer got each one, none before its time.

#[path = "support/procs.rs"]
mod procs;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{Message, StoredMessage};
use procs::{
    Proc, http_json, now_ms, read_messages_from, registered, start_broker, start_namesrv,
    wait_registered, write_confs,
};
use protocol::message::property;
use remoting::TcpTransport;
use testkit::wait::until_async;

const TOPIC: &str = "DueTopic";
const BROKER_NAME: &str = "broker-s";
/// Scheduled messages sent.
const MESSAGES: usize = 3_000;
/// Senders at once.
const SENDERS: usize = 16;
/// The first message is due this long after the sends start; the last `SPREAD_MS` later.
const FIRST_DUE_MS: u64 = 12_000;
const SPREAD_MS: u64 = 6_000;

/// A message the consumer group got: its key, when (epoch ms), and its queue and offset.
type Arrival = (String, u64, (i32, i64));

/// Pending scheduled messages on a replica, from its `/status`.
async fn pending(node: &procs::Node) -> Option<u64> {
    http_json(&node.http_addr, "/status").await?["scheduled"]["pending"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_messages_survive_a_wiped_follower_and_a_killed_leader() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_namesrv_proc, namesrv) = start_namesrv();
    let nodes = write_confs(dir.path(), &namesrv, BROKER_NAME, 3, "");
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

    // A consumer group, started first, records when each message arrives.
    let arrived: Arc<Mutex<Vec<Arrival>>> = Arc::default();
    let listener = client::listener_fn({
        let arrived = arrived.clone();
        move |_queue, messages: Vec<StoredMessage>| {
            let arrived = arrived.clone();
            async move {
                let at = now_ms();
                let mut arrived = arrived.lock().expect("arrivals");
                for m in messages {
                    if let Some(key) = m.properties.get(property::KEYS) {
                        arrived.push((key.to_string(), at, (m.queue_id, m.queue_offset)));
                    }
                }
                client::ConsumeStatus::Success
            }
        }
    });
    let mut config = client::PushConsumerConfig::new("due-cg").subscribe(TOPIC, "*");
    config.consume_from_where = client::ConsumeFromWhere::FirstOffset;
    config.rebalance_interval = Duration::from_secs(1);
    let consumer = client::PushConsumer::start(
        TcpTransport,
        client::ClientConfig::new([namesrv.as_str()]),
        config,
        listener,
    )
    .await
    .expect("push consumer starts");

    // Thousands of timer messages, each due at its own time in a window a few seconds ahead.
    let producer = Arc::new(
        client::Producer::start(
            TcpTransport,
            client::ClientConfig::new([namesrv.as_str()]),
            client::ProducerConfig::new("due-pg"),
        )
        .await
        .expect("producer starts"),
    );
    let start = now_ms();
    let due_of =
        move |i: usize| (start + FIRST_DUE_MS + i as u64 * SPREAD_MS / MESSAGES as u64) as i64;
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let producer = producer.clone();
        senders.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in (s..MESSAGES).step_by(SENDERS) {
                let key = format!("due-{i}");
                let message = Message::new(TOPIC, vec![b'x'; 1024])
                    .with_keys([key.clone()])
                    .with_deliver_time_ms(due_of(i));
                match producer.send(message).await {
                    Ok(_) => acked.push((key, due_of(i))),
                    Err(err) => panic!("scheduled send {i} failed: {err}"),
                }
            }
            acked
        }));
    }
    let mut due: BTreeMap<String, i64> = BTreeMap::new();
    for sender in senders {
        due.extend(sender.await.expect("sender"));
    }
    let sent_by = now_ms();
    assert_eq!(due.len(), MESSAGES);
    assert!(
        sent_by < start + FIRST_DUE_MS - 2_000,
        "the sends took {} ms; nothing may be due yet",
        sent_by - start
    );
    eprintln!(
        "{MESSAGES} scheduled messages sent in {} ms",
        sent_by - start
    );

    // A follower loses everything and comes back: it catches up from the log.
    let table = registered(&client, &namesrv, BROKER_NAME).await;
    let master = table.get(&0).cloned().expect("a master");
    let follower = nodes
        .iter()
        .position(|n| n.broker_addr != master)
        .expect("a follower");
    procs[follower].kill9();
    std::fs::remove_dir_all(&nodes[follower].store_dir).expect("follower data wiped");
    procs[follower] = start_broker(&nodes[follower]);
    until_async(
        "the wiped follower to hold the schedule again",
        Duration::from_secs(60),
        || async {
            match pending(&nodes[follower]).await {
                Some(n) if n == MESSAGES as u64 => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;
    assert!(
        now_ms() < start + FIRST_DUE_MS,
        "the follower caught up before anything fell due"
    );

    // The leader dies while the messages fall due.
    let leader = nodes
        .iter()
        .position(|n| n.broker_addr == master)
        .expect("the leader");
    until_async(
        "deliveries under way on the leader",
        Duration::from_secs(60),
        || async {
            match pending(&nodes[leader]).await {
                Some(n) if n < MESSAGES as u64 * 3 / 4 && n > 0 => Ok(n),
                other => Err(other),
            }
        },
    )
    .await;
    procs[leader].kill9();
    let killed_at = now_ms();
    wait_registered(
        &client,
        &namesrv,
        BROKER_NAME,
        "a new master",
        Duration::from_secs(30),
        |t| t.get(&0).is_some_and(|m| *m != master),
    )
    .await;
    procs[leader] = start_broker(&nodes[leader]);
    eprintln!(
        "leader killed at +{} ms, {} ms after the first message was due",
        killed_at - start,
        killed_at as i64 - due_of(0)
    );

    // Every replica delivers everything: nothing pending anywhere.
    for node in &nodes {
        until_async(
            "every scheduled message delivered",
            Duration::from_secs(60),
            || async {
                match pending(node).await {
                    Some(0) => Ok(()),
                    other => Err(other),
                }
            },
        )
        .await;
    }

    // Each replica holds each message once, in its real topic, stored no earlier than due, and
    // all hold the same messages in the same places.
    let mut layouts = Vec::new();
    let mut stored_late: Vec<i64> = Vec::new();
    for node in &nodes {
        let mut at: BTreeMap<String, (i32, i64)> = BTreeMap::new();
        let status = http_json(&node.http_addr, "/status").await.expect("status");
        let queues = status["topics"]
            .as_array()
            .expect("topics")
            .iter()
            .find(|t| t["topic"] == TOPIC)
            .and_then(|t| t["queues"].as_array())
            .map_or(0, |q| q.len() as i32);
        assert!(queues > 0, "{} lists {TOPIC}", node.broker_addr);
        for queue_id in 0..queues {
            let messages =
                read_messages_from(&client, &node.broker_addr, TOPIC, queue_id, 0, true).await;
            for m in messages {
                let key = m.properties.get(property::KEYS).expect("a key").to_string();
                let due = due[&key];
                assert!(
                    m.store_timestamp >= due,
                    "{} stored {key} {} ms before it was due",
                    node.broker_addr,
                    due - m.store_timestamp
                );
                assert_eq!(
                    m.properties.get(property::TIMER_OUT_MS),
                    Some(due.to_string().as_str())
                );
                if layouts.is_empty() {
                    stored_late.push(m.store_timestamp - due);
                }
                let place = (m.queue_id, m.queue_offset);
                if let Some(first) = at.insert(key.clone(), place) {
                    panic!(
                        "{} holds {key} twice: at {first:?} and {place:?}",
                        node.broker_addr
                    );
                }
            }
        }
        assert_eq!(
            at.len(),
            MESSAGES,
            "{} holds every scheduled message",
            node.broker_addr
        );
        layouts.push(at);
    }
    assert!(
        layouts.windows(2).all(|w| w[0] == w[1]),
        "every replica holds them in the same places"
    );
    stored_late.sort_unstable();
    eprintln!(
        "stored after due: p50 {} ms, p99 {} ms, max {} ms",
        stored_late[stored_late.len() / 2],
        stored_late[stored_late.len() * 99 / 100],
        stored_late[stored_late.len() - 1]
    );

    // The consumer group got each one, none before its time; a redelivery (after the leader
    // died with offsets uncommitted) is the same stored message again.
    let arrivals = until_async(
        "the consumer group to get every scheduled message",
        Duration::from_secs(60),
        || async {
            let arrived = arrived.lock().expect("arrivals");
            let got: BTreeSet<&String> = arrived.iter().map(|(k, _, _)| k).collect();
            if got.len() == MESSAGES {
                Ok(arrived.clone())
            } else {
                Err(format!("{} of {MESSAGES}", got.len()))
            }
        },
    )
    .await;
    let mut lateness: Vec<i64> = Vec::new();
    let mut first_at: BTreeMap<&String, u64> = BTreeMap::new();
    for (key, at, place) in &arrivals {
        assert_eq!(
            *place, layouts[0][key],
            "{key} arrived from where it is stored"
        );
        assert!(
            *at as i64 >= due[key],
            "{key} arrived {} ms before it was due",
            due[key] - *at as i64
        );
        first_at.entry(key).or_insert_with(|| {
            lateness.push(*at as i64 - due[key]);
            *at
        });
    }
    lateness.sort_unstable();
    eprintln!(
        "lateness at the consumer: p50 {} ms, p99 {} ms, max {} ms; {} redeliveries",
        lateness[lateness.len() / 2],
        lateness[lateness.len() * 99 / 100],
        lateness[lateness.len() - 1],
        arrivals.len() - first_at.len()
    );
    consumer.shutdown().await;
}
