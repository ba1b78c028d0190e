//! Request, response and language codes (PROTOCOL.md §1.3, §2).

/// Request codes raftmq serves or sends (RocketMQ's `RequestCode`).
pub mod request {
    /// V1 send (`SendMessageRequestHeader`, long field names).
    pub const SEND_MESSAGE: i32 = 10;
    /// Pull from a consume queue, with long polling.
    pub const PULL_MESSAGE: i32 = 11;
    /// Messages by key or unique key.
    pub const QUERY_MESSAGE: i32 = 12;
    /// A consumer group's committed offset of a queue.
    pub const QUERY_CONSUMER_OFFSET: i32 = 14;
    /// Commit a consumer group's offset of a queue (mostly oneway).
    pub const UPDATE_CONSUMER_OFFSET: i32 = 15;
    /// Create or update a topic on a broker.
    pub const UPDATE_AND_CREATE_TOPIC: i32 = 17;
    /// Offset of the message stored at a time.
    pub const SEARCH_OFFSET_BY_TIMESTAMP: i32 = 29;
    /// Next offset to be written in a queue.
    pub const GET_MAX_OFFSET: i32 = 30;
    /// First offset still stored in a queue.
    pub const GET_MIN_OFFSET: i32 = 31;
    /// Store time of the first message of a queue.
    pub const GET_EARLIEST_MSG_STORETIME: i32 = 32;
    /// One message by its commit-log offset.
    pub const VIEW_MESSAGE_BY_ID: i32 = 33;
    /// Client → broker liveness and subscriptions.
    pub const HEART_BEAT: i32 = 34;
    /// Client shutdown.
    pub const UNREGISTER_CLIENT: i32 = 35;
    /// A failed consumption sent back for retry.
    pub const CONSUMER_SEND_MSG_BACK: i32 = 36;
    /// Commit or roll back a transaction.
    pub const END_TRANSACTION: i32 = 37;
    /// Client ids of a consumer group.
    pub const GET_CONSUMER_LIST_BY_GROUP: i32 = 38;
    /// Broker → producer: ask a transaction's state.
    pub const CHECK_TRANSACTION_STATE: i32 = 39;
    /// Broker → consumer: the group's members changed, rebalance now.
    pub const NOTIFY_CONSUMER_IDS_CHANGED: i32 = 40;
    /// Orderly consumers lock queues.
    pub const LOCK_BATCH_MQ: i32 = 41;
    /// Orderly consumers unlock queues.
    pub const UNLOCK_BATCH_MQ: i32 = 42;
    /// Validate a non-TAG subscription.
    pub const CHECK_CLIENT_CONFIG: i32 = 46;
    /// A key-value config from the namesrv.
    pub const GET_KV_CONFIG: i32 = 101;
    /// Broker → namesrv registration.
    pub const REGISTER_BROKER: i32 = 103;
    /// Broker → namesrv on shutdown.
    pub const UNREGISTER_BROKER: i32 = 104;
    /// Client → namesrv: route of a topic.
    pub const GET_ROUTEINFO_BY_TOPIC: i32 = 105;
    /// Admin → namesrv: clusters and brokers.
    pub const GET_BROKER_CLUSTER_INFO: i32 = 106;
    /// Admin → namesrv: every topic.
    pub const GET_ALL_TOPIC_LIST_FROM_NAMESERVER: i32 = 206;
    /// V2 send (single-letter field names).
    pub const SEND_MESSAGE_V2: i32 = 310;
    /// Batch send.
    pub const SEND_BATCH_MESSAGE: i32 = 320;
    /// Admin → broker (`mqadmin deleteExpiredCommitLog`): delete expired CommitLog files now,
    /// whatever `deleteWhen` says. No header; answers at once.
    pub const DELETE_EXPIRED_COMMITLOG: i32 = 329;
    /// Lite pull consumers' pull.
    pub const LITE_PULL_MESSAGE: i32 = 361;
    /// Broker → namesrv keep-alive in 5.x controller setups.
    pub const BROKER_HEARTBEAT: i32 = 904;

    /// raftmq's own: admin → broker replica, hand the group's leadership to the node in ext
    /// field `to` (`n1` or a node id). Not a RocketMQ code: raftmq's private codes live in
    /// 30000..=30999, far above every code Apache RocketMQ 5.3 defines that fits 16 bits (the
    /// highest is 3543, BATCH_ACK_MESSAGE; 4.x's POP codes 200050+ do not fit), and below
    /// `i16::MAX`, so RocketMQ's binary header (an int16 code) can carry it. DLedger moves
    /// leadership through its own protocol on the DLedger port; raftmq's Raft port speaks
    /// openraft's, so the request goes to the broker's client port instead.
    pub const RAFTMQ_TRANSFER_LEADER: i32 = 30_001;
    /// raftmq's own: admin → the group's leader, add replica ext `id` (`n3` or a node id) at
    /// Raft address ext `raftAddr`: as a learner, then a voter once caught up (ext
    /// `timeoutMillis` bounds the wait).
    pub const RAFTMQ_ADD_REPLICA: i32 = 30_002;
    /// raftmq's own: admin → the group's leader, remove replica ext `id` (the leader itself
    /// hands leadership over first).
    pub const RAFTMQ_REMOVE_REPLICA: i32 = 30_003;

    const _: () =
        assert!(RAFTMQ_TRANSFER_LEADER > 3543 && RAFTMQ_TRANSFER_LEADER <= i16::MAX as i32);
}

/// Response codes (RocketMQ's `RemotingSysResponseCode` and `ResponseCode`).
pub mod response {
    /// Success.
    pub const SUCCESS: i32 = 0;
    /// A server-side failure; the remark says what.
    pub const SYSTEM_ERROR: i32 = 1;
    /// Overloaded; try later.
    pub const SYSTEM_BUSY: i32 = 2;
    /// The request code is unknown.
    pub const REQUEST_CODE_NOT_SUPPORTED: i32 = 3;
    /// Stored, but not flushed in time.
    pub const FLUSH_DISK_TIMEOUT: i32 = 10;
    /// Stored, but no replica to copy it to.
    pub const SLAVE_NOT_AVAILABLE: i32 = 11;
    /// Stored, but not replicated in time.
    pub const FLUSH_SLAVE_TIMEOUT: i32 = 12;
    /// The message breaks a rule (size, topic name, properties).
    pub const MESSAGE_ILLEGAL: i32 = 13;
    /// This broker cannot serve the request now (not the master, shutting down).
    pub const SERVICE_NOT_AVAILABLE: i32 = 14;
    /// The client's version is not supported.
    pub const VERSION_NOT_SUPPORTED: i32 = 15;
    /// Not allowed by the topic's or broker's permission.
    pub const NO_PERMISSION: i32 = 16;
    /// The topic does not exist.
    pub const TOPIC_NOT_EXIST: i32 = 17;
    /// Refused by rule (an END_TRANSACTION after the message's immunity: the check decides).
    pub const ILLEGAL_OPERATION: i32 = 604;
    /// The topic exists already.
    pub const TOPIC_EXIST_ALREADY: i32 = 18;
    /// No new message (after a hold, if the pull allowed one).
    pub const PULL_NOT_FOUND: i32 = 19;
    /// Messages exist but none matched the filter; pull again at once.
    pub const PULL_RETRY_IMMEDIATELY: i32 = 20;
    /// The pulled offset is out of range; the response carries a corrected one.
    pub const PULL_OFFSET_MOVED: i32 = 21;
    /// Nothing found (offset or message query).
    pub const QUERY_NOT_FOUND: i32 = 22;
    /// The subscription expression does not parse.
    pub const SUBSCRIPTION_PARSE_FAILED: i32 = 23;
    /// No subscription known for the group.
    pub const SUBSCRIPTION_NOT_EXIST: i32 = 24;
    /// The broker's subscription is older than the request's.
    pub const SUBSCRIPTION_NOT_LATEST: i32 = 25;
    /// The consumer group does not exist.
    pub const SUBSCRIPTION_GROUP_NOT_EXIST: i32 = 26;
    /// A header field is missing or invalid, or a queue id is out of range.
    pub const INVALID_PARAMETER: i32 = 29;
}

/// Serialization of a command's header (the top byte of the header-length word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SerializeType {
    /// JSON text (fastjson's layout).
    #[default]
    Json,
    /// RocketMQ's binary layout.
    RocketMq,
}

impl SerializeType {
    /// The wire byte.
    pub fn code(self) -> u8 {
        match self {
            SerializeType::Json => 0,
            SerializeType::RocketMq => 1,
        }
    }

    /// The type of a wire byte, if known.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(SerializeType::Json),
            1 => Some(SerializeType::RocketMq),
            _ => None,
        }
    }

    /// The name in JSON headers (`serializeTypeCurrentRPC`).
    pub fn name(self) -> &'static str {
        match self {
            SerializeType::Json => "JSON",
            SerializeType::RocketMq => "ROCKETMQ",
        }
    }
}

/// The sender's language (RocketMQ's `LanguageCode`). Unknown names decode as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub enum Language {
    #[default]
    Java,
    Cpp,
    Dotnet,
    Python,
    Delphi,
    Erlang,
    Ruby,
    Other,
    Http,
    Go,
    Php,
    Oms,
    Rust,
    NodeJs,
}

const LANGUAGES: [(Language, &str); 14] = [
    (Language::Java, "JAVA"),
    (Language::Cpp, "CPP"),
    (Language::Dotnet, "DOTNET"),
    (Language::Python, "PYTHON"),
    (Language::Delphi, "DELPHI"),
    (Language::Erlang, "ERLANG"),
    (Language::Ruby, "RUBY"),
    (Language::Other, "OTHER"),
    (Language::Http, "HTTP"),
    (Language::Go, "GO"),
    (Language::Php, "PHP"),
    (Language::Oms, "OMS"),
    (Language::Rust, "RUST"),
    (Language::NodeJs, "NODE_JS"),
];

impl Language {
    /// The binary header byte.
    pub fn code(self) -> u8 {
        // The table is in code order.
        LANGUAGES.iter().position(|(l, _)| *l == self).unwrap_or(7) as u8
    }

    /// The language of a binary header byte; unknown bytes are `Other`.
    pub fn from_code(code: u8) -> Self {
        LANGUAGES
            .get(usize::from(code))
            .map_or(Language::Other, |(l, _)| *l)
    }

    /// The JSON header name.
    pub fn name(self) -> &'static str {
        LANGUAGES[usize::from(self.code())].1
    }

    /// The language of a JSON header name; unknown names are `Other`.
    pub fn from_name(name: &str) -> Self {
        LANGUAGES
            .iter()
            .find(|(_, n)| *n == name)
            .map_or(Language::Other, |(l, _)| *l)
    }
}

/// `MQVersion.CURRENT_VERSION` of RocketMQ 5.3.3, which raftmq announces: clients compare it
/// (a broker below 232 cannot filter by SQL92, PROTOCOL.md §1.7), so it is never 0.
pub const VERSION: i32 = 479;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_codes_match_rocketmq() {
        assert_eq!(Language::Java.code(), 0);
        assert_eq!(Language::Cpp.code(), 1);
        assert_eq!(Language::Rust.code(), 12);
        assert_eq!(Language::NodeJs.code(), 13);
        assert_eq!(Language::from_name("CPP"), Language::Cpp);
        assert_eq!(Language::from_name("COBOL"), Language::Other);
        assert_eq!(Language::from_code(200), Language::Other);
        for (language, name) in LANGUAGES {
            assert_eq!(Language::from_name(name), language);
            assert_eq!(Language::from_code(language.code()), language);
            assert_eq!(language.name(), name);
        }
    }
}
