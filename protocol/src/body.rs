//! JSON bodies: routes, cluster info, broker registration, heartbeats, consumer lists, locks
//! (PROTOCOL.md §3, §4, §5).
//!
//! Emitted strictly (quoted keys, Java's field names in alphabetical order, every field a
//! client requires present). Parsed leniently: unknown keys ignored, missing optional fields
//! defaulted, and unquoted numeric object keys (`{0:"addr"}`, fastjson's legacy maps) accepted
//! by [`parse`].

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A body does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what} body: {reason}")]
pub struct BodyError {
    /// The body's type.
    pub what: &'static str,
    /// Why.
    pub reason: String,
}

/// Parses a JSON body, accepting fastjson's unquoted numeric map keys.
///
/// # Errors
/// [`BodyError`] with serde's message for the quoted form.
pub fn parse<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, BodyError> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Ok(value),
        Err(first) => {
            let quoted = quote_numeric_keys(bytes);
            serde_json::from_slice(&quoted).map_err(|_| BodyError {
                what,
                reason: first.to_string(),
            })
        }
    }
}

/// Serializes a body as strict JSON.
pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail (no non-string map keys, no custom impls).
    serde_json::to_vec(value).unwrap_or_default()
}

/// Quotes integer object keys outside strings: `{0:"a",-1:"b"}` → `{"0":"a","-1":"b"}`.
fn quote_numeric_keys(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    // Whether the last significant byte outside strings opened an object or separated members.
    let mut key_position = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        if key_position && (b == b'-' || b.is_ascii_digit()) {
            let start = i;
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            out.push(b'"');
            out.extend_from_slice(&bytes[start..i]);
            out.push(b'"');
            key_position = false;
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                key_position = false;
            }
            b'{' | b',' => key_position = true,
            b' ' | b'\n' | b'\r' | b'\t' => {}
            _ => key_position = false,
        }
        out.push(b);
        i += 1;
    }
    out
}

/// Permission bits of a topic (`PermName`).
pub mod perm {
    /// Priority.
    pub const PRIORITY: i32 = 8;
    /// Readable.
    pub const READ: i32 = 4;
    /// Writable.
    pub const WRITE: i32 = 2;
    /// Template for auto-created topics.
    pub const INHERIT: i32 = 1;
}

/// A topic's queues on one broker group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueData {
    /// Broker group.
    pub broker_name: String,
    /// `PermName` bits.
    pub perm: i32,
    /// Readable queues.
    pub read_queue_nums: i32,
    /// Topic sys flag.
    #[serde(default)]
    pub topic_sys_flag: i32,
    /// Writable queues.
    pub write_queue_nums: i32,
}

/// A broker group's replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerData {
    /// Broker id (0 = master) → client address.
    pub broker_addrs: BTreeMap<i64, String>,
    /// Broker group.
    pub broker_name: String,
    /// Cluster.
    pub cluster: String,
    /// 5.x acting master (always false here).
    #[serde(default)]
    pub enable_acting_master: bool,
    /// Zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_name: Option<String>,
}

/// GET_ROUTEINFO_BY_TOPIC body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicRouteData {
    /// Broker groups serving the topic.
    #[serde(default)]
    pub broker_datas: Vec<BrokerData>,
    /// Filter servers (always empty here).
    #[serde(default)]
    pub filter_server_table: BTreeMap<String, Vec<String>>,
    /// "brokerA:4;brokerB:4" for ordered topics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_topic_conf: Option<String>,
    /// The topic's queues per broker group.
    #[serde(default)]
    pub queue_datas: Vec<QueueData>,
}

/// GET_BROKER_CLUSTER_INFO body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfo {
    /// Broker groups by name.
    pub broker_addr_table: BTreeMap<String, BrokerData>,
    /// Broker group names by cluster.
    pub cluster_addr_table: BTreeMap<String, BTreeSet<String>>,
}

/// A version stamp of a broker's topic table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataVersion {
    /// Changes counted.
    #[serde(default)]
    pub counter: i64,
    /// Epoch: a new master registers with a larger one (raftmq uses the Raft term).
    #[serde(default)]
    pub state_version: i64,
    /// When (ms).
    #[serde(default)]
    pub timestamp: i64,
}

/// A topic's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicConfig {
    /// Attributes.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Ordered topic.
    #[serde(default)]
    pub order: bool,
    /// `PermName` bits.
    pub perm: i32,
    /// Readable queues.
    pub read_queue_nums: i32,
    /// "SINGLE_TAG" or "MULTI_TAG".
    #[serde(default = "single_tag")]
    pub topic_filter_type: String,
    /// Name.
    pub topic_name: String,
    /// Topic sys flag.
    #[serde(default)]
    pub topic_sys_flag: i32,
    /// Writable queues.
    pub write_queue_nums: i32,
}

fn single_tag() -> String {
    "SINGLE_TAG".into()
}

impl TopicConfig {
    /// A read-write topic with `queues` queues.
    pub fn new(name: &str, queues: i32, perm: i32) -> Self {
        TopicConfig {
            attributes: BTreeMap::new(),
            order: false,
            perm,
            read_queue_nums: queues,
            topic_filter_type: single_tag(),
            topic_name: name.to_string(),
            topic_sys_flag: 0,
            write_queue_nums: queues,
        }
    }
}

/// Topic table inside a registration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicConfigSerializeWrapper {
    /// Version of the table.
    #[serde(default)]
    pub data_version: DataVersion,
    /// Topics by name.
    #[serde(default)]
    pub topic_config_table: BTreeMap<String, TopicConfig>,
}

/// REGISTER_BROKER body (uncompressed).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterBrokerBody {
    /// Filter servers.
    #[serde(default)]
    pub filter_server_list: Vec<String>,
    /// Topics.
    #[serde(default)]
    pub topic_config_serialize_wrapper: TopicConfigSerializeWrapper,
}

/// Reads an enum that clients send by name (Java) or by ordinal (the C++ client).
fn enum_name<'de, D: serde::Deserializer<'de>>(d: D, names: &[&str]) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n
            .as_u64()
            .and_then(|i| names.get(i as usize))
            .map_or_else(|| n.to_string(), |name| (*name).to_string())),
        serde_json::Value::Null => Ok(String::new()),
        other => Ok(other.to_string()),
    }
}

fn consume_type<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    enum_name(d, &["CONSUME_ACTIVELY", "CONSUME_PASSIVELY", "CONSUME_POP"])
}

fn message_model<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    enum_name(d, &["BROADCASTING", "CLUSTERING"])
}

fn consume_from_where<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    enum_name(
        d,
        &[
            "CONSUME_FROM_LAST_OFFSET",
            "CONSUME_FROM_LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST",
            "CONSUME_FROM_MIN_OFFSET",
            "CONSUME_FROM_MAX_OFFSET",
            "CONSUME_FROM_FIRST_OFFSET",
            "CONSUME_FROM_TIMESTAMP",
        ],
    )
}

/// An integer sent as a number (Java) or as text (the C++ client's `subVersion`).
fn lenient_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => Ok(n.as_i64().unwrap_or(0)),
        serde_json::Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an integer"))),
        _ => Ok(0),
    }
}

/// A subscription of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionData {
    /// Class filter (obsolete).
    #[serde(default)]
    pub class_filter_mode: bool,
    /// Tag hash codes.
    #[serde(default)]
    pub code_set: BTreeSet<i32>,
    /// "TAG" or "SQL92".
    #[serde(default = "tag")]
    pub expression_type: String,
    /// The expression.
    #[serde(default)]
    pub sub_string: String,
    /// Version.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub sub_version: i64,
    /// Tags.
    #[serde(default)]
    pub tags_set: BTreeSet<String>,
    /// Topic.
    pub topic: String,
}

fn tag() -> String {
    "TAG".into()
}

/// A consumer group as a client declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerData {
    /// Where a new group starts.
    #[serde(default, deserialize_with = "consume_from_where")]
    pub consume_from_where: String,
    /// CONSUME_ACTIVELY (pull) or CONSUME_PASSIVELY (push).
    #[serde(default, deserialize_with = "consume_type")]
    pub consume_type: String,
    /// Group.
    pub group_name: String,
    /// CLUSTERING or BROADCASTING.
    #[serde(default, deserialize_with = "message_model")]
    pub message_model: String,
    /// Subscriptions.
    #[serde(default)]
    pub subscription_data_set: Vec<SubscriptionData>,
    /// Unit mode.
    #[serde(default)]
    pub unit_mode: bool,
}

/// A producer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerData {
    /// Group.
    pub group_name: String,
}

/// HEART_BEAT body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatData {
    /// The client.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// Its consumer groups.
    #[serde(default)]
    pub consumer_data_set: Vec<ConsumerData>,
    /// Its producer groups.
    #[serde(default)]
    pub producer_data_set: Vec<ProducerData>,
}

/// GET_CONSUMER_LIST_BY_GROUP body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerListBody {
    /// Client ids.
    pub consumer_id_list: Vec<String>,
}

/// A queue of a topic on a broker group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageQueue {
    /// Broker group.
    pub broker_name: String,
    /// Queue.
    pub queue_id: i32,
    /// Topic.
    pub topic: String,
}

/// LOCK_BATCH_MQ and UNLOCK_BATCH_MQ body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockBatchRequestBody {
    /// The client.
    pub client_id: String,
    /// Its group.
    pub consumer_group: String,
    /// Queues to lock.
    pub mq_set: BTreeSet<MessageQueue>,
    /// Only this broker.
    #[serde(default)]
    pub only_this_broker: bool,
}

/// LOCK_BATCH_MQ response body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LockBatchResponseBody {
    /// Queues now locked by the client.
    #[serde(rename = "lockOKMQSet")]
    pub lock_ok_mq_set: BTreeSet<MessageQueue>,
}

/// A key-value table (REGISTER_BROKER response).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KvTable {
    /// The table.
    pub table: BTreeMap<String, String>,
}

/// Topic names (GET_ALL_TOPIC_LIST_FROM_NAMESERVER).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicList {
    /// Names.
    pub topic_list: BTreeSet<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn route_is_standard_json_in_java_order() {
        let route = TopicRouteData {
            broker_datas: vec![BrokerData {
                broker_addrs: [(0, "127.0.0.1:10911".to_string())].into(),
                broker_name: "broker-a".into(),
                cluster: "DefaultCluster".into(),
                enable_acting_master: false,
                zone_name: None,
            }],
            queue_datas: vec![QueueData {
                broker_name: "broker-a".into(),
                perm: 6,
                read_queue_nums: 4,
                topic_sys_flag: 0,
                write_queue_nums: 4,
            }],
            ..Default::default()
        };
        let json = String::from_utf8(to_json(&route)).unwrap();
        assert_eq!(
            json,
            r#"{"brokerDatas":[{"brokerAddrs":{"0":"127.0.0.1:10911"},"brokerName":"broker-a","cluster":"DefaultCluster","enableActingMaster":false}],"filterServerTable":{},"queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}"#
        );
        assert_eq!(
            parse::<TopicRouteData>(json.as_bytes(), "route").unwrap(),
            route
        );
    }

    #[test]
    fn legacy_unquoted_keys_are_accepted() {
        let legacy = br#"{"brokerAddrTable":{"broker-a":{"brokerAddrs":{0:"a:1", -1 :"b:2"},"brokerName":"broker-a","cluster":"c"}},"clusterAddrTable":{"c":["broker-a"]}}"#;
        let info: ClusterInfo = parse(legacy, "cluster info").unwrap();
        let addrs = &info.broker_addr_table["broker-a"].broker_addrs;
        assert_eq!(addrs[&0], "a:1");
        assert_eq!(addrs[&-1], "b:2");
        // Digits inside strings are left alone.
        let text = br#"{"table":{"k":"{0:1}"}}"#;
        let kv: KvTable = parse(text, "kv").unwrap();
        assert_eq!(kv.table["k"], "{0:1}");
    }

    #[test]
    fn ali_ons_heartbeat_without_optional_fields() {
        let body = br#"{"clientID":"c1","consumerDataSet":[{"groupName":"g","consumeType":"CONSUME_PASSIVELY","messageModel":"CLUSTERING","consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","subscriptionDataSet":[{"topic":"T","subString":"*","classFilterMode":false,"tagsSet":[],"codeSet":[],"subVersion":1}],"unitMode":false}],"producerDataSet":[]}"#;
        let hb: HeartbeatData = parse(body, "heartbeat").unwrap();
        assert_eq!(
            hb.consumer_data_set[0].subscription_data_set[0].expression_type,
            "TAG"
        );
    }

    /// The C++ client's heartbeat: enum ordinals, a text subVersion, no expressionType.
    #[test]
    fn cpp_client_heartbeat() {
        let body = br#"{"clientID":"26374-127.0.0.1@DEFAULT","consumerDataSet":[{"consumeFromWhere":0,"consumeType":1,"groupName":"ConsumerGroupPush","messageModel":1,"subscriptionDataSet":[{"subString":"*","subVersion":"1795372084091","topic":"%RETRY%ConsumerGroupPush"},{"codeSet":[0,0],"subString":"TagA || TagB","subVersion":"1795372084091","tagsSet":["TagA","TagB"],"topic":"TopicTest"}]}]}"#;
        let hb: HeartbeatData = parse(body, "heartbeat").unwrap();
        let consumer = &hb.consumer_data_set[0];
        assert_eq!(consumer.message_model, "CLUSTERING");
        assert_eq!(consumer.consume_type, "CONSUME_PASSIVELY");
        assert_eq!(consumer.consume_from_where, "CONSUME_FROM_LAST_OFFSET");
        assert_eq!(
            consumer.subscription_data_set[1].sub_version,
            1_795_372_084_091
        );
        let broadcast = br#"{"clientID":"c","consumerDataSet":[{"consumeFromWhere":0,"consumeType":1,"groupName":"g","messageModel":0}]}"#;
        let hb: HeartbeatData = parse(broadcast, "heartbeat").unwrap();
        assert_eq!(hb.consumer_data_set[0].message_model, "BROADCASTING");
    }

    #[test]
    fn garbage_is_a_named_error() {
        let err = parse::<HeartbeatData>(b"{\"clientID\":", "heartbeat").unwrap_err();
        assert_eq!(err.what, "heartbeat");
        assert!(
            err.to_string().contains("malformed heartbeat body"),
            "{err}"
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse::<TopicRouteData>(&bytes, "route");
            let _ = parse::<HeartbeatData>(&bytes, "heartbeat");
            let _ = parse::<RegisterBrokerBody>(&bytes, "registration");
        }
    }
}
