//! The ledger workload (`--layer ledger`): each replica applies into a recording state machine,
//! and proposers on every replica propose unique ids while it leads, recording what was
//! acknowledged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dledger::testing::RecordingStateMachine;
use dledger::{Ledger, MemDisk, Role};
use rand::Rng;

use crate::cluster::{Applier, Cluster, OpenError, Workload};
use crate::config::{rng, salt};
use crate::oracle::{Acked, body};

/// Largest entry body of the ledger workload: ids are a few bytes.
const ENTRY_BODY_BYTES_MAX: u32 = 1024;

/// Proposers of opaque entries on every replica.
#[derive(Debug, Default)]
pub struct Proposers;

impl Workload for Proposers {
    fn entry_body_bytes_max(&self) -> u32 {
        ENTRY_BODY_BYTES_MAX
    }

    fn disk_limited(&self) -> bool {
        true
    }

    fn open(
        &self,
        _id: u64,
        _disk: &MemDisk,
        record: RecordingStateMachine,
    ) -> Result<Applier, OpenError> {
        Ok(Applier {
            machine: Box::new(record),
            hook: None,
            store: None,
        })
    }

    fn serve(
        &self,
        cluster: Cluster,
        id: u64,
        incarnation: u64,
        ledger: Ledger,
        _store: Option<Arc<store::Store<MemDisk>>>,
    ) -> Pin<Box<dyn Future<Output = turmoil::Result>>> {
        Box::pin(async move {
            for client in 0..cluster.config.clients_per_node {
                let seed = cluster.config.seed
                    ^ salt::WORKLOAD
                    ^ (id << 40)
                    ^ (incarnation << 20)
                    ^ client;
                tokio::spawn(propose_forever(cluster.clone(), ledger.clone(), seed));
            }
            std::future::pending::<()>().await;
            Ok(())
        })
    }
}

/// One proposer: while its replica leads, propose unique ids and record acknowledgements.
async fn propose_forever(cluster: Cluster, ledger: Ledger, seed: u64) {
    let mut rng = rng(seed, 0);
    let pause = cluster.config.propose_pause_ms.clone();
    loop {
        tokio::time::sleep(Duration::from_millis(rng.random_range(pause.clone()))).await;
        if cluster.quiet.load(Ordering::Relaxed) || ledger.status().role != Role::Leader {
            continue;
        }
        let id = cluster.oracle.lock().expect("oracle").next_id();
        let proposal = tokio::time::timeout(Duration::from_secs(5), ledger.propose(body(id)));
        if let Ok(Ok(committed)) = proposal.await {
            let acked = Acked {
                id,
                index: committed.index,
                term: committed.term,
            };
            cluster.oracle.lock().expect("oracle").acked.push(acked);
        }
    }
}
