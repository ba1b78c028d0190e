//! Typed custom headers: each request's and response's `extFields`, with Java's field names
//! (PROTOCOL.md §1.6, §3).
//!
//! A field of type `T` is required (`@CFNotNull`): a request without it is refused with
//! [`HeaderError::Missing`]. A field of type `Option<T>` may be absent. Values are text on the
//! wire; integers are parsed as decimal, booleans as Java's `Boolean.parseBoolean` does.

use std::collections::BTreeMap;

/// A header field is missing or does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A required field is absent (Java: "the custom field <x> is null").
    #[error("the custom field {field} is null")]
    Missing {
        /// Its wire name.
        field: &'static str,
    },
    /// A field does not parse as its type.
    #[error("the custom field {field} has an invalid value {value:?}: expected {expected}")]
    Invalid {
        /// Its wire name.
        field: &'static str,
        /// The text received.
        value: String,
        /// The type wanted.
        expected: &'static str,
    },
}

/// Header fields as text.
pub type ExtFields = BTreeMap<String, String>;

/// Where a header's fields are read from: [`ExtFields`], or a view of them under other names.
pub trait Fields {
    /// The text of field `name`, if present.
    fn field(&self, name: &str) -> Option<&String>;
}

impl Fields for ExtFields {
    fn field(&self, name: &str) -> Option<&String> {
        self.get(name)
    }
}

/// A value that can be a header field.
pub trait FieldValue: Sized {
    /// Reads field `name` from `ext`.
    ///
    /// # Errors
    /// [`HeaderError`] when required and missing, or unparseable.
    fn read<F: Fields>(ext: &F, name: &'static str) -> Result<Self, HeaderError>;
    /// Writes the field into `ext` (nothing for an absent optional field).
    fn write(&self, ext: &mut ExtFields, name: &'static str);
}

/// A plain value type: text on the wire.
pub trait Scalar: Sized {
    /// Name of the type, for errors.
    const EXPECTED: &'static str;
    /// Parses the wire text.
    fn parse(text: &str) -> Option<Self>;
    /// The wire text.
    fn text(&self) -> String;
}

impl Scalar for String {
    const EXPECTED: &'static str = "text";
    fn parse(text: &str) -> Option<Self> {
        Some(text.to_string())
    }
    fn text(&self) -> String {
        self.clone()
    }
}

macro_rules! integer_scalar {
    ($($t:ty => $name:literal),*) => {$(
        impl Scalar for $t {
            const EXPECTED: &'static str = $name;
            fn parse(text: &str) -> Option<Self> {
                text.trim().parse().ok()
            }
            fn text(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
integer_scalar!(i32 => "a 32-bit integer", i64 => "a 64-bit integer");

impl Scalar for bool {
    const EXPECTED: &'static str = "true or false";
    /// Java's `Boolean.parseBoolean` ("true" in any case is true, anything else false), and
    /// "1", which the C++ client sends for true.
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        Some(text.eq_ignore_ascii_case("true") || text == "1")
    }
    fn text(&self) -> String {
        self.to_string()
    }
}

impl<T: Scalar> FieldValue for T {
    fn read<F: Fields>(ext: &F, name: &'static str) -> Result<Self, HeaderError> {
        let text = ext
            .field(name)
            .ok_or(HeaderError::Missing { field: name })?;
        T::parse(text).ok_or_else(|| HeaderError::Invalid {
            field: name,
            value: text.clone(),
            expected: T::EXPECTED,
        })
    }
    fn write(&self, ext: &mut ExtFields, name: &'static str) {
        ext.insert(name.to_string(), self.text());
    }
}

impl<T: Scalar> FieldValue for Option<T> {
    fn read<F: Fields>(ext: &F, name: &'static str) -> Result<Self, HeaderError> {
        match ext.field(name) {
            None => Ok(None),
            Some(text) => T::parse(text)
                .map(Some)
                .ok_or_else(|| HeaderError::Invalid {
                    field: name,
                    value: text.clone(),
                    expected: T::EXPECTED,
                }),
        }
    }
    fn write(&self, ext: &mut ExtFields, name: &'static str) {
        if let Some(value) = self {
            value.write(ext, name);
        }
    }
}

/// A typed custom header.
pub trait CommandHeader: Sized {
    /// Reads the header from a command's fields.
    ///
    /// # Errors
    /// The first field that is missing or invalid.
    fn from_ext(ext: &ExtFields) -> Result<Self, HeaderError>;
    /// The fields of this header.
    fn to_ext(&self) -> ExtFields;
}

macro_rules! header {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty = $wire:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl $name {
            /// Reads the header from fields under their wire names.
            ///
            /// # Errors
            /// The first field that is missing or invalid.
            #[allow(dead_code)]
            fn from_fields<F: Fields>(ext: &F) -> Result<Self, HeaderError> {
                Ok($name { $($field: <$ty as FieldValue>::read(ext, $wire)?,)* })
            }
        }

        impl CommandHeader for $name {
            fn from_ext(ext: &ExtFields) -> Result<Self, HeaderError> {
                Self::from_fields(ext)
            }
            fn to_ext(&self) -> ExtFields {
                let mut ext = ExtFields::new();
                $(FieldValue::write(&self.$field, &mut ext, $wire);)*
                ext
            }
        }
    };
}

header! {
    /// GET_ROUTEINFO_BY_TOPIC (105).
    pub struct GetRouteInfoRequestHeader {
        /// The topic.
        topic: String = "topic",
        /// Ask for standard JSON whatever the version.
        accept_standard_json_only: Option<bool> = "acceptStandardJsonOnly",
    }
}

header! {
    /// REGISTER_BROKER (103).
    pub struct RegisterBrokerRequestHeader {
        /// Broker group name.
        broker_name: String = "brokerName",
        /// Client-facing "ip:port".
        broker_addr: String = "brokerAddr",
        /// Cluster name.
        cluster_name: String = "clusterName",
        /// HA address (unused by raftmq, required on the wire).
        ha_server_addr: String = "haServerAddr",
        /// 0 = master.
        broker_id: i64 = "brokerId",
        /// Expiry of this registration.
        heartbeat_timeout_millis: Option<i64> = "heartbeatTimeoutMillis",
        /// 5.x acting-master support.
        enable_acting_master: Option<bool> = "enableActingMaster",
        /// Whether the body is zlib-compressed.
        compressed: Option<bool> = "compressed",
        /// `crc32(body) & 0x7FFFFFFF`, or 0 for unchecked.
        body_crc32: Option<i32> = "bodyCrc32",
    }
}

header! {
    /// REGISTER_BROKER response.
    pub struct RegisterBrokerResponseHeader {
        /// The master's HA address, for slaves.
        ha_server_addr: Option<String> = "haServerAddr",
        /// The master's address, for slaves.
        master_addr: Option<String> = "masterAddr",
    }
}

header! {
    /// UNREGISTER_BROKER (104).
    pub struct UnRegisterBrokerRequestHeader {
        /// Broker group name.
        broker_name: String = "brokerName",
        /// Client-facing "ip:port".
        broker_addr: String = "brokerAddr",
        /// Cluster name.
        cluster_name: String = "clusterName",
        /// Its id.
        broker_id: i64 = "brokerId",
    }
}

header! {
    /// SEND_MESSAGE (10), SEND_MESSAGE_V2 (310) and SEND_BATCH_MESSAGE (320), with V1's field
    /// names; [`SendMessageRequestHeader::from_v2`] and [`SendMessageRequestHeader::to_v2`]
    /// map the single-letter V2 names.
    pub struct SendMessageRequestHeader {
        /// Producer group.
        producer_group: String = "producerGroup",
        /// Topic.
        topic: String = "topic",
        /// Template topic for auto-creation (`TBW102`).
        default_topic: String = "defaultTopic",
        /// Queues of an auto-created topic.
        default_topic_queue_nums: i32 = "defaultTopicQueueNums",
        /// Queue, or < 0 for the broker's choice.
        queue_id: i32 = "queueId",
        /// `MessageSysFlag`.
        sys_flag: i32 = "sysFlag",
        /// When the producer made it (ms).
        born_timestamp: i64 = "bornTimestamp",
        /// User flag.
        flag: i32 = "flag",
        /// Properties string (PROTOCOL.md §6.4).
        properties: Option<String> = "properties",
        /// Times consumed before (retries).
        reconsume_times: Option<i32> = "reconsumeTimes",
        /// Unit mode.
        unit_mode: Option<bool> = "unitMode",
        /// Retries before the dead-letter queue.
        max_reconsume_times: Option<i32> = "maxReconsumeTimes",
        /// A batch.
        batch: Option<bool> = "batch",
        /// Target broker name (5.x clients).
        broker_name: Option<String> = "bname",
    }
}

/// V2's single-letter names, in V1 order.
const SEND_V2_NAMES: [(&str, &str); 14] = [
    ("a", "producerGroup"),
    ("b", "topic"),
    ("c", "defaultTopic"),
    ("d", "defaultTopicQueueNums"),
    ("e", "queueId"),
    ("f", "sysFlag"),
    ("g", "bornTimestamp"),
    ("h", "flag"),
    ("i", "properties"),
    ("j", "reconsumeTimes"),
    ("k", "unitMode"),
    ("l", "maxReconsumeTimes"),
    ("m", "batch"),
    ("n", "bname"),
];

impl SendMessageRequestHeader {
    /// Reads a V2 header (single-letter names; `bname` may also come under its own name).
    ///
    /// # Errors
    /// The first missing or invalid field, named by its V1 name.
    pub fn from_v2(ext: &ExtFields) -> Result<Self, HeaderError> {
        Self::from_fields(&SendV2Fields(ext))
    }

    /// The V2 fields.
    pub fn to_v2(&self) -> ExtFields {
        let mut v1 = self.to_ext();
        SEND_V2_NAMES
            .iter()
            .filter_map(|(short, long)| v1.remove(*long).map(|v| (short.to_string(), v)))
            .collect()
    }
}

/// A V2 send header's fields under their V1 names, read in place.
struct SendV2Fields<'a>(&'a ExtFields);

impl Fields for SendV2Fields<'_> {
    fn field(&self, name: &str) -> Option<&String> {
        let short = SEND_V2_NAMES
            .iter()
            .find(|(_, long)| *long == name)
            .map(|(short, _)| *short)?;
        let value = self.0.get(short);
        if name == "bname" {
            // 5.x clients may also send it under its own name.
            value.or_else(|| self.0.get("bname"))
        } else {
            value
        }
    }
}

header! {
    /// SEND_MESSAGE response.
    pub struct SendMessageResponseHeader {
        /// Offset message id(s), comma-joined for a batch.
        msg_id: String = "msgId",
        /// Queue written.
        queue_id: i32 = "queueId",
        /// Queue offset of the (first) message.
        queue_offset: i64 = "queueOffset",
        /// The message's `UNIQ_KEY`.
        transaction_id: Option<String> = "transactionId",
        /// Inner-batch id (left absent).
        batch_uniq_id: Option<String> = "batchUniqId",
    }
}

header! {
    /// PULL_MESSAGE (11) and LITE_PULL_MESSAGE (361).
    pub struct PullMessageRequestHeader {
        /// Consumer group.
        consumer_group: String = "consumerGroup",
        /// Topic.
        topic: String = "topic",
        /// Queue.
        queue_id: i32 = "queueId",
        /// First queue offset wanted.
        queue_offset: i64 = "queueOffset",
        /// Most messages wanted.
        max_msg_nums: i32 = "maxMsgNums",
        /// `PullSysFlag`.
        sys_flag: i32 = "sysFlag",
        /// Offset to commit, if the commit flag is set.
        commit_offset: i64 = "commitOffset",
        /// Longest hold when nothing is found.
        suspend_timeout_millis: i64 = "suspendTimeoutMillis",
        /// Subscription expression.
        subscription: Option<String> = "subscription",
        /// Subscription version.
        sub_version: i64 = "subVersion",
        /// "TAG" (the default) or "SQL92".
        expression_type: Option<String> = "expressionType",
        /// Byte cap of the answer.
        max_msg_bytes: Option<i32> = "maxMsgBytes",
    }
}

/// `PullSysFlag` bits.
pub mod pull_flag {
    /// Commit `commitOffset` for the group.
    pub const COMMIT_OFFSET: i32 = 0x1;
    /// Hold the request when nothing is found.
    pub const SUSPEND: i32 = 0x2;
    /// The request's subscription is authoritative.
    pub const SUBSCRIPTION: i32 = 0x4;
    /// Class filter (obsolete).
    pub const CLASS_FILTER: i32 = 0x8;
    /// Lite pull.
    pub const LITE_PULL: i32 = 0x10;
}

header! {
    /// PULL_MESSAGE response: all four required fields on every pull answer.
    pub struct PullMessageResponseHeader {
        /// Broker id to pull from next (0 = master).
        suggest_which_broker_id: i64 = "suggestWhichBrokerId",
        /// Offset of the next pull.
        next_begin_offset: i64 = "nextBeginOffset",
        /// Queue's min offset.
        min_offset: i64 = "minOffset",
        /// Queue's max offset (next to be written).
        max_offset: i64 = "maxOffset",
    }
}

header! {
    /// QUERY_CONSUMER_OFFSET (14).
    pub struct QueryConsumerOffsetRequestHeader {
        /// Consumer group.
        consumer_group: String = "consumerGroup",
        /// Topic.
        topic: String = "topic",
        /// Queue.
        queue_id: i32 = "queueId",
        /// Answer 0 rather than "not found" for a young queue.
        set_zero_if_not_found: Option<bool> = "setZeroIfNotFound",
    }
}

header! {
    /// UPDATE_CONSUMER_OFFSET (15).
    pub struct UpdateConsumerOffsetRequestHeader {
        /// Consumer group.
        consumer_group: String = "consumerGroup",
        /// Topic.
        topic: String = "topic",
        /// Queue.
        queue_id: i32 = "queueId",
        /// The offset to commit.
        commit_offset: i64 = "commitOffset",
    }
}

header! {
    /// A response carrying one offset (14, 29, 30, 31).
    pub struct OffsetResponseHeader {
        /// The offset.
        offset: i64 = "offset",
    }
}

header! {
    /// GET_MAX_OFFSET (30), GET_MIN_OFFSET (31), GET_EARLIEST_MSG_STORETIME (32).
    pub struct QueueRequestHeader {
        /// Topic.
        topic: String = "topic",
        /// Queue.
        queue_id: i32 = "queueId",
    }
}

header! {
    /// SEARCH_OFFSET_BY_TIMESTAMP (29).
    pub struct SearchOffsetRequestHeader {
        /// Topic.
        topic: String = "topic",
        /// Queue.
        queue_id: i32 = "queueId",
        /// Store time wanted (ms).
        timestamp: i64 = "timestamp",
        /// "LOWER" (default) or "UPPER".
        boundary_type: Option<String> = "boundaryType",
    }
}

header! {
    /// GET_EARLIEST_MSG_STORETIME response.
    pub struct TimestampResponseHeader {
        /// Store time (ms).
        timestamp: i64 = "timestamp",
    }
}

header! {
    /// UNREGISTER_CLIENT (35).
    pub struct UnregisterClientRequestHeader {
        /// The client.
        client_id: String = "clientID",
        /// Its producer group.
        producer_group: Option<String> = "producerGroup",
        /// Its consumer group.
        consumer_group: Option<String> = "consumerGroup",
    }
}

header! {
    /// GET_CONSUMER_LIST_BY_GROUP (38) and NOTIFY_CONSUMER_IDS_CHANGED (40).
    pub struct ConsumerGroupHeader {
        /// Consumer group.
        consumer_group: String = "consumerGroup",
    }
}

header! {
    /// UPDATE_AND_CREATE_TOPIC (17).
    pub struct CreateTopicRequestHeader {
        /// Topic.
        topic: String = "topic",
        /// Template topic.
        default_topic: String = "defaultTopic",
        /// Readable queues.
        read_queue_nums: i32 = "readQueueNums",
        /// Writable queues.
        write_queue_nums: i32 = "writeQueueNums",
        /// `PermName` bits.
        perm: i32 = "perm",
        /// "SINGLE_TAG" or "MULTI_TAG".
        topic_filter_type: String = "topicFilterType",
        /// Topic sys flag.
        topic_sys_flag: Option<i32> = "topicSysFlag",
        /// Ordered topic.
        order: bool = "order",
        /// Attributes such as "+message.type=NORMAL".
        attributes: Option<String> = "attributes",
    }
}

header! {
    /// VIEW_MESSAGE_BY_ID (33).
    pub struct ViewMessageRequestHeader {
        /// Topic (optional).
        topic: Option<String> = "topic",
        /// Commit-log offset.
        offset: i64 = "offset",
    }
}

header! {
    /// QUERY_MESSAGE (12).
    pub struct QueryMessageRequestHeader {
        /// Topic.
        topic: String = "topic",
        /// Key, or unique key when ext `_UNIQUE_KEY_QUERY` is "true".
        key: String = "key",
        /// Most messages wanted.
        max_num: i32 = "maxNum",
        /// Earliest store time (ms).
        begin_timestamp: i64 = "beginTimestamp",
        /// Latest store time (ms).
        end_timestamp: i64 = "endTimestamp",
    }
}

header! {
    /// QUERY_MESSAGE response.
    pub struct QueryMessageResponseHeader {
        /// Time of the index's last update.
        index_last_update_timestamp: i64 = "indexLastUpdateTimestamp",
        /// Commit-log offset of the index's last update.
        index_last_update_phyoffset: i64 = "indexLastUpdatePhyoffset",
    }
}

header! {
    /// CONSUMER_SEND_MSG_BACK (36).
    pub struct ConsumerSendMsgBackRequestHeader {
        /// Commit-log offset of the message.
        offset: i64 = "offset",
        /// Consumer group.
        group: String = "group",
        /// Delay level; 0 = the broker's choice, < 0 = dead-letter.
        delay_level: i32 = "delayLevel",
        /// Original message id.
        origin_msg_id: Option<String> = "originMsgId",
        /// Original topic.
        origin_topic: Option<String> = "originTopic",
        /// Retries before the dead-letter queue.
        max_reconsume_times: Option<i32> = "maxReconsumeTimes",
    }
}

header! {
    /// END_TRANSACTION (37): a producer's commit or rollback of a half message.
    pub struct EndTransactionRequestHeader {
        /// The topic (ignored, as RocketMQ ignores it).
        topic: Option<String> = "topic",
        /// Producer group: must be the half message's `PGROUP`.
        producer_group: String = "producerGroup",
        /// The half message's queue offset (the send's answer).
        tran_state_table_offset: i64 = "tranStateTableOffset",
        /// The half message's commit-log offset (from its offset message id).
        commit_log_offset: i64 = "commitLogOffset",
        /// 8 commit, 12 rollback, 0 unknown (nothing is done).
        commit_or_rollback: i32 = "commitOrRollback",
        /// The answer to a check.
        from_transaction_check: Option<bool> = "fromTransactionCheck",
        /// The message's `UNIQ_KEY`.
        msg_id: String = "msgId",
        /// The transaction id.
        transaction_id: Option<String> = "transactionId",
        /// Broker name (RocketMQ 5).
        bname: Option<String> = "bname",
    }
}

header! {
    /// CHECK_TRANSACTION_STATE (39): the broker asks a producer what became of a transaction.
    pub struct CheckTransactionStateRequestHeader {
        /// The half message's topic.
        topic: Option<String> = "topic",
        /// The half message's queue offset.
        tran_state_table_offset: i64 = "tranStateTableOffset",
        /// The half message's commit-log offset.
        commit_log_offset: i64 = "commitLogOffset",
        /// The message's `UNIQ_KEY`.
        msg_id: Option<String> = "msgId",
        /// The transaction id.
        transaction_id: Option<String> = "transactionId",
        /// The half message's offset message id.
        offset_msg_id: Option<String> = "offsetMsgId",
        /// Broker name.
        bname: Option<String> = "bname",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ext(pairs: &[(&str, &str)]) -> ExtFields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn v2_send_header_maps_single_letters() {
        let fields = ext(&[
            ("a", "pg"),
            ("b", "T"),
            ("c", "TBW102"),
            ("d", "4"),
            ("e", "-1"),
            ("f", "0"),
            ("g", "1700000000000"),
            ("h", "0"),
            ("i", "TAGS\u{1}a\u{2}"),
            ("j", "0"),
            ("k", "false"),
            ("m", "false"),
        ]);
        let header = SendMessageRequestHeader::from_v2(&fields).unwrap();
        assert_eq!(header.topic, "T");
        assert_eq!(header.queue_id, -1);
        assert_eq!(header.born_timestamp, 1_700_000_000_000);
        assert_eq!(header.batch, Some(false));
        assert_eq!(header.max_reconsume_times, None);
        assert_eq!(header.broker_name, None);
        assert_eq!(header.to_v2(), fields);

        // The broker name comes as `n` or, from 5.x clients, as `bname`; `n` wins. V1 names in
        // a V2 header are not read, and a missing required field is named by its V1 name.
        let mut with_bname = fields.clone();
        with_bname.insert("bname".into(), "broker-b".into());
        with_bname.insert("topic".into(), "Other".into());
        let header = SendMessageRequestHeader::from_v2(&with_bname).unwrap();
        assert_eq!(header.broker_name.as_deref(), Some("broker-b"));
        assert_eq!(header.topic, "T");
        with_bname.insert("n".into(), "broker-n".into());
        let header = SendMessageRequestHeader::from_v2(&with_bname).unwrap();
        assert_eq!(header.broker_name.as_deref(), Some("broker-n"));
        with_bname.remove("b");
        assert_eq!(
            SendMessageRequestHeader::from_v2(&with_bname),
            Err(HeaderError::Missing { field: "topic" })
        );
    }

    #[test]
    fn missing_and_invalid_fields_are_named() {
        let err = PullMessageRequestHeader::from_ext(&ext(&[("topic", "T")])).unwrap_err();
        assert_eq!(
            err,
            HeaderError::Missing {
                field: "consumerGroup"
            }
        );
        assert_eq!(err.to_string(), "the custom field consumerGroup is null");
        let err =
            QueueRequestHeader::from_ext(&ext(&[("topic", "T"), ("queueId", "x1")])).unwrap_err();
        assert!(
            matches!(
                err,
                HeaderError::Invalid {
                    field: "queueId",
                    ..
                }
            ),
            "{err}"
        );
        let err = OffsetResponseHeader::from_ext(&ext(&[("offset", "99999999999999999999")]))
            .unwrap_err();
        assert!(err.to_string().contains("64-bit"), "{err}");
    }

    #[test]
    fn booleans_parse_like_java() {
        for (text, want) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("0", false),
            ("yes", false),
            ("", false),
        ] {
            let header = QueryConsumerOffsetRequestHeader::from_ext(&ext(&[
                ("consumerGroup", "g"),
                ("topic", "t"),
                ("queueId", "0"),
                ("setZeroIfNotFound", text),
            ]))
            .unwrap();
            assert_eq!(header.set_zero_if_not_found, Some(want), "{text:?}");
        }
    }

    #[test]
    fn headers_round_trip() {
        let header = PullMessageResponseHeader {
            suggest_which_broker_id: 0,
            next_begin_offset: 10,
            min_offset: 0,
            max_offset: 11,
        };
        assert_eq!(
            PullMessageResponseHeader::from_ext(&header.to_ext()).unwrap(),
            header
        );
        assert_eq!(header.to_ext()["nextBeginOffset"], "10");
    }
}
