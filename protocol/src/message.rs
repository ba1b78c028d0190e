//! Messages: the properties string, the stored-message record that pulls hand out, the batch
//! body producers send, and message ids (PROTOCOL.md §6).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes};

/// Magic of a record with a 1-byte topic length.
pub const MAGIC_V1: i32 = 0xDAA3_20A7_u32 as i32;
/// Magic of a record with a 2-byte topic length (topics over 127 bytes).
pub const MAGIC_V2: i32 = 0xDAA3_20AB_u32 as i32;
pub use crate::names::TOPIC_MAX_BYTES;
/// Longest properties string (its length is an int16 in the record).
pub const PROPERTIES_MAX_BYTES: usize = i16::MAX as usize;

/// Well-known property keys (`MessageConst`).
pub mod property {
    /// Business keys, space-separated.
    pub const KEYS: &str = "KEYS";
    /// The tag.
    pub const TAGS: &str = "TAGS";
    /// Wait for the store before answering.
    pub const WAIT: &str = "WAIT";
    /// Delay level.
    pub const DELAY: &str = "DELAY";
    /// The client's unique message id.
    pub const UNIQ_KEY: &str = "UNIQ_KEY";
    /// Cluster of the storing broker.
    pub const CLUSTER: &str = "CLUSTER";
    /// Original topic of a retry.
    pub const RETRY_TOPIC: &str = "RETRY_TOPIC";
    /// Original topic of a delayed message.
    pub const REAL_TOPIC: &str = "REAL_TOPIC";
    /// Original queue of a delayed message.
    pub const REAL_QID: &str = "REAL_QID";
    /// Transaction half message.
    pub const TRAN_MSG: &str = "TRAN_MSG";
    /// Producer group.
    pub const PGROUP: &str = "PGROUP";
    /// Why a message went to a retry topic first: the id it had.
    pub const ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";
    /// Timer message: absolute due time, epoch ms (RocketMQ 5 `setDeliverTimeMs`).
    pub const TIMER_DELIVER_MS: &str = "TIMER_DELIVER_MS";
    /// Timer message: delay in seconds from arrival (`setDelayTimeSec`).
    pub const TIMER_DELAY_SEC: &str = "TIMER_DELAY_SEC";
    /// Timer message: delay in ms from arrival (`setDelayTimeMs`).
    pub const TIMER_DELAY_MS: &str = "TIMER_DELAY_MS";
    /// The due time the broker decided, epoch ms; its presence means "already scheduled".
    pub const TIMER_OUT_MS: &str = "TIMER_OUT_MS";
    /// When the message entered the timer (written on delivery).
    pub const TIMER_ENQUEUE_MS: &str = "TIMER_ENQUEUE_MS";
    /// When the message left the timer (written on delivery).
    pub const TIMER_DEQUEUE_MS: &str = "TIMER_DEQUEUE_MS";
    /// A cancel marker: `<real topic>+<UNIQ_KEY>` of the timer message it cancels.
    pub const TIMER_DEL_UNIQKEY: &str = "TIMER_DEL_UNIQKEY";
    /// Aliyun ONS's due time, epoch ms (ali-ons `setStartDeliverTime`).
    pub const START_DELIVER_TIME: &str = "__STARTDELIVERTIME";
    /// A half message's transaction id (its `UNIQ_KEY`), set by the broker.
    pub const TRANSACTION_ID: &str = "__transactionId__";
    /// Seconds before the broker may check a half message (a user property).
    pub const CHECK_IMMUNITY_TIME_IN_SECONDS: &str = "CHECK_IMMUNITY_TIME_IN_SECONDS";
    /// Checks the broker sent for a half message.
    pub const TRANSACTION_CHECK_TIMES: &str = "TRANSACTION_CHECK_TIMES";
}

/// System topics of scheduled delivery (RocketMQ's `TopicValidator`).
pub mod system_topic {
    /// Messages with a delay level wait here, queue = level − 1.
    pub const SCHEDULE: &str = "SCHEDULE_TOPIC_XXXX";
    /// Timer messages wait here, queue 0.
    pub const TIMER: &str = "rmq_sys_wheel_timer";
    /// Queues of [`SCHEDULE`] at least (`SCHEDULE_TOPIC_QUEUE_NUM`).
    pub const SCHEDULE_QUEUES: i32 = 18;

    /// Half messages of transactions wait here, queue 0.
    pub const TRANS_HALF: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
    /// RocketMQ's op records of resolved half messages (raftmq keeps outcomes in the half log;
    /// the name is reserved all the same).
    pub const TRANS_OP_HALF: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";
    /// Half messages given up after too many checks, never delivered.
    pub const TRANS_CHECK_MAX_TIME: &str = "TRANS_CHECK_MAX_TIME_TOPIC";

    /// Whether `topic` is one where scheduled messages wait (producers may not send to it).
    pub fn is_scheduled(topic: &str) -> bool {
        topic == SCHEDULE || topic == TIMER
    }

    /// Whether `topic` holds transactions' internal records (producers may not send to it).
    pub fn is_transactional(topic: &str) -> bool {
        topic == TRANS_HALF || topic == TRANS_OP_HALF || topic == TRANS_CHECK_MAX_TIME
    }
}

/// `MessageSysFlag` bits.
pub mod sys_flag {
    /// Body is compressed.
    pub const COMPRESSED: i32 = 0x1;
    /// Several tags.
    pub const MULTI_TAGS: i32 = 0x2;
    /// Transaction type mask.
    pub const TRANSACTION_MASK: i32 = 0xC;
    /// Transaction type: a half message (`TRANSACTION_PREPARED_TYPE`).
    pub const TRANSACTION_PREPARED: i32 = 0x4;
    /// Transaction type: committed (`TRANSACTION_COMMIT_TYPE`).
    pub const TRANSACTION_COMMIT: i32 = 0x8;
    /// Transaction type: rolled back (`TRANSACTION_ROLLBACK_TYPE`).
    pub const TRANSACTION_ROLLBACK: i32 = 0xC;
    /// Born host is IPv6.
    pub const BORNHOST_V6: i32 = 0x10;
    /// Store host is IPv6.
    pub const STOREHOST_V6: i32 = 0x20;
}

/// A record, header or body is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message at byte {at}: {reason}")]
pub struct MessageError {
    /// Where in the buffer.
    pub at: usize,
    /// What was wrong.
    pub reason: String,
}

fn err(at: usize, reason: impl Into<String>) -> MessageError {
    MessageError {
        at,
        reason: reason.into(),
    }
}

/// Message properties in their order of arrival.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties(pub Vec<(String, String)>);

impl Properties {
    /// Parses `key \u{1} value \u{2}` pairs as Java's `string2messageProperties` does: pieces
    /// shorter than 3 characters, or with an empty key or value, are skipped.
    pub fn parse(text: &str) -> Properties {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for piece in text.split('\u{2}') {
            if piece.chars().count() < 3 {
                continue;
            }
            let Some((key, value)) = piece.split_once('\u{1}') else {
                continue;
            };
            if key.is_empty() || value.is_empty() {
                continue;
            }
            match pairs.iter_mut().find(|(k, _)| k == key) {
                Some(pair) => pair.1 = value.to_string(),
                None => pairs.push((key.to_string(), value.to_string())),
            }
        }
        Properties(pairs)
    }

    /// The wire text: every pair followed by `\u{2}`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (key, value) in &self.0 {
            out.push_str(key);
            out.push('\u{1}');
            out.push_str(value);
            out.push('\u{2}');
        }
        out
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key`, keeping its place if present.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(pair) => pair.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let at = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(at).1)
    }

    /// The space-separated `KEYS`.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.get(property::KEYS)
            .unwrap_or("")
            .split(' ')
            .filter(|k| !k.is_empty())
    }
}

/// Java's `String.hashCode` over UTF-16 units, which RocketMQ stores as a message's tags code.
pub fn java_string_hash(text: &str) -> i32 {
    text.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The tags code of a consume-queue unit: the hash of `TAGS`, or 0 without tags.
pub fn tags_code(tags: Option<&str>) -> i64 {
    tags.filter(|t| !t.is_empty())
        .map_or(0, |t| i64::from(java_string_hash(t)))
}

/// `CRC32(body) & 0x7FFFFFFF`, RocketMQ's body CRC.
pub fn body_crc(body: &[u8]) -> i32 {
    (crc32fast::hash(body) & 0x7FFF_FFFF) as i32
}

/// A message as stored and pulled (`MessageExt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue_id: i32,
    /// User flag.
    pub flag: i32,
    /// Logical offset in the queue.
    pub queue_offset: i64,
    /// Commit-log offset: the message's handle.
    pub commit_log_offset: i64,
    /// `MessageSysFlag` (host V6 bits are derived from the addresses when encoding).
    pub sys_flag: i32,
    /// When the producer made it (ms).
    pub born_timestamp: i64,
    /// The producer's address.
    pub born_host: SocketAddr,
    /// When the broker stored it (ms).
    pub store_timestamp: i64,
    /// The storing broker's client address.
    pub store_host: SocketAddr,
    /// Times consumed before.
    pub reconsume_times: i32,
    /// Half-message offset of a committed transaction message, else 0.
    pub prepared_transaction_offset: i64,
    /// Body as stored (compressed if flagged).
    pub body: Bytes,
    /// Properties.
    pub properties: Properties,
}

/// Byte offset of QUEUEOFFSET in a record.
pub const QUEUE_OFFSET_AT: usize = 20;
/// Byte offset of the commit-log offset in a record (RocketMQ's PHYSICALOFFSET field).
pub const COMMIT_LOG_OFFSET_AT: usize = 28;
/// Byte offset of STORETIMESTAMP in a record with an IPv4 born host.
pub const STORE_TIMESTAMP_AT_V4: usize = 56;

fn host_len(addr: &SocketAddr) -> usize {
    if addr.is_ipv4() { 8 } else { 20 }
}

fn put_host(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => out.put_slice(&ip.octets()),
        IpAddr::V6(ip) => out.put_slice(&ip.octets()),
    }
    out.put_i32(i32::from(addr.port()));
}

impl StoredMessage {
    /// The record's fields, borrowed, with the properties text and body CRC given.
    fn view<'a>(&'a self, properties_text: &'a str) -> RecordView<'a> {
        RecordView {
            size: 0,
            body_crc: body_crc(&self.body),
            queue_id: self.queue_id,
            flag: self.flag,
            queue_offset: self.queue_offset,
            commit_log_offset: self.commit_log_offset,
            sys_flag: self.sys_flag,
            born_timestamp: self.born_timestamp,
            born_host: self.born_host,
            store_timestamp: self.store_timestamp,
            store_host: self.store_host,
            reconsume_times: self.reconsume_times,
            prepared_transaction_offset: self.prepared_transaction_offset,
            body: &self.body,
            topic: &self.topic,
            properties_text,
        }
    }

    /// Size of the encoded record.
    pub fn encoded_len(&self) -> usize {
        self.view(&self.properties.encode()).encoded_len()
    }

    /// Appends the record (PROTOCOL.md §6.1): magic V1 unless the topic needs V2, host V6 bits
    /// set from the addresses.
    ///
    /// # Errors
    /// A topic over 32767 bytes or properties over [`PROPERTIES_MAX_BYTES`].
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), MessageError> {
        self.view(&self.properties.encode()).encode(out)
    }

    /// Decodes one record at the start of `bytes`, returning it and its size.
    ///
    /// # Errors
    /// [`MessageError`] naming the field and position; never panics.
    pub fn decode(bytes: &[u8]) -> Result<(StoredMessage, usize), MessageError> {
        let view = RecordView::parse(bytes)?;
        Ok((
            StoredMessage {
                topic: view.topic.to_string(),
                queue_id: view.queue_id,
                flag: view.flag,
                queue_offset: view.queue_offset,
                commit_log_offset: view.commit_log_offset,
                sys_flag: view.sys_flag,
                born_timestamp: view.born_timestamp,
                born_host: view.born_host,
                store_timestamp: view.store_timestamp,
                store_host: view.store_host,
                reconsume_times: view.reconsume_times,
                prepared_transaction_offset: view.prepared_transaction_offset,
                body: Bytes::copy_from_slice(view.body),
                properties: view.properties(),
            },
            view.size,
        ))
    }

    /// Decodes concatenated records (a pull or query body).
    ///
    /// # Errors
    /// The first malformed record.
    pub fn decode_all(mut bytes: &[u8]) -> Result<Vec<StoredMessage>, MessageError> {
        let mut out = Vec::new();
        let mut at = 0;
        while !bytes.is_empty() {
            let (message, size) = StoredMessage::decode(bytes).map_err(|e| MessageError {
                at: at + e.at,
                reason: e.reason,
            })?;
            out.push(message);
            bytes = &bytes[size..];
            at += size;
        }
        Ok(out)
    }
}

/// A record read in place, without copying its body: what applying a message needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Size of the record as read (0 for one built to be encoded).
    pub size: usize,
    /// BODYCRC as stored: `body_crc(body)` when the record is intact.
    pub body_crc: i32,
    /// Queue.
    pub queue_id: i32,
    /// User flag.
    pub flag: i32,
    /// Logical offset in the queue.
    pub queue_offset: i64,
    /// Commit-log offset.
    pub commit_log_offset: i64,
    /// `MessageSysFlag`.
    pub sys_flag: i32,
    /// When the producer made it (ms).
    pub born_timestamp: i64,
    /// The producer's address.
    pub born_host: SocketAddr,
    /// When the broker stored it (ms).
    pub store_timestamp: i64,
    /// The storing broker.
    pub store_host: SocketAddr,
    /// Times consumed before.
    pub reconsume_times: i32,
    /// Half-message offset.
    pub prepared_transaction_offset: i64,
    /// Body.
    pub body: &'a [u8],
    /// Topic.
    pub topic: &'a str,
    /// Properties text.
    pub properties_text: &'a str,
}

impl<'a> RecordView<'a> {
    /// Reads the record at the start of `bytes`.
    ///
    /// # Errors
    /// [`MessageError`] naming the field and position; never panics.
    pub fn parse(bytes: &'a [u8]) -> Result<RecordView<'a>, MessageError> {
        let mut r = Reader { bytes, at: 0 };
        let total = r.i32("TOTALSIZE")?;
        if total < 0 || total as usize > bytes.len() {
            return Err(err(
                0,
                format!("TOTALSIZE {total} but {} bytes remain", bytes.len()),
            ));
        }
        let total = total as usize;
        let mut r = Reader {
            bytes: &bytes[..total],
            at: 4,
        };
        let magic = r.i32("MAGICCODE")?;
        if magic != MAGIC_V1 && magic != MAGIC_V2 {
            return Err(err(4, format!("unknown magic code {magic:#010x}")));
        }
        let body_crc = r.i32("BODYCRC")?;
        let queue_id = r.i32("QUEUEID")?;
        let flag = r.i32("FLAG")?;
        let queue_offset = r.i64("QUEUEOFFSET")?;
        let commit_log_offset = r.i64("PHYSICALOFFSET")?;
        let sys_flag = r.i32("SYSFLAG")?;
        let born_timestamp = r.i64("BORNTIMESTAMP")?;
        let born_host = r.host(sys_flag & sys_flag::BORNHOST_V6 != 0, "BORNHOST")?;
        let store_timestamp = r.i64("STORETIMESTAMP")?;
        let store_host = r.host(sys_flag & sys_flag::STOREHOST_V6 != 0, "STOREHOST")?;
        let reconsume_times = r.i32("RECONSUMETIMES")?;
        let prepared_transaction_offset = r.i64("PREPARED TRANSACTION OFFSET")?;
        let body_len = r.i32("BODYLENGTH")?;
        let body = r.take(len(body_len, r.at, "BODYLENGTH")?, "BODY")?;
        let topic_len = if magic == MAGIC_V2 {
            len(i32::from(r.i16("TOPICLENGTH")?), r.at, "TOPICLENGTH")?
        } else {
            usize::from(r.take(1, "TOPICLENGTH")?[0])
        };
        let topic = r.str(topic_len, "TOPIC")?;
        let props_len = len(
            i32::from(r.i16("PROPERTIESLENGTH")?),
            r.at,
            "PROPERTIESLENGTH",
        )?;
        let properties_text = r.str(props_len, "PROPERTIES")?;
        if r.at != total {
            return Err(err(
                r.at,
                format!(
                    "{} bytes after the properties, inside TOTALSIZE",
                    total - r.at
                ),
            ));
        }
        Ok(RecordView {
            size: total,
            body_crc,
            queue_id,
            flag,
            queue_offset,
            commit_log_offset,
            sys_flag,
            born_timestamp,
            born_host,
            store_timestamp,
            store_host,
            reconsume_times,
            prepared_transaction_offset,
            body,
            topic,
            properties_text,
        })
    }

    /// The parsed properties.
    pub fn properties(&self) -> Properties {
        Properties::parse(self.properties_text)
    }

    /// The value of property `key`, as `self.properties().get(key)` gives it (the last valid
    /// pair wins), without building the map.
    pub fn property(&self, key: &str) -> Option<&'a str> {
        self.properties_text
            .split('\u{2}')
            .filter_map(|piece| piece.split_once('\u{1}'))
            .filter(|(k, v)| *k == key && !v.is_empty())
            .map(|(_, v)| v)
            .next_back()
    }

    /// Whether the stored body CRC matches the body.
    pub fn body_crc_ok(&self) -> bool {
        self.body_crc == body_crc(self.body)
    }

    /// Size of the record [`RecordView::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let topic_len = if self.topic.len() > TOPIC_MAX_BYTES {
            2
        } else {
            1
        };
        4 + 4
            + 4
            + 4
            + 4
            + 8
            + 8
            + 4
            + 8
            + host_len(&self.born_host)
            + 8
            + host_len(&self.store_host)
            + 4
            + 8
            + 4
            + self.body.len()
            + topic_len
            + self.topic.len()
            + 2
            + self.properties_text.len()
    }

    /// Appends the record (PROTOCOL.md §6.1) with these fields: magic V1 unless the topic needs
    /// V2, host V6 bits set from the addresses, BODYCRC as `body_crc` says. A view read from
    /// one record and changed (a committed copy of a half message) is written without parsing
    /// its properties or copying its body twice.
    ///
    /// # Errors
    /// A topic over 32767 bytes or properties over [`PROPERTIES_MAX_BYTES`].
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), MessageError> {
        let properties = self.properties_text.as_bytes();
        if properties.len() > PROPERTIES_MAX_BYTES {
            return Err(err(
                0,
                format!(
                    "properties of {} bytes are over the {PROPERTIES_MAX_BYTES}-byte limit",
                    properties.len()
                ),
            ));
        }
        if self.topic.len() > i16::MAX as usize {
            return Err(err(0, format!("topic of {} bytes", self.topic.len())));
        }
        let mut sys_flag = self.sys_flag & !(sys_flag::BORNHOST_V6 | sys_flag::STOREHOST_V6);
        if self.born_host.is_ipv6() {
            sys_flag |= sys_flag::BORNHOST_V6;
        }
        if self.store_host.is_ipv6() {
            sys_flag |= sys_flag::STOREHOST_V6;
        }
        let v2 = self.topic.len() > TOPIC_MAX_BYTES;
        let start = out.len();
        let total = self.encoded_len();
        out.reserve(total);
        out.put_i32(total as i32);
        out.put_i32(if v2 { MAGIC_V2 } else { MAGIC_V1 });
        out.put_i32(self.body_crc);
        out.put_i32(self.queue_id);
        out.put_i32(self.flag);
        out.put_i64(self.queue_offset);
        out.put_i64(self.commit_log_offset);
        out.put_i32(sys_flag);
        out.put_i64(self.born_timestamp);
        put_host(out, &self.born_host);
        out.put_i64(self.store_timestamp);
        put_host(out, &self.store_host);
        out.put_i32(self.reconsume_times);
        out.put_i64(self.prepared_transaction_offset);
        out.put_i32(self.body.len() as i32);
        out.put_slice(self.body);
        if v2 {
            out.put_i16(self.topic.len() as i16);
        } else {
            out.put_u8(self.topic.len() as u8);
        }
        out.put_slice(self.topic.as_bytes());
        out.put_i16(properties.len() as i16);
        out.put_slice(properties);
        debug_assert_eq!(out.len() - start, total);
        Ok(())
    }
}

fn len(value: i32, at: usize, what: &str) -> Result<usize, MessageError> {
    usize::try_from(value).map_err(|_| err(at, format!("negative {what} {value}")))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], MessageError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| {
                err(
                    self.at,
                    format!(
                        "{what} needs {n} bytes but {} remain",
                        self.bytes.len() - self.at
                    ),
                )
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn i16(&mut self, what: &str) -> Result<i16, MessageError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self, what: &str) -> Result<i32, MessageError> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self, what: &str) -> Result<i64, MessageError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }
    fn host(&mut self, v6: bool, what: &str) -> Result<SocketAddr, MessageError> {
        let ip = if v6 {
            let b = self.take(16, what)?;
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            IpAddr::V6(Ipv6Addr::from(a))
        } else {
            let b = self.take(4, what)?;
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        };
        let port = self.i32(what)?;
        Ok(SocketAddr::new(ip, port as u16))
    }
    fn text(&mut self, n: usize, what: &str) -> Result<String, MessageError> {
        self.str(n, what).map(str::to_string)
    }
    fn str(&mut self, n: usize, what: &str) -> Result<&'a str, MessageError> {
        let at = self.at;
        let bytes = self.take(n, what)?;
        std::str::from_utf8(bytes).map_err(|_| err(at, format!("{what} is not UTF-8")))
    }
}

/// One message of a SEND_BATCH_MESSAGE body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    /// User flag.
    pub flag: i32,
    /// Body.
    pub body: Bytes,
    /// Its own properties (UNIQ_KEY, TAGS, KEYS…).
    pub properties: Properties,
}

/// Decodes a batch body (PROTOCOL.md §6.7).
///
/// # Errors
/// The first malformed item, with its byte position.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<BatchItem>, MessageError> {
    let mut items = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let mut r = Reader {
            bytes: &bytes[at..],
            at: 0,
        };
        let total = r.i32("TOTALSIZE")?;
        let total = len(total, at, "TOTALSIZE")?;
        if total > bytes.len() - at || total < 4 {
            return Err(err(
                at,
                format!(
                    "item TOTALSIZE {total} but {} bytes remain",
                    bytes.len() - at
                ),
            ));
        }
        let mut r = Reader {
            bytes: &bytes[at..at + total],
            at: 4,
        };
        let fail = |e: MessageError| MessageError {
            at: at + e.at,
            reason: e.reason,
        };
        let _magic = r.i32("MAGICCODE").map_err(fail)?;
        let _crc = r.i32("BODYCRC").map_err(fail)?;
        let flag = r.i32("FLAG").map_err(fail)?;
        let body_len = r.i32("BODYLENGTH").map_err(fail)?;
        let body = Bytes::copy_from_slice(
            r.take(len(body_len, at + r.at, "BODYLENGTH")?, "BODY")
                .map_err(fail)?,
        );
        let props_len = r.i16("PROPERTIESLENGTH").map_err(fail)?;
        let props_len = len(i32::from(props_len), at + r.at, "PROPERTIESLENGTH")?;
        let properties = Properties::parse(&r.text(props_len, "PROPERTIES").map_err(fail)?);
        if r.at != total {
            return Err(err(
                at + r.at,
                "bytes after the properties, inside TOTALSIZE",
            ));
        }
        items.push(BatchItem {
            flag,
            body,
            properties,
        });
        at += total;
    }
    Ok(items)
}

/// Encodes a batch body as Java's `MessageDecoder.encodeMessages` does.
pub fn encode_batch(items: &[BatchItem]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        let props = item.properties.encode();
        let total = 4 + 4 + 4 + 4 + 4 + item.body.len() + 2 + props.len();
        out.put_i32(total as i32);
        out.put_i32(0);
        out.put_i32(0);
        out.put_i32(item.flag);
        out.put_i32(item.body.len() as i32);
        out.put_slice(&item.body);
        out.put_i16(props.len() as i16);
        out.put_slice(props.as_bytes());
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xF)]));
    }
    out
}

/// The offset message id: uppercase hex of store host, port and commit-log offset.
pub fn offset_msg_id(store_host: SocketAddr, commit_log_offset: i64) -> String {
    let mut bytes = Vec::with_capacity(28);
    put_host(&mut bytes, &store_host);
    bytes.put_i64(commit_log_offset);
    hex(&bytes)
}

/// Decodes an offset message id into store host and commit-log offset.
///
/// # Errors
/// Not 32 or 56 hex digits.
pub fn decode_offset_msg_id(id: &str) -> Result<(SocketAddr, i64), MessageError> {
    if id.len() != 32 && id.len() != 56 {
        return Err(err(0, format!("message id of {} characters", id.len())));
    }
    let bytes: Vec<u8> = (0..id.len())
        .step_by(2)
        .map(|i| {
            id.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| err(i, "not hexadecimal"))
        })
        .collect::<Result<_, _>>()?;
    let mut r = Reader {
        bytes: &bytes,
        at: 0,
    };
    let host = r.host(id.len() == 56, "host")?;
    let offset = r.i64("offset")?;
    Ok((host, offset))
}

/// A broker-made `UNIQ_KEY` in the client's layout: ip ‖ pid ‖ a per-process hash ‖ ms since
/// `epoch_ms` ‖ counter, uppercase hex. Unique per (process, time, counter).
pub fn uniq_id(
    ip: IpAddr,
    pid: u16,
    process_hash: i32,
    since_epoch_ms: i32,
    counter: u16,
) -> String {
    let mut bytes = Vec::with_capacity(28);
    match ip {
        IpAddr::V4(ip) => bytes.put_slice(&ip.octets()),
        IpAddr::V6(ip) => bytes.put_slice(&ip.octets()),
    }
    bytes.put_u16(pid);
    bytes.put_i32(process_hash);
    bytes.put_i32(since_epoch_ms);
    bytes.put_u16(counter);
    hex(&bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sample() -> StoredMessage {
        let mut properties = Properties::default();
        properties.set(property::TAGS, "TagA");
        properties.set(property::KEYS, "k1 k2");
        properties.set(property::UNIQ_KEY, "7F0000010000");
        StoredMessage {
            topic: "TopicTest".into(),
            queue_id: 3,
            flag: 7,
            queue_offset: 42,
            commit_log_offset: 123_456,
            sys_flag: 0,
            born_timestamp: 1_700_000_000_000,
            born_host: "10.0.0.5:53211".parse().unwrap(),
            store_timestamp: 1_700_000_000_010,
            store_host: "192.168.0.10:10911".parse().unwrap(),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: Bytes::from_static(b"hello"),
            properties,
        }
    }

    #[test]
    fn java_hashes() {
        assert_eq!(java_string_hash("TagA"), 2_598_919);
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        // Wraps like Java's int arithmetic.
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(tags_code(None), 0);
    }

    #[test]
    fn properties_parse_like_java() {
        let p = Properties::parse("TAGS\u{1}a\u{2}x\u{2}\u{1}v\u{2}K\u{1}\u{2}KEYS\u{1}k1 k2\u{2}");
        assert_eq!(p.get("TAGS"), Some("a"));
        assert_eq!(p.get("K"), None);
        assert_eq!(p.keys().collect::<Vec<_>>(), ["k1", "k2"]);
        assert_eq!(p.encode(), "TAGS\u{1}a\u{2}KEYS\u{1}k1 k2\u{2}");
    }

    #[test]
    fn record_layout_matches_rocketmq() {
        let message = sample();
        let mut out = Vec::new();
        message.encode(&mut out).unwrap();
        assert_eq!(out.len(), message.encoded_len());
        assert_eq!(&out[4..8], &MAGIC_V1.to_be_bytes());
        assert_eq!(
            &out[QUEUE_OFFSET_AT..QUEUE_OFFSET_AT + 8],
            &42i64.to_be_bytes()
        );
        assert_eq!(
            &out[COMMIT_LOG_OFFSET_AT..COMMIT_LOG_OFFSET_AT + 8],
            &123_456i64.to_be_bytes()
        );
        assert_eq!(
            &out[STORE_TIMESTAMP_AT_V4..STORE_TIMESTAMP_AT_V4 + 8],
            &1_700_000_000_010i64.to_be_bytes()
        );
        let (back, size) = StoredMessage::decode(&out).unwrap();
        assert_eq!(size, out.len());
        assert_eq!(back, message);
    }

    #[test]
    fn long_topics_and_ipv6_hosts() {
        let mut message = sample();
        message.topic = "t".repeat(200);
        message.store_host = "[::1]:10911".parse().unwrap();
        let mut out = Vec::new();
        message.encode(&mut out).unwrap();
        assert_eq!(&out[4..8], &MAGIC_V2.to_be_bytes());
        let (back, _) = StoredMessage::decode(&out).unwrap();
        assert_eq!(back.topic, message.topic);
        assert_eq!(back.store_host, message.store_host);
        assert_eq!(back.sys_flag, sys_flag::STOREHOST_V6);
    }

    #[test]
    fn bad_records_are_named() {
        let mut out = Vec::new();
        sample().encode(&mut out).unwrap();
        let mut bad_magic = out.clone();
        bad_magic[4] = 0;
        assert!(
            StoredMessage::decode(&bad_magic)
                .unwrap_err()
                .reason
                .contains("magic")
        );
        assert!(
            StoredMessage::decode(&out[..out.len() - 1])
                .unwrap_err()
                .reason
                .contains("TOTALSIZE")
        );
        let mut two = out.clone();
        two.extend_from_slice(&out[..10]);
        let e = StoredMessage::decode_all(&two).unwrap_err();
        assert_eq!(e.at, out.len());
    }

    #[test]
    fn batch_round_trip() {
        let mut p = Properties::default();
        p.set(property::UNIQ_KEY, "A1");
        let items = vec![
            BatchItem {
                flag: 0,
                body: Bytes::from_static(b"one"),
                properties: p.clone(),
            },
            BatchItem {
                flag: 1,
                body: Bytes::new(),
                properties: Properties::default(),
            },
        ];
        let bytes = encode_batch(&items);
        assert_eq!(decode_batch(&bytes).unwrap(), items);
        assert!(decode_batch(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn message_ids() {
        let addr: SocketAddr = "192.168.0.10:10911".parse().unwrap();
        let id = offset_msg_id(addr, 123_456);
        assert_eq!(id, "C0A8000A00002A9F000000000001E240");
        assert_eq!(decode_offset_msg_id(&id).unwrap(), (addr, 123_456));
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        assert_eq!(
            decode_offset_msg_id(&offset_msg_id(v6, 9)).unwrap(),
            (v6, 9)
        );
        assert!(decode_offset_msg_id("XYZ").is_err());
        assert!(decode_offset_msg_id(&"G".repeat(32)).is_err());
        let uniq = uniq_id("127.0.0.1".parse().unwrap(), 1, 2, 3, 4);
        assert_eq!(uniq.len(), 32);
        assert!(uniq.starts_with("7F000001"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = StoredMessage::decode_all(&bytes);
            let _ = decode_batch(&bytes);
            let _ = Properties::parse(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn records_round_trip(body in proptest::collection::vec(proptest::num::u8::ANY, 0..64), topic in "[A-Za-z0-9_%-]{1,140}", queue_offset in 0i64..i64::MAX) {
            let mut message = sample();
            message.body = Bytes::from(body);
            message.topic = topic;
            message.queue_offset = queue_offset;
            let mut out = Vec::new();
            message.encode(&mut out).unwrap();
            let (back, size) = StoredMessage::decode(&out).unwrap();
            proptest::prop_assert_eq!(size, out.len());
            proptest::prop_assert_eq!(back, message);
        }
    }
}
