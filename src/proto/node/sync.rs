//! The backstop: anti-entropy by digest, and garbage collection of stable tombstones.
//!
//! Every [`Config::anti_entropy_interval`](super::Config::anti_entropy_interval) (jittered) a
//! node sends the member it synced least recently the 8-byte fingerprint of its digest. A
//! peer whose digest differs answers with its digest; the node answers that with what the peer
//! lacks, and asks for what it lacks itself. In steady state a round costs two small messages.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use super::{Node, Timer};
use crate::proto::{
    ApplyError, Delta, Digest, Dot, Key, Snapshot, SyncReply, Version,
    trust::Verdict,
    trust::WRITERS_PREFIX,
    wire::{self, Message},
};

/// The longest gap between two chunks of a snapshot for it to count as still arriving.
const SNAPSHOT_QUIET: Duration = Duration::from_millis(250);

/// Anti-entropy's state.
#[derive(Debug)]
pub(super) struct SyncState {
    /// The digest fingerprint and the store revision it was computed at.
    pub(super) fingerprint: std::cell::Cell<(u64, u64)>,
    /// Parts merged of snapshots still incomplete, by (sender, context fingerprint), and
    /// when the last of them arrived.
    pub(super) snapshot_parts:
        BTreeMap<(SocketAddr, u64), (std::collections::BTreeSet<u32>, Instant)>,
    /// The versions of those snapshots that waited for their writer's endorsement when their
    /// chunk was merged: if one still waits once every chunk is, the context is not adopted.
    pub(super) snapshot_deferred: BTreeMap<(SocketAddr, u64), Vec<Dot>>,
    /// Sync exchanges under way: the peer asked for what we lack, and when we first asked.
    pub(super) started: BTreeMap<SocketAddr, Instant>,
    /// When a peer's probe last showed it had seen exactly what this replica has.
    pub(super) last_in_sync: Option<Instant>,
    /// The store revision and member hash at the last round, and how many rounds in a row
    /// found both unchanged: an idle node probes less often.
    pub(super) quiet: (u64, u64, u32),
    /// When the next round is due: a timer set for another time is one replaced by an
    /// earlier round ([`Node::hurry_anti_entropy`]), and does nothing.
    pub(super) next_round: Option<Instant>,
    /// When the last round ran.
    pub(super) last_round: Option<Instant>,
}

/// An idle node's anti-entropy interval doubles with each round that found nothing changed
/// (no version applied, no member come or gone), up to this many doublings (16 times the
/// configured interval) and [`QUIET_LONGEST`]. The first change brings it back, at every node that
/// applies it, so a change lost to one node is still repaired by its peers' rounds at the
/// configured interval. Each idle round costs a datagram and its QUIC acknowledgement at
/// both ends.
const QUIET_DOUBLINGS: u32 = 4;

/// The longest an idle node's stretched anti-entropy interval grows (unless the configured
/// interval is longer): 8 s, 16 times the LAN preset's 500 ms and 4 times the WAN preset's 2 s.
const QUIET_LONGEST: Duration = Duration::from_secs(8);

impl Default for SyncState {
    fn default() -> SyncState {
        SyncState {
            fingerprint: std::cell::Cell::new((u64::MAX, 0)),
            snapshot_parts: BTreeMap::new(),
            snapshot_deferred: BTreeMap::new(),
            started: BTreeMap::new(),
            last_in_sync: None,
            quiet: (u64::MAX, 0, 0),
            next_round: None,
            last_round: None,
        }
    }
}

impl Node {
    /// Sets the next anti-entropy round at `at`, replacing the one set before.
    pub(super) fn schedule_anti_entropy(&mut self, at: Instant) {
        self.sync.next_round = Some(at);
        self.timers.set(at, Timer::AntiEntropy);
    }

    /// Something changed (a version applied, a member come or gone): an idle node's stretched
    /// interval goes back to the configured one, from now. With `soon` (a member came up: a
    /// partition may have healed), the next round comes at once, or half an interval after
    /// the last one: it goes to that member first.
    pub(super) fn hurry_anti_entropy(&mut self, now: Instant, soon: bool) {
        let (revision, members, _) = self.sync.quiet;
        self.sync.quiet = (revision, members, 0);
        let base = self.config.anti_entropy_interval;
        let at = if soon {
            self.sync
                .last_round
                .map_or(now, |last| (last + base / 2).max(now))
        } else if self
            .sync
            .next_round
            .is_some_and(|at| at > now + base * 3 / 2)
        {
            // Only a stretched interval is cut short.
            now + self.jitter(base)
        } else {
            return;
        };
        if self.sync.next_round.is_none_or(|next| at < next) {
            self.schedule_anti_entropy(at);
        }
    }

    /// The round timer set for `deadline` fired.
    pub(super) fn anti_entropy_round(&mut self, now: Instant, deadline: Instant) {
        if self.sync.next_round.is_some_and(|at| at != deadline) {
            return; // replaced by an earlier round
        }
        self.sync.last_round = Some(now);
        let state = (self.store.revision(), self.peers.hash());
        let (revision, members, rounds) = self.sync.quiet;
        let rounds = if (revision, members) == state {
            rounds.saturating_add(1)
        } else {
            0
        };
        self.sync.quiet = (state.0, state.1, rounds);
        let base = self.config.anti_entropy_interval;
        let interval = (base * (1 << rounds.min(QUIET_DOUBLINGS))).min(QUIET_LONGEST.max(base));
        let next = self.jitter(interval);
        self.schedule_anti_entropy(now + next);
        self.fill_view(now);
        let window = self.config.anti_entropy_interval / 2;
        self.peers.forget_requests_before(now, window);
        // An exchange that never completed (peer gone, messages lost) stops being timed.
        let horizon = self.config.anti_entropy_interval * 10;
        self.sync
            .started
            .retain(|_, &mut at| now.saturating_duration_since(at) < horizon);
        let Some(to) = self.peers.next_sync_target() else {
            return;
        };
        self.stats.sync_rounds += 1;
        let hash = self.fingerprint();
        let members = self.peers.hash();
        self.send(to, &Message::SyncProbe { hash, members });
    }

    pub(super) fn on_sync_probe(
        &mut self,
        now: Instant,
        from: SocketAddr,
        hash: u64,
        members: u64,
    ) {
        if members != self.peers.hash() && self.peers.contains(&from) {
            self.send_members(from, false);
        }
        if hash == self.fingerprint() {
            // In sync: the peer has seen exactly what we have.
            self.sync.last_in_sync = Some(now);
            if self.peers.wants_vector(&from) {
                let vector = self.store.digest().version_vector();
                self.peers.report_vector(&from, &vector);
            }
            return;
        }
        self.request_sync(now, from, false);
    }

    /// Sends our digest to `to`, asking for what we lack.
    ///
    /// Not while a snapshot is arriving: a new member is probed by every member within a
    /// round (and by the snapshot's sender again), and asking each would bring it one full
    /// copy of the replica per probe. A snapshot counts as arriving while its chunks keep
    /// coming, at most [`SNAPSHOT_QUIET`] apart (less for a shorter anti-entropy period);
    /// one whose sender went quiet (a chunk lost, the sender gone) no longer holds requests.
    ///
    /// Nor, until this node has been in sync once (it is new, or restarted), while a request
    /// sent less than that long ago is unanswered: the answer may be a snapshot whose first
    /// chunk is still on its way. A request `continuing` an exchange (the peer's answer was
    /// truncated) is not held by that.
    fn request_sync(&mut self, now: Instant, to: SocketAddr, continuing: bool) {
        let quiet = SNAPSHOT_QUIET.min(self.config.anti_entropy_interval / 2);
        let snapshot_arriving = self
            .sync
            .snapshot_parts
            .values()
            .any(|(_, last)| now.saturating_duration_since(*last) < quiet);
        let first_answer_awaited = !continuing
            && self.sync.last_in_sync.is_none()
            && self
                .sync
                .started
                .values()
                .any(|at| now.saturating_duration_since(*at) < quiet);
        if snapshot_arriving || first_answer_awaited {
            return;
        }
        self.peers.note_request(to, now);
        self.sync.started.entry(to).or_insert(now);
        let digest = self.store.digest().clone();
        self.send(to, &Message::SyncRequest { digest });
    }

    pub(super) fn on_sync_request(&mut self, now: Instant, from: SocketAddr, digest: Digest) {
        let recently_asked =
            self.peers
                .requested_within(&from, now, self.config.anti_entropy_interval / 2);
        let they_have_more = !self.store.digest().covers(&digest);
        if self.peers.wants_vector(&from) {
            self.peers.report_vector(&from, &digest.version_vector());
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
                let format = wire::Format::Sealed;
                let mut chunks = self.store.snapshot_refs(self.config.sync_chunk_bytes);
                // The chunks holding endorsements first (the rest in key order): the
                // receiver learns every writer's key before their versions arrive, and can
                // check them as they do instead of holding them until the endorsement comes.
                chunks.sort_by_key(|chunk| {
                    !chunk
                        .versions
                        .iter()
                        .any(|v| v.key.as_str().starts_with(WRITERS_PREFIX))
                });
                let chunks: Vec<_> = chunks
                    .iter()
                    .map(|chunk| crate::proto::wire::encode_snapshot(chunk, format, limit))
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
            self.request_sync(now, from, false);
        }
    }

    pub(super) fn on_sync_delta(&mut self, now: Instant, from: SocketAddr, mut delta: Delta) {
        let truncated = delta.truncated;
        let screened = self.screen(now, from, std::mem::take(&mut delta.versions));
        delta.versions = screened.apply;
        let old = self.winners_before(&delta.versions);
        let result = self.store.apply_delta(delta);
        if !self.merged(from, "delta", result, old) {
            return;
        }
        self.apply_masks();
        if truncated {
            self.request_sync(now, from, true);
        } else {
            // Everything the peer had seen when it answered is now here too.
            self.sync.last_in_sync = Some(now);
            self.sync_completed(now, from);
        }
    }

    /// Times the exchange with `from`, if this node started one, as complete at `now`.
    fn sync_completed(&mut self, now: Instant, from: SocketAddr) {
        let Some(started) = self.sync.started.remove(&from) else {
            return;
        };
        let ms =
            u64::try_from(now.saturating_duration_since(started).as_millis()).unwrap_or(u64::MAX);
        let stats = &mut self.stats;
        stats.syncs_completed += 1;
        stats.sync_duration_ms_total = stats.sync_duration_ms_total.saturating_add(ms);
        for (count, &bound) in stats
            .sync_duration_buckets
            .iter_mut()
            .zip(&super::SYNC_DURATION_BUCKETS_MS)
        {
            if ms <= bound {
                *count += 1;
            }
        }
    }

    pub(super) fn on_sync_snapshot(&mut self, now: Instant, from: SocketAddr, mut chunk: Snapshot) {
        let screened = self.screen(now, from, std::mem::take(&mut chunk.versions));
        chunk.versions = screened.apply;
        // A chunk holding a version that is forged, malformed or still waiting for its
        // writer's endorsement came from a peer that did not apply it: honest peers only hold
        // what they applied, and every writer's endorsement is in their snapshot. Its context
        // would record as seen what this replica lacks, so it is not adopted: the chunk's good
        // versions are kept, and anti-entropy asks again for the rest.
        let forged = screened
            .verdicts
            .iter()
            .any(|(_, v)| matches!(v, Verdict::Forged(_) | Verdict::Malformed));
        let deferred: Vec<Dot> = screened
            .verdicts
            .iter()
            .filter(|(_, v)| matches!(v, Verdict::Deferred | Verdict::AwaitsContext))
            .map(|(dot, _)| *dot)
            .collect();
        // A later chunk may hold the endorsement a deferred version waits for: only a
        // snapshot whose every chunk is merged and none of whose versions still waits is
        // adopted.
        if forged || (chunk.parts <= 1 && !deferred.is_empty()) {
            chunk.context = Digest::default();
            chunk.collected = crate::proto::VClock::new();
        }
        // The chunk's own order (by key) lets a catch-up insert it in one pass.
        chunk.versions.sort_by(|a, b| a.key.cmp(&b.key));
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
        self.apply_masks();
        let Some((id, context, collected)) = pending else {
            // A snapshot in one chunk: its context was adopted with it.
            self.sync.last_in_sync = Some(now);
            self.sync_completed(now, from);
            return;
        };
        // Chunks travel on separate streams and may arrive in any order: adopt the context
        // once every part of this snapshot (named by sender and context) has been merged.
        // Only merged parts count: a refused chunk leaves the gap visible to anti-entropy.
        let (merged, last) = self
            .sync
            .snapshot_parts
            .entry(id)
            .or_insert_with(|| (std::collections::BTreeSet::new(), now));
        merged.insert(part);
        *last = now;
        let waiting = self.sync.snapshot_deferred.entry(id).or_default();
        waiting.extend(deferred);
        waiting.sort_unstable_by_key(|d| (d.actor, d.counter));
        waiting.dedup();
        if merged.len() >= parts as usize {
            self.sync.snapshot_parts.remove(&id);
            let waiting = self.sync.snapshot_deferred.remove(&id).unwrap_or_default();
            // Every version that waited must have been judged since (applied or refused): one
            // still waiting, or dropped past the bounds of the deferred set, is not here.
            if waiting.iter().any(|dot| !self.store.digest().contains(dot)) {
                tracing::warn!(peer = %from, "snapshot holds versions of writers it does not endorse; its context is not adopted");
                return;
            }
            self.store.adopt_snapshot_context(&context, collected);
            self.sync.last_in_sync = Some(now);
            self.sync_completed(now, from);
        }
        // Bound the bookkeeping of incomplete snapshots. Dropping one is safe: its context is
        // never adopted, and the next anti-entropy round fills the gap.
        while self.sync.snapshot_parts.len() > 16 {
            if let Some((id, _)) = self.sync.snapshot_parts.pop_first() {
                self.sync.snapshot_deferred.remove(&id);
            }
        }
        self.sync
            .snapshot_deferred
            .retain(|id, _| self.sync.snapshot_parts.contains_key(id));
    }

    /// Reports the outcome of merging a delta or snapshot chunk from `from`: change events on
    /// success, a counted and logged refusal otherwise. Returns whether it merged.
    fn merged(
        &mut self,
        from: SocketAddr,
        what: &str,
        result: Result<Vec<Key>, ApplyError>,
        old: BTreeMap<Key, Version>,
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

    /// The current winners of the keys `versions` touch, to report changes against (keys
    /// without a winner left out: a catch-up's keys are all new).
    fn winners_before(&self, versions: &[Version]) -> BTreeMap<Key, Version> {
        versions
            .iter()
            .filter_map(|v| Some((v.key.clone(), self.store.get(&v.key)?.clone())))
            .collect()
    }

    fn emit_changes(&mut self, changed: Vec<Key>, mut old: BTreeMap<Key, Version>) {
        for key in changed {
            let before = old.remove(&key);
            self.emit_change(&key, before);
        }
    }

    /// Collects stable tombstones once every member has reported its version vector within
    /// [`Config::gc_interval`](super::Config::gc_interval) × 30 (a stability round).
    pub(super) fn collect_garbage(&mut self, now: Instant) {
        self.timers
            .set(now + self.config.gc_interval, Timer::CollectGarbage);
        let horizon = self.config.gc_interval * 30;
        let Some(stable) = self.peers.take_stable_vector(now, horizon) else {
            return;
        };
        let collected = self.store.collect_garbage(std::iter::once(&stable));
        self.stats.tombstones_collected += collected as u64;
    }
}
