//! The `raftmq` package's library side: what the command and the integration tests share.

pub mod cluster;
pub mod http;
pub mod replica;
