//! What a broker counts while it serves: requests by request and response code, bytes in and
//! out, send and pull latency, long polls held, elections seen. Counters are atomics, so the
//! request path never waits on a reader; only the (request code, response code) table sits
//! behind a mutex, held for one map update.
//!
//! [`Metrics::render`] writes them in Prometheus' text format (version 0.0.4), every name
//! prefixed `raftmq_`; [`write_counter`] and [`write_gauge`] write other families (the Raft
//! gauges, the name server's) in the same style.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use protocol::RemotingCommand;

/// Upper bounds of the latency buckets, in seconds. Pulls are held up to the long-poll bound
/// (25 s by default), so the buckets reach 30 s.
pub const LATENCY_BUCKETS_SECONDS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0,
    20.0, 30.0,
];

/// A latency histogram with fixed buckets ([`LATENCY_BUCKETS_SECONDS`] and `+Inf`), each an
/// atomic count; the sum is kept in nanoseconds.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket, not cumulative; the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(LATENCY_BUCKETS_SECONDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes the family `name`: `# HELP`, `# TYPE name histogram`, the cumulative
    /// `name_bucket{le="..."}` lines, `name_sum` (seconds) and `name_count`.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            match LATENCY_BUCKETS_SECONDS.get(i) {
                Some(le) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        // The count is read after the buckets, so `+Inf` may lag it by observations made
        // meanwhile; Prometheus tolerates that, and the next scrape catches up.
        let _ = writeln!(out, "{name}_count {}", self.count());
    }
}

/// Decrements the long-poll gauge when a held pull ends, however it ends (answered, timed
/// out, or its connection dropped the future).
#[derive(Debug)]
pub struct LongPollHold<'a> {
    metrics: &'a Metrics,
}

impl Drop for LongPollHold<'_> {
    fn drop(&mut self) {
        self.metrics.long_polls_held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The counters of one broker. Shared as `Arc<Metrics>`; see [`crate::Broker::metrics`].
#[derive(Debug, Default)]
pub struct Metrics {
    /// Answers by (request code, response code).
    requests: Mutex<BTreeMap<(i32, i32), u64>>,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
    /// SEND_MESSAGE, SEND_MESSAGE_V2, SEND_BATCH_MESSAGE: request received to answer.
    pub send_latency: Histogram,
    /// PULL_MESSAGE and LITE_PULL_MESSAGE: request received to answer, long-poll hold included.
    pub pull_latency: Histogram,
    long_polls_held: AtomicU64,
    long_polls_total: AtomicU64,
    elections: AtomicU64,
    quorum_losses: AtomicU64,
    /// Scheduled messages this replica, leading, delivered to their real topics.
    pub scheduled_delivered: AtomicU64,
    /// Scheduled messages this replica, leading, dropped because a marker cancelled them.
    pub scheduled_cancelled: AtomicU64,
    /// Scheduled messages: from the time they were due to their delivery being applied.
    pub scheduled_lateness: Histogram,
    /// The last disk usage the cleaner read, in thousandths.
    pub disk_used_permille: AtomicU64,
    /// CommitLog segments cut by retention entries this replica proposed.
    pub retention_segments_cut: AtomicU64,
    /// Sends refused because the disk is full.
    pub disk_full_refusals: AtomicU64,
    /// CHECK_TRANSACTION_STATE requests sent while leading.
    pub transaction_checks_sent: AtomicU64,
}

/// Bytes a command takes on the wire: the body exactly, the header estimated from its fields
/// (the JSON layout's keys and punctuation, ext field keys and values, the remark). Encoding
/// the header again only to measure it would cost more than the answer itself on small
/// requests.
pub fn frame_bytes(command: &RemotingCommand) -> u64 {
    /// Length word, header-length word, and the JSON header's fixed keys (code, flag,
    /// language, opaque, version, serializeTypeCurrentRPC, extFields) with typical values.
    const FIXED: usize = 8 + 110;
    let ext: usize = command
        .ext_fields
        .iter()
        .map(|(key, value)| key.len() + value.len() + 6)
        .sum();
    let remark = command.remark.as_ref().map_or(0, |r| r.len() + 12);
    (FIXED + ext + remark + command.body.len()) as u64
}

impl Metrics {
    /// Records one answered request: its codes, its bytes in and out.
    pub fn record_request(
        &self,
        request_code: i32,
        response_code: i32,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        self.request_bytes.fetch_add(bytes_in, Ordering::Relaxed);
        self.response_bytes.fetch_add(bytes_out, Ordering::Relaxed);
        // A poisoned table only means a panic mid-increment elsewhere; the counts stay usable.
        let mut requests = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *requests.entry((request_code, response_code)).or_default() += 1;
    }

    /// Answers so far to `request_code` with `response_code`.
    pub fn requests(&self, request_code: i32, response_code: i32) -> u64 {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(request_code, response_code))
            .copied()
            .unwrap_or(0)
    }

    /// Request bytes received so far (see [`frame_bytes`]).
    pub fn request_bytes(&self) -> u64 {
        self.request_bytes.load(Ordering::Relaxed)
    }

    /// Response bytes sent so far (see [`frame_bytes`]).
    pub fn response_bytes(&self) -> u64 {
        self.response_bytes.load(Ordering::Relaxed)
    }

    /// A pull starts being held; the returned guard ends the hold when dropped.
    pub fn hold_long_poll(&self) -> LongPollHold<'_> {
        self.long_polls_held.fetch_add(1, Ordering::Relaxed);
        self.long_polls_total.fetch_add(1, Ordering::Relaxed);
        LongPollHold { metrics: self }
    }

    /// Pulls held right now.
    pub fn long_polls_held(&self) -> u64 {
        self.long_polls_held.load(Ordering::Relaxed)
    }

    /// Pulls held since start.
    pub fn long_polls_total(&self) -> u64 {
        self.long_polls_total.load(Ordering::Relaxed)
    }

    /// Counts one more term become current on this replica.
    pub fn record_election(&self) {
        self.elections.fetch_add(1, Ordering::Relaxed);
    }

    /// Distinct terms this replica has seen become current since it started.
    pub fn elections(&self) -> u64 {
        self.elections.load(Ordering::Relaxed)
    }

    /// Counts one more time this replica, leading with its quorum lease, lost it.
    pub fn record_quorum_loss(&self) {
        self.quorum_losses.fetch_add(1, Ordering::Relaxed);
    }

    /// Times this replica, leading, lost its quorum lease since it started.
    pub fn quorum_losses(&self) -> u64 {
        self.quorum_losses.load(Ordering::Relaxed)
    }

    /// Writes every family of this broker in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let _ = writeln!(
            out,
            "# HELP raftmq_requests_total Requests answered, by request code and response code."
        );
        let _ = writeln!(out, "# TYPE raftmq_requests_total counter");
        for ((request_code, response_code), count) in requests {
            let _ = writeln!(
                out,
                "raftmq_requests_total{{request_code=\"{request_code}\",response_code=\"{response_code}\"}} {count}"
            );
        }
        write_counter(
            out,
            "raftmq_request_bytes_total",
            "Bytes of requests received (body exact, header estimated from its fields).",
            self.request_bytes(),
        );
        write_counter(
            out,
            "raftmq_response_bytes_total",
            "Bytes of answers sent (body exact, header estimated from its fields).",
            self.response_bytes(),
        );
        self.send_latency.render(
            out,
            "raftmq_send_latency_seconds",
            "Sends (codes 10, 310, 320) from request received to answer.",
        );
        self.pull_latency.render(
            out,
            "raftmq_pull_latency_seconds",
            "Pulls (codes 11, 361) from request received to answer, long-poll hold included.",
        );
        write_gauge(
            out,
            "raftmq_long_poll_holds",
            "Pulls held right now waiting for a message.",
            self.long_polls_held(),
        );
        write_counter(
            out,
            "raftmq_long_poll_holds_total",
            "Pulls held waiting for a message since start.",
            self.long_polls_total(),
        );
        write_counter(
            out,
            "raftmq_raft_elections_total",
            "Distinct Raft terms this replica has seen become current since it started.",
            self.elections(),
        );
        write_counter(
            out,
            "raftmq_leader_quorum_losses_total",
            "Times this replica, leading, heard from no quorum within the lease and stopped taking writes.",
            self.quorum_losses(),
        );
        write_counter(
            out,
            "raftmq_scheduled_delivered_total",
            "Scheduled messages (delay levels, timers, retries) this replica delivered while leading.",
            self.scheduled_delivered.load(Ordering::Relaxed),
        );
        write_counter(
            out,
            "raftmq_scheduled_cancelled_total",
            "Timer messages this replica dropped while leading because a marker cancelled them.",
            self.scheduled_cancelled.load(Ordering::Relaxed),
        );
        self.scheduled_lateness.render(
            out,
            "raftmq_scheduled_lateness_seconds",
            "Scheduled messages from their due time to their delivery applied on the leader.",
        );
        write_gauge(
            out,
            "raftmq_disk_used_permille",
            "Used share of the store's disk partition, in thousandths, as the cleaner last read it.",
            self.disk_used_permille.load(Ordering::Relaxed),
        );
        write_counter(
            out,
            "raftmq_retention_segments_cut_total",
            "CommitLog segments deleted by retention cuts this replica proposed while leading.",
            self.retention_segments_cut.load(Ordering::Relaxed),
        );
        write_counter(
            out,
            "raftmq_disk_full_refusals_total",
            "Sends refused because the disk is full.",
            self.disk_full_refusals.load(Ordering::Relaxed),
        );
    }
}

/// Writes a counter family of one unlabelled sample.
pub fn write_counter(out: &mut String, name: &str, help: &str, value: u64) {
    write_sample(out, name, help, "counter", value);
}

/// Writes a gauge family of one unlabelled sample.
pub fn write_gauge(out: &mut String, name: &str, help: &str, value: u64) {
    write_sample(out, name, help, "gauge", value);
}

fn write_sample(out: &mut String, name: &str, help: &str, kind: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets_sum_and_count() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300)); // le 0.0005
        h.observe(Duration::from_millis(1)); // le 0.001: bounds are inclusive
        h.observe(Duration::from_millis(7)); // le 0.01
        h.observe(Duration::from_secs(60)); // +Inf only
        let mut out = String::new();
        h.render(&mut out, "raftmq_test_seconds", "A test.");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "# HELP raftmq_test_seconds A test.");
        assert_eq!(lines[1], "# TYPE raftmq_test_seconds histogram");
        assert_eq!(lines[2], "raftmq_test_seconds_bucket{le=\"0.0005\"} 1");
        assert_eq!(lines[3], "raftmq_test_seconds_bucket{le=\"0.001\"} 2");
        assert_eq!(lines[4], "raftmq_test_seconds_bucket{le=\"0.0025\"} 2");
        assert_eq!(lines[6], "raftmq_test_seconds_bucket{le=\"0.01\"} 3");
        assert_eq!(lines[18], "raftmq_test_seconds_bucket{le=\"30\"} 3");
        assert_eq!(lines[19], "raftmq_test_seconds_bucket{le=\"+Inf\"} 4");
        let sum: f64 = lines[20]
            .strip_prefix("raftmq_test_seconds_sum ")
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 60.0083).abs() < 1e-9, "sum {sum}");
        assert_eq!(lines[21], "raftmq_test_seconds_count 4");
        assert_eq!(lines.len(), 22);
        // Buckets never decrease.
        let counts: Vec<u64> = lines[2..20]
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    }

    #[test]
    fn requests_are_counted_by_both_codes_and_holds_end_on_drop() {
        let m = Metrics::default();
        m.record_request(10, 0, 100, 50);
        m.record_request(10, 0, 100, 50);
        m.record_request(10, 17, 10, 5);
        assert_eq!(m.requests(10, 0), 2);
        assert_eq!(m.requests(10, 17), 1);
        assert_eq!(m.request_bytes(), 210);
        assert_eq!(m.response_bytes(), 105);
        {
            let _hold = m.hold_long_poll();
            assert_eq!(m.long_polls_held(), 1);
        }
        assert_eq!(m.long_polls_held(), 0);
        assert_eq!(m.long_polls_total(), 1);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("raftmq_requests_total{request_code=\"10\",response_code=\"0\"} 2\n"));
        assert!(
            out.contains("raftmq_requests_total{request_code=\"10\",response_code=\"17\"} 1\n")
        );
        assert!(out.contains("# TYPE raftmq_long_poll_holds gauge\nraftmq_long_poll_holds 0\n"));
        assert!(out.contains("raftmq_long_poll_holds_total 1\n"));
        assert!(out.contains("raftmq_send_latency_seconds_count 0\n"));
    }
}
