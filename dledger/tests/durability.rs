//! Durability of acknowledged entries: replicas on the in-memory disk model, which keeps only
//! what was synced when it "loses power".

#![allow(clippy::unwrap_used)] // Test helpers: a failed step is the test failing.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{WAIT, fast_config, propose_many};
use dledger::testing::RecordingStateMachine;
use dledger::{
    EntryPayload, FlushPolicy, Ledger, LedgerConfig, MemDisk, RaftListener, Role, TcpTransport,
};
use testkit::wait::until;

struct MemGroup {
    peers: BTreeMap<u64, String>,
    disks: BTreeMap<u64, MemDisk>,
    nodes: BTreeMap<u64, Ledger>,
    flush: FlushPolicy,
}

impl MemGroup {
    async fn start(flush: FlushPolicy) -> MemGroup {
        let mut listeners = BTreeMap::new();
        let mut peers = BTreeMap::new();
        for id in 1..=3 {
            let listener = RaftListener::bind(&TcpTransport, "127.0.0.1:0")
                .await
                .unwrap();
            peers.insert(id, listener.addr().to_string());
            listeners.insert(id, listener);
        }
        let mut group = MemGroup {
            peers,
            disks: (1..=3).map(|id| (id, MemDisk::new())).collect(),
            nodes: BTreeMap::new(),
            flush,
        };
        for (id, listener) in listeners {
            group.start_node(id, listener).await;
        }
        group
    }

    async fn start_node(&mut self, id: u64, listener: RaftListener<TcpTransport>) {
        let mut config =
            LedgerConfig::new(id, self.peers.clone(), PathBuf::from(format!("/node-{id}")));
        fast_config(&mut config);
        config.flush = self.flush;
        let node = Ledger::start(
            config,
            self.disks[&id].clone(),
            TcpTransport,
            listener,
            Box::new(RecordingStateMachine::new()),
            None,
        )
        .await
        .unwrap();
        self.nodes.insert(id, node);
    }

    async fn leader(&self) -> u64 {
        until("a leader", WAIT, || {
            self.nodes
                .values()
                .map(Ledger::status)
                .find(|s| s.role == Role::Leader)
                .map(|s| s.node_id)
        })
        .await
    }

    /// Every replica loses power at the same instant, then all start again.
    async fn power_loss_everywhere(&mut self) {
        for disk in self.disks.values_mut() {
            *disk = disk.crash();
        }
        for node in std::mem::take(&mut self.nodes).into_values() {
            node.shutdown().await;
        }
        self.start_all_again().await;
    }

    async fn start_all_again(&mut self) {
        for id in 1..=3 {
            let addr = self.peers[&id].clone();
            let listener = common::wait_bind(&TcpTransport, &addr).await;
            self.start_node(id, listener).await;
        }
    }
}

/// Under SYNC_FLUSH an entry is acknowledged only once a quorum synced it: after every replica
/// loses power at once, the group comes back with every acknowledged entry, at its index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_entries_survive_a_power_loss_of_every_replica() {
    let mut group = MemGroup::start(FlushPolicy::Sync).await;
    let leader = group.leader().await;
    let acked = propose_many(&group.nodes[&leader], "acked", 1000, 64).await;
    group.power_loss_everywhere().await;
    let leader = group.leader().await;
    // A new entry commits on top of the recovered log, so everything before it is committed.
    let probe = propose_many(&group.nodes[&leader], "probe", 1, 1).await;
    until("the probe to be applied on the leader", WAIT, || {
        group.nodes[&leader]
            .status()
            .applied
            .is_some_and(|a| a >= probe[0].index)
            .then_some(())
    })
    .await;
    for committed in &acked {
        let entry = group.nodes[&leader].read(committed.index).unwrap();
        assert_eq!(
            entry.position, committed.position,
            "entry {} moved",
            committed.index
        );
        match entry.payload {
            EntryPayload::Data(data) => assert!(data.starts_with(b"acked-")),
            other => panic!("entry {} is {other:?}", committed.index),
        }
    }
}

/// ASYNC_FLUSH replicates and commits too (acknowledging from the page cache, syncing on a
/// timer); after a clean shutdown and restart nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_flush_commits_and_survives_clean_restart() {
    let flush = FlushPolicy::Async {
        interval: std::time::Duration::from_millis(10),
    };
    let mut group = MemGroup::start(flush).await;
    let leader = group.leader().await;
    let acked = propose_many(&group.nodes[&leader], "async", 500, 32).await;
    for node in std::mem::take(&mut group.nodes).into_values() {
        node.shutdown().await;
    }
    for disk in group.disks.values_mut() {
        *disk = disk.crash();
    }
    group.start_all_again().await;
    let leader = group.leader().await;
    let probe = propose_many(&group.nodes[&leader], "probe", 1, 1).await;
    assert!(probe[0].index > acked.last().unwrap().index);
    for committed in &acked {
        assert_eq!(
            group.nodes[&leader].read(committed.index).unwrap().position,
            committed.position
        );
    }
}
