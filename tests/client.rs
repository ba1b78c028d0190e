//! Our Rust client against a real in-process cluster (name server + 3 replicas over TCP):
//! sends of every kind come back with their queue offsets, and a clustering push consumer
//! receives every acknowledged message once, in per-queue order.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use client::{
    ClientConfig, ConsumeFromWhere, ConsumeStatus, Message, Producer, ProducerConfig, PushConsumer,
    PushConsumerConfig, StoredMessage, listener_fn,
};
use raftmq::cluster::{ClusterSpec, LocalCluster};
use remoting::TcpTransport;
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_produces_and_consumes_through_a_replica_group() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&ClusterSpec::default(), dir.path())
        .await
        .unwrap();
    cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
    let namesrv = cluster.namesrv.local_addr().to_string();
    let producer = Producer::start(
        TcpTransport,
        ClientConfig::new([namesrv.as_str()]),
        ProducerConfig::new("rust-pg"),
    )
    .await
    .unwrap();
    let mut acked = BTreeMap::new();
    for i in 0..30 {
        let message = Message::new("RustTopic", format!("m-{i}"))
            .with_tags("TagA")
            .with_keys([format!("k-{i}")]);
        let sent = producer.send(message).await.unwrap();
        acked.insert(format!("m-{i}"), (sent.queue.queue_id, sent.queue_offset));
    }
    let batch: Vec<Message> = (0..10)
        .map(|i| Message::new("RustTopic", format!("b-{i}")))
        .collect();
    let sent = producer.send_batch(batch).await.unwrap();
    for i in 0..10 {
        acked.insert(
            format!("b-{i}"),
            (sent.queue.queue_id, sent.queue_offset + i),
        );
    }

    let (tx, mut rx) = mpsc::channel::<StoredMessage>(1024);
    let listener = listener_fn(move |_queue, messages: Vec<StoredMessage>| {
        let tx = tx.clone();
        async move {
            for message in messages {
                let _ = tx.send(message).await;
            }
            ConsumeStatus::Success
        }
    });
    let mut config = PushConsumerConfig::new("rust-cg").subscribe("RustTopic", "*");
    config.consume_from_where = ConsumeFromWhere::FirstOffset;
    let consumer = PushConsumer::start(
        TcpTransport,
        ClientConfig::new([namesrv.as_str()]),
        config,
        listener,
    )
    .await
    .unwrap();
    let mut received = BTreeMap::new();
    let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while received.len() < acked.len() {
        let message = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap()
            .unwrap();
        let body = String::from_utf8(message.body.to_vec()).unwrap();
        let previous = last_offset.insert(message.queue_id, message.queue_offset);
        assert!(
            previous.is_none_or(|p| p < message.queue_offset),
            "per-queue order"
        );
        received.insert(body, (message.queue_id, message.queue_offset));
    }
    assert_eq!(
        received, acked,
        "every message at the queue and offset it was acknowledged with"
    );
    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.shutdown().await;
}
