//! The server side: accept connections, read frames, run each request as its own task, write
//! the answers in the order they finish.
//!
//! Bad input never takes the server down. A frame whose header is malformed is answered with
//! SYSTEM_ERROR naming the problem when its `opaque` could be read (else only logged), and the
//! connection goes on. A length prefix over 16 MiB or below 4 loses the framing, so that
//! connection is closed; every other connection is untouched.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use protocol::code::response;
use protocol::{RemotingCommand, split_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use seams::Transport;

/// Requests of one connection being processed at once; beyond it the server answers
/// SYSTEM_BUSY, as RocketMQ does when its thread pools are full.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 4096;
/// Encoded frames queued for one connection's writer.
const WRITE_QUEUE_FRAMES: usize = 1024;
/// How long a closing connection's queued answers may take to go out.
const WRITER_DRAIN: std::time::Duration = std::time::Duration::from_millis(500);

/// One connected client, as request handlers see it.
#[derive(Debug)]
pub struct Peer {
    /// Unique per server.
    pub id: u64,
    /// The client's socket address.
    pub addr: SocketAddr,
    tx: mpsc::Sender<Bytes>,
}

impl Peer {
    /// Sends `command` to the client as a oneway request (NOTIFY_CONSUMER_IDS_CHANGED,
    /// CHECK_TRANSACTION_STATE). Returns false if the connection is gone or its queue is full.
    pub fn send_oneway(&self, command: RemotingCommand) -> bool {
        match command.oneway().to_bytes() {
            Ok(frame) => self.tx.try_send(frame).is_ok(),
            Err(_) => false,
        }
    }
}

/// What a server does with requests.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request; `None` sends nothing (oneway requests are never answered anyway).
    fn handle(
        &self,
        peer: &Arc<Peer>,
        request: RemotingCommand,
    ) -> impl Future<Output = Option<RemotingCommand>> + Send;
    /// The connection of `peer` closed.
    fn closed(&self, peer: &Peer) {
        let _ = peer;
    }
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds `addr` and serves `handler` until [`Server::shutdown`].
    ///
    /// # Errors
    /// The bind error.
    pub async fn start<T: Transport, H: Handler>(
        transport: &T,
        addr: &str,
        handler: Arc<H>,
    ) -> io::Result<Server> {
        let listener = transport.bind(addr).await?;
        Self::serve::<T, H>(listener, handler)
    }

    /// Serves on a listener bound beforehand (so whoever bound it held the port from the start).
    ///
    /// # Errors
    /// The OS error reading the listener's address.
    pub fn serve<T: Transport, H: Handler>(
        listener: T::Listener,
        handler: Arc<H>,
    ) -> io::Result<Server> {
        let addr = T::local_addr(&listener)?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop::<T, H>(listener, handler, stopped));
        Ok(Server { addr, stop, task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes every connection and waits for their tasks.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop<T: Transport, H: Handler>(
    listener: T::Listener,
    handler: Arc<H>,
    mut stopped: watch::Receiver<bool>,
) {
    let next_id = AtomicU64::new(1);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stopped.changed() => break,
            accepted = T::accept(&listener) => match accepted {
                Ok((stream, addr)) => {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(serve_connection::<T, H>(
                        stream,
                        addr,
                        id,
                        handler.clone(),
                        stopped.clone(),
                    ));
                }
                Err(err) => {
                    // Out of file descriptors and the like: keep serving the others.
                    tracing::warn!(cause = %err, "accept failed");
                    tokio::task::yield_now().await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn serve_connection<T: Transport, H: Handler>(
    stream: T::Stream,
    addr: SocketAddr,
    id: u64,
    handler: Arc<H>,
    mut stopped: watch::Receiver<bool>,
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE_FRAMES);
    let peer = Arc::new(Peer { id, addr, tx });
    let writer_task = tokio::spawn(async move {
        if crate::frames::pump(&mut rx, &mut writer).await.is_ok() {
            let _ = writer.shutdown().await;
        }
    });
    let in_flight = Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_MAX));
    let mut requests = JoinSet::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    'read: loop {
        tokio::select! {
            biased;
            _ = stopped.changed() => break 'read,
            Some(_) = requests.join_next(), if !requests.is_empty() => continue 'read,
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => break 'read,
                Ok(_) => {}
            },
        }
        loop {
            let frame = match split_frame(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(peer = %addr, cause = %err, "closing connection: framing lost");
                    break 'read;
                }
            };
            let request = match RemotingCommand::decode(&frame) {
                Ok(request) => request,
                Err(err) => {
                    tracing::warn!(peer = %addr, cause = %err, "malformed request");
                    if let (Some(opaque), false) = (err.opaque, err.oneway) {
                        let mut answer = RemotingCommand {
                            code: response::SYSTEM_ERROR,
                            opaque,
                            flag: protocol::command::FLAG_RESPONSE,
                            version: protocol::code::VERSION,
                            remark: Some(err.to_string()),
                            ..Default::default()
                        };
                        answer.language = protocol::code::Language::Java;
                        if let Ok(frame) = answer.to_bytes() {
                            let _ = peer.tx.send(frame).await;
                        }
                    }
                    continue;
                }
            };
            if request.is_response() {
                // Answers to our own oneway requests do not exist; anything else is noise.
                continue;
            }
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                if !request.is_oneway() {
                    let busy = RemotingCommand::response_to(&request, response::SYSTEM_BUSY)
                        .with_remark("[OVERLOAD]too many requests in flight on this connection");
                    if let Ok(frame) = busy.to_bytes() {
                        let _ = peer.tx.send(frame).await;
                    }
                }
                continue;
            };
            let handler = handler.clone();
            let peer = peer.clone();
            requests.spawn(async move {
                let oneway = request.is_oneway();
                let template = RemotingCommand::response_to(&request, response::SYSTEM_ERROR);
                let answer = handler.handle(&peer, request).await;
                drop(permit);
                let Some(answer) = answer.filter(|_| !oneway) else {
                    return;
                };
                let frame = match answer.to_bytes() {
                    Ok(frame) => frame,
                    Err(err) => match template.with_remark(err.to_string()).to_bytes() {
                        Ok(frame) => frame,
                        Err(_) => return,
                    },
                };
                let _ = peer.tx.send(frame).await;
            });
        }
    }
    requests.shutdown().await;
    handler.closed(&peer);
    drop(peer);
    // Let queued answers go out; a handler may still hold the peer (to notify it later), so
    // the queue may never close by itself.
    let abort = writer_task.abort_handle();
    if tokio::time::timeout(WRITER_DRAIN, writer_task)
        .await
        .is_err()
    {
        abort.abort();
    }
}
