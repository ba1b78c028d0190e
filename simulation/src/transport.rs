//! The seams (crate `seams`) over turmoil: one transport for the Raft network and the remoting
//! protocol alike, and a wall clock that follows simulated time so timestamps replay.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Wall-clock time at simulated time zero: 2026-01-01T00:00:00Z.
pub const EPOCH: Duration = Duration::from_millis(1_767_225_600_000);

/// Opens turmoil sockets; addresses are `host:port` with simulated host names.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurmoilTransport;

fn split(addr: &str) -> io::Result<(String, u16)> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no port in {addr}")))?;
    let port = port
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("bad port in {addr}")))?;
    Ok((host.to_string(), port))
}

impl seams::Transport for TurmoilTransport {
    type Stream = turmoil::net::TcpStream;
    type Listener = turmoil::net::TcpListener;

    async fn bind(&self, addr: &str) -> io::Result<Self::Listener> {
        turmoil::net::TcpListener::bind(split(addr)?).await
    }

    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(listener: &Self::Listener) -> io::Result<(Self::Stream, SocketAddr)> {
        listener.accept().await
    }

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        turmoil::net::TcpStream::connect(split(addr)?).await
    }
}

/// Wall-clock time as [`EPOCH`] plus the simulated time elapsed.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimClock;

impl seams::Clock for SimClock {
    fn since_epoch(&self) -> Duration {
        EPOCH + turmoil::sim_elapsed().unwrap_or_default()
    }
}
