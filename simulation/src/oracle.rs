//! The workload's record of what was acknowledged.

/// One acknowledged proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// The unique id the proposal carried (its body, 8 bytes big-endian).
    pub id: u64,
    /// Index it was committed at.
    pub index: u64,
    /// Its term.
    pub term: u64,
}

/// Ids handed out and acknowledgements received.
#[derive(Debug, Default)]
pub struct Oracle {
    next_id: u64,
    /// Every acknowledgement, in the order received.
    pub acked: Vec<Acked>,
    /// Proposals sent.
    pub proposed: u64,
}

impl Oracle {
    /// A fresh unique id.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.proposed += 1;
        self.next_id
    }
}

/// The body of the proposal with `id`.
pub fn body(id: u64) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(&id.to_be_bytes())
}

/// The id a body carries, if it is one of ours.
pub fn id_of(body: &[u8]) -> Option<u64> {
    body.try_into().ok().map(u64::from_be_bytes)
}
