//! Connections of RocketMQ's remoting protocol, shared by the namesrv, the broker and the
//! client: [`server`] accepts connections and runs every request concurrently (a held long
//! poll must not block a send on the same socket, PROTOCOL.md §1.1); [`client`] multiplexes
//! requests on one connection by `opaque`. Sockets come from the network seam ([`Transport`],
//! from the `seams` crate), so the simulation runs this code over turmoil.
//!
//! A departure from DESIGN.md §2, which has no such folder: namesrv, broker and client all need
//! this code, and none of them may depend on another.

pub mod client;
mod frames;
pub mod server;

pub use client::{Client, ClientError, Connection};
pub use seams::{TcpTransport, Transport};
pub use server::{Handler, Peer, Server};
