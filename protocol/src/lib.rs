//! RocketMQ's remoting wire protocol, as raftmq speaks it (../shared/PROTOCOL.md).
//!
//! - [`command`]: the frame and [`RemotingCommand`], JSON and ROCKETMQ binary headers.
//! - [`code`]: request, response and language codes.
//! - [`header`]: typed custom headers with Java's field names.
//! - [`message`]: properties, the stored-message record, batch bodies, message ids.
//! - [`body`]: JSON bodies (routes, registrations, heartbeats), parsed leniently.
//! - [`filter`]: TAG subscription expressions.
//! - [`names`]: the rule for topic and group names.
//!
//! No sockets and no files: this crate only turns bytes into values and back, and decoding
//! never panics on any input.

pub mod body;
pub mod code;
pub mod command;
pub mod filter;
pub mod header;
pub mod message;
pub mod names;

pub use command::{DecodeError, FRAME_MAX_BYTES, FrameError, RemotingCommand, split_frame};
pub use header::{CommandHeader, ExtFields, HeaderError};
