//! Interop tests against the real third-party RocketMQ client (PyPI `rocketmq` 0.4.4, Apache
//! RocketMQ's C++ client). One test binary; add a module per area (e.g. `mod broker;`).
//!
//! `harness` checks the harness itself: the venv builds, and `client.py` drives every producer
//! mode and both consumer kinds against `capture.py`, the fake nameserver + broker that
//! recorded `CPP-CLIENT-WIRE.md`.

#[path = "../support/procs.rs"]
mod procs;
#[path = "../support/python.rs"]
mod python;

mod broker;
mod harness;
mod schedule;
