//! The driver's copy of which links between replicas deliver. turmoil decides a message's fate
//! when it is sent, from its link's state: a partitioned link drops it, a held one keeps it
//! until released, a healthy one delivers it. This mirrors every partition, hold, release and
//! repair the driver asks of turmoil between replicas, with turmoil's meaning (a repair or a
//! release heals both directions), so invariants can ask who could have heard from whom.
//!
//! A link with message loss is another matter: turmoil then partitions and repairs it at
//! random whenever one direction is healthy, and a random repair heals both directions, a
//! one-way partition included. Such a link's state is unknown from the moment the loss starts,
//! and after it ends until the driver sets both directions again; an unknown link counts as one
//! that may deliver.

use std::collections::BTreeSet;

/// Directed links between replicas that deliver no message sent now.
#[derive(Debug, Default)]
pub struct Links {
    blocked: BTreeSet<(u64, u64)>,
    /// Pairs (lower id first) losing messages now: turmoil may change their state at random.
    lossy: BTreeSet<(u64, u64)>,
    /// Pairs (lower id first) whose loss ended since both directions were last set.
    unknown: BTreeSet<(u64, u64)>,
}

fn pair(a: u64, b: u64) -> (u64, u64) {
    (a.min(b), a.max(b))
}

impl Links {
    /// Both directions drop.
    pub fn partition(&mut self, a: u64, b: u64) {
        self.blocked.insert((a, b));
        self.blocked.insert((b, a));
        self.unknown.remove(&pair(a, b));
    }

    /// The link between `a` and `b` loses messages at random from now on: turmoil may
    /// partition and repair it at will.
    pub fn lossy(&mut self, a: u64, b: u64) {
        self.lossy.insert(pair(a, b));
    }

    /// The link between `a` and `b` loses no more messages; its state stays unknown until
    /// both directions are set.
    pub fn loss_ended(&mut self, a: u64, b: u64) {
        if self.lossy.remove(&pair(a, b)) {
            self.unknown.insert(pair(a, b));
        }
    }

    /// `from` → `to` drops.
    pub fn partition_oneway(&mut self, from: u64, to: u64) {
        self.blocked.insert((from, to));
    }

    /// Both directions hold what is sent until released.
    pub fn hold(&mut self, a: u64, b: u64) {
        self.partition(a, b);
    }

    /// Both directions deliver again (turmoil's `repair` and `release` alike).
    pub fn heal(&mut self, a: u64, b: u64) {
        self.blocked.remove(&(a, b));
        self.blocked.remove(&(b, a));
        self.unknown.remove(&pair(a, b));
    }

    /// `from` → `to` delivers again.
    pub fn repair_oneway(&mut self, from: u64, to: u64) {
        self.blocked.remove(&(from, to));
    }

    /// Whether a request sent now from `a` to `b` may be answered: both directions deliver, or
    /// the link's state is unknown.
    pub fn round_trip(&self, a: u64, b: u64) -> bool {
        self.lossy.contains(&pair(a, b))
            || self.unknown.contains(&pair(a, b))
            || (!self.blocked.contains(&(a, b)) && !self.blocked.contains(&(b, a)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each fault blocks what turmoil blocks, and a repair or release heals both directions,
    /// whichever fault came before.
    #[test]
    fn links_follow_turmoil_semantics() {
        let mut links = Links::default();
        assert!(links.round_trip(1, 2));
        links.partition_oneway(1, 2);
        assert!(!links.round_trip(1, 2) && !links.round_trip(2, 1));
        links.repair_oneway(1, 2);
        assert!(links.round_trip(1, 2));
        links.hold(1, 3);
        assert!(!links.round_trip(3, 1));
        links.partition_oneway(2, 1);
        links.heal(1, 3);
        assert!(links.round_trip(1, 3));
        assert!(!links.round_trip(1, 2));
        links.heal(2, 1);
        assert!(links.round_trip(1, 2));
        // A lossy link may deliver whatever was set, while the loss lasts, and after it until
        // both directions are set again.
        links.partition_oneway(1, 2);
        links.lossy(2, 1);
        assert!(links.round_trip(1, 2));
        links.partition(1, 2);
        assert!(
            links.round_trip(1, 2),
            "lossy: a one-way repair lets turmoil heal it"
        );
        links.loss_ended(1, 2);
        links.partition_oneway(1, 2);
        assert!(links.round_trip(1, 2), "still unknown");
        links.partition(1, 2);
        assert!(!links.round_trip(1, 2));
    }
}
