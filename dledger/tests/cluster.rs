//! Replica groups on real TCP (127.0.0.1) and real mmap files, in one process.

#![allow(clippy::unwrap_used)] // Test helpers: a failed step is the test failing.

mod common;

use std::time::Duration;

use common::{Group, WAIT, fast_config, propose_many};
use dledger::{CommittedEntry, EntryPayload, Ledger, ProposeError, Role};
use testkit::wait::until;

/// Every entry of `node` from 0 through `upto`.
fn log_of(node: &Ledger, upto: u64) -> Vec<CommittedEntry> {
    (0..=upto)
        .map(|i| node.read(i).expect("committed entry reads"))
        .collect()
}

fn data_of(entries: &[CommittedEntry]) -> Vec<Vec<u8>> {
    entries
        .iter()
        .filter_map(|e| match &e.payload {
            EntryPayload::Data(d) => Some(d.to_vec()),
            _ => None,
        })
        .collect()
}

/// Three replicas elect exactly one leader that everyone agrees on, and followers refuse
/// proposals naming that leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_elect_one_leader() {
    let group = Group::start(3, fast_config).await;
    let leader = group.leader().await;
    let leaders = group
        .nodes
        .values()
        .filter(|n| n.status().role == Role::Leader)
        .count();
    assert_eq!(leaders, 1);
    let follower = group.nodes.keys().find(|id| **id != leader).unwrap();
    let err = group.nodes[follower]
        .propose(bytes::Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProposeError::NotLeader { leader: Some(l), .. } if l == leader),
        "follower answers not-leader with the leader, got {err:?}"
    );
}

/// 10,000 entries proposed concurrently commit, and every replica applies the same entries in
/// the same order, with identical logs, rolling over many small segment files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_ten_thousand_entries_identically() {
    let group = Group::start(3, fast_config).await;
    let leader = group.leader().await;
    let committed = propose_many(&group.nodes[&leader], "e", 10_000, 64).await;
    assert_eq!(committed.len(), 10_000);
    let last = committed.last().unwrap().index;
    group.wait_applied(last).await;
    let reference = log_of(&group.nodes[&leader], last);
    assert_eq!(data_of(&reference).len(), 10_000);
    for (id, node) in &group.nodes {
        assert_eq!(
            log_of(node, last),
            reference,
            "log of node {id} differs from the leader's"
        );
        let applied: Vec<Vec<u8>> = group.machines[id]
            .data()
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        assert_eq!(
            applied,
            data_of(&reference),
            "node {id} applied other entries"
        );
    }
    // Positions handed back are where the entries are.
    for c in committed.iter().step_by(997) {
        let entry = group.nodes[&leader].read_at_position(c.position).unwrap();
        assert_eq!(entry.index, c.index);
    }
    let segments = std::fs::read_dir(group.data_dir(leader).join("commitlog"))
        .unwrap()
        .count();
    assert!(
        segments >= 8,
        "10,000 entries should span many 256 KiB segments, found {segments}"
    );
}

/// Killing the leader: a new one is elected within a few election timeouts, no committed entry
/// is lost, and the survivors' logs are identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_loses_no_committed_entry() {
    let mut group = Group::start(3, fast_config).await;
    let old = group.leader().await;
    let committed = propose_many(&group.nodes[&old], "before", 500, 16).await;
    let old_term = group.nodes[&old].status().term;
    let stopped_at = tokio::time::Instant::now();
    group.stop(old).await;
    let new = group.leader().await;
    let elected_after = stopped_at.elapsed();
    eprintln!("new leader {new} elected {elected_after:?} after the old one stopped");
    assert_ne!(new, old);
    assert!(group.nodes[&new].status().term > old_term);
    // Followers honour the old leader's lease (openraft: election_timeout_max = 500 ms here)
    // before granting a vote, so a new leader takes one to two election timeouts (measured 0.8 to
    // 1.0 s); three is the bound.
    assert!(
        elected_after < Duration::from_millis(1500),
        "election took {elected_after:?}"
    );
    let more = propose_many(&group.nodes[&new], "after", 100, 8).await;
    let last = more.last().unwrap().index;
    group.wait_applied(last).await;
    let survivors: Vec<&Ledger> = group.nodes.values().collect();
    let reference = log_of(survivors[0], last);
    assert_eq!(log_of(survivors[1], last), reference);
    let data = data_of(&reference);
    for c in &committed {
        let entry = survivors[0].read(c.index).unwrap();
        assert_eq!(entry.position, c.position);
        assert!(matches!(entry.payload, EntryPayload::Data(_)));
    }
    assert_eq!(data.len(), 600);
}

/// A replica stopped and started again from its files recovers its log, rejoins as a follower
/// and catches up on what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_restarts_from_its_files() {
    let mut group = Group::start(3, fast_config).await;
    let leader = group.leader().await;
    let first = propose_many(&group.nodes[&leader], "a", 300, 8).await;
    // A quorum acknowledged them; the follower stopped below must hold all 300 too.
    group.wait_applied(first.last().unwrap().index).await;
    let follower = *group.nodes.keys().find(|id| **id != leader).unwrap();
    group.stop(follower).await;
    let more = propose_many(&group.nodes[&leader], "b", 300, 8).await;
    group.restart(follower).await;
    let report = group.nodes[&follower].recovery_report().clone();
    assert!(report.indexed >= 300, "restart found its index: {report:?}");
    assert_eq!(report.cut, None);
    let last = more.last().unwrap().index;
    group.wait_applied(last).await;
    assert_eq!(
        log_of(&group.nodes[&follower], last),
        log_of(&group.nodes[&leader], last)
    );
    assert_eq!(group.nodes[&follower].status().role, Role::Follower);
}

/// A follower whose folder was wiped rejoins empty and is caught up by the leader with no new
/// proposal arriving (DLedger#61/#87: the leader waited for new writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_follower_catches_up_without_traffic() {
    let mut group = Group::start(3, fast_config).await;
    let leader = group.leader().await;
    let committed = propose_many(&group.nodes[&leader], "w", 2000, 32).await;
    let last = committed.last().unwrap().index;
    group.wait_applied(last).await;
    let follower = *group.nodes.keys().find(|id| **id != leader).unwrap();
    group.stop(follower).await;
    let dir = group.data_dir(follower);
    for sub in ["commitlog", "index", "meta"] {
        std::fs::remove_dir_all(dir.join(sub)).unwrap();
    }
    group.restart(follower).await;
    // No proposals from here on.
    until("the wiped follower to catch up", WAIT, || {
        group.nodes[&follower]
            .status()
            .applied
            .is_some_and(|a| a >= last)
            .then_some(())
    })
    .await;
    assert_eq!(
        log_of(&group.nodes[&follower], last),
        log_of(&group.nodes[&leader], last)
    );
    assert_eq!(group.machines[&follower].data_count(), 2000);
}

/// With a state machine that names snapshot points, every replica purges its log up to one; a
/// follower wiped after that is restored from the leader's snapshot, sent in several parts
/// (over 4 MiB of applied data), and its log goes on at the positions the leader's has: its
/// applied entries, restored and replicated, are the leader's, position for position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_follower_behind_the_purge_is_restored_from_a_snapshot() {
    fn machine() -> dledger::testing::RecordingStateMachine {
        dledger::testing::RecordingStateMachine::with_snapshot_points(500)
    }
    let mut group = Group::start_with(3, fast_config, machine).await;
    let leader = group.leader().await;
    let body = vec![b's'; 4096];
    let mut last = 0;
    for i in 0..1800u32 {
        let mut data = body.clone();
        data[..4].copy_from_slice(&i.to_be_bytes());
        last = group.nodes[&leader]
            .propose(bytes::Bytes::from(data))
            .await
            .unwrap()
            .index;
    }
    group.wait_applied(last).await;
    until("every replica to purge its log", WAIT, || {
        group
            .nodes
            .values()
            .all(|n| n.status().purged.is_some_and(|p| p >= 1000))
            .then_some(())
    })
    .await;
    let follower = *group.nodes.keys().find(|id| **id != leader).unwrap();
    group.stop(follower).await;
    let dir = group.data_dir(follower);
    for sub in ["commitlog", "index", "meta"] {
        std::fs::remove_dir_all(dir.join(sub)).unwrap();
    }
    group.restart(follower).await;
    until("the wiped follower to catch up", WAIT, || {
        group.nodes[&follower]
            .status()
            .applied
            .is_some_and(|a| a >= last)
            .then_some(())
    })
    .await;
    let records = |id| group.machines[&id].records();
    let restored = records(follower);
    assert!(
        restored.len() > 1000,
        "the snapshot carried the applied entries"
    );
    assert_eq!(restored, records(leader));
    let first = group.nodes[&follower].status().purged.unwrap() + 1;
    for index in first..=last {
        assert_eq!(
            group.nodes[&follower].read(index).unwrap(),
            group.nodes[&leader].read(index).unwrap(),
            "entry {index}"
        );
    }
}

/// A dead replica is replaced: a new one (a new id, its own folder, peers naming the group and
/// itself) waits outside the group until the leader adds it; adding an id already in the
/// group, asking a follower, or naming an address nobody answers on fails and changes nothing;
/// the new replica catches up as a learner, becomes a voter, the dead one is removed, and the
/// group goes on with the new one holding what the leader holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replica_is_replaced_by_a_new_one() {
    let mut group = Group::start(3, fast_config).await;
    let leader = group.leader().await;
    propose_many(&group.nodes[&leader], "before", 300, 16).await;
    let dead = *group.nodes.keys().find(|id| **id != leader).unwrap();
    let other = *group
        .nodes
        .keys()
        .find(|id| **id != leader && **id != dead)
        .unwrap();
    group.stop(dead).await;

    let transport = common::CuttableTransport {
        node: 4,
        links: group.links.clone(),
    };
    let listener = dledger::RaftListener::bind(&transport, "127.0.0.1:0")
        .await
        .unwrap();
    let addr = listener.addr().to_string();
    group.links.addrs.lock().unwrap().insert(addr.clone(), 4);
    let mut peers = group.peers.clone();
    peers.insert(4, addr.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut config = dledger::LedgerConfig::new(4, peers, dir.path().to_path_buf());
    fast_config(&mut config);
    let machine = dledger::testing::RecordingStateMachine::new();
    let newcomer = Ledger::start(
        config,
        dledger::MmapDisk,
        transport,
        listener,
        Box::new(machine.clone()),
        None,
    )
    .await
    .unwrap();
    assert!(!newcomer.is_member(), "it waits to be added");

    let leading = &group.nodes[&leader];
    let before = leading.members();
    assert_eq!(
        leading
            .add_replica(other, &addr, Duration::from_secs(5))
            .await,
        Err(dledger::MembershipError::AlreadyMember { node: other })
    );
    assert!(matches!(
        group.nodes[&other]
            .add_replica(4, &addr, Duration::from_secs(5))
            .await,
        Err(dledger::MembershipError::NotLeader { .. })
    ));
    let nobody = format!("127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    assert!(matches!(
        leading
            .add_replica(9, &nobody, Duration::from_secs(1))
            .await,
        Err(dledger::MembershipError::NotCaughtUp { node: 9, .. })
    ));
    until("the failed learner to be gone", WAIT, || {
        (leading.members() == before).then_some(())
    })
    .await;

    leading
        .add_replica(4, &addr, Duration::from_secs(10))
        .await
        .unwrap();
    leading.remove_replica(dead).await.unwrap();
    let members = leading.members();
    assert_eq!(members.voters.keys().copied().collect::<Vec<_>>(), {
        let mut v = vec![leader, other, 4];
        v.sort();
        v
    });
    assert!(members.learners.is_empty());
    let after = propose_many(leading, "after", 300, 16).await;
    let last = after.last().unwrap().index;
    until("the new replica to apply everything", WAIT, || {
        newcomer
            .status()
            .applied
            .is_some_and(|a| a >= last)
            .then_some(())
    })
    .await;
    assert!(newcomer.is_member());
    assert_eq!(
        machine.data(),
        group.machines[&leader].data(),
        "the new replica applied what the leader applied"
    );
    newcomer.shutdown().await;
}

/// An isolated leader keeps appending entries it cannot commit; the majority elects a new
/// leader and commits other entries; after healing, the old leader's uncommitted tail (and only
/// it) is truncated and replaced, and every log is identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healed_partition_truncates_only_the_uncommitted_tail() {
    let group = Group::start(3, fast_config).await;
    let old = group.leader().await;
    let before = propose_many(&group.nodes[&old], "committed", 200, 8).await;
    let committed_before = before.last().unwrap().index;
    group.wait_applied(committed_before).await;
    let others: Vec<u64> = group
        .nodes
        .keys()
        .copied()
        .filter(|id| *id != old)
        .collect();
    group.links.isolate(old, others.clone());

    // Proposals to the isolated leader append locally but never commit.
    let stranded: Vec<_> = (0..20)
        .map(|i| {
            let node = group.nodes[&old].clone();
            tokio::spawn(async move {
                node.propose(bytes::Bytes::from(format!("stranded-{i}")))
                    .await
            })
        })
        .collect();
    until(
        "the isolated leader to append its stranded entries",
        WAIT,
        || {
            group.nodes[&old]
                .status()
                .last_log_index
                .is_some_and(|l| l >= committed_before + 20)
                .then_some(())
        },
    )
    .await;

    let new = until("a new leader among the majority", WAIT, || {
        others.iter().copied().find(|id| {
            let s = group.nodes[id].status();
            s.role == Role::Leader && s.leader == Some(*id)
        })
    })
    .await;
    let after = propose_many(&group.nodes[&new], "majority", 50, 4).await;
    let last = after.last().unwrap().index;
    assert_eq!(
        group.nodes[&old].status().committed,
        Some(committed_before),
        "the stranded tail never committed"
    );

    group.links.heal();
    group.wait_applied(last).await;
    let reference = log_of(&group.nodes[&new], last);
    for (id, node) in &group.nodes {
        assert_eq!(
            log_of(node, last),
            reference,
            "log of node {id} differs after healing"
        );
    }
    let data = data_of(&reference);
    assert!(
        data.iter().all(|d| !d.starts_with(b"stranded")),
        "no stranded entry survives"
    );
    assert_eq!(
        data.iter().filter(|d| d.starts_with(b"committed")).count(),
        200
    );
    for task in stranded {
        let result = tokio::time::timeout(WAIT, task)
            .await
            .expect("stranded proposals finish")
            .unwrap();
        assert!(
            result.is_err(),
            "a stranded proposal must not report success"
        );
    }
}

/// Leadership moves to the asked-for replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_transfers_to_the_named_replica() {
    let group = Group::start(3, fast_config).await;
    let leader = group.leader().await;
    let committed = propose_many(&group.nodes[&leader], "t", 50, 4).await;
    group.wait_applied(committed.last().unwrap().index).await;
    let last = committed.last().unwrap().index;
    let status = group.nodes[&leader].status();
    assert_eq!(
        status.matched.len(),
        2,
        "the leader reports both followers: {status:?}"
    );
    until("both followers to match the leader", WAIT, || {
        let matched = group.nodes[&leader].status().matched;
        matched
            .values()
            .all(|m| m.is_some_and(|m| m >= last))
            .then_some(())
    })
    .await;
    let target = *group.nodes.keys().find(|id| **id != leader).unwrap();
    let mut roles = group.nodes[&target].watch_role();
    group.nodes[&leader]
        .transfer_leadership(target)
        .await
        .unwrap();
    let became = tokio::time::timeout(WAIT, roles.wait_for(|r| r.role == Role::Leader)).await;
    assert!(
        became.is_ok_and(|r| r.is_ok()),
        "the target's role watch reports it leads"
    );
    until("leadership to move to the target", WAIT, || {
        (group.agreed_leader() == Some(target)).then_some(())
    })
    .await;
    let err = group.nodes[&leader]
        .transfer_leadership(target)
        .await
        .unwrap_err();
    assert!(matches!(err, dledger::TransferError::NotLeader { .. }));
    propose_many(&group.nodes[&target], "after-transfer", 10, 2).await;
}

/// Garbage on a replica's Raft port (an unknown connection kind, an oversized frame, frames that
/// do not decode) closes that connection only; the group keeps committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_raft_port_is_rejected_and_the_group_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let group = Group::start(3, fast_config).await;
    let leader = group.leader().await;
    // The connection kinds of dledger's Raft protocol: 0x52 request/response, 0x53 stream.
    let attacks: Vec<Vec<u8>> = vec![
        vec![0xff, 1, 2, 3],
        [vec![0x52], u32::MAX.to_be_bytes().to_vec()].concat(),
        [vec![0x52, 0, 0, 0, 6], vec![0xee; 6]].concat(),
        [vec![0x53, 0, 0, 0, 6], vec![0xee; 6]].concat(),
    ];
    for (target, addr) in &group.peers {
        for attack in &attacks {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(attack).await.unwrap();
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(WAIT, stream.read(&mut buf))
                .await
                .expect("the server answers by closing");
            assert!(
                matches!(read, Ok(0) | Err(_)),
                "node {target} must close the connection on {attack:?}, read {read:?}"
            );
        }
    }
    let committed = propose_many(&group.nodes[&leader], "after-garbage", 100, 8).await;
    group.wait_applied(committed.last().unwrap().index).await;
}

/// A replica whose committed data was damaged on disk refuses to start, naming the file; the
/// other two keep committing without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_with_damaged_committed_data_refuses_to_start_and_the_group_serves() {
    use std::os::unix::fs::FileExt;
    let mut group = Group::start(3, fast_config).await;
    let leader = group.leader().await;
    let committed = propose_many(&group.nodes[&leader], "d", 300, 8).await;
    let last = committed.last().unwrap().index;
    group.wait_applied(last).await;
    let follower = *group.nodes.keys().find(|id| **id != leader).unwrap();
    group.stop(follower).await;
    // Flip a byte in the body of the last committed entry in the follower's files.
    let position = committed.last().unwrap().position;
    let segments = group.data_dir(follower).join("commitlog");
    let segment_bytes = 256 * 1024;
    let path = segments.join(format!("{:020}", position - position % segment_bytes));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let offset = position % segment_bytes + 60;
    let mut byte = [0u8; 1];
    file.read_at(&mut byte, offset).unwrap();
    file.write_at(&[byte[0] ^ 0x01], offset).unwrap();
    drop(file);

    let err = group
        .try_restart(follower)
        .await
        .expect_err("a damaged replica must not start");
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "the error names the file: {text}"
    );
    assert!(
        text.contains(&format!("position {position}")),
        "the error names the position: {text}"
    );
    let more = propose_many(&group.nodes[&leader], "without-it", 100, 8).await;
    group.wait_applied(more.last().unwrap().index).await;
}

/// A replica whose vote file is garbage refuses to start and says which file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_with_corrupt_vote_file_refuses_to_start() {
    let mut group = Group::start(3, fast_config).await;
    let leader = group.leader().await;
    propose_many(&group.nodes[&leader], "v", 10, 2).await;
    let follower = *group.nodes.keys().find(|id| **id != leader).unwrap();
    group.stop(follower).await;
    let vote = group.data_dir(follower).join("meta").join("vote");
    std::fs::write(&vote, b"not a vote").unwrap();
    let err = group
        .try_restart(follower)
        .await
        .expect_err("a corrupt vote must not start");
    assert!(err.to_string().contains("vote"), "{err}");
}
