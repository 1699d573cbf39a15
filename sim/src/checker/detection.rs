//! Failure detection: every crashed node is declared down by every survivor ([`check`]), and
//! promptly by every node that could see it go ([`timely`]).

use std::{
    fmt,
    time::{Duration, Instant},
};

use confmesh::proto::node::{Event, NodeId};

use crate::world::{MemberLog, faults::FaultLog};

/// How long a node that could see a crash may take to declare it: a probe period to notice,
/// the suspicion timeout, and the news spreading, with room for lost messages.
pub const DETECT_WITHIN: Duration = Duration::from_secs(20);

/// A crash in the middle of a run, which the node may come back from.
#[derive(Clone, Debug)]
pub struct Episode {
    /// The crashed node.
    pub node: usize,
    /// Its identity when it crashed.
    pub id: NodeId,
    /// When.
    pub at: Instant,
    /// When it restarted, if it did.
    pub restarted: Option<Instant>,
    /// The nodes that listed it as a member when it crashed, with their identities then.
    pub listed_by: Vec<(usize, NodeId)>,
}

/// Checks that every crash that lasted [`DETECT_WITHIN`] was declared down within it by each
/// node that listed it and could see it go: one that ran on as the same incarnation
/// (`running`: whether an incarnation ran throughout a span), was not paused, and had no link
/// cut in that time. `end` is when the run ended.
pub fn timely(
    episodes: &[Episode],
    log: &MemberLog,
    faults: &FaultLog,
    running: impl Fn(NodeId, Instant, Instant) -> bool,
    end: Instant,
) -> Result<(), Undetected> {
    let undetected: Vec<UndetectedCrash> = episodes
        .iter()
        .filter(|e| e.restarted.unwrap_or(end) >= e.at + DETECT_WITHIN)
        .filter_map(|e| {
            let by = e.at + DETECT_WITHIN;
            let missed_by: Vec<usize> = e
                .listed_by
                .iter()
                .filter(|&&(j, jid)| {
                    running(jid, e.at, by)
                        && !faults.paused(j, e.at, by)
                        && !faults.isolated_any(j, e.at, by)
                })
                .filter(|&&(j, _)| declared_down(log, j, e.id, e.at).is_none_or(|t| t > by))
                .map(|&(j, _)| j)
                .collect();
            (!missed_by.is_empty()).then_some(UndetectedCrash {
                node: e.node,
                id: e.id,
                missed_by,
            })
        })
        .collect();
    Undetected::unless_empty(undetected, Some(DETECT_WITHIN))
}

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
    Undetected::unless_empty(undetected, None)
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
    /// The time allowed ([`timely`]), or `None`: until the end of the run ([`check`]).
    pub within: Option<Duration>,
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

impl Undetected {
    /// `Ok` if no crash went undetected, else the failure.
    fn unless_empty(
        crashes: Vec<UndetectedCrash>,
        within: Option<Duration>,
    ) -> Result<(), Undetected> {
        if crashes.is_empty() {
            Ok(())
        } else {
            Err(Undetected { crashes, within })
        }
    }
}

impl fmt::Display for Undetected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, crash) in self.crashes.iter().enumerate() {
            if k > 0 {
                f.write_str("; ")?;
            }
            match self.within {
                None => write!(
                    f,
                    "crashed node {} ({}) was not declared down by every survivor: {} never did \
                     (nodes ",
                    crash.node,
                    crash.id,
                    crash.missed_by.len()
                )?,
                Some(within) => write!(
                    f,
                    "crashed node {} ({}) was not declared down within {} s by every node that \
                     could see it go: {} did not (nodes ",
                    crash.node,
                    crash.id,
                    within.as_secs(),
                    crash.missed_by.len()
                )?,
            }
            super::write_nodes(f, &crash.missed_by)?;
            f.write_str(")")?;
        }
        Ok(())
    }
}
