//! The simulated world: nodes, a network with latency, loss, duplication, reordering and
//! partitions, a disk with fsync latency, crashes that lose what was not durable, restarts,
//! pauses, per-node clock skew, all in virtual time from one seed.

mod disk;
pub mod faults;
pub mod pki;

use std::{
    cmp::Ordering,
    collections::{BTreeMap, BinaryHeap, HashMap},
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use bytes::Bytes;
use confmesh::proto::{
    Digest, Dot, Key, Payload, Store, Version, WriteError, WriterId,
    node::{Audit, Channel, Config, Dissemination, Event, Node, NodeId, NodeStats, TrustConfig},
    trust::{Mode, endorsement_key, policy::Rule},
    wire,
};
use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus};

use self::{
    disk::Disk,
    faults::{Fault, FaultLog, Partition},
    pki::{Issued, Pki, SimAdmin},
};
use crate::{
    checker::continuous::{self, Finding},
    follow::Follow,
    params::{Params, Preset},
};

/// One write the scenario made, and when each node first held it.
pub struct WriteRecord {
    /// The key written (or deleted).
    pub key: Key,
    pub dot: Dot,
    /// The value written; `None` for a delete.
    pub value: Option<Bytes>,
    /// When it was made.
    pub at: Instant,
    /// When its writer acknowledged it (its commit was durable); `None` while pending.
    pub acked: Option<Instant>,
    /// Its writer crashed before acknowledging it: it never took effect, and its dot may be
    /// given to a later write.
    pub lost: bool,
    pub node: usize,
    pub seen_at: Vec<Option<Instant>>,
}

impl WriteRecord {
    /// Whether the write took effect: acknowledged, and so never to be lost.
    pub fn acknowledged(&self) -> bool {
        self.acked.is_some() && !self.lost
    }
}

/// How often the continuous checks run, in virtual time.
const AUDIT_EVERY: Duration = Duration::from_millis(500);

/// A node slot: the node while it runs, and its disk.
struct Slot {
    node: Option<Node>,
    id: NodeId,
    disk: Disk,
    /// While paused: when it resumes.
    paused_until: Option<Instant>,
    /// The pending wake-up event, to skip stale ones.
    wake: Option<Instant>,
    /// Writes this node is not known to hold.
    unseen: Vec<usize>,
    /// The store's revision and digest at the last audit, while this incarnation runs.
    audited: Option<(u64, Digest)>,
    left: bool,
    skew_ms: i64,
    /// Counters of earlier incarnations (before crashes), so totals survive restarts.
    stats_before: NodeStats,
}

enum Kind {
    Deliver {
        to: usize,
        from: usize,
        channel: Channel,
        bytes: Bytes,
    },
    Wake {
        node: usize,
    },
    /// The node's commit of local writes completes (`epoch`: of its disk when submitted).
    Durable {
        node: usize,
        epoch: u64,
    },
    /// A paused node resumes.
    Resume {
        node: usize,
    },
}

struct Scheduled {
    at: Instant,
    seq: u64,
    kind: Kind,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed: the heap pops the earliest (time, sequence) first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Membership events observed, for failure-detection checks: (when, observer, event).
pub type MemberLog = Vec<(Instant, usize, Event)>;

pub struct World {
    pub params: Params,
    mode: Dissemination,
    rng: Xoshiro256PlusPlus,
    pub start: Instant,
    pub now: Instant,
    seq: u64,
    heap: BinaryHeap<Scheduled>,
    slots: Vec<Slot>,
    index: HashMap<SocketAddr, usize>,
    /// The links cut, while partitioned.
    partition: Option<Partition>,
    /// Every partition and pause, for the checkers.
    pub faults: FaultLog,
    pub writes: Vec<WriteRecord>,
    /// Pending writes by (writer, dot): the index of their record.
    pending: HashMap<(usize, Dot), usize>,
    /// The newest record of each dot.
    by_dot: HashMap<Dot, usize>,
    /// What nodes were given at the start (`preload`), as written by nobody in the run.
    preloaded: Option<Store>,
    /// The CA and the keys of the run, unless `--no-signing`.
    pki: Option<Pki>,
    /// The admin who makes the run's policy (`--policy`), once it made an entry.
    admin: Option<SimAdmin>,
    /// Writes a node refused because the policy did not grant them.
    pub denied_writes: u64,
    /// The endorsement of every writer key issued: the key and payload of its first version.
    endorsements: HashMap<WriterId, (Key, Bytes)>,
    /// What the continuous checks found, in the order found (at most [`continuous::KEPT`]).
    pub findings: Vec<(Duration, Finding)>,
    next_audit: Instant,
    pub member_log: MemberLog,
    pub bytes_sent: u64,
    /// While `Some`, bytes sent are also counted by message kind (each message decoded):
    /// the idle phase's breakdown. Reads only; the trace does not change.
    pub bytes_by_kind: Option<BTreeMap<&'static str, u64>>,
    pub messages_sent: u64,
    pub events_processed: u64,
    pub trace_hash: u64,
    /// `--follow`: what the mesh believes of one node, logged as it changes.
    pub follow: Option<Follow>,
}

impl World {
    pub fn new(params: Params, mode: Dissemination) -> World {
        #[allow(
            clippy::disallowed_methods,
            reason = "an arbitrary origin for virtual time"
        )]
        let start = Instant::now();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(params.seed);
        let n = params.nodes;
        let mut pki = params.signing.then(|| Pki::new(params.seed));
        let mut endorsements = HashMap::new();
        let slots = (0..n)
            .map(|i| {
                let skew = params.skew_ms as i64;
                // A data directory's writer key, drawn when it is created: a node that
                // restarts from its disk keeps it. Its id is the node's writer id.
                let mut disk = Disk::default();
                let writer = match pki.as_mut().map(Pki::issue) {
                    Some(issued) => {
                        let writer = issued.writer();
                        endorsements.insert(writer, endorsement_of(&issued));
                        disk.writer = Some(issued.signer);
                        writer
                    }
                    None => WriterId(i as u64 + 1),
                };
                Slot {
                    node: None,
                    id: NodeId {
                        addr: addr(i),
                        writer,
                        generation: 1,
                    },
                    disk,
                    paused_until: None,
                    wake: None,
                    unseen: Vec::new(),
                    audited: None,
                    left: false,
                    skew_ms: if skew > 0 {
                        rng.random_range(-skew..=skew)
                    } else {
                        0
                    },
                    stats_before: NodeStats::default(),
                }
            })
            .collect();
        World {
            mode,
            rng,
            start,
            now: start,
            seq: 0,
            heap: BinaryHeap::new(),
            slots,
            index: (0..n).map(|i| (addr(i), i)).collect(),
            partition: None,
            faults: FaultLog::default(),
            writes: Vec::new(),
            pending: HashMap::new(),
            by_dot: HashMap::new(),
            preloaded: None,
            pki,
            admin: None,
            denied_writes: 0,
            endorsements,
            findings: Vec::new(),
            next_audit: start + AUDIT_EVERY,
            member_log: Vec::new(),
            bytes_sent: 0,
            bytes_by_kind: None,
            messages_sent: 0,
            events_processed: 0,
            trace_hash: 0xcbf2_9ce4_8422_2325,
            follow: params.follow.map(|f| Follow::new(f, addr(f), n)),
            params,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn config(&self, i: usize, id: NodeId) -> Config {
        let rng_seed =
            self.params.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ id.generation;
        let mut config = match self.params.preset {
            Preset::Lan => Config::lan(id, self.params.nodes, rng_seed),
            Preset::Wan => Config::wan(id, self.params.nodes, rng_seed),
        };
        config.dissemination = self.mode;
        if let Some(k) = self.params.eager_min {
            config.eager_min = k;
            config.view_size = config.view_size.max(k);
        }
        if let Some(ms) = self.params.probe_ms {
            config.swim.probe_period = Duration::from_millis(ms);
            // The LAN preset's share of the period for the direct round trip (150 of 500 ms).
            config.swim.probe_rtt = Duration::from_millis(ms * 3 / 10);
        }
        if let Some(ms) = self.params.suspect_ms {
            config.swim.suspect_to_down_after = Duration::from_millis(ms);
        }
        if matches!(self.mode, Dissemination::Rounds { .. }) {
            // memberlist's push-pull, the baseline's only backstop, runs every 30 s.
            config.anti_entropy_interval = Duration::from_secs(30);
        }
        if let Some(pki) = &self.pki {
            config.trust = TrustConfig {
                signer: self.slots[i].disk.writer.clone(),
                certifier: pki.certifier(),
                mode: Mode::Enforcing,
            };
        }
        config
    }

    /// A writer key and its endorsement for a writer outside the nodes (the catchup
    /// scenario's preloaded keys), unless `--no-signing`.
    pub fn issue_writer(&mut self) -> Option<Issued> {
        let issued = self.pki.as_mut()?.issue();
        self.endorsements
            .insert(issued.writer(), endorsement_of(&issued));
        Some(issued)
    }

    /// How the run's certifier answered, if nodes sign.
    pub fn certifier_stats(&self) -> Option<pki::CacheStats> {
        self.pki.as_ref().map(|pki| pki.certifier().stats())
    }

    /// Starts node `i` (fresh, or restarted from what it persisted) and joins it via `seeds`.
    pub fn start_node(&mut self, i: usize, seeds: &[usize]) {
        self.start_node_with_members(i, seeds, &[]);
    }

    /// Like [`World::start_node`], with `members` restored into the node's member table
    /// first.
    pub fn start_node_with_members(&mut self, i: usize, seeds: &[usize], members: &[NodeId]) {
        let slot = &self.slots[i];
        let id = slot.id;
        let wall = 1_700_000_000_000u64.saturating_add_signed(slot.skew_ms)
            + self.elapsed().as_millis() as u64;
        let config = self.config(i, id);
        // A restart reads its data directory (which still holds what it read), as the
        // runtime does: a store restored from its rows, nothing else carried over.
        let store = self.slots[i].disk.durable.as_ref().map(|d| {
            Store::restore(d.writer(), d.config().clone(), d.snapshot())
                .expect("a snapshot of a store restores")
        });
        let mut node = Node::with_store(config, self.now, wall, store);
        if !members.is_empty() {
            node.restore_members(self.now, members.iter().copied());
        }
        let seeds: Vec<SocketAddr> = seeds.iter().map(|&s| addr(s)).collect();
        if !seeds.is_empty() {
            node.join(self.now, &seeds);
        }
        let digest = node.store().digest();
        let unseen = (0..self.writes.len())
            .filter(|&w| !self.writes[w].lost && !digest.contains(&self.writes[w].dot))
            .collect();
        let slot = &mut self.slots[i];
        slot.node = Some(node);
        slot.left = false;
        slot.unseen = unseen;
        slot.audited = None;
        self.after(i);
    }

    /// Gives nodes `range` a replica to start from, as if they had it on disk.
    pub fn preload(&mut self, range: std::ops::Range<usize>, store: &Store) {
        for i in range {
            let snapshot = store.snapshot();
            let writer = self.slots[i].id.writer;
            self.slots[i].disk.durable = Some(
                Store::restore(writer, store.config().clone(), snapshot).expect("valid snapshot"),
            );
        }
        self.preloaded = Some(store.clone());
    }

    /// Crashes node `i` (a power cut): it stops at once, and restarts from what was durable;
    /// its writes not yet acknowledged are lost.
    pub fn crash(&mut self, i: usize) {
        self.stop(i, false);
    }

    fn stop(&mut self, i: usize, graceful: bool) {
        let Some(node) = self.slots[i].node.take() else {
            return;
        };
        let slot = &mut self.slots[i];
        if graceful {
            slot.disk.stop(node.store());
        } else {
            slot.disk.crash();
        }
        add_stats(&mut slot.stats_before, node.stats());
        slot.id.generation += 1_000;
        slot.wake = None;
        slot.audited = None;
        if slot.paused_until.take().is_some() {
            self.faults
                .end(self.now, |f| matches!(f, Fault::Pause(p) if *p == i));
        }
        let writes = &mut self.writes;
        self.pending.retain(|&(writer, _), &mut w| {
            if writer == i {
                writes[w].lost = true;
            }
            writer != i
        });
    }

    /// Node `i` leaves gracefully; it is gone a second later, its replica saved.
    pub fn leave(&mut self, i: usize) {
        if let Some(node) = self.slots[i].node.as_mut() {
            node.leave(self.now);
            self.after(i);
        }
        self.run_for(Duration::from_secs(1));
        self.stop(i, true);
        self.slots[i].left = true;
    }

    /// Pauses node `i` for `d` (a stopped process, a long GC pause): messages to it wait,
    /// its timers wait, it sends nothing. When it resumes, its timers run first.
    pub fn pause(&mut self, i: usize, d: Duration) {
        if !self.is_up(i) || self.is_paused(i) {
            return;
        }
        let until = self.now + d;
        self.slots[i].paused_until = Some(until);
        self.faults.begin(self.now, Fault::Pause(i));
        self.push(until, Kind::Resume { node: i });
    }

    /// The index of the node at `addr`.
    pub fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.index.get(&addr).copied()
    }

    /// Whether every live node has seen the same versions (equal digest fingerprints),
    /// writers' endorsements and member records included, which no write tracks.
    pub fn digests_agree(&self) -> bool {
        let mut live = self.slots.iter().filter_map(|s| s.node.as_ref());
        let Some(first) = live.next().map(Node::fingerprint) else {
            return true;
        };
        live.all(|node| node.fingerprint() == first)
    }

    /// How many acknowledged writes some running node is not known to hold yet.
    pub fn missing_writes(&self) -> usize {
        let mut missing: Vec<usize> = self
            .slots
            .iter()
            .filter(|s| s.node.is_some())
            .flat_map(|s| s.unseen.iter().copied())
            .filter(|&w| self.writes[w].acknowledged())
            .collect();
        missing.sort_unstable();
        missing.dedup();
        missing.len()
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.slots[i].node.is_some()
    }

    pub fn is_paused(&self, i: usize) -> bool {
        self.slots[i].paused_until.is_some()
    }

    /// Whether node `i` runs and is not paused: it can take writes.
    pub fn is_running(&self, i: usize) -> bool {
        self.is_up(i) && !self.is_paused(i)
    }

    pub fn node(&self, i: usize) -> Option<&Node> {
        self.slots[i].node.as_ref()
    }

    pub fn id(&self, i: usize) -> NodeId {
        self.slots[i]
            .node
            .as_ref()
            .map_or(self.slots[i].id, Node::id)
    }

    pub fn stats(&self, i: usize) -> NodeStats {
        let mut total = self.slots[i].stats_before;
        if let Some(node) = &self.slots[i].node {
            add_stats(&mut total, node.stats());
        }
        total
    }

    /// Splits the nodes into two halves (by index); `one_way` drops only traffic from the
    /// first half to the second.
    pub fn split(&mut self, one_way: bool) {
        let n = self.len();
        let groups: Vec<u8> = (0..n).map(|i| u8::from(i >= n / 2)).collect();
        self.partition(Partition {
            groups,
            one_way: one_way.then_some((0, 1)),
        });
    }

    /// Cuts the links `partition` names, in place of any partition in force.
    pub fn partition(&mut self, partition: Partition) {
        self.heal();
        self.faults.begin(self.now, Fault::Cut(partition.clone()));
        self.partition = Some(partition);
    }

    pub fn heal(&mut self) {
        if self.partition.take().is_some() {
            self.faults.end(self.now, |f| matches!(f, Fault::Cut(_)));
        }
    }

    fn blocked(&self, from: usize, to: usize) -> bool {
        self.partition.as_ref().is_some_and(|p| p.blocks(from, to))
    }

    /// Writes at node `i`; returns whether a version was written (a delete of an absent key
    /// writes nothing).
    pub fn write(&mut self, i: usize, key: &str, value: Option<Bytes>) -> bool {
        let now = self.now;
        let n = self.len();
        let Some(node) = self.slots[i].node.as_mut() else {
            return false;
        };
        let key = Key::new(key).expect("scenario keys are valid");
        let written = match value.clone() {
            Some(v) => node.put(now, key, v).map(Some),
            None => node.try_delete_audited(now, key, Audit::default()),
        };
        let version = match written {
            Ok(Some(version)) => version,
            Ok(None) => return false,
            Err(WriteError::Denied(_)) => {
                self.denied_writes += 1;
                return false;
            }
            Err(e) => panic!("a scenario write failed: {e}"),
        };
        self.record_write(i, version, value, n);
        true
    }

    /// Makes the policy entry `rule` at node `i`, proven by the run's admin, in the context
    /// node `i` holds; returns whether it was written (`--policy`).
    pub fn write_rule(&mut self, i: usize, rule: &Rule) -> bool {
        let now = self.now;
        let n = self.len();
        let (Some(pki), Some(node)) = (self.pki.as_mut(), self.slots[i].node.as_mut()) else {
            return false;
        };
        let admin = self.admin.get_or_insert_with(|| pki.admin("ops"));
        let context = node.policy_context();
        let key = node.next_entry_key();
        let payload = rule.encode();
        let proof = admin.prove_rule(&key, &Payload::Value(payload.clone()), &context);
        let audit = Audit {
            author: Some(admin.principal().to_owned()),
            message: None,
            token: None,
        };
        match node.write_rule(now, &key, rule, audit, context, proof) {
            Ok(version) => {
                self.record_write(i, version, Some(payload), n);
                true
            }
            Err(e) => {
                if !self.params.quiet {
                    println!("  policy entry not written at node {i}: {e}");
                }
                false
            }
        }
    }

    /// The node principal's name of node `i`'s writer, once its endorsement is applied.
    pub fn node_name(&self, i: usize) -> Option<String> {
        let node = self.slots[i].node.as_ref()?;
        let principal = node.judge().node_of(node.id().writer)?;
        principal.name().map(str::to_owned)
    }

    /// Node `i`'s version vector: what a root's or a revocation's cutoff made there holds.
    pub fn version_vector(&self, i: usize) -> Option<confmesh::proto::VClock> {
        let node = self.slots[i].node.as_ref()?;
        Some(node.store().digest().version_vector())
    }

    /// Records a local write of node `i` for the checkers, and lets the node act.
    fn record_write(&mut self, i: usize, version: Version, value: Option<Bytes>, n: usize) {
        let w = self.writes.len();
        if let Some(&earlier) = self.by_dot.get(&version.dot)
            && self.writes[earlier].acknowledged()
            && self.findings.len() < continuous::KEPT
        {
            self.findings.push((
                self.elapsed(),
                Finding::Reissued {
                    write: earlier,
                    dot: version.dot,
                },
            ));
        }
        self.writes.push(WriteRecord {
            key: version.key.clone(),
            dot: version.dot,
            value,
            at: self.now,
            acked: None,
            lost: false,
            node: i,
            seen_at: vec![None; n],
        });
        self.pending.insert((i, version.dot), w);
        self.by_dot.insert(version.dot, w);
        for (j, slot) in self.slots.iter_mut().enumerate() {
            if j != i && slot.node.is_some() {
                slot.unseen.push(w);
            }
        }
        self.trace(1, i as u64, version.dot.counter);
        self.after(i);
    }

    /// Processes events until `d` of virtual time has passed.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.heap.peek().is_some_and(|e| e.at <= end) {
            let Some(event) = self.heap.pop() else { break };
            while self.next_audit <= event.at {
                self.now = self.next_audit;
                self.audit();
                self.next_audit += AUDIT_EVERY;
            }
            self.now = event.at;
            self.events_processed += 1;
            if let Some(node) = event.kind.node()
                && let Some(until) = self.slots[node].paused_until
                && !matches!(event.kind, Kind::Resume { .. })
            {
                // A paused node handles nothing: what arrives waits for it to resume.
                if !matches!(event.kind, Kind::Wake { .. }) {
                    self.push(until, event.kind);
                }
                continue;
            }
            match event.kind {
                Kind::Deliver {
                    to,
                    from,
                    channel,
                    bytes,
                } => self.deliver(to, from, channel, &bytes),
                Kind::Wake { node } => {
                    if self.slots[node].wake != Some(event.at) {
                        continue; // stale
                    }
                    self.slots[node].wake = None;
                    let now = self.now;
                    if let Some(n) = self.slots[node].node.as_mut() {
                        n.handle_timeout(now);
                    }
                    self.after(node);
                }
                Kind::Durable { node, epoch } => {
                    if self.slots[node].disk.epoch == epoch {
                        let locals = self.slots[node].disk.complete();
                        self.acknowledge(node, &locals);
                        self.after(node);
                    }
                }
                Kind::Resume { node } => {
                    if self.slots[node].paused_until != Some(event.at) {
                        continue; // crashed meanwhile
                    }
                    self.slots[node].paused_until = None;
                    self.faults
                        .end(self.now, |f| matches!(f, Fault::Pause(p) if *p == node));
                    self.slots[node].wake = None;
                    let now = self.now;
                    if let Some(n) = self.slots[node].node.as_mut() {
                        n.handle_timeout(now);
                    }
                    self.after(node);
                }
            }
        }
        while self.next_audit <= end {
            self.now = self.next_audit;
            self.audit();
            self.next_audit += AUDIT_EVERY;
        }
        self.now = end;
    }

    /// Node `i`'s commit of `locals` is durable: it applies them, and they are acknowledged.
    fn acknowledge(&mut self, i: usize, locals: &[Version]) {
        let Some(last) = locals.last() else { return };
        let now = self.now;
        let Some(node) = self.slots[i].node.as_mut() else {
            return;
        };
        let refused = node.handle_persisted(now, last.dot.counter);
        debug_assert!(refused.is_empty(), "a simulated node's write was refused");
        for version in locals {
            if let Some(w) = self.pending.remove(&(i, version.dot)) {
                self.writes[w].acked = Some(now);
                self.writes[w].seen_at[i] = Some(now);
            }
        }
    }

    /// The continuous checks (`checker::continuous`), on the world as it is now.
    fn audit(&mut self) {
        if self.findings.len() >= continuous::KEPT {
            return;
        }
        let t = self.elapsed();
        let mut found = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(node) = &slot.node else { continue };
            let store = node.store();
            if slot
                .audited
                .as_ref()
                .is_some_and(|(revision, _)| *revision == store.revision())
            {
                continue;
            }
            if let Some((_, before)) = &slot.audited
                && let Err(f) = continuous::kept(i, before, store.digest())
            {
                found.push(f);
            }
            let written = |dot: &Dot| {
                self.by_dot
                    .get(dot)
                    .map(|&w| &self.writes[w])
                    .filter(|w| w.acknowledged())
                    .map(|w| (w.key.clone(), w.value.clone()))
                    .or_else(|| {
                        let v = self.preloaded.as_ref()?.version_by_dot(dot)?;
                        Some((v.key.clone(), v.payload.value().cloned()))
                    })
                    .or_else(|| {
                        // A writer's endorsement, which its node writes first by itself.
                        let (key, payload) = self.endorsements.get(&dot.actor)?;
                        (dot.counter == 1).then(|| (key.clone(), Some(payload.clone())))
                    })
            };
            if let Err(f) = continuous::written(i, store, written) {
                found.push(f);
            }
            slot.audited = Some((store.revision(), store.digest().clone()));
        }
        let holds = |w: &WriteRecord| {
            let held = |s: &Slot| {
                s.node
                    .as_ref()
                    .is_some_and(|n| n.store().digest().contains(&w.dot))
                    || s.disk
                        .durable
                        .as_ref()
                        .is_some_and(|d| d.digest().contains(&w.dot))
            };
            held(&self.slots[w.node]) || self.slots.iter().any(held)
        };
        if let Err(f) = continuous::held(&self.writes, holds) {
            found.push(f);
        }
        for f in found {
            if self.findings.len() < continuous::KEPT {
                self.findings.push((t, f));
            }
        }
    }

    /// Runs until `done` holds (checked every `step`) or `limit` passes; returns whether it held.
    pub fn run_until(
        &mut self,
        step: Duration,
        limit: Duration,
        mut done: impl FnMut(&World) -> bool,
    ) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.run_for(step);
        }
        done(self)
    }

    /// Delivers `bytes` to node `to` as a stream message from node `from`, now: what a peer
    /// that crafts its messages could send.
    #[cfg(test)]
    pub fn inject(&mut self, to: usize, from: usize, bytes: &[u8]) {
        self.deliver(to, from, Channel::Stream, bytes);
    }

    fn deliver(&mut self, to: usize, from: usize, channel: Channel, bytes: &[u8]) {
        let now = self.now;
        if self.slots[to].node.is_none() {
            return;
        }
        self.trace(2, to as u64, bytes.len() as u64);
        let Some(node) = self.slots[to].node.as_mut() else {
            return;
        };
        if channel == Channel::Datagram
            && let Some(f) = &self.follow
        {
            f.datagram(now - self.start, "recv", from, to, bytes);
        }
        match channel {
            Channel::Datagram => node.handle_datagram(now, addr(from), bytes),
            Channel::Stream => node.handle_stream_message(now, addr(from), bytes),
        }
        if channel == Channel::Stream {
            self.note_seen(to);
        }
        self.after(to);
    }

    /// Marks the writes node `i` now holds.
    fn note_seen(&mut self, i: usize) {
        let now = self.now;
        let slot = &mut self.slots[i];
        let Some(node) = slot.node.as_ref() else {
            return;
        };
        let digest = node.store().digest();
        let writes = &mut self.writes;
        slot.unseen.retain(|&w| {
            if writes[w].lost {
                return false;
            }
            let have = writes[w].acked.is_some() && digest.contains(&writes[w].dot);
            if have {
                writes[w].seen_at[i].get_or_insert(now);
            }
            !have
        });
    }

    /// Drains node `i`'s output into the network and re-arms its wake-up.
    fn after(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        while let Some(version) = node.poll_persist() {
            slot.disk.queue(version);
        }
        if self.params.disk_ms == 0 {
            let locals = slot.disk.take_queued();
            if !locals.is_empty() {
                self.acknowledge(i, &locals);
                let slot = &mut self.slots[i];
                if let Some(node) = &slot.node {
                    slot.disk.durable_now(node.store());
                }
            }
        } else if slot.disk.submit(node.store()) {
            let epoch = slot.disk.epoch;
            let delay = self.rng.random_range(0..=self.params.disk_ms * 1_000);
            self.push(
                self.now + Duration::from_micros(delay),
                Kind::Durable { node: i, epoch },
            );
        }
        let slot = &mut self.slots[i];
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        slot.disk.checkpoint(self.now, node.store());
        let mut out = Vec::new();
        while let Some(t) = node.poll_transmit() {
            out.push(t);
        }
        let mut events = Vec::new();
        while let Some(e) = node.poll_event() {
            if matches!(
                e,
                Event::MemberDown(_) | Event::MemberLeft(_) | Event::Rejoined(_)
            ) {
                events.push(e);
            }
        }
        let wake = node.poll_timeout();
        let t = self.now - self.start;
        if let Some(f) = &mut self.follow {
            f.observe(t, i, node);
            events.iter().for_each(|e| f.event(t, i, e));
        }
        for e in events {
            self.member_log.push((self.now, i, e));
        }
        for t in out {
            self.messages_sent += 1;
            self.bytes_sent += t.bytes.len() as u64;
            if let Some(by_kind) = &mut self.bytes_by_kind {
                let kind =
                    wire::decode(&t.bytes, t.bytes.len()).map_or("undecodable", |m| m.kind());
                *by_kind.entry(kind).or_default() += t.bytes.len() as u64;
            }
            let Some(&to) = self.index.get(&t.to) else {
                continue;
            };
            let dropped = self.blocked(i, to) || self.rng.random_bool(self.params.loss);
            if t.channel == Channel::Datagram
                && let Some(f) = &self.follow
            {
                let what = if dropped { "LOST" } else { "send" };
                f.datagram(self.now - self.start, what, i, to, &t.bytes);
            }
            if dropped {
                continue;
            }
            let copies = if self.rng.random_bool(self.params.duplicate) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let at = self.now + self.latency(i, to);
                self.push(
                    at,
                    Kind::Deliver {
                        to,
                        from: i,
                        channel: t.channel,
                        bytes: t.bytes.clone(),
                    },
                );
            }
        }
        if let Some(at) = wake {
            let at = at.max(self.now);
            if self.slots[i].wake.is_none_or(|w| at < w || w < self.now) {
                self.slots[i].wake = Some(at);
                self.push(at, Kind::Wake { node: i });
            }
        }
    }

    /// A per-link base latency (fixed for the run) plus per-message jitter, so messages on
    /// one link can be reordered.
    fn latency(&mut self, from: usize, to: usize) -> Duration {
        let (lo, hi) = (
            self.params.latency_ms_min * 1_000,
            self.params.latency_ms_max * 1_000,
        );
        let span = hi - lo;
        let link = mix(self.params.seed ^ ((from as u64) << 32) ^ to as u64) % (span / 2 + 1);
        let jitter = self.rng.random_range(0..=span - span / 2);
        Duration::from_micros(lo + link + jitter)
    }

    fn push(&mut self, at: Instant, kind: Kind) {
        debug_assert!(at >= self.now, "an event scheduled in the past");
        self.seq += 1;
        self.heap.push(Scheduled {
            at,
            seq: self.seq,
            kind,
        });
    }

    fn trace(&mut self, kind: u64, node: u64, detail: u64) {
        let t = (self.now - self.start).as_micros() as u64;
        for word in [t, kind, node, detail] {
            for byte in word.to_le_bytes() {
                self.trace_hash =
                    (self.trace_hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }

    pub fn random_node(&mut self, pick: impl Fn(&World, usize) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.len()).filter(|&i| pick(self, i)).collect();
        (!candidates.is_empty()).then(|| candidates[self.rng.random_range(0..candidates.len())])
    }

    pub fn rng(&mut self) -> &mut Xoshiro256PlusPlus {
        &mut self.rng
    }
}

/// The key and payload of the first version of an issued writer: its endorsement.
fn endorsement_of(issued: &Issued) -> (Key, Bytes) {
    let key = endorsement_key(issued.writer()).expect("an endorsement key is valid");
    (key, issued.endorsement.clone())
}

/// Node `i`'s address: in 127.0.0.0/8, never used on a real network.
pub fn addr(i: usize) -> SocketAddr {
    let i = i as u32 + 1;
    SocketAddr::from((
        Ipv4Addr::new(127, (i >> 16) as u8, (i >> 8) as u8, i as u8),
        7000,
    ))
}

/// splitmix64: a fixed hash for per-link latencies.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn add_stats(total: &mut NodeStats, s: NodeStats) {
    total.malformed += s.malformed;
    total.pushed_versions_received += s.pushed_versions_received;
    total.duplicate_versions += s.duplicate_versions;
    total.grafts_sent += s.grafts_sent;
    total.sync_rounds += s.sync_rounds;
    total.sync_applied += s.sync_applied;
    total.tombstones_collected += s.tombstones_collected;
    total.datagram_bytes_sent += s.datagram_bytes_sent;
    total.stream_bytes_sent += s.stream_bytes_sent;
    total.suspicions_refuted += s.suspicions_refuted;
    total.downs_held += s.downs_held;
    total.trust.forged += s.trust.forged;
    total.trust.refused += s.trust.refused;
    total.trust.deferred += s.trust.deferred;
    total.trust.equivocations += s.trust.equivocations;
    total.versions_masked += s.versions_masked;
}

impl Kind {
    /// The node that handles the event.
    fn node(&self) -> Option<usize> {
        match self {
            Kind::Deliver { to, .. } => Some(*to),
            Kind::Wake { node } | Kind::Durable { node, .. } | Kind::Resume { node } => Some(*node),
        }
    }
}
