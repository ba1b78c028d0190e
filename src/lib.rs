//! The `raftmq` package's library side: what the command and the integration tests share.

pub mod broker_conf;
pub mod cluster;
pub mod disk_usage;
pub mod http;
pub mod leadership;
pub mod limits;
pub mod replica;
