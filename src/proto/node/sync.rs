//! The backstop: anti-entropy by digest, and garbage collection of stable tombstones.
//!
//! Every [`Config::anti_entropy_interval`](super::Config::anti_entropy_interval) (jittered) a
//! node sends the member it synced least recently the 8-byte fingerprint of its digest. A
//! peer whose digest differs answers with its digest; the node answers that with what the peer
//! lacks, and asks for what it lacks itself. In steady state a round costs two small messages.

use std::{collections::BTreeMap, net::SocketAddr, time::Instant};

use super::{Node, Timer};
use crate::proto::{ApplyError, Delta, Digest, Key, Snapshot, SyncReply, Version, wire::Message};

impl Node {
    pub(super) fn anti_entropy_round(&mut self, now: Instant) {
        let next = self.jitter(self.config.anti_entropy_interval);
        self.timers.set(now + next, Timer::AntiEntropy);
        self.fill_view(now);
        // The queue holds every member once, least recently synced first; members that left
        // are dropped as they come up.
        let peers = &self.peers;
        let Some(to) =
            std::iter::from_fn(|| self.sync_queue.pop_front()).find(|a| peers.contains_key(a))
        else {
            return;
        };
        self.sync_queue.push_back(to);
        self.stats.sync_rounds += 1;
        let hash = self.fingerprint();
        let members = self.members_hash;
        self.send(to, &Message::SyncProbe { hash, members });
    }

    pub(super) fn on_sync_probe(
        &mut self,
        now: Instant,
        from: SocketAddr,
        hash: u64,
        members: u64,
    ) {
        if members != self.members_hash && self.peers.contains_key(&from) {
            self.send_members(from, false);
        }
        if hash == self.fingerprint() {
            // In sync: the peer has seen exactly what we have.
            let vector = self.store.digest().version_vector();
            if let Some(peer) = self.peers.get_mut(&from) {
                peer.vector = Some((vector, now));
            }
            return;
        }
        self.request_sync(now, from);
    }

    /// Sends our digest to `to`, asking for what we lack.
    fn request_sync(&mut self, now: Instant, to: SocketAddr) {
        if let Some(peer) = self.peers.get_mut(&to) {
            peer.last_request = Some(now);
        }
        let digest = self.store.digest().clone();
        self.send(to, &Message::SyncRequest { digest });
    }

    pub(super) fn on_sync_request(&mut self, now: Instant, from: SocketAddr, digest: Digest) {
        let recently_asked = self
            .peers
            .get(&from)
            .and_then(|p| p.last_request)
            .is_some_and(|at| {
                now.saturating_duration_since(at) < self.config.anti_entropy_interval / 2
            });
        let they_have_more = !self.store.digest().covers(&digest);
        if let Some(peer) = self.peers.get_mut(&from) {
            peer.vector = Some((digest.version_vector(), now));
        }
        // A requester that lacks more than a chunk and holds less than half of what we have
        // (a new node, one back from a long absence) gets the snapshot, chunks pipelined,
        // instead of one truncated delta per round trip.
        let far_behind = |delta: &Delta| {
            delta.truncated && digest.dot_count() < self.store.digest().dot_count() / 2
        };
        match self.store.delta_for(&digest, self.config.sync_chunk_bytes) {
            SyncReply::Delta(delta) if delta.is_empty() => {}
            SyncReply::Delta(delta) if !far_behind(&delta) => {
                self.send(from, &Message::SyncDelta(delta))
            }
            SyncReply::Delta(_) | SyncReply::SnapshotNeeded => {
                let limit = self.config.max_stream_message_bytes;
                let chunks: Vec<_> = self
                    .store
                    .snapshot_refs(self.config.sync_chunk_bytes)
                    .iter()
                    .map(|chunk| crate::proto::wire::encode_snapshot(chunk, limit))
                    .collect();
                for chunk in chunks {
                    match chunk {
                        Ok(bytes) => self.send_bytes(from, super::Channel::Stream, bytes),
                        Err(e) => tracing::warn!(%from, cause = %e, "snapshot chunk not sent"),
                    }
                }
            }
        }
        if they_have_more && !recently_asked {
            self.request_sync(now, from);
        }
    }

    pub(super) fn on_sync_delta(&mut self, now: Instant, from: SocketAddr, delta: Delta) {
        let truncated = delta.truncated;
        let old = self.winners_before(&delta.versions);
        let result = self.store.apply_delta(delta);
        if self.merged(from, "delta", result, old) && truncated {
            self.request_sync(now, from);
        }
    }

    pub(super) fn on_sync_snapshot(&mut self, from: SocketAddr, chunk: Snapshot) {
        let old = self.winners_before(&chunk.versions);
        let (part, parts) = (chunk.part, chunk.parts);
        let pending = (parts > 1).then(|| {
            (
                (from, chunk.context.fingerprint()),
                chunk.context.clone(),
                chunk.collected.clone(),
            )
        });
        let result = self.store.merge_snapshot(chunk);
        if !self.merged(from, "snapshot chunk", result, old) {
            return;
        }
        let Some((id, context, collected)) = pending else {
            return;
        };
        // Chunks travel on separate streams and may arrive in any order: adopt the context
        // once every part of this snapshot (named by sender and context) has been merged.
        // Only merged parts count: a refused chunk leaves the gap visible to anti-entropy.
        let merged = self.snapshot_parts.entry(id).or_default();
        merged.insert(part);
        if merged.len() >= parts as usize {
            self.snapshot_parts.remove(&id);
            self.store.adopt_snapshot_context(&context, collected);
        }
        // Bound the bookkeeping of incomplete snapshots. Dropping one is safe: its context is
        // never adopted, and the next anti-entropy round fills the gap.
        while self.snapshot_parts.len() > 16 {
            self.snapshot_parts.pop_first();
        }
    }

    /// Reports the outcome of merging a delta or snapshot chunk from `from`: change events on
    /// success, a counted and logged refusal otherwise. Returns whether it merged.
    fn merged(
        &mut self,
        from: SocketAddr,
        what: &str,
        result: Result<Vec<Key>, ApplyError>,
        old: BTreeMap<Key, Option<Version>>,
    ) -> bool {
        match result {
            Ok(changed) => {
                self.stats.sync_applied += 1;
                self.emit_changes(changed, old);
                true
            }
            Err(e) => {
                tracing::debug!(%from, what, cause = %e, "refused");
                self.stats.malformed += 1;
                false
            }
        }
    }

    /// The current winners of the keys `versions` touch, to report changes against.
    fn winners_before(&self, versions: &[Version]) -> BTreeMap<Key, Option<Version>> {
        versions
            .iter()
            .map(|v| (v.key.clone(), self.store.get(&v.key).cloned()))
            .collect()
    }

    fn emit_changes(&mut self, changed: Vec<Key>, mut old: BTreeMap<Key, Option<Version>>) {
        for key in changed {
            let before = old.remove(&key).flatten();
            self.emit_change(&key, before);
        }
    }

    /// Collects stable tombstones if a version vector is known for every member, reported
    /// within the last [`Config::gc_interval`](super::Config::gc_interval) × 30.
    pub(super) fn collect_garbage(&mut self, now: Instant) {
        self.timers
            .set(now + self.config.gc_interval, Timer::CollectGarbage);
        let horizon = self.config.gc_interval * 30;
        let fresh = |at: &Instant| now.saturating_duration_since(*at) <= horizon;
        let vectors: Option<Vec<crate::proto::VClock>> = self
            .peers
            .values()
            .map(|p| {
                p.vector
                    .as_ref()
                    .filter(|(_, at)| fresh(at))
                    .map(|(v, _)| v.clone())
            })
            .collect();
        let Some(vectors) = vectors else { return };
        if vectors.is_empty() {
            return;
        }
        let collected = self.store.collect_garbage(&vectors);
        self.stats.tombstones_collected += collected as u64;
    }
}
