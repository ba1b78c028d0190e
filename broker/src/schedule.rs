//! Scheduled delivery (FEATURES-SPEC.md §1–3): which messages wait and until when, and the
//! leader's scheduler that delivers them once due, through the log.
//!
//! - A send (or a consumer's send-back) with a delay level waits in `SCHEDULE_TOPIC_XXXX`
//!   (queue = level − 1); one with a timer property (`TIMER_DELAY_SEC`, `TIMER_DELAY_MS`,
//!   `TIMER_DELIVER_MS`, or Aliyun's `__STARTDELIVERTIME`) in `rmq_sys_wheel_timer`. Both keep
//!   their topic and queue in `REAL_TOPIC`/`REAL_QID`, and the due time the leader decided in
//!   `TIMER_OUT_MS`, so every replica indexes them alike whatever its configuration
//!   (`store::timer`).
//! - The scheduler runs on the replica that takes writes. It reads the due units from the
//!   store's timer index in key order, re-stores each message in its real topic and queue, and
//!   proposes them with the progress they move in one `Deliveries` entry, which applies only on
//!   the progress it started from: a new leader continues where the entry that committed last
//!   left off, and nothing is delivered twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dledger::Disk;
use protocol::code::response;
use protocol::message::{Properties, StoredMessage, property, system_topic};
use remoting::Transport;
use store::entry::{self, DeliveryHeader};
use store::timer::{SLOT_MS, TimerKey, TimerUnit, slot_of};

use crate::Shared;
use crate::limits::{
    DELAY_LEVELS_MAX, DELIVERY_COMMIT_TIMEOUT, DELIVERY_RECORDS_MAX, SCHEDULER_TICK,
};

/// RocketMQ's default `messageDelayLevel`: levels 1 to 18.
pub const DELAY_LEVELS_DEFAULT: &str = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h";

/// RocketMQ's default `timerMaxDelaySec`: 3 days.
pub const TIMER_MAX_DELAY_DEFAULT: Duration = Duration::from_secs(3 * 24 * 3600);

/// The delay of each level (`messageDelayLevel`): level `n` waits `delays_ms[n - 1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayLevels {
    delays_ms: Vec<i64>,
}

impl Default for DelayLevels {
    fn default() -> Self {
        DelayLevels::parse(DELAY_LEVELS_DEFAULT).expect("the default levels parse")
    }
}

impl DelayLevels {
    /// Reads RocketMQ's format: delays separated by spaces, each a whole count and a unit
    /// (`s`, `m`, `h`, `d`).
    ///
    /// # Errors
    /// What is wrong, naming the token.
    pub fn parse(text: &str) -> Result<DelayLevels, String> {
        let mut delays_ms = Vec::new();
        for token in text.split_whitespace() {
            let Some(unit) = token.chars().last() else {
                continue;
            };
            let unit_ms: i64 = match unit {
                's' => 1_000,
                'm' => 60_000,
                'h' => 3_600_000,
                'd' => 86_400_000,
                _ => {
                    return Err(format!(
                        "delay `{token}` has no unit: a whole number then s, m, h or d"
                    ));
                }
            };
            let count: i64 = token[..token.len() - 1]
                .parse()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    format!("delay `{token}`: expected a whole number before `{unit}`")
                })?;
            let delay = count
                .checked_mul(unit_ms)
                .filter(|ms| *ms <= 365 * 86_400_000)
                .ok_or_else(|| format!("delay `{token}` is longer than a year"))?;
            delays_ms.push(delay);
        }
        if delays_ms.is_empty() {
            return Err("no delay levels: e.g. \"1s 5s 10s 30s 1m\"".into());
        }
        if delays_ms.len() > DELAY_LEVELS_MAX {
            return Err(format!(
                "{} delay levels, at most {DELAY_LEVELS_MAX}",
                delays_ms.len()
            ));
        }
        Ok(DelayLevels { delays_ms })
    }

    /// The highest level.
    pub fn max_level(&self) -> i32 {
        self.delays_ms.len() as i32
    }

    /// The level a message asking for `level` (at least 1) gets: the highest one past it.
    pub fn clamp(&self, level: i32) -> i32 {
        level.clamp(1, self.max_level())
    }

    /// The delay of `level`, clamped.
    pub fn delay_ms(&self, level: i32) -> i64 {
        self.delays_ms[(self.clamp(level) - 1) as usize]
    }
}

/// When a message being stored is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// At once: it is stored in its own topic.
    Now,
    /// At delay level `level` (already clamped), due at `due_ms`: it waits in
    /// `SCHEDULE_TOPIC_XXXX`.
    Level {
        /// The level.
        level: i32,
        /// Epoch ms.
        due_ms: i64,
    },
    /// A timer message due at `due_ms`: it waits in `rmq_sys_wheel_timer`.
    Timer {
        /// Epoch ms.
        due_ms: i64,
    },
}

/// Why a message cannot be scheduled: the response code and the remark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotScheduled {
    /// Response code.
    pub code: i32,
    /// What is wrong.
    pub remark: String,
}

fn illegal(remark: String) -> NotScheduled {
    NotScheduled {
        code: response::MESSAGE_ILLEGAL,
        remark,
    }
}

/// What scheduling needs of the broker's settings.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// `messageDelayLevel`.
    pub levels: DelayLevels,
    /// `timerWheelEnable`: timer messages are taken.
    pub timer_enabled: bool,
    /// `timerMaxDelaySec`: the furthest a timer message may be due.
    pub timer_max_delay: Duration,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            levels: DelayLevels::default(),
            timer_enabled: true,
            timer_max_delay: TIMER_MAX_DELAY_DEFAULT,
        }
    }
}

/// Decides when a message with `properties`, arriving at `now_ms`, is delivered, as RocketMQ's
/// put hooks do (FEATURES-SPEC.md §1.3, §2.3): a positive `DELAY` wins (a level past the
/// highest is the highest; zero or negative means none); a message already carrying
/// `TIMER_OUT_MS` is stored as it is; then `TIMER_DELAY_SEC`, `TIMER_DELAY_MS`,
/// `TIMER_DELIVER_MS` and `__STARTDELIVERTIME`, the first present. A due time not after now is
/// "now" (a negative delay too).
///
/// # Errors
/// `MESSAGE_ILLEGAL` for a value that is not a whole number, a due time further than
/// `timerMaxDelaySec` or out of range, and a cancel marker due now; `SYSTEM_ERROR` for a
/// timer message while `timerWheelEnable` is off.
pub fn when(
    properties: &Properties,
    now_ms: i64,
    config: &ScheduleConfig,
) -> Result<When, NotScheduled> {
    if let Some(text) = properties.get(property::DELAY) {
        let level: i64 = text.trim().parse().map_err(|_| {
            illegal(format!(
                "the delay level DELAY={text:?} is not a whole number"
            ))
        })?;
        if level > 0 {
            let level = config
                .levels
                .clamp(i32::try_from(level).unwrap_or(i32::MAX));
            return Ok(When::Level {
                level,
                due_ms: now_ms + config.levels.delay_ms(level),
            });
        }
    }
    if properties.get(property::TIMER_OUT_MS).is_some() {
        return Ok(When::Now);
    }
    let asked = [
        (property::TIMER_DELAY_SEC, 1000),
        (property::TIMER_DELAY_MS, 1),
        (property::TIMER_DELIVER_MS, 0),
        (property::START_DELIVER_TIME, 0),
    ]
    .into_iter()
    .find_map(|(key, scale)| properties.get(key).map(|text| (key, scale, text)));
    let Some((key, scale, text)) = asked else {
        return Ok(When::Now);
    };
    if !config.timer_enabled {
        return Err(NotScheduled {
            code: response::SYSTEM_ERROR,
            remark: format!("timer messages are off (timerWheelEnable=false): {key} refused"),
        });
    }
    let value: i64 = text.trim().parse().map_err(|_| {
        illegal(format!(
            "the timer property {key}={text:?} is not a whole number"
        ))
    })?;
    let due_ms = if scale == 0 {
        Some(value)
    } else {
        value
            .checked_mul(scale)
            .and_then(|delay| now_ms.checked_add(delay))
    }
    .ok_or_else(|| illegal(format!("the timer property {key}={text} is out of range")))?;
    if due_ms <= now_ms {
        if properties.get(property::TIMER_DEL_UNIQKEY).is_some() {
            return Err(illegal(format!(
                "a cancel marker ({}) must be due later than now; {key}={text} is not",
                property::TIMER_DEL_UNIQKEY
            )));
        }
        return Ok(When::Now);
    }
    let max_ms = i64::try_from(config.timer_max_delay.as_millis()).unwrap_or(i64::MAX);
    if due_ms - now_ms > max_ms {
        return Err(illegal(format!(
            "the timer property {key}={text} is due {} s from now, beyond timerMaxDelaySec ({} s)",
            (due_ms - now_ms) / 1000,
            config.timer_max_delay.as_secs()
        )));
    }
    Ok(When::Timer { due_ms })
}

/// Makes `record` wait as `when` says: its topic and queue go to `REAL_TOPIC`/`REAL_QID`, its
/// due time to `TIMER_OUT_MS`, and it moves to the scheduled topic and queue. A level message
/// loses its timer properties (the level wins) and carries the clamped level.
pub fn make_wait(record: &mut StoredMessage, when: When) {
    let (topic, queue_id, due_ms) = match when {
        When::Now => return,
        When::Level { level, due_ms } => {
            for key in [
                property::TIMER_DELIVER_MS,
                property::TIMER_DELAY_SEC,
                property::TIMER_DELAY_MS,
            ] {
                record.properties.remove(key);
            }
            record.properties.set(property::DELAY, level.to_string());
            (system_topic::SCHEDULE, level - 1, due_ms)
        }
        When::Timer { due_ms } => (system_topic::TIMER, 0, due_ms),
    };
    let real_topic = std::mem::replace(&mut record.topic, topic.to_string());
    record.properties.set(property::REAL_TOPIC, real_topic);
    record
        .properties
        .set(property::REAL_QID, record.queue_id.to_string());
    record
        .properties
        .set(property::TIMER_OUT_MS, due_ms.to_string());
    record.queue_id = queue_id;
}

/// The message a due scheduled record delivers, stored now at `now_ms` by `store_host`: its
/// real topic and queue, its body, flags, born fields and reconsume count; `DELAY` removed (a
/// level message loses the `TIMER_OUT_MS` it waited with too), a timer message gains
/// `TIMER_ENQUEUE_MS` and `TIMER_DEQUEUE_MS`; `UNIQ_KEY`, the id clients see, is the same.
/// `None` for a record without a readable real topic and queue.
pub fn delivered(
    waiting: StoredMessage,
    now_ms: i64,
    store_host: std::net::SocketAddr,
) -> Option<StoredMessage> {
    let real_topic = waiting.properties.get(property::REAL_TOPIC)?.to_string();
    let real_queue: i32 = waiting
        .properties
        .get(property::REAL_QID)?
        .parse()
        .ok()
        .filter(|q| *q >= 0)?;
    protocol::names::check_topic(&real_topic).ok()?;
    if system_topic::is_scheduled(&real_topic) {
        return None;
    }
    let mut properties = waiting.properties;
    if waiting.topic == system_topic::SCHEDULE {
        properties.remove(property::DELAY);
        properties.remove(property::TIMER_OUT_MS);
    } else {
        properties.set(
            property::TIMER_ENQUEUE_MS,
            waiting.store_timestamp.to_string(),
        );
        properties.set(property::TIMER_DEQUEUE_MS, now_ms.to_string());
    }
    Some(StoredMessage {
        topic: real_topic,
        queue_id: real_queue,
        queue_offset: 0,
        commit_log_offset: 0,
        store_timestamp: now_ms,
        store_host,
        properties,
        ..waiting
    })
}

/// The key a timer message answers to, which a cancel marker names in `TIMER_DEL_UNIQKEY`:
/// `<real topic>+<UNIQ_KEY>`.
fn cancel_key(record: &StoredMessage) -> Option<String> {
    Some(format!(
        "{}+{}",
        record.properties.get(property::REAL_TOPIC)?,
        record.properties.get(property::UNIQ_KEY)?
    ))
}

/// What the leader's scheduler reports, for `/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SchedulerReport {
    /// When the next pending message is due (epoch ms), as the scheduler last saw.
    pub next_due_ms: Option<i64>,
    /// How far behind delivery is: now − the due time of the oldest due message not yet
    /// delivered, 0 when none is due.
    pub lag_ms: i64,
}

/// The units of one slot the scheduler has read, sorted by key.
#[derive(Debug, Default)]
struct CachedSlot {
    /// Units of the slot with a `seq` below this are read.
    read_below: u64,
    /// Units read and not yet delivered, by key.
    units: BTreeMap<TimerKey, TimerUnit>,
    /// The `<topic>+<UNIQ_KEY>` keys the slot's cancel markers name.
    cancels: BTreeSet<String>,
}

/// The slots due by now, read from the store's timer index, minus what has been delivered.
#[derive(Debug, Default)]
struct SlotCache {
    slots: BTreeMap<i64, CachedSlot>,
}

/// What one round of the scheduler did.
enum Round {
    /// Delivered (or dropped) what was due, or found the progress moved under it.
    Covered,
    /// Nothing is due; the next unit falls due then, if any is known.
    Idle(Option<i64>),
}

/// Runs the scheduler while this replica takes writes, for as long as the broker runs.
pub(crate) async fn run<D: Disk, T: Transport>(shared: Arc<Shared<D, T>>) {
    loop {
        if !shared.takes_writes() {
            tokio::time::sleep(SCHEDULER_TICK).await;
            continue;
        }
        let mut cache = SlotCache::default();
        while shared.takes_writes() {
            match round(&shared, &mut cache).await {
                Ok(Round::Covered) => {}
                Ok(Round::Idle(next_due)) => {
                    let now = shared.config.clock.now_ms();
                    let wait = next_due.map_or(SCHEDULER_TICK, |due| {
                        Duration::from_millis(due.saturating_sub(now).max(1) as u64)
                            .min(SCHEDULER_TICK)
                    });
                    tokio::time::sleep(wait).await;
                }
                Err(reason) => {
                    tracing::warn!(%reason, "scheduled delivery failed; trying again");
                    cache = SlotCache::default();
                    tokio::time::sleep(SCHEDULER_TICK).await;
                }
            }
        }
        *shared.scheduler.lock().expect("scheduler report") = SchedulerReport::default();
    }
}

/// Finds what is due, delivers up to one entry of it, and waits until that entry applied.
async fn round<D: Disk, T: Transport>(
    shared: &Shared<D, T>,
    cache: &mut SlotCache,
) -> Result<Round, String> {
    let store = &shared.store;
    let now = shared.config.clock.now_ms();
    let progress = store.timer_progress();
    let first_slot = slot_of(progress.due_ms.max(0));
    #[cfg(feature = "mutants")]
    let due_by = now + shared.config.mutants.deliver_early_ms;
    #[cfg(not(feature = "mutants"))]
    let due_by = now;
    let view = store.timer_view(first_slot, slot_of(due_by));
    if view.progress != progress {
        return Ok(Round::Covered);
    }
    // Forget what is delivered, then read what the slots gained since.
    cache.slots.retain(|slot, _| *slot >= first_slot);
    for cached in cache.slots.values_mut() {
        cached.units = cached.units.split_off(&TimerKey {
            due_ms: progress.due_ms,
            seq: progress.seq.saturating_add(1),
        });
    }
    for (slot, last) in &view.slots {
        let cached = cache.slots.entry(*slot).or_default();
        if *last < cached.read_below {
            continue;
        }
        let units = store
            .timer_walk(*last, cached.read_below)
            .map_err(|e| format!("reading the timer log: {e}"))?;
        for (seq, unit) in units {
            if unit.cancel
                && let Some(marker) = read_waiting(shared, &unit)
                && let Some(target) = marker.properties.get(property::TIMER_DEL_UNIQKEY)
            {
                cached.cancels.insert(target.to_string());
            }
            let key = TimerKey {
                due_ms: unit.due_ms,
                seq,
            };
            if key > progress {
                cached.units.insert(key, unit);
            }
        }
        cached.read_below = last + 1;
    }
    // The due units, in key order, within one entry's bounds.
    let mut due: Vec<(i64, TimerKey, TimerUnit)> = Vec::new();
    let mut bytes = 0usize;
    'slots: for (slot, cached) in &cache.slots {
        for (key, unit) in &cached.units {
            if key.due_ms > due_by || key.seq >= view.seen {
                break 'slots;
            }
            if due.len() >= DELIVERY_RECORDS_MAX
                || (!due.is_empty() && bytes + unit.size as usize > shared.config.batch_bytes_max)
            {
                break 'slots;
            }
            bytes += unit.size as usize;
            due.push((*slot, *key, *unit));
        }
    }
    let next_known = cache
        .slots
        .values()
        .flat_map(|c| c.units.keys().next())
        .map(|k| k.due_ms)
        .min();
    let next_due = match (next_known, view.next_slot) {
        (Some(a), Some(b)) => Some(a.min(b * SLOT_MS)),
        (a, b) => a.or(b.map(|s| s * SLOT_MS)),
    };
    let lag_ms = due.first().map_or(0, |(_, key, _)| now - key.due_ms);
    *shared.scheduler.lock().expect("scheduler report") = SchedulerReport {
        next_due_ms: next_due,
        lag_ms,
    };
    let Some(&(_, last_key, _)) = due.last() else {
        return Ok(Round::Idle(next_due));
    };
    // Re-store each due message in its real topic; cancel markers, cancelled messages and
    // records that cannot be read are covered without a delivery.
    let mut records = Vec::with_capacity(bytes);
    let mut due_times = Vec::with_capacity(due.len());
    for (slot, key, unit) in &due {
        if unit.cancel {
            continue;
        }
        let Some(waiting) = read_due(shared, key.seq, unit) else {
            tracing::warn!(
                commit_log_offset = unit.commit_log_offset,
                "scheduled message unreadable: dropped"
            );
            continue;
        };
        let cancelled = cache
            .slots
            .get(slot)
            .is_some_and(|c| cancel_key(&waiting).is_some_and(|k| c.cancels.contains(&k)));
        if cancelled {
            shared
                .metrics
                .scheduled_cancelled
                .fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let due_ms = waiting
            .properties
            .get(property::TIMER_OUT_MS)
            .and_then(|d| d.parse::<i64>().ok())
            .unwrap_or(unit.due_ms);
        let Some(message) = delivered(waiting, now, shared.config.advertised_addr) else {
            tracing::warn!(
                commit_log_offset = unit.commit_log_offset,
                "scheduled message without a valid REAL_TOPIC/REAL_QID: dropped"
            );
            continue;
        };
        message
            .encode(&mut records)
            .map_err(|e| format!("re-encoding a due message: {}", e.reason))?;
        due_times.push(due_ms);
    }
    let header = DeliveryHeader {
        expected: progress,
        new: last_key,
        seen: view.seen,
        covered: due.len() as u64,
    };
    let body = bytes::Bytes::from(entry::deliveries(&header, &records));
    let committed = tokio::time::timeout(DELIVERY_COMMIT_TIMEOUT, shared.ledger.propose(body))
        .await
        .map_err(|_| "the deliveries entry did not commit in time".to_string())?
        .map_err(|e| format!("the deliveries entry was not committed: {e}"))?;
    store.wait_applied(committed.index).await;
    if store.timer_progress() < last_key {
        return Err("the deliveries entry applied on another progress".into());
    }
    let applied_at = shared.config.clock.now_ms();
    for due_ms in &due_times {
        shared
            .metrics
            .scheduled_lateness
            .observe(Duration::from_millis(
                applied_at.saturating_sub(*due_ms).max(0) as u64,
            ));
    }
    shared
        .metrics
        .scheduled_delivered
        .fetch_add(due_times.len() as u64, Ordering::Relaxed);
    Ok(Round::Covered)
}

/// The scheduled record a unit points at, decoded; `None` if it cannot be read (retention
/// removed it, or it fails its checks).
/// How many more times a due unit and its record are read before the message is dropped as
/// unreadable: a failed read may be a transient fault of the unit (a flipped bit in its offset)
/// or of the record, and a message is dropped only when its bytes are really gone (retention
/// forced a cut past it).
const UNREADABLE_RETRIES: usize = 3;

/// The due unit `seq`'s message: read as cached, then, if that fails, unit and record read
/// afresh a few times.
fn read_due<D: Disk, T: Transport>(
    shared: &Shared<D, T>,
    seq: u64,
    unit: &TimerUnit,
) -> Option<StoredMessage> {
    if let Some(message) = read_waiting(shared, unit) {
        return Some(message);
    }
    for _ in 0..UNREADABLE_RETRIES {
        let fresh = shared
            .store
            .timer_walk(seq, seq)
            .ok()
            .and_then(|units| units.into_iter().next())
            .map(|(_, unit)| unit);
        if let Some(message) = fresh.and_then(|unit| read_waiting(shared, &unit)) {
            return Some(message);
        }
    }
    None
}

fn read_waiting<D: Disk, T: Transport>(
    shared: &Shared<D, T>,
    unit: &TimerUnit,
) -> Option<StoredMessage> {
    let bytes = shared
        .read_record(unit.commit_log_offset, Some(unit.size))
        .ok()?;
    StoredMessage::decode(&bytes).ok().map(|(m, _)| m)
}

#[cfg(test)]
mod tests {
    use proptest::strategy::Strategy as _;

    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn props(pairs: &[(&str, &str)]) -> Properties {
        let mut p = Properties::default();
        for (k, v) in pairs {
            p.set(k, *v);
        }
        p
    }

    #[test]
    fn delay_levels_parse_rocketmqs_format_and_name_bad_tokens() {
        let levels = DelayLevels::default();
        assert_eq!(levels.max_level(), 18);
        assert_eq!(levels.delay_ms(1), 1_000);
        assert_eq!(levels.delay_ms(2), 5_000);
        assert_eq!(levels.delay_ms(5), 60_000);
        assert_eq!(levels.delay_ms(18), 7_200_000);
        assert_eq!(
            levels.delay_ms(25),
            7_200_000,
            "past the highest is the highest"
        );
        assert_eq!(DelayLevels::parse("2s 1d").unwrap().delay_ms(2), 86_400_000);
        for (bad, says) in [
            ("", "no delay levels"),
            ("1s 5x", "`5x` has no unit"),
            ("1s -5s", "`-5s`: expected a whole number"),
            ("s", "`s`: expected a whole number"),
            ("999999999999999d", "longer than a year"),
        ] {
            let err = DelayLevels::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn when_follows_rocketmqs_put_hooks() {
        let config = ScheduleConfig::default();
        let at = |pairs: &[(&str, &str)]| when(&props(pairs), NOW, &config);
        assert_eq!(at(&[]), Ok(When::Now));
        assert_eq!(
            at(&[("DELAY", "2")]),
            Ok(When::Level {
                level: 2,
                due_ms: NOW + 5_000
            })
        );
        assert_eq!(
            at(&[("DELAY", "99"), ("TIMER_DELAY_SEC", "5")]),
            Ok(When::Level {
                level: 18,
                due_ms: NOW + 7_200_000
            }),
            "the level wins, clamped"
        );
        assert_eq!(at(&[("DELAY", "0")]), Ok(When::Now));
        assert_eq!(at(&[("DELAY", "-3")]), Ok(When::Now));
        assert_eq!(
            at(&[("DELAY", "-3"), ("TIMER_DELAY_MS", "1500")]),
            Ok(When::Timer { due_ms: NOW + 1500 })
        );
        assert_eq!(
            at(&[("TIMER_DELAY_SEC", "3"), ("TIMER_DELIVER_MS", "1")]),
            Ok(When::Timer { due_ms: NOW + 3000 }),
            "seconds first"
        );
        assert_eq!(
            at(&[("TIMER_DELIVER_MS", &(NOW + 42).to_string())]),
            Ok(When::Timer { due_ms: NOW + 42 })
        );
        assert_eq!(
            at(&[("__STARTDELIVERTIME", &(NOW + 5000).to_string())]),
            Ok(When::Timer { due_ms: NOW + 5000 })
        );
        assert_eq!(at(&[("TIMER_DELAY_SEC", "-5")]), Ok(When::Now), "past: now");
        assert_eq!(
            at(&[("TIMER_OUT_MS", "5"), ("TIMER_DELAY_SEC", "9")]),
            Ok(When::Now),
            "already scheduled once"
        );
        for (pairs, says) in [
            (
                vec![("DELAY", "two")],
                "DELAY=\"two\" is not a whole number",
            ),
            (
                vec![("TIMER_DELAY_SEC", "1e3")],
                "TIMER_DELAY_SEC=\"1e3\" is not a whole number",
            ),
            (
                vec![("TIMER_DELAY_SEC", "9223372036854775807")],
                "out of range",
            ),
            (
                vec![("TIMER_DELAY_SEC", "259201")],
                "beyond timerMaxDelaySec (259200 s)",
            ),
            (
                vec![("TIMER_DELIVER_MS", "1"), ("TIMER_DEL_UNIQKEY", "T+u")],
                "must be due later than now",
            ),
        ] {
            let err = at(&pairs).unwrap_err();
            assert_eq!(err.code, response::MESSAGE_ILLEGAL, "{pairs:?}");
            assert!(err.remark.contains(says), "{pairs:?}: {}", err.remark);
        }
        let off = ScheduleConfig {
            timer_enabled: false,
            ..ScheduleConfig::default()
        };
        let err = when(&props(&[("TIMER_DELAY_MS", "10")]), NOW, &off).unwrap_err();
        assert_eq!(err.code, response::SYSTEM_ERROR);
        assert!(err.remark.contains("timerWheelEnable"));
        assert_eq!(
            when(&props(&[("DELAY", "1")]), NOW, &off),
            Ok(When::Level {
                level: 1,
                due_ms: NOW + 1000
            }),
            "levels do not need the timer"
        );
    }

    fn message(topic: &str, queue_id: i32, pairs: &[(&str, &str)]) -> StoredMessage {
        StoredMessage {
            topic: topic.into(),
            queue_id,
            flag: 7,
            queue_offset: 0,
            commit_log_offset: 0,
            sys_flag: 0,
            born_timestamp: NOW - 10,
            born_host: "127.0.0.1:1".parse().unwrap(),
            store_timestamp: NOW,
            store_host: "127.0.0.1:2".parse().unwrap(),
            reconsume_times: 2,
            prepared_transaction_offset: 0,
            body: bytes::Bytes::from_static(b"body"),
            properties: props(pairs),
        }
    }

    /// A level message waits in its level's queue and comes back to its topic and queue with
    /// `DELAY` and its due time gone and its `UNIQ_KEY` kept; a timer message waits in the timer
    /// topic and comes back with the times it entered and left.
    #[test]
    fn waiting_and_delivered_records_carry_rocketmqs_properties() {
        let mut level = message("T", 3, &[("UNIQ_KEY", "u1"), ("DELAY", "99")]);
        make_wait(
            &mut level,
            When::Level {
                level: 18,
                due_ms: NOW + 5,
            },
        );
        assert_eq!(
            (level.topic.as_str(), level.queue_id),
            ("SCHEDULE_TOPIC_XXXX", 17)
        );
        assert_eq!(level.properties.get("DELAY"), Some("18"));
        assert_eq!(level.properties.get("REAL_TOPIC"), Some("T"));
        assert_eq!(level.properties.get("REAL_QID"), Some("3"));
        assert_eq!(
            level.properties.get("TIMER_OUT_MS"),
            Some((NOW + 5).to_string().as_str())
        );
        let back = delivered(level, NOW + 9, "127.0.0.1:3".parse().unwrap()).unwrap();
        assert_eq!((back.topic.as_str(), back.queue_id), ("T", 3));
        assert_eq!(back.properties.get("DELAY"), None);
        assert_eq!(back.properties.get("TIMER_OUT_MS"), None);
        assert_eq!(back.properties.get("UNIQ_KEY"), Some("u1"));
        assert_eq!(
            (back.flag, back.reconsume_times, back.store_timestamp),
            (7, 2, NOW + 9)
        );

        let mut timer = message("T", 1, &[("UNIQ_KEY", "u2"), ("TIMER_DELAY_SEC", "5")]);
        make_wait(&mut timer, When::Timer { due_ms: NOW + 5000 });
        assert_eq!(
            (timer.topic.as_str(), timer.queue_id),
            ("rmq_sys_wheel_timer", 0)
        );
        assert_eq!(cancel_key(&timer).as_deref(), Some("T+u2"));
        let back = delivered(timer, NOW + 5001, "127.0.0.1:3".parse().unwrap()).unwrap();
        assert_eq!((back.topic.as_str(), back.queue_id), ("T", 1));
        assert_eq!(
            back.properties.get("TIMER_ENQUEUE_MS"),
            Some(NOW.to_string().as_str())
        );
        assert_eq!(
            back.properties.get("TIMER_DEQUEUE_MS"),
            Some((NOW + 5001).to_string().as_str())
        );
        let orphan = message("SCHEDULE_TOPIC_XXXX", 0, &[("REAL_QID", "1")]);
        assert!(delivered(orphan, NOW, "127.0.0.1:3".parse().unwrap()).is_none());
    }

    proptest::proptest! {
        /// Whatever a producer writes into the schedule properties, deciding never panics, and
        /// a message it schedules is due after now and within the timer's reach.
        #[test]
        fn any_schedule_property_is_decided_without_panic(
            key in proptest::sample::select(vec![
                "DELAY", "TIMER_DELAY_SEC", "TIMER_DELAY_MS", "TIMER_DELIVER_MS",
                "__STARTDELIVERTIME", "TIMER_OUT_MS", "TIMER_DEL_UNIQKEY",
            ]),
            value in proptest::prop_oneof![
                proptest::num::i64::ANY.prop_map(|n| n.to_string()),
                "[-+0-9a-z. ]{0,24}",
            ],
            now in 0i64..4_000_000_000_000,
        ) {
            let config = ScheduleConfig::default();
            match when(&props(&[(key, value.as_str())]), now, &config) {
                Ok(When::Level { level, due_ms }) => {
                    proptest::prop_assert!((1..=18).contains(&level));
                    proptest::prop_assert!(due_ms > now);
                }
                Ok(When::Timer { due_ms }) => {
                    proptest::prop_assert!(due_ms > now);
                    proptest::prop_assert!(due_ms - now <= 259_200_000);
                }
                Ok(When::Now) => {}
                Err(refused) => proptest::prop_assert!(!refused.remark.is_empty()),
            }
        }
    }
}
