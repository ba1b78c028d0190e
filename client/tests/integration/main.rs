//! The client against a fake name server and fake brokers speaking the real protocol over
//! loopback TCP (one test binary, modules by area).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake;
mod producer;
mod pull;
mod push;
