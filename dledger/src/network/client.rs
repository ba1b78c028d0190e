//! The sending side of the Raft network: one `Connection` per target, dialled lazily and
//! re-dialled with capped backoff.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use openraft::OptionalSend;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    AppendRequest, AppendResponse, FrameError, HELLO_RPC, HELLO_STREAM, RpcRequest, RpcResponse,
    SnapshotResponse, StreamItem, StreamResult, TransferRequest, TransferResponse, VoteRequest,
    VoteResponse, encode_frame, read_frame,
};
use crate::limits::{
    DIAL_BACKOFF_MAX_MS, DIAL_BACKOFF_MIN_MS, SNAPSHOT_CHUNK_BYTES, STREAM_IN_FLIGHT_MAX,
};
use crate::raft_types::{OrSnapshot, OrVote, PeerNode, SnapshotData, TypeConfig};
use seams::Transport;

type RpcErr = RPCError<TypeConfig>;

fn unreachable(err: &(impl std::error::Error + 'static)) -> RpcErr {
    RPCError::Unreachable(Unreachable::new(err))
}

fn network(err: &(impl std::error::Error + 'static)) -> RpcErr {
    RPCError::Network(NetworkError::new(err))
}

/// Makes connections to peers.
#[derive(Clone)]
pub struct NetworkFactory<T: Transport> {
    transport: T,
    stream_timeout: Duration,
}

impl<T: Transport> NetworkFactory<T> {
    /// A factory dialling through `transport`. Each answer on a replication stream must arrive
    /// within `stream_timeout` of its request (or openraft's own RPC deadline, if longer): a
    /// deep pipeline queues requests behind the follower's syncs, so heartbeat-sized deadlines
    /// would cut healthy streams under load.
    pub fn new(transport: T, stream_timeout: Duration) -> Self {
        NetworkFactory {
            transport,
            stream_timeout,
        }
    }
}

impl<T: Transport> RaftNetworkFactory<TypeConfig> for NetworkFactory<T> {
    type Network = Connection<T>;

    async fn new_client(&mut self, target: u64, node: &PeerNode) -> Self::Network {
        Connection {
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
            stream_timeout: self.stream_timeout,
            rpc: None,
            dial: Arc::new(std::sync::Mutex::new(DialState::default())),
        }
    }
}

#[derive(Default)]
struct DialState {
    failures: u32,
    not_before: Option<Instant>,
}

/// The connection to one target.
pub struct Connection<T: Transport> {
    target: u64,
    addr: String,
    transport: T,
    stream_timeout: Duration,
    rpc: Option<T::Stream>,
    dial: Arc<std::sync::Mutex<DialState>>,
}

/// Wait before the next dial after `failures` failed ones in a row: doubling from
/// `DIAL_BACKOFF_MIN_MS`, capped at `DIAL_BACKOFF_MAX_MS`.
fn dial_backoff_ms(failures: u32) -> u64 {
    (DIAL_BACKOFF_MIN_MS << failures.min(16)).min(DIAL_BACKOFF_MAX_MS)
}

/// Dials `addr` unless backing off, sending `hello`. Bounded by `ttl`.
/// Asks the replica at `addr` for its group's members: `Some(None)` if its group has not
/// started, `None` if it does not answer within `ttl`.
pub(crate) async fn probe<T: Transport>(
    transport: &T,
    addr: &str,
    ttl: Duration,
) -> Option<Option<Vec<u64>>> {
    let ask = async {
        let mut stream = transport.connect(addr).await.ok()?;
        stream.write_all(&[HELLO_RPC]).await.ok()?;
        let frame = encode_frame(&RpcRequest::Probe).ok()?;
        stream.write_all(&frame).await.ok()?;
        match read_frame::<_, RpcResponse>(&mut stream).await.ok()? {
            RpcResponse::Probe(members) => Some(members),
            _ => None,
        }
    };
    tokio::time::timeout(ttl, ask).await.ok().flatten()
}

async fn dial<T: Transport>(
    transport: &T,
    addr: &str,
    dial_state: &std::sync::Mutex<DialState>,
    hello: u8,
    ttl: Duration,
) -> Result<T::Stream, RpcErr> {
    let now = Instant::now();
    if let Some(not_before) = dial_state.lock().expect("dial state").not_before
        && now < not_before
    {
        let err = io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "backing off after failed dial",
        );
        return Err(unreachable(&err));
    }
    let attempt = async {
        let mut stream = transport.connect(addr).await?;
        stream.write_all(&[hello]).await?;
        Ok::<_, io::Error>(stream)
    };
    let result = match tokio::time::timeout(ttl, attempt).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "dial timed out")),
    };
    let mut state = dial_state.lock().expect("dial state");
    match result {
        Ok(stream) => {
            *state = DialState::default();
            Ok(stream)
        }
        Err(err) => {
            let backoff_ms = dial_backoff_ms(state.failures);
            state.failures = state.failures.saturating_add(1);
            state.not_before = Some(Instant::now() + Duration::from_millis(backoff_ms));
            tracing::debug!(addr, cause = %err, backoff_ms, "dial failed");
            Err(unreachable(&err))
        }
    }
}

impl<T: Transport> Connection<T> {
    async fn call(&mut self, request: RpcRequest, ttl: Duration) -> Result<RpcResponse, RpcErr> {
        let frame = encode_frame(&request).map_err(|err| network(&err))?;
        let deadline = Instant::now() + ttl;
        let result = tokio::time::timeout_at(deadline, async {
            if self.rpc.is_none() {
                self.rpc =
                    Some(dial(&self.transport, &self.addr, &self.dial, HELLO_RPC, ttl).await?);
            }
            let stream = self.rpc.as_mut().expect("connected above");
            stream
                .write_all(&frame)
                .await
                .map_err(|err| unreachable(&err))?;
            read_frame::<_, RpcResponse>(stream)
                .await
                .map_err(|err| match err {
                    FrameError::Io(err) => unreachable(&err),
                    other => network(&other),
                })
        })
        .await;
        match result {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => {
                self.rpc = None;
                Err(err)
            }
            Err(_) => {
                // A late answer would desynchronize the next request: drop the connection.
                self.rpc = None;
                let err = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("RPC timed out after {ttl:?}"),
                );
                Err(network(&err))
            }
        }
    }
}

fn remote(text: String) -> RpcErr {
    network(&io::Error::other(format!("remote error: {text}")))
}

fn unexpected() -> RpcErr {
    network(&io::Error::new(
        io::ErrorKind::InvalidData,
        "unexpected response kind",
    ))
}

impl<T: Transport> RaftNetworkV2<TypeConfig> for Connection<T> {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendRequest,
        option: RPCOption,
    ) -> Result<AppendResponse, RpcErr> {
        match self
            .call(RpcRequest::Append(rpc), option.soft_ttl())
            .await?
        {
            RpcResponse::Append(result) => result.map_err(remote),
            _ => Err(unexpected()),
        }
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamResult, RpcErr>>, RpcErr>>
    where
        S: Stream<Item = AppendRequest> + OptionalSend + Unpin + 'static,
    {
        let ttl = option.soft_ttl().max(self.stream_timeout);
        let dialer = Dialer {
            transport: self.transport.clone(),
            addr: self.addr.clone(),
            state: self.dial.clone(),
            ttl: option.soft_ttl(),
        };
        let target = self.target;
        Box::pin(async move { Ok(pipelined_stream(dialer, input, ttl, target)) })
    }

    async fn vote(&mut self, rpc: VoteRequest, option: RPCOption) -> Result<VoteResponse, RpcErr> {
        match self.call(RpcRequest::Vote(rpc), option.soft_ttl()).await? {
            RpcResponse::Vote(result) => result.map_err(remote),
            _ => Err(unexpected()),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RpcErr> {
        match self
            .call(RpcRequest::PreVote(rpc), option.soft_ttl())
            .await?
        {
            RpcResponse::Vote(result) => result.map_err(remote),
            _ => Err(unexpected()),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: OrVote,
        snapshot: OrSnapshot,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse, StreamingError<TypeConfig>> {
        let data = snapshot.snapshot.into_inner();
        let total = data.len() as u64;
        let mut offset = 0usize;
        let result = loop {
            let end = (offset + SNAPSHOT_CHUNK_BYTES).min(data.len());
            let request = RpcRequest::Snapshot {
                vote,
                meta: snapshot.meta.clone(),
                offset: offset as u64,
                total,
                data: data[offset..end].to_vec(),
            };
            let last = end == data.len();
            match (self.call(request, option.hard_ttl()).await, last) {
                (Ok(RpcResponse::Snapshot(result)), true) => break result.map_err(remote),
                (Ok(RpcResponse::SnapshotPart(Ok(()))), false) => offset = end,
                (Ok(RpcResponse::SnapshotPart(Err(reason))), false) => break Err(remote(reason)),
                (Ok(_), _) => break Err(unexpected()),
                (Err(err), _) => break Err(err),
            }
        };
        result.map_err(|err| match err {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            RPCError::Network(n) => StreamingError::Network(n),
            RPCError::Timeout(t) => StreamingError::Timeout(t),
            RPCError::RemoteError(r) => StreamingError::Network(NetworkError::new(&r)),
        })
    }

    async fn transfer_leader(
        &mut self,
        req: TransferRequest,
        option: RPCOption,
    ) -> Result<TransferResponse, RpcErr> {
        match self
            .call(RpcRequest::TransferLeader(req), option.soft_ttl())
            .await?
        {
            RpcResponse::TransferLeader(result) => result.map_err(remote),
            _ => Err(unexpected()),
        }
    }
}

/// Aborts a task when dropped, so a replication session that ends takes its writer with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the writer task needs to open a replication connection.
struct Dialer<T: Transport> {
    transport: T,
    addr: String,
    state: Arc<std::sync::Mutex<DialState>>,
    ttl: Duration,
}

/// Runs one replication stream: a writer task dials the target once openraft yields the first
/// request (openraft waits out its replication backoff inside the request stream, so dialling
/// before that would retry an unreachable peer in a tight loop), then sends requests as fast as
/// the peer takes them (up to `STREAM_IN_FLIGHT_MAX` unanswered). The returned stream yields the
/// results in order, each bounded by `ttl` from when its request was sent.
fn pipelined_stream<'s, T, S>(
    dialer: Dialer<T>,
    mut input: S,
    ttl: Duration,
    target: u64,
) -> BoxStream<'s, Result<StreamResult, RpcErr>>
where
    T: Transport,
    S: Stream<Item = AppendRequest> + OptionalSend + Unpin + 'static,
{
    type Reader<T> = tokio::io::ReadHalf<<T as Transport>::Stream>;
    let (connected_tx, connected_rx) = tokio::sync::oneshot::channel::<Result<Reader<T>, RpcErr>>();
    // One token per request in flight, carrying its send time.
    let (sent_tx, sent_rx) = mpsc::channel::<Instant>(STREAM_IN_FLIGHT_MAX);
    let writer_task = tokio::spawn(async move {
        let Some(first) = input.next().await else {
            return;
        };
        let Dialer {
            transport,
            addr,
            state,
            ttl: dial_ttl,
        } = dialer;
        let stream = match dial(&transport, &addr, &state, HELLO_STREAM, dial_ttl).await {
            Ok(stream) => stream,
            Err(err) => {
                let _ = connected_tx.send(Err(err)); // The session may have ended already.
                return;
            }
        };
        let (reader, mut writer) = tokio::io::split(stream);
        if connected_tx.send(Ok(reader)).is_err() {
            return;
        }
        let mut next = Some(first);
        while let Some(request) = next.take() {
            let frame = match encode_frame(&request) {
                Ok(frame) => frame,
                Err(err) => {
                    tracing::error!(target_node = target, cause = %err, "cannot encode append");
                    return;
                }
            };
            // Reserve the in-flight slot before sending, so the reader never waits for an answer
            // to a request that was not sent.
            let Ok(permit) = sent_tx.reserve().await else {
                return;
            };
            if let Err(err) = writer.write_all(&frame).await {
                tracing::debug!(target_node = target, cause = %err, "replication stream write failed");
                return;
            }
            permit.send(Instant::now());
            next = input.next().await;
        }
    });
    let guard = AbortOnDrop(writer_task);
    enum Phase<R> {
        Connecting(tokio::sync::oneshot::Receiver<Result<R, RpcErr>>),
        Streaming(R),
    }
    let state = (Phase::Connecting(connected_rx), sent_rx, guard);
    let out = futures_util::stream::unfold(Some(state), move |state| async move {
        let (phase, mut sent_rx, guard) = state?;
        let mut reader = match phase {
            Phase::Streaming(reader) => reader,
            Phase::Connecting(connected) => match connected.await {
                Ok(Ok(reader)) => reader,
                Ok(Err(err)) => return Some((Err(err), None)),
                // The writer ended before dialling: the input ended, so does the stream.
                Err(_) => return None,
            },
        };
        // `None` once the input ended and every answer arrived.
        let sent_at = sent_rx.recv().await?;
        let read = tokio::time::timeout_at(sent_at + ttl, read_frame::<_, StreamItem>(&mut reader));
        let item = match read.await {
            Ok(Ok(StreamItem::Result(result))) => Ok(result),
            Ok(Ok(StreamItem::Fatal(reason))) => Err(remote(reason)),
            Ok(Err(FrameError::Io(err))) => Err(unreachable(&err)),
            Ok(Err(err)) => Err(network(&err)),
            Err(_) => {
                let err = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("append timed out after {ttl:?}"),
                );
                Err(network(&err))
            }
        };
        let next = if item.as_ref().is_ok_and(Result::is_ok) {
            Some((Phase::Streaming(reader), sent_rx, guard))
        } else {
            None
        };
        Some((item, next))
    });
    Box::pin(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The re-dial wait doubles per failure and never passes the cap, however many failures.
    #[test]
    fn dial_backoff_doubles_and_is_capped() {
        assert_eq!(dial_backoff_ms(0), DIAL_BACKOFF_MIN_MS);
        assert_eq!(dial_backoff_ms(1), 2 * DIAL_BACKOFF_MIN_MS);
        assert_eq!(dial_backoff_ms(3), 8 * DIAL_BACKOFF_MIN_MS);
        for failures in [7, 16, 17, 1000, u32::MAX] {
            assert_eq!(dial_backoff_ms(failures), DIAL_BACKOFF_MAX_MS);
        }
    }

    /// A peer that refuses connections is not dialled again before its backoff ends: the second
    /// attempt fails at once without touching the network.
    #[tokio::test]
    async fn refused_dial_backs_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let state = std::sync::Mutex::new(DialState::default());
        let ttl = Duration::from_millis(500);
        let transport = seams::TcpTransport;
        assert!(
            dial(&transport, &addr, &state, HELLO_RPC, ttl)
                .await
                .is_err()
        );
        assert_eq!(state.lock().unwrap().failures, 1);
        assert!(
            dial(&transport, &addr, &state, HELLO_RPC, ttl)
                .await
                .is_err()
        );
        assert_eq!(
            state.lock().unwrap().failures,
            1,
            "the second call was refused by the backoff"
        );
    }
}
