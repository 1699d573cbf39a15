//! The invariants every run must pass: one checker per invariant, as in TigerBeetle's
//! simulator (`src/testing/cluster/*_checker.zig`).
//!
//! Each checker is a module whose `check` reads plain data (stores, write records, the
//! membership log), so a test can hand it a broken state, and whose failure is a type that
//! names what broke (node, key, write). [`check`] gathers that data from a finished [`World`],
//! runs every checker and adds the seed that replays the run.
//!
//! - [`continuous`]: what must hold at every moment (no value nobody wrote, no replica
//!   forgets, no acknowledged write held by nobody), checked while the run goes on.
//! - [`liveness`]: every phase of the scenario ends before its deadline.
//! - [`lost_writes`]: every write made on a node that is still up is on every live node.
//! - [`convergence`]: every live node holds the same map.
//! - [`detection`]: every crashed node is declared down by every survivor, and promptly by
//!   every node that could see it go.
//! - [`false_positives`](mod@false_positives): no running node is declared down, beyond what the faults injected
//!   explain (defined precisely there).
//! - [`leaves`]: no survivor still lists a node that left gracefully.
//! - [`trust`]: no node judged an honest peer's version forged, refused, or an
//!   equivocation (every node of a run is honest).
//! - [`determinism`]: the same seed gives the same trace hash (`--check-replay`).

pub mod continuous;
pub mod convergence;
pub mod detection;
pub mod determinism;
pub mod false_positives;
pub mod flapping;
pub mod leaves;
pub mod liveness;
pub mod lost_writes;
pub mod trust;

use std::fmt;

use serde::{Serialize, Serializer};

use std::time::{Duration, Instant};

use confmesh::proto::node::{Config, Event, NodeId};

use crate::{
    params::Preset,
    scenario::Phases,
    world::{MemberLog, World},
};

/// One invariant a run broke, with the seed that replays the run.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The run's seed.
    pub seed: u64,
    /// What broke.
    pub violation: Violation,
}

/// Which invariant broke, and where.
#[derive(Clone, Debug)]
pub enum Violation {
    /// A phase of the scenario missed its deadline.
    Liveness(liveness::Missed),
    /// Something that must never be was seen during the run (the first, and how many).
    Continuous(Vec<(Duration, continuous::Finding)>),
    /// Writes made on nodes that are still up are missing on some live node.
    LostWrites(lost_writes::LostWrites),
    /// Live nodes hold different maps.
    Diverged(convergence::Divergence),
    /// Crashed nodes were not declared down by every survivor.
    Undetected(detection::Undetected),
    /// Running nodes were declared down.
    FalsePositives(false_positives::FalsePositives),
    /// Members went down for their own side at a heal.
    Flapped(flapping::Flapped),
    /// Survivors still list nodes that left gracefully.
    StillListed(leaves::StillListed),
    /// Nodes judged honest peers' versions forged, refused, or equivocations.
    Distrusted(trust::Distrusted),
}

/// Runs every checker on a finished run, in a fixed order; empty if the run passed.
pub fn check(world: &World, phases: &Phases) -> Vec<Failure> {
    let up: Vec<usize> = (0..world.len()).filter(|&i| world.is_up(i)).collect();
    let mut violations: Vec<Violation> = phases
        .missed
        .iter()
        .cloned()
        .map(Violation::Liveness)
        .collect();
    if !world.findings.is_empty() {
        violations.push(Violation::Continuous(world.findings.clone()));
    }
    let holds = |i: usize, dot: &_| {
        world
            .node(i)
            .is_some_and(|n| n.store().digest().contains(dot))
    };
    if let Err(lost) = lost_writes::check(&world.writes, &up, holds) {
        violations.push(Violation::LostWrites(lost));
    }
    let stores: Vec<_> = up
        .iter()
        .filter_map(|&i| world.node(i).map(|node| (i, node.store())))
        .collect();
    if let Err(divergence) = convergence::check(&stores) {
        violations.push(Violation::Diverged(divergence));
    }
    let survivors = detection::survivors(&up, &phases.crashes);
    if let Err(undetected) = detection::check(&phases.crashes, &survivors, &world.member_log) {
        violations.push(Violation::Undetected(undetected));
    }
    let ran = incarnations(&phases.incarnations, &world.member_log);
    let running = |id: NodeId, from, to| {
        ran.iter()
            .any(|&(inc, start, stop)| inc == id && start <= from && stop.is_none_or(|s| s >= to))
    };
    if let Err(undetected) = detection::timely(
        &phases.episodes,
        &world.member_log,
        &world.faults,
        running,
        world.now,
    ) {
        violations.push(Violation::Undetected(undetected));
    }
    let found = false_positives(world, phases)
        .into_iter()
        .filter(|(_, excused)| !excused)
        .map(|(found, _)| found)
        .collect();
    if let Err(false_positives) =
        false_positives::check(found, world.params.loss, world.params.preset)
    {
        violations.push(Violation::FalsePositives(false_positives));
    }
    if let Err(flapped) = flapping::check(
        flaps(world, phases),
        world.params.loss,
        world.params.one_way,
    ) {
        violations.push(Violation::Flapped(flapped));
    }
    let lists = |j: usize, id| world.node(j).is_some_and(|n| n.members().any(|m| m == id));
    if let Err(listed) = leaves::check(&phases.leaves, &up, lists) {
        violations.push(Violation::StillListed(listed));
    }
    let verdicts: Vec<_> = (0..world.len())
        .map(|i| (i, world.stats(i).trust))
        .collect();
    if let Err(distrusted) = trust::check(&verdicts) {
        violations.push(Violation::Distrusted(distrusted));
    }
    violations
        .into_iter()
        .map(|violation| Failure {
            seed: world.params.seed,
            violation,
        })
        .collect()
}

/// Every identity that ran: (identity, started, stopped). `started` holds those the scenario
/// started (a start or restart of the process); a node that learnt it was declared down
/// rejoins under its next generation (`Event::Rejoined`), which ends the identity it ran as
/// and starts the new one, until the process stops.
pub fn incarnations(
    started: &[(NodeId, Instant, Option<Instant>)],
    log: &MemberLog,
) -> Vec<(NodeId, Instant, Option<Instant>)> {
    let mut all = started.to_vec();
    for (t, _, e) in log {
        let Event::Rejoined(new) = e else { continue };
        let running = all.iter().position(|(id, from, to)| {
            id.addr == new.addr && from <= t && to.is_none_or(|to| *t < to)
        });
        if let Some(k) = running {
            let stop = all[k].2;
            all[k].2 = Some(*t);
            all.push((*new, *t, stop));
        }
    }
    all
}

/// The running incarnations declared down in a finished run, as
/// [`false_positives::classify`] defines them, each with whether the faults injected excuse it.
pub fn false_positives(
    world: &World,
    phases: &Phases,
) -> Vec<(false_positives::FalsePositive, bool)> {
    let swim = match world.params.preset {
        Preset::Lan => Config::lan(world.id(0), world.len(), 0).swim,
        Preset::Wan => Config::wan(world.id(0), world.len(), 0).swim,
    };
    false_positives::classify(
        &world.member_log,
        &incarnations(&phases.incarnations, &world.member_log),
        &world.faults,
        |id| world.index_of(id.addr),
        false_positives::window(swim.probe_period, swim.suspect_to_down_after),
        world.start,
    )
}

/// The flaps at the heal of a split (the partition scenario), as [`flapping::find`] defines
/// them; none for other runs.
pub fn flaps(world: &World, phases: &Phases) -> Vec<flapping::Flap> {
    match (phases.healed_at, phases.split_at) {
        (Some(healed), Some(split_at)) => flapping::find(
            &world.member_log,
            healed,
            |i| u8::from(i >= split_at),
            |id| world.index_of(id.addr),
        ),
        _ => Vec::new(),
    }
}

impl Failure {
    /// Writes lost, if this is a [`Violation::LostWrites`]; else 0.
    pub fn lost_writes(&self) -> u64 {
        match &self.violation {
            Violation::LostWrites(lost) => lost.writes.len() as u64,
            _ => 0,
        }
    }

    /// Live nodes outside the majority's map, if this is a [`Violation::Diverged`]; else 0.
    pub fn divergent_nodes(&self) -> u64 {
        match &self.violation {
            Violation::Diverged(divergence) => divergence.odd.len() as u64,
            _ => 0,
        }
    }
}

impl Violation {
    /// The name of the checker that found it (its module).
    pub fn checker(&self) -> &'static str {
        match self {
            Violation::Liveness(_) => "liveness",
            Violation::Continuous(_) => "continuous",
            Violation::LostWrites(_) => "lost_writes",
            Violation::Diverged(_) => "convergence",
            Violation::Undetected(_) => "detection",
            Violation::FalsePositives(_) => "false_positives",
            Violation::Flapped(_) => "flapping",
            Violation::StillListed(_) => "leaves",
            Violation::Distrusted(_) => "trust",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed={} {}: {}",
            self.seed,
            self.violation.checker(),
            self.violation
        )
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Liveness(missed) => missed.fmt(f),
            Violation::Continuous(found) => {
                if let Some((at, first)) = found.first() {
                    write!(f, "at t={:.2}s {first}", at.as_secs_f64())?;
                }
                if found.len() > 1 {
                    write!(f, " (and {} more findings)", found.len() - 1)?;
                }
                Ok(())
            }
            Violation::LostWrites(lost) => lost.fmt(f),
            Violation::Diverged(divergence) => divergence.fmt(f),
            Violation::Undetected(undetected) => undetected.fmt(f),
            Violation::FalsePositives(false_positives) => false_positives.fmt(f),
            Violation::Flapped(flapped) => flapped.fmt(f),
            Violation::StillListed(listed) => listed.fmt(f),
            Violation::Distrusted(distrusted) => distrusted.fmt(f),
        }
    }
}

/// In a JSON report a failure is its line of text, as printed.
impl Serialize for Failure {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Writes up to ten node indices, then how many more: `3, 5, 8 and 12 more`.
fn write_nodes(f: &mut fmt::Formatter<'_>, nodes: &[usize]) -> fmt::Result {
    const SHOWN: usize = 10;
    for (k, node) in nodes.iter().take(SHOWN).enumerate() {
        if k > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{node}")?;
    }
    if nodes.len() > SHOWN {
        write!(f, " and {} more", nodes.len() - SHOWN)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
