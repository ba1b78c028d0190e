//! dledger's transport seam over turmoil's simulated TCP.

use std::io;

use dledger::Transport;

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

impl Transport for TurmoilTransport {
    type Stream = turmoil::net::TcpStream;
    type Listener = turmoil::net::TcpListener;

    async fn bind(&self, addr: &str) -> io::Result<Self::Listener> {
        turmoil::net::TcpListener::bind(split(addr)?).await
    }

    fn local_addr(listener: &Self::Listener) -> io::Result<String> {
        Ok(listener.local_addr()?.to_string())
    }

    async fn accept(listener: &Self::Listener) -> io::Result<Self::Stream> {
        Ok(listener.accept().await?.0)
    }

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        turmoil::net::TcpStream::connect(split(addr)?).await
    }
}

/// remoting's transport seam (client-facing servers and clients) over turmoil's simulated TCP.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurmoilRemoting;

impl remoting::Transport for TurmoilRemoting {
    type Stream = turmoil::net::TcpStream;
    type Listener = turmoil::net::TcpListener;

    async fn bind(&self, addr: &str) -> io::Result<Self::Listener> {
        turmoil::net::TcpListener::bind(split(addr)?).await
    }

    fn local_addr(listener: &Self::Listener) -> io::Result<std::net::SocketAddr> {
        listener.local_addr()
    }

    async fn accept(listener: &Self::Listener) -> io::Result<(Self::Stream, std::net::SocketAddr)> {
        listener.accept().await
    }

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        turmoil::net::TcpStream::connect(split(addr)?).await
    }
}
