//! The write path: sends from many connections are batched into one Raft entry each, several
//! entries are in flight at once, and each send is answered with where its messages landed
//! once the entry is applied (DESIGN.md §3).

use std::sync::Arc;

use dledger::Disk;
use remoting::Transport;
use store::entry::{self, OffsetCommit};
use store::transactions::Outcome;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::Shared;
use crate::handover::Held;
use crate::limits::{OFFSET_COMMIT_TIMEOUT, OFFSET_COMMITS_PER_ENTRY_MAX, PROPOSALS_IN_FLIGHT_MAX};

/// Where one message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Landed {
    /// Queue.
    pub queue_id: i32,
    /// Offset in the queue.
    pub queue_offset: i64,
    /// Commit-log offset.
    pub commit_log_offset: u64,
}

/// One send's records, encoded, waiting to be proposed.
pub struct Write {
    /// Records back to back.
    pub records: Vec<u8>,
    /// Outcomes of half messages (END_TRANSACTION, the leader's checks); an outcome's `record`
    /// is the place of its record among these `records`. Sent in the same entry as the rest of
    /// the batch (a `Transactions` entry once any write of the batch has outcomes).
    pub outcomes: Vec<Outcome>,
    /// The answer: where each record landed, in order, or why it was not stored.
    pub reply: oneshot::Sender<Result<Vec<Landed>, NotStored>>,
}

/// Hands `records` and `outcomes` to the writer; the receiver tells where they landed. `None`
/// when the writer is gone (the broker is shutting down).
pub(crate) async fn submit<D: Disk, T: Transport>(
    shared: &Shared<D, T>,
    records: Vec<u8>,
    outcomes: Vec<Outcome>,
) -> Option<oneshot::Receiver<Result<Vec<Landed>, NotStored>>> {
    let (reply, landed) = oneshot::channel();
    let write = Write {
        records,
        outcomes,
        reply,
    };
    shared.writer.send(write).await.ok().map(|()| landed)
}

/// Why a send's records were not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotStored {
    /// The proposal failed (the reason goes in the refusal).
    Failed(String),
    /// This replica stopped taking writes (it lost its quorum or its leadership) before or while
    /// the entry was in flight, and did not take them again within the hold: what the hold
    /// found. An entry in flight may still commit (a new leader that has it commits it), so a
    /// client that retries elsewhere may store the message twice, as after any timeout.
    NotMaster(Held),
}

pub(crate) async fn run<D: Disk, T: Transport>(
    shared: Arc<Shared<D, T>>,
    mut rx: mpsc::Receiver<Write>,
) {
    let in_flight = Arc::new(Semaphore::new(PROPOSALS_IN_FLIGHT_MAX));
    let mut pending: Vec<Write> = Vec::new();
    loop {
        if pending.is_empty()
            && rx
                .recv_many(&mut pending, shared.config.batch_records_max)
                .await
                == 0
        {
            return;
        }
        // Wait for room first, then fill the entry with everything queued by then: under load
        // the sends that arrived while every proposal was in flight go out together, so entries
        // grow with the load instead of staying at what one wake-up found (measured: ~3 records
        // per entry with 256 senders when the batch was cut before waiting).
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        while pending.len() < shared.config.batch_records_max {
            match rx.try_recv() {
                Ok(write) => pending.push(write),
                Err(_) => break,
            }
        }
        // One entry: as many queued sends as fit the bounds.
        let mut bytes = 0;
        let mut take = 0;
        for write in &pending {
            if take > 0
                && (bytes + write.records.len() > shared.config.batch_bytes_max
                    || take >= shared.config.batch_records_max)
            {
                break;
            }
            bytes += write.records.len();
            take += 1;
        }
        let batch: Vec<Write> = pending.drain(..take).collect();
        let shared = shared.clone();
        tokio::spawn(async move {
            propose_batch(&shared, batch).await;
            drop(permit);
        });
    }
}

async fn propose_batch<D: Disk, T: Transport>(shared: &Shared<D, T>, batch: Vec<Write>) {
    let mut records = Vec::with_capacity(batch.iter().map(|w| w.records.len()).sum());
    // Per send: the start of each of its records within `records`.
    let mut starts: Vec<Vec<usize>> = Vec::with_capacity(batch.len());
    let mut outcomes = Vec::new();
    for write in &batch {
        let base = records.len();
        let first_record = starts.iter().map(Vec::len).sum::<usize>() as u32;
        outcomes.extend(write.outcomes.iter().map(|o| Outcome {
            record: o.record.map(|r| first_record + r),
            ..*o
        }));
        starts.push(
            entry::record_spans(&write.records)
                .into_iter()
                .map(|(s, _)| base + s)
                .collect(),
        );
        records.extend_from_slice(&write.records);
    }
    let (body, records_at) = if outcomes.is_empty() {
        (entry::messages(&records), entry::ENTRY_HEADER_BYTES)
    } else {
        let body = entry::transactions(&outcomes, &records);
        let at = body.len() - records.len();
        (body, at)
    };
    let body = bytes::Bytes::from(body);
    let (committed, placement) = match commit(shared, body).await {
        Ok(done) => done,
        Err(failure) => {
            for write in batch {
                let _ = write.reply.send(Err(failure.clone()));
            }
            return;
        }
    };
    let body_position = committed.position + u64::from(dledger::limits::ENTRY_HEADER_BYTES);
    let mut placed = placement.into_iter();
    for (write, starts) in batch.into_iter().zip(starts) {
        let landed: Vec<Landed> = starts
            .iter()
            .filter_map(|start| {
                placed.next().map(|(queue_id, queue_offset)| Landed {
                    queue_id,
                    queue_offset,
                    commit_log_offset: body_position + (records_at + start) as u64,
                })
            })
            .collect();
        let _ = write.reply.send(Ok(landed));
    }
}

/// Proposes one entry of messages and waits until it is applied; returns where it landed and
/// each record's (queue id, queue offset).
///
/// A replica that stopped taking writes while the sends waited holds them (see `handover`). One
/// that loses its quorum or its leadership with the entry in flight keeps waiting for it while
/// the hold lasts: a quorum that answers again commits it. When the name servers list another
/// master first, or the hold ends, the sends are answered "not master" at once instead of
/// waiting out the client's timeout.
async fn commit<D: Disk, T: Transport>(
    shared: &Shared<D, T>,
    body: bytes::Bytes,
) -> Result<(dledger::Committed, store::Placement), NotStored> {
    if !shared.takes_writes() {
        match shared.hold_queued_send().await {
            Held::TakesWrites => {}
            held => return Err(NotStored::NotMaster(held)),
        }
    }
    let term = shared.roles.borrow().term;
    let proposal = shared.ledger.propose(body);
    tokio::pin!(proposal);
    let proposed = loop {
        tokio::select! {
            biased;
            proposed = &mut proposal => break proposed,
            () = shared.writes_stopped(term) => {}
        }
        let held = tokio::select! {
            biased;
            proposed = &mut proposal => break proposed,
            held = shared.hold_send() => held,
        };
        if held != Held::TakesWrites {
            return Err(NotStored::NotMaster(held));
        }
        if shared.roles.borrow().term != term {
            // Leading again in a later term: openraft answers the old term's proposal itself.
            break proposal.await;
        }
        // The quorum answered again: the entry in flight commits.
    };
    let committed = proposed.map_err(|err| NotStored::Failed(err.to_string()))?;
    shared.store.wait_applied(committed.index).await;
    match shared.store.take_placement(committed.index) {
        Some(placement) => Ok((committed, placement)),
        None => Err(NotStored::Failed(format!(
            "entry {} was applied but its placement is gone",
            committed.index
        ))),
    }
}

/// Batches consumer-offset commits into one entry per interval (DESIGN.md §5).
pub(crate) async fn run_offsets<D: Disk, T: Transport>(
    shared: Arc<Shared<D, T>>,
    mut rx: mpsc::Receiver<OffsetCommit>,
) {
    let mut batch = Vec::new();
    loop {
        if rx.recv_many(&mut batch, OFFSET_COMMITS_PER_ENTRY_MAX).await == 0 {
            return;
        }
        // Gather what else arrives within the interval.
        let deadline = tokio::time::Instant::now() + shared.config.offset_flush_interval;
        while let Ok(more) = tokio::time::timeout_at(deadline, rx.recv()).await {
            match more {
                Some(commit) => batch.push(commit),
                None => break,
            }
        }
        let mut latest = std::collections::BTreeMap::new();
        for c in batch.drain(..) {
            latest.insert((c.group.clone(), c.topic.clone(), c.queue_id), c);
        }
        let commits: Vec<OffsetCommit> = latest.into_values().collect();
        let body = bytes::Bytes::from(entry::offsets(&commits));
        match tokio::time::timeout(OFFSET_COMMIT_TIMEOUT, shared.ledger.propose(body)).await {
            Ok(Ok(committed)) => {
                shared.store.wait_applied(committed.index).await;
                let mut pending = shared.pending_offsets.lock().expect("pending offsets");
                for c in &commits {
                    let key = (c.group.clone(), c.topic.clone(), c.queue_id);
                    if pending.get(&key) == Some(&c.offset) {
                        pending.remove(&key);
                    }
                }
            }
            Ok(Err(err)) => {
                tracing::warn!(cause = %err, commits = commits.len(), "consumer offsets not committed")
            }
            Err(_) => tracing::warn!(
                commits = commits.len(),
                timeout_s = OFFSET_COMMIT_TIMEOUT.as_secs(),
                "consumer offsets not committed in time"
            ),
        }
    }
}
