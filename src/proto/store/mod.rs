//! The replicated configuration map: a delta-state CRDT map with vector-clocked versions.
//!
//! See `docs/PROTOCOL.md` for the rules this module implements; the short form:
//!
//! - Each key holds its **siblings**: the versions no other known version supersedes. A version
//!   carries a [`Dot`], a [`VClock`] of the versions *of the same key* it supersedes, an
//!   [`HlcTimestamp`] and a [`Payload`] (a value or a tombstone).
//! - The replica's **causal context** is the set of dots it has seen, as a [`Digest`]: per
//!   writer, ranges of sequence numbers. A seen dot is never applied again.
//! - The **winner** of a key is its highest-ranked live sibling: greatest timestamp, then greatest
//!   writer id. A put wins over a concurrent delete; the tombstone stays visible as a sibling.
//! - **Anti-entropy** sends, for a peer's digest, exactly the versions it lacks plus "cleared"
//!   ranges for dots that were superseded here. A peer behind the garbage-collection floor gets
//!   a [`Snapshot`] instead, which carries this replica's context so stale versions are dropped.

mod apply;
mod gc;

mod sync;

use std::collections::BTreeMap;

use bytes::Bytes;
use crdts::{CmRDT, CvRDT};
use serde::{Deserialize, Serialize};

pub use self::sync::{Delta, Digest, Snapshot, SnapshotRef, SyncReply};
use super::{
    hlc::{Hlc, HlcTimestamp},
    ids::{Dot, VClock, WriterId},
    key::Key,
};

/// The default for [`StoreConfig::max_value_bytes`]: 1 MiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1 << 20;

/// Limits of a [`Store`].
///
/// Every node of a cluster must use the same limits: a version one node accepts and another
/// refuses would be retried by anti-entropy forever.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// The largest value accepted, in bytes, both from local writes and from peers.
    /// Default [`DEFAULT_MAX_VALUE_BYTES`] (1 MiB). Config is for small documents; keep values
    /// well below the wire's message limit.
    pub max_value_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

/// What a version says about its key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Payload {
    /// The key holds these bytes.
    Value(Bytes),
    /// The key was deleted.
    Tombstone,
}

impl Payload {
    /// The value, or `None` for a tombstone.
    pub fn value(&self) -> Option<&Bytes> {
        match self {
            Payload::Value(bytes) => Some(bytes),
            Payload::Tombstone => None,
        }
    }
}

/// One write of one key: the unit that replicates.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Version {
    /// The key written.
    pub key: Key,
    /// Who wrote it, and that writer's sequence number for it.
    pub dot: Dot,
    /// The versions of `key` this one supersedes: for each writer, the highest such sequence
    /// number. Supersession is transitive: it includes the clocks of the versions superseded.
    pub supersedes: VClock,
    /// When it was written (hybrid logical clock of the writer).
    pub timestamp: HlcTimestamp,
    /// The value written, or a tombstone for a delete.
    pub payload: Payload,
    /// Its writer's signature and audit fields (docs/PROTOCOL.md §7.3), or `None` for a
    /// version of an unsigned (legacy) writer. Not part of the version's serde form: messages
    /// of format 3 and storage rows carry it after the versions ([`Seal`]), so the encoding of
    /// protocol 2's messages is unchanged.
    #[serde(skip)]
    pub seal: Option<Box<Seal>>,
    /// Whether this replica masks it (docs/PROTOCOL.md §8.5): granted when it was made, then
    /// undone by a revocation or a policy root that had not seen it. A masked version reads as
    /// a tombstone and still supersedes what it superseded. This replica's own judgement,
    /// made again from the policy at every start: never sent, never stored, and not part of
    /// the version's identity.
    #[serde(skip)]
    pub masked: Masked,
}

/// Whether a replica masks a version ([`Version::masked`]). Two copies of a version are the
/// same version whether or not one is masked, so every `Masked` equals every other and hashes
/// to nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Masked(pub bool);

impl PartialEq for Masked {
    fn eq(&self, _: &Masked) -> bool {
        true
    }
}

impl Eq for Masked {}

impl std::hash::Hash for Masked {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

/// What a signed version carries besides its content: who asked for the write, why, and its
/// writer's Ed25519 signature over all of it (docs/PROTOCOL.md §7.3).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Seal {
    /// The principal the write was made for, if any (at most
    /// [`MAX_AUTHOR_BYTES`](crate::proto::trust::MAX_AUTHOR_BYTES)).
    pub author: Option<String>,
    /// The change message, if any (at most
    /// [`MAX_MESSAGE_BYTES`](crate::proto::trust::MAX_MESSAGE_BYTES)).
    pub message: Option<String>,
    /// Ed25519 (ZIP 215) by the writer's key over
    /// [`signed_bytes`](crate::proto::trust::signed_bytes).
    #[serde(with = "signature_bytes")]
    pub signature: [u8; 64],
    /// What the write stands on under Trust II (docs/PROTOCOL.md §8.3, §8.7): its policy
    /// context and its author's proof, covered by the signature. `None` when it names neither,
    /// as every version before protocol 4 does. Not part of the seal's serde form: messages of
    /// format 4 and storage rows carry it after the seals, so a version without it encodes as
    /// in protocol 3.
    #[serde(skip)]
    pub grounds: Option<Box<Grounds>>,
}

/// The policy context a version was written in, and its author's proof (docs/PROTOCOL.md
/// §8.3, §8.7). Protocol 4; never empty where it appears (an empty one is no grounds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Grounds {
    /// The policy its writer held: for each writer of a policy entry, the highest sequence
    /// number up to which the writer had seen every version of it.
    pub context: VClock,
    /// The author's signature, if the version names an author who proves it.
    pub proof: Option<AuthorProof>,
}

impl Grounds {
    /// Whether it names nothing (and is carried as no grounds).
    pub fn is_empty(&self) -> bool {
        self.context.is_empty() && self.proof.is_none()
    }
}

/// An author's proof that it asked for a version (docs/PROTOCOL.md §8.7): a signature over
/// the version's content by a key only the author holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AuthorProof {
    /// The author key's signature.
    #[serde(with = "signature_bytes")]
    pub signature: [u8; 64],
    /// The certificate that binds the key to the author (DER), for an admin; `None` for a
    /// token, whose key its policy entry names. At most
    /// [`MAX_PROOF_CERTIFICATE_BYTES`](crate::proto::trust::MAX_PROOF_CERTIFICATE_BYTES).
    pub certificate: Option<Bytes>,
}

/// serde for a 64-byte signature, as two 32-byte arrays (serde derives arrays up to 32 only;
/// bincode writes fixed arrays without a length).
mod signature_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        let mut halves = ([0u8; 32], [0u8; 32]);
        halves.0.copy_from_slice(&bytes[..32]);
        halves.1.copy_from_slice(&bytes[32..]);
        halves.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let (first, second) = <([u8; 32], [u8; 32])>::deserialize(d)?;
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(&first);
        bytes[32..].copy_from_slice(&second);
        Ok(bytes)
    }
}

impl Version {
    /// Whether this version supersedes the version named `dot` (which must be of the same key).
    pub fn supersedes(&self, dot: &Dot) -> bool {
        self.supersedes.get(&dot.actor) >= dot.counter
    }

    /// Whether this version reads as a delete: a tombstone, or a masked version.
    pub fn is_tombstone(&self) -> bool {
        matches!(self.payload, Payload::Tombstone) || self.masked.0
    }

    /// The value this version gives its key: none for a tombstone or a masked version.
    pub fn value(&self) -> Option<&Bytes> {
        if self.masked.0 {
            return None;
        }
        self.payload.value()
    }

    /// The order in which siblings are ranked; the greatest is the winner.
    fn rank(&self) -> (bool, HlcTimestamp, WriterId, u64) {
        (
            !self.is_tombstone(),
            self.timestamp,
            self.dot.actor,
            self.dot.counter,
        )
    }

    /// A rough size of the encoded version, used to bound deltas and snapshot chunks.
    pub(crate) fn approx_encoded_len(&self) -> usize {
        let value = self.payload.value().map_or(0, Bytes::len);
        let seal = self.seal.as_ref().map_or(0, |s| {
            let grounds = s.grounds.as_ref().map_or(0, |g| {
                12 * g.context.dots.len()
                    + g.proof
                        .as_ref()
                        .map_or(0, |p| 68 + p.certificate.as_ref().map_or(0, Bytes::len))
            });
            68 + s.author.as_ref().map_or(0, String::len)
                + s.message.as_ref().map_or(0, String::len)
                + grounds
        });
        self.key.as_str().len() + value + 32 + 12 * self.supersedes.dots.len() + seal
    }
}

/// Why a local write was refused. Doesn't affect the store's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The value is larger than [`StoreConfig::max_value_bytes`].
    #[error("value is {len} bytes, the limit is {max}")]
    ValueTooLarge {
        /// The size of the refused value.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// An audit field (author, message) is over its limit (docs/PROTOCOL.md §7.3).
    #[error("the {field} is {len} bytes, the limit is {max}")]
    AuditTooLarge {
        /// `author` or `message`.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A conditional write found another winner than the one expected.
    #[error("the key's current version is not the one expected")]
    Conflict {
        /// The key's winner as this node sees it, its pending writes included (`None`: no
        /// live value).
        current: Option<Dot>,
    },
    /// The policy does not let this node (or the author it writes for) write the key
    /// (docs/PROTOCOL.md §8.4); nothing was written.
    #[error("refused by the policy: {0}")]
    Denied(crate::proto::trust::policy::Denial),
    /// A policy entry every replica would refuse (docs/PROTOCOL.md §8); nothing was written.
    #[error("the policy entry would be refused: {0}")]
    Refused(crate::proto::trust::Refusal),
    /// A policy entry's context names versions this node has not seen: ask it for its
    /// context again.
    #[error("the context names versions this node has not seen")]
    ContextUnknown,
    /// This node does not sign its versions, so it cannot write policy entries.
    #[error("this node does not sign its versions")]
    Unsigned,
    /// A policy entry proved over a key that is not this node's next entry key: another entry
    /// took it since it was handed out. Ask for the policy again and prove the entry anew.
    #[error(
        "the entry's key was taken by another entry; the next is {next}: prove the entry again"
    )]
    EntryKeyTaken {
        /// The node's next entry key now.
        next: String,
    },
    /// A write for a token (`token:<id>`) made without the token's secret, or before this
    /// node holds the token's entry in its policy context: every replica would refuse it
    /// (docs/PROTOCOL.md §8.7), so nothing was written.
    #[error(
        "{author} is a token: only a write made with the token itself (after this node holds its entry) proves it"
    )]
    TokenUnproven {
        /// The author named.
        author: String,
    },
}

/// Why a version from a peer was refused. Doesn't affect the store's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The value is larger than [`StoreConfig::max_value_bytes`].
    #[error("value is {len} bytes, the limit is {max}")]
    ValueTooLarge {
        /// The size of the refused value.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The dot's sequence number is 0, or the version claims to supersede itself.
    #[error("malformed version {dot:?}")]
    Malformed {
        /// The dot of the refused version.
        dot: Dot,
    },
}

/// What applying one version did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The dot was seen before; nothing changed.
    Duplicate,
    /// The version was new but a stored version already supersedes it, so it was not stored;
    /// its dot was recorded, and the siblings its clock covers were dropped.
    Obsolete {
        /// Whether [`Store::get`] now answers differently for the key.
        winner_changed: bool,
    },
    /// The version was stored as a sibling of its key.
    Stored {
        /// Whether [`Store::get`] now answers differently for the key.
        winner_changed: bool,
    },
}

impl Applied {
    /// Whether [`Store::get`] now answers differently for the version's key.
    pub fn winner_changed(self) -> bool {
        match self {
            Applied::Duplicate => false,
            Applied::Obsolete { winner_changed } | Applied::Stored { winner_changed } => {
                winner_changed
            }
        }
    }
}

/// One replica of the configuration map. Sans-IO: time comes in as arguments.
///
/// Methods come in three kinds:
/// - local writes: [`put`](Store::put), [`delete`](Store::delete), which store a new
///   [`Version`] at once; or [`local_version`](Store::local_version), which only builds one,
///   for a caller that makes it durable first (the node does) and then [`apply`](Store::apply)s it;
/// - merging remote state: [`apply`](Store::apply), [`apply_delta`](Store::apply_delta),
///   [`merge_snapshot`](Store::merge_snapshot), in any order, with duplicates;
/// - reads: [`get`](Store::get), [`versions`](Store::versions), [`list`](Store::list),
///   [`digest`](Store::digest), [`delta_for`](Store::delta_for), [`snapshot`](Store::snapshot).
///
/// Garbage collection ([`collect_garbage`](Store::collect_garbage)) runs when the caller knows
/// what every member has seen.
#[derive(Clone, Debug)]
pub struct Store {
    writer: WriterId,
    config: StoreConfig,
    hlc: Hlc,
    /// Siblings per key. Invariant: non-empty, ranked winner first, none supersedes another.
    keys: BTreeMap<Key, Vec<Version>>,
    /// Every dot seen. Invariant: holds the dot of every stored version.
    context: Digest,
    /// Stored versions by dot, to answer digests: writer -> seq -> key.
    by_dot: BTreeMap<WriterId, BTreeMap<u64, Key>>,
    /// Tombstones at or below this vector may have been collected (the collection floor).
    collected: VClock,
    /// Bumped on every change to the context (see [`Store::revision`]).
    revision: u64,
    /// Keys whose siblings changed since [`Store::take_touched_keys`], when tracking is on
    /// ([`Store::track_touched_keys`]); `None` costs nothing.
    touched: Option<TouchedKeys>,
}

/// Keys whose stored versions changed, from [`Store::take_touched_keys`], each with how it
/// stood before its first change.
pub type TouchedKeys = BTreeMap<Key, Touched>;

/// How a touched key stood before its first change since the last
/// [`Store::take_touched_keys`]. A caller that persists the replica can skip reading back the
/// rows of a [`Touched::New`] key: it had none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touched {
    /// The replica held no version of the key.
    New,
    /// The replica held at least one version of the key.
    Existing,
}

impl Store {
    /// An empty replica whose local writes are numbered as `writer`.
    pub fn new(writer: WriterId, config: StoreConfig) -> Store {
        Store {
            writer,
            config,
            hlc: Hlc::default(),
            keys: BTreeMap::new(),
            context: Digest::default(),
            by_dot: BTreeMap::new(),
            collected: VClock::new(),
            revision: 0,
            touched: None,
        }
    }

    /// A replica restored from a snapshot, writing as `writer` (normally the writer that took
    /// the snapshot). Local writes continue after the highest sequence number of `writer` the
    /// snapshot has seen, so no dot is ever reused.
    ///
    /// # Errors
    ///
    /// [`ApplyError`] if the snapshot holds a malformed or oversized version.
    pub fn restore(
        writer: WriterId,
        config: StoreConfig,
        snapshot: Snapshot,
    ) -> Result<Store, ApplyError> {
        let mut store = Store::new(writer, config);
        store.merge_snapshot(snapshot)?;
        Ok(store)
    }

    /// The writer id local writes are numbered with.
    pub fn writer(&self) -> WriterId {
        self.writer
    }

    /// The limits this store enforces.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Writes `value` under `key` at wall time `now_wall_ms` (ms since the Unix epoch).
    ///
    /// The new version supersedes every current sibling of `key`, so it resolves a conflict.
    /// Returns the version to send to peers.
    ///
    /// # Errors
    ///
    /// [`WriteError::ValueTooLarge`] if `value` exceeds [`StoreConfig::max_value_bytes`].
    pub fn put(&mut self, now_wall_ms: u64, key: Key, value: Bytes) -> Result<Version, WriteError> {
        self.check_value(&value)?;
        Ok(self.write_local(now_wall_ms, key, Payload::Value(value)))
    }

    /// Deletes `key` at wall time `now_wall_ms` by writing a tombstone that supersedes every
    /// current sibling. Returns the tombstone to send to peers, or `None` when the key holds no
    /// value (absent or already deleted), in which case nothing changes.
    pub fn delete(&mut self, now_wall_ms: u64, key: Key) -> Option<Version> {
        if !self.deletable(&key) {
            return None;
        }
        Some(self.write_local(now_wall_ms, key, Payload::Tombstone))
    }

    /// Records `dot` as seen with no value: a version that was validly signed but refused
    /// (PROTOCOL.md §7.4). Anti-entropy does not ask for it again and version vectors advance
    /// past it; it supersedes nothing. Returns whether the dot was new.
    pub fn record_refused(&mut self, dot: Dot) -> bool {
        if dot.counter == 0 || self.context.contains(&dot) {
            return false;
        }
        self.context.insert(dot);
        self.revision += 1;
        true
    }

    /// Masks the stored version with `dot` (docs/PROTOCOL.md §8.5): from now on it reads as a
    /// tombstone, ranks as one among its key's siblings, and still supersedes what it
    /// superseded. Masks are never lifted. Returns whether [`Store::get`] now answers
    /// differently for its key; `None` if no version with `dot` is stored, or it is masked
    /// already.
    pub fn mask(&mut self, dot: Dot) -> Option<bool> {
        let key = self.by_dot.get(&dot.actor)?.get(&dot.counter)?.clone();
        let siblings = self.keys.get_mut(&key)?;
        let winner = |s: &[Version]| s.first().filter(|v| !v.is_tombstone()).map(|v| v.dot);
        let before = winner(siblings);
        let version = siblings.iter_mut().find(|v| v.dot == dot)?;
        if version.masked.0 {
            return None;
        }
        version.masked = Masked(true);
        siblings.sort_unstable_by_key(|v| std::cmp::Reverse(v.rank()));
        let changed = winner(siblings) != before;
        self.touch(&key);
        Some(changed)
    }

    /// Gives the stored version with `dot`, held unsigned (as a node of protocol 2 relays
    /// it), the seal of the same version signed by its writer; the caller checked that the
    /// seal is its writer's over exactly this version. Returns whether a version gained it.
    pub fn attach_seal(&mut self, dot: Dot, seal: Seal) -> bool {
        let Some(key) = self
            .by_dot
            .get(&dot.actor)
            .and_then(|seqs| seqs.get(&dot.counter))
            .cloned()
        else {
            return false;
        };
        self.touch(&key);
        let Some(version) = self
            .keys
            .get_mut(&key)
            .and_then(|siblings| siblings.iter_mut().find(|v| v.dot == dot))
            .filter(|v| v.seal.is_none())
        else {
            return false;
        };
        version.seal = Some(Box::new(seal));
        true
    }

    /// The winning version of `key`, or `None` if the key is absent or deleted.
    pub fn get(&self, key: &Key) -> Option<&Version> {
        self.keys
            .get(key)
            .and_then(|s| s.first())
            .filter(|v| !v.is_tombstone())
    }

    /// All siblings of `key`, winner first (tombstones last). Empty if nothing is stored.
    pub fn versions(&self, key: &Key) -> &[Version] {
        self.keys.get(key).map_or(&[], Vec::as_slice)
    }

    /// Every stored version, siblings and tombstones included, in key order (each key's
    /// winner first).
    pub fn versions_all(&self) -> impl Iterator<Item = &Version> + '_ {
        self.keys.values().flatten()
    }

    /// The winners of all live keys starting with `prefix`, in key order.
    pub fn list<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Version> + 'a {
        self.keys
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.as_str().starts_with(prefix))
            .filter_map(|(_, siblings)| siblings.first().filter(|v| !v.is_tombstone()))
    }

    /// The stored version named `dot`, if it is stored (not superseded or collected).
    pub fn version_by_dot(&self, dot: &Dot) -> Option<&Version> {
        let key = self.by_dot.get(&dot.actor)?.get(&dot.counter)?;
        self.versions(key).iter().find(|v| v.dot == *dot)
    }

    /// Number of keys with at least one stored version (tombstones included).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Number of keys starting with `prefix` with at least one stored version (tombstones
    /// included); costs one step per such key.
    pub fn key_count_under(&self, prefix: &str) -> usize {
        self.keys
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.as_str().starts_with(prefix))
            .count()
    }

    /// Number of stored versions (siblings and tombstones included).
    pub fn version_count(&self) -> usize {
        self.by_dot.values().map(BTreeMap::len).sum()
    }

    /// A counter that changes whenever the digest may have changed, to cache what is derived
    /// from it (such as its fingerprint). Local to this replica; never sent.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The greatest hybrid-logical-clock timestamp issued or observed.
    pub fn last_timestamp(&self) -> HlcTimestamp {
        self.hlc.last()
    }

    /// A new local version of `key`, numbered `seq`, without storing it: for a caller that
    /// makes local writes durable before they take effect (the node's pending writes). It
    /// supersedes every stored sibling of `key` and, when given, `after` (an earlier local
    /// version of `key` not stored yet) with everything `after` supersedes. Only the hybrid
    /// logical clock moves. Apply the version with [`Store::apply`] once it is durable.
    ///
    /// # Errors
    ///
    /// [`WriteError::ValueTooLarge`] if the payload's value exceeds
    /// [`StoreConfig::max_value_bytes`].
    pub fn local_version(
        &mut self,
        now_wall_ms: u64,
        key: Key,
        payload: Payload,
        seq: u64,
        after: Option<&Version>,
    ) -> Result<Version, WriteError> {
        if let Some(value) = payload.value() {
            self.check_value(value)?;
        }
        let mut supersedes = self.superseded_by_a_write(&key);
        if let Some(after) = after {
            supersedes.merge(after.supersedes.clone());
            supersedes.apply(after.dot);
        }
        Ok(Version {
            key,
            dot: Dot::new(self.writer, seq),
            supersedes,
            timestamp: self.hlc.tick(now_wall_ms),
            payload,
            seal: None,
            masked: Masked::default(),
        })
    }

    /// The highest sequence number of this store's writer seen: a new local write must be
    /// numbered above it, so a replica that learns of its own older writes (after losing
    /// state) never reuses a dot.
    pub fn last_local_seq(&self) -> u64 {
        self.context.seen(self.writer).max()
    }

    /// Whether a delete of `key` would change anything: the key holds a live value, or
    /// siblings to resolve.
    pub fn deletable(&self, key: &Key) -> bool {
        self.keys
            .get(key)
            .is_some_and(|s| !(s.len() == 1 && s[0].is_tombstone()))
    }

    fn check_value(&self, value: &Bytes) -> Result<(), WriteError> {
        if value.len() > self.config.max_value_bytes {
            return Err(WriteError::ValueTooLarge {
                len: value.len(),
                max: self.config.max_value_bytes,
            });
        }
        Ok(())
    }

    /// The clock of a write that supersedes every stored sibling of `key`.
    fn superseded_by_a_write(&self, key: &Key) -> VClock {
        let mut supersedes = VClock::new();
        for sibling in self.versions(key) {
            supersedes.merge(sibling.supersedes.clone());
            supersedes.apply(sibling.dot);
        }
        supersedes
    }

    /// Starts recording which keys change (see [`Store::take_touched_keys`]): what a caller
    /// that persists the store writes back.
    pub fn track_touched_keys(&mut self) {
        self.touched.get_or_insert_with(TouchedKeys::new);
    }

    /// The keys whose stored versions changed since the last call (empty when tracking is
    /// off), each with how it stood before. A key may be listed although it ends up unchanged.
    pub fn take_touched_keys(&mut self) -> TouchedKeys {
        self.touched
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Records that `key`'s versions change; call it before changing them.
    pub(super) fn touch(&mut self, key: &Key) {
        if let Some(touched) = &mut self.touched {
            let keys = &self.keys;
            touched.entry(key.clone()).or_insert_with(|| {
                if keys.contains_key(key) {
                    Touched::Existing
                } else {
                    Touched::New
                }
            });
        }
    }

    fn write_local(&mut self, now_wall_ms: u64, key: Key, payload: Payload) -> Version {
        let seq = self.last_local_seq() + 1;
        let version = Version {
            dot: Dot::new(self.writer, seq),
            supersedes: self.superseded_by_a_write(&key),
            timestamp: self.hlc.tick(now_wall_ms),
            key,
            payload,
            seal: None,
            masked: Masked::default(),
        };
        let applied = self.insert_new(version.clone());
        debug_assert!(
            matches!(applied, Applied::Stored { .. }),
            "local write not stored: {applied:?}"
        );
        tracing::trace!(key = %version.key, seq = version.dot.counter, "local write");
        version
    }
}

#[cfg(test)]
mod tests;
