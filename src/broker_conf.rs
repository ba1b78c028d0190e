//! `raftmq broker -c FILE`: RocketMQ's `broker.conf` (Java properties) for DLedger mode, or a
//! TOML file with the same keys. Unknown keys warn; an invalid value stops start-up naming the
//! key and the value.
//!
//! Every key raftmq reads is declared once below ([`KEYS`]), with its name, default, parser and
//! meaning, after ripgrep's `crates/core/flags/defs.rs`: the parsing, the list of known keys and
//! the README's table ([`markdown_table`]; a test keeps the README equal to it) all come from
//! there.
//!
//! Node ids: DLedger names replicas `n0`, `n1`, …; raftmq's node id is the number plus one
//! (`n0` is node 1), so broker ids stay 0 for the leader and 1..n for followers.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use broker::BrokerConfig;
use broker::retention::{DeleteWhen, RetentionConfig};
use broker::schedule::{DelayLevels, ScheduleConfig};
use broker::transactions::TransactionConfig;
use dledger::{FlushPolicy, NodeId};

use crate::limits::{DEFAULT_TOPIC_QUEUES_MAX, MESSAGE_BYTES_MAX, REPLICAS_MAX};
use crate::replica::ReplicaSpec;

/// Keys RocketMQ's broker.conf may carry that raftmq accepts and does not use (they configure
/// what raftmq does differently or not at all). They are reported once at start, not refused.
pub const IGNORED_KEYS: &[&str] = &[
    "brokerId",
    "brokerRole",
    "storePathCommitLog",
    "storePathConsumeQueue",
    "storePathIndex",
    "storeCheckpoint",
    "abortFile",
    "mapedFileSizeConsumeQueue",
    "mappedFileSizeConsumeQueue",
    "sendMessageThreadPoolNums",
    "pullMessageThreadPoolNums",
    "useReentrantLockWhenPutMessage",
    "waitTimeMillsInSendQueue",
    "transientStorePoolEnable",
    "brokerIP2",
    "haListenPort",
    "dLegerStorePath",
    "enableControllerMode",
    "autoCreateSubscriptionGroup",
    "traceTopicEnable",
    "aclEnable",
];

/// What a key is when the file does not set it (or sets it empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Default {
    /// Start-up stops, saying what to put there.
    Required(&'static str),
    /// This value, read as if the file said it.
    Value(&'static str),
    /// Worked out from other settings, as described.
    Derived(&'static str),
    /// Nothing: what the key turns on stays off.
    Unset,
}

/// One key of broker.conf.
pub struct Key<T: 'static> {
    /// Its name, as RocketMQ spells it.
    pub name: &'static str,
    /// What it is when absent.
    pub default: Default,
    /// What it means (Markdown, one line).
    pub doc: &'static str,
    /// Reads a value; the error says what was expected.
    parse: fn(&str) -> Result<T, String>,
}

/// The settings as read from the file: trimmed values of known keys, later ones winning.
type Values = BTreeMap<String, String>;

impl<T> Key<T> {
    /// The value written for this key (empty counts as absent).
    fn text<'v>(&self, values: &'v Values) -> Option<&'v str> {
        values
            .get(self.name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The value, parsed, or its default; `None` for a key whose default is derived or unset.
    fn read(&self, values: &Values) -> Result<Option<T>, ConfError> {
        if let Some(text) = self.text(values) {
            return (self.parse)(text)
                .map(Some)
                .map_err(|expected| invalid(self.name, text, expected));
        }
        match self.default {
            Default::Value(text) => (self.parse)(text)
                .map(Some)
                .map_err(|expected| invalid(self.name, text, expected)),
            Default::Required(hint) => Err(ConfError::Missing {
                key: self.name,
                hint,
            }),
            Default::Derived(_) | Default::Unset => Ok(None),
        }
    }

    /// The value of a key that has one whenever start-up goes on (required, or with a default
    /// value).
    fn value(&self, values: &Values) -> Result<T, ConfError> {
        self.read(values)?.ok_or(ConfError::Missing {
            key: self.name,
            hint: "a value",
        })
    }
}

/// What the README's table shows of a key, whatever its type.
pub trait Documented: Sync {
    /// The key.
    fn name(&self) -> &'static str;
    /// Its default as the table shows it.
    fn default_text(&self) -> String;
    /// What it means.
    fn doc(&self) -> &'static str;
}

impl<T> Documented for Key<T> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn default_text(&self) -> String {
        match self.default {
            Default::Required(_) => "required".to_string(),
            Default::Value(text) => format!("`{text}`"),
            Default::Derived(text) => text.to_string(),
            Default::Unset => "none".to_string(),
        }
    }

    fn doc(&self) -> &'static str {
        self.doc
    }
}

/// A DLedger group's replicas from `dLegerPeers`: node id → (DLedger id, Raft address).
type Peers = BTreeMap<NodeId, (String, String)>;

/// How CommitLog appends reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlushKind {
    Sync,
    Async,
}

pub const BROKER_CLUSTER_NAME: Key<String> = Key {
    name: "brokerClusterName",
    default: Default::Value("DefaultCluster"),
    doc: "the cluster the group registers in",
    parse: any_text,
};
pub const BROKER_NAME: Key<String> = Key {
    name: "brokerName",
    default: Default::Required("the name of the replica group, e.g. broker-a"),
    doc: "the replica group",
    parse: any_text,
};
pub const NAMESRV_ADDR: Key<Vec<String>> = Key {
    name: "namesrvAddr",
    default: Default::Derived("`NAMESRV_ADDR` from the environment"),
    doc: "the name servers, `;`-separated",
    parse: host_port_list,
};
pub const LISTEN_PORT: Key<u16> = Key {
    name: "listenPort",
    default: Default::Value("10911"),
    doc: "clients' port",
    parse: port,
};
pub const BROKER_IP1: Key<IpAddr> = Key {
    name: "brokerIP1",
    default: Default::Derived("the host of this node in `dLegerPeers`"),
    doc: "the address advertised to clients",
    parse: ip,
};
pub const STORE_PATH_ROOT_DIR: Key<PathBuf> = Key {
    name: "storePathRootDir",
    default: Default::Derived("`$HOME/store`"),
    doc: "ConsumeQueues and IndexFiles; the CommitLog in `dledger-<selfId>/`",
    parse: path,
};
const FLUSH_DISK_TYPE: Key<FlushKind> = Key {
    name: "flushDiskType",
    default: Default::Value("SYNC_FLUSH"),
    doc: "`SYNC_FLUSH`: acknowledged once synced on a quorum; or `ASYNC_FLUSH`",
    parse: flush_kind,
};
pub const FLUSH_INTERVAL_COMMIT_LOG: Key<Duration> = Key {
    name: "flushIntervalCommitLog",
    default: Default::Value("500"),
    doc: "ms between syncs under `ASYNC_FLUSH`",
    parse: millis,
};
pub const ENABLE_DLEGER_COMMIT_LOG: Key<()> = Key {
    name: "enableDLegerCommitLog",
    default: Default::Required("raftmq runs RocketMQ's DLedger mode only: set it to true"),
    doc: "must be `true`: raftmq runs DLedger mode only",
    parse: must_be_true,
};
pub const DLEGER_GROUP: Key<String> = Key {
    name: "dLegerGroup",
    default: Default::Derived("`brokerName`"),
    doc: "must equal `brokerName`",
    parse: any_text,
};
const DLEGER_PEERS: Key<Peers> = Key {
    name: "dLegerPeers",
    default: Default::Required(
        "every replica's Raft address, e.g. n0-127.0.0.1:40911;n1-127.0.0.1:40912;n2-127.0.0.1:40913",
    ),
    doc: "`n0-host:port;n1-host:port;...`: every replica's Raft address",
    parse: peers,
};
pub const DLEGER_SELF_ID: Key<NodeId> = Key {
    name: "dLegerSelfId",
    default: Default::Required("this node's id in dLegerPeers, e.g. n0"),
    doc: "this node's id in `dLegerPeers`",
    parse: dledger_id,
};
pub const PREFERRED_LEADER_ID: Key<NodeId> = Key {
    name: "preferredLeaderId",
    default: Default::Unset,
    doc: "leadership moves back to it once it has caught up",
    parse: dledger_id,
};
pub const AUTO_CREATE_TOPIC_ENABLE: Key<bool> = Key {
    name: "autoCreateTopicEnable",
    default: Default::Value("true"),
    doc: "a send to an unknown topic creates it",
    parse: boolean,
};
pub const DEFAULT_TOPIC_QUEUE_NUMS: Key<i32> = Key {
    name: "defaultTopicQueueNums",
    default: Default::Value("8"),
    doc: "queues of an auto-created topic",
    parse: topic_queues,
};
pub const MAX_MESSAGE_SIZE: Key<usize> = Key {
    name: "maxMessageSize",
    default: Default::Value("4194304"),
    doc: "bytes of the largest message body",
    parse: message_bytes,
};
pub const MAPPED_FILE_SIZE_COMMIT_LOG: Key<u64> = Key {
    name: "mappedFileSizeCommitLog",
    default: Default::Value("1073741824"),
    doc: "bytes per CommitLog segment",
    parse: bytes,
};
pub const HTTP_LISTEN_ADDR: Key<SocketAddr> = Key {
    name: "httpListenAddr",
    default: Default::Unset,
    doc: "raftmq: where `/health`, `/status` and `/metrics` are served",
    parse: socket_addr,
};
pub const ELECTION_TIMEOUT_MIN_MS: Key<Duration> = Key {
    name: "electionTimeoutMinMs",
    default: Default::Value("150"),
    doc: "raftmq: the shortest election timeout, ms",
    parse: millis,
};
pub const ELECTION_TIMEOUT_MAX_MS: Key<Duration> = Key {
    name: "electionTimeoutMaxMs",
    default: Default::Value("300"),
    doc: "raftmq: the longest election timeout, ms; also the leader's quorum lease",
    parse: millis,
};
pub const HEARTBEAT_INTERVAL_MS: Key<Duration> = Key {
    name: "heartbeatIntervalMs",
    default: Default::Value("50"),
    doc: "raftmq: the leader's heartbeat interval, ms",
    parse: millis,
};

pub const MESSAGE_DELAY_LEVEL: Key<DelayLevels> = Key {
    name: "messageDelayLevel",
    default: Default::Value(broker::schedule::DELAY_LEVELS_DEFAULT),
    doc: "the delay of each level, space-separated (`s`, `m`, `h`, `d`); a level past the last is the last",
    parse: DelayLevels::parse,
};
pub const TIMER_WHEEL_ENABLE: Key<bool> = Key {
    name: "timerWheelEnable",
    default: Default::Value("true"),
    doc: "timer messages (`TIMER_DELAY_SEC`, `TIMER_DELAY_MS`, `TIMER_DELIVER_MS`, `__STARTDELIVERTIME`) are taken",
    parse: boolean,
};
pub const TIMER_MAX_DELAY_SEC: Key<Duration> = Key {
    name: "timerMaxDelaySec",
    default: Default::Value("259200"),
    doc: "the furthest a timer message may be due, seconds; further is refused",
    parse: seconds,
};

pub const FILE_RESERVED_TIME: Key<u64> = Key {
    name: "fileReservedTime",
    default: Default::Value("72"),
    doc: "hours a CommitLog segment is kept after its last message",
    parse: hours,
};
pub const FILE_RESERVED_TIME_SECS: Key<Duration> = Key {
    name: "fileReservedTimeSecs",
    default: Default::Unset,
    doc: "raftmq: the same in seconds, overriding `fileReservedTime` (short retention for tests and small disks)",
    parse: reserved_seconds,
};
pub const DELETE_WHEN: Key<DeleteWhen> = Key {
    name: "deleteWhen",
    default: Default::Value("04"),
    doc: "hours of the day (UTC, `;`-separated) in which expired segments are deleted; `*` is every hour",
    parse: DeleteWhen::parse,
};
pub const DISK_MAX_USED_SPACE_RATIO: Key<f64> = Key {
    name: "diskMaxUsedSpaceRatio",
    default: Default::Value("75"),
    doc: "percent of the disk above which expired segments go at any hour (10 to 95)",
    parse: max_used_percent,
};
pub const DISK_SPACE_CLEAN_FORCIBLY_RATIO: Key<f64> = Key {
    name: "diskSpaceCleanForciblyRatio",
    default: Default::Value("0.85"),
    doc: "fraction of the disk above which the oldest segments go whatever their age; a full disk takes sends again at or below it (0.30 to 0.85)",
    parse: clean_forcibly_fraction,
};
pub const DISK_SPACE_WARNING_LEVEL_RATIO: Key<f64> = Key {
    name: "diskSpaceWarningLevelRatio",
    default: Default::Value("0.90"),
    doc: "fraction of the disk above which it is full: sends are refused (0.35 to 0.90)",
    parse: warning_fraction,
};
pub const CLEAN_RESOURCE_INTERVAL: Key<Duration> = Key {
    name: "cleanResourceInterval",
    default: Default::Value("10000"),
    doc: "period of the cleaner, ms",
    parse: millis,
};
pub const CLEAN_FILE_FORCIBLY_ENABLE: Key<bool> = Key {
    name: "cleanFileForciblyEnable",
    default: Default::Value("true"),
    doc: "above `diskSpaceCleanForciblyRatio`, unexpired segments are deleted too",
    parse: boolean,
};
pub const DELETE_FILE_BATCH_MAX: Key<usize> = Key {
    name: "deleteFileBatchMax",
    default: Default::Value("10"),
    doc: "segments deleted per clean run at most",
    parse: batch_max,
};
pub const TRANSACTION_TIME_OUT: Key<Duration> = Key {
    name: "transactionTimeOut",
    default: Default::Value("6000"),
    doc: "a half message is not checked before it is this old, ms (its `CHECK_IMMUNITY_TIME_IN_SECONDS` overrides it)",
    parse: millis,
};
pub const TRANSACTION_CHECK_INTERVAL: Key<Duration> = Key {
    name: "transactionCheckInterval",
    default: Default::Value("30000"),
    doc: "period of the transaction check passes, and the least time between two checks of one half message, ms",
    parse: millis,
};
pub const TRANSACTION_CHECK_MAX: Key<u32> = Key {
    name: "transactionCheckMax",
    default: Default::Value("15"),
    doc: "checks of a half message before it is given up to `TRANS_CHECK_MAX_TIME_TOPIC`",
    parse: check_max,
};
pub const REJECT_TRANSACTION_MESSAGE: Key<bool> = Key {
    name: "rejectTransactionMessage",
    default: Default::Value("false"),
    doc: "half messages (`TRAN_MSG=true`) are refused",
    parse: boolean,
};
pub const ENABLE_PROPERTY_FILTER: Key<bool> = Key {
    name: "enablePropertyFilter",
    default: Default::Value("true"),
    doc: "consumers may subscribe with SQL92 selectors over message properties (RocketMQ's default is `false`); off, they are refused with RocketMQ's answer",
    parse: boolean,
};
pub const DISK_USAGE_OVERRIDE_FILE: Key<PathBuf> = Key {
    name: "diskUsageOverrideFile",
    default: Default::Unset,
    doc: "raftmq, for tests: read the disk's used fraction from this file while it holds one",
    parse: path,
};

/// Every key raftmq reads, in the README's order.
pub static KEYS: [&dyn Documented; 39] = [
    &BROKER_CLUSTER_NAME,
    &BROKER_NAME,
    &NAMESRV_ADDR,
    &LISTEN_PORT,
    &BROKER_IP1,
    &STORE_PATH_ROOT_DIR,
    &FLUSH_DISK_TYPE,
    &FLUSH_INTERVAL_COMMIT_LOG,
    &ENABLE_DLEGER_COMMIT_LOG,
    &DLEGER_GROUP,
    &DLEGER_PEERS,
    &DLEGER_SELF_ID,
    &PREFERRED_LEADER_ID,
    &AUTO_CREATE_TOPIC_ENABLE,
    &DEFAULT_TOPIC_QUEUE_NUMS,
    &MAX_MESSAGE_SIZE,
    &MAPPED_FILE_SIZE_COMMIT_LOG,
    &MESSAGE_DELAY_LEVEL,
    &TIMER_WHEEL_ENABLE,
    &TIMER_MAX_DELAY_SEC,
    &FILE_RESERVED_TIME,
    &FILE_RESERVED_TIME_SECS,
    &DELETE_WHEN,
    &DISK_MAX_USED_SPACE_RATIO,
    &DISK_SPACE_CLEAN_FORCIBLY_RATIO,
    &DISK_SPACE_WARNING_LEVEL_RATIO,
    &CLEAN_RESOURCE_INTERVAL,
    &CLEAN_FILE_FORCIBLY_ENABLE,
    &DELETE_FILE_BATCH_MAX,
    &TRANSACTION_TIME_OUT,
    &TRANSACTION_CHECK_INTERVAL,
    &TRANSACTION_CHECK_MAX,
    &REJECT_TRANSACTION_MESSAGE,
    &ENABLE_PROPERTY_FILTER,
    &DISK_USAGE_OVERRIDE_FILE,
    &HTTP_LISTEN_ADDR,
    &ELECTION_TIMEOUT_MIN_MS,
    &ELECTION_TIMEOUT_MAX_MS,
    &HEARTBEAT_INTERVAL_MS,
];

/// The README's table of keys.
pub fn markdown_table() -> String {
    let mut out = String::from("| key | default | what |\n| --- | --- | --- |\n");
    for key in &KEYS {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            key.name(),
            key.default_text(),
            key.doc()
        ));
    }
    out
}

fn any_text(value: &str) -> Result<String, String> {
    Ok(value.to_string())
}

fn port(value: &str) -> Result<u16, String> {
    value
        .parse()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| "a port number from 1 to 65535".to_string())
}

fn ip(value: &str) -> Result<IpAddr, String> {
    value.parse().map_err(|_| "an IP address".to_string())
}

fn path(value: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(value))
}

fn boolean(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("true or false".to_string()),
    }
}

fn must_be_true(value: &str) -> Result<(), String> {
    match boolean(value)? {
        true => Ok(()),
        false => Err("raftmq runs RocketMQ's DLedger mode only: it must be true".to_string()),
    }
}

fn millis(value: &str) -> Result<Duration, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| "milliseconds, at least 1".to_string())
}

fn seconds(value: &str) -> Result<Duration, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|s| (1..=crate::limits::TIMER_MAX_DELAY_MAX.as_secs()).contains(s))
        .map(Duration::from_secs)
        .ok_or_else(|| {
            format!(
                "seconds, from 1 to {}",
                crate::limits::TIMER_MAX_DELAY_MAX.as_secs()
            )
        })
}

fn hours(value: &str) -> Result<u64, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|h| *h <= crate::limits::FILE_RESERVED_HOURS_MAX)
        .ok_or_else(|| {
            format!(
                "hours, from 0 to {}",
                crate::limits::FILE_RESERVED_HOURS_MAX
            )
        })
}

fn reserved_seconds(value: &str) -> Result<Duration, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|s| *s <= crate::limits::FILE_RESERVED_HOURS_MAX * 3600)
        .map(Duration::from_secs)
        .ok_or_else(|| {
            format!(
                "seconds, from 0 to {}",
                crate::limits::FILE_RESERVED_HOURS_MAX * 3600
            )
        })
}

/// A fraction within `min..=max`, named for the error.
fn fraction_within(value: &str, min: f64, max: f64) -> Result<f64, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|r| (min..=max).contains(r))
        .ok_or_else(|| format!("a fraction from {min:.2} to {max:.2}"))
}

fn max_used_percent(value: &str) -> Result<f64, String> {
    value
        .parse::<u8>()
        .ok()
        .filter(|p| (10..=95).contains(p))
        .map(|p| f64::from(p) / 100.0)
        .ok_or_else(|| "a percentage from 10 to 95".to_string())
}

fn clean_forcibly_fraction(value: &str) -> Result<f64, String> {
    fraction_within(value, 0.30, 0.85)
}

fn warning_fraction(value: &str) -> Result<f64, String> {
    fraction_within(value, 0.35, 0.90)
}

fn check_max(value: &str) -> Result<u32, String> {
    value
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=crate::limits::TRANSACTION_CHECK_MAX_MAX).contains(n))
        .ok_or_else(|| {
            format!(
                "a count from 1 to {}",
                crate::limits::TRANSACTION_CHECK_MAX_MAX
            )
        })
}

fn batch_max(value: &str) -> Result<usize, String> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| "a count, at least 1".to_string())
}

fn bytes(value: &str) -> Result<u64, String> {
    value.parse().map_err(|_| "bytes".to_string())
}

fn flush_kind(value: &str) -> Result<FlushKind, String> {
    match value {
        "SYNC_FLUSH" => Ok(FlushKind::Sync),
        "ASYNC_FLUSH" => Ok(FlushKind::Async),
        _ => Err("SYNC_FLUSH or ASYNC_FLUSH".to_string()),
    }
}

fn topic_queues(value: &str) -> Result<i32, String> {
    value
        .parse()
        .ok()
        .filter(|n| (1..=DEFAULT_TOPIC_QUEUES_MAX).contains(n))
        .ok_or_else(|| format!("a number from 1 to {DEFAULT_TOPIC_QUEUES_MAX}"))
}

fn message_bytes(value: &str) -> Result<usize, String> {
    value
        .parse()
        .ok()
        .filter(|n| (1..=MESSAGE_BYTES_MAX).contains(n))
        .ok_or_else(|| format!("bytes, from 1 to {MESSAGE_BYTES_MAX}"))
}

fn socket_addr(value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("{value:?} is not an ip:port address"))
}

fn host_port_list(value: &str) -> Result<Vec<String>, String> {
    let mut addrs = Vec::new();
    for addr in value.split(';').map(str::trim).filter(|a| !a.is_empty()) {
        let ok = addr.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            return Err(format!("{addr:?} is not host:port"));
        }
        addrs.push(addr.to_string());
    }
    if addrs.is_empty() {
        return Err("host:port[;host:port...]".to_string());
    }
    Ok(addrs)
}

/// DLedger id `nK` → node id K + 1.
fn dledger_id(id: &str) -> Result<NodeId, String> {
    id.strip_prefix('n')
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse::<NodeId>().ok())
        .and_then(|k| k.checked_add(1))
        .ok_or_else(|| format!("{id:?} is not a DLedger id of the form n0, n1, ..."))
}

fn peers(value: &str) -> Result<Peers, String> {
    let mut peers = Peers::new();
    for peer in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((id, addr)) = peer.split_once('-') else {
            return Err(format!("{peer:?} is not id-host:port"));
        };
        let node = dledger_id(id)?;
        socket_addr(addr)?;
        if peers
            .insert(node, (id.to_string(), addr.to_string()))
            .is_some()
        {
            return Err(format!("{id} is listed twice"));
        }
    }
    if peers.is_empty() || peers.len() > REPLICAS_MAX {
        return Err(format!("1 to {REPLICAS_MAX} peers separated by ';'"));
    }
    Ok(peers)
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line of a properties file is not `key=value`.
    #[error("{path}:{line}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A TOML file that does not parse, or holds a table or a value of no usable type.
    #[error("{path}: {reason}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A required key is absent.
    #[error("missing required key {key}: {hint}")]
    Missing {
        /// The key.
        key: &'static str,
        /// What to put there.
        hint: &'static str,
    },
    /// A value that does not fit its key.
    #[error("invalid value for {key}: {value:?} ({expected})")]
    Invalid {
        /// The key.
        key: String,
        /// The value as written.
        value: String,
        /// What was expected.
        expected: String,
    },
}

fn invalid(key: &str, value: &str, expected: impl Into<String>) -> ConfError {
    ConfError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        expected: expected.into(),
    }
}

/// A broker's settings, read and checked.
#[derive(Debug, Clone)]
pub struct BrokerConf {
    /// What the replica starts with.
    pub spec: ReplicaSpec,
    /// This node's DLedger id (`n0`, …).
    pub self_id: String,
    /// Every replica's DLedger id by node id.
    pub dledger_ids: BTreeMap<NodeId, String>,
    /// Node that should lead when it is caught up.
    pub preferred_leader: Option<NodeId>,
    /// Where to serve HTTP, if anywhere.
    pub http_listen: Option<String>,
    /// Keys that were not recognised, in file order (warned about).
    pub unknown_keys: Vec<String>,
    /// Keys recognised and ignored (warned about).
    pub ignored_keys: Vec<String>,
}

/// Reads `path`: TOML when its name ends in `.toml`, Java properties otherwise.
///
/// # Errors
/// The file cannot be read or parsed, or a value is invalid.
pub fn load(path: &Path) -> Result<BrokerConf, ConfError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let pairs = if path.extension().is_some_and(|e| e == "toml") {
        parse_toml(path, &text)?
    } else {
        parse_properties(path, &text)?
    };
    let env_namesrv = std::env::var("NAMESRV_ADDR").ok();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    from_pairs(pairs, env_namesrv.as_deref(), home.as_deref())
}

/// Parses Java properties: `key=value`, `key:value` or `key value`; `#` and `!` comment lines;
/// a trailing backslash continues the line; `\t`, `\n`, `\r`, `\f`, `\uXXXX` and escaped
/// separators are decoded. Later keys win, as in `java.util.Properties`.
///
/// # Errors
/// A malformed `\u` escape, or a key with no name.
pub fn parse_properties(path: &Path, text: &str) -> Result<Vec<(String, String)>, ConfError> {
    let mut pairs = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        let mut logical = line.trim_start().to_string();
        if logical.is_empty() || logical.starts_with('#') || logical.starts_with('!') {
            continue;
        }
        while ends_with_odd_backslashes(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let syntax = |reason: String| ConfError::Syntax {
            path: path.to_path_buf(),
            line: number + 1,
            reason,
        };
        let (key, value) = split_key_value(&logical);
        let key = unescape(key).map_err(syntax)?;
        let value = unescape(value).map_err(syntax)?;
        if key.is_empty() {
            return Err(syntax(format!("no key before the value {value:?}")));
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

fn ends_with_odd_backslashes(s: &str) -> bool {
    s.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// Splits at the first unescaped `=`, `:` or whitespace; the separator's surrounding blanks go.
fn split_key_value(line: &str) -> (&str, &str) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'=' | b':' | b' ' | b'\t' | b'\x0c' => break,
            _ => i += 1,
        }
    }
    let i = i.min(bytes.len());
    let key = &line[..i];
    let mut rest = line[i..].trim_start_matches([' ', '\t', '\x0c']);
    if let Some(after) = rest.strip_prefix(['=', ':']) {
        rest = after.trim_start_matches([' ', '\t', '\x0c']);
    }
    (key, rest)
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 4)
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("malformed \\u escape \\u{hex}"))?;
                out.push(code);
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

/// Reads a TOML file of top-level `key = value` pairs (strings, integers, booleans; an array of
/// strings for `namesrvAddr` and `dLegerPeers` is joined with `;`).
///
/// # Errors
/// TOML that does not parse, or a nested table or a value of another type.
pub fn parse_toml(path: &Path, text: &str) -> Result<Vec<(String, String)>, ConfError> {
    let toml_error = |reason: String| ConfError::Toml {
        path: path.to_path_buf(),
        reason,
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| toml_error(e.to_string()))?;
    let mut pairs = Vec::with_capacity(table.len());
    for (key, value) in table {
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s),
                    other => Err(toml_error(format!(
                        "{key}: arrays hold strings only, found {other}"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(";"),
            other => {
                return Err(toml_error(format!(
                    "{key}: expected a string, integer, boolean or array of strings, found {}",
                    other.type_str()
                )));
            }
        };
        pairs.push((key, text));
    }
    Ok(pairs)
}

/// Builds the settings from parsed pairs. `env_namesrv` stands in for `namesrvAddr` when the
/// file has none (RocketMQ reads `NAMESRV_ADDR` too); `home` gives `storePathRootDir`'s
/// default.
///
/// # Errors
/// A missing required key or an invalid value, naming the key and the value.
pub fn from_pairs(
    pairs: Vec<(String, String)>,
    env_namesrv: Option<&str>,
    home: Option<&Path>,
) -> Result<BrokerConf, ConfError> {
    let mut values = Values::new();
    let mut unknown_keys = Vec::new();
    let mut ignored_keys = Vec::new();
    for (key, value) in pairs {
        if KEYS.iter().any(|k| k.name() == key) {
            values.insert(key, value.trim().to_string());
        } else if IGNORED_KEYS.contains(&key.as_str()) {
            if !ignored_keys.contains(&key) {
                ignored_keys.push(key);
            }
        } else if !unknown_keys.contains(&key) {
            unknown_keys.push(key);
        }
    }

    ENABLE_DLEGER_COMMIT_LOG.value(&values)?;
    let broker_name = BROKER_NAME.value(&values)?;
    let cluster_name = BROKER_CLUSTER_NAME.value(&values)?;
    if let Some(group) = DLEGER_GROUP.read(&values)?
        && group != broker_name
    {
        return Err(invalid(
            DLEGER_GROUP.name,
            &group,
            format!("the replica group is the broker group: expected brokerName {broker_name:?}"),
        ));
    }

    let peers = DLEGER_PEERS.value(&values)?;
    let peers_text = DLEGER_PEERS.text(&values).unwrap_or_default();
    let node_id = DLEGER_SELF_ID.value(&values)?;
    let self_id = DLEGER_SELF_ID.text(&values).unwrap_or_default();
    let Some((_, self_raft)) = peers.get(&node_id).cloned() else {
        return Err(invalid(
            DLEGER_SELF_ID.name,
            self_id,
            format!("not one of dLegerPeers ({peers_text})"),
        ));
    };
    let preferred_leader = PREFERRED_LEADER_ID.read(&values)?;
    if let Some(node) = preferred_leader
        && !peers.contains_key(&node)
    {
        return Err(invalid(
            PREFERRED_LEADER_ID.name,
            PREFERRED_LEADER_ID.text(&values).unwrap_or_default(),
            format!("not one of dLegerPeers ({peers_text})"),
        ));
    }

    let namesrv_addrs = match NAMESRV_ADDR.read(&values)? {
        Some(addrs) => addrs,
        None => {
            let env = env_namesrv
                .filter(|v| !v.trim().is_empty())
                .ok_or(ConfError::Missing {
                    key: NAMESRV_ADDR.name,
                    hint: "the name servers, ';'-separated (or NAMESRV_ADDR in the environment)",
                })?;
            host_port_list(env).map_err(|expected| invalid(NAMESRV_ADDR.name, env, expected))?
        }
    };

    let listen_port = LISTEN_PORT.value(&values)?;
    let self_host = self_raft
        .rsplit_once(':')
        .map_or(self_raft.as_str(), |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let ip = match BROKER_IP1.read(&values)? {
        Some(ip) => ip,
        None => self_host.parse().map_err(|_| {
            invalid(
                DLEGER_PEERS.name,
                peers_text,
                format!(
                    "{self_id}'s host {self_host:?} is not an IP address: set brokerIP1 to the address clients dial"
                ),
            )
        })?,
    };
    let advertised = SocketAddr::new(ip, listen_port);
    let listen = SocketAddr::new(
        if ip.is_loopback() {
            ip
        } else if ip.is_ipv4() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            IpAddr::from([0u16; 8])
        },
        listen_port,
    );

    let root = match STORE_PATH_ROOT_DIR.read(&values)? {
        Some(root) => root,
        None => home.map(|h| h.join("store")).ok_or(ConfError::Missing {
            key: STORE_PATH_ROOT_DIR.name,
            hint: "where data lives (no HOME to default to $HOME/store)",
        })?,
    };
    let interval = FLUSH_INTERVAL_COMMIT_LOG.value(&values)?;
    let flush = match FLUSH_DISK_TYPE.value(&values)? {
        FlushKind::Sync => FlushPolicy::Sync,
        FlushKind::Async => FlushPolicy::Async { interval },
    };

    let mut broker =
        BrokerConfig::new(&broker_name, &listen.to_string(), advertised, namesrv_addrs);
    broker.cluster_name = cluster_name;
    broker.auto_create_topic = AUTO_CREATE_TOPIC_ENABLE.value(&values)?;
    broker.default_topic_queues = DEFAULT_TOPIC_QUEUE_NUMS.value(&values)?;
    broker.max_message_bytes = MAX_MESSAGE_SIZE.value(&values)?;
    broker.schedule = ScheduleConfig {
        levels: MESSAGE_DELAY_LEVEL.value(&values)?,
        timer_enabled: TIMER_WHEEL_ENABLE.value(&values)?,
        timer_max_delay: TIMER_MAX_DELAY_SEC.value(&values)?,
    };
    broker.transactions = TransactionConfig {
        timeout: TRANSACTION_TIME_OUT.value(&values)?,
        check_interval: TRANSACTION_CHECK_INTERVAL.value(&values)?,
        check_max: TRANSACTION_CHECK_MAX.value(&values)?,
        reject: REJECT_TRANSACTION_MESSAGE.value(&values)?,
    };
    broker.enable_property_filter = ENABLE_PROPERTY_FILTER.value(&values)?;
    let clean_forcibly_ratio = DISK_SPACE_CLEAN_FORCIBLY_RATIO.value(&values)?;
    let warning_ratio = DISK_SPACE_WARNING_LEVEL_RATIO.value(&values)?;
    if clean_forcibly_ratio > warning_ratio {
        return Err(invalid(
            DISK_SPACE_CLEAN_FORCIBLY_RATIO.name,
            &clean_forcibly_ratio.to_string(),
            format!(
                "at most diskSpaceWarningLevelRatio ({warning_ratio}): a full disk takes sends again once cleaning brings it to this"
            ),
        ));
    }
    let disk_usage: Arc<dyn broker::retention::DiskUsage> =
        match DISK_USAGE_OVERRIDE_FILE.read(&values)? {
            Some(file) => Arc::new(crate::disk_usage::OverriddenUsage::new(&file, &root)),
            None => Arc::new(crate::disk_usage::PartitionUsage::new(&root)),
        };
    broker.retention = RetentionConfig {
        file_reserved: match FILE_RESERVED_TIME_SECS.read(&values)? {
            Some(reserved) => reserved,
            None => Duration::from_secs(FILE_RESERVED_TIME.value(&values)? * 3600),
        },
        delete_when: DELETE_WHEN.value(&values)?,
        disk_max_used_ratio: DISK_MAX_USED_SPACE_RATIO.value(&values)?,
        clean_forcibly_ratio,
        warning_ratio,
        clean_interval: CLEAN_RESOURCE_INTERVAL.value(&values)?,
        clean_forcibly: CLEAN_FILE_FORCIBLY_ENABLE.value(&values)?,
        delete_batch_max: DELETE_FILE_BATCH_MAX.value(&values)?,
        disk_usage,
    };

    let raft_peers = peers
        .iter()
        .map(|(node, (_, addr))| (*node, addr.clone()))
        .collect();
    let dledger_ids = peers
        .iter()
        .map(|(node, (id, _))| (*node, id.clone()))
        .collect();
    let mut spec = ReplicaSpec::new(
        node_id,
        raft_peers,
        root.join(format!("dledger-{self_id}")),
        broker,
    );
    spec.store_dir = root;
    spec.ledger.flush = flush;
    spec.ledger.segment_bytes = MAPPED_FILE_SIZE_COMMIT_LOG.value(&values)?;
    spec.ledger.heartbeat_interval = HEARTBEAT_INTERVAL_MS.value(&values)?;
    spec.ledger.election_timeout_min = ELECTION_TIMEOUT_MIN_MS.value(&values)?;
    spec.ledger.election_timeout_max = ELECTION_TIMEOUT_MAX_MS.value(&values)?;
    if let Err(err) = spec.ledger.validate() {
        let ms = |d: Duration| d.as_millis();
        let (key, value) = match err {
            dledger::ConfigError::SegmentTooSmall { .. } => (
                MAPPED_FILE_SIZE_COMMIT_LOG.name,
                spec.ledger.segment_bytes.to_string(),
            ),
            _ => (
                ELECTION_TIMEOUT_MIN_MS.name,
                format!(
                    "{} (electionTimeoutMaxMs {}, heartbeatIntervalMs {})",
                    ms(spec.ledger.election_timeout_min),
                    ms(spec.ledger.election_timeout_max),
                    ms(spec.ledger.heartbeat_interval)
                ),
            ),
        };
        return Err(invalid(key, &value, err.to_string()));
    }

    let http_listen = HTTP_LISTEN_ADDR.read(&values)?.map(|addr| addr.to_string());
    Ok(BrokerConf {
        spec,
        self_id: self_id.to_string(),
        dledger_ids,
        preferred_leader,
        http_listen,
        unknown_keys,
        ignored_keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = "\
# A three-replica DLedger group, as RocketMQ's docs write it.
brokerClusterName = RaftCluster
brokerName=broker-a
listenPort=30911
namesrvAddr=127.0.0.1:9876;127.0.0.1:9877
storePathRootDir=/tmp/raftmq/node0
enableDLegerCommitLog=true
dLegerGroup=broker-a
dLegerPeers=n0-127.0.0.1:40911;n1-127.0.0.1:40912;\\
  n2-127.0.0.1:40913
dLegerSelfId=n0
flushDiskType=ASYNC_FLUSH
flushIntervalCommitLog:250
preferredLeaderId n1
httpListenAddr=127.0.0.1:8081
deleteWhen=04
someTypo=1
";

    fn path() -> PathBuf {
        PathBuf::from("broker.conf")
    }

    fn conf(text: &str) -> Result<BrokerConf, ConfError> {
        from_pairs(parse_properties(&path(), text)?, None, None)
    }

    /// Every key RocketMQ's DLedger example uses lands where it belongs; separators `=`, `:` and
    /// a blank, a continued line, and unknown and ignored keys are reported.
    #[test]
    fn reads_a_dledger_broker_conf() {
        let c = conf(CONF).unwrap();
        assert_eq!(c.spec.broker.cluster_name, "RaftCluster");
        assert_eq!(c.spec.broker.broker_name, "broker-a");
        assert_eq!(
            c.spec.broker.advertised_addr,
            "127.0.0.1:30911".parse().unwrap()
        );
        assert_eq!(c.spec.broker.listen, "127.0.0.1:30911");
        assert_eq!(
            c.spec.broker.namesrv_addrs,
            ["127.0.0.1:9876", "127.0.0.1:9877"]
        );
        assert_eq!(c.spec.ledger.node_id, 1);
        assert_eq!(
            c.spec.ledger.peers,
            BTreeMap::from([
                (1, "127.0.0.1:40911".to_string()),
                (2, "127.0.0.1:40912".to_string()),
                (3, "127.0.0.1:40913".to_string()),
            ])
        );
        assert_eq!(
            c.spec.ledger.data_dir,
            PathBuf::from("/tmp/raftmq/node0/dledger-n0")
        );
        assert_eq!(c.spec.store_dir, PathBuf::from("/tmp/raftmq/node0"));
        assert_eq!(
            c.spec.ledger.flush,
            FlushPolicy::Async {
                interval: Duration::from_millis(250)
            }
        );
        assert_eq!(c.preferred_leader, Some(2));
        assert_eq!(c.http_listen.as_deref(), Some("127.0.0.1:8081"));
        assert_eq!(c.self_id, "n0");
        assert_eq!(c.unknown_keys, ["someTypo"]);
        assert!(c.ignored_keys.is_empty(), "{:?}", c.ignored_keys);
        assert_eq!(
            c.spec.broker.retention.delete_when,
            DeleteWhen::parse("04").unwrap()
        );
    }

    /// The same settings as TOML give the same configuration.
    #[test]
    fn toml_reads_like_properties() {
        let toml = r#"
brokerClusterName = "RaftCluster"
brokerName = "broker-a"
listenPort = 30911
namesrvAddr = ["127.0.0.1:9876", "127.0.0.1:9877"]
storePathRootDir = "/tmp/raftmq/node0"
enableDLegerCommitLog = true
dLegerGroup = "broker-a"
dLegerPeers = "n0-127.0.0.1:40911;n1-127.0.0.1:40912;n2-127.0.0.1:40913"
dLegerSelfId = "n0"
flushDiskType = "ASYNC_FLUSH"
flushIntervalCommitLog = 250
preferredLeaderId = "n1"
httpListenAddr = "127.0.0.1:8081"
deleteWhen = "04"
someTypo = 1
"#;
        let from_toml =
            from_pairs(parse_toml(Path::new("b.toml"), toml).unwrap(), None, None).unwrap();
        let from_conf = conf(CONF).unwrap();
        assert_eq!(
            format!("{:?}", from_toml.spec),
            format!("{:?}", from_conf.spec)
        );
        assert_eq!(from_toml.spec.ledger.flush, from_conf.spec.ledger.flush);
        assert_eq!(from_toml.preferred_leader, from_conf.preferred_leader);
        assert_eq!(from_toml.unknown_keys, ["someTypo"]);
        let err = parse_toml(Path::new("b.toml"), "brokerName = [1]").unwrap_err();
        assert!(
            err.to_string().contains("arrays hold strings only"),
            "{err}"
        );
        let err = parse_toml(Path::new("b.toml"), "[section]\nx = 1").unwrap_err();
        assert!(err.to_string().contains("found table"), "{err}");
        let err = parse_toml(Path::new("b.toml"), "brokerName = ").unwrap_err();
        assert!(err.to_string().starts_with("b.toml: "), "{err}");
    }

    /// Defaults: SYNC_FLUSH, port 10911, the advertised IP from this node's peer entry,
    /// `$HOME/store`, NAMESRV_ADDR from the environment.
    #[test]
    fn defaults() {
        let text = "brokerName=b\nenableDLegerCommitLog=true\ndLegerPeers=n0-10.0.0.5:40911\ndLegerSelfId=n0\n";
        let c = from_pairs(
            parse_properties(&path(), text).unwrap(),
            Some("10.0.0.1:9876"),
            Some(Path::new("/home/mq")),
        )
        .unwrap();
        assert_eq!(c.spec.ledger.flush, FlushPolicy::Sync);
        assert_eq!(
            c.spec.broker.advertised_addr,
            "10.0.0.5:10911".parse().unwrap()
        );
        assert_eq!(c.spec.broker.listen, "0.0.0.0:10911");
        assert_eq!(c.spec.store_dir, PathBuf::from("/home/mq/store"));
        assert_eq!(c.spec.broker.namesrv_addrs, ["10.0.0.1:9876"]);
        assert_eq!(c.spec.broker.cluster_name, "DefaultCluster");
        assert_eq!(
            c.spec.ledger.election_timeout_max,
            Duration::from_millis(300)
        );
    }

    /// Each invalid value stops start-up with an error naming its key and its value.
    #[test]
    fn invalid_values_name_the_key_and_the_value() {
        let base: Vec<(&str, &str)> = vec![
            ("brokerName", "b"),
            ("namesrvAddr", "127.0.0.1:9876"),
            ("storePathRootDir", "/tmp/x"),
            ("enableDLegerCommitLog", "true"),
            ("dLegerPeers", "n0-127.0.0.1:40911;n1-127.0.0.1:40912"),
            ("dLegerSelfId", "n0"),
        ];
        let cases = [
            ("listenPort", "abc"),
            ("listenPort", "70000"),
            ("listenPort", "0"),
            ("flushDiskType", "SOMETIMES"),
            ("flushIntervalCommitLog", "-5"),
            ("enableDLegerCommitLog", "false"),
            ("enableDLegerCommitLog", "yes"),
            ("dLegerPeers", "n0-127.0.0.1"),
            ("dLegerPeers", "n0:127.0.0.1:40911"),
            ("dLegerPeers", "x0-127.0.0.1:40911"),
            ("dLegerPeers", "n0-127.0.0.1:40911;n0-127.0.0.1:40912"),
            ("dLegerSelfId", "n7"),
            ("dLegerSelfId", "node0"),
            ("dLegerGroup", "other"),
            ("preferredLeaderId", "n9"),
            ("namesrvAddr", "localhost"),
            ("brokerIP1", "not-an-ip"),
            ("autoCreateTopicEnable", "maybe"),
            ("defaultTopicQueueNums", "0"),
            ("maxMessageSize", "huge"),
            ("mappedFileSizeCommitLog", "12"),
            ("electionTimeoutMinMs", "900"),
            ("heartbeatIntervalMs", "0"),
            ("httpListenAddr", "everywhere"),
            ("messageDelayLevel", "1s 5x"),
            ("messageDelayLevel", "1s -1m"),
            ("timerWheelEnable", "on"),
            ("timerMaxDelaySec", "0"),
            ("timerMaxDelaySec", "99999999999"),
            ("fileReservedTime", "-1"),
            ("fileReservedTime", "forever"),
            ("fileReservedTimeSecs", "1.5"),
            ("deleteWhen", "25"),
            ("deleteWhen", "04;noon"),
            ("diskMaxUsedSpaceRatio", "0.75"),
            ("diskMaxUsedSpaceRatio", "99"),
            ("diskSpaceCleanForciblyRatio", "0.95"),
            ("diskSpaceCleanForciblyRatio", "85"),
            ("diskSpaceWarningLevelRatio", "0.2"),
            ("cleanResourceInterval", "0"),
            ("cleanFileForciblyEnable", "1"),
            ("deleteFileBatchMax", "0"),
        ];
        for (key, value) in cases {
            let mut pairs: Vec<(String, String)> = base
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            pairs.push((key.to_string(), value.to_string()));
            let err = from_pairs(pairs, None, None).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(&err, ConfError::Invalid { key: k, value: v, .. } if k == key && v.contains(value)),
                "{key}={value}: {text}"
            );
            assert!(text.contains(key), "{key}={value}: {text}");
        }
    }

    /// Each missing required key is named with what to put there.
    #[test]
    fn missing_keys_are_named() {
        let all = [
            ("brokerName", "b"),
            ("namesrvAddr", "127.0.0.1:9876"),
            ("enableDLegerCommitLog", "true"),
            ("dLegerPeers", "n0-127.0.0.1:40911"),
            ("dLegerSelfId", "n0"),
            ("storePathRootDir", "/tmp/x"),
        ];
        for missing in [
            "brokerName",
            "namesrvAddr",
            "enableDLegerCommitLog",
            "dLegerPeers",
            "dLegerSelfId",
            "storePathRootDir",
        ] {
            let pairs = all
                .iter()
                .filter(|(k, _)| *k != missing)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let err = from_pairs(pairs, None, None).unwrap_err();
            assert!(
                matches!(err, ConfError::Missing { key, .. } if key == missing),
                "{missing}: {err}"
            );
        }
    }

    /// Each key is declared once, none is also among the ignored ones, and every default value
    /// reads as if the file said it.
    #[test]
    fn keys_are_declared_once_and_defaults_read() {
        let mut names: Vec<&str> = KEYS.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KEYS.len(), "a key is declared twice");
        for name in &names {
            assert!(!IGNORED_KEYS.contains(name), "{name} is read and ignored");
        }
        let empty = Values::new();
        assert!(LISTEN_PORT.read(&empty).unwrap() == Some(10911));
        assert!(FLUSH_DISK_TYPE.read(&empty).unwrap() == Some(FlushKind::Sync));
        assert!(DEFAULT_TOPIC_QUEUE_NUMS.read(&empty).unwrap() == Some(8));
        assert!(MAX_MESSAGE_SIZE.read(&empty).unwrap() == Some(4 * 1024 * 1024));
        assert!(
            MAPPED_FILE_SIZE_COMMIT_LOG.read(&empty).unwrap()
                == Some(dledger::limits::SEGMENT_BYTES_DEFAULT)
        );
        let ledger = dledger::LedgerConfig::new(1, BTreeMap::new(), PathBuf::new());
        assert_eq!(
            ELECTION_TIMEOUT_MIN_MS.read(&empty).unwrap(),
            Some(ledger.election_timeout_min)
        );
        assert_eq!(
            ELECTION_TIMEOUT_MAX_MS.read(&empty).unwrap(),
            Some(ledger.election_timeout_max)
        );
        assert_eq!(
            HEARTBEAT_INTERVAL_MS.read(&empty).unwrap(),
            Some(ledger.heartbeat_interval)
        );
        assert!(FLUSH_INTERVAL_COMMIT_LOG.read(&empty).unwrap().is_some());
        assert!(AUTO_CREATE_TOPIC_ENABLE.read(&empty).unwrap() == Some(true));
        assert!(BROKER_CLUSTER_NAME.read(&empty).unwrap().is_some());
        assert!(PREFERRED_LEADER_ID.read(&empty).unwrap().is_none());
        assert!(matches!(
            BROKER_NAME.read(&empty),
            Err(ConfError::Missing {
                key: "brokerName",
                ..
            })
        ));
    }

    /// Retention's keys reach the broker's settings with RocketMQ's defaults; raftmq's
    /// `fileReservedTimeSecs` overrides the hours; a force-clean ratio above the warning ratio
    /// is refused naming it.
    #[test]
    fn retention_keys_reach_the_broker() {
        let base: Vec<(String, String)> = [
            ("brokerName", "b"),
            ("namesrvAddr", "127.0.0.1:9876"),
            ("storePathRootDir", "/tmp/x"),
            ("enableDLegerCommitLog", "true"),
            ("dLegerPeers", "n0-127.0.0.1:40911"),
            ("dLegerSelfId", "n0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let conf = from_pairs(base.clone(), None, None).unwrap();
        let r = &conf.spec.broker.retention;
        assert_eq!(r.file_reserved, Duration::from_secs(72 * 3600));
        assert_eq!(r.delete_when, DeleteWhen::parse("04").unwrap());
        assert_eq!(
            (
                r.disk_max_used_ratio,
                r.clean_forcibly_ratio,
                r.warning_ratio
            ),
            (0.75, 0.85, 0.90)
        );
        assert_eq!(r.clean_interval, Duration::from_secs(10));
        assert!(r.clean_forcibly);
        assert_eq!(r.delete_batch_max, 10);

        let mut pairs = base.clone();
        for (k, v) in [
            ("fileReservedTime", "1"),
            ("fileReservedTimeSecs", "30"),
            ("deleteWhen", "*"),
            ("diskMaxUsedSpaceRatio", "60"),
            ("cleanResourceInterval", "500"),
            ("cleanFileForciblyEnable", "false"),
        ] {
            pairs.push((k.to_string(), v.to_string()));
        }
        let conf = from_pairs(pairs, None, None).unwrap();
        let r = &conf.spec.broker.retention;
        assert_eq!(r.file_reserved, Duration::from_secs(30));
        assert_eq!(r.delete_when, DeleteWhen::EveryHour);
        assert_eq!(r.disk_max_used_ratio, 0.60);
        assert_eq!(r.clean_interval, Duration::from_millis(500));
        assert!(!r.clean_forcibly);

        let mut pairs = base;
        pairs.push(("diskSpaceWarningLevelRatio".into(), "0.80".into()));
        let err = from_pairs(pairs, None, None).unwrap_err().to_string();
        assert!(err.contains("diskSpaceCleanForciblyRatio"), "{err}");
    }

    /// The README's table of keys is the one the declarations give (regenerate it with
    /// `cargo test --lib broker_conf -- --nocapture` and copy what this prints on failure).
    #[test]
    fn readme_lists_every_key() {
        let readme = include_str!("../README.md");
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's broker.conf table differs from the declarations; it should read:\n{table}"
        );
    }

    /// Properties syntax: comments, blank lines, escapes, a last value winning, and a line with
    /// no key or a broken `\u` escape refused with its line number.
    #[test]
    fn properties_syntax() {
        let pairs = parse_properties(
            &path(),
            "! comment\n\n  a\\=b = x\\ty\nkey\\u0041 \\u00e9\nempty\nk=1\nk=2\n",
        )
        .unwrap();
        assert_eq!(
            pairs,
            [
                ("a=b".to_string(), "x\ty".to_string()),
                ("keyA".to_string(), "é".to_string()),
                ("empty".to_string(), String::new()),
                ("k".to_string(), "1".to_string()),
                ("k".to_string(), "2".to_string()),
            ]
        );
        let err = parse_properties(&path(), "a=1\n=value\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "broker.conf:2: no key before the value \"value\""
        );
        let err = parse_properties(&path(), "a=\\u12\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("broker.conf:1: malformed \\u escape"),
            "{err}"
        );
    }
}
