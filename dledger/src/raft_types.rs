//! openraft's type configuration for dledger. Private to the crate: nothing here leaks into the
//! public API.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The bytes a proposal carries. Serialized as a byte string, so bincode copies it in one go.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Payload(pub bytes::Bytes);

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes_vec::ByteBuf = Deserialize::deserialize(deserializer)?;
        Ok(Payload(bytes::Bytes::from(bytes.0)))
    }
}

/// A minimal owned byte buffer that deserializes from a serde byte string.
mod serde_bytes_vec {
    use std::fmt;

    use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};

    pub struct ByteBuf(pub Vec<u8>);

    struct ByteBufVisitor;

    impl<'de> Visitor<'de> for ByteBufVisitor {
        type Value = ByteBuf;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
            Ok(ByteBuf(v.to_vec()))
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
            Ok(ByteBuf(v))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
            // Bounded by what the peer actually sent, never by a size hint.
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(ByteBuf(out))
        }
    }

    impl<'de> Deserialize<'de> for ByteBuf {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_byte_buf(ByteBufVisitor)
        }
    }
}

/// What applying an entry returns to the proposer: where it landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Global byte position of the entry.
    pub position: u64,
}

/// A peer as openraft's membership records it: its Raft address.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PeerNode {
    /// `host:port` of its Raft listener.
    pub addr: String,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

/// The runtime: tokio, with openraft's RNG drawn from a seed so simulations replay exactly.
pub type Runtime =
    openraft_rt::deterministic_rng::DeterministicRng<openraft_rt_tokio::TokioRuntime>;

openraft::declare_raft_types!(
    /// dledger's openraft configuration: standard Raft leader ids (one leader per term), opaque
    /// byte payloads.
    pub TypeConfig:
        D = Payload,
        R = Applied,
        NodeId = u64,
        Node = PeerNode,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
        AsyncRuntime = Runtime,
);

pub type OrLogId = openraft::alias::LogIdOf<TypeConfig>;
pub type OrVote = openraft::alias::VoteOf<TypeConfig>;
pub type OrEntry = openraft::alias::EntryOf<TypeConfig>;
pub type OrStoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type OrSnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type SnapshotData = std::io::Cursor<Vec<u8>>;
pub type OrSnapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;

/// Converts openraft's log id into ours.
pub fn to_log_id(log_id: &OrLogId) -> crate::types::LogId {
    crate::types::LogId {
        term: log_id.leader_id.term,
        index: log_id.index,
    }
}

/// Converts our log id into openraft's.
pub fn from_log_id(log_id: crate::types::LogId) -> OrLogId {
    openraft::LogId::new(
        openraft::vote::leader_id_std::CommittedLeaderId::new(log_id.term),
        log_id.index,
    )
}
