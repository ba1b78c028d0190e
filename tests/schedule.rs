//! Scheduled delivery through a real in-process cluster (name server + 3 replicas over TCP),
//! with our client: delay levels and timer messages arrive at their real topic no earlier than
//! due and once, with RocketMQ's properties; a consumer's failures come back after the back-off
//! and end in the dead-letter queue; bad schedules are refused and the broker keeps serving.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use broker::schedule::{DelayLevels, ScheduleConfig};
use client::{
    ClientConfig, ConsumeFromWhere, ConsumeStatus, Message, Producer, ProducerConfig, PushConsumer,
    PushConsumerConfig, StoredMessage, listener_fn,
};
use raftmq::cluster::{ClusterSpec, LocalCluster};
use remoting::TcpTransport;
use serde_json::Value;
use testkit::wait;
use tokio::sync::mpsc;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A cluster whose levels are short: 1 s, 2 s, then 1 s for every level a retry uses, so a
/// retry comes back after a second.
async fn cluster(dir: &std::path::Path) -> LocalCluster {
    let spec = ClusterSpec {
        schedule: ScheduleConfig {
            levels: DelayLevels::parse("1s 2s 1s 1s 1s 1s").unwrap(),
            timer_max_delay: Duration::from_secs(3600),
            ..ScheduleConfig::default()
        },
        ..ClusterSpec::default()
    };
    let cluster = LocalCluster::start(&spec, dir).await.unwrap();
    cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
    cluster
}

async fn producer(cluster: &LocalCluster) -> Producer<TcpTransport> {
    let namesrv = cluster.namesrv.local_addr().to_string();
    Producer::start(
        TcpTransport,
        ClientConfig::new([namesrv.as_str()]),
        ProducerConfig::new("schedule-pg"),
    )
    .await
    .unwrap()
}

/// Messages the listener saw, with when it saw them (epoch ms).
type Seen = mpsc::Receiver<(i64, StoredMessage)>;

async fn consumer(
    cluster: &LocalCluster,
    group: &str,
    topic: &str,
    fail_times: i32,
    max_reconsume_times: u32,
) -> (PushConsumer<impl client::MessageListener>, Seen) {
    let (tx, rx) = mpsc::channel(4096);
    let listener = listener_fn(move |_queue, messages: Vec<StoredMessage>| {
        let tx = tx.clone();
        async move {
            let mut status = ConsumeStatus::Success;
            for message in messages {
                if message.reconsume_times < fail_times {
                    status = ConsumeStatus::ReconsumeLater;
                }
                let _ = tx.send((now_ms(), message)).await;
            }
            status
        }
    });
    let namesrv = cluster.namesrv.local_addr().to_string();
    let mut config = PushConsumerConfig::new(group).subscribe(topic, "*");
    config.consume_from_where = ConsumeFromWhere::FirstOffset;
    config.max_reconsume_times = max_reconsume_times;
    config.consume_batch_max = 1;
    // The topics do not exist yet when the consumer starts: look for their queues often.
    config.rebalance_interval = Duration::from_millis(200);
    let consumer = PushConsumer::start(
        TcpTransport,
        ClientConfig::new([namesrv.as_str()]),
        config,
        listener,
    )
    .await
    .unwrap();
    (consumer, rx)
}

async fn receive(rx: &mut Seen, n: usize, within: Duration) -> Vec<(i64, StoredMessage)> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(seen)) => out.push(seen),
            _ => panic!("received {} of {n} messages: {out:?}", out.len()),
        }
    }
    out
}

fn body(message: &StoredMessage) -> String {
    String::from_utf8_lossy(&message.body).into_owned()
}

/// A level-2 message (2 s here), a timer message by timestamp and one by delay arrive in their
/// topic and queue no earlier than due and once each, after a plain message sent after them;
/// each keeps the id its send answered and loses `DELAY`; the send answers the real queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_messages_arrive_once_no_earlier_than_due() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path()).await;
    let producer = producer(&cluster).await;
    let (consumer, mut rx) = consumer(&cluster, "schedule-cg", "Later", 0, 16).await;

    let sent_at = now_ms();
    let level = producer
        .send(Message::new("Later", "level-2").with_delay_level(2))
        .await
        .unwrap();
    let deliver_at = sent_at + 1_500;
    let by_time = producer
        .send(Message::new("Later", "at-time").with_deliver_time_ms(deliver_at))
        .await
        .unwrap();
    let by_delay = producer
        .send(Message::new("Later", "after-delay").with_delay(Duration::from_millis(800)))
        .await
        .unwrap();
    let plain = producer.send(Message::new("Later", "plain")).await.unwrap();
    let topic_queues = 8;
    for sent in [&level, &by_time, &by_delay] {
        assert!(
            (0..topic_queues).contains(&sent.queue.queue_id),
            "the real queue is answered: {sent:?}"
        );
        assert_eq!(sent.queue.topic, "Later");
    }
    let seen = receive(&mut rx, 4, Duration::from_secs(30)).await;
    let by_body: BTreeMap<String, (i64, StoredMessage)> = seen
        .iter()
        .map(|(at, m)| (body(m), (*at, m.clone())))
        .collect();
    assert_eq!(by_body.len(), 4, "each once: {seen:?}");
    assert_eq!(body(&seen[0].1), "plain", "the plain message first");
    for (name, sent, due) in [
        ("level-2", &level, sent_at + 2_000),
        ("at-time", &by_time, deliver_at),
        ("after-delay", &by_delay, sent_at + 800),
    ] {
        let (at, message) = &by_body[name];
        assert!(*at >= due, "{name} arrived {} ms early", due - at);
        assert!(*at < due + 3_000, "{name} arrived {} ms late", at - due);
        assert_eq!(message.topic, "Later");
        assert_eq!(
            message.queue_id, sent.queue.queue_id,
            "{name}: its real queue"
        );
        assert_eq!(
            message.properties.get("UNIQ_KEY"),
            Some(sent.msg_id.as_str())
        );
        assert_eq!(message.properties.get("DELAY"), None, "{name}");
        assert_eq!(message.properties.get("REAL_TOPIC"), Some("Later"));
    }
    assert!(
        by_body["at-time"]
            .1
            .properties
            .get("TIMER_DEQUEUE_MS")
            .is_some()
    );
    assert!(plain.queue_offset >= 0);
    // Nothing more comes: each was delivered once.
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), rx.recv())
            .await
            .is_err(),
        "a scheduled message came twice"
    );
    let stats = cluster
        .replicas
        .values()
        .map(|r| r.broker.store().timer_stats());
    for stats in stats {
        assert_eq!(stats.pending, 0, "{stats:?}");
        assert_eq!(stats.covered, 3, "{stats:?}");
    }
    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.shutdown().await;
}

/// A listener that fails gets the message again after the back-off (level 3, 1 s here) with
/// `reconsumeTimes` counted up, under the id it was sent with; after `maxReconsumeTimes`
/// failures it lands in `%DLQ%<group>` on every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_come_back_after_the_back_off_then_go_to_the_dead_letter_queue() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path()).await;
    let producer = producer(&cluster).await;
    let (consumer, mut rx) = consumer(&cluster, "retry-cg", "Flaky", i32::MAX, 2).await;
    let sent = producer.send(Message::new("Flaky", "fails")).await.unwrap();
    let seen = receive(&mut rx, 3, Duration::from_secs(30)).await;
    let times: Vec<i32> = seen.iter().map(|(_, m)| m.reconsume_times).collect();
    assert_eq!(times, [0, 1, 2]);
    for pair in seen.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap >= 1_000,
            "a retry came back after {gap} ms, before its back-off"
        );
    }
    for (_, message) in &seen {
        assert_eq!(message.topic, "Flaky");
        assert_eq!(
            message.properties.get("UNIQ_KEY"),
            Some(sent.msg_id.as_str())
        );
    }
    wait::until(
        "the message in the DLQ on every replica",
        Duration::from_secs(30),
        || {
            let counts: Vec<i64> = cluster
                .replicas
                .values()
                .map(|r| r.broker.store().max_offset("%DLQ%retry-cg", 0))
                .collect();
            if counts.iter().all(|c| *c == 1) {
                Ok(())
            } else {
                Err(counts)
            }
        },
    )
    .await;
    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.shutdown().await;
}

/// Bad schedules are refused with a clear error naming what is wrong, and the broker keeps
/// serving: the next plain send is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path()).await;
    let producer = producer(&cluster).await;
    let cases = [
        (
            Message::new("Bad", "x").with_property("TIMER_DELAY_SEC", "soon"),
            "is not a whole number",
        ),
        (
            Message::new("Bad", "x").with_property("TIMER_DELAY_SEC", "3601"),
            "beyond timerMaxDelaySec (3600 s)",
        ),
        (
            Message::new("Bad", "x").with_property("TIMER_DELIVER_MS", "99999999999999999999"),
            "is not a whole number",
        ),
        (
            Message::new("Bad", "x").with_property("DELAY", "1.5"),
            "is not a whole number",
        ),
        (Message::new("SCHEDULE_TOPIC_XXXX", "x"), "is forbidden"),
        (Message::new("rmq_sys_wheel_timer", "x"), "is forbidden"),
    ];
    for (message, says) in cases {
        let err = producer.send(message).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(says) && text.contains("refused"),
            "{says}: {text}"
        );
    }
    let far_level = producer
        .send(Message::new("Bad", "clamped").with_property("DELAY", "99"))
        .await
        .unwrap();
    assert!(
        far_level.queue_offset >= 0,
        "a level past the last is the last"
    );
    let plain = producer.send(Message::new("Bad", "fine")).await.unwrap();
    assert_eq!(plain.queue.topic, "Bad");
    producer.shutdown().await;
    cluster.shutdown().await;
}

/// `/status` and `/metrics` of every replica count what waits and say when it is due; a cancel
/// marker (`TIMER_DEL_UNIQKEY` = `<topic>+<id>`, due with its target) keeps its target from
/// being delivered, while a message due at the same time arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_what_waits_and_a_marker_cancels_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path()).await;
    let producer = producer(&cluster).await;
    let (consumer, mut rx) = consumer(&cluster, "cancel-cg", "Cancel", 0, 16).await;
    let due = now_ms() + 2_000;
    let target = producer
        .send(Message::new("Cancel", "cancelled").with_deliver_time_ms(due))
        .await
        .unwrap();
    producer
        .send(
            Message::new("Cancel", "marker")
                .with_deliver_time_ms(due)
                .with_property("TIMER_DEL_UNIQKEY", format!("Cancel+{}", target.msg_id)),
        )
        .await
        .unwrap();
    producer
        .send(Message::new("Cancel", "kept").with_deliver_time_ms(due))
        .await
        .unwrap();
    for replica in cluster.replicas.values() {
        let handles = raftmq::http::ReplicaHandles::from(replica);
        let scheduled = wait::until("every send applied", Duration::from_secs(10), || {
            let status = raftmq::http::replica_status(&handles);
            let scheduled = status["scheduled"].clone();
            (scheduled["pending"] == 3).then_some(scheduled)
        })
        .await;
        let next = scheduled["next_due_ms"].as_i64().unwrap();
        assert!(
            (due - 1_000..=due).contains(&next),
            "next due {next}, sent for {due}: {scheduled}"
        );
        let leads = replica.broker.serving_writes();
        assert_eq!(scheduled["delivery_lag_ms"].is_i64(), leads, "{scheduled}");
        let metrics = raftmq::http::replica_metrics_text(&handles);
        assert!(
            metrics.contains("\nraftmq_scheduled_pending 3\n"),
            "{metrics}"
        );
    }
    let seen = receive(&mut rx, 1, Duration::from_secs(30)).await;
    assert_eq!(body(&seen[0].1), "kept");
    assert!(seen[0].0 >= due);
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), rx.recv())
            .await
            .is_err(),
        "the cancelled message or its marker was delivered"
    );
    for replica in cluster.replicas.values() {
        let status = raftmq::http::replica_status(&raftmq::http::ReplicaHandles::from(replica));
        assert_eq!(status["scheduled"]["pending"], 0, "{status}");
        assert_eq!(status["scheduled"]["next_due_ms"], Value::Null, "{status}");
    }
    let leader = cluster
        .replicas
        .values()
        .find(|r| r.broker.serving_writes())
        .unwrap();
    let metrics = leader.broker.metrics();
    assert_eq!(
        metrics
            .scheduled_cancelled
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        metrics
            .scheduled_delivered
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(metrics.scheduled_lateness.count(), 1);
    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.shutdown().await;
}
