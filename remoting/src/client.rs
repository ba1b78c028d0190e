//! The client side: one connection multiplexes requests by `opaque`; [`Client`] keeps one
//! connection per address and dials again when it closed.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use protocol::{RemotingCommand, split_frame};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};

use seams::Transport;

/// Requests queued for one connection's writer.
const WRITE_QUEUE_FRAMES: usize = 4096;
/// Server-initiated requests queued for the owner of a connection.
const INBOUND_QUEUE: usize = 256;

/// A request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The connection closed before the answer came.
    #[error("connection to {addr} closed")]
    Closed {
        /// Where.
        addr: String,
    },
    /// No answer within the deadline.
    #[error("request code {code} to {addr} timed out after {after:?}")]
    Timeout {
        /// The request code.
        code: i32,
        /// Where.
        addr: String,
        /// The deadline.
        after: Duration,
    },
    /// The request could not be encoded (too large).
    #[error(transparent)]
    Encode(#[from] protocol::command::EncodeError),
}

type Pending = Arc<Mutex<BTreeMap<i32, oneshot::Sender<RemotingCommand>>>>;

/// One connection to a server.
pub struct Connection {
    addr: String,
    tx: mpsc::Sender<Bytes>,
    pending: Pending,
    next_opaque: AtomicI32,
    closed: Arc<AtomicBool>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Connection {
    /// Connects to `addr`. Requests the server sends (NOTIFY_CONSUMER_IDS_CHANGED…) arrive on
    /// the returned receiver.
    ///
    /// # Errors
    /// [`ClientError::Connect`].
    pub async fn connect<T: Transport>(
        transport: &T,
        addr: &str,
    ) -> Result<(Connection, mpsc::Receiver<RemotingCommand>), ClientError> {
        let stream = transport
            .connect(addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let (mut reader, mut writer) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE_FRAMES);
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let writer_task = tokio::spawn({
            let closed = closed.clone();
            async move {
                let _ = crate::frames::pump(&mut rx, &mut writer).await;
                closed.store(true, Ordering::Release);
            }
        });
        let reader_task = tokio::spawn({
            let pending = pending.clone();
            let closed = closed.clone();
            let addr = addr.to_string();
            async move {
                let mut buf = BytesMut::with_capacity(64 * 1024);
                'read: loop {
                    match reader.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    loop {
                        let frame = match split_frame(&mut buf) {
                            Ok(Some(frame)) => frame,
                            Ok(None) => break,
                            Err(err) => {
                                tracing::warn!(%addr, cause = %err, "closing connection: framing lost");
                                break 'read;
                            }
                        };
                        let command = match RemotingCommand::decode(&frame) {
                            Ok(command) => command,
                            Err(err) => {
                                tracing::warn!(%addr, cause = %err, "malformed frame from server");
                                continue;
                            }
                        };
                        if command.is_response() {
                            let waiter = pending.lock().expect("pending").remove(&command.opaque);
                            match waiter {
                                Some(waiter) => {
                                    let _ = waiter.send(command);
                                }
                                None => {
                                    tracing::debug!(%addr, opaque = command.opaque, "answer to no pending request")
                                }
                            }
                        } else if inbound_tx.try_send(command).is_err() {
                            tracing::debug!(%addr, "server request dropped: nobody listens");
                        }
                    }
                }
                closed.store(true, Ordering::Release);
                // Waiters learn of the close when their senders drop.
                pending.lock().expect("pending").clear();
            }
        });
        Ok((
            Connection {
                addr: addr.to_string(),
                tx,
                pending,
                next_opaque: AtomicI32::new(1),
                closed,
                tasks: vec![writer_task.abort_handle(), reader_task.abort_handle()],
            },
            inbound_rx,
        ))
    }

    /// The server's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends `request` and waits up to `timeout` for its answer.
    ///
    /// # Errors
    /// [`ClientError::Closed`], [`ClientError::Timeout`], [`ClientError::Encode`].
    pub async fn request(
        &self,
        mut request: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, ClientError> {
        let opaque = self.next_opaque.fetch_add(1, Ordering::Relaxed);
        request.opaque = opaque;
        let frame = request.to_bytes()?;
        let (waiter, answer) = oneshot::channel();
        self.pending.lock().expect("pending").insert(opaque, waiter);
        let closed = || ClientError::Closed {
            addr: self.addr.clone(),
        };
        if self.is_closed() || self.tx.send(frame).await.is_err() {
            self.pending.lock().expect("pending").remove(&opaque);
            return Err(closed());
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(closed()),
            Err(_) => {
                self.pending.lock().expect("pending").remove(&opaque);
                Err(ClientError::Timeout {
                    code: request.code,
                    addr: self.addr.clone(),
                    after: timeout,
                })
            }
        }
    }

    /// Sends `request` as oneway: nothing is answered.
    ///
    /// # Errors
    /// [`ClientError::Closed`], [`ClientError::Encode`].
    pub async fn oneway(&self, mut request: RemotingCommand) -> Result<(), ClientError> {
        request.opaque = self.next_opaque.fetch_add(1, Ordering::Relaxed);
        let frame = request.oneway().to_bytes()?;
        if self.is_closed() || self.tx.send(frame).await.is_err() {
            return Err(ClientError::Closed {
                addr: self.addr.clone(),
            });
        }
        Ok(())
    }
}

/// Connections by address, dialled on first use and again after they close.
pub struct Client<T: Transport> {
    transport: T,
    connections: tokio::sync::Mutex<BTreeMap<String, Arc<Connection>>>,
    inbound: mpsc::Sender<(String, RemotingCommand)>,
}

impl<T: Transport> Client<T> {
    /// A client over `transport`; requests servers send arrive on the receiver with the
    /// server's address.
    pub fn new(transport: T) -> (Self, mpsc::Receiver<(String, RemotingCommand)>) {
        let (inbound, rx) = mpsc::channel(INBOUND_QUEUE);
        (
            Client {
                transport,
                connections: tokio::sync::Mutex::default(),
                inbound,
            },
            rx,
        )
    }

    /// The open connection to `addr`, dialling if needed.
    ///
    /// # Errors
    /// [`ClientError::Connect`].
    pub async fn connection(&self, addr: &str) -> Result<Arc<Connection>, ClientError> {
        if let Some(connection) = self
            .connections
            .lock()
            .await
            .get(addr)
            .filter(|c| !c.is_closed())
        {
            return Ok(connection.clone());
        }
        // Dial without holding the map: an address that does not answer must not stall
        // requests to the others.
        let (connection, mut rx) = Connection::connect(&self.transport, addr).await?;
        let connection = Arc::new(connection);
        {
            let mut connections = self.connections.lock().await;
            if let Some(existing) = connections.get(addr).filter(|c| !c.is_closed()) {
                // Another task dialled meanwhile: keep its connection, drop ours.
                return Ok(existing.clone());
            }
            connections.insert(addr.to_string(), connection.clone());
        }
        let inbound = self.inbound.clone();
        let from = addr.to_string();
        tokio::spawn(async move {
            while let Some(command) = rx.recv().await {
                if inbound.send((from.clone(), command)).await.is_err() {
                    break;
                }
            }
        });
        Ok(connection)
    }

    /// Sends `request` to `addr` and waits up to `timeout`.
    ///
    /// # Errors
    /// As [`Connection::request`], plus [`ClientError::Connect`].
    pub async fn request(
        &self,
        addr: &str,
        request: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, ClientError> {
        let connection = tokio::time::timeout(timeout, self.connection(addr))
            .await
            .map_err(|_| ClientError::Timeout {
                code: request.code,
                addr: addr.to_string(),
                after: timeout,
            })??;
        connection.request(request, timeout).await
    }

    /// Sends `request` to `addr` as oneway.
    ///
    /// # Errors
    /// As [`Connection::oneway`], plus [`ClientError::Connect`].
    pub async fn oneway(&self, addr: &str, request: RemotingCommand) -> Result<(), ClientError> {
        self.connection(addr).await?.oneway(request).await
    }

    /// Closes the connection to `addr`, if any.
    pub async fn forget(&self, addr: &str) {
        self.connections.lock().await.remove(addr);
    }
}
