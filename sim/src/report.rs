//! The checks every run must pass, and the report (summary and JSON).

use std::{collections::BTreeMap, time::Instant};

use confmesh::proto::node::{Event, NodeId};
use serde::Serialize;

use crate::{params::Scenario, scenario::Phases, world::World};

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
    pub seed: u64,
    pub scenario: &'static str,
    pub mode: &'static str,
    pub nodes: usize,
    pub loss: f64,
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
    pub detect_ms: Option<Percentiles>,
    pub join_ms: Option<u64>,
    pub catchup_ms: Option<u64>,
    pub grafts_per_change: Option<f64>,
    pub sync_repairs_per_change: Option<f64>,
    pub false_positives: u64,
    /// Suspicions raised and refuted in time, summed over nodes (`NodeStats::suspicions_refuted`).
    pub suspicions_refuted: u64,
    /// Of (surviving observer, gracefully leaving node) pairs, the share in which the
    /// observer reported the leave as `MemberLeft` rather than `MemberDown` (churn only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaves_reported_as_left: Option<f64>,
    pub lost_writes: u64,
    pub divergent_nodes: u64,
    pub events: u64,
    pub messages: u64,
    pub bytes: u64,
    pub sim_s: f64,
    pub trace_hash: String,
    pub wall_s: f64,
    pub failures: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Box<Report>>,
}

impl Report {
    pub fn build(world: &World, phases: Phases, mode: &'static str, wall_s: f64) -> Report {
        let n = world.len();
        let up: Vec<usize> = (0..n).filter(|&i| world.is_up(i)).collect();
        let mut failures = phases.failures;

        // Convergence: per write, when the last live node got it.
        let mut convergence = Vec::new();
        let mut deliveries = Vec::new();
        let mut lost = 0;
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
            match last {
                Some(t) => convergence.push((t - w.at).as_millis() as u64),
                None if world.is_up(w.node) => lost += 1,
                None => {}
            }
        }
        if lost > 0 {
            failures.push(format!(
                "{lost} writes acknowledged by live nodes are missing on some live node"
            ));
        }

        // Divergence: live nodes whose digest or winners differ from the most common.
        let fingerprint = |i: usize| {
            world.node(i).map(|node| {
                let store = node.store();
                let winners: Vec<_> = store
                    .list("")
                    .map(|v| (v.key.clone(), v.dot.actor, v.dot.counter))
                    .collect();
                (store.digest().fingerprint(), winners)
            })
        };
        let mut counts: BTreeMap<_, usize> = BTreeMap::new();
        for &i in &up {
            *counts.entry(fingerprint(i)).or_default() += 1;
        }
        let majority = counts.values().max().copied().unwrap_or(0);
        let divergent = (up.len() - majority) as u64;
        if divergent > 0 {
            let common = counts
                .iter()
                .max_by_key(|(_, c)| **c)
                .and_then(|(k, _)| k.clone());
            let describe = |i: usize| {
                let store = world.node(i).map(|n| n.store());
                format!(
                    "node {i}: {} dots, {} keys, {} live",
                    store.map_or(0, |s| s.digest().dot_count()),
                    store.map_or(0, |s| s.key_count()),
                    store.map_or(0, |s| s.list("").count())
                )
            };
            let normal = up.iter().copied().find(|&i| fingerprint(i) == common);
            let odd: Vec<String> = up
                .iter()
                .copied()
                .filter(|&i| fingerprint(i) != common)
                .map(describe)
                .collect();
            failures.push(format!(
                "{divergent} live nodes hold a different map from the majority ({}): {}",
                normal.map_or_else(String::new, describe),
                odd.join("; ")
            ));
        }

        // Failure detection: for every crash, when the last surviving observer declared it.
        let survivors: Vec<usize> = up
            .iter()
            .copied()
            .filter(|&i| phases.crashes.iter().all(|c| c.0 != i))
            .collect();
        let mut detect = Vec::new();
        for &(x, id, at) in &phases.crashes {
            let mut last = Some(at);
            for &j in &survivors {
                let seen = world.member_log.iter().find(|(t, o, e)| {
                    *o == j && *t >= at && matches!(e, Event::MemberDown(d) if *d == id)
                });
                last = match (last, seen) {
                    (Some(l), Some((t, _, _))) => Some(l.max(*t)),
                    _ => None,
                };
            }
            match last {
                Some(t) => detect.push((t - at).as_millis() as u64),
                None => failures.push(format!(
                    "crashed node {x} was not declared down by every survivor"
                )),
            }
        }

        // False positives: a running incarnation declared down (not during a partition).
        let mut false_positives = 0;
        let mut first_false_positive = None;
        if world.params.scenario != Scenario::Partition {
            // A running incarnation declared down by some member: observers report it down,
            // and the node itself learns it and rejoins under a new generation.
            for (t, observer, e) in &world.member_log {
                let declared = match e {
                    Event::MemberDown(id) => Some((*id, "declared down by node")),
                    Event::Rejoined(new) => Some((
                        NodeId {
                            generation: new.generation.wrapping_sub(1),
                            ..*new
                        },
                        "told it was down and rejoined: node",
                    )),
                    _ => None,
                };
                if let Some((id, how)) = &declared {
                    let running = phases.incarnations.iter().any(|(inc, from, to)| {
                        inc == id && from <= t && to.is_none_or(|to| *t < to)
                    });
                    if running {
                        false_positives += 1;
                        first_false_positive.get_or_insert((
                            *t - world.start,
                            *observer,
                            *id,
                            *how,
                        ));
                    }
                }
            }
        }
        if let Some((at, observer, id, how)) = first_false_positive
            && world.params.loss <= 0.01
        {
            failures.push(format!(
                "{false_positives} healthy nodes were declared down (first: {id}, {how} \
                 {observer}, at t={:.2}s; replay with --follow to see why)",
                at.as_secs_f64()
            ));
        }

        // Graceful leaves: every survivor must drop the leaver; ideally as left.
        let mut as_left = 0usize;
        let mut pairs = 0usize;
        for &(x, id) in &phases.leaves {
            for &j in up.iter().filter(|&&j| j != x) {
                let seen = world.member_log.iter().find(|(_, o, e)| {
                    *o == j && matches!(e, Event::MemberLeft(d) | Event::MemberDown(d) if *d == id)
                });
                match seen {
                    Some((_, _, Event::MemberLeft(_))) => as_left += 1,
                    Some(_) => {}
                    // A node that (re)started after the leave never listed it.
                    None => {}
                }
                pairs += usize::from(seen.is_some());
                if world.node(j).is_some_and(|n| n.members().any(|m| m == id)) {
                    failures.push(format!("node {j} still lists node {x}, which left"));
                }
            }
        }
        let leaves_reported_as_left = (pairs > 0).then(|| as_left as f64 / pairs as f64);

        let heal = phases.healed_at.map(|healed| {
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
                .collect::<Vec<_>>()
        });
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
            seed: world.params.seed,
            scenario: world.params.scenario.name(),
            mode,
            nodes: n,
            loss: world.params.loss,
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
            detect_ms: Percentiles::of(detect),
            join_ms: phases.join_ms,
            catchup_ms: phases.catchup_ms,
            false_positives,
            suspicions_refuted: total(|s| s.suspicions_refuted) as u64,
            leaves_reported_as_left,
            lost_writes: lost,
            divergent_nodes: divergent,
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
        let mut line = format!(
            "  [{}] convergence_ms {} | copies/node/change {} | idle B/node/s {} | loaded B/node/s {} | heal_ms {} | detect_ms {} | join_ms {} | catchup_ms {} | grafts/change {} syncs/change {} | false_positives {} refuted {} left-as-left {} lost {} divergent {} | events {} sim {:.1}s wall {:.1}s trace {} {}",
            self.mode,
            p(&self.convergence_ms),
            f(self.copies_per_node_per_change),
            f(self.idle_bytes_per_node_per_s),
            f(self.loaded_bytes_per_node_per_s),
            p(&self.heal_ms),
            p(&self.detect_ms),
            self.join_ms.map_or("-".into(), |v| v.to_string()),
            self.catchup_ms.map_or("-".into(), |v| v.to_string()),
            f(self.grafts_per_change),
            f(self.sync_repairs_per_change),
            self.false_positives,
            self.suspicions_refuted,
            f(self.leaves_reported_as_left),
            self.lost_writes,
            self.divergent_nodes,
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
