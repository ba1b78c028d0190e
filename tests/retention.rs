//! Retention with real processes: a name server and three `raftmq broker -c broker.conf`
//! processes with small CommitLog segments and seconds of retention
//! (`fileReservedTimeSecs`). Under continuous produce and consume the leader cuts expired
//! segments through the log; every replica exposes the same min offsets; a pull below them
//! answers PULL_OFFSET_MOVED with the min, and a late consumer group starts there; a follower
//! wiped after the cut catches up through a snapshot and serves what the leader serves. A
//! second test arms deletion by request (`raftmq admin delete-expired`) outside `deleteWhen`,
//! and fills the disk (`diskUsageOverrideFile`): sends are refused with RocketMQ's answer while
//! pulls go on, and taken again once usage is at or below 85 %.

#[path = "support/procs.rs"]
mod procs;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{Message, StoredMessage};
use procs::{Node, Proc, http_json, raftmq, registered, start_broker, start_namesrv};
use protocol::RemotingCommand;
use protocol::body::perm;
use protocol::code::{request, response};
use protocol::header::{
    CommandHeader, PullMessageRequestHeader, PullMessageResponseHeader, pull_flag,
};
use protocol::message::property;
use remoting::TcpTransport;
use testkit::wait::until_async;

const TOPIC: &str = "KeptTopic";
const QUEUES: i32 = 4;
/// 9 MiB segments: the smallest a broker.conf may ask for (an entry of 8 MiB must fit).
const SEGMENT_BYTES: u64 = 9 * 1024 * 1024;
const BODY_BYTES: usize = 4096;
const CALL: Duration = Duration::from_secs(5);

type Client = remoting::Client<TcpTransport>;

/// Settings of every replica: small segments, seconds of retention, a fast cleaner, and a
/// usage file the test writes.
fn extra(usage_file: &std::path::Path, delete_when: &str, reserved_secs: u64) -> String {
    format!(
        "mappedFileSizeCommitLog={SEGMENT_BYTES}\nfileReservedTimeSecs={reserved_secs}\n\
         deleteWhen={delete_when}\ncleanResourceInterval=300\ndiskUsageOverrideFile={}\n",
        usage_file.display()
    )
}

/// A replica's `/status` section `retention`.
async fn retention(node: &Node) -> Option<serde_json::Value> {
    Some(http_json(&node.http_addr, "/status").await?["retention"].clone())
}

/// First position kept on a replica.
async fn first_position(node: &Node) -> Option<u64> {
    retention(node).await?["first_position"].as_u64()
}

/// A replica's (min, max) offsets of each queue of `TOPIC`, from GET_MIN_OFFSET and
/// GET_MAX_OFFSET.
async fn bounds(client: &Client, broker: &str) -> Result<Vec<(i64, i64)>, String> {
    let mut out = Vec::new();
    for queue_id in 0..QUEUES {
        let mut pair = [0i64; 2];
        for (slot, code) in [request::GET_MIN_OFFSET, request::GET_MAX_OFFSET]
            .into_iter()
            .enumerate()
        {
            let ext = BTreeMap::from([
                ("topic".to_string(), TOPIC.to_string()),
                ("queueId".to_string(), queue_id.to_string()),
            ]);
            let answer = client
                .request(broker, RemotingCommand::request(code, ext), CALL)
                .await
                .map_err(|e| e.to_string())?;
            pair[slot] = answer
                .ext_fields
                .get("offset")
                .and_then(|o| o.parse().ok())
                .ok_or_else(|| format!("code {code}: {:?}", answer.remark))?;
        }
        out.push((pair[0], pair[1]));
    }
    Ok(out)
}

/// One pull of queue `queue_id` at `offset`: the answer's code, next begin offset, messages.
async fn pull(
    client: &Client,
    broker: &str,
    queue_id: i32,
    offset: i64,
) -> Result<(i32, i64, Vec<StoredMessage>), String> {
    let header = PullMessageRequestHeader {
        consumer_group: "retention-check".into(),
        topic: TOPIC.into(),
        queue_id,
        queue_offset: offset,
        max_msg_nums: 64,
        sys_flag: pull_flag::SUBSCRIPTION,
        commit_offset: 0,
        suspend_timeout_millis: 0,
        subscription: Some("*".into()),
        sub_version: 0,
        expression_type: Some("TAG".into()),
        max_msg_bytes: None,
    };
    let answer = client
        .request(
            broker,
            RemotingCommand::request(request::PULL_MESSAGE, header.to_ext()),
            CALL,
        )
        .await
        .map_err(|e| e.to_string())?;
    let next = PullMessageResponseHeader::from_ext(&answer.ext_fields)
        .map_err(|e| e.to_string())?
        .next_begin_offset;
    let messages = if answer.code == response::SUCCESS {
        StoredMessage::decode_all(&answer.body).map_err(|e| e.to_string())?
    } else {
        Vec::new()
    };
    Ok((answer.code, next, messages))
}

/// The keys of queue `queue_id` from `from` to `to` on `broker`, by offset.
async fn keys_between(
    client: &Client,
    broker: &str,
    queue_id: i32,
    from: i64,
    to: i64,
) -> Vec<String> {
    let mut keys = Vec::new();
    while from + (keys.len() as i64) < to {
        let at = from + keys.len() as i64;
        let (code, _, messages) = pull(client, broker, queue_id, at).await.expect("pull");
        assert_eq!(code, response::SUCCESS, "{broker} queue {queue_id} at {at}");
        for m in messages {
            assert_eq!(m.queue_offset, from + keys.len() as i64);
            keys.push(m.properties.get(property::KEYS).expect("key").to_string());
        }
    }
    keys
}

/// Sends `count` messages of `BODY_BYTES` from `senders` tasks; returns (key, queue, offset) of
/// every acknowledged one.
async fn send_many(namesrv: &str, count: usize, senders: usize) -> Vec<(String, i32, i64)> {
    let producer = Arc::new(
        client::Producer::start(
            TcpTransport,
            client::ClientConfig::new([namesrv]),
            client::ProducerConfig::new("kept-pg"),
        )
        .await
        .expect("producer starts"),
    );
    let mut tasks = Vec::new();
    for s in 0..senders {
        let producer = producer.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in (s..count).step_by(senders) {
                let key = format!("kept-{i}");
                let message = Message::new(TOPIC, vec![b'k'; BODY_BYTES]).with_keys([key.clone()]);
                let sent = producer.send(message).await.expect("send acknowledged");
                acked.push((key, sent.queue.queue_id, sent.queue_offset));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.expect("sender"));
    }
    acked
}

/// A push consumer group from its first offset, recording the keys it gets.
async fn consume(
    namesrv: &str,
    group: &str,
) -> (
    client::PushConsumer<impl client::MessageListener>,
    Arc<Mutex<BTreeSet<String>>>,
) {
    let got: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let listener = client::listener_fn({
        let got = got.clone();
        move |_queue, messages: Vec<StoredMessage>| {
            let got = got.clone();
            async move {
                let mut got = got.lock().expect("keys");
                for m in messages {
                    if let Some(key) = m.properties.get(property::KEYS) {
                        got.insert(key.to_string());
                    }
                }
                client::ConsumeStatus::Success
            }
        }
    });
    let mut config = client::PushConsumerConfig::new(group).subscribe(TOPIC, "*");
    config.consume_from_where = client::ConsumeFromWhere::FirstOffset;
    config.rebalance_interval = Duration::from_secs(1);
    let consumer = client::PushConsumer::start(
        TcpTransport,
        client::ClientConfig::new([namesrv]),
        config,
        listener,
    )
    .await
    .expect("push consumer starts");
    (consumer, got)
}

/// Starts the name server and three replicas; returns them, their nodes and the master.
async fn cluster(
    dir: &std::path::Path,
    broker_name: &str,
    extra: &str,
) -> (Proc, String, Vec<Node>, Vec<Proc>, Client, String) {
    let (namesrv_proc, namesrv) = start_namesrv();
    let nodes = procs::write_confs(dir, &namesrv, broker_name, 3, extra);
    let procs: Vec<Proc> = nodes.iter().map(start_broker).collect();
    let (client, _inbound) = remoting::Client::new(TcpTransport);
    procs::wait_registered(
        &client,
        &namesrv,
        broker_name,
        "a master",
        Duration::from_secs(60),
        |t| t.contains_key(&0),
    )
    .await;
    let master = registered(&client, &namesrv, broker_name)
        .await
        .get(&0)
        .cloned()
        .expect("a master");
    let header = protocol::header::CreateTopicRequestHeader {
        topic: TOPIC.to_string(),
        default_topic: "TBW102".into(),
        read_queue_nums: QUEUES,
        write_queue_nums: QUEUES,
        perm: perm::READ | perm::WRITE,
        topic_filter_type: "SINGLE_TAG".into(),
        topic_sys_flag: None,
        order: false,
        attributes: None,
    };
    let ext = header.to_ext();
    let answer = client
        .request(
            &master,
            RemotingCommand::request(request::UPDATE_AND_CREATE_TOPIC, ext),
            CALL,
        )
        .await
        .expect("create topic");
    assert_eq!(answer.code, response::SUCCESS, "{:?}", answer.remark);
    (namesrv_proc, namesrv, nodes, procs, client, master)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_cuts_under_load_and_a_wiped_follower_catches_up_by_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let usage = dir.path().join("usage");
    std::fs::write(&usage, "0.10").expect("usage file");
    let (_namesrv_proc, namesrv, nodes, mut procs, client, master) =
        cluster(dir.path(), "broker-r", &extra(&usage, "*", 3)).await;
    let leader = nodes
        .iter()
        .position(|n| n.broker_addr == master)
        .expect("the leader");

    // Continuous produce and consume: about nine segments' worth.
    let (live, consumed) = consume(&namesrv, "kept-live").await;
    let acked = send_many(&namesrv, 20_000, 16).await;
    assert_eq!(acked.len(), 20_000);
    until_async(
        "the leader to cut expired segments",
        Duration::from_secs(60),
        || async {
            match first_position(&nodes[leader]).await {
                Some(p) if p > 0 => Ok(p),
                other => Err(other),
            }
        },
    )
    .await;
    // Once everything but the active segment expired, the cut stops moving.
    until_async(
        "every segment but the active one to go",
        Duration::from_secs(60),
        || async {
            match retention(&nodes[leader]).await {
                Some(r) if r["segments"].as_u64() == Some(1) => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;
    let leader_bounds = bounds(&client, &master).await.expect("leader bounds");
    assert!(
        leader_bounds.iter().any(|(min, _)| *min > 0),
        "queue min offsets moved up: {leader_bounds:?}"
    );
    // Every acknowledged message at or past its queue's min is still there, in order, and
    // the live consumer got each of them.
    let mut expected: BTreeMap<i32, BTreeMap<i64, String>> = BTreeMap::new();
    for (key, queue_id, offset) in &acked {
        expected
            .entry(*queue_id)
            .or_default()
            .insert(*offset, key.clone());
    }
    for (queue_id, (min, max)) in leader_bounds.iter().enumerate() {
        let queue_id = queue_id as i32;
        let keys = keys_between(&client, &master, queue_id, *min, *max).await;
        let want: Vec<String> = expected
            .get(&queue_id)
            .map(|m| m.range(*min..*max).map(|(_, k)| k.clone()).collect())
            .unwrap_or_default();
        assert_eq!(keys, want, "queue {queue_id} from {min} to {max}");
    }
    until_async(
        "the live consumer to get every retained message",
        Duration::from_secs(60),
        || async {
            let got = consumed.lock().expect("keys").clone();
            let missing = leader_bounds
                .iter()
                .enumerate()
                .flat_map(|(q, (min, max))| {
                    expected
                        .get(&(q as i32))
                        .into_iter()
                        .flat_map(move |m| m.range(*min..*max).map(|(_, k)| k.clone()))
                })
                .filter(|k| !got.contains(k))
                .count();
            if missing == 0 { Ok(()) } else { Err(missing) }
        },
    )
    .await;
    live.shutdown().await;

    // A pull below the min answers PULL_OFFSET_MOVED with the min.
    let (queue_id, (min, _)) = leader_bounds
        .iter()
        .enumerate()
        .find(|(_, (min, _))| *min > 0)
        .expect("a queue cut");
    let (code, next, _) = pull(&client, &master, queue_id as i32, 0)
        .await
        .expect("pull");
    assert_eq!((code, next), (response::PULL_OFFSET_MOVED, *min));
    // A consumer group far behind (new, from its first offset) moves on to the min.
    let (late, late_got) = consume(&namesrv, "kept-late").await;
    let retained: usize = leader_bounds
        .iter()
        .map(|(min, max)| (max - min) as usize)
        .sum();
    until_async(
        "the late consumer to get the retained messages",
        Duration::from_secs(60),
        || async {
            let n = late_got.lock().expect("keys").len();
            if n == retained { Ok(()) } else { Err(n) }
        },
    )
    .await;
    late.shutdown().await;

    // Every replica exposes the same bounds.
    for node in &nodes {
        until_async(
            "every replica's bounds equal to the leader's",
            Duration::from_secs(30),
            || async {
                match bounds(&client, &node.broker_addr).await {
                    Ok(b) if b == leader_bounds => Ok(()),
                    other => Err(other),
                }
            },
        )
        .await;
    }

    // A follower wiped after the cut catches up through a snapshot.
    let follower = (leader + 1) % nodes.len();
    procs[follower].kill9();
    std::fs::remove_dir_all(&nodes[follower].store_dir).expect("follower data wiped");
    procs[follower] = start_broker(&nodes[follower]);
    let leader_first = first_position(&nodes[leader]).await.expect("leader status");
    until_async(
        "the wiped follower to be restored to the leader's cut",
        Duration::from_secs(60),
        || async {
            match (
                first_position(&nodes[follower]).await,
                bounds(&client, &nodes[follower].broker_addr).await,
            ) {
                (Some(p), Ok(b)) if p == leader_first && b == leader_bounds => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    for (queue_id, (min, max)) in leader_bounds.iter().enumerate() {
        let queue_id = queue_id as i32;
        assert_eq!(
            keys_between(&client, &nodes[follower].broker_addr, queue_id, *min, *max).await,
            keys_between(&client, &master, queue_id, *min, *max).await,
            "the restored follower serves queue {queue_id} as the leader does"
        );
    }
    let status = retention(&nodes[follower]).await.expect("follower status");
    assert_eq!(
        status["purged_through_index"],
        retention(&nodes[leader]).await.expect("leader status")["purged_through_index"],
        "the follower was restored to the leader's snapshot point"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_on_request_and_a_full_disk_refusing_sends() {
    let dir = tempfile::tempdir().expect("temp dir");
    let usage = dir.path().join("usage");
    std::fs::write(&usage, "0.10").expect("usage file");
    // An hour of the day that is not now (nor the next): only a request deletes.
    let hour = (procs::now_ms() / 3_600_000 + 12) % 24;
    let (_namesrv_proc, namesrv, nodes, _procs, client, master) = cluster(
        dir.path(),
        "broker-f",
        &extra(&usage, &format!("{hour:02}"), 1),
    )
    .await;
    let leader = nodes
        .iter()
        .position(|n| n.broker_addr == master)
        .expect("the leader");

    let acked = send_many(&namesrv, 6_000, 8).await;
    assert_eq!(acked.len(), 6_000);
    assert_eq!(
        first_position(&nodes[leader]).await,
        Some(0),
        "outside deleteWhen nothing is cut"
    );
    let output = raftmq()
        .args(["admin", "delete-expired", "--broker", &master])
        .output()
        .expect("raftmq admin runs");
    assert!(output.status.success(), "{output:?}");
    let line: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    assert_eq!(line["ok"], true, "{line}");
    until_async(
        "the requested deletion",
        Duration::from_secs(60),
        || async {
            match first_position(&nodes[leader]).await {
                Some(p) if p > 0 => Ok(p),
                other => Err(other),
            }
        },
    )
    .await;

    // The disk fills: sends are refused with RocketMQ's answer, pulls go on.
    let producer = client::Producer::start(
        TcpTransport,
        client::ClientConfig::new([namesrv.as_str()]),
        client::ProducerConfig::new("full-pg"),
    )
    .await
    .expect("producer starts");
    std::fs::write(&usage, "0.95").expect("usage file");
    let refused = until_async(
        "sends refused on a full disk",
        Duration::from_secs(30),
        || {
            let producer = &producer;
            async move {
                match producer.send(Message::new(TOPIC, b"full".to_vec())).await {
                    Err(err) if err.to_string().contains("disk is full") => Ok(err.to_string()),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    assert!(refused.contains("service not available now"), "{refused}");
    let leader_bounds = bounds(&client, &master).await.expect("bounds");
    let (queue_id, (min, _)) = leader_bounds
        .iter()
        .enumerate()
        .find(|(_, (min, max))| max > min)
        .expect("a queue with messages");
    let (code, _, messages) = pull(&client, &master, queue_id as i32, *min)
        .await
        .expect("pull");
    assert_eq!(
        code,
        response::SUCCESS,
        "pulls go on while the disk is full"
    );
    assert!(!messages.is_empty());
    // Above 85 % it stays full (hysteresis) ...
    std::fs::write(&usage, "0.87").expect("usage file");
    until_async(
        "the cleaner to read 0.87",
        Duration::from_secs(30),
        || async {
            match retention(&nodes[leader]).await {
                Some(r) if r["disk_used_ratio"].as_f64() == Some(0.87) => Ok(r),
                other => Err(other),
            }
        },
    )
    .await;
    assert_eq!(
        retention(&nodes[leader]).await.expect("status")["disk_full"],
        true
    );
    let err = producer
        .send(Message::new(TOPIC, b"still full".to_vec()))
        .await
        .expect_err("refused above 85 %");
    assert!(err.to_string().contains("disk is full"), "{err}");
    // ... and at 85 % sends are taken again.
    std::fs::write(&usage, "0.85").expect("usage file");
    until_async("sends taken again", Duration::from_secs(30), || {
        let producer = &producer;
        async move {
            producer
                .send(Message::new(TOPIC, b"room again".to_vec()))
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    producer.shutdown().await;
}
