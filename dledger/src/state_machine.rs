//! The state machine the layer above supplies, and the adapter that plugs it into openraft.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures_util::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload as OrPayload, OptionalSend};

use crate::raft_types::{
    Applied, OrLogId, OrSnapshot, OrSnapshotMeta, OrStoredMembership, SnapshotData, TypeConfig,
    from_log_id, to_log_id,
};
use crate::types::{CommittedEntry, EntryPayload, LogId};

/// Why the state machine could not apply an entry or install a snapshot. It stops the replica:
/// replicas must apply the same entries the same way.
#[derive(Debug, thiserror::Error)]
#[error("state machine failed at index {index}: {reason}")]
pub struct ApplyError {
    /// The entry that failed.
    pub index: u64,
    /// Why.
    pub reason: String,
}

/// What the layer above (the message store) builds from committed entries.
///
/// ### Correctness obligations
/// - `apply` is called once per committed entry, in index order, on every replica. What it does
///   must depend only on the entries, never on time or on which replica runs it.
/// - `last_applied` reports what survived the last restart; entries after it are applied again.
/// - `snapshot` and `restore` move the state between replicas when the log was purged.
/// - After `discard`, `last_applied` is `None` and nothing applied before is visible.
pub trait StateMachine: Send + 'static {
    /// Applies one committed entry.
    ///
    /// # Errors
    /// A failure that must stop the replica.
    fn apply(&mut self, entry: &CommittedEntry) -> Result<(), ApplyError>;
    /// The last entry whose effects are durable, read once at start.
    fn last_applied(&self) -> Option<LogId>;
    /// Serializes the state.
    fn snapshot(&mut self) -> Vec<u8>;
    /// Replaces the state with a snapshot that covers the log up to `last`.
    ///
    /// # Errors
    /// Undecodable snapshot data.
    fn restore(&mut self, last: Option<LogId>, data: &[u8]) -> Result<(), ApplyError>;
    /// Forgets everything applied, durably: every entry is then applied again from the log's
    /// start. Called at start when `last_applied` names an entry the recovered log does not hold
    /// (a replica may apply a committed entry before its own copy is synced; a power loss then
    /// takes the copy but not the state built from it, and the entry written there next may sit
    /// at other positions).
    ///
    /// # Errors
    /// A failure that must stop the replica.
    fn discard(&mut self) -> Result<(), ApplyError>;
}

/// Finds where an entry lives, for the apply responses.
pub(crate) trait Locate: Send + Sync + 'static {
    /// Global byte position of entry `index`.
    fn position(&self, index: u64) -> Option<u64>;
}

struct SmState {
    user: Box<dyn StateMachine>,
    last_applied: Option<OrLogId>,
    membership: OrStoredMembership,
    snapshot: Option<(OrSnapshotMeta, Vec<u8>)>,
}

/// Persists the membership history file (blocking).
pub(crate) type MembershipSaver =
    Arc<dyn Fn(&PathBuf, &OrStoredMembership) -> io::Result<()> + Send + Sync>;

/// openraft's state machine: forwards entries to the user's one, tracks membership.
#[derive(Clone)]
pub(crate) struct SmAdapter {
    state: Arc<Mutex<SmState>>,
    locate: Arc<dyn Locate>,
    membership_path: PathBuf,
    store_membership: MembershipSaver,
}

impl SmAdapter {
    /// Wraps `user`. `membership` is the last persisted membership that is not past
    /// `user.last_applied()`.
    pub fn new(
        user: Box<dyn StateMachine>,
        membership: OrStoredMembership,
        locate: Arc<dyn Locate>,
        membership_path: PathBuf,
        store_membership: MembershipSaver,
    ) -> Self {
        let last_applied = user.last_applied().map(from_log_id);
        SmAdapter {
            state: Arc::new(Mutex::new(SmState {
                user,
                last_applied,
                membership,
                snapshot: None,
            })),
            locate,
            membership_path,
            store_membership,
        }
    }

    /// Hands an entry straight to the user's state machine: only the `apply_before_commit`
    /// mutant does this.
    #[cfg(feature = "mutants")]
    pub fn apply_early(&self, entry: &CommittedEntry) {
        let _ = self.lock().user.apply(entry); // A mutant: errors do not matter.
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SmState> {
        self.state.lock().expect("state machine panicked")
    }
}

fn apply_error(err: ApplyError) -> io::Error {
    io::Error::other(err)
}

impl RaftSnapshotBuilder<TypeConfig> for SmAdapter {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<OrSnapshot, io::Error> {
        let mut state = self.lock();
        let data = state.user.snapshot();
        let meta = OrSnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
        };
        state.snapshot = Some((meta.clone(), data.clone()));
        Ok(OrSnapshot {
            meta,
            snapshot: std::io::Cursor::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for SmAdapter {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<OrLogId>, OrStoredMembership), io::Error> {
        let state = self.lock();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = to_log_id(&entry.log_id);
            let position = self.locate.position(log_id.index).ok_or_else(|| {
                io::Error::other(format!("applied entry {} is not in the log", log_id.index))
            })?;
            let payload = match entry.payload {
                OrPayload::Normal(data) => EntryPayload::Data(data.0),
                OrPayload::Blank => EntryPayload::Blank,
                OrPayload::Membership(membership) => {
                    let stored = OrStoredMembership::new(Some(entry.log_id), membership);
                    (self.store_membership)(&self.membership_path, &stored)?;
                    self.lock().membership = stored;
                    EntryPayload::Membership
                }
            };
            let committed = CommittedEntry {
                index: log_id.index,
                term: log_id.term,
                position,
                payload,
            };
            {
                let mut state = self.lock();
                if let Some(last) = state.last_applied {
                    assert!(
                        last.index < log_id.index,
                        "entries apply once, in order: {} after {}",
                        log_id.index,
                        last.index
                    );
                }
                state.user.apply(&committed).map_err(apply_error)?;
                state.last_applied = Some(entry.log_id);
            }
            if let Some(responder) = responder {
                responder.send(Applied { position });
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &OrSnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        (self.store_membership)(&self.membership_path, &meta.last_membership)?;
        let mut state = self.lock();
        state
            .user
            .restore(meta.last_log_id.as_ref().map(to_log_id), &data)
            .map_err(apply_error)?;
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        state.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<OrSnapshot>, io::Error> {
        let state = self.lock();
        Ok(state.snapshot.as_ref().map(|(meta, data)| OrSnapshot {
            meta: meta.clone(),
            snapshot: std::io::Cursor::new(data.clone()),
        }))
    }
}
