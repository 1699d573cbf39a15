//! Prometheus metrics, in the text exposition format, written by hand: a few counters, gauges
//! and one histogram do not need a metrics framework.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
};

use crate::{
    proto::node::{NodeStats, SYNC_DURATION_BUCKETS_MS},
    runtime::{Health, WireStats},
};

/// Upper bounds (ms) of the replication-lag histogram's buckets.
const LAG_BUCKETS_MS: [u64; 12] = [1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];

/// What the agent counts besides the node's own counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    writes: AtomicU64,
    write_bytes: AtomicU64,
    remote_changes: AtomicU64,
    lag_buckets: [AtomicU64; LAG_BUCKETS_MS.len()],
    lag_sum_ms: AtomicU64,
    last_lag_ms: AtomicU64,
    /// Whether any remote change was seen (else `last_lag_ms` means nothing).
    lag_seen: AtomicU64,
}

impl Metrics {
    /// A write through the API of `bytes` value bytes.
    pub(crate) fn record_write(&self, bytes: usize) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.write_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A change from another node arrived `lag_ms` after its writer's clock stamped it.
    pub(crate) fn record_remote_change(&self, lag_ms: u64) {
        self.remote_changes.fetch_add(1, Ordering::Relaxed);
        for (bucket, &bound) in self.lag_buckets.iter().zip(&LAG_BUCKETS_MS) {
            if lag_ms <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.lag_sum_ms.fetch_add(lag_ms, Ordering::Relaxed);
        self.last_lag_ms.store(lag_ms, Ordering::Relaxed);
        self.lag_seen.store(1, Ordering::Relaxed);
    }

    /// The lag of the last remote change, if any arrived.
    pub(crate) fn last_lag_ms(&self) -> Option<u64> {
        (self.lag_seen.load(Ordering::Relaxed) == 1)
            .then(|| self.last_lag_ms.load(Ordering::Relaxed))
    }

    /// The exposition text.
    pub(crate) fn render(
        &self,
        stats: &NodeStats,
        wire: &WireStats,
        health: &Health,
        requests: u64,
    ) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        metric(
            "confmesh_writes_total",
            "counter",
            "Writes (put, delete, rollback) through the API.",
            load(&self.writes),
        );
        metric(
            "confmesh_write_bytes_total",
            "counter",
            "Value bytes written through the API.",
            load(&self.write_bytes),
        );
        metric(
            "confmesh_http_requests_total",
            "counter",
            "HTTP requests served.",
            requests,
        );
        metric(
            "confmesh_members",
            "gauge",
            "Members this node sees alive, itself included.",
            health.peers as u64 + 1,
        );
        metric(
            "confmesh_keys",
            "gauge",
            "Application keys in the replica (confmesh's own under _confmesh/ not counted).",
            health.keys as u64,
        );
        metric(
            "confmesh_joined",
            "gauge",
            "1 if the node is part of a cluster.",
            u64::from(health.joined),
        );
        if let Some(age) = health.since_in_sync {
            metric(
                "confmesh_last_sync_age_ms",
                "gauge",
                "Milliseconds since a peer was last found in sync (absent: never).",
                u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
            );
        }
        metric(
            "confmesh_datagram_bytes_sent_total",
            "counter",
            "SWIM bytes sent.",
            stats.datagram_bytes_sent,
        );
        metric(
            "confmesh_stream_bytes_sent_total",
            "counter",
            "Bytes of changes and sync sent.",
            stats.stream_bytes_sent,
        );
        metric(
            "confmesh_stream_bytes_received_total",
            "counter",
            "Bytes of changes and sync received.",
            stats.stream_bytes_received,
        );
        metric(
            "confmesh_suspicions_refuted_total",
            "counter",
            "Suspicions this node raised that the member refuted before the timeout.",
            stats.suspicions_refuted,
        );
        metric(
            "confmesh_udp_bytes_sent_total",
            "counter",
            "UDP payload bytes the QUIC endpoint sent (all overhead included).",
            wire.udp_bytes_sent,
        );
        metric(
            "confmesh_udp_bytes_received_total",
            "counter",
            "UDP payload bytes the QUIC endpoint received (all overhead included).",
            wire.udp_bytes_received,
        );
        metric(
            "confmesh_connections",
            "gauge",
            "QUIC connections open.",
            wire.connections as u64,
        );
        metric(
            "confmesh_pushed_versions_received_total",
            "counter",
            "Versions received by push, duplicates included.",
            stats.pushed_versions_received,
        );
        metric(
            "confmesh_duplicate_versions_total",
            "counter",
            "Pushed versions already seen.",
            stats.duplicate_versions,
        );
        metric(
            "confmesh_sync_rounds_total",
            "counter",
            "Anti-entropy rounds started.",
            stats.sync_rounds,
        );
        metric(
            "confmesh_sync_applied_total",
            "counter",
            "Anti-entropy deltas and snapshot chunks applied.",
            stats.sync_applied,
        );
        metric(
            "confmesh_tombstones_collected_total",
            "counter",
            "Deleted keys garbage-collected.",
            stats.tombstones_collected,
        );
        metric(
            "confmesh_malformed_messages_total",
            "counter",
            "Messages from peers refused as malformed.",
            stats.malformed,
        );
        metric(
            "confmesh_remote_changes_total",
            "counter",
            "Changes from other nodes applied here.",
            load(&self.remote_changes),
        );
        let lag_buckets: Vec<u64> = self.lag_buckets.iter().map(load).collect();
        histogram(
            &mut out,
            "confmesh_replication_lag_ms",
            "Time from a write on another node (its clock) to its arrival here (this node's clock).",
            LAG_BUCKETS_MS.iter().copied().zip(lag_buckets),
            load(&self.lag_sum_ms),
            load(&self.remote_changes),
        );
        histogram(
            &mut out,
            "confmesh_sync_duration_ms",
            "Anti-entropy exchanges this node started, from its digest sent to the last of what the peer had merged.",
            SYNC_DURATION_BUCKETS_MS
                .iter()
                .copied()
                .zip(stats.sync_duration_buckets),
            stats.sync_duration_ms_total,
            stats.syncs_completed,
        );
        out
    }
}

/// Writes one histogram: `buckets` are (upper bound, cumulative count) pairs.
fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    buckets: impl Iterator<Item = (u64, u64)>,
    sum: u64,
    count: u64,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, n) in buckets {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {count}");
}
