//! The scenarios: scripts that drive a [`World`] and collect what the report needs.

mod chaos;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use bytes::Bytes;
use confmesh::proto::{
    Key, Payload, Store, StoreConfig, WriterId, node::NodeId, trust::endorsement_key,
};
use rand::RngExt;

use crate::{
    checker::liveness::Missed,
    params::{Scenario, Start},
    world::World,
};

/// What a scenario measured beyond what the world records.
#[derive(Default)]
pub struct Phases {
    pub join_ms: Option<u64>,
    pub loaded: Option<(u64, Duration)>,
    pub idle: Option<(u64, Duration)>,
    /// The idle phase's bytes by message kind.
    pub idle_by_kind: BTreeMap<&'static str, u64>,
    pub pushed_during_writes: u64,
    pub writes_during_load: usize,
    pub healed_at: Option<Instant>,
    /// The partition scenario's split: nodes below this index on one side, the rest on the
    /// other (`checker::flapping`).
    pub split_at: Option<usize>,
    pub partitioned_writes: std::ops::Range<usize>,
    /// Crashed nodes: (index, identity at the crash, when).
    pub crashes: Vec<(usize, NodeId, Instant)>,
    /// Nodes that left gracefully: (index, identity).
    pub leaves: Vec<(usize, NodeId)>,
    /// Incarnations that ran: (identity, started, stopped).
    pub incarnations: Vec<(NodeId, Instant, Option<Instant>)>,
    /// Crashes during the chaos scenario, for `checker::detection::timely`.
    pub episodes: Vec<crate::checker::detection::Episode>,
    pub catchup_ms: Option<u64>,
    /// Phases that missed their deadline (`checker::liveness`).
    pub missed: Vec<Missed>,
}

pub fn run(world: &mut World, phases: &mut Phases) {
    match world.params.scenario {
        Scenario::Steady => steady(world, phases),
        Scenario::Partition => partition(world, phases),
        Scenario::Churn => churn(world, phases),
        Scenario::Join => join(world, phases),
        Scenario::Catchup => catchup(world, phases),
        Scenario::Chaos => chaos::run(world, phases),
    }
}

fn say(world: &World, what: &str) {
    if !world.params.quiet {
        println!("  [t={:>7.2}s] {what}", world.elapsed().as_secs_f64());
    }
}

/// Starts every node, each joining through up to three already started ones, over `spread`,
/// then waits until every node lists every other.
fn bootstrap(
    world: &mut World,
    phases: &mut Phases,
    nodes: std::ops::Range<usize>,
    spread: Duration,
) {
    let first = nodes.start;
    let count = nodes.len();
    let step = spread / count.max(1) as u32;
    for i in nodes.clone() {
        let seeds: Vec<usize> = if i == first {
            Vec::new()
        } else {
            (0..3)
                .map(|_| first + world.rng().random_range(0..(i - first)))
                .collect()
        };
        world.start_node(i, &seeds);
        phases.incarnations.push((world.id(i), world.now, None));
        world.run_for(step);
    }
    let t0 = world.now;
    let limit = Duration::from_secs(180);
    let full = |w: &World| {
        nodes
            .clone()
            .all(|i| w.node(i).is_some_and(|n| n.member_count() == count - 1))
    };
    if world.run_until(Duration::from_millis(100), limit, full) {
        phases.join_ms = Some((world.now - t0 + spread).as_millis() as u64);
        say(world, &format!("all {count} nodes see each other"));
    } else {
        let seen: usize = nodes
            .clone()
            .filter(|&i| world.node(i).is_some_and(|n| n.member_count() == count - 1))
            .count();
        phases
            .missed
            .push(Missed::Membership { seen, count, limit });
    }
}

/// Starts every node at once with the full member list restored, each joining through
/// three random others.
fn warm_bootstrap(world: &mut World, phases: &mut Phases) {
    let n = world.len();
    let members: Vec<NodeId> = (0..n).map(|i| world.id(i)).collect();
    let progress = (n / 10).max(1);
    for i in 0..n {
        let seeds: Vec<usize> = (0..3).map(|_| world.rng().random_range(0..n)).collect();
        world.start_node_with_members(i, &seeds, &members);
        phases.incarnations.push((world.id(i), world.now, None));
        if (i + 1) % progress == 0 {
            say(world, &format!("started {}/{n} nodes (warm)", i + 1));
        }
    }
    phases.join_ms = None;
}

/// Starts every node, waits for full membership, and lets views settle for two seconds.
/// Returns the number of nodes.
fn start_cluster(world: &mut World, phases: &mut Phases) -> usize {
    let n = world.len();
    match world.params.start {
        Start::Cold => {
            let spread = Duration::from_millis((n as u64 * 2).clamp(100, 4_000));
            bootstrap(world, phases, 0..n, spread);
        }
        Start::Warm => warm_bootstrap(world, phases),
    }
    world.run_for(Duration::from_secs(2));
    n
}

fn random_write(world: &mut World, at: impl Fn(&World, usize) -> bool) -> bool {
    let Some(i) = world.random_node(|w, i| w.is_up(i) && at(w, i)) else {
        return false;
    };
    let keys = world.params.keys;
    let key = format!("app/key-{}", world.rng().random_range(0..keys));
    let value = if world.rng().random_bool(0.1) {
        None
    } else {
        Some(Bytes::from(
            world.rng().random::<u64>().to_le_bytes().to_vec(),
        ))
    };
    world.write(i, &key, value)
}

fn total_pushed(world: &World) -> u64 {
    (0..world.len())
        .map(|i| world.stats(i).pushed_versions_received)
        .sum()
}

/// Writes at the configured rate from nodes `at` picks, measuring bytes sent meanwhile.
fn write_phase(
    world: &mut World,
    phases: &mut Phases,
    writes: usize,
    at: impl Fn(&World, usize) -> bool,
) {
    let (bytes0, t0, pushed0, w0) = (
        world.bytes_sent,
        world.now,
        total_pushed(world),
        world.writes.len(),
    );
    let interval = Duration::from_millis(world.params.write_interval_ms);
    for _ in 0..writes {
        random_write(world, &at);
        world.run_for(interval);
    }
    world.run_for(Duration::from_secs(1));
    phases.loaded = Some((world.bytes_sent - bytes0, world.now - t0));
    phases.pushed_during_writes += total_pushed(world) - pushed0;
    phases.writes_during_load += world.writes.len() - w0;
}

/// Runs until every write is on every live node, then until every live node has seen the same
/// versions (what no write tracks, writers' endorsements and member records, spreads by
/// anti-entropy alone when it was written before its node had members: with the WAN preset's
/// rounds of 2 to 8 s that outlasted the idle phase), both within `limit`. A map still
/// different then fails the convergence checker, which names the node and key.
fn converge(world: &mut World, phases: &mut Phases, limit: Duration) {
    let start = world.now;
    let done = |w: &World| w.missing_writes() == 0;
    if world.run_until(Duration::from_millis(50), limit, done) {
        say(world, "every write is on every live node");
        let left = limit.saturating_sub(world.now - start);
        if !world.digests_agree()
            && world.run_until(Duration::from_millis(50), left, World::digests_agree)
        {
            say(world, "every live node has seen the same versions");
        }
    } else {
        let pending = world.missing_writes();
        phases.missed.push(Missed::Spread {
            pending,
            writes: world.writes.len(),
            limit,
        });
    }
}

fn idle_phase(world: &mut World, phases: &mut Phases) {
    let (bytes0, t0) = (world.bytes_sent, world.now);
    world.bytes_by_kind = Some(BTreeMap::new());
    world.run_for(Duration::from_secs(10));
    phases.idle = Some((world.bytes_sent - bytes0, world.now - t0));
    phases.idle_by_kind = world.bytes_by_kind.take().unwrap_or_default();
}

fn steady(world: &mut World, phases: &mut Phases) {
    start_cluster(world, phases);
    say(world, "writing");
    write_phase(world, phases, world.params.writes, |_, _| true);
    converge(world, phases, Duration::from_secs(60));
    idle_phase(world, phases);
}

fn partition(world: &mut World, phases: &mut Phases) {
    start_cluster(world, phases);
    let one_way = world.params.one_way;
    say(
        world,
        if one_way {
            "cutting traffic from one half to the other, writing on both sides"
        } else {
            "splitting 50/50, writing on both sides"
        },
    );
    world.split(one_way);
    phases.split_at = Some(world.len() / 2);
    let first = world.writes.len();
    write_phase(world, phases, world.params.writes, |_, _| true);
    // Long enough for each side to declare the other down.
    world.run_for(Duration::from_secs(5));
    phases.partitioned_writes = first..world.writes.len();
    say(world, "healing");
    world.heal();
    phases.healed_at = Some(world.now);
    converge(world, phases, Duration::from_secs(120));
    let sees_all = |w: &World, i: usize| {
        w.node(i)
            .is_some_and(|node| node.member_count() == w.len() - 1)
    };
    let n_all = |w: &World| (0..w.len()).all(|i| sees_all(w, i));
    let limit = Duration::from_secs(120);
    if !world.run_until(Duration::from_millis(100), limit, n_all) {
        let seen = (0..world.len()).filter(|&i| sees_all(world, i)).count();
        phases.missed.push(Missed::Heal {
            seen,
            count: world.len(),
            limit,
        });
    }
    idle_phase(world, phases);
}

fn churn(world: &mut World, phases: &mut Phases) {
    let n = start_cluster(world, phases);
    let k = (n / 100).max(1);
    let writes_per_step = world.params.writes / 4;
    // Crash k nodes, write; k others leave, write; the crashed restart, write; then settle.
    let mut crashed = Vec::new();
    for _ in 0..k {
        if let Some(i) = world.random_node(|w, i| w.is_up(i) && i != 0) {
            let id = world.id(i);
            world.crash(i);
            close_incarnation(phases, id, world.now);
            phases.crashes.push((i, id, world.now));
            crashed.push(i);
        }
    }
    say(world, &format!("crashed {k} nodes"));
    write_phase(world, phases, writes_per_step, |_, _| true);
    world.run_for(Duration::from_secs(6));
    for _ in 0..k {
        if let Some(i) = world.random_node(|w, i| w.is_up(i) && i != 0) {
            // The incarnation ends when it starts leaving: from then on, being declared down
            // is the expected outcome.
            close_incarnation(phases, world.id(i), world.now);
            phases.leaves.push((i, world.id(i)));
            world.leave(i);
        }
    }
    say(world, &format!("{k} nodes left"));
    write_phase(world, phases, writes_per_step, |_, _| true);
    world.run_for(Duration::from_secs(4));
    for &i in &crashed {
        let seeds: Vec<usize> = (0..3)
            .filter_map(|_| world.random_node(|w, j| w.is_up(j)))
            .collect();
        world.start_node(i, &seeds);
        phases.incarnations.push((world.id(i), world.now, None));
    }
    say(world, "restarted the crashed nodes");
    write_phase(world, phases, writes_per_step, |_, _| true);
    converge(world, phases, Duration::from_secs(60));
    world.run_for(Duration::from_secs(5));
    idle_phase(world, phases);
}

fn close_incarnation(phases: &mut Phases, id: NodeId, at: Instant) {
    for inc in phases
        .incarnations
        .iter_mut()
        .filter(|inc| inc.0.addr == id.addr && inc.2.is_none())
    {
        inc.2 = Some(at);
    }
}

fn join(world: &mut World, phases: &mut Phases) {
    let n = world.len();
    say(world, &format!("{n} nodes joining within one second"));
    bootstrap(world, phases, 0..n, Duration::from_secs(1));
    world.run_for(Duration::from_secs(2));
    write_phase(world, phases, world.params.writes, |_, _| true);
    converge(world, phases, Duration::from_secs(60));
    idle_phase(world, phases);
}

fn catchup(world: &mut World, phases: &mut Phases) {
    let n = world.len();
    let keys = world.params.catchup_keys;
    say(world, &format!("preloading {keys} keys"));
    let preload = preloaded(world, keys);
    world.preload(0..n - 1, &preload);
    bootstrap(
        world,
        phases,
        0..n - 1,
        Duration::from_millis(((n as u64 - 1) * 2).clamp(100, 4_000)),
    );
    world.run_for(Duration::from_secs(2));
    say(world, "a new node joins");
    let t0 = world.now;
    let seeds = [0, 1, 2];
    world.start_node(n - 1, &seeds);
    phases.incarnations.push((world.id(n - 1), world.now, None));
    let target = preload.digest().clone();
    let caught_up = |w: &World| {
        w.node(n - 1)
            .is_some_and(|node| node.store().digest().covers(&target))
    };
    let limit = Duration::from_secs(60);
    if world.run_until(Duration::from_millis(5), limit, caught_up) {
        phases.catchup_ms = Some((world.now - t0).as_millis() as u64);
        say(world, &format!("caught up {keys} keys"));
    } else {
        phases.missed.push(Missed::Catchup { limit });
    }
    write_phase(world, phases, world.params.writes.min(50), |_, _| true);
    converge(world, phases, Duration::from_secs(60));
}

/// The catchup scenario's replica: `keys` values of 100 bytes by one writer that is no node,
/// signed (after its endorsement) unless the run does not sign.
fn preloaded(world: &mut World, keys: usize) -> Store {
    const WALL: u64 = 1_700_000_000_000;
    let issued = world.issue_writer();
    let writer = issued.as_ref().map_or(WriterId(u64::MAX), |i| i.writer());
    let mut store = Store::new(writer, StoreConfig::default());
    let mut write = |key: Key, value: Bytes| {
        let seq = store.last_local_seq() + 1;
        let version = store
            .local_version(WALL, key, Payload::Value(value), seq, None)
            .expect("small value");
        let version = match &issued {
            Some(i) => i.signer.key().sign(version, None, None),
            None => version,
        };
        store.apply(version).expect("a local version applies");
    };
    if let Some(i) = &issued {
        write(
            endorsement_key(i.writer()).expect("a valid key"),
            i.endorsement.clone(),
        );
    }
    for k in 0..keys {
        let key = Key::new(&format!("bulk/{:03}/key-{k:07}", k % 997)).expect("valid key");
        write(key, Bytes::from(vec![b'v'; 100]));
    }
    store
}
