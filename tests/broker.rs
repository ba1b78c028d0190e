//! A broker group in this process over real TCP on 127.0.0.1: bad input is refused with a
//! clear answer and the broker keeps serving; followers refuse writes and serve pulls; long
//! polls wake on arrival; offsets and consumer groups.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;
use testkit::wait::until_async;

use bytes::{BufMut, BytesMut};
use protocol::RemotingCommand;
use protocol::body::{self, ConsumerData, ConsumerListBody, HeartbeatData, SubscriptionData};
use protocol::code::{request, response};
use protocol::header::{
    CommandHeader, ConsumerGroupHeader, OffsetResponseHeader, PullMessageRequestHeader,
    PullMessageResponseHeader, QueryConsumerOffsetRequestHeader, SendMessageRequestHeader,
    SendMessageResponseHeader, UpdateConsumerOffsetRequestHeader, pull_flag,
};
use protocol::message::{Properties, StoredMessage, property};
use raftmq::cluster::{ClusterSpec, LocalCluster};
use remoting::{Connection, TcpTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(30);

async fn cluster(replicas: u64, dir: &std::path::Path) -> (LocalCluster, u64) {
    let spec = ClusterSpec {
        replicas,
        max_message_bytes: 64 * 1024,
        ..ClusterSpec::default()
    };
    let cluster = LocalCluster::start(&spec, dir).await.unwrap();
    let leader = cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
    (cluster, leader)
}

async fn connect(cluster: &LocalCluster, id: u64) -> Connection {
    let addr = cluster.replicas[&id].broker.local_addr().to_string();
    Connection::connect(&TcpTransport, &addr).await.unwrap().0
}

fn send_header(topic: &str, queue_id: i32, tags: &str) -> SendMessageRequestHeader {
    let mut properties = Properties::default();
    properties.set(property::TAGS, tags);
    SendMessageRequestHeader {
        producer_group: "pg".into(),
        topic: topic.into(),
        default_topic: "TBW102".into(),
        default_topic_queue_nums: 4,
        queue_id,
        sys_flag: 0,
        born_timestamp: 1,
        flag: 0,
        properties: Some(properties.encode()),
        ..Default::default()
    }
}

async fn send(
    conn: &Connection,
    header: &SendMessageRequestHeader,
    body: &[u8],
) -> RemotingCommand {
    let request =
        RemotingCommand::request(request::SEND_MESSAGE_V2, header.to_v2()).with_body(body.to_vec());
    conn.request(request, TIMEOUT).await.unwrap()
}

fn pull_request(topic: &str, queue_id: i32, offset: i64, suspend_ms: i64) -> RemotingCommand {
    let header = PullMessageRequestHeader {
        consumer_group: "cg".into(),
        topic: topic.into(),
        queue_id,
        queue_offset: offset,
        max_msg_nums: 32,
        sys_flag: if suspend_ms > 0 {
            pull_flag::SUSPEND
        } else {
            0
        },
        commit_offset: 0,
        suspend_timeout_millis: suspend_ms,
        subscription: None,
        sub_version: 0,
        expression_type: None,
        max_msg_bytes: None,
    };
    RemotingCommand::request(request::PULL_MESSAGE, header.to_ext())
}

fn frame(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u32((4 + header.len() + body.len()) as u32);
    out.put_u32(header.len() as u32);
    out.put_slice(header);
    out.put_slice(body);
    out.to_vec()
}

async fn raw_answer(stream: &mut tokio::net::TcpStream, bytes: &[u8]) -> Option<RemotingCommand> {
    stream.write_all(bytes).await.unwrap();
    let mut buf = BytesMut::new();
    loop {
        if let Some(frame) = protocol::split_frame(&mut buf).unwrap() {
            return Some(RemotingCommand::decode(&frame).unwrap());
        }
        let read = tokio::time::timeout(TIMEOUT, stream.read_buf(&mut buf))
            .await
            .unwrap();
        if read.unwrap() == 0 {
            return None;
        }
    }
}

/// Every kind of bad input gets an answer that names the problem, and the broker then stores
/// and serves a good message as if nothing happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, leader) = cluster(1, dir.path()).await;
    let addr = cluster.replicas[&leader].broker.local_addr().to_string();
    let conn = connect(&cluster, leader).await;

    // A good send first, so the topic exists with 4 queues.
    let ok = send(&conn, &send_header("T", 0, "a"), b"first").await;
    assert_eq!(ok.code, response::SUCCESS, "{:?}", ok.remark);

    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Malformed header: answered, same connection still usable.
    let answer = raw_answer(
        &mut stream,
        &frame(br#"{"opaque":5,"flag":0,"code":"x"}"#, b""),
    )
    .await
    .unwrap();
    assert_eq!((answer.code, answer.opaque), (response::SYSTEM_ERROR, 5));
    // Unknown request code.
    let answer = raw_answer(
        &mut stream,
        &frame(br#"{"code":7777,"opaque":6,"flag":0}"#, b""),
    )
    .await
    .unwrap();
    assert_eq!(answer.code, response::REQUEST_CODE_NOT_SUPPORTED);
    // Oversized frame: that connection is closed.
    assert!(
        raw_answer(&mut stream, &[0x7f, 0xff, 0xff, 0xff, 0, 0])
            .await
            .is_none()
    );

    let cases: Vec<(RemotingCommand, i32, &str)> = vec![
        (
            // Missing required header field.
            RemotingCommand::request(
                request::SEND_MESSAGE_V2,
                BTreeMap::from([("b".to_string(), "T".to_string())]),
            ),
            response::INVALID_PARAMETER,
            "producerGroup",
        ),
        (
            RemotingCommand::request(request::SEND_MESSAGE_V2, send_header("T", 0, "a").to_v2())
                .with_body(vec![0u8; 64 * 1024 + 1]),
            response::MESSAGE_ILLEGAL,
            "over the limit",
        ),
        (
            RemotingCommand::request(
                request::SEND_MESSAGE_V2,
                send_header("bad topic!", 0, "a").to_v2(),
            ),
            response::MESSAGE_ILLEGAL,
            "contains",
        ),
        (
            RemotingCommand::request(request::SEND_MESSAGE_V2, send_header("T", 99, "a").to_v2()),
            response::INVALID_PARAMETER,
            "queueId[99] is illegal",
        ),
        (
            RemotingCommand::request(
                request::SEND_BATCH_MESSAGE,
                send_header("T", 0, "a").to_v2(),
            )
            .with_body(vec![0, 0, 0, 200, 1]),
            response::MESSAGE_ILLEGAL,
            "bad batch body",
        ),
        (
            pull_request("Nope", 0, 0, 0),
            response::TOPIC_NOT_EXIST,
            "Nope",
        ),
        (
            pull_request("T", 17, 0, 0),
            response::INVALID_PARAMETER,
            "queueId[17] is illegal",
        ),
        (
            RemotingCommand::request(request::HEART_BEAT, BTreeMap::new()).with_body(&b"{nope"[..]),
            response::SYSTEM_ERROR,
            "malformed heartbeat body",
        ),
    ];
    for (request, code, needle) in cases {
        let what = request.code;
        let answer = conn.request(request, TIMEOUT).await.unwrap();
        assert_eq!(answer.code, code, "request {what}: {:?}", answer.remark);
        let remark = answer.remark.unwrap_or_default();
        assert!(
            remark.contains(needle),
            "request {what}: {remark:?} lacks {needle:?}"
        );
    }

    // Still serving: a good send and a pull of both good messages.
    let ok = send(&conn, &send_header("T", 0, "a"), b"second").await;
    assert_eq!(ok.code, response::SUCCESS);
    let answer = conn
        .request(pull_request("T", 0, 0, 0), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(answer.code, response::SUCCESS);
    let messages = StoredMessage::decode_all(&answer.body).unwrap();
    let bodies: Vec<&[u8]> = messages.iter().map(|m| m.body.as_ref()).collect();
    assert_eq!(bodies, [&b"first"[..], &b"second"[..]]);
    assert_eq!(messages[1].queue_offset, 1);
    cluster.shutdown().await;
}

/// A follower refuses sends with "not master" and serves pulls of what it has applied; the
/// message ids the leader answers with resolve to the message on every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_refuse_writes_and_serve_pulls() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, leader) = cluster(3, dir.path()).await;
    let follower = *cluster.replicas.keys().find(|id| **id != leader).unwrap();
    let to_leader = connect(&cluster, leader).await;
    let to_follower = connect(&cluster, follower).await;
    let sent = send(&to_leader, &send_header("F", 1, "a"), b"replicated").await;
    assert_eq!(sent.code, response::SUCCESS);
    let sent = SendMessageResponseHeader::from_ext(&sent.ext_fields).unwrap();

    let refused = send(&to_follower, &send_header("F", 1, "a"), b"nope").await;
    assert_eq!(refused.code, response::SERVICE_NOT_AVAILABLE);
    assert!(refused.remark.unwrap().contains("not master"));

    let messages = until_async("the follower to serve the message", TIMEOUT, || async {
        let answer = to_follower
            .request(pull_request("F", 1, 0, 0), TIMEOUT)
            .await
            .unwrap();
        if answer.code == response::SUCCESS {
            Ok(StoredMessage::decode_all(&answer.body).unwrap())
        } else {
            Err(answer.remark)
        }
    })
    .await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].body.as_ref(), b"replicated");
    let (_, offset) = protocol::message::decode_offset_msg_id(&sent.msg_id).unwrap();
    assert_eq!(
        messages[0].commit_log_offset, offset,
        "same commit-log offset on the follower"
    );
    cluster.shutdown().await;
}

/// A held pull is answered as soon as a message arrives on its queue, not at its timeout (the
/// suspend time is longer than the request's own timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, leader) = cluster(1, dir.path()).await;
    let conn = std::sync::Arc::new(connect(&cluster, leader).await);
    let created = send(&conn, &send_header("L", 2, "a"), b"zero").await;
    assert_eq!(created.code, response::SUCCESS);
    let mut held = tokio::spawn({
        let conn = conn.clone();
        async move {
            conn.request(pull_request("L", 2, 1, 120_000), TIMEOUT)
                .await
        }
    });
    // The pull is held: a NOT_FOUND answer would have come back at once.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut held)
            .await
            .is_err(),
        "the pull was not held"
    );
    let sent = send(&conn, &send_header("L", 2, "a"), b"one").await;
    assert_eq!(sent.code, response::SUCCESS);
    let answer = held.await.unwrap().unwrap();
    assert_eq!(answer.code, response::SUCCESS);
    let header = PullMessageResponseHeader::from_ext(&answer.ext_fields).unwrap();
    assert_eq!(header.next_begin_offset, 2);
    cluster.shutdown().await;
}

fn heartbeat(client: &str, group: &str) -> RemotingCommand {
    let data = HeartbeatData {
        client_id: client.into(),
        consumer_data_set: vec![ConsumerData {
            consume_from_where: "CONSUME_FROM_LAST_OFFSET".into(),
            consume_type: "CONSUME_PASSIVELY".into(),
            group_name: group.into(),
            message_model: "CLUSTERING".into(),
            subscription_data_set: vec![SubscriptionData {
                class_filter_mode: false,
                code_set: Default::default(),
                expression_type: "TAG".into(),
                sub_string: "*".into(),
                sub_version: 1,
                tags_set: Default::default(),
                topic: "G".into(),
            }],
            unit_mode: false,
        }],
        producer_data_set: vec![],
    };
    RemotingCommand::request(request::HEART_BEAT, BTreeMap::new()).with_body(body::to_json(&data))
}

/// Consumers heartbeat into a group; a member leaving makes the broker notify the others;
/// committed offsets are read back, also by another replica after failover of the reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_groups_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, leader) = cluster(3, dir.path()).await;
    let addr = cluster.replicas[&leader].broker.local_addr().to_string();
    let (first, mut first_inbound) = Connection::connect(&TcpTransport, &addr).await.unwrap();
    let (second, _) = Connection::connect(&TcpTransport, &addr).await.unwrap();
    assert_eq!(
        first
            .request(heartbeat("c1", "g1"), TIMEOUT)
            .await
            .unwrap()
            .code,
        response::SUCCESS
    );
    assert_eq!(
        second
            .request(heartbeat("c2", "g1"), TIMEOUT)
            .await
            .unwrap()
            .code,
        response::SUCCESS
    );
    let list = first
        .request(
            RemotingCommand::request(
                request::GET_CONSUMER_LIST_BY_GROUP,
                ConsumerGroupHeader {
                    consumer_group: "g1".into(),
                }
                .to_ext(),
            ),
            TIMEOUT,
        )
        .await
        .unwrap();
    let list: ConsumerListBody = body::parse(&list.body, "list").unwrap();
    assert_eq!(list.consumer_id_list, ["c1", "c2"]);
    // The second member joined: the first is told to rebalance; then the second leaves.
    let notice = tokio::time::timeout(TIMEOUT, first_inbound.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(notice.code, request::NOTIFY_CONSUMER_IDS_CHANGED);
    drop(second);
    let notice = tokio::time::timeout(TIMEOUT, first_inbound.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(notice.ext_fields["consumerGroup"], "g1");

    let send_ok = send(&first, &send_header("G", 0, "a"), b"x").await;
    assert_eq!(send_ok.code, response::SUCCESS);
    let update = UpdateConsumerOffsetRequestHeader {
        consumer_group: "g1".into(),
        topic: "G".into(),
        queue_id: 0,
        commit_offset: 1,
    };
    let answer = first
        .request(
            RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET, update.to_ext()),
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(answer.code, response::SUCCESS);
    let query = QueryConsumerOffsetRequestHeader {
        consumer_group: "g1".into(),
        topic: "G".into(),
        queue_id: 0,
        set_zero_if_not_found: None,
    };
    // Every replica learns the offset through the log.
    for id in cluster.replicas.keys() {
        let conn = connect(&cluster, *id).await;
        let what = format!("replica {id} to see the committed offset");
        until_async(&what, TIMEOUT, || async {
            let answer = conn
                .request(
                    RemotingCommand::request(request::QUERY_CONSUMER_OFFSET, query.to_ext()),
                    TIMEOUT,
                )
                .await
                .unwrap();
            let offset = OffsetResponseHeader::from_ext(&answer.ext_fields)
                .map(|h| h.offset)
                .unwrap_or(-1);
            if offset == 1 { Ok(()) } else { Err(offset) }
        })
        .await;
    }
    cluster.shutdown().await;
}

async fn pull_bodies(conn: &Connection, topic: &str, queue_id: i32) -> Vec<Vec<u8>> {
    let answer = conn
        .request(pull_request(topic, queue_id, 0, 0), TIMEOUT)
        .await
        .unwrap();
    if answer.code != response::SUCCESS {
        return Vec::new();
    }
    StoredMessage::decode_all(&answer.body)
        .unwrap()
        .into_iter()
        .map(|m| m.body.to_vec())
        .collect()
}

/// A restarted replica serves what it stored, and queue offsets continue densely: after a
/// clean stop (checkpoint), after losing its checkpoint (everything re-applied from the log),
/// and after losing its consume-queue files (rebuilt from the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_or_rebuilds_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("node-1/store");
    let mut expected = Vec::new();
    for (round, damage) in ["none", "checkpoint", "consume queues", "none"]
        .into_iter()
        .enumerate()
    {
        let (cluster, leader) = cluster(1, dir.path()).await;
        let conn = connect(&cluster, leader).await;
        assert_eq!(
            pull_bodies(&conn, "R", 0).await,
            expected,
            "after damage: {damage}"
        );
        let body = format!("round-{round}").into_bytes();
        let sent = send(&conn, &send_header("R", 0, "a"), &body).await;
        assert_eq!(sent.code, response::SUCCESS);
        let sent = SendMessageResponseHeader::from_ext(&sent.ext_fields).unwrap();
        assert_eq!(
            sent.queue_offset,
            expected.len() as i64,
            "offsets continue densely"
        );
        expected.push(body);
        drop(conn);
        cluster.shutdown().await;
        match damage {
            "checkpoint" => std::fs::remove_file(store_dir.join("checkpoint")).unwrap(),
            "consume queues" => {
                for entry in std::fs::read_dir(store_dir.join("consumequeue/R/0")).unwrap() {
                    std::fs::remove_file(entry.unwrap().path()).unwrap();
                }
            }
            _ => {}
        }
    }
}
