//! Producer: every send mode, retries, route refresh, auto-creation.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use client::{ClientError, Message, Producer, ProducerConfig, SendStatus};
use protocol::code::request;
use protocol::message::{decode_offset_msg_id, property, sys_flag};
use remoting::TcpTransport;

use testkit::wait::{until, until_async};

use crate::fake::{Broker, Cluster, Mode, TIMEOUT, dead_addr};

async fn producer(cluster: &Cluster) -> Producer {
    Producer::start(
        TcpTransport,
        cluster.client_config(),
        ProducerConfig::new("pg"),
    )
    .await
    .unwrap()
}

/// Group `broker-a` with two replicas serving topic `T` (2 queues): the name server lists the
/// first (`old`) as master; the second (`new`) is not registered yet.
async fn two_replicas_old_master() -> (Cluster, Arc<Broker>, Arc<Broker>) {
    let mut cluster = Cluster::start(&["broker-a"]).await;
    cluster.create_topic("T", 2);
    let old = cluster.broker(0).clone();
    let new = cluster.add_broker("broker-a", false).await;
    new.create_topic("T", 2);
    // `create_topic` registered the new replica as master; put the old one back first.
    cluster.ns.set_addrs("broker-a", &[(0, &old.addr())]);
    (cluster, old, new)
}

/// A synchronous send comes back with the queue and queue offset the broker assigned, the
/// client's UNIQ_KEY as message id and the broker's offset message id; round-robin covers
/// every queue, and tags, keys, flag and user properties arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_send_returns_queue_and_offset() {
    let cluster = Cluster::start(&["broker-a"]).await;
    cluster.create_topic("T", 4);
    let producer = producer(&cluster).await;
    let mut queues = BTreeSet::new();
    for i in 0..8 {
        let message = Message::new("T", format!("body-{i}"))
            .with_tags("TagA")
            .with_keys([format!("key-{i}")])
            .with_flag(7)
            .with_property("color", "red");
        let sent = producer.send(message).await.unwrap();
        assert_eq!(sent.status, SendStatus::SendOk);
        assert_eq!(sent.queue.topic, "T");
        assert_eq!(sent.queue.broker_name, "broker-a");
        let stored = cluster.broker(0).messages("T", sent.queue.queue_id);
        let message = &stored[sent.queue_offset as usize];
        assert_eq!(message.body, format!("body-{i}").as_bytes());
        assert_eq!(
            message.properties.get(property::UNIQ_KEY),
            Some(&*sent.msg_id)
        );
        assert_eq!(message.properties.get(property::TAGS), Some("TagA"));
        assert_eq!(
            message.properties.get(property::KEYS),
            Some(&*format!("key-{i}"))
        );
        assert_eq!(message.properties.get(property::WAIT), Some("true"));
        assert_eq!(message.properties.get("color"), Some("red"));
        assert_eq!(message.flag, 7);
        let (host, commit_log_offset) = decode_offset_msg_id(&sent.offset_msg_id).unwrap();
        assert_eq!(host.to_string(), cluster.broker(0).addr());
        assert_eq!(commit_log_offset, message.commit_log_offset);
        queues.insert(sent.queue.queue_id);
    }
    assert_eq!(queues.len(), 4, "round-robin reaches every queue");
    let ids: BTreeSet<String> = cluster
        .broker(0)
        .all_messages("T")
        .iter()
        .map(|m| m.properties.get(property::UNIQ_KEY).unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 8, "every UNIQ_KEY differs");
    producer.shutdown().await;
    assert_eq!(cluster.broker(0).count(request::UNREGISTER_CLIENT), 1);
    cluster.shutdown().await;
}

/// With one broker answering SYSTEM_ERROR, every send still succeeds: the retry goes to the
/// other broker group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_avoids_a_broker_answering_system_error() {
    let cluster = Cluster::start(&["broker-a", "broker-b"]).await;
    cluster.create_topic("T", 2);
    cluster.broker(0).set_mode(Mode::SystemError);
    let producer = producer(&cluster).await;
    for i in 0..10 {
        let sent = producer
            .send(Message::new("T", format!("m{i}")))
            .await
            .unwrap();
        assert_eq!(sent.queue.broker_name, "broker-b");
    }
    assert_eq!(cluster.broker(1).all_messages("T").len(), 10);
    assert!(
        cluster.broker(0).count(request::SEND_MESSAGE_V2) > 0,
        "broker-a was tried"
    );
    assert!(cluster.broker(0).all_messages("T").is_empty());
    cluster.shutdown().await;
}

/// With one broker group's address refusing connections, every send lands on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_avoids_a_broker_refusing_connections() {
    let cluster = Cluster::start(&["broker-b"]).await;
    cluster.create_topic("T", 2);
    cluster
        .ns
        .register("broker-a", 0, &dead_addr(), &[("T", 2, 6)]);
    let producer = producer(&cluster).await;
    for i in 0..6 {
        let sent = producer
            .send(Message::new("T", format!("m{i}")))
            .await
            .unwrap();
        assert_eq!(sent.queue.broker_name, "broker-b");
    }
    assert_eq!(cluster.broker(0).all_messages("T").len(), 6);
    cluster.shutdown().await;
}

/// Every attempt failing ends in `SendFailed` naming the last refusal, after 1 + retry_times
/// attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_fails_after_its_retries() {
    let cluster = Cluster::start(&["broker-a"]).await;
    cluster.create_topic("T", 2);
    cluster.broker(0).set_mode(Mode::SystemError);
    let producer = producer(&cluster).await;
    let err = producer.send(Message::new("T", "x")).await.unwrap_err();
    assert!(
        matches!(err, ClientError::SendFailed { attempts: 3, .. }),
        "{err}"
    );
    assert_eq!(
        err.refused_code(),
        Some(protocol::code::response::SYSTEM_ERROR)
    );
    assert_eq!(cluster.broker(0).count(request::SEND_MESSAGE_V2), 3);
    cluster.shutdown().await;
}

/// A follower's not-master answer makes the producer fetch the route at once, and the retry
/// reaches the new master of the same broker group without waiting for the 30 s poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_master_answer_refreshes_the_route_at_once() {
    let (cluster, old, new) = two_replicas_old_master().await;
    let producer = producer(&cluster).await;
    assert_eq!(producer.publish_queues("T").await.unwrap().len(), 2);
    let lookups = cluster.ns.route_requests.load(Ordering::SeqCst);
    // Failover: the old master turns follower, the new one registers as id 0.
    old.set_mode(Mode::NotMaster);
    cluster
        .ns
        .set_addrs("broker-a", &[(0, &new.addr()), (1, &old.addr())]);
    let sent = producer
        .send(Message::new("T", "after failover"))
        .await
        .unwrap();
    assert_eq!(sent.queue.broker_name, "broker-a");
    assert_eq!(new.all_messages("T").len(), 1);
    assert_eq!(old.count(request::SEND_MESSAGE_V2), 1);
    assert!(cluster.ns.route_requests.load(Ordering::SeqCst) > lookups);
    cluster.shutdown().await;
}

/// A failover longer than the immediate retries: the only master answers "not master" and
/// the name server lists it for a while before the new master registers. The send keeps
/// trying with short pauses and a fresh route, and lands on the new master within its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_outlives_a_failover_longer_than_its_retries() {
    let (cluster, old, new) = two_replicas_old_master().await;
    let producer = producer(&cluster).await;
    assert_eq!(producer.publish_queues("T").await.unwrap().len(), 2);
    old.set_mode(Mode::NotMaster);
    let send = tokio::spawn({
        let producer = producer.clone();
        async move { producer.send(Message::new("T", "during failover")).await }
    });
    // The new master registers only after the producer spent its retries on the old one.
    until("four attempts on the old master", TIMEOUT, || {
        let attempts = old.count(request::SEND_MESSAGE_V2);
        if attempts >= 4 { Ok(()) } else { Err(attempts) }
    })
    .await;
    cluster
        .ns
        .set_addrs("broker-a", &[(0, &new.addr()), (1, &old.addr())]);
    let sent = send.await.unwrap().unwrap();
    assert_eq!(sent.queue.broker_name, "broker-a");
    assert_eq!(new.all_messages("T").len(), 1);
    cluster.shutdown().await;
}

/// A master that stops answering with its connection open (cut off from its group, frozen):
/// the attempt is given up after `attempt_timeout` and the send lands on the master the
/// refreshed route names, within the send timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_unanswered_by_its_master_lands_on_the_new_one() {
    let (cluster, old, new) = two_replicas_old_master().await;
    let config = ProducerConfig {
        send_timeout: Duration::from_secs(3),
        attempt_timeout: Duration::from_millis(400),
        ..ProducerConfig::new("pg")
    };
    let producer = Producer::start(TcpTransport, cluster.client_config(), config)
        .await
        .unwrap();
    assert_eq!(producer.publish_queues("T").await.unwrap().len(), 2);
    old.set_mode(Mode::Silent);
    cluster
        .ns
        .set_addrs("broker-a", &[(0, &new.addr()), (1, &old.addr())]);
    let started = tokio::time::Instant::now();
    let sent = producer
        .send(Message::new("T", "after the master went silent"))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        old.count(request::SEND_MESSAGE_V2),
        1,
        "one attempt on the silent master"
    );
    assert_eq!(new.all_messages("T").len(), 1);
    assert_eq!(sent.queue.broker_name, "broker-a");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "the attempt was given up after its own timeout, not the send's: {took:?}"
    );
    let refused = ProducerConfig {
        attempt_timeout: Duration::ZERO,
        ..ProducerConfig::new("pg")
    };
    assert!(
        Producer::start(TcpTransport, cluster.client_config(), refused)
            .await
            .is_err(),
        "a zero attempt timeout is refused"
    );
    cluster.shutdown().await;
}

/// A batch is one SEND_BATCH_MESSAGE: its messages land in one queue, consecutively and in
/// order, each with its own UNIQ_KEY and tag; the result lists the UNIQ_KEYs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_lands_in_one_queue_in_order() {
    let cluster = Cluster::start(&["broker-a"]).await;
    cluster.create_topic("T", 4);
    let producer = producer(&cluster).await;
    let batch: Vec<Message> = (0..5)
        .map(|i| Message::new("T", format!("b{i}")).with_tags(format!("t{i}")))
        .collect();
    let sent = producer.send_batch(batch).await.unwrap();
    assert_eq!(cluster.broker(0).count(request::SEND_BATCH_MESSAGE), 1);
    let stored = cluster.broker(0).messages("T", sent.queue.queue_id);
    assert_eq!(stored.len(), 5);
    let ids: Vec<&str> = sent.msg_id.split(',').collect();
    assert_eq!(ids.len(), 5);
    for (i, message) in stored.iter().enumerate() {
        assert_eq!(message.queue_offset, sent.queue_offset + i as i64);
        assert_eq!(message.body, format!("b{i}").as_bytes());
        assert_eq!(
            message.properties.get(property::TAGS),
            Some(&*format!("t{i}"))
        );
        assert_eq!(message.properties.get(property::UNIQ_KEY), Some(ids[i]));
    }
    assert_eq!(sent.offset_msg_id.split(',').count(), 5);
    let mixed = vec![Message::new("T", "a"), Message::new("U", "b")];
    assert!(matches!(
        producer.send_batch(mixed).await,
        Err(ClientError::InvalidBatch { .. })
    ));
    let delayed = vec![Message::new("T", "a").with_delay_level(2)];
    assert!(matches!(
        producer.send_batch(delayed).await,
        Err(ClientError::InvalidBatch { .. })
    ));
    cluster.shutdown().await;
}

/// A oneway send waits for nothing, and the message is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oneway_send_is_stored() {
    let cluster = Cluster::start(&["broker-a"]).await;
    cluster.create_topic("T", 4);
    let producer = producer(&cluster).await;
    producer
        .send_oneway(Message::new("T", "fire and forget"))
        .await
        .unwrap();
    let broker = cluster.broker(0).clone();
    until("the oneway message stored", TIMEOUT, || {
        broker.all_messages("T").len() == 1
    })
    .await;
    cluster.shutdown().await;
}

/// Ordered sends with one sharding key all land on one queue, in order; a selector's pick is
/// honoured, and a pick out of range is refused before sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_sends_land_on_the_selected_queue() {
    let cluster = Cluster::start(&["broker-a", "broker-b"]).await;
    cluster.create_topic("T", 4);
    let producer = producer(&cluster).await;
    let mut queues = BTreeSet::new();
    for i in 0..10 {
        let sent = producer
            .send_ordered(Message::new("T", format!("o{i}")), "order-42")
            .await
            .unwrap();
        queues.insert((sent.queue.broker_name.clone(), sent.queue.queue_id));
    }
    assert_eq!(queues.len(), 1, "one key, one queue");
    let (broker_name, queue_id) = queues.into_iter().next().unwrap();
    let broker = cluster
        .brokers
        .iter()
        .find(|b| b.name == broker_name)
        .unwrap();
    let bodies: Vec<_> = broker
        .messages("T", queue_id)
        .iter()
        .map(|m| m.body.clone())
        .collect();
    let want: Vec<_> = (0..10)
        .map(|i| bytes::Bytes::from(format!("o{i}")))
        .collect();
    assert_eq!(bodies, want);
    let sent = producer
        .send_with_selector(Message::new("T", "picked"), |queues, _| {
            queues
                .iter()
                .position(|q| q.broker_name == "broker-b" && q.queue_id == 3)
                .unwrap()
        })
        .await
        .unwrap();
    assert_eq!(
        (sent.queue.broker_name.as_str(), sent.queue.queue_id),
        ("broker-b", 3)
    );
    let err = producer
        .send_with_selector(Message::new("T", "nowhere"), |queues, _| queues.len())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::QueueIndexOutOfRange {
                index: 8,
                queues: 8
            }
        ),
        "{err}"
    );
    cluster.shutdown().await;
}

/// A topic no name server knows is sent on TBW102's route, capped to the default 4 queues;
/// the broker creates it and the name server then knows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic_is_auto_created_through_tbw102() {
    let cluster = Cluster::start(&["broker-a"]).await;
    let producer = producer(&cluster).await;
    assert_eq!(producer.publish_queues("Fresh").await.unwrap().len(), 4);
    let sent = producer.send(Message::new("Fresh", "first")).await.unwrap();
    assert_eq!(sent.queue.topic, "Fresh");
    assert_eq!(cluster.broker(0).topic_queues("Fresh"), Some(4));
    assert_eq!(cluster.broker(0).all_messages("Fresh").len(), 1);
    cluster.shutdown().await;
}

/// Asynchronous sends run concurrently and resolve to their results; a callback gets its
/// result too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_sends_and_callbacks_resolve() {
    let cluster = Cluster::start(&["broker-a"]).await;
    cluster.create_topic("T", 4);
    let producer = producer(&cluster).await;
    let handles: Vec<_> = (0..20)
        .map(|i| producer.send_async(Message::new("T", format!("a{i}"))))
        .collect();
    for handle in handles {
        assert_eq!(handle.await.unwrap().status, SendStatus::SendOk);
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    producer.send_with_callback(Message::new("T", "cb"), move |result| {
        tx.try_send(result.map(|r| r.msg_id)).unwrap();
    });
    let msg_id = tokio::time::timeout(crate::fake::TIMEOUT, rx.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(cluster.broker(0).all_messages("T").len(), 21);
    assert!(
        cluster
            .broker(0)
            .all_messages("T")
            .iter()
            .any(|m| m.properties.get(property::UNIQ_KEY) == Some(&*msg_id))
    );
    cluster.shutdown().await;
}

/// Invalid messages are refused before anything goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_are_refused_before_sending() {
    let cluster = Cluster::start(&["broker-a"]).await;
    cluster.create_topic("T", 4);
    let mut config = ProducerConfig::new("pg");
    config.max_message_bytes = 1024;
    let producer = Producer::start(TcpTransport, cluster.client_config(), config)
        .await
        .unwrap();
    let cases = [
        Message::new("T", ""),
        Message::new("bad topic", "x"),
        Message::new("TBW102", "x"),
        Message::new("T", vec![0u8; 1025]),
    ];
    for message in cases {
        let err = producer.send(message).await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::InvalidMessage { .. }
                    | ClientError::InvalidTopic { .. }
                    | ClientError::MessageTooLarge {
                        bytes: 1025,
                        max: 1024
                    }
            ),
            "{err}"
        );
    }
    assert_eq!(cluster.broker(0).count(request::SEND_MESSAGE_V2), 0);
    assert_eq!(cluster.ns.route_requests.load(Ordering::SeqCst), 0);
    cluster.shutdown().await;
}

/// A body over 4 KiB goes out zlib-compressed with the sys flag saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_are_compressed() {
    let cluster = Cluster::start(&["broker-a"]).await;
    cluster.create_topic("T", 1);
    let producer = producer(&cluster).await;
    let body = "x".repeat(10_000);
    producer
        .send(Message::new("T", body.clone()))
        .await
        .unwrap();
    let stored = &cluster.broker(0).messages("T", 0)[0];
    assert_ne!(stored.sys_flag & sys_flag::COMPRESSED, 0);
    assert!(stored.body.len() < body.len());
    cluster.shutdown().await;
}

/// Cached routes are fetched again every poll interval and every broker of them gets a
/// heartbeat every heartbeat interval (both 100 ms here instead of 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_heartbeats_are_refreshed_periodically() {
    let cluster = Cluster::start(&["broker-a"]).await;
    cluster.create_topic("T", 2);
    let mut client = cluster.client_config();
    client.poll_namesrv_interval = std::time::Duration::from_millis(100);
    client.heartbeat_interval = std::time::Duration::from_millis(100);
    let producer = Producer::start(TcpTransport, client, ProducerConfig::new("pg"))
        .await
        .unwrap();
    assert_eq!(producer.publish_queues("T").await.unwrap().len(), 2);
    let lookups = cluster.ns.route_requests.load(Ordering::SeqCst);
    cluster.broker(0).create_topic("T", 6);
    until_async("the route refreshed by its poll", TIMEOUT, || async {
        // Served from the cache: only the poll can change it.
        let queues = producer.publish_queues("T").await.unwrap().len();
        if queues == 6 { Ok(()) } else { Err(queues) }
    })
    .await;
    assert!(cluster.ns.route_requests.load(Ordering::SeqCst) > lookups);
    let broker = cluster.broker(0).clone();
    until("three heartbeats", TIMEOUT, || {
        broker.count(request::HEART_BEAT) >= 3
    })
    .await;
    cluster.shutdown().await;
}
