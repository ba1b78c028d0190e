//! Push consumer: clustering rebalance, broadcasting, offsets across restarts, moved offsets,
//! redelivery of failed messages.

use std::collections::BTreeSet;
use std::time::Duration;

use client::{
    ConsumeFromWhere, ConsumeStatus, Message, MessageListener, MessageModel, Producer,
    ProducerConfig, PushConsumer, PushConsumerConfig, StoredMessage, listener_fn,
};
use protocol::code::request;
use remoting::TcpTransport;
use tokio::sync::mpsc;

use testkit::wait::until;

use crate::fake::{Cluster, TIMEOUT};

/// A delivery: which consumer got which message.
type Delivery = (&'static str, StoredMessage);

fn collector(label: &'static str, tx: mpsc::Sender<Delivery>) -> impl MessageListener {
    listener_fn(move |_queue, messages| {
        let tx = tx.clone();
        async move {
            for message in messages {
                // The test may have stopped listening; the delivery is then moot.
                let _ = tx.send((label, message)).await;
            }
            ConsumeStatus::Success
        }
    })
}

async fn receive(rx: &mut mpsc::Receiver<Delivery>, n: usize) -> Vec<Delivery> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let delivery = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out with {} of {n} deliveries", out.len()))
            .expect("a listener holds the sender");
        out.push(delivery);
    }
    out
}

fn body(message: &StoredMessage) -> String {
    String::from_utf8(message.body.to_vec()).unwrap()
}

/// The queue ids of topic `T` a consumer holds.
fn held<L: MessageListener>(consumer: &PushConsumer<L>) -> Vec<i32> {
    consumer
        .assigned_queues()
        .iter()
        .filter(|q| q.topic == "T")
        .map(|q| q.queue_id)
        .collect()
}

async fn producer(cluster: &Cluster) -> Producer {
    Producer::start(
        TcpTransport,
        cluster.client_config(),
        ProducerConfig::new("pg"),
    )
    .await
    .unwrap()
}

async fn send(producer: &Producer, from: usize, to: usize) -> BTreeSet<String> {
    let mut bodies = BTreeSet::new();
    for i in from..to {
        let body = format!("m{i}");
        producer
            .send(Message::new("T", body.clone()))
            .await
            .unwrap();
        bodies.insert(body);
    }
    bodies
}

/// Two clustering consumers split 4 queues 2 and 2 by average allocation over the sorted
/// client ids, each message reaches the owner of its queue, and when one leaves the broker's
/// NOTIFY_CONSUMER_IDS_CHANGED makes the other take all 4 at once (the 20 s periodic
/// rebalance never fires within the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clustering_splits_queues_and_rebalances_when_a_member_leaves() {
    let cluster = Cluster::start(&["broker-a"]).await;
    cluster.create_topic("T", 4);
    let mut config = PushConsumerConfig::new("cg").subscribe("T", "*");
    config.consume_from_where = ConsumeFromWhere::FirstOffset;
    let (tx, mut rx) = mpsc::channel(1024);
    let a = PushConsumer::start(
        TcpTransport,
        cluster.client_config(),
        config.clone(),
        collector("a", tx.clone()),
    )
    .await
    .unwrap();
    until("a holds all 4 queues", TIMEOUT, || held(&a).len() == 4).await;
    let b = PushConsumer::start(
        TcpTransport,
        cluster.client_config(),
        config,
        collector("b", tx),
    )
    .await
    .unwrap();
    until("a and b hold 2 queues each", TIMEOUT, || {
        held(&a).len() == 2 && held(&b).len() == 2
    })
    .await;
    let (first, second) = if a.client_id() < b.client_id() {
        (held(&a), held(&b))
    } else {
        (held(&b), held(&a))
    };
    assert_eq!(
        (first, second),
        (vec![0, 1], vec![2, 3]),
        "average allocation"
    );

    let producer = producer(&cluster).await;
    let want = send(&producer, 0, 20).await;
    let deliveries = receive(&mut rx, 20).await;
    let got: BTreeSet<String> = deliveries.iter().map(|(_, m)| body(m)).collect();
    assert_eq!(got, want);
    for (label, message) in &deliveries {
        let owner = if *label == "a" { held(&a) } else { held(&b) };
        assert!(
            owner.contains(&message.queue_id),
            "{label} got queue {}",
            message.queue_id
        );
    }

    b.shutdown().await;
    assert!(cluster.broker(0).count(request::UNREGISTER_CLIENT) >= 1);
    until("a holds all 4 queues again", TIMEOUT, || {
        held(&a).len() == 4
    })
    .await;
    assert_eq!(cluster.broker(0).consumer_ids("cg"), [a.client_id()]);
    let want = send(&producer, 20, 28).await;
    let mut got = BTreeSet::new();
    while got.len() < want.len() {
        let (label, message) = receive(&mut rx, 1).await.remove(0);
        assert_eq!(label, "a");
        // Redeliveries of earlier messages are allowed (at least once); the new ones must come.
        if want.contains(&body(&message)) {
            got.insert(body(&message));
        }
    }
    a.shutdown().await;
    cluster.shutdown().await;
}

/// Two broadcasting consumers each get every message, without asking for the group's members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasting_delivers_every_message_to_each_member() {
    let cluster = Cluster::start(&["broker-a"]).await;
    cluster.create_topic("T", 4);
    let mut config = PushConsumerConfig::new("bg").subscribe("T", "*");
    config.message_model = MessageModel::Broadcasting;
    let (tx, mut rx) = mpsc::channel(1024);
    let a = PushConsumer::start(
        TcpTransport,
        cluster.client_config(),
        config.clone(),
        collector("a", tx.clone()),
    )
    .await
    .unwrap();
    let b = PushConsumer::start(
        TcpTransport,
        cluster.client_config(),
        config,
        collector("b", tx),
    )
    .await
    .unwrap();
    until("both hold every queue", TIMEOUT, || {
        held(&a).len() == 4 && held(&b).len() == 4
    })
    .await;
    assert_eq!(
        a.assigned_queues().len(),
        4,
        "no retry topic when broadcasting"
    );
    let producer = producer(&cluster).await;
    let want = send(&producer, 0, 12).await;
    let deliveries = receive(&mut rx, 24).await;
    for label in ["a", "b"] {
        let got: BTreeSet<String> = deliveries
            .iter()
            .filter(|(l, _)| *l == label)
            .map(|(_, m)| body(m))
            .collect();
        assert_eq!(got, want, "{label} got every message");
    }
    assert_eq!(
        cluster.broker(0).count(request::GET_CONSUMER_LIST_BY_GROUP),
        0
    );
    a.shutdown().await;
    b.shutdown().await;
    cluster.shutdown().await;
}

/// Consumed offsets reach the broker while consuming (every persist interval, here 100 ms)
/// and at shutdown; a restarted member of the group resumes from them rather than from where
/// its setting would start it (the first offset), so it gets only the new messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_and_a_restarted_consumer_resumes() {
    let cluster = Cluster::start(&["broker-a"]).await;
    cluster.create_topic("T", 4);
    let producer = producer(&cluster).await;
    send(&producer, 0, 6).await;
    let mut config = PushConsumerConfig::new("rg").subscribe("T", "*");
    config.consume_from_where = ConsumeFromWhere::FirstOffset;
    config.persist_offset_interval = Duration::from_millis(100);
    let (tx, mut rx) = mpsc::channel(1024);
    let first = PushConsumer::start(
        TcpTransport,
        cluster.client_config(),
        config.clone(),
        collector("first", tx.clone()),
    )
    .await
    .unwrap();
    receive(&mut rx, 6).await;
    let broker = cluster.broker(0).clone();
    let committed = |broker: &crate::fake::Broker| -> i64 {
        (0..4)
            .map(|q| broker.committed("rg", "T", q).unwrap_or(0))
            .sum()
    };
    until("offsets committed while running", TIMEOUT, || {
        committed(&broker) == 6
    })
    .await;
    first.shutdown().await;

    let want = send(&producer, 6, 10).await;
    let second = PushConsumer::start(
        TcpTransport,
        cluster.client_config(),
        config,
        collector("second", tx),
    )
    .await
    .unwrap();
    let got: BTreeSet<String> = receive(&mut rx, 4)
        .await
        .iter()
        .map(|(_, m)| body(m))
        .collect();
    assert_eq!(got, want);
    until("every queue consumed to its end", TIMEOUT, || {
        second
            .assigned_queues()
            .iter()
            .filter(|q| q.topic == "T")
            .all(|q| {
                second.consumed_offset(q) == Some(broker.messages("T", q.queue_id).len() as i64)
            })
    })
    .await;
    assert!(
        rx.try_recv().is_err(),
        "nothing before the committed offsets came again"
    );
    second.shutdown().await;
    assert_eq!(committed(&broker), 10);
    cluster.shutdown().await;
}

/// A committed offset past the queue's end draws PULL_OFFSET_MOVED; the consumer resets to
/// the broker's nextBeginOffset, commits it, and consumes what arrives next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_offset_resets_to_next_begin_offset() {
    let cluster = Cluster::start(&["broker-a"]).await;
    cluster.create_topic("T", 1);
    let producer = producer(&cluster).await;
    send(&producer, 0, 3).await;
    let broker = cluster.broker(0).clone();
    broker.set_committed("mg", "T", 0, 100);
    let config = PushConsumerConfig::new("mg").subscribe("T", "*");
    let (tx, mut rx) = mpsc::channel(1024);
    let consumer = PushConsumer::start(
        TcpTransport,
        cluster.client_config(),
        config,
        collector("c", tx),
    )
    .await
    .unwrap();
    until("the corrected offset committed", TIMEOUT, || {
        broker.committed("mg", "T", 0) == Some(3)
    })
    .await;
    send(&producer, 3, 4).await;
    let (_, message) = receive(&mut rx, 1).await.remove(0);
    assert_eq!(
        (message.queue_offset, body(&message)),
        (3, "m3".to_string())
    );
    consumer.shutdown().await;
    cluster.shutdown().await;
}

/// A message the listener fails is sent back to the broker and comes again through the
/// group's retry topic, with its original topic and a reconsume count of 1; the queue moves
/// on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_messages_come_back_through_the_retry_topic() {
    let cluster = Cluster::start(&["broker-a"]).await;
    cluster.create_topic("T", 1);
    let mut config = PushConsumerConfig::new("fg").subscribe("T", "*");
    config.consume_from_where = ConsumeFromWhere::FirstOffset;
    let (tx, mut rx) = mpsc::channel(1024);
    let listener = listener_fn(move |_queue, messages: Vec<StoredMessage>| {
        let tx = tx.clone();
        async move {
            let mut status = ConsumeStatus::Success;
            for message in messages {
                if body(&message) == "flaky" && message.reconsume_times == 0 {
                    status = ConsumeStatus::ReconsumeLater;
                }
                let _ = tx.send(("c", message)).await;
            }
            status
        }
    });
    let consumer = PushConsumer::start(TcpTransport, cluster.client_config(), config, listener)
        .await
        .unwrap();
    until("the retry queue held too", TIMEOUT, || {
        consumer.assigned_queues().len() == 2
    })
    .await;
    let producer = producer(&cluster).await;
    producer.send(Message::new("T", "flaky")).await.unwrap();
    producer.send(Message::new("T", "fine")).await.unwrap();
    let deliveries = receive(&mut rx, 3).await;
    let seen: Vec<(String, String, i32)> = deliveries
        .iter()
        .map(|(_, m)| (body(m), m.topic.clone(), m.reconsume_times))
        .collect();
    assert!(seen.contains(&("flaky".into(), "T".into(), 0)), "{seen:?}");
    assert!(seen.contains(&("fine".into(), "T".into(), 0)), "{seen:?}");
    assert!(seen.contains(&("flaky".into(), "T".into(), 1)), "{seen:?}");
    assert_eq!(cluster.broker(0).count(request::CONSUMER_SEND_MSG_BACK), 1);
    consumer.shutdown().await;
    cluster.shutdown().await;
}
