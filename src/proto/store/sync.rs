//! What replicas exchange to converge: digests, deltas and snapshots.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Store, Version};
use crate::proto::{
    ids::{Dot, VClock, WriterId},
    key::Key,
    seqset::{SeqRange, SeqSet},
};

static EMPTY: SeqSet = SeqSet::new();

/// The dots a replica has seen: per writer, a [`SeqSet`]. It is both the replica's causal
/// context and what it sends a peer to ask for what it lacks.
///
/// Read as the version vector ([`Digest::version_vector`], the contiguous prefix per writer)
/// plus the ranges missing below each writer's highest seen number ([`Digest::gaps`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    writers: BTreeMap<WriterId, SeqSet>,
}

impl Digest {
    /// The sequence numbers of `writer` seen.
    pub fn seen(&self, writer: WriterId) -> &SeqSet {
        self.writers.get(&writer).unwrap_or(&EMPTY)
    }

    /// Whether `dot` was seen.
    pub fn contains(&self, dot: &Dot) -> bool {
        self.seen(dot.actor).contains(dot.counter)
    }

    /// Per writer, the highest `n` such that all of `1..=n` were seen (writers at 0 omitted).
    pub fn version_vector(&self) -> VClock {
        let mut clock = VClock::new();
        for (&writer, seen) in &self.writers {
            let n = seen.contiguous();
            if n > 0 {
                clock.dots.insert(writer, n);
            }
        }
        clock
    }

    /// Per writer, the numbers missing below its highest seen number.
    pub fn gaps(&self) -> impl Iterator<Item = (WriterId, Vec<SeqRange>)> + '_ {
        self.writers
            .iter()
            .map(|(&writer, seen)| (writer, seen.gaps()))
            .filter(|(_, gaps)| !gaps.is_empty())
    }

    /// The writers with at least one seen number, and what was seen of each.
    pub fn writers(&self) -> impl Iterator<Item = (WriterId, &SeqSet)> + '_ {
        self.writers.iter().map(|(&writer, seen)| (writer, seen))
    }

    /// Whether every dot in `other` is in `self`.
    pub fn covers(&self, other: &Digest) -> bool {
        other
            .writers
            .iter()
            .all(|(&writer, seen)| seen.is_subset(self.seen(writer)))
    }

    /// A 64-bit FNV-1a hash of the digest: equal digests hash equal on every node and build,
    /// so two nodes can tell they are in sync by exchanging 8 bytes.
    pub fn fingerprint(&self) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        let mut eat = |word: u64| {
            for byte in word.to_le_bytes() {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for (writer, seen) in &self.writers {
            if seen.is_empty() {
                continue;
            }
            eat(writer.0);
            for range in seen.ranges() {
                eat(range.start);
                eat(range.end);
            }
        }
        hash
    }

    /// Total number of seen dots (for reports; saturates).
    pub fn dot_count(&self) -> u64 {
        self.writers
            .values()
            .flat_map(SeqSet::ranges)
            .fold(0u64, |n, r| n.saturating_add(r.len()))
    }

    /// The digest of these writers' seen numbers (as read back from [`Digest::writers`]).
    pub fn from_writers(writers: impl IntoIterator<Item = (WriterId, SeqSet)>) -> Digest {
        Digest {
            writers: writers
                .into_iter()
                .filter(|(_, seen)| !seen.is_empty())
                .collect(),
        }
    }

    pub(crate) fn insert(&mut self, dot: Dot) -> bool {
        self.writers
            .entry(dot.actor)
            .or_default()
            .insert(dot.counter)
    }

    pub(crate) fn insert_range(&mut self, writer: WriterId, range: SeqRange) {
        self.writers.entry(writer).or_default().insert_range(range);
    }

    pub(crate) fn union_with(&mut self, other: &Digest) {
        for (&writer, seen) in &other.writers {
            self.writers.entry(writer).or_default().union_with(seen);
        }
    }
}

/// What one replica sends another that sent it a [`Digest`]: the versions the other lacks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Stored versions whose dots the digest lacks, by writer then sequence number.
    pub versions: Vec<Version>,
    /// Dots the digest lacks whose versions were superseded here: the receiver records them as
    /// seen. Each is covered by a version in `versions` or one the receiver already has.
    pub cleared: Vec<(WriterId, SeqRange)>,
    /// Whether the size budget cut the delta short; the receiver should ask again.
    pub truncated: bool,
}

impl Delta {
    /// Whether the delta carries nothing.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty() && self.cleared.is_empty()
    }
}

/// The answer to a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncReply {
    /// The versions the peer lacks (possibly none).
    Delta(Delta),
    /// The peer lacks dots at or below the garbage-collection floor: it may hold versions that
    /// a collected tombstone deleted, so it needs a [`Snapshot`] (see
    /// [`Store::snapshot_chunks`](super::Store::snapshot_chunks)), never a delta.
    SnapshotNeeded,
}

/// The whole replica, or one chunk of it by key range.
///
/// Merging a snapshot drops every local version of a key in range whose dot the snapshot's
/// context has seen but whose version it does not hold: the snapshot's side superseded it.
/// That is what makes a snapshot safe for a peer that missed a tombstone since collected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Keys covered start after this key (`None`: from the first key).
    pub after: Option<Key>,
    /// Keys covered end with this key, inclusive (`None`: to the last key).
    pub through: Option<Key>,
    /// Every stored version of the keys covered, in key order.
    pub versions: Vec<Version>,
    /// The sender's causal context when the snapshot was taken.
    pub context: Digest,
    /// The sender's garbage-collection floor.
    pub collected: VClock,
    /// This chunk's number, from 0.
    pub part: u32,
    /// How many chunks the snapshot has. Chunks may arrive in any order; the receiver adopts
    /// `context` only once it has merged all of them (see [`Store::merge_snapshot`]).
    pub parts: u32,
}

impl Snapshot {
    /// Whether `key` is within this chunk's key range.
    pub fn covers_key(&self, key: &Key) -> bool {
        self.after.as_ref().is_none_or(|after| key > after)
            && self.through.as_ref().is_none_or(|through| key <= through)
    }
}

/// A [`Snapshot`] chunk that borrows from the store instead of cloning it, for encoding. Its
/// encoding is byte for byte that of the owned chunk (same fields, same order).
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotRef<'a> {
    /// See [`Snapshot::after`].
    pub after: Option<&'a Key>,
    /// See [`Snapshot::through`].
    pub through: Option<&'a Key>,
    /// See [`Snapshot::versions`].
    pub versions: Vec<&'a Version>,
    /// See [`Snapshot::context`].
    pub context: &'a Digest,
    /// See [`Snapshot::collected`].
    pub collected: &'a VClock,
    /// See [`Snapshot::part`].
    pub part: u32,
    /// See [`Snapshot::parts`].
    pub parts: u32,
}

impl<'a> SnapshotRef<'a> {
    pub(super) fn empty(store: &'a Store) -> SnapshotRef<'a> {
        SnapshotRef {
            after: None,
            through: None,
            versions: Vec::new(),
            context: &store.context,
            collected: &store.collected,
            part: 0,
            parts: 1,
        }
    }

    /// The owned chunk.
    pub fn to_owned(&self) -> Snapshot {
        Snapshot {
            after: self.after.cloned(),
            through: self.through.cloned(),
            versions: self.versions.iter().map(|&v| v.clone()).collect(),
            context: self.context.clone(),
            collected: self.collected.clone(),
            part: self.part,
            parts: self.parts,
        }
    }

    /// A rough size of the encoding, to size buffers.
    pub(crate) fn approx_encoded_len(&self) -> usize {
        self.versions
            .iter()
            .map(|v| v.approx_encoded_len())
            .sum::<usize>()
            + 64
    }
}
