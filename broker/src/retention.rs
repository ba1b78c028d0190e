//! Retention and full disks (FEATURES-SPEC.md §6): the cleaner that decides which CommitLog
//! segments go, and the disk-full flag that refuses sends.
//!
//! Every replica runs the cleaner every `cleanResourceInterval`: it reads how full its disk is
//! and keeps its own disk-full flag (set above `diskSpaceWarningLevelRatio`, cleared at or below
//! `diskSpaceCleanForciblyRatio`: RocketMQ's hysteresis). Only the replica serving writes
//! decides a cut: it walks the segments from the oldest, as RocketMQ's `CleanCommitLogService`
//! does, and proposes one `Purge` entry naming the first segment start it keeps. Every replica
//! applies it the same way (see `store::store` "Retention"), so all expose the same min offsets
//! and purge the same prefix, and dledger then purges its log up to that point.
//!
//! A segment is deletable when it expired (its last message was stored `fileReservedTime` ago)
//! and it is the hour (`deleteWhen`), or the disk is past `diskMaxUsedSpaceRatio`, or an admin
//! asked (`DELETE_EXPIRED_COMMITLOG` arms 20 runs); above `diskSpaceCleanForciblyRatio` (with
//! `cleanFileForciblyEnable`) age does not matter. The first segment that may not go stops the
//! walk, the active segment never goes, and at most `deleteFileBatchMax` go per run. Scheduled
//! messages not yet delivered keep their segments unless the disk forces the cut (those are
//! then dropped when due, as unreadable).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dledger::Disk;
use remoting::Transport;

use crate::Shared;

/// How full a disk is, as a fraction in 0..=1: the seam between the cleaner and the machine.
pub trait DiskUsage: Send + Sync + 'static {
    /// The used fraction of the partition holding the store, `None` if it cannot be read.
    fn used_ratio(&self) -> Option<f64>;
}

/// A disk that never fills (the default: tests and the simulation set their own).
#[derive(Debug, Clone, Copy, Default)]
pub struct NeverFull;

impl DiskUsage for NeverFull {
    fn used_ratio(&self) -> Option<f64> {
        Some(0.0)
    }
}

/// The hours of the day (UTC) in which expired files are deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteWhen {
    /// `*`: every hour.
    EveryHour,
    /// Hours 0..=23, from `deleteWhen=04;16`.
    Hours(std::collections::BTreeSet<u8>),
}

impl DeleteWhen {
    /// Parses `deleteWhen`: `*`, or hours `0`..`23` separated by `;`.
    ///
    /// # Errors
    /// A piece that is not an hour, named.
    pub fn parse(value: &str) -> Result<DeleteWhen, String> {
        let value = value.trim();
        if value == "*" {
            return Ok(DeleteWhen::EveryHour);
        }
        let mut hours = std::collections::BTreeSet::new();
        for piece in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let hour: u8 = piece
                .parse()
                .ok()
                .filter(|h| *h < 24)
                .ok_or_else(|| format!("{piece:?} is not an hour of the day (0..23)"))?;
            hours.insert(hour);
        }
        if hours.is_empty() {
            return Err(format!("{value:?} names no hour (use `*` for every hour)"));
        }
        Ok(DeleteWhen::Hours(hours))
    }

    /// Whether `hour` (0..=23) is one of them.
    pub fn contains(&self, hour: u8) -> bool {
        match self {
            DeleteWhen::EveryHour => true,
            DeleteWhen::Hours(hours) => hours.contains(&hour),
        }
    }
}

/// Retention's settings (broker.conf keys in brackets, RocketMQ's defaults).
#[derive(Clone)]
pub struct RetentionConfig {
    /// How long a CommitLog segment is kept after its last message [`fileReservedTime`, 72 h;
    /// raftmq's `fileReservedTimeSecs` overrides it].
    pub file_reserved: Duration,
    /// When expired segments go [`deleteWhen`, `04`].
    pub delete_when: DeleteWhen,
    /// Above it, expired segments go at any hour [`diskMaxUsedSpaceRatio`, 75 %, 10..=95].
    pub disk_max_used_ratio: f64,
    /// Above it, the oldest segments go whatever their age [`diskSpaceCleanForciblyRatio`,
    /// 0.85, 0.30..=0.85]; at or below it, a full disk takes sends again.
    pub clean_forcibly_ratio: f64,
    /// Above it, the disk is full: sends are refused [`diskSpaceWarningLevelRatio`, 0.90,
    /// 0.35..=0.90].
    pub warning_ratio: f64,
    /// Period of the cleaner [`cleanResourceInterval`, 10 s].
    pub clean_interval: Duration,
    /// Whether a disk past `clean_forcibly_ratio` deletes unexpired segments
    /// [`cleanFileForciblyEnable`, true].
    pub clean_forcibly: bool,
    /// Segments deleted per run at most [`deleteFileBatchMax`, 10].
    pub delete_batch_max: usize,
    /// How full the disk is.
    pub disk_usage: Arc<dyn DiskUsage>,
}

impl std::fmt::Debug for RetentionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetentionConfig")
            .field("file_reserved", &self.file_reserved)
            .field("delete_when", &self.delete_when)
            .field("disk_max_used_ratio", &self.disk_max_used_ratio)
            .field("clean_forcibly_ratio", &self.clean_forcibly_ratio)
            .field("warning_ratio", &self.warning_ratio)
            .field("clean_interval", &self.clean_interval)
            .finish_non_exhaustive()
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            file_reserved: Duration::from_secs(72 * 3600),
            delete_when: DeleteWhen::Hours([4].into()),
            disk_max_used_ratio: 0.75,
            clean_forcibly_ratio: 0.85,
            warning_ratio: 0.90,
            clean_interval: Duration::from_secs(10),
            clean_forcibly: true,
            delete_batch_max: 10,
            disk_usage: Arc::new(NeverFull),
        }
    }
}

/// Clean runs a `DELETE_EXPIRED_COMMITLOG` arms (RocketMQ: 20).
pub const MANUAL_RUNS: u32 = 20;

/// What the cleaner keeps between runs, for status pages too.
#[derive(Debug, Clone, Default)]
pub struct RetentionState {
    /// The last usage read.
    pub used_ratio: Option<f64>,
    /// Clean runs still to delete expired segments at any hour.
    pub manual_runs: u32,
    /// Cuts this replica proposed.
    pub purges_proposed: u64,
}

/// What one clean run decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// The first position kept.
    pub first_position: u64,
    /// Segments it deletes.
    pub segments: usize,
    /// Whether the disk forced it past unexpired segments.
    pub forced: bool,
}

/// The inputs of one decision.
#[derive(Debug, Clone, Copy)]
pub struct Decide {
    /// Wall-clock now.
    pub now_ms: u64,
    /// Disk usage.
    pub used_ratio: f64,
    /// An admin asked.
    pub manual: bool,
}

/// Decides the cut over the store's retention view: `None` when nothing goes.
/// `first_pending` is asked only when a cut is found (it scans the timer log).
pub fn decide(
    config: &RetentionConfig,
    view: &store::RetentionView,
    input: Decide,
    first_pending: impl FnOnce() -> Option<u64>,
) -> Option<Cut> {
    let hour = ((input.now_ms / 3_600_000) % 24) as u8;
    let time_up = config.delete_when.contains(hour);
    let forced = config.clean_forcibly && input.used_ratio > config.clean_forcibly_ratio;
    let space = input.used_ratio > config.disk_max_used_ratio;
    let reserved_ms = config.file_reserved.as_millis() as u64;
    // Segment k runs from starts[k] to starts[k + 1]; the last start is the active segment.
    let mut starts: Vec<(u64, u64)> = Vec::new();
    if view.bases.first().is_none_or(|b| b.position > view.floor) {
        starts.push((view.floor, 0));
    }
    starts.extend(view.bases.iter().map(|b| (b.position, b.newest_store_ms)));
    let mut cut = None;
    for pair in starts.windows(2) {
        let (next_start, last_write_ms) = pair[1];
        let expired = input.now_ms >= last_write_ms.saturating_add(reserved_ms);
        let may = forced || (expired && (time_up || space || input.manual));
        if !may {
            break;
        }
        let segments = cut.map_or(0, |c: Cut| c.segments) + 1;
        cut = Some(Cut {
            first_position: next_start,
            segments,
            forced: forced && !expired,
        });
        if segments >= config.delete_batch_max {
            break;
        }
    }
    let mut cut = cut?;
    if !forced && let Some(pending) = first_pending() {
        // Keep the segments of scheduled records not yet delivered.
        let keep = starts
            .iter()
            .map(|(start, _)| *start)
            .filter(|start| *start <= pending && *start <= cut.first_position)
            .max()?;
        if keep <= view.floor {
            return None;
        }
        let dropped = starts
            .iter()
            .filter(|(start, _)| *start > keep && *start <= cut.first_position)
            .count();
        cut.first_position = keep;
        cut.segments -= dropped;
    }
    Some(cut)
}

/// The disk-full flag after a usage reading: set above the warning ratio, cleared at or below
/// the force-clean ratio, kept in between.
pub fn disk_full_after(config: &RetentionConfig, was_full: bool, used_ratio: f64) -> bool {
    if used_ratio > config.warning_ratio {
        true
    } else if used_ratio <= config.clean_forcibly_ratio {
        false
    } else {
        was_full
    }
}

/// The remark a send refused for a full disk carries (RocketMQ's words, usage fractions).
pub fn disk_full_remark(used_ratio: f64) -> String {
    format!(
        "service not available now. the broker's disk is full [CL: {used_ratio:5.2} CQ: {used_ratio:5.2} INDEX: {used_ratio:5.2}], messages are put to the slave, message store has been shut down, etc."
    )
}

/// How long the cleaner waits before its next run: `clean_interval`, or less when the oldest
/// closed segment expires sooner, so an expired segment goes when it expires rather than up to
/// an interval later (what the disk holds beyond the retained time stays within the one segment
/// that straddles its edge). A segment already expired but kept (not the deletion hour, a
/// scheduled record still in it) waits the interval, never a busy loop.
pub fn next_clean_in(
    config: &RetentionConfig,
    view: &store::RetentionView,
    now_ms: u64,
) -> Duration {
    let reserved_ms = config.file_reserved.as_millis() as u64;
    // The first closed segment's newest write is carried by the next segment's base.
    let oldest_closed = view.bases.iter().find(|b| b.position > view.floor);
    match oldest_closed.map(|b| b.newest_store_ms.saturating_add(reserved_ms)) {
        Some(expiry) if expiry > now_ms => config
            .clean_interval
            .min(Duration::from_millis(expiry - now_ms)),
        _ => config.clean_interval,
    }
}

/// The cleaner of a replica: runs every `clean_interval` (sooner when a segment expires
/// sooner, [`next_clean_in`]), or at once when an admin asks.
pub(crate) async fn run<D: Disk, T: Transport>(shared: Arc<Shared<D, T>>) {
    let config = shared.config.retention.clone();
    loop {
        let now_ms = shared.config.clock.now_ms().max(0) as u64;
        let wait = next_clean_in(&config, &shared.store.retention(), now_ms);
        tokio::select! {
            biased;
            () = shared.clean_now.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
        clean_once(&shared, &config).await;
    }
}

async fn clean_once<D: Disk, T: Transport>(shared: &Arc<Shared<D, T>>, config: &RetentionConfig) {
    let used = config.disk_usage.used_ratio();
    let used_ratio = used.unwrap_or(0.0);
    let was_full = shared.disk_full.load(Ordering::Acquire);
    let full = disk_full_after(config, was_full, used_ratio);
    if full != was_full {
        if full {
            tracing::warn!(
                used_ratio,
                warning = config.warning_ratio,
                "disk full: sends are refused"
            );
        } else {
            tracing::info!(used_ratio, "disk no longer full: sends are taken again");
        }
        shared.disk_full.store(full, Ordering::Release);
    }
    shared
        .metrics
        .disk_used_permille
        .store((used_ratio * 1000.0) as u64, Ordering::Relaxed);
    let manual = {
        let mut state = shared.retention.lock().expect("retention lock");
        state.used_ratio = used;
        let manual = state.manual_runs > 0;
        state.manual_runs = state.manual_runs.saturating_sub(1);
        manual
    };
    if !shared.serving_writes.load(Ordering::Acquire) {
        return;
    }
    let view = shared.store.retention();
    #[allow(unused_mut)]
    let mut input = Decide {
        now_ms: shared.config.clock.now_ms().max(0) as u64,
        used_ratio,
        manual,
    };
    #[cfg(feature = "mutants")]
    if shared.config.mutants.purge_unexpired {
        // A deliberate bug for the simulation: every segment looks ages old.
        input.now_ms = input
            .now_ms
            .saturating_add(config.file_reserved.as_millis() as u64);
    }
    let Some(cut) =
        decide(config, &view, input, || {
            shared.store.first_pending_timer_offset().unwrap_or_else(|err| {
            tracing::error!(cause = %err, "timer log unreadable: retention keeps everything");
            Some(0)
        })
        })
    else {
        return;
    };
    tracing::info!(?cut, used_ratio, manual, "retention: proposing a cut");
    let entry = bytes::Bytes::from(store::entry::purge(cut.first_position));
    match shared.ledger.propose(entry).await {
        Ok(committed) => {
            shared.store.wait_applied(committed.index).await;
            shared
                .retention
                .lock()
                .expect("retention lock")
                .purges_proposed += 1;
            shared
                .metrics
                .retention_segments_cut
                .fetch_add(cut.segments as u64, Ordering::Relaxed);
        }
        Err(err) => tracing::warn!(cause = %err, "retention cut not committed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dledger::LogId;
    use store::{BaseMark, RetentionView};

    const HOUR: u64 = 3_600_000;

    /// Segments starting at 0, 100, 200, 300 (active); the segment before start `p` was last
    /// written at `p` hours.
    fn view(floor: u64) -> RetentionView {
        RetentionView {
            floor,
            purged_through: None,
            bases: [100, 200, 300]
                .into_iter()
                .filter(|p| *p >= floor)
                .map(|p| BaseMark {
                    position: p,
                    last: LogId { term: 1, index: p },
                    newest_store_ms: p / 100 * HOUR,
                })
                .collect(),
            newest_store_ms: 3 * HOUR,
            floor_entry: None,
        }
    }

    fn config(reserved_hours: u64, delete_when: &str) -> RetentionConfig {
        RetentionConfig {
            file_reserved: Duration::from_secs(reserved_hours * 3600),
            delete_when: DeleteWhen::parse(delete_when).unwrap(),
            ..RetentionConfig::default()
        }
    }

    fn at(hours: u64, used_ratio: f64) -> Decide {
        Decide {
            now_ms: hours * HOUR,
            used_ratio,
            manual: false,
        }
    }

    /// The cleaner wakes when the oldest closed segment expires if that is sooner than its
    /// interval, else after the interval (also when the segment expired but was kept).
    #[test]
    fn the_cleaner_wakes_when_the_oldest_segment_expires() {
        let c = RetentionConfig {
            clean_interval: Duration::from_secs(10),
            ..config(2, "*")
        };
        // The segment before 100 was last written at 1 h: it expires at 3 h.
        let due = 3 * HOUR;
        assert_eq!(
            next_clean_in(&c, &view(0), due - 4_000),
            Duration::from_secs(4)
        );
        assert_eq!(
            next_clean_in(&c, &view(0), due - 60_000),
            Duration::from_secs(10),
            "further away than the interval"
        );
        assert_eq!(
            next_clean_in(&c, &view(0), due + 1),
            Duration::from_secs(10),
            "expired but kept: the interval, not a busy loop"
        );
        // After a cut to 100, the oldest closed segment is the one before 200 (written at 2 h).
        assert_eq!(
            next_clean_in(&c, &view(100), 4 * HOUR - 2_000),
            Duration::from_secs(2)
        );
        let only_active = RetentionView {
            bases: Vec::new(),
            ..view(300)
        };
        assert_eq!(next_clean_in(&c, &only_active, 0), Duration::from_secs(10));
    }

    /// Expired segments go only in a `deleteWhen` hour, oldest first, stopping at the first
    /// unexpired one; never the active one.
    #[test]
    fn expired_segments_go_in_the_configured_hour() {
        let c = config(2, "04");
        // At 04:00, segments last written at 1 h and 2 h are 2 h old or more; the one written
        // at 3 h is not.
        let cut = decide(&c, &view(0), at(4, 0.1), || None).unwrap();
        assert_eq!(cut.first_position, 200);
        assert_eq!(cut.segments, 2);
        assert_eq!(
            decide(&c, &view(0), at(5, 0.1), || None),
            None,
            "05 is not the hour"
        );
        assert_eq!(
            decide(&config(2, "*"), &view(0), at(5, 0.1), || None)
                .unwrap()
                .first_position,
            300,
            "every hour; the active segment stays"
        );
        let manual = Decide {
            manual: true,
            ..at(5, 0.1)
        };
        assert_eq!(
            decide(&c, &view(0), manual, || None)
                .unwrap()
                .first_position,
            300
        );
        assert_eq!(
            decide(&c, &view(100), at(4, 0.1), || None)
                .unwrap()
                .first_position,
            200,
            "from the floor on"
        );
    }

    /// Past the max ratio expired segments go at any hour; past the force ratio unexpired ones
    /// go too (unless forcing is off); at most `delete_batch_max` per run.
    #[test]
    fn a_fuller_disk_deletes_sooner() {
        let c = config(100, "04");
        assert_eq!(
            decide(&c, &view(0), at(5, 0.80), || None),
            None,
            "nothing expired"
        );
        let cut = decide(&c, &view(0), at(5, 0.86), || None).unwrap();
        assert_eq!((cut.first_position, cut.forced), (300, true));
        let off = RetentionConfig {
            clean_forcibly: false,
            ..config(100, "04")
        };
        assert_eq!(decide(&off, &view(0), at(5, 0.99), || None), None);
        let one = RetentionConfig {
            delete_batch_max: 1,
            ..config(100, "04")
        };
        assert_eq!(
            decide(&one, &view(0), at(5, 0.9), || None)
                .unwrap()
                .first_position,
            100
        );
        // Outside the hour, past the max ratio: the expired ones (last written at 1 h and 2 h;
        // not the one at 3 h) go.
        let c = config(2, "10");
        assert_eq!(
            decide(&c, &view(0), at(4, 0.76), || None)
                .unwrap()
                .first_position,
            200
        );
        assert_eq!(decide(&c, &view(0), at(4, 0.74), || None), None);
    }

    /// Undelivered scheduled records keep their segment unless the disk forces the cut.
    #[test]
    fn pending_scheduled_records_keep_their_segment() {
        let c = config(0, "*");
        assert_eq!(
            decide(&c, &view(0), at(5, 0.1), || Some(150))
                .unwrap()
                .first_position,
            100
        );
        assert_eq!(decide(&c, &view(0), at(5, 0.1), || Some(50)), None);
        assert_eq!(
            decide(&c, &view(0), at(5, 0.9), || Some(50))
                .unwrap()
                .first_position,
            300
        );
    }

    /// The disk-full flag is set above the warning ratio and cleared only at or below the
    /// force-clean ratio.
    #[test]
    fn disk_full_has_hysteresis() {
        let c = RetentionConfig::default();
        assert!(!disk_full_after(&c, false, 0.90));
        assert!(disk_full_after(&c, false, 0.91));
        assert!(disk_full_after(&c, true, 0.86), "stays full above 85 %");
        assert!(!disk_full_after(&c, true, 0.85));
        assert!(disk_full_remark(0.913).contains("the broker's disk is full [CL:  0.91"));
    }

    /// `deleteWhen` takes `*` and `;`-separated hours, and names a piece that is not an hour.
    #[test]
    fn delete_when_parses_hours() {
        assert_eq!(DeleteWhen::parse("*").unwrap(), DeleteWhen::EveryHour);
        assert!(DeleteWhen::parse("04;16").unwrap().contains(16));
        assert!(!DeleteWhen::parse("04;16").unwrap().contains(5));
        assert!(DeleteWhen::parse("24").unwrap_err().contains("\"24\""));
        assert!(DeleteWhen::parse("4;x").unwrap_err().contains("\"x\""));
        assert!(DeleteWhen::parse(";").is_err());
    }
}
