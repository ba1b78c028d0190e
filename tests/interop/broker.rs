//! The real C++ client (PyPI `rocketmq` 0.4.4) against a real raftmq cluster (`raftmq dev` as
//! its own process): every send mode, tags, keys and properties, push consumers in clustering
//! and broadcasting mode, the pull consumer, and a consumer group resuming from its committed
//! offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::wait::until_blocking;

use crate::procs::{Proc, raftmq};
use crate::python::{PyProcess, ScriptOutput};

pub(crate) const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// `raftmq dev` on free ports (tests/support/procs.rs: killed by PID when dropped); its data
/// dir goes with it.
pub(crate) struct Dev {
    _proc: Proc,
    pub(crate) namesrv: String,
    _dir: tempfile::TempDir,
}

impl Dev {
    pub(crate) fn start() -> Dev {
        Dev::start_with(&[])
    }

    /// As [`Dev::start`], with `extra` flags of `raftmq dev` (e.g. `--message-delay-level`).
    pub(crate) fn start_with(extra: &[&str]) -> Dev {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = raftmq();
        command
            .args([
                "dev",
                "--namesrv-port",
                "0",
                "--broker-port",
                "0",
                "--data-dir",
            ])
            .arg(dir.path())
            .args(extra);
        let proc = Proc::spawn(command, "dev");
        let ready = proc.ready();
        Dev {
            namesrv: ready["namesrv"].as_str().expect("namesrv").to_string(),
            _proc: proc,
            _dir: dir,
        }
    }
}

pub(crate) fn events(out: &ScriptOutput) -> Vec<Value> {
    out.stdout
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

pub(crate) fn of_kind(events: &[Value], kind: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["event"] == kind)
        .cloned()
        .collect()
}

pub(crate) fn produce(
    dev: &Dev,
    topic: &str,
    mode: &str,
    count: usize,
    extra: &[&str],
) -> Vec<Value> {
    let count_text = count.to_string();
    let mut args = vec![
        "produce",
        "--namesrv",
        &dev.namesrv,
        "--topic",
        topic,
        "--group",
        "interop-pg",
        "--count",
        &count_text,
        "--mode",
        mode,
    ];
    args.extend_from_slice(extra);
    let out = PyProcess::client(&args, &[]).wait_success(RUN_TIMEOUT);
    let all = events(&out);
    let sent = of_kind(&all, "sent");
    assert_eq!(sent.len(), count, "{mode}: {all:?}");
    assert!(
        sent.iter()
            .all(|s| s["status"] == "OK" || s["status"] == "ONEWAY"),
        "{mode}: {all:?}"
    );
    sent
}

/// Received messages grouped by queue must come in queue-offset order with no gap.
fn assert_per_queue_order(received: &[Value]) {
    let mut by_queue: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for r in received {
        by_queue
            .entry(r["queue_id"].as_i64().expect("queue id"))
            .or_default()
            .push(r["queue_offset"].as_i64().expect("queue offset"));
    }
    for (queue, offsets) in by_queue {
        let mut sorted = offsets.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(offsets, sorted, "queue {queue} delivered out of order");
        assert_eq!(
            sorted,
            (sorted[0]..sorted[0] + sorted.len() as i64).collect::<Vec<_>>(),
            "queue {queue} has a gap"
        );
    }
}

/// Every send mode of the C++ producer is acknowledged, and a pull consumer then reads every
/// message back with its body, tag, keys and user property, in per-queue order.
#[test]
fn cpp_producer_modes_and_pull_consumer() {
    let dev = Dev::start();
    let props = [
        "--tags",
        "TagA",
        "--keys-prefix",
        "key-",
        "--props",
        "color=red",
    ];
    let mut expected = BTreeSet::new();
    for (mode, count) in [
        ("sync", 20),
        ("async", 20),
        ("oneway", 10),
        ("orderly", 20),
        ("batch", 20),
    ] {
        let prefix = format!("{mode}-");
        let mut extra = props.to_vec();
        extra.extend_from_slice(&["--body-prefix", &prefix]);
        if mode == "orderly" {
            // One ordering key: every message goes to the queue the selector picks for it.
            extra.extend_from_slice(&["--order-arg", "7"]);
        }
        let sent = produce(&dev, "InteropAll", mode, count, &extra);
        if mode == "orderly" {
            // The selector chose one queue; every message acknowledged there.
            assert!(
                sent.iter().all(|s| s["queue_id"] == sent[0]["queue_id"]),
                "{sent:?}"
            );
        }
        for i in 0..count {
            expected.insert(format!("{prefix}{i}"));
        }
    }
    let out = PyProcess::client(
        &[
            "pull-consume",
            "--namesrv",
            &dev.namesrv,
            "--topic",
            "InteropAll",
            "--group",
            "interop-pull",
            "--expect",
            "90",
            "--timeout",
            "60",
            "--prop-keys",
            "color",
        ],
        &[],
    )
    .wait_success(RUN_TIMEOUT);
    let received = of_kind(&events(&out), "received");
    let bodies: BTreeSet<String> = received
        .iter()
        .map(|r| r["body"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(bodies, expected, "every acknowledged message arrives once");
    assert_eq!(received.len(), 90, "no duplicates");
    for r in &received {
        assert_eq!(r["tags"], "TagA", "{r}");
        assert_eq!(r["properties"]["color"], "red", "{r}");
        assert!(
            r["keys"].as_str().is_some_and(|k| k.starts_with("key-")),
            "{r}"
        );
    }
    assert_per_queue_order(&received);
    // Orderly messages: in send order within their queue.
    let orderly: Vec<&Value> = received
        .iter()
        .filter(|r| {
            r["body"]
                .as_str()
                .is_some_and(|b| b.starts_with("orderly-"))
        })
        .collect();
    let mut last = -1;
    for r in orderly {
        let n: i64 = r["body"].as_str().unwrap_or("")["orderly-".len()..]
            .parse()
            .unwrap_or(-1);
        assert!(n > last, "orderly messages in send order");
        last = n;
    }
}

/// Reads `received` events from running consumers into `into` until the bodies in `want` were
/// all seen, or `timeout` passes.
fn collect(
    consumers: &mut [PyProcess],
    into: &mut [Vec<Value>],
    want: &BTreeSet<String>,
    timeout: Duration,
) {
    until_blocking("every wanted message received", timeout, || {
        for (i, consumer) in consumers.iter_mut().enumerate() {
            while let Some(line) = consumer.next_line(Duration::ZERO) {
                let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if event["event"] == "received" {
                    into[i].push(event);
                }
            }
        }
        let seen: BTreeSet<String> = into
            .iter()
            .flatten()
            .filter_map(|e| e["body"].as_str().map(str::to_string))
            .collect();
        let missing: Vec<&String> = want.difference(&seen).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {missing:?}"))
        }
    });
}

/// Two push consumers of one group share the queues (each gets some, together all of them);
/// two broadcasting consumers each get everything.
#[test]
fn cpp_push_consumers_clustering_and_broadcasting() {
    let dev = Dev::start();
    // The topic exists with its queues before the consumers start.
    produce(
        &dev,
        "InteropPush",
        "sync",
        1,
        &["--body-prefix", "warmup-"],
    );
    let start = |group: &str, model: &str| {
        PyProcess::client(
            &[
                "push-consume",
                "--namesrv",
                &dev.namesrv,
                "--topic",
                "InteropPush",
                "--group",
                group,
                "--model",
                model,
                "--expect",
                "100000",
                "--timeout",
                "120",
            ],
            &[],
        )
    };
    let mut clustering = vec![
        start("interop-cluster", "clustering"),
        start("interop-cluster", "clustering"),
    ];
    let mut broadcasting = vec![
        start("interop-bcast", "broadcasting"),
        start("interop-bcast", "broadcasting"),
    ];
    for consumer in clustering.iter_mut().chain(broadcasting.iter_mut()) {
        consumer.wait_for_line(Duration::from_secs(30), |l| l.contains("\"started\""));
    }
    // Rounds of sends until both group members have had a share (the second member's arrival
    // makes the broker notify the first, which then gives up half of the queues).
    let deadline = Instant::now() + Duration::from_secs(90);
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut want = BTreeSet::new();
    let mut shares = vec![Vec::new(), Vec::new()];
    for round in 0..20 {
        let prefix = format!("r{round}-");
        produce(&dev, "InteropPush", "sync", 8, &["--body-prefix", &prefix]);
        want.extend((0..8).map(|i| format!("{prefix}{i}")));
        collect(&mut clustering, &mut shares, &want, left());
        if shares.iter().all(|s| {
            s.iter()
                .any(|e| e["body"].as_str().is_some_and(|b| b.starts_with('r')))
        }) {
            break;
        }
    }
    assert!(
        shares.iter().all(|s| !s.is_empty()),
        "both members of the group consume: {} and {}",
        shares[0].len(),
        shares[1].len()
    );
    for consumer in &mut broadcasting {
        let mut got = vec![Vec::new()];
        collect(std::slice::from_mut(consumer), &mut got, &want, left());
    }
    let all: Vec<Value> = shares.concat();
    assert_per_queue_order(
        &all.into_iter()
            .filter(|v| v["body"].as_str().is_some_and(|b| b.starts_with('r')))
            .collect::<Vec<_>>(),
    );
}

/// A consumer group that stops and starts again resumes after what it committed.
#[test]
fn cpp_consumer_group_resumes_from_committed_offsets() {
    let dev = Dev::start();
    produce(
        &dev,
        "InteropResume",
        "sync",
        20,
        &["--body-prefix", "first-"],
    );
    let consume = |expect: &str| {
        PyProcess::client(
            &[
                "push-consume",
                "--namesrv",
                &dev.namesrv,
                "--topic",
                "InteropResume",
                "--group",
                "interop-resume",
                "--expect",
                expect,
                "--timeout",
                "60",
            ],
            &[],
        )
        .wait_success(RUN_TIMEOUT)
    };
    let first = of_kind(&events(&consume("20")), "received");
    assert_eq!(first.len(), 20);
    produce(
        &dev,
        "InteropResume",
        "sync",
        10,
        &["--body-prefix", "second-"],
    );
    let second = of_kind(&events(&consume("10")), "received");
    let bodies: BTreeSet<&str> = second.iter().filter_map(|r| r["body"].as_str()).collect();
    let want: BTreeSet<String> = (0..10).map(|i| format!("second-{i}")).collect();
    assert!(
        want.iter().all(|w| bodies.contains(w.as_str())),
        "the restarted group gets the new messages: {bodies:?}"
    );
    assert!(
        !bodies.iter().any(|b| b.starts_with("first-")),
        "and none it had committed: {bodies:?}"
    );
}

/// A message the consumer fails (RECONSUME_LATER) comes back through the group's retry topic
/// with its body and original topic; nothing is lost. (The retry waits level 3, 10 s: its
/// timing is schedule.rs's subject.)
#[test]
fn cpp_failed_consumption_is_redelivered() {
    let dev = Dev::start();
    produce(
        &dev,
        "InteropRetry",
        "sync",
        5,
        &["--body-prefix", "retry-"],
    );
    let out = PyProcess::client(
        &[
            "push-consume",
            "--namesrv",
            &dev.namesrv,
            "--topic",
            "InteropRetry",
            "--group",
            "interop-retry",
            "--expect",
            "5",
            "--timeout",
            "60",
            "--reconsume-later",
            "2",
        ],
        &[],
    )
    .wait_success(RUN_TIMEOUT);
    let all = events(&out);
    assert_eq!(of_kind(&all, "reconsume_later").len(), 2);
    let received = of_kind(&all, "received");
    let bodies: BTreeSet<&str> = received.iter().filter_map(|r| r["body"].as_str()).collect();
    let want: BTreeSet<String> = (0..5).map(|i| format!("retry-{i}")).collect();
    assert!(
        want.iter().all(|w| bodies.contains(w.as_str())),
        "every message consumed in the end: {bodies:?}"
    );
    assert!(
        received.iter().all(|r| r["topic"] == "InteropRetry"),
        "redeliveries name their original topic"
    );
}

/// An orderly push consumer (queue locks) receives each queue's messages in send order.
#[test]
fn cpp_orderly_consumer_gets_queue_order() {
    let dev = Dev::start();
    produce(
        &dev,
        "InteropOrderly",
        "orderly",
        30,
        &["--body-prefix", "o-", "--order-arg", "3"],
    );
    let out = PyProcess::client(
        &[
            "push-consume",
            "--namesrv",
            &dev.namesrv,
            "--topic",
            "InteropOrderly",
            "--group",
            "interop-orderly",
            "--orderly",
            "--expect",
            "30",
            "--timeout",
            "60",
        ],
        &[],
    )
    .wait_success(RUN_TIMEOUT);
    let received = of_kind(&events(&out), "received");
    let order: Vec<i64> = received
        .iter()
        .filter_map(|r| r["body"].as_str()?.strip_prefix("o-")?.parse().ok())
        .collect();
    assert_eq!(order, (0..30).collect::<Vec<_>>(), "send order kept");
}
