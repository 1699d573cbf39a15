//! Merging remote state: single versions, deltas and snapshots; and answering digests.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use crdts::CvRDT;

use super::{Applied, ApplyError, Delta, Digest, Snapshot, SnapshotRef, Store, SyncReply, Version};
use crate::proto::VClock;
use crate::proto::{
    ids::{Dot, WriterId},
    key::Key,
    seqset::SeqRange,
};

impl Store {
    /// Applies one version from a peer. Any order, duplicates included, gives the same state.
    ///
    /// # Errors
    ///
    /// [`ApplyError`] for a malformed or oversized version; the store is unchanged.
    pub fn apply(&mut self, version: Version) -> Result<Applied, ApplyError> {
        self.check(&version)?;
        if self.context.contains(&version.dot) {
            return Ok(Applied::Duplicate);
        }
        Ok(self.insert_new(version))
    }

    /// Applies a [`Delta`] from a peer: its versions, then its cleared ranges. Returns the keys
    /// whose winner changed, in the order they changed.
    ///
    /// # Errors
    ///
    /// [`ApplyError`] if any version is malformed or oversized; then nothing is applied.
    pub fn apply_delta(&mut self, delta: Delta) -> Result<Vec<Key>, ApplyError> {
        for version in &delta.versions {
            self.check(version)?;
        }
        let mut changed = Vec::new();
        for version in delta.versions {
            self.apply_checked(version, &mut changed);
        }
        for (writer, range) in delta.cleared {
            self.context.insert_range(writer, range);
        }
        self.revision += 1;
        Ok(changed)
    }

    /// Merges a [`Snapshot`] chunk (see the type for the rule). Returns the keys whose winner
    /// changed. Chunks may be merged in any order; for a snapshot of several chunks, call
    /// [`Store::adopt_snapshot_context`] once all are merged.
    ///
    /// # Errors
    ///
    /// [`ApplyError`] if any version is malformed or oversized; then nothing is merged.
    pub fn merge_snapshot(&mut self, mut snapshot: Snapshot) -> Result<Vec<Key>, ApplyError> {
        for version in &snapshot.versions {
            self.check(version)?;
        }
        let mut changed = Vec::new();
        self.drop_superseded_by(&snapshot, &mut changed);
        let versions = std::mem::take(&mut snapshot.versions);
        if let Err(versions) = self.insert_disjoint(versions, &mut changed) {
            for version in versions {
                self.apply_checked(version, &mut changed);
            }
        }
        if snapshot.parts <= 1 {
            self.adopt_snapshot_context(&snapshot.context, snapshot.collected);
        }
        Ok(changed)
    }

    /// Adopts a snapshot's context and collection floor. Call it once every chunk of the
    /// snapshot has been merged ([`Store::merge_snapshot`] does for a single-chunk snapshot):
    /// adopting it earlier would record as seen versions this replica never received.
    pub fn adopt_snapshot_context(&mut self, context: &Digest, collected: VClock) {
        self.revision += 1;
        self.context.union_with(context);
        self.collected.merge(collected);
    }

    /// The answer to a peer's digest: every stored version whose dot `digest` lacks, and
    /// cleared ranges for the superseded ones, in at most about `max_bytes` (at least one
    /// version is always included, so progress is made whatever the budget).
    pub fn delta_for(&self, digest: &Digest, max_bytes: usize) -> SyncReply {
        let behind_floor = self
            .collected
            .dots
            .iter()
            .any(|(&writer, &floor)| digest.seen(writer).contiguous() < floor);
        if behind_floor {
            return SyncReply::SnapshotNeeded;
        }
        let mut delta = Delta::default();
        let mut size = 0usize;
        for (writer, mine) in self.context.writers() {
            for range in mine.difference(digest.seen(writer)) {
                let mut next = range.start; // first number not yet sent, as version or cleared
                let stored = self
                    .by_dot
                    .get(&writer)
                    .into_iter()
                    .flat_map(|index| index.range(range.start..=range.end));
                for (&seq, key) in stored {
                    if size >= max_bytes && !delta.versions.is_empty() {
                        push_cleared(&mut delta, writer, next, seq - 1);
                        delta.truncated = true;
                        return SyncReply::Delta(delta);
                    }
                    push_cleared(&mut delta, writer, next, seq - 1);
                    let version = self
                        .versions(key)
                        .iter()
                        .find(|v| v.dot.counter == seq && v.dot.actor == writer);
                    debug_assert!(
                        version.is_some(),
                        "index names {key} for {writer}:{seq} but it is not stored"
                    );
                    if let Some(version) = version {
                        size += version.approx_encoded_len();
                        delta.versions.push(version.clone());
                    }
                    next = seq + 1;
                }
                push_cleared(&mut delta, writer, next, range.end);
            }
        }
        SyncReply::Delta(delta)
    }

    /// The whole replica as one [`Snapshot`].
    pub fn snapshot(&self) -> Snapshot {
        let mut whole = SnapshotRef::empty(self);
        whole.versions = self.keys.values().flatten().collect();
        whole.to_owned()
    }

    /// The whole replica as snapshot chunks of about `max_bytes` of versions each (a key's
    /// siblings are never split), numbered `part` of `parts`.
    pub fn snapshot_chunks(&self, max_bytes: usize) -> Vec<Snapshot> {
        self.snapshot_refs(max_bytes)
            .iter()
            .map(SnapshotRef::to_owned)
            .collect()
    }

    /// Like [`Store::snapshot_chunks`], borrowing the versions instead of cloning them; encode
    /// with [`wire::encode_snapshot`](crate::proto::wire::encode_snapshot). Always at least one
    /// chunk.
    pub fn snapshot_refs(&self, max_bytes: usize) -> Vec<SnapshotRef<'_>> {
        let mut chunks = Vec::new();
        let mut chunk = SnapshotRef::empty(self);
        let mut size = 0usize;
        for (key, siblings) in &self.keys {
            size += siblings
                .iter()
                .map(Version::approx_encoded_len)
                .sum::<usize>();
            chunk.versions.extend(siblings);
            if size >= max_bytes {
                let next = SnapshotRef {
                    after: Some(key),
                    ..SnapshotRef::empty(self)
                };
                chunk.through = Some(key);
                chunks.push(std::mem::replace(&mut chunk, next));
                size = 0;
            }
        }
        chunks.push(chunk);
        let parts = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
        for (part, chunk) in chunks.iter_mut().enumerate() {
            chunk.part = u32::try_from(part).unwrap_or(u32::MAX);
            chunk.parts = parts;
        }
        chunks
    }

    /// Checks a version as [`Store::apply`] does before anything else (§1, step 1): its value
    /// within the limit, its number not 0, its clock not superseding itself.
    ///
    /// # Errors
    ///
    /// [`ApplyError`] naming what is wrong.
    pub fn check(&self, version: &Version) -> Result<(), ApplyError> {
        let max = self.config.max_value_bytes;
        if let Some(len) = version
            .payload
            .value()
            .map(Bytes::len)
            .filter(|&len| len > max)
        {
            return Err(ApplyError::ValueTooLarge { len, max });
        }
        if version.dot.counter == 0 || version.supersedes(&version.dot) {
            return Err(ApplyError::Malformed { dot: version.dot });
        }
        Ok(())
    }

    fn apply_checked(&mut self, version: Version, changed: &mut Vec<Key>) {
        if self.context.contains(&version.dot) {
            return;
        }
        let key = version.key.clone();
        if self.insert_new(version).winner_changed() {
            changed.push(key);
        }
    }

    /// Inserts a checked version whose dot is not in the context.
    pub(super) fn insert_new(&mut self, version: Version) -> Applied {
        self.revision += 1;
        self.context.insert(version.dot);
        self.hlc.observe(version.timestamp);
        self.touch(&version.key);
        let siblings = self.keys.entry(version.key.clone()).or_default();
        let old_winner = siblings
            .first()
            .filter(|v| !v.is_tombstone())
            .map(|v| v.dot);
        // Supersession is transitive, so a version drops what its clock covers even when a
        // stored sibling supersedes it in turn (normally a no-op: that sibling's clock
        // includes this one's).
        let by_dot = &mut self.by_dot;
        siblings.retain(|s| {
            let keep = !version.supersedes(&s.dot);
            if !keep {
                unindex(by_dot, s);
            }
            keep
        });
        let obsolete = siblings.iter().any(|s| s.supersedes(&version.dot));
        if !obsolete {
            by_dot
                .entry(version.dot.actor)
                .or_default()
                .insert(version.dot.counter, version.key.clone());
            let rank = version.rank();
            let at = siblings.partition_point(|s| s.rank() > rank);
            siblings.insert(at, version);
        }
        let new_winner = siblings
            .first()
            .filter(|v| !v.is_tombstone())
            .map(|v| v.dot);
        if obsolete {
            debug_assert!(
                !siblings.is_empty(),
                "an obsolete version has a stored superseder"
            );
            return Applied::Obsolete {
                winner_changed: old_winner != new_winner,
            };
        }
        Applied::Stored {
            winner_changed: old_winner != new_winner,
        }
    }

    /// The bulk path for versions that touch no local key, as a catch-up snapshot's do: builds
    /// the maps from sorted runs instead of inserting one by one. The result is what applying
    /// them one by one gives. Hands the versions back, untouched, when they do not qualify:
    /// unsorted keys, a local key in their range, a dot already seen or repeated, or a version
    /// superseding another.
    fn insert_disjoint(
        &mut self,
        versions: Vec<Version>,
        changed: &mut Vec<Key>,
    ) -> Result<(), Vec<Version>> {
        let (Some(first), Some(last)) = (versions.first(), versions.last()) else {
            return Ok(());
        };
        let sorted = versions.windows(2).all(|w| w[0].key <= w[1].key);
        if !sorted
            || first.key > last.key
            || self
                .keys
                .range(first.key.clone()..=last.key.clone())
                .next()
                .is_some()
        {
            return Err(versions);
        }
        let mut dots: Vec<(WriterId, u64, usize)> = versions
            .iter()
            .enumerate()
            .map(|(i, v)| (v.dot.actor, v.dot.counter, i))
            .collect();
        dots.sort_unstable();
        let fresh = dots
            .windows(2)
            .all(|w| (w[0].0, w[0].1) != (w[1].0, w[1].1))
            && dots
                .iter()
                .all(|&(w, seq, _)| !self.context.seen(w).contains(seq));
        let independent = versions.chunk_by(|a, b| a.key == b.key).all(|group| {
            group.iter().all(|a| {
                group
                    .iter()
                    .all(|b| std::ptr::eq(a, b) || !a.supersedes(&b.dot))
            })
        });
        if !fresh || !independent {
            return Err(versions);
        }
        self.revision += 1;
        for run in dots.chunk_by(|a, b| a.0 == b.0) {
            let writer = run[0].0;
            let index = run
                .iter()
                .map(|&(_, seq, i)| (seq, versions[i].key.clone()));
            merge_sorted(self.by_dot.entry(writer).or_default(), index.collect());
            for &(_, seq, _) in run {
                self.context.insert(Dot::new(writer, seq));
            }
        }
        let mut groups: Vec<(Key, Vec<Version>)> = Vec::new();
        for version in versions {
            self.hlc.observe(version.timestamp);
            match groups.last_mut() {
                Some((key, siblings)) if *key == version.key => siblings.push(version),
                _ => groups.push((version.key.clone(), vec![version])),
            }
        }
        for (key, siblings) in &mut groups {
            self.touch(key);
            siblings.sort_unstable_by_key(|v| std::cmp::Reverse(v.rank()));
            if !siblings[0].is_tombstone() {
                changed.push(key.clone());
            }
        }
        merge_sorted(&mut self.keys, groups);
        Ok(())
    }

    /// Drops local versions of keys in the snapshot's range that its context has seen but that
    /// it does not hold: the snapshot's side superseded them.
    fn drop_superseded_by(&mut self, snapshot: &Snapshot, changed: &mut Vec<Key>) {
        if self.keys.is_empty() {
            return;
        }
        let held: BTreeSet<(WriterId, u64)> = snapshot
            .versions
            .iter()
            .map(|v| (v.dot.actor, v.dot.counter))
            .collect();
        let in_range: Vec<Key> = self
            .keys
            .keys()
            .filter(|k| snapshot.covers_key(k))
            .cloned()
            .collect();
        for key in in_range {
            let Some(siblings) = self.keys.get_mut(&key) else {
                continue;
            };
            let before = siblings.len();
            let old_winner = siblings
                .first()
                .filter(|v| !v.is_tombstone())
                .map(|v| v.dot);
            let by_dot = &mut self.by_dot;
            siblings.retain(|s| {
                let superseded = snapshot.context.contains(&s.dot)
                    && !held.contains(&(s.dot.actor, s.dot.counter));
                if superseded {
                    unindex(by_dot, s);
                }
                !superseded
            });
            let new_winner = siblings
                .first()
                .filter(|v| !v.is_tombstone())
                .map(|v| v.dot);
            let dropped = siblings.len() != before;
            let emptied = siblings.is_empty();
            if dropped {
                // While the key is still there: it had versions.
                self.touch(&key);
            }
            if emptied {
                self.keys.remove(&key);
            }
            if old_winner != new_winner {
                changed.push(key);
            }
        }
    }
}

/// Adds `sorted` (ascending, no key already in `map`) to `map`. `BTreeMap::append` rebuilds
/// the whole map, which costs a catch-up that adds chunk after chunk to a growing replica
/// quadratic time; inserting costs only the new entries' descents, and they land next to each
/// other.
fn merge_sorted<K: Ord, V>(map: &mut BTreeMap<K, V>, sorted: Vec<(K, V)>) {
    if map.len() < sorted.len() {
        let mut added: BTreeMap<K, V> = sorted.into_iter().collect();
        map.append(&mut added);
    } else {
        map.extend(sorted);
    }
}

pub(super) fn unindex(
    by_dot: &mut std::collections::BTreeMap<WriterId, std::collections::BTreeMap<u64, Key>>,
    version: &Version,
) {
    if let Some(index) = by_dot.get_mut(&version.dot.actor) {
        index.remove(&version.dot.counter);
        if index.is_empty() {
            by_dot.remove(&version.dot.actor);
        }
    }
}

fn push_cleared(delta: &mut Delta, writer: WriterId, start: u64, end: u64) {
    if let Some(range) = SeqRange::new(start, end) {
        delta.cleared.push((writer, range));
    }
}
