//! The `raftmq` binary as a user runs it: real processes (tests/support/procs.rs), stopped by
//! PID.

#[path = "support/procs.rs"]
mod procs;

use std::time::Duration;

use procs::{Proc, free_port, raftmq};
use testkit::wait::until_blocking;

/// How long a process gets to stop after a signal.
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// `raftmq dev` starts a 3-replica group on 127.0.0.1, prints one `READY {json}` line naming
/// every replica and the leader, and on Ctrl-C (SIGINT) shuts down cleanly with exit code 0.
#[test]
fn dev_prints_ready_and_stops_cleanly_on_sigint() {
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
        .arg(dir.path());
    let mut dev = Proc::spawn(command, "dev");
    let ready = dev.ready();
    let replicas = ready["replicas"].as_array().expect("replicas list");
    assert_eq!(replicas.len(), 3);
    for replica in replicas {
        assert!(
            replica["raft_addr"]
                .as_str()
                .expect("raft_addr")
                .starts_with("127.0.0.1:")
        );
    }
    assert!((1..=3).contains(&ready["leader"].as_u64().expect("leader id")));
    assert!(
        ready["namesrv"]
            .as_str()
            .expect("namesrv")
            .starts_with("127.0.0.1:")
    );
    for replica in replicas {
        assert!(
            replica["broker_addr"]
                .as_str()
                .expect("broker_addr")
                .starts_with("127.0.0.1:")
        );
    }
    for id in 1..=3 {
        assert!(dir.path().join(format!("node-{id}/commitlog")).is_dir());
    }

    dev.signal("-INT");
    let exit = dev.wait_exit_blocking(STOP_WITHIN);
    assert!(exit.success(), "clean shutdown exits 0, got {exit}");
}

/// `raftmq dev` refuses a replica count outside 1..=5 with a message naming the flag.
#[test]
fn dev_rejects_bad_replica_count() {
    let output = raftmq()
        .args(["dev", "--replicas", "7"])
        .output()
        .expect("raftmq runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--replicas"), "{stderr}");
}

/// `raftmq bench ledger` runs a group and ends with one JSON line carrying the figures the
/// benchmark reports (values are measured in BENCHMARKS.md, not asserted here).
#[test]
fn bench_ledger_ends_with_a_json_summary() {
    let output = raftmq()
        .args([
            "bench",
            "ledger",
            "--replicas",
            "3",
            "--clients",
            "16",
            "--payload-bytes",
            "128",
        ])
        .args(["--duration-secs", "1", "--warmup-secs", "0"])
        .output()
        .expect("raftmq runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().expect("a summary line");
    let summary: serde_json::Value = serde_json::from_str(last).expect("JSON summary");
    for key in [
        "entries_per_sec",
        "mib_per_sec",
        "p50_us",
        "p99_us",
        "p999_us",
    ] {
        assert!(summary[key].is_number(), "summary has {key}: {summary}");
    }
    assert!(summary["entries"].as_u64().expect("entries") > 0);
}

/// `raftmq namesrv` prints `READY {"namesrv":addr}`, answers requests there, and stops with
/// exit code 0 on SIGTERM.
#[test]
fn namesrv_serves_and_stops_on_sigterm() {
    use std::io::{Read, Write};

    let mut command = raftmq();
    command.args(["namesrv", "--listen", "127.0.0.1:0"]);
    let mut namesrv = Proc::spawn(command, "namesrv");
    let ready = namesrv.ready();
    let addr = ready["namesrv"].as_str().expect("namesrv address");
    assert!(addr.starts_with("127.0.0.1:"));

    let request = protocol::RemotingCommand::request(
        protocol::code::request::GET_BROKER_CLUSTER_INFO,
        Default::default(),
    )
    .to_bytes()
    .expect("encodes");
    let mut stream = std::net::TcpStream::connect(addr).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout set");
    stream.write_all(&request).expect("sends");
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).expect("an answer");
    let mut frame = vec![0u8; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut frame).expect("the whole answer");
    let answer = protocol::RemotingCommand::decode(&frame.into()).expect("decodes");
    assert_eq!(answer.code, protocol::code::response::SUCCESS);
    assert!(answer.is_response());

    namesrv.signal("-TERM");
    assert!(namesrv.wait_exit_blocking(STOP_WITHIN).success());
}

/// Bad flags stop `raftmq namesrv` with a message naming the problem.
#[test]
fn namesrv_rejects_bad_flags() {
    let out = raftmq()
        .args([
            "namesrv",
            "--listen",
            "127.0.0.1:0",
            "--broker-timeout-secs",
            "0",
        ])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--broker-timeout-secs"));
    let out = raftmq()
        .args(["namesrv", "--listen", "not-an-address"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-an-address"));
}

/// `raftmq bench produce` against `raftmq dev` ends with a JSON summary, and its acks file has
/// one `key queue_id queue_offset ack_unix_ms` line per acknowledged message; `bench consume`
/// then reads them all back.
#[test]
fn bench_produce_and_consume_against_dev() {
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
        .arg(dir.path());
    let dev = Proc::spawn(command, "dev");
    let ready = dev.ready();
    let namesrv = ready["namesrv"].as_str().expect("namesrv").to_string();
    let acks = dir.path().join("acks.txt");
    let out = raftmq()
        .args([
            "bench",
            "produce",
            "--namesrv",
            &namesrv,
            "--producers",
            "4",
        ])
        .args(["--duration-secs", "2", "--acks-file"])
        .arg(&acks)
        .output()
        .expect("bench runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a line")).expect("JSON summary");
    for field in ["msgs_per_sec", "mib_per_sec", "p50_us", "p99_us", "p999_us"] {
        assert!(summary[field].is_number(), "{field} in {summary}");
    }
    let sent = summary["messages"].as_u64().expect("messages");
    assert!(sent > 0);
    let acked = std::fs::read_to_string(&acks).expect("acks file");
    assert_eq!(acked.lines().count() as u64, sent);
    for line in acked.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 4, "{line}");
        assert!(
            fields[1..].iter().all(|f| f.parse::<i64>().is_ok()),
            "{line}"
        );
    }
    let out = raftmq()
        .args(["bench", "consume", "--namesrv", &namesrv])
        .output()
        .expect("bench runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a line")).expect("JSON summary");
    assert_eq!(
        summary["messages"].as_u64(),
        Some(sent),
        "every produced message read back"
    );
}

/// A one-replica broker.conf under `dir`, with `extra` lines appended.
fn broker_conf(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let conf = dir.join("broker.conf");
    let text = format!(
        "brokerName=broker-a\nlistenPort={}\nbrokerIP1=127.0.0.1\nnamesrvAddr=127.0.0.1:{}\n\
         storePathRootDir={}\nenableDLegerCommitLog=true\ndLegerPeers=n0-127.0.0.1:{}\n\
         dLegerSelfId=n0\n{extra}",
        free_port(),
        free_port(),
        dir.join("store").display(),
        free_port(),
    );
    std::fs::write(&conf, text).expect("conf written");
    conf
}

/// `raftmq broker -c` refuses an invalid value, naming the key and the value, and a file that
/// does not exist, naming the file; it starts nothing.
#[test]
fn broker_rejects_invalid_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (extra, needles) in [
        ("listenPort=abc\n", ["listenPort", "\"abc\""]),
        ("flushDiskType=SOMETIMES\n", ["flushDiskType", "SOMETIMES"]),
        ("dLegerSelfId=n4\n", ["dLegerSelfId", "n4"]),
    ] {
        let conf = broker_conf(dir.path(), extra);
        let out = raftmq()
            .args(["broker", "-c"])
            .arg(&conf)
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{extra}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for needle in needles {
            assert!(stderr.contains(needle), "{extra}: {stderr}");
        }
        assert!(!dir.path().join("store").exists(), "nothing was started");
    }
    let out = raftmq()
        .args(["broker", "-c", "/nonexistent/broker.conf"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/broker.conf"));
}

/// A one-replica `raftmq broker` warns about an unknown key, prints READY with its addresses,
/// becomes healthy on its HTTP address once it leads, and exits 0 on SIGTERM.
#[test]
fn broker_runs_from_broker_conf_with_http() {
    use std::io::{Read, Write};

    let dir = tempfile::tempdir().expect("temp dir");
    let http_port = free_port();
    let conf = broker_conf(
        dir.path(),
        &format!("httpListenAddr=127.0.0.1:{http_port}\nsomeTypo=1\n"),
    );
    let mut command = raftmq();
    command.args(["broker", "-c"]).arg(&conf);
    let mut broker = Proc::spawn(command, "broker");
    let ready = broker.ready();
    assert_eq!(ready["node_id"], 1);
    assert_eq!(ready["self_id"], "n0");
    let http = format!("127.0.0.1:{http_port}");
    assert_eq!(ready["http"], http.as_str());
    let stderr = std::fs::read_to_string(&broker.stderr_path).expect("stderr");
    assert!(
        stderr.contains("unknown key") && stderr.contains("someTypo"),
        "{stderr}"
    );

    until_blocking("the broker healthy", Duration::from_secs(30), || {
        let mut stream = std::net::TcpStream::connect(&http).expect("HTTP connects");
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("request sent");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer read");
        if answer.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(answer)
        }
    });

    broker.signal("-TERM");
    assert!(broker.wait_exit_blocking(STOP_WITHIN).success());
}
