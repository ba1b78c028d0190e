//! What the client sends and receives: [`Message`], [`SendResult`], [`PullResult`].

use std::io::{Read, Write};

use bytes::Bytes;
use protocol::body::MessageQueue;
use protocol::message::{Properties, StoredMessage, property, sys_flag};

use crate::limits;

/// The compression type bits of `MessageSysFlag` for zlib (PROTOCOL.md §6.2).
const COMPRESSION_TYPE_MASK: i32 = 0x700;
/// zlib in the compression type bits; 0 means zlib too (clients before 5.x).
const COMPRESSION_ZLIB: i32 = 0x300;

/// Highest delay level (`1s 5s 10s 30s 1m … 2h`, PROTOCOL.md §3.3).
pub const DELAY_LEVEL_MAX: u8 = 18;

/// Checks a topic name as Java's `Validators.checkTopic` does ([`protocol::names`]).
pub(crate) fn check_topic(topic: &str) -> Result<(), String> {
    protocol::names::check_topic(topic).map_err(|err| err.to_string())
}

/// A message to send.
///
/// Tags, keys and the delay level live in the properties under RocketMQ's keys, as Java's
/// `Message` keeps them; the setters below only name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic.
    pub topic: String,
    /// Body (not empty).
    pub body: Bytes,
    /// User flag, stored and handed back untouched.
    pub flag: i32,
    /// System and user properties.
    pub properties: Properties,
}

impl Message {
    /// A message with `body` for `topic`, waiting for the store before the answer (Java's
    /// `WAIT=true` default).
    pub fn new(topic: impl Into<String>, body: impl Into<Bytes>) -> Self {
        let mut properties = Properties::default();
        properties.set(property::WAIT, "true");
        Message {
            topic: topic.into(),
            body: body.into(),
            flag: 0,
            properties,
        }
    }

    /// Sets the tag consumers filter on.
    #[must_use]
    pub fn with_tags(mut self, tags: impl Into<String>) -> Self {
        self.properties.set(property::TAGS, tags);
        self
    }

    /// Sets the business keys, indexed by the broker for queries.
    #[must_use]
    pub fn with_keys<S: AsRef<str>>(mut self, keys: impl IntoIterator<Item = S>) -> Self {
        let keys: Vec<String> = keys
            .into_iter()
            .map(|k| k.as_ref().trim().to_string())
            .filter(|k| !k.is_empty())
            .collect();
        if keys.is_empty() {
            self.properties.remove(property::KEYS);
        } else {
            self.properties.set(property::KEYS, keys.join(" "));
        }
        self
    }

    /// Sets the user flag.
    #[must_use]
    pub fn with_flag(mut self, flag: i32) -> Self {
        self.flag = flag;
        self
    }

    /// Sets a user property. Keys of RocketMQ's own properties (`TAGS`, `UNIQ_KEY`…) should
    /// be set through their setters instead.
    #[must_use]
    pub fn with_property(mut self, key: impl AsRef<str>, value: impl Into<String>) -> Self {
        self.properties.set(key.as_ref(), value);
        self
    }

    /// Delays delivery by a level, 1 (1 s) to [`DELAY_LEVEL_MAX`] (2 h); 0 clears it.
    #[must_use]
    pub fn with_delay_level(mut self, level: u8) -> Self {
        if level == 0 {
            self.properties.remove(property::DELAY);
        } else {
            self.properties
                .set(property::DELAY, level.min(DELAY_LEVEL_MAX).to_string());
        }
        self
    }

    /// Delivers the message at `epoch_ms` (ms since the Unix epoch; `TIMER_DELIVER_MS`, a
    /// RocketMQ 5 timer message). A time not after the broker's now is delivered at once; the
    /// broker refuses one further than its `timerMaxDelaySec` (3 days by default).
    #[must_use]
    pub fn with_deliver_time_ms(mut self, epoch_ms: i64) -> Self {
        self.properties
            .set(property::TIMER_DELIVER_MS, epoch_ms.to_string());
        self
    }

    /// Delivers the message `delay` after the broker takes it (`TIMER_DELAY_MS`).
    #[must_use]
    pub fn with_delay(mut self, delay: std::time::Duration) -> Self {
        self.properties.set(
            property::TIMER_DELAY_MS,
            u64::try_from(delay.as_millis())
                .unwrap_or(u64::MAX)
                .to_string(),
        );
        self
    }

    /// Whether the message waits to be delivered: a delay level or a timer property.
    pub fn is_scheduled(&self) -> bool {
        self.delay_level() > 0
            || [
                property::TIMER_DELIVER_MS,
                property::TIMER_DELAY_MS,
                property::TIMER_DELAY_SEC,
                property::START_DELIVER_TIME,
            ]
            .iter()
            .any(|key| self.properties.get(key).is_some())
    }

    /// Whether the broker answers only after the message is stored (`WAIT`).
    #[must_use]
    pub fn with_wait_store(mut self, wait: bool) -> Self {
        self.properties.set(property::WAIT, wait.to_string());
        self
    }

    /// The tag.
    pub fn tags(&self) -> Option<&str> {
        self.properties.get(property::TAGS)
    }

    /// The business keys.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.properties.keys()
    }

    /// The delay level, 0 for none.
    pub fn delay_level(&self) -> u8 {
        self.properties
            .get(property::DELAY)
            .and_then(|d| d.parse().ok())
            .unwrap_or(0)
    }

    /// The client message id, once the producer has set it.
    pub fn uniq_key(&self) -> Option<&str> {
        self.properties.get(property::UNIQ_KEY)
    }
}

/// How a send ended when the broker stored the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// Stored (and flushed and replicated, if the broker waits for that).
    SendOk,
    /// Stored, but the flush did not finish in time.
    FlushDiskTimeout,
    /// Stored, but the replication did not finish in time.
    FlushSlaveTimeout,
    /// Stored, but no replica was there to copy it.
    SlaveNotAvailable,
}

impl SendStatus {
    /// The status of a send answer's code, if the message was stored.
    pub fn from_code(code: i32) -> Option<Self> {
        use protocol::code::response;
        match code {
            response::SUCCESS => Some(SendStatus::SendOk),
            response::FLUSH_DISK_TIMEOUT => Some(SendStatus::FlushDiskTimeout),
            response::FLUSH_SLAVE_TIMEOUT => Some(SendStatus::FlushSlaveTimeout),
            response::SLAVE_NOT_AVAILABLE => Some(SendStatus::SlaveNotAvailable),
            _ => None,
        }
    }
}

/// A stored message's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    /// How the broker stored it.
    pub status: SendStatus,
    /// The client id (`UNIQ_KEY`); comma-joined for a batch.
    pub msg_id: String,
    /// The broker's offset message id (store host and commit-log offset); comma-joined for a
    /// batch.
    pub offset_msg_id: String,
    /// The queue it went to.
    pub queue: MessageQueue,
    /// Its logical offset in the queue (the first message's, for a batch).
    pub queue_offset: i64,
}

/// How a pull ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullStatus {
    /// Messages found (the list may be empty after the client's tag filter).
    Found,
    /// Nothing new at the offset.
    NoNewMsg,
    /// Messages exist but none matched the filter.
    NoMatchedMsg,
    /// The offset is outside the queue; pull again at `next_begin_offset`.
    OffsetIllegal,
}

/// The answer to one pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullResult {
    /// How it ended.
    pub status: PullStatus,
    /// Where the next pull starts.
    pub next_begin_offset: i64,
    /// The queue's first offset.
    pub min_offset: i64,
    /// The queue's next offset to be written.
    pub max_offset: i64,
    /// Messages in queue order, tag-filtered, bodies inflated.
    pub messages: Vec<StoredMessage>,
}

/// Compresses a body with zlib.
pub(crate) fn deflate(body: &[u8], level: u32) -> std::io::Result<Vec<u8>> {
    let mut encoder =
        flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level.min(9)));
    encoder.write_all(body)?;
    encoder.finish()
}

/// The sys flag of a zlib-compressed body.
pub(crate) const COMPRESSED_ZLIB: i32 = sys_flag::COMPRESSED | COMPRESSION_ZLIB;

/// Inflates a pulled message's body when its sys flag says it is compressed, and clears the
/// flag. A body that does not inflate (another algorithm, corrupt) is left as it is, flagged,
/// and reported.
pub(crate) fn inflate_in_place(message: &mut StoredMessage) -> Result<(), String> {
    if message.sys_flag & sys_flag::COMPRESSED == 0 {
        return Ok(());
    }
    let kind = message.sys_flag & COMPRESSION_TYPE_MASK;
    if kind != 0 && kind != COMPRESSION_ZLIB {
        return Err(format!("compression type {} is not zlib", kind >> 8));
    }
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(&message.body[..])
        .take(limits::INFLATED_BODY_BYTES_MAX as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("the body does not inflate: {e}"))?;
    if out.len() > limits::INFLATED_BODY_BYTES_MAX {
        return Err(format!(
            "the body inflates to more than {} bytes",
            limits::INFLATED_BODY_BYTES_MAX
        ));
    }
    message.body = Bytes::from(out);
    message.sys_flag &= !(sys_flag::COMPRESSED | COMPRESSION_TYPE_MASK);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Setters write RocketMQ's property keys and read them back.
    #[test]
    fn setters_use_rocketmq_property_keys() {
        let message = Message::new("T", "b")
            .with_tags("TagA")
            .with_keys(["k1", " ", "k2"])
            .with_delay_level(3)
            .with_property("color", "red");
        let text = message.properties.encode();
        assert!(text.contains("WAIT\u{1}true\u{2}"), "{text:?}");
        assert!(text.contains("TAGS\u{1}TagA\u{2}"), "{text:?}");
        assert!(text.contains("KEYS\u{1}k1 k2\u{2}"), "{text:?}");
        assert!(text.contains("DELAY\u{1}3\u{2}"), "{text:?}");
        assert_eq!(message.tags(), Some("TagA"));
        assert_eq!(message.keys().collect::<Vec<_>>(), ["k1", "k2"]);
        assert_eq!(message.delay_level(), 3);
        assert_eq!(message.with_delay_level(0).delay_level(), 0);
    }

    /// Topic names follow Java's validator.
    #[test]
    fn topic_names_are_checked() {
        assert!(check_topic("Topic_1-%|x").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("a b").is_err());
        assert!(check_topic(&"t".repeat(128)).is_err());
    }

    /// A compressed body inflates back and its flags clear; an unknown algorithm is refused.
    #[test]
    fn compressed_bodies_inflate() {
        let body = vec![7u8; 10_000];
        let mut message = StoredMessage {
            topic: "T".into(),
            queue_id: 0,
            flag: 0,
            queue_offset: 0,
            commit_log_offset: 0,
            sys_flag: COMPRESSED_ZLIB,
            born_timestamp: 0,
            born_host: "127.0.0.1:1".parse().unwrap(),
            store_timestamp: 0,
            store_host: "127.0.0.1:2".parse().unwrap(),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: Bytes::from(deflate(&body, 5).unwrap()),
            properties: Properties::default(),
        };
        assert!(message.body.len() < body.len());
        inflate_in_place(&mut message).unwrap();
        assert_eq!(&message.body[..], &body[..]);
        assert_eq!(message.sys_flag, 0);
        message.sys_flag = sys_flag::COMPRESSED | 0x100;
        assert!(
            inflate_in_place(&mut message)
                .unwrap_err()
                .contains("not zlib")
        );
        message.sys_flag = sys_flag::COMPRESSED;
        assert!(inflate_in_place(&mut message).is_err(), "not a zlib stream");
    }
}
