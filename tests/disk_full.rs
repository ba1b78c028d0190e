//! A replica whose own disk fills, with real processes: a name server and three `raftmq broker`
//! processes, one follower's data on a small tmpfs of its own. Sends of 32 KiB messages fill
//! it. The follower does not stop and corrupts nothing: it waits for space (`/status`
//! `waiting_for_space`, `/health` 503 naming the full disk, `/metrics`), taking no part, while
//! the other two go on acknowledging sends. Then the tmpfs grows (`mount -o remount,size=`):
//! the follower goes on by itself, catches up, and holds every acknowledged message where the
//! leader does.
//!
//! Mounting a tmpfs needs root (CAP_SYS_ADMIN), as the CI machine runs the tests; without it
//! the test fails saying so.

#[path = "support/procs.rs"]
mod procs;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use procs::{
    Ack, Proc, acks_grow, assert_acked_everywhere, http_get, http_json, now_ms, registered,
    start_broker, start_namesrv, wait_registered, write_confs,
};
use remoting::TcpTransport;
use testkit::wait::until_async;

const TOPIC: &str = "DiskFullTopic";
const BROKER_NAME: &str = "broker-f";
const BODY_BYTES: usize = 32 * 1024;
const SENDERS: usize = 4;

/// A tmpfs mounted on a folder, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir))
        .unwrap_or_else(|e| panic!("this test mounts a tmpfs and needs root (CAP_SYS_ADMIN): {e}"));
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    fn resize(&self, mib: u64) {
        run(Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.dir))
        .expect("tmpfs resized");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a replica killed a moment ago may still hold files open.
        if let Err(err) = run(Command::new("umount").arg("-l").arg(&self.dir)) {
            eprintln!("unmounting the test tmpfs: {err}");
        }
    }
}

async fn status_of(http: &str) -> serde_json::Value {
    http_json(http, "/status").await.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_disk_fills_waits_then_catches_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_namesrv_proc, namesrv) = start_namesrv();
    let nodes = write_confs(
        dir.path(),
        &namesrv,
        BROKER_NAME,
        3,
        "preferredLeaderId=n0\n",
    );
    // n2's data on a 40 MiB tmpfs: room for about a thousand of the messages below.
    let full = &nodes[2];
    let tmpfs = Tmpfs::mount(&full.store_dir, 40);
    let mut procs: Vec<Proc> = nodes.iter().map(start_broker).collect();
    let (client, _inbound) = remoting::Client::new(TcpTransport);
    wait_registered(
        &client,
        &namesrv,
        BROKER_NAME,
        "n0 as master",
        Duration::from_secs(60),
        |t| t.get(&0) == Some(&nodes[0].broker_addr),
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Vec::<Ack>::new()));
    let producer = Arc::new(
        client::Producer::start(
            TcpTransport,
            client::ClientConfig::new([namesrv.as_str()]),
            client::ProducerConfig::new("disk-full-pg"),
        )
        .await
        .expect("producer starts"),
    );
    let next = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (producer, stop, acks, next) =
                (producer.clone(), stop.clone(), acks.clone(), next.clone());
            tokio::spawn(async move {
                let mut failed = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("full-{}", next.fetch_add(1, Ordering::Relaxed));
                    let message = client::Message::new(TOPIC, vec![b'x'; BODY_BYTES])
                        .with_keys([key.clone()]);
                    match producer.send(message).await {
                        Ok(sent) => acks.lock().expect("acks").push(Ack {
                            key,
                            queue_id: sent.queue.queue_id,
                            queue_offset: sent.queue_offset,
                            at_ms: now_ms(),
                        }),
                        Err(err) => {
                            eprintln!("send {key} failed: {err}");
                            failed += 1;
                        }
                    }
                }
                failed
            })
        })
        .collect();

    // The follower's disk fills: it waits for space instead of stopping.
    until_async(
        "the follower to wait for disk space",
        Duration::from_secs(120),
        || async {
            let status = status_of(&full.http_addr).await;
            if status["waiting_for_space"] == true {
                Ok(())
            } else {
                Err(format!(
                    "{} acks; {status}",
                    acks.lock().expect("acks").len()
                ))
            }
        },
    )
    .await;
    let (code, body) = http_get(&full.http_addr, "/health")
        .await
        .expect("health answers");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("disk is full"), "{body}");
    let (_, metrics) = http_get(&full.http_addr, "/metrics")
        .await
        .expect("metrics answer");
    assert!(
        metrics.contains("raftmq_log_waiting_for_space 1"),
        "{metrics}"
    );
    // The other two go on without it.
    acks_grow(
        "sends acknowledged while the follower waits",
        &acks,
        300,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        status_of(&full.http_addr).await["waiting_for_space"],
        true,
        "still no room"
    );
    assert!(
        procs[2].child.try_wait().expect("try_wait").is_none(),
        "the follower is still running: {}",
        procs[2].stderr_tail()
    );

    // Space returns: the follower goes on by itself and catches up.
    tmpfs.resize(1024);
    until_async("the follower to go on", Duration::from_secs(60), || async {
        let status = status_of(&full.http_addr).await;
        if status["waiting_for_space"] == false && status["role"] == "follower" {
            Ok(())
        } else {
            Err(status.to_string())
        }
    })
    .await;
    acks_grow("sends go on", &acks, 100, Duration::from_secs(60)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failed = 0;
    for sender in senders {
        failed += sender.await.expect("sender");
    }
    eprintln!("sends failed after the client's retries: {failed}");
    let committed = status_of(&nodes[0].http_addr).await["committed"]
        .as_u64()
        .expect("the leader's committed index");
    until_async(
        "the follower to apply what the leader committed",
        Duration::from_secs(60),
        || async {
            let status = status_of(&full.http_addr).await;
            match status["applied"].as_u64() {
                Some(applied) if applied >= committed => Ok(()),
                _ => Err(status.to_string()),
            }
        },
    )
    .await;
    let (_, metrics) = http_get(&full.http_addr, "/metrics")
        .await
        .expect("metrics answer");
    let waits: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("raftmq_log_space_waits_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no space waits counter in {metrics}"));
    assert!(waits >= 1, "{metrics}");

    let master = registered(&client, &namesrv, BROKER_NAME)
        .await
        .get(&0)
        .cloned()
        .expect("a master");
    let acks = acks.lock().expect("acks").clone();
    assert!(acks.len() > 1000, "{} acks", acks.len());
    assert_acked_everywhere(&client, &nodes, &master, TOPIC, 4, &acks, &[]).await;
    for proc in &mut procs {
        proc.kill9();
    }
    drop(procs);
    drop(tmpfs);
}
