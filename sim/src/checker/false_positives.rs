//! No false positives: a running node is not declared down, beyond what the faults injected
//! explain.
//!
//! Precisely: an incarnation is *declared down* at the first `MemberDown` for it anywhere in
//! the mesh (later ones are the news spreading), or, if no node ever reported it, when it
//! learnt it was declared and rejoined (`Rejoined`). The declaration is a false positive if
//! the incarnation was running then (started, not crashed, not leaving), and in the
//! [`window`] before it none of these held:
//!
//! - the incarnation was paused (it answered no probe);
//! - the node that declared it was paused (its suspicion timers ran out before it read the
//!   answers that waited for it);
//! - a partition cut the link between the two, either way;
//! - a partition cut the incarnation off from at least [`CUT_SHARE`] of the other nodes. SWIM's
//!   indirect probes go through three members, and a suspicion is refuted through them, so one
//!   lost ack and three cut helpers suffice (the swarm's seed 482: the accuser and the accused
//!   on the same side of a one-way cut, most helpers cut from the accused).
//!
//! Above [`TOLERATED_ABOVE_LOSS`] the false positives are counted but are not a failure: a
//! probe and all its indirect probes lost is then expected now and then.

use std::{
    collections::HashSet,
    fmt,
    time::{Duration, Instant},
};

use confmesh::proto::node::{Event, NodeId};

use crate::{
    params::Preset,
    world::{MemberLog, faults::FaultLog},
};

/// Above this loss rate, running nodes declared down are counted (`false_positives` in the
/// report) but are not a failure.
pub const TOLERATED_ABOVE_LOSS: f64 = 0.01;

/// The same for the WAN preset, made for lossy links: up to 10% loss, none may be declared.
pub const TOLERATED_ABOVE_LOSS_WAN: f64 = 0.10;

/// The share of its links a partition must cut for a node's declaration to be excused when its
/// accuser could still reach it.
pub const CUT_SHARE: f64 = 1.0 / 3.0;

/// How far back a fault explains a declaration: twice a probe period and the suspicion
/// timeout, the longest a declaration takes from the probe that failed.
pub fn window(probe_period: Duration, suspect_to_down_after: Duration) -> Duration {
    (probe_period + suspect_to_down_after) * 2
}

/// Whether running nodes declared down fail a run at this loss rate with this preset.
pub fn enforced(loss: f64, preset: Preset) -> bool {
    let tolerated_above = match preset {
        Preset::Lan => TOLERATED_ABOVE_LOSS,
        Preset::Wan => TOLERATED_ABOVE_LOSS_WAN,
    };
    loss <= tolerated_above
}

/// Checks that no running incarnation was declared down (`found`: the declarations [`classify`] does not excuse) at a loss
/// rate of at most [`TOLERATED_ABOVE_LOSS`] ([`TOLERATED_ABOVE_LOSS_WAN`] with the WAN preset).
pub fn check(found: Vec<FalsePositive>, loss: f64, preset: Preset) -> Result<(), FalsePositives> {
    if found.is_empty() || !enforced(loss, preset) {
        return Ok(());
    }
    Err(FalsePositives { found })
}

/// Every declaration of a running incarnation, in the order declared, with whether the faults
/// injected excuse it (see the module's definition); the others are false positives. The
/// swarm reports how many were excused, so that a check excusing everything would show.
///
/// `incarnations` holds (identity, started, stopped) for every incarnation that ran; one that
/// stopped (crashed, or started leaving) may be declared down from then on. `index` gives a
/// node's index from an identity; `faults` the partitions and pauses injected.
pub fn classify(
    log: &MemberLog,
    incarnations: &[(NodeId, Instant, Option<Instant>)],
    faults: &FaultLog,
    index: impl Fn(&NodeId) -> Option<usize>,
    window: Duration,
    start: Instant,
) -> Vec<(FalsePositive, bool)> {
    let mut declared: HashSet<NodeId> = HashSet::new();
    let mut found = Vec::new();
    for (t, observer, e) in log {
        let (id, how) = match e {
            Event::MemberDown(id) => (*id, How::DeclaredDown),
            Event::Rejoined(new) => (
                NodeId {
                    generation: new.generation.wrapping_sub(1),
                    ..*new
                },
                How::Rejoined,
            ),
            _ => continue,
        };
        if !declared.insert(id) {
            continue;
        }
        let running = incarnations
            .iter()
            .any(|(inc, from, to)| *inc == id && from <= t && to.is_none_or(|to| *t < to));
        let Some(x) = index(&id) else { continue };
        let since = t.checked_sub(window).unwrap_or(start).max(start);
        let explained = faults.paused(x, since, *t)
            || faults.cut_share(x, since, *t) >= CUT_SHARE
            || match how {
                How::DeclaredDown => {
                    faults.paused(*observer, since, *t) || faults.cut(x, *observer, since, *t)
                }
                // No accuser known: any link of the incarnation cut.
                How::Rejoined => faults.isolated_any(x, since, *t),
            };
        if running {
            let found_one = FalsePositive {
                at: *t - start,
                observer: *observer,
                id,
                how,
            };
            found.push((found_one, explained));
        }
    }
    found
}

/// Running nodes declared down.
#[derive(Clone, Debug)]
pub struct FalsePositives {
    /// Each time, in the order observed; never empty.
    pub found: Vec<FalsePositive>,
}

/// One running incarnation declared down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FalsePositive {
    /// When, from the start of the run.
    pub at: Duration,
    /// The node that reported it: an observer, or the node itself when it rejoined.
    pub observer: usize,
    /// The incarnation declared down.
    pub id: NodeId,
    /// How it showed.
    pub how: How,
}

/// How a false positive showed in the membership log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// An observer reported `MemberDown`.
    DeclaredDown,
    /// The node learnt it was declared down and rejoined (`Rejoined`).
    Rejoined,
}

impl fmt::Display for FalsePositives {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} healthy nodes were declared down", self.found.len())?;
        if let Some(first) = self.found.first() {
            write!(
                f,
                " (first: {}, {} {}, at t={:.2}s; replay with --follow to see why)",
                first.id,
                first.how,
                first.observer,
                first.at.as_secs_f64()
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for How {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            How::DeclaredDown => "declared down by node",
            How::Rejoined => "told it was down and rejoined: node",
        })
    }
}
