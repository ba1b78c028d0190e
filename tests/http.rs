//! HTTP on every process: `/health`, `/status` and `/metrics` of a leader, a follower and the
//! name server of a `LocalCluster`, read with a minimal HTTP/1.1 client over a TCP stream;
//! bad requests are refused and the server keeps serving; `raftmq namesrv --http` and
//! `raftmq dev` print their HTTP addresses.

#![allow(clippy::unwrap_used)]

#[path = "support/procs.rs"]
mod procs;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use testkit::wait::until_async;

use dledger::{Role, Status};
use protocol::RemotingCommand;
use protocol::code::{request, response};
use protocol::header::{CommandHeader, PullMessageRequestHeader, SendMessageRequestHeader};
use protocol::message::{Properties, property};
use raftmq::cluster::{ClusterSpec, LocalCluster};
use remoting::{Connection, TcpTransport};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(30);

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("body is not JSON ({err}): {:?}", self.body))
    }
}

/// Writes `request` as is on a new connection and reads the answer until the server closes
/// (every request here says `Connection: close`).
async fn exchange(addr: SocketAddr, request: &[u8]) -> Option<Answer> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut raw))
        .await
        .expect("the server answers and closes within the timeout")
        .unwrap();
    if raw.is_empty() {
        return None;
    }
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head: {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status = parts.next().unwrap().parse().unwrap();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if let Some(length) = headers.get("content-length") {
        assert_eq!(
            body.len(),
            length.parse::<usize>().unwrap(),
            "whole body read"
        );
    }
    assert!(
        !headers
            .get("transfer-encoding")
            .is_some_and(|t| t.contains("chunked")),
        "fixed-length bodies only: {headers:?}"
    );
    Some(Answer {
        status,
        headers,
        body: body.to_string(),
    })
}

async fn call(addr: SocketAddr, method: &str, path: &str) -> Answer {
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    exchange(addr, request.as_bytes()).await.expect("an answer")
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    call(addr, "GET", path).await
}

/// The value of one unlabelled or labelled sample, `series` being the text before the value.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.parse().ok()
    })
}

fn send_request(topic: &str, body: &str) -> RemotingCommand {
    let mut properties = Properties::default();
    properties.set(property::TAGS, "t");
    let header = SendMessageRequestHeader {
        producer_group: "pg".into(),
        topic: topic.into(),
        default_topic: "TBW102".into(),
        default_topic_queue_nums: 4,
        queue_id: 0,
        sys_flag: 0,
        born_timestamp: 1,
        flag: 0,
        properties: Some(properties.encode()),
        ..Default::default()
    };
    RemotingCommand::request(request::SEND_MESSAGE, header.to_ext()).with_body(body.to_string())
}

fn held_pull(topic: &str, queue_id: i32, offset: i64) -> RemotingCommand {
    let header = PullMessageRequestHeader {
        consumer_group: "cg".into(),
        topic: topic.into(),
        queue_id,
        queue_offset: offset,
        max_msg_nums: 32,
        sys_flag: protocol::header::pull_flag::SUSPEND,
        commit_offset: 0,
        suspend_timeout_millis: 20_000,
        subscription: None,
        sub_version: 0,
        expression_type: None,
        max_msg_bytes: None,
    };
    RemotingCommand::request(request::PULL_MESSAGE, header.to_ext())
}

fn http_of(cluster: &LocalCluster, id: u64) -> SocketAddr {
    cluster.replica_http[&id].local_addr()
}

/// The three endpoints of a leader, a follower and the name server, before and after a send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_serves_health_status_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&ClusterSpec::default(), dir.path())
        .await
        .unwrap();
    let leader = cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
    let follower = *cluster.replicas.keys().find(|id| **id != leader).unwrap();
    let leader_http = http_of(&cluster, leader);
    let follower_http = http_of(&cluster, follower);
    let namesrv_http = cluster.namesrv_http.as_ref().unwrap().local_addr();
    let leader_broker = cluster.replicas[&leader].broker.local_addr().to_string();

    // Health: the leader takes writes; a follower is healthy once it knows the leader.
    let health = get(leader_http, "/health").await;
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.json(), serde_json::json!({ "status": "ok" }));
    assert!(
        health.headers["content-type"].starts_with("application/json"),
        "{health:?}"
    );
    until_async("the follower healthy", TIMEOUT, || async {
        let health = get(follower_http, "/health").await;
        if health.status == 200 {
            Ok(())
        } else {
            Err(health.body)
        }
    })
    .await;
    let health = get(namesrv_http, "/health").await;
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (200, "ok".into())
    );

    // Status of the leader: role, term, indexes, followers with matched and lag.
    let status = until_async(
        "the leader listing both followers as matched",
        TIMEOUT,
        || async {
            let status = get(leader_http, "/status").await.json();
            let followers = status["followers"].as_array().cloned().unwrap_or_default();
            if followers.len() == 2 && followers.iter().all(|f| f["matched"].is_u64()) {
                Ok(status)
            } else {
                Err(status.to_string())
            }
        },
    )
    .await;
    assert_eq!(status["node_id"], leader);
    assert_eq!(status["role"], "leader");
    assert!(status["term"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(status["leader_id"], leader);
    assert_eq!(status["leader_addr"], leader_broker.as_str());
    assert!(status["leader_raft_addr"].is_string(), "{status}");
    assert_eq!(status["raft_addr"], status["leader_raft_addr"]);
    let last = status["last_log_index"].as_u64().unwrap();
    assert!(status["committed"].as_u64().unwrap() <= last, "{status}");
    assert!(status["applied"].is_u64(), "{status}");
    for f in status["followers"].as_array().unwrap() {
        assert_ne!(f["node_id"], leader);
        assert_eq!(
            f["lag"].as_u64().unwrap(),
            last - f["matched"].as_u64().unwrap(),
            "{f}"
        );
    }
    assert_eq!(status["flush"], "sync");
    assert_eq!(status["broker_name"], "broker-a");
    assert_eq!(status["broker_addr"], leader_broker.as_str());
    assert_eq!(status["serving_writes"], true);
    assert!(status["write_refusal"].is_null(), "{status}");
    assert_eq!(status["has_quorum"], true);
    assert!(
        status["quorum_acked_ms_ago"].is_u64(),
        "a leader of a group of three says when a quorum last answered: {status}"
    );
    assert!(
        status["topics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["topic"] == "TBW102"),
        "{status}"
    );

    // Status of a follower: no followers list, the leader named with its broker address.
    let status = get(follower_http, "/status").await.json();
    assert_eq!(status["node_id"], follower);
    assert_eq!(status["role"], "follower");
    assert_eq!(status["leader_id"], leader);
    assert_eq!(status["leader_addr"], leader_broker.as_str());
    assert!(status["followers"].is_null(), "{status}");
    assert_eq!(status["serving_writes"], false);
    assert_eq!(status["write_refusal"], "not leader");
    assert_eq!(status["has_quorum"], false);
    assert!(status["quorum_acked_ms_ago"].is_null(), "{status}");
    assert!(status["term"].as_u64().unwrap() > 0);

    // Metrics before a send.
    let metrics = get(leader_http, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.headers["content-type"].starts_with("text/plain; version=0.0.4"),
        "{metrics:?}"
    );
    let text = &metrics.body;
    for name in [
        "raftmq_requests_total",
        "raftmq_request_bytes_total",
        "raftmq_response_bytes_total",
        "raftmq_send_latency_seconds",
        "raftmq_pull_latency_seconds",
        "raftmq_raft_term",
        "raftmq_raft_commit_index",
        "raftmq_raft_applied_index",
        "raftmq_raft_last_log_index",
        "raftmq_raft_elections_total",
        "raftmq_long_poll_holds",
        "raftmq_long_poll_holds_total",
        "raftmq_leader_without_quorum",
        "raftmq_leader_quorum_losses_total",
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} in\n{text}"
        );
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} in\n{text}"
        );
    }
    assert!(sample(text, "raftmq_raft_term").unwrap() >= 1.0);
    assert!(sample(text, "raftmq_raft_elections_total").unwrap() >= 1.0);
    assert!(sample(text, "raftmq_raft_commit_index").unwrap() >= 1.0);
    assert_eq!(sample(text, "raftmq_leader_without_quorum"), Some(0.0));
    assert_eq!(sample(text, "raftmq_leader_quorum_losses_total"), Some(0.0));
    let sends = "raftmq_requests_total{request_code=\"10\",response_code=\"0\"}";
    let sends_before = sample(text, sends).unwrap_or(0.0);
    let send_count_before = sample(text, "raftmq_send_latency_seconds_count").unwrap();

    // A send, then its topic in both replicas' status and the name server's.
    let conn = Connection::connect(&TcpTransport, &leader_broker)
        .await
        .unwrap()
        .0;
    let answer = conn
        .request(send_request("HttpTopic", "hello"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(answer.code, response::SUCCESS, "{:?}", answer.remark);
    let text = get(leader_http, "/metrics").await.body;
    assert_eq!(sample(&text, sends).unwrap(), sends_before + 1.0, "{text}");
    assert_eq!(
        sample(&text, "raftmq_send_latency_seconds_count").unwrap(),
        send_count_before + 1.0
    );
    assert!(
        sample(&text, "raftmq_send_latency_seconds_bucket{le=\"+Inf\"}").unwrap()
            >= send_count_before + 1.0
    );
    assert!(sample(&text, "raftmq_request_bytes_total").unwrap() > 0.0);
    for http in [leader_http, follower_http] {
        until_async(
            "the sent message in the topic's queue 0",
            TIMEOUT,
            || async {
                let status = get(http, "/status").await.json();
                let queue = status["topics"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["topic"] == "HttpTopic")
                    .map(|t| t["queues"][0].clone());
                match queue {
                    Some(q)
                        if q["queue_id"] == 0 && q["min_offset"] == 0 && q["max_offset"] == 1 =>
                    {
                        Ok(())
                    }
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
    let status = until_async("the name server listing the new topic", TIMEOUT, || async {
        let status = get(namesrv_http, "/status").await.json();
        let listed = status["topics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["topic"] == "HttpTopic" && t["brokers"][0]["broker_name"] == "broker-a");
        if listed {
            Ok(status)
        } else {
            Err(status.to_string())
        }
    })
    .await;
    let brokers = status["brokers"].as_array().unwrap();
    let master = brokers
        .iter()
        .find(|b| b["role"] == "master")
        .unwrap_or_else(|| panic!("a master in {status}"));
    assert_eq!(master["broker_id"], 0);
    assert_eq!(master["addr"], leader_broker.as_str());
    assert_eq!(master["broker_name"], "broker-a");
    assert_eq!(master["cluster"], "DefaultCluster");
    assert!(master["heartbeat_age_ms"].is_u64());
    assert!(
        brokers
            .iter()
            .all(|b| (b["role"] == "master") == (b["broker_id"] == 0))
    );
    let text = get(namesrv_http, "/metrics").await.body;
    assert!(
        sample(&text, "raftmq_namesrv_brokers").unwrap() >= 1.0,
        "{text}"
    );
    assert!(
        sample(&text, "raftmq_namesrv_topics").unwrap() >= 2.0,
        "{text}"
    );

    // A pull held on an empty queue shows in the gauge, and ends when a message arrives.
    let held = {
        let conn = Connection::connect(&TcpTransport, &leader_broker)
            .await
            .unwrap()
            .0;
        tokio::spawn(async move { conn.request(held_pull("HttpTopic", 0, 1), TIMEOUT).await })
    };
    until_async("the pull held", TIMEOUT, || async {
        let text = get(leader_http, "/metrics").await.body;
        match sample(&text, "raftmq_long_poll_holds") {
            Some(1.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let answer = conn
        .request(send_request("HttpTopic", "wake"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(answer.code, response::SUCCESS);
    let pulled = held.await.unwrap().unwrap();
    assert_eq!(pulled.code, response::SUCCESS, "{:?}", pulled.remark);
    let text = get(leader_http, "/metrics").await.body;
    assert_eq!(sample(&text, "raftmq_long_poll_holds"), Some(0.0), "{text}");
    assert!(sample(&text, "raftmq_long_poll_holds_total").unwrap() >= 1.0);
    assert!(
        sample(
            &text,
            "raftmq_requests_total{request_code=\"11\",response_code=\"0\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert!(sample(&text, "raftmq_pull_latency_seconds_count").unwrap() >= 1.0);

    cluster.shutdown().await;
}

/// Unknown paths get 404, other methods 405, and garbage in place of a request line gets no
/// answer but a 400 or a closed connection; the server goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ClusterSpec {
        replicas: 1,
        ..ClusterSpec::default()
    };
    let cluster = LocalCluster::start(&spec, dir.path()).await.unwrap();
    cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
    let replica_http = http_of(&cluster, 1);
    let namesrv_http = cluster.namesrv_http.as_ref().unwrap().local_addr();
    for addr in [replica_http, namesrv_http] {
        assert_eq!(get(addr, "/nope").await.status, 404);
        assert_eq!(get(addr, "/status/extra").await.status, 404);
        assert_eq!(call(addr, "POST", "/status").await.status, 405);
        assert_eq!(call(addr, "DELETE", "/health").await.status, 405);
        assert_eq!(call(addr, "PUT", "/metrics").await.status, 405);
        let garbage = b"\x00\x01\x02 not http at all\r\n\r\n";
        if let Some(answer) = exchange(addr, garbage).await {
            assert_eq!(answer.status, 400, "{answer:?}");
        }
        let truncated = b"GET /health HTTP/1.1\r\nHost";
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(truncated).await.unwrap();
        drop(stream);
        let health = get(addr, "/health").await;
        assert_eq!(health.status, 200, "{health:?}");
        assert_eq!(get(addr, "/status").await.status, 200);
        assert_eq!(get(addr, "/metrics").await.status, 200);
    }
    // A one-replica group: its own leader, no followers.
    let status = get(replica_http, "/status").await.json();
    assert_eq!(status["role"], "leader");
    assert_eq!(status["followers"], serde_json::json!([]));
    cluster.shutdown().await;
}

/// The reasons `/health` gives for a replica that does not serve.
#[test]
fn health_names_why_a_replica_does_not_serve() {
    let status = |role, leader| Status {
        node_id: 1,
        role,
        term: 3,
        leader,
        last_log_index: Some(10),
        committed: Some(10),
        applied: Some(9),
        purged: None,
        matched: BTreeMap::new(),
        has_quorum: role == Role::Leader,
        quorum_acked_ms_ago: (role == Role::Leader).then_some(20),
    };
    let without_quorum = Status {
        has_quorum: false,
        quorum_acked_ms_ago: Some(450),
        ..status(Role::Leader, Some(1))
    };
    use raftmq::http::unavailable_reason;
    assert_eq!(
        unavailable_reason(&without_quorum, true),
        Some("leader without quorum")
    );
    assert_eq!(
        unavailable_reason(&without_quorum, false),
        Some("leader without quorum")
    );
    assert_eq!(
        unavailable_reason(&status(Role::Follower, None), false),
        Some("no leader")
    );
    assert_eq!(
        unavailable_reason(&status(Role::Candidate, None), false),
        Some("no leader")
    );
    assert_eq!(
        unavailable_reason(&status(Role::Leader, Some(1)), false),
        Some("leader applying its log")
    );
    assert_eq!(
        unavailable_reason(&status(Role::Shutdown, Some(1)), false),
        Some("replica stopped")
    );
    assert_eq!(
        unavailable_reason(&status(Role::Leader, Some(1)), true),
        None
    );
    assert_eq!(
        unavailable_reason(&status(Role::Follower, Some(2)), false),
        None
    );
}

/// `raftmq namesrv --http` and `raftmq dev` name their HTTP addresses on the READY line, and
/// serve there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_print_their_http_addresses() {
    let mut command = procs::raftmq();
    command.args([
        "namesrv",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
    ]);
    let namesrv = procs::Proc::spawn(command, "namesrv");
    let ready = namesrv.ready();
    let http: SocketAddr = ready["http"].as_str().unwrap().parse().unwrap();
    let status = get(http, "/status").await;
    assert_eq!(status.status, 200);
    assert_eq!(
        status.json(),
        serde_json::json!({ "brokers": [], "topics": [] })
    );
    drop(namesrv);

    let dir = tempfile::tempdir().unwrap();
    let mut command = procs::raftmq();
    command
        .args([
            "dev",
            "--replicas",
            "1",
            "--namesrv-port",
            "0",
            "--broker-port",
            "0",
            "--http-port",
            "0",
            "--data-dir",
        ])
        .arg(dir.path());
    let dev = procs::Proc::spawn(command, "dev");
    let ready = dev.ready();
    let namesrv_http: SocketAddr = ready["namesrv_http"].as_str().unwrap().parse().unwrap();
    assert_eq!(get(namesrv_http, "/health").await.status, 200);
    let replica = &ready["replicas"][0];
    let http: SocketAddr = replica["http"].as_str().unwrap().parse().unwrap();
    let status = get(http, "/status").await.json();
    assert_eq!(status["node_id"], replica["node_id"]);
    assert_eq!(status["broker_addr"], replica["broker_addr"]);
}
