//! The network seam: how code opens and accepts byte streams. Production uses tokio's TCP
//! ([`TcpTransport`]); the simulation plugs in turmoil's.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

/// Opens and accepts byte streams.
pub trait Transport: Clone + Send + Sync + 'static {
    /// A connected stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static;
    /// A bound listener.
    type Listener: Send + Sync + 'static;

    /// Binds a listener on `addr` (`host:port`, port 0 for any free port).
    fn bind(&self, addr: &str) -> impl Future<Output = io::Result<Self::Listener>> + Send;
    /// The address a listener is bound to, as peers dial it.
    ///
    /// # Errors
    /// The OS error.
    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;
    /// Accepts one connection and tells the peer's address.
    fn accept(
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
    /// Connects to `addr` (`host:port`).
    fn connect(&self, addr: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// tokio's TCP with Nagle off: Raft messages, requests and answers are small and latency-bound.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpTransport;

impl Transport for TcpTransport {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    async fn bind(&self, addr: &str) -> io::Result<Self::Listener> {
        tokio::net::TcpListener::bind(addr).await
    }

    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(listener: &Self::Listener) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok((stream, peer))
    }

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A listener on port 0 tells its real address; a connection to it carries bytes both ways
    /// and the accepting side learns the peer's address.
    #[tokio::test]
    async fn tcp_connects_accepts_and_carries_bytes() {
        let listener = TcpTransport.bind("127.0.0.1:0").await.unwrap();
        let addr = TcpTransport::local_addr(&listener).unwrap();
        assert_ne!(addr.port(), 0);
        let target = addr.to_string();
        let (client, accepted) = tokio::join!(
            TcpTransport.connect(&target),
            TcpTransport::accept(&listener)
        );
        let (mut client, (mut server, peer)) = (client.unwrap(), accepted.unwrap());
        assert_eq!(peer, client.local_addr().unwrap());
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        assert!(TcpTransport.connect("127.0.0.1:0").await.is_err());
    }
}
