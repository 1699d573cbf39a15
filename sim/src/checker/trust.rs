//! Honest writers are trusted: no node judged a version from a peer forged, refused, or an
//! equivocation (docs/PROTOCOL.md §7.4).
//!
//! Every node of a run is honest: it signs what it writes with its own key, after its own
//! endorsement, and writes no reserved key. So any such verdict, by any incarnation of any
//! node, is a bug in the trust rules or in how a node applies them. A version that waited for
//! its writer's endorsement (`deferred`) is expected: versions overtake endorsements.

use std::fmt;

use confmesh::proto::node::TrustStats;

/// Checks that no node (by index, its counters summed over its incarnations) gave a verdict
/// against a version from a peer.
pub fn check(stats: &[(usize, TrustStats)]) -> Result<(), Distrusted> {
    let nodes: Vec<(usize, TrustStats)> = stats
        .iter()
        .copied()
        .filter(|(_, s)| s.forged + s.refused + s.equivocations > 0)
        .collect();
    if nodes.is_empty() {
        Ok(())
    } else {
        Err(Distrusted { nodes })
    }
}

/// Nodes that judged honest peers' versions forged, refused or equivocations.
#[derive(Clone, Debug)]
pub struct Distrusted {
    /// Each such node and its counters; never empty.
    pub nodes: Vec<(usize, TrustStats)>,
}

impl fmt::Display for Distrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = |g: fn(&TrustStats) -> u64| self.nodes.iter().map(|(_, s)| g(s)).sum::<u64>();
        write!(
            f,
            "{} nodes gave verdicts against honest peers' versions ({} forged, {} refused, {} equivocations)",
            self.nodes.len(),
            total(|s| s.forged),
            total(|s| s.refused),
            total(|s| s.equivocations),
        )?;
        if let Some((node, s)) = self.nodes.first() {
            write!(
                f,
                "; first: node {node} ({} forged, {} refused, {} equivocations)",
                s.forged, s.refused, s.equivocations
            )?;
        }
        Ok(())
    }
}
