//! The message store over dledger.

pub mod consume_queue;
pub mod index_file;
