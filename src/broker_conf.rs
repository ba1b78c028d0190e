//! `raftmq broker -c FILE`: RocketMQ's `broker.conf` (Java properties) for DLedger mode, or a
//! TOML file with the same keys. Unknown keys warn; an invalid value stops start-up naming the
//! key and the value.
//!
//! The keys read, with RocketMQ's meaning:
//!
//! | key | default | |
//! | --- | --- | --- |
//! | `brokerClusterName` | `DefaultCluster` | |
//! | `brokerName` | required | the replica group |
//! | `namesrvAddr` | `NAMESRV_ADDR` from the environment | `;`-separated |
//! | `listenPort` | `10911` | clients' port |
//! | `brokerIP1` | the host of this node in `dLegerPeers` | advertised to clients |
//! | `storePathRootDir` | `$HOME/store` | ConsumeQueues and IndexFiles; the CommitLog in `dledger-<selfId>/` |
//! | `flushDiskType` | `SYNC_FLUSH` | or `ASYNC_FLUSH` |
//! | `flushIntervalCommitLog` | `500` | ms between syncs under `ASYNC_FLUSH` |
//! | `enableDLegerCommitLog` | required `true` | raftmq only runs DLedger mode |
//! | `dLegerGroup` | `brokerName` | |
//! | `dLegerPeers` | required | `n0-host:port;n1-host:port;...`: every replica's Raft address |
//! | `dLegerSelfId` | required | this node's id in `dLegerPeers` |
//! | `preferredLeaderId` | none | leadership moves back to it once it has caught up |
//! | `autoCreateTopicEnable` | `true` | |
//! | `defaultTopicQueueNums` | `8` | |
//! | `maxMessageSize` | `4194304` | bytes |
//! | `mappedFileSizeCommitLog` | `1073741824` | bytes per CommitLog segment |
//! | `httpListenAddr` | none | raftmq: `/health`, `/status`, `/metrics` |
//! | `electionTimeoutMinMs`, `electionTimeoutMaxMs`, `heartbeatIntervalMs` | `150`, `300`, `50` | raftmq: Raft timing (see `dledger::LedgerConfig`) |
//!
//! Node ids: DLedger names replicas `n0`, `n1`, …; raftmq's node id is the number plus one
//! (`n0` is node 1), so broker ids stay 0 for the leader and 1..n for followers.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use broker::BrokerConfig;
use dledger::{FlushPolicy, NodeId};

use crate::replica::ReplicaSpec;

/// Keys RocketMQ's broker.conf may carry that raftmq accepts and does not use (they configure
/// what raftmq does differently or not at all). They are reported once at start, not refused.
const IGNORED_KEYS: &[&str] = &[
    "brokerId",
    "brokerRole",
    "deleteWhen",
    "fileReservedTime",
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

/// Keys raftmq reads.
const KNOWN_KEYS: &[&str] = &[
    "brokerClusterName",
    "brokerName",
    "namesrvAddr",
    "listenPort",
    "brokerIP1",
    "storePathRootDir",
    "flushDiskType",
    "flushIntervalCommitLog",
    "enableDLegerCommitLog",
    "dLegerGroup",
    "dLegerPeers",
    "dLegerSelfId",
    "preferredLeaderId",
    "autoCreateTopicEnable",
    "defaultTopicQueueNums",
    "maxMessageSize",
    "mappedFileSizeCommitLog",
    "httpListenAddr",
    "electionTimeoutMinMs",
    "electionTimeoutMaxMs",
    "heartbeatIntervalMs",
];

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
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let mut unknown_keys = Vec::new();
    let mut ignored_keys = Vec::new();
    for (key, value) in pairs {
        if KNOWN_KEYS.contains(&key.as_str()) {
            values.insert(key, value.trim().to_string());
        } else if IGNORED_KEYS.contains(&key.as_str()) {
            if !ignored_keys.contains(&key) {
                ignored_keys.push(key);
            }
        } else if !unknown_keys.contains(&key) {
            unknown_keys.push(key);
        }
    }
    let get = |key: &str| {
        values
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };

    match get("enableDLegerCommitLog") {
        None => {
            return Err(ConfError::Missing {
                key: "enableDLegerCommitLog",
                hint: "raftmq runs RocketMQ's DLedger mode only: set it to true",
            });
        }
        Some(value) if parse_bool("enableDLegerCommitLog", value)? => {}
        Some(value) => {
            return Err(invalid(
                "enableDLegerCommitLog",
                value,
                "raftmq runs RocketMQ's DLedger mode only: it must be true",
            ));
        }
    }
    let broker_name = get("brokerName")
        .ok_or(ConfError::Missing {
            key: "brokerName",
            hint: "the name of the replica group, e.g. broker-a",
        })?
        .to_string();
    let cluster_name = get("brokerClusterName")
        .unwrap_or("DefaultCluster")
        .to_string();
    if let Some(group) = get("dLegerGroup")
        && group != broker_name
    {
        return Err(invalid(
            "dLegerGroup",
            group,
            format!("the replica group is the broker group: expected brokerName {broker_name:?}"),
        ));
    }

    let peers_text = get("dLegerPeers").ok_or(ConfError::Missing {
        key: "dLegerPeers",
        hint: "every replica's Raft address, e.g. n0-127.0.0.1:40911;n1-127.0.0.1:40912;n2-127.0.0.1:40913",
    })?;
    let mut raft_peers: BTreeMap<NodeId, String> = BTreeMap::new();
    let mut dledger_ids: BTreeMap<NodeId, String> = BTreeMap::new();
    for peer in peers_text
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let Some((id, addr)) = peer.split_once('-') else {
            return Err(invalid(
                "dLegerPeers",
                peers_text,
                format!("{peer:?} is not id-host:port"),
            ));
        };
        let node = node_of("dLegerPeers", peers_text, id)?;
        parse_socket_addr("dLegerPeers", peers_text, addr)?;
        if raft_peers.insert(node, addr.to_string()).is_some() {
            return Err(invalid(
                "dLegerPeers",
                peers_text,
                format!("{id} is listed twice"),
            ));
        }
        dledger_ids.insert(node, id.to_string());
    }
    if raft_peers.is_empty() || raft_peers.len() > 5 {
        return Err(invalid(
            "dLegerPeers",
            peers_text,
            "1 to 5 peers separated by ';'",
        ));
    }
    let self_id = get("dLegerSelfId").ok_or(ConfError::Missing {
        key: "dLegerSelfId",
        hint: "this node's id in dLegerPeers, e.g. n0",
    })?;
    let node_id = node_of("dLegerSelfId", self_id, self_id)?;
    let Some(self_raft) = raft_peers.get(&node_id).cloned() else {
        return Err(invalid(
            "dLegerSelfId",
            self_id,
            format!("not one of dLegerPeers ({peers_text})"),
        ));
    };
    let preferred_leader = match get("preferredLeaderId") {
        None => None,
        Some(value) => {
            let node = node_of("preferredLeaderId", value, value)?;
            if !raft_peers.contains_key(&node) {
                return Err(invalid(
                    "preferredLeaderId",
                    value,
                    format!("not one of dLegerPeers ({peers_text})"),
                ));
            }
            Some(node)
        }
    };

    let namesrv_text = get("namesrvAddr").or(env_namesrv.filter(|v| !v.trim().is_empty()));
    let namesrv_text = namesrv_text.ok_or(ConfError::Missing {
        key: "namesrvAddr",
        hint: "the name servers, ';'-separated (or NAMESRV_ADDR in the environment)",
    })?;
    let mut namesrv_addrs = Vec::new();
    for addr in namesrv_text
        .split(';')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        parse_host_port("namesrvAddr", namesrv_text, addr)?;
        namesrv_addrs.push(addr.to_string());
    }
    if namesrv_addrs.is_empty() {
        return Err(invalid(
            "namesrvAddr",
            namesrv_text,
            "host:port[;host:port...]",
        ));
    }

    let listen_port: u16 = match get("listenPort") {
        None => 10911,
        Some(value) => value
            .parse()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| invalid("listenPort", value, "a port number from 1 to 65535"))?,
    };
    let self_host = self_raft
        .rsplit_once(':')
        .map_or(self_raft.as_str(), |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let ip: IpAddr = match get("brokerIP1") {
        Some(value) => value
            .parse()
            .map_err(|_| invalid("brokerIP1", value, "an IP address"))?,
        None => self_host.parse().map_err(|_| {
            invalid(
                "dLegerPeers",
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

    let root = match get("storePathRootDir") {
        Some(value) => PathBuf::from(value),
        None => home.map(|h| h.join("store")).ok_or(ConfError::Missing {
            key: "storePathRootDir",
            hint: "where data lives (no HOME to default to $HOME/store)",
        })?,
    };
    let interval = parse_ms("flushIntervalCommitLog", get("flushIntervalCommitLog"), 500)?;
    let flush = match get("flushDiskType") {
        None | Some("SYNC_FLUSH") => FlushPolicy::Sync,
        Some("ASYNC_FLUSH") => FlushPolicy::Async { interval },
        Some(value) => return Err(invalid("flushDiskType", value, "SYNC_FLUSH or ASYNC_FLUSH")),
    };

    let mut broker =
        BrokerConfig::new(&broker_name, &listen.to_string(), advertised, namesrv_addrs);
    broker.cluster_name = cluster_name;
    if let Some(value) = get("autoCreateTopicEnable") {
        broker.auto_create_topic = parse_bool("autoCreateTopicEnable", value)?;
    }
    if let Some(value) = get("defaultTopicQueueNums") {
        broker.default_topic_queues = value
            .parse()
            .ok()
            .filter(|n| (1..=1024).contains(n))
            .ok_or_else(|| invalid("defaultTopicQueueNums", value, "a number from 1 to 1024"))?;
    }
    if let Some(value) = get("maxMessageSize") {
        broker.max_message_bytes = value
            .parse()
            .ok()
            .filter(|n| (1..=64 * 1024 * 1024).contains(n))
            .ok_or_else(|| invalid("maxMessageSize", value, "bytes, from 1 to 67108864"))?;
    }

    let mut spec = ReplicaSpec::new(
        node_id,
        raft_peers,
        root.join(format!("dledger-{self_id}")),
        broker,
    );
    spec.store_dir = root;
    spec.ledger.flush = flush;
    if let Some(value) = get("mappedFileSizeCommitLog") {
        spec.ledger.segment_bytes = value
            .parse()
            .map_err(|_| invalid("mappedFileSizeCommitLog", value, "bytes"))?;
    }
    let ms = |d: Duration| d.as_millis() as u64;
    spec.ledger.heartbeat_interval = parse_ms(
        "heartbeatIntervalMs",
        get("heartbeatIntervalMs"),
        ms(spec.ledger.heartbeat_interval),
    )?;
    spec.ledger.election_timeout_min = parse_ms(
        "electionTimeoutMinMs",
        get("electionTimeoutMinMs"),
        ms(spec.ledger.election_timeout_min),
    )?;
    spec.ledger.election_timeout_max = parse_ms(
        "electionTimeoutMaxMs",
        get("electionTimeoutMaxMs"),
        ms(spec.ledger.election_timeout_max),
    )?;
    if let Err(err) = spec.ledger.validate() {
        let key = match err {
            dledger::ConfigError::SegmentTooSmall { .. } => "mappedFileSizeCommitLog",
            _ => "electionTimeoutMinMs",
        };
        let value = match key {
            "electionTimeoutMinMs" => format!(
                "{} (electionTimeoutMaxMs {}, heartbeatIntervalMs {})",
                get(key).unwrap_or("150"),
                get("electionTimeoutMaxMs").unwrap_or("300"),
                get("heartbeatIntervalMs").unwrap_or("50")
            ),
            _ => get(key).unwrap_or_default().to_string(),
        };
        return Err(invalid(key, &value, err.to_string()));
    }

    let http_listen = match get("httpListenAddr") {
        None => None,
        Some(value) => {
            parse_socket_addr("httpListenAddr", value, value)?;
            Some(value.to_string())
        }
    };
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

/// DLedger id `nK` → node id K + 1.
fn node_of(key: &str, value: &str, id: &str) -> Result<NodeId, ConfError> {
    id.strip_prefix('n')
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse::<NodeId>().ok())
        .and_then(|k| k.checked_add(1))
        .ok_or_else(|| {
            invalid(
                key,
                value,
                format!("{id:?} is not a DLedger id of the form n0, n1, ..."),
            )
        })
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, value, "true or false")),
    }
}

fn parse_ms(key: &str, value: Option<&str>, default: u64) -> Result<Duration, ConfError> {
    let Some(value) = value else {
        return Ok(Duration::from_millis(default));
    };
    value
        .parse::<u64>()
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| invalid(key, value, "milliseconds, at least 1"))
}

fn parse_socket_addr(key: &str, value: &str, addr: &str) -> Result<SocketAddr, ConfError> {
    addr.parse()
        .map_err(|_| invalid(key, value, format!("{addr:?} is not an ip:port address")))
}

fn parse_host_port(key: &str, value: &str, addr: &str) -> Result<(), ConfError> {
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(())
    } else {
        Err(invalid(key, value, format!("{addr:?} is not host:port")))
    }
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
        assert_eq!(c.ignored_keys, ["deleteWhen"]);
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
