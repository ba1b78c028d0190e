//! What the store puts in a Raft entry, and the append hook that writes each message's
//! commit-log offset into its record.
//!
//! ```text
//! magic "RMQS" (4) | kind (1) | reserved zeros (3) | payload
//! ```
//! - `Messages`: stored-message records (PROTOCOL.md §6.1) back to back. Record `r` of an entry
//!   whose body starts at global position `p` has commit-log offset `p + 8 + r.start`; the
//!   hook writes it into PHYSICALOFFSET on every replica's append, so the bytes in the log are
//!   identical everywhere and pulls hand them out as they are.
//! - `TopicConfig`: one topic's configuration (JSON), created or replaced.
//! - `Offsets`: consumer offsets committed by clients (JSON), batched.

use std::collections::BTreeMap;

use protocol::body::TopicConfig;
use protocol::message::COMMIT_LOG_OFFSET_AT;
use serde::{Deserialize, Serialize};

/// First bytes of every store entry.
pub const MAGIC: [u8; 4] = *b"RMQS";
/// Bytes before the payload.
pub const ENTRY_HEADER_BYTES: usize = 8;

/// The kinds of store entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Message records.
    Messages = 1,
    /// A topic's configuration.
    TopicConfig = 2,
    /// Consumer offsets.
    Offsets = 3,
}

/// One committed consumer offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetCommit {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue_id: i32,
    /// Next offset the group will consume.
    pub offset: i64,
}

/// A decoded store entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEntry<'a> {
    /// Records, back to back; `payload_at` is where they start in the entry body.
    Messages {
        /// The records.
        records: &'a [u8],
    },
    /// A topic created or changed.
    TopicConfig(TopicConfig),
    /// Offsets committed.
    Offsets(Vec<OffsetCommit>),
}

/// An entry is not a store entry or its payload is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed store entry: {0}")]
pub struct EntryError(pub String);

fn header(kind: Kind) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENTRY_HEADER_BYTES);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[kind as u8, 0, 0, 0]);
    out
}

/// An entry of message records (already encoded, back to back).
pub fn messages(records: &[u8]) -> Vec<u8> {
    let mut out = header(Kind::Messages);
    out.extend_from_slice(records);
    out
}

/// An entry creating or replacing a topic.
pub fn topic_config(config: &TopicConfig) -> Vec<u8> {
    let mut out = header(Kind::TopicConfig);
    out.extend_from_slice(&protocol::body::to_json(config));
    out
}

/// An entry committing consumer offsets.
pub fn offsets(commits: &[OffsetCommit]) -> Vec<u8> {
    let mut out = header(Kind::Offsets);
    out.extend_from_slice(&protocol::body::to_json(&commits));
    out
}

/// Decodes an entry body.
///
/// # Errors
/// [`EntryError`] for anything that is not a well-formed store entry.
pub fn decode(body: &[u8]) -> Result<StoreEntry<'_>, EntryError> {
    if body.len() < ENTRY_HEADER_BYTES || body[..4] != MAGIC {
        return Err(EntryError(format!(
            "no store magic in an entry of {} bytes",
            body.len()
        )));
    }
    let payload = &body[ENTRY_HEADER_BYTES..];
    match body[4] {
        1 => Ok(StoreEntry::Messages { records: payload }),
        2 => protocol::body::parse(payload, "topic config")
            .map(StoreEntry::TopicConfig)
            .map_err(|e| EntryError(e.to_string())),
        3 => protocol::body::parse(payload, "offsets")
            .map(StoreEntry::Offsets)
            .map_err(|e| EntryError(e.to_string())),
        kind => Err(EntryError(format!("unknown kind {kind}"))),
    }
}

/// Start and length of each record in `records`, stopping at the first one whose size field
/// is implausible (never the case for entries the broker made).
pub fn record_spans(records: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut at = 0;
    while at + 4 <= records.len() {
        let size = i32::from_be_bytes([
            records[at],
            records[at + 1],
            records[at + 2],
            records[at + 3],
        ]);
        let Ok(size) = usize::try_from(size) else {
            break;
        };
        if size < COMMIT_LOG_OFFSET_AT + 8 || at + size > records.len() {
            break;
        }
        spans.push((at, size));
        at += size;
    }
    spans
}

/// Writes each record's commit-log offset into it as the entry is appended.
#[derive(Debug, Default)]
pub struct OffsetHook;

impl dledger::AppendHook for OffsetHook {
    fn on_append(&self, body_position: u64, body: &mut [u8]) {
        if body.len() < ENTRY_HEADER_BYTES || body[..4] != MAGIC || body[4] != Kind::Messages as u8
        {
            return;
        }
        let records = &mut body[ENTRY_HEADER_BYTES..];
        for (start, _) in record_spans(records) {
            let offset = body_position + (ENTRY_HEADER_BYTES + start) as u64;
            records[start + COMMIT_LOG_OFFSET_AT..start + COMMIT_LOG_OFFSET_AT + 8]
                .copy_from_slice(&offset.to_be_bytes());
        }
    }
}

/// The commit-log offsets of an entry's records, given where the entry body starts.
pub fn commit_log_offsets(body_position: u64, records: &[u8]) -> BTreeMap<usize, u64> {
    record_spans(records)
        .into_iter()
        .map(|(start, _)| (start, body_position + (ENTRY_HEADER_BYTES + start) as u64))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;
    use dledger::AppendHook;
    use protocol::message::{Properties, StoredMessage};

    use super::*;

    fn record(topic: &str, body: &[u8]) -> Vec<u8> {
        let message = StoredMessage {
            topic: topic.into(),
            queue_id: 0,
            flag: 0,
            queue_offset: 0,
            commit_log_offset: 0,
            sys_flag: 0,
            born_timestamp: 1,
            born_host: "127.0.0.1:1".parse().unwrap(),
            store_timestamp: 2,
            store_host: "127.0.0.1:2".parse().unwrap(),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: Bytes::copy_from_slice(body),
            properties: Properties::default(),
        };
        let mut out = Vec::new();
        message.encode(&mut out).unwrap();
        out
    }

    #[test]
    fn hook_writes_each_records_offset() {
        let mut records = record("T", b"one");
        let second_at = records.len();
        records.extend(record("T", b"two"));
        let mut body = messages(&records);
        OffsetHook.on_append(1000, &mut body);
        let StoreEntry::Messages { records } = decode(&body).unwrap() else {
            panic!("messages")
        };
        let all = StoredMessage::decode_all(records).unwrap();
        assert_eq!(all[0].commit_log_offset, 1008);
        assert_eq!(all[1].commit_log_offset, 1008 + second_at as i64);
        assert_eq!(
            commit_log_offsets(1000, records)
                .values()
                .copied()
                .collect::<Vec<_>>(),
            [1008, 1008 + second_at as u64]
        );
    }

    #[test]
    fn other_entries_are_left_alone_and_bad_ones_named() {
        let config = TopicConfig::new("T", 4, 6);
        let mut body = topic_config(&config);
        let before = body.clone();
        OffsetHook.on_append(0, &mut body);
        assert_eq!(body, before);
        assert_eq!(decode(&body).unwrap(), StoreEntry::TopicConfig(config));
        let mut foreign = b"hello world".to_vec();
        OffsetHook.on_append(0, &mut foreign);
        assert_eq!(foreign, b"hello world");
        assert!(
            decode(&foreign)
                .unwrap_err()
                .to_string()
                .contains("no store magic")
        );
        let mut unknown = header(Kind::Offsets);
        unknown[4] = 9;
        assert!(
            decode(&unknown)
                .unwrap_err()
                .to_string()
                .contains("unknown kind 9")
        );
        let commits = vec![OffsetCommit {
            group: "g".into(),
            topic: "T".into(),
            queue_id: 1,
            offset: 5,
        }];
        assert_eq!(
            decode(&offsets(&commits)).unwrap(),
            StoreEntry::Offsets(commits)
        );
    }

    proptest::proptest! {
        #[test]
        fn hook_and_decoder_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut body = messages(&bytes);
            OffsetHook.on_append(12345, &mut body);
            let _ = decode(&body);
            let _ = record_spans(&bytes);
        }
    }
}
