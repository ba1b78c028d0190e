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
use crate::types::{CommittedEntry, EntryPayload, LogId, Snapshot};

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
/// - `snapshot_point` names the entry the log may be purged up to: the state machine can give
///   its state as of that entry ([`StateMachine::snapshot`]) and needs no entry at or before it
///   again. It only moves forward, and it moves when an entry applies (the same entry on every
///   replica), so every replica purges the same prefix. Once it moves, this replica builds a
///   snapshot and purges its log up to it; a leader sends that snapshot to a replica whose log
///   ends before its own first entry.
/// - `restore` replaces the state with a snapshot's, durably, before it returns.
/// - After `discard`, `last_applied` is the snapshot point (`None` without one) and nothing
///   applied after it is visible.
pub trait StateMachine: Send + 'static {
    /// Applies one committed entry.
    ///
    /// # Errors
    /// A failure that must stop the replica.
    fn apply(&mut self, entry: &CommittedEntry) -> Result<(), ApplyError>;
    /// The last entry whose effects are durable, read once at start.
    fn last_applied(&self) -> Option<LogId>;
    /// The entry the log may be purged up to, if any (see the obligations above).
    fn snapshot_point(&self) -> Option<LogId> {
        None
    }
    /// The state as of [`StateMachine::snapshot_point`], `None` without one.
    fn snapshot(&mut self) -> Option<Snapshot>;
    /// Replaces the state with `snapshot`'s, durably.
    ///
    /// # Errors
    /// Undecodable snapshot data, or a file error.
    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), ApplyError>;
    /// Forgets everything applied after the snapshot point, durably: those entries are then
    /// applied again from the log. Called at start when `last_applied` names an entry the
    /// recovered log does not hold (a replica may apply a committed entry before its own copy is
    /// synced; a power loss then takes the copy but not the state built from it, and the entry
    /// written there next may sit at other positions).
    ///
    /// # Errors
    /// A failure that must stop the replica.
    fn discard(&mut self) -> Result<(), ApplyError>;
}

/// What the state machine's adapter needs of the log: where an entry lives (for the apply
/// responses), and where the log goes on after a snapshot it installed.
pub(crate) trait Locate: Send + Sync + 'static {
    /// Global byte position of entry `index`.
    fn position(&self, index: u64) -> Option<u64>;
    /// Records, durably, that the entry after `last` starts at `next_position`: a snapshot up to
    /// `last` is being installed, and the log purged up to `last` continues there.
    ///
    /// # Errors
    /// The metadata file cannot be written.
    fn restart_at(&self, last: LogId, next_position: u64) -> io::Result<()>;
}

struct SmState {
    user: Box<dyn StateMachine>,
    last_applied: Option<OrLogId>,
    membership: OrStoredMembership,
    /// The memberships applied this life and the one loaded at start, oldest first: a snapshot
    /// names the one in effect at its point, which may be older than the latest.
    memberships: Vec<OrStoredMembership>,
    /// The snapshot point last announced on `snapshot_points`.
    announced: Option<LogId>,
}

/// How many memberships [`SmState::memberships`] keeps.
const MEMBERSHIPS_KEPT: usize = 8;

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
    /// Announces each new snapshot point: the replica then builds a snapshot and purges.
    snapshot_points: Arc<tokio::sync::watch::Sender<Option<LogId>>>,
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
        let announced = user.snapshot_point();
        SmAdapter {
            state: Arc::new(Mutex::new(SmState {
                user,
                last_applied,
                memberships: vec![membership.clone()],
                membership,
                announced,
            })),
            locate,
            membership_path,
            store_membership,
            snapshot_points: Arc::new(tokio::sync::watch::channel(announced).0),
        }
    }

    /// Each new snapshot point, as entries apply.
    pub fn snapshot_points(&self) -> tokio::sync::watch::Receiver<Option<LogId>> {
        self.snapshot_points.subscribe()
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

/// Bytes of the snapshot envelope's header: the next position (`u64::MAX` for none).
const ENVELOPE_HEADER_BYTES: usize = 8;

/// The snapshot as openraft carries it: the next position, then the state machine's data.
fn seal(snapshot: &Snapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENVELOPE_HEADER_BYTES + snapshot.data.len());
    out.extend_from_slice(&snapshot.next_position.unwrap_or(u64::MAX).to_be_bytes());
    out.extend_from_slice(&snapshot.data);
    out
}

/// Reads what [`seal`] wrote.
fn unseal(last: LogId, mut bytes: Vec<u8>) -> io::Result<Snapshot> {
    if bytes.len() < ENVELOPE_HEADER_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a snapshot of {} bytes has no header", bytes.len()),
        ));
    }
    let next = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
    bytes.drain(..ENVELOPE_HEADER_BYTES);
    Ok(Snapshot {
        last,
        next_position: (next != u64::MAX).then_some(next),
        data: bytes,
    })
}

impl SmAdapter {
    /// The state machine's snapshot with openraft's metadata, `None` without a snapshot point;
    /// with `empty_if_none`, the empty state instead while nothing is applied.
    fn current(&self, empty_if_none: bool) -> Option<OrSnapshot> {
        let mut state = self.lock();
        let Some(snapshot) = state.user.snapshot() else {
            // Nothing applied yet: the empty state, which covers no entry (openraft asks for one
            // when it finds a purged log and no snapshot; its storage suite does so).
            return (empty_if_none && state.last_applied.is_none()).then(|| OrSnapshot {
                meta: OrSnapshotMeta {
                    last_log_id: None,
                    last_membership: OrStoredMembership::default(),
                },
                snapshot: std::io::Cursor::new(u64::MAX.to_be_bytes().to_vec()),
            });
        };
        let at = snapshot.last.index;
        let last_membership = state
            .memberships
            .iter()
            .rev()
            .find(|m| m.log_id().is_none_or(|id| id.index <= at))
            .cloned()
            .unwrap_or_default();
        let meta = OrSnapshotMeta {
            last_log_id: Some(from_log_id(snapshot.last)),
            last_membership,
        };
        Some(OrSnapshot {
            meta,
            snapshot: std::io::Cursor::new(seal(&snapshot)),
        })
    }

    fn note_membership(&self, membership: OrStoredMembership) {
        let mut state = self.lock();
        state
            .memberships
            .retain(|m| m.log_id() < membership.log_id());
        state.memberships.push(membership.clone());
        let skip = state.memberships.len().saturating_sub(MEMBERSHIPS_KEPT);
        state.memberships.drain(..skip);
        state.membership = membership;
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SmAdapter {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<OrSnapshot, io::Error> {
        self.current(true)
            .ok_or_else(|| io::Error::other("the state machine has no snapshot point yet"))
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
                    self.note_membership(stored);
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
                let point = state.user.snapshot_point();
                if point > state.announced {
                    state.announced = point;
                    self.snapshot_points.send_replace(point);
                }
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
        let last = meta
            .last_log_id
            .as_ref()
            .map(to_log_id)
            .ok_or_else(|| io::Error::other("a snapshot without a last log id"))?;
        let snapshot = unseal(last, snapshot.into_inner())?;
        if let Some(next_position) = snapshot.next_position {
            // Before the state: a restart that finds the state restored purges the log up to
            // `last`, and must know where the log goes on.
            self.locate.restart_at(last, next_position)?;
        }
        (self.store_membership)(&self.membership_path, &meta.last_membership)?;
        let mut state = self.lock();
        state.user.restore(&snapshot).map_err(apply_error)?;
        state.last_applied = meta.last_log_id;
        state.memberships = vec![meta.last_membership.clone()];
        state.membership = meta.last_membership.clone();
        state.announced = state.announced.max(Some(last));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<OrSnapshot>, io::Error> {
        Ok(self.current(false))
    }
}
