//! seams: the ground floor of raftmq. Everything that opens a socket or reads wall time does it
//! through one of these two seams, so that the deterministic simulation can put turmoil's
//! network and its own clock in their place (DESIGN.md §8). dledger, remoting, broker and client
//! all use them; this crate uses nothing of raftmq.
//!
//! - [`transport`]: [`Transport`], how byte streams are opened and accepted; [`TcpTransport`],
//!   tokio's TCP.
//! - [`clock`]: [`Clock`], wall-clock time for what goes on the wire or on disk; [`SystemClock`].
//!
//! Intervals and deadlines are not wall time: code measures them with `tokio::time`, which the
//! simulation controls already.

pub mod clock;
pub mod transport;

pub use clock::{Clock, SystemClock};
pub use transport::{TcpTransport, Transport};
