//! The time seam: wall-clock time, for values that go on the wire or on disk (a message's born
//! and store timestamps, the time part of a message id, a subscription's version). The
//! simulation supplies a clock that follows its simulated time, so timestamps replay.

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

    /// A clock far past the range of milliseconds in an i64 saturates instead of wrapping.
    #[test]
    fn milliseconds_saturate() {
        struct Far;
        impl Clock for Far {
            fn since_epoch(&self) -> Duration {
                Duration::MAX
            }
        }
        assert_eq!(Far.now_ms(), i64::MAX);
    }
}
