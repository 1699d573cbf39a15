//! Prometheus metrics (prometheus-client), in the OpenMetrics text format.
//!
//! Two kinds: what the agent counts itself (writes, requests, the replication-lag histogram)
//! lives in [`Metrics`] for the agent's lifetime; what the node and the transport count is
//! read at scrape time ([`Scrape`]) and encoded as constant metrics by a collector. Counters
//! get their `_total` suffix from the encoder, so the names are those the agent always had.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        gauge::ConstGauge,
        histogram::Histogram,
    },
    registry::Registry,
};

use crate::{
    proto::node::{NodeStats, SYNC_DURATION_BUCKETS_MS, TrustStats},
    runtime::{Health, TrustReport, WireStats},
};

/// Upper bounds (ms) of the replication-lag histogram's buckets.
const LAG_BUCKETS_MS: [f64; 12] = [
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0,
];

/// The `Content-Type` of [`Metrics::render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the agent counts besides the node's own counters.
#[derive(Debug)]
pub(crate) struct Metrics {
    writes: Counter,
    write_bytes: Counter,
    requests: Counter,
    remote_changes: Counter,
    lag: Histogram,
    /// The lag of the last remote change, for `/v1/health`; `u64::MAX` before the first.
    last_lag_ms: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            writes: Counter::default(),
            write_bytes: Counter::default(),
            requests: Counter::default(),
            remote_changes: Counter::default(),
            lag: Histogram::new(LAG_BUCKETS_MS),
            last_lag_ms: AtomicU64::new(u64::MAX),
        }
    }
}

/// What the node, the transport and the agent's health say at the moment of a scrape.
#[derive(Debug)]
pub(crate) struct Scrape {
    pub(crate) stats: NodeStats,
    pub(crate) wire: WireStats,
    pub(crate) health: Health,
    pub(crate) trust: TrustReport,
}

impl Metrics {
    /// A write through the API of `bytes` value bytes.
    pub(crate) fn record_write(&self, bytes: usize) {
        self.writes.inc();
        self.write_bytes.inc_by(bytes as u64);
    }

    /// An HTTP request arrived.
    pub(crate) fn record_request(&self) {
        self.requests.inc();
    }

    /// A change from another node arrived `lag_ms` after its writer's clock stamped it.
    pub(crate) fn record_remote_change(&self, lag_ms: u64) {
        self.remote_changes.inc();
        self.lag.observe(lag_ms as f64);
        self.last_lag_ms
            .store(lag_ms.min(u64::MAX - 1), Ordering::Relaxed);
    }

    /// The lag of the last remote change, if any arrived.
    pub(crate) fn last_lag_ms(&self) -> Option<u64> {
        Some(self.last_lag_ms.load(Ordering::Relaxed)).filter(|&lag| lag != u64::MAX)
    }

    /// The exposition text: the agent's metrics and `scrape`'s.
    pub(crate) fn render(&self, scrape: Scrape) -> String {
        let mut registry = Registry::default();
        let mut counter = |name: &str, help: &str, metric: &Counter| {
            registry.register(name, help, metric.clone());
        };
        counter(
            "confmesh_writes",
            "Writes (put, delete, rollback) through the API.",
            &self.writes,
        );
        counter(
            "confmesh_write_bytes",
            "Value bytes written through the API.",
            &self.write_bytes,
        );
        counter(
            "confmesh_http_requests",
            "HTTP requests served.",
            &self.requests,
        );
        counter(
            "confmesh_remote_changes",
            "Changes from other nodes applied here.",
            &self.remote_changes,
        );
        registry.register(
            "confmesh_replication_lag_ms",
            "Time from a write on another node (its clock) to its arrival here (this node's clock).",
            self.lag.clone(),
        );
        registry.register_collector(Box::new(scrape));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// A value read at scrape time: name, help, how to read it.
type Reading = (&'static str, &'static str, fn(&Scrape) -> u64);

/// The node's and the transport's counters.
const COUNTERS: [Reading; 20] = [
    ("confmesh_datagram_bytes_sent", "SWIM bytes sent.", |s| {
        s.stats.datagram_bytes_sent
    }),
    (
        "confmesh_stream_bytes_sent",
        "Bytes of changes and sync sent.",
        |s| s.stats.stream_bytes_sent,
    ),
    (
        "confmesh_stream_bytes_received",
        "Bytes of changes and sync received.",
        |s| s.stats.stream_bytes_received,
    ),
    (
        "confmesh_suspicions_refuted",
        "Suspicions this node raised that the member refuted before the timeout.",
        |s| s.stats.suspicions_refuted,
    ),
    (
        "confmesh_udp_bytes_sent",
        "UDP payload bytes the QUIC endpoint sent (all overhead included).",
        |s| s.wire.udp_bytes_sent,
    ),
    (
        "confmesh_udp_bytes_received",
        "UDP payload bytes the QUIC endpoint received (all overhead included).",
        |s| s.wire.udp_bytes_received,
    ),
    (
        "confmesh_pushed_versions_received",
        "Versions received by push, duplicates included.",
        |s| s.stats.pushed_versions_received,
    ),
    (
        "confmesh_duplicate_versions",
        "Pushed versions already seen.",
        |s| s.stats.duplicate_versions,
    ),
    (
        "confmesh_sync_rounds",
        "Anti-entropy rounds started.",
        |s| s.stats.sync_rounds,
    ),
    (
        "confmesh_sync_applied",
        "Anti-entropy deltas and snapshot chunks applied.",
        |s| s.stats.sync_applied,
    ),
    (
        "confmesh_tombstones_collected",
        "Deleted keys garbage-collected.",
        |s| s.stats.tombstones_collected,
    ),
    (
        "confmesh_malformed_messages",
        "Messages from peers refused as malformed.",
        |s| s.stats.malformed,
    ),
    (
        "confmesh_versions_forged",
        "Versions from peers not signed by their writer, or endorsements not valid: dropped.",
        |s| s.stats.trust.forged,
    ),
    (
        "confmesh_versions_refused",
        "Validly signed versions the grant rule refused: recorded as seen, without value.",
        |s| s.stats.trust.refused,
    ),
    (
        "confmesh_versions_deferred",
        "Versions that waited for their writer's endorsement.",
        |s| s.stats.trust.deferred,
    ),
    (
        "confmesh_equivocations_detected",
        "Two signed versions with one id, seen here.",
        |s| s.stats.trust.equivocations,
    ),
    (
        "confmesh_equivocation_proofs_published",
        "Proofs of equivocation this node found and published for every replica.",
        |s| s.stats.proofs_published,
    ),
    (
        "confmesh_versions_masked",
        "Versions masked here: granted when made, then undone by a policy revocation or root that had not seen them.",
        |s| s.stats.versions_masked,
    ),
    (
        "confmesh_tainted_keys_rewritten",
        "Keys written again here because a writer convicted of equivocation had written them.",
        |s| s.stats.tainted_keys_rewritten,
    ),
    (
        "confmesh_member_downs_held",
        "Members declared down elsewhere while this node had reason to believe them alive, kept listed while they rejoined.",
        |s| s.stats.downs_held,
    ),
];

/// The per-peer trust counters: name, help, how to read one peer's.
type PeerReading = (&'static str, &'static str, fn(&TrustStats) -> u64);

const PEER_COUNTERS: [PeerReading; 2] = [
    (
        "confmesh_peer_versions_forged",
        "Forged versions, by the peer that sent them.",
        |t| t.forged,
    ),
    (
        "confmesh_peer_versions_refused",
        "Refused versions, by the peer that sent them.",
        |t| t.refused,
    ),
];

/// The gauges read at scrape time (and `confmesh_last_sync_age_ms`, when there is an age).
const GAUGES: [Reading; 9] = [
    (
        "confmesh_members",
        "Members this node sees alive, itself included.",
        |s| s.health.peers as u64 + 1,
    ),
    (
        "confmesh_keys",
        "Application keys in the replica (confmesh's own under _confmesh/ not counted).",
        |s| s.health.keys as u64,
    ),
    (
        "confmesh_joined",
        "1 if the node is part of a cluster.",
        |s| u64::from(s.health.joined),
    ),
    ("confmesh_connections", "QUIC connections open.", |s| {
        s.wire.connections as u64
    }),
    (
        "confmesh_cluster_protocol",
        "The protocol version every alive member speaks (the oldest any advertises).",
        |s| u64::from(s.health.protocol),
    ),
    (
        "confmesh_members_behind",
        "Alive members that advertise an older protocol than this node's.",
        |s| s.health.held_back_by.len() as u64,
    ),
    (
        "confmesh_writers_endorsed",
        "Writers whose endorsement (a key bound to a certified node) this replica holds.",
        |s| s.trust.endorsed_writers as u64,
    ),
    (
        "confmesh_unsigned_versions",
        "Stored versions without a signature (protocol 2's): switch to enforcing at 0 everywhere.",
        |s| s.trust.unsigned_versions as u64,
    ),
    (
        "confmesh_writers_equivocated",
        "Writers proven to have signed two versions with one id; their later versions are refused.",
        |s| s.trust.equivocated.len() as u64,
    ),
];

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, read) in COUNTERS {
            let metric = ConstCounter::new(read(self));
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        for (name, help, read) in GAUGES {
            gauge(&mut encoder, name, help, read(self))?;
        }
        for (name, help, read) in PEER_COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (peer, stats) in &self.trust.by_peer {
                let labels = [("peer", peer.to_string())];
                let metric = ConstCounter::new(read(stats));
                metric.encode(family.encode_family(&labels)?)?;
            }
        }
        if let Some(age) = self.health.since_in_sync {
            gauge(
                &mut encoder,
                "confmesh_last_sync_age_ms",
                "Milliseconds since a peer was last found in sync (absent: never).",
                u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
            )?;
        }
        self.encode_sync_durations(encoder)
    }
}

/// Encodes one gauge.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Scrape {
    /// The anti-entropy duration histogram, from the node's cumulative bucket counts.
    fn encode_sync_durations(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = &self.stats;
        // The node keeps cumulative bucket counts; the encoder wants each bucket's own.
        let mut below = 0;
        let mut buckets: Vec<(f64, u64)> = SYNC_DURATION_BUCKETS_MS
            .iter()
            .zip(stats.sync_duration_buckets)
            .map(|(&bound, cumulative)| {
                let own = cumulative.saturating_sub(below);
                below = cumulative;
                (bound as f64, own)
            })
            .collect();
        buckets.push((f64::INFINITY, stats.syncs_completed.saturating_sub(below)));
        encoder
            .encode_descriptor(
                "confmesh_sync_duration_ms",
                "Anti-entropy exchanges this node started, from its digest sent to the last of what the peer had merged.",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                stats.sync_duration_ms_total as f64,
                stats.syncs_completed,
                &buckets,
                None,
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape() -> Scrape {
        let mut stats = NodeStats::default();
        stats.sync_duration_buckets[0] = 2;
        for bucket in stats.sync_duration_buckets.iter_mut().skip(1) {
            *bucket = 3;
        }
        stats.syncs_completed = 4;
        stats.sync_duration_ms_total = 90;
        stats.malformed = 5;
        stats.trust.forged = 6;
        stats.trust.refused = 1;
        let peer: std::net::SocketAddr = ([127, 0, 0, 1], 7000).into();
        Scrape {
            stats,
            wire: WireStats::default(),
            health: Health {
                joined: true,
                peers: 2,
                keys: 9,
                since_in_sync: None,
                protocol: 1,
                held_back_by: vec!["old".into()],
                policy_root: false,
            },
            trust: TrustReport {
                by_peer: vec![(
                    peer,
                    TrustStats {
                        forged: 6,
                        refused: 1,
                        ..TrustStats::default()
                    },
                )],
                equivocated: vec![(crate::proto::WriterId(9), 4)],
                endorsed_writers: 3,
                unsigned_versions: 2,
                mode: crate::proto::trust::Mode::Permissive,
            },
        }
    }

    #[test]
    fn the_exposition_keeps_the_names_and_the_cumulative_buckets() {
        let metrics = Metrics::default();
        metrics.record_write(10);
        metrics.record_write(5);
        metrics.record_remote_change(7);
        let text = metrics.render(scrape());
        for line in [
            "confmesh_writes_total 2",
            "confmesh_write_bytes_total 15",
            "confmesh_malformed_messages_total 5",
            "confmesh_members 3",
            "confmesh_keys 9",
            "confmesh_joined 1",
            "confmesh_cluster_protocol 1",
            "confmesh_members_behind 1",
            "confmesh_versions_forged_total 6",
            "confmesh_versions_refused_total 1",
            "confmesh_peer_versions_forged_total{peer=\"127.0.0.1:7000\"} 6",
            "confmesh_writers_equivocated 1",
            "confmesh_unsigned_versions 2",
            "confmesh_writers_endorsed 3",
            "# TYPE confmesh_sync_duration_ms histogram",
            "confmesh_sync_duration_ms_count 4",
            "confmesh_sync_duration_ms_bucket{le=\"+Inf\"} 4",
            "confmesh_replication_lag_ms_bucket{le=\"5.0\"} 0",
            "confmesh_replication_lag_ms_bucket{le=\"10.0\"} 1",
            "confmesh_replication_lag_ms_count 1",
            "# EOF",
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "{line:?} missing:\n{text}"
            );
        }
        let first = SYNC_DURATION_BUCKETS_MS[0] as f64;
        let second = SYNC_DURATION_BUCKETS_MS[1] as f64;
        assert!(text.contains(&format!(
            "confmesh_sync_duration_ms_bucket{{le=\"{first:?}\"}} 2\n"
        )));
        assert!(text.contains(&format!(
            "confmesh_sync_duration_ms_bucket{{le=\"{second:?}\"}} 3\n"
        )));
        assert!(!text.contains("confmesh_last_sync_age_ms"), "{text}");
        assert_eq!(metrics.last_lag_ms(), Some(7));
        assert_eq!(Metrics::default().last_lag_ms(), None);
    }
}
