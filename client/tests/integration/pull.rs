//! Pull consumer: reading back in order, tag filtering, offsets, long polling.

use std::time::Duration;

use client::{
    BoundaryType, Message, MessageQueue, Producer, ProducerConfig, PullConsumer,
    PullConsumerConfig, PullStatus,
};
use protocol::code::request;
use protocol::message::property;
use remoting::TcpTransport;

use crate::fake::Cluster;

const CALL: Duration = Duration::from_secs(3);

async fn clients(cluster: &Cluster) -> (Producer, PullConsumer) {
    let producer = Producer::start(
        TcpTransport,
        cluster.client_config(),
        ProducerConfig::new("pg"),
    )
    .await
    .unwrap();
    let consumer = PullConsumer::start(
        TcpTransport,
        cluster.client_config(),
        PullConsumerConfig::new("cg"),
    )
    .await
    .unwrap();
    (producer, consumer)
}

fn queue0() -> MessageQueue {
    MessageQueue {
        broker_name: "broker-a".into(),
        queue_id: 0,
        topic: "T".into(),
    }
}

/// Messages come back in queue order with their offsets and bounds; a TAG expression keeps
/// only its tags, including when another tag has the same hash (the broker cannot tell "Aa"
/// from "BB"; the client's exact re-filter does); pulls at the end and past it answer
/// NO_NEW_MSG and OFFSET_ILLEGAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_reads_back_in_order_with_tag_filtering() {
    let cluster = Cluster::start(&["broker-a"]).await;
    cluster.create_topic("T", 4);
    let (producer, consumer) = clients(&cluster).await;
    let queues = consumer.fetch_subscribe_queues("T").await.unwrap();
    assert_eq!(queues.len(), 4);
    assert_eq!(queues[0], queue0());
    let tags = ["Aa", "BB", "TagC"];
    for i in 0..9 {
        let message = Message::new("T", format!("m{i}")).with_tags(tags[i % 3]);
        producer.send_to_queue(message, &queue0()).await.unwrap();
    }
    let all = consumer.pull(&queue0(), "*", 0, 32, CALL).await.unwrap();
    assert_eq!(all.status, PullStatus::Found);
    assert_eq!(
        (all.next_begin_offset, all.min_offset, all.max_offset),
        (9, 0, 9)
    );
    let offsets: Vec<i64> = all.messages.iter().map(|m| m.queue_offset).collect();
    assert_eq!(offsets, (0..9).collect::<Vec<_>>());
    assert_eq!(all.messages[4].body, "m4".as_bytes());
    assert_eq!(all.messages[4].properties.get("MAX_OFFSET"), Some("9"));

    let aa = consumer.pull(&queue0(), "Aa", 0, 32, CALL).await.unwrap();
    assert_eq!(aa.status, PullStatus::Found);
    let got: Vec<(i64, &str)> = aa
        .messages
        .iter()
        .map(|m| (m.queue_offset, m.properties.get(property::TAGS).unwrap()))
        .collect();
    assert_eq!(
        got,
        [(0, "Aa"), (3, "Aa"), (6, "Aa")],
        "BB shares Aa's hash"
    );
    let some = consumer
        .pull(&queue0(), "BB || TagC", 2, 3, CALL)
        .await
        .unwrap();
    let offsets: Vec<i64> = some.messages.iter().map(|m| m.queue_offset).collect();
    assert_eq!(offsets, [2, 4]);
    assert_eq!(some.next_begin_offset, 5);

    let none = consumer.pull(&queue0(), "Nope", 0, 32, CALL).await.unwrap();
    assert_eq!(none.status, PullStatus::NoMatchedMsg);
    assert_eq!(none.next_begin_offset, 9);
    let end = consumer.pull(&queue0(), "*", 9, 32, CALL).await.unwrap();
    assert_eq!(
        (end.status, end.next_begin_offset),
        (PullStatus::NoNewMsg, 9)
    );
    let past = consumer.pull(&queue0(), "*", 50, 32, CALL).await.unwrap();
    assert_eq!(
        (past.status, past.next_begin_offset),
        (PullStatus::OffsetIllegal, 9)
    );
    cluster.shutdown().await;
}

/// A compressed body comes back inflated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_bodies_are_inflated() {
    let cluster = Cluster::start(&["broker-a"]).await;
    cluster.create_topic("T", 1);
    let (producer, consumer) = clients(&cluster).await;
    let body = "compress me ".repeat(1000);
    producer
        .send(Message::new("T", body.clone()))
        .await
        .unwrap();
    let pulled = consumer.pull(&queue0(), "*", 0, 1, CALL).await.unwrap();
    assert_eq!(pulled.messages[0].body, body.as_bytes());
    assert_eq!(pulled.messages[0].sys_flag, 0);
    cluster.shutdown().await;
}

/// Consumer offsets: none at first, then what was committed; the queue's bounds; the offset
/// of a store time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_queried_committed_and_searched() {
    let cluster = Cluster::start(&["broker-a"]).await;
    cluster.create_topic("T", 4);
    let (producer, consumer) = clients(&cluster).await;
    for i in 0..5 {
        producer
            .send_to_queue(Message::new("T", format!("m{i}")), &queue0())
            .await
            .unwrap();
    }
    consumer.fetch_subscribe_queues("T").await.unwrap();
    assert_eq!(consumer.query_offset(&queue0()).await.unwrap(), None);
    consumer.commit_offset(&queue0(), 3).await.unwrap();
    assert_eq!(consumer.query_offset(&queue0()).await.unwrap(), Some(3));
    assert_eq!(cluster.broker(0).committed("cg", "T", 0), Some(3));
    assert_eq!(consumer.max_offset(&queue0()).await.unwrap(), 5);
    assert_eq!(consumer.min_offset(&queue0()).await.unwrap(), 0);
    let third = &cluster.broker(0).messages("T", 0)[2];
    let found = consumer
        .search_offset(&queue0(), third.store_timestamp, BoundaryType::Lower)
        .await
        .unwrap();
    assert!(
        found <= 2,
        "the first message stored at or after that time: {found}"
    );
    assert_eq!(
        consumer
            .search_offset(&queue0(), i64::MAX, BoundaryType::Upper)
            .await
            .unwrap(),
        5
    );
    assert!(consumer.heartbeat().await >= 1);
    assert!(cluster.broker(0).count(request::HEART_BEAT) >= 1);
    consumer.shutdown().await;
    cluster.shutdown().await;
}

/// A blocking pull at the end of the queue is held by the broker and answered as soon as a
/// message arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_pull_wakes_on_arrival() {
    let cluster = Cluster::start(&["broker-a"]).await;
    cluster.create_topic("T", 1);
    let (producer, consumer) = clients(&cluster).await;
    consumer.fetch_subscribe_queues("T").await.unwrap();
    let consumer = std::sync::Arc::new(consumer);
    let pulling = {
        let consumer = consumer.clone();
        tokio::spawn(async move {
            consumer
                .pull_block_if_not_found(&queue0(), "*", 0, 32, Duration::from_secs(20))
                .await
        })
    };
    producer.send(Message::new("T", "wake up")).await.unwrap();
    let pulled = tokio::time::timeout(crate::fake::TIMEOUT, pulling)
        .await
        .expect("answered well before the 20 s hold")
        .unwrap()
        .unwrap();
    assert_eq!(pulled.status, PullStatus::Found);
    assert_eq!(pulled.messages[0].body, "wake up".as_bytes());
    cluster.shutdown().await;
}
