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

/// One message a broker acknowledged (the messaging workload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendAck {
    /// The unique id the message carried (its body, as [`body`] makes it).
    pub id: u64,
    /// The producer that sent it (client host << 16 | producer number).
    pub producer: u64,
    /// Queue the answer named.
    pub queue_id: i32,
    /// Queue offset the answer named.
    pub queue_offset: i64,
    /// Sim time (epoch ms) the send began: the message was stored no earlier.
    pub sent_ms: i64,
}

/// One message a broker acknowledged as scheduled (a timer message) in the messaging workload:
/// its answer names the real queue, and its offset in the queue where it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledAck {
    /// The unique id the message carried.
    pub id: u64,
    /// The real queue the answer named.
    pub queue_id: i32,
    /// The delay it asked for, ms.
    pub delay_ms: u64,
}

/// One message a consumer received by pulling (the messaging workload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consumed {
    /// The id its body carried.
    pub id: u64,
    /// The consumer (client host << 16 | consumer number).
    pub consumer: u64,
    /// Queue it was pulled from.
    pub queue_id: i32,
    /// Queue offset the record carried.
    pub queue_offset: i64,
}

/// Where an acknowledged half message went: the queue its commit goes to, and the half's
/// CommitLog position (a cut past it may give the transaction up before it is settled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HalfPlace {
    /// The real queue the send named.
    pub queue_id: i32,
    /// The half message's CommitLog position.
    pub position: u64,
}

/// Ids handed out and acknowledgements received.
#[derive(Debug, Default)]
pub struct Oracle {
    next_id: u64,
    /// Every acknowledgement, in the order received.
    pub acked: Vec<Acked>,
    /// Every acknowledged send of the messaging workload, in the order received (scheduled
    /// ones excepted).
    pub sends: Vec<SendAck>,
    /// Every acknowledged scheduled send, in the order received.
    pub scheduled: Vec<ScheduledAck>,
    /// Every message consumers pulled, in the order received.
    pub consumed: Vec<Consumed>,
    /// What consumers saw that must not happen (a gap or a repeat in a queue's offsets, a
    /// record of another queue, an undecodable body), first first.
    pub consume_errors: Vec<String>,
    /// Scheduled messages consumers saw stored or received before they were due, first first.
    pub early: Vec<String>,
    /// Ranges of queue offsets consumers jumped over because retention had cut them (a pull
    /// answered PULL_OFFSET_MOVED): (consumer, queue, from, to).
    pub skipped: Vec<(u64, i32, i64, i64)>,
    /// Ids of sends a broker refused because its disk is full: none may ever be stored.
    pub refused_full: Vec<u64>,
    /// Ids stored as half messages (acknowledged), before their END_TRANSACTION was sent.
    pub halves: Vec<u64>,
    /// Where each acknowledged half message is, by id.
    pub half_places: std::collections::BTreeMap<u64, HalfPlace>,
    /// Ids of half messages a producer committed (recorded before the commit is sent, or
    /// before a check is answered).
    pub committed: Vec<u64>,
    /// Ids of half messages a producer rolled back (recorded before the rollback is sent).
    pub rolled_back: Vec<u64>,
    /// Transactions' messages pulled before their commit was sent, or after a rollback.
    pub transaction_breaches: Vec<String>,
    /// Proposals sent.
    pub proposed: u64,
}

impl Oracle {
    /// Committed transactions every consumer must get after healing, as (id, queue): those
    /// acknowledged with their half message at or past `floor`, the first CommitLog position
    /// retention kept (a half message cut before it was settled is given up, as in RocketMQ).
    pub fn committed_due(&self, floor: u64) -> Vec<(u64, i32)> {
        self.committed
            .iter()
            .filter_map(|id| {
                let place = self.half_places.get(id)?;
                (place.position >= floor).then_some((*id, place.queue_id))
            })
            .collect()
    }

    /// A fresh unique id.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.proposed += 1;
        self.next_id
    }
}

/// The body of the proposal with `id`: the id, then `id % 300` bytes of padding derived from
/// it, so entries straddle disk sectors and a torn body cannot pass for another proposal.
pub fn body(id: u64) -> bytes::Bytes {
    let mut body = id.to_be_bytes().to_vec();
    body.extend((0..id % 300).map(|i| (id.wrapping_add(i) & 0xff) as u8));
    bytes::Bytes::from(body)
}

/// The id a body carries, if it is exactly one of ours.
pub fn id_of(body: &[u8]) -> Option<u64> {
    let id = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
    (body == body_of_id(id).as_ref()).then_some(id)
}

fn body_of_id(id: u64) -> bytes::Bytes {
    body(id)
}
