//! Failure detection: every crashed node is declared down by every survivor.

use std::{fmt, time::Instant};

use confmesh::proto::node::{Event, NodeId};

use crate::world::MemberLog;

/// Checks that every crash was followed by a `MemberDown` for the crashed identity at every
/// survivor.
///
/// `crashes` holds (index, identity at the crash, when); `survivors` the live nodes that never
/// crashed (see [`survivors`]); `log` the membership events observed.
pub fn check(
    crashes: &[(usize, NodeId, Instant)],
    survivors: &[usize],
    log: &MemberLog,
) -> Result<(), Undetected> {
    let undetected: Vec<UndetectedCrash> = crashes
        .iter()
        .filter_map(|&(node, id, at)| {
            let missed_by: Vec<usize> = survivors
                .iter()
                .copied()
                .filter(|&j| declared_down(log, j, id, at).is_none())
                .collect();
            (!missed_by.is_empty()).then_some(UndetectedCrash {
                node,
                id,
                missed_by,
            })
        })
        .collect();
    if undetected.is_empty() {
        Ok(())
    } else {
        Err(Undetected {
            crashes: undetected,
        })
    }
}

/// The live nodes (`up`) that never crashed: those that must declare each crash.
pub fn survivors(up: &[usize], crashes: &[(usize, NodeId, Instant)]) -> Vec<usize> {
    up.iter()
        .copied()
        .filter(|&i| crashes.iter().all(|c| c.0 != i))
        .collect()
}

/// When `observer` first reported `id` down at or after `since`, if it did.
pub fn declared_down(
    log: &MemberLog,
    observer: usize,
    id: NodeId,
    since: Instant,
) -> Option<Instant> {
    log.iter()
        .find(|(t, o, e)| {
            *o == observer && *t >= since && matches!(e, Event::MemberDown(d) if *d == id)
        })
        .map(|(t, _, _)| *t)
}

/// Crashes some survivor never declared.
#[derive(Clone, Debug)]
pub struct Undetected {
    /// The crashes, in the order they happened; never empty.
    pub crashes: Vec<UndetectedCrash>,
}

/// One crash some survivor never declared.
#[derive(Clone, Debug)]
pub struct UndetectedCrash {
    /// The crashed node.
    pub node: usize,
    /// Its identity when it crashed.
    pub id: NodeId,
    /// The survivors that never reported it down.
    pub missed_by: Vec<usize>,
}

impl fmt::Display for Undetected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, crash) in self.crashes.iter().enumerate() {
            if k > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "crashed node {} ({}) was not declared down by every survivor: {} never did \
                 (nodes ",
                crash.node,
                crash.id,
                crash.missed_by.len()
            )?;
            super::write_nodes(f, &crash.missed_by)?;
            f.write_str(")")?;
        }
        Ok(())
    }
}
