//! A leader cut off from its quorum, with real processes (issue 11): a name server and three
//! `raftmq broker -c broker.conf` replicas, each on its own loopback address and running as its
//! own uid, under continuous sync sends from our client crate and Apache's C++ client (PyPI
//! `rocketmq` 0.4.4). The leader's Raft traffic to and from both followers is dropped by
//! iptables rules (owner and port matches; clients and the name server still reach every
//! replica) for a few seconds, three times: both ways, only what it receives, only what it
//! sends. Each time the cut-off leader stops taking writes within half a second and says why,
//! stops registering as master, answers pulls of what it has, and comes back as a follower once
//! the cut heals; our client's sends move to the new master with no gap over 1.5 s; and at the
//! end every replica holds every acknowledged message where it was acknowledged.
//!
//! Needs root, as CI has (iptables, and processes started as other uids).

#[path = "support/firewall.rs"]
mod firewall;
#[path = "support/procs.rs"]
mod procs;
#[path = "support/python.rs"]
mod python;

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firewall::{Cut, Firewall, Peer};
use procs::{
    Ack, CALL, Node, Proc, RunAs, assert_acked_everywhere, http_get, http_json, now_ms,
    produce_until, raftmq_for_all, registered, start_broker_as, start_namesrv, wait_registered,
    wait_status, write_confs_on,
};
use protocol::RemotingCommand;
use protocol::code::{request, response};
use protocol::header::{CommandHeader, PullMessageRequestHeader, pull_flag};
use remoting::TcpTransport;
use testkit::wait::{until, until_async};

const TOPIC: &str = "PartitionTopic";
const BROKER_NAME: &str = "broker-p";

/// A leader that lost its quorum stops taking writes within this (issue 11).
const STOP_WITHIN: Duration = Duration::from_millis(500);

/// Our client's longest gap between acknowledgements while leaders are cut off (issue 11).
const ACK_GAP_MAX: Duration = Duration::from_millis(1500);

/// How long each cut lasts.
const CUT_FOR: Duration = Duration::from_secs(4);

/// Three loopback addresses and three uids of this test process's own.
fn hosts_and_uids() -> (Vec<IpAddr>, Vec<u32>) {
    let pid = std::process::id();
    let (a, b) = (((pid >> 8) % 250 + 1) as u8, (pid % 250 + 1) as u8);
    let ips = (1..=3).map(|k| IpAddr::from([127, a, b, k])).collect();
    let uids = (0..3)
        .map(|k| 2_000_000_000 + (pid % 100_000) * 4 + k)
        .collect();
    (ips, uids)
}

/// What the cut-off leader showed.
struct Stopped {
    /// From the cut to the first `/status` with `serving_writes: false`.
    after: Duration,
    /// That `/status`.
    status: serde_json::Value,
}

/// Polls `node`'s `/status` (every `testkit::wait::POLL`) until it no longer serves writes.
async fn await_stop(node: &Node, cut_at: Instant) -> Stopped {
    let what = format!("{} to stop serving writes after the cut", node.self_id);
    let status = until_async(&what, Duration::from_secs(10), || async {
        match http_json(&node.http_addr, "/status").await {
            Some(status) if status["serving_writes"] == false => Ok(status),
            seen => Err(seen),
        }
    })
    .await;
    Stopped {
        after: cut_at.elapsed(),
        status,
    }
}

/// A pull of `queue_id` of the test topic from `broker` at `offset`, held up to `suspend_ms`
/// when nothing is there: the response code and how long the answer took.
async fn pull(
    client: &remoting::Client<TcpTransport>,
    broker: &str,
    queue_id: i32,
    offset: i64,
    suspend_ms: i64,
) -> (i32, Duration) {
    let mut sys_flag = pull_flag::SUBSCRIPTION;
    if suspend_ms > 0 {
        sys_flag |= pull_flag::SUSPEND;
    }
    let header = PullMessageRequestHeader {
        consumer_group: "partition-check".into(),
        topic: TOPIC.into(),
        queue_id,
        queue_offset: offset,
        max_msg_nums: 32,
        sys_flag,
        commit_offset: 0,
        suspend_timeout_millis: suspend_ms,
        subscription: Some("*".into()),
        sub_version: 0,
        expression_type: Some("TAG".into()),
        max_msg_bytes: None,
    };
    let started = Instant::now();
    let answer = client
        .request(
            broker,
            RemotingCommand::request(request::PULL_MESSAGE, header.to_ext()),
            CALL + Duration::from_millis(suspend_ms as u64),
        )
        .await
        .expect("a cut-off replica answers pulls");
    (answer.code, started.elapsed())
}

/// The longest gap between consecutive times (ms) within `[from, to]`, counting the edges.
fn longest_gap(times: &[u64], from: u64, to: u64) -> u64 {
    let mut inside: Vec<u64> = times
        .iter()
        .copied()
        .filter(|t| *t >= from && *t <= to)
        .collect();
    inside.sort_unstable();
    let mut points = vec![from];
    points.extend(inside);
    points.push(to);
    points.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_quorum_stops_taking_writes_at_once() {
    let mut firewall = Firewall::new();
    let dir = tempfile::tempdir().expect("temp dir");
    // The replicas run as other users: they must reach their files.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("temp dir readable");
    let (_namesrv_proc, namesrv) = start_namesrv();
    let (ips, uids) = hosts_and_uids();
    let nodes = write_confs_on(dir.path(), &namesrv, BROKER_NAME, &ips, "");
    let peers: Vec<Peer> = nodes
        .iter()
        .zip(&uids)
        .map(|(node, uid)| Peer {
            uid: *uid,
            ip: node.ip,
            raft_port: node.raft_port,
        })
        .collect();
    let binary = raftmq_for_all(dir.path());
    let _procs: Vec<Proc> = nodes
        .iter()
        .zip(&uids)
        .map(|(node, uid)| {
            std::fs::create_dir_all(&node.store_dir).expect("store dir");
            std::os::unix::fs::chown(&node.store_dir, Some(*uid), Some(*uid))
                .expect("store dir handed to the replica's user");
            let run_as = RunAs {
                uid: *uid,
                binary: binary.clone(),
            };
            start_broker_as(node, Some(&run_as))
        })
        .collect();
    let (client, _inbound) = remoting::Client::new(TcpTransport);
    wait_registered(
        &client,
        &namesrv,
        BROKER_NAME,
        "a master",
        Duration::from_secs(60),
        |t| t.contains_key(&0),
    )
    .await;

    // The C++ client first: creating its virtualenv may take a while on a fresh machine.
    let mut cpp = tokio::task::spawn_blocking({
        let namesrv = namesrv.clone();
        move || python::cpp_sync_producer(&namesrv, TOPIC, "partition-cpp-pg", 45)
    })
    .await
    .expect("C++ client starts");
    // Acknowledged sends before the first cut: after it, the C++ client sends to the master of
    // its cached route until it polls the route again (every 30 s).
    tokio::task::block_in_place(|| {
        for _ in 0..50 {
            cpp.wait_for_line(Duration::from_secs(30), |l| l.contains("\"sent\""));
        }
    });

    let stop = Arc::new(AtomicBool::new(false));
    let rust_acks = Arc::new(Mutex::new(Vec::new()));
    let rust = tokio::spawn({
        let (namesrv, stop, acks) = (namesrv.clone(), stop.clone(), rust_acks.clone());
        async move { produce_until(namesrv, "partition-rust-pg", TOPIC, stop, acks).await }
    });
    let acked_since = |at_ms: u64| {
        rust_acks
            .lock()
            .expect("acks")
            .iter()
            .any(|a: &Ack| a.at_ms > at_ms)
    };

    let mut windows = Vec::new();
    for cut in [Cut::Both, Cut::Deaf, Cut::Mute] {
        // Sends flow to a master that takes writes.
        let since = now_ms();
        until(
            "acknowledgements before the cut",
            Duration::from_secs(30),
            || acked_since(since),
        )
        .await;
        let master = registered(&client, &namesrv, BROKER_NAME)
            .await
            .get(&0)
            .cloned()
            .expect("a master is registered");
        let leader = nodes
            .iter()
            .position(|n| n.broker_addr == master)
            .expect("the master is one of ours");
        let others: Vec<Peer> = (0..nodes.len())
            .filter(|k| *k != leader)
            .map(|k| peers[k])
            .collect();
        let status = http_json(&nodes[leader].http_addr, "/status")
            .await
            .expect("the leader's status");
        assert_eq!(status["serving_writes"], true, "{status}");
        assert_eq!(status["has_quorum"], true, "{status}");
        let term = status["term"].as_u64().expect("term");

        firewall.cut_raft(peers[leader], &others, cut);
        let cut_at = Instant::now();
        let cut_ms = now_ms();
        let stopped = await_stop(&nodes[leader], cut_at).await;
        eprintln!(
            "{cut:?}: replica {} (term {term}) stopped taking writes {} ms after the cut: {}",
            nodes[leader].self_id,
            stopped.after.as_millis(),
            stopped.status["write_refusal"]
        );
        assert!(
            stopped.after <= STOP_WITHIN,
            "{cut:?}: the cut-off leader took writes for {:?}",
            stopped.after
        );
        if stopped.status["role"] == "leader" {
            // Still leading (no higher term reached it): it says it has no quorum.
            assert_eq!(stopped.status["write_refusal"], "leader without quorum");
            assert_eq!(stopped.status["has_quorum"], false);
            let (code, body) = http_get(&nodes[leader].http_addr, "/health")
                .await
                .expect("health answers");
            let health: serde_json::Value = serde_json::from_str(&body).expect("health JSON");
            if health["reason"] == "leader without quorum" {
                assert_eq!(code, 503, "{body}");
            }
            let (_, metrics) = http_get(&nodes[leader].http_addr, "/metrics")
                .await
                .expect("metrics answer");
            assert!(
                metrics
                    .lines()
                    .any(|l| l.starts_with("raftmq_leader_quorum_losses_total ")
                        && l != "raftmq_leader_quorum_losses_total 0"),
                "the loss is counted:\n{metrics}"
            );
        } else {
            assert_eq!(stopped.status["write_refusal"], "not leader");
        }

        // The others elect a leader, which registers as master; the cut-off one registers as a
        // slave (or, stepped down, as the follower it is).
        let table = wait_registered(
            &client,
            &namesrv,
            BROKER_NAME,
            "another master while the leader is cut off",
            Duration::from_secs(10),
            |t| t.get(&0).is_some_and(|m| *m != master) && t.values().any(|a| *a == master),
        )
        .await;
        let new_master = table[&0].clone();

        // The cut-off replica serves what it has: a pull of old messages answers at once, a long
        // poll at the end of its queue is released at its suspend time.
        let (code, took) = pull(&client, &master, 0, 0, 0).await;
        assert_eq!(code, response::SUCCESS, "a pull of stored messages");
        assert!(took < CALL, "{took:?}");
        let end = http_json(&nodes[leader].http_addr, "/status")
            .await
            .expect("status")["topics"]
            .as_array()
            .and_then(|topics| topics.iter().find(|t| t["topic"] == TOPIC))
            .and_then(|t| t["queues"][0]["max_offset"].as_i64())
            .expect("queue 0's end");
        let (code, took) = pull(&client, &master, 0, end, 1000).await;
        assert_eq!(code, response::PULL_NOT_FOUND, "a long poll at the end");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "the long poll was held for its suspend time and released: {took:?}"
        );

        let left = CUT_FOR.saturating_sub(cut_at.elapsed());
        tokio::time::sleep(left).await;
        let failures = firewall.clear();
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(
            firewall.remaining(),
            0,
            "every rule this test added is gone"
        );
        let healed_ms = now_ms();
        windows.push((cut_ms, healed_ms));

        // Healed: the old leader follows the new one.
        let new_leader = nodes
            .iter()
            .position(|n| n.broker_addr == new_master)
            .expect("the new master is one of ours");
        wait_status(
            &nodes[leader],
            "follows the new leader",
            Duration::from_secs(15),
            |s| s["role"] == "follower" && s["leader_id"] == nodes[new_leader].node_id,
        )
        .await;
    }

    // Sends go on after the last heal.
    let since = now_ms();
    until(
        "an acknowledgement after healing",
        Duration::from_secs(15),
        || acked_since(since),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let rust_failed = rust.await.expect("rust producer task");
    // The C++ client ends by itself after its --duration; failed sends make it exit 1.
    let cpp_out = tokio::task::spawn_blocking(move || cpp.wait(Duration::from_secs(120)))
        .await
        .expect("C++ client waited for");
    let (cpp_sent, cpp_failed) = python::cpp_sends(&cpp_out);
    let cpp_acks: Vec<(String, i64)> = cpp_sent
        .into_iter()
        .map(|sent| (sent.key, sent.queue_offset))
        .collect();
    assert!(
        cpp_acks.len() >= 50,
        "only {} C++ acknowledgements\n{}",
        cpp_acks.len(),
        cpp_out.stderr
    );
    let acks = rust_acks.lock().expect("acks").clone();
    assert!(acks.len() > 100, "only {} acknowledgements", acks.len());

    let times: Vec<u64> = acks.iter().map(|a| a.at_ms).collect();
    for (cut, (from, to)) in [Cut::Both, Cut::Deaf, Cut::Mute].iter().zip(&windows) {
        let gap = longest_gap(&times, *from, *to);
        eprintln!("{cut:?}: our client's longest gap between acknowledgements: {gap} ms");
        assert!(
            gap <= ACK_GAP_MAX.as_millis() as u64,
            "{cut:?}: {gap} ms without an acknowledgement"
        );
    }
    let master = registered(&client, &namesrv, BROKER_NAME)
        .await
        .get(&0)
        .cloned()
        .expect("a master at the end");
    let queues = 4;
    let stored_twice =
        assert_acked_everywhere(&client, &nodes, &master, TOPIC, queues, &acks, &cpp_acks).await;

    eprintln!(
        "our client: {} acknowledged, {rust_failed} failed; C++ client: {} acknowledged, \
         {cpp_failed} failed; stored more than once: {stored_twice}",
        acks.len(),
        cpp_acks.len()
    );
    assert_eq!(
        rust_failed, 0,
        "our client's sends retry within their timeout and outlive each cut"
    );
}
