//! Check-quorum: no replica reports serving writes once it has gone longer than the quorum lease
//! (the election timeout's upper bound) without being able to hear from a quorum of voters,
//! itself included. Which replicas could hear from which comes from the driver's record of the
//! links ([`crate::links::Links`]), not from what the replicas believe; every acknowledgement
//! a cut-off leader receives after the cut answers a request sent before it, so its lease ends
//! at most one lease after the cut.

use std::collections::BTreeMap;

use super::{NodeView, violation};

/// What a replica may take beyond the lease to notice it ran out: waking the watch, telling
/// the broker. A scheduling delay, not a clock skew (the simulation's clocks agree).
pub const NOTICE_MARGIN_MS: u64 = 50;

/// `cut_since`: for each replica that cannot reach a quorum now, the step (ms) since which it
/// has been unable to, continuously.
pub(super) fn check(
    nodes: &[NodeView<'_>],
    cut_since: &BTreeMap<u64, u64>,
    now_ms: u64,
    lease_ms: u64,
) -> Result<(), super::Violation> {
    for node in nodes {
        if !node.serving_writes {
            continue;
        }
        let Some(since) = cut_since.get(&node.id) else {
            continue;
        };
        let cut_for = now_ms.saturating_sub(*since);
        if cut_for > lease_ms + NOTICE_MARGIN_MS {
            return violation(
                "no_writes_without_quorum",
                format!(
                    "node {} ({:?} in term {}) reports serving writes {cut_for} ms after it lost \
                     every path to a quorum (lease {lease_ms} ms, margin {NOTICE_MARGIN_MS} ms)",
                    node.id, node.status.role, node.status.term
                ),
            );
        }
    }
    Ok(())
}
