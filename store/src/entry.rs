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
//! - `Deliveries`: scheduled messages the leader found due, re-stored in their real topics, and
//!   the timer progress they move ([`DeliveryHeader`], 48 bytes, then records as in
//!   `Messages`); see [`crate::timer`].
//! - `Transactions`: outcomes of half messages decided by the leader (commits, rollbacks,
//!   checks, discards) and the records some of them carry, beside ordinary records of the same
//!   batch (count u32, then [`Outcome`]s of [`crate::transactions::OUTCOME_BYTES`], then records
//!   as in `Messages`); a record tied to an outcome is dispatched only if the outcome applies.
//!   See [`crate::transactions`].
//! - `Purge`: retention's cut, decided by the leader: the CommitLog segments before a segment
//!   start go, on every replica (8 bytes, the new first position, big-endian); see
//!   [`crate::store`] "Retention".

use std::collections::BTreeMap;

use protocol::body::TopicConfig;
use protocol::message::COMMIT_LOG_OFFSET_AT;
use serde::{Deserialize, Serialize};

use crate::timer::TimerKey;
use crate::transactions::{OUTCOME_BYTES, Outcome};

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
    /// Scheduled messages delivered, and the timer progress.
    Deliveries = 4,
    /// Retention's cut.
    Purge = 5,
    /// Half messages' outcomes, and records.
    Transactions = 6,
}

/// What a `Deliveries` entry says about the timer, before its records.
///
/// Layout, big-endian: expected (due i64, seq u64) | new (due i64, seq u64) | seen u64 |
/// covered u64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryHeader {
    /// The progress the leader started from: the entry applies only on it.
    pub expected: TimerKey,
    /// The progress after the entry: the key of the last unit it covers.
    pub new: TimerKey,
    /// Units of the timer log the leader had seen when it built the entry.
    pub seen: u64,
    /// Units the entry covers: delivered, or dropped (cancelled, cancel markers, unreadable).
    pub covered: u64,
}

/// Bytes of a [`DeliveryHeader`].
pub const DELIVERY_HEADER_BYTES: usize = 48;

impl DeliveryHeader {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.expected.due_ms.to_be_bytes());
        out.extend_from_slice(&self.expected.seq.to_be_bytes());
        out.extend_from_slice(&self.new.due_ms.to_be_bytes());
        out.extend_from_slice(&self.new.seq.to_be_bytes());
        out.extend_from_slice(&self.seen.to_be_bytes());
        out.extend_from_slice(&self.covered.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let at = |i: usize| -> Option<[u8; 8]> { bytes.get(i * 8..i * 8 + 8)?.try_into().ok() };
        Some(DeliveryHeader {
            expected: TimerKey {
                due_ms: i64::from_be_bytes(at(0)?),
                seq: u64::from_be_bytes(at(1)?),
            },
            new: TimerKey {
                due_ms: i64::from_be_bytes(at(2)?),
                seq: u64::from_be_bytes(at(3)?),
            },
            seen: u64::from_be_bytes(at(4)?),
            covered: u64::from_be_bytes(at(5)?),
        })
    }
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
    /// Scheduled messages delivered.
    Deliveries {
        /// The timer progress it moves.
        header: DeliveryHeader,
        /// The delivered records, back to back.
        records: &'a [u8],
    },
    /// Outcomes of half messages, and records (some tied to an outcome).
    Transactions {
        /// The outcomes, in order.
        outcomes: Vec<Outcome>,
        /// The records, back to back.
        records: &'a [u8],
    },
    /// The CommitLog before `first_position` (a segment start) is deleted.
    Purge {
        /// The first position kept.
        first_position: u64,
    },
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

/// An entry of delivered scheduled messages (records already encoded, back to back).
pub fn deliveries(delivery: &DeliveryHeader, records: &[u8]) -> Vec<u8> {
    let mut out = header(Kind::Deliveries);
    out.reserve(DELIVERY_HEADER_BYTES + records.len());
    delivery.encode(&mut out);
    out.extend_from_slice(records);
    out
}

/// An entry of outcomes and records (encoded, back to back): see [`Kind::Transactions`].
pub fn transactions(outcomes: &[Outcome], records: &[u8]) -> Vec<u8> {
    let mut out = header(Kind::Transactions);
    out.reserve(4 + outcomes.len() * OUTCOME_BYTES + records.len());
    let count = u32::try_from(outcomes.len()).expect("outcomes of one entry fit u32");
    out.extend_from_slice(&count.to_be_bytes());
    for outcome in outcomes {
        outcome.encode_into(&mut out);
    }
    out.extend_from_slice(records);
    out
}

/// Bytes of a transactions entry's outcomes (with their count), if `body` holds them all.
fn outcomes_len(body: &[u8]) -> Option<usize> {
    let count = body.get(ENTRY_HEADER_BYTES..ENTRY_HEADER_BYTES + 4)?;
    let count = u32::from_be_bytes(count.try_into().ok()?) as usize;
    let len = count.checked_mul(OUTCOME_BYTES)?.checked_add(4)?;
    (ENTRY_HEADER_BYTES + len <= body.len()).then_some(len)
}

/// Where the records of an entry body start, for the kinds that hold records.
pub fn records_at(body: &[u8]) -> Option<usize> {
    if body.len() < ENTRY_HEADER_BYTES || body[..4] != MAGIC {
        return None;
    }
    match body[4] {
        k if k == Kind::Messages as u8 => Some(ENTRY_HEADER_BYTES),
        k if k == Kind::Deliveries as u8 => {
            Some(ENTRY_HEADER_BYTES + DELIVERY_HEADER_BYTES).filter(|at| *at <= body.len())
        }
        k if k == Kind::Transactions as u8 => outcomes_len(body).map(|l| ENTRY_HEADER_BYTES + l),
        _ => None,
    }
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

/// An entry cutting the CommitLog before `first_position`.
pub fn purge(first_position: u64) -> Vec<u8> {
    let mut out = header(Kind::Purge);
    out.extend_from_slice(&first_position.to_be_bytes());
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
        4 => {
            let header = DeliveryHeader::decode(payload).ok_or_else(|| {
                EntryError(format!(
                    "a deliveries entry of {} bytes has no header",
                    body.len()
                ))
            })?;
            Ok(StoreEntry::Deliveries {
                header,
                records: &payload[DELIVERY_HEADER_BYTES..],
            })
        }
        5 => {
            let bytes: [u8; 8] = payload.try_into().map_err(|_| {
                EntryError(format!(
                    "a purge entry of {} bytes (expected {})",
                    body.len(),
                    ENTRY_HEADER_BYTES + 8
                ))
            })?;
            Ok(StoreEntry::Purge {
                first_position: u64::from_be_bytes(bytes),
            })
        }
        6 => {
            let len = outcomes_len(body).ok_or_else(|| {
                EntryError(format!(
                    "a transactions entry of {} bytes is shorter than its outcomes",
                    body.len()
                ))
            })?;
            let outcomes = payload[4..len]
                .chunks_exact(OUTCOME_BYTES)
                .map(|raw| Outcome::decode(raw).map_err(EntryError))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(StoreEntry::Transactions {
                outcomes,
                records: &payload[len..],
            })
        }
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
        let Some(records_at) = records_at(body) else {
            return;
        };
        let records = &mut body[records_at..];
        for (start, _) in record_spans(records) {
            let offset = body_position + (records_at + start) as u64;
            records[start + COMMIT_LOG_OFFSET_AT..start + COMMIT_LOG_OFFSET_AT + 8]
                .copy_from_slice(&offset.to_be_bytes());
        }
    }
}

/// The commit-log offsets of a `Messages` entry's records, given where the entry body starts.
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

    #[test]
    fn transactions_entries_carry_outcomes_then_records() {
        use crate::transactions::Action;
        let outcomes = [
            Outcome {
                half_offset: 3,
                action: Action::Commit,
                expected_checks: 0,
                at_ms: 9,
                record: Some(0),
            },
            Outcome {
                half_offset: 4,
                action: Action::Rollback,
                expected_checks: 0,
                at_ms: 9,
                record: None,
            },
        ];
        let records = record("T", b"committed");
        let mut body = transactions(&outcomes, &records);
        OffsetHook.on_append(1000, &mut body);
        let at = records_at(&body).unwrap();
        assert_eq!(at, ENTRY_HEADER_BYTES + 4 + 2 * OUTCOME_BYTES);
        let StoreEntry::Transactions {
            outcomes: decoded,
            records: stored,
        } = decode(&body).unwrap()
        else {
            panic!("transactions")
        };
        assert_eq!(decoded, outcomes);
        let all = StoredMessage::decode_all(stored).unwrap();
        assert_eq!(all[0].commit_log_offset, 1000 + at as i64);
        let mut short = body.clone();
        short[ENTRY_HEADER_BYTES..ENTRY_HEADER_BYTES + 4].copy_from_slice(&1000u32.to_be_bytes());
        assert!(
            decode(&short)
                .unwrap_err()
                .to_string()
                .contains("shorter than its outcomes")
        );
        assert_eq!(records_at(&short), None);
    }

    proptest::proptest! {
        #[test]
        fn hook_and_decoder_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut body = messages(&bytes);
            OffsetHook.on_append(12345, &mut body);
            let _ = decode(&body);
            let mut body = header(Kind::Transactions);
            body.extend_from_slice(&bytes);
            OffsetHook.on_append(12345, &mut body);
            let _ = decode(&body);
            let _ = record_spans(&bytes);
        }
    }
}
