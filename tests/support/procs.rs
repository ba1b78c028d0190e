//! Real `raftmq` processes for integration tests: a name server and `raftmq broker -c FILE`
//! replicas on 127.0.0.1 with probed free ports, their READY lines, signals by PID, and the
//! name server's view of a broker group.
//!
//! Include it with `#[path = "support/procs.rs"] mod procs;` (path relative to the including
//! file). Every process is killed (SIGKILL, by its PID) when its [`Proc`] is dropped.
//!
//! With `RAFTMQ_TEST_LOGS=DIR` in the environment, each process's stderr goes to
//! `DIR/<name>.log` (appended), for reading a failure afterwards.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use protocol::RemotingCommand;
use protocol::body::ClusterInfo;
use protocol::code::{request, response};
use protocol::header::{
    CommandHeader, PullMessageRequestHeader, PullMessageResponseHeader, pull_flag,
};
use protocol::message::{StoredMessage, property};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Deadline of one remoting call from a test.
pub const CALL: Duration = Duration::from_secs(3);

/// Longest a replica may take to have applied what is read from it.
pub const READ_QUEUE_WAIT: Duration = Duration::from_secs(60);

/// A child process, killed (SIGKILL, by PID) when dropped.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Its stdout, line by line.
    pub lines: Receiver<String>,
    /// Its name (log file name).
    pub name: String,
    /// Where its stderr goes.
    pub stderr_path: PathBuf,
    /// Removes the stderr file when `RAFTMQ_TEST_LOGS` did not ask to keep it.
    _stderr_file: Option<tempfile::TempPath>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill(); // Already exited is fine.
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `command` with its stdout piped (read line by line on a thread) and its stderr
    /// in a file (`RAFTMQ_TEST_LOGS/<name>.log` if set, else a temporary file), quoted when it
    /// exits before its READY line.
    pub fn spawn(mut command: Command, name: &str) -> Proc {
        let (stderr, stderr_path, stderr_file) = match std::env::var_os("RAFTMQ_TEST_LOGS") {
            Some(dir) => {
                let path = Path::new(&dir).join(format!("{name}.log"));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
                (Stdio::from(file), path, None)
            }
            None => {
                let (file, path) = tempfile::NamedTempFile::new()
                    .expect("a temporary file for stderr")
                    .into_parts();
                (Stdio::from(file), path.to_path_buf(), Some(path))
            }
        };
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("raftmq starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Proc {
            child,
            lines,
            name: name.to_string(),
            stderr_path,
            _stderr_file: stderr_file,
        }
    }

    /// Why it stopped, if it says (a panic, or the error its `main` returned), and the last
    /// lines of its stderr.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let panic = lines
            .iter()
            .position(|line| line.contains("panicked at") || line.starts_with("Error: "))
            .map(|at| lines[at..(at + 3).min(lines.len())].join("\n") + "\n...\n")
            .unwrap_or_default();
        format!(
            "{panic}{}",
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }

    /// The JSON of the process's `READY {json}` line, waiting up to 60 s.
    pub fn ready(&self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: no READY line within 60 s", self.name)
                }
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: exited before its READY line; stderr ends:\n{}",
                    self.name,
                    self.stderr_tail()
                ),
            };
            if let Some(json) = line.strip_prefix("READY ") {
                return serde_json::from_str(json).expect("READY carries JSON");
            }
        }
    }

    /// Sends `signal` (`"-9"`, `"-TERM"`) to the process by its PID.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {}", self.child.id());
    }

    /// `kill -9`, then reaps it.
    pub fn kill9(&mut self) {
        self.signal("-9");
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let what = format!("{} to exit", self.name);
        testkit::wait::until(&what, timeout, || {
            self.child.try_wait().expect("try_wait works")
        })
        .await
    }

    /// As [`Proc::wait_exit`], for tests that run no async runtime.
    pub fn wait_exit_blocking(&mut self, timeout: Duration) -> ExitStatus {
        let what = format!("{} to exit", self.name);
        testkit::wait::until_blocking(&what, timeout, || {
            self.child.try_wait().expect("try_wait works")
        })
    }
}

/// The `raftmq` binary under test.
pub fn raftmq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_raftmq"))
}

/// A port free on 127.0.0.1 when probed, below the kernel's ephemeral range: a port from that
/// range (what binding port 0 gives) can be taken, while its server is down for a restart, by
/// an outgoing connection, even one to that very port (a TCP self-connect on loopback).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let low: u16 = 10_000;
    if ephemeral_low <= low + 1000 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("probe binds");
        return listener.local_addr().expect("has an address").port();
    }
    let seed = now_ms() ^ (u64::from(std::process::id()) << 32);
    for _ in 0..1000 {
        // splitmix64 over a per-process counter: no two draws of this process repeat.
        let mut x = seed.wrapping_add(
            DRAWS
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        let port = low + (x % u64::from(ephemeral_low - low)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below {ephemeral_low} after 1000 draws");
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// Starts `raftmq namesrv` on a free port; returns it and its address.
pub fn start_namesrv() -> (Proc, String) {
    let mut command = raftmq();
    command.args([
        "namesrv",
        "--listen",
        "127.0.0.1:0",
        "--broker-timeout-secs",
        "10",
    ]);
    let proc = Proc::spawn(command, "namesrv");
    let addr = proc.ready()["namesrv"]
        .as_str()
        .expect("namesrv address")
        .to_string();
    (proc, addr)
}

/// One broker replica's files and addresses.
#[derive(Debug, Clone)]
pub struct Node {
    /// DLedger id, `n0`...
    pub self_id: String,
    /// Node id (`nK` is K + 1).
    pub node_id: u64,
    /// Its broker.conf.
    pub conf: PathBuf,
    /// Client address.
    pub broker_addr: String,
    /// HTTP status address.
    pub http_addr: String,
    /// The address it serves and dials Raft from (`ip`) and its Raft port.
    pub ip: std::net::IpAddr,
    /// Its Raft port.
    pub raft_port: u16,
    /// Its data folder (`storePathRootDir`).
    pub store_dir: PathBuf,
}

/// Writes `n<k>.conf` for `replicas` replicas of group `broker_name` sharing a name server,
/// each serving HTTP, all on 127.0.0.1; `extra` lines (`key=value\n`) go into every file.
pub fn write_confs(
    dir: &Path,
    namesrv: &str,
    broker_name: &str,
    replicas: usize,
    extra: &str,
) -> Vec<Node> {
    let hosts = vec![std::net::IpAddr::from([127, 0, 0, 1]); replicas];
    write_confs_on(dir, namesrv, broker_name, &hosts, extra)
}

/// As [`write_confs`], replica `k` on address `hosts[k]` (its client, Raft and HTTP ports).
pub fn write_confs_on(
    dir: &Path,
    namesrv: &str,
    broker_name: &str,
    hosts: &[std::net::IpAddr],
    extra: &str,
) -> Vec<Node> {
    let raft: Vec<u16> = hosts.iter().map(|_| free_port()).collect();
    let peers = raft
        .iter()
        .zip(hosts)
        .enumerate()
        .map(|(k, (port, ip))| format!("n{k}-{ip}:{port}"))
        .collect::<Vec<_>>()
        .join(";");
    hosts
        .iter()
        .enumerate()
        .map(|(k, ip)| {
            let port = free_port();
            let http = free_port();
            let conf = dir.join(format!("n{k}.conf"));
            let store_dir = dir.join(format!("n{k}"));
            let text = format!(
                "brokerClusterName=TestCluster\nbrokerName={broker_name}\nlistenPort={port}\n\
                 brokerIP1={ip}\nnamesrvAddr={namesrv}\nstorePathRootDir={}\n\
                 enableDLegerCommitLog=true\ndLegerGroup={broker_name}\ndLegerPeers={peers}\n\
                 dLegerSelfId=n{k}\nflushDiskType=SYNC_FLUSH\nhttpListenAddr={ip}:{http}\n\
                 {extra}",
                store_dir.display()
            );
            std::fs::write(&conf, text).expect("conf written");
            Node {
                self_id: format!("n{k}"),
                node_id: k as u64 + 1,
                conf,
                broker_addr: format!("{ip}:{port}"),
                http_addr: format!("{ip}:{http}"),
                ip: *ip,
                raft_port: raft[k],
                store_dir,
            }
        })
        .collect()
}

/// Starts `raftmq broker -c` for `node` and waits for its READY line.
pub fn start_broker(node: &Node) -> Proc {
    start_broker_as(node, None)
}

/// Another user to run a replica as (the test runs as root).
#[derive(Debug, Clone)]
pub struct RunAs {
    /// Its uid, and gid.
    pub uid: u32,
    /// A copy of the `raftmq` binary any user can execute: the one cargo built may sit under a
    /// folder only root can enter.
    pub binary: PathBuf,
}

/// Copies the `raftmq` binary into `dir` (which any user can enter) with mode 0755, for
/// [`RunAs`].
pub fn raftmq_for_all(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let copy = dir.join("raftmq");
    std::fs::copy(env!("CARGO_BIN_EXE_raftmq"), &copy).expect("raftmq copied");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
        .expect("raftmq executable by all");
    copy
}

/// As [`start_broker`], run as another user when `run_as` says so: `node.store_dir` must then
/// belong to that user and the folders of its files be open to it.
pub fn start_broker_as(node: &Node, run_as: Option<&RunAs>) -> Proc {
    use std::os::unix::process::CommandExt;
    let mut command = match run_as {
        Some(user) => {
            let mut command = Command::new(&user.binary);
            command.uid(user.uid).gid(user.uid);
            if let Some(dir) = node.conf.parent() {
                command.current_dir(dir);
            }
            command
        }
        None => raftmq(),
    };
    command.args(["broker", "-c"]).arg(&node.conf);
    let proc = Proc::spawn(command, &node.self_id);
    let ready = proc.ready();
    assert_eq!(ready["broker_addr"], node.broker_addr.as_str());
    proc
}

/// Broker id → address of group `broker_name` as the name server lists it (empty when it does
/// not answer).
pub async fn registered(
    client: &remoting::Client<remoting::TcpTransport>,
    namesrv: &str,
    broker_name: &str,
) -> BTreeMap<i64, String> {
    let request = RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO, Default::default());
    let Ok(answer) = client.request(namesrv, request, CALL).await else {
        return BTreeMap::new();
    };
    let info: ClusterInfo = match protocol::body::parse(&answer.body, "cluster info") {
        Ok(info) => info,
        Err(_) => return BTreeMap::new(),
    };
    info.broker_addr_table
        .get(broker_name)
        .map(|b| b.broker_addrs.clone().into_iter().collect())
        .unwrap_or_default()
}

/// Polls the name server until `check` holds of group `broker_name`'s registrations, or panics
/// naming `what` after `timeout`.
pub async fn wait_registered(
    client: &remoting::Client<remoting::TcpTransport>,
    namesrv: &str,
    broker_name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&BTreeMap<i64, String>) -> bool,
) -> BTreeMap<i64, String> {
    testkit::wait::until_async(what, timeout, || async {
        let table = registered(client, namesrv, broker_name).await;
        if check(&table) { Ok(table) } else { Err(table) }
    })
    .await
}

/// `GET path` over HTTP/1.1: the status code and the body, or `None` when it did not answer.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let io = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
    };
    tokio::time::timeout(CALL, io).await.ok().flatten()
}

/// `GET path` over HTTP/1.1; the JSON body of a 200 answer, or `None`.
pub async fn http_json(addr: &str, path: &str) -> Option<serde_json::Value> {
    match http_get(addr, path).await? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// Polls replica `node`'s `/status` until `check` holds, or panics naming `what`.
pub async fn wait_status(
    node: &Node,
    what: &str,
    timeout: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let what = format!("{} {what}", node.self_id);
    testkit::wait::until_async(&what, timeout, || async {
        match http_json(&node.http_addr, "/status").await {
            Some(status) if check(&status) => Ok(status),
            seen => Err(seen),
        }
    })
    .await
}

/// Reads queue `queue_id` of `topic` from `broker`, offsets 0 to `end`, polling until the
/// replica has applied that far: each message's KEYS by queue offset.
pub async fn read_queue(
    client: &remoting::Client<remoting::TcpTransport>,
    broker: &str,
    topic: &str,
    queue_id: i32,
    end: i64,
) -> Vec<String> {
    read_queue_from(client, broker, topic, queue_id, end, false).await
}

/// As [`read_queue`], then on past `end` until the broker has nothing more (`to_the_end`).
pub async fn read_queue_from(
    client: &remoting::Client<remoting::TcpTransport>,
    broker: &str,
    topic: &str,
    queue_id: i32,
    end: i64,
    to_the_end: bool,
) -> Vec<String> {
    read_messages_from(client, broker, topic, queue_id, end, to_the_end)
        .await
        .into_iter()
        .map(|message| {
            message
                .properties
                .get(property::KEYS)
                .expect("test messages carry a key")
                .to_string()
        })
        .collect()
}

/// As [`read_queue_from`], the messages themselves.
pub async fn read_messages_from(
    client: &remoting::Client<remoting::TcpTransport>,
    broker: &str,
    topic: &str,
    queue_id: i32,
    end: i64,
    to_the_end: bool,
) -> Vec<StoredMessage> {
    let mut keys = Vec::new();
    loop {
        let offset = keys.len() as i64;
        let short = offset < end;
        if !short && !to_the_end {
            break;
        }
        let header = PullMessageRequestHeader {
            consumer_group: "procs-check".into(),
            topic: topic.into(),
            queue_id,
            queue_offset: offset,
            max_msg_nums: 256,
            sys_flag: pull_flag::SUBSCRIPTION,
            commit_offset: 0,
            suspend_timeout_millis: 0,
            subscription: Some("*".into()),
            sub_version: 0,
            expression_type: Some("TAG".into()),
            max_msg_bytes: None,
        };
        // Messages at `offset`, or `None` at the queue's end once past `end`; a replica that
        // has not applied that far yet is asked again.
        let what = format!("{broker} queue {queue_id} past offset {offset} of {end}");
        let answer = testkit::wait::until_async(&what, READ_QUEUE_WAIT, || {
            let request = RemotingCommand::request(request::PULL_MESSAGE, header.to_ext());
            async move {
                match client.request(broker, request, CALL).await {
                    Ok(answer) if answer.code == response::SUCCESS => Ok(Some(answer)),
                    Ok(answer) if !short && answer.code == response::PULL_NOT_FOUND => Ok(None),
                    Ok(answer) => Err(format!("code {}: {:?}", answer.code, answer.remark)),
                    Err(err) => Err(err.to_string()),
                }
            }
        })
        .await;
        let Some(answer) = answer else { break };
        let next = PullMessageResponseHeader::from_ext(&answer.ext_fields)
            .expect("pull header")
            .next_begin_offset;
        for message in StoredMessage::decode_all(&answer.body).expect("records decode") {
            assert_eq!(
                message.queue_offset,
                keys.len() as i64,
                "{broker} queue {queue_id}"
            );
            keys.push(message);
        }
        assert_eq!(next, keys.len() as i64);
    }
    keys
}

/// One acknowledged message: its key, the queue and offset it was acknowledged at, and when.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The message's key (unique per message).
    pub key: String,
    /// Queue it was acknowledged in.
    pub queue_id: i32,
    /// Offset it was acknowledged at.
    pub queue_offset: i64,
    /// Wall-clock ms of the acknowledgement.
    pub at_ms: u64,
}

/// Reads the acks file `raftmq bench produce --acks-file` wrote (`key queue offset at_ms`).
pub fn read_acks(path: &Path) -> Vec<Ack> {
    let text = std::fs::read_to_string(path).expect("acks file");
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 4, "acks line {line:?}");
            Ack {
                key: fields[0].to_string(),
                queue_id: fields[1].parse().expect("queue id"),
                queue_offset: fields[2].parse().expect("queue offset"),
                at_ms: fields[3].parse().expect("ack time"),
            }
        })
        .collect()
}

/// Checks, once every producer stopped, that every replica of `nodes` holds every message of
/// `acks` at the queue and offset it was acknowledged at, every message of `at_offset` (key,
/// offset: the C++ client reports no queue) at that offset of some queue, and that every
/// replica holds every message at the same places. `master` is read first, to its end, for
/// the queues' lengths. Returns how many keys are stored more than once (a send retried after
/// a lost answer is stored twice: at least once delivery).
pub async fn assert_acked_everywhere(
    client: &remoting::Client<remoting::TcpTransport>,
    nodes: &[Node],
    master: &str,
    topic: &str,
    queues: i32,
    acks: &[Ack],
    at_offset: &[(String, i64)],
) -> usize {
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for ack in acks {
        let end = ends.entry(ack.queue_id).or_default();
        *end = (*end).max(ack.queue_offset + 1);
    }
    // Queue lengths as the master has them: at least the acknowledged ends, and the messages
    // whose queue is unknown are within.
    for queue_id in 0..queues {
        let end = ends.entry(queue_id).or_default();
        *end = read_queue_from(client, master, topic, queue_id, *end, true)
            .await
            .len() as i64;
    }
    let mut layouts: Vec<BTreeMap<String, std::collections::BTreeSet<(i32, i64)>>> = Vec::new();
    for node in nodes {
        let mut held: BTreeMap<String, std::collections::BTreeSet<(i32, i64)>> = BTreeMap::new();
        for queue_id in 0..queues {
            let end = ends[&queue_id];
            let keys =
                read_queue_from(client, &node.broker_addr, topic, queue_id, end, false).await;
            for (offset, key) in keys.iter().enumerate() {
                held.entry(key.clone())
                    .or_default()
                    .insert((queue_id, offset as i64));
            }
            for ack in acks.iter().filter(|a| a.queue_id == queue_id) {
                assert_eq!(
                    keys[ack.queue_offset as usize], ack.key,
                    "{} queue {queue_id} offset {}",
                    node.broker_addr, ack.queue_offset
                );
            }
        }
        for (key, offset) in at_offset {
            let slots = held.get(key);
            assert!(
                slots.is_some_and(|s| s.iter().any(|(_, o)| o == offset)),
                "message {key} acknowledged at offset {offset}; {} holds it at {slots:?}",
                node.broker_addr
            );
        }
        layouts.push(held);
    }
    assert!(
        layouts.windows(2).all(|w| w[0] == w[1]),
        "every replica holds every message at the same queue and offset"
    );
    layouts[0].values().filter(|s| s.len() > 1).count()
}

/// Waits until `by` more sends than now are acknowledged in `acks` (producers running).
pub async fn acks_grow(
    what: &str,
    acks: &std::sync::Mutex<Vec<Ack>>,
    by: usize,
    timeout: Duration,
) {
    let target = acks.lock().expect("acks").len() + by;
    testkit::wait::until(what, timeout, || {
        let now = acks.lock().expect("acks").len();
        if now >= target { Ok(()) } else { Err(now) }
    })
    .await;
}

/// Our client crate's producer, as the failure tests run it: sync sends of unique keys
/// (`rust-<i>`, also the body) to `topic` until `stop`, 5 ms apart, each acknowledged one
/// recorded in `acks`. Returns how many sends failed after the client's own retries.
pub async fn produce_until(
    namesrv: String,
    group: &str,
    topic: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acks: std::sync::Arc<std::sync::Mutex<Vec<Ack>>>,
) -> u64 {
    let producer = client::Producer::start(
        remoting::TcpTransport,
        client::ClientConfig::new([namesrv.as_str()]),
        client::ProducerConfig::new(group),
    )
    .await
    .expect("producer starts");
    let mut failed = 0;
    let mut i = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let key = format!("rust-{i}");
        let message = client::Message::new(topic, key.clone()).with_keys([key.clone()]);
        match producer.send(message).await {
            Ok(sent) => acks.lock().expect("acks").push(Ack {
                key,
                queue_id: sent.queue.queue_id,
                queue_offset: sent.queue_offset,
                at_ms: now_ms(),
            }),
            Err(err) => {
                eprintln!("producer {group}: send {i} failed: {err}");
                failed += 1;
            }
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    producer.shutdown().await;
    failed
}
