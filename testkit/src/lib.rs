//! testkit: what the tests of every raftmq crate share (a dev-dependency only).
//!
//! - [`wait`]: poll a condition until it holds, with a deadline; a timeout names the condition
//!   and the last state it saw (after openraft's `metrics/wait.rs`). Tests never sleep to wait
//!   for something: they wait for it here.

pub mod wait;
