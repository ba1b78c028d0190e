//! Wall-clock time, behind a seam so the simulation can supply its own.
//!
//! The client reads wall time only for values it puts on the wire: a message's
//! `bornTimestamp`, the time part of `UNIQ_KEY`, a subscription's `subVersion` and the client
//! id. Intervals and deadlines use `tokio::time`, which the simulation controls already.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// Time since the Unix epoch.
    fn since_epoch(&self) -> Duration;

    /// Milliseconds since the Unix epoch, as RocketMQ's timestamps are.
    fn now_ms(&self) -> i64 {
        i64::try_from(self.since_epoch().as_millis()).unwrap_or(i64::MAX)
    }
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn since_epoch(&self) -> Duration {
        // A clock set before 1970 reads as the epoch: timestamps are informational.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The system clock reads a time after 2020 in milliseconds.
    #[test]
    fn system_clock_reads_milliseconds() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
