//! The receiving side of the Raft network.

use std::io::Cursor;
use std::sync::Arc;

use futures_util::StreamExt;
use openraft::async_runtime::watch::WatchReceiver as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, watch};

use super::{
    FrameError, HELLO_RPC, HELLO_STREAM, RpcRequest, RpcResponse, StreamItem, encode_frame,
    read_frame, write_frame,
};
use crate::limits::{RAFT_CONNECTIONS_MAX, SNAPSHOT_BYTES_MAX};
use crate::raft_types::{OrSnapshot, OrSnapshotMeta, Runtime, TypeConfig};
use crate::state_machine::SmAdapter;
use seams::Transport;

pub(crate) type Raft = openraft::Raft<TypeConfig, SmAdapter>;

/// Serves Raft RPCs on `listener` until `shutdown` turns true.
///
/// Every connection task runs inside openraft's seeded RNG scope (`seed`), because openraft's
/// receiving API spawns tasks through its runtime.
pub async fn serve<T: Transport>(
    listener: T::Listener,
    raft: Raft,
    mut shutdown: watch::Receiver<bool>,
    seed: u64,
) {
    let permits = Arc::new(Semaphore::new(RAFT_CONNECTIONS_MAX));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return,
            accepted = T::accept(&listener) => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(cause = %err, "raft accept failed");
                continue;
            }
        };
        let raft = raft.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(Runtime::scope(seed, async move {
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => {}
                result = serve_connection(stream, raft) => {
                    if let Err(err) = result {
                        tracing::debug!(cause = %err, "raft connection ended");
                    }
                }
            }
            drop(permit);
        }));
    }
}

async fn serve_connection<S>(mut stream: S, raft: Raft) -> Result<(), FrameError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let hello = stream.read_u8().await?;
    match hello {
        HELLO_RPC => serve_rpc(stream, raft).await,
        HELLO_STREAM => serve_stream(stream, raft).await,
        other => Err(FrameError::Decode(format!(
            "unknown connection kind {other:#04x}"
        ))),
    }
}

/// A snapshot arriving in parts on one connection.
#[derive(Default)]
struct Receiving {
    partial: Option<(OrSnapshotMeta, u64, Vec<u8>)>,
}

impl Receiving {
    /// Takes the part at `offset` of a snapshot of `total` bytes: the whole snapshot once this
    /// part completes it, `None` while more are due. A part that does not continue the
    /// snapshot being received (another snapshot, a gap) or a size over the bound is refused,
    /// and the sender starts over.
    fn take_part(
        &mut self,
        meta: OrSnapshotMeta,
        offset: u64,
        total: u64,
        data: Vec<u8>,
    ) -> Result<Option<(OrSnapshotMeta, Vec<u8>)>, String> {
        if total > SNAPSHOT_BYTES_MAX {
            self.partial = None;
            return Err(format!(
                "a snapshot of {total} bytes is over the {SNAPSHOT_BYTES_MAX}-byte bound"
            ));
        }
        if offset == 0 {
            self.partial = Some((meta.clone(), total, Vec::new()));
        }
        let Some((expected, expected_total, buf)) = self.partial.as_mut() else {
            return Err(format!("snapshot part at {offset} without its start"));
        };
        if *expected != meta || *expected_total != total || buf.len() as u64 != offset {
            let reason = format!(
                "snapshot part at {offset} of {total} does not continue {} bytes of {expected_total} received",
                buf.len()
            );
            self.partial = None;
            return Err(reason);
        }
        if buf.len() as u64 + data.len() as u64 > total {
            self.partial = None;
            return Err(format!("snapshot parts run past its {total} bytes"));
        }
        buf.extend_from_slice(&data);
        if (buf.len() as u64) < total {
            return Ok(None);
        }
        Ok(self.partial.take().map(|(meta, _, data)| (meta, data)))
    }
}

async fn serve_rpc<S>(mut stream: S, raft: Raft) -> Result<(), FrameError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut receiving = Receiving::default();
    loop {
        let request: RpcRequest = match read_frame(&mut stream).await {
            Ok(request) => request,
            Err(FrameError::Closed) => return Ok(()),
            Err(err) => return Err(err),
        };
        let response = match request {
            RpcRequest::Vote(req) => {
                RpcResponse::Vote(raft.vote(req).await.map_err(|e| e.to_string()))
            }
            RpcRequest::PreVote(req) => {
                RpcResponse::Vote(raft.pre_vote(req).await.map_err(|e| e.to_string()))
            }
            RpcRequest::Append(req) => {
                RpcResponse::Append(raft.append_entries(req).await.map_err(|e| e.to_string()))
            }
            RpcRequest::Snapshot {
                vote,
                meta,
                offset,
                total,
                data,
            } => {
                let last = offset + data.len() as u64 >= total;
                match receiving.take_part(meta, offset, total, data) {
                    Err(reason) => {
                        if last {
                            RpcResponse::Snapshot(Err(reason))
                        } else {
                            RpcResponse::SnapshotPart(Err(reason))
                        }
                    }
                    Ok(None) => RpcResponse::SnapshotPart(Ok(())),
                    Ok(Some((meta, data))) => {
                        let snapshot = OrSnapshot {
                            meta,
                            snapshot: Cursor::new(data),
                        };
                        RpcResponse::Snapshot(
                            raft.install_full_snapshot(vote, snapshot)
                                .await
                                .map_err(|e| e.to_string()),
                        )
                    }
                }
            }
            RpcRequest::Probe => {
                let started = raft.is_initialized().await.unwrap_or(false);
                RpcResponse::Probe(started.then(|| {
                    let metrics = raft.metrics().borrow_watched().clone();
                    metrics
                        .membership_config
                        .membership()
                        .nodes()
                        .map(|(id, _)| *id)
                        .collect()
                }))
            }
            RpcRequest::TransferLeader(req) => RpcResponse::TransferLeader(
                raft.handle_transfer_leader(req)
                    .await
                    .map_err(|e| e.to_string()),
            ),
        };
        write_frame(&mut stream, &response).await?;
    }
}

/// Bound of the queue between the socket reader and openraft's stream input. openraft keeps its
/// own 64-deep pipeline behind it.
const STREAM_INPUT_QUEUE: usize = 64;

async fn serve_stream<S>(stream: S, raft: Raft) -> Result<(), FrameError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel(STREAM_INPUT_QUEUE);
    let reader_task = tokio::spawn(async move {
        loop {
            match read_frame(&mut reader).await {
                Ok(request) => {
                    if tx.send(request).await.is_err() {
                        return Ok(());
                    }
                }
                Err(FrameError::Closed) => return Ok(()),
                Err(err) => return Err(err),
            }
        }
    });
    let input =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    // Fused: the batching below may see the end first, then the outer loop polls again.
    let results = raft.stream_append(input).fuse();
    futures_util::pin_mut!(results);
    let mut outcome = Ok(());
    // Answers are batched into one write when several are ready, saving syscalls under load.
    let mut batch = Vec::new();
    while let Some(result) = results.next().await {
        let (item, last) = match result {
            Ok(result) => {
                let failed = result.is_err();
                (StreamItem::Result(result), failed)
            }
            Err(fatal) => (StreamItem::Fatal(fatal.to_string()), true),
        };
        batch.extend_from_slice(&encode_frame(&item)?);
        if last {
            writer.write_all(&batch).await?;
            break;
        }
        while let Some(Some(result)) = futures_util::FutureExt::now_or_never(results.next()) {
            let failed = !matches!(&result, Ok(Ok(_)));
            let item = match result {
                Ok(result) => StreamItem::Result(result),
                Err(fatal) => StreamItem::Fatal(fatal.to_string()),
            };
            batch.extend_from_slice(&encode_frame(&item)?);
            if failed {
                writer.write_all(&batch).await?;
                reader_task.abort();
                return outcome;
            }
        }
        if let Err(err) = writer.write_all(&batch).await {
            outcome = Err(FrameError::Io(err));
            break;
        }
        batch.clear();
    }
    reader_task.abort();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(index: u64) -> OrSnapshotMeta {
        OrSnapshotMeta {
            last_log_id: Some(crate::raft_types::from_log_id(crate::types::LogId {
                term: 1,
                index,
            })),
            last_membership: Default::default(),
        }
    }

    /// Parts in order make the snapshot; a part that does not continue it (a gap, another
    /// snapshot, no start), or a size over the bound, is refused and forgets what came before.
    #[test]
    fn snapshot_parts_assemble_in_order_only() {
        let mut r = Receiving::default();
        assert_eq!(r.take_part(meta(5), 0, 6, b"abc".to_vec()), Ok(None));
        let (m, data) = r
            .take_part(meta(5), 3, 6, b"def".to_vec())
            .unwrap()
            .expect("complete");
        assert_eq!((m, data), (meta(5), b"abcdef".to_vec()));

        assert_eq!(r.take_part(meta(5), 0, 6, b"abc".to_vec()), Ok(None));
        let gap = r.take_part(meta(5), 4, 6, b"ef".to_vec()).unwrap_err();
        assert!(gap.contains("does not continue"), "{gap}");
        assert!(
            r.take_part(meta(5), 3, 6, b"def".to_vec()).is_err(),
            "forgotten"
        );

        assert_eq!(r.take_part(meta(5), 0, 6, b"abc".to_vec()), Ok(None));
        assert!(
            r.take_part(meta(6), 3, 6, b"def".to_vec()).is_err(),
            "another snapshot"
        );
        assert!(
            r.take_part(meta(5), 0, 2, b"abc".to_vec()).is_err(),
            "past its size"
        );
        let big = r
            .take_part(meta(5), 0, SNAPSHOT_BYTES_MAX + 1, Vec::new())
            .unwrap_err();
        assert!(big.contains("bound"), "{big}");
        assert_eq!(
            r.take_part(meta(7), 0, 0, Vec::new()),
            Ok(Some((meta(7), Vec::new()))),
            "an empty snapshot is one part"
        );
    }
}
