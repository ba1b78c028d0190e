//! Leadership moved on purpose, with real processes: a name server and three `raftmq broker -c
//! broker.conf` replicas. `raftmq admin transfer-leader` moves it and refuses bad requests
//! clearly; `preferredLeaderId` brings it back to the preferred replica once that replica has
//! caught up; SIGTERM on the leader hands leadership over before the process exits, so a rolling
//! restart under continuous sync sends costs no failed send and no acknowledged message.

#![allow(clippy::unwrap_used)]

#[path = "support/procs.rs"]
mod procs;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use client::{ClientConfig, Message, Producer, ProducerConfig};
use procs::{
    CALL, Node, Proc, now_ms, raftmq, read_queue, registered, start_broker, start_namesrv,
    wait_registered, wait_status, write_confs,
};
use protocol::RemotingCommand;
use protocol::code::{request, response};
use protocol::header::SendMessageRequestHeader;
use protocol::message::{Properties, property};
use remoting::TcpTransport;

const BROKER_NAME: &str = "broker-a";
/// Long enough for an election on a loaded two-core machine.
const MOVE: Duration = Duration::from_secs(30);

/// A name server and three broker processes.
struct Cluster {
    nodes: Vec<Node>,
    procs: Vec<Option<Proc>>,
    namesrv: String,
    client: remoting::Client<TcpTransport>,
    // Dropped last: the processes above are killed before their files go.
    _namesrv: Proc,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts everything, `extra` lines in every broker.conf, and waits for a master.
    async fn start(extra: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let (namesrv_proc, namesrv) = start_namesrv();
        let nodes = write_confs(dir.path(), &namesrv, BROKER_NAME, 3, extra);
        let procs = nodes.iter().map(|n| Some(start_broker(n))).collect();
        let (client, _inbound) = remoting::Client::new(TcpTransport);
        let cluster = Cluster {
            nodes,
            procs,
            namesrv,
            client,
            _namesrv: namesrv_proc,
            _dir: dir,
        };
        cluster.wait_master("a master", |_| true).await;
        cluster
    }

    /// Waits until the name server lists a master for which `check` holds; its index.
    async fn wait_master(&self, what: &str, check: impl Fn(usize) -> bool) -> usize {
        let index = |addr: &String| self.nodes.iter().position(|n| n.broker_addr == *addr);
        let table = wait_registered(&self.client, &self.namesrv, BROKER_NAME, what, MOVE, |t| {
            t.get(&0).and_then(index).is_some_and(&check)
        })
        .await;
        index(&table[&0]).unwrap()
    }

    async fn master(&self) -> usize {
        self.wait_master("a master", |_| true).await
    }

    /// Waits until every follower has matched the leader's whole log as it stood when called.
    async fn wait_caught_up(&self, leader: usize) {
        let status = wait_status(&self.nodes[leader], "leads", MOVE, |s| {
            s["role"] == "leader"
        })
        .await;
        let last = status["last_log_index"].as_u64().unwrap();
        for (i, node) in self.nodes.iter().enumerate() {
            if i != leader && self.procs[i].is_some() {
                wait_status(node, "applies the leader's log", MOVE, |s| {
                    s["applied"].as_u64().is_some_and(|a| a >= last)
                })
                .await;
            }
        }
    }
}

async fn producer(namesrv: &str) -> Producer {
    Producer::start(
        TcpTransport,
        ClientConfig::new([namesrv]),
        ProducerConfig::new("leadership-pg"),
    )
    .await
    .unwrap()
}

/// One send that must succeed (the producer's default retries and timeout).
async fn send_ok(producer: &Producer, what: &str) {
    let message = Message::new("LeaderTopic", format!("after {what}")).with_keys([what]);
    if let Err(err) = producer.send(message).await {
        panic!("a send after {what} fails: {err}");
    }
}

/// What `raftmq admin transfer-leader` printed and how it exited.
struct AdminRun {
    ok: bool,
    line: serde_json::Value,
    stderr: String,
}

async fn admin_transfer(broker: &str, to: &str) -> AdminRun {
    let mut command = raftmq();
    // `--to=VALUE`: a value such as `-1` is not taken for a flag.
    command.args([
        "admin",
        "transfer-leader",
        "--broker",
        broker,
        &format!("--to={to}"),
    ]);
    let output = tokio::task::spawn_blocking(move || command.output().expect("raftmq runs"))
        .await
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line: {stdout:?}");
    let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(line["ok"], output.status.success(), "{line}");
    AdminRun {
        ok: output.status.success(),
        line,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A failed admin run whose error starts with `prefix`.
fn assert_refused(run: &AdminRun, prefix: &str) {
    assert!(!run.ok, "refused: {}", run.line);
    let error = run.line["error"].as_str().unwrap();
    assert!(
        error.starts_with(prefix),
        "error starts with {prefix:?}: {}",
        run.line
    );
    assert!(
        run.stderr.contains(error),
        "stderr names it: {}",
        run.stderr
    );
}

/// `raftmq admin transfer-leader` moves leadership to a follower named by DLedger id and back
/// by node id, each time answering once the target leads (the name server then lists it as
/// master). Bad requests get a clear error, leadership stays, and sends go on: an unknown node,
/// the node that already leads, a follower asked instead of the leader (the answer names the
/// leader and its address), a malformed `--to` (refused before anything is sent), malformed
/// fields sent straight to the broker, and a target that has fallen far behind (killed, then
/// 200 entries written without it). A send reaching the old leader is refused naming the new
/// master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_transfer_leader_moves_leadership_and_refuses_bad_input() {
    let mut c = Cluster::start("").await;
    let producer = producer(&c.namesrv).await;
    send_ok(&producer, "start").await;
    let first = c.master().await;
    c.wait_caught_up(first).await;

    let target = (first + 1) % 3;
    let run = admin_transfer(&c.nodes[first].broker_addr, &c.nodes[target].self_id).await;
    assert!(
        run.ok,
        "transfer to a follower: {} {}",
        run.line, run.stderr
    );
    assert_eq!(run.line["to"], c.nodes[target].self_id.as_str());
    assert_eq!(run.line["from"], c.nodes[first].self_id.as_str());
    assert!(run.line["term"].as_u64().is_some(), "{}", run.line);
    eprintln!("transfer by DLedger id: {}", run.line);
    c.wait_master("the target as master", |m| m == target).await;
    send_ok(&producer, "the transfer by DLedger id").await;

    // A send that reaches the old leader is refused naming the master the name server lists,
    // so that the client's route refresh finds it.
    let mut properties = Properties::default();
    properties.set(property::KEYS, "to the old leader");
    let header = SendMessageRequestHeader {
        producer_group: "leadership-pg".into(),
        topic: "LeaderTopic".into(),
        default_topic: "TBW102".into(),
        default_topic_queue_nums: 4,
        queue_id: 0,
        properties: Some(properties.encode()),
        ..Default::default()
    };
    let request = RemotingCommand::request(request::SEND_MESSAGE_V2, header.to_v2())
        .with_body(b"to the old leader".to_vec());
    let answer = c
        .client
        .request(&c.nodes[first].broker_addr, request, CALL)
        .await
        .unwrap();
    assert_eq!(answer.code, response::SERVICE_NOT_AVAILABLE, "{answer:?}");
    let remark = answer.remark.unwrap_or_default();
    assert!(
        remark.contains(&format!(
            "the name servers list {} as master",
            c.nodes[target].broker_addr
        )),
        "{remark}"
    );

    c.wait_caught_up(target).await;
    let by_id = c.nodes[first].node_id.to_string();
    let run = admin_transfer(&c.nodes[target].broker_addr, &by_id).await;
    assert!(run.ok, "transfer by node id: {} {}", run.line, run.stderr);
    assert_eq!(run.line["to"], c.nodes[first].self_id.as_str());
    eprintln!("transfer by node id: {}", run.line);
    c.wait_master("the first leader back as master", |m| m == first)
        .await;
    send_ok(&producer, "the transfer by node id").await;

    let leader = first;
    let leader_addr = c.nodes[leader].broker_addr.clone();
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;

    let run = admin_transfer(&leader_addr, "n7").await;
    assert_refused(
        &run,
        "unknown target: node 8 (n7) is not a member of the group",
    );
    assert_eq!(run.line["code"], response::INVALID_PARAMETER);
    send_ok(&producer, "a transfer to an unknown node").await;

    let run = admin_transfer(&leader_addr, &c.nodes[leader].self_id).await;
    assert_refused(
        &run,
        &format!(
            "node {} ({}) already leads",
            c.nodes[leader].node_id, c.nodes[leader].self_id
        ),
    );
    send_ok(&producer, "a transfer to the leader").await;

    let run = admin_transfer(&c.nodes[follower].broker_addr, &c.nodes[other].self_id).await;
    assert_refused(&run, "not the leader");
    assert_eq!(run.line["code"], response::SERVICE_NOT_AVAILABLE);
    assert_eq!(run.line["leader"], c.nodes[leader].self_id.as_str());
    assert_eq!(run.line["leader_addr"], leader_addr.as_str());
    send_ok(&producer, "a transfer asked of a follower").await;

    for bad in ["bogus", "n", "0", "n1.5", "-1", ""] {
        let run = admin_transfer(&leader_addr, bad).await;
        assert_refused(&run, "invalid --to");
        assert!(
            run.line.get("code").is_none(),
            "nothing was sent: {}",
            run.line
        );
    }
    let raw = |ext: &[(&str, &str)]| {
        let ext = ext
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RemotingCommand::request(request::RAFTMQ_TRANSFER_LEADER, ext)
    };
    for (ext, says) in [
        (vec![], "the field to is missing"),
        (vec![("to", "leader")], "\"leader\" is not a node"),
        (
            vec![("to", "n1"), ("timeoutMillis", "0")],
            "timeoutMillis \"0\" is not",
        ),
    ] {
        let answer = c
            .client
            .request(&leader_addr, raw(&ext), CALL)
            .await
            .unwrap();
        assert_eq!(answer.code, response::INVALID_PARAMETER, "{answer:?}");
        let remark = answer.remark.unwrap_or_default();
        assert!(remark.contains(says), "{says}: {remark}");
    }
    send_ok(&producer, "malformed requests").await;
    assert_eq!(c.master().await, leader, "leadership stayed");

    c.procs[other].as_mut().unwrap().kill9();
    c.procs[other] = None;
    for i in 0..200 {
        send_ok(&producer, &format!("write {i} without a follower")).await;
    }
    let run = admin_transfer(&leader_addr, &c.nodes[other].self_id).await;
    assert_refused(&run, "target not caught up");
    assert_eq!(run.line["code"], response::SYSTEM_BUSY);
    send_ok(&producer, "a transfer to a replica far behind").await;
    assert_eq!(c.master().await, leader, "leadership stayed");
    producer.shutdown().await;
}

/// With `preferredLeaderId=n2` in every broker.conf, n2 leads once the group started and it
/// caught up; killed with `kill -9`, another replica takes over; restarted, n2 catches up and
/// leadership moves back to it. Sends succeed at every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_leader_leads_and_takes_leadership_back() {
    let mut c = Cluster::start("preferredLeaderId=n2\n").await;
    let preferred = 2;
    c.wait_master("n2 as master", |m| m == preferred).await;
    let producer = producer(&c.namesrv).await;
    send_ok(&producer, "n2 took the lead").await;

    c.procs[preferred].as_mut().unwrap().kill9();
    let killed_at = Instant::now();
    let stand_in = c
        .wait_master("another master after n2 died", |m| m != preferred)
        .await;
    eprintln!(
        "{} took over {} ms after n2 was killed",
        c.nodes[stand_in].self_id,
        killed_at.elapsed().as_millis()
    );
    send_ok(&producer, "n2 died").await;

    c.procs[preferred] = Some(start_broker(&c.nodes[preferred]));
    let restarted_at = Instant::now();
    c.wait_master("n2 back as master", |m| m == preferred).await;
    eprintln!(
        "n2 leads again {} ms after its restart",
        restarted_at.elapsed().as_millis()
    );
    send_ok(&producer, "n2 came back").await;
    producer.shutdown().await;
}

/// One acknowledged send.
#[derive(Debug, Clone)]
struct Ack {
    key: String,
    queue_id: i32,
    queue_offset: i64,
    at_ms: u64,
    took: Duration,
}

/// What the producers recorded.
#[derive(Default)]
struct Record {
    acks: Vec<Ack>,
    failures: Vec<String>,
}

const TOPIC: &str = "RollingTopic";
const PRODUCERS: usize = 4;

/// Sync sends from `PRODUCERS` tasks until `stop`, each result recorded.
fn produce(
    producer: Producer,
    stop: Arc<AtomicBool>,
    record: Arc<std::sync::Mutex<Record>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..PRODUCERS)
        .map(|p| {
            let producer = producer.clone();
            let stop = stop.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("p{p}-{i}");
                    i += 1;
                    let message = Message::new(TOPIC, vec![b'x'; 128]).with_keys([key.as_str()]);
                    let started = Instant::now();
                    let result = producer.send(message).await;
                    let mut record = record.lock().unwrap();
                    match result {
                        Ok(sent) => record.acks.push(Ack {
                            key,
                            queue_id: sent.queue.queue_id,
                            queue_offset: sent.queue_offset,
                            at_ms: now_ms(),
                            took: started.elapsed(),
                        }),
                        Err(err) => record
                            .failures
                            .push(format!("{key} at {}: {err}", now_ms())),
                    }
                }
            })
        })
        .collect()
}

fn acks_so_far(record: &std::sync::Mutex<Record>) -> usize {
    record.lock().unwrap().acks.len()
}

/// Waits until `more` sends were acknowledged after this call.
async fn wait_acks(record: &std::sync::Mutex<Record>, more: usize, what: &str) {
    let from = acks_so_far(record);
    let wanted = format!("{more} acknowledgements {what}");
    testkit::wait::until(&wanted, MOVE, || {
        let acked = acks_so_far(record) - from;
        if acked >= more { Ok(()) } else { Err(acked) }
    })
    .await;
}

/// A leader's restart, for the report.
struct LeaderRestart {
    node: String,
    signalled_ms: u64,
    exited_ms: u64,
    exited_after: Duration,
}

/// A rolling restart under continuous sync sends from our client's `Producer` (default retries
/// and timeout): each replica in turn, the leader first, gets SIGTERM and must exit 0, is
/// started again and must rejoin (registered as a follower, and applying the leader's log). A
/// stopping leader hands leadership over first: the name server lists the new master by the
/// time it exited. No send fails during the whole run, and every acknowledged message is on
/// every replica at the queue and offset it was acknowledged with. The write gap around each
/// leader's restart (the longest time without an acknowledgement) is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_with_sigterm_fails_no_send() {
    let mut c = Cluster::start("").await;
    let first = c.master().await;
    let producer = producer(&c.namesrv).await;
    let stop = Arc::new(AtomicBool::new(false));
    let record = Arc::new(std::sync::Mutex::new(Record::default()));
    let tasks = produce(producer.clone(), stop.clone(), record.clone());
    wait_acks(&record, 500, "before the first restart").await;

    let mut order = vec![first];
    order.extend((0..3).filter(|i| *i != first));
    let mut leader_restarts = Vec::new();
    for i in order {
        let node = c.nodes[i].clone();
        let was_master = c.master().await == i;
        let signalled_ms = now_ms();
        let signalled = Instant::now();
        let proc = c.procs[i].as_mut().unwrap();
        proc.signal("-TERM");
        let exit = proc.wait_exit(MOVE).await;
        let exited_ms = now_ms();
        assert!(
            exit.success(),
            "{} exits 0 on SIGTERM: {exit}",
            node.self_id
        );
        if was_master {
            // Handed over before exiting: the name server already lists the successor.
            let table = registered(&c.client, &c.namesrv, BROKER_NAME).await;
            let master = table.get(&0).cloned();
            assert!(
                master.as_ref().is_some_and(|m| *m != node.broker_addr),
                "{} handed leadership over before exiting: {table:?}",
                node.self_id
            );
            leader_restarts.push(LeaderRestart {
                node: node.self_id.clone(),
                signalled_ms,
                exited_ms,
                exited_after: signalled.elapsed(),
            });
        }
        c.procs[i] = None;
        wait_acks(&record, 100, &format!("while {} is down", node.self_id)).await;

        c.procs[i] = Some(start_broker(&node));
        let addr = node.broker_addr.clone();
        wait_registered(
            &c.client,
            &c.namesrv,
            BROKER_NAME,
            &format!("{} registered as a follower", node.self_id),
            MOVE,
            |t| t.iter().any(|(id, a)| *id > 0 && *a == addr),
        )
        .await;
        let leader = c.master().await;
        c.wait_caught_up(leader).await;
        wait_acks(&record, 200, &format!("after {} rejoined", node.self_id)).await;
    }

    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    producer.shutdown().await;
    let record = std::mem::take(&mut *record.lock().unwrap());
    assert!(
        record.failures.is_empty(),
        "{} of {} sends failed during the rolling restart: {:?}",
        record.failures.len(),
        record.failures.len() + record.acks.len(),
        &record.failures[..record.failures.len().min(10)]
    );
    assert!(!leader_restarts.is_empty(), "the leader was restarted");

    let mut times: Vec<u64> = record.acks.iter().map(|a| a.at_ms).collect();
    times.sort_unstable();
    for restart in &leader_restarts {
        let gap = times
            .windows(2)
            .filter(|w| w[1] >= restart.signalled_ms && w[0] <= restart.exited_ms)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0);
        let slowest = record
            .acks
            .iter()
            .filter(|a| a.at_ms >= restart.signalled_ms && a.at_ms <= restart.exited_ms + 3000)
            .map(|a| a.took)
            .max()
            .unwrap_or_default();
        eprintln!(
            "leader {} restarted: write gap {gap} ms, slowest send {} ms, exited {} ms after SIGTERM",
            restart.node,
            slowest.as_millis(),
            restart.exited_after.as_millis()
        );
    }
    eprintln!("{} sends acknowledged, none failed", record.acks.len());

    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for ack in &record.acks {
        let end = ends.entry(ack.queue_id).or_default();
        *end = (*end).max(ack.queue_offset + 1);
    }
    for node in &c.nodes {
        for (&queue_id, &end) in &ends {
            let keys = read_queue(&c.client, &node.broker_addr, TOPIC, queue_id, end).await;
            for ack in record.acks.iter().filter(|a| a.queue_id == queue_id) {
                assert_eq!(
                    keys[ack.queue_offset as usize], ack.key,
                    "{} queue {queue_id} offset {}",
                    node.self_id, ack.queue_offset
                );
            }
        }
    }
}
