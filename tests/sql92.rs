//! SQL92 subscriptions against a broker in this process over real TCP: pulls carrying the
//! expression, subscriptions from heartbeats (and a group changing its expression),
//! CHECK_CLIENT_CONFIG, long polls that wake only for a matching message, bad expressions
//! answered SUBSCRIPTION_PARSE_FAILED while the broker keeps serving, and a broker with
//! `enablePropertyFilter` off.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use protocol::RemotingCommand;
use protocol::body::{self, ConsumerData, HeartbeatData, SubscriptionData};
use protocol::code::{request, response};
use protocol::header::{
    CommandHeader, PullMessageRequestHeader, PullMessageResponseHeader, SendMessageRequestHeader,
    pull_flag,
};
use protocol::message::{Properties, StoredMessage, property};
use raftmq::cluster::{ClusterSpec, LocalCluster};
use remoting::{Connection, TcpTransport};

const TIMEOUT: Duration = Duration::from_secs(30);
const TOPIC: &str = "Orders";

async fn start(dir: &std::path::Path, enable_property_filter: bool) -> (LocalCluster, Connection) {
    let spec = ClusterSpec {
        replicas: 1,
        enable_property_filter,
        ..ClusterSpec::default()
    };
    let cluster = LocalCluster::start(&spec, dir).await.unwrap();
    let leader = cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
    let addr = cluster.replicas[&leader].broker.local_addr().to_string();
    let conn = Connection::connect(&TcpTransport, &addr).await.unwrap().0;
    (cluster, conn)
}

/// Sends message `n` to queue 0 with `bucket` = n % 4, `region` and a tag.
async fn send(conn: &Connection, n: u32) {
    let mut properties = Properties::default();
    properties.set(
        property::TAGS,
        if n.is_multiple_of(2) { "even" } else { "odd" },
    );
    properties.set("bucket", (n % 4).to_string());
    properties.set("region", if n < 10 { "hz" } else { "sh" });
    let header = SendMessageRequestHeader {
        producer_group: "pg".into(),
        topic: TOPIC.into(),
        default_topic: "TBW102".into(),
        default_topic_queue_nums: 1,
        queue_id: 0,
        born_timestamp: 1,
        properties: Some(properties.encode()),
        ..Default::default()
    };
    let request = RemotingCommand::request(request::SEND_MESSAGE_V2, header.to_v2())
        .with_body(format!("m{n}").into_bytes());
    let answer = conn.request(request, TIMEOUT).await.unwrap();
    assert_eq!(answer.code, response::SUCCESS, "{:?}", answer.remark);
}

/// A pull of queue 0 from `offset`; `expression` (type, text) rides in the request when given,
/// else the group's heartbeat says.
fn pull(
    group: &str,
    offset: i64,
    expression: Option<(&str, &str)>,
    suspend_ms: i64,
) -> RemotingCommand {
    let mut sys_flag = 0;
    if expression.is_some() {
        sys_flag |= pull_flag::SUBSCRIPTION;
    }
    if suspend_ms > 0 {
        sys_flag |= pull_flag::SUSPEND;
    }
    let header = PullMessageRequestHeader {
        consumer_group: group.into(),
        topic: TOPIC.into(),
        queue_id: 0,
        queue_offset: offset,
        max_msg_nums: 32,
        sys_flag,
        commit_offset: 0,
        suspend_timeout_millis: suspend_ms,
        subscription: expression.map(|(_, text)| text.to_string()),
        sub_version: 0,
        expression_type: expression.map(|(kind, _)| kind.to_string()),
        max_msg_bytes: None,
    };
    RemotingCommand::request(request::PULL_MESSAGE, header.to_ext())
}

/// Pulls from 0 until the queue's end, returning the bodies taken and the offset reached.
async fn pull_all(
    conn: &Connection,
    group: &str,
    expression: Option<(&str, &str)>,
) -> (Vec<String>, i64) {
    let mut offset = 0;
    let mut bodies = Vec::new();
    loop {
        let answer = conn
            .request(pull(group, offset, expression, 0), TIMEOUT)
            .await
            .unwrap();
        let header = PullMessageResponseHeader::from_ext(&answer.ext_fields).unwrap();
        match answer.code {
            response::SUCCESS => {
                for m in StoredMessage::decode_all(&answer.body).unwrap() {
                    bodies.push(String::from_utf8(m.body.to_vec()).unwrap());
                }
            }
            response::PULL_RETRY_IMMEDIATELY => {}
            response::PULL_NOT_FOUND => return (bodies, header.next_begin_offset),
            other => panic!("pull answered {other}: {:?}", answer.remark),
        }
        assert!(header.next_begin_offset > offset, "the pull moves on");
        offset = header.next_begin_offset;
    }
}

fn heartbeat(group: &str, kind: &str, expression: &str, version: i64) -> RemotingCommand {
    let data = HeartbeatData {
        client_id: format!("client-of-{group}"),
        consumer_data_set: vec![ConsumerData {
            consume_from_where: "CONSUME_FROM_FIRST_OFFSET".into(),
            consume_type: "CONSUME_PASSIVELY".into(),
            group_name: group.into(),
            message_model: "CLUSTERING".into(),
            subscription_data_set: vec![SubscriptionData {
                class_filter_mode: false,
                code_set: Default::default(),
                expression_type: kind.into(),
                sub_string: expression.into(),
                sub_version: version,
                tags_set: Default::default(),
                topic: TOPIC.into(),
            }],
            unit_mode: false,
        }],
        producer_data_set: vec![],
    };
    RemotingCommand::request(request::HEART_BEAT, BTreeMap::new()).with_body(body::to_json(&data))
}

fn check_config(kind: &str, expression: &str) -> RemotingCommand {
    let body = serde_json::json!({
        "clientId": "c1",
        "group": "g",
        "subscriptionData": {
            "topic": TOPIC,
            "subString": expression,
            "expressionType": kind,
            "tagsSet": [],
            "codeSet": [],
            "subVersion": 1,
            "classFilterMode": false,
        }
    });
    RemotingCommand::request(request::CHECK_CLIENT_CONFIG, BTreeMap::new())
        .with_body(serde_json::to_vec(&body).unwrap())
}

fn expected(filter: impl Fn(u32) -> bool) -> Vec<String> {
    (0..20)
        .filter(|n| filter(*n))
        .map(|n| format!("m{n}"))
        .collect()
}

/// Pulls carrying SQL92 get exactly the matching messages, in order; heartbeat subscriptions
/// filter pulls without the expression, and a group that changes its expression gets the new
/// one; CHECK_CLIENT_CONFIG judges expressions; bad ones are refused with their place and the
/// broker keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql92_subscriptions_filter_on_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, conn) = start(dir.path(), true).await;
    for n in 0..20 {
        send(&conn, n).await;
    }
    let sql = |text| Some(("SQL92", text));
    assert_eq!(
        pull_all(&conn, "g1", sql("bucket = 2")).await,
        (expected(|n| n % 4 == 2), 20)
    );
    assert_eq!(
        pull_all(
            &conn,
            "g1",
            sql("region = 'sh' AND (bucket = 1 OR TAGS = 'even')")
        )
        .await
        .0,
        expected(|n| n >= 10 && (n % 4 == 1 || n % 2 == 0))
    );
    assert_eq!(
        pull_all(
            &conn,
            "g1",
            sql("bucket BETWEEN 1 AND 2 AND region IN ('hz')")
        )
        .await
        .0,
        expected(|n| n < 10 && (1..=2).contains(&(n % 4)))
    );
    assert_eq!(
        pull_all(&conn, "g1", sql("nothing IS NOT NULL")).await,
        (vec![], 20)
    );
    assert_eq!(
        pull_all(&conn, "g1", Some(("TAG", "odd"))).await.0,
        expected(|n| n % 2 == 1)
    );

    // From the heartbeat, then a newer expression.
    let answer = conn
        .request(heartbeat("g2", "SQL92", "bucket = 3", 1), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(answer.code, response::SUCCESS, "{:?}", answer.remark);
    assert_eq!(
        pull_all(&conn, "g2", None).await.0,
        expected(|n| n % 4 == 3)
    );
    let answer = conn
        .request(heartbeat("g2", "SQL92", "bucket = 0", 2), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(answer.code, response::SUCCESS);
    assert_eq!(
        pull_all(&conn, "g2", None).await.0,
        expected(|n| n % 4 == 0)
    );

    // CHECK_CLIENT_CONFIG.
    for (kind, text, code) in [
        ("SQL92", "bucket > 1", response::SUCCESS),
        ("TAG", "*", response::SUCCESS),
        ("SQL92", "bucket >", response::SUBSCRIPTION_PARSE_FAILED),
        ("SQL92", "", response::SUBSCRIPTION_PARSE_FAILED),
        ("CLASS", "x", response::SYSTEM_ERROR),
    ] {
        let answer = conn
            .request(check_config(kind, text), TIMEOUT)
            .await
            .unwrap();
        assert_eq!(answer.code, code, "{kind} {text:?}: {:?}", answer.remark);
    }

    // Bad expressions: in a pull, in a heartbeat (and that group's pulls).
    let answer = conn
        .request(pull("g1", 0, sql("bucket = = 1"), 0), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(answer.code, response::SUBSCRIPTION_PARSE_FAILED);
    let remark = answer.remark.unwrap_or_default();
    assert!(remark.contains("column 10"), "{remark}");
    let answer = conn
        .request(pull("g1", 0, sql("  "), 0), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(answer.code, response::SUBSCRIPTION_PARSE_FAILED);
    let answer = conn
        .request(heartbeat("g3", "SQL92", "region = 'hz", 1), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(answer.code, response::SUBSCRIPTION_PARSE_FAILED);
    assert!(answer.remark.unwrap_or_default().contains("g3"));
    let answer = conn.request(pull("g3", 0, None, 0), TIMEOUT).await.unwrap();
    assert_eq!(answer.code, response::SUBSCRIPTION_PARSE_FAILED);

    // Still serving.
    assert_eq!(pull_all(&conn, "g4", None).await.0.len(), 20);
    send(&conn, 20).await;
    assert_eq!(
        pull_all(&conn, "g1", sql("bucket = 0"))
            .await
            .0
            .last()
            .map(String::as_str),
        Some("m20")
    );
    cluster.shutdown().await;
}

/// A held pull with a selector is not answered by a message it does not take, and is by the
/// next one it does: with only that message, and past the one it skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_pull_wakes_only_for_a_matching_message() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, conn) = start(dir.path(), true).await;
    send(&conn, 0).await;
    let conn = std::sync::Arc::new(conn);
    let mut held = tokio::spawn({
        let conn = conn.clone();
        async move {
            conn.request(pull("g", 1, Some(("SQL92", "bucket = 2")), 60_000), TIMEOUT)
                .await
        }
    });
    send(&conn, 1).await;
    // The non-matching arrival does not answer it (a NOT_FOUND or RETRY would come at once).
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut held)
            .await
            .is_err(),
        "the held pull was answered by a message its selector does not take"
    );
    send(&conn, 2).await;
    let answer = held.await.unwrap().unwrap();
    assert_eq!(answer.code, response::SUCCESS, "{:?}", answer.remark);
    let bodies: Vec<_> = StoredMessage::decode_all(&answer.body)
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(bodies, vec![bytes::Bytes::from_static(b"m2")]);
    let header = PullMessageResponseHeader::from_ext(&answer.ext_fields).unwrap();
    assert_eq!(header.next_begin_offset, 3);
    cluster.shutdown().await;
}

/// With `enablePropertyFilter` off, SQL92 is refused as RocketMQ refuses it (pull and check),
/// and tag subscriptions are served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_property_filtering_refuses_sql92() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, conn) = start(dir.path(), false).await;
    for n in 0..4 {
        send(&conn, n).await;
    }
    let answer = conn
        .request(pull("g", 0, Some(("SQL92", "bucket = 1")), 0), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(answer.code, response::SYSTEM_ERROR);
    assert!(
        answer
            .remark
            .unwrap_or_default()
            .contains("does not support consumer to filter message by SQL92")
    );
    let answer = conn
        .request(check_config("SQL92", "bucket = 1"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(answer.code, response::SYSTEM_ERROR);
    assert_eq!(
        pull_all(&conn, "g", Some(("TAG", "even"))).await.0,
        vec!["m0", "m2"]
    );
    cluster.shutdown().await;
}

/// Our client's consumers with SQL92 selectors: a push consumer gets exactly the messages its
/// selector takes, each queue in order; a pull consumer too; tag subscriptions beside them are
/// unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_consumers_take_exactly_what_their_selector_takes() {
    use client::{
        ClientConfig, ConsumeFromWhere, ConsumeStatus, Message, MessageSelector, Producer,
        ProducerConfig, PullConsumer, PullConsumerConfig, PullStatus, PushConsumer,
        PushConsumerConfig, listener_fn,
    };
    let dir = tempfile::tempdir().unwrap();
    let (cluster, _conn) = start(dir.path(), true).await;
    let namesrv = cluster.namesrv.local_addr().to_string();
    let config = || ClientConfig::new([namesrv.as_str()]);
    let producer = Producer::start(TcpTransport, config(), ProducerConfig::new("sql-pg"))
        .await
        .unwrap();
    let mut wanted: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for i in 0..60u32 {
        let region = if i % 3 == 0 { "hz" } else { "sh" };
        let message = Message::new("Priced", format!("p{i}"))
            .with_tags(if i % 2 == 0 { "even" } else { "odd" })
            .with_property("price", (i * 10).to_string())
            .with_property("region", region);
        let sent = producer.send(message).await.unwrap();
        if region == "hz" && i * 10 > 200 {
            wanted
                .entry(sent.queue.queue_id)
                .or_default()
                .push(format!("p{i}"));
        }
    }
    let selector = "region = 'hz' AND price > 200";

    let (tx, mut rx) = tokio::sync::mpsc::channel::<client::StoredMessage>(1024);
    let listener = listener_fn(move |_queue, messages: Vec<client::StoredMessage>| {
        let tx = tx.clone();
        async move {
            for message in messages {
                let _ = tx.send(message).await;
            }
            ConsumeStatus::Success
        }
    });
    let mut push_config =
        PushConsumerConfig::new("sql-cg").subscribe("Priced", MessageSelector::by_sql(selector));
    push_config.consume_from_where = ConsumeFromWhere::FirstOffset;
    let consumer = PushConsumer::start(TcpTransport, config(), push_config, listener)
        .await
        .unwrap();
    let expected_count: usize = wanted.values().map(Vec::len).sum();
    assert!(expected_count > 0);
    let mut got: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for _ in 0..expected_count {
        let message = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap()
            .unwrap();
        got.entry(message.queue_id)
            .or_default()
            .push(String::from_utf8(message.body.to_vec()).unwrap());
    }
    assert_eq!(
        got, wanted,
        "exactly the matching messages, each queue in order"
    );
    consumer.shutdown().await;

    let puller = PullConsumer::start(TcpTransport, config(), PullConsumerConfig::new("sql-lite"))
        .await
        .unwrap();
    let mut pulled: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for queue in puller.fetch_subscribe_queues("Priced").await.unwrap() {
        let mut offset = 0;
        loop {
            let result = puller
                .pull(
                    &queue,
                    MessageSelector::by_sql(selector),
                    offset,
                    32,
                    TIMEOUT,
                )
                .await
                .unwrap();
            for m in &result.messages {
                pulled
                    .entry(queue.queue_id)
                    .or_default()
                    .push(String::from_utf8(m.body.to_vec()).unwrap());
            }
            if result.status == PullStatus::NoNewMsg {
                break;
            }
            offset = result.next_begin_offset;
        }
    }
    assert_eq!(pulled, wanted);
    let mut even = 0;
    for queue in puller.fetch_subscribe_queues("Priced").await.unwrap() {
        let tagged = puller.pull(&queue, "even", 0, 32, TIMEOUT).await.unwrap();
        assert!(
            tagged
                .messages
                .iter()
                .all(|m| m.properties.get(property::TAGS) == Some("even"))
        );
        even += tagged.messages.len();
    }
    assert_eq!(even, 30, "tag subscriptions as before");
    puller.shutdown().await;
    producer.shutdown().await;
    cluster.shutdown().await;
}
