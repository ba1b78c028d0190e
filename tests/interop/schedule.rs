//! Scheduled delivery with the real C++ client (PyPI `rocketmq` 0.4.4) against `raftmq dev`: a
//! message sent with a delay level arrives when due, a message its push consumer answers
//! RECONSUME_LATER comes back after level 3 + reconsumeTimes, and one that fails past
//! maxReconsumeTimes lands in `%DLQ%<group>`, readable by a pull and a push consumer.
//!
//! The C++ client's CONSUMER_SEND_MSG_BACK carries `delayLevel` 0 and no `maxReconsumeTimes`
//! (CPP-CLIENT-WIRE.md §3.8), and the wrapper has no way to set either: the broker's defaults
//! apply (level 3 + reconsumeTimes, 16 times).
//!
//! Times come from client.py (`send_ms`, `received_ms`: epoch ms of one machine's clock).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::broker::{Dev, RUN_TIMEOUT, events, of_kind, produce};
use crate::python::PyProcess;

/// RocketMQ's default `messageDelayLevel` (level 1 is the first).
const DEFAULT_LEVELS: &str = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h";

/// The broker's `maxReconsumeTimes` when the request names none (the C++ client never does).
const MAX_RECONSUME_TIMES: i64 = 16;

/// How late after it is due a message may reach the push consumer's listener: the scheduler's
/// round, the store, the held pull's wake-up and the client's hand-off to its listener.
const DELIVERY_SLACK_MS: i64 = 1000;

/// The delay of `level` (1-based) in a `messageDelayLevel` string, in ms.
fn level_ms(levels: &str, level: usize) -> i64 {
    let token = levels
        .split_whitespace()
        .nth(level - 1)
        .unwrap_or_else(|| panic!("no level {level} in {levels:?}"));
    let (number, unit) = token.split_at(token.len() - 1);
    let number: i64 = number.parse().unwrap_or_else(|e| panic!("{token:?}: {e}"));
    let unit_ms = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => panic!("unit {other:?} in {token:?}"),
    };
    number * unit_ms
}

fn int(event: &Value, field: &str) -> i64 {
    event[field]
        .as_i64()
        .unwrap_or_else(|| panic!("no {field} in {event}"))
}

fn body(event: &Value) -> &str {
    event["body"].as_str().unwrap_or_default()
}

/// A clustering push consumer of `topic` in `group` (`extra`: further client.py flags).
fn push_consumer(dev: &Dev, topic: &str, group: &str, expect: &str, extra: &[&str]) -> PyProcess {
    let mut args = vec![
        "push-consume",
        "--namesrv",
        &dev.namesrv,
        "--topic",
        topic,
        "--group",
        group,
        "--expect",
        expect,
        "--timeout",
        "100",
    ];
    args.extend_from_slice(extra);
    PyProcess::client(&args, &[])
}

/// Sends a warm-up message to `topic` (creating it) and runs a first push consumer of `group`
/// until it consumed it: its heartbeat creates `%RETRY%<group>`, so the next member of the
/// group finds that topic's route when it starts and takes its queue at its first rebalance, as
/// in a group that has run before. (A brand-new group's first member asks for the route before
/// its first heartbeat, learns it 3 s later, and takes the queue only at its 10 s rebalance: a
/// retry due before then would come late for the client's reason, not the broker's.)
fn start_group(dev: &Dev, topic: &str, group: &str) {
    produce(dev, topic, "sync", 1, &["--body-prefix", "warmup-"]);
    let out = push_consumer(dev, topic, group, "1", &[]).wait_success(RUN_TIMEOUT);
    let received = of_kind(&events(&out), "received");
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(body(&received[0]), "warmup-0", "{received:?}");
}

/// Messages the C++ producer sends with `set_delay_time_level(2)` reach a live C++ push
/// consumer no earlier than level 2's delay (5 s) after their send, and within a second of it.
#[test]
fn cpp_delay_level_message_arrives_when_due() {
    const LEVEL: usize = 2;
    const DELAYED: usize = 3;
    let delay_ms = level_ms(DEFAULT_LEVELS, LEVEL);
    let dev = Dev::start();
    let topic = "InteropDelay";
    // The topic exists before the consumer starts; the consumer receiving this message shows
    // it holds the topic's queues and is pulling before the delayed messages are sent.
    produce(&dev, topic, "sync", 1, &["--body-prefix", "warmup-"]);
    let expect = (1 + DELAYED).to_string();
    let mut consumer = push_consumer(&dev, topic, "interop-delay", &expect, &[]);
    consumer.wait_for_line(Duration::from_secs(60), |l| {
        l.contains("\"received\"") && l.contains("warmup-0")
    });
    let level = LEVEL.to_string();
    let sent = produce(
        &dev,
        topic,
        "sync",
        DELAYED,
        &["--body-prefix", "delayed-", "--delay-level", &level],
    );
    let out = consumer.wait_success(RUN_TIMEOUT);
    let received = of_kind(&events(&out), "received");
    let mut by_body: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for r in &received {
        by_body.entry(body(r)).or_default().push(r);
    }
    for s in &sent {
        let name = format!("delayed-{}", int(s, "index"));
        let got = by_body.get(name.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        assert_eq!(got.len(), 1, "{name} received once: {received:?}");
        let r = got[0];
        let waited = int(r, "received_ms") - int(s, "send_ms");
        eprintln!("{name}: received {waited} ms after its send");
        assert!(
            (delay_ms..=delay_ms + DELIVERY_SLACK_MS).contains(&waited),
            "{name}: received {waited} ms after its send, want [{delay_ms}, {}] \
             (send answered {} ms after the call)\nsent {s}\nreceived {r}",
            delay_ms + DELIVERY_SLACK_MS,
            int(s, "at_ms") - int(s, "send_ms")
        );
        assert_eq!(r["topic"], topic, "{r}");
        assert_eq!(r["reconsume_times"], 0, "{r}");
        // Delivered as RocketMQ does: the real topic kept in REAL_TOPIC, DELAY removed.
        assert_eq!(r["properties"]["REAL_TOPIC"], topic, "{r}");
        assert!(r["properties"].get("DELAY").is_none(), "{r}");
    }
}

/// A C++ push consumer answers RECONSUME_LATER once: the message comes back from the group's
/// retry topic with reconsumeTimes 1, no earlier than level 3 (10 s) after the failed delivery
/// and within a second of that.
#[test]
fn cpp_reconsume_later_comes_back_after_level_3() {
    let first_retry_ms = level_ms(DEFAULT_LEVELS, 3);
    let dev = Dev::start();
    let topic = "InteropBackoff";
    let group = "interop-backoff";
    start_group(&dev, topic, group);
    let mut consumer = push_consumer(&dev, topic, group, "1", &["--reconsume-later", "1"]);
    consumer.wait_for_line(Duration::from_secs(60), |l| l.contains("\"started\""));
    produce(&dev, topic, "sync", 1, &["--body-prefix", "backoff-"]);
    let out = consumer.wait_success(RUN_TIMEOUT);
    let all = events(&out);
    let failed = of_kind(&all, "reconsume_later");
    let received = of_kind(&all, "received");
    assert_eq!(failed.len(), 1, "{all:?}");
    assert_eq!(received.len(), 1, "{all:?}");
    let (failed, again) = (&failed[0], &received[0]);
    assert_eq!(body(failed), "backoff-0", "{failed}");
    assert_eq!(failed["reconsume_times"], 0, "{failed}");
    assert_eq!(body(again), "backoff-0", "{again}");
    assert_eq!(again["reconsume_times"], 1, "{again}");
    assert_eq!(again["msg_id"], failed["msg_id"], "the same message");
    // The client names the original topic (RETRY_TOPIC) for a message from %RETRY%<group>.
    assert_eq!(again["topic"], topic, "{again}");
    assert_eq!(again["properties"]["RETRY_TOPIC"], topic, "{again}");
    let gap = int(again, "received_ms") - int(failed, "received_ms");
    eprintln!("redelivered {gap} ms after the failed delivery");
    assert!(
        (first_retry_ms..=first_retry_ms + DELIVERY_SLACK_MS).contains(&gap),
        "redelivered {gap} ms after the failed delivery, want level 3's {first_retry_ms} ms \
         (+ up to {DELIVERY_SLACK_MS} ms)"
    );
}

/// With every level 1 s (`raftmq dev --message-delay-level`), a message its C++ push consumer
/// always fails is delivered 1 + 16 times (reconsumeTimes 0 to 16, each retry a level, 1 s, after
/// the delivery before it), then lands in `%DLQ%<group>`: a pull consumer and a push consumer of another group
/// read it there with its body, keys, tag and properties, and reconsumeTimes 17.
#[test]
fn cpp_message_failing_past_max_reconsume_times_lands_in_dlq() {
    let levels = vec!["1s"; 18].join(" ");
    let level_delay_ms = level_ms(&levels, 1);
    let dev = Dev::start_with(&["--message-delay-level", &levels]);
    let topic = "InteropDlq";
    let group = "interop-dlq";
    let dlq = format!("%DLQ%{group}");
    start_group(&dev, topic, group);
    // Fails every delivery the broker should make, and one more (which must never come).
    let fail_times = (MAX_RECONSUME_TIMES + 2).to_string();
    let mut failing = push_consumer(&dev, topic, group, "1", &["--reconsume-later", &fail_times]);
    failing.wait_for_line(Duration::from_secs(60), |l| l.contains("\"started\""));
    produce(
        &dev,
        topic,
        "sync",
        1,
        &[
            "--body-prefix",
            "doomed-",
            "--tags",
            "TagD",
            "--keys-prefix",
            "key-",
            "--props",
            "color=black",
        ],
    );
    failing.wait_for_line(Duration::from_secs(90), |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|e| {
            e["event"] == "reconsume_later" && e["reconsume_times"] == MAX_RECONSUME_TIMES
        })
    });

    let check_dead = |r: &Value, reader: &str| {
        assert_eq!(body(r), "doomed-0", "{reader}: {r}");
        assert_eq!(r["topic"], dlq.as_str(), "{reader}: {r}");
        assert_eq!(r["tags"], "TagD", "{reader}: {r}");
        assert_eq!(r["keys"], "key-0", "{reader}: {r}");
        assert_eq!(r["properties"]["color"], "black", "{reader}: {r}");
        assert_eq!(r["properties"]["RETRY_TOPIC"], topic, "{reader}: {r}");
        assert_eq!(
            r["reconsume_times"],
            MAX_RECONSUME_TIMES + 1,
            "{reader}: {r}"
        );
    };
    // The pull consumer asks for the dead-letter topic's route until the failing consumer's
    // last CONSUMER_SEND_MSG_BACK has created it.
    let pulled = PyProcess::client(
        &[
            "pull-consume",
            "--namesrv",
            &dev.namesrv,
            "--topic",
            &dlq,
            "--group",
            "interop-dlq-pull",
            "--expect",
            "1",
            "--timeout",
            "60",
            "--prop-keys",
            "color",
        ],
        &[],
    )
    .wait_success(RUN_TIMEOUT);
    let pulled = of_kind(&events(&pulled), "received");
    assert_eq!(pulled.len(), 1, "{pulled:?}");
    check_dead(&pulled[0], "pull consumer");
    let pushed = push_consumer(
        &dev,
        &dlq,
        "interop-dlq-push",
        "1",
        &["--prop-keys", "color"],
    )
    .wait_success(RUN_TIMEOUT);
    let pushed = of_kind(&events(&pushed), "received");
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    check_dead(&pushed[0], "push consumer");

    // What the failing consumer saw by now (the dead letter was read after its last failure
    // was sent back): deliveries 0..=16, each a retry level after the one before, and no more.
    while failing.next_line(Duration::ZERO).is_some() {}
    let seen: Vec<Value> = failing
        .seen_lines()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(of_kind(&seen, "received").is_empty(), "{seen:?}");
    let failed = of_kind(&seen, "reconsume_later");
    let times: Vec<i64> = failed.iter().map(|f| int(f, "reconsume_times")).collect();
    assert_eq!(
        times,
        (0..=MAX_RECONSUME_TIMES).collect::<Vec<_>>(),
        "{seen:?}"
    );
    assert!(failed.iter().all(|f| body(f) == "doomed-0"), "{seen:?}");
    for pair in failed.windows(2) {
        let gap = int(&pair[1], "received_ms") - int(&pair[0], "received_ms");
        eprintln!(
            "retry {}: {gap} ms after the delivery before it",
            pair[1]["reconsume_times"]
        );
        assert!(
            (level_delay_ms..=level_delay_ms + DELIVERY_SLACK_MS).contains(&gap),
            "retry {} came {gap} ms after the delivery before it, want {level_delay_ms} ms \
             (+ up to {DELIVERY_SLACK_MS} ms)",
            pair[1]["reconsume_times"]
        );
    }
}
