//! The report of a run (summary line and JSON): its figures, and the verdicts of the
//! checkers (`crate::checker`), which decide whether it passed.

use std::{collections::BTreeMap, time::Instant};

use confmesh::proto::node::Event;
use serde::Serialize;

use crate::{
    checker::{self, Failure, detection},
    params::Preset,
    scenario::Phases,
    world::World,
};

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl Percentiles {
    fn of(mut values: Vec<u64>) -> Option<Percentiles> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let at =
            |q: f64| values[((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1];
        Some(Percentiles {
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

/// The 101 percentiles (0th to 100th) of `values`, nearest rank; `None` if empty.
fn percentiles_0_to_100(mut values: Vec<f64>) -> Option<Vec<f64>> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let last = values.len() - 1;
    Some(
        (0..=100)
            .map(|q| {
                let v = values[(last * q).div_ceil(100)];
                (v * 1e3).round() / 1e3
            })
            .collect(),
    )
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// The commit the simulator was built from.
    pub commit: &'static str,
    /// The command that replays this run: every parameter of it.
    pub replay: String,
    pub seed: u64,
    pub scenario: &'static str,
    pub mode: &'static str,
    pub nodes: usize,
    pub loss: f64,
    /// The nodes' configuration preset.
    pub preset: Preset,
    pub writes: usize,
    pub convergence_ms: Option<Percentiles>,
    /// The distribution of single deliveries (a write reaching one live node other than its
    /// writer), ms after the write: the 0th, 1st, ..., 100th percentiles. Drawn by `--plot`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_percentiles_ms: Option<Vec<f64>>,
    pub copies_per_node_per_change: Option<f64>,
    pub idle_bytes_per_node_per_s: Option<f64>,
    /// The same, by message kind (`wire::Message::kind`; SWIM packets are `membership`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub idle_bytes_per_node_per_s_by_kind: BTreeMap<&'static str, f64>,
    pub loaded_bytes_per_node_per_s: Option<f64>,
    pub heal_ms: Option<Percentiles>,
    /// Members reported down by their own side of a healed split (`checker::flapping`);
    /// partition scenario only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flaps: Option<u64>,
    pub detect_ms: Option<Percentiles>,
    /// For each crash, ms until the first survivor declared it down (the accuser's probe and
    /// suspicion; the rest of `detect_ms` is the news spreading).
    pub detect_first_ms: Option<Percentiles>,
    /// Every crash's `detect_ms` sample, to pool runs of several seeds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub detect_samples_ms: Vec<u64>,
    pub join_ms: Option<u64>,
    pub catchup_ms: Option<u64>,
    pub grafts_per_change: Option<f64>,
    pub sync_repairs_per_change: Option<f64>,
    pub false_positives: u64,
    /// Running nodes declared down that the faults injected (partitions, pauses) excuse.
    pub excused_declarations: u64,
    /// Suspicions raised and refuted in time, summed over nodes (`NodeStats::suspicions_refuted`).
    pub suspicions_refuted: u64,
    /// Declarations of members down held while the member might come back under a new
    /// generation, summed over nodes (`NodeStats::downs_held`).
    pub downs_held: u64,
    /// Of (surviving observer, gracefully leaving node) pairs, the share in which the
    /// observer reported the leave as `MemberLeft` rather than `MemberDown` (churn only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaves_reported_as_left: Option<f64>,
    pub lost_writes: u64,
    pub divergent_nodes: u64,
    /// Versions that waited for their writer's endorsement, summed over nodes
    /// (`TrustStats::deferred`).
    pub trust_deferred: u64,
    /// How the run's certifier answered, unless `--no-signing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signatures: Option<Signatures>,
    /// With `--policy`: policy entries made, writes the policy refused at their node, and
    /// versions masked (summed over nodes and incarnations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyStats>,
    pub events: u64,
    pub messages: u64,
    pub bytes: u64,
    pub sim_s: f64,
    pub trace_hash: String,
    pub wall_s: f64,
    /// The checkers' verdicts: every invariant the run broke (in JSON, each as its line).
    pub failures: Vec<Failure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Box<Report>>,
}

/// Per write, ms until the last live node had it; and every single delivery (a write
/// reaching one live node other than its writer), ms after the write.
fn convergence_and_deliveries(world: &World, up: &[usize]) -> (Vec<u64>, Vec<f64>) {
    let mut convergence = Vec::new();
    let mut deliveries = Vec::new();
    for w in &world.writes {
        deliveries.extend(
            up.iter()
                .filter(|&&i| i != w.node)
                .filter_map(|&i| w.seen_at[i])
                .map(|t| t.saturating_duration_since(w.at).as_secs_f64() * 1e3),
        );
        let last = up
            .iter()
            .map(|&i| w.seen_at[i])
            .collect::<Option<Vec<Instant>>>()
            .and_then(|t| t.into_iter().max());
        if let Some(t) = last {
            convergence.push((t - w.at).as_millis() as u64);
        }
    }
    (convergence, deliveries)
}

/// For every crash, ms until the first and until the last surviving observer declared it
/// (crashes not declared by every survivor fail `checker::detection`).
fn detection_ms(world: &World, up: &[usize], phases: &Phases) -> Vec<(u64, u64)> {
    let survivors = detection::survivors(up, &phases.crashes);
    phases
        .crashes
        .iter()
        .filter_map(|&(_, id, at)| {
            let seen = survivors
                .iter()
                .map(|&j| detection::declared_down(&world.member_log, j, id, at))
                .collect::<Option<Vec<Instant>>>()?;
            let ms = |t: &Instant| (*t - at).as_millis() as u64;
            Some((ms(seen.iter().min()?), ms(seen.iter().max()?)))
        })
        .collect()
}

/// Of (survivor, graceful leaver) pairs, the share in which the survivor reported a leave
/// rather than a failure (`checker::leaves` checks that they dropped it).
fn leaves_reported_as_left(world: &World, up: &[usize], phases: &Phases) -> Option<f64> {
    let mut as_left = 0usize;
    let mut pairs = 0usize;
    for &(x, id) in &phases.leaves {
        for &j in up.iter().filter(|&&j| j != x) {
            let seen = world.member_log.iter().find(|(_, o, e)| {
                *o == j && matches!(e, Event::MemberLeft(d) | Event::MemberDown(d) if *d == id)
            });
            // A node that (re)started after the leave never listed it: no pair.
            if let Some((_, _, e)) = seen {
                pairs += 1;
                as_left += usize::from(matches!(e, Event::MemberLeft(_)));
            }
        }
    }
    (pairs > 0).then(|| as_left as f64 / pairs as f64)
}

/// After a partition heals, ms until every live node had each write made during it.
fn heal_ms(world: &World, up: &[usize], phases: &Phases) -> Option<Vec<u64>> {
    phases.healed_at.map(|healed| {
        phases
            .partitioned_writes
            .clone()
            .filter_map(|w| {
                let r = &world.writes[w];
                up.iter()
                    .map(|&i| r.seen_at[i])
                    .collect::<Option<Vec<_>>>()
                    .and_then(|t| t.into_iter().max())
            })
            .map(|t| t.saturating_duration_since(healed).as_millis() as u64)
            .collect()
    })
}

/// Signature and certificate checks over a run (`world::pki`).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Signatures {
    /// Checks made.
    pub checked: u64,
    /// Questions answered from the cache shared by the nodes (each node judges every version).
    pub cached: u64,
}

/// What the policy did in a run (`--policy`).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PolicyStats {
    /// Policy entries made (the root, the first grant, then revocations and grants).
    pub entries: u64,
    /// Writes a node refused because the policy did not grant them.
    pub denied_writes: u64,
    /// Versions masked, summed over nodes and incarnations.
    pub masked: u64,
}

impl Report {
    /// The figures of a finished run, and the verdicts of every checker on it.
    pub fn build(world: &World, phases: Phases, mode: &'static str, wall_s: f64) -> Report {
        let n = world.len();
        let up: Vec<usize> = (0..n).filter(|&i| world.is_up(i)).collect();
        let failures = checker::check(world, &phases);

        let (convergence, deliveries) = convergence_and_deliveries(world, &up);
        let detect = detection_ms(world, &up, &phases);
        let declared = checker::false_positives(world, &phases);
        let false_positives = declared.iter().filter(|(_, excused)| !excused).count() as u64;
        let excused_declarations = declared.iter().filter(|(_, excused)| *excused).count() as u64;
        let leaves_reported_as_left = leaves_reported_as_left(world, &up, &phases);
        let heal = heal_ms(world, &up, &phases);
        let flaps = phases
            .split_at
            .map(|_| checker::flaps(world, &phases).len() as u64);
        let per_node_per_s =
            |(bytes, d): (u64, std::time::Duration)| bytes as f64 / n as f64 / d.as_secs_f64();
        let copies = (phases.writes_during_load > 0).then(|| {
            phases.pushed_during_writes as f64 / (phases.writes_during_load as f64 * (n - 1) as f64)
        });

        let total = |f: fn(confmesh::proto::node::NodeStats) -> u64| {
            (0..n).map(|i| f(world.stats(i))).sum::<u64>() as f64
        };
        let per_change = |x: f64| (!world.writes.is_empty()).then(|| x / world.writes.len() as f64);
        Report {
            grafts_per_change: per_change(total(|s| s.grafts_sent)),
            sync_repairs_per_change: per_change(total(|s| s.sync_applied)),
            commit: env!("CONFMESH_COMMIT"),
            replay: world.params.command(),
            seed: world.params.seed,
            scenario: world.params.scenario.name(),
            mode,
            nodes: n,
            loss: world.params.loss,
            preset: world.params.preset,
            writes: world.writes.len(),
            convergence_ms: Percentiles::of(convergence),
            delivery_percentiles_ms: percentiles_0_to_100(deliveries),
            copies_per_node_per_change: copies,
            idle_bytes_per_node_per_s: phases.idle.map(per_node_per_s),
            idle_bytes_per_node_per_s_by_kind: phases
                .idle
                .map(|(_, d)| {
                    phases
                        .idle_by_kind
                        .iter()
                        .map(|(&kind, &bytes)| {
                            (kind, (per_node_per_s((bytes, d)) * 100.0).round() / 100.0)
                        })
                        .collect()
                })
                .unwrap_or_default(),
            loaded_bytes_per_node_per_s: phases.loaded.map(per_node_per_s),
            heal_ms: heal.and_then(Percentiles::of),
            flaps,
            detect_ms: Percentiles::of(detect.iter().map(|d| d.1).collect()),
            detect_first_ms: Percentiles::of(detect.iter().map(|d| d.0).collect()),
            detect_samples_ms: detect.iter().map(|d| d.1).collect(),
            join_ms: phases.join_ms,
            catchup_ms: phases.catchup_ms,
            false_positives,
            excused_declarations,
            suspicions_refuted: total(|s| s.suspicions_refuted) as u64,
            downs_held: total(|s| s.downs_held) as u64,
            leaves_reported_as_left,
            lost_writes: failures.iter().map(Failure::lost_writes).sum(),
            divergent_nodes: failures.iter().map(Failure::divergent_nodes).sum(),
            trust_deferred: total(|s| s.trust.deferred) as u64,
            signatures: world.certifier_stats().map(|s| Signatures {
                checked: s.checked,
                cached: s.cached,
            }),
            policy: world.params.policy.then(|| PolicyStats {
                entries: world
                    .writes
                    .iter()
                    .filter(|w| {
                        w.key
                            .as_str()
                            .starts_with(confmesh::proto::trust::POLICY_PREFIX)
                    })
                    .count() as u64,
                denied_writes: world.denied_writes,
                masked: total(|s| s.versions_masked) as u64,
            }),
            events: world.events_processed,
            messages: world.messages_sent,
            bytes: world.bytes_sent,
            sim_s: world.elapsed().as_secs_f64(),
            trace_hash: format!("{:016x}", world.trace_hash),
            wall_s,
            failures,
            baseline: None,
        }
    }

    pub fn summary(&self) -> String {
        let p = |x: &Option<Percentiles>| {
            x.map_or("-".into(), |p| {
                format!("p50={} p99={} max={}", p.p50, p.p99, p.max)
            })
        };
        let f = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.2}"));
        let idle_by_kind: String = self
            .idle_bytes_per_node_per_s_by_kind
            .iter()
            .map(|(kind, b)| format!(" {kind} {b:.2}"))
            .collect();
        let mut signatures = self.signatures.map_or("unsigned".into(), |s| {
            format!("signatures checked {} cached {}", s.checked, s.cached)
        });
        if let Some(p) = self.policy {
            signatures.push_str(&format!(
                " | policy entries {} denied {} masked {}",
                p.entries, p.denied_writes, p.masked
            ));
        }
        let mut line = format!(
            "  [{}] convergence_ms {} | copies/node/change {} | idle B/node/s {} | loaded B/node/s {} | heal_ms {} flaps {} | detect_ms {} first {} | join_ms {} | catchup_ms {} | grafts/change {} syncs/change {} | false_positives {} refuted {} held {} left-as-left {} lost {} divergent {} | deferred {} {} | events {} sim {:.1}s wall {:.1}s trace {} {}",
            self.mode,
            p(&self.convergence_ms),
            f(self.copies_per_node_per_change),
            f(self.idle_bytes_per_node_per_s),
            f(self.loaded_bytes_per_node_per_s),
            p(&self.heal_ms),
            self.flaps.map_or("-".into(), |v| v.to_string()),
            p(&self.detect_ms),
            p(&self.detect_first_ms),
            self.join_ms.map_or("-".into(), |v| v.to_string()),
            self.catchup_ms.map_or("-".into(), |v| v.to_string()),
            f(self.grafts_per_change),
            f(self.sync_repairs_per_change),
            self.false_positives,
            self.suspicions_refuted,
            self.downs_held,
            f(self.leaves_reported_as_left),
            self.lost_writes,
            self.divergent_nodes,
            self.trust_deferred,
            signatures,
            self.events,
            self.sim_s,
            self.wall_s,
            self.trace_hash,
            if self.failures.is_empty() {
                "ok"
            } else {
                "FAILED"
            },
        );
        if !idle_by_kind.is_empty() {
            line.push_str(&format!(
                "\n  [{}] idle B/node/s by kind:{idle_by_kind}",
                self.mode
            ));
        }
        line
    }
}
