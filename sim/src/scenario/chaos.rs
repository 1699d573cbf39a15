//! The chaos scenario: faults drawn from the run's seed while writes go on, then every fault
//! ends and the mesh must settle.
//!
//! After a cold start comes a phase of [`FAULT_PHASE`]: `--writes` writes on running nodes,
//! spread evenly over it, and faults at random gaps of up to [`LONGEST_GAP`]: a crash (a power cut: what was not durable
//! is lost), a restart of a crashed or departed node, a pause of 0.1–8 s, a graceful leave, a
//! partition (two or three groups of any sizes, cut both ways or one way between two of
//! them) in place of the one in force, or a heal. Then, in order:
//!
//! 1. every fault ends: the partition heals, paused nodes resume, every node that is down
//!    restarts (departed ones come back too);
//! 2. every acknowledged write reaches every node (`Missed::Spread` otherwise);
//! 3. every node lists exactly the running incarnations of all others (`Missed::Heal`):
//!    crashed incarnations are gone, declared down or replaced by their restart;
//! 4. one last crash, which every other node must declare down (`checker::detection`).

use std::time::Duration;

use confmesh::proto::trust::policy::{Principal, Right, Rule};
use rand::RngExt;

use super::{Phases, bootstrap, close_incarnation, converge, random_write, say};
use crate::{
    checker::{detection::Episode, liveness::Missed},
    world::{World, faults::Partition},
};

/// How long faults are injected.
const FAULT_PHASE: Duration = Duration::from_secs(40);

/// The longest gap between two faults.
const LONGEST_GAP: Duration = Duration::from_secs(4);

/// The longest pause.
const LONGEST_PAUSE: Duration = Duration::from_secs(8);

pub(super) fn run(world: &mut World, phases: &mut Phases) {
    let n = world.len();
    let spread = Duration::from_millis((n as u64 * 2).clamp(100, 4_000));
    bootstrap(world, phases, 0..n, spread);
    world.run_for(Duration::from_secs(2));
    if world.params.policy {
        policy_root(world);
    }
    say(world, "writing under faults");
    let end = world.now + FAULT_PHASE;
    let step = FAULT_PHASE / world.params.writes.max(1) as u32;
    let mut next_write = world.now;
    let mut next_fault = world.now + gap(world);
    let far = end + FAULT_PHASE;
    let mut next_policy = if world.params.policy {
        world.now + gap(world)
    } else {
        far
    };
    while world.now < end {
        if world.now >= next_write {
            random_write(world, |w, i| w.is_running(i));
            next_write += step;
        }
        if world.now >= next_fault {
            fault(world, phases);
            next_fault = world.now + gap(world);
        }
        if world.now >= next_policy {
            policy_change(world);
            next_policy = world.now + gap(world);
        }
        let until = next_write.min(next_fault).min(next_policy).min(end);
        world.run_for(until.saturating_duration_since(world.now));
    }

    say(world, "ending every fault");
    world.heal();
    world.run_for(LONGEST_PAUSE);
    for i in 0..n {
        if !world.is_up(i) {
            restart(world, phases, i);
        }
    }
    converge(world, phases, Duration::from_secs(120));
    if world.params.policy {
        same_policy(world, phases);
    }
    let exact = |w: &World, i: usize| {
        w.node(i).is_some_and(|node| {
            let mut listed: Vec<_> = node.members().collect();
            listed.sort_unstable();
            let mut running: Vec<_> = (0..w.len()).filter(|&j| j != i).map(|j| w.id(j)).collect();
            running.sort_unstable();
            listed == running
        })
    };
    let limit = Duration::from_secs(120);
    if world.run_until(Duration::from_millis(100), limit, |w| {
        (0..w.len()).all(|i| exact(w, i))
    }) {
        say(
            world,
            "every node lists every running incarnation, and only those",
        );
    } else {
        let seen = (0..n).filter(|&i| exact(world, i)).count();
        phases.missed.push(Missed::Heal {
            seen,
            count: n,
            limit,
        });
    }

    // The last crash, in a settled mesh: every other node must declare it down.
    let Some(x) = world.random_node(|w, i| w.is_running(i)) else {
        return;
    };
    let id = world.id(x);
    let at = world.now;
    world.crash(x);
    close_incarnation(phases, id, at);
    phases.crashes.push((x, id, at));
    say(world, &format!("crashed node {x}"));
    let declared = |w: &World| {
        (0..w.len())
            .filter(|&j| j != x)
            .all(|j| crate::checker::detection::declared_down(&w.member_log, j, id, at).is_some())
    };
    // The checker reports whoever missed it.
    world.run_until(
        Duration::from_millis(100),
        Duration::from_secs(60),
        declared,
    );
    world.run_for(Duration::from_secs(1));
}

/// The policy the writes start under (`--policy`): a root made through a running node, and a
/// grant of `write` over every key to every node, so that the writes go on as before.
fn policy_root(world: &mut World) {
    let Some(i) = world.random_node(|w, i| w.is_running(i)) else {
        return;
    };
    let Some(cutoff) = world.version_vector(i) else {
        return;
    };
    let root = Rule::Root {
        admins: vec![principal("admin:ops")],
        cutoff,
    };
    let all = Rule::Grant {
        grantee: principal("node:*"),
        right: Right::Write,
        prefix: String::new(),
    };
    if world.write_rule(i, &root) && world.write_rule(i, &all) {
        say(
            world,
            &format!("policy root and grant made through node {i}"),
        );
    }
}

/// One policy change while the writes and faults go on (`--policy`): through a running
/// node, the admin revokes a running node's `write` over every key (what the revoking node
/// has seen stands), or grants it back; writes the revoked node makes from then on are refused
/// there, and those it made before hearing of it are masked everywhere.
fn policy_change(world: &mut World) {
    let (Some(through), Some(target)) = (
        world.random_node(|w, i| w.is_running(i)),
        world.random_node(|w, i| w.is_running(i)),
    ) else {
        return;
    };
    let (Some(name), Some(cutoff)) = (world.node_name(target), world.version_vector(through))
    else {
        return;
    };
    let grantee = principal(&format!("node:{name}"));
    let rule = if world.rng().random_bool(0.6) {
        Rule::Revoke {
            grantee,
            right: Right::Write,
            prefix: String::new(),
            cutoff,
        }
    } else {
        Rule::Grant {
            grantee,
            right: Right::Write,
            prefix: String::new(),
        }
    };
    if world.write_rule(through, &rule) {
        say(world, &format!("{rule} made through node {through}"));
    }
}

/// Checks that every running node holds the same policy entries and masks the same versions
/// (`--policy`): what every replica must agree on once every version reached every node.
/// Masks are compared on the versions every running node still holds (a masked version is
/// collected like a tombstone, at each node's own pace).
fn same_policy(world: &mut World, phases: &mut Phases) {
    use std::collections::{BTreeMap, BTreeSet};
    type View = (Vec<confmesh::proto::Dot>, BTreeMap<(u64, u64), bool>);
    let view = |w: &World, i: usize| -> Option<View> {
        w.node(i).map(|node| {
            let entries: Vec<_> = node.policy().entries().map(|(dot, _, _)| dot).collect();
            let held = node
                .store()
                .versions_all()
                .map(|v| ((v.dot.actor.0, v.dot.counter), v.masked.0))
                .collect();
            (entries, held)
        })
    };
    let views: Vec<View> = (0..world.len())
        .filter(|&i| world.is_running(i))
        .filter_map(|i| view(world, i))
        .collect();
    let Some(first) = views.first() else {
        return;
    };
    let everywhere: BTreeSet<(u64, u64)> = first
        .1
        .keys()
        .copied()
        .filter(|dot| views.iter().all(|v| v.1.contains_key(dot)))
        .collect();
    let masks = |v: &View| -> Vec<bool> { everywhere.iter().map(|dot| v.1[dot]).collect() };
    let (first_entries, first_masks) = (first.0.clone(), masks(first));
    let differing = views
        .iter()
        .filter(|v| v.0 != first_entries || masks(v) != first_masks)
        .count();
    if differing == 0 {
        let masked = first_masks.iter().filter(|&&m| m).count();
        say(
            world,
            &format!(
                "every node holds the same {} policy entries and masks the same {masked} versions",
                first_entries.len()
            ),
        );
    } else {
        phases.missed.push(Missed::Policy {
            differing,
            count: views.len(),
        });
    }
}

fn principal(text: &str) -> Principal {
    Principal::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// The time to the next fault, drawn.
fn gap(world: &mut World) -> Duration {
    Duration::from_millis(world.rng().random_range(1..=LONGEST_GAP.as_millis() as u64))
}

/// Injects one fault, drawn from the run's generator.
fn fault(world: &mut World, phases: &mut Phases) {
    let n = world.len();
    let running = (0..n).filter(|&i| world.is_running(i)).count();
    match world.rng().random_range(0..13u32) {
        // A crash, leaving at least one node to write on.
        0..=2 if running > 1 => {
            if let Some(i) = world.random_node(|w, i| w.is_up(i)) {
                let id = world.id(i);
                let at = world.now;
                let listed_by = (0..n)
                    .filter(|&j| {
                        world.is_up(j)
                            && world.node(j).is_some_and(|m| m.members().any(|m| m == id))
                    })
                    .map(|j| (j, world.id(j)))
                    .collect();
                world.crash(i);
                close_incarnation(phases, id, at);
                phases.episodes.push(Episode {
                    node: i,
                    id,
                    at,
                    restarted: None,
                    listed_by,
                });
            }
        }
        3..=5 => {
            if let Some(i) = world.random_node(|w, i| !w.is_up(i)) {
                restart(world, phases, i);
            }
        }
        6..=7 => {
            if let Some(i) = world.random_node(|w, i| w.is_running(i)) {
                let ms = world
                    .rng()
                    .random_range(100..=LONGEST_PAUSE.as_millis() as u64);
                world.pause(i, Duration::from_millis(ms));
            }
        }
        8 if running > 1 => {
            if let Some(i) = world.random_node(|w, i| w.is_running(i)) {
                // The incarnation ends when it starts leaving: from then on, being declared
                // down is the expected outcome.
                close_incarnation(phases, world.id(i), world.now);
                phases.leaves.push((i, world.id(i)));
                world.leave(i);
            }
        }
        9..=10 => {
            let groups_count = world.rng().random_range(2..=3u8);
            let groups: Vec<u8> = (0..n)
                .map(|_| world.rng().random_range(0..groups_count))
                .collect();
            let one_way = world.rng().random_bool(0.5).then(|| {
                let a = world.rng().random_range(0..groups_count);
                let b = (a + world.rng().random_range(1..groups_count)) % groups_count;
                (a, b)
            });
            world.partition(Partition { groups, one_way });
        }
        11..=12 => world.heal(),
        _ => {}
    }
}

/// Restarts node `i` from its disk, joining through up to three running nodes.
fn restart(world: &mut World, phases: &mut Phases, i: usize) {
    let seeds: Vec<usize> = (0..3)
        .filter_map(|_| world.random_node(|w, j| w.is_running(j)))
        .collect();
    world.start_node(i, &seeds);
    phases.incarnations.push((world.id(i), world.now, None));
    for episode in phases
        .episodes
        .iter_mut()
        .filter(|e| e.node == i && e.restarted.is_none())
    {
        episode.restarted = Some(world.now);
    }
}
