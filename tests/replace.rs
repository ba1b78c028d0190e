//! Replacing a replica, with real processes: a name server and three `raftmq broker -c
//! broker.conf` processes under continuous sends. One follower is killed with `kill -9` and its
//! data wiped; a fresh replica with a new id (its broker.conf naming the group and itself)
//! starts and waits outside the group; bad requests (an id already in the group, a follower
//! asked, an address nobody answers on) fail and change nothing; `raftmq admin add-replica`
//! adds the fresh one, `raftmq admin remove-replica` removes the dead one. Sends go on, no
//! acknowledged message is lost, and the new replica holds every one where the leader does.
//! Then the leader itself is removed: it hands leadership over first.

#[path = "support/procs.rs"]
mod procs;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use procs::{
    Node, Proc, acks_grow, assert_acked_everywhere, free_port, http_json, produce_until, raftmq,
    registered, start_broker, start_namesrv, wait_registered, write_confs,
};
use remoting::TcpTransport;
use testkit::wait::until_async;

const TOPIC: &str = "ReplaceTopic";
const BROKER_NAME: &str = "broker-m";

/// `raftmq admin ARGS`: whether it succeeded, and its JSON line.
fn admin(args: &[&str]) -> (bool, serde_json::Value) {
    let output = raftmq()
        .arg("admin")
        .args(args)
        .output()
        .expect("raftmq admin runs");
    let line = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("one JSON line ({e}): {output:?}"));
    (output.status.success(), line)
}

/// The voters a replica's `/status` lists, as node ids.
async fn voters(node: &Node) -> Option<Vec<u64>> {
    let status = http_json(&node.http_addr, "/status").await?;
    Some(
        status["members"]["voters"]
            .as_object()?
            .keys()
            .filter_map(|k| k.parse().ok())
            .collect(),
    )
}

/// A fourth replica's node and broker.conf: `n3`, on fresh ports, its `dLegerPeers` naming the
/// group's replicas and itself.
fn newcomer(dir: &std::path::Path, nodes: &[Node]) -> Node {
    let conf = std::fs::read_to_string(&nodes[0].conf).expect("n0.conf");
    let (port, http, raft) = (free_port(), free_port(), free_port());
    let store_dir = dir.join("n3");
    let text: String = conf
        .lines()
        .map(|line| {
            let (key, value) = line.split_once('=').unwrap_or((line, ""));
            match key {
                "listenPort" => format!("listenPort={port}"),
                "dLegerSelfId" => "dLegerSelfId=n3".to_string(),
                "dLegerPeers" => format!("dLegerPeers={value};n3-127.0.0.1:{raft}"),
                "httpListenAddr" => format!("httpListenAddr=127.0.0.1:{http}"),
                "storePathRootDir" => format!("storePathRootDir={}", store_dir.display()),
                _ => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join("n3.conf");
    std::fs::write(&path, text + "\n").expect("n3.conf");
    Node {
        self_id: "n3".into(),
        node_id: 4,
        conf: path,
        broker_addr: format!("127.0.0.1:{port}"),
        http_addr: format!("127.0.0.1:{http}"),
        ip: std::net::IpAddr::from([127, 0, 0, 1]),
        raft_port: raft,
        store_dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replica_is_replaced_under_sends_and_the_leader_removed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_namesrv_proc, namesrv) = start_namesrv();
    let mut nodes = write_confs(dir.path(), &namesrv, BROKER_NAME, 3, "");
    let mut procs: Vec<Proc> = nodes.iter().map(start_broker).collect();
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
    let master = registered(&client, &namesrv, BROKER_NAME)
        .await
        .get(&0)
        .cloned()
        .expect("a master");
    let leader = nodes
        .iter()
        .position(|n| n.broker_addr == master)
        .expect("the leader");

    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Vec::new()));
    let producer = tokio::spawn({
        let (namesrv, stop, acks) = (namesrv.clone(), stop.clone(), acks.clone());
        async move { produce_until(namesrv, "replace-pg", TOPIC, stop, acks).await }
    });
    acks_grow("sends under way", &acks, 200, Duration::from_secs(30)).await;

    // A follower dies for good.
    let dead = (leader + 1) % 3;
    procs[dead].kill9();
    std::fs::remove_dir_all(&nodes[dead].store_dir).expect("dead replica wiped");

    // A fresh replica waits outside the group.
    let fresh = newcomer(dir.path(), &nodes);
    let fresh_proc = start_broker(&fresh);
    until_async(
        "the fresh replica's status",
        Duration::from_secs(30),
        || async {
            match http_json(&fresh.http_addr, "/status").await {
                Some(s) if s["member"] == false => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;

    let before = voters(&nodes[leader]).await.expect("leader status");
    let raft_addr = format!("127.0.0.1:{}", fresh.raft_port);
    let existing = nodes[(leader + 2) % 3].self_id.clone();
    let (ok, line) = admin(&[
        "add-replica",
        "--broker",
        &master,
        "--id",
        &existing,
        "--raft-addr",
        &raft_addr,
    ]);
    assert!(!ok, "{line}");
    assert!(
        line["error"]
            .as_str()
            .unwrap_or("")
            .contains("already a member"),
        "{line}"
    );
    let follower = &nodes[(leader + 2) % 3].broker_addr;
    let (ok, line) = admin(&[
        "add-replica",
        "--broker",
        follower,
        "--id",
        "n3",
        "--raft-addr",
        &raft_addr,
    ]);
    assert!(!ok, "{line}");
    assert!(
        line["error"].as_str().unwrap_or("").contains("not leader"),
        "{line}"
    );
    let nobody = format!("127.0.0.1:{}", free_port());
    let (ok, line) = admin(&[
        "add-replica",
        "--broker",
        &master,
        "--id",
        "n7",
        "--raft-addr",
        &nobody,
        "--timeout-ms",
        "1500",
    ]);
    assert!(!ok, "{line}");
    assert!(
        line["error"]
            .as_str()
            .unwrap_or("")
            .contains("did not catch up"),
        "{line}"
    );
    assert_eq!(voters(&nodes[leader]).await, Some(before));

    // Add the fresh one, remove the dead one.
    let (ok, line) = admin(&[
        "add-replica",
        "--broker",
        &master,
        "--id",
        "n3",
        "--raft-addr",
        &raft_addr,
    ]);
    assert!(ok, "{line}");
    let (ok, line) = admin(&[
        "remove-replica",
        "--broker",
        &master,
        "--id",
        &nodes[dead].self_id,
    ]);
    assert!(ok, "{line}");
    let mut expected: Vec<u64> = vec![nodes[leader].node_id, nodes[(leader + 2) % 3].node_id, 4];
    expected.sort();
    for node in [&nodes[leader], &fresh] {
        until_async(
            "the new membership everywhere",
            Duration::from_secs(30),
            || async {
                match voters(node).await {
                    Some(v) if v == expected => Ok(()),
                    other => Err(other),
                }
            },
        )
        .await;
    }
    acks_grow("sends go on", &acks, 200, Duration::from_secs(30)).await;

    // The leader leaves too: it hands leadership over, and the new leader removes it.
    let (ok, line) = admin(&[
        "remove-replica",
        "--broker",
        &master,
        "--id",
        &nodes[leader].self_id,
    ]);
    assert!(ok, "{line}");
    let remaining = [(leader + 2) % 3];
    let mut left: Vec<u64> = vec![nodes[remaining[0]].node_id, 4];
    left.sort();
    until_async("the leader removed", Duration::from_secs(30), || async {
        match voters(&fresh).await {
            Some(v) if v == left => Ok(()),
            other => Err(other),
        }
    })
    .await;
    acks_grow(
        "sends go on after the leader left",
        &acks,
        100,
        Duration::from_secs(30),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let failed = producer.await.expect("producer");
    eprintln!("sends failed after the client's retries: {failed}");

    // Every acknowledged message, in place, on the two replicas left.
    let master = registered(&client, &namesrv, BROKER_NAME)
        .await
        .get(&0)
        .cloned()
        .expect("a master");
    let acks = acks.lock().expect("acks").clone();
    let kept = vec![nodes.swap_remove(remaining[0]), fresh];
    assert_acked_everywhere(&client, &kept, &master, TOPIC, 4, &acks, &[]).await;
    drop(fresh_proc);
}
